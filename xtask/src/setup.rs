//! `cargo xtask setup`: make a fresh machine of this kind able to build and test chaos.
//! Every step checks first and does nothing when its thing is already there.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{self, output};

/// Debian packages: LLVM for bpf-linker; libseccomp-dev (chaos builds its seccomp filters
/// with libseccomp and links it); bpftool (tests check nothing stays attached);
/// strace and bpftrace (`bench observe` compares against them); the supervisors
/// `chaos measure` is tested against (runit, s6, daemontools, supervisord); QEMU and a static
/// busybox for the kernel-matrix guests; a Prometheus server (it scrapes `--prometheus` in the
/// export tests, and its promtool checks `--textfile`) and Chromium (the HTML report is
/// rendered headless); two real multi-process servers the service tests start on loopback
/// (PostgreSQL, nginx); iproute2 and curl (the fleet test's hosts are network namespaces) and
/// yamllint (it checks `deploy/`'s manifests).
const PACKAGES: [&str; 18] = [
    "llvm-22-dev",
    "libseccomp-dev",
    "bpftool",
    "strace",
    "bpftrace",
    "runit",
    "s6",
    "daemontools",
    "supervisor",
    "qemu-system-x86",
    "busybox-static",
    "prometheus",
    "chromium",
    "postgresql",
    "nginx-light",
    "iproute2",
    "curl",
    "yamllint",
];

/// Debian's hook that tells package scripts whether they may start services; exit 101 means
/// no (man invoke-rc.d). Installing the supervisors must not start system-wide daemons.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Filesystems chaos reads: (type, mount point).
const MOUNTS: [(&str, &str); 4] = [
    ("tracefs", "/sys/kernel/tracing"),
    ("bpf", "/sys/fs/bpf"),
    ("securityfs", "/sys/kernel/security"),
    ("debugfs", "/sys/kernel/debug"),
];

pub fn run() -> Result<()> {
    packages()?;
    rust_src()?;
    bpf_linker()?;
    mounts()?;
    Ok(())
}

fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|u| u.trim() == "0")
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .into_iter()
        .filter(|p| {
            !output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {missing:?}: run `cargo xtask setup` as root");
    }
    eprintln!("setup: installing {}", missing.join(" "));
    util::run(Command::new("apt-get").arg("update").arg("-qq"))?;
    let own_policy = !std::path::Path::new(POLICY_RC_D).exists();
    if own_policy {
        std::fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n")
            .and_then(|()| {
                std::fs::set_permissions(
                    POLICY_RC_D,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
            })
            .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
    }
    let installed = util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if own_policy {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
    installed
}

fn rust_src() -> Result<()> {
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .context("rustup with a nightly toolchain is needed to build the eBPF programs")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    util::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn bpf_linker() -> Result<()> {
    if output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)");
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    util::run(
        Command::new(env!("CARGO"))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path),
    )
}

fn mounts() -> Result<()> {
    let table =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let mounted = |fstype: &str, target: &str| {
        table.lines().any(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            f.get(1) == Some(&target) && f.get(2) == Some(&fstype)
        })
    };
    for (fstype, target) in MOUNTS {
        if mounted(fstype, target) {
            continue;
        }
        if !is_root() {
            bail!("{fstype} is not mounted at {target}: run `cargo xtask setup` as root");
        }
        eprintln!("setup: mounting {fstype} at {target}");
        util::run(Command::new("mount").args(["-t", fstype, fstype, target]))?;
    }
    if !table
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
    {
        // Hybrid cgroup hosts without a v2 mount: add one where systemd would.
        let target = "/sys/fs/cgroup/unified";
        eprintln!("setup: mounting cgroup2 at {target}");
        std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
        util::run(Command::new("mount").args(["-t", "cgroup2", "cgroup2", target]))?;
    }
    Ok(())
}
