//! Loading the kernel programs, attaching them, and the maps userspace talks to.
//!
//! Nothing is pinned: every program, link and map belongs to this process and goes away when
//! it exits, however it exits.

pub mod ring;

use std::collections::BTreeMap;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{Lsm, ProgramError, RawTracePoint, TracePoint},
};
use chaos_common::{
    CGROUP_PATH_LEN, COMM_LEN, Layout, LsmFault, TargetInfo, Trigger, counter, lsm_hook,
};

use crate::{
    event::KernelCounters,
    kernel::layout::{Ext4Hooks, FsyncHook, HookSet, SYNC_SYSCALLS, WAIT_SYSCALLS, WRITE_SYSCALLS},
};

/// The object built by build.rs from chaos-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaos-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("cannot load the eBPF object")]
    Object(#[source] aya::EbpfError),
    #[error("the kernel refused program {program}{}", verifier_reason(source))]
    Load {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("program {0} is missing from the eBPF object (a build mismatch)")]
    MissingProgram(&'static str),
    #[error("cannot attach {program} to {hook}")]
    Attach {
        program: &'static str,
        hook: String,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// Where one program is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    TracePoint {
        program: &'static str,
        category: &'static str,
        name: String,
    },
    RawTracePoint {
        program: &'static str,
        name: &'static str,
    },
    /// A BPF LSM program on `hook` (`security_<hook>`).
    Lsm {
        program: &'static str,
        hook: &'static str,
    },
}

impl Hook {
    fn tp(program: &'static str, category: &'static str, name: impl Into<String>) -> Self {
        Hook::TracePoint {
            program,
            category,
            name: name.into(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Hook::TracePoint { category, name, .. } => format!("tracepoint {category}:{name}"),
            Hook::RawTracePoint { name, .. } => format!("raw tracepoint {name}"),
            Hook::Lsm { hook, .. } => format!("lsm {hook}"),
        }
    }
}

/// The hooks for a [`HookSet`] on a kernel with the given ext4 tracepoints.
pub fn hooks(set: HookSet, ext4: &Ext4Hooks) -> Vec<Hook> {
    let mut hooks = vec![
        Hook::RawTracePoint {
            program: "chaos_fork",
            name: "sched_process_fork",
        },
        Hook::tp("chaos_exec", "sched", "sched_process_exec"),
        Hook::tp("chaos_exit", "sched", "sched_process_exit"),
        Hook::tp("chaos_signal_generate", "signal", "signal_generate"),
        Hook::tp("chaos_cgroup_attach", "cgroup", "cgroup_attach_task"),
        Hook::tp("chaos_cgroup_mkdir", "cgroup", "cgroup_mkdir"),
    ];
    if set.listen {
        hooks.push(Hook::tp("chaos_sock_listen", "sock", "inet_sock_set_state"));
    }
    if set.syscall_errors {
        hooks.push(Hook::tp("chaos_sys_exit_error", "raw_syscalls", "sys_exit"));
    }
    if set.signal_deliver {
        hooks.push(Hook::tp("chaos_signal_deliver", "signal", "signal_deliver"));
    }
    if let Some(nr) = set.trigger {
        hooks.push(Hook::tp(
            "chaos_trigger",
            "syscalls",
            format!("sys_enter_{}", nr.name()),
        ));
    }
    if set.reap {
        hooks.push(Hook::tp(
            "chaos_sys_exit_wait4",
            "syscalls",
            "sys_exit_wait4",
        ));
        hooks.push(Hook::tp(
            "chaos_sys_enter_waitid",
            "syscalls",
            "sys_enter_waitid",
        ));
        hooks.push(Hook::tp(
            "chaos_sys_exit_waitid",
            "syscalls",
            "sys_exit_waitid",
        ));
        debug_assert_eq!(WAIT_SYSCALLS, ["wait4", "waitid"]);
    }
    match set.fsync {
        FsyncHook::Fs if ext4.sync => {
            hooks.push(Hook::tp(
                "chaos_ext4_sync_enter",
                "ext4",
                "ext4_sync_file_enter",
            ));
            hooks.push(Hook::tp(
                "chaos_ext4_sync_exit",
                "ext4",
                "ext4_sync_file_exit",
            ));
            for name in &ext4.write_ends {
                hooks.push(Hook::tp("chaos_ext4_write_end", "ext4", *name));
            }
        }
        FsyncHook::Syscalls => {
            for (name, _) in SYNC_SYSCALLS {
                hooks.push(Hook::tp(
                    "chaos_sys_enter_sync",
                    "syscalls",
                    format!("sys_enter_{name}"),
                ));
                hooks.push(Hook::tp(
                    "chaos_sys_exit_sync",
                    "syscalls",
                    format!("sys_exit_{name}"),
                ));
            }
            for name in WRITE_SYSCALLS {
                hooks.push(Hook::tp(
                    "chaos_sys_exit_write",
                    "syscalls",
                    format!("sys_exit_{name}"),
                ));
            }
        }
        FsyncHook::Fs | FsyncHook::Off => {}
    }
    hooks
}

/// The LSM program and hook that fail calls for an [`lsm_hook`] value.
pub fn lsm_program(hook: u32) -> Option<Hook> {
    let (program, hook) = match hook {
        lsm_hook::FILE_OPEN => ("chaos_lsm_file_open", "file_open"),
        lsm_hook::FILE_READ | lsm_hook::FILE_WRITE => {
            ("chaos_lsm_file_permission", "file_permission")
        }
        lsm_hook::SOCKET_CONNECT => ("chaos_lsm_socket_connect", "socket_connect"),
        lsm_hook::TASK_ALLOC => ("chaos_lsm_task_alloc", "task_alloc"),
        lsm_hook::BPRM_CHECK => ("chaos_lsm_bprm_check", "bprm_check_security"),
        lsm_hook::INODE_UNLINK => ("chaos_lsm_inode_unlink", "inode_unlink"),
        lsm_hook::INODE_RENAME => ("chaos_lsm_inode_rename", "inode_rename"),
        lsm_hook::INODE_MKDIR => ("chaos_lsm_inode_mkdir", "inode_mkdir"),
        _ => return None,
    };
    Some(Hook::Lsm { program, hook })
}

/// Whether these hooks count unsynced bytes (a write hook is among them).
pub fn counts_unsynced(hooks: &[Hook]) -> bool {
    hooks.iter().any(|h| {
        matches!(
            hook_program(h),
            "chaos_ext4_write_end" | "chaos_sys_exit_write"
        )
    })
}

/// Default ring buffer size: 4 MiB holds about 60k fork events.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// The loaded object. Programs stay attached until it is dropped.
pub struct Programs {
    ebpf: Ebpf,
}

impl Programs {
    /// Creates the maps (the ring buffer of `ring_bytes`, a power-of-two multiple of the page
    /// size) and hands the layout to the programs; loads no program yet.
    pub fn load(layout: &Layout, ring_bytes: u32) -> Result<Self, BpfError> {
        Self::load_with_faults(layout, ring_bytes, &Trigger::none(), &LsmFault::none())
    }

    /// As [`Self::load`], with the fault configuration the injection programs read.
    pub fn load_with_faults(
        layout: &Layout,
        ring_bytes: u32,
        trigger: &Trigger,
        lsm: &LsmFault,
    ) -> Result<Self, BpfError> {
        let ebpf = EbpfLoader::new()
            .override_global("LAYOUT", layout, true)
            .override_global("TRIGGER", trigger, true)
            .override_global("LSM_FAULT", lsm, true)
            .map_max_entries("EVENTS", ring_bytes)
            .load(OBJECT)
            .map_err(BpfError::Object)?;
        Ok(Self { ebpf })
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Loads (once) and attaches each hook's program.
    pub fn attach(&mut self, hooks: &[Hook]) -> Result<(), BpfError> {
        for hook in hooks {
            let result = match hook {
                Hook::TracePoint {
                    program,
                    category,
                    name,
                } => {
                    let prog: &mut TracePoint = self.program(program)?;
                    load_once(prog.load(), program)?;
                    prog.attach(category, name).map(drop)
                }
                Hook::RawTracePoint { program, name } => {
                    let prog: &mut RawTracePoint = self.program(program)?;
                    load_once(prog.load(), program)?;
                    prog.attach(name).map(drop)
                }
                Hook::Lsm { program, hook } => {
                    let btf = Btf::from_sys_fs().map_err(|e| BpfError::Load {
                        program,
                        source: ProgramError::Btf(e),
                    })?;
                    let prog: &mut Lsm = self.program(program)?;
                    load_once(prog.load(hook, &btf), program)?;
                    prog.attach().map(drop)
                }
            };
            result.map_err(|source| BpfError::Attach {
                program: hook_program(hook),
                hook: hook.describe(),
                source,
            })?;
        }
        Ok(())
    }

    fn program<'a, T>(&'a mut self, name: &'static str) -> Result<&'a mut T, BpfError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or(BpfError::MissingProgram(name))?;
        program.try_into().map_err(|source| BpfError::Load {
            program: name,
            source,
        })
    }

    /// Takes the target maps out of the object, for [`TargetSet`].
    pub fn target_set(&mut self) -> Result<TargetSet, BpfError> {
        Ok(TargetSet {
            targets: HashMap::try_from(self.take("TARGETS")?).map_err(map_err("TARGETS"))?,
            comms: HashMap::try_from(self.take("TARGET_COMMS")?)
                .map_err(map_err("TARGET_COMMS"))?,
            cgroups: HashMap::try_from(self.take("TARGET_CGROUPS")?)
                .map_err(map_err("TARGET_CGROUPS"))?,
            cgroup_paths: HashMap::try_from(self.take("TARGET_CGROUP_PATHS")?)
                .map_err(map_err("TARGET_CGROUP_PATHS"))?,
            watchers: HashMap::try_from(self.take("WATCHERS")?).map_err(map_err("WATCHERS"))?,
        })
    }

    /// Takes the fault-safety maps: what no fault may touch, and which syscall errors prove
    /// an injection.
    pub fn fault_maps(&mut self) -> Result<FaultMaps, BpfError> {
        Ok(FaultMaps {
            deny_pids: HashMap::try_from(self.take("DENY_PIDS")?).map_err(map_err("DENY_PIDS"))?,
            deny_comms: HashMap::try_from(self.take("DENY_COMMS")?)
                .map_err(map_err("DENY_COMMS"))?,
            confirm_nrs: HashMap::try_from(self.take("CONFIRM_NRS")?)
                .map_err(map_err("CONFIRM_NRS"))?,
            disarmed: Array::try_from(self.take("DISARMED")?).map_err(map_err("DISARMED"))?,
        })
    }

    pub fn counters(&mut self) -> Result<Counters, BpfError> {
        Ok(Counters(
            PerCpuArray::try_from(self.take("COUNTERS")?).map_err(map_err("COUNTERS"))?,
        ))
    }

    pub fn ring(&mut self) -> Result<RingBuf<MapData>, BpfError> {
        RingBuf::try_from(self.take("EVENTS")?).map_err(map_err("EVENTS"))
    }

    /// Forwards what the programs log (a full target set, say) to this process's logger.
    pub fn logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        aya_log::EbpfLogger::init(&mut self.ebpf)
            .inspect_err(|e| log::debug!("no eBPF log forwarding: {e}"))
            .ok()
    }

    fn take(&mut self, name: &'static str) -> Result<aya::maps::Map, BpfError> {
        self.ebpf.take_map(name).ok_or(BpfError::Map {
            name,
            source: MapError::InvalidName { name: name.into() },
        })
    }
}

fn hook_program(hook: &Hook) -> &'static str {
    match hook {
        Hook::TracePoint { program, .. }
        | Hook::RawTracePoint { program, .. }
        | Hook::Lsm { program, .. } => program,
    }
}

