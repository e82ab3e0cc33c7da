//! `chaos observe`'s engine: every event to the sink, counted, until `--duration`, the
//! launched command's tree is gone, the reader goes away, or a signal.

use std::time::Duration;

use super::Sink;
use crate::{
    event::{EventCounts, Summary},
    machine::{Action, Input, Machine, StopCause},
};

/// Why observation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal,
    Deadline,
    TreeGone,
    OutputClosed,
    /// The driver could not go on (see its failure).
    Failure,
}

pub struct Stream {
    sink: Box<dyn Sink>,
    pub counts: EventCounts,
    duration: Option<Duration>,
    end: Option<u64>,
    pub stop: Option<StopReason>,
    /// The first error writing the sink, other than a closed pipe.
    pub error: Option<std::io::Error>,
}

impl Stream {
    pub fn new(sink: Box<dyn Sink>, duration: Option<Duration>) -> Self {
        Self {
            sink,
            counts: EventCounts::default(),
            duration,
            end: None,
            stop: None,
            error: None,
        }
    }

    fn stop(&mut self, reason: StopReason, out: &mut Vec<Action>) {
        if self.stop.is_none() {
            self.stop = Some(reason);
            out.push(Action::Stop);
        }
    }

    /// Writes the summary (unless the reader is gone).
    pub fn finish(&mut self, summary: &Summary) {
        if self.stop == Some(StopReason::OutputClosed) {
            return;
        }
        if let Err(e) = self.sink.summary(summary) {
            self.error.get_or_insert(e);
        }
    }
}

impl Machine for Stream {
    fn feed(&mut self, input: &Input, out: &mut Vec<Action>) {
        match input {
            Input::Tick(t) => {
                let end = *self.end.get_or_insert_with(|| {
                    self.duration
                        .map_or(u64::MAX, |d| t.ts_ns + d.as_nanos() as u64)
                });
                if t.ts_ns >= end {
                    self.stop(StopReason::Deadline, out);
                }
            }
            Input::Event(event) => {
                if self.stop == Some(StopReason::OutputClosed) {
                    return;
                }
                self.counts.add(event);
                match self.sink.event(event) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        self.stop = None;
                        self.stop(StopReason::OutputClosed, out);
                    }
                    Err(e) => {
                        self.error.get_or_insert(e);
                        self.stop(StopReason::Failure, out);
                    }
                }
            }
            Input::Stop(cause) => self.stop(
                match cause {
                    StopCause::Interrupted => StopReason::Signal,
                    StopCause::TreeGone => StopReason::TreeGone,
                    StopCause::OutputClosed => StopReason::OutputClosed,
                    StopCause::Failure(_) => StopReason::Failure,
                },
                out,
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Event, Fork},
        machine::Tick,
        output::{SharedBuf, jsonl::JsonLines},
    };

    #[test]
    fn events_reach_the_sink_until_the_duration_with_a_summary() {
        let out = SharedBuf::default();
        let mut stream = Stream::new(
            Box::new(JsonLines::new(out.clone())),
            Some(Duration::from_millis(5)),
        );
        let mut actions = Vec::new();
        stream.feed(&Input::Tick(Tick { ts_ns: 1_000 }), &mut actions);
        stream.feed(
            &Input::Event(Event::Fork(Fork {
                ts_ns: 2_000,
                parent_pid: 2,
                child_pid: 3,
            })),
            &mut actions,
        );
        assert!(actions.is_empty());
        stream.feed(&Input::Tick(Tick { ts_ns: 6_000_000 }), &mut actions);
        assert_eq!(actions, [Action::Stop]);
        assert_eq!(stream.stop, Some(StopReason::Deadline));
        stream.finish(&Summary {
            duration_ns: 6_000_000,
            events: stream.counts.clone(),
            lost: 0,
            targets_full: 0,
            read_errors: 0,
        });
        let text = out.text();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines[0],
            "{\"type\":\"fork\",\"data\":{\"ts_ns\":2000,\"parent_pid\":2,\"child_pid\":3}}"
        );
        assert!(lines[1].starts_with("{\"type\":\"summary\"") && lines[1].contains("\"fork\":1"));
    }
}
