//! The ledger of faults: each injection, and the kernel event that proves it took effect.
//!
//! # Wire format (`--json`)
//!
//! `{"type":"fault","data":{...}}` when a fault is injected (or, with `--dry-run`, would be):
//! `id`, `ts_ns` (CLOCK_MONOTONIC), `pid`, `tid` (for syscall faults), `comm`, `fault`
//! (`signal`, `errno`), `value` (`SIGTERM`, `EIO`), `syscall` (or null), `nth` (which call of
//! the process, or null), `backend` (`pidfd`, `bpf_send_signal`, `seccomp`, `lsm`), `dry_run`.
//! `{"type":"confirmed","data":{...}}` when the kernel shows its effect: `id`, `ts_ns`, `by`
//! (what was seen: `signal delivered`, `killed by SIGKILL`, `openat returned EIO`, ...).
//! A last `{"type":"summary","data":{...}}`: `injected`, `confirmed`, `unconfirmed` (ids),
//! `dry_run`, `duration_ns`, `lost`.

use std::io::Write;

use serde::Serialize;

use crate::{event::Event, output::human_duration};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub id: u64,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: Option<u32>,
    pub comm: String,
    pub fault: &'static str,
    pub value: String,
    pub syscall: Option<String>,
    pub nth: Option<u32>,
    pub backend: &'static str,
    pub dry_run: bool,
}

impl Fault {
    /// A fault the kernel fired on its own (the trigger, an LSM errno), as it reported it.
    pub fn from_kernel(id: u64, e: &crate::event::Inject) -> Self {
        let trigger = e.fault == "signal_trigger";
        Fault {
            id,
            ts_ns: e.ts_ns,
            pid: e.pid,
            tid: Some(e.tid),
            comm: comm_of(e.pid),
            fault: if trigger { "signal" } else { "errno" },
            value: e.value.clone(),
            syscall: Some(e.what.clone()),
            nth: Some(e.nth),
            backend: if trigger { "bpf_send_signal" } else { "lsm" },
            dry_run: e.dry_run,
        }
    }

    /// The audit log's entry for it (`reported`: the kernel decided and fired it on its own,
    /// and this is its report; otherwise the entry is written before the fault fires).
    pub fn audit_entry(&self, reported: bool) -> serde_json::Value {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        serde_json::json!({
            "kind": "fault",
            "id": self.id,
            "pid": self.pid,
            "exe": exe,
            "comm": self.comm,
            "fault": self.fault,
            "value": self.value,
            "syscall": self.syscall,
            "nth": self.nth,
            "backend": self.backend,
            "dry_run": self.dry_run,
            "reported_by_kernel": reported,
        })
    }
}

