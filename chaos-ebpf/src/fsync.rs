//! The fsync family, with latency.
//!
//! Two hook sets, attached one at a time by userspace:
//! - filesystem tracepoints (ext4:ext4_sync_file_enter/exit): cost nothing for processes that
//!   do not sync, but see only that filesystem (tmpfs has no sync to see);
//! - syscall tracepoints (syscalls:sys_enter_fsync, ...): see every call with its fd, but
//!   enabling any syscall tracepoint sends every task on the machine down the slow syscall path
//!   (kernel/tracepoint.c, syscall_regfunc sets SYSCALL_TRACEPOINT on all tasks).
//!
//! Each set comes with write hooks of the same cost that count the bytes a target wrote since
//! its last successful sync call (`UNSYNCED`), reported at its exit: what a power loss at that
//! instant could lose. ext4's write_end tracepoints count bytes copied into ext4 files' page
//! cache; the write syscalls count every byte written (sockets and pipes too).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use chaos_common::{FsyncEvent, FsyncStart, counter, fsync_call, kind};

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use crate::{
    layout::{offset, tp_field},
    lifecycle::{header, output},
    maps::{FSYNC_START, UNSYNCED, count},
    target,
};

#[tracepoint]
pub fn chaos_ext4_sync_enter(ctx: TracePointContext) -> u32 {
    let _ = try_ext4_sync_enter(&ctx);
    0
}

fn try_ext4_sync_enter(ctx: &TracePointContext) -> Result<(), ()> {
    if !target::is_target(target::current_tgid()) {
        return Ok(());
    }
    let start = FsyncStart {
        ts_ns: now(),
        ino: tp_field(ctx, offset!(ext4_enter_ino))?,
        call: fsync_call::EXT4_SYNC_FILE,
        syscall_nr: 0,
        fd: -1,
        dev: tp_field(ctx, offset!(ext4_enter_dev))?,
        datasync: tp_field::<i32>(ctx, offset!(ext4_enter_datasync))? as u32,
        _pad: 0,
        unsynced: 0,
    };
    remember(start);
    Ok(())
}

#[tracepoint]
pub fn chaos_ext4_sync_exit(ctx: TracePointContext) -> u32 {
    let _ = try_ext4_sync_exit(&ctx);
    0
}

fn try_ext4_sync_exit(ctx: &TracePointContext) -> Result<(), ()> {
    let ret: i32 = tp_field(ctx, offset!(ext4_exit_ret))?;
    finish(ret as i64);
    Ok(())
}

/// Attached to sys_enter_{fsync,fdatasync,sync_file_range,syncfs,msync}; `__syscall_nr` says
/// which one fired.
#[tracepoint]
pub fn chaos_sys_enter_sync(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_sync(&ctx);
    0
}

fn try_sys_enter_sync(ctx: &TracePointContext) -> Result<(), ()> {
    if !target::is_target(target::current_tgid()) {
        return Ok(());
    }
    let nr = tp_field::<i32>(ctx, offset!(sys_enter_nr))? as u32;
    let arg0: u64 = tp_field(ctx, offset!(sys_enter_arg0))?;
    let fd_syscalls = offset!(fd_syscalls);
    let takes_fd = fd_syscalls.iter().any(|&fd_nr| fd_nr == nr);
    let start = FsyncStart {
        ts_ns: now(),
        ino: 0,
        call: fsync_call::SYSCALL,
        syscall_nr: nr,
        fd: if takes_fd { arg0 as i32 } else { -1 },
        dev: 0,
        datasync: u32::MAX,
        _pad: 0,
        unsynced: 0,
    };
    remember(start);
    Ok(())
}

#[tracepoint]
pub fn chaos_sys_exit_sync(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_sync(&ctx);
    0
}

