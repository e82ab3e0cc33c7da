//! `chaos observe`: stream events of a target set.
//!
//! Order matters for "no event missed, nothing half-done": arguments are checked, the kernel
//! brought up (`crate::session`) first; only then is `-- CMD` forked (still single-threaded,
//! held at a barrier), the target set filled, and CMD released.

use std::{path::Path, time::Duration};

use nix::sys::signal::{Signal as Sig, kill};

use super::{
    EXIT_FAILURE, Failure,
    common::{export_config, exporters, positive_secs, ring_bytes},
};
use crate::{
    cli::ObserveArgs,
    driver::{Driver, Setup},
    event::Summary,
    export::{self, ExportConfig},
    kernel::layout::{FsyncHook, HookSet},
    launch,
    machine::{Input, Tick},
    output::{
        Sink,
        human::Human,
        jsonl::JsonLines,
        stream::{StopReason, Stream},
    },
    session::{Session, SessionPlan},
    sys::{clock::monotonic_ns, stops::runtime_with_stops},
    target::{TargetSpec, Targets, scan_processes},
};

/// A checked `chaos observe` invocation.
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    pub targets: Targets,
    pub json: bool,
    pub duration: Option<Duration>,
    pub fsync: FsyncHook,
    pub ring_bytes: u32,
    pub export: ExportConfig,
}

impl ObserveConfig {
    pub fn from_args(args: ObserveArgs) -> Result<Self, Failure> {
        let spec = TargetSpec {
            pids: args.pids,
            follow: !args.no_follow,
            comms: args.comms,
            cgroups: crate::systemd::with_unit_cgroups(args.cgroups, &args.units)
                .map_err(|e| Failure::refused(e.to_string()))?,
            command: args.command,
        };
        let duration = args
            .duration
            .map(|secs| positive_secs("--duration", secs))
            .transpose()?;
        let ring_bytes = ring_bytes(args.buffer_pages)?;
        let export = export_config(&args.export)?;
        if let Some(program) = spec.command.first() {
            launch::resolve(program)?;
        }
        Ok(Self {
            targets: spec.validate(Path::new("/proc"))?,
            json: args.json,
            duration,
            fsync: args.fsync_hook,
            ring_bytes,
            export,
        })
    }
}

pub fn run(args: ObserveArgs) -> Result<u8, Failure> {
    let config = ObserveConfig::from_args(args)?;
    let (exporters, server) = exporters(&config.export)?;
    // Listening sockets cost nothing to watch; reaping needs a syscall tracepoint (measure only).
    let mut session = Session::open(&SessionPlan::observing(
        HookSet {
            listen: true,
            ..HookSet::observe(config.fsync)
        },
        config.ring_bytes,
    ))?;
    if config.fsync == FsyncHook::Fs && !session.ext4.sync {
        log::warn!(
            "no ext4 sync tracepoints on this kernel: fsync events need --fsync-hook syscalls"
        );
    }
    for comm in &config.targets.comms {
        session.targets.add_comm(*comm)?;
    }
    for rule in &config.targets.cgroups {
        session.targets.add_cgroup_rule(rule)?;
    }

    // Still single-threaded: safe to fork.
    let launched = if config.targets.command.is_empty() {
        None
    } else {
        launch::become_subreaper()?;
        Some(launch::launch(&config.targets.command)?)
    };
    let mut targets = config.targets.clone();
    if let Some(child) = &launched {
        targets.pids.push(child.pid.as_raw() as u32);
    }
    // Reading every /proc/PID/comm is only worth it when a --comm rule can match.
    let processes = if targets.comms.is_empty() {
        Vec::new()
    } else {
        scan_processes(Path::new("/proc"))
    };
    let members = crate::target::enlist(&targets, processes, |m| session.targets.add_members(m))?;

    let start_ns = monotonic_ns();
    let (runtime, stops) = runtime_with_stops()?;
    let stdout = std::io::stdout();
    let sink: Box<dyn Sink> = if config.json {
        Box::new(JsonLines::new(stdout))
    } else {
        Box::new(Human::new(stdout, start_ns))
    };
    let mut stream = Stream::new(sink, config.duration);
    // Every program is attached and the target set filled: say so (tests wait for this line).
    eprintln!(
        "chaos: observing {} process(es){}; Ctrl-C to stop",
        members.len(),
        if launched.is_some() {
            " and the launched command's tree"
        } else {
            ""
        }
    );
    let command_pid = launched.as_ref().map(|l| l.pid);
    let tree_gone = match launched {
        Some(child) => {
            child.release()?;
            Some(launch::watch_tree(None)?)
        }
        None => None,
    };
    let _context = runtime.enter();
    let source = session.ring_source()?;
    let mut driver = Driver::new(
        None,
        None,
        Setup {
            exporters,
            ..Setup::default()
        },
    );
    driver.feed(&mut stream, Input::Tick(Tick { ts_ns: start_ns }));
    let counters = runtime.block_on(async {
        export::serve(server)?;
        driver
            .run(&mut stream, source, stops, tree_gone)
            .await
            .map_err(|e| Failure::running(EXIT_FAILURE, e))
    })?;
    let summary = Summary {
        duration_ns: monotonic_ns().saturating_sub(start_ns),
        events: stream.counts.clone(),
        lost: counters.lost,
        targets_full: counters.targets_full,
        read_errors: counters.read_errors,
    };
    driver.exporters.lost(counters.lost);
    stream.finish(&summary);
    if counters.lost > 0 {
        eprintln!(
            "chaos: {} events were lost (the ring buffer was full)",
            counters.lost
        );
    }
    driver.exporters.finish();
    if let (Some(pid), Some(StopReason::Signal | StopReason::Deadline)) = (command_pid, stream.stop)
    {
        // The command chaos started outlived observation; end it (only that pid, ours).
        let _ = kill(pid, Sig::SIGTERM);
    }
    drop(driver);
    drop(session); // detaches every program
    match stream.error.take() {
        Some(e) => Err(Failure::running(EXIT_FAILURE, e)),
        None => Ok(0),
    }
}
