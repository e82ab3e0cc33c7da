//! `chaos inject` arguments, checked into a plan before anything touches the kernel.

use std::time::Duration;

use chaos_common::{LsmFault, lsm_hook, threshold};
use nix::sys::signal::Signal;
use syscalls::Sysno;

use super::{
    ERRNO_CEILING_PER_MINUTE, SIGNAL_CEILING_PER_MINUTE, fresh_seed, names,
    seccomp::{Action, Plan as SeccompPlan},
};
use crate::{
    cli::{ErrnoBackend, InjectCommonArgs, InjectErrnoArgs, InjectSignalArgs, InjectTargetArgs},
    error::Error,
    target::TargetSpec,
};

/// How the faults are delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Signals from userspace through pidfds, on a schedule.
    Signals(SignalPlan),
    /// A signal from eBPF at the Nth call of a syscall.
    Trigger { nr: Sysno, nth: u32, signal: Signal },
    /// Calls of one syscall decided by chaos through seccomp user notification.
    Seccomp { nr: Sysno, plan: SeccompPlan },
    /// An LSM hook returning an errno.
    Lsm {
        fault: LsmFault,
        /// The syscalls that reach the hook (their errors are the proof).
        family: &'static [Sysno],
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignalPlan {
    pub signal: Signal,
    pub count: u32,
    pub interval: Duration,
    pub jitter: Duration,
    pub escalate_after: Option<Duration>,
    pub freeze_for: Option<Duration>,
}

/// A checked `chaos inject` invocation.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    pub plan: Plan,
    pub spec: TargetSpec,
    pub seed: u64,
    pub seed_given: bool,
    pub dry_run: bool,
    pub max_duration: Option<Duration>,
    pub max_per_minute: u32,
    pub json: bool,
    pub audit: Option<std::path::PathBuf>,
    pub export: crate::export::ExportConfig,
}

fn usage(message: String) -> Error {
    Error::Usage(message)
}

/// What every `chaos inject` subcommand checks the same way: all of [`InjectConfig`] but
/// the plan.
struct Common {
    spec: TargetSpec,
    seed: u64,
    seed_given: bool,
    max_duration: Option<Duration>,
    max_per_minute: u32,
    dry_run: bool,
    json: bool,
    audit: Option<std::path::PathBuf>,
    export: crate::export::ExportConfig,
}

impl Common {
    fn with_plan(self, plan: Plan) -> InjectConfig {
        InjectConfig {
            plan,
            spec: self.spec,
            seed: self.seed,
            seed_given: self.seed_given,
            dry_run: self.dry_run,
            max_duration: self.max_duration,
            max_per_minute: self.max_per_minute,
            json: self.json,
            audit: self.audit,
            export: self.export,
        }
    }
}

fn common(
    common: &InjectCommonArgs,
    targets: &InjectTargetArgs,
    ceiling: u32,
) -> Result<Common, Error> {
    let spec = TargetSpec {
        pids: targets.pids.clone(),
        follow: true,
        comms: targets.comms.clone(),
        cgroups: targets.cgroups.clone(),
        command: targets.command.clone(),
    };
    if spec.is_empty() {
        return Err(usage(
            "no target: name one with --pid, --comm, --cgroup or -- CMD (there is no \"any process\" mode)".into(),
        ));
    }
    let max_duration = common
        .max_duration
        .as_deref()
        .map(|d| names::duration("--max-duration", d).map_err(usage))
        .transpose()?;
    let max_per_minute = common.max_per_minute.unwrap_or(ceiling);
    if max_per_minute == 0 || max_per_minute > ceiling {
        return Err(usage(format!(
            "--max-per-minute {max_per_minute}: give 1 to {ceiling}"
        )));
    }
    Ok(Common {
        spec,
        seed: common.seed.unwrap_or_else(fresh_seed),
        seed_given: common.seed.is_some(),
        max_duration,
        max_per_minute,
        dry_run: common.dry_run,
        json: common.json,
        audit: common.audit.clone(),
        export: crate::export::ExportConfig::from_args(&common.export)?,
    })
}

