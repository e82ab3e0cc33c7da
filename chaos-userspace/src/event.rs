//! Events as chaos reports them, and their JSON Lines wire format.
//!
//! # Wire format
//!
//! `chaos observe --json` writes one JSON object per line. Each is
//! `{"type": "<kind>", "data": {...}}`; every event's `data` has `ts_ns`, CLOCK_MONOTONIC
//! nanoseconds taken in the kernel (`bpf_ktime_get_ns`), comparable with
//! `clock_gettime(CLOCK_MONOTONIC)` on the same boot.
//!
//! | type | data |
//! |---|---|
//! | `fork` | `ts_ns`, `parent_pid`, `child_pid` |
//! | `exec` | `ts_ns`, `pid`, `ppid`, `old_pid`, `comm`, `filename` |
//! | `exit` | `ts_ns`, `pid`, `ppid`, `comm`, `exit_code` (0-255), `signal` (0 when not killed by a signal), `core_dumped`, `lifetime_ns`, `unsynced_bytes` (bytes written since the last successful fsync-family call; null with `--fsync-hook off`) |
//! | `signal` | `ts_ns`, `sender_pid`, `sender_comm`, `target_pid`, `target_comm`, `signal`, `signal_name`, `code` (si_code), `group`, `result` (`delivered`, `ignored`, `already_pending`, `overflow_fail`, `lose_info`) |
//! | `fsync` | `ts_ns` (when the call returned), `pid`, `call` (`fsync`, `fdatasync`, `sync_file_range`, `syncfs`, `msync`, `ext4_sync_file`), `fd` (null where the hook does not see it), `dev` (`"major:minor"` or null), `ino` (or null), `datasync` (or null), `latency_ns`, `ret` (0 or -errno) |
//! | `reap` | `ts_ns`, `pid` (the waiter), `child_pid` (the child its wait4/waitid collected) |
//! | `listen` | `ts_ns`, `pid`, `port`, `family` (`inet` or `inet6`) |
//! | `inject` | `ts_ns`, `pid`, `tid`, `fault` (`signal_trigger`, `lsm_errno`), `what` (the syscall or LSM hook), `value` (the signal or errno name), `nth`, `dry_run`: a fault the kernel injected (`chaos inject`) |
//! | `signal_deliver` | `ts_ns`, `pid`, `tid`, `signal`, `signal_name`, `disposition` (`default`, `ignore`, `handler`): a target took the signal to act on it (`chaos inject`) |
//! | `syscall_error` | `ts_ns`, `pid`, `tid`, `syscall`, `ret`, `errno`: a target's syscall failed (`chaos inject errno`, proof of effect) |
//! | `summary` | last line: `duration_ns`, `events` (count per type), `lost`, `targets_full`, `read_errors` |
//!
//! A pid is a thread-group id (what userspace calls a pid). `lost` counts events the kernel
//! could not hand over because the ring buffer was full: a non-zero value means the stream has
//! gaps.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    Fork(Fork),
    Exec(Exec),
    Exit(Exit),
    Signal(Signal),
    Fsync(Fsync),
    Reap(Reap),
    Listen(Listen),
    Inject(Inject),
    SyscallError(SyscallError),
    SignalDeliver(SignalDeliver),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    pub ts_ns: u64,
    pub parent_pid: u32,
    pub child_pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub ts_ns: u64,
    pub pid: u32,
    pub ppid: u32,
    pub old_pid: u32,
    pub comm: String,
    pub filename: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub ts_ns: u64,
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub exit_code: u32,
    pub signal: u32,
    pub core_dumped: bool,
    pub lifetime_ns: u64,
    /// None when no write hook was attached.
    pub unsynced_bytes: Option<u64>,
}