fn try_sys_exit_sync(ctx: &TracePointContext) -> Result<(), ()> {
    let ret: i64 = tp_field(ctx, offset!(sys_exit_ret))?;
    finish(ret);
    Ok(())
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// ext4:ext4_write_end, ext4_da_write_end and ext4_journalled_write_end: `copied` bytes went
/// into the page cache of an ext4 file.
#[tracepoint]
pub fn chaos_ext4_write_end(ctx: TracePointContext) -> u32 {
    let _ = try_ext4_write_end(&ctx);
    0
}

fn try_ext4_write_end(ctx: &TracePointContext) -> Result<(), ()> {
    let tgid = target::current_tgid();
    if !target::is_target(tgid) {
        return Ok(());
    }
    let copied: u32 = tp_field(ctx, offset!(ext4_write_copied))?;
    add_unsynced(tgid, u64::from(copied));
    Ok(())
}

/// syscalls:sys_exit_{write,pwrite64,writev,pwritev,pwritev2}: a positive return is bytes written.
#[tracepoint]
pub fn chaos_sys_exit_write(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_write(&ctx);
    0
}

fn try_sys_exit_write(ctx: &TracePointContext) -> Result<(), ()> {
    let tgid = target::current_tgid();
    if !target::is_target(tgid) {
        return Ok(());
    }
    let ret: i64 = tp_field(ctx, offset!(sys_exit_ret))?;
    if ret > 0 {
        add_unsynced(tgid, ret as u64);
    }
    Ok(())
}

#[inline(always)]
fn add_unsynced(tgid: u32, bytes: u64) {
    if let Some(slot) = UNSYNCED.get_ptr_mut(&tgid) {
        // SAFETY: a live map value; threads of one process may add at once, hence atomic
        // (the bpf target has no core::sync::atomic read-modify-write; BPF_ATOMIC does it).
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, bytes) };
    } else if UNSYNCED.insert(&tgid, &bytes, 0).is_err() {
        count(counter::TARGETS_FULL);
    }
}

/// The unsynced bytes of `tgid` now (0 when it wrote nothing).
#[inline(always)]
pub fn unsynced(tgid: u32) -> u64 {
    // SAFETY: a plain read of a live map value.
    unsafe { UNSYNCED.get(&tgid).copied() }.unwrap_or(0)
}

#[inline(always)]
fn remember(mut start: FsyncStart) {
    start.unsynced = unsynced((bpf_get_current_pid_tgid() >> 32) as u32);
    if FSYNC_START
        .insert(&bpf_get_current_pid_tgid(), &start, 0)
        .is_err()
    {
        count(counter::TARGETS_FULL);
    }
}

/// Emits the event for the call this thread started; no start means a non-target (or a call
/// that began before we attached), and nothing is reported.
#[inline(always)]
fn finish(ret: i64) {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once, then removed.
    let Some(start) = (unsafe { FSYNC_START.get(&key).copied() }) else {
        return;
    };
    let _ = FSYNC_START.remove(&key);
    let tgid = (key >> 32) as u32;
    if ret == 0 && start.unsynced > 0 {
        // What was written before the call began is on disk now; later writes are not.
        if let Some(slot) = UNSYNCED.get_ptr_mut(&tgid) {
            // Never below zero, even when two threads' syncs both took their snapshot off (the
            // verifier allows no compare-exchange loop; the count is then briefly too low).
            // SAFETY: a live map value, updated atomically as in add_unsynced.
            unsafe {
                let take = start.unsynced.min(core::ptr::read_volatile(slot));
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, take.wrapping_neg());
            }
        }
    }
    let hdr = header(kind::FSYNC, tgid);
    let event = FsyncEvent {
        latency_ns: hdr.ts_ns.saturating_sub(start.ts_ns),
        header: hdr,
        call: start.call,
        syscall_nr: start.syscall_nr,
        fd: start.fd,
        dev: start.dev,
        ino: start.ino,
        datasync: start.datasync,
        _pad: 0,
        ret,
    };
    output(&event);
}