/// A process's command name, or "" once it is gone.
pub fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Confirmed {
    pub id: u64,
    pub ts_ns: u64,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InjectSummary {
    pub injected: u64,
    pub confirmed: u64,
    pub unconfirmed: Vec<u64>,
    pub dry_run: bool,
    pub duration_ns: u64,
    pub lost: u64,
}

#[derive(Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum Line<'a> {
    Fault(&'a Fault),
    Confirmed(&'a Confirmed),
    Summary(&'a InjectSummary),
}

/// Faults and their proofs, matched as kernel events arrive.
pub struct Ledger {
    faults: Vec<(Fault, Option<u64>)>,
    out: Box<dyn Write>,
    json: bool,
    start_ns: u64,
    exporters: Option<crate::export::Shared>,
}

impl Ledger {
    pub fn new(out: Box<dyn Write>, json: bool, start_ns: u64) -> Self {
        Self {
            faults: Vec::new(),
            out,
            json,
            start_ns,
            exporters: None,
        }
    }

    /// Faults and their proofs also go to these exporters.
    pub fn set_exporters(&mut self, exporters: crate::export::Shared) {
        self.exporters = Some(exporters);
    }

    pub fn next_id(&self) -> u64 {
        self.faults.len() as u64 + 1
    }

    /// Records a fault (ids are 1, 2, ... in order).
    pub fn fault(&mut self, fault: Fault) -> std::io::Result<()> {
        if self.json {
            write_json(&mut self.out, &Line::Fault(&fault))?;
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
            writeln!(
                self.out,
                "{:>10} #{} {verb} {} -> {} ({}){call} [{}]",
                format!(
                    "+{}",
                    human_duration(fault.ts_ns.saturating_sub(self.start_ns))
                ),
                fault.id,
                fault.value,
                fault.pid,
                fault.comm,
                fault.backend
            )?;
        }
        self.out.flush()?;
        if let Some(e) = &self.exporters {
            e.borrow_mut().fault(&fault);
        }
        self.faults.push((fault, None));
        Ok(())
    }

    /// Looks for the proof of an unconfirmed fault in a kernel event.
    pub fn observe(&mut self, event: &Event) -> std::io::Result<()> {
        if let Some(e) = &self.exporters {
            // The textfile, about once a second; its errors show again at the end.
            let _ = e.borrow_mut().tick();
        }
        let found = self.faults.iter_mut().find_map(|(fault, confirmed)| {
            if confirmed.is_some() || fault.dry_run || event.ts_ns() < fault.ts_ns {
                return None;
            }
            proof(fault, event).map(|by| {
                *confirmed = Some(event.ts_ns());
                if let Some(e) = &self.exporters {
                    e.borrow_mut().confirmed(fault, event.ts_ns());
                }
                Confirmed {
                    id: fault.id,
                    ts_ns: event.ts_ns(),
                    by,
                }
            })
        });
        let Some(confirmed) = found else {
            return Ok(());
        };
        if self.json {
            write_json(&mut self.out, &Line::Confirmed(&confirmed))?;
        } else {
            writeln!(
                self.out,
                "{:>10} #{} confirmed: {}",
                format!(
                    "+{}",
                    human_duration(confirmed.ts_ns.saturating_sub(self.start_ns))
                ),
                confirmed.id,
                confirmed.by
            )?;
        }
        self.out.flush()
    }

    /// Whether every (real) fault has its proof.
    pub fn all_confirmed(&self) -> bool {
        self.faults.iter().all(|(f, c)| f.dry_run || c.is_some())
    }

    pub fn faults(&self) -> impl Iterator<Item = &Fault> {
        self.faults.iter().map(|(f, _)| f)
    }

    pub fn finish(
        mut self,
        duration_ns: u64,
        lost: u64,
        dry_run: bool,
    ) -> std::io::Result<InjectSummary> {
        let summary = InjectSummary {
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
        };
        if self.json {
            write_json(&mut self.out, &Line::Summary(&summary))?;
        } else if dry_run {
            writeln!(
                self.out,
                "-- dry run: {} fault(s) would have been injected; nothing was",
                summary.injected
            )?;
        } else {
            writeln!(
                self.out,
                "-- {}: injected {}, confirmed {}{}{}",
                human_duration(duration_ns),
                summary.injected,
                summary.confirmed,
                if summary.unconfirmed.is_empty() {
                    String::new()
                } else {
                    format!(" (no proof seen for #{:?})", summary.unconfirmed)
                },
                if lost > 0 {
                    format!("; {lost} events lost")
                } else {
                    String::new()
                }
            )?;
        }
        self.out.flush()?;
        Ok(summary)
    }
}

fn write_json(out: &mut dyn Write, line: &Line<'_>) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// What in `event` proves `fault`, if anything.
fn proof(fault: &Fault, event: &Event) -> Option<String> {
    match (fault.fault, event) {
        ("signal", Event::Signal(s))
            if s.target_pid == fault.pid && s.signal_name == fault.value =>
        {
            Some(format!("{} {}", s.signal_name, s.result))
        }
        ("signal", Event::SignalDeliver(d))
            if d.pid == fault.pid && d.signal_name == fault.value =>
        {
            Some(format!(
                "{} taken by the process ({})",
                d.signal_name, d.disposition
            ))
        }
        ("signal", Event::Exit(e))
            if e.pid == fault.pid && crate::event::signal_name(e.signal) == fault.value =>
        {
            Some(format!("exited, killed by {}", fault.value))
        }
        ("errno", Event::SyscallError(e))
            if fault.tid.is_none_or(|t| t == e.tid)
                && e.pid == fault.pid
                && e.errno == fault.value
                && (fault.backend == "lsm"
                    || fault.syscall.as_deref() == Some(e.syscall.as_str())) =>
        {
            Some(format!("{} returned {} in {}", e.syscall, e.errno, e.tid))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Signal, SyscallError},
        output::SharedBuf,
    };

    fn fault(id: u64, fault: &'static str, value: &str, syscall: Option<&str>) -> Fault {
        Fault {
            id,
            ts_ns: 100,
            pid: 7,
            tid: syscall.map(|_| 8),
            comm: "victim".into(),
            fault,
            value: value.into(),
            syscall: syscall.map(str::to_string),
            nth: syscall.map(|_| 3),
            backend: if syscall.is_some() {
                "seccomp"
            } else {
                "pidfd"
            },
            dry_run: false,
        }
    }

    #[test]
    fn a_fault_is_confirmed_only_by_its_own_effect() {
        let out = SharedBuf::default();
        let mut ledger = Ledger::new(Box::new(out.clone()), true, 0);
        ledger.fault(fault(1, "signal", "SIGTERM", None)).unwrap();
        ledger
            .fault(fault(2, "errno", "EIO", Some("fsync")))
            .unwrap();
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
            ledger.observe(&unrelated).unwrap();
        }
        assert!(!ledger.all_confirmed());
        ledger.observe(&signal(7, "SIGTERM", 150)).unwrap();
        ledger.observe(&error(8, "fsync", "EIO")).unwrap();
        assert!(ledger.all_confirmed());
        let summary = ledger.finish(1000, 0, false).unwrap();
        assert_eq!((summary.injected, summary.confirmed), (2, 2));
        let text = out.text();
        assert!(text.contains("{\"type\":\"confirmed\",\"data\":{\"id\":2,\"ts_ns\":200,\"by\":\"fsync returned EIO in 8\"}}"), "{text}");
    }
}
