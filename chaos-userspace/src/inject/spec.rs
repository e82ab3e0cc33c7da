//! The one fault model: `chaos inject`'s flags and `chaos run`'s experiment files both lower
//! to [`FaultSpec`]s, and the kernel's side of them (the globals its programs read, the
//! syscalls whose errors prove them, the hooks they need) is derived here, once
//! ([`kernel_faults`]).

use std::time::Duration;

use chaos_common::{LsmFault, Trigger};
use nix::sys::signal::Signal;
use syscalls::Sysno;

use super::{seccomp, window::Window};
use crate::{
    fault::{Backend, FaultKind, Hit, KernelRule},
    session::KernelFaults,
};

/// One fault as planned: what it does, how often, when, and how fast at most.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// Its index among the run's faults (`faults[i]` of an experiment; 0 for `chaos inject`).
    pub index: usize,
    pub action: FaultAction,
    /// At most this many faults; None: no limit but the rate ceiling.
    pub count: Option<u32>,
    /// Seeds every random choice of the fault (whom, the jitter, a probability).
    pub seed: u64,
    /// It fires only inside one of these (none: always).
    pub windows: Vec<Window>,
    /// At most this many a minute, whatever else is asked.
    pub max_per_minute: u32,
    /// Which processes a userspace signal may hit (kernel-fired faults hit whichever process
    /// of the target set makes the call, and record its role).
    pub hit: Hit,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Signals from userspace through pidfds, on a schedule.
    Signal(SignalSchedule),
    /// `bpf_send_signal` at the `nth` call of `nr`, per process.
    Trigger { nr: Sysno, nth: u32, signal: Signal },
    /// Calls of `nr` decided through seccomp user notification (a launched command).
    Seccomp { nr: Sysno, rule: seccomp::Rule },
    /// An LSM hook fails the calls of `family` (which `nr` belongs to).
    Lsm {
        nr: Sysno,
        errno: i32,
        fault: LsmFault,
        family: &'static [Sysno],
    },
}

/// When the signals of a schedule go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// `chaos inject`: signal `i` (from 1) at `start + i x interval + jitter_i`, a fixed grid;
    /// when no target is left alive, the schedule ends.
    Grid,
    /// `chaos run`: the first at `start + jitter`, each next one `interval + jitter` after
    /// the previous one went out; a signal that finds no instance to hit waits for one.
    AfterPrevious,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignalSchedule {
    pub signal: Signal,
    pub interval: Duration,
    /// Up to this much is added to each signal's time (seeded).
    pub jitter: Duration,
    /// SIGKILL this long after the signal, if the process is still alive.
    pub escalate_after: Option<Duration>,
    /// With SIGSTOP: SIGCONT this long after.
    pub freeze_for: Option<Duration>,
    pub timing: Timing,
    /// A power cut around the SIGKILL (`kind = "power_loss"`, `crate::power`).
    pub power: bool,
}

impl FaultSpec {
    pub fn kind(&self) -> FaultKind {
        match &self.action {
            FaultAction::Signal(s) if s.power => FaultKind::PowerLoss,
            FaultAction::Signal(_) | FaultAction::Trigger { .. } => FaultKind::Signal,
            FaultAction::Seccomp { rule, .. } => match rule.action {
                seccomp::Action::Fail(_) => FaultKind::Errno,
                seccomp::Action::SignalBefore(_) => FaultKind::Signal,
            },
            FaultAction::Lsm { .. } => FaultKind::Errno,
        }
    }

    pub fn backend(&self) -> Backend {
        match &self.action {
            FaultAction::Signal(s) if s.power => Backend::PowerCut,
            FaultAction::Signal(_) => Backend::Pidfd,
            FaultAction::Trigger { .. } => Backend::BpfSendSignal,
            FaultAction::Seccomp { rule, .. } => match rule.action {
                seccomp::Action::Fail(_) => Backend::Seccomp,
                seccomp::Action::SignalBefore(_) => Backend::SeccompBefore,
            },
            FaultAction::Lsm { .. } => Backend::Lsm,
        }
    }

    /// The kernel rule that fires this fault on its own, if it is one.
    pub fn rule(&self) -> Option<KernelRule> {
        self.backend().rule()
    }

    /// The signal schedule, for a userspace signal fault.
    pub fn schedule(&self) -> Option<&SignalSchedule> {
        match &self.action {
            FaultAction::Signal(s) => Some(s),
            _ => None,
        }
    }

