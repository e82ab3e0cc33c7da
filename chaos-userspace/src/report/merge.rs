//! Several sources as one answer: their HdrHistograms added exactly, their counts summed, a
//! row per source; and two such sets compared (`--baseline`).

use serde::Serialize;

use super::source::{Counts, Kind, Source};
use crate::{
    experiment::verdict::{self, Verdict},
    measure::stats::{PhaseSummary, Quantiles, Stats},
    output::human_duration,
    sys::host::Host,
};

/// A source's row in a merge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceRow {
    pub path: String,
    pub kind: Kind,
    pub host: Option<String>,
    pub kernel: Option<String>,
    /// The experiment's id, or what was measured or injected into.
    pub experiment: String,
    pub start_unix_ns: Option<u64>,
    pub duration_ns: u64,
    /// A run's verdict (`HELD`, `REFUTED`, `ABORTED`); none for other outputs.
    pub verdict: Option<&'static str>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Its own total recovery time (recovered episodes).
    pub total_ns: Quantiles,
    /// What it may have missed: kernel events lost, processes the target set had no room
    /// for, events that could not be read.
    pub lost: u64,
    pub targets_full: u64,
    pub read_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How many runs ended each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Verdicts {
    pub held: u64,
    pub refuted: u64,
    pub aborted: u64,
}

/// The merge of every source: what `chaos report --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergedSummary {
    pub sources: Vec<SourceRow>,
    #[serde(flatten)]
    pub counts: Counts,
    pub lost: u64,
    pub targets_full: u64,
    pub read_errors: u64,
    /// The sources that may not be whole (cut short, events lost), by path.
    pub incomplete: Vec<String>,
    /// Of the sources that are runs.
    pub verdicts: Verdicts,
    /// Each phase and "total" over every recovered episode of every source.
    pub phases_ns: Vec<(String, Quantiles)>,
    pub unsynced_bytes_at_exit: Quantiles,
}

/// Sources merged: the summary, and the merged histograms (for plots and the log).
pub struct Merge {
    pub summary: MergedSummary,
    pub stats: Stats,
    /// The earliest start (wall clock, ns), which the merged interval log begins at.
    pub start_unix_ns: Option<u64>,
    /// From the earliest start to the latest end, on the wall clock.
    pub duration_ns: u64,
}

/// Merges `sources`: each one's histograms, with its timeline moved onto the wall clock (ns
/// since the earliest start), are added to the others'.
pub fn merge(sources: &[Source]) -> Merge {
    let start = sources.iter().filter_map(|s| s.start_unix_ns).min();
    let mut stats = Stats::default();
    let mut counts = Counts::default();
    let mut verdicts = Verdicts::default();
    let (mut lost, mut targets_full, mut read_errors) = (0, 0, 0);
    let mut end = 0u64;
    for s in sources {
        // Kernel time of this source -> ns since the earliest start.
        let offset = match (start, s.start_unix_ns, s.start_ns) {
            (Some(first), Some(unix), Some(mono)) => {
                i128::from(unix) - i128::from(first) - i128::from(mono)
            }
            _ => -i128::from(s.start_ns.unwrap_or(0)),
        };
        stats.merge(&s.stats(), offset);
        counts += s.counts();
        lost += s.lost;
        targets_full += s.targets_full;
        read_errors += s.read_errors;
        match s.verdict {
            Some(Verdict::Held) => verdicts.held += 1,
            Some(Verdict::Refuted) => verdicts.refuted += 1,
            Some(Verdict::Aborted) => verdicts.aborted += 1,
            None => {}
        }
        let began = match (start, s.start_unix_ns) {
            (Some(first), Some(unix)) => unix.saturating_sub(first),
            _ => 0,
        };
        end = end.max(began + s.duration_ns);
    }
    let PhaseSummary {
        phases_ns,
        unsynced_bytes_at_exit,
        ..
    } = stats.summary();
    let rows: Vec<SourceRow> = sources.iter().map(row).collect();
    Merge {
        summary: MergedSummary {
            incomplete: rows
                .iter()
                .filter(|r| r.incomplete())
                .map(|r| r.path.clone())
                .collect(),
            sources: rows,
            counts,
            lost,
            targets_full,
            read_errors,
            verdicts,
            phases_ns,
            unsynced_bytes_at_exit,
        },
        stats,
        start_unix_ns: start,
        duration_ns: end,
    }
}

