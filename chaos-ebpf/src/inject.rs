//! Fault injection in the kernel: a signal at the Nth call of a syscall (`bpf_send_signal`),
//! errno returns from BPF LSM hooks, and the syscall errors that prove an injection took.
//!
//! Deny-by-default: every program here asks [`may_inject`] first, which requires the current
//! process to be in the target set and not on the denylist (pid 1, chaos and its ancestors,
//! the system's supervisors and session programs by name), and does nothing otherwise.
//!
//! A signal sent from a `sys_enter` tracepoint does not stop that syscall: the call runs to
//! completion and the signal is acted on when the task returns to user mode. Userspace says so
//! and offers the seccomp backend (`--before`) where the call must not run.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_send_signal},
    macros::{lsm, tracepoint},
    programs::{LsmContext, TracePointContext},
};
use chaos_common::{
    InjectEvent, LsmFault, SyscallErrorEvent, Trigger, decide, fault, kind, lsm_hook,
};

use crate::{
    layout::{offset, tp_field},
    lifecycle::{header, output},
    maps::{CONFIRM_NRS, DENY_COMMS, DENY_PIDS, DISARMED, INJECT_STATE, LSM_CALLS, TRIGGER_CALLS},
    target,
};

/// Set by userspace before load (`EbpfLoader::override_global`); read-only afterwards.
#[unsafe(no_mangle)]
pub static TRIGGER: Trigger = Trigger::none();
#[unsafe(no_mangle)]
pub static LSM_FAULT: LsmFault = LsmFault::none();

/// `INJECT_STATE` slots, from the kind's base ([`LSM_STATE`], [`TRIGGER_STATE`]).
const STATE_TOTAL: u32 = 0;
const STATE_WINDOW_START: u32 = 1;
const STATE_WINDOW_COUNT: u32 = 2;
const LSM_STATE: u32 = 0;
const TRIGGER_STATE: u32 = 3;
const MINUTE_NS: u64 = 60_000_000_000;
/// `MAY_WRITE`, `MAY_READ`, include/linux/fs.h.
const MAY_WRITE: u32 = 0x2;
const MAY_READ: u32 = 0x4;

/// Whether the current process may be faulted by this kind of fault: a target, not denied,
/// and the kind not disarmed by userspace.
#[inline(always)]
fn may_inject(tgid: u32, kind: u32) -> bool {
    tgid > 1
        && DISARMED.get(kind).is_some_and(|d| *d == 0)
        && target::is_target(tgid)
        && DENY_PIDS.get_ptr(&tgid).is_none()
        && DENY_COMMS.get_ptr(&target::current_comm()).is_none()
}

/// Adds one to `tgid`'s counter in `map` and returns the new value (1 for the first call).
/// The add is atomic; the read after it is not (the fetching add needs BPF v3 instructions,
/// which the generic CPU target does not emit), so two threads of one process calling at the
/// same instant may read the same count: per-thread exactness is not promised, per-process
/// counting of single-threaded callers is.
#[inline(always)]
fn bump(map: &aya_ebpf::maps::HashMap<u32, u32>, tgid: u32) -> u32 {
    if let Some(slot) = map.get_ptr_mut(&tgid) {
        // SAFETY: a live map value; threads of one process may count at once, hence atomic.
        unsafe {
            atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(slot, 1);
            core::ptr::read_volatile(slot)
        }
    } else {
        let _ = map.insert(&tgid, &1, 0);
        1
    }
}

#[inline(always)]
fn read_global<T: Copy>(global: &T) -> T {
    // SAFETY: a plain read of our own read-only global; volatile so the placeholder is not
    // folded in at compile time.
    unsafe { core::ptr::read_volatile(global) }
}

fn report(tgid: u32, fault_kind: u32, what: u32, value: u32, nth: u32, dry_run: u32) {
    output(&InjectEvent {
        header: header(kind::INJECT, tgid),
        tid: bpf_get_current_pid_tgid() as u32,
        fault: fault_kind,
        what,
        value,
        nth,
        dry_run,
    });
}

/// Attached to `syscalls:sys_enter_NAME` for the syscall of `--on NAME:nth=N`.
#[tracepoint]
pub fn chaos_trigger(ctx: TracePointContext) -> u32 {
    let _ = try_trigger(&ctx);
    0
}

