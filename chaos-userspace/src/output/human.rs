//! A table for people, one line per event (execsnoop style).

use std::{collections::HashMap, io::Write};

use super::{Sink, human_duration};
use crate::event::{Event, Summary};

pub struct Human<W: Write> {
    out: W,
    /// Events are shown relative to this CLOCK_MONOTONIC instant.
    start_ns: u64,
    /// Last known comm per pid, to name processes in events that do not carry one.
    comms: HashMap<u32, String>,
    header_done: bool,
}

impl<W: Write> Human<W> {
    pub fn new(out: W, start_ns: u64) -> Self {
        Self {
            out,
            start_ns,
            comms: HashMap::new(),
            header_done: false,
        }
    }

    fn comm(&self, pid: u32) -> &str {
        self.comms.get(&pid).map_or("?", String::as_str)
    }
}

impl<W: Write> Sink for Human<W> {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        if !self.header_done {
            writeln!(
                self.out,
                "{:>12} {:<7} {:>8} {:<16} DETAILS",
                "TIME(s)", "EVENT", "PID", "COMM"
            )?;
            self.header_done = true;
        }
        let (pid, comm, details) = match event {
            Event::Fork(e) => {
                let comm = self.comm(e.parent_pid).to_string();
                self.comms.insert(e.child_pid, comm.clone());
                (e.parent_pid, comm, format!("child {}", e.child_pid))
            }
            Event::Exec(e) => {
                self.comms.insert(e.pid, e.comm.clone());
                (
                    e.pid,
                    e.comm.clone(),
                    format!("ppid {} {}", e.ppid, e.filename),
                )
            }
            Event::Exit(e) => {
                let how = if e.signal != 0 {
                    format!("killed by {}", crate::event::signal_name(e.signal))
                } else {
                    format!("code {}", e.exit_code)
                };
                let core = if e.core_dumped { " (core dumped)" } else { "" };
                let unsynced = match e.unsynced_bytes {
                    Some(bytes) if bytes > 0 => format!(", {bytes} bytes unsynced"),
                    _ => String::new(),
                };
                let details = format!(
                    "ppid {} {how}{core} after {}{unsynced}",
                    e.ppid,
                    human_duration(e.lifetime_ns)
                );
                (e.pid, e.comm.clone(), details)
            }
            Event::Signal(e) => {
                self.comms
                    .entry(e.target_pid)
                    .or_insert_with(|| e.target_comm.clone());
                let details = format!(
                    "{} from {} ({}) {}",
                    e.signal_name, e.sender_pid, e.sender_comm, e.result
                );
                (e.target_pid, e.target_comm.clone(), details)
            }
            Event::Fsync(e) => {
                let file = match (e.fd, &e.dev, e.ino) {
                    (Some(fd), _, _) => format!("fd {fd}"),
                    (None, Some(dev), Some(ino)) => format!("dev {dev} ino {ino}"),
                    _ => "file ?".into(),
                };
                let details = format!(
                    "{} {file} {} ret {}",
                    e.call,
                    human_duration(e.latency_ns),
                    e.ret
                );
                (e.pid, self.comm(e.pid).to_string(), details)
            }
            Event::Reap(e) => (
                e.pid,
                self.comm(e.pid).to_string(),
                format!("collected child {}", e.child_pid),
            ),
            Event::Listen(e) => (
                e.pid,
                self.comm(e.pid).to_string(),
                format!("listening on {} port {}", e.family, e.port),
            ),
            Event::Inject(e) => (
                e.pid,
                self.comm(e.pid).to_string(),
                format!(
                    "{}{} {} at call {} of {}",
                    if e.dry_run {
                        "would inject "
                    } else {
                        "injected "
                    },
                    e.fault.as_str(),
                    e.value,
                    e.nth,
                    e.what
                ),
            ),
            Event::SignalDeliver(e) => (
                e.pid,
                self.comm(e.pid).to_string(),
                format!("took {} ({})", e.signal_name, e.disposition),
            ),
            Event::SyscallError(e) => (
                e.pid,
                self.comm(e.pid).to_string(),
                format!("{} returned {} (tid {})", e.syscall, e.errno, e.tid),
            ),
        };
        let secs = event.ts_ns().saturating_sub(self.start_ns) as f64 / 1e9;
        writeln!(
            self.out,
            "{secs:>12.6} {:<7} {pid:>8} {comm:<16} {details}",
            event.kind()
        )?;
        self.out.flush()
    }

    fn summary(&mut self, s: &Summary) -> std::io::Result<()> {
        let e = &s.events;
        writeln!(
            self.out,
            "-- {}: fork {} exec {} exit {} signal {} fsync {} listen {}; lost {}{}{}",
            human_duration(s.duration_ns),
            e.fork,
            e.exec,
            e.exit,
            e.signal,
            e.fsync,
            e.listen,
            s.lost,
            if s.targets_full > 0 {
                format!(", target set full {} times", s.targets_full)
            } else {
                String::new()
            },
            if s.read_errors > 0 {
                format!(", read errors {}", s.read_errors)
            } else {
                String::new()
            },
        )?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    #[test]
    fn table_names_processes_and_outcomes() {
        let mut out = Vec::new();
        let mut sink = Human::new(&mut out, 1_000_000_000);
        sink.event(&Event::Exec(Exec {
            ts_ns: 1_500_000_000,
            pid: 42,
            ppid: 1,
            old_pid: 42,
            comm: "svc".into(),
            filename: "/usr/bin/svc".into(),
        }))
        .unwrap();
        sink.event(&Event::Fork(Fork {
            ts_ns: 1_600_000_000,
            parent_pid: 42,
            child_pid: 43,
        }))
        .unwrap();
        sink.event(&Event::Exit(Exit::from_raw(
            2_000_000_000,
            43,
            42,
            "svc".into(),
            0x80 | 11,
            400_000_000,
            Some(0),
        )))
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["TIME(s)", "EVENT", "PID", "COMM", "DETAILS"]
        );
        assert!(
            lines[1].contains("0.500000 exec") && lines[1].ends_with("ppid 1 /usr/bin/svc"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("svc") && lines[2].ends_with("child 43"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].ends_with("killed by SIGSEGV (core dumped) after 400.00ms"),
            "{}",
            lines[3]
        );
    }
}