fn row(s: &Source) -> SourceRow {
    let (host, kernel) = match &s.host {
        Some(Host { name, kernel }) => (Some(name.clone()), Some(kernel.clone())),
        None => (None, None),
    };
    SourceRow {
        path: s.path.clone(),
        kind: s.kind,
        host,
        kernel,
        experiment: s.name.clone(),
        start_unix_ns: s.start_unix_ns,
        duration_ns: s.duration_ns,
        verdict: s.verdict.map(verdict::word),
        counts: s.counts(),
        total_ns: s
            .stats()
            .summary()
            .phases_ns
            .into_iter()
            .find(|(name, _)| name == "total")
            .map_or_else(Quantiles::default, |(_, q)| q),
        lost: s.lost,
        targets_full: s.targets_full,
        read_errors: s.read_errors,
        note: s.note.clone(),
    }
}

impl SourceRow {
    /// Whether it may have missed something: cut short, or events lost.
    pub fn incomplete(&self) -> bool {
        self.note.is_some() || self.lost + self.targets_full + self.read_errors > 0
    }

    /// What it may have missed, in words (empty when nothing).
    pub fn missed_text(&self) -> String {
        let mut parts = Vec::new();
        if self.lost > 0 {
            parts.push(format!("{} event(s) lost", self.lost));
        }
        if self.targets_full > 0 {
            parts.push(format!(
                "{} process(es) the target set had no room for",
                self.targets_full
            ));
        }
        if self.read_errors > 0 {
            parts.push(format!("{} unreadable event(s)", self.read_errors));
        }
        if let Some(n) = &self.note {
            parts.push(n.clone());
        }
        parts.join("; ")
    }

    /// What this source concluded, in words: `HELD; 3 recovered, 0 failed; 3 fault(s) ...`.
    pub fn outcome_text(&self) -> String {
        let c = &self.counts;
        let mut parts = Vec::new();
        if let Some(v) = self.verdict {
            parts.push(v.to_string());
        }
        if self.kind != Kind::Inject {
            let mut e = format!(
                "{} recovered, {} failed, {} unfinished",
                c.recovered, c.failed, c.unfinished
            );
            let t = &self.total_ns;
            if t.count > 0 {
                e.push_str(&format!(
                    " (total p50 {}, p99 {}, max {})",
                    human_duration(t.p50),
                    human_duration(t.p99),
                    human_duration(t.max)
                ));
            }
            parts.push(e);
        }
        if c.faults > 0 {
            let mut f = format!("{} fault(s), {} confirmed", c.faults, c.confirmed);
            if self.verdict.is_some() {
                f.push_str(&format!(
                    "; {} in place, {} no effect, {} unmeasured",
                    c.in_place, c.no_effect, c.unmeasured
                ));
            } else {
                f.push_str(" (what became of the service is not followed by chaos inject)");
            }
            parts.push(f);
        }
        parts.join("; ")
    }
}

/// Fewer samples than this on a side, and a quantile says little.
pub const FEW: u64 = 10;

/// One phase before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseDelta {
    pub phase: String,
    pub baseline: Quantiles,
    pub candidate: Quantiles,
    /// candidate - baseline, ns (none when a side has no value).
    pub p50_delta_ns: Option<i64>,
    pub p99_delta_ns: Option<i64>,
    pub max_delta_ns: Option<i64>,
    /// Why the deltas may not mean much.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What `chaos report --baseline A... -- B... --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub baseline: MergedSummary,
    pub candidate: MergedSummary,
    pub phases: Vec<PhaseDelta>,
    /// What the phases cannot show: the quantiles are of recovered episodes only, so a side
    /// with more failed or unfinished episodes, refuted runs, or missed events is named.
    pub notes: Vec<String>,
}

