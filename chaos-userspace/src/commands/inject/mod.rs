//! `chaos inject signal|errno`: faults aimed at a checked target set, each confirmed by the
//! kernel event that shows its effect, all of them ending when chaos ends.
//!
//! Order: the flags are checked into a fault spec, named pids are held to the denylist, the
//! kernel brought up with the fault's rules (disarmed) and the denylist in its maps; the
//! watchdog is forked while chaos is still single-threaded; the audit log opened; then
//! `-- CMD` is launched (under its seccomp filter when the fault needs one), the target set
//! filled, the injector started (its rules armed) and only then the command released.

mod args;

use std::path::Path;

use nix::sys::signal::{Signal, kill};

use super::{EXIT_ABORTED, EXIT_FAILURE, Failure, common::exporters};
use crate::{
    audit::{AuditLog, Entry, entry},
    cli::InjectCommand,
    driver::{Driver, Setup},
    export,
    inject::{
        injector::Injector,
        ledger::LedgerPrinter,
        machine::InjectMachine,
        seccomp,
        spec::{FaultAction, kernel_faults},
        watchdog::{Deciding, Watchdog},
    },
    kernel::layout::{FsyncHook, HookSet},
    launch,
    machine::{Input, Tick},
    session::{Session, SessionError, SessionPlan},
    sys::{
        clock::{Clock, monotonic_ns},
        stops::runtime_with_stops,
        trust::Owners,
    },
    target::{Targets, denylist::Denylist, proc::process, scan_processes},
};
pub use args::InjectConfig;

