//! `chaos measure`: recovery episodes of a supervised service, live from the kernel or
//! replayed from a recording.
//!
//! Live order: arguments checked, kernel probed, service found in /proc, programs attached,
//! the supervisors and instances put in the target set (following their children); only then
//! is the recording opened and the readiness line printed.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use chaos_common::{TargetInfo, reason, target_flag};
use tokio::{sync::mpsc, task::AbortHandle};

use super::common::{Stops, after, monotonic_ns, positive_secs, ring_bytes, runtime_with_stops};
use crate::{
    bpf::{Programs, TargetSet, counts_unsynced, hooks, ring::RingSource},
    cli::MeasureArgs,
    error::Error,
    event::KernelCounters,
    export::{self, ExportConfig},
    kernel::{
        btf::KernelBtf,
        layout::{Ext4Hooks, FsyncHook, HookSet, discover},
        preflight,
    },
    measure::{
        Measurement, Outputs,
        discover::{Found, Selector, check_comm, find, processes},
        record::{End, Header, Input, ReadyMark, Recording, Tick},
        report::{JsonReport, Report, TableReport},
        service::{Ready, Service},
    },
    source::EventSource,
    target::{cgroup_rule, comm_key, scan_cgroups},
};

/// How often time is fed to the episode logic when no event comes (deadlines).
const TICK: Duration = Duration::from_millis(100);
/// Pause between two readiness probes.
const PROBE_GAP: Duration = Duration::from_millis(1);
/// Longest wait for one TCP connect of a probe.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// A checked live `chaos measure` invocation.
#[derive(Debug, Clone)]
pub struct MeasureConfig {
    pub selector: Selector,
    pub comm_filter: Option<String>,
    pub ready: Ready,
    pub recovery_timeout: Duration,
    pub episodes: Option<u64>,
    pub duration: Option<Duration>,
    pub json: bool,
    pub outputs: Outputs,
    pub record: Option<PathBuf>,
    pub fsync: FsyncHook,
    pub reap: bool,
    pub ring_bytes: u32,
    pub export: ExportConfig,
}

impl MeasureConfig {
    pub fn from_args(args: MeasureArgs) -> Result<Self, Error> {
        if let Some(comm) = &args.comm {
            check_comm(comm)?;
        }
        let selector = match (
            &args.supervisor,
            &args.pid,
            &args.exe,
            &args.cgroup,
            &args.comm,
        ) {
            (Some(s), ..) => Selector::Supervisor(*s),
            (_, Some(p), ..) => Selector::Pid(*p),
            (_, _, Some(exe), ..) => Selector::Exe(exe.clone()),
            (_, _, _, Some(cg), _) => Selector::Cgroup(cgroup_rule(cg)?),
            (_, _, _, _, Some(comm)) => Selector::Comm(comm.clone()),
            _ => {
                return Err(Error::Usage(
                    "name the service with --supervisor, --pid, --comm, --exe or --cgroup".into(),
                ));
            }
        };
        let comm_filter = match selector {
            Selector::Comm(_) => None,
            _ => args.comm.clone(),
        };
        if args.episodes == Some(0) {
            return Err(Error::Usage("--episodes 0: give at least 1".into()));
        }
        Ok(Self {
            selector,
            comm_filter,
            ready: Ready::parse(&args.ready).map_err(Error::Usage)?,
            recovery_timeout: positive_secs("--recovery-timeout", args.recovery_timeout)?,
            episodes: args.episodes,
            duration: args
                .duration
                .map(|secs| positive_secs("--duration", secs))
                .transpose()?,
            json: args.json,
            outputs: Outputs {
                hdr_log: args.hdr_log,
            },
            record: args.record,
            fsync: args.fsync_hook,
            reap: !args.no_reap,
            ring_bytes: ring_bytes(args.buffer_pages)?,
            export: ExportConfig::from_args(&args.export)?,
        })
    }
}

pub fn run(args: MeasureArgs) -> Result<(), Error> {
    match args.replay.clone() {
        Some(path) => {
            let export = ExportConfig::from_args(&args.export)?;
            if export.prometheus.is_some() {
                return Err(Error::Usage(
                    "--prometheus serves while measuring live; a replay ends at once: use --textfile or --otlp"
                        .into(),
                ));
            }
            replay(
                &path,
                args.json,
                Outputs {
                    hdr_log: args.hdr_log,
                },
                &export,
            )
        }
        None => live(MeasureConfig::from_args(args)?),
    }
}

