//! `chaos inject` flags, checked into one [`FaultSpec`] and the rest of the run's settings
//! before anything touches the kernel.

use std::{path::PathBuf, time::Duration};

use chaos_common::threshold;
use nix::sys::signal::Signal;

use super::super::{Failure, common::export_config};
use crate::{
    cli::{
        ErrnoBackend, HitArg, InjectCommonArgs, InjectErrnoArgs, InjectSignalArgs, InjectTargetArgs,
    },
    export::ExportConfig,
    fault::Hit,
    inject::{
        ERRNO_CEILING_PER_MINUTE, SIGNAL_CEILING_PER_MINUTE, fresh_seed, names,
        seccomp::{Action, ArgMatch, Rule},
        spec::{Calls, FaultAction, FaultSpec, LSM_SYSCALLS, SignalSchedule, Timing, lsm_errno},
    },
    target::TargetSpec,
};

/// A checked `chaos inject` invocation.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    pub fault: FaultSpec,
    pub targets: TargetSpec,
    pub seed: u64,
    pub seed_given: bool,
    pub dry_run: bool,
    pub max_duration: Option<Duration>,
    pub json: bool,
    pub audit: Option<PathBuf>,
    pub export: ExportConfig,
}

fn refused(message: String) -> Failure {
    Failure::refused(message)
}

/// What both subcommands check the same way: everything but the fault's action.
struct Common {
    targets: TargetSpec,
    seed: u64,
    seed_given: bool,
    max_duration: Option<Duration>,
    max_per_minute: u32,
    dry_run: bool,
    json: bool,
    audit: Option<PathBuf>,
    export: ExportConfig,
}

impl Common {
    fn check(
        common: &InjectCommonArgs,
        targets: &InjectTargetArgs,
        ceiling: u32,
    ) -> Result<Self, Failure> {
        let spec = TargetSpec {
            pids: targets.pids.clone(),
            follow: true,
            comms: targets.comms.clone(),
            cgroups: crate::systemd::with_unit_cgroups(targets.cgroups.clone(), &targets.units)
                .map_err(|e| refused(e.to_string()))?,
            command: targets.command.clone(),
        };
        if spec.is_empty() {
            return Err(refused(
                "no target: name one with --pid, --comm, --cgroup, --unit or -- CMD (there is no \"any process\" mode)".into(),
            ));
        }
        let max_duration = common
            .max_duration
            .as_deref()
            .map(|d| names::duration("--max-duration", d).map_err(refused))
            .transpose()?;
        let max_per_minute = common.max_per_minute.unwrap_or(ceiling);
        if max_per_minute == 0 || max_per_minute > ceiling {
            return Err(refused(format!(
                "--max-per-minute {max_per_minute}: give 1 to {ceiling}"
            )));
        }
        Ok(Self {
            targets: spec,
            seed: common.seed.unwrap_or_else(fresh_seed),
            seed_given: common.seed.is_some(),
            max_duration,
            max_per_minute,
            dry_run: common.dry_run,
            json: common.json,
            audit: common.audit.clone(),
            export: export_config(&common.export)?,
        })
    }

    fn with(self, action: FaultAction, count: Option<u32>, hit: Hit) -> InjectConfig {
        InjectConfig {
            fault: FaultSpec {
                index: 0,
                action,
                count,
                seed: self.seed,
                windows: Vec::new(),
                max_per_minute: self.max_per_minute,
                hit,
            },
            targets: self.targets,
            seed: self.seed,
            seed_given: self.seed_given,
            dry_run: self.dry_run,
            max_duration: self.max_duration,
            json: self.json,
            audit: self.audit,
            export: self.export,
        }
    }
}