/// One program serves several hooks (chaos_sys_enter_sync); loading it again is not an error.
fn load_once(result: Result<(), ProgramError>, program: &'static str) -> Result<(), BpfError> {
    match result {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(()),
        Err(source) => Err(BpfError::Load { program, source }),
    }
}

/// The verifier's reason, which is the log's last line before its statistics; the error chain
/// keeps only first lines, and the first line of a verifier log is its first instruction.
fn verifier_reason(source: &ProgramError) -> String {
    let ProgramError::LoadError { verifier_log, .. } = source else {
        return String::new();
    };
    let log = verifier_log.to_string();
    let stats = [
        "processed ",
        "verification time",
        "stack depth",
        "mark_precise",
    ];
    log.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty() && !stats.iter().any(|s| line.starts_with(s)))
        .map(|line| format!(" (the verifier: {line})"))
        .unwrap_or_default()
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> BpfError {
    move |source| BpfError::Map { name, source }
}

/// The target maps: membership by pid, and the comm and cgroup rules the programs apply to
/// processes that exec or move later.
pub struct TargetSet {
    targets: HashMap<MapData, u32, TargetInfo>,
    comms: HashMap<MapData, [u8; COMM_LEN], u32>,
    cgroups: HashMap<MapData, u64, u32>,
    cgroup_paths: HashMap<MapData, [u8; CGROUP_PATH_LEN], u64>,
    watchers: HashMap<MapData, u32, u32>,
}

