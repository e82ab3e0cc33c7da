//! Any chaos output as a report's source: a result of `chaos run --json`, a `chaos measure
//! --json` stream, a `chaos inject --json` stream, or a recording (which the command replays
//! first). A file is recognised by its content, never by its name.

use std::path::Path;

use serde::Serialize;

use crate::{
    episode::{Episode, Outcome},
    experiment::{
        accounting::{FaultOutcome, InPlaceRecovery},
        result::RunResult,
        verdict::Verdict,
    },
    fault::{FaultRecord, Proof},
    inject::ledger::InjectSummary,
    measure::{sink::MeasureSummary, stats::Stats},
    sys::host::Host,
};

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A result of `chaos run --json`.
    Run,
    /// `chaos measure --json`.
    Measure,
    /// `chaos inject --json`.
    Inject,
    /// `chaos run --record`, replayed.
    RunRecording,
    /// `chaos measure --record`, replayed.
    MeasureRecording,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Run => "run result",
            Kind::Measure => "measure stream",
            Kind::Inject => "inject stream",
            Kind::RunRecording => "run recording (replayed)",
            Kind::MeasureRecording => "measure recording (replayed)",
        }
    }
}

/// A recording, which the command replays into a [`Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingKind {
    Run,
    Measure,
}

/// What a file was recognised as.
#[derive(Debug)]
pub enum Loaded {
    Source(Box<Source>),
    Recording(RecordingKind),
}

/// A fault of a source, and what became of it where the source says.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFault {
    pub record: FaultRecord,
    /// A run's accounting (none for an inject stream).
    pub outcome: Option<FaultOutcome>,
    /// The kernel event that proved it, when the source shows proofs.
    pub confirmed: bool,
}

/// One input of a report, whatever command wrote it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: String,
    pub kind: Kind,
    pub host: Option<Host>,
    /// The experiment's id (a run), or what was measured (`measure COMM`), or injected into.
    pub name: String,
    /// The start, on the wall clock (ns since the epoch) and in kernel time, where known.
    pub start_unix_ns: Option<u64>,
    pub start_ns: Option<u64>,
    pub duration_ns: u64,
    pub verdict: Option<Verdict>,
    pub episodes: Vec<Episode>,
    pub in_place: Vec<InPlaceRecovery>,
    pub faults: Vec<SourceFault>,
    /// Events the ring buffer dropped, processes the target set had no room for, events
    /// that could not be read: each means the source may have missed something.
    pub lost: u64,
    pub targets_full: u64,
    pub read_errors: u64,
    /// Why the source may not be whole (a stream without its summary line).
    pub note: Option<String>,
    /// The whole result, for a run (the single-run report shows everything it holds).
    pub run: Option<Box<RunResult>>,
}

/// Counts of episodes and faults, for one source or a merge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub episodes: u64,
    pub recovered: u64,
    pub failed: u64,
    pub unfinished: u64,
    pub failed_starts: u64,
    pub faults: u64,
    pub confirmed: u64,
    pub in_place: u64,
    pub no_effect: u64,
    pub unmeasured: u64,
    /// Faults whose outcome the source does not follow (an inject stream: chaos inject
    /// proves a fault took effect, not what became of the service).
    pub not_followed: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.episodes += o.episodes;
        self.recovered += o.recovered;
        self.failed += o.failed;
        self.unfinished += o.unfinished;
        self.failed_starts += o.failed_starts;
        self.faults += o.faults;
        self.confirmed += o.confirmed;
        self.in_place += o.in_place;
        self.no_effect += o.no_effect;
        self.unmeasured += o.unmeasured;
        self.not_followed += o.not_followed;
    }
}

impl Source {
    /// A run's result.
    pub fn of_run(path: &Path, result: RunResult, kind: Kind) -> Self {
        let confirmed = |id: u64| !result.unconfirmed.contains(&id);
        Self {
            path: path.display().to_string(),
            kind,
            host: result.host.clone(),
            name: result.experiment.clone(),
            start_unix_ns: Some(result.start_unix_ns),
            start_ns: Some(result.start_ns),
            duration_ns: result.duration_ns,
            verdict: Some(result.verdict),
            episodes: result.episodes.clone(),
            in_place: result.in_place.clone(),
            faults: result
                .faults
                .iter()
                .map(|f| SourceFault {
                    record: f.record.clone(),
                    outcome: Some(f.outcome.clone()),
                    confirmed: !f.record.dry_run && confirmed(f.record.id),
                })
                .collect(),
            lost: result.summary.lost,
            targets_full: result.summary.targets_full,
            read_errors: result.summary.read_errors,
            note: None,
            run: Some(Box::new(result)),
        }
    }

