//! `[[faults]]`: each fault checked into a [`FaultSpec`], then what the blast radius allows
//! of them together.

use std::time::Duration;

use chaos_common::splitmix64;

use super::{Checker, duration, duration_or_zero, plain};
use crate::{
    experiment::{
        BlastRadius, Caps, FileError,
        file::{self, FaultKind},
    },
    fault::Hit,
    inject::{
        names,
        spec::{Calls, FaultAction, FaultSpec, LSM_SYSCALLS, SignalSchedule, Timing, lsm_errno},
        window::Window,
    },
};

/// `[[faults]]`: each checked into a fault spec, then what the blast radius allows of them
/// together.
pub(super) fn check_faults(
    c: &Checker,
    raw: &toml::Spanned<Vec<toml::Spanned<file::FaultFile>>>,
    id: &str,
    radius: BlastRadius,
    hit: Hit,
) -> Result<Vec<FaultSpec>, FileError> {
    let caps = radius.caps();
    if raw.get_ref().is_empty() {
        return Err(c.at(raw.span().start, "faults", "give at least one fault"));
    }
    let mut faults = Vec::new();
    for (i, entry) in raw.get_ref().iter().enumerate() {
        faults.push(check_fault(c, i, entry, id, caps, radius, hit)?);
    }
    for kind in [FaultKind::Trigger, FaultKind::Errno, FaultKind::PowerLoss] {
        let same: Vec<_> = raw
            .get_ref()
            .iter()
            .filter(|f| *f.get_ref().kind.get_ref() == kind)
            .collect();
        if let Some(second) = same.get(1) {
            return Err(c.at(
                second.span().start,
                "faults.kind",
                match kind {
                    FaultKind::Trigger => {
                        "one trigger fault per experiment: the kernel holds one rule of each kind"
                    }
                    FaultKind::Errno => {
                        "one errno fault per experiment: the kernel holds one rule of each kind"
                    }
                    _ => "one power_loss fault per experiment: the service has one data disk",
                },
            ));
        }
    }
    let planned: u32 = faults.iter().filter_map(|f| f.count).sum();
    if planned > caps.max_faults {
        return Err(c.at(
            raw.span().start,
            "faults",
            format!(
                "{planned} faults in all; blast_radius {} allows at most {}",
                radius.name(),
                caps.max_faults
            ),
        ));
    }
    Ok(faults)
}