    /// The fault in words, for the plan and the audit log.
    pub fn describe(&self) -> String {
        let most = |what: &str| match self.count {
            Some(n) => format!("at most {n} in all{what}"),
            None => format!("no limit but {} a minute{what}", self.max_per_minute),
        };
        match &self.action {
            FaultAction::Signal(s) => {
                let mut text = format!(
                    "{} x{}, every {}",
                    if s.power {
                        "power cut (freeze, drop every write, SIGKILL, remount, release)"
                    } else {
                        s.signal.as_str()
                    },
                    self.count.unwrap_or(1),
                    humantime::format_duration(s.interval)
                );
                if !s.jitter.is_zero() {
                    text += &format!(" + up to {} jitter", humantime::format_duration(s.jitter));
                }
                if let Some(after) = s.escalate_after {
                    text += &format!(
                        ", SIGKILL {} later if alive",
                        humantime::format_duration(after)
                    );
                }
                if let Some(d) = s.freeze_for {
                    text += &format!(", SIGCONT {} later", humantime::format_duration(d));
                }
                text
            }
            FaultAction::Trigger { nr, nth, signal } => format!(
                "{} from the kernel at call {nth} of {} ({}; the call completes)",
                signal.as_str(),
                nr.name(),
                most("")
            ),
            FaultAction::Seccomp { nr, rule } => {
                let what = match rule.action {
                    seccomp::Action::Fail(errno) => {
                        format!(
                            "{} fails with {}",
                            nr.name(),
                            crate::event::errno_name(errno)
                        )
                    }
                    seccomp::Action::SignalBefore(sig) => format!(
                        "{} before {} runs (the call fails with EINTR)",
                        crate::event::signal_name(sig as u32),
                        nr.name()
                    ),
                };
                let args: String = rule.args.iter().map(|a| format!(", {a}")).collect();
                format!(
                    "{what} ({}{}{args}; seccomp, {})",
                    choice(rule.nth, rule.threshold),
                    rule.path
                        .as_ref()
                        .map_or(String::new(), |p| format!(", paths under {p}")),
                    most("")
                )
            }
            FaultAction::Lsm {
                nr, errno, fault, ..
            } => format!(
                "{} fails with {} ({}; lsm, {})",
                nr.name(),
                crate::event::errno_name(*errno),
                choice((fault.nth != 0).then_some(fault.nth), fault.threshold),
                most("")
            ),
        }
    }
}

/// `call N` or `probability P`.
fn choice(nth: Option<u32>, threshold: u64) -> String {
    match nth {
        Some(n) => format!("call {n}"),
        None => format!("probability {:.3}", threshold as f64 / u64::MAX as f64),
    }
}

/// What the kernel must hold for `faults`: the trigger and LSM globals (at most one of
/// each: the kernel holds one rule of each kind), the syscalls whose errors prove an errno,
/// and the hooks to attach. `dry_run`: the kernel reports what it would do and does nothing.
pub fn kernel_faults(faults: &[FaultSpec], dry_run: bool) -> KernelFaults {
    let mut kernel = KernelFaults::default();
    for f in faults {
        match &f.action {
            FaultAction::Signal(s) => {
                // The watchdog thaws what chaos froze, and tears a power-loss disk down.
                kernel.watchdog |= s.freeze_for.is_some() || s.power;
            }
            FaultAction::Trigger { nr, nth, signal } => {
                kernel.trigger = Trigger {
                    nth: *nth,
                    signal: *signal as u32,
                    dry_run: u32::from(dry_run),
                    count: f.count.unwrap_or(0),
                    max_per_minute: f.max_per_minute,
                    _pad: 0,
                };
                kernel.trigger_nr = Some(*nr);
            }
            FaultAction::Seccomp { nr, .. } => {
                kernel.confirm.push(nr.id() as u32);
                kernel.watchdog = true;
            }
            FaultAction::Lsm { fault, family, .. } => {
                kernel.lsm = LsmFault {
                    dry_run: u32::from(dry_run),
                    ..*fault
                };
                kernel
                    .confirm
                    .extend(family.iter().map(|nr| nr.id() as u32));
            }
        }
    }
    kernel
}

/// The LSM hook that sees a syscall, and every syscall that reaches that hook.
pub fn lsm_hook_for(nr: Sysno) -> Option<(u32, &'static [Sysno])> {
    use Sysno::*;
    use chaos_common::lsm_hook;
    const OPEN: &[Sysno] = &[open, openat, openat2, creat];
    const READ: &[Sysno] = &[read, pread64, readv, preadv, preadv2];
    const WRITE: &[Sysno] = &[write, pwrite64, writev, pwritev, pwritev2];
    const CONNECT: &[Sysno] = &[connect];
    const FORK: &[Sysno] = &[fork, vfork, clone, clone3];
    const EXEC: &[Sysno] = &[execve, execveat];
    const UNLINK: &[Sysno] = &[unlink, unlinkat];
    const RENAME: &[Sysno] = &[rename, renameat, renameat2];
    const MKDIR: &[Sysno] = &[mkdir, mkdirat];
    let table: [(u32, &[Sysno]); 9] = [
        (lsm_hook::FILE_OPEN, OPEN),
        (lsm_hook::FILE_READ, READ),
        (lsm_hook::FILE_WRITE, WRITE),
        (lsm_hook::SOCKET_CONNECT, CONNECT),
        (lsm_hook::TASK_ALLOC, FORK),
        (lsm_hook::BPRM_CHECK, EXEC),
        (lsm_hook::INODE_UNLINK, UNLINK),
        (lsm_hook::INODE_RENAME, RENAME),
        (lsm_hook::INODE_MKDIR, MKDIR),
    ];
    table.into_iter().find(|(_, family)| family.contains(&nr))
}

