//! Recovery episodes from a stream of events: pure code, no clock of its own, no I/O.
//!
//! An episode starts when an instance of the service dies and ends when a replacement is ready:
//!
//! ```text
//! fault ──> exit ──> reaped ──> forked ──> exec ──> ready
//! signal    the old  its parent  the        the      per --ready: exec, listen(),
//! generated instance collected   supervisor replace- a TCP connect or a command
//! (if any)  exits    it (wait)   forks      ment     that succeeds
//!                                           execs
//! ```
//!
//! Every milestone but a probed readiness is a kernel timestamp. A phase is named by its two
//! milestones; when its first milestone was not seen (no signal, a supervisor that does not
//! wait), it starts at the last milestone before it that was, so the phases always add up to
//! the total.
//!
//! Who is an instance: a process that exec'd the service's command name (comm) and descends
//! from a supervisor, but not from another live instance (a worker re-executing the same
//! binary is part of its instance). The supervisor's direct child on that line is what the
//! supervisor reaps and forks: the instance itself, or the shell of a run script that did not
//! `exec`.
//!
//! Time only moves with the input: each event (and each [`Engine::advance`] call, which a
//! recording keeps) fails the episodes whose deadline it passed. Feeding the same input
//! therefore gives the same episodes, which is what makes `--replay` exact.

use std::collections::{HashMap, HashSet};

use super::{
    service::{Ready, Service},
    stats::Stats,
};
use crate::{
    episode::{
        Cause, Episode, ExitInfo, Holder, Milestones, Orphan, Outcome, PowerLoss, RecoveryPhases,
        SystemdTimes, Unsynced,
    },
    event::{Event, Exec, Exit, Signal, signal_name},
    machine::{PowerCut, ReadyMark},
    systemd::UnitState,
};

/// Signals that ask a process to stop: when an instance exits normally after one of them, the
/// first such signal is the fault (a graceful shutdown is part of the recovery time).
const STOP_REQUESTS: [u32; 3] = [
    libc::SIGTERM as u32,
    libc::SIGINT as u32,
    libc::SIGQUIT as u32,
];
/// Signals remembered per instance; older ones are dropped.
const SIGNALS_KEPT: usize = 8;
/// How far up the fork tree an exec is traced to find its supervisor.
const MAX_DEPTH: usize = 16;

/// What the engine asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An episode ended (recovered, failed or unfinished).
    Episode(Box<Episode>),
    /// Start probing readiness for this episode's replacement `new_pid` (`--ready tcp:` or
    /// `cmd:`); report with [`Engine::ready`]. The probe may stop once the episode ended.
    Probe { episode: u64, new_pid: u32 },
    /// A dead instance left these descendants alive: find what they hold; report with
    /// [`Engine::inspected`].
    Inspect {
        episode: u64,
        pids: Vec<(u32, String)>,
    },
}

#[derive(Debug, Clone)]
struct Proc {
    parent: u32,
    forked_ns: u64,
    /// Its command name: its parent's at fork, the new one at exec.
    comm: String,
}

#[derive(Debug, Clone, Copy)]
struct Instance {
    supervisor: u32,
    child: u32,
}

/// An episode still running.
#[derive(Debug, Clone)]
struct Open {
    id: u64,
    supervisor: u32,
    old_pid: u32,
    /// The supervisor's child whose reaping ends the "reaping" phase.
    child: u32,
    fault: Option<Cause>,
    exit: ExitInfo,
    at: Milestones,
    new_pid: Option<u32>,
    failed_starts: u32,
    deadline_ns: u64,
    orphans: Vec<Orphan>,
    answered_by: Vec<Holder>,
    systemd: Option<SystemdTimes>,
    /// The power cut (its fault id) that killed the instance.
    power: Option<u64>,
}

pub struct Engine {
    service: Service,
    supervisors: HashSet<u32>,
    procs: HashMap<u32, Proc>,
    instances: HashMap<u32, Instance>,
    signals: HashMap<u32, Vec<Signal>>,
    open: Vec<Open>,
    next_id: u64,
    stats: Stats,
    /// The systemd unit's last state (`--unit`).
    unit: Option<UnitState>,
    /// Every ExecMainStart timestamp the unit's states named (`--unit`).
    unit_starts: Vec<u64>,
    offsets: Offsets,
    /// Processes a power cut killed, not yet seen exit: the cut's fault id.
    cuts: HashMap<u32, u64>,
    /// Each power cut, by fault id, with the unsynced bytes of those of its processes seen
    /// exit so far.
    cut_info: HashMap<u64, PowerLoss>,
}

