//! `chaos doctor`: what this kernel allows, found by loading tiny programs (chaos-ebpf's
//! `probes.rs`), and what that means for chaos.

use std::path::{Path, PathBuf};

use aya::programs::{
    BtfTracePoint, FEntry, FExit, KProbe, Lsm, Program, ProgramError, RawTracePoint, TracePoint,
};
use chaos_common::Layout;
use serde::Serialize;

use super::{EXIT_USAGE, Failure};
use crate::{
    bpf::{DEFAULT_RING_BYTES, Programs},
    cli::DoctorArgs,
    kernel::{
        btf::{KernelBtf, VMLINUX},
        layout::{Ext4Hooks, FsyncHook, HookSet, discover},
        preflight::{self, CAP_BPF, CAP_KILL, CAP_PERFMON, CAP_SYS_ADMIN, has_cap},
        tracefs,
    },
    sys::chain,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Unavailable,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was found, or why it is unavailable.
    pub detail: String,
    /// What this means for chaos.
    pub meaning: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Diagnosis {
    pub kernel: String,
    pub observe_works: bool,
    pub checks: Vec<Check>,
}

/// Checks without which `chaos observe` cannot run.
const REQUIRED: [&str; 6] = [
    "privileges",
    "btf",
    "tracefs",
    "tracepoint",
    "raw_tracepoint",
    "ring_buffer",
];

pub fn run(args: DoctorArgs) -> Result<u8, Failure> {
    let report = diagnose();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report always serializes")
        );
    } else {
        print_table(&report);
    }
    Ok(if report.observe_works { 0 } else { EXIT_USAGE })
}

type Outcome = Result<String, String>;

pub fn diagnose() -> Diagnosis {
    let mut checks = Vec::new();
    let mut add = |name, outcome: Outcome, meaning| {
        let (status, detail) = match outcome {
            Ok(detail) => (Status::Ok, detail),
            Err(detail) => (Status::Unavailable, detail),
        };
        checks.push(Check {
            name,
            status,
            detail,
            meaning,
        });
    };

    let privileged = preflight::can_load_bpf();
    add(
        "privileges",
        privileges(privileged),
        "loading any eBPF program needs root or CAP_BPF+CAP_PERFMON",
    );
    let btf = KernelBtf::load(Path::new(VMLINUX)).map_err(|e| chain(&e));
    add(
        "btf",
        btf.as_ref()
            .map_err(Clone::clone)
            .and_then(|b| {
                b.member_offset("task_struct", "exit_code")
                    .map_err(|e| chain(&e))
            })
            .map(|off| format!("{VMLINUX}; task_struct.exit_code at +{off}")),
        "exit codes, parents and lifetimes are read at offsets found in BTF",
    );
    let tracefs = tracefs::find();
    add(
        "tracefs",
        tracefs
            .as_ref()
            .map(|p| p.display().to_string())
            .ok_or_else(|| "not mounted: mount -t tracefs nodev /sys/kernel/tracing".to_string()),
        "tracepoint layouts are read from tracefs format files",
    );
    add(
        "lockdown",
        lockdown(),
        "integrity lockdown can refuse fentry/fexit, LSM and kprobe programs",
    );
    add(
        "cgroup_v2",
        cgroup2_mount(),
        "--cgroup targets need a cgroup v2 hierarchy",
    );
    add(
        "seccomp_user_notif",
        seccomp_user_notif(),
        "the seccomp errno backend for launched process trees (5.5+)",
    );
    let power = crate::power::preflight();
    add(
        "dm_flakey",
        power
            .dm_flakey
            .clone()
            .map(|()| "device-mapper's flakey target (dmsetup targets lists flakey)".to_string()),
        "kind = \"power_loss\": a cut drops every write to the data directory's device",
    );
    add(
        "loop",
        power
            .loop_devices
            .clone()
            .and(power.tools.clone())
            .map(|()| "/dev/loop-control; dmsetup, mkfs.ext4".to_string()),
        "kind = \"power_loss\": the data directory's filesystem lives on a loop file",
    );
    add(
        "fsync_fs_hook",
        match &tracefs {
            Some(t) if Ext4Hooks::probe(t).sync => {
                Ok("ext4:ext4_sync_file_enter/exit (default; no cost to other syscalls)".into())
            }
            Some(_) => Err("no ext4 sync tracepoints: use --fsync-hook syscalls".into()),
            None => Err("needs tracefs".into()),
        },
        "fsync events on ext4 without slowing other syscalls",
    );
    add(
        "fsync_syscall_hook",
        match &tracefs {
            Some(t) if t.join("events/syscalls/sys_enter_fsync").is_dir() => Ok(
                "syscalls:sys_enter/exit_* present (--fsync-hook syscalls: every filesystem, but every task on the machine takes the slow syscall path while attached)".into(),
            ),
            Some(_) => Err("no syscall tracepoints (CONFIG_FTRACE_SYSCALLS)".into()),
            None => Err("needs tracefs".into()),
        },
        "fsync events on any filesystem, with the fd",
    );

    let context = match (privileged, &tracefs, &btf) {
        (false, ..) => Err("skipped: needs privileges".to_string()),
        (_, None, _) => Err("skipped: needs tracefs".to_string()),
        (_, _, Err(_)) => Err("skipped: needs BTF".to_string()),
        (true, Some(tracefs), Ok(btf)) => ProbeContext::new(tracefs, btf),
    };
    let locked_down = lockdown().is_ok_and(|mode| mode != "none");
    for probe in PROBES {
        let outcome = match &context {
            Ok(context) => {
                (probe.run)(context).map_err(|detail| explain_refusal(detail, locked_down))
            }
            Err(reason) => Err(reason.clone()),
        };
        add(probe.name, outcome, probe.meaning);
    }

    let observe_works = REQUIRED.iter().all(|name| {
        checks
            .iter()
            .any(|c| c.name == *name && c.status == Status::Ok)
    });
    Diagnosis {
        kernel: kernel_release(),
        observe_works,
        checks,
    }
}

