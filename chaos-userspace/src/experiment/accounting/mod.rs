//! Every fault ends in exactly one outcome ([`FaultOutcome`]), decided from kernel events
//! and readiness, never assumed:
//!
//! - `episode`: the main process died (the fault's target, or the instance of the worker it
//!   hit): recovered, failed or unfinished, as the episode says;
//! - `in_place`: the process it hit (a worker) died, or readiness was lost, and the service
//!   came back without its main process dying ([`InPlaceRecovery`]): fault -> the target's
//!   exit -> the main process's next fork (its respawn) -> readiness again;
//! - `no_effect`: nothing it hit died and readiness never failed, within the effect window
//!   (a SIGTERM the service handles, a SIGHUP that reloads);
//! - `unmeasured`, with the reason: what chaos could not see (the run ended first, events
//!   were lost, a death with no episode).
//!
//! An in-place recovery ends when readiness holds again after the death (the first passing
//! probe after it, or after readiness came back if it was lost) and, if the main process
//! forked within the effect window, not before that respawn; with kernel readiness (`exec`,
//! `listen`) it ends at the respawn. A fault is decided no earlier than its effect window
//! after it (or after the death), so that a later loss of readiness still counts.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{
    episode::Outcome,
    event::Event,
    fault::{FaultRecord, Role},
    machine::Action,
    measure::stats::{self, Quantiles},
    output::human_duration,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultOutcome {
    Episode { episode: u64 },
    InPlace { recovery: u64 },
    NoEffect,
    Unmeasured { reason: String },
}

impl FaultOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            FaultOutcome::Episode { .. } => "episode",
            FaultOutcome::InPlace { .. } => "in_place",
            FaultOutcome::NoEffect => "no_effect",
            FaultOutcome::Unmeasured { .. } => "unmeasured",
        }
    }
}

/// Milestones (CLOCK_MONOTONIC ns) of an in-place recovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InPlaceMilestones {
    pub fault: Option<u64>,
    /// The hit process exited.
    pub exit: Option<u64>,
    /// The main process forked after that exit (a replacement, a crash-recovery process).
    pub respawned: Option<u64>,
    /// A readiness probe first failed.
    pub lost: Option<u64>,
    pub ready: Option<u64>,
}

/// A recovery without the main process dying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InPlaceRecovery {
    pub id: u64,
    pub fault_id: u64,
    /// The process the fault hit.
    pub pid: u32,
    pub role: Option<Role>,
    pub outcome: Outcome,
    pub at_ns: InPlaceMilestones,
    /// From the fault to ready again.
    pub total_ns: Option<u64>,
    pub reason: Option<String>,
}

/// The phases of an in-place recovery: (name, label).
pub const IN_PLACE_PHASES: [(&str, &str); 4] = [
    ("fault_to_exit", "fault -> exit"),
    ("exit_to_respawned", "exit -> respawned"),
    ("respawned_to_ready", "respawned -> ready"),
    ("total", "total (in place)"),
];

impl InPlaceRecovery {
    /// The duration of each of [`IN_PLACE_PHASES`], where both ends were seen.
    pub fn phases_ns(&self) -> [Option<u64>; 4] {
        let a = &self.at_ns;
        let span =
            |from: Option<u64>, to: Option<u64>| from.zip(to).and_then(|(f, t)| t.checked_sub(f));
        [
            span(a.fault, a.exit),
            span(a.exit, a.respawned),
            span(a.respawned, a.ready),
            self.total_ns,
        ]
    }
}

/// The histogram of in-place phase `i` (of [`IN_PLACE_PHASES`]) over the recovered ones.
pub fn in_place_histogram(recoveries: &[InPlaceRecovery], i: usize) -> Histogram<u64> {
    let mut h = stats::histogram();
    for r in recoveries
        .iter()
        .filter(|r| r.outcome == Outcome::Recovered)
    {
        if let Some(ns) = r.phases_ns()[i] {
            stats::record(&mut h, ns);
        }
    }
    h
}

/// Quantiles of each in-place phase, labelled.
pub fn in_place_quantiles(recoveries: &[InPlaceRecovery]) -> Vec<(&'static str, Quantiles)> {
    (0..IN_PLACE_PHASES.len())
        .map(|i| {
            (
                IN_PLACE_PHASES[i].1,
                Quantiles::of(&in_place_histogram(recoveries, i)),
            )
        })
        .collect()
}

