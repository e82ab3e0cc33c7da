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
    /// Power cuts: cut -> filesystem mounted again (`crate::episode::PowerLoss`), once per
    /// cut (the episodes of a service with several instances share one).
    pub remount: Histogram<u64>,
    remount_cuts: std::collections::BTreeSet<u64>,
    pub recovered: u64,
    pub failed: u64,
    pub unfinished: u64,
    pub failed_starts: u64,
    /// Every value the phase histograms hold, with when its episode began (kernel ns), for
    /// the interval log's time slices.
    timeline: Vec<Sample>,
}

/// A phase's duration in one episode, and when that episode began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ns: u64,
    pub phase: &'static str,
    pub value: u64,
}

/// When an episode began: its fault, or its exit when no fault was seen.
pub fn began_ns(episode: &Episode) -> u64 {
    episode.at_ns.fault.or(episode.at_ns.exit).unwrap_or(0)
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
            remount: histogram(),
            remount_cuts: Default::default(),
            recovered: 0,
            failed: 0,
            unfinished: 0,
            failed_starts: 0,
            timeline: Vec::new(),
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
        // Each cut's remount once, whatever became of the episodes it began.
        if let Some(p) = &episode.power
            && let Some(ns) = p.remount_ns
            && self.remount_cuts.insert(p.fault_id)
        {
            record(&mut self.remount, ns);
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
        let at_ns = began_ns(episode);
        let values = episode
            .phases_ns
            .iter()
            .chain([("total", episode.total_ns)]);
        for (phase, value) in values {
            if let (Some(value), Some(h)) = (value, self.phases.get_mut(phase)) {
                record(h, value);
                self.timeline.push(Sample {
                    at_ns,
                    phase,
                    value,
                });
            }
        }
    }

    /// Adds another measurement's histograms and counts: HdrHistograms merge exactly (the
    /// merged quantiles are those of every value of both). `other_offset_ns` moves the
    /// other's timeline onto this one's clock.
    pub fn merge(&mut self, other: &Stats, other_offset_ns: i128) {
        for (name, h) in &other.phases {
            if let Some(mine) = self.phases.get_mut(name) {
                mine.add(h)
                    .expect("auto-resizing histograms of one precision always add");
            }
        }
        self.fsync_latency
            .add(&other.fsync_latency)
            .expect("auto-resizing histograms of one precision always add");
        self.unsynced_at_exit
            .add(&other.unsynced_at_exit)
            .expect("auto-resizing histograms of one precision always add");
        self.remount
            .add(&other.remount)
            .expect("auto-resizing histograms of one precision always add");
        // Another source's fault ids are its own: its cuts were counted there.
        self.recovered += other.recovered;
        self.failed += other.failed;
        self.unfinished += other.unfinished;
        self.failed_starts += other.failed_starts;
        self.timeline.extend(other.timeline.iter().map(|s| Sample {
            at_ns: (i128::from(s.at_ns) + other_offset_ns).max(0) as u64,
            ..*s
        }));
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
            remount_ns: Quantiles::of(&self.remount),
        }
    }

    /// Writes the standard HdrHistogram interval log, in time slices: for each slice of
    /// `slice` from the start (`start_ns` in kernel time, `start` on the wall clock), one
    /// interval per phase and for the total, tagged with its name, holding the episodes that
    /// began in that slice; then, when fsync calls were measured, one interval over the whole
    /// run for their latency (the calls are not kept one by one). Values in nanoseconds.
    /// More than [`LogSpan::MAX_SLICES`] slices is an error (a longer slice is needed).
    pub fn write_hdr_log(&self, out: &mut impl Write, log: &LogSpan) -> std::io::Result<()> {
        let slices = log.slices();
        if slices > LogSpan::MAX_SLICES {
            return Err(std::io::Error::other(format!(
                "{} in slices of {} makes {slices} intervals per phase (at most {}): give a longer --hdr-interval",
                humantime::format_duration(log.duration),
                humantime::format_duration(log.slice),
                LogSpan::MAX_SLICES
            )));
        }
        let mut serializer = V2DeflateSerializer::new();
        let mut builder = interval_log::IntervalLogWriterBuilder::new();
        builder
            .add_comment(&format!(
                "chaos: recovery phases, values in nanoseconds, in slices of {}",
                humantime::format_duration(log.slice)
            ))
            .with_start_time(log.start)
            .with_base_time(log.start);
        let mut writer = builder.begin_log_with(out, &mut serializer)?;
        let mut write = |h: &Histogram<u64>, from: Duration, length: Duration, name: &str| {
            writer
                .write_histogram(h, from, length, interval_log::Tag::new(name))
                .map_err(|e| std::io::Error::other(format!("{e:?}")))
        };
        let mut sliced: Vec<BTreeMap<&str, Histogram<u64>>> = vec![BTreeMap::new(); slices];
        for s in &self.timeline {
            let offset = Duration::from_nanos(s.at_ns.saturating_sub(log.start_ns));
            let i = ((offset.as_nanos() / log.slice.as_nanos().max(1)) as usize).min(slices - 1);
            record(sliced[i].entry(s.phase).or_insert_with(histogram), s.value);
        }
        let empty = histogram();
        for (i, slice) in sliced.iter().enumerate() {
            let from = log.slice * i as u32;
            let length = log.slice.min(log.duration.saturating_sub(from));
            for (name, _) in self.phases() {
                write(slice.get(name).unwrap_or(&empty), from, length, name)?;
            }
        }
        if !self.remount.is_empty() {
            write(&self.remount, Duration::ZERO, log.duration, "remount")?;
        }
        if self.fsync_latency.is_empty() {
            return Ok(());
        }
        write(
            &self.fsync_latency,
            Duration::ZERO,
            log.duration,
            "fsync_latency",
        )
    }
}