/// How an errno fault picks its calls: the `nth` of each process, or each call with
/// `probability` (seeded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calls {
    pub nth: Option<u32>,
    pub probability: f64,
}

/// An errno fault by BPF LSM on `nr`, or None when no LSM hook sees that syscall.
pub fn lsm_errno(
    nr: Sysno,
    errno: i32,
    calls: Calls,
    count: Option<u32>,
    seed: u64,
    max_per_minute: u32,
) -> Option<FaultAction> {
    let (hook, family) = lsm_hook_for(nr)?;
    Some(FaultAction::Lsm {
        nr,
        errno,
        fault: LsmFault {
            hook,
            errno: errno as u32,
            nth: calls.nth.unwrap_or(0),
            count: count.unwrap_or(0),
            threshold: chaos_common::threshold(calls.probability),
            seed,
            max_per_minute,
            // Set when lowered (`kernel_faults`), for the whole run.
            dry_run: 0,
        },
        family,
    })
}

/// What the LSM backend can fail, for error messages.
pub const LSM_SYSCALLS: &str =
    "open/openat, read, write, connect, fork/clone, execve, unlink, rename and mkdir";

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(action: FaultAction, count: Option<u32>) -> FaultSpec {
        FaultSpec {
            index: 0,
            action,
            count,
            seed: 1,
            windows: Vec::new(),
            max_per_minute: 60,
            hit: Hit::Main,
        }
    }

    #[test]
    fn each_fault_lowers_to_its_kernel_rule_once() {
        let trigger = spec(
            FaultAction::Trigger {
                nr: Sysno::fdatasync,
                nth: 20,
                signal: Signal::SIGKILL,
            },
            Some(2),
        );
        let (hook, family) = lsm_hook_for(Sysno::openat).unwrap();
        let lsm = spec(
            FaultAction::Lsm {
                nr: Sysno::openat,
                errno: libc::EIO,
                fault: LsmFault {
                    hook,
                    errno: libc::EIO as u32,
                    nth: 0,
                    count: 1,
                    threshold: u64::MAX,
                    seed: 1,
                    max_per_minute: 60,
                    dry_run: 0,
                },
                family,
            },
            Some(1),
        );
        let k = kernel_faults(&[trigger.clone(), lsm.clone()], true);
        assert_eq!(
            (k.trigger.nth, k.trigger.count, k.trigger.dry_run),
            (20, 2, 1)
        );
        assert_eq!(k.trigger_nr, Some(Sysno::fdatasync));
        assert_eq!((k.lsm.hook, k.lsm.dry_run), (hook, 1));
        assert!(k.confirm.contains(&(Sysno::openat.id() as u32)));
        assert_eq!(k.confirm.len(), family.len());
        assert!(!k.watchdog);
        assert_eq!(
            (trigger.rule(), lsm.rule(), trigger.kind(), lsm.kind()),
            (
                Some(KernelRule::Trigger),
                Some(KernelRule::Lsm),
                FaultKind::Signal,
                FaultKind::Errno
            )
        );
        assert_eq!(
            trigger.describe(),
            "SIGKILL from the kernel at call 20 of fdatasync (at most 2 in all; the call completes)"
        );
        assert_eq!(
            lsm.describe(),
            "openat fails with EIO (probability 1.000; lsm, at most 1 in all)"
        );
    }

    #[test]
    fn a_signal_schedule_needs_no_kernel_rule_but_a_freeze_needs_the_watchdog() {
        let freeze = spec(
            FaultAction::Signal(SignalSchedule {
                signal: Signal::SIGSTOP,
                interval: Duration::from_secs(1),
                jitter: Duration::ZERO,
                escalate_after: None,
                freeze_for: Some(Duration::from_secs(3)),
                timing: Timing::Grid,
                power: false,
            }),
            Some(1),
        );
        let k = kernel_faults(std::slice::from_ref(&freeze), false);
        assert!(k.watchdog && k.trigger_nr.is_none() && k.lsm.hook == 0 && k.confirm.is_empty());
        assert_eq!(freeze.rule(), None);
        assert_eq!(freeze.describe(), "SIGSTOP x1, every 1s, SIGCONT 3s later");
    }
}
