//! Builds the [`Layout`] the programs read their offsets from, on the running kernel.

use std::path::Path;

use chaos_common::{ABSENT, Layout};

use super::{
    btf::{BtfError, KernelBtf},
    format::{Format, FormatError},
};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("tracepoints of one hook disagree on where a field is ({0})")]
    SyscallArgs(String),
}

/// Which hook reports the fsync family (see `chaos-ebpf/src/fsync.rs` for the costs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FsyncHook {
    /// Filesystem tracepoints (ext4 sync_file enter/exit): no cost to other syscalls.
    Fs,
    /// syscalls:sys_enter/exit_{fsync,fdatasync,sync_file_range,syncfs,msync}: sees every
    /// filesystem and the fd, but puts every task on the machine on the slow syscall path.
    Syscalls,
    /// No fsync events.
    Off,
}

/// The sync-family syscalls hooked in `FsyncHook::Syscalls` mode, with their numbers on this
/// architecture.
pub const SYNC_SYSCALLS: [(&str, i64); 5] = [
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("sync_file_range", libc::SYS_sync_file_range),
    ("syncfs", libc::SYS_syncfs),
    ("msync", libc::SYS_msync),
];

/// Name of a sync-family syscall number, as reported in fsync events.
pub fn sync_syscall_name(nr: u32) -> Option<&'static str> {
    SYNC_SYSCALLS
        .iter()
        .find(|(_, n)| *n == i64::from(nr))
        .map(|(name, _)| *name)
}

/// The write syscalls counted towards unsynced bytes in `FsyncHook::Syscalls` mode.
pub const WRITE_SYSCALLS: [&str; 5] = ["write", "pwrite64", "writev", "pwritev", "pwritev2"];

/// ext4's tracepoints that count bytes written into a file's page cache (one per data mode).
pub const EXT4_WRITE_ENDS: [&str; 3] = [
    "ext4_write_end",
    "ext4_da_write_end",
    "ext4_journalled_write_end",
];

/// The wait syscalls whose return says which child was collected.
pub const WAIT_SYSCALLS: [&str; 2] = ["wait4", "waitid"];

/// What a command asks of the kernel beyond the lifecycle and signal hooks every command uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookSet {
    pub fsync: FsyncHook,
    /// The wait syscalls' exits (reap events): a syscall tracepoint, with its cost.
    pub reap: bool,
    /// sock:inet_sock_set_state (listen events): no cost on the syscall path.
    pub listen: bool,
    /// raw_syscalls:sys_exit (syscall errors of targets, the proof of injected errnos).
    pub syscall_errors: bool,
    /// syscalls:sys_enter_NAME for the in-kernel signal trigger.
    pub trigger: Option<syscalls::Sysno>,
    /// signal:signal_deliver (signals acted on, the proof of injected signals).
    pub signal_deliver: bool,
}

impl HookSet {
    /// The lifecycle and signal hooks with these fsync hooks, nothing more.
    pub fn observe(fsync: FsyncHook) -> Self {
        Self {
            fsync,
            reap: false,
            listen: false,
            syscall_errors: false,
            trigger: None,
            signal_deliver: false,
        }
    }
}

/// The optional tracepoints this kernel has (ext4's exist only when ext4 is built in or loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Hooks {
    pub sync: bool,
    pub write_ends: Vec<&'static str>,
}

impl Ext4Hooks {
    pub fn probe(tracefs: &Path) -> Self {
        Self {
            sync: has_ext4_hooks(tracefs),
            write_ends: ext4_write_ends(tracefs),
        }
    }
}

fn has_ext4_hooks(tracefs: &Path) -> bool {
    tracefs.join("events/ext4/ext4_sync_file_enter").is_dir()
        && tracefs.join("events/ext4/ext4_sync_file_exit").is_dir()
}

fn ext4_write_ends(tracefs: &Path) -> Vec<&'static str> {
    EXT4_WRITE_ENDS
        .into_iter()
        .filter(|name| tracefs.join("events/ext4").join(name).is_dir())
        .collect()
}

