//! The userspace signals: a schedule's signal when its candidates come back, its outcome,
//! and the escalations and thaws that follow it.

use nix::sys::signal::Signal;

use super::{Injector, Kept, Pending, RETRY, Step, audit_fault, jitter_ns};
use crate::{
    fault::{Backend, FaultKind, FaultRecord, Role},
    inject::spec::{SignalSchedule, Timing},
    machine::{
        Action, Candidate, Candidates, Exported, Order, Pin, SendOutcome, Sent, WatchdogNote,
    },
};

impl Injector {
    /// Orders a signal, and keeps what its outcome needs.
    fn order(
        &mut self,
        order: Order,
        record: FaultRecord,
        exe: String,
        schedule: Option<usize>,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Signal(order));
        self.pending.insert(
            record.id,
            Pending {
                record,
                exe,
                schedule,
            },
        );
    }

    /// The escalations and thaws that are due.
    pub(super) fn follow_ups(&mut self, now: u64, out: &mut Vec<Action>) {
        self.steps.sort_by_key(|(at, ..)| *at);
        while self.steps.first().is_some_and(|(at, ..)| *at <= now) {
            let (_, step, of) = self.steps.remove(0);
            let Some(pinned) = self.pinned.get(&of).cloned() else {
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
            let mut record = self.signal_record(now, &pinned.target, signal, backend);
            record.role = pinned.role;
            let exe = pinned.target.exe.clone().unwrap_or_default();
            let order = Order {
                id: record.id,
                pin: Pin::Kept { of },
                signal: signal as i32,
                dry_run: self.dry_run,
                only_if_alive: matches!(step, Step::Escalate),
                keep: false,
                watchdog: note,
                power: false,
                audit: audit_fault(&record, &exe, false),
            };
            self.order(order, record, exe, None, out);
        }
    }

    /// The record of a signal to `target` (its role is the caller's to set).
    pub(super) fn signal_record(
        &self,
        ts_ns: u64,
        target: &Candidate,
        signal: Signal,
        backend: Backend,
    ) -> FaultRecord {
        FaultRecord {
            id: self.next_id(),
            ts_ns,
            pid: target.pid,
            tid: None,
            comm: target.comm.clone(),
            role: None,
            ppid: Some(target.ppid),
            kind: FaultKind::Signal,
            value: signal.as_str().into(),
            syscall: None,
            nth: None,
            backend,
            dry_run: self.dry_run,
        }
    }

    /// The driver gathered what fault `c.fault` may hit: choose one (seeded) among those
    /// `classify` gives a role its `hit` allows, and order the signal. `classify` is the
    /// caller's: None for a process no fault may hit.
    pub fn candidates(
        &mut self,
        c: &Candidates,
        classify: &dyn Fn(&Candidate) -> Option<Role>,
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
        let hit = spec.hit;
        let live: Vec<(&Candidate, Role)> = c
            .procs
            .iter()
            .filter_map(|p| classify(p).filter(|r| hit.allows(*r)).map(|r| (p, r)))
            .collect();
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
        let (target, role) = (live[draw].0.clone(), live[draw].1);
        let backend = if plan.power {
            Backend::PowerCut
        } else {
            Backend::Pidfd
        };
        let mut record = self.signal_record(c.ts_ns, &target, plan.signal, backend);
        record.role = Some(role);
        if plan.power {
            record.kind = FaultKind::PowerLoss;
        }
        let exe = target.exe.clone().unwrap_or_default();
        let order = Order {
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
            power: plan.power,
            audit: audit_fault(&record, &exe, false),
        };
        self.order(order, record, exe, Some(i), out);
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
            out.push(Action::Export(Exported::Fault(p.record.clone())));
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
            let kept = Kept {
                target: Candidate {
                    pid: p.record.pid,
                    ppid: p.record.ppid.unwrap_or(0),
                    comm: p.record.comm.clone(),
                    exe: Some(p.exe.clone()),
                    title: None,
                    start_ticks: 0,
                },
                role: p.record.role,
            };
            self.pinned.insert(s.id, kept);
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
}
