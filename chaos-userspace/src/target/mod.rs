//! Target selection: what the user named, checked before anything touches the kernel, the
//! processes that already match when observation starts, and what no fault may touch
//! ([`denylist`]).

pub mod denylist;
pub mod proc;
pub mod sockets;

use std::{
    collections::BTreeMap,
    ffi::OsString,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use chaos_common::{COMM_LEN, TargetInfo, reason, target_flag};

/// What the user asked for, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSpec {
    pub pids: Vec<u32>,
    /// Follow children of `pids` (and of the launched command).
    pub follow: bool,
    pub comms: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    /// `-- CMD [ARGS...]`: launched by chaos and targeted from its first instruction.
    pub command: Vec<OsString>,
}

/// A validated cgroup v2 directory and the ids (inode numbers) of it and its descendants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRule {
    pub path: PathBuf,
    pub ids: Vec<u64>,
}

/// A spec checked against the machine: every pid exists, every name fits, every cgroup is a
/// cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    pub pids: Vec<u32>,
    pub follow: bool,
    pub comms: Vec<[u8; COMM_LEN]>,
    pub cgroups: Vec<CgroupRule>,
    pub command: Vec<OsString>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("no target: name one with --pid, --comm, --cgroup, --unit or -- CMD")]
    Empty,
    #[error("--pid {0}: no such process")]
    NoProcess(u32),
    #[error("--pid {pid}: {pid} is a thread of process {tgid}; name the process")]
    Thread { pid: u32, tgid: u32 },
    #[error("--comm: the name is empty")]
    EmptyComm,
    #[error("--comm {0:?}: longer than the kernel's 15-byte command name; give the first 15 bytes")]
    CommTooLong(String),
    #[error("--cgroup {0}: no such directory")]
    NoCgroup(PathBuf),
    #[error("--cgroup {0}: not a directory of a cgroup v2 filesystem")]
    NotCgroup2(PathBuf),
    #[error("--cgroup {path}: cannot read it: {message}")]
    CgroupRead { path: PathBuf, message: String },
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

impl TargetSpec {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.comms.is_empty()
            && self.cgroups.is_empty()
            && self.command.is_empty()
    }

    /// Checks the spec against the machine (under `proc`, normally /proc).
    pub fn validate(&self, proc: &Path) -> Result<Targets, TargetError> {
        if self.is_empty() {
            return Err(TargetError::Empty);
        }
        for &pid in &self.pids {
            match proc::tgid_of(proc, pid) {
                None => return Err(TargetError::NoProcess(pid)),
                Some(tgid) if tgid != pid => return Err(TargetError::Thread { pid, tgid }),
                Some(_) => {}
            }
        }
        let comms = self
            .comms
            .iter()
            .map(|c| comm_key(c))
            .collect::<Result<_, _>>()?;
        let cgroups = self
            .cgroups
            .iter()
            .map(|p| cgroup_rule(p))
            .collect::<Result<_, _>>()?;
        Ok(Targets {
            pids: self.pids.clone(),
            follow: self.follow,
            comms,
            cgroups,
            command: self.command.clone(),
        })
    }
}

/// A command name as the kernel stores it: at most 15 bytes, NUL-padded.
pub fn comm_key(name: &str) -> Result<[u8; COMM_LEN], TargetError> {
    if name.is_empty() {
        return Err(TargetError::EmptyComm);
    }
    if name.len() > COMM_LEN - 1 {
        return Err(TargetError::CommTooLong(name.into()));
    }
    let mut key = [0; COMM_LEN];
    key[..name.len()].copy_from_slice(name.as_bytes());
    Ok(key)
}

/// Where the cgroup v2 filesystem is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a
/// hybrid machine).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| PathBuf::from(f[1]))
}

/// `path`'s key in `TARGET_CGROUP_PATHS`: its path below the cgroup2 mount, as the kernel
/// names it in cgroup:cgroup_mkdir (`/system.slice/a.service`), NUL-padded; `None` when it is
/// too long or not under the mount.
pub fn cgroup_path_key(path: &Path) -> Option<[u8; chaos_common::CGROUP_PATH_LEN]> {
    let below = path.strip_prefix(cgroup2_mount()?).ok()?;
    let name = format!("/{}", below.display());
    let mut key = [0u8; chaos_common::CGROUP_PATH_LEN];
    (name.len() < key.len()).then(|| {
        key[..name.len()].copy_from_slice(name.as_bytes());
        key
    })
}

pub fn cgroup_rule(path: &Path) -> Result<CgroupRule, TargetError> {
    if !path.is_dir() {
        return Err(TargetError::NoCgroup(path.into()));
    }
    let fs = nix::sys::statfs::statfs(path).map_err(|e| TargetError::CgroupRead {
        path: path.into(),
        message: e.desc().into(),
    })?;
    if fs.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
        return Err(TargetError::NotCgroup2(path.into()));
    }
    let mut ids = Vec::new();
    collect_cgroup_ids(path, &mut ids).map_err(|e| TargetError::CgroupRead {
        path: path.into(),
        message: e.to_string(),
    })?;
    Ok(CgroupRule {
        path: path.into(),
        ids,
    })
}

