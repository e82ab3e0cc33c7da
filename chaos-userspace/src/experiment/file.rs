//! The experiment file as written: TOML, read with serde, spans kept where a later check may
//! need to point at a line. [`super::check`] turns it into a checked [`super::Experiment`].
//! `chaos schema` prints the JSON Schema derived from these types (doc comments included).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

/// A chaos experiment: a measurable hypothesis about how a service recovers, the faults that
/// test it, and the limits that keep it safe.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "chaos experiment")]
pub struct ExperimentFile {
    /// Names the experiment in the audit log, the reports and `--approve` (letters, digits,
    /// `-`, `_`, `.`; at most 64).
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// What the experiment is for, in a sentence or two.
    #[serde(default)]
    pub description: Option<String>,
    /// How far the harm may reach: `local` (a developer's machine), `ci` (a disposable CI
    /// machine; needs `--accept-blast-radius ci`), `lab` (a test rig; needs
    /// `--accept-blast-radius lab`), `canary` (production canaries; needs `--approve ID`).
    /// Each level caps the number and the rate of faults.
    #[schemars(with = "BlastRadius")]
    pub blast_radius: Spanned<BlastRadius>,
    pub hypothesis: HypothesisFile,
    #[schemars(with = "TargetFile")]
    pub target: Spanned<TargetFile>,
    /// One or more faults, each with its own schedule.
    #[schemars(with = "Vec<FaultFile>")]
    pub faults: Spanned<Vec<Spanned<FaultFile>>>,
    #[serde(default)]
    pub guards: GuardsFile,
    #[serde(default)]
    pub phases: PhasesFile,
    #[serde(default)]
    pub outputs: OutputsFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BlastRadius {
    Local,
    Ci,
    Lab,
    Canary,
}

/// What must hold for the experiment to pass; each entry is a clause of the verdict (and a
/// test case of the JUnit output). At least one of `max_failed_recoveries`, `latency` and
/// `verify` is required.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HypothesisFile {
    /// The hypothesis in words, for the report and the audit log.
    pub statement: String,
    /// At most this many episodes may fail to recover (0: every fault is recovered from).
    #[serde(default)]
    pub max_failed_recoveries: Option<u32>,
    /// Latency bounds over the recovered episodes.
    #[serde(default)]
    #[schemars(with = "Vec<LatencyFile>")]
    pub latency: Vec<Spanned<LatencyFile>>,
    /// A fault that kills nothing and costs no readiness: `allow` (reported per fault; the
    /// default), `forbid` (refutes the hypothesis) or `require` (every fault must be so: the
    /// service shrugs them off).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub no_effect: Option<super::NoEffect>,
    /// A data-integrity check that must pass before the first fault, after each recovery, and
    /// at the end.
    #[serde(default)]
    #[schemars(with = "Option<VerifyFile>")]
    pub verify: Option<Spanned<VerifyFile>>,
}

/// `quantile` of `phase` is under `under`, for example `{ phase = "total", quantile = "p99",
/// under = "500ms" }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyFile {
    /// `total` (fault to ready), or one phase: `fault_to_exit`, `exit_to_reaped`,
    /// `reaped_to_forked`, `forked_to_exec`, `exec_to_ready`; `in_place` (fault to ready
    /// again without a death); `remount` (a power cut to its filesystem mounted again).
    pub phase: String,
    /// `p50`, `p90`, `p99`, `p99.9`, `max`, or `pNN` for another percentile.
    pub quantile: String,
    /// A duration: `500ms`, `2s`.
    pub under: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyFile {
    /// Run with `sh -c`; exit status 0 means the data is intact.
    pub command: String,
    /// How long one run may take (default 30s); longer counts as a failure.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Run it as this account rather than as root (chaos runs as root): recommended, and
    /// shown in the plan and the audit log.
    #[serde(default)]
    pub user: Option<String>,
}

