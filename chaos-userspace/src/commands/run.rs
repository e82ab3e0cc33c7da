//! `chaos run FILE`: an experiment from start to verdict.
//!
//! Order: the file is checked (errors name the line and key, exit 2), the blast radius
//! acknowledged, the service found and at least one instance allowed; the plan is printed and
//! the audit log opened; the kernel programs are loaded with every kernel-fired fault
//! disarmed, then attached, and the service put in the target set. The verify command must
//! pass before anything is injected. Then baseline (measure only) -> injection -> cool-down
//! (until the last recovery, then `phases.cooldown`), the final verify, the verdict, the
//! outputs.
//!
//! Signals wait for a live instance and for the previous recovery to end, so episodes do not
//! overlap. A guard's abort disarms the kernel's rules at once, sends nothing more, ends the
//! measurement and exits 3.

use std::{
    cell::RefCell,
    collections::HashMap,
    io::Write as _,
    path::{Path, PathBuf},
    rc::Rc,
    time::Duration,
};

use chaos_common::fault as fault_kind;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::AbortHandle, time::Instant};

use super::{
    common::{Stops, monotonic_ns, runtime_with_stops},
    measure::{follow_service, spawn_probe},
};
use crate::{
    audit::AuditLog,
    bpf::{
        DEFAULT_RING_BYTES, FaultMaps, Hook, Programs, TargetSet, hooks, lsm_program,
        ring::RingSource,
    },
    cli::{AcceptRadius, RunArgs},
    error::Error,
    event::{Event, KernelCounters},
    experiment::{
        self, BlastRadius, Experiment, FaultAction,
        guards::{Decision, GuardState},
        result::{Baseline, FaultEntry, RunResult},
        verdict::{self, Clause, Evidence, Verdict},
        window,
    },
    export::{self, ExportConfig},
    inject::{
        Draws,
        denylist::{DENIED_COMMS, Denylist},
        pick,
        report::{Fault as FaultRecord, Ledger},
        signal::Pinned,
    },
    kernel::{
        btf::KernelBtf,
        layout::{Ext4Hooks, FsyncHook, HookSet, discover},
        preflight,
    },
    measure::{
        Measurement, Outputs as MeasureOutputs,
        discover::{Found, Proc, find, process, processes},
        episode::{Episode, Outcome},
        record::{End, Header, Input, ReadyMark, Tick},
        report::{MeasureSummary, Report, TableReport},
        service::{Ready, Service},
    },
    source::EventSource,
    target::{comm_key, scan_cgroups},
};

/// How often time moves the experiment on when no event comes.
const TICK: Duration = Duration::from_millis(100);
const DEFAULT_AUDIT: &str = "/var/log/chaos/audit.jsonl";

