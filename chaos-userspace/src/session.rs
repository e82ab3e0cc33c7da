//! Bringing the kernel up for a command, the same named steps for observe, measure, inject
//! and run:
//!
//! 1. [`preflight`](Session::open): privileges, BTF, tracefs;
//! 2. BTF and layout: the offsets the programs read, for the hooks asked for;
//! 3. hooks: which tracepoints (and LSM hook) to attach, from the command's [`HookSet`] and
//!    the faults' needs ([`KernelFaults`]);
//! 4. load: the object with its globals (layout, trigger, LSM fault) and the ring size;
//! 5. attach;
//! 6. target set: the maps of who is observed;
//! 7. deny maps: what no fault may touch (the built-in denylist and the command's
//!    additions), and every kernel rule disarmed until its engine arms it.
//!
//! Nothing is pinned: dropping the [`Session`] (or chaos ending, however it ends) detaches
//! everything.

use std::path::PathBuf;

use chaos_common::{LsmFault, Trigger};
use syscalls::Sysno;

use crate::{
    bpf::{
        BpfError, FaultMaps, Hook, Programs, TargetSet, counts_unsynced, hooks, lsm_program,
        ring::RingSource,
    },
    fault::KernelRule,
    kernel::{
        btf::{BtfError, KernelBtf},
        layout::{Ext4Hooks, HookSet, LayoutError, discover},
        preflight::{self, PreflightError},
    },
    source::SourceError,
    target::{
        comm_key,
        denylist::{DENIED_COMMS, Denylist},
    },
};

/// What the faults of a run ask of the kernel (see `inject::spec::kernel_faults`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFaults {
    /// The trigger's global (`Trigger::none()` when there is none).
    pub trigger: Trigger,
    /// The syscall whose entry the trigger hooks.
    pub trigger_nr: Option<Sysno>,
    /// The LSM fault's global (hook 0 when there is none).
    pub lsm: LsmFault,
    /// Syscall numbers whose errors prove an injected errno.
    pub confirm: Vec<u32>,
    /// A fault needs the watchdog (seccomp, a freeze).
    pub watchdog: bool,
}

impl Default for KernelFaults {
    fn default() -> Self {
        Self {
            trigger: Trigger::none(),
            trigger_nr: None,
            lsm: LsmFault::none(),
            confirm: Vec::new(),
            watchdog: false,
        }
    }
}

/// What a command asks of the kernel.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    /// The observation hooks (fsync, reap, listen); the faults add theirs.
    pub hooks: HookSet,
    pub ring_bytes: u32,
    pub faults: KernelFaults,
    /// Pids no fault may touch, beyond the built-in denylist.
    pub deny_pids: Vec<u32>,
    /// Command names no fault may touch, beyond the built-in denylist.
    pub deny_comms: Vec<String>,
}

impl SessionPlan {
    /// Observation only: no fault, nothing beyond the built-in denylist.
    pub fn observing(hooks: HookSet, ring_bytes: u32) -> Self {
        Self {
            hooks,
            ring_bytes,
            faults: KernelFaults::default(),
            deny_pids: Vec::new(),
            deny_comms: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("this kernel lacks what the observer needs")]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The kernel refused the BPF LSM program an errno fault needs (lockdown, or no `bpf`
    /// in the LSM list); the command says what to do instead.
    #[error("this kernel refused the BPF LSM program")]
    LsmRefused(#[source] BpfError),
}

/// The programs attached for one command, and the maps it talks to.
pub struct Session {
    programs: Programs,
    pub targets: TargetSet,
    pub faults: FaultMaps,
    pub attached: Vec<Hook>,
    pub ext4: Ext4Hooks,
    pub tracefs: PathBuf,
}

impl Session {
    pub fn open(plan: &SessionPlan) -> Result<Self, SessionError> {
        // 1. Preflight.
        let env = preflight::check()?;
        // 2. BTF and layout.
        let btf = KernelBtf::load(&env.btf_path)?;
        let set = HookSet {
            syscall_errors: plan.hooks.syscall_errors || !plan.faults.confirm.is_empty(),
            trigger: plan.faults.trigger_nr,
            signal_deliver: plan.hooks.signal_deliver || plan.faults.trigger_nr.is_some(),
            ..plan.hooks
        };
        let layout = discover(&env.tracefs, &btf, set)?;
        // 3. Hooks.
        let ext4 = Ext4Hooks::probe(&env.tracefs);
        let mut attached = hooks(set, &ext4);
        let lsm = lsm_program(plan.faults.lsm.hook);
        attached.extend(lsm.clone());
        // 4. Load.
        let mut programs = Programs::load_with_faults(
            &layout,
            plan.ring_bytes,
            &plan.faults.trigger,
            &plan.faults.lsm,
        )?;
        // 5. Attach.
        programs.attach(&attached).map_err(|e| match (&lsm, &e) {
            (Some(_), BpfError::Load { .. }) => SessionError::LsmRefused(e),
            _ => SessionError::Bpf(e),
        })?;
        log::info!(
            "attached: {}",
            attached
                .iter()
                .map(Hook::describe)
                .collect::<Vec<_>>()
                .join(", ")
        );
        // 6. Target set.
        let targets = programs.target_set()?;
        // 7. Deny maps, kernel rules disarmed.
        let mut faults = programs.fault_maps()?;
        for rule in KernelRule::ALL {
            faults.set_armed(rule.slot(), false)?;
        }
        let denylist = Denylist::new(std::path::Path::new("/proc"));
        for pid in denylist.pids().chain(plan.deny_pids.iter().copied()) {
            faults.deny_pid(pid)?;
        }
        let comms = DENIED_COMMS
            .iter()
            .map(|c| c.to_string())
            .chain(plan.deny_comms.iter().cloned());
        for comm in comms {
            if let Ok(key) = comm_key(&comm) {
                faults.deny_comm(key)?;
            }
        }
        for nr in &plan.faults.confirm {
            faults.confirm_syscall(*nr)?;
        }
        Ok(Self {
            programs,
            targets,
            faults,
            attached,
            ext4,
            tracefs: env.tracefs,
        })
    }

    /// Whether the attached hooks count unsynced bytes.
    pub fn counts_unsynced(&self) -> bool {
        counts_unsynced(&self.attached)
    }

    pub fn programs(&mut self) -> &mut Programs {
        &mut self.programs
    }

    /// The ring buffer as an event source; call inside the runtime, once.
    pub fn ring_source(&mut self) -> Result<RingSource, SessionError> {
        let unsynced = self.counts_unsynced();
        let ring = self.programs.ring()?;
        let counters = self.programs.counters()?;
        let logs = self.programs.logger();
        Ok(RingSource::new(ring, counters, logs, unsynced)?)
    }
}