impl Engine {
    pub fn new(service: Service) -> Self {
        let supervisors = service.supervisors.iter().copied().collect();
        let instances = service
            .instances
            .iter()
            .map(|i| {
                (
                    i.pid,
                    Instance {
                        supervisor: i.supervisor,
                        child: i.child,
                    },
                )
            })
            .collect();
        let procs = service
            .workers
            .iter()
            .map(|w| {
                (
                    w.pid,
                    Proc {
                        parent: w.parent,
                        forked_ns: 0,
                        comm: w.comm.clone(),
                    },
                )
            })
            .collect();
        Self {
            service,
            supervisors,
            procs,
            instances,
            signals: HashMap::new(),
            open: Vec::new(),
            next_id: 1,
            stats: Stats::default(),
            unit: None,
            unit_starts: Vec::new(),
            offsets: Offsets::default(),
            cuts: HashMap::new(),
            cut_info: HashMap::new(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live instances now.
    /// Episodes begun and not yet ended.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The open episode that began first: (id, the pid that died, when it began: its fault,
    /// else its exit).
    pub fn oldest_open(&self) -> Option<(u64, u32, u64)> {
        self.open
            .iter()
            .map(|o| (o.id, o.old_pid, o.at.fault.or(o.at.exit).unwrap_or(0)))
            .min_by_key(|(_, _, start)| *start)
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    pub fn event(&mut self, event: &Event, out: &mut Vec<Output>) {
        self.advance(event.ts_ns(), out);
        match event {
            Event::Fork(e) => {
                let comm = self.comm_of(e.parent_pid);
                self.procs.insert(
                    e.child_pid,
                    Proc {
                        parent: e.parent_pid,
                        forked_ns: e.ts_ns,
                        comm,
                    },
                );
            }
            Event::Exec(e) => self.exec(e, out),
            Event::Exit(e) => self.exit(e, out),
            Event::Signal(e) => {
                // A signal that was ignored or blocked-and-pending changed nothing yet.
                if self.instances.contains_key(&e.target_pid) && e.result == "delivered" {
                    let seen = self.signals.entry(e.target_pid).or_default();
                    if seen.len() == SIGNALS_KEPT {
                        seen.remove(0);
                    }
                    seen.push(e.clone());
                }
            }
            Event::Reap(e) => {
                let open = self.open.iter_mut().find(|o| {
                    o.supervisor == e.pid
                        && o.child == e.child_pid
                        && o.at.reaped.is_none()
                        && o.at.exec.is_none()
                });
                if let Some(open) = open {
                    open.at.reaped = Some(e.ts_ns);
                }
                self.procs.remove(&e.child_pid);
            }
            Event::Listen(e) => {
                if self.service.ready == Ready::Listen {
                    let at = self
                        .open
                        .iter()
                        .position(|o| o.new_pid.is_some_and(|p| self.descends(e.pid, p)));
                    if let Some(at) = at {
                        let open = self.open.remove(at);
                        self.end(open, Outcome::Recovered, e.ts_ns, None, out);
                    }
                }
            }
            Event::Fsync(e) => {
                if e.ret == 0 && self.instance_of(e.pid).is_some() {
                    self.stats.fsync(e.latency_ns);
                }
            }
            Event::Inject(_) | Event::SyscallError(_) | Event::SignalDeliver(_) => {}
        }
    }

    /// A probe found the replacement of `episode` ready at `ts_ns` (or, with `stale`, found
    /// the service's ports answered by others only: noted, and the episode goes on).
    pub fn ready(&mut self, mark: &ReadyMark, out: &mut Vec<Output>) {
        self.advance(mark.ts_ns, out);
        let Some(at) = self
            .open
            .iter()
            .position(|o| o.id == mark.episode && o.at.exec.is_some())
        else {
            return;
        };
        if !mark.stale.is_empty() {
            let open = &mut self.open[at];
            for h in &mark.stale {
                if !open.answered_by.contains(h) {
                    open.answered_by.push(h.clone());
                }
            }
            return;
        }
        let open = self.open.remove(at);
        let ready = mark.ts_ns.max(open.at.exec.unwrap_or(0));
        self.end(open, Outcome::Recovered, ready, None, out);
    }

    /// What a dead instance's orphans hold, as the driver found it.
    pub fn inspected(&mut self, episode: u64, orphans: &[Orphan]) {
        if let Some(open) = self.open.iter_mut().find(|o| o.id == episode) {
            open.orphans = orphans.to_vec();
        }
    }

    /// A process's command name, as the events told it (the service's for an instance).
    fn comm_of(&self, pid: u32) -> String {
        match self.procs.get(&pid) {
            Some(p) => p.comm.clone(),
            None => self.service.comm.clone(),
        }
    }

    /// Fails every episode whose deadline is before `now_ns`.
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<Output>) {
        while let Some(at) = self.open.iter().position(|o| o.deadline_ns < now_ns) {
            let open = self.open.remove(at);
            let reason = format!(
                "not recovered within {}",
                crate::output::human_duration(self.service.recovery_timeout_ns)
            );
            self.end(open, Outcome::Failed, 0, Some(reason), out);
        }
    }

    /// Ends measurement: episodes still open are reported as unfinished.
    pub fn finish(&mut self, end_ns: u64, out: &mut Vec<Output>) {
        self.advance(end_ns, out);
        for open in std::mem::take(&mut self.open) {
            let reason = Some("measurement ended first".to_string());
            self.end(open, Outcome::Unfinished, 0, reason, out);
        }
    }

    fn exec(&mut self, e: &Exec, out: &mut Vec<Output>) {
        match self.procs.get_mut(&e.pid) {
            Some(p) => p.comm = e.comm.clone(),
            None => {
                self.procs.insert(
                    e.pid,
                    Proc {
                        parent: e.ppid,
                        forked_ns: 0,
                        comm: e.comm.clone(),
                    },
                );
            }
        }
        if e.comm != self.service.comm || self.instances.contains_key(&e.pid) {
            return;
        }
        if self.instance_of_ancestor(e.pid, e.ppid).is_some() {
            return; // a worker of a live instance
        }
        let Some((supervisor, child)) = self.supervisor_of(e.pid, e.ppid) else {
            return;
        };
        self.instances.insert(e.pid, Instance { supervisor, child });
        let forked = self.procs.get(&child).map(|p| p.forked_ns);
        let Some(open) = self
            .open
            .iter_mut()
            .find(|o| o.supervisor == supervisor && o.new_pid.is_none())
        else {
            return; // a new instance with no death before it (a first start, a scale-up)
        };
        open.new_pid = Some(e.pid);
        open.at.forked = forked;
        open.at.exec = Some(e.ts_ns);
        let id = open.id;
        match &self.service.ready {
            Ready::Exec => {
                let at = self
                    .open
                    .iter()
                    .position(|o| o.id == id)
                    .expect("just found");
                let open = self.open.remove(at);
                self.end(open, Outcome::Recovered, e.ts_ns, None, out);
            }
            Ready::Listen => {}
            Ready::Unit => self.unit_check(out),
            Ready::Tcp { .. } | Ready::Cmd { .. } => out.push(Output::Probe {
                episode: id,
                new_pid: e.pid,
            }),
        }
    }

    /// A power cut: its processes' exits report what they had not synced, and the episode
    /// of each instance it killed starts at the cut.
    pub fn power_cut(&mut self, p: &PowerCut) {
        let (Some(cut_ns), c) = (p.cut.cut_ns, &p.cut) else {
            return;
        };
        self.cut_info.insert(
            p.id,
            PowerLoss {
                fault_id: p.id,
                cut_ns,
                remounted_ns: c.remounted_ns,
                remount_ns: c.remounted_ns.map(|r| r.saturating_sub(cut_ns)),
                unsynced: Vec::new(),
            },
        );
        for (pid, _) in &c.killed {
            self.cuts.insert(*pid, p.id);
        }
    }

    fn exit(&mut self, e: &Exit, out: &mut Vec<Output>) {
        // Only live processes are traced up to their supervisor; the dead one's entry goes
        // (else a long run without reap events would keep every fork).
        self.procs.remove(&e.pid);
        let cut = self.cuts.remove(&e.pid);
        if let Some(info) = cut.and_then(|id| self.cut_info.get_mut(&id)) {
            info.unsynced.push(Unsynced {
                pid: e.pid,
                comm: e.comm.clone(),
                bytes: e.unsynced_bytes,
            });
        }
        for open in &mut self.open {
            if let Some(orphan) = open.orphans.iter_mut().find(|o| o.pid == e.pid) {
                orphan.exited_ns.get_or_insert(e.ts_ns);
            }
        }
        if self.supervisors.contains(&e.pid) {
            // Nothing will restart what this supervisor ran.
            while let Some(at) = self.open.iter().position(|o| o.supervisor == e.pid) {
                let open = self.open.remove(at);
                let reason = Some(format!("the supervisor ({}) exited", e.pid));
                self.end(open, Outcome::Failed, 0, reason, out);
            }
            self.supervisors.remove(&e.pid);
        }
        let Some(instance) = self.instances.remove(&e.pid) else {
            return;
        };
        let signals = self.signals.remove(&e.pid).unwrap_or_default();
        if let Some(open) = self.open.iter_mut().find(|o| o.new_pid == Some(e.pid)) {
            // The replacement died before it was ready: the same outage goes on.
            open.failed_starts += 1;
            open.new_pid = None;
            open.child = instance.child;
            open.at.reaped = None;
            open.at.forked = None;
            open.at.exec = None;
            return;
        }
        let mut fault = fault_of(e, &signals);
        // A power cut's episode starts at the cut, before the SIGKILL that followed it.
        let cut_at = cut.and_then(|id| self.cut_info.get(&id)).map(|i| i.cut_ns);
        if let (Some(at), Some((ts, _))) = (cut_at, fault.as_mut()) {
            *ts = at;
        }
        let start = fault.as_ref().map_or(e.ts_ns, |(ts, _)| *ts);
        // What it forked and left alive: reparented now, and holding what they held.
        let mut orphans: Vec<(u32, String)> = self
            .procs
            .iter()
            .filter(|(pid, _)| self.descends(**pid, e.pid))
            .map(|(pid, p)| (*pid, p.comm.clone()))
            .collect();
        orphans.sort_unstable();
        if !orphans.is_empty() {
            out.push(Output::Inspect {
                episode: self.next_id,
                pids: orphans.clone(),
            });
        }
        let open = Open {
            id: self.next_id,
            supervisor: instance.supervisor,
            old_pid: e.pid,
            child: instance.child,
            fault: fault.as_ref().map(|(_, f)| f.clone()),
            exit: ExitInfo {
                exit_code: e.exit_code,
                signal: e.signal,
                core_dumped: e.core_dumped,
                lifetime_ns: e.lifetime_ns,
                unsynced_bytes: e.unsynced_bytes,
            },
            at: Milestones {
                fault: fault.map(|(ts, _)| ts),
                exit: Some(e.ts_ns),
                ..Milestones::default()
            },
            new_pid: None,
            failed_starts: 0,
            deadline_ns: start.saturating_add(self.service.recovery_timeout_ns),
            orphans: orphans
                .into_iter()
                .map(|(pid, comm)| Orphan {
                    pid,
                    comm,
                    ports: Vec::new(),
                    files: Vec::new(),
                    exited_ns: None,
                })
                .collect(),
            answered_by: Vec::new(),
            systemd: None,
            power: cut,
        };
        self.next_id += 1;
        self.open.push(open);
    }

    fn end(
        &mut self,
        open: Open,
        outcome: Outcome,
        ready_ns: u64,
        reason: Option<String>,
        out: &mut Vec<Output>,
    ) {
        let mut at = open.at;
        if outcome == Outcome::Recovered {
            at.ready = Some(ready_ns);
        }
        let start = at.fault.or(at.exit);
        let reason = reason.map(|r| r + &why_not_recovered(&open.orphans, &open.answered_by));
        let episode = Episode {
            id: open.id,
            outcome,
            supervisor: open.supervisor,
            old_pid: open.old_pid,
            new_pid: open.new_pid,
            fault: open.fault,
            exit: open.exit,
            failed_starts: open.failed_starts,
            at_ns: at,
            phases_ns: RecoveryPhases::from_milestones(&at),
            total_ns: at.ready.zip(start).map(|(r, s)| r.saturating_sub(s)),
            last_milestone: at.last().to_string(),
            reason,
            fault_id: None,
            orphans: open.orphans,
            answered_by: open.answered_by,
            systemd: open.systemd,
            power: open.power.and_then(|id| self.cut_info.get(&id).cloned()),
            verify: None,
        };
        if let Some(times) = &episode.systemd {
            self.offsets.add(times.offsets(&episode.at_ns));
        }
        self.stats.add(&episode);
        out.push(Output::Episode(Box::new(episode)));
    }

    /// `pid`'s role in the service: an instance (main), a descendant of one (worker), or
    /// neither (None: a supervisor, a run script's shell, an orphan). `ppid` is its parent
    /// as /proc shows it, for a process forked before measurement began.
    pub fn role(&self, pid: u32, ppid: u32) -> Option<crate::fault::Role> {
        if self.instances.contains_key(&pid) {
            return Some(crate::fault::Role::Main);
        }
        let parent = self.procs.get(&pid).map_or(ppid, |p| p.parent);
        self.instance_of(parent).map(|_| crate::fault::Role::Worker)
    }

    /// The live instance `pid` is, or descends from (`ppid`: its parent as /proc shows it).
    pub fn instance_of_pid(&self, pid: u32, ppid: u32) -> Option<u32> {
        if self.instances.contains_key(&pid) {
            return Some(pid);
        }
        self.instance_of(self.procs.get(&pid).map_or(ppid, |p| p.parent))
    }

    /// The live instance `pid` is, or descends from.
    fn instance_of(&self, pid: u32) -> Option<u32> {
        let mut pid = pid;
        for _ in 0..MAX_DEPTH {
            if self.instances.contains_key(&pid) {
                return Some(pid);
            }
            pid = self.procs.get(&pid)?.parent;
        }
        None
    }

    /// Like [`Self::instance_of`] for the parent of a process that just exec'd (its own pid
    /// is not an instance yet; `ppid` comes from the exec event for processes forked before
    /// measurement began).
    fn instance_of_ancestor(&self, pid: u32, ppid: u32) -> Option<u32> {
        let parent = self.procs.get(&pid).map_or(ppid, |p| p.parent);
        self.instance_of(parent)
    }

    /// Whether `pid` is `ancestor` or one of its descendants.
    fn descends(&self, pid: u32, ancestor: u32) -> bool {
        let mut pid = pid;
        for _ in 0..MAX_DEPTH {
            if pid == ancestor {
                return true;
            }
            match self.procs.get(&pid) {
                Some(p) => pid = p.parent,
                None => return false,
            }
        }
        false
    }

    /// The supervisor of a new instance and the supervisor's direct child on its line.
    fn supervisor_of(&mut self, pid: u32, ppid: u32) -> Option<(u32, u32)> {
        let mut child = pid;
        let mut parent = self.procs.get(&pid).map_or(ppid, |p| p.parent);
        for _ in 0..MAX_DEPTH {
            if self.supervisors.contains(&parent) {
                return Some((parent, child));
            }
            child = parent;
            match self.procs.get(&child) {
                Some(p) => parent = p.parent,
                None => break,
            }
        }
        if self.service.explicit_supervisors {
            return None;
        }
        // Found by name or cgroup under a parent not seen before: that parent supervises it.
        self.supervisors.insert(ppid);
        Some((ppid, pid))
    }
}

/// What kept an episode from recovering, beyond its timeout: the old instance's orphans
/// still holding ports, and who answered the probe instead of the new instance.
fn why_not_recovered(orphans: &[Orphan], answered_by: &[Holder]) -> String {
    let mut why = String::new();
    let holding: Vec<String> = orphans
        .iter()
        .filter(|o| o.exited_ns.is_none() && !o.ports.is_empty())
        .map(Orphan::describe)
        .collect();
    if !holding.is_empty() {
        why += &format!(
            "; orphans of the old instance still hold its ports: {}",
            holding.join("; ")
        );
    }
    if !answered_by.is_empty() {
        let who: Vec<String> = answered_by
            .iter()
            .map(|h| format!("{} ({})", h.pid, h.comm))
            .collect();
        why += &format!(
            "; the probe was answered by {}, not the new instance",
            who.join(", ")
        );
    }
    why
}

/// The fault of an exit: the last generation of the signal that killed it, or for a normal
/// exit the first stop request it received; None when neither was seen.
fn fault_of(exit: &Exit, signals: &[Signal]) -> Option<(u64, Cause)> {
    let signal = if exit.signal != 0 {
        signals.iter().rev().find(|s| s.signal == exit.signal)
    } else {
        signals.iter().find(|s| STOP_REQUESTS.contains(&s.signal))
    }?;
    Some((
        signal.ts_ns,
        Cause {
            signal: signal.signal,
            signal_name: signal_name(signal.signal),
            sender_pid: signal.sender_pid,
            sender_comm: signal.sender_comm.clone(),
        },
    ))
}

mod unit;
pub use unit::Offsets;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
