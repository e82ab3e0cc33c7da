//! The header of a `chaos measure` recording (the format is `machine::record`'s): the
//! format version, the start (CLOCK_MONOTONIC and wall clock) and the [`Service`], so that
//! a replay needs no flags.

use serde::{Deserialize, Serialize};

use super::service::Service;
use crate::sys::{
    clock::{Clock, monotonic_ns},
    host::Host,
};

/// Bumped when a recording can no longer be replayed the same way.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    /// CLOCK_MONOTONIC when measurement began.
    pub start_ns: u64,
    /// The wall clock at the same moment (ns since the Unix epoch), for the HdrHistogram log
    /// and the exports.
    pub start_unix_ns: u64,
    pub service: Service,
    /// The machine measured (absent in recordings made before chaos kept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
}

impl Header {
    /// The header of a measurement of `service` that begins now.
    pub fn starting_now(service: Service) -> Self {
        let clock = Clock::now();
        let start_ns = monotonic_ns();
        Self {
            version: VERSION,
            start_ns,
            start_unix_ns: clock.unix_ns(start_ns),
            service,
            host: Some(Host::current()),
        }
    }

    /// Kernel time to wall time, as this measurement converts it.
    pub fn clock(&self) -> Clock {
        Clock::new(self.start_ns, self.start_unix_ns)
    }
}

impl crate::machine::record::Header for Header {
    const TYPE: &'static str = "measure";
    const VERSION: u32 = VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        event::{Event, Fork, KernelCounters},
        machine::{
            Input, ReadyMark, Tick,
            record::{End, Recorder, Recording},
        },
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
                workers: Vec::new(),
                ports: Vec::new(),
                data_dir: None,
                unit: None,
            },
            host: None,
        }
    }

    #[test]
    fn a_measure_recording_keeps_its_version_1_format() {
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
        assert!(text.contains("\n{\"type\":\"ready\",\"data\":{\"episode\":1,\"ts_ns\":300}}\n"));
        assert!(text.ends_with(
            "{\"type\":\"end\",\"data\":{\"ts_ns\":500,\"lost\":1,\"targets_full\":0,\"read_errors\":0}}\n"
        ));
        let back =
            Recording::<Header>::from_reader(std::path::Path::new("r"), text.as_bytes()).unwrap();
        assert_eq!(back.header, header());
        assert_eq!(back.inputs, inputs);
    }
}
