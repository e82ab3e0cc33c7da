//! HdrHistograms of recovery phases, and their summaries.

use std::{collections::BTreeMap, io::Write, time::Duration};

use hdrhistogram::{
    Histogram,
    serialization::{V2DeflateSerializer, interval_log},
};
use serde::{Deserialize, Serialize};

use crate::episode::{Episode, Outcome, PHASES};

/// Three significant digits: a 2.5 ms phase is kept to within 2.5 µs.
const SIGFIG: u8 = 3;

/// Count, extremes and percentiles of one histogram, in the histogram's unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

impl Quantiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new(SIGFIG).expect("3 significant figures is a valid precision")
}

/// Records into an auto-resizing histogram (`saturating_record` would clamp to its current,
/// tiny range instead of growing it).
pub(crate) fn record(h: &mut Histogram<u64>, value: u64) {
    if h.record(value).is_err() {
        h.saturating_record(value);
    }
}

/// Histograms of one measurement run.
#[derive(Debug, Clone)]
pub struct Stats {
    /// One per entry of [`PHASES`], then "total".
    phases: BTreeMap<&'static str, Histogram<u64>>,
    pub fsync_latency: Histogram<u64>,
    pub unsynced_at_exit: Histogram<u64>,
    pub recovered: u64,
    pub failed: u64,
    pub unfinished: u64,
    pub failed_starts: u64,
}

impl Default for Stats {
    fn default() -> Self {
        let phases = PHASES
            .iter()
            .map(|p| p.name)
            .chain(["total"])
            .map(|name| (name, histogram()))
            .collect();
        Self {
            phases,
            fsync_latency: histogram(),
            unsynced_at_exit: histogram(),
            recovered: 0,
            failed: 0,
            unfinished: 0,
            failed_starts: 0,
        }
    }
}

impl Stats {
    /// Adds an ended episode. Only recovered episodes feed the phase histograms: a failed
    /// one has no end to measure to.
    pub fn add(&mut self, episode: &Episode) {
        self.failed_starts += u64::from(episode.failed_starts);
        if let Some(bytes) = episode.exit.unsynced_bytes {
            record(&mut self.unsynced_at_exit, bytes);
        }
        match episode.outcome {
            Outcome::Recovered => self.recovered += 1,
            Outcome::Failed => {
                self.failed += 1;
                return;
            }
            Outcome::Unfinished => {
                self.unfinished += 1;
                return;
            }
        }
        for (phase, value) in episode.phases_ns.iter() {
            if let (Some(value), Some(h)) = (value, self.phases.get_mut(phase)) {
                record(h, value);
            }
        }
        if let (Some(total), Some(h)) = (episode.total_ns, self.phases.get_mut("total")) {
            record(h, total);
        }
    }

    pub fn fsync(&mut self, latency_ns: u64) {
        record(&mut self.fsync_latency, latency_ns);
    }

    /// The phases in episode order, then the total.
    pub fn phases(&self) -> impl Iterator<Item = (&'static str, &Histogram<u64>)> {
        PHASES
            .iter()
            .map(|p| p.name)
            .chain(["total"])
            .map(|name| (name, &self.phases[name]))
    }

    pub fn summary(&self) -> PhaseSummary {
        PhaseSummary {
            recovered: self.recovered,
            failed: self.failed,
            unfinished: self.unfinished,
            failed_starts: self.failed_starts,
            phases_ns: self
                .phases()
                .map(|(name, h)| (name.to_string(), Quantiles::of(h)))
                .collect(),
            fsync_latency_ns: Quantiles::of(&self.fsync_latency),
            unsynced_bytes_at_exit: Quantiles::of(&self.unsynced_at_exit),
        }
    }

    /// Writes the standard HdrHistogram interval log: one interval covering the run for each
    /// phase, the total and the fsync latency, tagged with its name; values in nanoseconds.
    pub fn write_hdr_log(
        &self,
        out: &mut impl Write,
        start: std::time::SystemTime,
        duration: Duration,
    ) -> std::io::Result<()> {
        let mut serializer = V2DeflateSerializer::new();
        let mut builder = interval_log::IntervalLogWriterBuilder::new();
        builder
            .add_comment("chaos measure: recovery phases, values in nanoseconds")
            .with_start_time(start)
            .with_base_time(start);
        let mut writer = builder.begin_log_with(out, &mut serializer)?;
        let histograms = self
            .phases()
            .chain([("fsync_latency", &self.fsync_latency)]);
        for (name, h) in histograms {
            let tag = interval_log::Tag::new(name);
            writer
                .write_histogram(h, Duration::ZERO, duration, tag)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
        Ok(())
    }
}

/// The summary's view of [`Stats`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub recovered: u64,
    pub failed: u64,
    pub unfinished: u64,
    /// Replacements that died before they were ready, over every episode.
    pub failed_starts: u64,
    /// Each phase and "total", in episode order.
    pub phases_ns: Vec<(String, Quantiles)>,
    pub fsync_latency_ns: Quantiles,
    pub unsynced_bytes_at_exit: Quantiles,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let q = Quantiles::of(&h);
        assert_eq!(q.count, 1000);
        assert_eq!(q.min, 1000);
        // Within the histogram's 3 significant digits.
        assert!((499_000..=501_000).contains(&q.p50), "{q:?}");
        assert!((989_000..=991_000).contains(&q.p99), "{q:?}");
        assert!((999_000..=1_001_000).contains(&q.max), "{q:?}");
        assert_eq!(Quantiles::of(&histogram()), Quantiles::default());
    }

    #[test]
    fn the_interval_log_reads_back_with_its_tags() {
        let mut stats = Stats::default();
        stats.fsync(1500);
        stats.fsync(2_500_000);
        let max = stats.fsync_latency.max();
        assert!(
            (2_497_500..=2_502_500).contains(&max),
            "grown, not clamped: {max}"
        );
        let mut out = Vec::new();
        let start = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        stats
            .write_hdr_log(&mut out, start, Duration::from_secs(5))
            .unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("#[StartTime: 1700000000.000"), "{text}");
        let tags: Vec<_> = interval_log::IntervalLogIterator::new(&out)
            .filter_map(|entry| match entry {
                Ok(interval_log::LogEntry::Interval(h)) => {
                    Some(h.tag().map(|t| t.as_str().to_string()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(tags.len(), PHASES.len() + 2);
        assert_eq!(tags.last().unwrap().as_deref(), Some("fsync_latency"));
    }
}
