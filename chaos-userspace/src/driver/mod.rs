//! The driver: it carries out the actions of an engine (`crate::machine`) for every
//! command, and feeds it its inputs: kernel events from the ring buffer, the passing of time,
//! probe and verify results, seccomp notifications, Ctrl-C, the end of a launched command,
//! and the outcome of each action it carried out. It also feeds the exporters, records the
//! inputs (`--record`) and shows the engine's lines to the operator.
//!
//! Everything the engine learns from the machine goes through [`Driver::feed`], so a
//! recording of those inputs replays the engine exactly ([`replay`]).

mod act;
pub mod console;
pub mod probe;
pub mod verify;

use std::{
    collections::{HashMap, VecDeque},
    io::Write,
    os::fd::{AsRawFd as _, OwnedFd},
    path::Path,
    time::Duration,
};

use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, oneshot},
    task::AbortHandle,
};

use crate::{
    audit::AuditLog,
    bpf::{FaultMaps, TargetSet, ring::RingSource},
    event::{Event, KernelCounters},
    export::Exporters,
    inject::{
        signal::Pinned,
        watchdog::{FromWatchdog, Watchdog},
    },
    machine::{
        Action, Input, KernelFault, Machine, Notification, Passed, Readiness, ReadyMark, Response,
        StopCause, Tick, Verified,
        record::{End, Header, Recorder},
    },
    source::{EventSource, SourceError},
    sys::{clock::monotonic_ns, stops::Stops},
    target::{
        denylist::Denylist,
        proc::{comm_of, exe_of},
    },
};
use console::Console;
use verify::VerifyCommand;

/// How often time is fed to the engine when no event comes (deadlines, windows).
pub const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What the driver needs beyond the kernel's maps.
#[derive(Default)]
pub struct Setup<'a> {
    pub audit: Option<AuditLog>,
    pub exporters: Exporters,
    pub console: Console,
    /// How readiness is probed (`tcp:`, `cmd:`), for how long, as whom.
    pub probe: Option<probe::Probe>,
    pub verify: Option<VerifyCommand>,
    pub watchdog: Option<&'a Watchdog>,
    /// The seccomp listener's copy chaos keeps, to check notifications are still valid.
    pub listener: Option<OwnedFd>,
    pub recorder: Option<Recorder<Box<dyn Write>>>,
    /// Read each candidate's title (its command line) for rules that match on it; off
    /// otherwise, so that arguments are not recorded for nothing.
    pub titles: bool,
    /// Watch this systemd unit's state over D-Bus (`--unit`).
    pub unit: Option<crate::systemd::UnitInfo>,
    /// The disk power cuts cut (`kind = "power_loss"`).
    pub power: Option<&'a crate::power::Disk>,
}

pub struct Driver<'a> {
    faults: Option<&'a mut FaultMaps>,
    targets: Option<&'a TargetSet>,
    audit: Option<AuditLog>,
    /// Set once the audit log failed: nothing more may be injected.
    audit_broken: bool,
    pub exporters: Exporters,
    pub console: Console,
    probe: Option<probe::Probe>,
    verify: Option<VerifyCommand>,
    watchdog: Option<&'a Watchdog>,
    listener: Option<OwnedFd>,
    recorder: Option<Recorder<Box<dyn Write>>>,
    titles: bool,
    unit: Option<crate::systemd::UnitInfo>,
    power: Option<&'a crate::power::Disk>,
    denylist: Denylist,
    /// pidfds kept for a later order (escalation, thaw), by the order that pinned them.
    pinned: HashMap<u64, Pinned>,
    /// Orders whose process the watchdog was told is frozen and not yet thawed.
    frozen: Vec<u64>,
    probes: HashMap<u64, AbortHandle>,
    ready_tx: mpsc::UnboundedSender<ReadyMark>,
    ready_rx: mpsc::UnboundedReceiver<ReadyMark>,
    verify_tx: mpsc::UnboundedSender<Verified>,
    verify_rx: mpsc::UnboundedReceiver<Verified>,
    watches: HashMap<u64, AbortHandle>,
    watch_tx: mpsc::UnboundedSender<Readiness>,
    watch_rx: mpsc::UnboundedReceiver<Readiness>,
    verifies_running: u32,
    queue: VecDeque<Input>,
    stopping: bool,
    /// The first action that failed, for the command's message.
    pub failure: Option<String>,
}