/// Reads every offset the programs need for the given hooks.
pub fn discover(tracefs: &Path, btf: &KernelBtf, hooks: HookSet) -> Result<Layout, LayoutError> {
    let mut l = Layout::absent();
    let task = |member| btf.member_offset("task_struct", member);
    l.task_pid = task("pid")?;
    l.task_tgid = task("tgid")?;
    l.task_real_parent = task("real_parent")?;
    l.task_group_leader = task("group_leader")?;
    l.task_exit_code = task("exit_code")?;
    l.task_start_time = task("start_time")?;

    let exec = Format::read(tracefs, "sched", "sched_process_exec")?;
    l.exec_filename = exec.data_loc_offset("filename")?;
    l.exec_old_pid = exec.offset_of("old_pid", 4)?;

    let exit = Format::read(tracefs, "sched", "sched_process_exit")?;
    l.exit_group_dead = exit.offset_of("group_dead", 1).unwrap_or(ABSENT);

    let signal = Format::read(tracefs, "signal", "signal_generate")?;
    l.sig_sig = signal.offset_of("sig", 4)?;
    l.sig_code = signal.offset_of("code", 4)?;
    l.sig_comm = signal.offset_of("comm", 16)?;
    l.sig_pid = signal.offset_of("pid", 4)?;
    l.sig_group = signal.offset_of("group", 4)?;
    l.sig_result = signal.offset_of("result", 4)?;

    let attach = Format::read(tracefs, "cgroup", "cgroup_attach_task")?;
    l.cgroup_dst_root = attach.offset_of("dst_root", 4)?;
    l.cgroup_dst_id = attach.offset_of("dst_id", 8)?;
    l.cgroup_pid = attach.offset_of("pid", 4)?;

    let mkdir = Format::read(tracefs, "cgroup", "cgroup_mkdir")?;
    l.mkdir_root = mkdir.offset_of("root", 4)?;
    l.mkdir_id = mkdir.offset_of("id", 8)?;
    l.mkdir_path = mkdir.data_loc_offset("path")?;

    if hooks.listen {
        let sock = Format::read(tracefs, "sock", "inet_sock_set_state")?;
        l.sock_newstate = sock.offset_of("newstate", 4)?;
        l.sock_sport = sock.offset_of("sport", 2)?;
        l.sock_family = sock.offset_of("family", 2)?;
    }
    if hooks.reap {
        for name in WAIT_SYSCALLS {
            sys_exit_ret(tracefs, name, &mut l.sys_exit_ret)?;
        }
    }
    match hooks.fsync {
        FsyncHook::Syscalls => {
            for name in WRITE_SYSCALLS {
                sys_exit_ret(tracefs, name, &mut l.sys_exit_ret)?;
            }
        }
        FsyncHook::Fs | FsyncHook::Off => {}
    }
    if hooks.signal_deliver {
        let deliver = Format::read(tracefs, "signal", "signal_deliver")?;
        l.deliver_sig = deliver.offset_of("sig", 4)?;
        l.deliver_handler = deliver.offset_of("sa_handler", 8)?;
    }
    if hooks.syscall_errors {
        let exit = Format::read(tracefs, "raw_syscalls", "sys_exit")?;
        l.raw_exit_id = exit.offset_of("id", 8)?;
        l.raw_exit_ret = exit.offset_of("ret", 8)?;
    }
    if let Some(nr) = hooks.trigger {
        let enter = Format::read(tracefs, "syscalls", &format!("sys_enter_{}", nr.name()))?;
        l.sys_enter_nr = enter.offset_of("__syscall_nr", 4)?;
    }
    if hooks.reap {
        let waitid = Format::read(tracefs, "syscalls", "sys_enter_waitid")?;
        l.waitid_infop = waitid.offset_of("infop", 8)?;
    }
    match hooks.fsync {
        FsyncHook::Fs if has_ext4_hooks(tracefs) => {
            let enter = Format::read(tracefs, "ext4", "ext4_sync_file_enter")?;
            l.ext4_enter_dev = enter.offset_of("dev", 4)?;
            l.ext4_enter_ino = enter.offset_of("ino", 8)?;
            l.ext4_enter_datasync = enter.offset_of("datasync", 4)?;
            let exit = Format::read(tracefs, "ext4", "ext4_sync_file_exit")?;
            l.ext4_exit_ret = exit.offset_of("ret", 4)?;
            for name in ext4_write_ends(tracefs) {
                let end = Format::read(tracefs, "ext4", name)?;
                let copied = end.offset_of("copied", 4)?;
                if l.ext4_write_copied != ABSENT && l.ext4_write_copied != copied {
                    return Err(LayoutError::SyscallArgs(format!("{name}.copied")));
                }
                l.ext4_write_copied = copied;
            }
        }
        FsyncHook::Syscalls => {
            let mut arg0 = None;
            for (name, _) in SYNC_SYSCALLS {
                let enter = Format::read(tracefs, "syscalls", &format!("sys_enter_{name}"))?;
                l.sys_enter_nr = enter.offset_of("__syscall_nr", 4)?;
                // The first argument follows __syscall_nr; every syscall argument is 8 bytes.
                let first = enter
                    .fields
                    .iter()
                    .find(|f| !f.name.starts_with("common_") && f.name != "__syscall_nr")
                    .ok_or_else(|| {
                        LayoutError::SyscallArgs(format!("sys_enter_{name} has no arguments"))
                    })?;
                if first.size != 8 || arg0.is_some_and(|a| a != first.offset) {
                    return Err(LayoutError::SyscallArgs(format!(
                        "sys_enter_{name}.{}",
                        first.name
                    )));
                }
                arg0 = Some(first.offset);
                sys_exit_ret(tracefs, name, &mut l.sys_exit_ret)?;
            }
            l.sys_enter_arg0 = arg0.unwrap_or(ABSENT);
            l.fd_syscalls = [
                libc::SYS_fsync,
                libc::SYS_fdatasync,
                libc::SYS_sync_file_range,
                libc::SYS_syncfs,
            ]
            .map(|nr| nr as u32);
        }
        FsyncHook::Fs | FsyncHook::Off => {}
    }
    Ok(l)
}

