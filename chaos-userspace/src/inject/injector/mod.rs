//! The injector: the one engine that turns [`FaultSpec`]s into faults, for `chaos inject`
//! and `chaos run` alike. Pure: it is fed ticks, the candidates the driver gathered, the
//! outcome of each signal, seccomp notifications and the faults the kernel fired; it
//! answers with actions (`crate::machine`).
//!
//! It owns the schedules (with their seeded jitter and choice of target), the arming and
//! disarming of kernel rules (time windows, counts, the end), the seccomp decisions, the
//! escalations and thaws that follow a signal, the ledger with its proofs, and the audit
//! entry of every fault. What may be hit, and when a signal may go at all, is the caller's
//! say (`allowed`, `gate`): `chaos run` holds a signal while a recovery is open.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use jiff::{Timestamp, ZonedDateTime, tz::TimeZone};

use super::{
    Draws,
    ledger::Ledger,
    spec::{FaultSpec, Timing},
    window,
};
use crate::{
    audit::{
        Entry,
        entry::{self, RuleSwitch},
    },
    event::Event,
    fault::{FaultRecord, KernelRule, Role},
    machine::{Action, Candidate, Exported},
    sys::clock::Clock,
};

/// How long a signal that may not go yet waits before it looks again.
pub const RETRY: Duration = Duration::from_millis(100);

/// One signal fault's schedule.
#[derive(Debug)]
struct Schedule {
    spec: usize,
    /// Signals not yet sent.
    left: u32,
    /// When the next one is due.
    next: Option<u64>,
    /// The grid points after `next` ([`Timing::Grid`]).
    grid: Vec<u64>,
    draws: Draws,
    /// A gather is out and its candidates not back yet.
    gathering: bool,
}

/// A follow-up of a signal: SIGKILL if it did not take, SIGCONT after a freeze.
#[derive(Debug, Clone, Copy)]
enum Step {
    Escalate,
    Thaw,
}

/// An order given, waiting for its outcome.
#[derive(Debug)]
struct Pending {
    record: FaultRecord,
    exe: String,
    /// The schedule it belongs to (a first signal), or None (a follow-up).
    schedule: Option<usize>,
}

/// The process a signal pinned, for the escalation or thaw that follows it.
#[derive(Debug, Clone)]
struct Kept {
    target: Candidate,
    role: Option<Role>,
}

#[derive(Debug)]
struct RuleState {
    rule: KernelRule,
    spec: usize,
    armed: bool,
    fired: u32,
}

pub struct Injector {
    specs: Vec<FaultSpec>,
    dry_run: bool,
    clock: Clock,
    tz: TimeZone,
    schedules: Vec<Schedule>,
    rules: Vec<RuleState>,
    /// The calls the seccomp filter handed over, per process (hits and passes).
    intercepted: BTreeMap<u32, u64>,
    ledger: Ledger,
    pending: HashMap<u64, Pending>,
    /// Follow-ups due: (when, which, the order they follow).
    steps: Vec<(u64, Step, u64)>,
    /// What a follow-up needs of the fault it follows.
    pinned: HashMap<u64, Kept>,
    start_ns: u64,
    started: bool,
    stopped: bool,
}

