//! The run of `chaos inject` once everything is in place: the schedule of userspace
//! signals, the seccomp notifications relayed by the watchdog, the kernel's reports of the
//! faults it fired, and the events that prove each one; until the plan is done and proven,
//! the launched tree is gone, `--max-duration`, or a signal.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, OwnedFd},
    path::Path,
    time::Duration,
};

use nix::sys::signal::{Signal, kill};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::Instant,
};

use super::{
    Draws,
    denylist::Denylist,
    pick,
    plan::{InjectConfig, Plan, SignalPlan},
    report::{Fault, Ledger, comm_of},
    seccomp::{self, Action, Decider},
    signal::Pinned,
    watchdog::{Verdict, Watchdog},
};
use crate::{
    audit::AuditLog,
    bpf::{TargetSet, ring::RingSource},
    commands::common::{Stops, after, monotonic_ns, when_gone},
    error::Error,
    event::Event,
    source::EventSource,
};

/// How long chaos waits, after the last fault, for the events that prove it.
const PROOF_WAIT: Duration = Duration::from_secs(2);

/// A scheduled step of the userspace signal plan.
#[derive(Debug)]
enum Step {
    /// The next signal of the plan.
    Fire,
    /// SIGKILL if the process is still alive.
    Escalate(u64),
    /// SIGCONT after a freeze.
    Thaw(u64),
}

/// The state of one run.
pub struct Run<'a> {
    pub config: &'a InjectConfig,
    pub audit: Option<AuditLog>,
    pub ledger: Ledger,
    pub targets: &'a TargetSet,
    pub denylist: &'a Denylist,
    pub watchdog: Option<&'a Watchdog>,
    pub listener: Option<OwnedFd>,
    pub start_ns: u64,
}