fn try_trigger(ctx: &TracePointContext) -> Result<(), ()> {
    let tgid = target::current_tgid();
    if !may_inject(tgid, fault::TRIGGER_SIGNAL) {
        return Ok(());
    }
    let config = read_global(&TRIGGER);
    let n = bump(&TRIGGER_CALLS, tgid);
    if n != config.nth || !within_limits(TRIGGER_STATE, config.count, config.max_per_minute) {
        return Ok(());
    }
    let nr = tp_field::<i32>(ctx, offset!(sys_enter_nr))? as u32;
    // Reported first: the event's timestamp must not come after the signal it announces.
    report(
        tgid,
        fault::TRIGGER_SIGNAL,
        nr,
        config.signal,
        n,
        config.dry_run,
    );
    if config.dry_run == 0 {
        // SAFETY: helper call on the current task, which is a target.
        unsafe { bpf_send_signal(config.signal) };
    }
    Ok(())
}

/// raw_syscalls:sys_exit: a target's syscall of interest failed (the proof that an injected
/// errno reached the process).
#[tracepoint]
pub fn chaos_sys_exit_error(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_error(&ctx);
    0
}

fn try_sys_exit_error(ctx: &TracePointContext) -> Result<(), ()> {
    let tgid = target::current_tgid();
    if !target::is_target(tgid) {
        return Ok(());
    }
    let ret: i64 = tp_field(ctx, offset!(raw_exit_ret))?;
    if ret >= 0 {
        return Ok(());
    }
    let nr = tp_field::<i64>(ctx, offset!(raw_exit_id))? as u32;
    if CONFIRM_NRS.get_ptr(&nr).is_none() {
        return Ok(());
    }
    output(&SyscallErrorEvent {
        header: header(kind::SYSCALL_ERROR, tgid),
        tid: bpf_get_current_pid_tgid() as u32,
        nr,
        ret,
    });
    Ok(())
}

/// The errno for this LSM call, or 0. `prev` is what earlier LSM programs decided: a denial
/// stands. The verifier requires an LSM program to return a value it can prove is in
/// [-MAX_ERRNO, 0] (kernel/bpf/bpf_lsm.c, bpf_lsm_get_retval_range), hence [`errno_range`].
#[inline(always)]
fn lsm_decide(hook: u32, prev: i32) -> i32 {
    errno_range(lsm_verdict(hook, prev))
}

/// `value` when it is a valid LSM verdict (0 or a negative errno), else 0, computed so the
/// verifier can see the bounds: LLVM turns a plain range check into a test on a shifted copy
/// and returns the unchecked original; the volatile round trip makes it return the value it
/// checked.
#[inline(always)]
fn errno_range(value: i32) -> i32 {
    let shifted = value.wrapping_add(4095) as u32;
    // SAFETY: a read of a local.
    let shifted = unsafe { core::ptr::read_volatile(&shifted) };
    if shifted <= 4095 {
        shifted as i32 - 4095
    } else {
        0
    }
}

#[inline(always)]
fn lsm_verdict(hook: u32, prev: i32) -> i32 {
    if prev != 0 {
        return prev;
    }
    let config = read_global(&LSM_FAULT);
    if config.hook != hook {
        return 0;
    }
    let tgid = target::current_tgid();
    if !may_inject(tgid, fault::LSM_ERRNO) {
        return 0;
    }
    let n = bump(&LSM_CALLS, tgid);
    if config.nth != 0 && n != config.nth {
        return 0;
    }
    if !decide(config.seed, u64::from(n), config.threshold)
        || !within_limits(LSM_STATE, config.count, config.max_per_minute)
    {
        return 0;
    }
    report(
        tgid,
        fault::LSM_ERRNO,
        hook,
        config.errno,
        n,
        config.dry_run,
    );
    if config.dry_run != 0 {
        return 0;
    }
    -(config.errno as i32)
}