impl Injector {
    /// `clock` and `tz` turn kernel time into the local time the windows are read in.
    pub fn new(specs: Vec<FaultSpec>, dry_run: bool, clock: Clock, tz: TimeZone) -> Self {
        let schedules = specs
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                f.schedule().map(|_| Schedule {
                    spec: i,
                    left: f.count.unwrap_or(1),
                    next: None,
                    grid: Vec::new(),
                    draws: Draws::new(f.seed),
                    gathering: false,
                })
            })
            .collect();
        let rules = specs
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                f.rule().map(|rule| RuleState {
                    rule,
                    spec: i,
                    armed: false,
                    fired: 0,
                })
            })
            .collect();
        Self {
            specs,
            dry_run,
            clock,
            tz,
            schedules,
            rules,
            intercepted: BTreeMap::new(),
            ledger: Ledger::default(),
            pending: HashMap::new(),
            steps: Vec::new(),
            pinned: HashMap::new(),
            start_ns: 0,
            started: false,
            stopped: false,
        }
    }

    pub fn specs(&self) -> &[FaultSpec] {
        &self.specs
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub(super) fn wall(&self, ts_ns: u64) -> ZonedDateTime {
        Timestamp::from_nanosecond(i128::from(self.clock.unix_ns(ts_ns)))
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned_datetime(self.tz.clone())
    }

    /// The next id a record gets: records are numbered 1, 2, ... as they are kept.
    fn next_id(&self) -> u64 {
        self.ledger.len() as u64 + self.pending.len() as u64 + 1
    }

    /// Injection begins at `now`: the schedules start, and the kernel rules whose windows
    /// are open are armed.
    pub fn start(&mut self, now: u64, out: &mut Vec<Action>) {
        self.started = true;
        self.start_ns = now;
        for s in &mut self.schedules {
            let spec = &self.specs[s.spec];
            let Some(plan) = spec.schedule() else {
                continue;
            };
            let jitter = |draws: &mut Draws| jitter_ns(draws, plan.jitter);
            match plan.timing {
                Timing::Grid => {
                    let mut grid: Vec<u64> = (0..s.left)
                        .map(|i| {
                            now + (plan.interval * (i + 1)).as_nanos() as u64 + jitter(&mut s.draws)
                        })
                        .collect();
                    grid.sort_unstable();
                    grid.reverse();
                    s.next = grid.pop();
                    s.grid = grid;
                }
                Timing::AfterPrevious => s.next = Some(now + jitter(&mut s.draws)),
            }
        }
        self.rules_at(now, out);
    }

    /// Time passed. `gate`: whether a signal may go now (`chaos run` holds them while a
    /// recovery is open).
    pub fn tick(&mut self, now: u64, gate: bool, out: &mut Vec<Action>) {
        if !self.started || self.stopped {
            return;
        }
        self.rules_at(now, out);
        self.follow_ups(now, out);
        let wall = self.wall(now);
        for i in 0..self.schedules.len() {
            let s = &self.schedules[i];
            let Some(at) = s.next else { continue };
            if at > now || s.gathering || s.left == 0 {
                continue;
            }
            let spec = &self.specs[s.spec];
            match window::until_open(&spec.windows, &wall) {
                Some(wait) if wait.is_zero() => {}
                Some(wait) => {
                    self.schedules[i].next = Some(now + wait.max(RETRY).as_nanos() as u64);
                    continue;
                }
                None => {
                    out.push(Action::Say(format!(
                        "chaos: fault {}: no window opens within a week; its signals are dropped",
                        spec.index
                    )));
                    self.schedules[i].next = None;
                    continue;
                }
            }
            if !gate {
                self.schedules[i].next = Some(now + RETRY.as_nanos() as u64);
                continue;
            }
            let s = &mut self.schedules[i];
            s.gathering = true;
            if spec.schedule().is_some_and(|p| p.timing == Timing::Grid) {
                s.next = s.grid.pop();
            }
            out.push(Action::Gather { fault: spec.index });
        }
    }

    /// A kernel event: the proof of a fault, or a process gone.
    pub fn event(&mut self, event: &Event, out: &mut Vec<Action>) {
        if let Some((record, proof)) = self.ledger.observe(event) {
            out.push(Action::Export(Exported::Proof(record, proof)));
        }
    }

    /// Stops every fault at once: no further signal, every armed rule disarmed with
    /// `reason` in the audit log.
    pub fn stop(&mut self, reason: &str, out: &mut Vec<Action>) {
        self.stopped = true;
        for s in &mut self.schedules {
            s.next = None;
            s.grid.clear();
        }
        self.steps.clear();
        for r in &mut self.rules {
            if r.armed {
                r.armed = false;
                let spec = &self.specs[r.spec];
                out.push(Action::Disarm(r.rule));
                out.push(Action::Audit(Entry::Disarmed(RuleSwitch {
                    fault: spec.index,
                    rule: spec.describe(),
                    reason: Some(reason.into()),
                })));
            }
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Every scheduled signal went out (or can no longer), with its follow-ups.
    pub fn signals_done(&self) -> bool {
        self.schedules
            .iter()
            .all(|s| (s.left == 0 || s.next.is_none()) && !s.gathering)
            && self.steps.is_empty()
            && self.pending.is_empty()
    }

    /// Every kernel rule fired its count (a rule without one is never done).
    pub fn rules_done(&self) -> bool {
        self.rules
            .iter()
            .all(|r| self.specs[r.spec].count.is_some_and(|c| r.fired >= c))
    }

    /// Whether any fault is a userspace signal schedule.
    pub fn has_schedules(&self) -> bool {
        !self.schedules.is_empty()
    }

    /// Scheduled signals that never went out.
    pub fn unfired(&self) -> u32 {
        self.schedules.iter().map(|s| s.left).sum()
    }

    /// When a schedule or a follow-up is next due.
    pub fn wake_at(&self) -> Option<u64> {
        let schedules = self
            .schedules
            .iter()
            .filter(|s| !s.gathering && s.left > 0)
            .filter_map(|s| s.next);
        let steps = self.steps.iter().map(|(at, ..)| *at);
        schedules.chain(steps).min()
    }
}

fn jitter_ns(draws: &mut Draws, jitter: Duration) -> u64 {
    if jitter.is_zero() {
        0
    } else {
        draws.below(jitter.as_nanos() as u64 + 1)
    }
}

/// The audit log's entry for a fault.
pub fn audit_fault(record: &FaultRecord, exe: &str, reported: bool) -> Entry {
    Entry::Fault(entry::Fault {
        id: record.id,
        pid: record.pid,
        exe: exe.into(),
        comm: record.comm.clone(),
        role: record.role,
        ppid: record.ppid,
        fault: record.kind,
        value: record.value.clone(),
        syscall: record.syscall.clone(),
        nth: record.nth,
        backend: record.backend,
        dry_run: record.dry_run,
        reported_by_kernel: reported,
    })
}

mod kernel;
mod signals;
#[cfg(test)]
mod tests;
