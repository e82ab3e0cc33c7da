//! The verdict: each clause of the hypothesis checked against what was measured, and the
//! JUnit rendition (one test case per clause). Pure.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::{Deserialize, Serialize};

use super::{
    Experiment, NoEffect, Quantile,
    accounting::{IN_PLACE_PHASES, InPlaceRecovery},
};
use crate::episode::Outcome;
use crate::{measure::stats::Stats, output::human_duration};

/// One clause and whether it held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clause {
    pub name: String,
    pub held: bool,
    pub detail: String,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Held,
    Refuted,
    Aborted,
}

/// The verdict as printed: `HELD`, `REFUTED`, `ABORTED`.
pub fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Held => "HELD",
        Verdict::Refuted => "REFUTED",
        Verdict::Aborted => "ABORTED",
    }
}

/// The verdict's lines: the word with the statement, why it aborted, each clause.
pub fn write_verdict(
    out: &mut impl std::io::Write,
    statement: &str,
    verdict: Verdict,
    abort: Option<&str>,
    clauses: &[Clause],
) -> std::io::Result<()> {
    writeln!(
        out,
        "\nverdict: {} (exit {}): {statement}",
        word(verdict),
        verdict.exit_code()
    )?;
    if let Some(why) = abort {
        writeln!(out, "  aborted: {why}")?;
    }
    write_clauses(out, clauses)
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Held => 0,
            Verdict::Refuted => 1,
            Verdict::Aborted => 3,
        }
    }
}

/// What the run produced, as the clauses need it.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Signal faults of the schedule that never fired (window closed, no live instance, the
    /// run's end).
    pub unfired: u32,
    pub injected: u64,
    pub unconfirmed: usize,
    /// Verify runs after recoveries: (passed, failed, first failure's detail).
    pub verify_after: (u32, u32, Option<String>),
    /// The verify run at the end: None when not run.
    pub verify_end: Option<Result<(), String>>,
    /// Faults whose outcome chaos could not tell: (id, why).
    pub unmeasured: Vec<(u64, String)>,
    /// Faults that had no effect.
    pub no_effect: usize,
    /// Recoveries without the main process dying.
    pub in_place: Vec<InPlaceRecovery>,
}

