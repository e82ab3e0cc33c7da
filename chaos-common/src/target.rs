//! The target set: which processes the programs report on (and, later, act on).

/// Why a process is in the target set; a bit set in [`TargetInfo::reasons`].
pub mod reason {
    /// Named by pid (`--pid`, `-- CMD`) or forked by such a process while following.
    pub const PID: u32 = 1 << 0;
    /// Its comm is in `TARGET_COMMS`.
    pub const COMM: u32 = 1 << 1;
    /// It is in a cgroup listed in `TARGET_CGROUPS`.
    pub const CGROUP: u32 = 1 << 2;
}

/// Bits of [`TargetInfo::flags`].
pub mod target_flag {
    /// Children forked by this process join the target set with the `PID` reason.
    pub const FOLLOW: u32 = 1 << 0;
}

/// Value of the `TARGETS` map, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetInfo {
    pub reasons: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<TargetInfo>() == 8);

/// A fork by a watched supervisor (pid 1 for a systemd unit), kept until the child shows
/// where it went: an exec inside a target cgroup reports it (with this timestamp); anything
/// else forgets it. Value of `PENDING_FORKS`, keyed by the child's tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingFork {
    pub ts_ns: u64,
    pub parent: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<PendingFork>() == 16);

/// Capacity of `PENDING_FORKS` (an LRU map: the oldest forgotten first).
pub const MAX_PENDING_FORKS: u32 = 4096;

/// Capacity of the `TARGETS` map. A full map is counted in `COUNTERS[TARGETS_FULL]`.
pub const MAX_TARGETS: u32 = 32 * 1024;
/// Length of a key of `TARGET_CGROUP_PATHS`: a cgroup's path below the cgroup2 root,
/// NUL-padded (`/system.slice/sync-helper.service`).
pub const CGROUP_PATH_LEN: usize = 128;

/// Capacity of `TARGET_COMMS` and `TARGET_CGROUPS`.
pub const MAX_RULES: u32 = 256;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no padding (sizes asserted above), every bit pattern valid.
    unsafe impl aya::Pod for super::TargetInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingFork {}
}