/// `ret` of syscalls:sys_exit_NAME into `slot`, checking it agrees with what is there.
fn sys_exit_ret(tracefs: &Path, name: &str, slot: &mut u32) -> Result<(), LayoutError> {
    let exit = Format::read(tracefs, "syscalls", &format!("sys_exit_{name}"))?;
    let ret = exit.offset_of("ret", 8)?;
    if *slot != ABSENT && *slot != ret {
        return Err(LayoutError::SyscallArgs(format!("sys_exit_{name}.ret")));
    }
    *slot = ret;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "reads this machine's tracefs and BTF; run by `cargo xtask test`"]
    fn discovers_every_offset_on_the_running_kernel() {
        let tracefs = super::super::tracefs::find().unwrap();
        let btf = KernelBtf::load(Path::new(super::super::btf::VMLINUX)).unwrap();
        for fsync in [FsyncHook::Fs, FsyncHook::Syscalls] {
            let hooks = HookSet {
                reap: true,
                listen: true,
                syscall_errors: true,
                trigger: Some(syscalls::Sysno::fsync),
                ..HookSet::observe(fsync)
            };
            let l = discover(&tracefs, &btf, hooks).unwrap();
            assert_ne!(l.waitid_infop, ABSENT);
            assert_ne!(l.sock_sport, ABSENT);
            assert_ne!(l.raw_exit_ret, ABSENT);
            assert_ne!(l.sys_enter_nr, ABSENT);
            assert_ne!(l.task_pid, ABSENT);
            assert_ne!(l.sig_result, ABSENT);
            if fsync == FsyncHook::Fs {
                assert_ne!(l.ext4_write_copied, ABSENT);
            }
            if fsync == FsyncHook::Syscalls {
                assert_ne!(l.sys_enter_arg0, ABSENT);
                assert_ne!(l.sys_exit_ret, ABSENT);
            }
        }
    }

    #[test]
    fn names_sync_syscalls() {
        assert_eq!(
            sync_syscall_name(libc::SYS_fdatasync as u32),
            Some("fdatasync")
        );
        assert_eq!(sync_syscall_name(libc::SYS_getppid as u32), None);
    }
}
