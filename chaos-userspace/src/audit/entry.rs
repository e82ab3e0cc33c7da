//! What the audit log records: one typed entry per thing chaos did or decided.
//!
//! # Schema
//!
//! Each entry is the `event` of one line of the log (see the module above for the chain) and
//! is tagged by `kind`:
//!
//! | kind | fields | written |
//! |---|---|---|
//! | `start` | `command` (chaos's argv), `dry_run`, `seed` (or null), `faults` (each fault as planned, in words), `commands` (what chaos runs on the file's say: `what`, `command`, `user`), `unsafe_files` (what `--allow-unsafe-file` let through, and why), and for `chaos run` `experiment`, `file`, `hypothesis`, `blast_radius`, `approved`, `target` (`comm`, `supervisors`, `instances`) | once the kernel took the programs, before anything acts |
//! | `verify` | `when` (`before`, `after`, `end`), `episode` (after a recovery), `passed`, `detail` (why it failed) | after each verify run |
//! | `phase` | `phase` (`injection`), `baseline_crashes` | when the injection phase begins |
//! | `armed`, `disarmed` | `fault` (its index), `rule` (in words), `reason` (why it was disarmed) | when a kernel rule is switched |
//! | `fault` | `id`, `pid`, `exe`, `comm`, `role` (`main`, `worker`), `ppid`, `fault` (`signal`, `errno`), `value`, `syscall`, `nth`, `backend`, `dry_run`, `reported_by_kernel` | fsynced before the fault fires; a fault the kernel fires on its own, as it reports it |
//! | `guard` | `episode`, `pid`, `outcome`, `crash`, `decision` (`continue`, `abort`), `reason` | for each ended episode of the injection phase, and a guard's abort |
//! | `abort` | `reason` | when a guard, a signal or an error stops the faults |
//! | `disk` | `action` (`set_up`, `torn_down`), `detail` (the disk in words, or what could not be undone), `killed` (pids killed to move the service onto it, or off it) | a power_loss fault's disk: after `start` for its set-up (done before the kernel came up), before `end` for its teardown |
//! | `end` | `injected`, `confirmed`, `unconfirmed` (ids), `dry_run`, `verdict` and `exit_code` (`chaos run`), `clauses` (`name`, `held`), `error` | last |
//!
//! Optional fields are left out when they do not apply.

use serde::{Deserialize, Serialize};

use crate::fault::{Backend, FaultKind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Start(Start),
    Verify(Verify),
    Phase(Phase),
    Armed(RuleSwitch),
    Disarmed(RuleSwitch),
    Fault(Fault),
    Guard(Guard),
    Abort(Abort),
    Disk(Disk),
    End(End),
}

/// A power_loss fault's disk set up or torn down (`crate::power`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub action: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub killed: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub command: Vec<String>,
    pub dry_run: bool,
    pub seed: Option<u64>,
    pub faults: Vec<String>,
    /// The commands from the file chaos runs (verify, a `cmd:` probe), each with its user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandEntry>,
    /// Files that failed the trust check and ran anyway (`--allow-unsafe-file`), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsafe_files: Vec<String>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentStart>,
}

/// A command chaos runs on a file's say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandEntry {
    /// `verify` or `ready`.
    pub what: String,
    pub command: String,
    /// `root`, or the account's name and uid.
    pub user: String,
}

/// What `chaos run` adds to the start entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentStart {
    pub experiment: String,
    pub file: String,
    pub hypothesis: String,
    pub blast_radius: String,
    pub approved: Option<String>,
    pub target: TargetEntry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetEntry {
    pub comm: String,
    pub supervisors: Vec<u32>,
    pub instances: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyWhen {
    Before,
    After,
    End,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verify {
    pub when: VerifyWhen,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<u64>,
    pub passed: bool,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub phase: String,
    pub baseline_crashes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleSwitch {
    pub fault: usize,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub id: u64,
    pub pid: u32,
    pub exe: String,
    pub comm: String,
    /// `main` or `worker` (null when unknown), and its parent when it was hit.
    pub role: Option<crate::fault::Role>,
    pub ppid: Option<u32>,
    pub fault: FaultKind,
    pub value: String,
    pub syscall: Option<String>,
    pub nth: Option<u32>,
    pub backend: Backend,
    pub dry_run: bool,
    /// The kernel decided and fired it on its own, and this is its report; otherwise the
    /// entry was on disk before the fault fired.
    pub reported_by_kernel: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Continue,
    Abort,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guard {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<bool>,
    pub decision: Decision,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abort {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct End {
    pub injected: u64,
    pub confirmed: u64,
    pub unconfirmed: Vec<u64>,
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clauses: Vec<ClauseEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClauseEntry {
    pub name: String,
    pub held: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_tagged_by_kind_and_leave_out_what_does_not_apply() {
        let verify = Entry::Verify(Verify {
            when: VerifyWhen::Before,
            episode: None,
            passed: true,
            detail: None,
        });
        assert_eq!(
            serde_json::to_string(&verify).unwrap(),
            r#"{"kind":"verify","when":"before","passed":true,"detail":null}"#
        );
        let start = Entry::Start(Start {
            command: vec!["chaos".into()],
            dry_run: false,
            seed: Some(7),
            faults: vec!["SIGKILL x1".into()],
            commands: Vec::new(),
            unsafe_files: Vec::new(),
            experiment: Some(ExperimentStart {
                experiment: "e".into(),
                file: "e.toml".into(),
                hypothesis: "h".into(),
                blast_radius: "local".into(),
                approved: None,
                target: TargetEntry {
                    comm: "svc".into(),
                    supervisors: vec![10],
                    instances: vec![11],
                },
            }),
        });
        let value = serde_json::to_value(&start).unwrap();
        assert_eq!(value["kind"], "start");
        assert_eq!(value["experiment"], "e");
        assert_eq!(value["target"]["instances"][0], 11);
        let back: Entry = serde_json::from_value(value).unwrap();
        assert_eq!(back, start);
    }
}