/// One fault being watched for its effect.
#[derive(Debug, Clone)]
struct Watch {
    fault_id: u64,
    pid: u32,
    role: Option<Role>,
    /// The instance a worker belongs to: its death makes the fault an episode's.
    instance: Option<u32>,
    at: InPlaceMilestones,
    effect_until: u64,
    main_died: bool,
    regained: Option<u64>,
    /// The last readiness the watch saw.
    last_ok: Option<bool>,
}

pub struct Accounting {
    /// How long after a fault (or the death it caused) its effect is looked for.
    effect_ns: u64,
    recovery_ns: u64,
    /// Readiness is probed from userspace (`tcp:`, `cmd:`): it can be lost and regained.
    probed: bool,
    watches: Vec<Watch>,
    pub outcomes: Vec<(u64, FaultOutcome)>,
    pub in_place: Vec<InPlaceRecovery>,
}

impl Accounting {
    pub fn new(effect_ns: u64, recovery_ns: u64, probed: bool) -> Self {
        Self {
            effect_ns,
            recovery_ns,
            probed,
            watches: Vec::new(),
            outcomes: Vec::new(),
            in_place: Vec::new(),
        }
    }

    /// Faults still waiting for their outcome.
    pub fn pending(&self) -> usize {
        self.watches.len()
    }

    /// A fault was injected on `record.pid`, of role `record.role`, part of `instance`.
    pub fn fault(&mut self, record: &FaultRecord, instance: Option<u32>, out: &mut Vec<Action>) {
        self.watches.push(Watch {
            fault_id: record.id,
            pid: record.pid,
            role: record.role,
            instance,
            at: InPlaceMilestones {
                fault: Some(record.ts_ns),
                ..InPlaceMilestones::default()
            },
            effect_until: record.ts_ns + self.effect_ns,
            main_died: false,
            regained: None,
            last_ok: None,
        });
        if self.probed {
            out.push(Action::Watch {
                fault: record.id,
                until_ns: record.ts_ns + self.effect_ns + self.recovery_ns,
            });
        }
    }

    /// A kernel event; `is_main` says whether a process is an instance (a main process).
    pub fn event(&mut self, event: &Event, is_main: &dyn Fn(u32) -> bool) {
        match event {
            Event::Exit(e) => {
                for w in &mut self.watches {
                    let main = w.instance == Some(e.pid)
                        || (w.pid == e.pid && (w.role == Some(Role::Main) || is_main(e.pid)));
                    if main {
                        w.main_died = true;
                    } else if w.pid == e.pid && w.at.exit.is_none() {
                        w.at.exit = Some(e.ts_ns);
                        w.effect_until = w.effect_until.max(e.ts_ns + self.effect_ns);
                    }
                }
            }
            Event::Fork(f) if is_main(f.parent_pid) => {
                for w in &mut self.watches {
                    if w.at.exit.is_some_and(|x| f.ts_ns >= x) && w.at.respawned.is_none() {
                        w.at.respawned = Some(f.ts_ns);
                    }
                }
            }
            _ => {}
        }
    }

    /// A readiness watch of fault `fault` saw readiness `ok` at `ts_ns`.
    pub fn readiness(&mut self, fault: u64, ts_ns: u64, ok: bool) {
        let Some(w) = self.watches.iter_mut().find(|w| w.fault_id == fault) else {
            return;
        };
        w.last_ok = Some(ok);
        if !ok {
            w.at.lost.get_or_insert(ts_ns);
            w.regained = None;
        } else if w.at.lost.is_some() && w.regained.is_none() {
            w.regained = Some(ts_ns);
        }
    }

    /// An episode of instance `old_pid` ended: the fault that caused it (on that process,
    /// or on a worker of it) gets it as its outcome. Returns that fault's id.
    pub fn episode(&mut self, old_pid: u32, episode: u64, out: &mut Vec<Action>) -> Option<u64> {
        let at = self
            .watches
            .iter()
            .position(|w| w.pid == old_pid || w.instance == Some(old_pid))?;
        let w = self.watches.remove(at);
        self.decide(&w, FaultOutcome::Episode { episode }, out);
        Some(w.fault_id)
    }

