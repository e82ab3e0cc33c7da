//! The result of `chaos run` as written by `--json` (or `outputs.json`) and read by `chaos
//! report`: the verdict and its clauses, every fault and episode, the phase summary.

use serde::{Deserialize, Serialize};

use super::accounting::{FaultOutcome, InPlaceRecovery};
use super::verdict::{Clause, Verdict};
use crate::{episode::Episode, fault::FaultRecord, measure::sink::MeasureSummary};

/// A fault of a run and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFault {
    #[serde(flatten)]
    pub record: FaultRecord,
    pub outcome: FaultOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub experiment: String,
    pub file: String,
    pub description: Option<String>,
    pub hypothesis: String,
    pub blast_radius: String,
    pub verdict: Verdict,
    pub exit_code: u8,
    /// Why a guard (or a signal) aborted the run.
    pub abort: Option<String>,
    /// Wall-clock start (ns since the epoch) and the same instant in kernel time
    /// (CLOCK_MONOTONIC), which every `ts_ns` and `at_ns` below uses.
    pub start_unix_ns: u64,
    pub start_ns: u64,
    /// The machine it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<crate::sys::host::Host>,
    pub duration_ns: u64,
    pub baseline: Baseline,
    pub clauses: Vec<Clause>,
    /// Every fault, with its outcome (an episode's id, an in-place recovery's id, ...).
    pub faults: Vec<RunFault>,
    /// Recoveries without the main process dying, each with the fault it followed.
    #[serde(default)]
    pub in_place: Vec<InPlaceRecovery>,
    pub injected: u64,
    pub confirmed: u64,
    pub unconfirmed: Vec<u64>,
    pub episodes: Vec<Episode>,
    pub summary: MeasureSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub duration_ns: u64,
    pub crashes: u64,
}
