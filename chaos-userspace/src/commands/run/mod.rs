//! `chaos run FILE`: an experiment from start to verdict; `chaos run --replay REC` the same
//! verdict again from a recording.
//!
//! Order: the file is checked (errors name the line and key, exit 2; a power_loss fault
//! on a kernel without dm-flakey is refused here), the blast radius acknowledged, the
//! service found (a power_loss fault's watchdog forked and its disk set up, the service
//! moved onto it and found again: `power`) and at least one instance allowed; the plan is
//! printed;
//! the kernel brought up with every kernel-fired fault disarmed and the service in the
//! target set; the audit log opened; the verify command must pass before anything is
//! injected. Then the runner (`experiment::runner`) is driven until it stops: baseline ->
//! injection -> cool-down -> the last verify; the verdict and the outputs follow.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use super::{
    EXIT_ABORTED, EXIT_FAILURE, Failure, Refusal,
    common::{export_config, exporters, recorder},
};
use crate::{
    audit::{Entry, entry},
    cli::{AcceptRadius, RunArgs},
    driver::{
        self, Driver, Setup,
        console::Console,
        probe::Probe,
        verify::{self as verify_cmd, VerifyCommand},
    },
    event::KernelCounters,
    experiment::{
        self, Experiment, Outputs,
        plan::{self, Accepted},
        record::{self as run_record, RunHeader},
        rules::HitRules,
        runner::{RunOutcome, RunPhase, Runner},
        verdict::{self, Verdict},
    },
    export,
    inject::{spec::kernel_faults, watchdog::Watchdog},
    kernel::layout::{FsyncHook, HookSet},
    machine::{
        Input, Tick,
        record::{End, Recording},
    },
    measure::{
        discover::{self},
        service::Ready,
        sink::{EpisodeSink, TableEpisodes},
    },
    session::{Session, SessionError, SessionPlan},
    sys::{
        clock::{Clock, monotonic_ns},
        stops::runtime_with_stops,
    },
};

mod power;
mod prepare;

use prepare::{
    Trust, Users, deny_comms, find_service, hittable, open_audit, outputs, service, start_entry,
};

const DEFAULT_AUDIT: &str = "/var/log/chaos/audit.jsonl";

