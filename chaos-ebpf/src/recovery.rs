//! What recovery measurement needs beyond the lifecycle: the moment a parent collects a dead
//! child (the end of the "reaping" phase) and the moment a process starts listening (one
//! definition of "ready").
//!
//! Reaping has no scheduler tracepoint: `release_task()` (kernel/exit.c) fires none, and
//! sched_process_free runs an RCU grace period later. So the wait syscalls' exit tracepoints
//! are used, with the cost of any syscall tracepoint (see fsync.rs). Listening is seen through
//! sock:inet_sock_set_state, which costs nothing on the syscall path.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use chaos_common::{ListenEvent, ReapEvent, kind};

use crate::{
    layout::{offset, tp_field},
    lifecycle::{header, output},
    maps::WAIT_INFOP,
    target,
};

/// `TCP_LISTEN`, include/net/tcp_states.h.
const TCP_LISTEN: i32 = 10;
/// `WNOWAIT`, include/uapi/linux/wait.h: the child is reported but stays a zombie.
const WNOWAIT: u64 = 0x0100_0000;
/// `CLD_EXITED`, `CLD_KILLED`, `CLD_DUMPED`, include/uapi/asm-generic/siginfo.h: the codes
/// waitid reports for a child that is gone (the others are stops and continues).
const CLD_EXITED: i32 = 1;
const CLD_DUMPED: i32 = 3;
/// `si_code` and `si_pid` in the 64-bit `siginfo_t` (include/uapi/asm-generic/siginfo.h:
/// three ints, padding to 8, then the `_sigchld` union member starting with the pid).
const SI_CODE_OFFSET: usize = 8;
const SI_PID_OFFSET: usize = 16;

/// syscalls:sys_exit_wait4: a positive return is the pid of the child that was collected.
/// (A child reported as stopped, with WUNTRACED, also returns its pid; userspace only pairs a
/// reap with a child it saw exit.)
#[tracepoint]
pub fn chaos_sys_exit_wait4(ctx: TracePointContext) -> u32 {
    let _ = try_exit_wait4(&ctx);
    0
}

fn try_exit_wait4(ctx: &TracePointContext) -> Result<(), ()> {
    let waiter = target::current_tgid();
    if !target::is_target(waiter) && !target::is_watcher(waiter) {
        return Ok(());
    }
    let ret: i64 = tp_field(ctx, offset!(sys_exit_ret))?;
    if ret > 0 {
        reaped(waiter, ret as u32);
    }
    Ok(())
}

/// syscalls:sys_enter_waitid: remembers where the kernel will write the child's siginfo.
#[tracepoint]
pub fn chaos_sys_enter_waitid(ctx: TracePointContext) -> u32 {
    let _ = try_enter_waitid(&ctx);
    0
}

fn try_enter_waitid(ctx: &TracePointContext) -> Result<(), ()> {
    let waiter = target::current_tgid();
    if !target::is_target(waiter) && !target::is_watcher(waiter) {
        return Ok(());
    }
    let infop: u64 = tp_field(ctx, offset!(waitid_infop))?;
    // `options` is the argument after `infop` (8 bytes each on the syscall tracepoints).
    let options: u64 = tp_field(ctx, offset!(waitid_infop) + 8)?;
    if infop != 0 && options & WNOWAIT == 0 {
        let _ = WAIT_INFOP.insert(&bpf_get_current_pid_tgid(), &infop, 0);
    }
    Ok(())
}

/// syscalls:sys_exit_waitid: returns 0 and fills `infop`; `si_pid` is 0 when WNOHANG found
/// nothing.
#[tracepoint]
pub fn chaos_sys_exit_waitid(ctx: TracePointContext) -> u32 {
    let _ = try_exit_waitid(&ctx);
    0
}

fn try_exit_waitid(ctx: &TracePointContext) -> Result<(), ()> {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once, then removed.
    let Some(infop) = (unsafe { WAIT_INFOP.get(&key).copied() }) else {
        return Ok(());
    };
    let _ = WAIT_INFOP.remove(&key);
    let ret: i64 = tp_field(ctx, offset!(sys_exit_ret))?;
    if ret != 0 {
        return Ok(());
    }
    let base = infop as *const u8;
    // SAFETY: user memory, read with the fault-safe helper.
    let code: i32 =
        unsafe { bpf_probe_read_user(base.add(SI_CODE_OFFSET).cast()) }.map_err(|_| ())?;
    // SAFETY: as above.
    let pid: i32 =
        unsafe { bpf_probe_read_user(base.add(SI_PID_OFFSET).cast()) }.map_err(|_| ())?;
    if pid > 0 && (CLD_EXITED..=CLD_DUMPED).contains(&code) {
        reaped((key >> 32) as u32, pid as u32);
    }
    Ok(())
}

#[inline(always)]
fn reaped(waiter: u32, child: u32) {
    output(&ReapEvent {
        header: header(kind::REAP, waiter),
        child_pid: child,
        _pad: 0,
    });
}

/// sock:inet_sock_set_state, fired in process context by listen(2) (inet_csk_listen_start).
#[tracepoint]
pub fn chaos_sock_listen(ctx: TracePointContext) -> u32 {
    let _ = try_sock_listen(&ctx);
    0
}

fn try_sock_listen(ctx: &TracePointContext) -> Result<(), ()> {
    let state: i32 = tp_field(ctx, offset!(sock_newstate))?;
    if state != TCP_LISTEN {
        return Ok(());
    }
    let tgid = target::current_tgid();
    if !target::is_target(tgid) {
        return Ok(());
    }
    let port: u16 = tp_field(ctx, offset!(sock_sport))?;
    let family: u16 = tp_field(ctx, offset!(sock_family))?;
    output(&ListenEvent {
        header: header(kind::LISTEN, tgid),
        port: u32::from(port),
        family: u32::from(family),
    });
    Ok(())
}