pub fn run(args: RunArgs) -> Result<u8, Error> {
    let experiment = experiment::load(&args.file)?;
    authorize(
        &experiment,
        args.accept_blast_radius,
        args.approve.as_deref(),
    )?;
    let outputs = experiment::Outputs {
        json: args.json.or(experiment.outputs.json.clone()),
        junit: args.junit.or(experiment.outputs.junit.clone()),
        hdr_log: args.hdr_log.or(experiment.outputs.hdr_log.clone()),
        audit: args.audit.or(experiment.outputs.audit.clone()),
    };
    let proc = Path::new("/proc");
    let denylist = Denylist::new(proc);
    let mut found = find_service(&experiment, proc)?;
    // Supervisors chaos can follow make the service explicit: replacements are what they
    // fork, never a process that merely has the name (the verify command may run the
    // service's program). Under pid 1 the name (or the cgroup) is how replacements are seen.
    if found.supervisors.iter().all(|&pid| pid > 1) {
        found.explicit = true;
    }
    let rules = Rules {
        experiment: &experiment,
        denylist: &denylist,
        supervisors: found.supervisors.clone(),
        comm: found.comm.clone(),
    };
    let hittable: Vec<&u32> = found
        .instances
        .iter()
        .map(|i| &i.pid)
        .filter(|pid| process(proc, **pid).is_some_and(|p| rules.check(&p).is_ok()))
        .collect();
    if hittable.is_empty() {
        let why = found
            .instances
            .iter()
            .filter_map(|i| process(proc, i.pid))
            .map(|p| format!("{} ({}): {}", p.pid, p.comm, rules.check(&p).unwrap_err()))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Usage(format!(
            "{}: target: no instance may be hit: {why}",
            experiment.path.display()
        )));
    }
    print_plan(&experiment, &found, &outputs, args.dry_run);

    // The kernel: measurement hooks plus what the faults need; kernel faults disarmed until
    // the injection phase.
    let env = preflight::check()?;
    let mut export_config = ExportConfig::from_args(&args.export)?;
    export_config
        .attributes
        .push(("chaos.experiment.id".into(), experiment.id.clone()));
    let (exporters, server) = export::shared(&export_config)?;
    let btf = KernelBtf::load(&env.btf_path)?;
    let trigger_fault = experiment.faults.iter().find_map(|f| match &f.action {
        FaultAction::Trigger { nr, nth, signal } => Some((f, *nr, *nth, *signal)),
        _ => None,
    });
    let errno_fault = experiment.faults.iter().find_map(|f| match &f.action {
        FaultAction::Errno { fault, family, .. } => Some((f, *fault, *family)),
        _ => None,
    });
    let set = HookSet {
        reap: true,
        listen: experiment.target.ready == Ready::Listen,
        syscall_errors: errno_fault.is_some(),
        trigger: trigger_fault.map(|(_, nr, ..)| nr),
        signal_deliver: trigger_fault.is_some(),
        ..HookSet::observe(FsyncHook::Fs)
    };
    let layout = discover(&env.tracefs, &btf, set)?;
    let ext4 = Ext4Hooks::probe(&env.tracefs);
    let caps = experiment.radius.caps();
    let trigger = match trigger_fault {
        Some((f, _, nth, signal)) => chaos_common::Trigger {
            nth,
            signal: signal as u32,
            dry_run: 0,
            count: f.count,
            max_per_minute: caps.max_per_minute,
            _pad: 0,
        },
        None => chaos_common::Trigger::none(),
    };
    let lsm = errno_fault.map_or(chaos_common::LsmFault::none(), |(_, fault, _)| fault);
    let mut programs = Programs::load_with_faults(&layout, DEFAULT_RING_BYTES, &trigger, &lsm)?;
    let mut fault_maps = programs.fault_maps()?;
    for kind in [fault_kind::TRIGGER_SIGNAL, fault_kind::LSM_ERRNO] {
        fault_maps.set_armed(kind, false)?;
    }
    fill_denials(&mut fault_maps, &denylist, &experiment, &found)?;
    if let Some((_, _, family)) = errno_fault {
        for nr in family {
            fault_maps.confirm_syscall(nr.id() as u32)?;
        }
    }
    let mut attach: Vec<Hook> = hooks(set, &ext4);
    if let Some((_, fault, _)) = errno_fault {
        attach.extend(lsm_program(fault.hook));
    }
    programs.attach(&attach).map_err(|e| match (&errno_fault, &e) {
        (Some(_), crate::bpf::BpfError::Load { .. }) => Error::Usage(format!(
            "{}: an errno fault needs BPF LSM, and this kernel refused it ({}); chaos doctor shows why",
            experiment.path.display(),
            crate::error::chain(&e)
        )),
        _ => Error::from(e),
    })?;
    let mut target_set = programs.target_set()?;
    follow_service(&mut target_set, &found, &experiment.target.selector)?;

    // The audit log opens once the kernel took the programs (a refusal leaves no record to
    // end) and before anything acts.
    let audit_path = outputs
        .audit
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT));
    if let Some(dir) = audit_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            what: "cannot create the audit log's directory",
            source,
        })?;
    }
    let mut audit = AuditLog::open(&audit_path)?;
    audit.append(json!({
        "kind": "start",
        "experiment": experiment.id,
        "file": experiment.path.display().to_string(),
        "hypothesis": experiment.hypothesis.statement,
        "blast_radius": experiment.radius.name(),
        "approved": args.approve,
        "dry_run": args.dry_run,
        "target": {"comm": found.comm, "supervisors": found.supervisors, "instances": found.instances.iter().map(|i| i.pid).collect::<Vec<_>>()},
        "faults": experiment.faults.iter().map(|f| f.describe()).collect::<Vec<_>>(),
    }))?;

    let (runtime, stops) = runtime_with_stops()?;
    let verify = experiment.hypothesis.verify.clone();
    if let Some(v) = &verify {
        let result = runtime.block_on(run_verify(v.command.clone(), v.timeout));
        audit.append(json!({"kind": "verify", "when": "before", "passed": result.is_ok(), "detail": result.as_ref().err()}))?;
        if let Err(why) = result {
            let message = format!(
                "{}: hypothesis.verify fails before any fault ({why}): nothing was injected",
                experiment.path.display()
            );
            audit.append(json!({"kind": "end", "injected": 0, "error": message}))?;
            return Err(Error::Usage(message));
        }
    }
    if args.dry_run {
        audit.append(json!({"kind": "end", "dry_run": true, "injected": 0}))?;
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

    let header = Header::starting_now(Service {
        comm: found.comm.clone(),
        supervisors: found.supervisors.clone(),
        explicit_supervisors: found.explicit,
        instances: found.instances.clone(),
        ready: experiment.target.ready.clone(),
        recovery_timeout_ns: recovery_timeout(&experiment).as_nanos() as u64,
    });
    let (start_ns, start_unix_ns) = (header.start_ns, header.start_unix_ns);
    let collected = Rc::new(RefCell::new(Collected::default()));
    let mut measurement =
        Measurement::new(header, Box::new(Collect(collected.clone())), None, None)
            .map_err(Error::Output)?;
    measurement.set_exporters(exporters.clone());
    let (ring, counters) = (programs.ring()?, programs.counters()?);
    let logs = programs.logger();
    let mut runner = Runner::new(
        &experiment,
        measurement,
        collected,
        audit,
        fault_maps,
        &target_set,
        rules,
        start_ns,
        exporters.clone(),
    );
    let counters = runtime.block_on(async {
        export::serve(server)?;
        let source = RingSource::new(ring, counters, logs, true)?;
        runner.drive(source, stops).await
    })?;
    let end = End {
        ts_ns: monotonic_ns(),
        counters,
    };
    let code = runner.finish(end, &outputs, start_unix_ns);
    drop(programs);
    export::finish(&exporters);
    code
}

