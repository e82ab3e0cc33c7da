//! What `chaos run` checks and gathers before anything acts: whether the file may be
//! trusted, as whom its commands run, the service and what may be hit, the audit log.

use std::path::Path;

use super::super::Failure;
use crate::{
    audit::{AuditLog, Entry, entry},
    cli::RunArgs,
    driver::verify::RunAs,
    experiment::{
        Experiment, Outputs,
        rules::{HitRules, Who},
    },
    fault::Role,
    measure::{
        discover::{self, Found, Selector},
        service::{Ready, Service},
    },
    sys::trust::{self, Owners},
    target::{denylist::Denylist, proc::process},
};

/// The file's trust check and its overrides: a file others could change is refused unless
/// `--allow-unsafe-file`, which is recorded.
pub struct Trust {
    owners: Owners,
    allow: bool,
    /// What the override let through, with why (for the audit log).
    pub overridden: Vec<String>,
}

impl Trust {
    pub fn new(allow: bool) -> Self {
        Self {
            owners: Owners::of_this_process(),
            allow,
            overridden: Vec::new(),
        }
    }

    pub fn owners(&self) -> &Owners {
        &self.owners
    }

    /// Checks `path`, `what` chaos takes from it.
    pub fn check(&mut self, path: &Path, what: &str) -> Result<(), Failure> {
        let Err(untrusted) = trust::check_file(path, &self.owners) else {
            return Ok(());
        };
        if self.allow {
            eprintln!("chaos: warning: {what}: {untrusted}; run anyway (--allow-unsafe-file)");
            self.overridden.push(format!("{what}: {untrusted}"));
            return Ok(());
        }
        Err(Failure::refused(format!(
            "{what}: {untrusted}: chaos runs what it says as root, so only root or you may change it (chown, chmod go-w), or pass --allow-unsafe-file"
        )))
    }

    /// The programs the file's commands run first, when they name one.
    pub fn check_commands(&mut self, experiment: &Experiment) -> Result<(), Failure> {
        let verify = experiment
            .hypothesis
            .verify
            .as_ref()
            .map(|v| v.command.clone());
        let probe = match &experiment.target.ready {
            Ready::Cmd { command } => Some(command.clone()),
            _ => None,
        };
        for (what, command) in [("hypothesis.verify", verify), ("target.ready", probe)] {
            if let Some(program) = command.as_deref().and_then(trust::program_of) {
                self.check(&program, &format!("{what}'s program"))?;
            }
        }
        Ok(())
    }
}

/// The accounts the file's commands run as, looked up on this machine.
pub struct Users {
    pub verify: Option<RunAs>,
    pub ready: Option<RunAs>,
}

impl Users {
    pub fn lookup(experiment: &Experiment) -> Result<Self, Failure> {
        let find = |name: Option<&String>, key: &str| {
            name.map(|n| {
                RunAs::lookup(n).map_err(|e| {
                    Failure::refused(format!("{}: {key}: {e}", experiment.path.display()))
                })
            })
            .transpose()
        };
        Ok(Self {
            verify: find(
                experiment
                    .hypothesis
                    .verify
                    .as_ref()
                    .and_then(|v| v.user.as_ref()),
                "hypothesis.verify.user",
            )?,
            ready: find(experiment.target.ready_user.as_ref(), "target.ready_user")?,
        })
    }

    /// Each command with the account it runs as, for the plan and the audit log.
    pub fn commands(&self, experiment: &Experiment) -> Vec<entry::CommandEntry> {
        let mut out = Vec::new();
        if let Some(v) = &experiment.hypothesis.verify {
            out.push(entry::CommandEntry {
                what: "verify".into(),
                command: v.command.clone(),
                user: RunAs::describe(self.verify.as_ref()),
            });
        }
        if let Ready::Cmd { command } = &experiment.target.ready {
            out.push(entry::CommandEntry {
                what: "ready".into(),
                command: command.clone(),
                user: RunAs::describe(self.ready.as_ref()),
            });
        }
        out
    }
}

/// The command line's outputs over the file's.
pub fn outputs(args: &RunArgs, experiment: &Experiment) -> Result<Outputs, Failure> {
    let hdr_interval = match &args.hdr_interval {
        Some(text) => Some(crate::commands::measure::hdr_interval(text)?),
        None => experiment.outputs.hdr_interval,
    };
    Ok(Outputs {
        json: args.json.clone().or(experiment.outputs.json.clone()),
        junit: args.junit.clone().or(experiment.outputs.junit.clone()),
        hdr_log: args.hdr_log.clone().or(experiment.outputs.hdr_log.clone()),
        hdr_interval,
        audit: args.audit.clone().or(experiment.outputs.audit.clone()),
    })
}