    /// A measurement's episodes and its summary (None: the stream was cut short).
    pub fn of_measure(
        path: &Path,
        kind: Kind,
        episodes: Vec<Episode>,
        summary: Option<MeasureSummary>,
    ) -> Self {
        let note = summary
            .is_none()
            .then(|| "no summary line: the stream was cut short".to_string());
        let duration_ns = summary.as_ref().map_or_else(
            || {
                episodes
                    .iter()
                    .map(|e| crate::report::episode_span(e).1)
                    .max()
                    .unwrap_or(0)
                    .saturating_sub(
                        episodes
                            .iter()
                            .map(crate::measure::stats::began_ns)
                            .min()
                            .unwrap_or(0),
                    )
            },
            |s| s.duration_ns,
        );
        Self {
            path: path.display().to_string(),
            kind,
            host: summary.as_ref().and_then(|s| s.origin.host.clone()),
            name: summary
                .as_ref()
                .map_or_else(|| "measure".to_string(), |s| format!("measure {}", s.comm)),
            start_unix_ns: summary.as_ref().and_then(|s| s.origin.start_unix_ns),
            // Without a summary (or from before chaos kept it), its first episode's start.
            start_ns: summary
                .as_ref()
                .and_then(|s| s.origin.start_ns)
                .or_else(|| episodes.iter().map(crate::measure::stats::began_ns).min()),
            duration_ns,
            verdict: None,
            episodes,
            in_place: Vec::new(),
            faults: Vec::new(),
            lost: summary.as_ref().map_or(0, |s| s.lost),
            targets_full: summary.as_ref().map_or(0, |s| s.targets_full),
            read_errors: summary.as_ref().map_or(0, |s| s.read_errors),
            note,
            run: None,
        }
    }

    /// Counts of what this source holds.
    pub fn counts(&self) -> Counts {
        let episodes = |o: Outcome| self.episodes.iter().filter(|e| e.outcome == o).count() as u64;
        let outcomes = |f: fn(&FaultOutcome) -> bool| {
            self.faults
                .iter()
                .filter(|x| x.outcome.as_ref().is_some_and(f))
                .count() as u64
        };
        Counts {
            episodes: self.episodes.len() as u64,
            recovered: episodes(Outcome::Recovered),
            failed: episodes(Outcome::Failed),
            unfinished: episodes(Outcome::Unfinished),
            failed_starts: self
                .episodes
                .iter()
                .map(|e| u64::from(e.failed_starts))
                .sum(),
            faults: self.faults.iter().filter(|f| !f.record.dry_run).count() as u64,
            confirmed: self.faults.iter().filter(|f| f.confirmed).count() as u64,
            in_place: outcomes(|o| matches!(o, FaultOutcome::InPlace { .. })),
            no_effect: outcomes(|o| matches!(o, FaultOutcome::NoEffect)),
            unmeasured: outcomes(|o| matches!(o, FaultOutcome::Unmeasured { .. })),
            not_followed: self
                .faults
                .iter()
                .filter(|f| !f.record.dry_run && f.outcome.is_none())
                .count() as u64,
        }
    }

    /// The phase histograms of its episodes.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for e in &self.episodes {
            stats.add(e);
        }
        stats
    }

    /// Kernel time `ts_ns` of this source on the wall clock (ns since the epoch).
    pub fn wall_ns(&self, ts_ns: u64) -> Option<u64> {
        let (unix, start) = (self.start_unix_ns?, self.start_ns?);
        Some((i128::from(unix) + i128::from(ts_ns) - i128::from(start)).max(0) as u64)
    }
}

/// Why a file is not a source, with where in it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The types a line of a JSON Lines output may have, and which command wrote it.
const MEASURE_LINES: [&str; 2] = ["episode", "summary"];
const INJECT_LINES: [&str; 3] = ["fault", "confirmed", "summary"];