fn check_fault(
    c: &Checker,
    i: usize,
    entry: &toml::Spanned<file::FaultFile>,
    id: &str,
    caps: Caps,
    radius: BlastRadius,
    hit: Hit,
) -> Result<FaultSpec, FileError> {
    let span = entry.span();
    let f = entry.get_ref();
    let key = |k: &str| format!("faults[{i}].{k}");
    let err = |k: &str, m: String| c.key(&span, &key(k), m);
    let kind = *f.kind.get_ref();
    let kind_name = match kind {
        FaultKind::Signal => "signal",
        FaultKind::Trigger => "trigger",
        FaultKind::Errno => "errno",
        FaultKind::PowerLoss => "power_loss",
    };
    // Keys that belong to other kinds are mistakes, not options to ignore.
    let allowed: &[&str] = match kind {
        FaultKind::Signal => &["signal", "interval", "jitter"],
        FaultKind::Trigger => &["signal", "syscall", "nth"],
        FaultKind::Errno => &["syscall", "errno", "nth", "probability"],
        FaultKind::PowerLoss => &["interval", "jitter"],
    };
    let given = [
        ("signal", f.signal.is_some()),
        ("interval", f.interval.is_some()),
        ("jitter", f.jitter.is_some()),
        ("syscall", f.syscall.is_some()),
        ("nth", f.nth.is_some()),
        ("errno", f.errno.is_some()),
        ("probability", f.probability.is_some()),
    ];
    if let Some((name, _)) = given
        .iter()
        .find(|(name, set)| *set && !allowed.contains(name))
    {
        return Err(err(
            name,
            format!(
                "not a key of a {kind_name} fault (it takes {})",
                allowed.join(", ")
            ),
        ));
    }
    let need = |name: &str, value: &Option<String>| {
        value
            .clone()
            .ok_or_else(|| err(name, format!("a {kind_name} fault needs {name}")))
    };
    if f.count == 0 {
        return Err(err("count", "0: give at least 1".into()));
    }
    if f.count > caps.max_faults {
        return Err(err(
            "count",
            format!(
                "{}: blast_radius {} allows at most {} faults",
                f.count,
                radius.name(),
                caps.max_faults
            ),
        ));
    }
    let seed = f.seed.unwrap_or_else(|| default_seed(id, i));
    let signal = |text: String| names::signal(&text).map_err(|m| err("signal", plain(m)));
    let syscall =
        |text: String| names::syscall("--syscall", &text).map_err(|m| err("syscall", plain(m)));
    let nth = |value: Option<u32>| match value {
        Some(0) => Err(err("nth", "0: calls are counted from 1".into())),
        other => Ok(other),
    };
    let action = match kind {
        FaultKind::Signal | FaultKind::PowerLoss => {
            let (signal, power) = match kind {
                FaultKind::PowerLoss => (nix::sys::signal::Signal::SIGKILL, true),
                _ => (signal(need("signal", &f.signal)?)?, false),
            };
            let interval =
                duration(&need("interval", &f.interval)?).map_err(|m| err("interval", m))?;
            let jitter = f
                .jitter
                .as_deref()
                .map(duration_or_zero)
                .transpose()
                .map_err(|m| err("jitter", m))?
                .unwrap_or_default();
            let per_minute = Duration::from_secs(60) / caps.max_per_minute;
            if f.count > 1 && interval < per_minute {
                return Err(err(
                    "interval",
                    format!(
                        "{}: blast_radius {} allows {} faults a minute, so at least {} apart",
                        humantime::format_duration(interval),
                        radius.name(),
                        caps.max_per_minute,
                        humantime::format_duration(per_minute)
                    ),
                ));
            }
            FaultAction::Signal(SignalSchedule {
                signal,
                interval,
                jitter,
                escalate_after: None,
                freeze_for: None,
                timing: Timing::AfterPrevious,
                power,
            })
        }
        FaultKind::Trigger => FaultAction::Trigger {
            signal: signal(need("signal", &f.signal)?)?,
            nr: syscall(need("syscall", &f.syscall)?)?,
            nth: nth(f.nth)?.ok_or_else(|| err("nth", "a trigger fault needs nth".into()))?,
        },
        FaultKind::Errno => {
            let nr = syscall(need("syscall", &f.syscall)?)?;
            let errno =
                names::errno(&need("errno", &f.errno)?).map_err(|m| err("errno", plain(m)))? as i32;
            let probability = f.probability.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&probability) {
                return Err(err(
                    "probability",
                    format!("{probability}: give a number from 0 to 1"),
                ));
            }
            let calls = Calls {
                nth: nth(f.nth)?,
                probability,
            };
            lsm_errno(nr, errno, calls, Some(f.count), seed, caps.max_per_minute).ok_or_else(
                || {
                    err(
                        "syscall",
                        format!(
                            "{}: no LSM hook covers it; errno faults in experiments fail {LSM_SYSCALLS}",
                            nr.name()
                        ),
                    )
                },
            )?
        }
    };
    let windows = f
        .windows
        .iter()
        .enumerate()
        .map(|(w, text)| {
            Window::parse(text.get_ref())
                .map_err(|m| c.at(text.span().start, &key(&format!("windows[{w}]")), m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FaultSpec {
        index: i,
        action,
        count: Some(f.count),
        seed,
        windows,
        max_per_minute: caps.max_per_minute,
        hit,
    })
}

/// The seed of fault `index` when the file gives none: derived from the experiment id, so a
/// file runs the same way every time.
fn default_seed(id: &str, index: usize) -> u64 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    splitmix64(hash ^ index as u64)
}
