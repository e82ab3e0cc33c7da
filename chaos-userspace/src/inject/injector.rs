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

use std::{collections::HashMap, time::Duration};

use jiff::{Timestamp, ZonedDateTime, tz::TimeZone};
use nix::sys::signal::Signal;

use super::{
    Draws,
    ledger::Ledger,
    seccomp::{self, Decider},
    spec::{FaultAction, FaultSpec, SignalSchedule, Timing},
    window,
};
use crate::{
    audit::{
        Entry,
        entry::{self, RuleSwitch},
    },
    event::{Event, errno_name, signal_name},
    fault::{Backend, FaultKind, FaultRecord, KernelRule},
    machine::{
        Action, Answer, Candidate, Candidates, KernelFault, Notification, Order, Pin, Report,
        SendOutcome, Sent, Verdict, WatchdogNote,
    },
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
    decider: Decider,
    ledger: Ledger,
    pending: HashMap<u64, Pending>,
    /// Follow-ups due: (when, which, the order they follow).
    steps: Vec<(u64, Step, u64)>,
    /// What a follow-up needs of the fault it follows: (pid, comm, exe).
    pinned: HashMap<u64, (u32, String, String)>,
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
            decider: Decider::default(),
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

    fn wall(&self, ts_ns: u64) -> ZonedDateTime {
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

    /// Arms the kernel rules inside their windows, disarms them outside and once they have
    /// fired their count.
    fn rules_at(&mut self, now: u64, out: &mut Vec<Action>) {
        let wall = self.wall(now);
        for r in &mut self.rules {
            let spec = &self.specs[r.spec];
            let want = !self.stopped
                && spec.count.is_none_or(|c| r.fired < c)
                && window::open(&spec.windows, &wall);
            if want != r.armed {
                r.armed = want;
                out.push(if want {
                    Action::Arm(r.rule)
                } else {
                    Action::Disarm(r.rule)
                });
                let switch = RuleSwitch {
                    fault: spec.index,
                    rule: spec.describe(),
                    reason: None,
                };
                out.push(Action::Audit(if want {
                    Entry::Armed(switch)
                } else {
                    Entry::Disarmed(switch)
                }));
            }
        }
    }

    /// The escalations and thaws that are due.
    fn follow_ups(&mut self, now: u64, out: &mut Vec<Action>) {
        self.steps.sort_by_key(|(at, ..)| *at);
        while self.steps.first().is_some_and(|(at, ..)| *at <= now) {
            let (_, step, of) = self.steps.remove(0);
            let Some((pid, comm, exe)) = self.pinned.get(&of).cloned() else {
                continue;
            };
            let (signal, backend, note) = match step {
                Step::Escalate => (Signal::SIGKILL, Backend::PidfdEscalation, None),
                Step::Thaw => (
                    Signal::SIGCONT,
                    Backend::PidfdThaw,
                    (!self.dry_run).then_some(WatchdogNote::Thawed),
                ),
            };
            let record = self.signal_record(now, pid, comm, signal, backend);
            out.push(Action::Signal(Order {
                id: record.id,
                pin: Pin::Kept { of },
                signal: signal as i32,
                dry_run: self.dry_run,
                only_if_alive: matches!(step, Step::Escalate),
                keep: false,
                watchdog: note,
                audit: audit_fault(&record, &exe, false),
            }));
            self.pending.insert(
                record.id,
                Pending {
                    record,
                    exe,
                    schedule: None,
                },
            );
        }
    }

    fn signal_record(
        &self,
        ts_ns: u64,
        pid: u32,
        comm: String,
        signal: Signal,
        backend: Backend,
    ) -> FaultRecord {
        FaultRecord {
            id: self.next_id(),
            ts_ns,
            pid,
            tid: None,
            comm,
            kind: FaultKind::Signal,
            value: signal.as_str().into(),
            syscall: None,
            nth: None,
            backend,
            dry_run: self.dry_run,
        }
    }

    /// The driver gathered what fault `c.fault` may hit: choose one (seeded) among those
    /// `allowed`, and order the signal.
    pub fn candidates(
        &mut self,
        c: &Candidates,
        allowed: &dyn Fn(&Candidate) -> bool,
        out: &mut Vec<Action>,
    ) {
        let Some(i) = self
            .schedules
            .iter()
            .position(|s| self.specs[s.spec].index == c.fault && s.gathering)
        else {
            return;
        };
        self.schedules[i].gathering = false;
        if self.stopped {
            return;
        }
        let spec = &self.specs[self.schedules[i].spec];
        let Some(plan) = spec.schedule().cloned() else {
            return;
        };
        let live: Vec<&Candidate> = c.procs.iter().filter(|p| allowed(p)).collect();
        if live.is_empty() {
            match plan.timing {
                Timing::Grid => {
                    out.push(Action::Say("chaos: no live target left to signal".into()));
                    let s = &mut self.schedules[i];
                    s.next = None;
                    s.grid.clear();
                }
                Timing::AfterPrevious => {
                    self.schedules[i].next = Some(c.ts_ns + RETRY.as_nanos() as u64);
                }
            }
            return;
        }
        let draw = self.schedules[i].draws.below(live.len() as u64) as usize;
        let target = live[draw].clone();
        let record = self.signal_record(
            c.ts_ns,
            target.pid,
            target.comm.clone(),
            plan.signal,
            Backend::Pidfd,
        );
        let exe = target.exe.clone().unwrap_or_default();
        out.push(Action::Signal(Order {
            id: record.id,
            pin: Pin::Fresh {
                pid: target.pid,
                start_ticks: target.start_ticks,
            },
            signal: plan.signal as i32,
            dry_run: self.dry_run,
            only_if_alive: false,
            keep: plan.escalate_after.is_some() || plan.freeze_for.is_some(),
            watchdog: (plan.freeze_for.is_some() && !self.dry_run).then_some(WatchdogNote::Frozen),
            audit: audit_fault(&record, &exe, false),
        }));
        self.pending.insert(
            record.id,
            Pending {
                record,
                exe,
                schedule: Some(i),
            },
        );
    }

    /// What became of a signal order.
    pub fn sent(&mut self, s: &Sent, out: &mut Vec<Action>) {
        let Some(mut p) = self.pending.remove(&s.id) else {
            return;
        };
        let delivered = match &s.outcome {
            SendOutcome::Sent => true,
            SendOutcome::Gone => false,
            SendOutcome::Failed(why) => {
                out.push(Action::Say(format!(
                    "chaos: signal to {} failed: {why}",
                    p.record.pid
                )));
                false
            }
        };
        if delivered {
            p.record.ts_ns = s.ts_ns;
            self.ledger.add(p.record.clone());
            out.push(Action::Report(Report::Fault(p.record.clone())));
        }
        let Some(i) = p.schedule else { return };
        let plan: SignalSchedule = self.specs[self.schedules[i].spec]
            .schedule()
            .cloned()
            .expect("a schedule's spec is a signal");
        let s_state = &mut self.schedules[i];
        s_state.left = s_state.left.saturating_sub(1);
        if plan.timing == Timing::AfterPrevious {
            s_state.next = (s_state.left > 0).then(|| {
                s.ts_ns
                    + plan.interval.as_nanos() as u64
                    + jitter_ns(&mut s_state.draws, plan.jitter)
            });
        }
        if !delivered {
            return;
        }
        let ts = s.ts_ns;
        if plan.escalate_after.is_some() || plan.freeze_for.is_some() {
            self.pinned
                .insert(s.id, (p.record.pid, p.record.comm.clone(), p.exe.clone()));
        }
        if let Some(after) = plan.escalate_after {
            self.steps
                .push((ts + after.as_nanos() as u64, Step::Escalate, s.id));
        }
        if let Some(after) = plan.freeze_for {
            self.steps
                .push((ts + after.as_nanos() as u64, Step::Thaw, s.id));
        }
    }

    /// A fault the kernel fired on its own: record it, and disarm its rule once the rule
    /// has fired its count.
    pub fn kernel_fault(&mut self, k: &KernelFault, out: &mut Vec<Action>) {
        let e = &k.event;
        let Some(r) = self.rules.iter().position(|r| r.rule == e.fault) else {
            return;
        };
        let record = FaultRecord {
            id: self.next_id(),
            ts_ns: e.ts_ns,
            pid: e.pid,
            tid: Some(e.tid),
            comm: k.comm.clone(),
            kind: match e.fault {
                KernelRule::Trigger => FaultKind::Signal,
                KernelRule::Lsm => FaultKind::Errno,
            },
            value: e.value.clone(),
            syscall: Some(e.what.clone()),
            nth: Some(e.nth),
            backend: e.fault.backend(),
            dry_run: e.dry_run,
        };
        out.push(Action::Audit(audit_fault(&record, &k.exe, true)));
        self.ledger.add(record.clone());
        out.push(Action::Report(Report::Fault(record)));
        let state = &mut self.rules[r];
        state.fired += 1;
        let spec = &self.specs[state.spec];
        if state.armed && spec.count.is_some_and(|c| state.fired >= c) {
            state.armed = false;
            out.push(Action::Disarm(state.rule));
            out.push(Action::Audit(Entry::Disarmed(RuleSwitch {
                fault: spec.index,
                rule: spec.describe(),
                reason: Some("it fired its count".into()),
            })));
        }
    }

    /// A call the seccomp filter handed over: decide it.
    pub fn notification(&mut self, n: &Notification, out: &mut Vec<Action>) {
        let rule = self.specs.iter().find_map(|f| match &f.action {
            FaultAction::Seccomp { nr, rule } => Some((*nr, rule.clone())),
            _ => None,
        });
        let Some((nr, rule)) = rule.filter(|_| !self.stopped) else {
            out.push(Action::Answer(Answer {
                id: n.id,
                verdict: Verdict::Continue,
                signal: None,
                audit: None,
            }));
            return;
        };
        let since = Duration::from_nanos(n.ts_ns.saturating_sub(self.start_ns));
        let decision = self.decider.decide(&rule, n.tgid, n.path.as_deref(), since);
        if !decision.hit {
            out.push(Action::Answer(Answer {
                id: n.id,
                verdict: Verdict::Continue,
                signal: None,
                audit: None,
            }));
            return;
        }
        let (kind, value, backend, verdict, signal) = match rule.action {
            seccomp::Action::Fail(errno) => (
                FaultKind::Errno,
                errno_name(errno),
                Backend::Seccomp,
                Verdict::Fail(errno),
                None,
            ),
            seccomp::Action::SignalBefore(sig) => (
                FaultKind::Signal,
                signal_name(sig as u32),
                Backend::SeccompBefore,
                Verdict::Fail(libc::EINTR),
                Some((n.tgid, sig)),
            ),
        };
        let record = FaultRecord {
            id: self.next_id(),
            ts_ns: n.ts_ns,
            pid: n.tgid,
            tid: Some(n.tid),
            comm: n.comm.clone(),
            kind,
            value,
            syscall: Some(nr.name().to_string()),
            nth: decision.nth,
            backend,
            dry_run: self.dry_run,
        };
        out.push(Action::Answer(Answer {
            id: n.id,
            verdict: if self.dry_run {
                Verdict::Continue
            } else {
                verdict
            },
            signal: signal.filter(|_| !self.dry_run),
            audit: Some(audit_fault(&record, &n.exe, false)),
        }));
        self.ledger.add(record.clone());
        out.push(Action::Report(Report::Fault(record)));
    }

    /// A kernel event: the proof of a fault, or a process gone.
    pub fn event(&mut self, event: &Event, out: &mut Vec<Action>) {
        if let Some((record, proof)) = self.ledger.observe(event) {
            out.push(Action::Report(Report::Proof(record, proof)));
        }
        if let Event::Exit(e) = event {
            self.decider.forget(e.pid);
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
        fault: record.kind,
        value: record.value.clone(),
        syscall: record.syscall.clone(),
        nth: record.nth,
        backend: record.backend,
        dry_run: record.dry_run,
        reported_by_kernel: reported,
    })
}

#[cfg(test)]
#[path = "injector_tests.rs"]
mod tests;
