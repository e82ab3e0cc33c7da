//! Command line: clap definitions only; each subcommand's module turns its raw arguments into
//! a checked configuration before anything touches the kernel.

use std::{ffi::OsString, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::kernel::layout::FsyncHook;

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    version,
    about = "Safe, measured resilience experiments on Linux, observed with eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream lifecycle, signal and fsync events of a target set, from the kernel.
    #[command(after_help = OBSERVE_EXAMPLES)]
    Observe(ObserveArgs),
    /// Measure how a supervised service recovers: each death to the replacement being ready,
    /// phase by phase, from kernel timestamps.
    #[command(after_help = MEASURE_EXAMPLES)]
    Measure(MeasureArgs),
    /// Inject faults, deny-by-default, each confirmed by the kernel event that shows its effect.
    #[command(subcommand)]
    Inject(InjectCommand),
    /// Run an experiment file: baseline, faults, cool-down; the hypothesis held (exit 0),
    /// refuted (1) or aborted by a guard (3).
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Print the JSON Schema of experiment files.
    Schema,
    /// Show any chaos output (a run's result, a measure or inject stream, a recording), or
    /// merge several: in the terminal, as an HTML page with plots (--html), or as JSON.
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Audit logs: `chaos audit verify FILE` checks that none was edited, deleted or reordered.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Probe what this kernel allows (by loading tiny programs) and what that means for chaos.
    #[command(after_help = DOCTOR_EXAMPLES)]
    Doctor(DoctorArgs),
}

const RUN_EXAMPLES: &str = "\
Examples:
  chaos run examples/sync-helper.toml                  run it: plan, baseline, faults, cool-down, verdict
  chaos run exp.toml --dry-run                         check the file, the target and the kernel; hit nothing
  chaos run exp.toml --junit result.xml --json result.json   for a CI gate
  chaos run canary.toml --approve queue-canary-7       a canary experiment needs its id on the command line
  chaos run exp.toml --record run.jsonl                keep every input of the run ...
  chaos run --replay run.jsonl --json result.json      ... and recompute its verdict and result, without root
  chaos schema > experiment.schema.json                the file format, for editors

Exit codes: 0 the hypothesis held, 1 it was refuted, 3 a guard (or Ctrl-C) aborted the run,
2 the file, the target or the kernel cannot run it (nothing was injected).

Every fault is written to the audit log (fsynced) before it fires; on abort, and whenever
chaos ends, the faults stop: scheduled signals are not sent, and the kernel's rules are
disarmed, then detached.";

const REPORT_EXAMPLES: &str = "\
Examples:
  chaos report result.json                     verdict, clauses, histograms, CDF, timeline as text
  chaos report result.json --html report.html  the same as a self-contained page (SVG plots)
  chaos report measure.jsonl                   a `chaos measure --json` stream: phases, histograms, episodes
  chaos report run.rec                         a recording (--record), replayed first
  chaos report a.json b.json c.json --html all.html   merged: a row per source, merged histograms
  chaos report a.json b.json --json            the merged summary: `sources`, counts, phases
  chaos report --baseline before*.json -- after*.json   p50, p99 and max, before against after

A file is recognised by its content: a result of `chaos run --json FILE` (or outputs.json),
the JSON Lines of `chaos measure --json` or `chaos inject --json`, or a `--record` file of
either. Merged histograms are HdrHistograms added exactly: the merged quantiles are those of
every episode of every source.";

const OBSERVE_EXAMPLES: &str = "\
Examples:
  chaos observe -- ./my-service --port 8080     launch it and watch it from its first instruction
  chaos observe --pid 4242 --json               a running process and every child it forks
  chaos observe --comm postgres --duration 60   every process named postgres, for a minute
  chaos observe --cgroup /sys/fs/cgroup/app     everything in a cgroup v2 directory

Targets combine; at least one is required. Events of other processes are filtered out in the
kernel. With -- CMD, observation ends when CMD's whole process tree is gone (or at --duration,
when CMD is sent SIGTERM). Ctrl-C ends cleanly with a summary.";