/// Higher blast radii need the operator's explicit word.
fn authorize(
    experiment: &Experiment,
    accept: Option<AcceptRadius>,
    approve: Option<&str>,
) -> Result<(), Error> {
    let caps = experiment.radius.caps();
    let what = format!(
        "blast_radius {} (at most {} faults, {} a minute)",
        experiment.radius.name(),
        caps.max_faults,
        caps.max_per_minute
    );
    if let Some(id) = approve
        && id != experiment.id
    {
        return Err(Error::Usage(format!(
            "--approve {id}: this experiment's id is {}",
            experiment.id
        )));
    }
    let accepted = match accept {
        Some(AcceptRadius::Ci) => Some(BlastRadius::Ci),
        Some(AcceptRadius::Lab) => Some(BlastRadius::Lab),
        None => None,
    };
    match experiment.radius {
        BlastRadius::Local => Ok(()),
        BlastRadius::Ci | BlastRadius::Lab if accepted == Some(experiment.radius) => Ok(()),
        BlastRadius::Ci | BlastRadius::Lab => Err(Error::Usage(format!(
            "{what} needs --accept-blast-radius {}",
            experiment.radius.name()
        ))),
        BlastRadius::Canary if approve.is_some() => Ok(()),
        BlastRadius::Canary => Err(Error::Usage(format!(
            "{what} needs --approve {}",
            experiment.id
        ))),
    }
}

fn find_service(experiment: &Experiment, proc: &Path) -> Result<Found, Error> {
    let t = &experiment.target;
    let procs = processes(proc);
    let in_cgroup = match &t.selector {
        crate::measure::discover::Selector::Cgroup(rule) => {
            scan_cgroups(std::slice::from_ref(rule))
        }
        _ => Vec::new(),
    };
    find(&t.selector, t.comm_filter.as_deref(), &procs, &in_cgroup)
        .map_err(|e| Error::Usage(format!("{}: target: {e}", experiment.path.display())))
}

fn recovery_timeout(experiment: &Experiment) -> Duration {
    experiment.target.recovery_timeout
}

/// What a fault may hit: an instance of the service (not a supervisor), allowed, not denied.
struct Rules<'a> {
    experiment: &'a Experiment,
    denylist: &'a Denylist,
    supervisors: Vec<u32>,
    comm: String,
}

impl Rules<'_> {
    fn check(&self, p: &Proc) -> Result<(), String> {
        self.denylist
            .check_proc(Path::new("/proc"), p)
            .map_err(|d| d.to_string())?;
        if self.supervisors.contains(&p.pid) {
            return Err("a supervisor of the service".into());
        }
        if p.comm != self.comm {
            return Err(format!("not the service ({})", self.comm));
        }
        let t = &self.experiment.target;
        let exe_in = |list: &[PathBuf]| p.exe.as_ref().is_some_and(|e| list.contains(e));
        if t.deny.pids.contains(&p.pid) || t.deny.comms.contains(&p.comm) || exe_in(&t.deny.exes) {
            return Err("on the experiment's deny list".into());
        }
        if let Some(allow) = &t.allow
            && !(allow.comms.contains(&p.comm) || exe_in(&allow.exes))
        {
            return Err("not on the experiment's allow list".into());
        }
        Ok(())
    }
}

/// The kernel's deny maps: the built-in denylist, the file's additions, and the supervisors
/// (the service's instances are what kernel-fired faults may hit).
fn fill_denials(
    maps: &mut FaultMaps,
    denylist: &Denylist,
    experiment: &Experiment,
    found: &Found,
) -> Result<(), Error> {
    for pid in denylist
        .pids()
        .chain(experiment.target.deny.pids.iter().copied())
        .chain(found.supervisors.iter().copied())
    {
        maps.deny_pid(pid)?;
    }
    let supervisor_comms: Vec<String> = found
        .supervisors
        .iter()
        .filter_map(|&pid| process(Path::new("/proc"), pid))
        .map(|p| p.comm)
        .filter(|comm| *comm != found.comm)
        .collect();
    let comms = DENIED_COMMS
        .iter()
        .map(|c| c.to_string())
        .chain(experiment.target.deny.comms.iter().cloned())
        .chain(supervisor_comms);
    for comm in comms {
        if let Ok(key) = comm_key(&comm) {
            maps.deny_comm(key)?;
        }
    }
    Ok(())
}

