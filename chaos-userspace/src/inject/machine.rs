//! `chaos inject`'s engine: the injector, its lines on stdout, and when to stop: the plan
//! done and proven (or the proof wait over), `--max-duration`, the launched command's tree
//! gone, or a signal.

use std::time::Duration;

use super::{
    injector::Injector,
    ledger::{InjectSummary, LedgerPrinter},
};
use crate::{
    event::Event,
    fault::Role,
    machine::{Action, Candidate, Exported, Input, Machine, StopCause},
};

/// How long chaos waits, after the last fault of a signal plan, for the events that prove it.
pub const PROOF_WAIT: Duration = Duration::from_secs(2);

pub struct InjectMachine {
    pub injector: Injector,
    printer: LedgerPrinter,
    /// `--max-duration`, from the first tick.
    max_duration: Option<Duration>,
    max_end: Option<u64>,
    proof_deadline: Option<u64>,
    started: bool,
    stopped: bool,
    /// chaos stopped the run (a signal, `--max-duration`) rather than the plan or the
    /// command ending it.
    pub stopped_early: bool,
    /// Why the driver stopped it, when an action failed.
    pub failure: Option<String>,
    /// The first error writing the output.
    pub output_error: Option<std::io::Error>,
    /// Processes the events showed forking into the target set (their children are
    /// workers).
    members: std::collections::HashSet<u32>,
    /// The machine and the wall-clock start, for the summary.
    origin: Option<(crate::sys::host::Host, crate::sys::clock::Clock, u64)>,
}

impl InjectMachine {
    pub fn new(injector: Injector, printer: LedgerPrinter, max_duration: Option<Duration>) -> Self {
        Self {
            injector,
            printer,
            max_duration,
            max_end: None,
            proof_deadline: None,
            started: false,
            stopped: false,
            stopped_early: false,
            failure: None,
            output_error: None,
            members: std::collections::HashSet::new(),
            origin: None,
        }
    }

    /// Names the machine and the start (`start_ns`, kernel time; `clock` gives its wall
    /// time) in the summary.
    pub fn with_origin(
        mut self,
        host: crate::sys::host::Host,
        clock: crate::sys::clock::Clock,
        start_ns: u64,
    ) -> Self {
        self.origin = Some((host, clock, start_ns));
        self
    }

    fn stop(&mut self, early: bool, out: &mut Vec<Action>) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.stopped_early = early;
        self.injector.stop("the run is over", out);
        out.push(Action::Stop);
    }

    /// The summary, written last.
    pub fn finish(&mut self, duration_ns: u64, lost: u64) -> InjectSummary {
        let mut summary =
            self.injector
                .ledger()
                .summary(duration_ns, lost, self.injector.dry_run());
        summary.intercepted = self.injector.intercepted();
        if let Some((host, clock, start_ns)) = &self.origin {
            summary.origin = crate::sys::host::Origin {
                host: Some(host.clone()),
                start_unix_ns: Some(clock.unix_ns(*start_ns)),
                start_ns: Some(*start_ns),
            };
        }
        if let Err(e) = self.printer.summary(&summary) {
            self.output_error.get_or_insert(e);
        }
        summary
    }

    /// A process's role in what `chaos inject` targets: the launched command (or a named
    /// process) is main, what it forked later a worker. Only the parents the events showed
    /// are known: a process forked by a member is a worker.
    fn role_of(&self, pid: u32, ppid: u32) -> Option<Role> {
        Some(if self.members.contains(&ppid) && ppid != pid {
            Role::Worker
        } else {
            Role::Main
        })
    }

    fn print(&mut self, actions: &[Action]) {
        for action in actions {
            let result = match action {
                Action::Export(Exported::Fault(f)) => self.printer.fault(f),
                Action::Export(Exported::Proof(_, proof)) => self.printer.proof(proof),
                _ => Ok(()),
            };
            if let Err(e) = result {
                self.output_error.get_or_insert(e);
            }
        }
    }
}