/// The service under test: exactly one selector as in `chaos measure` (`supervisor`, `pid`,
/// `exe`, `cgroup` or `comm`; `comm` also filters the others), how its readiness is seen, and
/// what faults may hit beyond the built-in denylist.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    /// Pid of the supervisor whose children are the service.
    #[serde(default)]
    pub supervisor: Option<u32>,
    /// Pid of a running instance (its parent is taken as the supervisor).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Path of the service's executable.
    #[serde(default)]
    pub exe: Option<PathBuf>,
    /// A cgroup v2 directory holding the supervisor and the service (absolute, or relative to
    /// the cgroup2 mount).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// A systemd service (`NAME` or `NAME.service`): its main process, restarted by pid 1,
    /// which chaos observes read-only and never hits.
    #[serde(default)]
    pub unit: Option<String>,
    /// The service's command name (at most 15 bytes, as the kernel keeps it).
    #[serde(default)]
    pub comm: Option<String>,
    /// `exec`, `listen`, `tcp:HOST:PORT`, `cmd:COMMAND` or `unit` (systemd's active/running;
    /// default `unit` with `unit`, else `exec`).
    #[serde(default)]
    pub ready: Option<String>,
    /// How long after a fault (or the death it caused) its effect is looked for: a fault
    /// whose target neither dies nor costs readiness within it has no effect (default 2s).
    #[serde(default)]
    pub effect_window: Option<String>,
    /// Where the service keeps its data: what a dead instance's orphans still hold open there
    /// is named in the report. A `power_loss` fault puts it on a filesystem of its own
    /// (`data_size`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The size of the filesystem a `power_loss` fault makes for `data_dir` (`64MiB`,
    /// `1GiB`; at least 16MiB), preallocated under /var/tmp.
    #[serde(default)]
    pub data_size: Option<String>,
    /// Run a `cmd:` readiness probe as this account rather than as root.
    #[serde(default)]
    pub ready_user: Option<String>,
    /// An episode not ready within this is a failed recovery (default 10s).
    #[serde(default)]
    pub recovery_timeout: Option<String>,
    /// Which processes a signal fault may hit: `main` (the instances: what the supervisor
    /// runs; the default), `worker` (what an instance forked: backends, worker processes) or
    /// `any`. Kernel-fired faults hit whichever process of the service makes the call.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub hit: Option<crate::fault::Hit>,
    /// If given, a fault may only hit processes matching one of these.
    #[serde(default)]
    pub allow: Option<MatchFile>,
    /// Added to the built-in denylist (pid 1, kernel threads, chaos and its ancestors, init
    /// systems, sshd, ...), which always holds.
    #[serde(default)]
    pub deny: Option<MatchFile>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    #[serde(default)]
    pub comms: Vec<String>,
    #[serde(default)]
    pub exes: Vec<PathBuf>,
    #[serde(default)]
    pub pids: Vec<u32>,
    /// Glob patterns on the process title: its command line, the arguments joined by
    /// spaces, as `ps` shows it (`postgres: * idle`, `nginx: worker process`). Servers name
    /// their processes so; only signal faults can pick by title (the kernel sees none).
    #[serde(default)]
    pub titles: Vec<String>,
}

