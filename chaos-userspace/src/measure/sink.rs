//! Where `chaos measure` writes: one line per episode as it ends, then a summary with the
//! histograms; as a table or as JSON Lines.
//!
//! # Wire format (`--json`)
//!
//! `{"type":"episode","data":{...}}` per episode ([`Episode`]: `id`, `outcome` (`recovered`,
//! `failed`, `unfinished`), `supervisor`, `old_pid`, `new_pid`, `fault` (`signal`,
//! `signal_name`, `sender_pid`, `sender_comm`, or null), `exit` (`exit_code`, `signal`,
//! `core_dumped`, `lifetime_ns`, `unsynced_bytes`), `failed_starts`, `at_ns` (CLOCK_MONOTONIC
//! of `fault`, `exit`, `reaped`, `forked`, `exec`, `ready`, each or null), `phases_ns`
//! (`fault_to_exit`, `exit_to_reaped`, `reaped_to_forked`, `forked_to_exec`, `exec_to_ready`),
//! `total_ns`, `last_milestone`, `reason`), then one `{"type":"summary","data":{...}}`
//! ([`MeasureSummary`]) with `count`, `min`, `p50`, `p90`, `p99`, `p99_9`, `max`, `mean` per
//! phase, for the total, for fsync latency and for unsynced bytes at exit, and where and
//! when: `host` (`name`, `kernel`) and `start_unix_ns` (the wall clock at the start).

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::stats::{PhaseSummary, Quantiles};
use crate::{
    episode::{Episode, Outcome, PHASES},
    output::human_duration,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureSummary {
    pub duration_ns: u64,
    pub comm: String,
    pub ready: String,
    #[serde(flatten)]
    pub stats: PhaseSummary,
    pub lost: u64,
    pub targets_full: u64,
    pub read_errors: u64,
    /// Where and when ([`crate::sys::host::Origin`]).
    #[serde(flatten)]
    pub origin: crate::sys::host::Origin,
    /// `--unit`: systemd's settings and counts beside chaos's measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<SystemdSummary>,
}

/// systemd's throttles and counts, next to what chaos measured (`--unit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemdSummary {
    pub unit: crate::systemd::UnitInfo,
    /// `NRestarts` at the end (at the start: `unit.n_restarts`).
    pub n_restarts_end: Option<u32>,
    /// systemd's own timestamps against chaos's kernel milestones.
    pub offsets: super::engine::Offsets,
}

impl SystemdSummary {
    /// Lines for the terminal: the restart delay configured beside the one measured, the
    /// restart counts, the start limit, the timestamp agreement.
    pub fn lines(&self, s: &MeasureSummary) -> Vec<String> {
        let u = &self.unit;
        let mut lines = vec![format!("systemd: {}", u.describe())];
        let measured = s
            .stats
            .phases_ns
            .iter()
            .find(|(name, _)| *name == "reaped_to_forked")
            .map(|(_, q)| *q)
            .filter(|q| q.count > 0);
        lines.push(format!(
            "  RestartSec={} configured; reaped -> forked measured {}",
            humantime::format_duration(std::time::Duration::from_micros(u.restart_usec)),
            measured.map_or("in no episode".into(), |q| format!(
                "min {}, p50 {}, max {} over {} episode(s)",
                human_duration(q.min),
                human_duration(q.p50),
                human_duration(q.max),
                q.count
            ))
        ));
        let episodes = s.stats.recovered + s.stats.failed + s.stats.unfinished;
        lines.push(match self.n_restarts_end {
            Some(end) => format!(
                "  NRestarts {} -> {end} (+{}) by systemd's count; {episodes} episode(s) by chaos's",
                u.n_restarts,
                end.saturating_sub(u.n_restarts)
            ),
            None => format!("  NRestarts {} at the start; {episodes} episode(s)", u.n_restarts),
        });
        let o = &self.offsets;
        if o.episodes > 0 {
            let ms =
                |ns: Option<i64>| ns.map_or("-".into(), |n| format!("{:+.3}ms", n as f64 / 1e6));
            lines.push(format!(
                "  systemd's timestamps vs chaos's, largest over {} episode(s): ExecMainExit - reaped {}, ExecMainStart - forked {}",
                o.episodes,
                ms(o.exit_vs_reaped_ns),
                ms(o.start_vs_forked_ns)
            ));
        }
        lines
    }
}

#[derive(Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum Line<'a> {
    Episode(&'a Episode),
    Summary(&'a MeasureSummary),
}

/// Where ended episodes and the summary go.
pub trait EpisodeSink {
    fn episode(&mut self, episode: &Episode) -> std::io::Result<()>;
    fn summary(&mut self, summary: &MeasureSummary) -> std::io::Result<()>;
}

pub struct JsonEpisodes<W: Write>(pub W);

impl<W: Write> EpisodeSink for JsonEpisodes<W> {
    fn episode(&mut self, episode: &Episode) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.0, &Line::Episode(episode))?;
        self.0.write_all(b"\n")?;
        self.0.flush()
    }

    fn summary(&mut self, summary: &MeasureSummary) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.0, &Line::Summary(summary))?;
        self.0.write_all(b"\n")?;
        self.0.flush()
    }
}