pub fn clauses(experiment: &Experiment, stats: &Stats, evidence: &Evidence) -> Vec<Clause> {
    let mut out = Vec::new();
    let planned = experiment.planned();
    let unmeasured = match evidence.unmeasured.first() {
        Some((id, why)) => format!(
            ", {} not accounted for (fault {id}: {why})",
            evidence.unmeasured.len()
        ),
        None => String::new(),
    };
    out.push(Clause {
        name: "faults injected, confirmed and accounted for".into(),
        held: evidence.injected > 0
            && evidence.unfired == 0
            && evidence.unconfirmed == 0
            && evidence.unmeasured.is_empty(),
        detail: format!(
            "{} injected (at most {planned} planned), {} without proof from the kernel, {} scheduled signal(s) never fired{unmeasured}",
            evidence.injected, evidence.unconfirmed, evidence.unfired
        ),
    });
    let h = &experiment.hypothesis;
    let in_place_failed = evidence
        .in_place
        .iter()
        .filter(|r| r.outcome != Outcome::Recovered)
        .count() as u64;
    if let Some(max) = h.max_failed {
        let failed = stats.failed + stats.unfinished + in_place_failed;
        let in_place = if evidence.in_place.is_empty() {
            String::new()
        } else {
            format!(
                "; in place: {} recovered, {in_place_failed} failed",
                evidence.in_place.len() as u64 - in_place_failed
            )
        };
        out.push(Clause {
            name: format!("at most {max} failed recoveries"),
            held: failed <= u64::from(max),
            detail: format!(
                "{} recovered, {} failed, {} unfinished (recovery timeout {}){in_place}",
                stats.recovered,
                stats.failed,
                stats.unfinished,
                humantime::format_duration(experiment.target.recovery_timeout)
            ),
        });
    }
    match h.no_effect {
        NoEffect::Allow => {}
        NoEffect::Forbid => out.push(Clause {
            name: "every fault has an effect".into(),
            held: evidence.no_effect == 0,
            detail: format!("{} fault(s) without effect", evidence.no_effect),
        }),
        NoEffect::Require => out.push(Clause {
            name: "no fault has an effect".into(),
            held: evidence.injected > 0 && evidence.no_effect as u64 == evidence.injected,
            detail: format!(
                "{} of {} fault(s) without effect",
                evidence.no_effect, evidence.injected
            ),
        }),
    }
    for l in &h.latency {
        let name = format!(
            "{} {} under {}",
            l.phase,
            l.quantile.describe(),
            humantime::format_duration(l.under)
        );
        let in_place = (l.phase == "in_place").then(|| {
            super::accounting::in_place_histogram(&evidence.in_place, IN_PLACE_PHASES.len() - 1)
        });
        let histogram = in_place
            .as_ref()
            .or_else(|| (l.phase == "remount").then_some(&stats.remount))
            .or_else(|| stats.phases().find(|(p, _)| *p == l.phase).map(|(_, h)| h));
        let (held, detail) = match histogram {
            Some(hist) if !hist.is_empty() => {
                let value = match l.quantile {
                    Quantile::Max => hist.max(),
                    Quantile::Percentile(p) => hist.value_at_quantile(p / 100.0),
                };
                (
                    Duration::from_nanos(value) < l.under,
                    format!(
                        "{} = {} over {} {}",
                        l.quantile.describe(),
                        human_duration(value),
                        hist.len(),
                        if in_place.is_some() {
                            "in-place recovery(ies)"
                        } else if l.phase == "remount" {
                            "power cut(s)"
                        } else {
                            "recovered episode(s)"
                        }
                    ),
                )
            }
            _ => (false, "no recovered episode to measure".into()),
        };
        out.push(Clause { name, held, detail });
    }
    if let Some(verify) = &h.verify {
        let (passed, failed, first) = &evidence.verify_after;
        out.push(Clause {
            name: "verify passes after each recovery".into(),
            held: *failed == 0,
            detail: match first {
                Some(why) => format!("{passed} passed, {failed} failed; first failure: {why}"),
                None => format!("{passed} passed (`{}`)", verify.command),
            },
        });
        out.push(Clause {
            name: "verify passes at the end".into(),
            held: matches!(evidence.verify_end, Some(Ok(()))),
            detail: match &evidence.verify_end {
                Some(Ok(())) => "passed".into(),
                Some(Err(why)) => why.clone(),
                None => "not run (the run was aborted)".into(),
            },
        });
    }
    out
}

/// A line per clause: `  [held] name: detail` or `  [FAILED] ...`.
pub fn write_clauses(out: &mut impl std::io::Write, clauses: &[Clause]) -> std::io::Result<()> {
    for c in clauses {
        writeln!(
            out,
            "  [{}] {}: {}",
            if c.held { "held" } else { "FAILED" },
            c.name,
            c.detail
        )?;
    }
    Ok(())
}

/// Held when every clause held, unless a guard (or the operator) aborted.
pub fn verdict(clauses: &[Clause], aborted: bool) -> Verdict {
    if aborted {
        Verdict::Aborted
    } else if clauses.iter().all(|c| c.held) {
        Verdict::Held
    } else {
        Verdict::Refuted
    }
}

/// JUnit XML: one test suite named after the experiment, one test case per clause; an abort
/// is one more failing case, `guards`.
pub fn junit(
    experiment: &Experiment,
    clauses: &[Clause],
    abort: Option<&str>,
    duration: Duration,
) -> String {
    let mut suite = TestSuite::new(experiment.id.as_str());
    for clause in clauses {
        let status = if clause.held {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(clause.detail.as_str());
            s
        };
        let mut case = TestCase::new(clause.name.as_str(), status);
        case.set_classname(experiment.id.as_str());
        case.set_system_out(clause.detail.as_str());
        suite.add_test_case(case);
    }
    if let Some(why) = abort {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_message(why);
        let mut case = TestCase::new("guards", s);
        case.set_classname(experiment.id.as_str());
        suite.add_test_case(case);
    }
    suite.set_time(duration);
    let mut report = Report::new("chaos run");
    report.set_time(duration);
    report.add_test_suite(suite);
    report.to_string().unwrap_or_default()
}
