//! A supervised service and the driver, simulated for the runner's tests: candidates,
//! signals, deaths and restarts, listening replacements and verify runs, on a clock that
//! moves only when the test says.

use std::collections::VecDeque;

use super::*;
use crate::{
    event::{Event, Exec, Exit, Fork, Reap, Signal},
    fault::KernelRule,
    machine::{Candidate, Candidates, SendOutcome, Sent, Tick},
};

pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000 * MS;
pub const CHAOS: u32 = 999;
pub const SUPERVISOR: u32 = 10;

/// A supervised service and the driver, simulated.
pub struct World {
    pub now: u64,
    pub instance: Option<u32>,
    pub next_pid: u32,
    /// From the reap to the replacement's fork.
    pub restart_delay: u64,
    /// From the replacement's exec to its listen().
    pub listen_delay: u64,
    /// How many more times the supervisor restarts the service.
    pub restarts: u32,
    pub events: Vec<(u64, Event)>,
    pub verify_fails_after: Vec<u64>,
    pub verify_fails_at_end: bool,
    pub no_candidates: bool,
    pub sends_fail: bool,
    /// This many signals go out but the kernel shows nothing of them (and nothing dies).
    pub silent_kills: u32,
    /// The service handles the signals: delivered, and nothing dies.
    pub survives: bool,
    pub audit: Vec<Entry>,
    pub armed: Vec<KernelRule>,
    pub says: Vec<String>,
    pub gathers: Vec<u64>,
    pub stopped: bool,
    pub inputs: Vec<Input>,
    pub queue: VecDeque<Input>,
}

impl World {
    pub fn new() -> Self {
        Self {
            now: 0,
            instance: Some(11),
            next_pid: 12,
            restart_delay: 3 * MS,
            listen_delay: MS,
            restarts: u32::MAX,
            events: Vec::new(),
            verify_fails_after: Vec::new(),
            verify_fails_at_end: false,
            no_candidates: false,
            sends_fail: false,
            silent_kills: 0,
            survives: false,
            audit: Vec::new(),
            armed: Vec::new(),
            says: Vec::new(),
            gathers: Vec::new(),
            stopped: false,
            inputs: Vec::new(),
            queue: VecDeque::new(),
        }
    }