/// `count` (0: none) and the per-minute ceiling of the kind whose state starts at `base`;
/// counts this injection when both allow it. Threads on two CPUs may both pass at the edge of
/// a limit (no lock in the verifier's reach): a limit can be exceeded by the number of CPUs,
/// never more.
#[inline(always)]
fn within_limits(base: u32, count: u32, max_per_minute: u32) -> bool {
    let (Some(total), Some(start), Some(window)) = (
        INJECT_STATE.get_ptr_mut(base + STATE_TOTAL),
        INJECT_STATE.get_ptr_mut(base + STATE_WINDOW_START),
        INJECT_STATE.get_ptr_mut(base + STATE_WINDOW_COUNT),
    ) else {
        return false;
    };
    // SAFETY: live array slots; read and updated atomically where counts are concerned.
    unsafe {
        if count != 0 && core::ptr::read_volatile(total) >= u64::from(count) {
            return false;
        }
        let now = bpf_ktime_get_ns();
        if now.saturating_sub(core::ptr::read_volatile(start)) >= MINUTE_NS {
            core::ptr::write_volatile(start, now);
            core::ptr::write_volatile(window, 0);
        }
        if core::ptr::read_volatile(window) >= u64::from(max_per_minute) {
            return false;
        }
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(window, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(total, 1);
    }
    true
}

/// Argument `n` of an LSM hook as an int (the hook's own arguments, then the previous
/// verdict, which is argument `n` = the hook's argument count).
#[inline(always)]
fn arg(ctx: &LsmContext, n: usize) -> i32 {
    ctx.arg(n)
}

// Hook signatures: include/linux/lsm_hook_defs.h. The last argument the program sees is the
// verdict of the LSM programs before it.

#[lsm(hook = "file_open")]
pub fn chaos_lsm_file_open(ctx: LsmContext) -> i32 {
    lsm_decide(lsm_hook::FILE_OPEN, arg(&ctx, 1))
}

/// file_permission(struct file *file, int mask): read and write.
#[lsm(hook = "file_permission")]
pub fn chaos_lsm_file_permission(ctx: LsmContext) -> i32 {
    let mask = arg(&ctx, 1) as u32;
    let hook = if mask & MAY_WRITE != 0 {
        lsm_hook::FILE_WRITE
    } else if mask & MAY_READ != 0 {
        lsm_hook::FILE_READ
    } else {
        return errno_range(arg(&ctx, 2));
    };
    lsm_decide(hook, arg(&ctx, 2))
}

/// socket_connect(struct socket *sock, struct sockaddr *address, int addrlen).
#[lsm(hook = "socket_connect")]
pub fn chaos_lsm_socket_connect(ctx: LsmContext) -> i32 {
    lsm_decide(lsm_hook::SOCKET_CONNECT, arg(&ctx, 3))
}

/// task_alloc(struct task_struct *task, unsigned long clone_flags): runs in the parent.
#[lsm(hook = "task_alloc")]
pub fn chaos_lsm_task_alloc(ctx: LsmContext) -> i32 {
    lsm_decide(lsm_hook::TASK_ALLOC, arg(&ctx, 2))
}

/// bprm_check_security(struct linux_binprm *bprm).
#[lsm(hook = "bprm_check_security")]
pub fn chaos_lsm_bprm_check(ctx: LsmContext) -> i32 {
    lsm_decide(lsm_hook::BPRM_CHECK, arg(&ctx, 1))
}

/// inode_unlink(struct inode *dir, struct dentry *dentry).
#[lsm(hook = "inode_unlink")]
pub fn chaos_lsm_inode_unlink(ctx: LsmContext) -> i32 {
    lsm_decide(lsm_hook::INODE_UNLINK, arg(&ctx, 2))
}

/// inode_rename(struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
/// struct dentry *new_dentry).
#[lsm(hook = "inode_rename")]
pub fn chaos_lsm_inode_rename(ctx: LsmContext) -> i32 {
    lsm_decide(lsm_hook::INODE_RENAME, arg(&ctx, 4))
}

/// inode_mkdir(struct inode *dir, struct dentry *dentry, umode_t mode).
#[lsm(hook = "inode_mkdir")]
pub fn chaos_lsm_inode_mkdir(ctx: LsmContext) -> i32 {
    lsm_decide(lsm_hook::INODE_MKDIR, arg(&ctx, 3))
}

/// Forgets a process's call counts when it exits (its pid may be reused).
#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = TRIGGER_CALLS.remove(&tgid);
    let _ = LSM_CALLS.remove(&tgid);
}
