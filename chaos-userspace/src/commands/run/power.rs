//! A run's power-loss disk (`crate::power`): refused where the kernel has no dm-flakey
//! before the target is looked up, its frozen cgroup checked once the service is found, set
//! up before the baseline (the service moved onto it, found again), and torn down however
//! the run ends: here when chaos ends, by the watchdog when chaos is killed.

use std::time::{Duration, Instant};

use super::{Failure, prepare::find_service};
use crate::{
    experiment::Experiment,
    inject::{spec::FaultAction, watchdog::Watchdog},
    measure::discover::{Found, Selector},
    power::{self, Disk, cgroup},
};

/// The index of the experiment's power_loss fault.
pub fn fault_of(experiment: &Experiment) -> Option<usize> {
    experiment
        .faults
        .iter()
        .position(|f| matches!(&f.action, FaultAction::Signal(s) if s.power))
}

/// Refuses a power_loss experiment on a machine without dm-flakey, loop devices or the
/// tools, naming dm-flakey (exit 2, before the target is looked up).
pub fn preflight(experiment: &Experiment) -> Result<(), Failure> {
    let Some(i) = fault_of(experiment) else {
        return Ok(());
    };
    power::preflight().ready().map_err(|why| {
        Failure::refused(format!(
            "{}: faults[{i}].kind: power_loss needs dm-flakey (device-mapper's flakey target) over a loop device: {why}; `chaos doctor` shows what this kernel has",
            experiment.path.display()
        ))
    })
}

/// The cgroup a cut freezes, checked against the service found (exit 2).
pub fn freeze_cgroup(
    experiment: &Experiment,
    found: &Found,
    selector: &Selector,
) -> Result<std::path::PathBuf, Failure> {
    let named = match selector {
        Selector::Cgroup(rule) => Some(rule.path.as_path()),
        _ => None,
    };
    let supervisor = found.supervisors.first().copied().unwrap_or(0);
    if found.supervisors.len() != 1 {
        return Err(Failure::refused(format!(
            "{}: target: a power_loss fault holds one supervisor frozen through the cut; found {}",
            experiment.path.display(),
            found.supervisors.len()
        )));
    }
    cgroup::choose(named, supervisor)
        .map_err(|why| Failure::refused(format!("{}: target: {why}", experiment.path.display())))
}

/// The disk while the run holds it: torn down when dropped.
pub struct RunDisk<'a> {
    pub disk: Disk,
    watchdog: Option<&'a Watchdog>,
}

impl Drop for RunDisk<'_> {
    fn drop(&mut self) {
        let problems = self.disk.teardown();
        for problem in &problems {
            eprintln!("chaos: warning: power-loss teardown: {problem}");
        }
        if problems.is_empty() {
            println!(
                "chaos: power-loss disk torn down: {} is back on its own filesystem",
                self.disk.data_dir.display()
            );
        }
        if let Some(dog) = self.watchdog {
            let _ = dog.disk_gone();
        }
    }
}

/// Sets the disk up and moves the service onto it; then waits for the supervisor to
/// start the instances it killed again, and finds the service afresh.
pub fn set_up<'a>(
    experiment: &Experiment,
    found: &Found,
    cgroup: std::path::PathBuf,
    watchdog: Option<&'a Watchdog>,
) -> Result<(RunDisk<'a>, Found, Selector), Failure> {
    let t = &experiment.target;
    let (dir, size) = t
        .data_dir
        .as_deref()
        .zip(t.data_size)
        .expect("the check requires data_dir and data_size with power_loss");
    let (disk, killed) =
        Disk::create(dir, size, cgroup, found.supervisors.clone()).map_err(|why| {
            Failure::refused(format!(
                "{}: the power-loss disk: {why}",
                experiment.path.display()
            ))
        })?;
    let held = RunDisk { disk, watchdog };
    if let Some(dog) = watchdog {
        dog.disk(&held.disk).map_err(|e| {
            Failure::refused(format!(
                "cannot hand the power-loss disk to the watchdog: {e}"
            ))
        })?;
    }
    println!(
        "chaos: {} is on a {} MiB ext4 on dm-flakey (/dev/mapper/{} over {}){}",
        dir.display(),
        size >> 20,
        held.disk.dm_name,
        held.disk
            .loop_dev
            .as_deref()
            .map_or("-".into(), |d| d.display().to_string()),
        if killed.is_empty() {
            String::new()
        } else {
            format!(
                "; restarted onto it: {}",
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
    let deadline = Instant::now() + t.recovery_timeout + Duration::from_secs(5);
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
                humantime::format_duration(t.recovery_timeout + Duration::from_secs(5))
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