/// What the probes need: the observer layout (so the object loads as `observe` loads it) and
/// the kernel BTF in aya's form (fentry, fexit, LSM and BTF tracepoints attach by BTF id).
struct ProbeContext {
    layout: Layout,
    btf: aya::Btf,
}

impl ProbeContext {
    fn new(tracefs: &Path, btf: &KernelBtf) -> Result<Self, String> {
        let layout = discover(tracefs, btf, HookSet::observe(FsyncHook::Off))
            .map_err(|e| format!("this kernel lacks what the observer needs: {}", chain(&e)))?;
        let btf = aya::Btf::from_sys_fs().map_err(|e| chain(&e))?;
        Ok(Self { layout, btf })
    }

    /// A fresh object per probe, so that a refusal cannot affect the next probe.
    fn programs(&self) -> Result<Programs, String> {
        Programs::load(&self.layout, DEFAULT_RING_BYTES).map_err(|e| chain(&e))
    }
}

struct Probe {
    name: &'static str,
    meaning: &'static str,
    run: fn(&ProbeContext) -> Outcome,
}

/// Every probe program is a no-op, or acts only on a target, and doctor has no targets.
const PROBES: &[Probe] = &[
    Probe {
        name: "ring_buffer",
        meaning: "events reach userspace through a BPF ring buffer (5.8+)",
        run: |c| {
            let mut p = c.programs()?;
            program::<TracePoint>(&mut p, "probe_ringbuf")?
                .load()
                .map_err(|e| chain(&e))?;
            Ok("ring buffer and hash maps created; reserve/discard verified".into())
        },
    },
    Probe {
        name: "tracepoint",
        meaning: "exec, exit, signal, cgroup and fsync events use classic tracepoints",
        run: |c| {
            let mut p = c.programs()?;
            let prog = program::<TracePoint>(&mut p, "probe_tracepoint")?;
            prog.load().map_err(|e| chain(&e))?;
            prog.attach("sched", "sched_process_fork")
                .map_err(|e| chain(&e))?;
            Ok("loaded and attached to sched:sched_process_fork".into())
        },
    },
    Probe {
        name: "raw_tracepoint",
        meaning: "fork events (which must tell threads from processes) use a raw tracepoint",
        run: |c| {
            let mut p = c.programs()?;
            let prog = program::<RawTracePoint>(&mut p, "probe_raw_tracepoint")?;
            prog.load().map_err(|e| chain(&e))?;
            prog.attach("sched_process_fork").map_err(|e| chain(&e))?;
            Ok("loaded and attached to sched_process_fork".into())
        },
    },
    Probe {
        name: "btf_tracepoint",
        meaning: "typed tracepoints (tp_btf); not needed by the observer today",
        run: |c| {
            let mut p = c.programs()?;
            let prog = program::<BtfTracePoint>(&mut p, "probe_btf_tracepoint")?;
            prog.load("sched_process_fork", &c.btf)
                .map_err(|e| chain(&e))?;
            prog.attach().map_err(|e| chain(&e))?;
            Ok("loaded and attached to sched_process_fork".into())
        },
    },
    Probe {
        name: "bpf_send_signal",
        meaning: "in-kernel signal injection at the Nth call of a syscall",
        run: |c| {
            let mut p = c.programs()?;
            program::<TracePoint>(&mut p, "probe_send_signal")?
                .load()
                .map_err(|e| chain(&e))?;
            Ok("helper accepted by the verifier".into())
        },
    },
    Probe {
        name: "fentry",
        meaning: "fentry hooks (cheaper than tracepoints for fsync latency on any filesystem)",
        run: |c| {
            let mut p = c.programs()?;
            let prog = program::<FEntry>(&mut p, "probe_fentry")?;
            prog.load("vfs_fsync_range", &c.btf)
                .map_err(|e| chain(&e))?;
            prog.attach().map_err(|e| chain(&e))?;
            Ok("loaded and attached to vfs_fsync_range".into())
        },
    },
    Probe {
        name: "fexit",
        meaning: "fexit hooks (return values of kernel functions)",
        run: |c| {
            let mut p = c.programs()?;
            let prog = program::<FExit>(&mut p, "probe_fexit")?;
            prog.load("vfs_fsync_range", &c.btf)
                .map_err(|e| chain(&e))?;
            prog.attach().map_err(|e| chain(&e))?;
            Ok("loaded and attached to vfs_fsync_range".into())
        },
    },
    Probe {
        name: "bpf_lsm",
        meaning: "the lsm errno backend (fail open, read, write, connect, fork, exec for targets)",
        run: |c| {
            let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").map_err(|_| {
                "cannot read /sys/kernel/security/lsm (securityfs not mounted?)".to_string()
            })?;
            if !lsms.split(',').any(|l| l.trim() == "bpf") {
                return Err(format!(
                    "bpf is not an active LSM ({}); boot with lsm=...,bpf",
                    lsms.trim()
                ));
            }
            let mut p = c.programs()?;
            let prog = program::<Lsm>(&mut p, "probe_lsm")?;
            prog.load("file_open", &c.btf).map_err(|e| chain(&e))?;
            prog.attach().map_err(|e| chain(&e))?;
            Ok(format!(
                "active LSMs {}; loaded and attached to file_open",
                lsms.trim()
            ))
        },
    },
    Probe {
        name: "kprobe",
        meaning: "kprobes (hooks on kernel functions without tracepoints)",
        run: |c| {
            let mut p = c.programs()?;
            let prog = program::<KProbe>(&mut p, "probe_kprobe")?;
            prog.load().map_err(|e| chain(&e))?;
            prog.attach("vfs_fsync_range", 0).map_err(|e| chain(&e))?;
            Ok("loaded and attached to vfs_fsync_range".into())
        },
    },
    Probe {
        name: "kprobe_override",
        meaning: "the override errno backend (bpf_override_return on error-injectable syscalls)",
        run: |c| {
            let function = error_injectable("sys_fsync")?;
            let mut p = c.programs()?;
            let prog = program::<KProbe>(&mut p, "probe_kprobe_override")?;
            prog.load().map_err(|e| chain(&e))?;
            prog.attach(&function, 0).map_err(|e| chain(&e))?;
            Ok(format!("loaded and attached to {function}"))
        },
    },
];