impl<'a> Driver<'a> {
    pub fn new(
        faults: Option<&'a mut FaultMaps>,
        targets: Option<&'a TargetSet>,
        setup: Setup<'a>,
    ) -> Self {
        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        let (verify_tx, verify_rx) = mpsc::unbounded_channel();
        let (watch_tx, watch_rx) = mpsc::unbounded_channel();
        Self {
            faults,
            targets,
            audit: setup.audit,
            audit_broken: false,
            exporters: setup.exporters,
            console: setup.console,
            probe: setup.probe,
            verify: setup.verify,
            watchdog: setup.watchdog,
            listener: setup.listener,
            recorder: setup.recorder,
            titles: setup.titles,
            unit: setup.unit,
            power: setup.power,
            denylist: Denylist::new(Path::new("/proc")),
            pinned: HashMap::new(),
            frozen: Vec::new(),
            probes: HashMap::new(),
            ready_tx,
            ready_rx,
            verify_tx,
            verify_rx,
            watches: HashMap::new(),
            watch_tx,
            watch_rx,
            verifies_running: 0,
            queue: VecDeque::new(),
            stopping: false,
            failure: None,
        }
    }

    /// The seccomp listener chaos keeps a copy of (once the launched command installed it).
    pub fn set_listener(&mut self, listener: OwnedFd) {
        self.listener = Some(listener);
    }

    /// Whether the engine asked to stop.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// The audit log, for the command's last entry.
    pub fn audit(&mut self) -> Option<&mut AuditLog> {
        self.audit.as_mut()
    }

    /// Feeds one input, then every input its actions produce, in order.
    pub fn feed(&mut self, machine: &mut impl Machine, input: Input) {
        self.queue.push_back(input);
        let mut actions = Vec::new();
        while let Some(input) = self.queue.pop_front() {
            machine.feed(&input, &mut actions);
            let quiet = matches!(input, Input::Tick(_)) && actions.is_empty();
            if let (Some(recorder), false) = (
                self.recorder.as_mut(),
                quiet && !machine.quiet_ticks_matter(),
            ) && let Err(e) = recorder.input(&input)
            {
                log::warn!("cannot write the recording: {e}");
                self.recorder = None;
            }
            for action in actions.drain(..) {
                self.act(action);
            }
        }
    }

    /// A kernel event: to the exporters, then to the engine (a fault the kernel fired
    /// carries what /proc says of its target).
    fn event(&mut self, machine: &mut impl Machine, event: Event) {
        self.exporters.event(&event);
        if let (Some(dog), Some(_), Event::Exit(x)) = (self.watchdog, &self.listener, &event) {
            // Fails only once the watchdog is gone, with nothing left to decide.
            let _ = dog.exited(x.pid);
        }
        let input = match event {
            Event::Inject(e) => Input::KernelFault(KernelFault {
                comm: comm_of(e.pid),
                exe: exe_of(e.pid),
                ppid: crate::target::proc::stat(Path::new("/proc"), e.pid).map_or(0, |s| s.ppid),
                event: e,
            }),
            other => Input::Event(other),
        };
        self.feed(machine, input);
    }