impl InjectConfig {
    pub fn signal(args: &InjectSignalArgs) -> Result<Self, Error> {
        let base = common(&args.common, &args.targets, SIGNAL_CEILING_PER_MINUTE)?;
        let (spec, seed, max_per_minute) = (&base.spec, base.seed, base.max_per_minute);
        let signal = names::signal(&args.signal).map_err(usage)?;
        let duration = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|d| names::duration(flag, d).map_err(usage))
                .transpose()
        };
        let plan = if let Some(on) = &args.on {
            let (name, nth) = parse_on(on)?;
            let nr = names::syscall("--on", name).map_err(usage)?;
            if args.before {
                if spec.command.is_empty() {
                    return Err(usage(
                        "--before needs the seccomp backend, which works on a command chaos launches: add -- CMD".into(),
                    ));
                }
                Plan::Seccomp {
                    nr,
                    plan: SeccompPlan {
                        action: Action::SignalBefore(signal as i32),
                        nth: Some(nth),
                        threshold: threshold(1.0),
                        seed,
                        count: None,
                        path: None,
                        max_per_minute,
                        dry_run: args.common.dry_run,
                    },
                }
            } else {
                Plan::Trigger { nr, nth, signal }
            }
        } else {
            if args.count == 0 {
                return Err(usage("--count 0: give at least 1".into()));
            }
            let interval = names::duration("--interval", &args.interval).map_err(usage)?;
            let per_minute = Duration::from_secs(60) / max_per_minute;
            if args.count > 1 && interval < per_minute {
                return Err(usage(format!(
                    "--interval {}: more than {max_per_minute} signals a minute; the interval must be at least {per_minute:?}",
                    args.interval
                )));
            }
            let freeze_for = duration("--for", &args.freeze_for)?;
            if freeze_for.is_some() && signal != Signal::SIGSTOP {
                return Err(usage(format!(
                    "--for freezes with SIGSTOP then SIGCONT: use --signal STOP (not {})",
                    signal.as_str()
                )));
            }
            Plan::Signals(SignalPlan {
                signal,
                count: args.count,
                interval,
                jitter: duration("--jitter", &args.jitter)?.unwrap_or_default(),
                escalate_after: duration("--escalate-after", &args.escalate_after)?,
                freeze_for,
            })
        };
        Ok(base.with_plan(plan))
    }

    pub fn errno(args: &InjectErrnoArgs) -> Result<Self, Error> {
        let base = common(&args.common, &args.targets, ERRNO_CEILING_PER_MINUTE)?;
        let (spec, seed, max_per_minute) = (&base.spec, base.seed, base.max_per_minute);
        let nr = names::syscall("--syscall", &args.syscall).map_err(usage)?;
        let errno = names::errno(&args.errno).map_err(usage)? as i32;
        if !(0.0..=1.0).contains(&args.probability) {
            return Err(usage(format!(
                "--probability {}: give a number from 0 to 1",
                args.probability
            )));
        }
        if args.nth == Some(0) {
            return Err(usage("--nth 0: calls are counted from 1".into()));
        }
        if args.count == Some(0) {
            return Err(usage("--count 0: give at least 1".into()));
        }
        let backend = args.backend.unwrap_or(if spec.command.is_empty() {
            ErrnoBackend::Lsm
        } else {
            ErrnoBackend::Seccomp
        });
        let plan = match backend {
            ErrnoBackend::Seccomp => {
                if spec.command.is_empty() {
                    return Err(usage(
                        "--backend seccomp works on a command chaos launches: add -- CMD".into(),
                    ));
                }
                if args.path.is_some() && names::path_arg(nr).is_none() {
                    return Err(usage(format!(
                        "--path: {} takes no path argument",
                        nr.name()
                    )));
                }
                Plan::Seccomp {
                    nr,
                    plan: SeccompPlan {
                        action: Action::Fail(errno),
                        nth: args.nth,
                        threshold: threshold(args.probability),
                        seed,
                        count: args.count,
                        path: args.path.clone(),
                        max_per_minute,
                        dry_run: args.common.dry_run,
                    },
                }
            }
            ErrnoBackend::Lsm => {
                if args.path.is_some() {
                    return Err(usage(
                        "--path needs the seccomp backend (-- CMD): the lsm backend does not read paths".into(),
                    ));
                }
                let (hook, family) = lsm_hook_for(nr).ok_or_else(|| {
                    usage(format!(
                        "--syscall {}: no LSM hook covers it; the lsm backend fails open/openat, read, write, connect, fork/clone, execve, unlink, rename and mkdir (use -- CMD for seccomp, which fails any syscall)",
                        nr.name()
                    ))
                })?;
                Plan::Lsm {
                    fault: LsmFault {
                        hook,
                        errno: errno as u32,
                        nth: args.nth.unwrap_or(0),
                        count: args.count.unwrap_or(0),
                        threshold: threshold(args.probability),
                        seed,
                        max_per_minute,
                        dry_run: u32::from(args.common.dry_run),
                    },
                    family,
                }
            }
        };
        Ok(base.with_plan(plan))
    }
}