impl TargetSet {
    pub fn add_comm(&mut self, comm: [u8; COMM_LEN]) -> Result<(), BpfError> {
        self.comms
            .insert(comm, 1, 0)
            .map_err(map_err("TARGET_COMMS"))
    }

    pub fn add_cgroup(&mut self, id: u64) -> Result<(), BpfError> {
        self.cgroups
            .insert(id, 1, 0)
            .map_err(map_err("TARGET_CGROUPS"))
    }

    /// A cgroup rule: the ids of its directory and of those below it, and its directory's
    /// path, so that the directory stays a target when it is removed and made again.
    pub fn add_cgroup_rule(&mut self, rule: &crate::target::CgroupRule) -> Result<(), BpfError> {
        for id in &rule.ids {
            self.add_cgroup(*id)?;
        }
        match (crate::target::cgroup_path_key(&rule.path), rule.ids.first()) {
            (Some(key), Some(&id)) => self
                .cgroup_paths
                .insert(key, id, 0)
                .map_err(map_err("TARGET_CGROUP_PATHS")),
            _ => {
                log::warn!(
                    "{}: its path is too long to be followed if it is made again (at most {} bytes below the cgroup2 root)",
                    rule.path.display(),
                    CGROUP_PATH_LEN - 1
                );
                Ok(())
            }
        }
    }

