//! The experiment runner: `chaos run` as a pure engine. Kernel events, probe results, verify
//! results, the candidates and signals the driver reports, and clock ticks go in; actions
//! come out (`crate::machine`). It adds, on top of the injector and the measurement, the
//! run's phases (baseline -> injection -> cool-down), the guards, the verify runs, and at
//! the end the verdict and the result ([`Runner::finish`]).
//!
//! Time moves only with the inputs, so a recording of them replays the same run
//! (`chaos run --replay`).

use std::collections::HashMap;

use super::{
    Experiment,
    accounting::{Accounting, FaultOutcome},
    guards::{Decision, GuardState},
    record::RunHeader,
    result::{Baseline, RunFault, RunResult},
    rules::{HitRules, Who},
    verdict::{self, Clause, Evidence, Verdict},
};
use crate::{
    audit::{
        Entry,
        entry::{self, VerifyWhen},
    },
    episode::{Episode, Outcome},
    inject::injector::Injector,
    machine::{Action, Exported, Input, Machine, Progress, StopCause, Verified, record::End},
    measure::{Measurement, record::Header, stats::Stats},
    output::human_duration,
};

/// The run's phases (not the phases of a recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    Baseline,
    Injection,
    Cooldown,
    /// Waiting for the last verify before the end.
    Ending,
}

impl RunPhase {
    pub fn name(self) -> &'static str {
        match self {
            RunPhase::Baseline => "baseline",
            RunPhase::Injection => "injection",
            RunPhase::Cooldown => "cool-down",
            RunPhase::Ending => "ending",
        }
    }
}

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub result: RunResult,
    pub clauses: Vec<Clause>,
    pub verdict: Verdict,
    pub code: u8,
}

pub struct Runner {
    experiment: Experiment,
    header: RunHeader,
    rules: HitRules,
    measurement: Measurement,
    injector: Injector,
    phase: RunPhase,
    started_ns: Option<u64>,
    baseline_crashes: u64,
    guards: GuardState,
    /// Pids chaos signalled (their deaths are not crashes).
    signalled: HashMap<u32, u64>,
    episodes: Vec<Episode>,
    abort: Option<String>,
    /// Verify runs after recoveries: (passed, failed, the first failure).
    verify_after: (u32, u32, Option<String>),
    verify_end: Option<Result<(), String>>,
    verifies_running: u32,
    cool_until: Option<u64>,
    stopped: bool,
    accounting: Accounting,
}

impl Runner {
    pub fn new(experiment: Experiment, header: RunHeader) -> Self {
        let rules = HitRules::new(
            &experiment,
            &header.service.comm,
            &header.service.supervisors,
        );
        let measurement = Measurement::new(Header {
            version: crate::measure::record::VERSION,
            start_ns: header.start_ns,
            start_unix_ns: header.start_unix_ns,
            service: header.service.clone(),
            host: header.host.clone(),
        });
        let injector = Injector::new(
            experiment.faults.clone(),
            false,
            header.clock(),
            header.time_zone(),
        );
        let guards = GuardState::new(experiment.guards.clone(), 1, 0);
        let accounting = Accounting::new(
            experiment.target.effect_window.as_nanos() as u64,
            experiment.target.recovery_timeout.as_nanos() as u64,
            header.service.ready.is_probed(),
        );
        Self {
            experiment,
            header,
            rules,
            measurement,
            injector,
            phase: RunPhase::Baseline,
            started_ns: None,
            baseline_crashes: 0,
            guards,
            signalled: HashMap::new(),
            episodes: Vec::new(),
            abort: None,
            verify_after: (0, 0, None),
            verify_end: None,
            verifies_running: 0,
            cool_until: None,
            stopped: false,
            accounting,
        }
    }

    pub fn phase(&self) -> RunPhase {
        self.phase
    }

    pub fn aborted(&self) -> Option<&str> {
        self.abort.as_deref()
    }

    /// Faults the ledger holds so far.
    pub fn injected(&self) -> usize {
        self.injector.ledger().len()
    }

    fn say(out: &mut Vec<Action>, text: String) {
        out.push(Action::Say(text));
    }

    /// Stops every fault at once and records why.
    fn abort(&mut self, why: String, out: &mut Vec<Action>) {
        if self.abort.is_some() || self.stopped {
            return;
        }
        self.injector.stop("abort", out);
        out.push(Action::Audit(Entry::Abort(entry::Abort {
            reason: why.clone(),
        })));
        Self::say(out, format!("chaos: ABORT: {why}; no further fault"));
        self.abort = Some(why);
        self.end(out);
    }

