//! A fault as chaos records it: what it was ([`FaultKind`]), how it was delivered
//! ([`Backend`]), whom it hit, and the kernel event that proved it ([`Proof`]).
//!
//! Three words are kept apart across the crate: a fault's *spec* is what is planned
//! (`inject::spec::FaultSpec`), its *record* is what was done ([`FaultRecord`]), and an
//! episode's *cause* is the signal the kernel saw kill the instance
//! (`measure::episode::Cause`), whoever sent it.

use serde::{Deserialize, Serialize};

/// What a fault does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A signal reaches the process.
    Signal,
    /// A syscall fails with an errno.
    Errno,
    /// A power cut: every write after it is lost, the service killed, its filesystem
    /// remounted.
    PowerLoss,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Signal => "signal",
            FaultKind::Errno => "errno",
            FaultKind::PowerLoss => "power_loss",
        }
    }
}

/// How a fault was delivered. The wire names are those of `chaos inject --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backend {
    /// pidfd_send_signal on a pidfd opened when the target was chosen.
    #[serde(rename = "pidfd")]
    Pidfd,
    /// The SIGKILL that follows a signal the process outlived (`--escalate-after`).
    #[serde(rename = "pidfd (escalation)")]
    PidfdEscalation,
    /// The SIGCONT that ends a freeze (`--for`).
    #[serde(rename = "pidfd (thaw)")]
    PidfdThaw,
    /// bpf_send_signal from a syscall tracepoint, at the Nth call.
    #[serde(rename = "bpf_send_signal")]
    BpfSendSignal,
    /// Seccomp user notification: the call fails with the errno and does not run.
    #[serde(rename = "seccomp")]
    Seccomp,
    /// Seccomp user notification: the signal is sent and the call fails with EINTR.
    #[serde(rename = "seccomp (before the call)")]
    SeccompBefore,
    /// A BPF LSM program returns the errno.
    #[serde(rename = "lsm")]
    Lsm,
    /// dm-flakey drops every write from the cut on; the frozen service is SIGKILLed
    /// through pidfds.
    #[serde(rename = "dm-flakey")]
    PowerCut,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Pidfd => "pidfd",
            Backend::PidfdEscalation => "pidfd (escalation)",
            Backend::PidfdThaw => "pidfd (thaw)",
            Backend::BpfSendSignal => "bpf_send_signal",
            Backend::Seccomp => "seccomp",
            Backend::SeccompBefore => "seccomp (before the call)",
            Backend::Lsm => "lsm",
            Backend::PowerCut => "dm-flakey",
        }
    }

    /// The kernel fires faults of this backend on its own, by a rule armed in advance.
    pub fn rule(self) -> Option<KernelRule> {
        match self {
            Backend::BpfSendSignal => Some(KernelRule::Trigger),
            Backend::Lsm => Some(KernelRule::Lsm),
            _ => None,
        }
    }
}

/// A rule the kernel programs apply on their own: one of each at most, each with a slot of
/// the `DISARMED` map (`chaos_common::fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KernelRule {
    /// bpf_send_signal at the Nth call of a syscall.
    #[serde(rename = "signal_trigger")]
    Trigger,
    /// An LSM hook fails the call.
    #[serde(rename = "lsm_errno")]
    Lsm,
}

impl KernelRule {
    pub const ALL: [KernelRule; 2] = [KernelRule::Trigger, KernelRule::Lsm];

    /// The rule's slot in `DISARMED` and its value in `InjectEvent::fault`.
    pub fn slot(self) -> u32 {
        match self {
            KernelRule::Trigger => chaos_common::fault::TRIGGER_SIGNAL,
            KernelRule::Lsm => chaos_common::fault::LSM_ERRNO,
        }
    }

    pub fn from_slot(slot: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.slot() == slot)
    }

    pub fn index(self) -> usize {
        match self {
            KernelRule::Trigger => 0,
            KernelRule::Lsm => 1,
        }
    }

    /// The wire name (`signal_trigger`, `lsm_errno`).
    pub fn as_str(self) -> &'static str {
        match self {
            KernelRule::Trigger => "signal_trigger",
            KernelRule::Lsm => "lsm_errno",
        }
    }

    pub fn backend(self) -> Backend {
        match self {
            KernelRule::Trigger => Backend::BpfSendSignal,
            KernelRule::Lsm => Backend::Lsm,
        }
    }
}

/// Where a process stands in the service it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An instance's main process: the supervisor's child (`chaos run`, `measure`), or the
    /// top of a target set's process tree (`chaos inject`).
    Main,
    /// A descendant of a main process (a forked worker, a backend).
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Worker => "worker",
        }
    }
}

/// Which processes a signal fault may hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hit {
    /// Main processes only (the default).
    #[default]
    Main,
    Worker,
    Any,
}

impl Hit {
    pub fn allows(self, role: Role) -> bool {
        matches!(
            (self, role),
            (Hit::Any, _) | (Hit::Main, Role::Main) | (Hit::Worker, Role::Worker)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hit::Main => "main",
            Hit::Worker => "worker",
            Hit::Any => "any",
        }
    }
}

/// One fault injected (or, in a dry run, that would have been).
///
/// Wire format (`chaos inject --json`, the `faults` of a run's result): `id`, `ts_ns`
/// (CLOCK_MONOTONIC), `pid`, `tid` (for syscall faults), `comm`, `role` (`main`, `worker`, or
/// null when unknown), `ppid` (its parent then, or null), `fault` (`signal`, `errno`), `value`
/// (`SIGTERM`, `EIO`), `syscall` (or null), `nth` (which call of the process, or null),
/// `backend` (see [`Backend`]), `dry_run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub id: u64,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: Option<u32>,
    pub comm: String,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub ppid: Option<u32>,
    #[serde(rename = "fault")]
    pub kind: FaultKind,
    pub value: String,
    pub syscall: Option<String>,
    pub nth: Option<u32>,
    pub backend: Backend,
    pub dry_run: bool,
}

/// The kernel event that shows a fault took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub id: u64,
    pub ts_ns: u64,
    /// What was seen: `SIGTERM delivered`, `exited, killed by SIGKILL`, `openat returned
    /// EIO in 4242`, ...
    pub by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_backends_keep_their_wire_names() {
        for backend in [
            Backend::Pidfd,
            Backend::PidfdEscalation,
            Backend::PidfdThaw,
            Backend::BpfSendSignal,
            Backend::Seccomp,
            Backend::SeccompBefore,
            Backend::Lsm,
            Backend::PowerCut,
        ] {
            let json = serde_json::to_string(&backend).unwrap();
            assert_eq!(json, format!("\"{}\"", backend.as_str()));
            assert_eq!(serde_json::from_str::<Backend>(&json).unwrap(), backend);
        }
        for rule in KernelRule::ALL {
            assert_eq!(KernelRule::from_slot(rule.slot()), Some(rule));
            assert_eq!(rule.backend().rule(), Some(rule));
        }
        assert_eq!(
            serde_json::to_string(&FaultKind::Errno).unwrap(),
            "\"errno\""
        );
    }
}
