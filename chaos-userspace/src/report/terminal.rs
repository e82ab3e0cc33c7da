//! The report in a terminal: verdict, clauses, a bar histogram per phase, the CDF of total
//! recovery at a few fractions, and a timeline line per fault and episode.

use std::io::Write;

use super::{bins, cdf, episode_span, outcome_text, phase_names, samples, verdict_word};
use crate::{experiment::result::RunResult, output::human_duration};

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
    for (name, label) in phase_names() {
        let values = samples(&r.episodes, name);
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
    let total = samples(&r.episodes, "total");
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
