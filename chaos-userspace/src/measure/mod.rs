//! Recovery measurement: events -> [`episode::Engine`] -> episodes and histograms.
//!
//! [`Measurement`] is the one path every input takes, live or replayed: it records the input
//! (with `--record`), feeds the engine, reports what ended, and counts towards `--episodes`.
//! Live and replayed runs therefore print the same thing for the same input.

pub mod discover;
pub mod episode;
pub mod record;
pub mod report;
pub mod service;
pub mod stats;

use std::{io::Write, path::PathBuf, time::Duration};

use episode::{Engine, Output};
use record::{End, Header, Input, Recorder};
use report::{MeasureSummary, Report};

/// Where the HdrHistogram log goes, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub hdr_log: Option<PathBuf>,
}

pub struct Measurement {
    header: Header,
    engine: Engine,
    report: Box<dyn Report>,
    recorder: Option<Recorder<Box<dyn Write>>>,
    /// Stop after this many ended episodes.
    limit: Option<u64>,
    ended: u64,
    outputs: Vec<Output>,
    /// Episodes whose readiness the driver should start probing.
    probes: Vec<u64>,
    /// Episodes that ended since the driver last asked (to stop their probes).
    finished: Vec<u64>,
    /// The reader of the report went away (a closed pipe is a normal way to stop).
    closed: bool,
    exporters: Option<crate::export::Shared>,
}

impl Measurement {
    pub fn new(
        header: Header,
        report: Box<dyn Report>,
        record: Option<Box<dyn Write>>,
        limit: Option<u64>,
    ) -> std::io::Result<Self> {
        let recorder = record.map(|out| Recorder::new(out, &header)).transpose()?;
        Ok(Self {
            engine: Engine::new(header.service.clone()),
            header,
            report,
            recorder,
            limit,
            ended: 0,
            outputs: Vec::new(),
            probes: Vec::new(),
            finished: Vec::new(),
            closed: false,
            exporters: None,
        })
    }

    /// Ended episodes also go to these exporters, which from now on turn kernel times into
    /// wall-clock times with this measurement's header (so exported times and the recorded or
    /// reported ones agree exactly).
    pub fn set_exporters(&mut self, exporters: crate::export::Shared) {
        exporters.borrow_mut().clock = Some(crate::export::Clock::new(
            self.header.start_ns,
            self.header.start_unix_ns,
        ));
        self.exporters = Some(exporters);
    }

    /// Feeds one input; true once `--episodes` is reached or the report's reader is gone.
    pub fn feed(&mut self, input: Input) -> std::io::Result<bool> {
        match &input {
            Input::Event(event) => self.engine.event(event, &mut self.outputs),
            Input::Ready(mark) => self
                .engine
                .ready(mark.episode, mark.ts_ns, &mut self.outputs),
            Input::Tick(tick) => self.engine.advance(tick.ts_ns, &mut self.outputs),
        }
        // A tick that changed nothing is not worth a line in the recording.
        let keep = !matches!(input, Input::Tick(_)) || !self.outputs.is_empty();
        if let (Some(recorder), true) = (self.recorder.as_mut(), keep) {
            recorder.input(&input)?;
        }
        self.drain_outputs()?;
        Ok(self.closed || self.limit.is_some_and(|limit| self.ended >= limit))
    }

    /// Writes to the report unless its reader is gone.
    fn report(
        &mut self,
        write: impl FnOnce(&mut dyn Report) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match write(self.report.as_mut()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }

    fn drain_outputs(&mut self) -> std::io::Result<()> {
        for output in std::mem::take(&mut self.outputs) {
            match output {
                Output::Episode(episode) => {
                    if let Some(e) = &self.exporters {
                        e.borrow_mut().episode(&episode);
                    }
                    self.ended += 1;
                    self.finished.push(episode.id);
                    self.report(|r| r.episode(&episode))?;
                }
                Output::Probe { episode } => self.probes.push(episode),
            }
        }
        Ok(())
    }

    /// Episodes to start probing since the last call.
    pub fn take_probes(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.probes)
    }

