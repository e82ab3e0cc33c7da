//! Process lifecycle: fork, exec, exit, and moves into target cgroups.
//!
//! Semantics follow bcc's libbpf-tools/exitsnoop.bpf.c and libbpf-bootstrap's bootstrap.bpf.c:
//! a thread exiting is not a process exit, `exit_code` is kept raw (`code << 8 | core | sig`).

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use chaos_common::{
    ABSENT, CGROUP_PATH_LEN, COMM_LEN, EventHeader, ExecEvent, ExitEvent, ForkEvent, PendingFork,
    TargetInfo, counter, kind, reason, target_flag,
};

use crate::{
    layout::{current_task, kernel_field, offset, tp_data_loc_str, tp_field},
    maps::{EVENTS, PENDING_FORKS, TARGET_CGROUP_PATHS, TARGET_CGROUPS, UNSYNCED, count},
    target,
};

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, include/trace/events/sched.h.
/// A raw tracepoint because the classic one only carries the child's pid, which cannot tell a new
/// thread from a new process; the child's `task_struct` can.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn chaos_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), ()> {
    let parent_tgid = target::current_tgid();
    // Matched once, so that no `Option` is carried across the reads below: LLVM spills the
    // payload of a `None` as an undefined register, which the verifier refuses (R3 !read_ok).
    match target::lookup(parent_tgid) {
        Some(parent) => fork_of_target(ctx, parent_tgid, parent),
        None if target::is_watcher(parent_tgid) => fork_of_watcher(ctx, parent_tgid),
        None => Ok(()),
    }
}

/// The child's tgid when the fork made a new process, `None` for a new thread.
fn new_process(ctx: &RawTracePointContext) -> Result<Option<u32>, ()> {
    let child = ctx.arg::<u64>(1) as *const u8;
    let child_pid: u32 = kernel_field(child, offset!(task_pid))?;
    let child_tgid: u32 = kernel_field(child, offset!(task_tgid))?;
    Ok((child_pid == child_tgid).then_some(child_tgid))
}

/// A watcher's child: where it goes is not known yet (pid 1 forks for every unit), so its fork
/// waits in PENDING_FORKS for its first exec.
fn fork_of_watcher(ctx: &RawTracePointContext, parent_tgid: u32) -> Result<(), ()> {
    let Some(child_tgid) = new_process(ctx)? else {
        return Ok(());
    };
    let pending = PendingFork {
        ts_ns: now(),
        parent: parent_tgid,
        _pad: 0,
    };
    let _ = PENDING_FORKS.insert(&child_tgid, &pending, 0);
    Ok(())
}

fn fork_of_target(
    ctx: &RawTracePointContext,
    parent_tgid: u32,
    parent: TargetInfo,
) -> Result<(), ()> {
    let Some(child_tgid) = new_process(ctx)? else {
        return Ok(()); // a new thread of an existing process
    };
    // A child is in the same cgroup and has the same comm as its parent until it moves or execs;
    // it inherits the pid reason only when the parent is followed.
    let mut reasons = parent.reasons & (reason::COMM | reason::CGROUP);
    if parent.flags & target_flag::FOLLOW != 0 {
        reasons |= parent.reasons & reason::PID;
    }
    target::store(
        ctx,
        child_tgid,
        TargetInfo {
            reasons,
            flags: parent.flags,
        },
    );

    let event = ForkEvent {
        header: header(kind::FORK, parent_tgid),
        child_pid: child_tgid,
        _pad: 0,
    };
    output(&event);
    Ok(())
}

/// sched:sched_process_exec, fired after the new image is in place (comm already updated).
#[tracepoint]
pub fn chaos_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &TracePointContext) -> Result<(), ()> {
    let tgid = target::current_tgid();
    let comm = target::current_comm();
    let comm_hit = target::comm_matches(&comm);
    // A process that execs inside a target cgroup joins the set even if no attach event
    // showed it arriving: a child spawned straight into the cgroup (clone3 with
    // CLONE_INTO_CGROUP, as systemd >= 255 does) never moved.
    // SAFETY: no preconditions.
    let cgroup_hit = target::cgroup_matches(unsafe { bpf_get_current_cgroup_id() });
    // A watcher's child shows where it went at its first exec: inside a target cgroup, it is
    // the unit's, and its fork is reported now, with the fork's time; anywhere else, it is
    // forgotten. systemd >= 255 execs its executor first, then the service.
    // SAFETY: copied out at once.
    let pending = unsafe { PENDING_FORKS.get(&tgid).copied() };
    if let Some(fork) = pending {
        let _ = PENDING_FORKS.remove(&tgid);
        if cgroup_hit {
            output(&ForkEvent {
                header: EventHeader {
                    ts_ns: fork.ts_ns,
                    kind: kind::FORK,
                    pid: fork.parent,
                },
                child_pid: tgid,
                _pad: 0,
            });
        }
    }
    let mut info = match target::lookup(tgid) {
        Some(info) => info,
        None if comm_hit || cgroup_hit => TargetInfo::default(),
        None => return Ok(()),
    };
    if cgroup_hit {
        info.reasons |= reason::CGROUP;
    }
    if comm_hit {
        info.reasons |= reason::COMM;
    } else {
        info.reasons &= !reason::COMM;
    }
    // A process that no longer matches any rule leaves the set; this exec is its last event.
    target::store(ctx, tgid, info);

    let old_pid: i32 = tp_field(ctx, offset!(exec_old_pid))?;
    let ppid = parent_tgid(current_task())?;
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(counter::LOST_EVENTS);
        return Ok(());
    };
    let filename_offset = offset!(exec_filename);
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ExecEvent in the ring buffer.
    unsafe {
        (*event).header = header(kind::EXEC, tgid);
        (*event).ppid = ppid;
        (*event).old_pid = old_pid as u32;
        (*event).comm = comm;
        (*event).filename[0] = 0;
        if tp_data_loc_str(ctx, filename_offset, &mut (*event).filename).is_err() {
            entry.discard(0);
            return Err(());
        }
    }
    entry.submit(0);
    Ok(())
}