pub fn run(args: RunArgs) -> Result<u8, Failure> {
    if let Some(recording) = &args.replay {
        return replay(recording, &args);
    }
    let file = args
        .file
        .clone()
        .expect("clap requires FILE without --replay");
    // Nothing is read from a file others could have changed.
    let mut trust = Trust::new(args.allow_unsafe_file);
    trust.check(&file, "the experiment file")?;
    let source = std::fs::read_to_string(&file).map_err(|e| {
        Failure::refused(format!("{}:0:0: (file): cannot read: {e}", file.display()))
    })?;
    let experiment = experiment::check(&source, &file)?;
    power::preflight(&experiment)?;
    trust.check_commands(&experiment)?;
    let users = Users::lookup(&experiment)?;
    let commands = users.commands(&experiment);
    let accepted = args.accept_blast_radius.map(|a| match a {
        AcceptRadius::Ci => Accepted::Ci,
        AcceptRadius::Lab => Accepted::Lab,
    });
    plan::authorize(&experiment, accepted, args.approve.as_deref()).map_err(Failure::refused)?;
    let outputs = outputs(&args, &experiment)?;
    let audit_path = outputs
        .audit
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT));
    let (found, selector) = find_service(&experiment)?;
    let rules = HitRules::new(&experiment, &found.comm, &found.supervisors);
    // Every refusal before the power-loss disk moves the service (which kills it once).
    let may_hit = hittable(&experiment, &found, &rules)?;
    let own: Vec<&Path> = [
        &outputs.json,
        &outputs.junit,
        &outputs.hdr_log,
        &args.record,
    ]
    .into_iter()
    .flatten()
    .map(PathBuf::as_path)
    .chain([audit_path.as_path()])
    .collect();
    let freeze = experiment
        .power_fault()
        .map(|_| power::check(&experiment, &found, &selector, &own))
        .transpose()?;
    // Forked while chaos is single-threaded: it tears the power-loss disk down if chaos
    // is killed.
    let watchdog = (freeze.is_some() && !args.dry_run)
        .then(Watchdog::spawn)
        .transpose()
        .map_err(|e| Failure::refused(format!("cannot start the watchdog: {e}")))?;
    let (disk, found, selector) = match freeze {
        Some(cgroup) if !args.dry_run => {
            let (disk, found, selector) =
                power::set_up(&experiment, &found, cgroup, watchdog.as_ref())?;
            (Some(disk), found, selector)
        }
        _ => (None, found, selector),
    };
    // The instances are the disk's now: what a fault may hit, again.
    let may_hit = match &disk {
        Some(_) => hittable(&experiment, &found, &rules)?,
        None => may_hit,
    };
    print!(
        "{}",
        plan::describe(
            &experiment,
            &found,
            &may_hit,
            &commands,
            &audit_path,
            args.dry_run,
            &jiff::ZonedDateTime::now()
        )
    );
    let _ = std::io::stdout().flush();

    // The kernel: measurement hooks plus what the faults need; kernel faults disarmed until
    // the injection phase.
    let mut export_config = export_config(&args.export)?;
    export_config
        .attributes
        .push(("chaos.experiment.id".into(), experiment.id.clone()));
    let (exporters, server) = exporters(&export_config)?;
    let kernel = kernel_faults(&experiment.faults, false);
    let mut session = Session::open(&SessionPlan {
        hooks: HookSet {
            reap: true,
            listen: experiment.target.ready == Ready::Listen,
            ..HookSet::observe(FsyncHook::Fs)
        },
        ring_bytes: crate::bpf::DEFAULT_RING_BYTES,
        faults: kernel,
        deny_pids: experiment
            .target
            .deny
            .pids
            .iter()
            .chain(&found.supervisors)
            .copied()
            .collect(),
        deny_comms: deny_comms(&experiment, &found),
    })
    .map_err(|e| match e {
        SessionError::LsmRefused(source) => Failure::refused(format!(
            "{}: an errno fault needs BPF LSM, and this kernel refused it ({}); chaos doctor shows why",
            experiment.path.display(),
            crate::sys::chain(&source)
        )),
        other => other.into(),
    })?;
    discover::follow(&mut session.targets, &found, &selector)?;

    // The audit log opens once the kernel took the programs (a refusal leaves no record to
    // end) and before anything acts.
    let mut audit = open_audit(&audit_path, trust.owners())?;
    if let Some(mirror) = exporters.audit_mirror() {
        audit.mirror_to(mirror);
    }
    let overridden = std::mem::take(&mut trust.overridden);
    audit.append(&start_entry(
        &experiment,
        &found,
        &args,
        commands,
        overridden,
    ))?;
    if let Some(d) = &disk {
        audit.append(&Entry::Disk(d.set_up_entry()))?;
    }
    let verify = experiment
        .hypothesis
        .verify
        .as_ref()
        .map(|v| VerifyCommand {
            command: v.command.clone(),
            timeout: v.timeout,
            user: users.verify.clone(),
        });
    if let Some(v) = &verify {
        let result = verify_cmd::run_blocking(v);
        audit.append(&Entry::Verify(entry::Verify {
            when: entry::VerifyWhen::Before,
            episode: None,
            passed: result.is_ok(),
            detail: result.as_ref().err().cloned(),
        }))?;
        if let Err(why) = result {
            let message = format!(
                "{}: hypothesis.verify fails before any fault ({why}): nothing was injected",
                experiment.path.display()
            );
            audit.append(&Entry::End(entry::End {
                error: Some(message.clone()),
                ..entry::End::default()
            }))?;
            return Err(Failure::refused(message));
        }
    }
    if args.dry_run {
        audit.append(&Entry::End(entry::End {
            dry_run: true,
            ..entry::End::default()
        }))?;
        println!(
            "\ndry run: the file is valid, the service was found, the kernel took the programs{}; nothing was injected",
            if verify.is_some() {
                ", verify passed"
            } else {
                ""
            }
        );
        return Ok(0);
    }

    let clock = Clock::now();
    let start_ns = monotonic_ns();
    let tz = jiff::tz::TimeZone::system();
    let header = RunHeader {
        version: run_record::VERSION,
        start_ns,
        start_unix_ns: clock.unix_ns(start_ns),
        tz: tz.iana_name().map(str::to_string),
        chaos_pid: std::process::id(),
        file: experiment.path.clone(),
        source,
        service: service(&experiment, &found, &selector),
        host: Some(crate::sys::host::Host::current()),
    };
    let recorder = recorder(args.record.as_deref(), &header)?;
    let mut exporters = exporters;
    exporters.clock = Some(header.clock());
    let planned = u64::from(experiment.planned());
    let ready = experiment.target.ready.clone();
    let recovery_timeout = experiment.target.recovery_timeout;
    let ports = header.service.ports.clone();
    let mut runner = Runner::new(experiment.clone(), header);
    let (runtime, stops) = runtime_with_stops()?;
    let _context = runtime.enter();
    let source = session.ring_source()?;
    let Session {
        targets, faults, ..
    } = &mut session;
    let mut driver = Driver::new(
        Some(faults),
        Some(targets),
        Setup {
            audit: Some(audit),
            exporters,
            console: Console::with_bar(planned, RunPhase::Baseline.name()),
            probe: Some(Probe {
                ready,
                limit: recovery_timeout,
                user: users.ready.clone(),
                ports,
            }),
            verify,
            recorder,
            titles: rules.needs_titles(),
            unit: selector.unit_info().cloned(),
            watchdog: watchdog.as_ref(),
            power: disk.as_ref().map(|d| &d.disk),
            ..Setup::default()
        },
    );
    driver.feed(&mut runner, Input::Tick(Tick { ts_ns: start_ns }));
    let counters = runtime.block_on(async {
        export::serve(server)?;
        driver
            .run(&mut runner, source, stops, None)
            .await
            .map_err(|e| Failure::running(EXIT_FAILURE, e))
    });
    let injected = runner.injected();
    let failure = driver.failure.clone();
    let counters = match counters {
        Ok(c) => c,
        Err(e) if injected == 0 => return Err(e),
        Err(e) => {
            // Faults were sent: the run ends as aborted, with its result.
            driver.feed(
                &mut runner,
                Input::Stop(crate::machine::StopCause::Failure(e.one_line())),
            );
            KernelCounters::default()
        }
    };
    let end = End {
        ts_ns: monotonic_ns(),
        counters,
    };
    driver.end_recording(&end);
    let outcome = runner.finish(&end);
    // The service is killed once more to unmount its disk: after the last verify, before
    // the last entry.
    let teardown = disk.as_ref().and_then(|d| d.tear_down());
    if let Some(log) = driver.audit() {
        if let Some(e) = teardown
            && let Err(e) = log.append(&Entry::Disk(e))
        {
            eprintln!("chaos: warning: {}", crate::sys::chain(&e));
        }
        if let Err(e) = log.append(&Runner::end_entry(&outcome)) {
            eprintln!("chaos: warning: {}", crate::sys::chain(&e));
        }
        super::common::say_chain(log);
    }
    let mut exporters = std::mem::take(&mut driver.exporters);
    drop(driver);
    drop(session);
    exporters.lost(end.counters.lost);
    exporters.finish();
    // Before the first fault, a failure is "nothing injected".
    if let (Some(why), 0) = (&failure, outcome.result.injected) {
        return Err(Failure::refused(why.clone()));
    }
    conclude(&experiment, &outcome, &outputs)
}