pub fn find_service(experiment: &Experiment) -> Result<(Found, Selector), Failure> {
    let t = &experiment.target;
    let selector = t.named.resolve(&experiment.path)?;
    let mut found = discover::find_live(&selector, t.comm_filter.as_deref())
        .map_err(|e| Failure::refused(format!("{}: target: {e}", experiment.path.display())))?;
    // Supervisors chaos can follow make the service explicit: replacements are what they
    // fork, never a process that merely has the name (the verify command may run the
    // service's program). Under pid 1 the name (or the cgroup) is how replacements are seen.
    if found.supervisors.iter().all(|&pid| pid > 1) {
        found.explicit = true;
    }
    Ok((found, selector))
}

/// At least one instance may be hit; else every instance's reason, before anything loads.
/// What a signal fault may hit now: each instance (main) and each of its descendants
/// (workers) that the denylist, the file's lists and `target.hit` let through, as (pid,
/// comm, role) for the plan; when none, every one's reason, before anything loads.
pub fn hittable(
    experiment: &Experiment,
    found: &Found,
    rules: &HitRules,
) -> Result<Vec<(u32, String, Role)>, Failure> {
    let proc = Path::new("/proc");
    let denylist = Denylist::new(proc);
    let procs = crate::target::proc::processes(proc);
    let hit = experiment.target.hit;
    let mut checked: Vec<(u32, String, Role, Result<(), String>)> = Vec::new();
    let mut queue: Vec<(u32, Role)> = found
        .instances
        .iter()
        .map(|i| (i.pid, Role::Main))
        .collect();
    while let Some((pid, role)) = queue.pop() {
        let Some(p) = procs.get(&pid) else { continue };
        queue.extend(
            procs
                .values()
                .filter(|c| c.ppid == pid)
                .map(|c| (c.pid, Role::Worker)),
        );
        let verdict = denylist
            .check_proc(proc, p)
            .map_err(|d| d.to_string())
            .and_then(|()| {
                let title = rules
                    .needs_titles()
                    .then(|| crate::target::proc::title(proc, p.pid))
                    .flatten();
                let who = Who {
                    pid: p.pid,
                    comm: &p.comm,
                    exe: p.exe.as_deref(),
                    title: title.as_deref(),
                };
                rules.check(&who, role)
            })
            .and_then(|()| {
                if hit.allows(role) {
                    Ok(())
                } else {
                    Err(format!(
                        "a {} process, and target.hit is {}",
                        role.as_str(),
                        hit.as_str()
                    ))
                }
            });
        checked.push((pid, p.comm.clone(), role, verdict));
    }
    checked.sort_by_key(|(pid, ..)| *pid);
    let may: Vec<(u32, String, Role)> = checked
        .iter()
        .filter(|(.., v)| v.is_ok())
        .map(|(pid, comm, role, _)| (*pid, comm.clone(), *role))
        .collect();
    if !may.is_empty() {
        return Ok(may);
    }
    let why = checked
        .iter()
        .map(|(pid, comm, _, v)| format!("{pid} ({comm}): {}", v.as_ref().unwrap_err()))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Failure::refused(format!(
        "{}: target: no instance may be hit: {why}",
        experiment.path.display()
    )))
}

/// The file's deny comms and the supervisors' names (the service's instances are what
/// kernel-fired faults may hit).
pub fn deny_comms(experiment: &Experiment, found: &Found) -> Vec<String> {
    let proc = Path::new("/proc");
    experiment
        .target
        .deny
        .comms
        .iter()
        .cloned()
        .chain(
            found
                .supervisors
                .iter()
                .filter_map(|&pid| process(proc, pid))
                .map(|p| p.comm)
                .filter(|comm| *comm != found.comm),
        )
        .collect()
}

pub fn service(experiment: &Experiment, found: &Found, selector: &Selector) -> Service {
    let t = &experiment.target;
    Service {
        unit: selector.unit_info().cloned(),
        ..Service::of(found, &t.ready, t.recovery_timeout, t.data_dir.clone())
    }
}

pub fn open_audit(path: &Path, owners: &Owners) -> Result<AuditLog, Failure> {
    Ok(AuditLog::open(path, owners)?)
}

pub fn start_entry(
    experiment: &Experiment,
    found: &Found,
    args: &RunArgs,
    commands: Vec<entry::CommandEntry>,
    unsafe_files: Vec<String>,
) -> Entry {
    Entry::Start(entry::Start {
        command: std::env::args().collect(),
        dry_run: args.dry_run,
        seed: None,
        faults: experiment.faults.iter().map(|f| f.describe()).collect(),
        commands,
        unsafe_files,
        experiment: Some(entry::ExperimentStart {
            experiment: experiment.id.clone(),
            file: experiment.path.display().to_string(),
            hypothesis: experiment.hypothesis.statement.clone(),
            blast_radius: experiment.radius.name().into(),
            approved: args.approve.clone(),
            target: entry::TargetEntry {
                comm: found.comm.clone(),
                supervisors: found.supervisors.clone(),
                instances: found.instances.iter().map(|i| i.pid).collect(),
            },
        }),
    })
}
