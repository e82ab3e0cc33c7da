//! `--record FILE` and `--replay FILE`: everything the episode logic was fed, in order.
//!
//! # Wire format
//!
//! JSON Lines. The first line is `{"type":"measure","data":{...}}`: the format version, the
//! start (CLOCK_MONOTONIC and wall clock) and the [`Service`]. Then, in the order they were
//! processed, the events (the `chaos observe --json` format), plus:
//!
//! | type | data | |
//! |---|---|---|
//! | `ready` | `episode`, `ts_ns` | a readiness probe succeeded (userspace CLOCK_MONOTONIC) |
//! | `tick` | `ts_ns` | time passed with no event, and an episode's deadline with it |
//! | `end` | `ts_ns`, `lost`, `targets_full`, `read_errors` | last line: the end and the kernel's counters |

use std::{
    io::{BufRead, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::service::Service;
use crate::event::{Event, KernelCounters};

/// Bumped when a recording can no longer be replayed the same way.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    /// CLOCK_MONOTONIC when measurement began.
    pub start_ns: u64,
    /// The wall clock at the same moment (ns since the Unix epoch), for the HdrHistogram log.
    pub start_unix_ns: u64,
    pub service: Service,
}

impl Header {
    /// The header of a measurement of `service` that begins now.
    pub fn starting_now(service: Service) -> Self {
        let clock = crate::export::Clock::now();
        let start_ns = crate::commands::common::monotonic_ns();
        Self {
            version: VERSION,
            start_ns,
            start_unix_ns: clock.unix_ns(start_ns),
            service,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyMark {
    pub episode: u64,
    pub ts_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub ts_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub ts_ns: u64,
    #[serde(flatten)]
    pub counters: KernelCounters,
}

/// One input of the episode logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Event(Event),
    Ready(ReadyMark),
    Tick(Tick),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum Mark {
    Measure(Header),
    Ready(ReadyMark),
    Tick(Tick),
    End(End),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Writes a recording as it happens; each batch is flushed, so a crash loses little.
pub struct Recorder<W: Write> {
    out: W,
}

impl<W: Write> Recorder<W> {
    pub fn new(mut out: W, header: &Header) -> std::io::Result<Self> {
        write_line(&mut out, &Mark::Measure(header.clone()))?;
        Ok(Self { out })
    }

    pub fn input(&mut self, input: &Input) -> std::io::Result<()> {
        match input {
            Input::Event(event) => write_line(&mut self.out, event),
            Input::Ready(mark) => write_line(&mut self.out, &Mark::Ready(*mark)),
            Input::Tick(tick) => write_line(&mut self.out, &Mark::Tick(*tick)),
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    pub fn end(mut self, end: &End) -> std::io::Result<()> {
        write_line(&mut self.out, &Mark::End(*end))?;
        self.out.flush()
    }
}

fn write_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// A recording read back whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub header: Header,
    pub inputs: Vec<Input>,
    /// None when the recording was cut short (the recorder died): replay then ends at the
    /// last input.
    pub end: Option<End>,
}

impl Recording {
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let file = std::fs::File::open(path).map_err(|source| RecordError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_reader(path, std::io::BufReader::new(file))
    }

    pub fn from_reader(path: &Path, reader: impl BufRead) -> Result<Self, RecordError> {
        let mut header = None;
        let mut inputs = Vec::new();
        let mut end = None;
        for (index, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| RecordError::Read {
                path: path.into(),
                source,
            })?;
            let error = |message: String| RecordError::Parse {
                path: path.into(),
                line: index + 1,
                message,
            };
            if line.trim().is_empty() {
                continue;
            }
            if end.is_some() {
                return Err(error("a line after the end mark".into()));
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| error(e.to_string()))?;
            let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let is_mark = matches!(kind, "measure" | "ready" | "tick" | "end");
            if header.is_none() && kind != "measure" {
                return Err(error(
                    "not a chaos measure recording (the first line must be the measure header)"
                        .into(),
                ));
            }
            if !is_mark {
                let event: Event = serde_json::from_value(value)
                    .map_err(|e| error(format!("not a chaos event: {e}")))?;
                inputs.push(Input::Event(event));
                continue;
            }
            match serde_json::from_value(value).map_err(|e| error(e.to_string()))? {
                Mark::Measure(h) if header.is_none() => {
                    if h.version != VERSION {
                        return Err(error(format!(
                            "recording format version {} (this chaos reads {VERSION})",
                            h.version
                        )));
                    }
                    header = Some(h);
                }
                Mark::Measure(_) => return Err(error("a second measure header".into())),
                Mark::Ready(mark) => inputs.push(Input::Ready(mark)),
                Mark::Tick(tick) => inputs.push(Input::Tick(tick)),
                Mark::End(e) => end = Some(e),
            }
        }
        let header = header.ok_or_else(|| RecordError::Parse {
            path: path.into(),
            line: 1,
            message: "empty recording".into(),
        })?;
        Ok(Self {
            header,
            inputs,
            end,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        event::Fork,
        measure::service::{InitialInstance, Ready},
    };

    pub fn header() -> Header {
        Header {
            version: VERSION,
            start_ns: 100,
            start_unix_ns: 1_700_000_000_000_000_000,
            service: Service {
                comm: "svc".into(),
                supervisors: vec![10],
                explicit_supervisors: true,
                instances: vec![InitialInstance {
                    pid: 11,
                    supervisor: 10,
                    child: 11,
                }],
                ready: Ready::Tcp {
                    addr: "127.0.0.1:9".into(),
                },
                recovery_timeout_ns: 30_000_000_000,
            },
        }
    }

    #[test]
    fn a_recording_reads_back_as_written() {
        let inputs = vec![
            Input::Event(Event::Fork(Fork {
                ts_ns: 200,
                parent_pid: 10,
                child_pid: 12,
            })),
            Input::Ready(ReadyMark {
                episode: 1,
                ts_ns: 300,
            }),
            Input::Tick(Tick { ts_ns: 400 }),
        ];
        let end = End {
            ts_ns: 500,
            counters: KernelCounters {
                lost: 1,
                targets_full: 0,
                read_errors: 0,
            },
        };
        let mut out = Vec::new();
        let mut recorder = Recorder::new(&mut out, &header()).unwrap();
        for input in &inputs {
            recorder.input(input).unwrap();
        }
        recorder.end(&end).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("{\"type\":\"measure\",\"data\":{\"version\":1,"));
        assert!(text.ends_with(
            "{\"type\":\"end\",\"data\":{\"ts_ns\":500,\"lost\":1,\"targets_full\":0,\"read_errors\":0}}\n"
        ));
        let back = Recording::from_reader(Path::new("r"), text.as_bytes()).unwrap();
        assert_eq!(back.header, header());
        assert_eq!(back.inputs, inputs);
        assert_eq!(back.end, Some(end));
    }

    #[test]
    fn bad_recordings_name_the_line() {
        let header = serde_json::to_string(&Mark::Measure(header())).unwrap();
        let cases = [
            (
                "{\"type\":\"fork\",\"data\":{\"ts_ns\":1,\"parent_pid\":2,\"child_pid\":3}}\n"
                    .to_string(),
                "r:1: not a chaos measure recording",
            ),
            (
                format!("{header}\n{{\"type\":\"bogus\"}}\n"),
                "r:2: not a chaos event",
            ),
            (format!("{header}\nnot json\n"), "r:2: expected"),
            (
                format!("{header}\n{header}\n"),
                "r:2: a second measure header",
            ),
            (String::new(), "r:1: empty recording"),
            (
                header.replace("\"version\":1", "\"version\":99") + "\n",
                "r:1: recording format version 99",
            ),
        ];
        for (text, expected) in cases {
            let err = Recording::from_reader(Path::new("r"), text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err} (wanted {expected})");
        }
    }
}
