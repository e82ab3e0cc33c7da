//! The ledger of faults: each fault injected, and the kernel event that proves it took
//! effect. Pure: the injector adds records and shows it events; [`LedgerPrinter`] writes
//! `chaos inject`'s lines.
//!
//! # Wire format (`chaos inject --json`)
//!
//! `{"type":"fault","data":{...}}` when a fault is injected (or, with `--dry-run`, would be):
//! a [`FaultRecord`]. `{"type":"confirmed","data":{...}}` when the kernel shows its effect:
//! `id`, `ts_ns`, `by` (what was seen: `signal delivered`, `killed by SIGKILL`, `openat
//! returned EIO`, ...). A last `{"type":"summary","data":{...}}`: `injected`, `confirmed`,
//! `unconfirmed` (ids), `dry_run`, `duration_ns`, `lost`, `intercepted` (with a seccomp fault:
//! `calls` the filter handed over, in how many `processes`), `host` (`name`, `kernel`) and
//! `start_unix_ns` (the wall clock at the start).

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::{
    event::Event,
    fault::{Backend, FaultKind, FaultRecord, Proof},
    output::human_duration,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectSummary {
    pub injected: u64,
    pub confirmed: u64,
    pub unconfirmed: Vec<u64>,
    pub dry_run: bool,
    pub duration_ns: u64,
    pub lost: u64,
    /// With a seccomp fault: the calls the filter handed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercepted: Option<Intercepted>,
    /// Where and when ([`crate::sys::host::Origin`]).
    #[serde(flatten)]
    pub origin: crate::sys::host::Origin,
}

/// The calls a seccomp filter handed over (each decided by the watchdog: most passed at
/// once, the hits answered by chaos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intercepted {
    pub calls: u64,
    pub processes: u64,
}

/// Faults and their proofs, matched as kernel events arrive.
#[derive(Debug, Default)]
pub struct Ledger {
    faults: Vec<(FaultRecord, Option<u64>)>,
}

impl Ledger {
    /// Records a fault (ids are 1, 2, ... in the order they were handed out).
    pub fn add(&mut self, fault: FaultRecord) {
        self.faults.push((fault, None));
    }

    /// The proof an event gives of a fault not yet proven, if any.
    pub fn observe(&mut self, event: &Event) -> Option<(FaultRecord, Proof)> {
        self.faults.iter_mut().find_map(|(fault, confirmed)| {
            if confirmed.is_some() || fault.dry_run || event.ts_ns() < fault.ts_ns {
                return None;
            }
            proof(fault, event).map(|by| {
                *confirmed = Some(event.ts_ns());
                (
                    fault.clone(),
                    Proof {
                        id: fault.id,
                        ts_ns: event.ts_ns(),
                        by,
                    },
                )
            })
        })
    }

    /// Whether every (real) fault has its proof.
    pub fn all_confirmed(&self) -> bool {
        self.faults.iter().all(|(f, c)| f.dry_run || c.is_some())
    }

    pub fn records(&self) -> impl Iterator<Item = &FaultRecord> {
        self.faults.iter().map(|(f, _)| f)
    }

