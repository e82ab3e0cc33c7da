//! Processes as /proc shows them: the one place chaos parses `/proc/PID/stat`, `comm`,
//! `exe` and `status`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// One process as /proc/PID/stat and /proc/PID/exe show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub exe: Option<PathBuf>,
}

/// The fields of /proc/PID/stat chaos reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    /// `flags` (field 9): PF_* bits, PF_KTHREAD among them.
    pub flags: u64,
    /// `starttime` (field 22): when the process started, in clock ticks since boot. A pid and
    /// its start time name one process, even after the pid is reused.
    pub start_ticks: u64,
}

/// `PF_KTHREAD`, include/linux/sched.h.
const PF_KTHREAD: u64 = 0x0020_0000;

impl Stat {
    pub fn is_kthread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// Parses /proc/PID/stat: `pid (comm) state ppid ...`, where comm may hold spaces and
/// parentheses, so the last `)` ends it (proc(5)).
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    // Fields after the comm, counted from field 3 (state) as index 0.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse().ok());
    Some(Stat {
        comm,
        ppid: field(4)? as u32,
        flags: field(9).unwrap_or(0),
        start_ticks: field(22).unwrap_or(0),
    })
}

/// /proc/PID/stat of `pid` under `proc` (normally /proc), or None when it is gone.
pub fn stat(proc: &Path, pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text)
}

/// Every pid under `proc`.
pub fn pids(proc: &Path) -> impl Iterator<Item = u32> {
    std::fs::read_dir(proc)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// One process as /proc shows it, or None when it is gone.
pub fn process(proc: &Path, pid: u32) -> Option<Proc> {
    let stat = stat(proc, pid)?;
    let exe = std::fs::read_link(proc.join(pid.to_string()).join("exe")).ok();
    Some(Proc {
        pid,
        ppid: stat.ppid,
        comm: stat.comm,
        exe,
    })
}

/// The process title: /proc/PID/cmdline with its NULs as spaces and no trailing blanks
/// (what `ps` shows; PostgreSQL pads a title it rewrites in place), or None for a kernel
/// thread or a process gone.
pub fn title(proc: &Path, pid: u32) -> Option<String> {
    let raw = std::fs::read(proc.join(pid.to_string()).join("cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw).replace('\0', " ");
    let title = text.trim_end();
    (!title.is_empty()).then(|| title.to_string())
}

/// Every process under `proc`; those that vanish while read are skipped.
pub fn processes(proc: &Path) -> BTreeMap<u32, Proc> {
    pids(proc)
        .filter_map(|pid| process(proc, pid).map(|p| (pid, p)))
        .collect()
}

/// When `pid` started (clock ticks since boot), or None when it is gone.
pub fn start_ticks(proc: &Path, pid: u32) -> Option<u64> {
    stat(proc, pid).map(|s| s.start_ticks)
}

/// A process's command name (/proc/PID/comm), or "" once it is gone.
pub fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default()
}

/// A process's executable (/proc/PID/exe), or "" once it is gone.
pub fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The thread group id of `pid` (`Tgid:` in /proc/PID/status), or None if it does not exist.
pub fn tgid_of(proc: &Path, pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(proc.join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat =
            parse_stat("42 (a (b) c) S 7 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0")
                .unwrap();
        assert_eq!(
            (stat.comm.as_str(), stat.ppid, stat.flags, stat.start_ticks),
            ("a (b) c", 7, 4194560, 123456)
        );
        assert!(!stat.is_kthread());
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let proc = Path::new("/proc");
        let p = process(proc, me).unwrap();
        assert_eq!(p.ppid, std::os::unix::process::parent_id());
        assert!(start_ticks(proc, me).unwrap() > 0);
        assert_eq!(tgid_of(proc, me), Some(me));
    }
}
