//! `chaos measure`: recovery episodes of a supervised service, live from the kernel or
//! replayed from a recording.
//!
//! Live order: arguments checked, the kernel brought up, the service found in /proc, the
//! supervisors and instances put in the target set (following their children); only then is
//! the recording opened and the readiness line printed.

use std::{path::PathBuf, time::Duration};

use super::{
    EXIT_FAILURE, Failure,
    common::{export_config, exporters, positive_secs, recorder, ring_bytes},
};
use crate::{
    cli::MeasureArgs,
    driver::{self, Driver, Setup, probe::Probe},
    export::{self, ExportConfig, Exporters},
    kernel::layout::{FsyncHook, HookSet},
    machine::{
        Input, Tick,
        record::{End, Recording},
    },
    measure::{
        MeasureMachine, Measurement,
        discover::{self, Selector, check_comm},
        record::Header,
        service::{Ready, Service},
        sink::{EpisodeSink, JsonEpisodes, TableEpisodes},
    },
    session::{Session, SessionPlan},
    sys::{clock::monotonic_ns, stops::runtime_with_stops},
    target::cgroup_rule,
};

/// A checked live `chaos measure` invocation.
#[derive(Debug, Clone)]
pub struct MeasureConfig {
    pub selector: Selector,
    pub comm_filter: Option<String>,
    pub ready: Ready,
    pub recovery_timeout: Duration,
    pub data_dir: Option<PathBuf>,
    pub episodes: Option<u64>,
    pub duration: Option<Duration>,
    pub json: bool,
    /// `--hdr-log`, with `--hdr-interval`.
    pub hdr_log: Option<HdrLog>,
    pub record: Option<PathBuf>,
    pub fsync: FsyncHook,
    pub reap: bool,
    pub ring_bytes: u32,
    pub export: ExportConfig,
}

impl MeasureConfig {
    pub fn from_args(args: MeasureArgs) -> Result<Self, Failure> {
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
            _ if args.unit.is_some() => Selector::unit(args.unit.as_deref().unwrap_or_default())
                .map_err(|e| Failure::refused(e.to_string()))?,
            (Some(s), ..) => Selector::Supervisor(*s),
            (_, Some(p), ..) => Selector::Pid(*p),
            (_, _, Some(exe), ..) => Selector::Exe(exe.clone()),
            (_, _, _, Some(cg), _) => Selector::Cgroup(cgroup_rule(cg)?),
            (_, _, _, _, Some(comm)) => Selector::Comm(comm.clone()),
            _ => {
                return Err(Failure::refused(
                    "name the service with --supervisor, --pid, --comm, --exe, --cgroup or --unit",
                ));
            }
        };
        let comm_filter = match selector {
            Selector::Comm(_) => None,
            _ => args.comm.clone(),
        };
        if args.episodes == Some(0) {
            return Err(Failure::refused("--episodes 0: give at least 1"));
        }
        let ready = ready_of(args.ready.as_deref(), &selector)?;
        Ok(Self {
            selector,
            comm_filter,
            ready,
            recovery_timeout: positive_secs("--recovery-timeout", args.recovery_timeout)?,
            data_dir: args.data_dir,
            episodes: args.episodes,
            duration: args
                .duration
                .map(|secs| positive_secs("--duration", secs))
                .transpose()?,
            json: args.json,
            hdr_log: hdr_log(&args.hdr)?,
            record: args.record,
            fsync: args.fsync_hook,
            reap: !args.no_reap,
            ring_bytes: ring_bytes(args.buffer_pages)?,
            export: export_config(&args.export)?,
        })
    }
}

/// Where the HdrHistogram log goes, and its time slices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HdrLog {
    pub path: PathBuf,
    pub slice: Duration,
}

/// `--hdr-log FILE` with `--hdr-interval DURATION`.
pub fn hdr_log(args: &crate::cli::HdrLogArgs) -> Result<Option<HdrLog>, Failure> {
    let slice = hdr_interval(&args.hdr_interval)?;
    Ok(args.hdr_log.clone().map(|path| HdrLog { path, slice }))
}

/// `--hdr-interval DURATION`: positive.
pub fn hdr_interval(text: &str) -> Result<Duration, Failure> {
    match crate::inject::names::duration("--hdr-interval", text).map_err(Failure::refused)? {
        d if d.is_zero() => Err(Failure::refused(format!(
            "--hdr-interval {text}: give a positive duration"
        ))),
        d => Ok(d),
    }
}

/// `--ready`, defaulting to `unit` for a unit and `exec` otherwise; `unit` needs `--unit`.
pub fn ready_of(given: Option<&str>, selector: &Selector) -> Result<Ready, Failure> {
    let unit = selector.unit_info().is_some();
    let ready = match given {
        Some(text) => Ready::parse(text).map_err(Failure::refused)?,
        None if unit => Ready::Unit,
        None => Ready::Exec,
    };
    if ready == Ready::Unit && !unit {
        return Err(Failure::refused(
            "--ready unit: readiness from systemd needs the service named with --unit",
        ));
    }
    Ok(ready)
}