impl Machine for InjectMachine {
    fn feed(&mut self, input: &Input, out: &mut Vec<Action>) {
        let first = out.len();
        match input {
            Input::Tick(t) => {
                if !self.started {
                    self.started = true;
                    self.max_end = self.max_duration.map(|d| t.ts_ns + d.as_nanos() as u64);
                    self.injector.start(t.ts_ns, out);
                }
                self.injector.tick(t.ts_ns, !self.stopped, out);
                if self.max_end.is_some_and(|end| t.ts_ns >= end) {
                    self.stop(true, out);
                }
            }
            Input::Candidates(c) => {
                // The top of the target set's tree is a main process; below it, workers.
                let pids: Vec<u32> = c.procs.iter().map(|p| p.pid).collect();
                let classify = |p: &Candidate| {
                    Some(if pids.contains(&p.ppid) {
                        Role::Worker
                    } else {
                        Role::Main
                    })
                };
                self.injector.candidates(c, &classify, out);
            }
            Input::Sent(s) => self.injector.sent(s, out),
            Input::Notification(n) => {
                let role = self.role_of(n.tgid, n.ppid);
                self.injector.notification(n, role, out);
            }
            Input::Passed(p) => self.injector.passed(p),
            Input::KernelFault(k) => {
                let role = self.role_of(k.event.pid, k.ppid);
                self.injector.kernel_fault(k, role, out);
            }
            Input::Event(e) => {
                match e {
                    Event::Fork(f) => {
                        self.members.insert(f.parent_pid);
                    }
                    Event::Exit(x) => {
                        self.members.remove(&x.pid);
                    }
                    _ => {}
                }
                self.injector.event(e, out);
            }
            Input::Ready(_)
            | Input::Verified(_)
            | Input::Inspected(_)
            | Input::Readiness(_)
            | Input::Unit(_)
            | Input::PowerCut(_) => {}
            Input::Stop(cause) => {
                if let StopCause::Failure(why) = cause {
                    self.failure.get_or_insert(why.clone());
                }
                self.stop(!matches!(cause, StopCause::TreeGone), out);
            }
        }
        // A signal plan is over once every signal went out and was proven, or the proof
        // wait after the last one is over.
        if let (true, Some(now)) = (
            self.started
                && !self.stopped
                && self.injector.has_schedules()
                && self.injector.signals_done(),
            input.ts_ns(),
        ) {
            let deadline = *self
                .proof_deadline
                .get_or_insert(now + PROOF_WAIT.as_nanos() as u64);
            if self.injector.ledger().all_confirmed() || now >= deadline {
                self.stop(false, out);
            }
        }
        self.print(&out[first..]);
    }

    fn wake_at(&self) -> Option<u64> {
        [self.injector.wake_at(), self.proof_deadline, self.max_end]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::tz::TimeZone;
    use nix::sys::signal::Signal as Sig;

    use super::*;
    use crate::{
        event::{Event, Signal},
        inject::spec::{FaultAction, FaultSpec, SignalSchedule, Timing},
        machine::{Candidate, Candidates, SendOutcome, Sent, Tick},
        output::SharedBuf,
        sys::clock::Clock,
    };

    const SEC: u64 = 1_000_000_000;

    fn machine(count: u32, max: Option<Duration>, out: &SharedBuf) -> InjectMachine {
        let spec = FaultSpec {
            index: 0,
            action: FaultAction::Signal(SignalSchedule {
                signal: Sig::SIGTERM,
                interval: Duration::from_secs(1),
                jitter: Duration::ZERO,
                escalate_after: None,
                freeze_for: None,
                timing: Timing::Grid,
                power: false,
            }),
            count: Some(count),
            seed: 1,
            windows: Vec::new(),
            max_per_minute: 600,
            hit: crate::fault::Hit::Main,
        };
        InjectMachine::new(
            Injector::new(vec![spec], false, Clock::new(0, 0), TimeZone::UTC),
            LedgerPrinter::new(Box::new(out.clone()), true, 0),
            max,
        )
    }

    /// Feeds an input and answers a gather and a signal as the driver would.
    fn feed(m: &mut InjectMachine, input: Input) -> Vec<Action> {
        let mut all = Vec::new();
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            let mut out = Vec::new();
            m.feed(&input, &mut out);
            for a in &out {
                match a {
                    Action::Gather { fault } => queue.push(Input::Candidates(Candidates {
                        fault: *fault,
                        ts_ns: input.ts_ns().unwrap_or(0),
                        procs: vec![Candidate {
                            pid: 7,
                            ppid: 1,
                            comm: "victim".into(),
                            exe: None,
                            title: None,
                            start_ticks: 1,
                        }],
                    })),
                    Action::Signal(o) => queue.push(Input::Sent(Sent {
                        id: o.id,
                        ts_ns: input.ts_ns().unwrap_or(0),
                        outcome: SendOutcome::Sent,
                    })),
                    _ => {}
                }
            }
            all.extend(out);
        }
        all
    }

