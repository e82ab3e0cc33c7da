//! Finding the service on the machine when measurement starts: its running instances, their
//! supervisors and the command name a replacement will have.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use chaos_common::{TargetInfo, reason, target_flag};

use super::service::{InitialInstance, InitialWorker};
use crate::bpf::TargetSet;
pub use crate::target::proc::{Proc, process, processes};
use crate::target::{CgroupRule, comm_key};

/// How the user named the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `--pid`: this is the first instance; its parent supervises it.
    Pid(u32),
    /// `--supervisor`: its children are the instances.
    Supervisor(u32),
    /// `--comm`: every process with this name; each one's parent supervises it.
    Comm(String),
    /// `--exe`: every process running this executable.
    Exe(PathBuf),
    /// `--cgroup`: the processes at the top of the cgroup's tree.
    Cgroup(CgroupRule),
    /// `--unit`: a systemd service, its main process, supervised by pid 1 (observed
    /// read-only) and followed through its cgroup.
    Unit {
        unit: Box<crate::systemd::UnitInfo>,
        cgroup: CgroupRule,
    },
}

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub comm: String,
    pub supervisors: Vec<u32>,
    /// True when the user named the supervisor (or it is implied by one named instance).
    pub explicit: bool,
    pub instances: Vec<InitialInstance>,
    /// The instances' descendants (see [`workers_and_ports`]).
    pub workers: Vec<InitialWorker>,
    /// The ports they listen on.
    pub ports: Vec<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoverError {
    #[error("{flag}: no such process")]
    NoProcess { flag: String },
    #[error("{what}: no running instance found; start the service first")]
    NoInstance { what: String },
    #[error("{what}: the instances have different names ({names}); pick one with --comm")]
    Ambiguous { what: String, names: String },
    #[error("--exe {0}: {1}")]
    Exe(PathBuf, String),
}

/// Finds the service on this machine now (/proc, and the selector's cgroups).
pub fn find_live(selector: &Selector, filter: Option<&str>) -> Result<Found, DiscoverError> {
    let procs = processes(Path::new("/proc"));
    let in_cgroup = match selector {
        Selector::Cgroup(rule) | Selector::Unit { cgroup: rule, .. } => {
            crate::target::scan_cgroups(std::slice::from_ref(rule))
        }
        _ => Vec::new(),
    };
    let mut found = find(selector, filter, &procs, &in_cgroup)?;
    (found.workers, found.ports) = workers_and_ports(&found);
    Ok(found)
}

