//! Checking an experiment file into an [`Experiment`]: every error names the file, the line
//! and column, and the key (`faults[1].interval`). Pure: nothing on the machine is looked at
//! (a cgroup is resolved when the run starts).

use std::{
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

mod fault;

use super::{
    Experiment, FileError, Guards, Hypothesis, Latency, Named, Outputs, Quantile, RunPhases,
    Target, Verify,
    file::{self, ExperimentFile},
};
use crate::measure::service::Ready;
use fault::check_faults;

/// Where a check points: the file's text and the span of the table being checked.
pub(super) struct Checker<'a> {
    file: &'a str,
    text: &'a str,
}

impl Checker<'_> {
    fn at(&self, offset: usize, key: &str, message: impl Into<String>) -> FileError {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        FileError {
            file: self.file.into(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// An error about `name` (the last part of `key`) inside the table at `span`: at the line
    /// that sets it when there is one, else at the table.
    fn key(&self, span: &Range<usize>, key: &str, message: impl Into<String>) -> FileError {
        let name = key.rsplit(['.', ']']).next().unwrap_or(key);
        let offset = find_key(self.text, span.clone(), name).unwrap_or(span.start);
        self.at(offset, key, message)
    }
}

/// The offset of `name = ...` inside the table at `span` of `text`, at a line start or after
/// `{`/`,`.
fn find_key(text: &str, span: Range<usize>, name: &str) -> Option<usize> {
    // A table's span covers its header only: its keys run to the next header.
    let next_header = text[span.end.min(text.len())..]
        .find("\n[")
        .map_or(text.len(), |i| span.end + i);
    let span = span.start..span.end.max(next_header);
    let region = text.get(span.clone())?;
    let mut from = 0;
    while let Some(i) = region[from..].find(name) {
        let at = from + i;
        let before = region[..at].trim_end_matches([' ', '\t']);
        let after = region[at + name.len()..].trim_start_matches([' ', '\t']);
        let starts = before.is_empty() || before.ends_with(['\n', '{', ',']);
        if starts && after.starts_with('=') {
            return Some(span.start + at);
        }
        from = at + name.len();
    }
    None
}

/// A message from [`names`] with `--flag VALUE:` turned into `` `VALUE`: `` (the key says
/// which setting it is).
pub(super) fn plain(message: String) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if head.starts_with("--") => match head.split_once(' ') {
            Some((_, value)) => format!("`{value}`: {rest}"),
            None => rest.to_string(),
        },
        _ => message,
    }
}

/// Reads and checks an experiment file.
pub fn load(path: &Path) -> Result<Experiment, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        key: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    check(&text, path)
}