impl InjectConfig {
    pub fn signal(args: &InjectSignalArgs) -> Result<Self, Failure> {
        let base = Common::check(&args.common, &args.targets, SIGNAL_CEILING_PER_MINUTE)?;
        let hit = match args.hit {
            HitArg::Main => Hit::Main,
            HitArg::Worker => Hit::Worker,
            HitArg::Any => Hit::Any,
        };
        let (launched, seed, max_per_minute) = (
            !base.targets.command.is_empty(),
            base.seed,
            base.max_per_minute,
        );
        let signal = names::signal(&args.signal).map_err(refused)?;
        let duration = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|d| names::duration(flag, d).map_err(refused))
                .transpose()
        };
        if let Some(on) = &args.on {
            let (name, nth) = parse_on(on)?;
            let nr = names::syscall("--on", name).map_err(refused)?;
            if !args.before {
                return Ok(base.with(FaultAction::Trigger { nr, nth, signal }, None, hit));
            }
            if !launched {
                return Err(refused(
                    "--before needs the seccomp backend, which works on a command chaos launches: add -- CMD".into(),
                ));
            }
            let rule = Rule {
                action: Action::SignalBefore(signal as i32),
                nth: Some(nth),
                threshold: threshold(1.0),
                seed,
                count: None,
                path: None,
                args: Vec::new(),
                max_per_minute,
                dry_run: args.common.dry_run,
            };
            return Ok(base.with(FaultAction::Seccomp { nr, rule }, None, hit));
        }
        if args.count == 0 {
            return Err(refused("--count 0: give at least 1".into()));
        }
        let interval = names::duration("--interval", &args.interval).map_err(refused)?;
        let per_minute = Duration::from_secs(60) / max_per_minute;
        if args.count > 1 && interval < per_minute {
            return Err(refused(format!(
                "--interval {}: more than {max_per_minute} signals a minute; the interval must be at least {per_minute:?}",
                args.interval
            )));
        }
        let freeze_for = duration("--for", &args.freeze_for)?;
        if freeze_for.is_some() && signal != Signal::SIGSTOP {
            return Err(refused(format!(
                "--for freezes with SIGSTOP then SIGCONT: use --signal STOP (not {})",
                signal.as_str()
            )));
        }
        let schedule = SignalSchedule {
            signal,
            interval,
            jitter: duration("--jitter", &args.jitter)?.unwrap_or_default(),
            escalate_after: duration("--escalate-after", &args.escalate_after)?,
            freeze_for,
            timing: Timing::Grid,
            power: false,
        };
        Ok(base.with(FaultAction::Signal(schedule), Some(args.count), hit))
    }

    pub fn errno(args: &InjectErrnoArgs) -> Result<Self, Failure> {
        let base = Common::check(&args.common, &args.targets, ERRNO_CEILING_PER_MINUTE)?;
        let (launched, seed, max_per_minute) = (
            !base.targets.command.is_empty(),
            base.seed,
            base.max_per_minute,
        );
        let nr = names::syscall("--syscall", &args.syscall).map_err(refused)?;
        let errno = names::errno(&args.errno).map_err(refused)? as i32;
        if !(0.0..=1.0).contains(&args.probability) {
            return Err(refused(format!(
                "--probability {}: give a number from 0 to 1",
                args.probability
            )));
        }
        if args.nth == Some(0) {
            return Err(refused("--nth 0: calls are counted from 1".into()));
        }
        if args.count == Some(0) {
            return Err(refused("--count 0: give at least 1".into()));
        }
        let arg_matches = args
            .arg
            .iter()
            .map(|a| ArgMatch::parse(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(refused)?;
        let backend = args.backend.unwrap_or(if launched {
            ErrnoBackend::Seccomp
        } else {
            ErrnoBackend::Lsm
        });
        let action = match backend {
            ErrnoBackend::Seccomp => {
                if !launched {
                    return Err(refused(
                        "--backend seccomp works on a command chaos launches: add -- CMD".into(),
                    ));
                }
                if args.path.is_some() && names::path_arg(nr).is_none() {
                    return Err(refused(format!(
                        "--path: {} takes no path argument",
                        nr.name()
                    )));
                }
                FaultAction::Seccomp {
                    nr,
                    rule: Rule {
                        action: Action::Fail(errno),
                        nth: args.nth,
                        threshold: threshold(args.probability),
                        seed,
                        count: args.count,
                        path: args.path.clone(),
                        args: arg_matches.clone(),
                        max_per_minute,
                        dry_run: args.common.dry_run,
                    },
                }
            }
            ErrnoBackend::Lsm => {
                if !arg_matches.is_empty() {
                    return Err(refused(
                        "--arg needs the seccomp backend (-- CMD): the lsm backend sees hooks, not syscall arguments".into(),
                    ));
                }
                if args.path.is_some() {
                    return Err(refused(
                        "--path needs the seccomp backend (-- CMD): the lsm backend does not read paths".into(),
                    ));
                }
                let calls = Calls {
                    nth: args.nth,
                    probability: args.probability,
                };
                lsm_errno(nr, errno, calls, args.count, seed, max_per_minute).ok_or_else(|| {
                    refused(format!(
                        "--syscall {}: no LSM hook covers it; the lsm backend fails {LSM_SYSCALLS} (use -- CMD for seccomp, which fails any syscall)",
                        nr.name()
                    ))
                })?
            }
        };
        Ok(base.with(action, args.count, Hit::Any))
    }
}

/// `fsync:nth=3`.
fn parse_on(text: &str) -> Result<(&str, u32), Failure> {
    let bad = || {
        refused(format!(
            "--on {text}: give SYSCALL:nth=N, for example fsync:nth=3"
        ))
    };
    let (name, rest) = text.split_once(':').ok_or_else(bad)?;
    let nth: u32 = rest
        .strip_prefix("nth=")
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    if nth == 0 {
        return Err(refused(format!("--on {text}: calls are counted from 1")));
    }
    Ok((name, nth))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use syscalls::Sysno;

    use super::*;
    use crate::cli::{Cli, Command, InjectCommand};

    fn parse(line: &str) -> Result<InjectConfig, String> {
        let args = ["chaos", "inject"]
            .into_iter()
            .chain(line.split_whitespace());
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        let Command::Inject(inject) = cli.command else {
            unreachable!()
        };
        match inject {
            InjectCommand::Signal(a) => InjectConfig::signal(&a),
            InjectCommand::Errno(a) => InjectConfig::errno(&a),
        }
        .map_err(|e| e.one_line())
    }

    #[test]
    fn bad_input_names_what_is_wrong() {
        let cases = [
            ("signal --signal TERM", "no target"),
            (
                "signal --signal BOGUS --pid 5",
                "--signal BOGUS: not a signal",
            ),
            (
                "signal --signal TERM --on fsync --pid 5",
                "--on fsync: give SYSCALL:nth=N",
            ),
            (
                "signal --signal TERM --on fsync:nth=0 --pid 5",
                "--on fsync:nth=0: calls are counted from 1",
            ),
            (
                "signal --signal TERM --on fsyncc:nth=2 --pid 5",
                "--on fsyncc: not a syscall",
            ),
            (
                "signal --signal TERM --on fsync:nth=2 --before --pid 5",
                "--before needs the seccomp backend",
            ),
            (
                "signal --signal TERM --for 2s --pid 5",
                "--for freezes with SIGSTOP",
            ),
            (
                "signal --signal TERM --count 5 --interval 10ms --pid 5",
                "more than 600 signals a minute",
            ),
            (
                "signal --signal TERM --interval soon --pid 5",
                "--interval soon: not a duration",
            ),
            (
                "signal --signal TERM --count 0 --pid 5",
                "--count 0: give at least 1",
            ),
            (
                "signal --signal TERM --max-per-minute 0 --pid 5",
                "--max-per-minute 0: give 1 to 600",
            ),
            (
                "errno --syscall fsync --errno EIO --probability 1.5 -- true",
                "--probability 1.5: give a number from 0 to 1",
            ),
            (
                "errno --syscall fsync --errno EIO --nth 0 -- true",
                "--nth 0: calls are counted from 1",
            ),
            (
                "errno --syscall nosuch --errno EIO -- true",
                "--syscall nosuch: not a syscall",
            ),
            (
                "errno --syscall fsync --errno EBOGUS -- true",
                "--errno EBOGUS: not an errno",
            ),
            (
                "errno --syscall fsync --errno EIO --pid 5",
                "--syscall fsync: no LSM hook covers it",
            ),
            (
                "errno --syscall openat --errno EIO --path /x --pid 5",
                "--path needs the seccomp backend",
            ),
            (
                "errno --syscall openat --errno EIO --backend seccomp --pid 5",
                "--backend seccomp works on a command chaos launches",
            ),
            (
                "errno --syscall fsync --errno EIO --path /x -- true",
                "--path: fsync takes no path argument",
            ),
            (
                "errno --syscall fsync --errno EIO --max-per-minute 90000 -- true",
                "--max-per-minute 90000: give 1 to 60000",
            ),
            (
                "errno --syscall fsync --errno EIO --count 0 -- true",
                "--count 0: give at least 1",
            ),
            (
                "errno --syscall fsync --errno EIO --arg 9=1 -- true",
                "--arg 9=1: the argument number is 0 to 5",
            ),
            (
                "errno --syscall openat --errno EIO --arg 2&O_CREAT --pid 5",
                "--arg needs the seccomp backend",
            ),
        ];
        for (line, expected) in cases {
            let err = parse(line).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn flags_lower_to_one_fault_spec_with_its_backend() {
        let seccomp = parse("errno --syscall fsync --errno EIO --nth 3 --seed 4 -- true").unwrap();
        assert!(matches!(
            seccomp.fault.action,
            FaultAction::Seccomp {
                nr: Sysno::fsync,
                ..
            }
        ));
        assert_eq!((seccomp.seed, seccomp.fault.seed), (4, 4));
        assert_eq!(seccomp.fault.backend(), crate::fault::Backend::Seccomp);
        let lsm = parse("errno --syscall connect --errno ECONNREFUSED --pid 5").unwrap();
        let FaultAction::Lsm { fault, family, .. } = lsm.fault.action else {
            panic!()
        };
        assert_eq!(
            (fault.hook, fault.errno),
            (
                chaos_common::lsm_hook::SOCKET_CONNECT,
                libc::ECONNREFUSED as u32
            )
        );
        assert_eq!(family, &[Sysno::connect]);
        let trigger = parse("signal --signal KILL --on fsync:nth=3 --pid 5").unwrap();
        assert_eq!(
            trigger.fault.action,
            FaultAction::Trigger {
                nr: Sysno::fsync,
                nth: 3,
                signal: Signal::SIGKILL
            }
        );
        assert_eq!(
            trigger.fault.count, None,
            "the kernel's count: none but the ceiling"
        );
        let before = parse("signal --signal KILL --on fsync:nth=3 --before -- true").unwrap();
        assert_eq!(before.fault.backend(), crate::fault::Backend::SeccompBefore);
        let freeze = parse("signal --signal STOP --for 2s --pid 5").unwrap();
        let FaultAction::Signal(s) = freeze.fault.action else {
            panic!()
        };
        assert_eq!(
            (s.freeze_for, s.timing, freeze.fault.count),
            (Some(Duration::from_secs(2)), Timing::Grid, Some(1))
        );
    }
}
