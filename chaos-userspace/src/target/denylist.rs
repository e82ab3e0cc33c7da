//! What no fault may touch, whatever the flags: pid 1, kernel threads, chaos itself and its
//! ancestors (the shell, the terminal, the session that started it), and the system's own
//! supervisors and session infrastructure by name. A refusal names the reason.

use std::path::Path;

use super::proc::{self, Proc};

/// Command names (as the kernel keeps them, 15 bytes at most) never faulted: init systems and
/// their helpers, remote access, the message bus, logging, device management, login.
pub const DENIED_COMMS: &[&str] = &[
    "init",
    "systemd",
    "systemd-journal",
    "systemd-udevd",
    "systemd-logind",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesyn",
    "systemd-userdbd",
    "(sd-pam)",
    "journald",
    "udevd",
    "sshd",
    "sshd-session",
    "dbus-daemon",
    "dbus-broker",
    "dbus-broker-lau",
    "login",
    "agetty",
    "getty",
    "cron",
    "containerd",
    "dockerd",
    "runsvdir",
    "process_api",
];

/// Why a process may not be faulted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("pid 1 (the init of this machine) is never a target")]
    Init,
    #[error("{0} is a kernel thread")]
    KernelThread(u32),
    #[error("{0} is chaos itself")]
    Myself(u32),
    #[error("{pid} ({comm}) is an ancestor of chaos (the session that runs it)")]
    Ancestor { pid: u32, comm: String },
    #[error("{pid} ({comm}) is system infrastructure on the built-in denylist")]
    System { pid: u32, comm: String },
}

/// The denylist as it stands for this chaos process.
#[derive(Debug, Clone)]
pub struct Denylist {
    me: u32,
    ancestors: Vec<(u32, String)>,
}

impl Denylist {
    /// Reads chaos's ancestors from `proc` (normally /proc).
    pub fn new(proc: &Path) -> Self {
        let me = std::process::id();
        let mut ancestors = Vec::new();
        let mut pid = ppid_of(proc, me);
        while let Some(p) = pid.filter(|&p| p > 0) {
            let comm = std::fs::read_to_string(proc.join(p.to_string()).join("comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            ancestors.push((p, comm));
            pid = ppid_of(proc, p);
            if ancestors.len() > 64 {
                break;
            }
        }
        Self { me, ancestors }
    }

    /// Chaos and its ancestors (for the kernel's deny map).
    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.me).chain(self.ancestors.iter().map(|(p, _)| *p))
    }

    /// Checks one process (`kthread`: its stat flags say kernel thread).
    pub fn check(&self, pid: u32, comm: &str, kthread: bool) -> Result<(), Denied> {
        if pid == 1 {
            return Err(Denied::Init);
        }
        if kthread || pid == 2 {
            return Err(Denied::KernelThread(pid));
        }
        if pid == self.me {
            return Err(Denied::Myself(pid));
        }
        if let Some((_, comm)) = self.ancestors.iter().find(|(p, _)| *p == pid) {
            return Err(Denied::Ancestor {
                pid,
                comm: comm.clone(),
            });
        }
        if DENIED_COMMS.contains(&comm) || comm.starts_with("systemd") {
            return Err(Denied::System {
                pid,
                comm: comm.into(),
            });
        }
        Ok(())
    }

    /// Checks a live process as /proc shows it.
    pub fn check_proc(&self, proc_dir: &Path, p: &Proc) -> Result<(), Denied> {
        self.check(p.pid, &p.comm, is_kthread(proc_dir, p.pid))
    }
}

fn ppid_of(proc_dir: &Path, pid: u32) -> Option<u32> {
    proc::stat(proc_dir, pid).map(|s| s.ppid)
}

/// Whether `pid` is a kernel thread (PF_KTHREAD in /proc/PID/stat's flags).
pub fn is_kthread(proc_dir: &Path, pid: u32) -> bool {
    proc::stat(proc_dir, pid).is_some_and(|s| s.is_kthread())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_each_kind_with_its_reason() {
        let list = Denylist::new(Path::new("/proc"));
        assert_eq!(list.check(1, "anything", false), Err(Denied::Init));
        assert_eq!(
            list.check(2, "kthreadd", false),
            Err(Denied::KernelThread(2))
        );
        assert_eq!(
            list.check(77, "kworker/0:1", true),
            Err(Denied::KernelThread(77))
        );
        let me = std::process::id();
        assert_eq!(list.check(me, "chaos", false), Err(Denied::Myself(me)));
        let parent = std::os::unix::process::parent_id();
        assert!(matches!(
            list.check(parent, "cargo", false),
            Err(Denied::Ancestor { .. })
        ));
        assert_eq!(
            list.check(4_000_000, "sshd", false)
                .unwrap_err()
                .to_string(),
            "4000000 (sshd) is system infrastructure on the built-in denylist"
        );
        assert!(list.check(4_000_000, "systemd-oomd", false).is_err());
        assert_eq!(list.check(4_000_000, "my-service", false), Ok(()));
        assert!(is_kthread(Path::new("/proc"), 2) || !Path::new("/proc/2").exists());
    }
}