    pub fn len(&self) -> usize {
        self.faults.len()
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    pub fn summary(&self, duration_ns: u64, lost: u64, dry_run: bool) -> InjectSummary {
        InjectSummary {
            injected: self.faults.len() as u64,
            confirmed: self.faults.iter().filter(|(_, c)| c.is_some()).count() as u64,
            unconfirmed: self
                .faults
                .iter()
                .filter(|(f, c)| c.is_none() && !f.dry_run)
                .map(|(f, _)| f.id)
                .collect(),
            dry_run,
            duration_ns,
            lost,
            intercepted: None,
            origin: Default::default(),
        }
    }
}

/// What in `event` proves `fault`, if anything.
fn proof(fault: &FaultRecord, event: &Event) -> Option<String> {
    match (fault.kind, event) {
        (FaultKind::Signal | FaultKind::PowerLoss, Event::Signal(s))
            if s.target_pid == fault.pid && s.signal_name == fault.value =>
        {
            Some(format!("{} {}", s.signal_name, s.result))
        }
        (FaultKind::Signal, Event::SignalDeliver(d))
            if d.pid == fault.pid && d.signal_name == fault.value =>
        {
            Some(format!(
                "{} taken by the process ({})",
                d.signal_name, d.disposition
            ))
        }
        (FaultKind::Signal | FaultKind::PowerLoss, Event::Exit(e))
            if e.pid == fault.pid && crate::event::signal_name(e.signal) == fault.value =>
        {
            Some(format!("exited, killed by {}", fault.value))
        }
        (FaultKind::Errno, Event::SyscallError(e))
            if fault.tid.is_none_or(|t| t == e.tid)
                && e.pid == fault.pid
                && e.errno == fault.value
                && (fault.backend == Backend::Lsm
                    || fault.syscall.as_deref() == Some(e.syscall.as_str())) =>
        {
            Some(format!("{} returned {} in {}", e.syscall, e.errno, e.tid))
        }
        _ => None,
    }
}

#[derive(Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum Line<'a> {
    Fault(&'a FaultRecord),
    Confirmed(&'a Proof),
    Summary(&'a InjectSummary),
}

/// `chaos inject`'s output: a line per fault and per proof, then the summary; as text or
/// as JSON Lines.
pub struct LedgerPrinter {
    out: Box<dyn Write>,
    json: bool,
    start_ns: u64,
}

impl LedgerPrinter {
    pub fn new(out: Box<dyn Write>, json: bool, start_ns: u64) -> Self {
        Self {
            out,
            json,
            start_ns,
        }
    }

    fn at(&self, ts_ns: u64) -> String {
        format!("+{}", human_duration(ts_ns.saturating_sub(self.start_ns)))
    }

    pub fn fault(&mut self, fault: &FaultRecord) -> std::io::Result<()> {
        if self.json {
            write_json(&mut self.out, &Line::Fault(fault))?;
        } else {
            let verb = if fault.dry_run {
                "would inject"
            } else {
                "inject"
            };
            let call = match (&fault.syscall, fault.nth) {
                (Some(s), Some(n)) => format!(" at call {n} of {s}"),
                (Some(s), None) => format!(" on {s}"),
                _ => String::new(),
            };
            let role = fault
                .role
                .map_or(String::new(), |r| format!(", {}", r.as_str()));
            writeln!(
                self.out,
                "{:>10} #{} {verb} {} -> {} ({}{role}){call} [{}]",
                self.at(fault.ts_ns),
                fault.id,
                fault.value,
                fault.pid,
                fault.comm,
                fault.backend.as_str()
            )?;
        }
        self.out.flush()
    }

    pub fn proof(&mut self, proof: &Proof) -> std::io::Result<()> {
        if self.json {
            write_json(&mut self.out, &Line::Confirmed(proof))?;
        } else {
            writeln!(
                self.out,
                "{:>10} #{} confirmed: {}",
                self.at(proof.ts_ns),
                proof.id,
                proof.by
            )?;
        }
        self.out.flush()
    }

    pub fn summary(&mut self, summary: &InjectSummary) -> std::io::Result<()> {
        if self.json {
            write_json(&mut self.out, &Line::Summary(summary))?;
        } else if summary.dry_run {
            writeln!(
                self.out,
                "-- dry run: {} fault(s) would have been injected; nothing was",
                summary.injected
            )?;
        } else {
            writeln!(
                self.out,
                "-- {}: injected {}, confirmed {}{}{}",
                human_duration(summary.duration_ns),
                summary.injected,
                summary.confirmed,
                if summary.unconfirmed.is_empty() {
                    String::new()
                } else {
                    format!(" (no proof seen for #{:?})", summary.unconfirmed)
                },
                if summary.lost > 0 {
                    format!("; {} events lost", summary.lost)
                } else {
                    String::new()
                }
            )?;
        }
        if let (false, Some(i)) = (self.json, summary.intercepted) {
            writeln!(
                self.out,
                "-- seccomp: {} call(s) intercepted in {} process(es)",
                i.calls, i.processes
            )?;
        }
        self.out.flush()
    }
}

fn write_json(out: &mut dyn Write, line: &Line<'_>) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Signal, SyscallError},
        output::SharedBuf,
    };

    fn fault(id: u64, kind: FaultKind, value: &str, syscall: Option<&str>) -> FaultRecord {
        FaultRecord {
            id,
            ts_ns: 100,
            pid: 7,
            tid: syscall.map(|_| 8),
            comm: "victim".into(),
            role: None,
            ppid: None,
            kind,
            value: value.into(),
            syscall: syscall.map(str::to_string),
            nth: syscall.map(|_| 3),
            backend: if syscall.is_some() {
                Backend::Seccomp
            } else {
                Backend::Pidfd
            },
            dry_run: false,
        }
    }

    #[test]
    fn a_fault_is_confirmed_only_by_its_own_effect() {
        let mut ledger = Ledger::default();
        ledger.add(fault(1, FaultKind::Signal, "SIGTERM", None));
        ledger.add(fault(2, FaultKind::Errno, "EIO", Some("fsync")));
        let signal = |pid, name: &str, ts| {
            Event::Signal(Signal {
                ts_ns: ts,
                sender_pid: 1,
                sender_comm: "chaos".into(),
                target_pid: pid,
                target_comm: "victim".into(),
                signal: 15,
                signal_name: name.into(),
                code: 0,
                group: true,
                result: "delivered".into(),
            })
        };
        let error = |tid, syscall: &str, errno: &str| {
            Event::SyscallError(SyscallError {
                ts_ns: 200,
                pid: 7,
                tid,
                syscall: syscall.into(),
                ret: -5,
                errno: errno.into(),
            })
        };
        for unrelated in [
            signal(8, "SIGTERM", 150),
            signal(7, "SIGKILL", 150),
            signal(7, "SIGTERM", 50),
            error(9, "fsync", "EIO"),
            error(8, "write", "EIO"),
            error(8, "fsync", "ENOSPC"),
        ] {
            assert_eq!(ledger.observe(&unrelated), None, "{unrelated:?}");
        }
        assert!(!ledger.all_confirmed());
        assert!(ledger.observe(&signal(7, "SIGTERM", 150)).is_some());
        let (_, proof) = ledger.observe(&error(8, "fsync", "EIO")).unwrap();
        assert!(ledger.all_confirmed());
        let summary = ledger.summary(1000, 0, false);
        assert_eq!((summary.injected, summary.confirmed), (2, 2));
        let out = SharedBuf::default();
        let mut printer = LedgerPrinter::new(Box::new(out.clone()), true, 0);
        printer.proof(&proof).unwrap();
        assert_eq!(
            out.text(),
            "{\"type\":\"confirmed\",\"data\":{\"id\":2,\"ts_ns\":200,\"by\":\"fsync returned EIO in 8\"}}\n"
        );
    }
}
