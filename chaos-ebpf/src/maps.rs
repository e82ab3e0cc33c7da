//! Every map of the object, declared once.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use chaos_common::{
    CGROUP_PATH_LEN, COMM_LEN, FsyncStart, MAX_PENDING_FORKS, MAX_RULES, MAX_TARGETS, PendingFork,
    TargetInfo, counter, fault,
};

/// Events for userspace. Userspace may resize it before load (`map_max_entries`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Per-CPU counters, indexed by `chaos_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// The target set, keyed by tgid.
#[map]
pub static TARGETS: HashMap<u32, TargetInfo> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Command names (NUL-padded) whose processes are targets.
#[map]
pub static TARGET_COMMS: HashMap<[u8; COMM_LEN], u32> = HashMap::with_max_entries(MAX_RULES, 0);

/// cgroup v2 ids (kernfs inode numbers) whose processes are targets.
#[map]
pub static TARGET_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_RULES, 0);

/// Paths of target cgroups below the cgroup2 root (NUL-padded), each with its directory's
/// current id: a directory made again at one of them (systemd removes a service's cgroup when
/// its main process dies and makes it anew for the restart) has its new id put in
/// `TARGET_CGROUPS` in place of the old one as it is made, before any process can be
/// attached to it.
#[map]
pub static TARGET_CGROUP_PATHS: HashMap<[u8; CGROUP_PATH_LEN], u64> =
    HashMap::with_max_entries(MAX_RULES, 0);

/// Supervisors observed read-only, never members of the target set: pid 1 when it runs the
/// unit being measured. Their forks are kept (`PENDING_FORKS`) until the child execs in a
/// target cgroup, and their reaps are reported; nothing else of theirs is seen or touched.
#[map]
pub static WATCHERS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_RULES, 0);

/// Forks by a watcher whose child has not shown yet where it goes, keyed by the child's tgid.
#[map]
pub static PENDING_FORKS: LruHashMap<u32, PendingFork> =
    LruHashMap::with_max_entries(MAX_PENDING_FORKS, 0);

/// In-flight sync calls of targets, keyed by `bpf_get_current_pid_tgid()` (one per thread).
#[map]
pub static FSYNC_START: HashMap<u64, FsyncStart> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Bytes each target process wrote since its last successful sync call, keyed by tgid.
#[map]
pub static UNSYNCED: HashMap<u32, u64> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// The `infop` pointer of a target thread's waitid call in flight, keyed by pid_tgid.
#[map]
pub static WAIT_INFOP: HashMap<u64, u64> = HashMap::with_max_entries(MAX_RULES * 16, 0);

/// Calls of the trigger's syscall per target process (`chaos inject signal --on`).
#[map]
pub static TRIGGER_CALLS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Calls of the faulted LSM hook per target process.
#[map]
pub static LSM_CALLS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Per kind of kernel-fired fault (the LSM errno, then the trigger): injections so far, and
/// the current one-minute window's start and count.
#[map]
pub static INJECT_STATE: Array<u64> = Array::with_max_entries(6, 0);

/// Indexed by `chaos_common::fault`: non-zero stops that kind of fault at once (a guard's
/// abort, a closed time window) while its program stays attached.
#[map]
pub static DISARMED: Array<u32> = Array::with_max_entries(fault::KINDS, 0);

/// Processes no fault may touch (chaos itself and its ancestors), by tgid.
#[map]
pub static DENY_PIDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_RULES, 0);

/// Command names no fault may touch (init, systemd, sshd, ...).
#[map]
pub static DENY_COMMS: HashMap<[u8; COMM_LEN], u32> = HashMap::with_max_entries(MAX_RULES, 0);

/// Syscall numbers whose errors in targets are reported (proof of injected errnos).
#[map]
pub static CONFIRM_NRS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_RULES, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and programs do not migrate while they run.
        unsafe { *slot += 1 };
    }
}
