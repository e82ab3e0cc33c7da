//! `--record FILE` and `--replay FILE`: every input an engine was fed, in order, so that a
//! replay feeds the same engine the same inputs and gets the same result, without root.
//!
//! # Wire format
//!
//! JSON Lines. The first line is the header, `{"type":"measure","data":{...}}` for `chaos
//! measure` or `{"type":"run","data":{...}}` for `chaos run`, with the format version, the
//! start (CLOCK_MONOTONIC and wall clock) and what the engine needs beyond its inputs. Then,
//! in the order they were fed, the kernel events (the `chaos observe --json` format) and:
//!
//! | type | data | |
//! |---|---|---|
//! | `ready` | `episode`, `ts_ns`, `stale` (who answered, when not the new instance) | a readiness probe succeeded (userspace CLOCK_MONOTONIC) |
//! | `tick` | `ts_ns` | time passed with no event |
//! | `candidates` | `fault`, `ts_ns`, `procs` (`pid`, `ppid`, `comm`, `exe`, `start_ticks`) | what a signal fault could hit |
//! | `sent` | `id`, `ts_ns`, `outcome` (`sent`, `gone`, `failed` with `detail`) | a signal went out (or not) |
//! | `notification` | `id`, `ts_ns`, `tid`, `tgid`, `nth`, `comm`, `exe`, `path` | a call the watchdog decided to hit |
//! | `passed` | `ts_ns`, `calls` ([tgid, calls] pairs) | the calls the watchdog let pass since its last batch |
//! | `kernel_fault` | `event` (an `inject` event's data), `comm`, `exe` | a fault the kernel fired |
//! | `verified` | `when`, `episode`, `passed`, `detail` | a verify run ended |
//! | `readiness` | `fault`, `ts_ns`, `ok` | what a readiness watch after a fault saw (the first result, then each change) |
//! | `inspected` | `episode`, `orphans` (`pid`, `comm`, `ports`, `files`) | what a dead instance's orphans held |
//! | `stop` | `why` (`interrupted`, `tree_gone`, `output_closed`, `failure` with `detail`) | the driver stopped the engine |
//! | `end` | `ts_ns`, `lost`, `targets_full`, `read_errors` | last line: the end and the kernel's counters |
//!
//! `chaos measure` records only events, `ready` and `tick` (and only the ticks that ended an
//! episode): recordings of version 1 from before `chaos run` recorded read the same.

use std::{
    io::{BufRead, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    Candidates, Input, Inspected, KernelFault, Notification, Passed, PowerCut, Readiness,
    ReadyMark, Sent, StopCause, Tick, Verified,
};
use crate::event::{Event, KernelCounters};

/// The end of a recorded run: when, and the kernel's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub ts_ns: u64,
    #[serde(flatten)]
    pub counters: KernelCounters,
}

/// A recording's first line.
pub trait Header: Serialize + DeserializeOwned {
    /// The header line's `type`.
    const TYPE: &'static str;
    /// The format version this chaos writes and reads.
    const VERSION: u32;
    fn version(&self) -> u32;
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum Mark {
    Ready(ReadyMark),
    Tick(Tick),
    Candidates(Candidates),
    Sent(Sent),
    Notification(Notification),
    Passed(Passed),
    KernelFault(KernelFault),
    Verified(Verified),
    PowerCut(PowerCut),
    Inspected(Inspected),
    Readiness(Readiness),
    Unit(crate::systemd::UnitState),
    Stop(StopCause),
    End(End),
}

const MARKS: [&str; 14] = [
    "ready",
    "tick",
    "candidates",
    "sent",
    "notification",
    "passed",
    "kernel_fault",
    "verified",
    "power_cut",
    "inspected",
    "readiness",
    "unit",
    "stop",
    "end",
];

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

/// Writes a recording as it happens; the driver flushes each batch, so a crash loses little.
pub struct Recorder<W: Write> {
    out: W,
}

#[derive(Serialize)]
struct HeaderLine<'a, H> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a H,
}

impl<W: Write> Recorder<W> {
    pub fn new<H: Header>(mut out: W, header: &H) -> std::io::Result<Self> {
        write_line(
            &mut out,
            &HeaderLine {
                kind: H::TYPE,
                data: header,
            },
        )?;
        Ok(Self { out })
    }

