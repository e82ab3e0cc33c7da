//! The result of `chaos run` as written by `--json` (or `outputs.json`) and read by `chaos
//! report`: the verdict and its clauses, every fault and episode, the phase summary.

use serde::{Deserialize, Serialize};

use super::verdict::{Clause, Verdict};
use crate::{
    inject::report::Fault,
    measure::{episode::Episode, report::MeasureSummary},
};

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
    pub duration_ns: u64,
    pub baseline: Baseline,
    pub clauses: Vec<Clause>,
    pub faults: Vec<FaultEntry>,
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

/// One fault as injected (see `chaos inject`'s wire format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEntry {
    pub id: u64,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: Option<u32>,
    pub comm: String,
    pub fault: String,
    pub value: String,
    pub syscall: Option<String>,
    pub nth: Option<u32>,
    pub backend: String,
    pub dry_run: bool,
}

impl From<&Fault> for FaultEntry {
    fn from(f: &Fault) -> Self {
        Self {
            id: f.id,
            ts_ns: f.ts_ns,
            pid: f.pid,
            tid: f.tid,
            comm: f.comm.clone(),
            fault: f.fault.into(),
            value: f.value.clone(),
            syscall: f.syscall.clone(),
            nth: f.nth,
            backend: f.backend.into(),
            dry_run: f.dry_run,
        }
    }
}