    /// No further fault; the last verify (unless aborted), then the end.
    fn end(&mut self, out: &mut Vec<Action>) {
        if self.phase == RunPhase::Ending || self.stopped {
            return;
        }
        self.injector.stop("the run is over", out);
        self.phase = RunPhase::Ending;
        if self.abort.is_none() && self.experiment.hypothesis.verify.is_some() {
            out.push(Action::Verify {
                when: VerifyWhen::End,
                episode: None,
            });
        } else {
            self.stop(out);
        }
    }

    fn stop(&mut self, out: &mut Vec<Action>) {
        if !self.stopped {
            self.stopped = true;
            out.push(Action::Stop);
        }
    }

    fn start_injection(&mut self, now: u64, out: &mut Vec<Action>) {
        self.guards = GuardState::new(
            self.experiment.guards.clone(),
            self.experiment.phases.baseline.as_nanos().max(1) as u64,
            self.baseline_crashes,
        );
        out.push(Action::Audit(Entry::Phase(entry::Phase {
            phase: "injection".into(),
            baseline_crashes: self.baseline_crashes,
        })));
        Self::say(
            out,
            format!(
                "chaos: baseline over: {} crash(es); injecting",
                self.baseline_crashes
            ),
        );
        self.phase = RunPhase::Injection;
        self.injector.start(now, out);
    }

    /// An episode ended: count crashes, consult the guards, verify after a recovery.
    fn episode_ended(&mut self, mut episode: Episode, out: &mut Vec<Action>) {
        episode.fault_id = self.accounting.episode(episode.old_pid, episode.id, out);
        let ours = self.signalled.contains_key(&episode.old_pid)
            || episode
                .fault
                .as_ref()
                .is_some_and(|f| f.sender_pid == self.header.chaos_pid);
        // A crash: a death chaos did not cause, other than a clean exit.
        let crash = !ours && (episode.exit.signal != 0 || episode.exit.exit_code != 0);
        let power = episode.power.as_ref().map_or(String::new(), |p| {
            format!(
                " after a power cut ({} unsynced at the cut{}; remounted in {})",
                p.unsynced_bytes()
                    .map_or("bytes not counted".into(), |b| format!("{b} bytes")),
                if p.unsynced.len() > 1 {
                    format!(" over {} processes", p.unsynced.len())
                } else {
                    String::new()
                },
                p.remount_ns.map_or("-".into(), human_duration)
            )
        });
        let what = match episode.outcome {
            Outcome::Recovered => {
                format!(
                    "recovered in {}{power}",
                    human_duration(episode.total_ns.unwrap_or(0))
                )
            }
            _ => format!(
                "{:?}: {}",
                episode.outcome,
                episode.reason.as_deref().unwrap_or("")
            )
            .to_lowercase(),
        };
        Self::say(
            out,
            format!(
                "chaos: episode {} (pid {}{}) {what}",
                episode.id,
                episode.old_pid,
                if crash {
                    ", a crash chaos did not cause"
                } else {
                    ""
                }
            ),
        );
        if self.phase == RunPhase::Baseline {
            self.baseline_crashes += u64::from(crash);
            self.episodes.push(episode);
            return;
        }
        let decision = self.guards.episode(&episode, crash);
        out.push(Action::Audit(Entry::Guard(entry::Guard {
            episode: Some(episode.id),
            pid: Some(episode.old_pid),
            outcome: Some(episode.outcome.as_str().into()),
            crash: Some(crash),
            decision: match decision {
                Decision::Continue => entry::Decision::Continue,
                Decision::Abort(_) => entry::Decision::Abort,
            },
            reason: match &decision {
                Decision::Continue => None,
                Decision::Abort(why) => Some(why.clone()),
            },
        })));
        let recovered = episode.outcome == Outcome::Recovered;
        let id = episode.id;
        self.episodes.push(episode);
        if let Decision::Abort(why) = decision {
            self.abort(why, out);
            return;
        }
        if recovered && self.experiment.hypothesis.verify.is_some() && !self.stopped {
            self.verifies_running += 1;
            out.push(Action::Verify {
                when: VerifyWhen::After,
                episode: Some(id),
            });
        }
    }

    /// A power cut was carried out: a line for the operator (the episode it began reports
    /// the rest).
    fn power_cut(&mut self, p: &crate::machine::PowerCut, out: &mut Vec<Action>) {
        let c = &p.cut;
        let ms = |a: Option<u64>, b: Option<u64>| {
            a.zip(b)
                .map_or("-".into(), |(a, b)| human_duration(b.saturating_sub(a)))
        };
        let killed: Vec<String> = c
            .killed
            .iter()
            .map(|(pid, comm)| format!("{pid} ({comm})"))
            .collect();
        for (pid, _) in &c.killed {
            self.signalled.insert(*pid, c.cut_ns.unwrap_or(c.freeze_ns));
        }
        Self::say(
            out,
            match &c.error {
                None => format!(
                    "chaos: power cut {}: service frozen in {}, writes dropped from then on, killed {}, remounted {} after the cut, released",
                    p.id,
                    ms(Some(c.freeze_ns), c.frozen_ns),
                    killed.join(", "),
                    ms(c.cut_ns, c.remounted_ns),
                ),
                Some(why) => format!("chaos: power cut {} failed: {why}", p.id),
            },
        );
    }

