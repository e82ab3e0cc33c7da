//! Carrying out one action. What an action learns (the candidates, whether a signal went
//! out, when) goes back to the engine as an input; an action that fails stops the faults.

use std::path::Path;

use nix::sys::signal::{Signal, kill};

use super::{Driver, probe, verify};
use crate::{
    audit::Entry,
    episode::Orphan,
    inject::signal::Pinned,
    machine::{
        Action, Answer, Candidate, Candidates, Input, Inspected, Order, Pin, PowerCut, Response,
        SendOutcome, Sent, Verified, WatchdogNote,
    },
    sys::clock::monotonic_ns,
    target::{proc, sockets},
};

/// What each of a dead instance's orphans holds: its listening ports, and its open files
/// under `data_dir`.
fn inspect(pids: &[(u32, String)], data_dir: Option<&Path>) -> Vec<Orphan> {
    let proc_dir = Path::new("/proc");
    let listening = sockets::listening(proc_dir);
    pids.iter()
        .map(|(pid, comm)| Orphan {
            pid: *pid,
            comm: comm.clone(),
            ports: sockets::ports_of(proc_dir, *pid, &listening),
            files: data_dir.map_or_else(Vec::new, |d| sockets::files_under(proc_dir, *pid, d)),
            exited_ns: None,
        })
        .collect()
}