const MEASURE_EXAMPLES: &str = "\
Examples:
  chaos measure --supervisor $(pgrep -x runsv) --episodes 10    the service runsv runs, 10 recoveries
  chaos measure --comm queue --ready listen --json              ready when the new instance listens
  chaos measure --cgroup /sys/fs/cgroup/app --ready tcp:127.0.0.1:8080 --hdr-log app.hlog
  chaos measure --pid 4242 --record run.jsonl                   keep the raw events ...
  chaos measure --replay run.jsonl                              ... and recompute them, without root

Phases: fault (the signal that killed it, if one was seen) -> exit -> reaped (its parent's
wait returned it) -> forked (the supervisor forked the replacement) -> exec (the replacement
exec'd the service's command name) -> ready. Each phase is timed from kernel timestamps;
readiness by tcp: or cmd: is probed from userspace every millisecond. An episode not ready
within --recovery-timeout is reported as failed with the last milestone reached.

Reaping is seen through the wait4/waitid syscall tracepoints: while chaos measure runs, every
syscall on the machine takes the slower traced path (about +450 ns each here); --no-reap
avoids that and folds the reaping phase into the next one.";

const INJECT_SIGNAL_EXAMPLES: &str = "\
Examples:
  chaos inject signal --signal TERM --pid 4242                       one SIGTERM, through a pidfd
  chaos inject signal --signal TERM --escalate-after 5s --comm queue   TERM, then KILL if still alive
  chaos inject signal --signal KILL --count 10 --interval 2s --jitter 500ms --seed 7 --cgroup /sys/fs/cgroup/app
  chaos inject signal --signal STOP --for 3s --pid 4242               freeze for 3 s, then SIGCONT
  chaos inject signal --signal KILL --on fsync:nth=3 -- ./db          from the kernel, at the 3rd fsync
  chaos inject signal --signal KILL --on fsync:nth=3 --before -- ./db before that fsync runs
  chaos inject signal --signal TERM --comm queue --dry-run            what would be hit, and when

--on sends from eBPF (bpf_send_signal) at the Nth call of the syscall, counted per process.
The call itself still runs to completion before the signal acts (the signal is delivered on
the way back to user mode): a SIGKILL at the 3rd fsync lets that fsync finish. --before uses
the seccomp backend instead (-- CMD only): the signal is sent and the call fails with EINTR
without running.

Targets: --pid, --comm, --cgroup or -- CMD. Never hit: pid 1, kernel threads, chaos and its
ancestors, and system infrastructure (init, systemd and its helpers, sshd, dbus, journald,
udevd, login). Every fault stops when chaos stops, however it stops: a frozen process is
thawed by chaos's watchdog if chaos dies.";

const INJECT_ERRNO_EXAMPLES: &str = "\
Examples:
  chaos inject errno --syscall fsync --errno EIO --nth 3 -- ./db             the 3rd fsync fails
  chaos inject errno --syscall openat --errno ENOENT --path /data/ -- ./db   opens under /data/
  chaos inject errno --syscall write --errno ENOSPC --probability 0.1 --seed 7 -- ./db
  chaos inject errno --syscall connect --errno ECONNREFUSED --backend lsm --comm client

Backends: seccomp (-- CMD only; any syscall; works on any kernel since 5.5; the filter is
inherited by the command's children) and lsm (BPF LSM, any target; open/openat, read, write,
connect, fork/clone, execve, unlink, rename, mkdir; needs a kernel that allows BPF LSM, see
chaos doctor). Default: seccomp with -- CMD, else lsm. Every injected errno is confirmed by
the syscall's return value seen in the kernel.";

const DOCTOR_EXAMPLES: &str = "\
Examples:
  chaos doctor           a table of features, whether they work here, and what that means
  chaos doctor --json    the same as one JSON object

Exit status 0 when observation works on this machine, 2 otherwise.";

