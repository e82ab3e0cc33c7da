//! The protocol between the engines and the driver: what goes in ([`Input`]), what comes out
//! ([`Action`]), and the [`Machine`] every engine implements.
//!
//! An engine (observe's stream, measure's episodes, inject's injector, run's experiment) has
//! no clock, no file and no socket of its own. Kernel events, probe results, clock ticks and
//! the outcome of each action go in as inputs; what the engine wants done comes out as
//! actions: arm or disarm a kernel rule, gather the processes a signal may hit, signal one,
//! answer a seccomp notification, write the audit log, probe readiness, run verify, report
//! to the exporters, stop. `crate::driver` carries the actions out for every command, live,
//! and a recording of the inputs replays the same run without root ([`record`]).
//!
//! Everything an action learns from the machine (a process's start time, whether a signal
//! was sent, when) comes back as an input, so that the inputs alone decide what an engine
//! does.

pub mod record;

use serde::{Deserialize, Serialize};

use crate::{
    audit::{Entry, entry::VerifyWhen},
    episode::{Episode, Holder, Orphan},
    event::{Event, Inject},
    fault::{FaultRecord, KernelRule, Proof},
};

/// Time passed (CLOCK_MONOTONIC ns): deadlines, schedules and windows move with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub ts_ns: u64,
}

/// A readiness probe succeeded (userspace CLOCK_MONOTONIC, when the attempt began).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyMark {
    pub episode: u64,
    pub ts_ns: u64,
    /// Not empty: it passed, but the service's ports were held by these processes only,
    /// none of them the new instance (or its descendant); probing goes on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<Holder>,
}

/// What a readiness watch saw after a fault: readiness `ok` at `ts_ns` (the first result,
/// then each change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub fault: u64,
    pub ts_ns: u64,
    pub ok: bool,
}

/// What the driver found of a dead instance's orphans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspected {
    pub episode: u64,
    pub orphans: Vec<Orphan>,
}

/// A process of the target set that a signal may hit, as /proc showed it when asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub exe: Option<String>,
    /// Its command line, read only when a rule matches on titles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// With the pid, names the process (a reused pid has another start time).
    pub start_ticks: u64,
}

/// The live, not denied, members of the target set, gathered for fault `fault`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidates {
    pub fault: usize,
    pub ts_ns: u64,
    pub procs: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum SendOutcome {
    /// The signal was sent (or, in a dry run, would have been).
    Sent,
    /// The process had already exited (an escalation that was not needed).
    Gone,
    /// The kernel refused: the process is gone or was replaced.
    Failed(String),
}

/// What became of a [`Order`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub id: u64,
    /// CLOCK_MONOTONIC just before the signal went out.
    pub ts_ns: u64,
    #[serde(flatten)]
    pub outcome: SendOutcome,
}

/// A call the seccomp filter handed over that the watchdog decided to hit, read by the
/// driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: u64,
    pub ts_ns: u64,
    pub tid: u32,
    pub tgid: u32,
    /// Which candidate call of its process it is (the watchdog's count, from 1).
    pub nth: u32,
    /// The process's parent (0 when gone).
    #[serde(default)]
    pub ppid: u32,
    pub comm: String,
    pub exe: String,
    /// The path argument, when the fault filters on one and it could be read.
    pub path: Option<String>,
}

/// The calls the seccomp filter handed over that the watchdog let pass since its last
/// batch, per process: (tgid, calls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passed {
    pub ts_ns: u64,
    pub calls: Vec<(u32, u32)>,
}

/// A fault the kernel fired on its own, with what /proc said of its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFault {
    pub event: Inject,
    pub comm: String,
    pub exe: String,
    /// Its parent when the fault fired (0 when gone).
    #[serde(default)]
    pub ppid: u32,
}

/// A power cut, as the driver carried it out for fault `id` (`crate::power::Cut`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerCut {
    pub id: u64,
    #[serde(flatten)]
    pub cut: crate::power::Cut,
}

impl PowerCut {
    /// Its last step's time.
    pub fn ts_ns(&self) -> u64 {
        let c = &self.cut;
        c.thawed_ns
            .or(c.remounted_ns)
            .or(c.cut_ns)
            .unwrap_or(c.freeze_ns)
    }
}

/// A verify run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub when: VerifyWhen,
    pub episode: Option<u64>,
    pub passed: bool,
    pub detail: Option<String>,
}

/// Why the driver asks the engine to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", content = "detail", rename_all = "snake_case")]
pub enum StopCause {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The launched command's whole process tree is gone.
    TreeGone,
    /// The reader of the output went away.
    OutputClosed,
    /// An action could not be carried out (the audit log, a kernel map): nothing more may
    /// be injected.
    Failure(String),
}

/// One input of an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Event(Event),
    Ready(ReadyMark),
    Tick(Tick),
    Candidates(Candidates),
    Sent(Sent),
    Notification(Notification),
    Passed(Passed),
    KernelFault(KernelFault),
    Verified(Verified),
    /// What a power cut did (after its fault's [`Input::Sent`]).
    PowerCut(PowerCut),
    Inspected(Inspected),
    Readiness(Readiness),
    /// The systemd unit's state changed (`--unit`).
    Unit(crate::systemd::UnitState),
    Stop(StopCause),
}