    /// Episodes that ended since the last call.
    pub fn take_finished(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.finished)
    }

    pub fn flush_record(&mut self) -> std::io::Result<()> {
        self.recorder.as_mut().map_or(Ok(()), Recorder::flush)
    }

    pub fn instance_count(&self) -> usize {
        self.engine.instance_count()
    }

    /// Episodes begun and not yet ended.
    pub fn open_count(&self) -> usize {
        self.engine.open_count()
    }

    /// See [`Engine::oldest_open`].
    pub fn oldest_open(&self) -> Option<(u64, u32, u64)> {
        self.engine.oldest_open()
    }

    pub fn stats(&self) -> &stats::Stats {
        self.engine.stats()
    }

    /// Ends the run at `end`: open episodes are reported unfinished, then the summary; the
    /// recording gets its end mark and the HdrHistogram log is written.
    pub fn finish(mut self, end: End, outputs: &Outputs) -> std::io::Result<MeasureSummary> {
        self.engine.finish(end.ts_ns, &mut self.outputs);
        self.drain_outputs()?;
        if let Some(e) = &self.exporters {
            e.borrow_mut().lost(end.counters.lost);
        }
        let duration_ns = end.ts_ns.saturating_sub(self.header.start_ns);
        let summary = MeasureSummary {
            duration_ns,
            comm: self.header.service.comm.clone(),
            ready: self.header.service.ready.describe(),
            stats: self.engine.stats().summary(),
            lost: end.counters.lost,
            targets_full: end.counters.targets_full,
            read_errors: end.counters.read_errors,
        };
        self.report(|r| r.summary(&summary))?;
        if let Some(recorder) = self.recorder.take() {
            recorder.end(&end)?;
        }
        if let Some(path) = &outputs.hdr_log {
            let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
            let start = std::time::UNIX_EPOCH + Duration::from_nanos(self.header.start_unix_ns);
            self.engine.stats().write_hdr_log(
                &mut file,
                start,
                Duration::from_nanos(duration_ns),
            )?;
            file.flush()?;
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::{record::Recording, report::JsonReport, *};
    use crate::{
        event::{Event, Exec, Exit, Fork, KernelCounters, Reap, Signal},
        measure::record::{ReadyMark, Tick},
        output::SharedBuf as Shared,
    };

    fn header() -> Header {
        let mut header = record::tests::header();
        header.start_ns = 0;
        header.service.recovery_timeout_ns = 1_000_000_000;
        header
    }

    /// Three deaths: two recover (probed readiness), the last never does (a tick fails it).
    fn inputs() -> Vec<Input> {
        let mut inputs = Vec::new();
        let mut pid = 11;
        for round in 0..3u64 {
            let t = round * 2_000_000_000 + 1_000_000;
            let new = pid + 1;
            inputs.push(Input::Event(Event::Signal(Signal {
                ts_ns: t,
                sender_pid: 99,
                sender_comm: "kill".into(),
                target_pid: pid,
                target_comm: "svc".into(),
                signal: 9,
                signal_name: "SIGKILL".into(),
                code: 0,
                group: true,
                result: "delivered".into(),
            })));
            inputs.push(Input::Event(Event::Exit(Exit::from_raw(
                t + 10_000,
                pid,
                10,
                "svc".into(),
                9,
                1_000_000_000,
                Some(100),
            ))));
            inputs.push(Input::Event(Event::Reap(Reap {
                ts_ns: t + 20_000,
                pid: 10,
                child_pid: pid,
            })));
            if round == 2 {
                inputs.push(Input::Tick(Tick {
                    ts_ns: t + 1_500_000_000,
                }));
                break;
            }
            inputs.push(Input::Event(Event::Fork(Fork {
                ts_ns: t + 2_000_000 * (round + 1),
                parent_pid: 10,
                child_pid: new,
            })));
            inputs.push(Input::Event(Event::Exec(Exec {
                ts_ns: t + 3_000_000 * (round + 1),
                pid: new,
                ppid: 10,
                old_pid: new,
                comm: "svc".into(),
                filename: "./svc".into(),
            })));
            inputs.push(Input::Ready(ReadyMark {
                episode: round + 1,
                ts_ns: t + 4_000_000 * (round + 1),
            }));
            pid = new;
        }
        inputs
    }

    fn run(inputs: Vec<Input>, record: Option<Shared>, limit: Option<u64>) -> String {
        let out = Shared::default();
        let mut m = Measurement::new(
            header(),
            Box::new(JsonReport(out.clone())),
            record.map(|r| Box::new(r) as Box<dyn Write>),
            limit,
        )
        .unwrap();
        for input in inputs {
            if m.feed(input).unwrap() {
                break;
            }
        }
        let end = End {
            ts_ns: 6_000_000_000,
            counters: KernelCounters::default(),
        };
        m.finish(end, &Outputs::default()).unwrap();
        out.text()
    }

    #[test]
    fn a_replay_prints_exactly_what_the_run_printed() {
        let record = Shared::default();
        let live = run(inputs(), Some(record.clone()), None);
        let recording =
            Recording::from_reader(std::path::Path::new("r"), record.text().as_bytes()).unwrap();
        assert_eq!(recording.header, header());
        let replayed = run(recording.inputs, None, None);
        assert_eq!(live, replayed);
        let lines: Vec<&str> = live.lines().collect();
        assert_eq!(lines.len(), 4, "{live}");
        assert!(lines[0].contains("\"outcome\":\"recovered\""));
        assert!(lines[2].contains("\"outcome\":\"failed\""));
        assert!(lines[3].starts_with("{\"type\":\"summary\""));
        assert!(lines[3].contains("\"recovered\":2,\"failed\":1,\"unfinished\":0"));
    }

    #[test]
    fn episodes_limit_stops_the_run_and_the_recording() {
        let record = Shared::default();
        let live = run(inputs(), Some(record.clone()), Some(1));
        assert_eq!(live.lines().count(), 2, "one episode and the summary");
        let recording =
            Recording::from_reader(std::path::Path::new("r"), record.text().as_bytes()).unwrap();
        assert!(recording.inputs.len() < inputs().len());
        assert_eq!(run(recording.inputs, None, None), live);
    }
}
