//! The report in a terminal: verdict, clauses, a bar histogram per phase, the CDF of total
//! recovery at a few fractions, and a timeline line per fault and episode.

use std::io::Write;

use super::{
    bins, cdf, episode_span,
    merge::{Comparison, Merge},
    outcome_text, phase_names, samples,
    source::Source,
    verdict_word,
};
use crate::{episode::Episode, experiment::result::RunResult, output::human_duration};

/// Width of the longest histogram bar, in characters.
const BAR: u64 = 40;

pub fn render(out: &mut impl Write, r: &RunResult) -> std::io::Result<()> {
    writeln!(
        out,
        "experiment {} ({}): {} (exit {})",
        r.experiment,
        r.blast_radius,
        verdict_word(r),
        r.exit_code
    )?;
    writeln!(out, "hypothesis: {}", r.hypothesis)?;
    if let Some(why) = &r.abort {
        writeln!(out, "aborted: {why}")?;
    }
    crate::experiment::verdict::write_clauses(out, &r.clauses)?;
    writeln!(
        out,
        "{} fault(s), {} episode(s) in {}",
        r.faults.len(),
        r.episodes.len(),
        human_duration(r.duration_ns)
    )?;
    write_distributions(out, &r.episodes)?;
    write_timeline(out, r)
}