    pub fn input(&mut self, input: &Input) -> std::io::Result<()> {
        let out = &mut self.out;
        match input {
            Input::Event(event) => write_line(out, event),
            Input::Ready(m) => write_line(out, &Mark::Ready(m.clone())),
            Input::Tick(t) => write_line(out, &Mark::Tick(*t)),
            Input::Candidates(c) => write_line(out, &Mark::Candidates(c.clone())),
            Input::Sent(s) => write_line(out, &Mark::Sent(s.clone())),
            Input::Notification(n) => write_line(out, &Mark::Notification(n.clone())),
            Input::Passed(p) => write_line(out, &Mark::Passed(p.clone())),
            Input::KernelFault(k) => write_line(out, &Mark::KernelFault(k.clone())),
            Input::Verified(v) => write_line(out, &Mark::Verified(v.clone())),
            Input::PowerCut(p) => write_line(out, &Mark::PowerCut(p.clone())),
            Input::Inspected(i) => write_line(out, &Mark::Inspected(i.clone())),
            Input::Readiness(r) => write_line(out, &Mark::Readiness(*r)),
            Input::Unit(u) => write_line(out, &Mark::Unit(u.clone())),
            Input::Stop(s) => write_line(out, &Mark::Stop(s.clone())),
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
pub struct Recording<H> {
    pub header: H,
    pub inputs: Vec<Input>,
    /// None when the recording was cut short (the recorder died): replay then ends at the
    /// last input.
    pub end: Option<End>,
}

impl<H: Header> Recording<H> {
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
            let mut value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| error(e.to_string()))?;
            let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
            if kind == H::TYPE {
                if header.is_some() {
                    return Err(error(format!("a second {} header", H::TYPE)));
                }
                let h: H = serde_json::from_value(value["data"].take())
                    .map_err(|e| error(e.to_string()))?;
                if h.version() != H::VERSION {
                    return Err(error(format!(
                        "recording format version {} (this chaos reads {})",
                        h.version(),
                        H::VERSION
                    )));
                }
                header = Some(h);
                continue;
            }
            if header.is_none() {
                return Err(error(format!(
                    "not a chaos {} recording (the first line must be the {} header)",
                    H::TYPE,
                    H::TYPE
                )));
            }
            if !MARKS.contains(&kind) {
                let event: Event = serde_json::from_value(value)
                    .map_err(|e| error(format!("not a chaos event: {e}")))?;
                inputs.push(Input::Event(event));
                continue;
            }
            let input = match serde_json::from_value(value).map_err(|e| error(e.to_string()))? {
                Mark::Ready(m) => Input::Ready(m),
                Mark::Tick(t) => Input::Tick(t),
                Mark::Candidates(c) => Input::Candidates(c),
                Mark::Sent(s) => Input::Sent(s),
                Mark::Notification(n) => Input::Notification(n),
                Mark::Passed(p) => Input::Passed(p),
                Mark::KernelFault(k) => Input::KernelFault(k),
                Mark::Verified(v) => Input::Verified(v),
                Mark::PowerCut(p) => Input::PowerCut(p),
                Mark::Inspected(i) => Input::Inspected(i),
                Mark::Readiness(r) => Input::Readiness(r),
                Mark::Unit(u) => Input::Unit(u),
                Mark::Stop(s) => Input::Stop(s),
                Mark::End(e) => {
                    end = Some(e);
                    continue;
                }
            };
            inputs.push(input);
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
mod tests {
    use super::*;
    use crate::{
        audit::entry::VerifyWhen,
        event::Fork,
        machine::{Candidate, SendOutcome},
    };

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Test {
        version: u32,
        name: String,
    }

    impl Header for Test {
        const TYPE: &'static str = "test";
        const VERSION: u32 = 3;
        fn version(&self) -> u32 {
            self.version
        }
    }

    fn header() -> Test {
        Test {
            version: 3,
            name: "t".into(),
        }
    }

    #[test]
    fn every_input_reads_back_as_written() {
        let inputs = vec![
            Input::Event(Event::Fork(Fork {
                ts_ns: 200,
                parent_pid: 10,
                child_pid: 12,
            })),
            Input::Ready(ReadyMark {
                episode: 1,
                ts_ns: 300,
                stale: Vec::new(),
            }),
            Input::Tick(Tick { ts_ns: 400 }),
            Input::Candidates(Candidates {
                fault: 0,
                ts_ns: 410,
                procs: vec![Candidate {
                    pid: 12,
                    ppid: 10,
                    comm: "svc".into(),
                    exe: None,
                    title: None,
                    start_ticks: 77,
                }],
            }),
            Input::Sent(Sent {
                id: 1,
                ts_ns: 420,
                outcome: SendOutcome::Failed("ESRCH".into()),
            }),
            Input::Verified(Verified {
                when: VerifyWhen::After,
                episode: Some(1),
                passed: false,
                detail: Some("lost 3".into()),
            }),
            Input::Stop(StopCause::Interrupted),
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
        assert!(text.starts_with("{\"type\":\"test\",\"data\":{\"version\":3,"));
        assert!(text.contains("{\"type\":\"sent\",\"data\":{\"id\":1,\"ts_ns\":420,\"outcome\":\"failed\",\"detail\":\"ESRCH\"}}"), "{text}");
        let back = Recording::<Test>::from_reader(Path::new("r"), text.as_bytes()).unwrap();
        assert_eq!(back.header, header());
        assert_eq!(back.inputs, inputs);
        assert_eq!(back.end, Some(end));
    }

    #[test]
    fn bad_recordings_name_the_line() {
        let header = serde_json::to_string(&HeaderLine {
            kind: "test",
            data: &header(),
        })
        .unwrap();
        let cases = [
            (
                "{\"type\":\"fork\",\"data\":{\"ts_ns\":1,\"parent_pid\":2,\"child_pid\":3}}\n"
                    .to_string(),
                "r:1: not a chaos test recording",
            ),
            (
                format!("{header}\n{{\"type\":\"bogus\"}}\n"),
                "r:2: not a chaos event",
            ),
            (format!("{header}\nnot json\n"), "r:2: expected"),
            (format!("{header}\n{header}\n"), "r:2: a second test header"),
            (String::new(), "r:1: empty recording"),
            (
                header.replace("\"version\":3", "\"version\":99") + "\n",
                "r:1: recording format version 99",
            ),
            (
                format!(
                    "{header}\n{{\"type\":\"end\",\"data\":{{\"ts_ns\":1,\"lost\":0,\"targets_full\":0,\"read_errors\":0}}}}\n{{\"type\":\"tick\",\"data\":{{\"ts_ns\":2}}}}\n"
                ),
                "r:3: a line after the end mark",
            ),
        ];
        for (text, expected) in cases {
            let err = Recording::<Test>::from_reader(Path::new("r"), text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err} (wanted {expected})");
        }
    }
}