    /// Time passed: faults whose effect is known are decided.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Action>) {
        let mut i = 0;
        while i < self.watches.len() {
            match self.judge(&self.watches[i], now) {
                Some(outcome) => {
                    let w = self.watches.remove(i);
                    let outcome = self.settle(&w, outcome);
                    self.decide(&w, outcome, out);
                }
                None => i += 1,
            }
        }
    }

    /// What a watch's outcome is at `now`, once it is known.
    fn judge(&self, w: &Watch, now: u64) -> Option<Judged> {
        if w.main_died || now < w.effect_until {
            return None;
        }
        let Some(since) = w.at.exit.or(w.at.lost) else {
            return Some(Judged::NoEffect);
        };
        let respawned = w.at.respawned.unwrap_or(0);
        let ready = if self.probed {
            match (w.at.lost, w.regained, w.last_ok) {
                (Some(_), Some(back), _) => Some(back.max(respawned)),
                (Some(_), None, _) => None,
                // Readiness never failed: ready at the death, or at the respawn.
                (None, _, Some(true)) => Some(since.max(respawned)),
                (None, _, _) => None,
            }
        } else {
            w.at.respawned
        };
        match ready {
            Some(ready) => Some(Judged::Recovered(ready)),
            None if now >= since + self.recovery_ns => {
                Some(Judged::Failed(if w.at.lost.is_some() {
                    format!(
                        "readiness not regained within {}",
                        human_duration(self.recovery_ns)
                    )
                } else {
                    format!(
                        "the process it hit was not replaced within {}",
                        human_duration(self.recovery_ns)
                    )
                }))
            }
            None => None,
        }
    }

    /// An in-place recovery (or none) for a judged watch.
    fn settle(&mut self, w: &Watch, judged: Judged) -> FaultOutcome {
        let (outcome, ready, reason) = match judged {
            Judged::NoEffect => return FaultOutcome::NoEffect,
            Judged::Recovered(ready) => (Outcome::Recovered, Some(ready), None),
            Judged::Failed(why) => (Outcome::Failed, None, Some(why)),
        };
        let id = self.in_place.len() as u64 + 1;
        let at = InPlaceMilestones { ready, ..w.at };
        self.in_place.push(InPlaceRecovery {
            id,
            fault_id: w.fault_id,
            pid: w.pid,
            role: w.role,
            outcome,
            at_ns: at,
            total_ns: ready.zip(at.fault).map(|(r, f)| r.saturating_sub(f)),
            reason,
        });
        FaultOutcome::InPlace { recovery: id }
    }

    fn decide(&mut self, w: &Watch, outcome: FaultOutcome, out: &mut Vec<Action>) {
        if self.probed {
            out.push(Action::EndWatch { fault: w.fault_id });
        }
        let text = match &outcome {
            FaultOutcome::Episode { episode } => format!("episode {episode}"),
            FaultOutcome::InPlace { recovery } => {
                let r = &self.in_place[*recovery as usize - 1];
                match r.total_ns {
                    Some(ns) => format!("in place, recovered in {}", human_duration(ns)),
                    None => format!("in place, FAILED: {}", r.reason.as_deref().unwrap_or("")),
                }
            }
            FaultOutcome::NoEffect => "no effect".into(),
            FaultOutcome::Unmeasured { reason } => format!("unmeasured: {reason}"),
        };
        out.push(Action::Say(format!(
            "chaos: fault {} ({}{}): {text}",
            w.fault_id,
            w.pid,
            w.role
                .map_or(String::new(), |r| format!(", {}", r.as_str()))
        )));
        self.outcomes.push((w.fault_id, outcome));
    }

    /// The run is over at `now`: a fault still waiting is decided if it can be, else
    /// unmeasured; with events lost, a fault seen to do nothing is unmeasured too (its
    /// effect may be among what was lost).
    pub fn finish(&mut self, now: u64, lost_events: u64, out: &mut Vec<Action>) {
        self.tick(now, out);
        for w in std::mem::take(&mut self.watches) {
            let reason = if w.main_died {
                "its main process died, but no episode of it was measured".to_string()
            } else {
                "the run ended before its effect was known".to_string()
            };
            self.decide(&w, FaultOutcome::Unmeasured { reason }, out);
        }
        if lost_events > 0 {
            for (_, outcome) in &mut self.outcomes {
                if *outcome == FaultOutcome::NoEffect {
                    *outcome = FaultOutcome::Unmeasured {
                        reason: format!(
                            "{lost_events} kernel events were lost: its effect may be among them"
                        ),
                    };
                }
            }
        }
        self.outcomes.sort_by_key(|(id, _)| *id);
    }

    /// The outcome of fault `id`, once decided.
    pub fn outcome(&self, id: u64) -> Option<&FaultOutcome> {
        self.outcomes.iter().find(|(f, _)| *f == id).map(|(_, o)| o)
    }
}

enum Judged {
    Recovered(u64),
    Failed(String),
    NoEffect,
}

#[cfg(test)]
mod tests;
