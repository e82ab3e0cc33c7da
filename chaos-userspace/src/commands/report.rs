//! `chaos report FILE... [--html OUT.html] [--json] [--baseline A... -- B...]`: any chaos
//! output, or several merged, in the terminal, as an HTML page or as JSON.
//!
//! A single result of `chaos run` is shown whole (verdict, clauses, plots, timeline). Any
//! other output, or several, is merged: a row per source, the merged counts, the merged
//! HdrHistograms. Recordings are replayed through the engine that made them first.

use std::{cell::RefCell, path::Path, rc::Rc};

use super::{EXIT_FAILURE, Failure};
use crate::{
    cli::ReportArgs,
    driver,
    episode::Episode,
    experiment::{self, record::RunHeader, runner::Runner},
    export::Exporters,
    machine::record::Recording,
    measure::{
        MeasureMachine, Measurement,
        record::Header,
        sink::{EpisodeSink, MeasureSummary},
        stats::{self, LogSpan},
    },
    report::{
        html,
        merge::{self, Merge},
        source::{self, Kind, Loaded, RecordingKind, Source},
        terminal, verdict_word,
    },
};

pub fn run(args: ReportArgs) -> Result<u8, Failure> {
    let hdr_log = super::measure::hdr_log(&args.hdr)?;
    let io = |e: std::io::Error| Failure::running(EXIT_FAILURE, e);
    if !args.baseline.is_empty() {
        if args.html.is_some() || hdr_log.is_some() {
            return Err(Failure::refused(
                "--baseline compares in the terminal or as --json; write each set's page or log with its own chaos report",
            ));
        }
        let baseline = merge::merge(&load_all(&args.baseline)?).summary;
        let candidate = merge::merge(&load_all(&args.sources)?).summary;
        let comparison = merge::compare(baseline, candidate);
        if args.json {
            print_json(&comparison)?;
        } else {
            terminal::render_comparison(&mut std::io::stdout(), &comparison).map_err(io)?;
        }
        return Ok(0);
    }
    let sources = load_all(&args.sources)?;
    let merged = merge::merge(&sources);
    if let Some(log) = &hdr_log {
        write_log(&log.path, &merged, log.slice)?;
    }
    // One run's result, shown whole.
    let single = match sources.as_slice() {
        [s] if !args.json => s.run.as_deref(),
        _ => None,
    };
    match (&args.html, single) {
        (Some(out), Some(result)) => {
            write_page(out, &html::page(result))?;
            println!(
                "{}: {} episode(s), verdict {}",
                out.display(),
                result.episodes.len(),
                verdict_word(result)
            );
        }
        (Some(out), None) => {
            write_page(out, &html::merged_page(&sources, &merged))?;
            let c = &merged.summary.counts;
            println!(
                "{}: {} source(s), {} episode(s): {} recovered, {} failed, {} unfinished",
                out.display(),
                sources.len(),
                c.episodes,
                c.recovered,
                c.failed,
                c.unfinished
            );
        }
        (None, _) if args.json => print_json(&merged.summary)?,
        (None, Some(result)) => {
            terminal::render(&mut std::io::stdout(), result).map_err(io)?;
        }
        (None, None) => {
            terminal::render_merge(&mut std::io::stdout(), &sources, &merged).map_err(io)?;
        }
    }
    Ok(0)
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::running(EXIT_FAILURE, super::Refusal(e.to_string())))?;
    println!("{text}");
    Ok(())
}

fn write_page(out: &Path, page: &str) -> Result<(), Failure> {
    crate::sys::trust::create_output(out)
        .and_then(|mut f| std::io::Write::write_all(&mut f, page.as_bytes()))
        .map_err(|e| Failure::refused(format!("{}: cannot write the page: {e}", out.display())))
}

/// The merged interval log: slices from the earliest source's start, on the wall clock.
fn write_log(path: &Path, merged: &Merge, slice: std::time::Duration) -> Result<(), Failure> {
    let Some(start) = merged.start_unix_ns else {
        return Err(Failure::refused(format!(
            "--hdr-log {}: no source says when it started on the wall clock (a stream cut short, or written before chaos kept it): the log would have no time axis",
            path.display()
        )));
    };
    let span = LogSpan::new(start, 0, merged.duration_ns, slice);
    let slices = span.slices();
    if slices > LogSpan::MAX_SLICES {
        return Err(Failure::refused(format!(
            "--hdr-interval {}: the sources span {}, which makes {slices} slices (at most {}): give a longer interval",
            humantime::format_duration(slice),
            humantime::format_duration(span.duration),
            LogSpan::MAX_SLICES
        )));
    }
    stats::write_log_file(path, &merged.stats, &span).map_err(|e| {
        Failure::running(
            EXIT_FAILURE,
            super::Refusal(format!(
                "{}: cannot write the HdrHistogram log: {e}",
                path.display()
            )),
        )
    })
}

/// Every file, in order; the first that is not a chaos output stops everything (exit 2).
fn load_all(paths: &[std::path::PathBuf]) -> Result<Vec<Source>, Failure> {
    paths.iter().map(|p| load(p)).collect()
}

/// Reads `path` as whatever chaos output it is; a recording is replayed.
pub fn load(path: &Path) -> Result<Source, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::refused(format!("{}: cannot read: {e}", path.display())))?;
    match source::parse(path, &text).map_err(|e| Failure::refused(e.0))? {
        Loaded::Source(s) => Ok(*s),
        Loaded::Recording(RecordingKind::Run) => replay_run(path),
        Loaded::Recording(RecordingKind::Measure) => replay_measure(path),
    }
}

/// A `chaos run --record` file, through the runner, as `chaos run --replay` does.
fn replay_run(path: &Path) -> Result<Source, Failure> {
    let recording = Recording::<RunHeader>::open(path)?;
    let header = recording.header;
    let experiment = experiment::check(&header.source, &header.file)?;
    let mut runner = Runner::new(experiment, header);
    let end = driver::replay(
        &mut runner,
        recording.inputs,
        recording.end,
        path,
        &mut Exporters::default(),
    );
    let result = runner.finish(&end).result;
    Ok(Source::of_run(path, result, Kind::RunRecording))
}

/// Where a replayed measurement's episodes go.
#[derive(Default, Clone)]
struct Collect(Rc<RefCell<(Vec<Episode>, Option<MeasureSummary>)>>);

impl EpisodeSink for Collect {
    fn episode(&mut self, episode: &Episode) -> std::io::Result<()> {
        self.0.borrow_mut().0.push(episode.clone());
        Ok(())
    }

    fn summary(&mut self, summary: &MeasureSummary) -> std::io::Result<()> {
        self.0.borrow_mut().1 = Some(summary.clone());
        Ok(())
    }
}

/// A `chaos measure --record` file, through the engine, as `chaos measure --replay` does.
fn replay_measure(path: &Path) -> Result<Source, Failure> {
    let recording = Recording::<Header>::open(path)?;
    let collect = Collect::default();
    let mut machine = MeasureMachine::new(
        Measurement::new(recording.header),
        Box::new(collect.clone()),
        None,
        None,
    );
    let end = driver::replay(
        &mut machine,
        recording.inputs,
        recording.end,
        path,
        &mut Exporters::default(),
    );
    machine.finish(&end);
    let (episodes, summary) = collect.0.take();
    Ok(Source::of_measure(
        path,
        Kind::MeasureRecording,
        episodes,
        summary,
    ))
}