impl Driver<'_> {
    pub(super) fn act(&mut self, action: Action) {
        match action {
            Action::Arm(rule) | Action::Disarm(rule) => {
                let armed = matches!(action, Action::Arm(_));
                if let Some(maps) = self.faults.as_deref_mut()
                    && let Err(e) = maps.set_armed(rule.slot(), armed)
                {
                    self.fail(format!(
                        "cannot switch a kernel rule: {}",
                        crate::sys::chain(&e)
                    ));
                }
            }
            Action::Gather { fault } => {
                let candidates = self.gather(fault);
                self.queue.push_back(Input::Candidates(candidates));
            }
            Action::Signal(order) => {
                let (sent, cut) = self.signal(order);
                self.queue.push_back(Input::Sent(sent));
                if let Some(cut) = cut {
                    let failed = cut.cut.error.clone();
                    self.queue.push_back(Input::PowerCut(cut));
                    if let Some(why) = failed {
                        self.fail(format!("power cut: {why}"));
                    }
                }
            }
            Action::Answer(answer) => self.answer(answer),
            Action::Audit(entry) => {
                let _ = self.write_audit(&entry);
            }
            Action::Probe { episode, new_pid } => {
                if let Some(p) = &self.probe {
                    let handle = probe::spawn(p, episode, new_pid, self.ready_tx.clone());
                    self.probes.insert(episode, handle);
                }
            }
            Action::Inspect {
                episode,
                pids,
                data_dir,
            } => {
                let orphans = inspect(&pids, data_dir.as_deref());
                self.queue
                    .push_back(Input::Inspected(Inspected { episode, orphans }));
            }
            Action::Watch { fault, until_ns } => {
                if let Some(p) = &self.probe {
                    let handle = probe::watch(p, fault, until_ns, self.watch_tx.clone());
                    self.watches.insert(fault, handle);
                }
            }
            Action::EndWatch { fault } => {
                if let Some(handle) = self.watches.remove(&fault) {
                    handle.abort();
                }
            }
            Action::EndProbe { episode } => {
                if let Some(handle) = self.probes.remove(&episode) {
                    handle.abort();
                }
            }
            Action::Verify { when, episode } => {
                let Some(command) = self.verify.clone() else {
                    return;
                };
                let tx = self.verify_tx.clone();
                self.verifies_running += 1;
                tokio::spawn(async move {
                    let result = verify::run(&command).await;
                    let _ = tx.send(Verified {
                        when,
                        episode,
                        passed: result.is_ok(),
                        detail: result.err(),
                    });
                });
            }
            Action::Export(item) => self.exporters.export(&item),
            Action::Say(text) => self.console.say(&text),
            Action::Progress(p) => self.console.progress(&p),
            Action::Stop => self.stopping = true,
        }
    }

    /// Appends to the audit log; false (and the faults stop) when it cannot be written.
    fn write_audit(&mut self, entry: &Entry) -> bool {
        if self.audit_broken {
            return false;
        }
        let Some(log) = self.audit.as_mut() else {
            return true;
        };
        match log.append(entry) {
            Ok(()) => true,
            Err(e) => {
                self.audit_broken = true;
                self.fail(format!(
                    "the audit log cannot be written: {}",
                    crate::sys::chain(&e)
                ));
                false
            }
        }
    }

    /// The live members of the target set that no denylist rule protects, as /proc shows
    /// them now. The watchdog is never among them.
    fn gather(&self, fault: usize) -> Candidates {
        let proc_dir = Path::new("/proc");
        let watchdog = self.watchdog.map(|w| w.pid.as_raw() as u32);
        let members = self.targets.map(|t| t.members()).unwrap_or_default();
        let procs = members
            .into_iter()
            .filter(|pid| Some(*pid) != watchdog)
            .filter_map(|pid| {
                let stat = proc::stat(proc_dir, pid)?;
                self.denylist
                    .check(pid, &stat.comm, stat.is_kthread())
                    .ok()?;
                let exe = std::fs::read_link(proc_dir.join(pid.to_string()).join("exe"))
                    .ok()
                    .map(|p| p.display().to_string());
                Some(Candidate {
                    pid,
                    ppid: stat.ppid,
                    comm: stat.comm,
                    exe,
                    title: if self.titles {
                        proc::title(proc_dir, pid)
                    } else {
                        None
                    },
                    start_ticks: stat.start_ticks,
                })
            })
            .collect();
        Candidates {
            fault,
            ts_ns: monotonic_ns(),
            procs,
        }
    }

    /// Pins the process, writes the audit entry, sends the signal (or cuts the power: what
    /// the cut did comes back too).
    fn signal(&mut self, order: Order) -> (Sent, Option<PowerCut>) {
        let id = order.id;
        let done = |outcome| {
            (
                Sent {
                    id,
                    ts_ns: monotonic_ns(),
                    outcome,
                },
                None,
            )
        };
        let key = match order.pin {
            Pin::Fresh { pid, start_ticks } => {
                let comm = proc::comm_of(pid);
                match Pinned::open(Path::new("/proc"), pid, &comm, start_ticks) {
                    Ok(p) => self.pinned.insert(id, p),
                    Err(e) => return done(SendOutcome::Failed(e.to_string())),
                };
                id
            }
            Pin::Kept { of } => of,
        };
        let fresh = matches!(order.pin, Pin::Fresh { .. });
        let mut cut = None;
        let result = if order.power && !order.dry_run {
            self.cut(&order, key, &mut cut)
        } else {
            self.send(&order, key)
        };
        if fresh && !order.keep {
            self.pinned.remove(&id);
        }
        match result {
            Ok(Some(ts_ns)) => {
                match (order.watchdog, order.pin) {
                    (Some(WatchdogNote::Frozen), _) => self.frozen.push(id),
                    (Some(WatchdogNote::Thawed), Pin::Kept { of }) => {
                        self.frozen.retain(|&f| f != of)
                    }
                    _ => {}
                }
                (
                    Sent {
                        id,
                        ts_ns,
                        outcome: SendOutcome::Sent,
                    },
                    cut,
                )
            }
            Ok(None) => done(SendOutcome::Gone),
            Err(why) => (done(SendOutcome::Failed(why)).0, cut),
        }
    }

    /// A power cut on the disk (`crate::power::Disk::cut`), once the audit entry is on
    /// disk: the time of the cut, None when the process was gone, or why no cut happened.
    fn cut(
        &mut self,
        order: &Order,
        key: u64,
        cut: &mut Option<PowerCut>,
    ) -> Result<Option<u64>, String> {
        let disk = self
            .power
            .ok_or("a power cut, and no power-loss disk was set up")?;
        let target = self
            .pinned
            .get(&key)
            .ok_or("the process it follows was not pinned")?;
        if target.exited() {
            return Ok(None);
        }
        let pid = target.pid;
        if !self.write_audit(&order.audit) {
            return Err("the audit log cannot be written".into());
        }
        // The cut checks that the chosen process is in the frozen cgroup, and kills it there.
        let done = disk.cut(pid);
        if disk.damaged.get()
            && let Some(dog) = self.watchdog
        {
            // Should chaos die before its teardown, the watchdog's keeps the image too.
            let _ = dog.disk(disk);
        }
        let at = done.cut_ns;
        let why = done.error.clone();
        *cut = Some(PowerCut {
            id: order.id,
            cut: done,
        });
        match at {
            Some(ts) => Ok(Some(ts)),
            None => Err(why.unwrap_or_else(|| "the power cut did not happen".into())),
        }
    }

    /// Sends an order to the pinned process `key`: the time it went out, None when the
    /// process was gone (and `only_if_alive`), or why it could not go.
    fn send(&mut self, order: &Order, key: u64) -> Result<Option<u64>, String> {
        let target = self
            .pinned
            .get(&key)
            .ok_or("the process it follows was not pinned")?;
        if order.only_if_alive && target.exited() {
            return Ok(None);
        }
        let pid = target.pid;
        // The entry is on disk before the signal goes.
        if !self.write_audit(&order.audit) {
            return Err("the audit log cannot be written".into());
        }
        let ts_ns = monotonic_ns();
        if order.dry_run {
            return Ok(Some(ts_ns));
        }
        let signal = Signal::try_from(order.signal).map_err(|e| e.to_string())?;
        self.pinned[&key].send(signal).map_err(|e| e.to_string())?;
        if let (Some(dog), Some(note)) = (self.watchdog, order.watchdog) {
            let _ = match note {
                WatchdogNote::Frozen => dog.frozen(pid),
                WatchdogNote::Thawed => dog.thawed(pid),
            };
        }
        Ok(Some(ts_ns))
    }

    /// Writes the audit entry, sends the signal (`--before`), answers the call.
    fn answer(&mut self, answer: Answer) {
        let Some(dog) = self.watchdog else { return };
        let mut response = answer.response;
        if let Some(entry) = &answer.audit
            && !self.write_audit(entry)
        {
            // No record, no fault.
            response = Response::Continue;
        }
        if response != Response::Continue
            && let Some((tgid, sig)) = answer.signal
            && let Ok(sig) = Signal::try_from(sig)
        {
            let _ = kill(nix::unistd::Pid::from_raw(tgid as i32), sig);
        }
        if let Err(e) = dog.respond(answer.id, response) {
            self.fail(format!("cannot answer the watchdog: {e}"));
        }
    }
}