pub fn run(args: MeasureArgs) -> Result<u8, Failure> {
    match args.replay.clone() {
        Some(path) => {
            let export = export_config(&args.export)?;
            if export.prometheus.is_some() {
                return Err(Failure::refused(
                    "--prometheus serves while measuring live; a replay ends at once: use --textfile or --otlp",
                ));
            }
            replay(&path, args.json, hdr_log(&args.hdr)?, &export)
        }
        None => live(MeasureConfig::from_args(args)?),
    }
}

fn sink(json: bool) -> Box<dyn EpisodeSink> {
    let stdout = std::io::stdout();
    if json {
        Box::new(JsonEpisodes(stdout))
    } else {
        Box::new(TableEpisodes(stdout))
    }
}

/// Recomputes a recording: the same inputs through the same engine as live.
fn replay(
    path: &std::path::Path,
    json: bool,
    hdr_log: Option<HdrLog>,
    export: &ExportConfig,
) -> Result<u8, Failure> {
    let recording = Recording::<Header>::open(path)?;
    // Exported times are those of the recording: its header ties kernel time to wall time.
    let (mut exporters, _) = exporters(export)?;
    exporters.clock = Some(recording.header.clock());
    let mut machine =
        MeasureMachine::new(Measurement::new(recording.header), sink(json), None, None);
    let end = driver::replay(
        &mut machine,
        recording.inputs,
        recording.end,
        path,
        &mut exporters,
    );
    finish(&mut machine, &end, hdr_log.as_ref(), &mut exporters)
}

/// The summary, the HdrHistogram log, the exports' last word.
fn finish(
    machine: &mut MeasureMachine,
    end: &End,
    hdr_log: Option<&HdrLog>,
    exporters: &mut Exporters,
) -> Result<u8, Failure> {
    let (summary, unfinished) = machine.finish(end);
    for episode in &unfinished {
        exporters.episode(episode);
    }
    exporters.lost(end.counters.lost);
    if let Some(HdrLog { path, slice }) = hdr_log {
        machine
            .measurement
            .write_hdr_log(path, summary.duration_ns, *slice)
            .map_err(|e| {
                Failure::running(
                    EXIT_FAILURE,
                    super::Refusal(format!(
                        "{}: cannot write the HdrHistogram log: {e}",
                        path.display()
                    )),
                )
            })?;
    }
    exporters.finish();
    match machine.error.take() {
        Some(e) => Err(Failure::running(EXIT_FAILURE, e)),
        None => Ok(0),
    }
}

fn live(config: MeasureConfig) -> Result<u8, Failure> {
    let (exporters, server) = exporters(&config.export)?;
    let mut session = Session::open(&SessionPlan::observing(
        HookSet {
            reap: config.reap,
            listen: config.ready == Ready::Listen,
            ..HookSet::observe(config.fsync)
        },
        config.ring_bytes,
    ))?;
    let found = discover::find_live(&config.selector, config.comm_filter.as_deref())?;
    discover::follow(&mut session.targets, &found, &config.selector)?;

    let header = Header::starting_now(Service {
        unit: config.selector.unit_info().cloned(),
        ..Service::of(
            &found,
            &config.ready,
            config.recovery_timeout,
            config.data_dir.clone(),
        )
    });
    let recorder = recorder(config.record.as_deref(), &header)?;
    let start_ns = header.start_ns;
    let mut exporters = exporters;
    exporters.clock = Some(header.clock());
    let ports = header.service.ports.clone();
    let mut machine = MeasureMachine::new(
        Measurement::new(header),
        sink(config.json),
        config.episodes,
        config.duration,
    );
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
    if let Some(unit) = config.selector.unit_info() {
        eprintln!(
            "chaos: unit {}; pid 1 is observed read-only (its forks into the unit's cgroup, its reaps)",
            unit.describe()
        );
    }
    let _context = runtime.enter();
    let source = session.ring_source()?;
    let mut driver = Driver::new(
        None,
        None,
        Setup {
            exporters,
            probe: Some(Probe {
                ready: config.ready.clone(),
                limit: config.recovery_timeout,
                user: None,
                ports,
            }),
            recorder,
            unit: config.selector.unit_info().cloned(),
            ..Setup::default()
        },
    );
    driver.feed(&mut machine, Input::Tick(Tick { ts_ns: start_ns }));
    let counters = runtime.block_on(async {
        export::serve(server)?;
        driver
            .run(&mut machine, source, stops, None)
            .await
            .map_err(|e| Failure::running(EXIT_FAILURE, e))
    })?;
    let end = End {
        ts_ns: monotonic_ns(),
        counters,
    };
    driver.end_recording(&end);
    let mut exporters = std::mem::take(&mut driver.exporters);
    drop(driver);
    drop(session);
    finish(&mut machine, &end, config.hdr_log.as_ref(), &mut exporters)
}