impl Input {
    /// The input's time, where it has one.
    pub fn ts_ns(&self) -> Option<u64> {
        match self {
            Input::Event(e) => Some(e.ts_ns()),
            Input::Ready(r) => Some(r.ts_ns),
            Input::Tick(t) => Some(t.ts_ns),
            Input::Candidates(c) => Some(c.ts_ns),
            Input::Sent(s) => Some(s.ts_ns),
            Input::Notification(n) => Some(n.ts_ns),
            Input::Passed(p) => Some(p.ts_ns),
            Input::KernelFault(k) => Some(k.event.ts_ns),
            Input::Readiness(r) => Some(r.ts_ns),
            Input::Unit(u) => Some(u.ts_ns),
            Input::PowerCut(p) => Some(p.ts_ns()),
            Input::Verified(_) | Input::Inspected(_) | Input::Stop(_) => None,
        }
    }
}

/// Which process an [`Order`] signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// The process chosen now: the driver opens a pidfd and checks the start time first.
    Fresh { pid: u32, start_ticks: u64 },
    /// The process an earlier order (its id) pinned and kept.
    Kept { of: u64 },
}

/// What the watchdog is told about a signal, so that it can undo it if chaos dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogNote {
    Frozen,
    Thawed,
}

/// Send one signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// The fault's id in the ledger.
    pub id: u64,
    pub pin: Pin,
    pub signal: i32,
    pub dry_run: bool,
    /// Send only if the process is still alive ([`SendOutcome::Gone`] otherwise, and no
    /// audit entry).
    pub only_if_alive: bool,
    /// Keep the pidfd: a later order refers to it by this id.
    pub keep: bool,
    pub watchdog: Option<WatchdogNote>,
    /// A power cut around the SIGKILL (`crate::power`): the driver follows its
    /// [`Input::Sent`] with an [`Input::PowerCut`].
    pub power: bool,
    /// Written (and fsynced) before the signal is sent.
    pub audit: Entry,
}

/// How a seccomp notification is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Let the call run.
    Continue,
    /// Fail it with this errno; the call does not run.
    Fail(i32),
}

/// Answer one seccomp notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: u64,
    pub response: Response,
    /// Send this signal to this process first (`--before`).
    pub signal: Option<(u32, i32)>,
    /// Written (and fsynced) before the answer.
    pub audit: Option<Entry>,
}

impl Answer {
    /// Let the call run, with nothing to record.
    pub fn pass(id: u64) -> Self {
        Self {
            id,
            response: Response::Continue,
            signal: None,
            audit: None,
        }
    }
}

/// What the exporters (and any other sink the driver feeds) are told.
#[derive(Debug, Clone, PartialEq)]
pub enum Exported {
    Fault(FaultRecord),
    /// The fault was proven by a kernel event.
    Proof(FaultRecord, Proof),
    Episode(Box<Episode>),
}

/// One action an engine asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Arm(KernelRule),
    Disarm(KernelRule),
    /// Find the processes fault `fault` may hit now; answer with [`Input::Candidates`].
    Gather {
        fault: usize,
    },
    Signal(Order),
    Answer(Answer),
    Audit(Entry),
    /// Probe the readiness of this episode's replacement (`new_pid`); answer with
    /// [`Input::Ready`].
    Probe {
        episode: u64,
        new_pid: Option<u32>,
    },
    /// Look at what these processes (a dead instance's orphans) hold: listening ports, and
    /// files under `data_dir`; answer with [`Input::Inspected`].
    Inspect {
        episode: u64,
        pids: Vec<(u32, String)>,
        data_dir: Option<std::path::PathBuf>,
    },
    /// Watch readiness after fault `fault` until `until_ns` (or [`Action::EndWatch`]):
    /// answer with [`Input::Readiness`], the first result and each change.
    Watch {
        fault: u64,
        until_ns: u64,
    },
    EndWatch {
        fault: u64,
    },
    /// The episode ended: its probe may stop.
    EndProbe {
        episode: u64,
    },
    /// Run the verify command; answer with [`Input::Verified`].
    Verify {
        when: VerifyWhen,
        episode: Option<u64>,
    },
    Export(Exported),
    /// A line for the operator (stderr, above a progress bar).
    Say(String),
    /// The state of a long run, for a progress bar.
    Progress(Progress),
    /// The engine is done: the driver takes what the kernel still holds, then ends.
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub faults: u64,
    pub message: String,
}

/// An engine: inputs in, actions out.
pub trait Machine {
    /// Feeds one input; pushes what should be done.
    fn feed(&mut self, input: &Input, out: &mut Vec<Action>);

    /// The CLOCK_MONOTONIC time at which the engine next wants a tick, if sooner than the
    /// driver's regular ones (a scheduled signal).
    fn wake_at(&self) -> Option<u64> {
        None
    }

    /// Whether a tick that asked for nothing belongs in a recording (it may have moved a
    /// timer that a later input depends on). `chaos measure` keeps only the ticks that
    /// ended an episode.
    fn quiet_ticks_matter(&self) -> bool {
        true
    }
}