pub fn run(command: InjectCommand) -> Result<u8, Failure> {
    let config = match &command {
        InjectCommand::Signal(args) => InjectConfig::signal(args)?,
        InjectCommand::Errno(args) => InjectConfig::errno(args)?,
    };
    if let Some(program) = config.targets.command.first() {
        launch::resolve(program)?;
    }
    let proc = Path::new("/proc");
    let targets = config.targets.validate(proc)?;
    let denylist = Denylist::new(proc);
    for pid in &targets.pids {
        if let Some(p) = process(proc, *pid) {
            denylist
                .check_proc(proc, &p)
                .map_err(|reason| Failure::refused(format!("--pid {pid}: refused: {reason}")))?;
        }
    }
    if !config.seed_given && !config.json {
        eprintln!(
            "chaos: seed {} (--seed {} repeats this run)",
            config.seed, config.seed
        );
    }
    let (exporters, server) = exporters(&config.export)?;
    let kernel = kernel_faults(std::slice::from_ref(&config.fault), config.dry_run);
    let mut session = Session::open(&SessionPlan {
        hooks: HookSet::observe(FsyncHook::Off),
        ring_bytes: crate::bpf::DEFAULT_RING_BYTES,
        faults: kernel.clone(),
        deny_pids: Vec::new(),
        deny_comms: Vec::new(),
    })
    .map_err(|e| match e {
        SessionError::LsmRefused(source) => Failure::refused(format!(
            "the lsm backend: this kernel refused the BPF LSM program ({}); chaos doctor shows why; with -- CMD the seccomp backend works on any kernel",
            crate::sys::chain(&source)
        )),
        other => other.into(),
    })?;
    for comm in &targets.comms {
        session.targets.add_comm(*comm)?;
    }
    for rule in &targets.cgroups {
        session.targets.add_cgroup_rule(rule)?;
    }

    // Still single-threaded: fork the watchdog, then the command.
    let watchdog = kernel
        .watchdog
        .then(Watchdog::spawn)
        .transpose()
        .map_err(|e| Failure::refused(format!("cannot start the watchdog: {e}")))?;
    // The kernel took the programs: the audit log opens before anything acts.
    let owners = Owners::of_this_process();
    let mut audit = config
        .audit
        .as_deref()
        .map(|path| AuditLog::open(path, &owners))
        .transpose()?;
    if let Some(log) = &mut audit {
        if let Some(mirror) = exporters.audit_mirror() {
            log.mirror_to(mirror);
        }
        log.append(&Entry::Start(entry::Start {
            command: std::env::args().collect(),
            dry_run: config.dry_run,
            seed: Some(config.seed),
            faults: vec![config.fault.describe()],
            commands: Vec::new(),
            unsafe_files: Vec::new(),
            experiment: None,
        }))?;
    }
    let filter = match &config.fault.action {
        FaultAction::Seccomp { nr, rule } => Some(
            seccomp::Filter::notify_on(*nr, &rule.args)
                .map_err(|e| Failure::running(EXIT_FAILURE, e))?,
        ),
        _ => None,
    };
    let launched = if config.targets.command.is_empty() {
        None
    } else {
        launch::become_subreaper()?;
        Some(launch::launch_filtered(
            &config.targets.command,
            filter.as_ref(),
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
    let members = crate::target::enlist(&targets, scanned, |m| session.targets.add_members(m))?;

    let start_ns = monotonic_ns();
    let clock = Clock::now();
    let (runtime, stops) = runtime_with_stops()?;
    // The watchdog decides each intercepted call with the fault's rule from the first one on.
    let deciding = match &config.fault.action {
        FaultAction::Seccomp { nr, rule } => Some(Deciding {
            rule: rule.clone(),
            path_arg: crate::inject::names::path_arg(*nr),
        }),
        _ => None,
    };
    let mut machine = InjectMachine::new(
        Injector::new(
            vec![config.fault.clone()],
            config.dry_run,
            clock,
            jiff::tz::TimeZone::system(),
        ),
        LedgerPrinter::new(Box::new(std::io::stdout()), config.json, start_ns),
        config.max_duration,
    )
    .with_origin(crate::sys::host::Host::current(), clock, start_ns);
    let mut exporters = exporters;
    exporters.clock = Some(clock);
    let _context = runtime.enter();
    let source = session.ring_source()?;
    let Session {
        targets: target_set,
        faults: fault_maps,
        ..
    } = &mut session;
    let mut driver = Driver::new(
        Some(fault_maps),
        Some(target_set),
        Setup {
            audit,
            exporters,
            watchdog: watchdog.as_ref(),
            ..Setup::default()
        },
    );
    // The injector starts (its kernel rule armed) before the command runs an instruction.
    driver.feed(&mut machine, Input::Tick(Tick { ts_ns: start_ns }));
    let command_pid = launched.as_ref().map(|l| l.pid);
    let tree_gone = match launched {
        Some(child) if filter.is_some() => {
            let dog = watchdog.as_ref().expect("a watchdog for seccomp");
            if let Some(deciding) = &deciding {
                dog.decide(deciding)
                    .map_err(|e| Failure::running(EXIT_FAILURE, e))?;
            }
            driver.set_listener(child.release_filtered(|fd| dog.give_listener(fd))?);
            Some(launch::watch_tree(Some(dog.pid))?)
        }
        Some(child) => {
            child.release()?;
            Some(launch::watch_tree(watchdog.as_ref().map(|w| w.pid))?)
        }
        None => None,
    };
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
    let counters = runtime.block_on(async {
        export::serve(server)?;
        driver
            .run(&mut machine, source, stops, tree_gone)
            .await
            .map_err(|e| Failure::running(EXIT_FAILURE, e))
    });
    if let (Some(pid), true) = (command_pid, machine.stopped_early) {
        // The command chaos started outlived the faults; end it (only that pid, ours).
        let _ = kill(pid, Signal::SIGTERM);
    }
    let lost = counters.as_ref().map_or(0, |c| c.lost);
    let summary = machine.finish(monotonic_ns().saturating_sub(start_ns), lost);
    if let Some(log) = driver.audit() {
        let end = Entry::End(entry::End {
            injected: summary.injected,
            confirmed: summary.confirmed,
            unconfirmed: summary.unconfirmed.clone(),
            dry_run: config.dry_run,
            error: machine.failure.clone(),
            ..entry::End::default()
        });
        if let Err(e) = log.append(&end) {
            eprintln!("chaos: warning: {}", crate::sys::chain(&e));
        }
        super::common::say_chain(log);
    }
    driver.exporters.lost(lost);
    driver.exporters.finish();
    let failure = driver.failure.take();
    drop(driver);
    drop(session);
    // After a fault was sent, no error may read as "nothing injected".
    let code_after = if summary.injected > 0 {
        EXIT_ABORTED
    } else {
        2
    };
    counters.map_err(|e| Failure {
        code: code_after,
        ..e
    })?;
    if let Some(why) = failure {
        return Err(Failure {
            code: code_after,
            error: Box::new(super::Refusal(why)),
        });
    }
    if let Some(e) = machine.output_error.take() {
        return Err(Failure::running(EXIT_FAILURE, e));
    }
    Ok(u8::from(!summary.unconfirmed.is_empty()))
}