/// `chaos run --replay REC`: the runner rebuilt from the recording's header and fed its
/// inputs; the verdict and the outputs as live.
fn replay(path: &Path, args: &RunArgs) -> Result<u8, Failure> {
    let recording = Recording::<RunHeader>::open(path)?;
    let header = recording.header;
    let experiment = experiment::check(&header.source, &header.file)?;
    let outputs = outputs(args, &experiment)?;
    let export = export_config(&args.export)?;
    if export.prometheus.is_some() {
        return Err(Failure::refused(
            "--prometheus serves while a run is live; a replay ends at once: use --textfile or --otlp",
        ));
    }
    let (mut exporters, _) = exporters(&export)?;
    exporters.clock = Some(header.clock());
    let mut runner = Runner::new(experiment.clone(), header);
    let end = driver::replay(
        &mut runner,
        recording.inputs,
        recording.end,
        path,
        &mut exporters,
    );
    let outcome = runner.finish(&end);
    exporters.finish();
    conclude(&experiment, &outcome, &outputs)
}

/// The verdict and the table on stdout, the result files; the exit code.
fn conclude(
    experiment: &Experiment,
    outcome: &RunOutcome,
    outputs: &Outputs,
) -> Result<u8, Failure> {
    let write = |e: std::io::Error| Failure::running(outcome.code.max(EXIT_FAILURE), e);
    let mut out = std::io::stdout();
    verdict::write_verdict(
        &mut out,
        &experiment.hypothesis.statement,
        outcome.verdict,
        outcome.result.abort.as_deref(),
        &outcome.clauses,
    )
    .map_err(write)?;
    TableEpisodes(&mut out)
        .summary(&outcome.result.summary)
        .map_err(write)?;
    crate::report::write_in_place(&mut out, &outcome.result).map_err(write)?;
    crate::report::write_faults(&mut out, &outcome.result).map_err(write)?;
    if let Some(path) = &outputs.json {
        let text = serde_json::to_string_pretty(&outcome.result).unwrap_or_default() + "\n";
        write_file(path, &text, outcome.code)?;
    }
    if let Some(path) = &outputs.junit {
        let xml = verdict::junit(
            experiment,
            &outcome.clauses,
            outcome.result.abort.as_deref(),
            std::time::Duration::from_nanos(outcome.result.duration_ns),
        );
        write_file(path, &xml, outcome.code)?;
    }
    if let Some(path) = &outputs.hdr_log {
        use crate::measure::stats;
        let mut all = stats::Stats::default();
        for e in &outcome.result.episodes {
            all.add(e);
        }
        let r = &outcome.result;
        let span = stats::LogSpan::new(
            r.start_unix_ns,
            r.start_ns,
            r.duration_ns,
            outputs.hdr_interval.unwrap_or(stats::LogSpan::SLICE),
        );
        stats::write_log_file(path, &all, &span).map_err(write)?;
    }
    debug_assert!(outcome.verdict != Verdict::Aborted || outcome.code == EXIT_ABORTED);
    Ok(outcome.code)
}

fn write_file(path: &Path, text: &str, code: u8) -> Result<(), Failure> {
    crate::sys::trust::create_output(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| {
            Failure::running(
                code.max(EXIT_FAILURE),
                Refusal(format!("{}: cannot write: {e}", path.display())),
            )
        })
}