    /// The orphans of a dead instance were looked at: the orphan guard may abort.
    fn inspected(&mut self, i: &crate::machine::Inspected, out: &mut Vec<Action>) {
        if self.phase == RunPhase::Baseline {
            return;
        }
        if let Decision::Abort(why) = self.guards.orphans(i.episode, &i.orphans) {
            out.push(Action::Audit(Entry::Guard(entry::Guard {
                episode: Some(i.episode),
                pid: None,
                outcome: None,
                crash: None,
                decision: entry::Decision::Abort,
                reason: Some(why.clone()),
            })));
            self.abort(why, out);
        }
    }

    fn verified(&mut self, v: &Verified, out: &mut Vec<Action>) {
        out.push(Action::Audit(Entry::Verify(entry::Verify {
            when: v.when,
            episode: v.episode,
            passed: v.passed,
            detail: v.detail.clone(),
        })));
        let result = if v.passed {
            Ok(())
        } else {
            Err(v.detail.clone().unwrap_or_default())
        };
        match v.when {
            VerifyWhen::After => {
                self.verifies_running = self.verifies_running.saturating_sub(1);
                let episode = v.episode.unwrap_or(0);
                if let Some(e) = self.episodes.iter_mut().find(|e| e.id == episode) {
                    e.verify = Some(crate::episode::EpisodeVerify {
                        passed: v.passed,
                        detail: v.detail.clone(),
                    });
                }
                match result {
                    Ok(()) => self.verify_after.0 += 1,
                    Err(why) => {
                        Self::say(
                            out,
                            format!("chaos: verify after episode {episode} failed: {why}"),
                        );
                        self.verify_after.1 += 1;
                        self.verify_after
                            .2
                            .get_or_insert(format!("after episode {episode}: {why}"));
                    }
                }
            }
            VerifyWhen::End => {
                self.verify_end = Some(result);
                self.stop(out);
            }
            VerifyWhen::Before => {}
        }
    }

    /// Reads what the injector asked for: the faults it recorded (their pids' deaths are not
    /// crashes) get a line for the operator.
    fn note_faults(&mut self, actions: &[Action], out: &mut Vec<Action>) {
        for action in actions {
            if let Action::Export(Exported::Fault(f)) = action {
                self.signalled.insert(f.pid, f.ts_ns);
                let instance = self.measurement.instance_of(f.pid, f.ppid.unwrap_or(0));
                self.accounting.fault(f, instance, out);
                let text = if f.backend.rule().is_some() {
                    format!(
                        "chaos: fault {}: {} {} -> {} ({}) [kernel]",
                        f.id,
                        f.value,
                        f.syscall.as_deref().unwrap_or(""),
                        f.pid,
                        f.comm
                    )
                } else {
                    format!(
                        "chaos: fault {}: {} -> {} ({}{})",
                        f.id,
                        f.value,
                        f.pid,
                        f.comm,
                        f.role
                            .map_or(String::new(), |r| format!(", {}", r.as_str()))
                    )
                };
                out.push(Action::Say(text));
            }
        }
    }

    /// Time passed: the phases move on, the guards look at the open episodes.
    fn tick(&mut self, now: u64, out: &mut Vec<Action>) {
        let started = *self.started_ns.get_or_insert_with(|| {
            out.push(Action::Say(format!(
                "chaos: baseline for {} (measuring only)",
                humantime::format_duration(self.experiment.phases.baseline)
            )));
            now
        });
        self.accounting.tick(now, out);
        if self.stopped || self.phase == RunPhase::Ending {
            return;
        }
        if self.phase != RunPhase::Baseline
            && let Decision::Abort(why) = self.guards.tick(now, self.measurement.oldest_open())
        {
            out.push(Action::Audit(Entry::Guard(entry::Guard {
                episode: None,
                pid: None,
                outcome: None,
                crash: None,
                decision: entry::Decision::Abort,
                reason: Some(why.clone()),
            })));
            self.abort(why, out);
            return;
        }
        let max_end = started + self.experiment.phases.max_duration.as_nanos() as u64;
        if now >= max_end {
            Self::say(
                out,
                "chaos: phases.max_duration reached; ending the run".into(),
            );
            self.end(out);
            return;
        }
        match self.phase {
            RunPhase::Baseline => {
                if now >= started + self.experiment.phases.baseline.as_nanos() as u64 {
                    self.start_injection(now, out);
                }
            }
            RunPhase::Injection => {
                // A power cut also waits for the last verify: it must neither run across a
                // remount nor hold the disk that the cut unmounts.
                let verifying =
                    self.verifies_running > 0 && self.experiment.power_fault().is_some();
                let gate = self.measurement.open_count() == 0
                    && self.accounting.pending() == 0
                    && !verifying;
                self.injector.tick(now, gate, out);
                if self.injector.signals_done() && self.injector.rules_done() {
                    self.phase = RunPhase::Cooldown;
                    self.injector.stop("every fault is done", out);
                    Self::say(out, "chaos: every fault is done; cool-down".into());
                }
            }
            RunPhase::Cooldown => {
                let settled = self.measurement.open_count() == 0
                    && self.verifies_running == 0
                    && self.accounting.pending() == 0;
                match (settled, self.cool_until) {
                    (true, None) => {
                        self.cool_until =
                            Some(now + self.experiment.phases.cooldown.as_nanos() as u64)
                    }
                    (true, Some(until)) if now >= until => self.end(out),
                    (false, Some(_)) => self.cool_until = None,
                    _ => {}
                }
            }
            RunPhase::Ending => {}
        }
        out.push(Action::Progress(self.progress()));
    }