    /// Observes `pid` as a supervisor, read-only: its forks into a target cgroup and its reaps
    /// are reported, and it never joins the set (pid 1 running a systemd unit).
    pub fn add_watcher(&mut self, pid: u32) -> Result<(), BpfError> {
        self.watchers.insert(pid, 1, 0).map_err(map_err("WATCHERS"))
    }

    /// Adds processes, merging with what the kernel may have put there meanwhile.
    pub fn add_members(&mut self, members: &BTreeMap<u32, TargetInfo>) -> Result<(), BpfError> {
        for (&pid, info) in members {
            let mut merged = *info;
            if let Ok(existing) = self.targets.get(&pid, 0) {
                merged.reasons |= existing.reasons;
                merged.flags |= existing.flags;
            }
            self.targets
                .insert(pid, merged, 0)
                .map_err(map_err("TARGETS"))?;
        }
        Ok(())
    }
}

impl TargetSet {
    /// The processes in the set now.
    pub fn members(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.targets.keys().filter_map(Result::ok).collect();
        pids.sort_unstable();
        pids
    }
}

/// The maps that keep faults off what they must not touch, and name the proofs.
pub struct FaultMaps {
    deny_pids: HashMap<MapData, u32, u32>,
    deny_comms: HashMap<MapData, [u8; COMM_LEN], u32>,
    confirm_nrs: HashMap<MapData, u32, u32>,
    disarmed: Array<MapData, u32>,
}

