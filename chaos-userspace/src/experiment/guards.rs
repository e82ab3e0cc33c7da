//! Guards: the conditions under which an experiment aborts on its own. Pure: fed ended
//! episodes, answers continue or abort with the reason.
//!
//! - `episode_timeout`: an episode still open that long after its fault (or exit) aborts; it
//!   is at most the target's recovery timeout (checked with the file), so an episode the
//!   measurement fails for its timeout aborts too.
//! - `max_consecutive_failures`: that many failed recoveries in a row abort.
//! - `crash_rate_factor` k: a crash is a death of an instance that chaos did not signal. With
//!   `b` crashes in the baseline phase of length `B`, more than k x max(b, 1) crashes within
//!   any stretch of length `B` abort (the floor of one keeps a quiet baseline from turning
//!   the first crash into an abort with k = 1... and any k from dividing zero).

use std::collections::VecDeque;

use super::Guards;
use crate::episode::{Episode, Orphan, Outcome};

#[derive(Debug, Clone)]
pub struct GuardState {
    config: Guards,
    baseline_ns: u64,
    baseline_crashes: u64,
    /// Exit times of crashes since the baseline, oldest first.
    crashes: VecDeque<u64>,
    consecutive_failures: u32,
}

/// What the guards decided about one ended episode.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Continue,
    Abort(String),
}

impl GuardState {
    pub fn new(config: Guards, baseline_ns: u64, baseline_crashes: u64) -> Self {
        Self {
            config,
            baseline_ns,
            baseline_crashes,
            crashes: VecDeque::new(),
            consecutive_failures: 0,
        }
    }

    /// Crashes allowed within one baseline-long stretch, if the guard is on.
    pub fn crash_limit(&self) -> Option<f64> {
        self.config
            .crash_rate_factor
            .map(|k| k * self.baseline_crashes.max(1) as f64)
    }

    /// An episode ended; `crash`: its death was not caused by chaos.
    pub fn episode(&mut self, episode: &Episode, crash: bool) -> Decision {
        if crash && let Some(limit) = self.crash_limit() {
            let at = episode.at_ns.exit.or(episode.at_ns.fault).unwrap_or(0);
            self.crashes.push_back(at);
            while self
                .crashes
                .front()
                .is_some_and(|&t| at.saturating_sub(t) >= self.baseline_ns)
            {
                self.crashes.pop_front();
            }
            if self.crashes.len() as f64 > limit {
                return Decision::Abort(format!(
                    "crash rate: {} crashes within {}, more than {} x the baseline's {}",
                    self.crashes.len(),
                    crate::output::human_duration(self.baseline_ns),
                    self.config.crash_rate_factor.unwrap_or_default(),
                    self.baseline_crashes.max(1)
                ));
            }
        }
        match episode.outcome {
            Outcome::Recovered => self.consecutive_failures = 0,
            Outcome::Failed => {
                self.consecutive_failures += 1;
                let why = episode.reason.as_deref().unwrap_or("failed");
                if let Some(timeout) = self.config.episode_timeout
                    && why.starts_with("not recovered within")
                {
                    return Decision::Abort(format!(
                        "episode {} (pid {}): not recovered within the guard's {}",
                        episode.id,
                        episode.old_pid,
                        humantime::format_duration(timeout)
                    ));
                }
                if let Some(n) = self.config.max_consecutive_failures
                    && self.consecutive_failures >= n
                {
                    return Decision::Abort(format!(
                        "{} failed recoveries in a row (the last: episode {}, {why})",
                        self.consecutive_failures, episode.id
                    ));
                }
            }
            Outcome::Unfinished => {}
        }
        Decision::Continue
    }

    /// What the orphans of episode `episode`'s dead instance hold was found.
    pub fn orphans(&self, episode: u64, orphans: &[Orphan]) -> Decision {
        let holding: Vec<String> = orphans
            .iter()
            .filter(|o| !o.ports.is_empty() || !o.files.is_empty())
            .map(Orphan::describe)
            .collect();
        if !self.config.abort_on_orphans || holding.is_empty() {
            return Decision::Continue;
        }
        Decision::Abort(format!(
            "episode {episode}: the dead instance left orphans holding what the service needs: {}",
            holding.join(", ")
        ))
    }

    /// Time passed: `oldest` is the open episode that began first (id, pid, start).
    pub fn tick(&self, now_ns: u64, oldest: Option<(u64, u32, u64)>) -> Decision {
        match (self.config.episode_timeout, oldest) {
            (Some(timeout), Some((id, pid, start)))
                if now_ns.saturating_sub(start) > timeout.as_nanos() as u64 =>
            {
                Decision::Abort(format!(
                    "episode {id} (pid {pid}): not recovered within the guard's {}",
                    humantime::format_duration(timeout)
                ))
            }
            _ => Decision::Continue,
        }
    }

