//! Exports to where users already look: OpenTelemetry collectors (OTLP over HTTP/protobuf)
//! and Prometheus (a /metrics endpoint, or node_exporter's textfile collector).
//!
//! Every command feeds the same [`Exporter`] calls (events seen, faults injected and
//! confirmed, ended episodes, lost events); each format lives in its own file and decides
//! what to make of them. Kernel timestamps (CLOCK_MONOTONIC) become wall-clock times through
//! a [`Clock`] read once when the command starts.
//!
//! Metrics (Prometheus names; OTLP uses the dotted names in parentheses):
//! - `chaos_recovery_phase_seconds{phase}` (`chaos.recovery.phase.duration`): histogram of each
//!   recovery phase of recovered episodes, and `phase="total"`.
//! - `chaos_faults_injected_total{fault}` / `chaos_faults_confirmed_total`
//!   (`chaos.faults.injected` / `chaos.faults.confirmed`).
//! - `chaos_restarts_total` (`chaos.restarts`): recovered episodes.
//! - `chaos_recoveries_failed_total` (`chaos.recoveries.failed`): failed episodes.
//! - `chaos_events_total{kind}` (`chaos.events`), `chaos_events_lost_total`
//!   (`chaos.events.lost`): what the kernel reported, and what the ring buffer dropped.
//!
//! Traces (OTLP): one span per fault, named after it (`SIGKILL`), from the fault (or the
//! exit, when no fault was seen) to the end of the recovery, with a child span per recovery
//! phase; a fault with no episode (`chaos inject` alone) is a span from the fault to its
//! proof.

pub mod otlp;
pub mod prometheus;

use std::path::PathBuf;

pub use crate::sys::clock::Clock;
use crate::{
    audit::{Mirror, Written},
    episode::{Episode, MILESTONES, Outcome, PHASES},
    event::Event,
    fault::FaultRecord,
    machine::Exported,
};

/// Bucket bounds (seconds) of the recovery histograms: 10 us to a minute.
pub const BUCKETS: [f64; 21] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A flag or variable that cannot work (exit 2 before anything starts).
    #[error("{0}")]
    Config(String),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// What could not be sent at the end (a warning: the command's result stands).
    #[error("{0}")]
    Send(String),
}

/// One phase of an ended episode, with its kernel start and end times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseSpan {
    pub name: &'static str,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The phases of an episode whose two milestones were both seen, in order.
pub fn phase_spans(episode: &Episode) -> Vec<PhaseSpan> {
    let at = [
        episode.at_ns.fault,
        episode.at_ns.exit,
        episode.at_ns.reaped,
        episode.at_ns.forked,
        episode.at_ns.exec,
        episode.at_ns.ready,
    ];
    debug_assert_eq!(at.len(), MILESTONES.len());
    PHASES
        .iter()
        .enumerate()
        .filter_map(|(i, phase)| match (at[i], at[i + 1]) {
            (Some(start_ns), Some(end_ns)) => Some(PhaseSpan {
                name: phase.name,
                start_ns,
                end_ns,
            }),
            _ => None,
        })
        .collect()
}

/// Phase durations to record for a recovered episode (seconds), the total last.
pub fn phase_seconds(episode: &Episode) -> Vec<(&'static str, f64)> {
    if episode.outcome != Outcome::Recovered {
        return Vec::new();
    }
    episode
        .phases_ns
        .iter()
        .filter_map(|(name, ns)| ns.map(|ns| (name, ns as f64 / 1e9)))
        .chain(episode.total_ns.map(|ns| ("total", ns as f64 / 1e9)))
        .collect()
}

/// What a command tells its exporters.
pub trait Exporter {
    /// A kernel event (counted by kind).
    fn event(&mut self, _event: &Event) {}
    fn fault(&mut self, fault: &FaultRecord, clock: &Clock);
    /// The fault with this id was proven by a kernel event at `ts_ns`.
    fn confirmed(&mut self, fault: &FaultRecord, ts_ns: u64, clock: &Clock);
    fn episode(&mut self, episode: &Episode, clock: &Clock);
    /// The ring buffer's lost-event counter now (a running total).
    fn lost(&mut self, total: u64);
    /// Once in a while (about a second): for files written periodically.
    fn tick(&mut self) -> Result<(), ExportError> {
        Ok(())
    }
    /// A copy of each audit entry as it is written, for exporters that send one off the
    /// machine.
    fn audit_mirror(&self) -> Option<Mirror> {
        None
    }
    /// Flushes and stops; called once, outside any async context.
    fn shutdown(self: Box<Self>) -> Result<(), ExportError>;
}

/// `--otlp`, `--prometheus`, `--textfile`, checked.
#[derive(Debug, Clone, Default)]
pub struct ExportConfig {
    /// The OTLP/HTTP base URL (`/v1/traces` and `/v1/metrics` are added), or the standard
    /// OTEL_EXPORTER_OTLP_* variables when they are set and no URL is given.
    pub otlp: Option<otlp::Endpoint>,
    pub prometheus: Option<std::net::SocketAddr>,
    pub textfile: Option<PathBuf>,
    /// Resource attributes beyond host.name and service.name (the experiment id).
    pub attributes: Vec<(String, String)>,
}

impl ExportConfig {
    pub fn is_empty(&self) -> bool {
        self.otlp.is_none() && self.prometheus.is_none() && self.textfile.is_none()
    }
}

/// Every exporter a command was asked for; each call goes to all of them.
#[derive(Default)]
pub struct Exporters {
    sinks: Vec<Box<dyn Exporter>>,
    pub clock: Option<Clock>,
    last_tick: Option<std::time::Instant>,
}

