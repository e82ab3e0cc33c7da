//! Before a run: the operator's word for a higher blast radius ([`authorize`]), and the plan
//! printed for them to read ([`describe`]).

use std::{path::Path, time::Duration};

use jiff::ZonedDateTime;

use super::{BlastRadius, Experiment};
use crate::{audit::entry::CommandEntry, fault::Role, inject::window, measure::discover::Found};

/// The operator's acknowledgement from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Ci,
    Lab,
}

/// Higher blast radii need the operator's explicit word.
pub fn authorize(
    experiment: &Experiment,
    accept: Option<Accepted>,
    approve: Option<&str>,
) -> Result<(), String> {
    let caps = experiment.radius.caps();
    let what = format!(
        "blast_radius {} (at most {} faults, {} a minute)",
        experiment.radius.name(),
        caps.max_faults,
        caps.max_per_minute
    );
    if let Some(id) = approve
        && id != experiment.id
    {
        return Err(format!(
            "--approve {id}: this experiment's id is {}",
            experiment.id
        ));
    }
    let accepted = match accept {
        Some(Accepted::Ci) => Some(BlastRadius::Ci),
        Some(Accepted::Lab) => Some(BlastRadius::Lab),
        None => None,
    };
    match experiment.radius {
        BlastRadius::Local => Ok(()),
        BlastRadius::Ci | BlastRadius::Lab if accepted == Some(experiment.radius) => Ok(()),
        BlastRadius::Ci | BlastRadius::Lab => Err(format!(
            "{what} needs --accept-blast-radius {}",
            experiment.radius.name()
        )),
        BlastRadius::Canary if approve.is_some() => Ok(()),
        BlastRadius::Canary => Err(format!("{what} needs --approve {}", experiment.id)),
    }
}

/// The plan as the operator reads it before anything is done: the target with its pids, each
/// fault's schedule and whether its window is open `now`, the guards, the phases, the audit
/// log.
pub fn describe(
    experiment: &Experiment,
    found: &Found,
    may_hit: &[(u32, String, Role)],
    commands: &[CommandEntry],
    audit: &Path,
    dry_run: bool,
    now: &ZonedDateTime,
) -> String {
    let caps = experiment.radius.caps();
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let list = |pids: &mut dyn Iterator<Item = u32>| {
        pids.map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    };
    line(format!(
        "experiment {}{}",
        experiment.id,
        if dry_run { " (dry run)" } else { "" }
    ));
    if let Some(d) = &experiment.description {
        line(format!("  {d}"));
    }
    line(format!("hypothesis: {}", experiment.hypothesis.statement));
    line(format!(
        "blast radius: {} (at most {} faults, {} a minute each)",
        experiment.radius.name(),
        caps.max_faults,
        caps.max_per_minute
    ));
    line(format!(
        "target: {} (instances {}; supervisor(s) {}); ready = {}; recovery timeout {}",
        found.comm,
        list(&mut found.instances.iter().map(|i| i.pid)),
        list(&mut found.supervisors.iter().copied()),
        experiment.target.ready.describe(),
        humantime::format_duration(experiment.target.recovery_timeout)
    ));
    line(format!(
        "a signal may hit (target.hit = {}): {}",
        experiment.target.hit.as_str(),
        may_hit
            .iter()
            .map(|(pid, comm, role)| format!("{pid} ({comm}, {})", role.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for f in &experiment.faults {
        let windows = if f.windows.is_empty() {
            String::new()
        } else {
            let state = match window::until_open(&f.windows, now) {
                Some(d) if d.is_zero() => "open now".to_string(),
                Some(d) => format!(
                    "opens in {}",
                    humantime::format_duration(Duration::from_secs(d.as_secs()))
                ),
                None => "never opens".to_string(),
            };
            format!(
                "; windows {} ({state})",
                f.windows
                    .iter()
                    .map(|w| w.text())
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        };
        line(format!(
            "fault {}: {} (seed {}){windows}",
            f.index,
            f.describe(),
            f.seed
        ));
    }
    if let (Some(dir), Some(size)) = (&experiment.target.data_dir, experiment.target.data_size) {
        line(format!(
            "power loss: {} moves onto a {} MiB ext4 on dm-flakey over a loop file (instances holding it restart onto it before the baseline); at each cut the service and its supervisor are frozen, every later write dropped, the service SIGKILLed, the filesystem remounted (journal recovery), then both released; at the end the data is copied back",
            dir.display(),
            size >> 20
        ));
    }
    let g = &experiment.guards;
    let mut guards = Vec::new();
    if let Some(t) = g.episode_timeout {
        guards.push(format!("episode timeout {}", humantime::format_duration(t)));
    }
    if let Some(k) = g.crash_rate_factor {
        guards.push(format!("crash rate over {k} x baseline"));
    }
    if let Some(n) = g.max_consecutive_failures {
        guards.push(format!("{n} failed recoveries in a row"));
    }
    line(format!(
        "guards: {}",
        if guards.is_empty() {
            "none".into()
        } else {
            guards.join(", ")
        }
    ));
    for c in commands {
        line(format!("{}: `{}` runs as {}", c.what, c.command, c.user));
    }
    let p = &experiment.phases;
    line(format!(
        "phases: baseline {}, injection, cool-down {} (at most {} in all)",
        humantime::format_duration(p.baseline),
        humantime::format_duration(p.cooldown),
        humantime::format_duration(p.max_duration)
    ));
    line(format!("audit log: {}", audit.display()));
    out
}
