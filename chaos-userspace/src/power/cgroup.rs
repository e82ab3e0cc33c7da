//! The cgroup v2 freezer that holds a service still across a power cut, and the processes a
//! cut kills: the supervisor's descendants in the frozen cgroup, never pid 1, chaos or a
//! kernel thread. A cgroup that holds anything else is not frozen at all.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::target::proc;

/// Longest wait for the kernel to report a cgroup frozen, or killed processes gone.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Freezes `cgroup` and waits until `cgroup.events` says `frozen 1`: from then on no process
/// in it runs, so none can acknowledge anything.
pub fn freeze(cgroup: &Path) -> std::io::Result<()> {
    set_frozen(cgroup, true)
}

/// Thaws `cgroup` (whether or not it was frozen).
pub fn thaw(cgroup: &Path) -> std::io::Result<()> {
    set_frozen(cgroup, false)
}

fn set_frozen(cgroup: &Path, frozen: bool) -> std::io::Result<()> {
    std::fs::write(cgroup.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let deadline = Instant::now() + SETTLE;
    loop {
        let events = std::fs::read_to_string(cgroup.join("cgroup.events"))?;
        if events.lines().any(|l| l == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "{} did not report `{want}` within {SETTLE:?}",
                cgroup.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every process in `cgroup` and the cgroups below it.
pub fn procs(cgroup: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    collect(cgroup, &mut out);
    out.sort_unstable();
    out.dedup();
    out
}

fn collect(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.parse::<u32>().ok()));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect(&entry.path(), out);
        }
    }
}

/// What the frozen cgroup holds, by where each process stands to the supervisors.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// The supervisors' descendants: the service, which a cut kills.
    pub service: Vec<u32>,
    /// Processes neither a supervisor, nor above one, nor below one: a cut would freeze
    /// them, and chaos never touches what it was not pointed at.
    pub strangers: Vec<u32>,
}

/// Sorts `cgroup`'s processes: the supervisors in `keep` and what they descend from stay
/// (frozen, never killed), their descendants are the service, anything else a stranger.
/// Pid 1, this process and kernel threads are never the service.
pub fn members(cgroup: &Path, keep: &[u32]) -> Members {
    let proc_dir = Path::new("/proc");
    let parent = |pid: u32| proc::stat(proc_dir, pid).map(|s| s.ppid);
    let me = std::process::id();
    let mut out = Members::default();
    for pid in procs(cgroup) {
        if pid <= 1 || pid == me || proc::stat(proc_dir, pid).is_none_or(|s| s.is_kthread()) {
            continue;
        }
        let supervisor = keep.contains(&pid);
        let below = keep.iter().any(|&k| descends(pid, k, &parent));
        let above = keep.iter().any(|&k| descends(k, pid, &parent));
        if below && !supervisor {
            out.service.push(pid);
        } else if !supervisor && !above {
            out.strangers.push(pid);
        }
    }
    out
}

/// Whether `pid` descends from `from`.
fn descends(pid: u32, from: u32, parent: &dyn Fn(u32) -> Option<u32>) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        match parent(p) {
            Some(pp) if pp == from => return true,
            Some(pp) if pp > 1 => p = pp,
            _ => return false,
        }
    }
    false
}

/// The processes a cut kills: the supervisors' descendants in `cgroup`, or an error naming
/// the strangers it also holds (nothing is frozen for them).
pub fn service(cgroup: &Path, keep: &[u32]) -> Result<Vec<u32>, String> {
    let m = members(cgroup, keep);
    if m.strangers.is_empty() {
        return Ok(m.service);
    }
    Err(format!(
        "{} also holds {}, which are neither the supervisor ({}) nor what it runs: chaos freezes only its target; run the service in a cgroup of its own",
        cgroup.display(),
        m.strangers
            .iter()
            .map(|p| format!("{p} ({})", proc::comm_of(*p)))
            .collect::<Vec<_>>()
            .join(", "),
        keep.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// SIGKILLs each process through a pidfd and waits until every one has exited; returns
/// the ones it killed, with their names.
pub fn kill_all(pids: &[u32]) -> std::io::Result<Vec<(u32, String)>> {
    let mut held: Vec<(u32, String, OwnedFd)> = Vec::new();
    for &pid in pids {
        let comm = proc::comm_of(pid);
        // SAFETY: plain syscall; the fd it returns is owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            continue; // already gone
        }
        // SAFETY: a new fd, ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: plain syscall on our pidfd.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            held.push((pid, comm, fd));
        }
    }
    let deadline = Instant::now() + SETTLE;
    for (pid, _, fd) in &held {
        loop {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut p, 1, 10) };
            if ready > 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "process {pid} did not exit within {SETTLE:?} of SIGKILL"
                )));
            }
        }
    }
    Ok(held.into_iter().map(|(pid, comm, _)| (pid, comm)).collect())
}

/// The cgroup a power cut freezes: `named` (the target's cgroup), else the supervisor's.
/// It must hold the supervisor, and nothing but the supervisor, what it descends from and
/// what it runs: not chaos, not pid 1, no stranger.
pub fn choose(named: Option<&Path>, supervisor: u32, instances: &[u32]) -> Result<PathBuf, String> {
    let root = crate::target::cgroup2_mount().ok_or("no cgroup2 filesystem is mounted")?;
    let of = |pid: u32| -> Option<PathBuf> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        Some(root.join(rel.trim_start_matches('/')))
    };
    if supervisor == 1 {
        return Err(
            "power_loss keeps the supervisor frozen until the filesystem is back, and pid 1 (systemd) is never frozen: run the service under a supervisor in a cgroup of its own".into(),
        );
    }
    let sup = of(supervisor)
        .ok_or_else(|| format!("cannot read the cgroup of the supervisor {supervisor}"))?;
    let chosen = named.map_or_else(|| sup.clone(), Path::to_path_buf);
    if chosen == root {
        return Err(format!(
            "power_loss freezes the service's cgroup, and the supervisor {supervisor} is in the root cgroup: start it in a cgroup of its own"
        ));
    }
    if !sup.starts_with(&chosen) {
        return Err(format!(
            "the supervisor {supervisor} is not in {}, which power_loss would freeze",
            chosen.display()
        ));
    }
    for (pid, who) in [(std::process::id(), "chaos itself"), (1, "pid 1")] {
        if of(pid).is_some_and(|c| c.starts_with(&chosen)) {
            return Err(format!(
                "{} holds {who}, and power_loss freezes it: start the service in a cgroup of its own",
                chosen.display()
            ));
        }
    }
    let service = service(&chosen, &[supervisor])?;
    if let Some(outside) = instances.iter().find(|i| !service.contains(i)) {
        return Err(format!(
            "the instance {outside} is not in {}, which power_loss freezes: it would run on through the cut",
            chosen.display()
        ));
    }
    if !chosen.join("cgroup.freeze").exists() {
        return Err(format!(
            "{} has no cgroup.freeze (the cgroup v2 freezer, Linux 5.2)",
            chosen.display()
        ));
    }
    Ok(chosen)
}