/// Writes `stats`' interval log to a file chaos creates (never through a symlink).
pub fn write_log_file(
    path: &std::path::Path,
    stats: &Stats,
    span: &LogSpan,
) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(crate::sys::trust::create_output(path)?);
    stats.write_hdr_log(&mut file, span)?;
    file.flush()
}

/// The time an interval log covers, and the length of its slices.
#[derive(Debug, Clone, Copy)]
pub struct LogSpan {
    /// The start, on the wall clock and in kernel time (CLOCK_MONOTONIC).
    pub start: std::time::SystemTime,
    pub start_ns: u64,
    pub duration: Duration,
    pub slice: Duration,
}

impl LogSpan {
    /// From `start_unix_ns` (the wall clock) and `start_ns` (kernel time, the same instant),
    /// for `duration_ns`.
    pub fn new(start_unix_ns: u64, start_ns: u64, duration_ns: u64, slice: Duration) -> Self {
        Self {
            start: std::time::UNIX_EPOCH + Duration::from_nanos(start_unix_ns),
            start_ns,
            duration: Duration::from_nanos(duration_ns),
            slice,
        }
    }

    /// The most slices a log may have: a week in slices of 10 s.
    pub const MAX_SLICES: usize = 60_480;

    /// The default slice (`--hdr-interval`).
    pub const SLICE: Duration = Duration::from_secs(10);

    /// How many slices cover the span (at least one).
    pub fn slices(&self) -> usize {
        let slice = self.slice.as_nanos().max(1);
        (self.duration.as_nanos().div_ceil(slice) as usize).max(1)
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
    /// Power cuts: cut -> filesystem mounted again (count 0 without power_loss faults).
    #[serde(default)]
    pub remount_ns: Quantiles,
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
        let span = LogSpan {
            start,
            start_ns: 0,
            duration: Duration::from_secs(5),
            slice: LogSpan::SLICE,
        };
        stats.write_hdr_log(&mut out, &span).unwrap();
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

    fn episode_at(id: u64, began_s: u64, total_ms: u64) -> Episode {
        let mut e = crate::export::tests::episode();
        e.id = id;
        let at = began_s * 1_000_000_000;
        e.at_ns.fault = Some(at);
        e.at_ns.exit = Some(at + 1);
        e.total_ns = Some(total_ms * 1_000_000);
        e
    }

    /// Two instances killed by one cut share its remount: counted once.
    #[test]
    fn each_power_cut_counts_its_remount_once() {
        let cut = |fault_id, remount_ms: u64| {
            Some(crate::episode::PowerLoss {
                fault_id,
                cut_ns: 0,
                remounted_ns: None,
                remount_ns: Some(remount_ms * 1_000_000),
                unsynced: Vec::new(),
            })
        };
        let mut stats = Stats::default();
        for (id, fault, ms) in [(1, 7, 300), (2, 7, 300), (3, 8, 500)] {
            let mut e = episode_at(id, id, 5);
            e.power = cut(fault, ms);
            stats.add(&e);
        }
        stats.add(&episode_at(4, 4, 5));
        let q = stats.summary().remount_ns;
        assert_eq!((q.count, q.max / 1_000_000), (2, 500));
    }

    /// A long measurement keeps its time axis: each slice holds the episodes that began in
    /// it, and every slice is written (an empty one says nothing happened then).
    #[test]
    fn the_interval_log_is_sliced_by_when_episodes_began() {
        let mut stats = Stats::default();
        stats.add(&episode_at(1, 2, 5));
        stats.add(&episode_at(2, 3, 7));
        stats.add(&episode_at(3, 25, 9));
        let span = LogSpan {
            start: std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            start_ns: 0,
            duration: Duration::from_secs(30),
            slice: Duration::from_secs(10),
        };
        let mut out = Vec::new();
        stats.write_hdr_log(&mut out, &span).unwrap();
        // (start, length, max in ms) of each slice's "total" interval.
        let totals: Vec<(f64, f64, u64)> = interval_log::IntervalLogIterator::new(&out)
            .filter_map(|entry| match entry {
                Ok(interval_log::LogEntry::Interval(h))
                    if h.tag().is_some_and(|t| t.as_str() == "total") =>
                {
                    Some((
                        h.start_timestamp().as_secs_f64(),
                        h.duration().as_secs_f64(),
                        (h.max() / 1e6).round() as u64,
                    ))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            totals,
            vec![(0.0, 10.0, 7), (10.0, 10.0, 0), (20.0, 10.0, 9)]
        );
    }

    /// Two measurements' histograms merge exactly: the quantiles of the merge are those of
    /// every value of both.
    #[test]
    fn merged_stats_equal_the_stats_of_every_episode() {
        let (mut a, mut b, mut all) = (Stats::default(), Stats::default(), Stats::default());
        for (i, ms) in [3u64, 50, 7, 900, 12, 4].into_iter().enumerate() {
            let e = episode_at(i as u64 + 1, i as u64, ms);
            if i % 2 == 0 {
                a.add(&e)
            } else {
                b.add(&e)
            }
            all.add(&e);
        }
        a.merge(&b, 0);
        assert_eq!(a.summary(), all.summary());
        assert_eq!(a.timeline.len(), all.timeline.len());
    }
}