impl FaultMaps {
    pub fn deny_pid(&mut self, pid: u32) -> Result<(), BpfError> {
        self.deny_pids
            .insert(pid, 1, 0)
            .map_err(map_err("DENY_PIDS"))
    }

    pub fn deny_comm(&mut self, comm: [u8; COMM_LEN]) -> Result<(), BpfError> {
        self.deny_comms
            .insert(comm, 1, 0)
            .map_err(map_err("DENY_COMMS"))
    }

    pub fn confirm_syscall(&mut self, nr: u32) -> Result<(), BpfError> {
        self.confirm_nrs
            .insert(nr, 1, 0)
            .map_err(map_err("CONFIRM_NRS"))
    }

    /// Stops (or lets again) one kind of kernel-fired fault (`chaos_common::fault`): the
    /// programs read this switch before anything else, so it takes effect at their next run.
    pub fn set_armed(&mut self, kind: u32, armed: bool) -> Result<(), BpfError> {
        self.disarmed
            .set(kind, u32::from(!armed), 0)
            .map_err(map_err("DISARMED"))
    }
}

/// The per-CPU counters beside the ring buffer.
pub struct Counters(PerCpuArray<MapData, u64>);

impl Counters {
    pub fn read(&self) -> KernelCounters {
        let sum = |index: u32| self.0.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0);
        KernelCounters {
            lost: sum(counter::LOST_EVENTS),
            targets_full: sum(counter::TARGETS_FULL),
            read_errors: sum(counter::READ_ERRORS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_set_decides_what_is_attached() {
        let ext4 = Ext4Hooks {
            sync: true,
            write_ends: vec!["ext4_write_end", "ext4_da_write_end"],
        };
        let no_ext4 = Ext4Hooks {
            sync: false,
            write_ends: Vec::new(),
        };
        let set = |fsync, reap, listen| HookSet {
            reap,
            listen,
            ..HookSet::observe(fsync)
        };
        let names = |hooks: Vec<Hook>| hooks.iter().map(Hook::describe).collect::<Vec<_>>();
        let fs = hooks(set(FsyncHook::Fs, false, true), &ext4);
        assert!(counts_unsynced(&fs));
        let fs = names(fs);
        assert!(fs.contains(&"tracepoint ext4:ext4_sync_file_enter".to_string()));
        assert!(fs.contains(&"tracepoint ext4:ext4_da_write_end".to_string()));
        assert!(fs.contains(&"tracepoint sock:inet_sock_set_state".to_string()));
        assert!(
            !fs.iter().any(|h| h.contains("syscalls:")),
            "fs mode without reaping must not slow every syscall"
        );
        let bare = hooks(set(FsyncHook::Fs, false, false), &no_ext4);
        assert_eq!(bare.len(), 6);
        assert!(!counts_unsynced(&bare));
        assert!(names(bare).contains(&"tracepoint cgroup:cgroup_mkdir".to_string()));
        assert_eq!(hooks(set(FsyncHook::Off, false, false), &ext4).len(), 6);
        let sys = names(hooks(set(FsyncHook::Syscalls, false, false), &ext4));
        assert!(sys.contains(&"tracepoint syscalls:sys_exit_msync".to_string()));
        assert!(sys.contains(&"tracepoint syscalls:sys_exit_pwritev2".to_string()));
        assert_eq!(sys.len(), 6 + 10 + 5);
        let reap = names(hooks(set(FsyncHook::Off, true, false), &ext4));
        assert!(reap.contains(&"tracepoint syscalls:sys_exit_wait4".to_string()));
        assert!(reap.contains(&"tracepoint syscalls:sys_enter_waitid".to_string()));
    }
}