    /// Feeds kernel events, time, results and signals until the engine stops (or the
    /// source ends); returns the kernel's counters.
    pub async fn run(
        &mut self,
        machine: &mut impl Machine,
        mut source: RingSource,
        mut stops: Stops,
        tree_gone: Option<oneshot::Receiver<()>>,
    ) -> Result<KernelCounters, DriveError> {
        let gone = async {
            match tree_gone {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(gone);
        let notifications = match (self.watchdog, &self.listener) {
            (Some(dog), Some(_)) => Some(
                // SAFETY: the fd belongs to the watchdog handle, which outlives this AsyncFd
                // (dropped at the end of this function).
                unsafe { AsyncFd::register_with_interest(dog.socket(), Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)
                    .map_err(|source| DriveError::Io {
                        what: "cannot watch the watchdog socket",
                        source,
                    })?,
            ),
            _ => None,
        };
        // The unit's state, from systemd itself, on a connection of its own.
        let (unit_tx, mut unit_rx) = mpsc::unbounded_channel();
        let unit_task = self.unit.clone().map(|unit| {
            tokio::spawn(async move {
                match crate::systemd::connect(&unit.name).await {
                    Ok(conn) => crate::systemd::watch(conn, unit.path, unit_tx).await,
                    Err(e) => {
                        let _ = unit_tx.send(Err(e.to_string()));
                    }
                }
            })
        });
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::new();
        let mut gone_seen = false;
        while !self.stopping {
            let wake = machine.wake_at().map(|at| {
                let now = monotonic_ns();
                tokio::time::Instant::now() + Duration::from_nanos(at.saturating_sub(now))
            });
            let mut extra: Option<Input> = None;
            let mut ended = false;
            tokio::select! {
                more = source.next_batch(&mut batch) => ended = !more?,
                Some(mark) = self.ready_rx.recv() => extra = Some(Input::Ready(mark)),
                Some(seen) = self.watch_rx.recv() => extra = Some(Input::Readiness(seen)),
                Some(state) = unit_rx.recv() => {
                    // What the kernel saw before systemd said so comes first.
                    source.drain(&mut batch)?;
                    match state {
                        Ok(state) => extra = Some(Input::Unit(state)),
                        Err(why) => self.fail(format!("systemd: {why}")),
                    }
                }
                Some(v) = self.verify_rx.recv() => {
                    self.verifies_running -= 1;
                    extra = Some(Input::Verified(v));
                }
                readable = async {
                    match &notifications {
                        Some(fd) => fd.readable().await.map(Some),
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(mut guard) = readable.map_err(|source| DriveError::Io {
                        what: "watchdog socket",
                        source,
                    })? {
                        guard.clear_ready();
                        source.drain(&mut batch)?;
                        for event in batch.drain(..) {
                            self.event(machine, event);
                        }
                        self.notifications(machine);
                    }
                }
                _ = tick.tick() => {
                    // Events already in the ring buffer happened before now: they go
                    // first, or a deadline could pass over the event that met it.
                    source.drain(&mut batch)?;
                    extra = Some(Input::Tick(Tick { ts_ns: monotonic_ns() }));
                    self.exporters.lost(source.counters().lost);
                    if let Err(e) = self.exporters.tick() {
                        log::warn!("export: {}", crate::sys::chain(&e));
                    }
                }
                () = async {
                    match wake {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    source.drain(&mut batch)?;
                    extra = Some(Input::Tick(Tick { ts_ns: monotonic_ns() }));
                }
                () = stops.recv() => {
                    source.drain(&mut batch)?;
                    extra = Some(Input::Stop(StopCause::Interrupted));
                }
                () = &mut gone, if !gone_seen => {
                    gone_seen = true;
                    source.drain(&mut batch)?;
                    extra = Some(Input::Stop(StopCause::TreeGone));
                }
            }
            for event in batch.drain(..) {
                self.event(machine, event);
            }
            if let Some(input) = extra {
                self.feed(machine, input);
            }
            if ended {
                break;
            }
            if let Some(recorder) = &mut self.recorder {
                let _ = recorder.flush();
            }
        }
        if let Some(task) = unit_task {
            task.abort();
        }
        // What the kernel committed before the stop still belongs to the run.
        source.drain(&mut batch)?;
        for event in batch.drain(..) {
            self.event(machine, event);
        }
        self.last_batch(machine);
        self.settle();
        Ok(source.counters())
    }

    /// Reads and hands over what the watchdog sent: the hits it decided (with what /proc
    /// says of their process), the counts of the calls it let pass. Returns whether it said
    /// it stopped deciding (or is gone).
    fn notifications(&mut self, machine: &mut impl Machine) -> bool {
        let Some(dog) = self.watchdog else {
            return true;
        };
        let proc = Path::new("/proc");
        loop {
            let message = match dog.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    self.fail(format!("cannot read from the watchdog: {e}"));
                    return true;
                }
            };
            let (notif, tgid, nth, path) = match message {
                FromWatchdog::Hit {
                    notif,
                    tgid,
                    nth,
                    path,
                } => (notif, tgid, nth, path),
                FromWatchdog::Passed(calls) => {
                    let ts_ns = monotonic_ns();
                    self.feed(machine, Input::Passed(Passed { ts_ns, calls }));
                    continue;
                }
                FromWatchdog::Stopped => return true,
            };
            if let Some(listener) = &self.listener
                && !crate::inject::watchdog::id_valid(listener.as_raw_fd(), notif.id)
            {
                // The caller died or was interrupted while the watchdog asked: nothing to
                // fail.
                let _ = dog.respond(notif.id, Response::Continue);
                continue;
            }
            let ts_ns = monotonic_ns();
            self.feed(
                machine,
                Input::Notification(Notification {
                    id: notif.id,
                    ts_ns,
                    tid: notif.pid,
                    tgid,
                    nth,
                    ppid: crate::target::proc::stat(proc, tgid).map_or(0, |s| s.ppid),
                    comm: comm_of(tgid),
                    exe: exe_of(tgid),
                    path,
                }),
            );
        }
    }

    /// The engine stopped: the watchdog stops deciding and sends the counts it still
    /// holds, so that the summary has every intercepted call.
    fn last_batch(&mut self, machine: &mut impl Machine) {
        let (Some(dog), Some(_)) = (self.watchdog, &self.listener) else {
            return;
        };
        // It may be gone already (the last filtered process exited): what it sent before
        // going is still to be read.
        let _ = dog.stop_deciding();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let mut fd = libc::pollfd {
                fd: dog.socket(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut fd, 1, 100) } < 0 {
                continue;
            }
            if self.notifications(machine) {
                return;
            }
        }
        log::warn!("the watchdog sent no last count of the calls it let pass");
    }

    /// An action failed: nothing more may be injected; the engine is told to stop.
    fn fail(&mut self, why: String) {
        log::warn!("{why}");
        self.failure.get_or_insert(why.clone());
        self.queue.push_back(Input::Stop(StopCause::Failure(why)));
    }

    /// The run is over: probes stop, frozen processes are thawed now rather than left to
    /// the watchdog.
    fn settle(&mut self) {
        for (_, probe) in self.probes.drain().chain(self.watches.drain()) {
            probe.abort();
        }
        for id in std::mem::take(&mut self.frozen) {
            if let Some(p) = self.pinned.get(&id) {
                let _ = p.send(nix::sys::signal::Signal::SIGCONT);
                if let Some(dog) = self.watchdog {
                    let _ = dog.thawed(p.pid);
                }
            }
        }
        self.console.finish();
    }

    /// Ends the recording with the end mark.
    pub fn end_recording(&mut self, end: &End) {
        if let Some(recorder) = self.recorder.take()
            && let Err(e) = recorder.end(end)
        {
            log::warn!("cannot end the recording: {e}");
        }
    }
}

/// Feeds a recording's inputs to an engine, as the driver fed them live: only the exporters
/// are served (nothing touches the machine). Returns the recording's end, or, for one cut
/// short, its last input's time.
pub fn replay(
    machine: &mut impl Machine,
    inputs: Vec<Input>,
    end: Option<End>,
    path: &Path,
    exporters: &mut Exporters,
) -> End {
    let last_ns = inputs.iter().rev().find_map(Input::ts_ns).unwrap_or(0);
    let mut actions = Vec::new();
    for input in inputs {
        machine.feed(&input, &mut actions);
        for action in actions.drain(..) {
            if let Action::Export(item) = action {
                exporters.export(&item);
            }
        }
    }
    end.unwrap_or_else(|| {
        eprintln!(
            "chaos: {}: the recording has no end mark (cut short); replaying to its last line",
            path.display()
        );
        End {
            ts_ns: last_ns,
            counters: KernelCounters::default(),
        }
    })
}

/// The header type a recording is written with, for commands that record.
pub fn recorder<H: Header>(path: &Path, header: &H) -> std::io::Result<Recorder<Box<dyn Write>>> {
    let file: Box<dyn Write> = Box::new(std::io::BufWriter::new(crate::sys::trust::create_output(
        path,
    )?));
    Recorder::new(file, header)
}
