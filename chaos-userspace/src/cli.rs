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
pub struct DoctorArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}