/// `fsync:nth=3`.
fn parse_on(text: &str) -> Result<(&str, u32), Error> {
    let bad = || {
        usage(format!(
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
        return Err(usage(format!("--on {text}: calls are counted from 1")));
    }
    Ok((name, nth))
}

/// The LSM hook that sees a syscall, and every syscall that reaches that hook.
pub fn lsm_hook_for(nr: Sysno) -> Option<(u32, &'static [Sysno])> {
    use Sysno::*;
    const OPEN: &[Sysno] = &[open, openat, openat2, creat];
    const READ: &[Sysno] = &[read, pread64, readv, preadv, preadv2];
    const WRITE: &[Sysno] = &[write, pwrite64, writev, pwritev, pwritev2];
    const CONNECT: &[Sysno] = &[connect];
    const FORK: &[Sysno] = &[fork, vfork, clone, clone3];
    const EXEC: &[Sysno] = &[execve, execveat];
    const UNLINK: &[Sysno] = &[unlink, unlinkat];
    const RENAME: &[Sysno] = &[rename, renameat, renameat2];
    const MKDIR: &[Sysno] = &[mkdir, mkdirat];
    let table: [(u32, &[Sysno]); 9] = [
        (lsm_hook::FILE_OPEN, OPEN),
        (lsm_hook::FILE_READ, READ),
        (lsm_hook::FILE_WRITE, WRITE),
        (lsm_hook::SOCKET_CONNECT, CONNECT),
        (lsm_hook::TASK_ALLOC, FORK),
        (lsm_hook::BPRM_CHECK, EXEC),
        (lsm_hook::INODE_UNLINK, UNLINK),
        (lsm_hook::INODE_RENAME, RENAME),
        (lsm_hook::INODE_MKDIR, MKDIR),
    ];
    table.into_iter().find(|(_, family)| family.contains(&nr))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command, InjectCommand};

    fn parse(args: &[&str]) -> Result<InjectConfig, String> {
        let cli = Cli::try_parse_from(["chaos", "inject"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Command::Inject(inject) = cli.command else {
            unreachable!()
        };
        match inject {
            InjectCommand::Signal(a) => InjectConfig::signal(&a),
            InjectCommand::Errno(a) => InjectConfig::errno(&a),
        }
        .map_err(|e| e.to_string())
    }

    #[test]
    fn bad_input_names_what_is_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (&["signal", "--signal", "TERM"], "no target"),
            (
                &["signal", "--signal", "BOGUS", "--pid", "5"],
                "--signal BOGUS: not a signal",
            ),
            (
                &["signal", "--signal", "TERM", "--on", "fsync", "--pid", "5"],
                "--on fsync: give SYSCALL:nth=N",
            ),
            (
                &[
                    "signal",
                    "--signal",
                    "TERM",
                    "--on",
                    "fsync:nth=0",
                    "--pid",
                    "5",
                ],
                "--on fsync:nth=0: calls are counted from 1",
            ),
            (
                &[
                    "signal",
                    "--signal",
                    "TERM",
                    "--on",
                    "fsyncc:nth=2",
                    "--pid",
                    "5",
                ],
                "--on fsyncc: not a syscall",
            ),
            (
                &[
                    "signal",
                    "--signal",
                    "TERM",
                    "--on",
                    "fsync:nth=2",
                    "--before",
                    "--pid",
                    "5",
                ],
                "--before needs the seccomp backend",
            ),
            (
                &["signal", "--signal", "TERM", "--for", "2s", "--pid", "5"],
                "--for freezes with SIGSTOP",
            ),
            (
                &[
                    "signal",
                    "--signal",
                    "TERM",
                    "--count",
                    "5",
                    "--interval",
                    "10ms",
                    "--pid",
                    "5",
                ],
                "more than 600 signals a minute",
            ),
            (
                &[
                    "signal",
                    "--signal",
                    "TERM",
                    "--interval",
                    "soon",
                    "--pid",
                    "5",
                ],
                "--interval soon: not a duration",
            ),
            (
                &[
                    "errno",
                    "--syscall",
                    "fsync",
                    "--errno",
                    "EIO",
                    "--probability",
                    "1.5",
                    "--",
                    "true",
                ],
                "--probability 1.5: give a number from 0 to 1",
            ),
            (
                &[
                    "errno",
                    "--syscall",
                    "fsync",
                    "--errno",
                    "EIO",
                    "--nth",
                    "0",
                    "--",
                    "true",
                ],
                "--nth 0: calls are counted from 1",
            ),
            (
                &[
                    "errno",
                    "--syscall",
                    "nosuch",
                    "--errno",
                    "EIO",
                    "--",
                    "true",
                ],
                "--syscall nosuch: not a syscall",
            ),
            (
                &[
                    "errno",
                    "--syscall",
                    "fsync",
                    "--errno",
                    "EBOGUS",
                    "--",
                    "true",
                ],
                "--errno EBOGUS: not an errno",
            ),
            (
                &[
                    "errno",
                    "--syscall",
                    "fsync",
                    "--errno",
                    "EIO",
                    "--pid",
                    "5",
                ],
                "--syscall fsync: no LSM hook covers it",
            ),
            (
                &[
                    "errno",
                    "--syscall",
                    "openat",
                    "--errno",
                    "EIO",
                    "--path",
                    "/x",
                    "--pid",
                    "5",
                ],
                "--path needs the seccomp backend",
            ),
            (
                &[
                    "errno",
                    "--syscall",
                    "openat",
                    "--errno",
                    "EIO",
                    "--backend",
                    "seccomp",
                    "--pid",
                    "5",
                ],
                "--backend seccomp works on a command chaos launches",
            ),
            (
                &[
                    "errno",
                    "--syscall",
                    "fsync",
                    "--errno",
                    "EIO",
                    "--path",
                    "/x",
                    "--",
                    "true",
                ],
                "--path: fsync takes no path argument",
            ),
            (
                &[
                    "errno",
                    "--syscall",
                    "fsync",
                    "--errno",
                    "EIO",
                    "--max-per-minute",
                    "90000",
                    "--",
                    "true",
                ],
                "--max-per-minute 90000: give 1 to 60000",
            ),
        ];
        for (args, expected) in cases {
            let err = parse(args).unwrap_err();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn plans_pick_their_backend() {
        let seccomp = parse(&[
            "errno",
            "--syscall",
            "fsync",
            "--errno",
            "EIO",
            "--nth",
            "3",
            "--seed",
            "4",
            "--",
            "true",
        ])
        .unwrap();
        assert!(matches!(
            seccomp.plan,
            Plan::Seccomp {
                nr: Sysno::fsync,
                ..
            }
        ));
        assert_eq!(seccomp.seed, 4);
        let lsm = parse(&[
            "errno",
            "--syscall",
            "connect",
            "--errno",
            "ECONNREFUSED",
            "--pid",
            "5",
        ])
        .unwrap();
        let Plan::Lsm { fault, family } = lsm.plan else {
            panic!()
        };
        assert_eq!(
            (fault.hook, fault.errno),
            (lsm_hook::SOCKET_CONNECT, libc::ECONNREFUSED as u32)
        );
        assert_eq!(family, &[Sysno::connect]);
        let trigger = parse(&[
            "signal",
            "--signal",
            "KILL",
            "--on",
            "fsync:nth=3",
            "--pid",
            "5",
        ])
        .unwrap();
        assert_eq!(
            trigger.plan,
            Plan::Trigger {
                nr: Sysno::fsync,
                nth: 3,
                signal: Signal::SIGKILL
            }
        );
        let freeze = parse(&["signal", "--signal", "STOP", "--for", "2s", "--pid", "5"]).unwrap();
        let Plan::Signals(s) = freeze.plan else {
            panic!()
        };
        assert_eq!(s.freeze_for, Some(Duration::from_secs(2)));
    }
}
