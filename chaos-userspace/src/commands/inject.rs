//! `chaos inject signal|errno`: faults aimed at a checked target set, each confirmed by the
//! kernel event that shows its effect, all of them ending when chaos ends.
//!
//! Order: the plan is checked, named pids are held to the denylist, the kernel probed and the
//! programs attached (with the denylist in the kernel's maps); the watchdog is forked while
//! chaos is still single-threaded; then `-- CMD` is launched (under its seccomp filter when
//! the plan needs one), the target set filled, and the command released.

use std::{os::fd::OwnedFd, path::Path};

use nix::sys::signal::{Signal, kill};
use serde_json::json;

use super::common::{monotonic_ns, runtime_with_stops};
use crate::{
    audit::AuditLog,
    bpf::{DEFAULT_RING_BYTES, FaultMaps, Hook, Programs, hooks, lsm_program, ring::RingSource},
    cli::InjectCommand,
    error::Error,
    export,
    inject::{
        denylist::{DENIED_COMMS, Denylist},
        driver::Run,
        plan::{InjectConfig, Plan},
        report::Ledger,
        seccomp,
        watchdog::Watchdog,
    },
    kernel::{
        btf::KernelBtf,
        layout::{FsyncHook, HookSet, discover},
        preflight,
    },
    launch,
    measure::discover::process,
    target::{Targets, comm_key, initial_members, scan_cgroups, scan_processes},
};

