//! Events the kernel programs write to the `EVENTS` ring buffer.
//!
//! Every record starts with an [`EventHeader`]; its `kind` says which struct follows. Userspace
//! checks the record length against the kind before reading it (`chaos-userspace/src/decode.rs`).

use crate::COMM_LEN;

/// Longest exec filename kept (bytes, including the NUL). Longer names are truncated.
pub const FILENAME_LEN: usize = 256;

/// Discriminants of [`EventHeader::kind`].
pub mod kind {
    pub const FORK: u32 = 1;
    pub const EXEC: u32 = 2;
    pub const EXIT: u32 = 3;
    pub const SIGNAL: u32 = 4;
    pub const FSYNC: u32 = 5;
    pub const REAP: u32 = 6;
    pub const LISTEN: u32 = 7;
    /// [`crate::InjectEvent`].
    pub const INJECT: u32 = 8;
    /// [`crate::SyscallErrorEvent`].
    pub const SYSCALL_ERROR: u32 = 9;
    /// [`SignalDeliverEvent`].
    pub const SIGNAL_DELIVER: u32 = 10;
}

/// Values of [`FsyncEvent::call`]: which syscall or filesystem hook saw the sync.
pub mod fsync_call {
    /// The syscall number is in [`super::FsyncEvent::syscall_nr`].
    pub const SYSCALL: u32 = 1;
    /// ext4's `ext4_sync_file` (tracepoints ext4:ext4_sync_file_enter/exit).
    pub const EXT4_SYNC_FILE: u32 = 2;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// CLOCK_MONOTONIC nanoseconds, `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
    pub kind: u32,
    /// Process (thread group) id the event is about; for signals, the sender.
    pub pid: u32,
}
const _: () = assert!(size_of::<EventHeader>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ForkEvent>() == 24);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub ppid: u32,
    /// Pid of the thread that called exec (differs from `header.pid` when a non-leader thread
    /// exec'd and took over the group leader's pid).
    pub old_pid: u32,
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; FILENAME_LEN],
}
const _: () = assert!(size_of::<ExecEvent>() == 16 + 8 + COMM_LEN + FILENAME_LEN);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub ppid: u32,
    /// `task_struct::exit_code` as the kernel keeps it: `(code << 8) | 0x80 (core) | signal`.
    pub exit_code: u32,
    /// Time since the group leader started (`task_struct::start_time`), nanoseconds.
    pub lifetime_ns: u64,
    pub comm: [u8; COMM_LEN],
    /// Bytes the process wrote since its last successful fsync-family call, as counted by the
    /// write hooks attached with the fsync hook (0 when none are attached; userspace knows).
    pub unsynced_bytes: u64,
}
const _: () = assert!(size_of::<ExitEvent>() == 56);

/// A wait returned a child: `header.pid` is the waiter, `child_pid` the child it collected
/// (syscalls:sys_exit_wait4 with a positive return, or sys_exit_waitid with `si_pid` set and an
/// exit `si_code`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReapEvent {
    pub header: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ReapEvent>() == 24);

/// A TCP socket of the process entered the LISTEN state (sock:inet_sock_set_state).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenEvent {
    pub header: EventHeader,
    /// Local port, host byte order.
    pub port: u32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u32,
}
const _: () = assert!(size_of::<ListenEvent>() == 24);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalEvent {
    /// `pid` is the sender's tgid (the task that was current when the signal was generated).
    pub header: EventHeader,
    pub target_pid: u32,
    pub signal: u32,
    /// `si_code` (SI_USER, SI_KERNEL, SI_TKILL, ...).
    pub code: i32,
    /// `enum trace_signal_result` from include/trace/events/signal.h.
    pub result: i32,
    /// Non-zero when the signal was aimed at the whole thread group.
    pub group: u32,
    pub _pad: u32,
    pub sender_comm: [u8; COMM_LEN],
    pub target_comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<SignalEvent>() == 72);

/// A target took a signal off its queue to act on it (signal:signal_deliver, in get_signal()).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalDeliverEvent {
    pub header: EventHeader,
    pub tid: u32,
    pub signal: u32,
    /// The disposition: 0 default, 1 ignore, else a handler address.
    pub handler: u64,
}
const _: () = assert!(size_of::<SignalDeliverEvent>() == 32);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsyncEvent {
    pub header: EventHeader,
    /// One of [`fsync_call`].
    pub call: u32,
    /// The syscall number when `call == SYSCALL`, else 0.
    pub syscall_nr: u32,
    /// File descriptor where the hook sees one, else -1.
    pub fd: i32,
    /// `dev_t` of the file's filesystem in the kernel's encoding (major << 20 | minor), or 0.
    pub dev: u32,
    /// Inode number, or 0 where the hook does not see it.
    pub ino: u64,
    /// 1 for fdatasync semantics, 0 for a full sync, `u32::MAX` when the hook does not say.
    pub datasync: u32,
    pub _pad: u32,
    pub latency_ns: u64,
    /// Return value: 0 or a negative errno.
    pub ret: i64,
}
const _: () = assert!(size_of::<FsyncEvent>() == 64);

/// What `FSYNC_START` remembers between the entry and the exit of one sync call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsyncStart {
    pub ts_ns: u64,
    pub ino: u64,
    pub call: u32,
    pub syscall_nr: u32,
    pub fd: i32,
    pub dev: u32,
    pub datasync: u32,
    pub _pad: u32,
    /// The process's unsynced byte count when the call began; a successful call takes it off.
    pub unsynced: u64,
}
const _: () = assert!(size_of::<FsyncStart>() == 48);

/// Indices of the per-CPU `COUNTERS` array. Userspace sums them over CPUs.
pub mod counter {
    /// Events dropped because the ring buffer was full.
    pub const LOST_EVENTS: u32 = 0;
    /// Processes that should have joined the target set but the `TARGETS` map was full.
    pub const TARGETS_FULL: u32 = 1;
    /// Kernel memory or tracepoint field reads that failed; the event was dropped.
    pub const READ_ERRORS: u32 = 2;
    pub const COUNT: u32 = 3;
}