/// Resolves the selector (with an optional `--comm` filter) against `procs`; `in_cgroup`
/// lists the pids of a `--cgroup` selector's cgroups.
pub fn find(
    selector: &Selector,
    filter: Option<&str>,
    procs: &BTreeMap<u32, Proc>,
    in_cgroup: &[u32],
) -> Result<Found, DiscoverError> {
    let named = |p: &Proc| filter.is_none_or(|c| p.comm == c);
    let (what, explicit, candidates): (String, bool, Vec<&Proc>) = match selector {
        Selector::Pid(pid) => {
            let p = procs.get(pid).ok_or_else(|| DiscoverError::NoProcess {
                flag: format!("--pid {pid}"),
            })?;
            (format!("--pid {pid}"), true, vec![p])
        }
        Selector::Supervisor(s) => {
            if !procs.contains_key(s) {
                return Err(DiscoverError::NoProcess {
                    flag: format!("--supervisor {s}"),
                });
            }
            let children = procs
                .values()
                .filter(|p| p.ppid == *s && named(p))
                .collect();
            (format!("--supervisor {s}"), true, children)
        }
        Selector::Comm(comm) => {
            let matching = procs.values().filter(|p| &p.comm == comm).collect();
            (format!("--comm {comm}"), false, top_of(matching))
        }
        Selector::Exe(path) => {
            let exe = std::fs::canonicalize(path)
                .map_err(|e| DiscoverError::Exe(path.clone(), e.to_string()))?;
            let matching = procs
                .values()
                .filter(|p| p.exe.as_deref() == Some(exe.as_path()) && named(p))
                .collect();
            (format!("--exe {}", path.display()), false, top_of(matching))
        }
        Selector::Unit { unit, .. } => {
            let what = format!("--unit {}", unit.name);
            let main = procs
                .get(&unit.main_pid)
                .ok_or_else(|| DiscoverError::NoProcess {
                    flag: format!("{what} (MainPID {})", unit.main_pid),
                })?;
            (what, true, vec![main])
        }
        Selector::Cgroup(rule) => {
            let members: BTreeSet<u32> = in_cgroup.iter().copied().collect();
            let inside = procs
                .values()
                .filter(|p| members.contains(&p.pid) && named(p))
                .collect();
            let what = format!("--cgroup {}", rule.path.display());
            (what, false, top_of(inside))
        }
    };
    if candidates.is_empty() {
        return Err(DiscoverError::NoInstance { what });
    }
    let names: BTreeSet<&str> = candidates.iter().map(|p| p.comm.as_str()).collect();
    if names.len() > 1 {
        return Err(DiscoverError::Ambiguous {
            what,
            names: names.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    let instances: Vec<InitialInstance> = candidates
        .iter()
        .map(|p| InitialInstance {
            pid: p.pid,
            supervisor: p.ppid,
            child: p.pid,
        })
        .collect();
    let mut supervisors: Vec<u32> = instances.iter().map(|i| i.supervisor).collect();
    supervisors.sort_unstable();
    supervisors.dedup();
    Ok(Found {
        comm: candidates[0].comm.clone(),
        supervisors,
        explicit,
        instances,
        workers: Vec::new(),
        ports: Vec::new(),
    })
}

/// The processes of `set` whose parent is not in it: instances, not their same-named workers.
fn top_of(set: Vec<&Proc>) -> Vec<&Proc> {
    let pids: BTreeSet<u32> = set.iter().map(|p| p.pid).collect();
    set.into_iter()
        .filter(|p| !pids.contains(&p.ppid))
        .collect()
}

/// What the service looks like beyond its instances, now: their descendants (workers) and
/// the TCP ports any of them listens on.
pub fn workers_and_ports(found: &Found) -> (Vec<InitialWorker>, Vec<u16>) {
    let proc = Path::new("/proc");
    let procs = processes(proc);
    let mut workers = Vec::new();
    let mut queue: Vec<u32> = found.instances.iter().map(|i| i.pid).collect();
    let mut all = queue.clone();
    while let Some(pid) = queue.pop() {
        for child in procs.values().filter(|p| p.ppid == pid) {
            workers.push(InitialWorker {
                pid: child.pid,
                parent: pid,
                comm: child.comm.clone(),
            });
            queue.push(child.pid);
            all.push(child.pid);
        }
    }
    workers.sort_by_key(|w| w.pid);
    let listening = crate::target::sockets::listening(proc);
    let mut ports: Vec<u16> = all
        .iter()
        .flat_map(|&pid| crate::target::sockets::ports_of(proc, pid, &listening))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    (workers, ports)
}

/// Puts the service in the target set: its supervisors and instances, following what they
/// fork, and its name (or cgroup) for replacements. Pid 1 and chaos itself are never targets:
/// an init-supervised service is followed through its name or cgroup instead, without the
/// fork and reap milestones.
pub fn follow(
    targets: &mut TargetSet,
    found: &Found,
    selector: &Selector,
) -> Result<(), crate::bpf::BpfError> {
    let me = std::process::id();
    let follow = |reasons| TargetInfo {
        reasons,
        flags: target_flag::FOLLOW,
    };
    let mut members = BTreeMap::new();
    for &pid in &found.supervisors {
        if pid > 1 && pid != me {
            members.insert(pid, follow(reason::PID));
        } else if pid == 1 && matches!(selector, Selector::Unit { .. }) {
            // systemd: its forks into the unit's cgroup and its reaps are seen; pid 1 itself
            // never joins the target set, so nothing of chaos's can act on it.
            targets.add_watcher(1)?;
        } else {
            log::warn!(
                "the supervisor is pid {pid}: chaos does not target it, so replacements are seen from their exec, without fork and reap"
            );
        }
    }
    for instance in &found.instances {
        members.insert(instance.pid, follow(reason::PID));
    }
    for worker in &found.workers {
        members.insert(worker.pid, follow(reason::PID));
    }
    if !found.explicit
        && let Ok(key) = comm_key(&found.comm)
    {
        targets.add_comm(key)?;
    }
    let cgroups: &[crate::target::CgroupRule] = match &selector {
        Selector::Cgroup(rule) | Selector::Unit { cgroup: rule, .. } => std::slice::from_ref(rule),
        _ => &[],
    };
    for rule in cgroups {
        targets.add_cgroup_rule(rule)?;
    }
    targets.add_members(&members)?;
    crate::target::catch_up(&mut members, cgroups, (true, true), |late| {
        targets.add_members(late)
    })
}

impl Selector {
    /// `--unit NAME`: resolved through systemd now (a running service, its cgroup).
    pub fn unit(name: &str) -> Result<Self, crate::systemd::UnitError> {
        let unit = crate::systemd::resolve_now(name)?;
        let dir = crate::systemd::cgroup_dir(&unit)?;
        let cgroup =
            crate::target::cgroup_rule(&dir).map_err(|e| crate::systemd::UnitError::Bus {
                name: unit.name.clone(),
                what: "its cgroup".into(),
                detail: e.to_string(),
            })?;
        Ok(Selector::Unit {
            unit: Box::new(unit),
            cgroup,
        })
    }

    /// The unit, for `--unit`.
    pub fn unit_info(&self) -> Option<&crate::systemd::UnitInfo> {
        match self {
            Selector::Unit { unit, .. } => Some(unit),
            _ => None,
        }
    }
}

/// Checks a `--comm` filter's length the way the kernel stores names.
pub fn check_comm(comm: &str) -> Result<(), crate::target::TargetError> {
    comm_key(comm).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procs(list: &[(u32, u32, &str)]) -> BTreeMap<u32, Proc> {
        list.iter()
            .map(|&(pid, ppid, comm)| {
                (
                    pid,
                    Proc {
                        pid,
                        ppid,
                        comm: comm.into(),
                        exe: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn finds_instances_by_each_selector() {
        // 10 runsv -> 11 queue (-> 12 queue worker); 20 runsv -> 21 log; 30 other queue.
        let p = procs(&[
            (1, 0, "init"),
            (10, 1, "runsv"),
            (11, 10, "queue"),
            (12, 11, "queue"),
            (20, 1, "runsv"),
            (21, 20, "svlogd"),
            (30, 1, "queue"),
        ]);
        let sup = find(&Selector::Supervisor(10), None, &p, &[]).unwrap();
        assert_eq!(
            (sup.comm.as_str(), sup.supervisors.clone(), sup.explicit),
            ("queue", vec![10], true)
        );
        assert_eq!(sup.instances.len(), 1);

        let by_name = find(&Selector::Comm("queue".into()), None, &p, &[]).unwrap();
        assert_eq!(by_name.supervisors, vec![1, 10]);
        assert_eq!(
            by_name.instances.iter().map(|i| i.pid).collect::<Vec<_>>(),
            vec![11, 30],
            "the worker 12 is part of instance 11"
        );
        assert!(!by_name.explicit);

        let pid = find(&Selector::Pid(11), None, &p, &[]).unwrap();
        assert_eq!((pid.supervisors, pid.instances[0].child), (vec![10], 11));

        let rule = CgroupRule {
            path: "/sys/fs/cgroup/svc".into(),
            ids: vec![1],
        };
        let cg = find(&Selector::Cgroup(rule.clone()), None, &p, &[11, 12]).unwrap();
        assert_eq!(cg.instances.iter().map(|i| i.pid).collect::<Vec<_>>(), [11]);

        let both = find(&Selector::Cgroup(rule), None, &p, &[11, 21]).unwrap_err();
        assert_eq!(
            both.to_string(),
            "--cgroup /sys/fs/cgroup/svc: the instances have different names (queue, svlogd); pick one with --comm"
        );
        assert_eq!(
            find(&Selector::Supervisor(20), Some("queue"), &p, &[])
                .unwrap_err()
                .to_string(),
            "--supervisor 20: no running instance found; start the service first"
        );
        assert_eq!(
            find(&Selector::Pid(99), None, &p, &[])
                .unwrap_err()
                .to_string(),
            "--pid 99: no such process"
        );
    }
}
