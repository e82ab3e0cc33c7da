//! chaos outputs as people read them, in the terminal or as a self-contained HTML page (SVG
//! plots drawn with plotters); `chaos report` (`commands::report`) picks one. A single run's
//! result is shown whole; any other output ([`source`]), or several, are merged ([`merge`]).
//!
//! Both renditions show the verdict and its clauses, a histogram per recovery phase, the CDF
//! of total recovery time, and a timeline of faults and episodes.

pub mod html;
pub mod merge;
pub mod source;
pub mod terminal;

use crate::{
    episode::{Episode, Outcome, PHASES},
    experiment::{
        accounting::{self, FaultOutcome},
        result::{RunFault, RunResult},
    },
    output::human_duration,
};

/// What became of a fault, in words: `episode 2: recovered in 4.20ms`, `in place: recovered
/// in 420.00ms`, `no effect`, `unmeasured: ...`.
pub fn outcome_text(r: &RunResult, f: &RunFault) -> String {
    match &f.outcome {
        FaultOutcome::Episode { episode } => {
            let Some(e) = r.episodes.iter().find(|e| e.id == *episode) else {
                return format!("episode {episode}");
            };
            match (e.outcome, e.total_ns) {
                (Outcome::Recovered, Some(ns)) => {
                    format!("episode {episode}: recovered in {}", human_duration(ns))
                }
                _ => format!(
                    "episode {episode}: {} ({})",
                    e.outcome.as_str(),
                    e.reason.as_deref().unwrap_or("")
                ),
            }
        }
        FaultOutcome::InPlace { recovery } => match r.in_place.iter().find(|p| p.id == *recovery) {
            Some(p) => match p.total_ns {
                Some(ns) => format!("in place: recovered in {}", human_duration(ns)),
                None => format!(
                    "in place: {} ({})",
                    p.outcome.as_str(),
                    p.reason.as_deref().unwrap_or("")
                ),
            },
            None => format!("in place {recovery}"),
        },
        FaultOutcome::NoEffect => "no effect".into(),
        FaultOutcome::Unmeasured { reason } => format!("UNMEASURED: {reason}"),
    }
}

/// The in-place recoveries' phases, as the episodes' table shows theirs.
pub fn write_in_place(out: &mut impl std::io::Write, r: &RunResult) -> std::io::Result<()> {
    if r.in_place.is_empty() {
        return Ok(());
    }
    let failed = r
        .in_place
        .iter()
        .filter(|p| p.outcome != Outcome::Recovered)
        .count();
    writeln!(
        out,
        "\n{} in-place recovery(ies) (the main process lived): {} recovered, {failed} failed",
        r.in_place.len(),
        r.in_place.len() - failed
    )?;
    crate::measure::sink::header(out)?;
    for (label, q) in accounting::in_place_quantiles(&r.in_place) {
        crate::measure::sink::row(out, label, &q, human_duration)?;
    }
    Ok(())
}

/// A line per fault: who it hit, in which role, and what became of it.
pub fn write_faults(out: &mut impl std::io::Write, r: &RunResult) -> std::io::Result<()> {
    if r.faults.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nfaults:")?;
    for f in &r.faults {
        let rec = &f.record;
        writeln!(
            out,
            "  #{} {} -> {} ({}{}) [{}]: {}",
            rec.id,
            rec.value,
            rec.pid,
            rec.comm,
            rec.role
                .map_or(String::new(), |role| format!(", {}", role.as_str())),
            rec.backend.as_str(),
            outcome_text(r, f)
        )?;
    }
    Ok(())
}

pub fn verdict_word(result: &RunResult) -> &'static str {
    crate::experiment::verdict::word(result.verdict)
}

/// The phases in order, then "total": (name, label).
pub fn phase_names() -> Vec<(&'static str, &'static str)> {
    PHASES
        .iter()
        .map(|p| (p.name, p.label))
        .chain([("total", "total")])
        .collect()
}

/// Durations (ns) of `phase` over the recovered episodes.
pub fn samples(episodes: &[Episode], phase: &str) -> Vec<u64> {
    episodes
        .iter()
        .filter(|e| e.outcome == Outcome::Recovered)
        .filter_map(|e| e.phase_ns(phase))
        .collect()
}

/// Equal-width bins covering [min, max] of `values`: (start, end, count) per bin, at most
/// `max_bins` (fewer for few values); empty bins are kept (they are gaps in the picture).
pub fn bins(values: &[u64], max_bins: usize) -> Vec<(u64, u64, u64)> {
    let (Some(&min), Some(&max)) = (values.iter().min(), values.iter().max()) else {
        return Vec::new();
    };
    let n = values.len().clamp(1, max_bins.max(1)) as u64;
    let width = (max - min + 1).div_ceil(n);
    let used = (max - min) / width + 1;
    let mut counts = vec![0u64; used as usize];
    for &v in values {
        counts[((v - min) / width) as usize] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let start = min + i as u64 * width;
            (start, start + width, c)
        })
        .collect()
}

/// The empirical CDF: (value, fraction of values <= it), sorted.
pub fn cdf(values: &[u64]) -> Vec<(u64, f64)> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, (i + 1) as f64 / n))
        .collect()
}

/// Where an episode sits on the timeline (kernel ns): from its fault (or exit) to its end
/// (ready, or the last milestone seen).
pub fn episode_span(e: &Episode) -> (u64, u64) {
    let at = &e.at_ns;
    let start = at.fault.or(at.exit).unwrap_or(0);
    let end = [at.ready, at.exec, at.forked, at.reaped, at.exit]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or(start);
    (start, end.max(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_every_value_once() {
        let values = [10, 11, 12, 20, 30, 100];
        let b = bins(&values, 4);
        assert_eq!(b.len(), 4);
        assert_eq!(b.iter().map(|(_, _, c)| c).sum::<u64>(), 6);
        assert_eq!(b[0], (10, 33, 5));
        assert_eq!(b[3], (79, 102, 1));
        assert_eq!(bins(&[5], 20), vec![(5, 6, 1)]);
        assert!(bins(&[], 20).is_empty());
        let same = bins(&[7, 7, 7], 20);
        assert_eq!(same.iter().map(|(_, _, c)| c).sum::<u64>(), 3);
    }

    #[test]
    fn cdf_ends_at_one() {
        let c = cdf(&[3, 1, 2, 4]);
        assert_eq!(c.first(), Some(&(1, 0.25)));
        assert_eq!(c.last(), Some(&(4, 1.0)));
    }
}