fn outcome_notes(b: &MergedSummary, c: &MergedSummary) -> Vec<String> {
    let mut notes = Vec::new();
    let not_recovered = |s: &MergedSummary| s.counts.failed + s.counts.unfinished;
    if not_recovered(b) != not_recovered(c) {
        notes.push(format!(
            "not recovered: {} of {} episode(s) before, {} of {} after; the phases are of recovered episodes only",
            not_recovered(b),
            b.counts.episodes,
            not_recovered(c),
            c.counts.episodes
        ));
    }
    if b.verdicts != c.verdicts {
        let v = |s: &MergedSummary| {
            format!(
                "{} held, {} refuted, {} aborted",
                s.verdicts.held, s.verdicts.refuted, s.verdicts.aborted
            )
        };
        notes.push(format!("runs: {} before, {} after", v(b), v(c)));
    }
    for (name, s) in [("baseline", b), ("candidate", c)] {
        if !s.incomplete.is_empty() {
            notes.push(format!(
                "the {name} has source(s) that may have missed something: {}",
                s.incomplete.join(", ")
            ));
        }
    }
    notes
}

/// The baseline set against the candidate set, phase by phase.
pub fn compare(baseline: MergedSummary, candidate: MergedSummary) -> Comparison {
    let phases = baseline
        .phases_ns
        .iter()
        .map(|(name, b)| {
            let c = candidate
                .phases_ns
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(Quantiles::default, |(_, q)| *q);
            let delta = |f: fn(&Quantiles) -> u64| {
                (b.count > 0 && c.count > 0).then(|| f(&c) as i64 - f(b) as i64)
            };
            let note = if b.count == 0 || c.count == 0 {
                Some(format!(
                    "no recovered episode in the {}",
                    if b.count == 0 { "baseline" } else { "candidate" }
                ))
            } else if b.count.min(c.count) < FEW {
                Some(format!(
                    "too few to tell: {} against {} episode(s); with fewer than {FEW} a side, p99 is the max and one outlier moves p50",
                    b.count, c.count
                ))
            } else if b.count.min(c.count) < 100 {
                Some(format!(
                    "p99 of fewer than 100 episodes ({} against {}) is within a value or two of the max",
                    b.count, c.count
                ))
            } else {
                None
            };
            PhaseDelta {
                phase: name.clone(),
                baseline: *b,
                candidate: c,
                p50_delta_ns: delta(|q| q.p50),
                p99_delta_ns: delta(|q| q.p99),
                max_delta_ns: delta(|q| q.max),
                note,
            }
        })
        .collect();
    Comparison {
        notes: outcome_notes(&baseline, &candidate),
        baseline,
        candidate,
        phases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::source::Kind;

    fn measured(host: &str, start_unix_ns: u64, totals_ms: &[u64]) -> Source {
        let episodes = totals_ms
            .iter()
            .enumerate()
            .map(|(i, ms)| {
                let mut e = crate::export::tests::episode();
                e.id = i as u64 + 1;
                e.total_ns = Some(ms * 1_000_000);
                e
            })
            .collect();
        let mut s = Source::of_measure(std::path::Path::new(host), Kind::Measure, episodes, None);
        s.host = Some(Host {
            name: host.into(),
            kernel: "6.18.0".into(),
        });
        // As if its summary had been read: whole, and dated.
        s.note = None;
        s.start_unix_ns = Some(start_unix_ns);
        s.start_ns = Some(0);
        s.duration_ns = 5_000_000_000;
        s
    }

    #[test]
    fn a_merge_sums_the_counts_and_has_the_quantiles_of_every_episode() {
        let a = measured("a", 10_000_000_000, &[3, 5, 900]);
        let b = measured("b", 12_000_000_000, &[4, 6]);
        let m = merge(&[a.clone(), b.clone()]);
        assert_eq!(m.summary.sources.len(), 2);
        assert_eq!(m.summary.sources[1].host.as_deref(), Some("b"));
        assert_eq!(m.summary.counts.recovered, 5);
        let mut all = a.stats();
        all.merge(&b.stats(), 0);
        assert_eq!(m.summary.phases_ns, all.summary().phases_ns);
        let total = m.summary.phases_ns.last().unwrap().1;
        assert_eq!(total.count, 5);
        assert!(
            (899_000_000..=901_000_000).contains(&total.max),
            "{total:?}"
        );
        // From the first start to the last end, on the wall clock.
        assert_eq!(m.start_unix_ns, Some(10_000_000_000));
        assert_eq!(m.duration_ns, 7_000_000_000);
    }

    /// Two hosts' kernel clocks have nothing in common: each source's episodes are placed
    /// on the wall clock by its own (start_unix_ns, start_ns) pair.
    #[test]
    fn sources_on_different_clocks_land_in_the_slices_of_their_wall_time() {
        use hdrhistogram::serialization::interval_log;
        let at = |s: &mut Source, began_s: u64, ms: u64| {
            let e = &mut s.episodes[0];
            e.at_ns.fault = Some(began_s * 1_000_000_000);
            e.at_ns.exit = Some(began_s * 1_000_000_000 + 1);
            e.total_ns = Some(ms * 1_000_000);
        };
        // Host a: its kernel clock read 5 s at the run's wall start of 100 s; its episode
        // at mono 7 s.
        let mut a = measured("a", 100_000_000_000, &[1]);
        a.start_ns = Some(5_000_000_000);
        at(&mut a, 7, 5);
        // Host b: up for 1000 s, started at wall 130 s; its episode at mono 1003 s.
        let mut b = measured("b", 130_000_000_000, &[1]);
        b.start_ns = Some(1_000_000_000_000);
        at(&mut b, 1003, 9);
        a.duration_ns = 40_000_000_000;
        b.duration_ns = 40_000_000_000;
        let m = merge(&[a, b]);
        assert_eq!(m.start_unix_ns, Some(100_000_000_000));
        assert_eq!(m.duration_ns, 70_000_000_000, "from a's start to b's end");
        let span = crate::measure::stats::LogSpan::new(
            100_000_000_000,
            0,
            m.duration_ns,
            std::time::Duration::from_secs(10),
        );
        let mut out = Vec::new();
        m.stats.write_hdr_log(&mut out, &span).unwrap();
        let totals: Vec<(u64, u64)> = interval_log::IntervalLogIterator::new(&out)
            .filter_map(|entry| match entry {
                Ok(interval_log::LogEntry::Interval(h))
                    if h.tag().is_some_and(|t| t.as_str() == "total") =>
                {
                    Some((
                        h.start_timestamp().as_secs(),
                        (h.max() / 1e6).round() as u64,
                    ))
                }
                _ => None,
            })
            .collect();
        // a's episode 2 s after the start (slice 0), b's 33 s after it (slice 3).
        assert_eq!(
            totals,
            [(0, 5), (10, 0), (20, 0), (30, 9), (40, 0), (50, 0), (60, 0)]
        );
    }

    #[test]
    fn a_comparison_says_when_the_counts_are_too_small_to_tell() {
        let before = merge(&[measured("a", 0, &[10, 11, 12])]).summary;
        let after = merge(&[measured("b", 0, &[20, 21, 22])]).summary;
        let c = compare(before, after);
        let total = c.phases.iter().find(|p| p.phase == "total").unwrap();
        let p50 = total.p50_delta_ns.unwrap();
        assert!((9_900_000..=10_100_000).contains(&p50), "{p50}");
        assert!(
            total
                .note
                .as_ref()
                .unwrap()
                .starts_with("too few to tell: 3 against 3")
        );
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        // A candidate with an episode that did not recover is named: its phases would look
        // as fast as the recovered ones alone.
        let mut worse = measured("b", 0, &[20, 21]);
        worse.episodes[1].outcome = crate::episode::Outcome::Failed;
        let c = compare(
            merge(&[measured("a", 0, &[10, 11])]).summary,
            merge(&[worse]).summary,
        );
        assert_eq!(
            c.notes,
            [
                "not recovered: 0 of 2 episode(s) before, 1 of 2 after; the phases are of recovered episodes only"
            ]
        );
        let none = compare(
            merge(&[measured("a", 0, &[])]).summary,
            merge(&[measured("b", 0, &[1])]).summary,
        );
        let total = none.phases.iter().find(|p| p.phase == "total").unwrap();
        assert_eq!(total.p50_delta_ns, None);
        assert_eq!(
            total.note.as_deref(),
            Some("no recovered episode in the baseline")
        );
    }
}