/// A bar histogram per phase, then the CDF of total recovery at a few fractions.
fn write_distributions(out: &mut impl Write, episodes: &[Episode]) -> std::io::Result<()> {
    for (name, label) in phase_names() {
        let values = samples(episodes, name);
        if values.is_empty() {
            continue;
        }
        writeln!(out, "\n{label} ({} episodes)", values.len())?;
        let b = bins(&values, 10);
        let most = b.iter().map(|(_, _, c)| *c).max().unwrap_or(1).max(1);
        for (start, end, count) in b {
            let len = (count * BAR).div_ceil(most) as usize;
            writeln!(
                out,
                "  {:>9} - {:<9} {:<width$} {count}",
                human_duration(start),
                human_duration(end),
                "█".repeat(len),
                width = BAR as usize
            )?;
        }
    }
    let total = samples(episodes, "total");
    if !total.is_empty() {
        let c = cdf(&total);
        write!(out, "\ntotal recovery CDF:")?;
        for fraction in [0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
            let at = c
                .iter()
                .find(|(_, f)| *f >= fraction)
                .map_or(0, |(v, _)| *v);
            write!(out, "  {:.0}% <= {}", fraction * 100.0, human_duration(at))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn write_timeline(out: &mut impl Write, r: &RunResult) -> std::io::Result<()> {
    writeln!(out, "\ntimeline (from the start of the run):")?;
    let since = |ts: u64| ts.saturating_sub(r.start_ns) as f64 / 1e9;
    let mut lines: Vec<(u64, String)> = r
        .faults
        .iter()
        .map(|f| {
            let rec = &f.record;
            (
                rec.ts_ns,
                format!(
                    "  {:>9.3}s  fault {}: {} -> {} ({}{}) [{}]: {}",
                    since(rec.ts_ns),
                    rec.id,
                    rec.value,
                    rec.pid,
                    rec.comm,
                    rec.role
                        .map_or(String::new(), |role| format!(", {}", role.as_str())),
                    rec.backend.as_str(),
                    outcome_text(r, f)
                ),
            )
        })
        .collect();
    for p in &r.in_place {
        let end = p.at_ns.ready.or(p.at_ns.exit).unwrap_or(0);
        lines.push((
            end,
            format!(
                "  {:>9.3}s  in place {} (fault {}): pid {} {}{}",
                since(end),
                p.id,
                p.fault_id,
                p.pid,
                p.outcome.as_str(),
                p.total_ns
                    .map_or(String::new(), |ns| format!(" after {}", human_duration(ns)))
            ),
        ));
    }
    for e in &r.episodes {
        let (start, end) = episode_span(e);
        let outcome = format!("{:?}", e.outcome).to_lowercase();
        let failed_starts = match e.failed_starts {
            0 => String::new(),
            n => format!(", {n} failed start(s)"),
        };
        let notes: String = e.notes().iter().map(|n| format!("; {n}")).collect();
        lines.push((
            end,
            format!(
                "  {:>9.3}s  episode {}: pid {} -> {} {outcome} after {}{failed_starts}{notes}",
                since(end),
                e.id,
                e.old_pid,
                e.new_pid.map_or("-".into(), |p| p.to_string()),
                human_duration(end - start)
            ),
        ));
    }
    lines.sort_by_key(|(ts, _)| *ts);
    for (_, line) in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The wall clock as a report shows it: `2026-12-02 03:10:07 UTC`.
pub fn wall(unix_ns: Option<u64>) -> String {
    unix_ns
        .and_then(|ns| jiff::Timestamp::from_nanosecond(i128::from(ns)).ok())
        .map_or("-".into(), |t| {
            t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
        })
}

/// Several sources (or one that is not a run's result): a row per source, the merged counts,
/// the merged phase table and histograms, the episodes that did not recover.
pub fn render_merge(out: &mut impl Write, sources: &[Source], m: &Merge) -> std::io::Result<()> {
    let s = &m.summary;
    let c = &s.counts;
    writeln!(out, "{} source(s):", s.sources.len())?;
    for (i, row) in s.sources.iter().enumerate() {
        writeln!(
            out,
            "  [{}] {}  {} on {} ({}), {}, {}: {}{}",
            i + 1,
            row.path,
            row.experiment,
            row.host.as_deref().unwrap_or("an unnamed host"),
            row.kernel.as_deref().unwrap_or("kernel unknown"),
            wall(row.start_unix_ns),
            human_duration(row.duration_ns),
            row.outcome_text(),
            match row.missed_text() {
                m if m.is_empty() => String::new(),
                m => format!(" (MAY BE INCOMPLETE: {m})"),
            }
        )?;
    }
    writeln!(
        out,
        "\nmerged: {} episode(s): {} recovered, {} failed, {} unfinished; {} failed start(s)",
        c.episodes, c.recovered, c.failed, c.unfinished, c.failed_starts
    )?;
    if c.faults > 0 {
        writeln!(
            out,
            "        {} fault(s), {} confirmed; {} in place, {} no effect, {} unmeasured{}",
            c.faults,
            c.confirmed,
            c.in_place,
            c.no_effect,
            c.unmeasured,
            match c.not_followed {
                0 => String::new(),
                n => format!("; {n} not followed (chaos inject streams)"),
            }
        )?;
    }
    let v = &s.verdicts;
    if v.held + v.refuted + v.aborted > 0 {
        writeln!(
            out,
            "        runs: {} held, {} refuted, {} aborted",
            v.held, v.refuted, v.aborted
        )?;
    }
    if !s.incomplete.is_empty() {
        writeln!(
            out,
            "        {} source(s) may be incomplete ({} event(s) lost, {} target-set overflow(s), {} unreadable event(s) in all): {}",
            s.incomplete.len(),
            s.lost,
            s.targets_full,
            s.read_errors,
            s.incomplete.join(", ")
        )?;
    }
    writeln!(
        out,
        "\nrecovery phases (merged HdrHistograms, recovered episodes):"
    )?;
    crate::measure::sink::header(out)?;
    for ((_, label), (_, q)) in phase_names().iter().zip(&s.phases_ns) {
        crate::measure::sink::row(out, label, q, human_duration)?;
    }
    let episodes: Vec<Episode> = sources.iter().flat_map(|s| s.episodes.clone()).collect();
    write_distributions(out, &episodes)?;
    let mut failed = sources.iter().enumerate().flat_map(|(i, src)| {
        src.episodes
            .iter()
            .filter(|e| e.outcome != crate::episode::Outcome::Recovered)
            .map(move |e| (i, e))
    });
    if let Some(first) = failed.next() {
        writeln!(out, "\nnot recovered:")?;
        for (i, e) in std::iter::once(first).chain(failed) {
            writeln!(
                out,
                "  [{}] episode {}: pid {} {} after {}: {}",
                i + 1,
                e.id,
                e.old_pid,
                e.outcome.as_str(),
                e.last_milestone,
                e.reason.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

/// `--baseline`: each phase's p50, p99 and max before and after, with the change.
pub fn render_comparison(out: &mut impl Write, c: &Comparison) -> std::io::Result<()> {
    let side = |name: &str, s: &super::merge::MergedSummary| {
        format!(
            "{name}: {} source(s), {} episode(s): {} recovered, {} failed, {} unfinished; runs {} held, {} refuted, {} aborted",
            s.sources.len(),
            s.counts.episodes,
            s.counts.recovered,
            s.counts.failed,
            s.counts.unfinished,
            s.verdicts.held,
            s.verdicts.refuted,
            s.verdicts.aborted
        )
    };
    writeln!(out, "{}", side("baseline ", &c.baseline))?;
    writeln!(out, "{}", side("candidate", &c.candidate))?;
    writeln!(
        out,
        "\n{:<24} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "phase", "p50 before", "p50 after", "p99 before", "p99 after", "max before", "max after"
    )?;
    let labels = phase_names();
    for d in &c.phases {
        let label = labels
            .iter()
            .find(|(n, _)| *n == d.phase)
            .map_or(d.phase.as_str(), |(_, l)| l);
        let pair = |b: u64, a: u64, have: bool| {
            if have {
                (human_duration(b), human_duration(a))
            } else {
                ("-".into(), "-".into())
            }
        };
        let have = d.baseline.count > 0 && d.candidate.count > 0;
        let (b50, a50) = pair(d.baseline.p50, d.candidate.p50, have);
        let (b99, a99) = pair(d.baseline.p99, d.candidate.p99, have);
        let (bmax, amax) = pair(d.baseline.max, d.candidate.max, have);
        writeln!(
            out,
            "{label:<24} {b50:>11} {a50:>11} {b99:>11} {a99:>11} {bmax:>11} {amax:>11}"
        )?;
        if let Some(delta) = d.p50_delta_ns {
            writeln!(
                out,
                "{:<24} p50 {}, p99 {}, max {}",
                "",
                signed(delta, d.baseline.p50),
                signed(d.p99_delta_ns.unwrap_or(0), d.baseline.p99),
                signed(d.max_delta_ns.unwrap_or(0), d.baseline.max)
            )?;
        }
        if let Some(note) = &d.note {
            writeln!(out, "{:<24} note: {note}", "")?;
        }
    }
    for note in &c.notes {
        writeln!(out, "note: {note}")?;
    }
    Ok(())
}

/// `+1.20ms (+12%)`.
fn signed(delta_ns: i64, base: u64) -> String {
    let sign = if delta_ns < 0 { "-" } else { "+" };
    let pct = if base > 0 {
        format!(
            " ({sign}{:.0}%)",
            (delta_ns.unsigned_abs() as f64 / base as f64) * 100.0
        )
    } else {
        String::new()
    };
    format!("{sign}{}{pct}", human_duration(delta_ns.unsigned_abs()))
}