/// Recognises and reads `text`, the content of `path`. A JSON Lines stream whose last line
/// was cut off (no newline, not JSON: its writer died mid-line) is read without that line,
/// and says so.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, SourceError> {
    let json_lines = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .is_some_and(|v| v.get("type").is_some());
    let cut = match text.rfind('\n') {
        Some(end)
            if json_lines
                && end + 1 < text.len()
                && serde_json::from_str::<serde_json::Value>(&text[end + 1..]).is_err() =>
        {
            Some(end + 1)
        }
        _ => None,
    };
    let mut loaded = parse_whole(path, &text[..cut.unwrap_or(text.len())])?;
    if let (Some(at), Loaded::Source(s)) = (cut, &mut loaded) {
        let line = text[..at].lines().count() + 1;
        let note = format!("line {line} was cut off and is left out");
        s.note = Some(match s.note.take() {
            Some(n) => format!("{n}; {note}"),
            None => note,
        });
    }
    Ok(loaded)
}

fn parse_whole(path: &Path, text: &str) -> Result<Loaded, SourceError> {
    let at = |line: usize, what: String| SourceError(format!("{}:{line}: {what}", path.display()));
    let first = text.lines().position(|l| !l.trim().is_empty());
    let Some(first) = first else {
        return Err(at(1, "empty: not a chaos output".into()));
    };
    let head: Option<serde_json::Value> =
        serde_json::from_str(text.lines().nth(first).unwrap_or("")).ok();
    let tag = head
        .as_ref()
        .and_then(|v| v.get("type"))
        .and_then(|t| t.as_str())
        .map(str::to_string);
    let Some(tag) = tag else {
        // Not JSON Lines: a run's result is one (pretty-printed) object.
        let result: RunResult = serde_json::from_str(text).map_err(|e| {
            at(
                e.line(),
                format!(
                    "column {}: not a chaos output (a result of chaos run --json, a measure or inject --json stream, or a recording): {e}",
                    e.column()
                ),
            )
        })?;
        return Ok(Loaded::Source(Box::new(Source::of_run(
            path,
            result,
            Kind::Run,
        ))));
    };
    let data = head.as_ref().and_then(|v| v.get("data"));
    match tag.as_str() {
        "run" => return Ok(Loaded::Recording(RecordingKind::Run)),
        "measure" => return Ok(Loaded::Recording(RecordingKind::Measure)),
        "episode" => return measure_stream(path, text).map(|s| Loaded::Source(Box::new(s))),
        "fault" | "confirmed" => {
            return inject_stream(path, text).map(|s| Loaded::Source(Box::new(s)));
        }
        "summary" if data.is_some_and(|d| d.get("injected").is_some()) => {
            return inject_stream(path, text).map(|s| Loaded::Source(Box::new(s)));
        }
        "summary" if data.is_some_and(|d| d.get("comm").is_some()) => {
            return measure_stream(path, text).map(|s| Loaded::Source(Box::new(s)));
        }
        _ => {}
    }
    let what = if data.is_some_and(|d| d.get("ts_ns").is_some()) || tag == "summary" {
        format!(
            "a `{tag}` line: this is a chaos observe stream (events), which has no faults or episodes to report; measure the service with chaos measure --json"
        )
    } else {
        format!("a `{tag}` line: not a chaos output chaos report reads")
    };
    Err(at(first + 1, what))
}

/// Each line of a JSON Lines stream, parsed: (line number, type, data).
fn lines<'a>(
    path: &'a Path,
    text: &'a str,
    allowed: &'a [&'a str],
    command: &'a str,
) -> impl Iterator<Item = Result<(usize, String, serde_json::Value), SourceError>> + 'a {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(move |(i, line)| {
            let at = |what: String| SourceError(format!("{}:{}: {what}", path.display(), i + 1));
            let mut value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| at(format!("column {}: not JSON: {e}", e.column())))?;
            let tag = value
                .get("type")
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .ok_or_else(|| at("a line without \"type\"".into()))?;
            if !allowed.contains(&tag.as_str()) {
                return Err(at(format!(
                    "a `{tag}` line in a {command} stream (expected {})",
                    allowed.join(", ")
                )));
            }
            let data = value
                .get_mut("data")
                .map(serde_json::Value::take)
                .unwrap_or_default();
            Ok((i + 1, tag, data))
        })
}

fn field<T: serde::de::DeserializeOwned>(
    path: &Path,
    line: usize,
    what: &str,
    data: serde_json::Value,
) -> Result<T, SourceError> {
    serde_json::from_value(data)
        .map_err(|e| SourceError(format!("{}:{line}: not a {what}: {e}", path.display())))
}

