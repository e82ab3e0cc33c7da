//! The report as one self-contained HTML page: inline CSS, inline SVG plots drawn with
//! plotters, no script and nothing fetched.
//!
//! Markers for tools (and the tests): each histogram is a `<figure class="histogram"
//! data-phase=.. data-count=.. data-bars=..>` whose bars are the SVG rects filled with
//! [`BAR_COLOR`]; the timeline's episodes are rects filled with [`RECOVERED_COLOR`] or
//! [`FAILED_COLOR`], its in-place recoveries with [`IN_PLACE_COLOR`]; each episode is a
//! `<tr class="episode">` of its table, each fault a `<tr class="fault" data-outcome=..>`.
//! A merged page has a `<tr class="source" data-host=.. data-kernel=.. data-recovered=..>`
//! per source, a `<p class="merged" data-recovered=..>` of the merged counts and a
//! `<tr class="phase" data-phase=.. data-count=.. data-p50=.. data-p99=..>` per merged phase
//! (values in ns).

use std::fmt::Write as _;

use plotters::{coord::Shift, prelude::*, style::RGBColor};

use super::{
    bins, cdf, episode_span, merge::Merge, outcome_text, phase_names, samples, source::Source,
    verdict_word,
};
use crate::{
    episode::{Episode, Outcome},
    experiment::result::RunResult,
    output::human_duration,
};

pub const BAR_COLOR: RGBColor = RGBColor(0x4C, 0x78, 0xA8);
pub const RECOVERED_COLOR: RGBColor = RGBColor(0x54, 0xA2, 0x4B);
pub const FAILED_COLOR: RGBColor = RGBColor(0xE4, 0x57, 0x56);
pub const IN_PLACE_COLOR: RGBColor = RGBColor(0x72, 0xB7, 0xB2);
const FAULT_COLOR: RGBColor = RGBColor(0xF5, 0x85, 0x18);
const LINE_COLOR: RGBColor = RGBColor(0x44, 0x44, 0x44);

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Draws into an SVG string of `size`.
fn svg(size: (u32, u32), draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>)) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let _ = root.fill(&WHITE);
        draw(&root);
        let _ = root.present();
    }
    out
}