    /// One line for the progress display.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.config.max_consecutive_failures {
            parts.push(format!("{}/{n} failed in a row", self.consecutive_failures));
        }
        if let Some(limit) = self.crash_limit() {
            parts.push(format!("crashes {}/{limit}", self.crashes.len()));
        }
        if parts.is_empty() {
            "guards ok".into()
        } else {
            format!("guards ok ({})", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::{ExitInfo, Milestones, RecoveryPhases};

    fn episode(id: u64, outcome: Outcome, exit_ns: u64, reason: Option<&str>) -> Episode {
        Episode {
            id,
            outcome,
            supervisor: 10,
            old_pid: 100 + id as u32,
            new_pid: None,
            fault: None,
            exit: ExitInfo {
                exit_code: 0,
                signal: 9,
                core_dumped: false,
                lifetime_ns: 0,
                unsynced_bytes: None,
            },
            failed_starts: 0,
            at_ns: Milestones {
                exit: Some(exit_ns),
                ..Milestones::default()
            },
            phases_ns: RecoveryPhases::default(),
            total_ns: None,
            last_milestone: "exit".into(),
            reason: reason.map(str::to_string),
            fault_id: None,
            orphans: Vec::new(),
            answered_by: Vec::new(),
            systemd: None,
            power: None,
            verify: None,
        }
    }

    fn guards(timeout: bool, consecutive: Option<u32>, k: Option<f64>) -> Guards {
        Guards {
            episode_timeout: timeout.then(|| std::time::Duration::from_secs(2)),
            crash_rate_factor: k,
            max_consecutive_failures: consecutive,
            abort_on_orphans: false,
        }
    }

    #[test]
    fn orphans_holding_ports_or_data_abort_when_asked_and_harmless_ones_never() {
        let orphan = |pid, ports: Vec<u16>, files: Vec<&str>| Orphan {
            pid,
            comm: "nginx".into(),
            ports,
            files: files.into_iter().map(str::to_string).collect(),
            exited_ns: None,
        };
        let harmless = [orphan(20, vec![], vec![])];
        let holding = [
            orphan(21, vec![8080], vec![]),
            orphan(22, vec![], vec!["/srv/db/base/1"]),
        ];
        let off = GuardState::new(guards(false, None, None), 1, 0);
        assert_eq!(off.orphans(1, &holding), Decision::Continue);
        let on = GuardState::new(
            Guards {
                abort_on_orphans: true,
                ..guards(false, None, None)
            },
            1,
            0,
        );
        assert_eq!(on.orphans(1, &harmless), Decision::Continue);
        let Decision::Abort(why) = on.orphans(3, &holding) else {
            panic!("no abort")
        };
        assert_eq!(
            why,
            "episode 3: the dead instance left orphans holding what the service needs: 21 (nginx, port 8080), 22 (nginx, holds /srv/db/base/1)"
        );
    }

    #[test]
    fn consecutive_failures_abort_and_a_recovery_resets() {
        let mut g = GuardState::new(guards(false, Some(2), None), 1, 0);
        let failed = |id| episode(id, Outcome::Failed, 0, Some("the supervisor (10) exited"));
        assert_eq!(g.episode(&failed(1), false), Decision::Continue);
        assert_eq!(
            g.episode(&episode(2, Outcome::Recovered, 0, None), false),
            Decision::Continue
        );
        assert_eq!(g.episode(&failed(3), false), Decision::Continue);
        let Decision::Abort(why) = g.episode(&failed(4), false) else {
            panic!("no abort")
        };
        assert!(why.starts_with("2 failed recoveries in a row"), "{why}");
    }

    #[test]
    fn a_timed_out_episode_aborts_at_once() {
        let mut g = GuardState::new(guards(true, None, None), 1, 0);
        let e = episode(1, Outcome::Failed, 0, Some("not recovered within 2s"));
        assert!(matches!(g.episode(&e, false), Decision::Abort(w) if w.contains("episode 1")));
        // Still open past the guard's timeout.
        let g = GuardState::new(guards(true, None, None), 1, 0);
        assert_eq!(
            g.tick(2_000_000_000, Some((7, 70, 500_000_000))),
            Decision::Continue
        );
        assert!(matches!(
            g.tick(2_600_000_000, Some((7, 70, 500_000_000))),
            Decision::Abort(w) if w.starts_with("episode 7 (pid 70): not recovered within the guard's 2s")
        ));
        // Without the guard the same episode is only a failure.
        let mut g = GuardState::new(guards(false, None, None), 1, 0);
        assert_eq!(g.episode(&e, false), Decision::Continue);
    }

    #[test]
    fn crash_rate_compares_with_the_baseline_over_a_sliding_stretch() {
        const S: u64 = 1_000_000_000;
        // Baseline: 10 s with 1 crash; k = 2: more than 2 crashes within 10 s abort.
        let mut g = GuardState::new(guards(false, None, Some(2.0)), 10 * S, 1);
        let crash = |id, at| episode(id, Outcome::Recovered, at, None);
        assert_eq!(g.episode(&crash(1, S), true), Decision::Continue);
        assert_eq!(g.episode(&crash(2, 5 * S), true), Decision::Continue);
        // 12 s: the first crash left the stretch.
        assert_eq!(g.episode(&crash(3, 12 * S), true), Decision::Continue);
        // Deaths chaos caused do not count.
        assert_eq!(g.episode(&crash(4, 13 * S), false), Decision::Continue);
        let Decision::Abort(why) = g.episode(&crash(5, 14 * S), true) else {
            panic!("no abort")
        };
        assert!(
            why.starts_with("crash rate: 3 crashes within 10.000s"),
            "{why}"
        );
    }
}
