//! Field offsets the programs need, found at load time on the running kernel.
//!
//! Tracepoint record layouts come from `/sys/kernel/tracing/events/*/*/format` and kernel struct
//! member offsets from BTF (`/sys/kernel/btf/vmlinux`); userspace fills a [`Layout`] and hands
//! it to the programs as the read-only global `LAYOUT`. Nothing here is hard-coded for one
//! kernel: `sched_process_fork`, for one, moved its fields between 6.1 and 6.18.

/// Marks a field that this kernel's tracepoint does not have.
pub const ABSENT: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    // struct task_struct (BTF).
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_exit_code: u32,
    pub task_start_time: u32,

    // sched:sched_process_exec.
    pub exec_filename: u32,
    pub exec_old_pid: u32,

    // sched:sched_process_exit; `group_dead` appeared in 6.16, [`ABSENT`] before.
    pub exit_group_dead: u32,

    // signal:signal_generate.
    pub sig_sig: u32,
    pub sig_code: u32,
    pub sig_comm: u32,
    pub sig_pid: u32,
    pub sig_group: u32,
    pub sig_result: u32,

    // cgroup:cgroup_attach_task.
    pub cgroup_dst_root: u32,
    pub cgroup_dst_id: u32,
    pub cgroup_pid: u32,

    // cgroup:cgroup_mkdir.
    pub mkdir_root: u32,
    pub mkdir_id: u32,
    pub mkdir_path: u32,

    // ext4:ext4_sync_file_enter / ext4:ext4_sync_file_exit.
    pub ext4_enter_dev: u32,
    pub ext4_enter_ino: u32,
    pub ext4_enter_datasync: u32,
    pub ext4_exit_ret: u32,

    // syscalls:sys_enter_* (`__syscall_nr` and the first argument) and syscalls:sys_exit_*.
    pub sys_enter_nr: u32,
    pub sys_enter_arg0: u32,
    pub sys_exit_ret: u32,
    /// Syscall numbers whose first argument is a file descriptor (fsync, fdatasync,
    /// sync_file_range, syncfs); any other hooked syscall reports fd -1.
    pub fd_syscalls: [u32; 4],

    // syscalls:sys_enter_waitid: the `infop` argument.
    pub waitid_infop: u32,

    // sock:inet_sock_set_state.
    pub sock_newstate: u32,
    pub sock_sport: u32,
    pub sock_family: u32,

    // ext4:ext4_write_end, ext4_da_write_end, ext4_journalled_write_end (one format).
    pub ext4_write_copied: u32,

    // raw_syscalls:sys_exit (proof of effect of errno injection).
    pub raw_exit_id: u32,
    pub raw_exit_ret: u32,

    // signal:signal_deliver (proof of effect of signals).
    pub deliver_sig: u32,
    pub deliver_handler: u32,
}
const _: () = assert!(size_of::<Layout>() == 37 * 4 + 16);

impl Layout {
    /// A layout with every field absent; the programs check before reading.
    pub const fn absent() -> Self {
        Self {
            task_pid: ABSENT,
            task_tgid: ABSENT,
            task_real_parent: ABSENT,
            task_group_leader: ABSENT,
            task_exit_code: ABSENT,
            task_start_time: ABSENT,
            exec_filename: ABSENT,
            exec_old_pid: ABSENT,
            exit_group_dead: ABSENT,
            sig_sig: ABSENT,
            sig_code: ABSENT,
            sig_comm: ABSENT,
            sig_pid: ABSENT,
            sig_group: ABSENT,
            sig_result: ABSENT,
            cgroup_dst_root: ABSENT,
            cgroup_dst_id: ABSENT,
            cgroup_pid: ABSENT,
            mkdir_root: ABSENT,
            mkdir_id: ABSENT,
            mkdir_path: ABSENT,
            ext4_enter_dev: ABSENT,
            ext4_enter_ino: ABSENT,
            ext4_enter_datasync: ABSENT,
            ext4_exit_ret: ABSENT,
            sys_enter_nr: ABSENT,
            sys_enter_arg0: ABSENT,
            sys_exit_ret: ABSENT,
            fd_syscalls: [ABSENT; 4],
            waitid_infop: ABSENT,
            sock_newstate: ABSENT,
            sock_sport: ABSENT,
            sock_family: ABSENT,
            ext4_write_copied: ABSENT,
            raw_exit_id: ABSENT,
            raw_exit_ret: ABSENT,
            deliver_sig: ABSENT,
            deliver_handler: ABSENT,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, only u32 fields (no padding), every bit pattern valid.
    unsafe impl aya::Pod for super::Layout {}
}
