//! Checks made before anything touches the kernel, each with a message that says what to do.

use std::path::{Path, PathBuf};

use super::{btf, tracefs};

pub const CAP_KILL: u32 = 5;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("loading eBPF programs needs root (or CAP_BPF and CAP_PERFMON): run chaos with sudo")]
    Privileges,
    #[error(
        "tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` (cargo xtask setup does)"
    )]
    NoTracefs,
    #[error("this kernel has no BTF at {0} (it needs CONFIG_DEBUG_INFO_BTF=y)")]
    NoBtf(String),
}

/// What a run needs from the machine, found once.
#[derive(Debug, Clone)]
pub struct Environment {
    pub tracefs: PathBuf,
    pub btf_path: PathBuf,
}

pub fn check() -> Result<Environment, PreflightError> {
    if !can_load_bpf() {
        return Err(PreflightError::Privileges);
    }
    let btf_path = Path::new(btf::VMLINUX);
    if !btf_path.exists() {
        return Err(PreflightError::NoBtf(btf::VMLINUX.into()));
    }
    let tracefs = tracefs::find().ok_or(PreflightError::NoTracefs)?;
    raise_memlock();
    Ok(Environment {
        tracefs,
        btf_path: btf_path.to_path_buf(),
    })
}

/// The effective capability set of this process (`CapEff` in /proc/self/status).
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn has_cap(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

pub fn can_load_bpf() -> bool {
    let caps = effective_caps();
    has_cap(caps, CAP_SYS_ADMIN) || (has_cap(caps, CAP_BPF) && has_cap(caps, CAP_PERFMON))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so maps load there too.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer; failure only matters on old kernels, where the
    // map creation error that follows says so.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}
