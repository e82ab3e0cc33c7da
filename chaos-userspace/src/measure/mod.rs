//! Recovery measurement: inputs -> [`engine::Engine`] -> episodes and histograms.
//!
//! [`Measurement`] is the one path every input takes, in `chaos measure` and in `chaos run`,
//! live or replayed: it feeds the engine, asks for readiness probes, and reports each ended
//! episode. [`MeasureMachine`] is `chaos measure`'s engine: a measurement, a sink for its
//! episodes, and the `--episodes` limit. Live and replayed runs therefore print the same thing
//! for the same inputs.

pub mod discover;
pub mod engine;
pub mod service;
pub mod sink;
pub mod stats;

pub mod record;

use engine::{Engine, Output};
use record::Header;
use sink::{EpisodeSink, MeasureSummary};

use crate::{
    episode::Episode,
    machine::{Action, Exported, Input, Machine, record::End},
};

pub struct Measurement {
    header: Header,
    engine: Engine,
    outputs: Vec<Output>,
}

impl Measurement {
    pub fn new(header: Header) -> Self {
        Self {
            engine: Engine::new(header.service.clone()),
            header,
            outputs: Vec::new(),
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Feeds one input: pushes the probes to start and stop and the ended episodes (to
    /// report), and returns the ended episodes.
    pub fn feed(&mut self, input: &Input, out: &mut Vec<Action>) -> Vec<Episode> {
        match input {
            Input::Event(event) => self.engine.event(event, &mut self.outputs),
            Input::Ready(mark) => self.engine.ready(mark, &mut self.outputs),
            Input::Inspected(i) => self.engine.inspected(i.episode, &i.orphans),
            Input::Unit(state) => self.engine.unit(state, &mut self.outputs),
            Input::Tick(tick) => self.engine.advance(tick.ts_ns, &mut self.outputs),
            Input::PowerCut(cut) => self.engine.power_cut(cut),
            _ => {}
        }
        self.drain(out)
    }

    fn drain(&mut self, out: &mut Vec<Action>) -> Vec<Episode> {
        let mut ended = Vec::new();
        for output in self.outputs.drain(..) {
            match output {
                Output::Episode(episode) => {
                    out.push(Action::EndProbe {
                        episode: episode.id,
                    });
                    out.push(Action::Export(Exported::Episode(episode.clone())));
                    ended.push(*episode);
                }
                Output::Probe { episode, new_pid } => out.push(Action::Probe {
                    episode,
                    new_pid: Some(new_pid),
                }),
                Output::Inspect { episode, pids } => out.push(Action::Inspect {
                    episode,
                    pids,
                    data_dir: self.header.service.data_dir.clone(),
                }),
            }
        }
        ended
    }

    /// Episodes begun and not yet ended.
    pub fn open_count(&self) -> usize {
        self.engine.open_count()
    }

    /// The instance `pid` is or descends from (`ppid`: its parent in /proc).
    pub fn instance_of(&self, pid: u32, ppid: u32) -> Option<u32> {
        self.engine.instance_of_pid(pid, ppid)
    }

    /// See [`Engine::role`].
    pub fn role(&self, pid: u32, ppid: u32) -> Option<crate::fault::Role> {
        self.engine.role(pid, ppid)
    }

    /// See [`Engine::oldest_open`].
    pub fn oldest_open(&self) -> Option<(u64, u32, u64)> {
        self.engine.oldest_open()
    }

    pub fn stats(&self) -> &stats::Stats {
        self.engine.stats()
    }

    /// Ends the measurement at `end`: open episodes end unfinished (returned, and pushed as
    /// reports); then the summary.
    pub fn finish(&mut self, end: &End, out: &mut Vec<Action>) -> (Vec<Episode>, MeasureSummary) {
        self.engine.finish(end.ts_ns, &mut self.outputs);
        let ended = self.drain(out);
        let summary = MeasureSummary {
            duration_ns: end.ts_ns.saturating_sub(self.header.start_ns),
            comm: self.header.service.comm.clone(),
            ready: self.header.service.ready.describe(),
            stats: self.engine.stats().summary(),
            lost: end.counters.lost,
            targets_full: end.counters.targets_full,
            read_errors: end.counters.read_errors,
            origin: crate::sys::host::Origin {
                host: self.header.host.clone(),
                start_unix_ns: Some(self.header.start_unix_ns),
                start_ns: Some(self.header.start_ns),
            },
            systemd: self
                .header
                .service
                .unit
                .clone()
                .map(|unit| sink::SystemdSummary {
                    unit,
                    n_restarts_end: self.engine.unit_state().map(|s| s.n_restarts),
                    offsets: self.engine.offsets(),
                }),
        };
        (ended, summary)
    }

    /// Writes the HdrHistogram interval log of every phase, in slices of `slice`.
    pub fn write_hdr_log(
        &self,
        path: &std::path::Path,
        duration_ns: u64,
        slice: std::time::Duration,
    ) -> std::io::Result<()> {
        let span = stats::LogSpan::new(
            self.header.start_unix_ns,
            self.header.start_ns,
            duration_ns,
            slice,
        );
        stats::write_log_file(path, self.engine.stats(), &span)
    }
}

/// `chaos measure`: a measurement whose episodes go to a sink, until `--episodes` have
/// ended, the reader of the sink goes away, or the driver stops it.
pub struct MeasureMachine {
    pub measurement: Measurement,
    sink: Box<dyn EpisodeSink>,
    /// Stop after this many ended episodes.
    limit: Option<u64>,
    /// Stop this long after the first tick (`--duration`).
    duration: Option<std::time::Duration>,
    end: Option<u64>,
    ended: u64,
    /// The reader of the sink went away (a closed pipe is a normal way to stop).
    closed: bool,
    stopped: bool,
    /// Error other than a closed pipe writing the sink, reported at the end.
    pub error: Option<std::io::Error>,
}

impl MeasureMachine {
    pub fn new(
        measurement: Measurement,
        sink: Box<dyn EpisodeSink>,
        limit: Option<u64>,
        duration: Option<std::time::Duration>,
    ) -> Self {
        Self {
            measurement,
            sink,
            limit,
            duration,
            end: None,
            ended: 0,
            closed: false,
            stopped: false,
            error: None,
        }
    }

    fn write(&mut self, write: impl FnOnce(&mut dyn EpisodeSink) -> std::io::Result<()>) {
        if self.closed {
            return;
        }
        match write(self.sink.as_mut()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.closed = true,
            Err(e) => {
                self.closed = true;
                self.error.get_or_insert(e);
            }
        }
    }

    /// Ends the measurement and writes the summary; returns it, and the episodes the end
    /// left unfinished.
    pub fn finish(&mut self, end: &End) -> (MeasureSummary, Vec<Episode>) {
        let mut actions = Vec::new();
        let (ended, summary) = self.measurement.finish(end, &mut actions);
        for episode in &ended {
            self.write(|s| s.episode(episode));
        }
        self.write(|s| s.summary(&summary));
        (summary, ended)
    }
}

impl Machine for MeasureMachine {
    fn feed(&mut self, input: &Input, out: &mut Vec<Action>) {
        if self.stopped {
            return;
        }
        if let Input::Stop(_) = input {
            self.stopped = true;
            out.push(Action::Stop);
            return;
        }
        for episode in self.measurement.feed(input, out) {
            self.ended += 1;
            self.write(|s| s.episode(&episode));
        }
        let past_end = match input {
            Input::Tick(t) => {
                let end = *self.end.get_or_insert_with(|| {
                    self.duration
                        .map_or(u64::MAX, |d| t.ts_ns.saturating_add(d.as_nanos() as u64))
                });
                t.ts_ns >= end
            }
            _ => false,
        };
        if past_end || self.closed || self.limit.is_some_and(|limit| self.ended >= limit) {
            self.stopped = true;
            out.push(Action::Stop);
        }
    }

    fn quiet_ticks_matter(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::{record::tests::header as base_header, *};
    use crate::{
        event::{Event, Exec, Exit, Fork, KernelCounters, Reap, Signal},
        machine::{
            ReadyMark, Tick,
            record::{Recorder, Recording},
        },
        measure::sink::JsonEpisodes,
        output::SharedBuf,
    };

    fn header() -> Header {
        let mut header = base_header();
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
                stale: Vec::new(),
            }));
            pid = new;
        }
        inputs
    }