impl Exit {
    /// Decodes `task_struct::exit_code` as wait(2) would: status `<< 8`, signal `& 0x7f`, core
    /// dump `& 0x80` (bcc libbpf-tools/exitsnoop.bpf.c does the same).
    pub fn from_raw(
        ts_ns: u64,
        pid: u32,
        ppid: u32,
        comm: String,
        raw: u32,
        lifetime_ns: u64,
        unsynced_bytes: Option<u64>,
    ) -> Self {
        Self {
            ts_ns,
            pid,
            ppid,
            comm,
            exit_code: (raw >> 8) & 0xff,
            signal: raw & 0x7f,
            core_dumped: raw & 0x80 != 0,
            lifetime_ns,
            unsynced_bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub ts_ns: u64,
    pub sender_pid: u32,
    pub sender_comm: String,
    pub target_pid: u32,
    pub target_comm: String,
    pub signal: u32,
    pub signal_name: String,
    pub code: i32,
    pub group: bool,
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fsync {
    pub ts_ns: u64,
    pub pid: u32,
    pub call: String,
    pub fd: Option<i32>,
    pub dev: Option<String>,
    pub ino: Option<u64>,
    pub datasync: Option<bool>,
    pub latency_ns: u64,
    pub ret: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reap {
    pub ts_ns: u64,
    pub pid: u32,
    pub child_pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    pub ts_ns: u64,
    pub pid: u32,
    pub port: u16,
    pub family: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inject {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub fault: crate::fault::KernelRule,
    pub what: String,
    pub value: String,
    pub nth: u32,
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalDeliver {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub signal: u32,
    pub signal_name: String,
    pub disposition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallError {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub syscall: String,
    pub ret: i64,
    pub errno: String,
}

impl Event {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::Fork(e) => e.ts_ns,
            Event::Exec(e) => e.ts_ns,
            Event::Exit(e) => e.ts_ns,
            Event::Signal(e) => e.ts_ns,
            Event::Fsync(e) => e.ts_ns,
            Event::Reap(e) => e.ts_ns,
            Event::Listen(e) => e.ts_ns,
            Event::Inject(e) => e.ts_ns,
            Event::SyscallError(e) => e.ts_ns,
            Event::SignalDeliver(e) => e.ts_ns,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Event::Fork(_) => "fork",
            Event::Exec(_) => "exec",
            Event::Exit(_) => "exit",
            Event::Signal(_) => "signal",
            Event::Fsync(_) => "fsync",
            Event::Reap(_) => "reap",
            Event::Listen(_) => "listen",
            Event::Inject(_) => "inject",
            Event::SyscallError(_) => "syscall_error",
            Event::SignalDeliver(_) => "signal_deliver",
        }
    }
}

/// Counts per event type, in a fixed order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    pub fork: u64,
    pub exec: u64,
    pub exit: u64,
    pub signal: u64,
    pub fsync: u64,
    #[serde(default)]
    pub reap: u64,
    #[serde(default)]
    pub listen: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inject: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub syscall_error: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub signal_deliver: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl EventCounts {
    pub fn add(&mut self, event: &Event) {
        let slot = match event {
            Event::Fork(_) => &mut self.fork,
            Event::Exec(_) => &mut self.exec,
            Event::Exit(_) => &mut self.exit,
            Event::Signal(_) => &mut self.signal,
            Event::Fsync(_) => &mut self.fsync,
            Event::Reap(_) => &mut self.reap,
            Event::Listen(_) => &mut self.listen,
            Event::Inject(_) => &mut self.inject,
            Event::SyscallError(_) => &mut self.syscall_error,
            Event::SignalDeliver(_) => &mut self.signal_deliver,
        };
        *slot += 1;
    }
}

/// What the kernel side counted instead of reporting (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCounters {
    pub lost: u64,
    pub targets_full: u64,
    pub read_errors: u64,
}

/// The last line of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub duration_ns: u64,
    pub events: EventCounts,
    pub lost: u64,
    pub targets_full: u64,
    pub read_errors: u64,
}

/// `enum trace_signal_result`, include/trace/events/signal.h.
pub fn signal_result_name(result: i32) -> String {
    match result {
        0 => "delivered".into(),
        1 => "ignored".into(),
        2 => "already_pending".into(),
        3 => "overflow_fail".into(),
        4 => "lose_info".into(),
        other => format!("unknown({other})"),
    }
}

/// `SIGKILL`, `SIGRTMIN+3`, or the number when unknown.
pub fn signal_name(signal: u32) -> String {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(signal as i32) {
        return sig.as_str().to_string();
    }
    let rtmin = libc::SIGRTMIN() as u32;
    if (rtmin..=libc::SIGRTMAX() as u32).contains(&signal) {
        return format!("SIGRTMIN+{}", signal - rtmin);
    }
    format!("SIG{signal}")
}

/// `EIO` for 5, or the number when unknown.
pub fn errno_name(errno: i32) -> String {
    match nix::errno::Errno::from_raw(errno) {
        nix::errno::Errno::UnknownErrno => format!("E{errno}"),
        known => format!("{known:?}"),
    }
}

/// `fsync` for its number on this architecture.
pub fn syscall_name(nr: u32) -> String {
    syscalls::Sysno::new(nr as usize)
        .map_or_else(|| format!("syscall_{nr}"), |s| s.name().to_string())
}

/// A NUL-padded kernel string as text.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_decoding_follows_wait() {
        let normal = Exit::from_raw(1, 2, 3, "x".into(), 3 << 8, 5, None);
        assert_eq!(
            (normal.exit_code, normal.signal, normal.core_dumped),
            (3, 0, false)
        );
        let killed = Exit::from_raw(1, 2, 3, "x".into(), 9, 5, None);
        assert_eq!(
            (killed.exit_code, killed.signal, killed.core_dumped),
            (0, 9, false)
        );
        let dumped = Exit::from_raw(1, 2, 3, "x".into(), 0x80 | 11, 5, None);
        assert_eq!(
            (dumped.exit_code, dumped.signal, dumped.core_dumped),
            (0, 11, true)
        );
    }

    #[test]
    fn names_signals_and_results() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(libc::SIGRTMIN() as u32 + 2), "SIGRTMIN+2");
        assert_eq!(signal_result_name(2), "already_pending");
        assert_eq!(signal_result_name(9), "unknown(9)");
        assert_eq!(c_str(b"sh\0\0garbage"), "sh");
    }
}