    pub fn feed(&mut self, runner: &mut Runner, input: Input) {
        self.queue.push_back(input);
        let mut actions = Vec::new();
        while let Some(input) = self.queue.pop_front() {
            runner.feed(&input, &mut actions);
            self.inputs.push(input);
            for action in actions.drain(..) {
                self.act(action);
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Gather { fault } => {
                self.gathers.push(self.now);
                let procs = match (self.instance, self.no_candidates) {
                    (Some(pid), false) => vec![Candidate {
                        pid,
                        ppid: SUPERVISOR,
                        comm: "svc".into(),
                        exe: Some("/usr/bin/svc".into()),
                        title: None,
                        start_ticks: u64::from(pid),
                    }],
                    _ => Vec::new(),
                };
                self.queue.push_back(Input::Candidates(Candidates {
                    fault,
                    ts_ns: self.now,
                    procs,
                }));
            }
            Action::Signal(order) => {
                let outcome = if self.sends_fail {
                    SendOutcome::Failed("No such process".into())
                } else {
                    if let crate::machine::Pin::Fresh { pid, .. } = order.pin {
                        if self.silent_kills > 0 {
                            self.silent_kills -= 1;
                        } else {
                            self.kill(pid, order.signal as u32);
                        }
                    }
                    SendOutcome::Sent
                };
                self.queue.push_back(Input::Sent(Sent {
                    id: order.id,
                    ts_ns: self.now,
                    outcome,
                }));
            }
            Action::Verify { when, episode } => {
                let failed = match when {
                    VerifyWhen::End => self.verify_fails_at_end,
                    _ => episode.is_some_and(|e| self.verify_fails_after.contains(&e)),
                };
                self.queue.push_back(Input::Verified(Verified {
                    when,
                    episode,
                    passed: !failed,
                    detail: failed.then(|| "2 records lost".to_string()),
                }));
            }
            Action::Audit(entry) => self.audit.push(entry),
            Action::Arm(rule) => self.armed.push(rule),
            Action::Disarm(rule) => self.armed.retain(|r| *r != rule),
            Action::Say(text) => self.says.push(text),
            Action::Stop => self.stopped = true,
            _ => {}
        }
    }

    /// The instance dies of `signal` (sent by chaos), then the supervisor restarts it.
    pub fn kill(&mut self, pid: u32, signal: u32) {
        let t = self.now;
        self.events.push((
            t + 10_000,
            Event::Signal(Signal {
                ts_ns: t + 10_000,
                sender_pid: CHAOS,
                sender_comm: "chaos".into(),
                target_pid: pid,
                target_comm: "svc".into(),
                signal,
                signal_name: crate::event::signal_name(signal),
                code: 0,
                group: true,
                result: "delivered".into(),
            }),
        ));
        if !self.survives {
            self.die(t + 50_000, pid, signal, 0);
        }
    }

    /// The instance exits at `at` (a signal or an exit code), then is restarted.
    pub fn die(&mut self, at: u64, pid: u32, signal: u32, code: u32) {
        self.events.push((
            at,
            Event::Exit(Exit::from_raw(
                at,
                pid,
                SUPERVISOR,
                "svc".into(),
                (code << 8) | signal,
                SEC,
                None,
            )),
        ));
        self.events.push((
            at + 50_000,
            Event::Reap(Reap {
                ts_ns: at + 50_000,
                pid: SUPERVISOR,
                child_pid: pid,
            }),
        ));
        self.instance = None;
        if self.restarts == 0 {
            return;
        }
        self.restarts -= 1;
        let new = self.next_pid;
        self.next_pid += 1;
        let fork = at + 50_000 + self.restart_delay;
        self.events.push((
            fork,
            Event::Fork(Fork {
                ts_ns: fork,
                parent_pid: SUPERVISOR,
                child_pid: new,
            }),
        ));
        self.events.push((
            fork + 100_000,
            Event::Exec(Exec {
                ts_ns: fork + 100_000,
                pid: new,
                ppid: SUPERVISOR,
                old_pid: new,
                comm: "svc".into(),
                filename: "/usr/bin/svc".into(),
            }),
        ));
        let listen = fork + 100_000 + self.listen_delay;
        self.events.push((
            listen,
            Event::Listen(crate::event::Listen {
                ts_ns: listen,
                pid: new,
                port: 8080,
                family: "inet".into(),
            }),
        ));
    }

    /// Moves time on in 100 ms ticks to `until`, feeding the events that fall due first.
    pub fn run(&mut self, runner: &mut Runner, until: u64) {
        if self.inputs.is_empty() {
            self.feed(runner, Input::Tick(Tick { ts_ns: 0 }));
        }
        while self.now < until && !self.stopped {
            let next =
                (self.now + 100 * MS).min(runner.wake_at().unwrap_or(u64::MAX).max(self.now + 1));
            self.now = next;
            self.events.sort_by_key(|(t, _)| *t);
            while let Some((t, _)) = self.events.first() {
                if *t > self.now {
                    break;
                }
                let (_, event) = self.events.remove(0);
                if let Event::Exec(e) = &event {
                    self.instance = Some(e.pid);
                }
                self.feed(runner, Input::Event(event));
            }
            self.feed(runner, Input::Tick(Tick { ts_ns: self.now }));
        }
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.audit
            .iter()
            .map(|e| match e {
                Entry::Start(_) => "start",
                Entry::Verify(_) => "verify",
                Entry::Phase(_) => "phase",
                Entry::Armed(_) => "armed",
                Entry::Disarmed(_) => "disarmed",
                Entry::Fault(_) => "fault",
                Entry::Guard(_) => "guard",
                Entry::Abort(_) => "abort",
                Entry::Disk(_) => "disk",
                Entry::End(_) => "end",
            })
            .collect()
    }
}