pub fn run(command: InjectCommand) -> Result<u8, Error> {
    let config = match &command {
        InjectCommand::Signal(args) => InjectConfig::signal(args)?,
        InjectCommand::Errno(args) => InjectConfig::errno(args)?,
    };
    if let Some(program) = config.spec.command.first() {
        launch::resolve(program)?;
    }
    let proc = Path::new("/proc");
    let targets = config.spec.validate(proc)?;
    let denylist = Denylist::new(proc);
    for pid in &targets.pids {
        if let Some(p) = process(proc, *pid) {
            denylist
                .check_proc(proc, &p)
                .map_err(|reason| Error::Usage(format!("--pid {pid}: refused: {reason}")))?;
        }
    }
    if !config.seed_given && !config.json {
        eprintln!(
            "chaos: seed {} (--seed {} repeats this run)",
            config.seed, config.seed
        );
    }
    let mut audit = config.audit.as_deref().map(AuditLog::open).transpose()?;
    if let Some(log) = &mut audit {
        log.append(json!({
            "kind": "start",
            "command": std::env::args().collect::<Vec<_>>(),
            "plan": format!("{:?}", config.plan),
            "seed": config.seed,
            "dry_run": config.dry_run,
        }))?;
    }

    let env = preflight::check()?;
    let (exporters, server) = export::shared(&config.export)?;
    let btf = KernelBtf::load(&env.btf_path)?;
    let set = HookSet {
        syscall_errors: matches!(config.plan, Plan::Seccomp { .. } | Plan::Lsm { .. }),
        trigger: match &config.plan {
            Plan::Trigger { nr, .. } => Some(*nr),
            _ => None,
        },
        signal_deliver: matches!(config.plan, Plan::Trigger { .. }),
        ..HookSet::observe(FsyncHook::Off)
    };
    let layout = discover(&env.tracefs, &btf, set)?;
    let (trigger, lsm) = kernel_faults(&config);
    let mut programs = Programs::load_with_faults(&layout, DEFAULT_RING_BYTES, &trigger, &lsm)?;
    let mut attach: Vec<Hook> = hooks(set, &crate::kernel::layout::Ext4Hooks::probe(&env.tracefs));
    if let Plan::Lsm { fault, .. } = &config.plan {
        attach.extend(lsm_program(fault.hook));
    }
    programs.attach(&attach).map_err(|e| match (&config.plan, &e) {
        (Plan::Lsm { .. }, crate::bpf::BpfError::Load { .. }) => Error::Usage(format!(
            "the lsm backend: this kernel refused the BPF LSM program ({}); chaos doctor shows why; with -- CMD the seccomp backend works on any kernel",
            crate::error::chain(&e)
        )),
        _ => Error::from(e),
    })?;
    if let (Some(log), Plan::Trigger { .. } | Plan::Lsm { .. }) = (&mut audit, &config.plan) {
        // The kernel fires these on its own: the rule is recorded as armed before any target
        // can meet it, and each fault as the kernel reports it.
        log.append(json!({"kind": "armed", "plan": format!("{:?}", config.plan)}))?;
    }
    let mut fault_maps = programs.fault_maps()?;
    for pid in denylist.pids() {
        fault_maps.deny_pid(pid)?;
    }
    for comm in DENIED_COMMS {
        if let Ok(key) = comm_key(comm) {
            fault_maps.deny_comm(key)?;
        }
    }
    confirm_syscalls(&config.plan, &mut fault_maps)?;
    let mut target_set = programs.target_set()?;
    for comm in &targets.comms {
        target_set.add_comm(*comm)?;
    }
    for id in targets.cgroups.iter().flat_map(|c| &c.ids) {
        target_set.add_cgroup(*id)?;
    }

    // Still single-threaded: fork the watchdog, then the command.
    let needs_watchdog = matches!(config.plan, Plan::Seccomp { .. })
        || matches!(&config.plan, Plan::Signals(s) if s.freeze_for.is_some());
    let watchdog = needs_watchdog
        .then(Watchdog::spawn)
        .transpose()
        .map_err(|source| Error::Io {
            what: "cannot start the watchdog",
            source,
        })?;
    let filter = match &config.plan {
        Plan::Seccomp { nr, .. } => Some(seccomp::filter(nr.id() as u32)),
        _ => None,
    };
    let launched = if config.spec.command.is_empty() {
        None
    } else {
        launch::become_subreaper()?;
        Some(launch::launch_filtered(
            &config.spec.command,
            filter.as_deref(),
        )?)
    };
    let mut targets: Targets = targets;
    if let Some(child) = &launched {
        targets.pids.push(child.pid.as_raw() as u32);
    }
    let scanned = if targets.comms.is_empty() {
        Vec::new()
    } else {
        scan_processes(proc)
    };
    let members = initial_members(&targets, scanned, scan_cgroups(&targets.cgroups));
    target_set.add_members(&members)?;

    let command_pid = launched.as_ref().map(|l| l.pid);
    let mut listener: Option<OwnedFd> = None;
    let tree_gone = match launched {
        Some(child) if filter.is_some() => {
            let dog = watchdog.as_ref().expect("a watchdog for seccomp");
            listener = Some(child.release_filtered(|fd| dog.give_listener(fd))?);
            Some(launch::watch_tree(Some(dog.pid))?)
        }
        Some(child) => {
            child.release()?;
            Some(launch::watch_tree(watchdog.as_ref().map(|w| w.pid))?)
        }
        None => None,
    };

    let start_ns = monotonic_ns();
    let (ring, counters) = (programs.ring()?, programs.counters()?);
    let logs = programs.logger();
    let (runtime, stops) = runtime_with_stops()?;
    let mut ledger = Ledger::new(Box::new(std::io::stdout()), config.json, start_ns);
    ledger.set_exporters(exporters.clone());
    eprintln!(
        "chaos: injecting into {} process(es){}{}; Ctrl-C to stop",
        members.len(),
        if command_pid.is_some() {
            " and the launched command's tree"
        } else {
            ""
        },
        if config.dry_run {
            " (dry run: nothing will be hit)"
        } else {
            ""
        }
    );
    let mut run = Run {
        config: &config,
        audit,
        ledger,
        targets: &target_set,
        denylist: &denylist,
        watchdog: watchdog.as_ref(),
        listener,
        start_ns,
    };
    let (stop, lost) = runtime.block_on(async {
        export::serve(server)?;
        let source = RingSource::new(ring, counters, logs, false)?;
        run.drive(source, stops, tree_gone).await
    })?;
    if let (Some(pid), true) = (command_pid, stop) {
        // The command chaos started outlived the faults; end it (only that pid, ours).
        let _ = kill(pid, Signal::SIGTERM);
    }
    let summary = run
        .ledger
        .finish(
            monotonic_ns().saturating_sub(start_ns),
            lost,
            config.dry_run,
        )
        .map_err(Error::Output)?;
    if let Some(log) = &mut run.audit {
        log.append(json!({
            "kind": "end",
            "injected": summary.injected,
            "confirmed": summary.confirmed,
            "unconfirmed": summary.unconfirmed,
        }))?;
    }
    drop(programs);
    exporters.borrow_mut().lost(lost);
    export::finish(&exporters);
    Ok(u8::from(!summary.unconfirmed.is_empty()))
}

/// The kernel side of the plan (the globals the programs read).
fn kernel_faults(config: &InjectConfig) -> (chaos_common::Trigger, chaos_common::LsmFault) {
    let mut trigger = chaos_common::Trigger::none();
    let mut lsm = chaos_common::LsmFault::none();
    match &config.plan {
        Plan::Trigger { nth, signal, .. } => {
            trigger = chaos_common::Trigger {
                nth: *nth,
                signal: *signal as u32,
                dry_run: u32::from(config.dry_run),
                count: 0,
                max_per_minute: config.max_per_minute,
                _pad: 0,
            };
        }
        Plan::Lsm { fault, .. } => lsm = *fault,
        Plan::Signals(_) | Plan::Seccomp { .. } => {}
    }
    (trigger, lsm)
}

/// The syscalls whose errors prove the plan's faults.
fn confirm_syscalls(plan: &Plan, maps: &mut FaultMaps) -> Result<(), Error> {
    match plan {
        Plan::Seccomp { nr, .. } => maps.confirm_syscall(nr.id() as u32)?,
        Plan::Lsm { family, .. } => {
            for nr in *family {
                maps.confirm_syscall(nr.id() as u32)?;
            }
        }
        Plan::Signals(_) | Plan::Trigger { .. } => {}
    }
    Ok(())
}
