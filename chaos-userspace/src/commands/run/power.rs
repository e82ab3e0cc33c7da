//! A run's power-loss disk (`crate::power`): refused where the kernel has no dm-flakey
//! before the target is looked up; its frozen cgroup and data directory checked once the
//! service is found; set up before the baseline (the service moved onto it, found again);
//! torn down however the run ends: by chaos before its last audit entry (or when this
//! handle drops on an early return), by the watchdog when chaos is killed.

use std::{
    cell::Cell,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{Failure, prepare::find_service};
use crate::{
    audit::entry,
    experiment::Experiment,
    inject::watchdog::Watchdog,
    measure::discover::{Found, Selector},
    power::{self, Disk, cgroup},
};

/// Refuses a power_loss experiment on a machine without dm-flakey, loop devices or the
/// tools, naming dm-flakey (exit 2, before the target is looked up).
pub fn preflight(experiment: &Experiment) -> Result<(), Failure> {
    let Some(i) = experiment.power_fault() else {
        return Ok(());
    };
    power::preflight().ready().map_err(|why| {
        Failure::refused(format!(
            "{}: faults[{i}].kind: power_loss needs dm-flakey (device-mapper's flakey target) over a loop device: {why}; `chaos doctor` shows what this kernel has",
            experiment.path.display()
        ))
    })
}

/// The cgroup a cut freezes, checked against the service found, and the data directory
/// against the machine (exit 2): its real path (no symlink, no `..`: the processes' open
/// files are matched by path), holding none of chaos's own files (`own`: the audit log and
/// the outputs, which chaos keeps open or writes while the disk is mounted).
pub fn check(
    experiment: &Experiment,
    found: &Found,
    selector: &Selector,
    own: &[&Path],
) -> Result<PathBuf, Failure> {
    let refuse =
        |why: String| Failure::refused(format!("{}: target: {why}", experiment.path.display()));
    let dir = experiment
        .target
        .data_dir
        .as_deref()
        .expect("the check requires data_dir with power_loss");
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    let real = std::fs::canonicalize(existing)
        .map_err(|e| refuse(format!("data_dir {}: {e}", dir.display())))?;
    if real != existing {
        return Err(refuse(format!(
            "data_dir {}: give its real path ({} resolves to {}): open files are matched by path",
            dir.display(),
            existing.display(),
            real.display()
        )));
    }
    if dir.starts_with("/var/tmp/chaos-power-") {
        return Err(refuse(format!(
            "data_dir {}: that is where chaos keeps power-loss disks",
            dir.display()
        )));
    }
    if let Some(mine) = own.iter().find(|p| absolute(p).starts_with(dir)) {
        return Err(refuse(format!(
            "data_dir {} holds {}, which chaos writes during the run: put it elsewhere",
            dir.display(),
            mine.display()
        )));
    }
    let named = match selector {
        Selector::Cgroup(rule) => Some(rule.path.as_path()),
        _ => None,
    };
    if found.supervisors.len() != 1 {
        return Err(refuse(format!(
            "a power_loss fault holds one supervisor frozen through the cut; found {}",
            found.supervisors.len()
        )));
    }
    let instances: Vec<u32> = found.instances.iter().map(|i| i.pid).collect();
    cgroup::choose(named, found.supervisors[0], &instances).map_err(refuse)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The disk while the run holds it.
pub struct RunDisk<'a> {
    pub disk: Disk,
    watchdog: Option<&'a Watchdog>,
    /// What the set-up killed to move the service onto the disk.
    pub moved: Vec<(u32, String)>,
    done: Cell<bool>,
}

impl RunDisk<'_> {
    /// The set-up, for the audit log.
    pub fn set_up_entry(&self) -> entry::Disk {
        entry::Disk {
            action: "set_up".into(),
            detail: self.describe(),
            killed: self.moved.iter().map(|(pid, _)| *pid).collect(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} on a {} MiB ext4 on dm-flakey (/dev/mapper/{} over {}, image {}); cgroup {} frozen at each cut",
            self.disk.data_dir.display(),
            (self.disk.sectors * 512) >> 20,
            self.disk.dm_name,
            self.disk
                .loop_dev
                .as_deref()
                .map_or("-".into(), |d| d.display().to_string()),
            self.disk.image.display(),
            self.disk.cgroup.display()
        )
    }

    /// Tears the disk down, once; the audit entry saying how it went (None when already
    /// done). The watchdog lets go of it only when nothing was left: otherwise it tries
    /// again when chaos ends.
    pub fn tear_down(&self) -> Option<entry::Disk> {
        if self.done.replace(true) {
            return None;
        }
        let before = power::cgroup::members(&self.disk.cgroup, &self.disk.keep).service;
        let problems = self.disk.teardown();
        for problem in &problems {
            eprintln!("chaos: warning: power-loss teardown: {problem}");
        }
        if problems.is_empty() {
            println!(
                "chaos: power-loss disk torn down: {} is back on its own filesystem",
                self.disk.data_dir.display()
            );
            if let Some(dog) = self.watchdog {
                let _ = dog.disk_gone();
            }
        }
        Some(entry::Disk {
            action: "torn_down".into(),
            detail: if problems.is_empty() {
                "everything undone; the data copied back".into()
            } else {
                problems.join("; ")
            },
            killed: before,
        })
    }
}

