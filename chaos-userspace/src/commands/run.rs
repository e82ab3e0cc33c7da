//! `chaos run FILE`: an experiment from start to verdict; `chaos run --replay REC` the same
//! verdict again from a recording.
//!
//! Order: the file is checked (errors name the line and key, exit 2), the blast radius
//! acknowledged, the service found and at least one instance allowed; the plan is printed;
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
    audit::{AuditLog, Entry, entry},
    cli::{AcceptRadius, RunArgs},
    driver::{
        self, Driver, Setup,
        console::Console,
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
    inject::spec::kernel_faults,
    kernel::layout::{FsyncHook, HookSet},
    machine::{
        Input, Tick,
        record::{End, Recording},
    },
    measure::{
        discover::{self, Found},
        service::{Ready, Service},
        sink::{EpisodeSink, TableEpisodes},
    },
    session::{Session, SessionError, SessionPlan},
    sys::{
        clock::{Clock, monotonic_ns},
        stops::runtime_with_stops,
    },
    target::{denylist::Denylist, proc::process},
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
    let source = std::fs::read_to_string(&file).map_err(|e| {
        Failure::refused(format!("{}:0:0: (file): cannot read: {e}", file.display()))
    })?;
    let experiment = experiment::check(&source, &file)?;
    let accepted = args.accept_blast_radius.map(|a| match a {
        AcceptRadius::Ci => Accepted::Ci,
        AcceptRadius::Lab => Accepted::Lab,
    });
    plan::authorize(&experiment, accepted, args.approve.as_deref()).map_err(Failure::refused)?;
    let outputs = outputs(&args, &experiment);
    let audit_path = outputs
        .audit
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT));
    let found = find_service(&experiment)?;
    let rules = HitRules::new(&experiment, &found.comm, &found.supervisors);
    hittable(&experiment, &found, &rules)?;
    print!(
        "{}",
        plan::describe(
            &experiment,
            &found,
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
    let selector = experiment.target.named.resolve(&experiment.path)?;
    discover::follow(&mut session.targets, &found, &selector)?;

    // The audit log opens once the kernel took the programs (a refusal leaves no record to
    // end) and before anything acts.
    let mut audit = open_audit(&audit_path)?;
    audit.append(&start_entry(&experiment, &found, &args))?;
    let verify = experiment
        .hypothesis
        .verify
        .as_ref()
        .map(|v| VerifyCommand {
            command: v.command.clone(),
            timeout: v.timeout,
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
        service: service(&experiment, &found),
    };
    let recorder = recorder(args.record.as_deref(), &header)?;
    let mut exporters = exporters;
    exporters.clock = Some(header.clock());
    let planned = u64::from(experiment.planned());
    let ready = experiment.target.ready.clone();
    let recovery_timeout = experiment.target.recovery_timeout;
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
            probe: Some((ready, recovery_timeout)),
            verify,
            recorder,
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
    if let Some(log) = driver.audit()
        && let Err(e) = log.append(&Runner::end_entry(&outcome))
    {
        eprintln!("chaos: warning: {}", crate::sys::chain(&e));
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
    let outputs = outputs(args, &experiment);
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
        let mut stats = crate::measure::stats::Stats::default();
        for e in &outcome.result.episodes {
            stats.add(e);
        }
        let file = std::fs::File::create(path).map_err(write)?;
        let mut file = std::io::BufWriter::new(file);
        stats
            .write_hdr_log(
                &mut file,
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_nanos(outcome.result.start_unix_ns),
                std::time::Duration::from_nanos(outcome.result.duration_ns),
            )
            .and_then(|()| file.flush())
            .map_err(write)?;
    }
    debug_assert!(outcome.verdict != Verdict::Aborted || outcome.code == EXIT_ABORTED);
    Ok(outcome.code)
}

fn write_file(path: &Path, text: &str, code: u8) -> Result<(), Failure> {
    std::fs::write(path, text).map_err(|e| {
        Failure::running(
            code.max(EXIT_FAILURE),
            Refusal(format!("{}: cannot write: {e}", path.display())),
        )
    })
}

/// The command line's outputs over the file's.
fn outputs(args: &RunArgs, experiment: &Experiment) -> Outputs {
    Outputs {
        json: args.json.clone().or(experiment.outputs.json.clone()),
        junit: args.junit.clone().or(experiment.outputs.junit.clone()),
        hdr_log: args.hdr_log.clone().or(experiment.outputs.hdr_log.clone()),
        audit: args.audit.clone().or(experiment.outputs.audit.clone()),
    }
}

fn find_service(experiment: &Experiment) -> Result<Found, Failure> {
    let t = &experiment.target;
    let selector = t.named.resolve(&experiment.path)?;
    let mut found = discover::find_live(&selector, t.comm_filter.as_deref())
        .map_err(|e| Failure::refused(format!("{}: target: {e}", experiment.path.display())))?;
    // Supervisors chaos can follow make the service explicit: replacements are what they
    // fork, never a process that merely has the name (the verify command may run the
    // service's program). Under pid 1 the name (or the cgroup) is how replacements are seen.
    if found.supervisors.iter().all(|&pid| pid > 1) {
        found.explicit = true;
    }
    Ok(found)
}

/// At least one instance may be hit; else every instance's reason, before anything loads.
fn hittable(experiment: &Experiment, found: &Found, rules: &HitRules) -> Result<(), Failure> {
    let proc = Path::new("/proc");
    let denylist = Denylist::new(proc);
    let check = |pid: u32| -> Option<(String, Result<(), String>)> {
        let p = process(proc, pid)?;
        let verdict = denylist
            .check_proc(proc, &p)
            .map_err(|d| d.to_string())
            .and_then(|()| rules.check(p.pid, &p.comm, p.exe.as_deref()));
        Some((p.comm, verdict))
    };
    let checked: Vec<(u32, String, Result<(), String>)> = found
        .instances
        .iter()
        .filter_map(|i| check(i.pid).map(|(comm, v)| (i.pid, comm, v)))
        .collect();
    if checked.iter().any(|(_, _, v)| v.is_ok()) {
        return Ok(());
    }
    let why = checked
        .iter()
        .map(|(pid, comm, v)| format!("{pid} ({comm}): {}", v.as_ref().unwrap_err()))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Failure::refused(format!(
        "{}: target: no instance may be hit: {why}",
        experiment.path.display()
    )))
}

/// The file's deny comms and the supervisors' names (the service's instances are what
/// kernel-fired faults may hit).
fn deny_comms(experiment: &Experiment, found: &Found) -> Vec<String> {
    let proc = Path::new("/proc");
    experiment
        .target
        .deny
        .comms
        .iter()
        .cloned()
        .chain(
            found
                .supervisors
                .iter()
                .filter_map(|&pid| process(proc, pid))
                .map(|p| p.comm)
                .filter(|comm| *comm != found.comm),
        )
        .collect()
}

fn service(experiment: &Experiment, found: &Found) -> Service {
    Service {
        comm: found.comm.clone(),
        supervisors: found.supervisors.clone(),
        explicit_supervisors: found.explicit,
        instances: found.instances.clone(),
        ready: experiment.target.ready.clone(),
        recovery_timeout_ns: experiment.target.recovery_timeout.as_nanos() as u64,
    }
}

fn open_audit(path: &Path) -> Result<AuditLog, Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::refused(format!(
                "{}: cannot create the audit log's directory: {e}",
                dir.display()
            ))
        })?;
    }
    Ok(AuditLog::open(path)?)
}

fn start_entry(experiment: &Experiment, found: &Found, args: &RunArgs) -> Entry {
    Entry::Start(entry::Start {
        command: std::env::args().collect(),
        dry_run: args.dry_run,
        seed: None,
        faults: experiment.faults.iter().map(|f| f.describe()).collect(),
        experiment: Some(entry::ExperimentStart {
            experiment: experiment.id.clone(),
            file: experiment.path.display().to_string(),
            hypothesis: experiment.hypothesis.statement.clone(),
            blast_radius: experiment.radius.name().into(),
            approved: args.approve.clone(),
            target: entry::TargetEntry {
                comm: found.comm.clone(),
                supervisors: found.supervisors.clone(),
                instances: found.instances.iter().map(|i| i.pid).collect(),
            },
        }),
    })
}
