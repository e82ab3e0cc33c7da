//! Where events come from: the kernel (`bpf::ring::RingSource`) or a recorded stream
//! ([`ReplaySource`]). Everything downstream (output today; recovery episodes and metrics
//! later) is written against [`EventSource`] so that it runs, and is tested, without root.

use std::{
    future::Future,
    io::BufRead,
    path::{Path, PathBuf},
};

use crate::event::{Event, KernelCounters, Summary};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read events")]
    Io(#[from] std::io::Error),
    #[error("{path}:{line}: not a chaos event: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

pub trait EventSource {
    /// Waits until events are ready and appends them to `out`, in kernel order. `Ok(false)`
    /// means the source has ended and nothing more will come.
    fn next_batch(
        &mut self,
        out: &mut Vec<Event>,
    ) -> impl Future<Output = Result<bool, SourceError>>;

    /// Appends what is ready now, without waiting (used once more before stopping).
    fn drain(&mut self, out: &mut Vec<Event>) -> Result<(), SourceError>;

    /// What the kernel counted instead of reporting.
    fn counters(&self) -> KernelCounters;
}

/// Replays a JSON Lines stream written by `chaos observe --json`. The trailing summary line,
/// if any, gives the counters.
pub struct ReplaySource {
    events: std::vec::IntoIter<Event>,
    counters: KernelCounters,
}

impl ReplaySource {
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let file = std::io::BufReader::new(std::fs::File::open(path)?);
        Self::from_reader(path, file)
    }

    pub fn from_reader(path: &Path, reader: impl BufRead) -> Result<Self, SourceError> {
        let mut events = Vec::new();
        let mut counters = KernelCounters::default();
        for (index, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let parse_error = |message: String| SourceError::Parse {
                path: path.into(),
                line: index + 1,
                message,
            };
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| parse_error(e.to_string()))?;
            if value.get("type").and_then(|t| t.as_str()) == Some("summary") {
                let summary: Summary = serde_json::from_value(value["data"].clone())
                    .map_err(|e| parse_error(e.to_string()))?;
                counters = KernelCounters {
                    lost: summary.lost,
                    targets_full: summary.targets_full,
                    read_errors: summary.read_errors,
                };
                continue;
            }
            events.push(serde_json::from_value(value).map_err(|e| parse_error(e.to_string()))?);
        }
        Ok(Self {
            events: events.into_iter(),
            counters,
        })
    }
}

impl EventSource for ReplaySource {
    async fn next_batch(&mut self, out: &mut Vec<Event>) -> Result<bool, SourceError> {
        self.drain(out)?;
        Ok(false)
    }

    fn drain(&mut self, out: &mut Vec<Event>) -> Result<(), SourceError> {
        out.extend(self.events.by_ref());
        Ok(())
    }

    fn counters(&self) -> KernelCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_events_and_the_summary_counters() {
        let text = r#"{"type":"fork","data":{"ts_ns":1,"parent_pid":2,"child_pid":3}}

{"type":"summary","data":{"duration_ns":5,"events":{"fork":1,"exec":0,"exit":0,"signal":0,"fsync":0},"lost":4,"targets_full":0,"read_errors":1}}
"#;
        let mut source =
            ReplaySource::from_reader(Path::new("rec.jsonl"), text.as_bytes()).unwrap();
        let mut out = Vec::new();
        source.drain(&mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind(), "fork");
        assert_eq!(
            source.counters(),
            KernelCounters {
                lost: 4,
                targets_full: 0,
                read_errors: 1
            }
        );
    }

    #[test]
    fn names_the_line_that_is_not_an_event() {
        let text = "{\"type\":\"fork\",\"data\":{\"ts_ns\":1,\"parent_pid\":2,\"child_pid\":3}}\n{\"type\":\"bogus\"}\n";
        let err = ReplaySource::from_reader(Path::new("rec.jsonl"), text.as_bytes())
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("rec.jsonl:2: not a chaos event"), "{err}");
    }
}