fn report(json: bool) -> Box<dyn Report> {
    let stdout = std::io::stdout();
    if json {
        Box::new(JsonReport(stdout))
    } else {
        Box::new(TableReport(stdout))
    }
}

/// Recomputes a recording: the same inputs through the same path as live.
fn replay(path: &Path, json: bool, outputs: Outputs, export: &ExportConfig) -> Result<(), Error> {
    let recording = Recording::open(path)?;
    // Exported times are those of the recording: its header ties kernel time to wall time.
    let (exporters, _) = export::shared(export)?;
    let mut measurement =
        Measurement::new(recording.header, report(json), None, None).map_err(Error::Output)?;
    measurement.set_exporters(exporters.clone());
    let mut last_ns = 0;
    for input in recording.inputs {
        last_ns = match &input {
            Input::Event(e) => e.ts_ns(),
            Input::Ready(r) => r.ts_ns,
            Input::Tick(t) => t.ts_ns,
        };
        measurement.feed(input).map_err(Error::Output)?;
    }
    let end = recording.end.unwrap_or_else(|| {
        eprintln!(
            "chaos: {}: the recording has no end mark (cut short); replaying to its last line",
            path.display()
        );
        End {
            ts_ns: last_ns,
            counters: KernelCounters::default(),
        }
    });
    measurement.finish(end, &outputs).map_err(Error::Output)?;
    export::finish(&exporters);
    Ok(())
}

fn live(config: MeasureConfig) -> Result<(), Error> {
    let env = preflight::check()?;
    let (exporters, server) = export::shared(&config.export)?;
    let btf = KernelBtf::load(&env.btf_path)?;
    let set = HookSet {
        reap: config.reap,
        listen: config.ready == Ready::Listen,
        ..HookSet::observe(config.fsync)
    };
    let layout = discover(&env.tracefs, &btf, set)?;
    let ext4 = Ext4Hooks::probe(&env.tracefs);

    let procs = processes(Path::new("/proc"));
    let in_cgroup = match &config.selector {
        Selector::Cgroup(rule) => scan_cgroups(std::slice::from_ref(rule)),
        _ => Vec::new(),
    };
    let found = find(
        &config.selector,
        config.comm_filter.as_deref(),
        &procs,
        &in_cgroup,
    )?;

    let mut programs = Programs::load(&layout, config.ring_bytes)?;
    let hooks = hooks(set, &ext4);
    programs.attach(&hooks)?;
    let mut target_set = programs.target_set()?;
    follow_service(&mut target_set, &found, &config.selector)?;

    let header = Header::starting_now(Service {
        comm: found.comm.clone(),
        supervisors: found.supervisors.clone(),
        explicit_supervisors: found.explicit,
        instances: found.instances.clone(),
        ready: config.ready.clone(),
        recovery_timeout_ns: config.recovery_timeout.as_nanos() as u64,
    });
    let record: Option<Box<dyn Write>> = match &config.record {
        Some(path) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|source| Error::Io {
                what: "cannot create the --record file",
                source,
            })?,
        ))),
        None => None,
    };
    let mut measurement = Measurement::new(header, report(config.json), record, config.episodes)
        .map_err(Error::Output)?;
    measurement.set_exporters(exporters.clone());

    let (ring, counters) = (programs.ring()?, programs.counters()?);
    let logs = programs.logger();
    let (runtime, stops) = runtime_with_stops()?;
    eprintln!(
        "chaos: measuring {} ({} instance(s), supervisor(s) {}); ready = {}; Ctrl-C to stop",
        found.comm,
        found.instances.len(),
        found
            .supervisors
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        config.ready.describe()
    );
    let counters = runtime.block_on(async {
        export::serve(server)?;
        let source = RingSource::new(ring, counters, logs, counts_unsynced(&hooks))?;
        drive(source, &mut measurement, stops, &config, &exporters).await
    })?;
    let end = End {
        ts_ns: monotonic_ns(),
        counters,
    };
    measurement
        .finish(end, &config.outputs)
        .map_err(Error::Output)?;
    drop(programs);
    export::finish(&exporters);
    Ok(())
}

