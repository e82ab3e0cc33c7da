//! What the kernel does on its own: the rules it applies (armed inside their windows,
//! disarmed at their count), the faults it reports, and the calls seccomp hands over.

use super::{Injector, audit_fault};
use crate::{
    audit::{Entry, entry::RuleSwitch},
    event::{errno_name, signal_name},
    fault::{Backend, FaultKind, FaultRecord, KernelRule, Role},
    inject::{ledger::Intercepted, seccomp, spec::FaultAction, window},
    machine::{Action, Answer, Exported, KernelFault, Notification, Passed, Response},
};

impl Injector {
    /// Arms the kernel rules inside their windows, disarms them outside and once they have
    /// fired their count.
    pub(super) fn rules_at(&mut self, now: u64, out: &mut Vec<Action>) {
        let wall = self.wall(now);
        for r in &mut self.rules {
            let spec = &self.specs[r.spec];
            let want = !self.stopped
                && spec.count.is_none_or(|c| r.fired < c)
                && window::open(&spec.windows, &wall);
            if want != r.armed {
                r.armed = want;
                out.push(if want {
                    Action::Arm(r.rule)
                } else {
                    Action::Disarm(r.rule)
                });
                let switch = RuleSwitch {
                    fault: spec.index,
                    rule: spec.describe(),
                    reason: None,
                };
                out.push(Action::Audit(if want {
                    Entry::Armed(switch)
                } else {
                    Entry::Disarmed(switch)
                }));
            }
        }
    }

    /// A fault the kernel fired on its own (on a process of role `role`, the caller's say):
    /// record it, and disarm its rule once the rule has fired its count.
    pub fn kernel_fault(&mut self, k: &KernelFault, role: Option<Role>, out: &mut Vec<Action>) {
        let e = &k.event;
        let Some(r) = self.rules.iter().position(|r| r.rule == e.fault) else {
            return;
        };
        let record = FaultRecord {
            id: self.next_id(),
            ts_ns: e.ts_ns,
            pid: e.pid,
            tid: Some(e.tid),
            comm: k.comm.clone(),
            role,
            ppid: Some(k.ppid),
            kind: match e.fault {
                KernelRule::Trigger => FaultKind::Signal,
                KernelRule::Lsm => FaultKind::Errno,
            },
            value: e.value.clone(),
            syscall: Some(e.what.clone()),
            nth: Some(e.nth),
            backend: e.fault.backend(),
            dry_run: e.dry_run,
        };
        out.push(Action::Audit(audit_fault(&record, &k.exe, true)));
        self.ledger.add(record.clone());
        out.push(Action::Export(Exported::Fault(record)));
        let state = &mut self.rules[r];
        state.fired += 1;
        let spec = &self.specs[state.spec];
        if state.armed && spec.count.is_some_and(|c| state.fired >= c) {
            state.armed = false;
            out.push(Action::Disarm(state.rule));
            out.push(Action::Audit(Entry::Disarmed(RuleSwitch {
                fault: spec.index,
                rule: spec.describe(),
                reason: Some("it fired its count".into()),
            })));
        }
    }

    /// A call the watchdog decided to hit (by a process of role `role`): record it and
    /// answer it, unless the faults stopped meanwhile.
    pub fn notification(&mut self, n: &Notification, role: Option<Role>, out: &mut Vec<Action>) {
        *self.intercepted.entry(n.tgid).or_insert(0) += 1;
        let rule = self.specs.iter().find_map(|f| match &f.action {
            FaultAction::Seccomp { nr, rule } => Some((*nr, rule.clone())),
            _ => None,
        });
        let Some((nr, rule)) = rule.filter(|_| !self.stopped) else {
            out.push(Action::Answer(Answer::pass(n.id)));
            return;
        };
        let (kind, value, backend, verdict, signal) = match rule.action {
            seccomp::Action::Fail(errno) => (
                FaultKind::Errno,
                errno_name(errno),
                Backend::Seccomp,
                Response::Fail(errno),
                None,
            ),
            seccomp::Action::SignalBefore(sig) => (
                FaultKind::Signal,
                signal_name(sig as u32),
                Backend::SeccompBefore,
                Response::Fail(libc::EINTR),
                Some((n.tgid, sig)),
            ),
        };
        let record = FaultRecord {
            id: self.next_id(),
            ts_ns: n.ts_ns,
            pid: n.tgid,
            tid: Some(n.tid),
            comm: n.comm.clone(),
            role,
            ppid: Some(n.ppid),
            kind,
            value,
            syscall: Some(nr.name().to_string()),
            nth: Some(n.nth),
            backend,
            dry_run: self.dry_run,
        };
        out.push(Action::Answer(Answer {
            id: n.id,
            response: if self.dry_run {
                Response::Continue
            } else {
                verdict
            },
            signal: signal.filter(|_| !self.dry_run),
            audit: Some(audit_fault(&record, &n.exe, false)),
        }));
        self.ledger.add(record.clone());
        out.push(Action::Export(Exported::Fault(record)));
    }

    /// Calls the watchdog let pass: counted per process, for the summary.
    pub fn passed(&mut self, p: &Passed) {
        for &(tgid, calls) in &p.calls {
            *self.intercepted.entry(tgid).or_insert(0) += u64::from(calls);
        }
    }

    /// The calls the seccomp filter handed over: how many, in how many processes.
    pub fn intercepted(&self) -> Option<Intercepted> {
        let seccomp = self
            .specs
            .iter()
            .any(|f| matches!(f.action, FaultAction::Seccomp { .. }));
        seccomp.then(|| Intercepted {
            calls: self.intercepted.values().sum(),
            processes: self.intercepted.len() as u64,
        })
    }
}