/// Parses and checks the text of an experiment file.
pub fn check(text: &str, path: &Path) -> Result<Experiment, FileError> {
    let file_name = path.display().to_string();
    let c = Checker {
        file: &file_name,
        text,
    };
    let raw: ExperimentFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        c.at(
            offset,
            &key_at(text, offset, e.message()),
            e.message().trim_end(),
        )
    })?;

    let id = raw.id.get_ref().trim().to_string();
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
    if !id_ok {
        return Err(c.at(
            raw.id.span().start,
            "id",
            "use 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let radius = *raw.blast_radius.get_ref();

    let hypothesis = check_hypothesis(&c, &raw.hypothesis)?;
    let target = check_target(&c, &raw.target)?;
    let faults = check_faults(&c, &raw.faults, &id, radius, target.hit)?;
    let titles = target.deny.titles.len() + target.allow.as_ref().map_or(0, |a| a.titles.len());
    if titles > 0
        && let Some(kernel) = raw.faults.get_ref().iter().position(|f| {
            !matches!(
                *f.get_ref().kind.get_ref(),
                file::FaultKind::Signal | file::FaultKind::PowerLoss
            )
        })
    {
        return Err(c.at(
            raw.faults.get_ref()[kernel].get_ref().kind.span().start,
            &format!("faults[{kernel}].kind"),
            "the target's allow or deny list picks processes by title, which only a signal fault can (the kernel sees no titles): use comms or exes",
        ));
    }
    check_power(&c, &raw, &target)?;
    let guards = check_guards(&c, &raw.guards, &target)?;
    let phases = check_phases(&c, &raw.phases, &guards)?;
    let o = raw.outputs;
    let hdr_interval = o
        .hdr_interval
        .as_ref()
        .map(|d| duration(d.get_ref()).map_err(|m| c.at(d.span().start, "outputs.hdr_interval", m)))
        .transpose()?;
    Ok(Experiment {
        id,
        description: raw.description,
        path: path.into(),
        radius,
        hypothesis,
        target,
        faults,
        guards,
        phases,
        outputs: Outputs {
            json: o.json,
            junit: o.junit,
            hdr_log: o.hdr_log,
            hdr_interval,
            audit: o.audit,
        },
    })
}

/// `[hypothesis]`: the statement and its measurable clauses.
fn check_hypothesis(c: &Checker, h: &file::HypothesisFile) -> Result<Hypothesis, FileError> {
    let whole = 0..c.text.len();
    if h.statement.trim().is_empty() {
        return Err(c.key(
            &whole,
            "hypothesis.statement",
            "say what is expected, in words",
        ));
    }
    let mut latency = Vec::new();
    for (i, entry) in h.latency.iter().enumerate() {
        let span = entry.span();
        let l = entry.get_ref();
        let key = |k: &str| format!("hypothesis.latency[{i}].{k}");
        let phases: Vec<&str> = crate::episode::PHASES
            .iter()
            .map(|p| p.name)
            .chain(["total", "in_place", "remount"])
            .collect();
        if !phases.contains(&l.phase.as_str()) {
            return Err(c.key(
                &span,
                &key("phase"),
                format!(
                    "`{}` is not a phase: give one of {}",
                    l.phase,
                    phases.join(", ")
                ),
            ));
        }
        let quantile =
            Quantile::parse(&l.quantile).map_err(|m| c.key(&span, &key("quantile"), m))?;
        let under = duration(&l.under).map_err(|m| c.key(&span, &key("under"), m))?;
        latency.push(Latency {
            phase: l.phase.clone(),
            quantile,
            under,
        });
    }
    let verify = match &h.verify {
        Some(v) => {
            let span = v.span();
            let v = v.get_ref();
            if v.command.trim().is_empty() {
                return Err(c.key(&span, "hypothesis.verify.command", "the command is empty"));
            }
            let timeout = match &v.timeout {
                Some(t) => duration(t).map_err(|m| c.key(&span, "hypothesis.verify.timeout", m))?,
                None => Duration::from_secs(30),
            };
            if v.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
                return Err(c.key(&span, "hypothesis.verify.user", "the user is empty"));
            }
            Some(Verify {
                command: v.command.clone(),
                timeout,
                user: v.user.clone(),
            })
        }
        None => None,
    };
    let no_effect = h.no_effect.unwrap_or_default();
    if h.max_failed_recoveries.is_none()
        && latency.is_empty()
        && verify.is_none()
        && no_effect == super::NoEffect::Allow
    {
        return Err(c.key(
            &whole,
            "hypothesis",
            "nothing to measure: give max_failed_recoveries, latency, verify or no_effect",
        ));
    }
    Ok(Hypothesis {
        statement: h.statement.trim().to_string(),
        max_failed: h.max_failed_recoveries,
        latency,
        verify,
        no_effect,
    })
}

/// `[target]`: the service, its readiness, and what faults may hit beyond the denylist.
fn check_target(c: &Checker, raw: &toml::Spanned<file::TargetFile>) -> Result<Target, FileError> {
    let tspan = raw.span();
    let t = raw.get_ref();
    let comm_ok =
        |comm: &str| crate::measure::discover::check_comm(comm).map_err(|e| e.to_string());
    if let Some(comm) = &t.comm {
        comm_ok(comm).map_err(|m| c.key(&tspan, "target.comm", plain(m)))?;
    }
    let named = [
        t.supervisor.is_some(),
        t.pid.is_some(),
        t.exe.is_some(),
        t.cgroup.is_some(),
        t.unit.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if named > 1 {
        return Err(c.at(
            tspan.start,
            "target",
            "give one of supervisor, pid, exe, cgroup and unit (comm may go with any)",
        ));
    }
    let named = if let Some(pid) = t.supervisor {
        Named::Supervisor(pid)
    } else if let Some(pid) = t.pid {
        Named::Pid(pid)
    } else if let Some(exe) = &t.exe {
        Named::Exe(exe.clone())
    } else if let Some(cg) = &t.cgroup {
        // Resolved when the run starts (`Named::resolve`): checking a file touches nothing.
        let at = c.key(&tspan, "target.cgroup", "");
        Named::Cgroup {
            path: PathBuf::from(cg),
            line: at.line,
            column: at.column,
        }
    } else if let Some(unit) = &t.unit {
        // Resolved through systemd when the run starts, like a cgroup.
        let at = c.key(&tspan, "target.unit", "");
        Named::Unit {
            name: unit.clone(),
            line: at.line,
            column: at.column,
        }
    } else if let Some(comm) = &t.comm {
        Named::Comm(comm.clone())
    } else {
        return Err(c.at(
            tspan.start,
            "target",
            "name the service: supervisor, pid, exe, cgroup, unit or comm",
        ));
    };
    if let Some(pid) = t.supervisor.or(t.pid)
        && pid <= 1
    {
        return Err(c.key(
            &tspan,
            if t.supervisor.is_some() {
                "target.supervisor"
            } else {
                "target.pid"
            },
            format!("{pid}: pid 1 and below are never targets"),
        ));
    }
    let comm_filter = match named {
        Named::Comm(_) => None,
        _ => t.comm.clone(),
    };
    let unit = matches!(named, Named::Unit { .. });
    let ready = Ready::parse(
        t.ready
            .as_deref()
            .unwrap_or(if unit { "unit" } else { "exec" }),
    )
    .map_err(|m| c.key(&tspan, "target.ready", plain(m)))?;
    if ready == Ready::Unit && !unit {
        return Err(c.key(
            &tspan,
            "target.ready",
            "`unit`: readiness from systemd needs the service named with target.unit",
        ));
    }
    if t.ready_user.is_some() && !matches!(ready, Ready::Cmd { .. }) {
        return Err(c.key(
            &tspan,
            "target.ready_user",
            "only a cmd: probe runs a command: ready_user goes with ready = \"cmd:...\"",
        ));
    }
    let recovery_timeout = match &t.recovery_timeout {
        Some(d) => duration(d).map_err(|m| c.key(&tspan, "target.recovery_timeout", m))?,
        None => Duration::from_secs(10),
    };
    for (list, name) in [(&t.allow, "allow"), (&t.deny, "deny")] {
        if let Some(m) = list {
            for comm in &m.comms {
                comm_ok(comm)
                    .map_err(|msg| c.key(&tspan, &format!("target.{name}.comms"), plain(msg)))?;
            }
            for title in &m.titles {
                glob::Pattern::new(title).map_err(|e| {
                    c.key(
                        &tspan,
                        &format!("target.{name}.titles"),
                        format!("`{title}`: not a glob pattern: {e}"),
                    )
                })?;
            }
        }
    }
    if t.allow.as_ref().is_some_and(|a| !a.pids.is_empty()) {
        return Err(c.key(
            &tspan,
            "target.allow.pids",
            "pids change at every restart: allow by comms or exes",
        ));
    }
    Ok(Target {
        named,
        comm_filter,
        ready,
        ready_user: t.ready_user.clone(),
        hit: t.hit.unwrap_or_default(),
        data_dir: t.data_dir.clone(),
        data_size: t
            .data_size
            .as_deref()
            .map(|s| {
                let size = crate::power::parse_size(s)?;
                if size < crate::power::MIN_SIZE {
                    return Err(format!(
                        "{s}: at least {}MiB (ext4 with its journal)",
                        crate::power::MIN_SIZE >> 20
                    ));
                }
                Ok(size)
            })
            .transpose()
            .map_err(|m| c.key(&tspan, "target.data_size", m))?,
        effect_window: match &t.effect_window {
            Some(d) => duration(d).map_err(|m| c.key(&tspan, "target.effect_window", m))?,
            None => Duration::from_secs(2),
        },
        recovery_timeout,
        allow: t.allow.clone(),
        deny: t.deny.clone().unwrap_or_default(),
    })
}

/// Directories a power_loss fault never mounts over.
const SYSTEM_DIRS: [&str; 19] = [
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/mnt", "/opt", "/proc", "/root",
    "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/tmp",
];

/// A power_loss fault needs the data directory and its size, and a supervisor chaos can
/// freeze: not systemd.
fn check_power(c: &Checker, raw: &file::ExperimentFile, target: &Target) -> Result<(), FileError> {
    let Some(fault) = raw
        .faults
        .get_ref()
        .iter()
        .position(|f| *f.get_ref().kind.get_ref() == file::FaultKind::PowerLoss)
    else {
        if target.data_size.is_some() {
            return Err(c.key(
                &raw.target.span(),
                "target.data_size",
                "only a power_loss fault makes a filesystem for data_dir",
            ));
        }
        return Ok(());
    };
    let tspan = raw.target.span();
    let key = format!("faults[{fault}].kind");
    let at = raw.faults.get_ref()[fault].get_ref().kind.span().start;
    match &target.data_dir {
        None => {
            return Err(c.at(
                at,
                &key,
                "a power_loss fault needs target.data_dir (the directory whose unsynced writes a cut loses) and target.data_size",
            ));
        }
        Some(dir) if !dir.is_absolute() || dir == Path::new("/") => {
            return Err(c.key(
                &tspan,
                "target.data_dir",
                format!(
                    "{}: a power_loss fault mounts a filesystem there: give an absolute path below /",
                    dir.display()
                ),
            ));
        }
        Some(dir) if SYSTEM_DIRS.iter().any(|d| dir == Path::new(d)) => {
            return Err(c.key(
                &tspan,
                "target.data_dir",
                format!(
                    "{}: a system directory; a power_loss fault mounts a filesystem over data_dir: give the service's own",
                    dir.display()
                ),
            ));
        }
        Some(_) => {}
    }
    if target.data_size.is_none() {
        return Err(c.key(
            &tspan,
            "target.data_size",
            "a power_loss fault needs the size of the filesystem it makes for data_dir (for example \"64MiB\")",
        ));
    }
    if matches!(target.named, Named::Unit { .. }) {
        return Err(c.at(
            at,
            &key,
            "a power_loss fault keeps the supervisor frozen until the filesystem is back, and systemd (pid 1) is never frozen: run the service under a supervisor in a cgroup of its own",
        ));
    }
    Ok(())
}

/// `[guards]`: when the run aborts on its own.
fn check_guards(c: &Checker, g: &file::GuardsFile, target: &Target) -> Result<Guards, FileError> {
    let episode_timeout = g
        .episode_timeout
        .as_ref()
        .map(|d| {
            duration(d.get_ref()).map_err(|m| c.at(d.span().start, "guards.episode_timeout", m))
        })
        .transpose()?;
    if let Some(k) = &g.crash_rate_factor
        && !(*k.get_ref() >= 1.0 && k.get_ref().is_finite())
    {
        return Err(c.at(
            k.span().start,
            "guards.crash_rate_factor",
            format!("{}: give a factor of 1 or more", k.get_ref()),
        ));
    }
    if let Some(n) = &g.max_consecutive_failures
        && *n.get_ref() == 0
    {
        return Err(c.at(
            n.span().start,
            "guards.max_consecutive_failures",
            "0: give at least 1",
        ));
    }
    if let (Some(guard), Some(d)) = (episode_timeout, &g.episode_timeout)
        && guard > target.recovery_timeout
    {
        return Err(c.at(
            d.span().start,
            "guards.episode_timeout",
            format!(
                "{} is longer than target.recovery_timeout ({}), which fails the episode first: give at most that",
                humantime::format_duration(guard),
                humantime::format_duration(target.recovery_timeout)
            ),
        ));
    }
    Ok(Guards {
        episode_timeout,
        crash_rate_factor: g.crash_rate_factor.as_ref().map(|k| *k.get_ref()),
        max_consecutive_failures: g.max_consecutive_failures.as_ref().map(|n| *n.get_ref()),
        abort_on_orphans: g.abort_on_orphans,
    })
}

/// `[phases]`: the run's timeline.
fn check_phases(
    c: &Checker,
    p: &file::PhasesFile,
    guards: &Guards,
) -> Result<RunPhases, FileError> {
    let phase = |value: &Option<toml::Spanned<String>>, key: &str, default: Duration| {
        value
            .as_ref()
            .map(|d| duration_or_zero(d.get_ref()).map_err(|m| c.at(d.span().start, key, m)))
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let phases = RunPhases {
        baseline: phase(&p.baseline, "phases.baseline", Duration::from_secs(5))?,
        cooldown: phase(&p.cooldown, "phases.cooldown", Duration::from_secs(2))?,
        max_duration: phase(
            &p.max_duration,
            "phases.max_duration",
            Duration::from_secs(3600),
        )?,
    };
    if phases.max_duration.is_zero() {
        let span = p.max_duration.as_ref().map_or(0, |d| d.span().start);
        return Err(c.at(span, "phases.max_duration", "give a positive duration"));
    }
    if guards.crash_rate_factor.is_some() && phases.baseline.is_zero() {
        let span = p.baseline.as_ref().map_or(0, |d| d.span().start);
        return Err(c.at(
            span,
            "phases.baseline",
            "the crash-rate guard compares with the baseline: give it a duration",
        ));
    }
    Ok(phases)
}

pub(super) fn duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("`{text}` is not a duration (for example 500ms, 2s, 1m)"))
}

pub(super) fn duration(text: &str) -> Result<Duration, String> {
    match duration_or_zero(text)? {
        d if d.is_zero() => Err(format!("`{text}`: give a positive duration")),
        d => Ok(d),
    }
}

/// The key a parse error at `offset` is about, from the text: `table.key` of the line, or
/// `table.field` when the message is about a missing field.
fn key_at(text: &str, offset: usize, message: &str) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    let header = |l: &str| {
        l.starts_with('[')
            .then(|| l.trim_matches(['[', ']']).trim().to_string())
    };
    let (table, key) = match header(line) {
        Some(table) => (Some(table), None),
        None => (
            text[..line_start]
                .lines()
                .rev()
                .map(str::trim)
                .find_map(header),
            line.split_once('=')
                .map(|(k, _)| k.trim().to_string())
                .filter(|k| !k.is_empty()),
        ),
    };
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    let key = missing.or(key);
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => "(file)".into(),
    }
}