#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// A process to observe, with the children it forks from now on (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Do not follow children of --pid and of the launched command.
    #[arg(long)]
    pub no_follow: bool,
    /// Every process with this command name, now or after a later exec (repeatable, at most 15 bytes).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Every process in this cgroup v2 directory or below it, now or moved in later (repeatable).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// Every process of this systemd unit, through its cgroup (repeatable; pid 1 is never
    /// observed).
    #[arg(long = "unit", value_name = "NAME")]
    pub units: Vec<String>,
    /// Write JSON Lines ({"type": ..., "data": ...}) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Which hook reports fsync-family calls. `fs` (default) costs nothing outside syncs but
    /// sees only ext4; `syscalls` sees every filesystem and the fd but slows every syscall on
    /// the machine while it runs.
    #[arg(long, value_enum, default_value = "fs", value_name = "HOOK")]
    pub fsync_hook: FsyncHook,
    /// Ring buffer size in pages (a power of two). Raise it if the summary reports lost events.
    #[arg(long, default_value_t = 1024, value_name = "PAGES")]
    pub buffer_pages: u32,
    #[command(flatten)]
    pub export: ExportArgs,
    /// Command to launch and observe from its first instruction.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("service").args(["supervisor", "pid", "comm", "exe", "cgroup", "unit", "replay"]).required(true).multiple(true)))]