pub struct TableEpisodes<W: Write>(pub W);

impl<W: Write> EpisodeSink for TableEpisodes<W> {
    fn episode(&mut self, e: &Episode) -> std::io::Result<()> {
        let cause = match &e.fault {
            Some(f) => format!(
                "{} from {} ({})",
                f.signal_name, f.sender_pid, f.sender_comm
            ),
            None if e.exit.signal != 0 => {
                format!("killed by {}", crate::event::signal_name(e.exit.signal))
            }
            None => format!("exit code {}", e.exit.exit_code),
        };
        let head = match e.outcome {
            Outcome::Recovered => format!(
                "#{} recovered in {}",
                e.id,
                e.total_ns.map_or("?".into(), human_duration)
            ),
            Outcome::Failed | Outcome::Unfinished => format!(
                "#{} {} after {}: {}",
                e.id,
                if e.outcome == Outcome::Failed {
                    "FAILED"
                } else {
                    "unfinished"
                },
                e.last_milestone,
                e.reason.as_deref().unwrap_or("")
            ),
        };
        let phases = e
            .phases_ns
            .iter()
            .zip(PHASES)
            .filter_map(|((_, value), phase)| {
                let to = phase.label.rsplit(' ').next().unwrap_or(phase.label);
                value.map(|v| format!("{to} +{}", human_duration(v)))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let new = e.new_pid.map_or("?".to_string(), |p| p.to_string());
        let restarts = if e.failed_starts > 0 {
            format!("; {} failed start(s)", e.failed_starts)
        } else {
            String::new()
        };
        let unsynced = match e.exit.unsynced_bytes {
            Some(bytes) if bytes > 0 => format!("; {bytes} bytes unsynced at exit"),
            _ => String::new(),
        };
        let notes: String = e.notes().iter().map(|n| format!("; {n}")).collect();
        writeln!(
            self.0,
            "{head}  pid {} -> {new}  {cause}  [{phases}]{restarts}{unsynced}{notes}",
            e.old_pid
        )?;
        self.0.flush()
    }

    fn summary(&mut self, s: &MeasureSummary) -> std::io::Result<()> {
        let out = &mut self.0;
        writeln!(
            out,
            "\n{} episode(s) of {} in {}: {} recovered, {} failed, {} unfinished; {} failed start(s); ready = {}",
            s.stats.recovered + s.stats.failed + s.stats.unfinished,
            s.comm,
            human_duration(s.duration_ns),
            s.stats.recovered,
            s.stats.failed,
            s.stats.unfinished,
            s.stats.failed_starts,
            s.ready,
        )?;
        header(out)?;
        let labels = PHASES.iter().map(|p| p.label).chain(["total"]);
        for ((_, q), label) in s.stats.phases_ns.iter().zip(labels) {
            row(out, label, q, human_duration)?;
        }
        row(
            out,
            "fsync latency",
            &s.stats.fsync_latency_ns,
            human_duration,
        )?;
        row(
            out,
            "unsynced bytes at exit",
            &s.stats.unsynced_bytes_at_exit,
            |b| b.to_string(),
        )?;
        if s.stats.remount_ns.count > 0 {
            row(
                out,
                "power cut -> remounted",
                &s.stats.remount_ns,
                human_duration,
            )?;
        }
        if let Some((label, share)) = slowest_phase(s) {
            writeln!(out, "slowest phase (p50): {label}, {share}")?;
        }
        if let Some(systemd) = &s.systemd {
            for line in systemd.lines(s) {
                writeln!(out, "{line}")?;
            }
        }
        if s.lost > 0 {
            writeln!(
                out,
                "{} events were lost (ring buffer full): episodes may be missing",
                s.lost
            )?;
        }
        out.flush()
    }
}

/// The column heads of [`row`]s.
pub(crate) fn header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "phase", "count", "min", "p50", "p90", "p99", "p99.9", "max"
    )
}

pub(crate) fn row(
    out: &mut impl Write,
    label: &str,
    q: &Quantiles,
    show: impl Fn(u64) -> String,
) -> std::io::Result<()> {
    if q.count == 0 {
        return writeln!(out, "{label:<24} {:>6}", 0);
    }
    writeln!(
        out,
        "{label:<24} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        q.count,
        show(q.min),
        show(q.p50),
        show(q.p90),
        show(q.p99),
        show(q.p99_9),
        show(q.max)
    )
}

/// The phase holding most of the median recovery: where a supervisor's throttle shows.
fn slowest_phase(s: &MeasureSummary) -> Option<(&'static str, String)> {
    let total = s.stats.phases_ns.last()?.1;
    if total.count == 0 || total.p50 == 0 {
        return None;
    }
    let (index, q) = s
        .stats
        .phases_ns
        .iter()
        .take(PHASES.len())
        .enumerate()
        .max_by_key(|(_, (_, q))| q.p50)?;
    let percent = q.1.p50 as f64 * 100.0 / total.p50 as f64;
    Some((
        PHASES[index].label,
        format!(
            "{} of {} total ({percent:.0}%)",
            human_duration(q.1.p50),
            human_duration(total.p50)
        ),
    ))
}
