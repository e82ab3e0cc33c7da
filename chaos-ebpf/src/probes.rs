//! Tiny programs `chaos doctor` loads (and, where harmless, attaches) to learn what the running
//! kernel allows. None of them does anything but return; those that could change behaviour are
//! gated on the target map like every other program, and doctor never puts anything in it.

use aya_ebpf::{
    helpers::generated::{bpf_override_return, bpf_send_signal},
    macros::{btf_tracepoint, fentry, fexit, kprobe, lsm, raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, LsmContext, ProbeContext,
        RawTracePointContext, TracePointContext,
    },
};

use crate::{maps::EVENTS, target};

#[tracepoint]
pub fn probe_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn probe_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn probe_btf_tracepoint(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// Verifies that ring buffer helpers are allowed; reserves and discards.
#[tracepoint]
pub fn probe_ringbuf(_ctx: TracePointContext) -> u32 {
    if let Some(entry) = EVENTS.reserve::<u64>(0) {
        entry.discard(0);
    }
    0
}

#[tracepoint]
pub fn probe_send_signal(_ctx: TracePointContext) -> u32 {
    if target::is_target(target::current_tgid()) {
        // SAFETY: helper call; signal 0 only checks permissions (kernel/trace/bpf_trace.c).
        unsafe { bpf_send_signal(0) };
    }
    0
}

#[fentry(function = "vfs_fsync_range")]
pub fn probe_fentry(_ctx: FEntryContext) -> i32 {
    0
}

#[fexit(function = "vfs_fsync_range")]
pub fn probe_fexit(_ctx: FExitContext) -> i32 {
    0
}

#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    0
}

#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[kprobe]
pub fn probe_kprobe_override(ctx: ProbeContext) -> u32 {
    if target::is_target(target::current_tgid()) {
        // SAFETY: helper call on our own context; only reached for a target, and doctor has none.
        unsafe { bpf_override_return(ctx.regs, 0) };
    }
    0
}