    /// Feeds `inputs` as the driver would (recording what it keeps); returns the output.
    fn run(inputs: Vec<Input>, record: Option<&mut Vec<u8>>, limit: Option<u64>) -> String {
        let out = SharedBuf::default();
        let mut m = MeasureMachine::new(
            Measurement::new(header()),
            Box::new(JsonEpisodes(out.clone())),
            limit,
            None,
        );
        let mut recorder = record.map(|buf| Recorder::new(buf, &header()).unwrap());
        let mut actions = Vec::new();
        for input in inputs {
            m.feed(&input, &mut actions);
            let quiet = matches!(input, Input::Tick(_)) && actions.is_empty();
            if let (Some(r), false) = (recorder.as_mut(), quiet && !m.quiet_ticks_matter()) {
                r.input(&input).unwrap();
            }
            if actions.drain(..).any(|a| a == Action::Stop) {
                break;
            }
        }
        let end = End {
            ts_ns: 6_000_000_000,
            counters: KernelCounters::default(),
        };
        if let Some(r) = recorder {
            r.end(&end).unwrap();
        }
        m.finish(&end);
        out.text()
    }

    #[test]
    fn a_replay_prints_exactly_what_the_run_printed() {
        let mut record = Vec::new();
        let live = run(inputs(), Some(&mut record), None);
        let recording =
            Recording::<Header>::from_reader(std::path::Path::new("r"), record.as_slice()).unwrap();
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
        let mut record = Vec::new();
        let live = run(inputs(), Some(&mut record), Some(1));
        assert_eq!(live.lines().count(), 2, "one episode and the summary");
        let recording =
            Recording::<Header>::from_reader(std::path::Path::new("r"), record.as_slice()).unwrap();
        assert!(recording.inputs.len() < inputs().len());
        assert_eq!(run(recording.inputs, None, None), live);
    }

    #[test]
    fn a_quiet_tick_is_not_worth_a_line_but_one_that_fails_an_episode_is() {
        let m = MeasureMachine::new(
            Measurement::new(header()),
            Box::new(JsonEpisodes(SharedBuf::default())),
            None,
            None,
        );
        assert!(!m.quiet_ticks_matter());
        let mut record = Vec::new();
        run(inputs(), Some(&mut record), None);
        let text = String::from_utf8(record).unwrap();
        assert_eq!(text.matches("\"type\":\"tick\"").count(), 1, "{text}");
    }
}