fn program<'a, T>(programs: &'a mut Programs, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let program = programs
        .ebpf_mut()
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?;
    program.try_into().map_err(|e: ProgramError| chain(&e))
}

fn privileges(privileged: bool) -> Outcome {
    let caps = preflight::effective_caps();
    let list = format!(
        "CAP_SYS_ADMIN {}, CAP_BPF {}, CAP_PERFMON {}, CAP_KILL {}",
        yes(has_cap(caps, CAP_SYS_ADMIN)),
        yes(has_cap(caps, CAP_BPF)),
        yes(has_cap(caps, CAP_PERFMON)),
        yes(has_cap(caps, CAP_KILL))
    );
    if privileged {
        Ok(list)
    } else {
        Err(format!("{list}: run chaos with sudo"))
    }
}

/// A load refused with EPERM under lockdown is the lockdown's doing, not a missing privilege.
fn explain_refusal(detail: String, locked_down: bool) -> String {
    let detail = detail
        .split(". Verifier output")
        .next()
        .unwrap_or_default()
        .to_string();
    if locked_down && detail.contains("Operation not permitted") {
        format!("refused by this kernel (EPERM at load; kernel lockdown is on): {detail}")
    } else {
        detail
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn lockdown() -> Outcome {
    let text = std::fs::read_to_string("/sys/kernel/security/lockdown")
        .map_err(|_| "unknown: securityfs not mounted or no lockdown LSM".to_string())?;
    let mode = text
        .split_whitespace()
        .find(|w| w.starts_with('['))
        .unwrap_or("[none]");
    Ok(mode.trim_matches(['[', ']']).to_string())
}

fn cgroup2_mount() -> Outcome {
    crate::target::cgroup2_mount()
        .map(|path| format!("mounted at {}", path.display()))
        .ok_or_else(|| "no cgroup2 filesystem mounted".into())
}

fn seccomp_user_notif() -> Outcome {
    let actions =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").map_err(|_| {
            "no /proc/sys/kernel/seccomp/actions_avail (CONFIG_SECCOMP_FILTER off?)".to_string()
        })?;
    if !actions.split_whitespace().any(|a| a == "user_notif") {
        return Err(format!(
            "user_notif is not among the seccomp actions ({})",
            actions.trim()
        ));
    }
    let mut sizes = [0u16; 3];
    // SAFETY: SECCOMP_GET_NOTIF_SIZES (3) writes a struct seccomp_notif_sizes (three u16s).
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, 3, 0, sizes.as_mut_ptr()) };
    if rc != 0 {
        return Err(format!(
            "SECCOMP_GET_NOTIF_SIZES failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let libseccomp = libseccomp::ScmpVersion::current()
        .map_err(|e| format!("libseccomp, which builds chaos's filters, is unusable: {e}"))?;
    Ok(format!(
        "available (notification {} bytes; filters built by libseccomp {}.{}.{} for x86-64, x32 and i386); synchronous wake-up (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 6.7+): {}",
        sizes[0],
        libseccomp.major,
        libseccomp.minor,
        libseccomp.micro,
        if seccomp_sync_wake_up() { "yes" } else { "no" }
    ))
}

/// Whether the kernel takes SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP on a listener: a child
/// installs a filter that notifies on a call it never makes, sets the flag on its own
/// listener and exits with the answer (the filter goes with it).
fn seccomp_sync_wake_up() -> bool {
    // Built before the fork: the child only makes raw syscalls.
    let Ok(filter) = crate::inject::seccomp::Filter::notify_on(syscalls::Sysno::acct, &[]) else {
        return false;
    };
    let prog = libc::sock_fprog {
        len: filter.program().len() as u16,
        filter: filter.program().as_ptr().cast_mut(),
    };
    // SAFETY: the child calls only async-signal-safe functions (prctl, seccomp, ioctl,
    // _exit) on memory prepared above.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            let ok = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && {
                let fd = libc::syscall(
                    libc::SYS_seccomp,
                    1, // SECCOMP_SET_MODE_FILTER
                    8, // SECCOMP_FILTER_FLAG_NEW_LISTENER
                    &prog as *const libc::sock_fprog,
                );
                fd >= 0
                    && libc::ioctl(
                        fd as i32,
                        crate::launch::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                        crate::launch::SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
                    ) == 0
            };
            libc::_exit(if ok { 0 } else { 1 })
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => matches!(
            nix::sys::wait::waitpid(child, None),
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0))
        ),
        Err(_) => false,
    }
}

/// A function on the kernel's error-injection list whose name contains `needle`.
fn error_injectable(needle: &str) -> Result<String, String> {
    let list = [
        "/sys/kernel/debug/error_injection/list",
        "/sys/kernel/tracing/../debug/error_injection/list",
    ]
    .iter()
    .map(PathBuf::from)
    .find_map(|p| std::fs::read_to_string(p).ok())
    .ok_or_else(|| {
        "no error-injection list (needs debugfs and CONFIG_FUNCTION_ERROR_INJECTION)".to_string()
    })?;
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|f| f.contains(needle))
        .map(str::to_string)
        .ok_or_else(|| format!("no error-injectable function matching {needle}"))
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn print_table(report: &Diagnosis) {
    let verdict = if report.observe_works {
        "observation works here"
    } else {
        "observation does NOT work here"
    };
    println!("chaos doctor: kernel {}: {verdict}\n", report.kernel);
    for check in &report.checks {
        let status = match check.status {
            Status::Ok => "ok",
            Status::Unavailable => "unavailable",
        };
        println!("  {status:<12} {:<20} {}", check.name, check.detail);
        if check.status == Status::Unavailable {
            println!("  {:<12} {:<20} -> without it: {}", "", "", check.meaning);
        }
    }
}
