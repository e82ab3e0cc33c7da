//! The run's end: the episodes still open, the verdict with its clauses, the result and the
//! audit log's last entry.

use super::*;

impl Runner {
    /// The run is over: the episodes the end left open, the verdict, the result.
    pub fn finish(mut self, end: &End) -> RunOutcome {
        let mut actions = Vec::new();
        let (unfinished, summary) = self.measurement.finish(end, &mut actions);
        for mut episode in unfinished {
            episode.fault_id = self
                .accounting
                .episode(episode.old_pid, episode.id, &mut actions);
            self.episodes.push(episode);
        }
        self.accounting
            .finish(end.ts_ns, end.counters.lost, &mut actions);
        let duration_ns = end.ts_ns.saturating_sub(self.header.start_ns);
        let ledger = self.injector.ledger();
        let inject = ledger.summary(duration_ns, end.counters.lost, false);
        let evidence = Evidence {
            unfired: self.injector.unfired(),
            injected: inject.injected,
            unconfirmed: inject.unconfirmed.len(),
            verify_after: self.verify_after.clone(),
            verify_end: self.verify_end.clone(),
            unmeasured: self
                .accounting
                .outcomes
                .iter()
                .filter_map(|(id, o)| match o {
                    FaultOutcome::Unmeasured { reason } => Some((*id, reason.clone())),
                    _ => None,
                })
                .collect(),
            no_effect: self
                .accounting
                .outcomes
                .iter()
                .filter(|(_, o)| *o == FaultOutcome::NoEffect)
                .count(),
            in_place: self.accounting.in_place.clone(),
        };
        // Every episode, those the end closed included.
        let mut stats = Stats::default();
        for e in &self.episodes {
            stats.add(e);
        }
        let clauses = verdict::clauses(&self.experiment, &stats, &evidence);
        let verdict = verdict::verdict(&clauses, self.abort.is_some());
        let code = verdict.exit_code();
        let e = &self.experiment;
        let result = RunResult {
            experiment: e.id.clone(),
            file: e.path.display().to_string(),
            description: e.description.clone(),
            hypothesis: e.hypothesis.statement.clone(),
            blast_radius: e.radius.name().into(),
            verdict,
            exit_code: code,
            abort: self.abort.clone(),
            start_unix_ns: self.header.start_unix_ns,
            start_ns: self.header.start_ns,
            host: self.header.host.clone(),
            duration_ns,
            baseline: Baseline {
                duration_ns: e.phases.baseline.as_nanos() as u64,
                crashes: self.baseline_crashes,
            },
            clauses: clauses.clone(),
            faults: ledger
                .records()
                .map(|r| RunFault {
                    record: r.clone(),
                    outcome: self.accounting.outcome(r.id).cloned().unwrap_or(
                        FaultOutcome::Unmeasured {
                            reason: "no outcome was recorded".into(),
                        },
                    ),
                })
                .collect(),
            in_place: self.accounting.in_place.clone(),
            injected: inject.injected,
            confirmed: inject.confirmed,
            unconfirmed: inject.unconfirmed,
            episodes: self.episodes,
            summary,
        };
        RunOutcome {
            result,
            clauses,
            verdict,
            code,
        }
    }

    /// The audit log's last entry for an outcome.
    pub fn end_entry(outcome: &RunOutcome) -> Entry {
        Entry::End(entry::End {
            injected: outcome.result.injected,
            confirmed: outcome.result.confirmed,
            unconfirmed: outcome.result.unconfirmed.clone(),
            dry_run: false,
            verdict: Some(verdict::word(outcome.verdict).to_lowercase()),
            exit_code: Some(outcome.code),
            clauses: outcome
                .clauses
                .iter()
                .map(|c| entry::ClauseEntry {
                    name: c.name.clone(),
                    held: c.held,
                })
                .collect(),
            error: None,
        })
    }
}