impl Run<'_> {
    /// Runs until the plan is done (and proven, or the proof wait is over), the launched tree
    /// is gone, --max-duration, or a signal. Returns (whether chaos stopped the run early, lost
    /// events).
    pub async fn drive(
        &mut self,
        mut source: RingSource,
        mut stops: Stops,
        tree_gone: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Result<(bool, u64), Error> {
        let max = after(self.config.max_duration);
        let gone = when_gone(tree_gone);
        tokio::pin!(max, gone);
        let notifications = match self.watchdog {
            Some(dog) if self.listener.is_some() => Some(
                // SAFETY: the fd belongs to the watchdog handle, which outlives this AsyncFd
                // (dropped at the end of this function).
                unsafe { AsyncFd::register_with_interest(dog.socket(), Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)
                    .map_err(|source| Error::Io {
                        what: "cannot watch the watchdog socket",
                        source,
                    })?,
            ),
            _ => None,
        };
        let start = Instant::now();
        let mut draws = Draws::new(self.config.seed);
        let mut steps: Vec<(Instant, Step)> = Vec::new();
        if let Plan::Signals(plan) = &self.config.plan {
            for i in 0..plan.count {
                let jitter = if plan.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    Duration::from_nanos(draws.below(plan.jitter.as_nanos() as u64 + 1))
                };
                // The first signal comes one interval in: a launched command gets that long to start.
                steps.push((start + plan.interval * (i + 1) + jitter, Step::Fire));
            }
        }
        let mut pinned: HashMap<u64, Pinned> = HashMap::new();
        let mut decider = Decider::default();
        let mut plan_done_at: Option<Instant> = None;
        let mut batch = Vec::new();
        let stopped_early = loop {
            steps.sort_by_key(|(at, _)| *at);
            let next_step = steps.first().map(|(at, _)| *at);
            let plan_over = matches!(self.config.plan, Plan::Signals(_)) && steps.is_empty();
            if plan_over && plan_done_at.is_none() {
                plan_done_at = Some(Instant::now());
            }
            let proof_deadline = plan_done_at.map(|t| t + PROOF_WAIT);
            if plan_over && self.ledger.all_confirmed() {
                break false;
            }
            let wake = next_step.or(proof_deadline);
            tokio::select! {
                more = source.next_batch(&mut batch) => {
                    if !more? {
                        break false;
                    }
                }
                readable = async {
                    match &notifications {
                        Some(fd) => fd.readable().await.map(Some),
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(mut guard) = readable.map_err(|source| Error::Io { what: "watchdog socket", source })? {
                        guard.clear_ready();
                        self.notifications(&mut decider)?;
                    }
                }
                () = async {
                    match wake {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if next_step.is_some() {
                        let (_, step) = steps.remove(0);
                        self.step(step, &mut draws, &mut pinned, &mut steps)?;
                    } else {
                        break false; // the proof wait is over
                    }
                }
                () = stops.recv() => break true,
                () = &mut max => break true,
                () = &mut gone => {
                    source.drain(&mut batch)?;
                    self.events(&mut batch, &mut decider)?;
                    break false;
                }
            }
            self.events(&mut batch, &mut decider)?;
        };
        if let Some(dog) = self.watchdog {
            // Thaw now rather than leave it to the watchdog.
            for p in pinned.values() {
                let _ = p.send(Signal::SIGCONT);
                let _ = dog.thawed(p.pid);
            }
        }
        source.drain(&mut batch)?;
        self.events(&mut batch, &mut decider)?;
        Ok((stopped_early, source.counters().lost))
    }

    fn events(&mut self, batch: &mut Vec<Event>, decider: &mut Decider) -> Result<(), Error> {
        for event in batch.drain(..) {
            match &event {
                Event::Inject(e) => {
                    let fault = Fault::from_kernel(self.ledger.next_id(), e);
                    self.audit_fault(&fault, true)?;
                    self.ledger.fault(fault).map_err(Error::Output)?;
                }
                Event::Exit(e) => decider.forget(e.pid),
                _ => {}
            }
            self.ledger.observe(&event).map_err(Error::Output)?;
        }
        Ok(())
    }

    /// One step of the userspace signal plan.
    fn step(
        &mut self,
        step: Step,
        draws: &mut Draws,
        pinned: &mut HashMap<u64, Pinned>,
        steps: &mut Vec<(Instant, Step)>,
    ) -> Result<(), Error> {
        let Plan::Signals(plan) = &self.config.plan else {
            return Ok(());
        };
        let plan: &SignalPlan = plan;
        match step {
            Step::Fire => {
                let Some(target) = self.pick(draws) else {
                    eprintln!("chaos: no live target left to signal");
                    steps.retain(|(_, s)| !matches!(s, Step::Fire));
                    return Ok(());
                };
                let id = self.ledger.next_id();
                let ts = monotonic_ns();
                let fault = self.signal_fault(id, ts, &target, plan.signal.as_str(), "pidfd");
                self.audit_fault(&fault, false)?;
                if !self.config.dry_run
                    && let Err(e) = target.send(plan.signal)
                {
                    eprintln!("chaos: signal to {} failed: {e}", target.pid);
                    return Ok(());
                }
                self.ledger.fault(fault).map_err(Error::Output)?;
                let now = Instant::now();
                if let Some(after) = plan.escalate_after {
                    steps.push((now + after, Step::Escalate(id)));
                }
                if let Some(after) = plan.freeze_for {
                    if let (Some(dog), false) = (self.watchdog, self.config.dry_run) {
                        let _ = dog.frozen(target.pid);
                    }
                    steps.push((now + after, Step::Thaw(id)));
                }
                if plan.escalate_after.is_some() || plan.freeze_for.is_some() {
                    pinned.insert(id, target);
                }
            }
            Step::Escalate(id) => {
                if let Some(target) = pinned.remove(&id)
                    && !target.exited()
                {
                    let ts = monotonic_ns();
                    self.record(
                        self.ledger.next_id(),
                        ts,
                        &target,
                        "SIGKILL",
                        "pidfd (escalation)",
                    )?;
                    if !self.config.dry_run {
                        let _ = target.send(Signal::SIGKILL);
                    }
                }
            }
            Step::Thaw(id) => {
                if let Some(target) = pinned.remove(&id) {
                    let ts = monotonic_ns();
                    self.record(
                        self.ledger.next_id(),
                        ts,
                        &target,
                        "SIGCONT",
                        "pidfd (thaw)",
                    )?;
                    if !self.config.dry_run {
                        let _ = target.send(Signal::SIGCONT);
                        if let Some(dog) = self.watchdog {
                            let _ = dog.thawed(target.pid);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Audits, then records, a signal about to be sent (the caller sends it after).
    fn record(
        &mut self,
        id: u64,
        ts_ns: u64,
        target: &Pinned,
        value: &str,
        backend: &'static str,
    ) -> Result<(), Error> {
        let fault = self.signal_fault(id, ts_ns, target, value, backend);
        self.audit_fault(&fault, false)?;
        self.ledger.fault(fault).map_err(Error::Output)
    }

    fn signal_fault(
        &self,
        id: u64,
        ts_ns: u64,
        target: &Pinned,
        value: &str,
        backend: &'static str,
    ) -> Fault {
        Fault {
            id,
            ts_ns,
            pid: target.pid,
            tid: None,
            comm: target.comm.clone(),
            fault: "signal",
            value: value.into(),
            syscall: None,
            nth: None,
            backend,
            dry_run: self.config.dry_run,
        }
    }

    /// Writes the fault to the audit log, on disk before it fires (`reported`: the kernel
    /// decided and fired it on its own, and this is its report).
    fn audit_fault(&mut self, fault: &Fault, reported: bool) -> Result<(), Error> {
        if let Some(log) = &mut self.audit {
            log.append(fault.audit_entry(reported))?;
        }
        Ok(())
    }

    /// A live target, not denied, chosen with the seeded draws; pinned by a pidfd.
    fn pick(&self, draws: &mut Draws) -> Option<Pinned> {
        let watchdog = self.watchdog.map(|w| w.pid.as_raw() as u32);
        let members = self.targets.members().into_iter();
        pick(
            members.filter(|pid| Some(*pid) != watchdog),
            self.denylist,
            |_| true,
            draws,
        )
    }

    /// Decides every notification the watchdog relayed.
    fn notifications(&mut self, decider: &mut Decider) -> Result<(), Error> {
        let (Some(dog), Plan::Seccomp { nr, plan }) = (self.watchdog, &self.config.plan) else {
            return Ok(());
        };
        let proc = Path::new("/proc");
        loop {
            let notif = match dog.next_notif() {
                Ok(Some(n)) => n,
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(source) => {
                    return Err(Error::Io {
                        what: "cannot read from the watchdog",
                        source,
                    });
                }
            };
            if let Some(listener) = &self.listener
                && !crate::inject::watchdog::id_valid(listener.as_raw_fd(), notif.id)
            {
                // The caller died or was interrupted meanwhile: not a call to count.
                let _ = dog.verdict(notif.id, Verdict::Continue);
                continue;
            }
            let tgid = seccomp::tgid_of(proc, notif.pid).unwrap_or(notif.pid);
            let path = plan.path.as_ref().and_then(|_| {
                crate::inject::names::path_arg(*nr)
                    .and_then(|i| seccomp::read_path(proc, notif.pid, notif.args[i]))
            });
            let now = Duration::from_nanos(monotonic_ns().saturating_sub(self.start_ns));
            let decision = decider.decide(plan, tgid, path.as_deref(), now);
            let mut verdict = Verdict::Continue;
            let ts_ns = monotonic_ns();
            if decision.hit {
                let (value, backend) = match plan.action {
                    Action::Fail(errno) => (crate::event::errno_name(errno), "seccomp"),
                    Action::SignalBefore(sig) => (
                        crate::event::signal_name(sig as u32),
                        "seccomp (before the call)",
                    ),
                };
                if !plan.dry_run {
                    verdict = match plan.action {
                        Action::Fail(errno) => Verdict::Fail(errno),
                        Action::SignalBefore(sig) => {
                            if let Ok(sig) = Signal::try_from(sig) {
                                let _ = kill(nix::unistd::Pid::from_raw(tgid as i32), sig);
                            }
                            Verdict::Fail(libc::EINTR)
                        }
                    };
                }
                let fault = Fault {
                    id: self.ledger.next_id(),
                    ts_ns,
                    pid: tgid,
                    tid: Some(notif.pid),
                    comm: comm_of(tgid),
                    fault: if matches!(plan.action, Action::Fail(_)) {
                        "errno"
                    } else {
                        "signal"
                    },
                    value,
                    syscall: Some(nr.name().to_string()),
                    nth: decision.nth,
                    backend,
                    dry_run: plan.dry_run,
                };
                self.audit_fault(&fault, false)?;
                self.ledger.fault(fault).map_err(Error::Output)?;
            }
            dog.verdict(notif.id, verdict).map_err(|source| Error::Io {
                what: "cannot answer the watchdog",
                source,
            })?;
        }
    }
}