fn print_plan(
    experiment: &Experiment,
    found: &Found,
    outputs: &experiment::Outputs,
    dry_run: bool,
) {
    let caps = experiment.radius.caps();
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "experiment {}{}",
        experiment.id,
        if dry_run { " (dry run)" } else { "" }
    ));
    if let Some(d) = &experiment.description {
        line(format!("  {d}"));
    }
    line(format!("hypothesis: {}", experiment.hypothesis.statement));
    line(format!(
        "blast radius: {} (at most {} faults, {} a minute each)",
        experiment.radius.name(),
        caps.max_faults,
        caps.max_per_minute
    ));
    line(format!(
        "target: {} (instances {}; supervisor(s) {}); ready = {}; recovery timeout {}",
        found.comm,
        found
            .instances
            .iter()
            .map(|i| i.pid.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        found
            .supervisors
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        experiment.target.ready.describe(),
        humantime::format_duration(recovery_timeout(experiment))
    ));
    let now = jiff::ZonedDateTime::now();
    for f in &experiment.faults {
        let windows = if f.windows.is_empty() {
            String::new()
        } else {
            let state = match window::until_open(&f.windows, &now) {
                Some(d) if d.is_zero() => "open now".to_string(),
                Some(d) => format!(
                    "opens in {}",
                    humantime::format_duration(Duration::from_secs(d.as_secs()))
                ),
                None => "never opens".to_string(),
            };
            format!(
                "; windows {} ({state})",
                f.windows
                    .iter()
                    .map(|w| w.text())
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        };
        line(format!(
            "fault {}: {} (seed {}){windows}",
            f.index,
            f.describe(),
            f.seed
        ));
    }
    let g = &experiment.guards;
    let mut guards = Vec::new();
    if let Some(t) = g.episode_timeout {
        guards.push(format!("episode timeout {}", humantime::format_duration(t)));
    }
    if let Some(k) = g.crash_rate_factor {
        guards.push(format!("crash rate over {k} x baseline"));
    }
    if let Some(n) = g.max_consecutive_failures {
        guards.push(format!("{n} failed recoveries in a row"));
    }
    line(format!(
        "guards: {}",
        if guards.is_empty() {
            "none".into()
        } else {
            guards.join(", ")
        }
    ));
    let p = &experiment.phases;
    line(format!(
        "phases: baseline {}, injection, cool-down {} (at most {} in all)",
        humantime::format_duration(p.baseline),
        humantime::format_duration(p.cooldown),
        humantime::format_duration(p.max_duration)
    ));
    line(format!(
        "audit log: {}",
        outputs
            .audit
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_AUDIT))
            .display()
    ));
    print!("{out}");
    let _ = std::io::stdout().flush();
}

/// Runs the verify command once: Ok when it exits 0 within `timeout`.
async fn run_verify(command: String, timeout: Duration) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "`{command}` took longer than {}",
            humantime::format_duration(timeout)
        )),
        Ok(Err(e)) => Err(format!("`{command}`: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!("`{command}` {}: {}", out.status, last.trim()))
        }
    }
}

#[derive(Default)]
struct Collected {
    ended: Vec<Episode>,
    summary: Option<MeasureSummary>,
}

/// The measurement's report, kept for the runner.
struct Collect(Rc<RefCell<Collected>>);

impl Report for Collect {
    fn episode(&mut self, episode: &Episode) -> std::io::Result<()> {
        self.0.borrow_mut().ended.push(episode.clone());
        Ok(())
    }

    fn summary(&mut self, summary: &MeasureSummary) -> std::io::Result<()> {
        self.0.borrow_mut().summary = Some(summary.clone());
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Baseline,
    Injection,
    Cooldown,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Baseline => "baseline",
            Phase::Injection => "injection",
            Phase::Cooldown => "cool-down",
        }
    }
}

/// One signal fault's schedule.
struct Schedule {
    fault: usize,
    signal: Signal,
    interval: Duration,
    jitter: Duration,
    left: u32,
    next: Option<Instant>,
    draws: Draws,
}

struct Runner<'a> {
    experiment: &'a Experiment,
    measurement: Measurement,
    collected: Rc<RefCell<Collected>>,
    episodes: Vec<Episode>,
    ledger: Ledger,
    audit: AuditLog,
    maps: FaultMaps,
    targets: &'a TargetSet,
    rules: Rules<'a>,
    start_ns: u64,
    phase: Phase,
    baseline_crashes: u64,
    guards: GuardState,
    /// Pids chaos signalled (their deaths are not crashes).
    signalled: HashMap<u32, u64>,
    schedules: Vec<Schedule>,
    /// Kernel-fired faults reported, by kind.
    kernel_fired: [u32; fault_kind::KINDS as usize],
    armed: [bool; fault_kind::KINDS as usize],
    abort: Option<String>,
    verify_after: (u32, u32, Option<String>),
    verify_end: Option<Result<(), String>>,
    bar: ProgressBar,
    cool_until: Option<Instant>,
    exporters: export::Shared,
}

