//! Recovery episodes as chaos reports them: the milestones from a fault to a ready
//! replacement, the phase between each two, and how the episode ended. The engine that
//! builds them from kernel events is `measure::engine`.
//!
//! ```text
//! fault ──> exit ──> reaped ──> forked ──> exec ──> ready
//! ```
//!
//! A phase is named by its two milestones; when its first milestone was not seen (no
//! signal, a supervisor that does not wait), it starts at the last milestone before it that
//! was, so the phases always add up to the total.

use serde::{Deserialize, Serialize};

/// One phase of an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    pub name: &'static str,
    /// For tables: what the phase is.
    pub label: &'static str,
}

/// The phases in order; each ends at the milestone of the same index in [`MILESTONES`] + 1.
pub const PHASES: [Phase; 5] = [
    Phase {
        name: "fault_to_exit",
        label: "fault -> exit",
    },
    Phase {
        name: "exit_to_reaped",
        label: "exit -> reaped",
    },
    Phase {
        name: "reaped_to_forked",
        label: "reaped -> forked",
    },
    Phase {
        name: "forked_to_exec",
        label: "forked -> exec",
    },
    Phase {
        name: "exec_to_ready",
        label: "exec -> ready",
    },
];

/// Milestone names, in order.
pub const MILESTONES: [&str; 6] = ["fault", "exit", "reaped", "forked", "exec", "ready"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Recovered,
    /// No ready replacement within the recovery timeout, or the supervisor itself exited.
    Failed,
    /// Measurement ended first.
    Unfinished,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Recovered => "recovered",
            Outcome::Failed => "failed",
            Outcome::Unfinished => "unfinished",
        }
    }
}

/// The signal the kernel saw kill the instance (or ask it to stop): an episode's cause,
/// whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub signal: u32,
    pub signal_name: String,
    pub sender_pid: u32,
    pub sender_comm: String,
}

/// How the old instance ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: u32,
    pub signal: u32,
    pub core_dumped: bool,
    pub lifetime_ns: u64,
    /// Bytes written since its last successful fsync-family call: what a power loss at that
    /// instant could lose. Null when no write hook was attached.
    pub unsynced_bytes: Option<u64>,
}

/// Kernel timestamps (CLOCK_MONOTONIC ns) of each milestone seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Milestones {
    pub fault: Option<u64>,
    pub exit: Option<u64>,
    pub reaped: Option<u64>,
    pub forked: Option<u64>,
    pub exec: Option<u64>,
    pub ready: Option<u64>,
}

impl Milestones {
    pub fn ordered(&self) -> [Option<u64>; 6] {
        [
            self.fault,
            self.exit,
            self.reaped,
            self.forked,
            self.exec,
            self.ready,
        ]
    }

    /// The name of the last milestone reached.
    pub fn last(&self) -> &'static str {
        let ordered = self.ordered();
        (0..ordered.len())
            .rev()
            .find(|&i| ordered[i].is_some())
            .map_or("none", |i| MILESTONES[i])
    }
}

/// What systemd itself recorded of an episode (`--unit`), beside chaos's kernel milestones:
/// its CLOCK_MONOTONIC timestamps, microseconds in systemd, here in ns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemdTimes {
    /// `ExecMainExitTimestampMonotonic` of the old main process: set when pid 1 handles
    /// its SIGCHLD, just before it reaps it.
    pub exec_main_exit_ns: Option<u64>,
    /// `ExecMainStartTimestampMonotonic` of the new one: set in pid 1 right after its fork
    /// (systemd >= 255: after the vfork'd child exec'd the executor).
    pub exec_main_start_ns: Option<u64>,
    /// `ActiveEnterTimestampMonotonic` of the activation that ended it (`--ready unit`).
    pub active_enter_ns: Option<u64>,
    /// The unit's `Result` when it failed (`start-limit-hit`, `exit-code`, ...).
    pub result: Option<String>,
}

impl SystemdTimes {
    /// systemd's timestamp minus chaos's, signed ns: (ExecMainExit - reaped, ExecMainStart
    /// - forked), where both were seen.
    pub fn offsets(&self, at: &Milestones) -> (Option<i64>, Option<i64>) {
        let diff = |s: Option<u64>, k: Option<u64>| s.zip(k).map(|(s, k)| s as i64 - k as i64);
        (
            diff(self.exec_main_exit_ns, at.reaped),
            diff(self.exec_main_start_ns, at.forked),
        )
    }
}

/// Duration of each phase (ns); null when its end milestone was not seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPhases {
    pub fault_to_exit: Option<u64>,
    pub exit_to_reaped: Option<u64>,
    pub reaped_to_forked: Option<u64>,
    pub forked_to_exec: Option<u64>,
    pub exec_to_ready: Option<u64>,
}