/// One fault. `kind = "signal"`: `signal`, `count`, `interval`, optional `jitter`.
/// `kind = "trigger"`: `signal` sent from the kernel at the `nth` call of `syscall` (the call
/// completes; the process dies after it), at most `count` times (a restarted service meets
/// its Nth call again). `kind = "errno"`: `syscall` fails with `errno` (BPF LSM, where the
/// kernel allows it), at the `nth` call or with `probability`, at most `count` times.
/// `kind = "power_loss"`: `count` power cuts, `interval` apart (optional `jitter`): the
/// service frozen, every write to `target.data_dir` dropped from then on (dm-flakey), the
/// service SIGKILLed, the filesystem remounted (journal recovery), the service released to
/// its supervisor; needs `target.data_dir` and `target.data_size`, and dm-flakey.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    #[schemars(with = "FaultKind")]
    pub kind: Spanned<FaultKind>,
    /// A signal name or number: `SIGKILL`, `TERM`, `9`.
    #[serde(default)]
    pub signal: Option<String>,
    /// How many faults at most.
    pub count: u32,
    /// Between two signals (kind = "signal"), for example `1s`.
    #[serde(default)]
    pub interval: Option<String>,
    /// A random delay added to each signal, up to this much.
    #[serde(default)]
    pub jitter: Option<String>,
    /// Seeds every random choice of this fault (which instance, jitter, probability); the
    /// default is derived from the experiment id, so a file runs the same way each time.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The syscall (kind = "trigger" or "errno").
    #[serde(default)]
    pub syscall: Option<String>,
    /// The call, counted per process from 1, that is hit.
    #[serde(default)]
    pub nth: Option<u32>,
    /// An errno name: `EIO`, `ENOSPC` (kind = "errno").
    #[serde(default)]
    pub errno: Option<String>,
    /// Chance that a call is hit, 0 to 1 (kind = "errno"; default 1).
    #[serde(default)]
    pub probability: Option<f64>,
    /// The fault only fires inside one of these windows, as `DAYS HH:MM-HH:MM [ZONE]`, for
    /// example `Mon-Fri 09:00-17:00` (local time) or `daily 22:00-06:00 Europe/Paris`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub windows: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Signal,
    Trigger,
    Errno,
    PowerLoss,
}

/// Automatic aborts: stop injecting, disarm, finish the report, exit 3.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardsFile {
    /// Abort when an episode has not recovered within this (for example `5s`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub episode_timeout: Option<Spanned<String>>,
    /// Abort when the service crashes (dies without a chaos signal) more than this many times
    /// the baseline: in any stretch as long as the baseline phase, more than
    /// `crash_rate_factor` x max(baseline crashes, 1) crashes.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub crash_rate_factor: Option<Spanned<f64>>,
    /// Abort after this many failed recoveries in a row.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub max_consecutive_failures: Option<Spanned<u32>>,
    /// Abort when a dead instance leaves descendants alive that hold its listening ports or
    /// files under `target.data_dir`: they keep every replacement from starting cleanly (an
    /// nginx master killed with SIGKILL leaves its workers on the port).
    #[serde(default)]
    pub abort_on_orphans: bool,
}

/// The run's timeline: baseline (measure only), injection, cool-down (measure only).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhasesFile {
    /// Measure without faults first (default 5s; the crash-rate guard's reference).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub baseline: Option<Spanned<String>>,
    /// After the last fault, wait for its recovery and this long more (default 2s).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cooldown: Option<Spanned<String>>,
    /// The whole run ends by then, whatever is left (default 1h).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub max_duration: Option<Spanned<String>>,
}

/// Files written at the end (paths relative to the current directory); the command line's
/// `--json`, `--junit`, `--hdr-log`, `--audit` take precedence.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputsFile {
    /// The result: verdict, clauses, faults, episodes, histograms (what `chaos report` reads).
    #[serde(default)]
    pub json: Option<PathBuf>,
    /// JUnit XML, one test case per hypothesis clause.
    #[serde(default)]
    pub junit: Option<PathBuf>,
    /// HdrHistogram interval log of the recovery phases.
    #[serde(default)]
    pub hdr_log: Option<PathBuf>,
    /// The interval log's time slices: one interval per slice and phase (default 10s).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub hdr_interval: Option<toml::Spanned<String>>,
    /// The append-only, hash-chained audit log (default /var/log/chaos/audit.jsonl).
    #[serde(default)]
    pub audit: Option<PathBuf>,
}

/// The JSON Schema of experiment files, pretty-printed.
pub fn schema() -> String {
    let schema = schemars::schema_for!(ExperimentFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