    fn delivered(ts_ns: u64) -> Input {
        Input::Event(Event::Signal(Signal {
            ts_ns,
            sender_pid: 1,
            sender_comm: "chaos".into(),
            target_pid: 7,
            target_comm: "victim".into(),
            signal: 15,
            signal_name: "SIGTERM".into(),
            code: 0,
            group: true,
            result: "delivered".into(),
        }))
    }

    #[test]
    fn a_signal_plan_ends_once_every_signal_is_proven() {
        let out = SharedBuf::default();
        let mut m = machine(1, None, &out);
        feed(&mut m, Input::Tick(Tick { ts_ns: 0 }));
        let fired = feed(&mut m, Input::Tick(Tick { ts_ns: SEC }));
        assert!(!fired.contains(&Action::Stop), "not proven yet");
        let proven = feed(&mut m, delivered(SEC + 10));
        assert!(proven.contains(&Action::Stop));
        assert!(!m.stopped_early);
        let summary = m.finish(2 * SEC, 0);
        assert_eq!((summary.injected, summary.confirmed), (1, 1));
        let text = out.text();
        assert!(text.contains("\"type\":\"fault\"") && text.contains("\"type\":\"confirmed\""));
        assert!(text.ends_with("\"lost\":0}}\n"), "{text}");
    }

    #[test]
    fn without_proof_the_plan_ends_after_the_proof_wait() {
        let out = SharedBuf::default();
        let mut m = machine(1, None, &out);
        feed(&mut m, Input::Tick(Tick { ts_ns: 0 }));
        feed(&mut m, Input::Tick(Tick { ts_ns: SEC }));
        assert_eq!(m.wake_at(), Some(SEC + PROOF_WAIT.as_nanos() as u64));
        let early = feed(&mut m, Input::Tick(Tick { ts_ns: 2 * SEC }));
        assert!(!early.contains(&Action::Stop));
        let late = feed(&mut m, Input::Tick(Tick { ts_ns: 3 * SEC }));
        assert!(late.contains(&Action::Stop));
        assert_eq!(m.finish(3 * SEC, 0).unconfirmed, [1]);
    }

    #[test]
    fn max_duration_and_a_signal_stop_early_a_gone_tree_does_not() {
        let out = SharedBuf::default();
        let mut m = machine(10, Some(Duration::from_millis(2500)), &out);
        feed(&mut m, Input::Tick(Tick { ts_ns: 0 }));
        let stopped = feed(&mut m, Input::Tick(Tick { ts_ns: 3 * SEC }));
        assert!(stopped.contains(&Action::Stop) && m.stopped_early);
        let mut gone = machine(10, None, &out);
        feed(&mut gone, Input::Tick(Tick { ts_ns: 0 }));
        feed(&mut gone, Input::Stop(StopCause::TreeGone));
        assert!(!gone.stopped_early);
    }
}
