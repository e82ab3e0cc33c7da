//! The header of a `chaos run` recording (the format is `machine::record`'s): everything the
//! runner needs beyond its inputs, so that `chaos run --replay FILE` rebuilds the same runner
//! and, fed the same inputs, writes the same verdict and result, byte for byte.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    measure::service::Service,
    sys::{clock::Clock, host::Host},
};

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHeader {
    pub version: u32,
    /// CLOCK_MONOTONIC and the wall clock when the run began.
    pub start_ns: u64,
    pub start_unix_ns: u64,
    /// The time zone windows without one are read in (IANA name; UTC when unknown).
    pub tz: Option<String>,
    /// chaos's own pid: a death it signalled is not a crash.
    pub chaos_pid: u32,
    /// The experiment file, and its text as it was checked.
    pub file: PathBuf,
    pub source: String,
    /// The service as found when the run began.
    pub service: Service,
    /// The machine the run was on (absent in recordings made before chaos kept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
}

impl RunHeader {
    pub fn clock(&self) -> Clock {
        Clock::new(self.start_ns, self.start_unix_ns)
    }

    /// The time zone of the run.
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        self.tz
            .as_deref()
            .and_then(|name| jiff::tz::TimeZone::get(name).ok())
            .unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

impl crate::machine::record::Header for RunHeader {
    const TYPE: &'static str = "run";
    const VERSION: u32 = VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}
