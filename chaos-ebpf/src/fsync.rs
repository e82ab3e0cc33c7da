//! The fsync family, with latency.
//!
//! Two hook sets, attached one at a time by userspace:
//! - filesystem tracepoints (ext4:ext4_sync_file_enter/exit): cost nothing for processes that
//!   do not sync, but see only that filesystem (tmpfs has no sync to see);
//! - syscall tracepoints (syscalls:sys_enter_fsync, ...): see every call with its fd, but
//!   enabling any syscall tracepoint sends every task on the machine down the slow syscall path
//!   (kernel/tracepoint.c, syscall_regfunc sets SYSCALL_TRACEPOINT on all tasks).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use chaos_common::{FsyncEvent, FsyncStart, counter, fsync_call, kind};

use crate::{
    layout::{offset, tp_field},
    lifecycle::{header, output},
    maps::{FSYNC_START, count},
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

#[inline(always)]
fn remember(start: FsyncStart) {
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
    let hdr = header(kind::FSYNC, (key >> 32) as u32);
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