impl<'a> Runner<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        experiment: &'a Experiment,
        measurement: Measurement,
        collected: Rc<RefCell<Collected>>,
        audit: AuditLog,
        maps: FaultMaps,
        targets: &'a TargetSet,
        rules: Rules<'a>,
        start_ns: u64,
        exporters: export::Shared,
    ) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(u64::from(experiment.planned())),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{elapsed_precise}] [{bar:24}] {pos}/{len} faults  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(Phase::Baseline.name());
        let schedules = experiment
            .faults
            .iter()
            .filter_map(|f| match &f.action {
                FaultAction::Signal {
                    signal,
                    interval,
                    jitter,
                } => Some(Schedule {
                    fault: f.index,
                    signal: *signal,
                    interval: *interval,
                    jitter: *jitter,
                    left: f.count,
                    next: None,
                    draws: Draws::new(f.seed),
                }),
                _ => None,
            })
            .collect();
        Self {
            experiment,
            measurement,
            collected,
            episodes: Vec::new(),
            ledger: {
                let mut ledger = Ledger::new(Box::new(std::io::sink()), false, start_ns);
                ledger.set_exporters(exporters.clone());
                ledger
            },
            exporters,
            audit,
            maps,
            targets,
            rules,
            start_ns,
            phase: Phase::Baseline,
            baseline_crashes: 0,
            guards: GuardState::new(experiment.guards.clone(), 1, 0),
            signalled: HashMap::new(),
            schedules,
            kernel_fired: [0; fault_kind::KINDS as usize],
            armed: [false; fault_kind::KINDS as usize],
            abort: None,
            verify_after: (0, 0, None),
            verify_end: None,
            bar,
            cool_until: None,
        }
    }

    /// Prints a line above the progress bar (or plainly, when stderr is not a terminal).
    fn say(&self, text: String) {
        self.bar.suspend(|| eprintln!("{text}"));
    }

    async fn drive(
        &mut self,
        mut source: RingSource,
        mut stops: Stops,
    ) -> Result<KernelCounters, Error> {
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<ReadyMark>();
        let (verify_tx, mut verify_rx) = mpsc::unbounded_channel::<(u64, Result<(), String>)>();
        let mut verifies_running = 0u32;
        let mut probes: HashMap<u64, AbortHandle> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let baseline_end = started + self.experiment.phases.baseline;
        let max_end = started + self.experiment.phases.max_duration;
        self.say(format!(
            "chaos: baseline for {} (measuring only)",
            humantime::format_duration(self.experiment.phases.baseline)
        ));
        let mut batch = Vec::new();
        loop {
            let next_signal = if self.phase == Phase::Injection {
                self.schedules.iter().filter_map(|s| s.next).min()
            } else {
                None
            };
            let mut extra = None;
            let mut fire = false;
            let mut ticked = false;
            tokio::select! {
                more = source.next_batch(&mut batch) => {
                    if !more? {
                        break;
                    }
                }
                Some(mark) = ready_rx.recv() => extra = Some(Input::Ready(mark)),
                Some((episode, result)) = verify_rx.recv() => {
                    verifies_running -= 1;
                    self.verified(episode, result)?;
                }
                _ = tick.tick() => {
                    source.drain(&mut batch)?;
                    extra = Some(Input::Tick(Tick { ts_ns: monotonic_ns() }));
                    let mut e = self.exporters.borrow_mut();
                    e.lost(source.counters().lost);
                    e.tick()?;
                    ticked = true;
                }
                () = async {
                    match next_signal {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => fire = true,
                () = stops.recv() => {
                    self.abort("interrupted by a signal (Ctrl-C or SIGTERM)".into())?;
                }
                () = tokio::time::sleep_until(max_end) => {
                    self.say("chaos: phases.max_duration reached; ending the run".into());
                    break;
                }
            }
            for input in batch.drain(..).map(Input::Event).chain(extra) {
                if let Input::Event(event) = &input {
                    self.event(event)?;
                }
                self.measurement.feed(input).map_err(Error::Output)?;
            }
            for episode in self.measurement.take_finished() {
                if let Some(probe) = probes.remove(&episode) {
                    probe.abort();
                }
            }
            for episode in self.measurement.take_probes() {
                let probe = spawn_probe(
                    &self.experiment.target.ready,
                    episode,
                    ready_tx.clone(),
                    recovery_timeout(self.experiment),
                );
                probes.insert(episode, probe);
            }
            let ended = std::mem::take(&mut self.collected.borrow_mut().ended);
            for episode in ended {
                if let Some(id) = self.episode_ended(&episode)?
                    && let Some(v) = &self.experiment.hypothesis.verify
                {
                    verifies_running += 1;
                    let (tx, command, timeout) = (verify_tx.clone(), v.command.clone(), v.timeout);
                    tokio::spawn(async move {
                        let _ = tx.send((id, run_verify(command, timeout).await));
                    });
                }
                self.episodes.push(episode);
            }
            if self.phase != Phase::Baseline
                && let Decision::Abort(why) = self
                    .guards
                    .tick(monotonic_ns(), self.measurement.oldest_open())
            {
                self.audit
                    .append(json!({"kind": "guard", "decision": "abort", "reason": why}))?;
                self.abort(why)?;
            }
            if self.abort.is_some() {
                break;
            }
            let now = Instant::now();
            if fire {
                self.fire_due(now)?;
            }
            match self.phase {
                Phase::Baseline if now >= baseline_end => self.start_injection(now)?,
                Phase::Injection => {
                    if ticked {
                        // Windows open and close by the minute: a tick's look is enough.
                        self.windows()?;
                    }
                    if self.injection_done() {
                        self.phase = Phase::Cooldown;
                        self.bar.set_prefix(Phase::Cooldown.name());
                        self.disarm_all("every fault is done")?;
                        self.say("chaos: every fault is done; cool-down".into());
                    }
                }
                Phase::Cooldown => {
                    let settled = self.measurement.open_count() == 0 && verifies_running == 0;
                    match (settled, self.cool_until) {
                        (true, None) => {
                            self.cool_until = Some(now + self.experiment.phases.cooldown)
                        }
                        (true, Some(until)) if now >= until => break,
                        (false, Some(_)) => self.cool_until = None,
                        _ => {}
                    }
                }
                Phase::Baseline => {}
            }
            self.progress();
        }
        self.disarm_all("the run is over")?;
        for probe in probes.into_values() {
            probe.abort();
        }
        source.drain(&mut batch)?;
        for event in batch.drain(..) {
            self.event(&event)?;
            self.measurement
                .feed(Input::Event(event))
                .map_err(Error::Output)?;
        }
        if self.abort.is_none()
            && let Some(v) = &self.experiment.hypothesis.verify
        {
            let result = run_verify(v.command.clone(), v.timeout).await;
            self.audit.append(json!({"kind": "verify", "when": "end", "passed": result.is_ok(), "detail": result.as_ref().err()}))?;
            self.verify_end = Some(result);
        }
        Ok(source.counters())
    }

    /// A kernel event, beside the measurement: kernel-fired faults and proofs.
    fn event(&mut self, event: &Event) -> Result<(), Error> {
        if let Event::Inject(e) = event {
            let fault = FaultRecord::from_kernel(self.ledger.next_id(), e);
            let kind = if fault.fault == "signal" {
                self.signalled.insert(fault.pid, fault.ts_ns);
                fault_kind::TRIGGER_SIGNAL
            } else {
                fault_kind::LSM_ERRNO
            };
            self.kernel_fired[kind as usize] += 1;
            self.audit.append(fault.audit_entry(true))?;
            self.say(format!(
                "chaos: fault {}: {} {} -> {} ({}) [kernel]",
                fault.id,
                fault.value,
                fault.syscall.as_deref().unwrap_or(""),
                fault.pid,
                fault.comm
            ));
            self.bar.inc(1);
            self.ledger.fault(fault).map_err(Error::Output)?;
        }
        self.ledger.observe(event).map_err(Error::Output)
    }

    /// An episode ended: count crashes, consult the guards. Returns the episode to verify.
    fn episode_ended(&mut self, episode: &Episode) -> Result<Option<u64>, Error> {
        let ours = self.signalled.contains_key(&episode.old_pid)
            || episode
                .fault
                .as_ref()
                .is_some_and(|f| f.sender_pid == std::process::id());
        // A crash: a death chaos did not cause, other than a clean exit.
        let crash = !ours && (episode.exit.signal != 0 || episode.exit.exit_code != 0);
        let what = match episode.outcome {
            Outcome::Recovered => format!(
                "recovered in {}",
                crate::output::human_duration(episode.total_ns.unwrap_or(0))
            ),
            _ => format!(
                "{:?}: {}",
                episode.outcome,
                episode.reason.as_deref().unwrap_or("")
            )
            .to_lowercase(),
        };
        self.say(format!(
            "chaos: episode {} (pid {}{}) {what}",
            episode.id,
            episode.old_pid,
            if crash {
                ", a crash chaos did not cause"
            } else {
                ""
            }
        ));
        if self.phase == Phase::Baseline {
            self.baseline_crashes += u64::from(crash);
            return Ok(None);
        }
        let decision = self.guards.episode(episode, crash);
        self.audit.append(json!({
            "kind": "guard",
            "episode": episode.id,
            "pid": episode.old_pid,
            "outcome": episode.outcome,
            "crash": crash,
            "decision": match &decision { Decision::Continue => "continue", Decision::Abort(_) => "abort" },
            "reason": match &decision { Decision::Continue => None, Decision::Abort(why) => Some(why) },
        }))?;
        if let Decision::Abort(why) = decision {
            self.abort(why)?;
            return Ok(None);
        }
        Ok((episode.outcome == Outcome::Recovered).then_some(episode.id))
    }

    fn verified(&mut self, episode: u64, result: Result<(), String>) -> Result<(), Error> {
        self.audit.append(json!({"kind": "verify", "when": "after", "episode": episode, "passed": result.is_ok(), "detail": result.as_ref().err()}))?;
        match result {
            Ok(()) => self.verify_after.0 += 1,
            Err(why) => {
                self.say(format!(
                    "chaos: verify after episode {episode} failed: {why}"
                ));
                self.verify_after.1 += 1;
                self.verify_after
                    .2
                    .get_or_insert(format!("after episode {episode}: {why}"));
            }
        }
        Ok(())
    }

    /// Stops every fault at once and records why.
    fn abort(&mut self, why: String) -> Result<(), Error> {
        if self.abort.is_some() {
            return Ok(());
        }
        self.disarm_all("abort")?;
        for s in &mut self.schedules {
            s.next = None;
        }
        self.audit.append(json!({"kind": "abort", "reason": why}))?;
        self.say(format!("chaos: ABORT: {why}; no further fault"));
        self.abort = Some(why);
        Ok(())
    }

    /// Disarms every kernel rule still armed, each recorded in the audit log with `why`.
    fn disarm_all(&mut self, why: &str) -> Result<(), Error> {
        for f in &self.experiment.faults {
            let Some(kind) = kernel_kind(f) else { continue };
            if self.armed[kind as usize] {
                self.maps.set_armed(kind, false)?;
                self.armed[kind as usize] = false;
                self.audit.append(json!({"kind": "disarmed", "fault": f.index, "rule": f.describe(), "reason": why}))?;
            }
        }
        Ok(())
    }

    fn start_injection(&mut self, now: Instant) -> Result<(), Error> {
        self.guards = GuardState::new(
            self.experiment.guards.clone(),
            self.experiment.phases.baseline.as_nanos().max(1) as u64,
            self.baseline_crashes,
        );
        self.audit.append(json!({
            "kind": "phase",
            "phase": "injection",
            "baseline_crashes": self.baseline_crashes,
        }))?;
        self.say(format!(
            "chaos: baseline over: {} crash(es); injecting",
            self.baseline_crashes
        ));
        self.phase = Phase::Injection;
        self.bar.set_prefix(Phase::Injection.name());
        for s in &mut self.schedules {
            s.next = Some(now + jitter(&mut s.draws, s.jitter));
        }
        self.windows()
    }

    /// Arms the kernel's rules inside their windows, disarms them outside, and once they
    /// have fired their count.
    fn windows(&mut self) -> Result<(), Error> {
        let now = jiff::ZonedDateTime::now();
        for f in &self.experiment.faults {
            let Some(kind) = kernel_kind(f) else { continue };
            let want = self.abort.is_none()
                && self.kernel_fired[kind as usize] < f.count
                && window::open(&f.windows, &now);
            if want != self.armed[kind as usize] {
                self.maps.set_armed(kind, want)?;
                self.armed[kind as usize] = want;
                self.audit.append(json!({"kind": if want { "armed" } else { "disarmed" }, "fault": f.index, "rule": f.describe()}))?;
            }
        }
        Ok(())
    }

    fn injection_done(&self) -> bool {
        let signals = self
            .schedules
            .iter()
            .all(|s| s.left == 0 || s.next.is_none());
        let kernel =
            self.experiment.faults.iter().all(|f| {
                kernel_kind(f).is_none_or(|kind| self.kernel_fired[kind as usize] >= f.count)
            });
        signals && kernel
    }

    /// Sends the signals that are due. One waits (a tick at a time) while its window is
    /// closed, while no instance may be hit, or while a recovery is still open.
    fn fire_due(&mut self, now: Instant) -> Result<(), Error> {
        let zoned = jiff::ZonedDateTime::now();
        for i in 0..self.schedules.len() {
            let Some(at) = self.schedules[i].next else {
                continue;
            };
            if at > now || self.abort.is_some() {
                continue;
            }
            let windows = &self.experiment.faults[self.schedules[i].fault].windows;
            match window::until_open(windows, &zoned) {
                Some(wait) if wait.is_zero() => {}
                Some(wait) => {
                    self.schedules[i].next = Some(now + wait.max(TICK));
                    continue;
                }
                None => {
                    self.say(format!(
                        "chaos: fault {}: no window opens within a week; its signals are dropped",
                        self.schedules[i].fault
                    ));
                    self.schedules[i].next = None;
                    continue;
                }
            }
            if self.measurement.open_count() > 0 {
                self.schedules[i].next = Some(now + TICK);
                continue;
            }
            let rules = &self.rules;
            let Some(target) = pick(
                self.targets.members().into_iter(),
                rules.denylist,
                |p| rules.check(p).is_ok(),
                &mut self.schedules[i].draws,
            ) else {
                self.schedules[i].next = Some(now + TICK);
                continue;
            };
            self.signal(i, &target)?;
            let s = &mut self.schedules[i];
            s.left -= 1;
            s.next = (s.left > 0).then(|| now + s.interval + jitter(&mut s.draws, s.jitter));
        }
        Ok(())
    }

    /// Audits (fsynced), then sends, one scheduled signal.
    fn signal(&mut self, schedule: usize, target: &Pinned) -> Result<(), Error> {
        let s = &self.schedules[schedule];
        let fault = FaultRecord {
            id: self.ledger.next_id(),
            ts_ns: monotonic_ns(),
            pid: target.pid,
            tid: None,
            comm: target.comm.clone(),
            fault: "signal",
            value: s.signal.as_str().into(),
            syscall: None,
            nth: None,
            backend: "pidfd",
            dry_run: false,
        };
        self.audit.append(fault.audit_entry(false))?;
        if let Err(e) = target.send(s.signal) {
            self.say(format!("chaos: signal to {} failed: {e}", target.pid));
            return Ok(());
        }
        self.signalled.insert(target.pid, fault.ts_ns);
        self.say(format!(
            "chaos: fault {}: {} -> {} ({})",
            fault.id, fault.value, fault.pid, fault.comm
        ));
        self.bar.inc(1);
        self.ledger.fault(fault).map_err(Error::Output)
    }

    fn progress(&self) {
        let stats = self.measurement.stats();
        let total = stats.phases().find(|(p, _)| *p == "total").map(|(_, h)| h);
        let latency = match total {
            Some(h) if !h.is_empty() => format!(
                " · total p50 {} p99 {}",
                crate::output::human_duration(h.value_at_quantile(0.5)),
                crate::output::human_duration(h.value_at_quantile(0.99))
            ),
            _ => String::new(),
        };
        self.bar.set_message(format!(
            "episodes {} ({} ok, {} failed){latency} · {}",
            stats.recovered + stats.failed + stats.unfinished,
            stats.recovered,
            stats.failed,
            self.guards.describe()
        ));
    }

    /// The verdict, the outputs, the audit's last entry; returns the exit code.
    fn finish(
        mut self,
        end: End,
        outputs: &experiment::Outputs,
        start_unix_ns: u64,
    ) -> Result<u8, Error> {
        self.bar.finish_and_clear();
        let measure_outputs = MeasureOutputs {
            hdr_log: outputs.hdr_log.clone(),
        };
        let duration_ns = end.ts_ns.saturating_sub(self.start_ns);
        let lost = end.counters.lost;
        self.measurement
            .finish(end, &measure_outputs)
            .map_err(Error::Output)?;
        self.episodes
            .extend(std::mem::take(&mut self.collected.borrow_mut().ended));
        let summary = self
            .collected
            .borrow_mut()
            .summary
            .take()
            .expect("the measurement reports a summary");
        let faults: Vec<FaultRecord> = self.ledger.faults().cloned().collect();
        let inject = self
            .ledger
            .finish(duration_ns, lost, false)
            .map_err(Error::Output)?;
        let evidence = Evidence {
            unfired: self.schedules.iter().map(|s| s.left).sum(),
            injected: inject.injected,
            unconfirmed: inject.unconfirmed.len(),
            verify_after: self.verify_after.clone(),
            verify_end: self.verify_end.clone(),
        };
        // Every episode, those the end closed included.
        let final_stats = {
            let mut s = crate::measure::stats::Stats::default();
            for e in &self.episodes {
                s.add(e);
            }
            s
        };
        let clauses = verdict::clauses(self.experiment, &final_stats, &evidence);
        let verdict = verdict::verdict(&clauses, self.abort.is_some());
        let code = verdict.exit_code();

        let mut out = std::io::stdout();
        print_verdict(
            &mut out,
            self.experiment,
            verdict,
            self.abort.as_deref(),
            &clauses,
        )
        .map_err(Error::Output)?;
        TableReport(&mut out)
            .summary(&summary)
            .map_err(Error::Output)?;

        let result = RunResult {
            experiment: self.experiment.id.clone(),
            file: self.experiment.path.display().to_string(),
            description: self.experiment.description.clone(),
            hypothesis: self.experiment.hypothesis.statement.clone(),
            blast_radius: self.experiment.radius.name().into(),
            verdict,
            exit_code: code,
            abort: self.abort.clone(),
            start_unix_ns,
            start_ns: self.start_ns,
            duration_ns,
            baseline: Baseline {
                duration_ns: self.experiment.phases.baseline.as_nanos() as u64,
                crashes: self.baseline_crashes,
            },
            clauses: clauses.clone(),
            faults: faults.iter().map(FaultEntry::from).collect(),
            injected: inject.injected,
            confirmed: inject.confirmed,
            unconfirmed: inject.unconfirmed.clone(),
            episodes: std::mem::take(&mut self.episodes),
            summary,
        };
        if let Some(path) = &outputs.json {
            write_file(
                path,
                &(serde_json::to_string_pretty(&result).unwrap_or_default() + "\n"),
            )?;
        }
        if let Some(path) = &outputs.junit {
            let xml = verdict::junit(
                self.experiment,
                &clauses,
                self.abort.as_deref(),
                Duration::from_nanos(duration_ns),
            );
            write_file(path, &xml)?;
        }
        self.audit.append(json!({
            "kind": "end",
            "verdict": verdict,
            "exit_code": code,
            "injected": inject.injected,
            "confirmed": inject.confirmed,
            "clauses": clauses.iter().map(|c| json!({"name": c.name, "held": c.held})).collect::<Vec<Value>>(),
        }))?;
        Ok(code)
    }
}

/// The kind of kernel-fired fault (`chaos_common::fault`) of a file's fault, if it is one.
fn kernel_kind(f: &experiment::Fault) -> Option<u32> {
    match &f.action {
        FaultAction::Trigger { .. } => Some(fault_kind::TRIGGER_SIGNAL),
        FaultAction::Errno { .. } => Some(fault_kind::LSM_ERRNO),
        FaultAction::Signal { .. } => None,
    }
}

fn jitter(draws: &mut Draws, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_nanos(draws.below(jitter.as_nanos() as u64 + 1))
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        what: "cannot write an output file",
        source,
    })
}

fn print_verdict(
    out: &mut impl std::io::Write,
    experiment: &Experiment,
    verdict: Verdict,
    abort: Option<&str>,
    clauses: &[Clause],
) -> std::io::Result<()> {
    let word = match verdict {
        Verdict::Held => "HELD",
        Verdict::Refuted => "REFUTED",
        Verdict::Aborted => "ABORTED",
    };
    writeln!(
        out,
        "\nverdict: {word} (exit {}): {}",
        verdict.exit_code(),
        experiment.hypothesis.statement
    )?;
    if let Some(why) = abort {
        writeln!(out, "  aborted: {why}")?;
    }
    verdict::write_clauses(out, clauses)
}
