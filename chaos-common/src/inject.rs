//! Fault injection in the kernel: the in-kernel signal trigger, errno injection by BPF LSM,
//! and the events that report and confirm them.
//!
//! The seeded decision ([`decide`]) is shared with userspace (the seccomp backend and
//! `--dry-run`), so a seed gives the same sequence of hits on every backend.

/// Values of [`InjectEvent::fault`], also the slots of the `DISARMED` map: userspace writes a
/// non-zero value there to stop that kind of fault at once (a guard's abort, a closed time
/// window) while the programs stay attached.
pub mod fault {
    /// `bpf_send_signal` at the Nth call of a syscall (`chaos inject signal --on`).
    pub const TRIGGER_SIGNAL: u32 = 1;
    /// An LSM hook returned an errno (`chaos inject errno --backend lsm`).
    pub const LSM_ERRNO: u32 = 2;
    /// Slots in `DISARMED`.
    pub const KINDS: u32 = 3;
}

/// LSM hooks chaos can fail, the value of [`LsmFault::hook`] and [`InjectEvent::what`].
pub mod lsm_hook {
    pub const FILE_OPEN: u32 = 1;
    /// file_permission with MAY_READ.
    pub const FILE_READ: u32 = 2;
    /// file_permission with MAY_WRITE.
    pub const FILE_WRITE: u32 = 3;
    pub const SOCKET_CONNECT: u32 = 4;
    pub const TASK_ALLOC: u32 = 5;
    pub const BPRM_CHECK: u32 = 6;
    pub const INODE_UNLINK: u32 = 7;
    pub const INODE_RENAME: u32 = 8;
    pub const INODE_MKDIR: u32 = 9;
}

/// The in-kernel trigger, a read-only global (`TRIGGER`) set before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// Send at this call (1-based) of the hooked syscall, counted per process.
    pub nth: u32,
    pub signal: u32,
    /// Non-zero: report what would be sent, send nothing (`--dry-run`).
    pub dry_run: u32,
    /// At most this many signals in all (a restarted service meets its Nth call again); 0: no
    /// limit but the rate ceiling.
    pub count: u32,
    /// At most this many signals per minute.
    pub max_per_minute: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Trigger>() == 24);

impl Trigger {
    pub const fn none() -> Self {
        Self {
            nth: 0,
            signal: 0,
            dry_run: 1,
            count: 0,
            max_per_minute: 0,
            _pad: 0,
        }
    }
}

/// Errno injection by BPF LSM, a read-only global (`LSM_FAULT`) set before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LsmFault {
    /// One of [`lsm_hook`]; 0 disables every LSM program.
    pub hook: u32,
    /// Positive errno to return.
    pub errno: u32,
    /// Only the Nth call (1-based, per process) is a candidate; 0: every call is.
    pub nth: u32,
    /// At most this many injections in all; 0: no limit but the rate ceiling.
    pub count: u32,
    /// A candidate is hit when [`decide`] says so with this threshold.
    pub threshold: u64,
    pub seed: u64,
    /// At most this many injections per minute, whatever else is asked.
    pub max_per_minute: u32,
    /// Non-zero: report what would be hit, return 0 (`--dry-run`).
    pub dry_run: u32,
}
const _: () = assert!(size_of::<LsmFault>() == 40);

impl LsmFault {
    pub const fn none() -> Self {
        Self {
            hook: 0,
            errno: 0,
            nth: 0,
            count: 0,
            threshold: 0,
            seed: 0,
            max_per_minute: 0,
            dry_run: 1,
        }
    }
}

/// A fault the kernel injected (or, with `dry_run`, would have).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectEvent {
    /// `pid` is the target's tgid.
    pub header: crate::EventHeader,
    pub tid: u32,
    /// One of [`fault`].
    pub fault: u32,
    /// The syscall number (trigger) or the [`lsm_hook`].
    pub what: u32,
    /// The signal or the errno.
    pub value: u32,
    /// Which call of the process it was (1-based).
    pub nth: u32,
    pub dry_run: u32,
}
const _: () = assert!(size_of::<InjectEvent>() == 40);

/// A target's syscall returned an error (raw_syscalls:sys_exit), for proof of effect.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallErrorEvent {
    pub header: crate::EventHeader,
    pub tid: u32,
    pub nr: u32,
    pub ret: i64,
}
const _: () = assert!(size_of::<SyscallErrorEvent>() == 32);

/// splitmix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators").
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether candidate call `n` (1-based, per process) is hit: a pure function of the seed, so a
/// run can be planned (`--dry-run`) and repeated exactly.
pub const fn decide(seed: u64, n: u64, threshold: u64) -> bool {
    threshold != 0 && splitmix64(seed ^ splitmix64(n)) <= threshold
}

/// The threshold for probability `p` in [0, 1].
pub fn threshold(p: f64) -> u64 {
    if p >= 1.0 {
        u64::MAX
    } else if p <= 0.0 {
        0
    } else {
        (p * u64::MAX as f64) as u64
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no padding (sizes asserted above), every bit pattern valid.
    unsafe impl aya::Pod for super::Trigger {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LsmFault {}
}