/// On cgroup v2 the cgroup id the kernel reports (`bpf_get_current_cgroup_id`, the
/// cgroup_attach_task tracepoint) is the kernfs inode number of the directory.
fn collect_cgroup_ids(dir: &Path, ids: &mut Vec<u64>) -> std::io::Result<()> {
    ids.push(std::fs::metadata(dir)?.ino());
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_cgroup_ids(&entry.path(), ids)?;
        }
    }
    Ok(())
}

/// The processes that match the targets when observation starts, with why.
///
/// `processes` lists (pid, comm) of every process; `cgroup_procs` the pids found in each
/// target cgroup's `cgroup.procs` files. Children forked later join in the kernel.
pub fn initial_members(
    targets: &Targets,
    processes: impl IntoIterator<Item = (u32, String)>,
    cgroup_procs: impl IntoIterator<Item = u32>,
) -> BTreeMap<u32, TargetInfo> {
    let flags = if targets.follow {
        target_flag::FOLLOW
    } else {
        0
    };
    let mut members = BTreeMap::<u32, TargetInfo>::new();
    let mut add = |pid: u32, reasons: u32| {
        let info = members.entry(pid).or_default();
        info.reasons |= reasons;
        info.flags |= flags;
    };
    for &pid in &targets.pids {
        add(pid, reason::PID);
    }
    for (pid, comm) in processes {
        if comm_key(&comm).is_ok_and(|key| targets.comms.contains(&key)) {
            add(pid, reason::COMM);
        }
    }
    for pid in cgroup_procs {
        add(pid, reason::CGROUP);
    }
    members
}

/// Puts what `targets` names now in the kernel's set through `insert`: the processes of
/// `processes` (pid, comm) and of its cgroups, then those that joined while they were being
/// put there ([`catch_up`]). Returns every member put there.
pub fn enlist<E>(
    targets: &Targets,
    processes: impl IntoIterator<Item = (u32, String)>,
    mut insert: impl FnMut(&BTreeMap<u32, TargetInfo>) -> Result<(), E>,
) -> Result<BTreeMap<u32, TargetInfo>, E> {
    let mut members = initial_members(targets, processes, scan_cgroups(&targets.cgroups));
    insert(&members)?;
    catch_up(
        &mut members,
        &targets.cgroups,
        (targets.follow, false),
        insert,
    )?;
    Ok(members)
}

/// Processes that joined between the scan that found the members and the moment the kernel
/// took over (a child a followed member forked, a process that moved into a target cgroup):
/// neither the scan nor the kernel's programs saw them. `procs` and `cgroup_pids` are a scan
/// made after the members were in the kernel's set. `children`: the members' children count
/// (`chaos measure` and `run` take an instance's existing workers; `--pid` names one process).
pub fn late_members(
    members: &BTreeMap<u32, TargetInfo>,
    procs: &BTreeMap<u32, proc::Proc>,
    cgroup_pids: &[u32],
    follow: bool,
    children: bool,
) -> BTreeMap<u32, TargetInfo> {
    let mut late = BTreeMap::new();
    for p in procs.values() {
        if !children || members.contains_key(&p.pid) {
            continue;
        }
        if let Some(parent) = members.get(&p.ppid)
            && parent.flags & target_flag::FOLLOW != 0
        {
            late.insert(
                p.pid,
                TargetInfo {
                    reasons: parent.reasons & (reason::PID | reason::CGROUP),
                    flags: parent.flags,
                },
            );
        }
    }
    for &pid in cgroup_pids {
        if !members.contains_key(&pid) {
            let info = late.entry(pid).or_insert(TargetInfo {
                reasons: 0,
                flags: if follow { target_flag::FOLLOW } else { 0 },
            });
            info.reasons |= reason::CGROUP;
        }
    }
    late
}

/// Adds [`late_members`] through `insert` until a scan finds none (each round closes the
/// window the previous insertion left; a fork storm is cut off after a few rounds).
pub fn catch_up<E>(
    members: &mut BTreeMap<u32, TargetInfo>,
    cgroups: &[CgroupRule],
    (follow, children): (bool, bool),
    mut insert: impl FnMut(&BTreeMap<u32, TargetInfo>) -> Result<(), E>,
) -> Result<(), E> {
    for _ in 0..8 {
        let procs = proc::processes(Path::new("/proc"));
        let late = late_members(members, &procs, &scan_cgroups(cgroups), follow, children);
        if late.is_empty() {
            break;
        }
        insert(&late)?;
        members.extend(late);
    }
    Ok(())
}