/// Puts the service in the target set: its supervisors and instances, following what they
/// fork, and its name (or cgroup) for replacements. Pid 1 and chaos itself are never targets:
/// an init-supervised service is followed through its name or cgroup instead, without the
/// fork and reap milestones.
pub(crate) fn follow_service(
    target_set: &mut TargetSet,
    found: &Found,
    selector: &Selector,
) -> Result<(), Error> {
    let me = std::process::id();
    let follow = |reasons| TargetInfo {
        reasons,
        flags: target_flag::FOLLOW,
    };
    let mut members = BTreeMap::new();
    for &pid in &found.supervisors {
        if pid > 1 && pid != me {
            members.insert(pid, follow(reason::PID));
        } else {
            log::warn!(
                "the supervisor is pid {pid}: chaos does not target it, so replacements are seen from their exec, without fork and reap"
            );
        }
    }
    for instance in &found.instances {
        members.insert(instance.pid, follow(reason::PID));
    }
    if !found.explicit {
        target_set.add_comm(comm_key(&found.comm)?)?;
    }
    if let Selector::Cgroup(rule) = &selector {
        for id in &rule.ids {
            target_set.add_cgroup(*id)?;
        }
    }
    target_set.add_members(&members)?;
    Ok(())
}

/// Feeds kernel events, probe results and the passing of time to the measurement until a
/// stop: a signal, --duration, or --episodes reached. Returns the kernel's counters.
async fn drive(
    mut source: RingSource,
    measurement: &mut Measurement,
    mut stops: Stops,
    config: &MeasureConfig,
    exporters: &export::Shared,
) -> Result<KernelCounters, Error> {
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<ReadyMark>();
    let mut probes: HashMap<u64, AbortHandle> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = after(config.duration);
    tokio::pin!(deadline);
    let mut batch = Vec::new();
    loop {
        let mut extra = None;
        let mut stop = false;
        tokio::select! {
            more = source.next_batch(&mut batch) => stop = !more?,
            Some(mark) = ready_rx.recv() => extra = Some(Input::Ready(mark)),
            _ = tick.tick() => {
                // Events already in the ring buffer happened before now: they go first, or
                // a deadline could pass over the event that met it.
                source.drain(&mut batch)?;
                extra = Some(Input::Tick(Tick { ts_ns: monotonic_ns() }));
                let mut e = exporters.borrow_mut();
                e.lost(source.counters().lost);
                e.tick()?;
            }
            () = stops.recv() => stop = true,
            () = &mut deadline => stop = true,
        }
        if stop {
            source.drain(&mut batch)?;
        }
        let mut done = false;
        for input in batch.drain(..).map(Input::Event).chain(extra) {
            if measurement.feed(input).map_err(Error::Output)? {
                done = true;
                break;
            }
        }
        batch.clear();
        for episode in measurement.take_finished() {
            if let Some(probe) = probes.remove(&episode) {
                probe.abort();
            }
        }
        for episode in measurement.take_probes() {
            let probe = spawn_probe(
                &config.ready,
                episode,
                ready_tx.clone(),
                config.recovery_timeout,
            );
            probes.insert(episode, probe);
        }
        measurement.flush_record().map_err(Error::Output)?;
        if stop || done {
            break;
        }
    }
    for probe in probes.into_values() {
        probe.abort();
    }
    Ok(source.counters())
}

/// Probes readiness from userspace until it succeeds or `limit` passes. The time reported is
/// when the successful attempt began (CLOCK_MONOTONIC), so the resolution is the probe gap
/// plus one attempt.
pub(crate) fn spawn_probe(
    ready: &Ready,
    episode: u64,
    tx: mpsc::UnboundedSender<ReadyMark>,
    limit: Duration,
) -> AbortHandle {
    let ready = ready.clone();
    let task = tokio::spawn(async move {
        let give_up = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < give_up {
            let ts_ns = monotonic_ns();
            let ok = match &ready {
                Ready::Tcp { addr } => matches!(
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                        .await,
                    Ok(Ok(_))
                ),
                Ready::Cmd { command } => tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .is_ok_and(|s| s.success()),
                Ready::Exec | Ready::Listen => return,
            };
            if ok {
                let _ = tx.send(ReadyMark { episode, ts_ns });
                return;
            }
            tokio::time::sleep(PROBE_GAP).await;
        }
    });
    task.abort_handle()
}