pub struct MeasureArgs {
    /// The supervisor's pid: its children running the service are the instances.
    #[arg(long, value_name = "PID", conflicts_with_all = ["pid", "exe", "cgroup"])]
    pub supervisor: Option<u32>,
    /// The first instance; its parent is taken as the supervisor.
    #[arg(long, value_name = "PID", conflicts_with_all = ["comm", "exe", "cgroup"])]
    pub pid: Option<u32>,
    /// The service's command name (alone: every process so named; with --supervisor or
    /// --cgroup: picks among their processes).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Every process running this executable.
    #[arg(long, value_name = "PATH", conflicts_with = "cgroup")]
    pub exe: Option<PathBuf>,
    /// The processes at the top of this cgroup v2 directory's tree.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// A systemd service (`NAME` or `NAME.service`): its main process, restarted by pid 1,
    /// which chaos observes read-only (its forks into the unit's cgroup and its reaps).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["supervisor", "pid", "comm", "exe", "cgroup"])]
    pub unit: Option<String>,
    /// When a replacement counts as recovered: exec, listen, tcp:HOST:PORT, cmd:COMMAND or
    /// unit (systemd's active/running; the default with --unit, else exec).
    #[arg(long, value_name = "HOW")]
    pub ready: Option<String>,
    /// Seconds after the fault (or exit) before an episode counts as failed.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub recovery_timeout: f64,
    /// The service's data directory: what a dead instance's orphans still have open there
    /// is named.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Stop after this many episodes have ended.
    #[arg(long, value_name = "N")]
    pub episodes: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// JSON Lines: an episode per line, then a summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub hdr: HdrLogArgs,
    /// Save every input of the measurement to FILE, for --replay.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Recompute the episodes of a --record file (no root needed).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["supervisor", "pid", "comm", "exe", "cgroup", "unit", "duration", "episodes", "no_reap", "ready", "recovery_timeout", "fsync_hook", "buffer_pages", "data_dir"])]
    pub replay: Option<PathBuf>,
    /// Which hook reports fsync calls and unsynced bytes (as for observe).
    #[arg(long, value_enum, default_value = "fs", value_name = "HOOK")]
    pub fsync_hook: FsyncHook,
    /// Do not watch wait4/waitid (no syscall tracepoint; no reaped milestone).
    #[arg(long)]
    pub no_reap: bool,
    /// Ring buffer size in pages (a power of two).
    #[arg(long, default_value_t = 1024, value_name = "PAGES")]
    pub buffer_pages: u32,
    #[command(flatten)]
    pub export: ExportArgs,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's hash chain; exit 1 naming the first line that breaks it.
    Verify {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// A hash kept elsewhere (chaos prints the last one at the end of a run): the chain
        /// must pass through it, or the log was rewritten.
        #[arg(long, value_name = "HASH")]
        expect_hash: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum InjectCommand {
    /// Send signals: scheduled from userspace through a pidfd, or from the kernel at the Nth
    /// call of a syscall.
    #[command(after_help = INJECT_SIGNAL_EXAMPLES)]
    Signal(InjectSignalArgs),
    /// Make a syscall fail with an errno.
    #[command(after_help = INJECT_ERRNO_EXAMPLES)]
    Errno(InjectErrnoArgs),
}

/// What to hit: as `chaos observe`, but a target must be named.
#[derive(Debug, Args)]
pub struct InjectTargetArgs {
    /// A process (and the children it forks from now on).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Every process with this command name, now or after a later exec.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Every process in this cgroup v2 directory or below it.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// Every process of this systemd unit, through its cgroup (pid 1 is never hit).
    #[arg(long = "unit", value_name = "NAME")]
    pub units: Vec<String>,
    /// Command to launch and fault.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Flags every fault shares.
#[derive(Debug, Args)]
pub struct InjectCommonArgs {
    /// Seed of every random choice (printed when not given, so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Show exactly what would be hit and when; hit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop injecting after this long, whatever else is asked (default: when the launched
    /// command's tree is gone, or on Ctrl-C).
    #[arg(long, value_name = "DURATION")]
    pub max_duration: Option<String>,
    /// Fewer faults per minute than the built-in ceiling (600 signals, 60000 failed calls).
    #[arg(long, value_name = "N")]
    pub max_per_minute: Option<u32>,
    /// JSON Lines: a line per fault and per confirmation, then a summary.
    #[arg(long)]
    pub json: bool,
    /// Append every fault to this audit log (hash-chained; each entry is on disk before its
    /// fault fires; `chaos audit verify FILE` checks it).
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    #[command(flatten)]
    pub export: ExportArgs,
}

#[derive(Debug, Args)]
pub struct InjectSignalArgs {
    /// The signal: a name (TERM, SIGKILL) or a number.
    #[arg(long, value_name = "SIG")]
    pub signal: String,
    /// How many signals (each to one target chosen among the live ones).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub count: u32,
    /// Time between two signals.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
    /// A random delay in [0, DURATION] added to each signal's time (seeded).
    #[arg(long, value_name = "DURATION")]
    pub jitter: Option<String>,
    /// Send SIGKILL if the target is still alive this long after the signal.
    #[arg(long, value_name = "DURATION")]
    pub escalate_after: Option<String>,
    /// With --signal STOP: send SIGCONT this long after (a freeze).
    #[arg(long = "for", value_name = "DURATION")]
    pub freeze_for: Option<String>,
    /// From the kernel: send at the Nth call of SYSCALL, per process (SYSCALL:nth=N).
    #[arg(long, value_name = "SYSCALL:nth=N")]
    pub on: Option<String>,
    /// With --on: stop the call from running (seccomp; needs -- CMD).
    #[arg(long, requires = "on")]
    pub before: bool,
    /// Which processes a signal may hit: main (the top of the target set's tree: a named
    /// process, the launched command), worker (what those forked), or any.
    #[arg(long, value_enum, default_value = "main", value_name = "ROLE")]
    pub hit: HitArg,
    #[command(flatten)]
    pub common: InjectCommonArgs,
    #[command(flatten)]
    pub targets: InjectTargetArgs,
}

#[derive(Debug, Args)]
pub struct InjectErrnoArgs {
    /// The syscall to fail (this architecture's name: openat, fsync, connect, ...).
    #[arg(long, value_name = "NAME")]
    pub syscall: String,
    /// The errno to return: a name (EIO, ENOSPC) or a number.
    #[arg(long, value_name = "ENAME")]
    pub errno: String,
    /// Fail each candidate call with this probability (seeded).
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub probability: f64,
    /// Only the Nth call of each process is a candidate.
    #[arg(long, value_name = "N")]
    pub nth: Option<u32>,
    /// At most this many failures in all.
    #[arg(long, value_name = "N")]
    pub count: Option<u32>,
    /// Only calls whose path starts with PREFIX are candidates (seccomp backend).
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// Only calls whose argument N matches are candidates: N=VALUE, N&MASK=VALUE or N&MASK
    /// (every bit of MASK set); numbers or O_ flags (2&O_CREAT). Repeat for more (all must
    /// match). Checked in the kernel by the seccomp filter: no other call leaves it.
    #[arg(long, value_name = "COND")]
    pub arg: Vec<String>,
    /// seccomp or lsm (default: seccomp with -- CMD, else lsm).
    #[arg(long, value_enum)]
    pub backend: Option<ErrnoBackend>,
    #[command(flatten)]
    pub common: InjectCommonArgs,
    #[command(flatten)]
    pub targets: InjectTargetArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HitArg {
    Main,
    Worker,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ErrnoBackend {
    Seccomp,
    Lsm,
}

/// Where results go besides the terminal (observe, measure, inject, run).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Export")]
pub struct ExportArgs {
    /// Send traces and metrics to an OpenTelemetry collector (OTLP over HTTP/protobuf), at
    /// this base URL (http://HOST:4318). Without it, OTEL_EXPORTER_OTLP_ENDPOINT (and the
    /// other standard OTEL_EXPORTER_OTLP_* variables) turn the export on.
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics while running (PORT alone binds
    /// 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<String>,
    /// Write the metrics for node_exporter's textfile collector (a *.prom file, rewritten
    /// about once a second).
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// chaos outputs: results of `chaos run --json`, `chaos measure --json` and `chaos inject
    /// --json` streams, recordings (`--record`; replayed); several are merged. After
    /// --baseline, the set compared with the baseline.
    #[arg(value_name = "FILE", required = true)]
    pub sources: Vec<PathBuf>,
    /// Compare: these outputs (the baseline, before `--`) against FILE... (after it).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub baseline: Vec<PathBuf>,
    /// Write a self-contained HTML page (SVG plots) instead of printing to the terminal.
    #[arg(long, value_name = "OUT.html", conflicts_with = "json")]
    pub html: Option<PathBuf>,
    /// Print the (merged) summary as JSON: a `sources` list, the merged counts and phases.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub hdr: HdrLogArgs,
}

/// `--hdr-log FILE --hdr-interval DURATION` (measure, report).
#[derive(Debug, Args)]
pub struct HdrLogArgs {
    /// Write the HdrHistogram interval log of every phase (values in nanoseconds) to FILE
    /// (for a report: of the merge).
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// The HdrHistogram log's time slices: one interval per slice and phase.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub hdr_interval: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment file (TOML; `chaos schema` prints its JSON Schema).
    #[arg(value_name = "FILE", required_unless_present = "replay")]
    pub file: Option<PathBuf>,
    /// Save every input of the run to FILE, for --replay.
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    pub record: Option<PathBuf>,
    /// Recompute a --record file's verdict and result (no root needed; nothing is touched).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["file", "record", "dry_run", "accept_blast_radius", "approve", "audit"])]
    pub replay: Option<PathBuf>,
    /// Check the file, find the target, load the kernel programs and run the verify command;
    /// inject nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run a file (or a program it names) that others could have changed: chaos runs what
    /// the file says as root. The override is recorded in the audit log.
    #[arg(long)]
    pub allow_unsafe_file: bool,
    /// Acknowledge a `ci` or `lab` blast radius.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub accept_blast_radius: Option<AcceptRadius>,
    /// Approve a `canary` experiment: its id, exactly.
    #[arg(long, value_name = "ID")]
    pub approve: Option<String>,
    /// Write the result as JSON here (overrides outputs.json).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write JUnit XML here (overrides outputs.junit).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the HdrHistogram log here (overrides outputs.hdr_log).
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// The HdrHistogram log's time slices (overrides outputs.hdr_interval; default 10s).
    #[arg(long, value_name = "DURATION")]
    pub hdr_interval: Option<String>,
    /// The audit log (overrides outputs.audit; default /var/log/chaos/audit.jsonl).
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    #[command(flatten)]
    pub export: ExportArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcceptRadius {
    Ci,
    Lab,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}
