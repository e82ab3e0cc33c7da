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
    /// Probe what this kernel allows (by loading tiny programs) and what that means for chaos.
    #[command(after_help = DOCTOR_EXAMPLES)]
    Doctor(DoctorArgs),
}

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
    /// Command to launch and observe from its first instruction.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("service").args(["supervisor", "pid", "comm", "exe", "cgroup", "replay"]).required(true).multiple(true)))]
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
    /// When a replacement counts as recovered: exec, listen, tcp:HOST:PORT or cmd:COMMAND.
    #[arg(long, default_value = "exec", value_name = "HOW")]
    pub ready: String,
    /// Seconds after the fault (or exit) before an episode counts as failed.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub recovery_timeout: f64,
    /// Stop after this many episodes have ended.
    #[arg(long, value_name = "N")]
    pub episodes: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// JSON Lines: an episode per line, then a summary.
    #[arg(long)]
    pub json: bool,
    /// Write the HdrHistogram interval log of every phase (values in nanoseconds) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// Save every input of the measurement to FILE, for --replay.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Recompute the episodes of a --record file (no root needed).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["supervisor", "pid", "comm", "exe", "cgroup", "duration", "episodes", "no_reap", "ready", "recovery_timeout", "fsync_hook", "buffer_pages"])]
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
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}