/// `chaos measure --json`: episodes, then a summary.
fn measure_stream(path: &Path, text: &str) -> Result<Source, SourceError> {
    let mut episodes = Vec::new();
    let mut summary = None;
    for line in lines(path, text, &MEASURE_LINES, "chaos measure --json") {
        let (n, tag, data) = line?;
        match tag.as_str() {
            "episode" => episodes.push(field::<Episode>(path, n, "measure episode", data)?),
            _ => summary = Some(field::<MeasureSummary>(path, n, "measure summary", data)?),
        }
    }
    Ok(Source::of_measure(path, Kind::Measure, episodes, summary))
}

/// `chaos inject --json`: faults, their proofs, then a summary.
fn inject_stream(path: &Path, text: &str) -> Result<Source, SourceError> {
    let mut faults: Vec<SourceFault> = Vec::new();
    let mut summary: Option<InjectSummary> = None;
    let mut last_ns = 0;
    for line in lines(path, text, &INJECT_LINES, "chaos inject --json") {
        let (n, tag, data) = line?;
        match tag.as_str() {
            "fault" => {
                let record: FaultRecord = field(path, n, "fault record", data)?;
                last_ns = last_ns.max(record.ts_ns);
                faults.push(SourceFault {
                    record,
                    outcome: None,
                    confirmed: false,
                });
            }
            "confirmed" => {
                let proof: Proof = field(path, n, "proof", data)?;
                last_ns = last_ns.max(proof.ts_ns);
                match faults.iter_mut().find(|f| f.record.id == proof.id) {
                    Some(f) => f.confirmed = true,
                    None => {
                        return Err(SourceError(format!(
                            "{}:{n}: a proof of fault #{} before any such fault",
                            path.display(),
                            proof.id
                        )));
                    }
                }
            }
            _ => summary = Some(field(path, n, "inject summary", data)?),
        }
    }
    let first_ns = faults.iter().map(|f| f.record.ts_ns).min().unwrap_or(0);
    let start_ns = summary
        .as_ref()
        .and_then(|s| s.origin.start_ns)
        .or((!faults.is_empty()).then_some(first_ns));
    Ok(Source {
        path: path.display().to_string(),
        kind: Kind::Inject,
        host: summary.as_ref().and_then(|s| s.origin.host.clone()),
        name: faults.first().map_or_else(
            || "inject".to_string(),
            |f| format!("inject {}", f.record.comm),
        ),
        start_unix_ns: summary.as_ref().and_then(|s| s.origin.start_unix_ns),
        start_ns,
        duration_ns: summary
            .as_ref()
            .map_or(last_ns.saturating_sub(first_ns), |s| s.duration_ns),
        verdict: None,
        episodes: Vec::new(),
        in_place: Vec::new(),
        lost: summary.as_ref().map_or(0, |s| s.lost),
        targets_full: 0,
        read_errors: 0,
        note: summary
            .is_none()
            .then(|| "no summary line: the stream was cut short".to_string()),
        faults,
        run: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(text: &str) -> Result<Loaded, SourceError> {
        parse(Path::new("f"), text)
    }

    fn source(text: &str) -> Source {
        match loaded(text) {
            Ok(Loaded::Source(s)) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn episode_line(id: u64) -> String {
        let mut e = crate::export::tests::episode();
        e.id = id;
        format!(
            "{{\"type\":\"episode\",\"data\":{}}}",
            serde_json::to_string(&e).unwrap()
        )
    }

    #[test]
    fn a_measure_stream_is_known_by_its_lines_and_kept_whole() {
        let text = format!(
            "{}\n{}\n{{\"type\":\"summary\",\"data\":{{\"duration_ns\":9000,\"comm\":\"svc\",\"ready\":\"listen\",\"recovered\":2,\"failed\":0,\"unfinished\":0,\"failed_starts\":0,\"phases_ns\":[],\"fsync_latency_ns\":{q},\"unsynced_bytes_at_exit\":{q},\"lost\":1,\"targets_full\":0,\"read_errors\":0,\"host\":{{\"name\":\"node-a\",\"kernel\":\"6.18.0\"}},\"start_unix_ns\":5,\"start_ns\":7}}}}\n",
            episode_line(1),
            episode_line(2),
            q = serde_json::to_string(&crate::measure::stats::Quantiles::default()).unwrap()
        );
        let s = source(&text);
        assert_eq!(s.kind, Kind::Measure);
        assert_eq!(s.name, "measure svc");
        assert_eq!(s.host.as_ref().unwrap().name, "node-a");
        assert_eq!(
            (s.start_unix_ns, s.start_ns, s.duration_ns, s.lost),
            (Some(5), Some(7), 9000, 1)
        );
        assert_eq!(s.counts().recovered, 2);
        assert!(s.note.is_none());
        // Cut short: the episodes still count, and the source says it is not whole.
        let cut = source(&format!("{}\n", episode_line(1)));
        assert_eq!(cut.counts().episodes, 1);
        assert!(cut.note.unwrap().contains("cut short"));
    }

    #[test]
    fn an_inject_stream_counts_its_faults_and_their_proofs() {
        let fault = |id: u64| {
            format!(
                "{{\"type\":\"fault\",\"data\":{{\"id\":{id},\"ts_ns\":{},\"pid\":42,\"tid\":null,\"comm\":\"victim\",\"fault\":\"signal\",\"value\":\"SIGTERM\",\"syscall\":null,\"nth\":null,\"backend\":\"pidfd\",\"dry_run\":false}}}}",
                100 * id
            )
        };
        let text = format!(
            "{}\n{{\"type\":\"confirmed\",\"data\":{{\"id\":1,\"ts_ns\":150,\"by\":\"SIGTERM delivered\"}}}}\n{}\n{{\"type\":\"summary\",\"data\":{{\"injected\":2,\"confirmed\":1,\"unconfirmed\":[2],\"dry_run\":false,\"duration_ns\":1000,\"lost\":0}}}}\n",
            fault(1),
            fault(2)
        );
        let s = source(&text);
        assert_eq!(s.kind, Kind::Inject);
        assert_eq!(s.name, "inject victim");
        let c = s.counts();
        assert_eq!((c.faults, c.confirmed, c.episodes), (2, 1, 0));
        assert_eq!(s.duration_ns, 1000);
        // A proof of a fault the stream never had is an error, with its line.
        let bad = "{\"type\":\"confirmed\",\"data\":{\"id\":9,\"ts_ns\":1,\"by\":\"x\"}}\n";
        assert_eq!(
            loaded(bad).unwrap_err().0,
            "f:1: a proof of fault #9 before any such fault"
        );
    }

    #[test]
    fn a_last_line_cut_off_is_left_out_and_said() {
        let text = format!(
            "{}\n{}\n{{\"type\":\"episo",
            episode_line(1),
            episode_line(2)
        );
        let s = source(&text);
        assert_eq!(s.counts().episodes, 2);
        let note = s.note.unwrap();
        assert!(note.contains("line 3 was cut off"), "{note}");
        // No summary either: its start is its first episode's (kernel time), and it has no
        // wall-clock start.
        assert_eq!(s.start_ns, Some(1_000));
        assert_eq!(s.start_unix_ns, None);
        // A run's result is one pretty-printed object: its last line is not a cut line.
        assert!(loaded("{\n  \"experiment\": 3\n}").is_err());
    }

    #[test]
    fn recordings_are_handed_back_for_replay() {
        assert!(matches!(
            loaded("{\"type\":\"run\",\"data\":{\"version\":1}}\n"),
            Ok(Loaded::Recording(RecordingKind::Run))
        ));
        assert!(matches!(
            loaded("{\"type\":\"measure\",\"data\":{\"version\":1}}\n"),
            Ok(Loaded::Recording(RecordingKind::Measure))
        ));
    }

    #[test]
    fn what_is_not_a_chaos_output_is_named_with_its_line() {
        let cases = [
            ("", "f:1: empty: not a chaos output"),
            (
                "\n{\"type\":\"fork\",\"data\":{\"ts_ns\":1,\"parent_pid\":1,\"child_pid\":2}}\n",
                "f:2: a `fork` line: this is a chaos observe stream (events), which has no faults or episodes to report; measure the service with chaos measure --json",
            ),
            (
                "{\"experiment\": 3}",
                "f:1: column 16: not a chaos output (a result of chaos run --json, a measure or inject --json stream, or a recording): invalid type: integer `3`, expected a string at line 1 column 16",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(loaded(text).unwrap_err().0, expected, "{text:?}");
        }
        let mixed = format!(
            "{}\n{{\"type\":\"fault\",\"data\":{{}}}}\n",
            episode_line(1)
        );
        assert_eq!(
            loaded(&mixed).unwrap_err().0,
            "f:2: a `fault` line in a chaos measure --json stream (expected episode, summary)"
        );
        let broken = format!(
            "{}\n{{\"type\":\"episode\",\"data\":{{\"id\":1}}}}\n",
            episode_line(1)
        );
        assert!(
            loaded(&broken)
                .unwrap_err()
                .0
                .starts_with("f:2: not a measure episode: missing field"),
        );
    }
}