/// Every (pid, comm) under `proc`. Processes that vanish while being read are skipped.
pub fn scan_processes(proc: &Path) -> Vec<(u32, String)> {
    proc::pids(proc)
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(proc.join(pid.to_string()).join("comm")).ok()?;
            Some((pid, comm.trim_end_matches('\n').to_string()))
        })
        .collect()
}

/// The pids in `cgroup.procs` of each target cgroup and its descendants.
pub fn scan_cgroups(rules: &[CgroupRule]) -> Vec<u32> {
    let mut pids = Vec::new();
    for rule in rules {
        walk_procs(&rule.path, &mut pids);
    }
    pids
}

fn walk_procs(dir: &Path, pids: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk_procs(&entry.path(), pids);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(entries: &[(u32, u32, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for &(pid, tgid, comm) in entries {
            let p = dir.path().join(pid.to_string());
            std::fs::create_dir(&p).unwrap();
            std::fs::write(
                p.join("status"),
                format!("Name:\t{comm}\nTgid:\t{tgid}\nPid:\t{pid}\n"),
            )
            .unwrap();
            std::fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
        }
        dir
    }

    fn spec() -> TargetSpec {
        TargetSpec {
            follow: true,
            ..Default::default()
        }
    }

    #[test]
    fn refuses_empty_missing_thread_and_bad_names() {
        let proc = fake_proc(&[(100, 100, "svc"), (101, 100, "svc")]);
        assert_eq!(spec().validate(proc.path()), Err(TargetError::Empty));
        let pid = |p| TargetSpec {
            pids: vec![p],
            ..spec()
        };
        assert_eq!(pid(7).validate(proc.path()), Err(TargetError::NoProcess(7)));
        assert_eq!(
            pid(101).validate(proc.path()),
            Err(TargetError::Thread {
                pid: 101,
                tgid: 100
            })
        );
        assert!(pid(100).validate(proc.path()).is_ok());
        let comm = |c: &str| TargetSpec {
            comms: vec![c.into()],
            ..spec()
        };
        assert_eq!(comm("").validate(proc.path()), Err(TargetError::EmptyComm));
        assert_eq!(
            comm("a-very-long-command")
                .validate(proc.path())
                .unwrap_err()
                .to_string(),
            "--comm \"a-very-long-command\": longer than the kernel's 15-byte command name; give the first 15 bytes"
        );
        let cg = TargetSpec {
            cgroups: vec!["/nonexistent/cg".into()],
            ..spec()
        };
        assert_eq!(
            cg.validate(proc.path()),
            Err(TargetError::NoCgroup("/nonexistent/cg".into()))
        );
        let not_cg = TargetSpec {
            cgroups: vec![proc.path().into()],
            ..spec()
        };
        assert_eq!(
            not_cg.validate(proc.path()),
            Err(TargetError::NotCgroup2(proc.path().into()))
        );
    }

    #[test]
    fn initial_members_merge_reasons() {
        let proc = fake_proc(&[(100, 100, "svc"), (200, 200, "svc"), (300, 300, "other")]);
        let spec = TargetSpec {
            pids: vec![100],
            comms: vec!["svc".into()],
            ..spec()
        };
        let targets = spec.validate(proc.path()).unwrap();
        let members = initial_members(&targets, scan_processes(proc.path()), [300]);
        assert_eq!(members.len(), 3);
        assert_eq!(members[&100].reasons, reason::PID | reason::COMM);
        assert_eq!(members[&200].reasons, reason::COMM);
        assert_eq!(members[&300].reasons, reason::CGROUP);
        assert!(members.values().all(|m| m.flags == target_flag::FOLLOW));

        let no_follow = Targets {
            follow: false,
            ..targets
        };
        let members = initial_members(&no_follow, Vec::new(), []);
        assert_eq!(
            members[&100],
            TargetInfo {
                reasons: reason::PID,
                flags: 0
            }
        );
    }

    #[test]
    fn a_child_forked_before_its_parent_joined_and_a_late_cgroup_member_are_caught_up() {
        let followed = TargetInfo {
            reasons: reason::PID,
            flags: target_flag::FOLLOW,
        };
        let members = BTreeMap::from([(10, followed), (11, followed)]);
        let proc = |pid, ppid| proc::Proc {
            pid,
            ppid,
            comm: "svc".into(),
            exe: None,
        };
        let procs = BTreeMap::from([
            (10, proc(10, 1)),
            (11, proc(11, 10)),
            (12, proc(12, 11)),
            (13, proc(13, 99)),
        ]);
        let late = late_members(&members, &procs, &[14, 10], false, true);
        assert_eq!(late.keys().copied().collect::<Vec<_>>(), [12, 14]);
        assert_eq!(late[&12], followed, "as the kernel would have it at fork");
        assert_eq!(late[&14].reasons, reason::CGROUP);
        assert_eq!(late[&14].flags, 0);
        // `--pid` names one process: its children are not taken for it.
        let late = late_members(&members, &procs, &[], true, false);
        assert!(late.is_empty());
    }
}
