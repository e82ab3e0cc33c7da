//! `chaos observe`: stream events of a target set.
//!
//! Order matters for "no event missed, nothing half-done": arguments are checked, the kernel
//! probed and the programs attached first; only then is `-- CMD` forked (still single-threaded,
//! held at a barrier), the target set filled, and CMD released.

use std::{path::Path, time::Duration};

use nix::sys::signal::{Signal as Sig, kill};
use tokio::sync::oneshot;

use super::common::{
    Stops, after, monotonic_ns, positive_secs, ring_bytes, runtime_with_stops, when_gone,
};
use crate::{
    bpf::{Programs, counts_unsynced, hooks, ring::RingSource},
    cli::ObserveArgs,
    error::Error,
    event::{Event, EventCounts, Summary},
    export::{self, ExportConfig, Tee},
    kernel::{
        btf::KernelBtf,
        layout::{Ext4Hooks, FsyncHook, HookSet, discover},
        preflight,
    },
    launch,
    output::{Sink, human::Human, jsonl::JsonLines},
    source::EventSource,
    target::{TargetSpec, Targets, initial_members, scan_cgroups, scan_processes},
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
    pub fn from_args(args: ObserveArgs) -> Result<Self, Error> {
        let spec = TargetSpec {
            pids: args.pids,
            follow: !args.no_follow,
            comms: args.comms,
            cgroups: args.cgroups,
            command: args.command,
        };
        let duration = args
            .duration
            .map(|secs| positive_secs("--duration", secs))
            .transpose()?;
        let ring_bytes = ring_bytes(args.buffer_pages)?;
        let export = ExportConfig::from_args(&args.export)?;
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

pub fn run(args: ObserveArgs) -> Result<(), Error> {
    let config = ObserveConfig::from_args(args)?;
    let env = preflight::check()?;
    let (exporters, server) = export::shared(&config.export)?;
    let btf = KernelBtf::load(&env.btf_path)?;
    // Listening sockets cost nothing to watch; reaping needs a syscall tracepoint (measure only).
    let set = HookSet {
        listen: true,
        ..HookSet::observe(config.fsync)
    };
    let layout = discover(&env.tracefs, &btf, set)?;
    let ext4 = Ext4Hooks::probe(&env.tracefs);
    if config.fsync == FsyncHook::Fs && !ext4.sync {
        log::warn!(
            "no ext4 sync tracepoints on this kernel: fsync events need --fsync-hook syscalls"
        );
    }

    let mut programs = Programs::load(&layout, config.ring_bytes)?;
    let hooks = hooks(set, &ext4);
    programs.attach(&hooks)?;
    let unsynced = counts_unsynced(&hooks);
    log::info!(
        "attached: {}",
        hooks
            .iter()
            .map(|h| h.describe())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut target_set = programs.target_set()?;
    for comm in &config.targets.comms {
        target_set.add_comm(*comm)?;
    }
    for id in config.targets.cgroups.iter().flat_map(|c| &c.ids) {
        target_set.add_cgroup(*id)?;
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
    let members = initial_members(&targets, processes, scan_cgroups(&targets.cgroups));
    target_set.add_members(&members)?;

    let start_ns = monotonic_ns();
    let (ring, counters) = (programs.ring()?, programs.counters()?);
    let logs = programs.logger();
    let (runtime, stops) = runtime_with_stops()?;
    let stdout = std::io::stdout().lock();
    let mut sink: Box<dyn Sink> = if config.json {
        Box::new(JsonLines::new(stdout))
    } else {
        Box::new(Human::new(stdout, start_ns))
    };
    if !exporters.borrow().is_empty() {
        sink = Box::new(Tee {
            inner: sink,
            exporters: exporters.clone(),
        });
    }
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
    let stop = runtime.block_on(async {
        export::serve(server)?;
        let source = RingSource::new(ring, counters, logs, unsynced)?;
        stream(source, sink, start_ns, stops, config.duration, tree_gone).await
    })?;
    export::finish(&exporters);
    if let (Some(pid), StopReason::Signal | StopReason::Deadline) = (command_pid, stop) {
        // The command chaos started outlived observation; end it (only that pid, ours).
        let _ = kill(pid, Sig::SIGTERM);
    }
    drop(programs); // detaches every program
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Signal,
    Deadline,
    TreeGone,
    SourceEnded,
    OutputClosed,
}

/// Moves events from `source` to `sink` until a stop condition, then writes the summary.
async fn stream(
    mut source: impl EventSource,
    mut sink: Box<dyn Sink>,
    start_ns: u64,
    mut stops: Stops,
    duration: Option<Duration>,
    tree_gone: Option<oneshot::Receiver<()>>,
) -> Result<StopReason, Error> {
    let deadline = after(duration);
    let gone = when_gone(tree_gone);
    tokio::pin!(deadline, gone);

    let mut counts = EventCounts::default();
    let mut batch = Vec::new();
    let stop = loop {
        let reason = tokio::select! {
            more = source.next_batch(&mut batch) => (!more?).then_some(StopReason::SourceEnded),
            () = stops.recv() => Some(StopReason::Signal),
            () = &mut deadline => Some(StopReason::Deadline),
            () = &mut gone => Some(StopReason::TreeGone),
        };
        if reason.is_some() {
            // Whatever the kernel committed before we stopped still belongs to the run.
            source.drain(&mut batch)?;
        }
        if !emit(&mut sink, &mut batch, &mut counts)? {
            break StopReason::OutputClosed;
        }
        if let Some(reason) = reason {
            break reason;
        }
    };
    let counters = source.counters();
    let summary = Summary {
        duration_ns: monotonic_ns().saturating_sub(start_ns),
        events: counts,
        lost: counters.lost,
        targets_full: counters.targets_full,
        read_errors: counters.read_errors,
    };
    if stop != StopReason::OutputClosed {
        sink.summary(&summary).map_err(Error::Output)?;
    }
    if counters.lost > 0 {
        eprintln!(
            "chaos: {} events were lost (the ring buffer was full)",
            counters.lost
        );
    }
    Ok(stop)
}

/// Writes a batch; false when the reader went away (a closed pipe is a normal way to stop).
fn emit(
    sink: &mut Box<dyn Sink>,
    batch: &mut Vec<Event>,
    counts: &mut EventCounts,
) -> Result<bool, Error> {
    for event in batch.drain(..) {
        counts.add(&event);
        match sink.event(&event) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
            Err(err) => return Err(Error::Output(err)),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::Fork, output::SharedBuf, source::ReplaySource};

    #[test]
    fn replayed_stream_reaches_the_sink_with_a_summary() {
        let text = "{\"type\":\"fork\",\"data\":{\"ts_ns\":1,\"parent_pid\":2,\"child_pid\":3}}\n";
        let source = ReplaySource::from_reader(Path::new("r"), text.as_bytes()).unwrap();
        let out = SharedBuf::default();
        let sink = Box::new(JsonLines::new(out.clone()));
        let (rt, stops) = runtime_with_stops().unwrap();
        let stop = rt
            .block_on(stream(source, sink, 0, stops, None, None))
            .unwrap();
        assert_eq!(stop, StopReason::SourceEnded);
        let text = out.text();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            serde_json::from_str::<Event>(lines[0]).unwrap(),
            Event::Fork(Fork {
                ts_ns: 1,
                parent_pid: 2,
                child_pid: 3
            })
        );
        assert!(
            lines[1].starts_with("{\"type\":\"summary\""),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("\"fork\":1"));
    }
}
