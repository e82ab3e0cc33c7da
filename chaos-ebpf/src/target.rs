//! Membership of the target set. Every program asks here first and does nothing for a process
//! that is not a target: deny-by-default.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
};
use aya_log_ebpf::warn;
use chaos_common::{COMM_LEN, TargetInfo, counter};

use crate::maps::{TARGET_CGROUPS, TARGET_COMMS, TARGETS, WATCHERS, count};

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub fn lookup(tgid: u32) -> Option<TargetInfo> {
    // SAFETY: the value is Copy and read at once; a concurrent update yields the old or new value.
    unsafe { TARGETS.get(&tgid).copied() }
}

#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    TARGETS.get_ptr(&tgid).is_some()
}

/// Puts `tgid` in the set with `info`, or takes it out when no reason is left. A full map is
/// counted and logged (rare, and the one thing a user must hear about at once).
#[inline(always)]
pub fn store<C: EbpfContext>(ctx: &C, tgid: u32, info: TargetInfo) {
    // Pid 1 is never a target, whatever rule it would match (a comm, a cgroup it execs in):
    // nothing that acts on targets can reach it.
    if tgid <= 1 {
        return;
    }
    if info.reasons == 0 {
        let _ = TARGETS.remove(&tgid);
    } else if TARGETS.insert(&tgid, &info, 0).is_err() {
        count(counter::TARGETS_FULL);
        warn!(ctx, "target set full: process {} is not observed", tgid);
    }
}

#[inline(always)]
pub fn remove(tgid: u32) {
    let _ = TARGETS.remove(&tgid);
}

#[inline(always)]
pub fn comm_matches(comm: &[u8; COMM_LEN]) -> bool {
    TARGET_COMMS.get_ptr(comm).is_some()
}

#[inline(always)]
pub fn current_comm() -> [u8; COMM_LEN] {
    bpf_get_current_comm().unwrap_or([0; COMM_LEN])
}

/// A supervisor observed read-only (see `WATCHERS`).
#[inline(always)]
pub fn is_watcher(tgid: u32) -> bool {
    WATCHERS.get_ptr(&tgid).is_some()
}

#[inline(always)]
pub fn cgroup_matches(id: u64) -> bool {
    TARGET_CGROUPS.get_ptr(&id).is_some()
}