/// sched:sched_process_exit, fired in do_exit() after `exit_code` is set (kernel/exit.c).
#[tracepoint]
pub fn chaos_exit(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Result<(), ()> {
    let id = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    // Kernels since 6.16 say whether this is the last thread; before that, follow exitsnoop and
    // take the group leader's exit as the process exit.
    let group_dead_offset = offset!(exit_group_dead);
    let group_dead = if group_dead_offset != ABSENT {
        tp_field::<u8>(ctx, group_dead_offset)? != 0
    } else {
        tid == tgid
    };
    if !group_dead {
        return Ok(());
    }
    if !target::is_target(tgid) {
        // A watcher's child that died before any exec (a failed start): forget it.
        let _ = PENDING_FORKS.remove(&tgid);
        return Ok(());
    }
    target::remove(tgid);
    let _ = PENDING_FORKS.remove(&tgid);
    let unsynced_bytes = crate::fsync::unsynced(tgid);
    let _ = UNSYNCED.remove(&tgid);
    crate::inject::forget(tgid);

    let task = current_task();
    let exit_code: u32 = kernel_field(task, offset!(task_exit_code))?;
    let ppid = parent_tgid(task)?;
    let leader = kernel_field::<u64>(task, offset!(task_group_leader))? as *const u8;
    let start_ns: u64 = kernel_field(leader, offset!(task_start_time))?;
    let mut event = ExitEvent {
        header: header(kind::EXIT, tgid),
        ppid,
        exit_code,
        lifetime_ns: 0,
        comm: [0; COMM_LEN],
        unsynced_bytes,
    };
    // task_struct::start_time is CLOCK_MONOTONIC like bpf_ktime_get_ns (kernel/fork.c).
    event.lifetime_ns = event.header.ts_ns.saturating_sub(start_ns);
    // The tracepoint carries the exiting task's comm; current's is the same and cheaper.
    event.comm = target::current_comm();
    output(&event);
    Ok(())
}

/// cgroup:cgroup_mkdir: a target cgroup's directory made again (see `TARGET_CGROUP_PATHS`).
#[tracepoint]
pub fn chaos_cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_mkdir(&ctx);
    0
}

fn try_cgroup_mkdir(ctx: &TracePointContext) -> Result<(), ()> {
    let root: i32 = tp_field(ctx, offset!(mkdir_root))?;
    if root != 0 {
        return Ok(());
    }
    let mut path = [0u8; CGROUP_PATH_LEN];
    tp_data_loc_str(ctx, offset!(mkdir_path), &mut path)?;
    // SAFETY: copied out at once.
    let Some(old) = (unsafe { TARGET_CGROUP_PATHS.get(&path).copied() }) else {
        return Ok(());
    };
    let id: u64 = tp_field(ctx, offset!(mkdir_id))?;
    // The old directory is gone: its id leaves the set, so that a unit restarted any number
    // of times holds one entry.
    if old != id {
        let _ = TARGET_CGROUPS.remove(&old);
    }
    if TARGET_CGROUPS.insert(&id, &1, 0).is_err() {
        count(counter::TARGETS_FULL);
    }
    let _ = TARGET_CGROUP_PATHS.insert(&path, &id, 0);
    Ok(())
}

/// cgroup:cgroup_attach_task: a task moved into (or out of) a cgroup. Only moves on the cgroup
/// v2 hierarchy count (hierarchy id 0, the `0::` line of /proc/PID/cgroup).
#[tracepoint]
pub fn chaos_cgroup_attach(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_attach(&ctx);
    0
}

fn try_cgroup_attach(ctx: &TracePointContext) -> Result<(), ()> {
    let root: i32 = tp_field(ctx, offset!(cgroup_dst_root))?;
    if root != 0 {
        return Ok(());
    }
    let dst: u64 = tp_field(ctx, offset!(cgroup_dst_id))?;
    let pid: i32 = tp_field(ctx, offset!(cgroup_pid))?;
    let pid = pid as u32;
    let hit = target::cgroup_matches(dst);
    let mut info = match target::lookup(pid) {
        Some(info) => info,
        None if hit => TargetInfo::default(),
        None => return Ok(()),
    };
    if hit {
        info.reasons |= reason::CGROUP;
    } else {
        info.reasons &= !reason::CGROUP;
    }
    target::store(ctx, pid, info);
    Ok(())
}

#[inline(always)]
fn parent_tgid(task: *const u8) -> Result<u32, ()> {
    let parent = kernel_field::<u64>(task, offset!(task_real_parent))? as *const u8;
    kernel_field(parent, offset!(task_tgid))
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn header(kind: u32, pid: u32) -> EventHeader {
    EventHeader {
        ts_ns: now(),
        kind,
        pid,
    }
}

/// Copies a small event into the ring buffer, counting it as lost when the buffer is full.
#[inline(always)]
pub fn output<T: 'static>(event: &T) {
    if EVENTS.output::<T>(event, 0).is_err() {
        count(counter::LOST_EVENTS);
    }
}