    fn progress(&self) -> Progress {
        let stats = self.measurement.stats();
        let total = stats.phases().find(|(p, _)| *p == "total").map(|(_, h)| h);
        let latency = match total {
            Some(h) if !h.is_empty() => format!(
                " · total p50 {} p99 {}",
                human_duration(h.value_at_quantile(0.5)),
                human_duration(h.value_at_quantile(0.99))
            ),
            _ => String::new(),
        };
        Progress {
            phase: self.phase.name(),
            faults: self.injector.ledger().len() as u64,
            message: format!(
                "episodes {} ({} ok, {} failed){latency} · {}",
                stats.recovered + stats.failed + stats.unfinished,
                stats.recovered,
                stats.failed,
                self.guards.describe()
            ),
        }
    }
}

impl Machine for Runner {
    fn feed(&mut self, input: &Input, out: &mut Vec<Action>) {
        let first = out.len();
        let mut ended = Vec::new();
        match input {
            Input::Tick(t) => {
                ended = self.measurement.feed(input, out);
                self.tick(t.ts_ns, out);
            }
            Input::Event(e) => {
                self.injector.event(e, out);
                let measurement = &self.measurement;
                let is_main = |pid| measurement.role(pid, 0) == Some(crate::fault::Role::Main);
                self.accounting.event(e, &is_main);
                ended = self.measurement.feed(input, out);
            }
            Input::Readiness(r) => self.accounting.readiness(r.fault, r.ts_ns, r.ok),
            Input::Ready(_) | Input::Unit(_) => ended = self.measurement.feed(input, out),
            Input::PowerCut(p) => {
                self.power_cut(p, out);
                ended = self.measurement.feed(input, out);
            }
            Input::Inspected(i) => {
                ended = self.measurement.feed(input, out);
                self.inspected(i, out);
            }
            Input::KernelFault(k) => {
                let role = self.measurement.role(k.event.pid, k.ppid);
                self.injector.kernel_fault(k, role, out);
            }
            Input::Candidates(c) => {
                let (rules, measurement) = (&self.rules, &self.measurement);
                let classify = |p: &crate::machine::Candidate| {
                    let role = measurement.role(p.pid, p.ppid)?;
                    let exe = p.exe.as_deref().map(std::path::Path::new);
                    let who = Who {
                        pid: p.pid,
                        comm: &p.comm,
                        exe,
                        title: p.title.as_deref(),
                    };
                    rules.check(&who, role).ok()?;
                    Some(role)
                };
                self.injector.candidates(c, &classify, out);
            }
            Input::Sent(s) => self.injector.sent(s, out),
            Input::Notification(n) => {
                let role = self.measurement.role(n.tgid, n.ppid);
                self.injector.notification(n, role, out);
            }
            Input::Passed(p) => self.injector.passed(p),
            Input::Verified(v) => self.verified(v, out),
            Input::Stop(cause) => {
                let why = match cause {
                    StopCause::Interrupted => {
                        "interrupted by a signal (Ctrl-C or SIGTERM)".to_string()
                    }
                    StopCause::Failure(why) => why.clone(),
                    StopCause::TreeGone => "the service's process tree is gone".into(),
                    StopCause::OutputClosed => "the output was closed".into(),
                };
                self.abort(why, out);
            }
        }
        let new: Vec<Action> = out[first..].to_vec();
        self.note_faults(&new, out);
        for episode in ended {
            self.episode_ended(episode, out);
        }
    }

    fn wake_at(&self) -> Option<u64> {
        match self.phase {
            RunPhase::Injection => self.injector.wake_at(),
            _ => None,
        }
    }
}

mod finish;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod world;