/// Milliseconds, the unit of every plot's duration axis.
fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn histogram(values: &[u64], label: &str) -> (String, usize) {
    let b = bins(values, 20);
    let bars = b.iter().filter(|(_, _, c)| *c > 0).count();
    let (lo, hi) = (
        ms(b.first().map_or(0, |x| x.0)),
        ms(b.last().map_or(1, |x| x.1)),
    );
    let top = b.iter().map(|(_, _, c)| *c).max().unwrap_or(1);
    let chart = svg((420, 240), |root| {
        let Ok(mut chart) = ChartBuilder::on(root)
            .caption(label, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(36)
            .build_cartesian_2d(lo..hi.max(lo + 1e-6), 0u64..top + 1)
        else {
            return;
        };
        let _ = chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("ms")
            .y_desc("episodes")
            .x_labels(5)
            .y_labels(5)
            .draw();
        let _ = chart.draw_series(
            b.iter()
                .filter(|(_, _, c)| *c > 0)
                .map(|(s, e, c)| Rectangle::new([(ms(*s), 0), (ms(*e), *c)], BAR_COLOR.filled())),
        );
    });
    (chart, bars)
}

fn cdf_chart(values: &[u64]) -> String {
    let points = cdf(values);
    let hi = ms(points.last().map_or(1, |p| p.0)).max(1e-3);
    svg((860, 280), |root| {
        let Ok(mut chart) = ChartBuilder::on(root)
            .caption("total recovery time: CDF", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..hi * 1.05, 0.0..1.0)
        else {
            return;
        };
        let _ = chart
            .configure_mesh()
            .x_desc("ms")
            .y_desc("fraction of episodes")
            .draw();
        // A step line: each value raises the fraction.
        let mut steps = vec![(0.0, 0.0)];
        let mut previous = 0.0;
        for (v, f) in &points {
            steps.push((ms(*v), previous));
            steps.push((ms(*v), *f));
            previous = *f;
        }
        let _ = chart.draw_series(LineSeries::new(steps, LINE_COLOR.stroke_width(2)));
    })
}

fn timeline(r: &RunResult) -> String {
    let end = r.duration_ns.max(1);
    let secs = |ts: u64| ts.saturating_sub(r.start_ns) as f64 / 1e9;
    let rows = (r.episodes.len() + r.in_place.len()) as f64 + 1.0;
    svg(
        (860, 120 + 14 * (r.episodes.len() + r.in_place.len()) as u32),
        |root| {
            let Ok(mut chart) = ChartBuilder::on(root)
                .caption(
                    "timeline: faults (row 0), episodes and in-place recoveries, fault to ready",
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(32)
                .y_label_area_size(40)
                .build_cartesian_2d(0.0..end as f64 / 1e9, -0.5..rows)
            else {
                return;
            };
            let _ = chart
                .configure_mesh()
                .disable_y_mesh()
                .x_desc("seconds since the start")
                .y_desc("episode")
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw();
            let _ = chart.draw_series(r.faults.iter().map(|f| {
                TriangleMarker::new((secs(f.record.ts_ns), 0.0), 5, FAULT_COLOR.filled())
            }));
            let _ = chart.draw_series(r.episodes.iter().enumerate().map(|(i, e)| {
                let (start, stop) = episode_span(e);
                let color = if e.outcome == Outcome::Recovered {
                    RECOVERED_COLOR
                } else {
                    FAILED_COLOR
                };
                let y = i as f64 + 1.0;
                // At least a visible sliver: most recoveries last milliseconds.
                let width = (secs(stop) - secs(start)).max(end as f64 / 1e9 / 400.0);
                Rectangle::new(
                    [(secs(start), y - 0.35), (secs(start) + width, y + 0.35)],
                    color.filled(),
                )
            }));
            let first = r.episodes.len() as f64 + 1.0;
            let _ = chart.draw_series(r.in_place.iter().enumerate().map(|(i, p)| {
                let start = p.at_ns.fault.unwrap_or(0);
                let stop = p.at_ns.ready.or(p.at_ns.exit).unwrap_or(start);
                let color = if p.outcome == Outcome::Recovered {
                    IN_PLACE_COLOR
                } else {
                    FAILED_COLOR
                };
                let y = first + i as f64;
                let width = (secs(stop) - secs(start)).max(end as f64 / 1e9 / 400.0);
                Rectangle::new(
                    [(secs(start), y - 0.35), (secs(start) + width, y + 0.35)],
                    color.filled(),
                )
            }));
        },
    )
}

pub fn page(r: &RunResult) -> String {
    let mut h = String::new();
    let verdict = verdict_word(r);
    let class = verdict.to_lowercase();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>chaos report: {id}</title>\n<style>{CSS}</style></head><body>\n<header><h1>{id}</h1><p class=\"verdict {class}\">{verdict} <span>(exit {code})</span></p>\n<p class=\"hypothesis\">{hyp}</p>\n<p class=\"meta\">blast radius {radius} &middot; {faults} fault(s) &middot; {episodes} episode(s) &middot; {duration}</p>",
        id = escape(&r.experiment),
        code = r.exit_code,
        hyp = escape(&r.hypothesis),
        radius = escape(&r.blast_radius),
        faults = r.faults.len(),
        episodes = r.episodes.len(),
        duration = human_duration(r.duration_ns),
    );
    if let Some(why) = &r.abort {
        let _ = write!(h, "<p class=\"abort\">aborted: {}</p>", escape(why));
    }
    h.push_str("</header>\n<section><h2>Hypothesis</h2><table class=\"clauses\"><tr><th></th><th>clause</th><th>measured</th></tr>\n");
    for c in &r.clauses {
        let _ = writeln!(
            h,
            "<tr class=\"clause {}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
            if c.held { "held" } else { "failed" },
            if c.held { "held" } else { "FAILED" },
            escape(&c.name),
            escape(&c.detail)
        );
    }
    h.push_str("</table></section>\n");
    write_distributions(&mut h, &r.episodes);
    let _ = writeln!(
        h,
        "<section><h2>Timeline</h2><figure class=\"timeline\" data-episodes=\"{}\" data-faults=\"{}\">{}</figure></section>",
        r.episodes.len(),
        r.faults.len(),
        timeline(r)
    );
    h.push_str("<section><h2>Faults</h2><table class=\"faults\"><tr><th>#</th><th>fault</th><th>pid</th><th>role</th><th>outcome</th></tr>\n");
    for f in &r.faults {
        let rec = &f.record;
        let _ = writeln!(
            h,
            "<tr class=\"fault\" data-id=\"{}\" data-outcome=\"{}\"><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td></tr>",
            rec.id,
            f.outcome.name(),
            rec.id,
            escape(&rec.value),
            rec.pid,
            escape(&rec.comm),
            rec.role.map_or("-", |role| role.as_str()),
            escape(&outcome_text(r, f))
        );
    }
    h.push_str("</table></section>\n");
    write_episodes(&mut h, r.episodes.iter().map(|e| (None, e)));
    h.push_str("<footer>chaos report &middot; kernel timestamps (CLOCK_MONOTONIC) &middot; from ");
    h.push_str(&escape(&r.file));
    h.push_str("</footer></body></html>\n");
    h
}

/// A histogram per phase, then the CDF of total recovery time.
fn write_distributions(h: &mut String, episodes: &[Episode]) {
    h.push_str("<section><h2>Recovery phases</h2><div class=\"grid\">\n");
    for (name, label) in phase_names() {
        let values = samples(episodes, name);
        if values.is_empty() {
            continue;
        }
        let (chart, bars) = histogram(&values, label);
        let _ = writeln!(
            h,
            "<figure class=\"histogram\" data-phase=\"{name}\" data-count=\"{}\" data-bars=\"{bars}\">{chart}</figure>",
            values.len()
        );
    }
    h.push_str("</div></section>\n");
    let total = samples(episodes, "total");
    if !total.is_empty() {
        let _ = writeln!(
            h,
            "<section><h2>Total recovery time</h2><figure class=\"cdf\">{}</figure></section>",
            cdf_chart(&total)
        );
    }
}

/// The episodes' table; with a source number per episode, a column for it.
fn write_episodes<'a>(
    h: &mut String,
    episodes: impl Iterator<Item = (Option<usize>, &'a Episode)>,
) {
    let episodes: Vec<_> = episodes.collect();
    let sourced = episodes.iter().any(|(s, _)| s.is_some());
    h.push_str("<section><h2>Episodes</h2><table class=\"episodes\"><tr>");
    if sourced {
        h.push_str("<th>source</th>");
    }
    h.push_str("<th>#</th><th>pid</th><th>outcome</th>");
    for (_, label) in phase_names() {
        let _ = write!(h, "<th>{}</th>", escape(label));
    }
    h.push_str("<th>notes</th></tr>\n");
    for (source, e) in episodes {
        let outcome = format!("{:?}", e.outcome).to_lowercase();
        let _ = write!(
            h,
            "<tr class=\"episode {outcome}\" data-id=\"{}\"{}>",
            e.id,
            source.map_or(String::new(), |s| format!(" data-source=\"{}\"", s + 1))
        );
        if let Some(s) = source {
            let _ = write!(h, "<td>[{}]</td>", s + 1);
        }
        let _ = write!(
            h,
            "<td>{}</td><td>{} &rarr; {}</td><td>{outcome}</td>",
            e.id,
            e.old_pid,
            e.new_pid.map_or("-".into(), |p| p.to_string())
        );
        for (name, _) in phase_names() {
            let value = e.phase_ns(name);
            let _ = write!(h, "<td>{}</td>", value.map_or("-".into(), human_duration));
        }
        let mut notes = e.notes();
        if e.failed_starts > 0 {
            notes.insert(0, format!("{} failed start(s)", e.failed_starts));
        }
        if let Some(why) = &e.reason {
            notes.insert(0, why.clone());
        }
        let _ = writeln!(
            h,
            "<td class=\"notes\" data-orphans=\"{}\">{}</td></tr>",
            e.orphans.len(),
            escape(&notes.join("; "))
        );
    }
    h.push_str("</table></section>\n");
}

/// Several sources (or one that is not a run's result) on one page: a row per source (its
/// host, kernel, start and outcome), the merged counts, the merged phases' quantiles and
/// histograms, every episode with its source.
pub fn merged_page(sources: &[Source], m: &Merge) -> String {
    let s = &m.summary;
    let c = &s.counts;
    let hosts: std::collections::BTreeSet<_> =
        s.sources.iter().filter_map(|r| r.host.as_deref()).collect();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>chaos report: {n} source(s)</title>\n<style>{CSS}</style></head><body>\n<header><h1>{n} source(s), {hosts} host(s)</h1>\n<p class=\"merged\" data-episodes=\"{}\" data-recovered=\"{}\" data-failed=\"{}\" data-unfinished=\"{}\" data-faults=\"{}\" data-unmeasured=\"{}\">{} episode(s): {} recovered, {} failed, {} unfinished &middot; {} fault(s): {} confirmed, {} in place, {} no effect, {} unmeasured &middot; runs {} held, {} refuted, {} aborted{}</p></header>\n",
        c.episodes,
        c.recovered,
        c.failed,
        c.unfinished,
        c.faults,
        c.unmeasured,
        c.episodes,
        c.recovered,
        c.failed,
        c.unfinished,
        c.faults,
        c.confirmed,
        c.in_place,
        c.no_effect,
        c.unmeasured,
        s.verdicts.held,
        s.verdicts.refuted,
        s.verdicts.aborted,
        match (c.not_followed, s.incomplete.len()) {
            (0, 0) => String::new(),
            (f, i) => format!(
                " &middot; {f} fault(s) not followed (chaos inject) &middot; <strong class=\"incomplete\">{i} source(s) may be incomplete</strong> ({} event(s) lost)",
                s.lost
            ),
        },
        n = s.sources.len(),
        hosts = hosts.len(),
    );
    h.push_str("<section><h2>Sources</h2><table class=\"sources\"><tr><th>#</th><th>host</th><th>kernel</th><th>what</th><th>start</th><th>duration</th><th>outcome</th><th>file</th></tr>\n");
    for (i, row) in s.sources.iter().enumerate() {
        let c = &row.counts;
        let _ = writeln!(
            h,
            "<tr class=\"source\" data-source=\"{}\" data-host=\"{}\" data-kernel=\"{}\" data-kind=\"{}\" data-verdict=\"{}\" data-episodes=\"{}\" data-recovered=\"{}\" data-failed=\"{}\" data-faults=\"{}\"><td>[{}]</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
            i + 1,
            escape(row.host.as_deref().unwrap_or("")),
            escape(row.kernel.as_deref().unwrap_or("")),
            serde_json::to_value(row.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            row.verdict.unwrap_or(""),
            c.episodes,
            c.recovered,
            c.failed,
            c.faults,
            i + 1,
            escape(row.host.as_deref().unwrap_or("-")),
            escape(row.kernel.as_deref().unwrap_or("-")),
            escape(&row.experiment),
            row.kind.describe(),
            escape(&super::terminal::wall(row.start_unix_ns)),
            human_duration(row.duration_ns),
            escape(&row.outcome_text()),
            match row.missed_text() {
                m if m.is_empty() => String::new(),
                m => format!(
                    " <strong class=\"incomplete\">(may be incomplete: {})</strong>",
                    escape(&m)
                ),
            },
            escape(&row.path),
        );
    }
    h.push_str("</table></section>\n<section><h2>Merged recovery phases</h2><p class=\"meta\">HdrHistograms of every source added exactly; recovered episodes only.</p><table class=\"phases\"><tr><th>phase</th><th>count</th><th>min</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>\n");
    for ((name, label), (_, q)) in phase_names().iter().zip(&s.phases_ns) {
        let _ = writeln!(
            h,
            "<tr class=\"phase\" data-phase=\"{name}\" data-count=\"{}\" data-p50=\"{}\" data-p99=\"{}\" data-max=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            q.count,
            q.p50,
            q.p99,
            q.max,
            escape(label),
            q.count,
            human_duration(q.min),
            human_duration(q.p50),
            human_duration(q.p90),
            human_duration(q.p99),
            human_duration(q.max),
        );
    }
    h.push_str("</table></section>\n");
    let episodes: Vec<Episode> = sources.iter().flat_map(|s| s.episodes.clone()).collect();
    write_distributions(&mut h, &episodes);
    write_episodes(
        &mut h,
        sources
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.episodes.iter().map(move |e| (Some(i), e))),
    );
    h.push_str("<footer>chaos report &middot; each source's times on its own kernel clock; starts on its wall clock</footer></body></html>\n");
    h
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:900px;color:#222}\
h1{margin:0 0 4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px}\
.verdict{font-size:22px;font-weight:700;display:inline-block;padding:4px 12px;border-radius:6px;color:#fff}\
.verdict span{font-weight:400;font-size:15px}.verdict.held{background:#54A24B}.verdict.refuted{background:#E45756}.verdict.aborted{background:#B279A2}\
.hypothesis{font-size:17px}.meta,footer{color:#666;font-size:13px}.abort{color:#B279A2;font-weight:600}\
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border-bottom:1px solid #eee;padding:3px 6px;text-align:left}\
tr.clause.held td:first-child{color:#54A24B;font-weight:700}tr.clause.failed td:first-child{color:#E45756;font-weight:700}\
.grid{display:grid;grid-template-columns:1fr 1fr;gap:8px}figure{margin:0}tr.episode.failed{background:#fdecec}";