/// Starts serving /metrics (inside the runtime) and says where.
pub fn serve(server: Option<prometheus::Server>) -> Result<(), ExportError> {
    if let Some(server) = server {
        let addr = server.spawn()?;
        eprintln!("chaos: Prometheus metrics at http://{addr}/metrics");
    }
    Ok(())
}

impl Exporters {
    /// Builds the exporters (outside any async context: the OTLP clients block). The
    /// Prometheus server starts later, inside the runtime ([`prometheus::serve`]).
    pub fn new(config: &ExportConfig) -> Result<(Self, Option<prometheus::Server>), ExportError> {
        let mut sinks: Vec<Box<dyn Exporter>> = Vec::new();
        if let Some(endpoint) = &config.otlp {
            sinks.push(Box::new(otlp::Otlp::new(endpoint, &config.attributes)?));
        }
        let mut server = None;
        if config.prometheus.is_some() || config.textfile.is_some() {
            let (metrics, srv) = prometheus::Metrics::new(config)?;
            server = srv;
            sinks.push(Box::new(metrics));
        }
        Ok((
            Self {
                sinks,
                clock: Some(Clock::now()),
                last_tick: None,
            },
            server,
        ))
    }

    fn clock(&self) -> Clock {
        self.clock.unwrap_or_else(Clock::now)
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    pub fn event(&mut self, event: &Event) {
        for s in &mut self.sinks {
            s.event(event);
        }
    }

    /// Every exporter's copy of the audit log, as one (None when none makes one).
    pub fn audit_mirror(&self) -> Option<Mirror> {
        let mut mirrors: Vec<_> = self.sinks.iter().filter_map(|s| s.audit_mirror()).collect();
        match mirrors.len() {
            0 => None,
            1 => mirrors.pop(),
            _ => Some(Box::new(move |w: &Written| {
                for m in &mut mirrors {
                    m(w);
                }
            })),
        }
    }

    /// What an engine reported.
    pub fn export(&mut self, item: &Exported) {
        match item {
            Exported::Fault(f) => self.fault(f),
            Exported::Proof(f, proof) => self.confirmed(f, proof.ts_ns),
            Exported::Episode(e) => self.episode(e),
        }
    }

    pub fn fault(&mut self, fault: &FaultRecord) {
        let clock = self.clock();
        for s in &mut self.sinks {
            s.fault(fault, &clock);
        }
    }

    pub fn confirmed(&mut self, fault: &FaultRecord, ts_ns: u64) {
        let clock = self.clock();
        for s in &mut self.sinks {
            s.confirmed(fault, ts_ns, &clock);
        }
    }

    pub fn episode(&mut self, episode: &Episode) {
        let clock = self.clock();
        for s in &mut self.sinks {
            s.episode(episode, &clock);
        }
    }

    pub fn lost(&mut self, total: u64) {
        for s in &mut self.sinks {
            s.lost(total);
        }
    }

    /// Call as often as convenient: passes a tick on about once a second.
    pub fn tick(&mut self) -> Result<(), ExportError> {
        let now = std::time::Instant::now();
        if self
            .last_tick
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
        {
            return Ok(());
        }
        self.last_tick = Some(now);
        self.sinks.iter_mut().try_for_each(|s| s.tick())
    }

    /// Flushes and stops, after the command's work (outside any async context). A failed
    /// export is reported, not fatal: the command's own result stands.
    pub fn finish(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("chaos: warning: {}", crate::sys::chain(&e));
        }
    }

    pub fn shutdown(&mut self) -> Result<(), ExportError> {
        let mut first = Ok(());
        for s in std::mem::take(&mut self.sinks) {
            if let Err(e) = s.shutdown()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::episode::{ExitInfo, Milestones, RecoveryPhases};

    pub(crate) fn episode() -> Episode {
        Episode {
            id: 3,
            outcome: Outcome::Recovered,
            supervisor: 10,
            old_pid: 11,
            new_pid: Some(12),
            fault: None,
            exit: ExitInfo {
                exit_code: 0,
                signal: 9,
                core_dumped: false,
                lifetime_ns: 5,
                unsynced_bytes: None,
            },
            failed_starts: 0,
            at_ns: Milestones {
                fault: Some(1_000),
                exit: Some(1_500),
                reaped: None,
                forked: Some(3_000),
                exec: Some(4_000),
                ready: Some(6_000),
            },
            phases_ns: RecoveryPhases {
                fault_to_exit: Some(500),
                exit_to_reaped: None,
                reaped_to_forked: Some(1_500),
                forked_to_exec: Some(1_000),
                exec_to_ready: Some(2_000),
            },
            total_ns: Some(5_000),
            last_milestone: "ready".into(),
            reason: None,
            fault_id: None,
            orphans: Vec::new(),
            answered_by: Vec::new(),
            systemd: None,
            power: None,
            verify: None,
        }
    }

    #[test]
    fn phases_with_both_milestones_become_spans() {
        let spans = phase_spans(&episode());
        let names: Vec<_> = spans.iter().map(|s| s.name).collect();
        // No reap was seen: exit_to_reaped and reaped_to_forked have a missing end.
        assert_eq!(names, ["fault_to_exit", "forked_to_exec", "exec_to_ready"]);
        assert_eq!((spans[1].start_ns, spans[1].end_ns), (3_000, 4_000));
        let seconds = phase_seconds(&episode());
        assert_eq!(seconds.last(), Some(&("total", 5e-6)));
        assert_eq!(seconds.len(), 5);
    }

    #[test]
    fn the_clock_maps_kernel_time_to_wall_time() {
        let clock = Clock::new(1_000, 1_700_000_000_000_000_000);
        assert_eq!(clock.unix_ns(1_500), 1_700_000_000_000_000_500);
    }
}