impl RecoveryPhases {
    pub fn from_milestones(m: &Milestones) -> Self {
        let ordered = m.ordered();
        let mut durations = [None; 5];
        let mut previous = ordered[0];
        for (i, end) in ordered.iter().enumerate().skip(1) {
            if let Some(end) = end {
                durations[i - 1] = previous.map(|start| end.saturating_sub(start));
                previous = Some(*end);
            }
        }
        let [
            fault_to_exit,
            exit_to_reaped,
            reaped_to_forked,
            forked_to_exec,
            exec_to_ready,
        ] = durations;
        Self {
            fault_to_exit,
            exit_to_reaped,
            reaped_to_forked,
            forked_to_exec,
            exec_to_ready,
        }
    }

    /// (phase name, duration) in episode order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Option<u64>)> {
        let values = [
            self.fault_to_exit,
            self.exit_to_reaped,
            self.reaped_to_forked,
            self.forked_to_exec,
            self.exec_to_ready,
        ];
        PHASES.iter().map(|p| p.name).zip(values)
    }
}

/// One recovery, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// 1, 2, ... in the order episodes began.
    pub id: u64,
    pub outcome: Outcome,
    pub supervisor: u32,
    pub old_pid: u32,
    pub new_pid: Option<u32>,
    pub fault: Option<Cause>,
    pub exit: ExitInfo,
    /// Replacements that died before they were ready; the milestones after `exit` are the
    /// last attempt's.
    pub failed_starts: u32,
    pub at_ns: Milestones,
    pub phases_ns: RecoveryPhases,
    /// From the fault (or the exit when no signal was seen) to ready.
    pub total_ns: Option<u64>,
    /// The last milestone reached: for a failed episode, where recovery stopped.
    pub last_milestone: String,
    /// Why a failed or unfinished episode did not recover.
    pub reason: Option<String>,
    /// The fault that caused it (`chaos run`: the id of its fault record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_id: Option<u64>,
    /// Descendants of the old instance alive when it died: reparented, and holding what
    /// they held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<Orphan>,
    /// Processes that answered the readiness probe for the service while it was down: not
    /// the new instance (an orphan, say), so not a recovery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answered_by: Vec<Holder>,
    /// What systemd recorded of it (`--unit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<SystemdTimes>,
    /// The power cut that began the episode (`kind = "power_loss"`): the episode's fault
    /// milestone is the cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerLoss>,
    /// The data check run after this recovery (`chaos run`'s `hypothesis.verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<EpisodeVerify>,
}

/// What the verify command said after a recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpisodeVerify {
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A power cut, as an episode reports it (CLOCK_MONOTONIC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerLoss {
    /// The fault that cut the power.
    pub fault_id: u64,
    /// From then on the device dropped every write.
    pub cut_ns: u64,
    /// The filesystem mounted again, its journal recovered.
    pub remounted_ns: Option<u64>,
    /// The remount phase: cut -> remounted (the kill, the unmount, the table restored and
    /// journal recovery); the service and its supervisor stay frozen through it.
    pub remount_ns: Option<u64>,
    /// Each process the cut killed, with what it had written and not synced then: what
    /// the cut could lose.
    pub unsynced: Vec<Unsynced>,
}

impl PowerLoss {
    /// The bytes written and not synced at the cut, over every process it killed (None
    /// without the fsync hook).
    pub fn unsynced_bytes(&self) -> Option<u64> {
        self.unsynced.iter().map(|u| u.bytes).sum()
    }
}

/// A process a power cut killed, and its bytes written since its last successful
/// fsync-family call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsynced {
    pub pid: u32,
    pub comm: String,
    pub bytes: Option<u64>,
}

/// A descendant of a dead instance that outlived it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub pid: u32,
    pub comm: String,
    /// Listening TCP ports it holds.
    pub ports: Vec<u16>,
    /// Files it has open under the service's data directory.
    pub files: Vec<String>,
    /// When it exited (CLOCK_MONOTONIC), if it did before the episode ended.
    pub exited_ns: Option<u64>,
}

impl Orphan {
    /// `4242 (nginx, port 8080, 2 data files, exited)`.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.comm.clone()];
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            parts.push(format!("port {}", ports.join(", ")));
        }
        match self.files.len() {
            0 => {}
            1 => parts.push(format!("holds {}", self.files[0])),
            n => parts.push(format!("{n} data files")),
        }
        if self.exited_ns.is_some() {
            parts.push("exited".into());
        }
        format!("{} ({})", self.pid, parts.join(", "))
    }
}

/// A process that held one of the service's listening ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
}

impl Episode {
    /// What a reader should know beyond the phases: the old instance's orphans, and who
    /// answered the probe instead of the new instance.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.orphans.is_empty() {
            let who: Vec<String> = self.orphans.iter().map(Orphan::describe).collect();
            notes.push(format!("orphans: {}", who.join("; ")));
        }
        if !self.answered_by.is_empty() {
            let who: Vec<String> = self
                .answered_by
                .iter()
                .map(|h| format!("{} ({})", h.pid, h.comm))
                .collect();
            notes.push(format!(
                "the probe was answered by {} while the service was down",
                who.join(", ")
            ));
        }
        notes
    }

    /// The duration of phase `name` (a [`PHASES`] name, or "total"), when it was measured.
    pub fn phase_ns(&self, name: &str) -> Option<u64> {
        if name == "total" {
            return self.total_ns;
        }
        self.phases_ns
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v)
    }
}