impl Drop for RunDisk<'_> {
    fn drop(&mut self) {
        self.tear_down();
    }
}

/// Sets the disk up and moves the service onto it; then waits for the supervisor to
/// start the instances it killed again, and finds the service afresh.
pub fn set_up<'a>(
    experiment: &Experiment,
    found: &Found,
    cgroup: PathBuf,
    watchdog: Option<&'a Watchdog>,
) -> Result<(RunDisk<'a>, Found, Selector), Failure> {
    let t = &experiment.target;
    let (dir, size) = t
        .data_dir
        .as_deref()
        .zip(t.data_size)
        .expect("the check requires data_dir and data_size with power_loss");
    let mut told = Ok(());
    let (disk, moved) = Disk::create(dir, size, cgroup, found.supervisors.clone(), &mut |d| {
        if let (Some(dog), Ok(())) = (watchdog, &told) {
            told = dog.disk(d);
        }
    })
    .map_err(|why| {
        Failure::refused(format!(
            "{}: the power-loss disk: {why}",
            experiment.path.display()
        ))
    })?;
    let held = RunDisk {
        disk,
        watchdog,
        moved,
        done: Cell::new(false),
    };
    // Without the watchdog knowing, a killed chaos would leave the disk behind.
    let told = told.and_then(|()| watchdog.map_or(Ok(()), |dog| dog.disk(&held.disk)));
    if let Err(e) = told {
        return Err(Failure::refused(format!(
            "cannot hand the power-loss disk to the watchdog: {e}"
        )));
    }
    let killed = &held.moved;
    println!(
        "chaos: {}{}",
        held.describe(),
        if killed.is_empty() {
            String::new()
        } else {
            format!(
                "; killed to restart onto it: {}",
                killed
                    .iter()
                    .map(|(pid, comm)| format!("{pid} ({comm})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if killed.is_empty() {
        let (found, selector) = find_service(experiment)?;
        return Ok((held, found, selector));
    }
    // The supervisor restarts what was killed: the run starts with its replacements.
    let wait = t.recovery_timeout + Duration::from_secs(5);
    let deadline = Instant::now() + wait;
    loop {
        if let Ok((found, selector)) = find_service(experiment)
            && !found.instances.is_empty()
            && found
                .instances
                .iter()
                .all(|i| !killed.iter().any(|(pid, _)| *pid == i.pid))
        {
            return Ok((held, found, selector));
        }
        if Instant::now() > deadline {
            return Err(Failure::refused(format!(
                "{}: target: the service was moved onto the power-loss disk, and its supervisor did not start it again within {}",
                experiment.path.display(),
                humantime::format_duration(wait)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
