//! Experiments: a file with a hypothesis, a blast radius, a target, faults, guards and
//! outputs, checked ([`check`]) into an [`Experiment`] before anything touches the machine,
//! then run by the [`runner`], a pure engine on top of the injector and the measurement.
//!
//! Every error names the file, the line and column, and the key (`faults[1].interval`), and
//! `chaos run` exits 2 with nothing injected.

pub mod accounting;
pub mod check;
pub mod file;
pub mod guards;
pub mod plan;
pub mod record;
pub mod result;
pub mod rules;
pub mod runner;
pub mod verdict;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub use check::{check, load};
pub use file::BlastRadius;
use file::MatchFile;

use crate::{
    inject::spec::FaultSpec,
    measure::{discover::Selector, service::Ready},
    target::{cgroup_rule, cgroup2_mount},
};

/// What each blast radius allows at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Faults in the whole experiment (the sum of the faults' counts).
    pub max_faults: u32,
    /// Faults per minute, for each fault of the file.
    pub max_per_minute: u32,
}

impl BlastRadius {
    pub fn name(self) -> &'static str {
        match self {
            BlastRadius::Local => "local",
            BlastRadius::Ci => "ci",
            BlastRadius::Lab => "lab",
            BlastRadius::Canary => "canary",
        }
    }

    /// local: a developer's machine; ci: a disposable machine; lab: a rig built for it, where
    /// many faults buy precise figures; canary: production canaries, where few and slow is
    /// the rule.
    pub fn caps(self) -> Caps {
        let (max_faults, max_per_minute) = match self {
            BlastRadius::Local => (100, 60),
            BlastRadius::Ci => (500, 120),
            BlastRadius::Lab => (5000, 600),
            BlastRadius::Canary => (20, 6),
        };
        Caps {
            max_faults,
            max_per_minute,
        }
    }
}

/// A bad experiment file: where, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: {message}")]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

/// One threshold clause of the hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// A phase name of [`crate::episode::PHASES`], or "total".
    pub phase: String,
    pub quantile: Quantile,
    pub under: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantile {
    /// A percentile, 0 < p < 100.
    Percentile(f64),
    Max,
}

impl Quantile {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "max" || text == "p100" {
            return Ok(Quantile::Max);
        }
        let bad = || format!("`{text}`: give p50, p90, p99, p99.9, max or pNN");
        let p: f64 = text
            .strip_prefix('p')
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        if !(p > 0.0 && p < 100.0) {
            return Err(bad());
        }
        Ok(Quantile::Percentile(p))
    }

    pub fn describe(&self) -> String {
        match self {
            Quantile::Max => "max".into(),
            Quantile::Percentile(p) => format!("p{p}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    pub command: String,
    pub timeout: Duration,
    /// The account it runs as (None: root, as chaos).
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    pub statement: String,
    pub max_failed: Option<u32>,
    pub latency: Vec<Latency>,
    pub verify: Option<Verify>,
    /// What faults without effect mean for the verdict.
    pub no_effect: NoEffect,
}

/// `hypothesis.no_effect`: a fault that kills nothing and costs no readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoEffect {
    /// Reported per fault; the verdict does not mind (the default).
    #[default]
    Allow,
    /// Any fault without effect refutes the hypothesis (the faults are meant to hurt).
    Forbid,
    /// Every fault must be without effect (the service is meant to shrug them off: a
    /// SIGTERM it handles, a SIGHUP that reloads).
    Require,
}

/// The service as the file names it: one selector of `chaos measure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    Supervisor(u32),
    Pid(u32),
    Exe(PathBuf),
    /// Absolute, or relative to the cgroup2 mount; `line` and `column` of the target table,
    /// for the error when it cannot be resolved.
    Cgroup {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    Comm(String),
    /// A systemd service, resolved when the run starts.
    Unit {
        name: String,
        line: usize,
        column: usize,
    },
}

impl Named {
    /// The selector on this machine (a cgroup is looked up now).
    pub fn resolve(&self, file: &Path) -> Result<Selector, FileError> {
        Ok(match self {
            Named::Supervisor(pid) => Selector::Supervisor(*pid),
            Named::Pid(pid) => Selector::Pid(*pid),
            Named::Exe(exe) => Selector::Exe(exe.clone()),
            Named::Comm(comm) => Selector::Comm(comm.clone()),
            Named::Unit { name, line, column } => Selector::unit(name).map_err(|e| FileError {
                file: file.display().to_string(),
                line: *line,
                column: *column,
                key: "target.unit".into(),
                message: e.to_string(),
            })?,
            Named::Cgroup { path, line, column } => {
                let error = |message: String| FileError {
                    file: file.display().to_string(),
                    line: *line,
                    column: *column,
                    key: "target.cgroup".into(),
                    message,
                };
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    cgroup2_mount()
                        .ok_or_else(|| error("no cgroup2 filesystem is mounted".into()))?
                        .join(path)
                };
                Selector::Cgroup(cgroup_rule(&path).map_err(|e| error(e.to_string()))?)
            }
        })
    }
}

#[derive(Debug, Clone)]
pub struct Target {
    pub named: Named,
    pub comm_filter: Option<String>,
    pub ready: Ready,
    /// The account a `cmd:` probe runs as (None: root, as chaos).
    pub ready_user: Option<String>,
    /// Which processes signal faults may hit.
    pub hit: crate::fault::Hit,
    /// The service's data directory.
    pub data_dir: Option<PathBuf>,
    /// The size of the filesystem a power_loss fault puts it on, in bytes.
    pub data_size: Option<u64>,
    /// How long after a fault (or the death it caused) its effect is looked for.
    pub effect_window: Duration,
    pub recovery_timeout: Duration,
    pub allow: Option<MatchFile>,
    pub deny: MatchFile,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Guards {
    pub episode_timeout: Option<Duration>,
    pub crash_rate_factor: Option<f64>,
    pub max_consecutive_failures: Option<u32>,
    /// Abort when a dead instance's orphans hold its ports or data files.
    pub abort_on_orphans: bool,
}

/// The run's timeline (the file's `[phases]`): not the phases of a recovery.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPhases {
    pub baseline: Duration,
    pub cooldown: Duration,
    pub max_duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outputs {
    pub json: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub hdr_log: Option<PathBuf>,
    /// The interval log's slices (None: [`crate::measure::stats::LogSpan::SLICE`]).
    pub hdr_interval: Option<std::time::Duration>,
    pub audit: Option<PathBuf>,
}

/// A checked experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub id: String,
    pub description: Option<String>,
    pub path: PathBuf,
    pub radius: BlastRadius,
    pub hypothesis: Hypothesis,
    pub target: Target,
    pub faults: Vec<FaultSpec>,
    pub guards: Guards,
    pub phases: RunPhases,
    pub outputs: Outputs,
}

impl Experiment {
    /// Faults planned in all.
    pub fn planned(&self) -> u32 {
        self.faults.iter().filter_map(|f| f.count).sum()
    }

    /// The index of its power_loss fault, if it has one (at most one: the check).
    pub fn power_fault(&self) -> Option<usize> {
        self.faults
            .iter()
            .position(|f| f.schedule().is_some_and(|s| s.power))
    }
}

#[cfg(test)]
mod tests;
