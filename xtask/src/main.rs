//! Developer workflows: `cargo xtask setup | test [--kernel K] | demo | bench observe`.

mod bench;
mod demo;
mod setup;
mod util;
mod vm;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "chaos development workflows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a fresh machine lacks (LLVM, rust-src, bpf-linker, test packages) and mount
    /// tracefs, bpffs, securityfs and debugfs. Idempotent; seconds when all is there.
    Setup,
    /// Setup, then every test: unit tests and the privileged suite as root on this kernel, then
    /// the observer suite in QEMU guests running Debian's 6.1 and 6.12 cloud kernels, then the
    /// systemd suite in a 6.12 guest whose pid 1 is systemd (252, then trixie's 257).
    Test {
        /// Which kernels: this machine's (host), a guest (6.1, 6.12, systemd: 6.12 with
        /// systemd as pid 1), or all of them.
        #[arg(long, value_enum, default_value = "all")]
        kernel: KernelChoice,
        /// Only these suites (tests/tests/NAME.rs), wherever they run; repeatable. For
        /// working on one suite: CI runs them all.
        #[arg(long = "suite", value_name = "NAME")]
        suites: Vec<String>,
    },
    /// Setup, build, observe the sample service, then measure the sample queue's recoveries
    /// under runit while chaos inject kills it (README's first command).
    Demo,
    /// Benchmarks (never part of `test`): `bench observe` measures observer overhead.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Test { kernel, suites } => test(kernel, &suites),
        Command::Demo => demo::run(),
        Command::Bench { which } => bench::run(which),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelChoice {
    Host,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    /// The 6.12 guest booted with this machine's systemd (252) as pid 1, then with Debian
    /// trixie's (257, the systemd-executor path).
    Systemd,
    All,
}

/// Test suites (tests/tests/*.rs) that also run in the guests. `measure` stays on the host: it
/// asserts restart times to the millisecond, which software emulation cannot keep, and runs
/// supervisord (Python); `servers` runs Debian's PostgreSQL and nginx, which the guests lack.
/// `services` checks roles, outcomes and orphans with the suite's own programs.
/// `power` cuts the power to a dm-flakey disk, which only the guests' kernels have.
const GUEST_SUITES: [&str; 5] = ["doctor", "inject", "observe", "power", "services"];
/// The suite the systemd guest runs (its tests are ignored elsewhere: they need systemd as
/// pid 1), and the programs its units run.
const SYSTEMD_SUITES: [&str; 1] = ["systemd"];
const SYSTEMD_PROGRAMS: [&str; 2] = ["chaos-queue", "victim"];
/// The suite's programs the guest suites run.
const GUEST_PROGRAMS: [&str; 6] = [
    "chaos-queue",
    "victim",
    "delay-supervisor",
    "chaos-pool",
    "chaos-app",
    "sync-helper",
];

fn test(kernel: KernelChoice, only: &[String]) -> Result<()> {
    setup::run()?;
    let root = util::workspace_root();
    util::cargo(&["build", "--package", "chaos", "--package", "chaos-tests"])?;
    let series: Vec<&str> = match kernel {
        KernelChoice::Host | KernelChoice::Systemd => vec![],
        KernelChoice::V6_1 => vec!["6.1"],
        KernelChoice::V6_12 => vec!["6.12"],
        KernelChoice::All => vm::SERIES.to_vec(),
    };
    let mut runs: Vec<(String, util::Tally, Result<()>)> = Vec::new();
    if matches!(kernel, KernelChoice::Host | KernelChoice::All) {
        let mut tally = util::Tally::default();
        let result = run_tests(&root, only, &mut tally);
        runs.push(("host".into(), tally, result));
    }
    for series in series {
        let mut tally = util::Tally::default();
        let mut label = format!("guest {series}");
        let result = run_guest(
            &root,
            series,
            vm::Init::Busybox,
            only,
            &mut tally,
            &mut label,
        );
        runs.push((label, tally, result));
    }
    if matches!(kernel, KernelChoice::Systemd | KernelChoice::All) {
        for which in [vm::Systemd::Host, vm::Systemd::Trixie] {
            let mut tally = util::Tally::default();
            let mut label = "systemd".to_string();
            let init = vm::Init::Systemd(which);
            let result = run_guest(&root, "6.12", init, only, &mut tally, &mut label);
            runs.push((label, tally, result));
        }
    }
    // The closing lines CI reads: each kernel, then every test of every step.
    let mut total = util::Tally::default();
    println!();
    for (label, tally, result) in &runs {
        let note = match result {
            Ok(()) => String::new(),
            Err(e) => format!(" ({e:#})"),
        };
        println!(
            "xtask test [{label}]: {} passed, {} failed{note}",
            tally.passed, tally.failed
        );
        total.add(*tally);
    }
    println!(
        "xtask test: {} passed, {} failed",
        total.passed, total.failed
    );
    runs.into_iter()
        .find_map(|(_, _, r)| r.err())
        .map_or(Ok(()), Err)
}

/// Boots a Debian cloud kernel of `series` with the guest suites (busybox as pid 1) or the
/// systemd suite (systemd as pid 1), and adds their results.
fn run_guest(
    root: &Path,
    series: &str,
    init: vm::Init,
    only: &[String],
    tally: &mut util::Tally,
    label: &mut String,
) -> Result<()> {
    let work = util::target_dir(root).join("vm");
    let kernel = vm::Kernel::fetch(series, &work.join("kernels"))?;
    let systemd_root = match init {
        vm::Init::Systemd(vm::Systemd::Trixie) => {
            Some(vm::trixie_systemd(&work.join("systemd-trixie"))?)
        }
        _ => None,
    };
    let (suites, programs, name): (&[&str], &[&str], String) = match init {
        vm::Init::Busybox => (
            &GUEST_SUITES,
            &GUEST_PROGRAMS,
            format!("guest {}", kernel.release),
        ),
        vm::Init::Systemd(which) => {
            let version = match (&systemd_root, which) {
                (Some(root), _) => std::fs::read_to_string(root.join("VERSION"))?,
                (None, _) => util::systemd_version(),
            };
            let major = version
                .split(['.', '-'])
                .next()
                .unwrap_or(&version)
                .to_string();
            (
                &SYSTEMD_SUITES,
                &SYSTEMD_PROGRAMS,
                format!("systemd {major} on {}", kernel.release),
            )
        }
    };
    let suites: Vec<&str> = suites
        .iter()
        .copied()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s))
        .collect();
    if suites.is_empty() {
        *label = format!("{name} (no suite chosen)");
        return Ok(());
    }
    *label = name;
    println!("\n== {label} ({}) under QEMU (TCG)", kernel.package);
    let debug = util::target_dir(root).join("debug");
    let payload = vm::Payload {
        init,
        systemd_root,
        chaos: debug.join("chaos"),
        programs: programs.iter().map(|p| debug.join(p)).collect(),
        tests: test_executables(&suites)?,
    };
    let initrd = vm::initramfs(&kernel, &payload, &work)?;
    let log = work.join(format!("console-{}{}.log", kernel.release, init.tag()));
    vm::boot(&kernel, init, &initrd, &log, tally)
}

/// The executables of the tests crate's suites named, built if needed.
fn test_executables(suites: &[&str]) -> Result<Vec<PathBuf>> {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "test",
            "--package",
            "chaos-tests",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(util::workspace_root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    anyhow::ensure!(out.status.success(), "building the test executables failed");
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, true, Some(exe)) = (
            is_test,
            suites.contains(&name),
            message["executable"].as_str(),
        ) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    found.sort();
    anyhow::ensure!(
        found.len() == suites.len(),
        "expected the test suites {suites:?}, found {found:?}"
    );
    Ok(found.into_iter().map(|(_, exe)| exe).collect())
}

fn run_tests(root: &std::path::Path, only: &[String], tally: &mut util::Tally) -> Result<()> {
    let chaos = util::target_dir(root).join("debug/chaos");
    if !only.is_empty() {
        let mut args = vec!["--package", "chaos-tests"];
        for suite in only {
            args.extend(["--test", suite.as_str()]);
        }
        args.extend(["--", "--test-threads=1"]);
        return util::cargo_test(&args, &[("CHAOS_BIN", &chaos)], tally);
    }
    // Unit tests: no root needed, no kernel touched.
    util::cargo_test(
        &[
            "--workspace",
            "--exclude",
            "chaos-ebpf",
            "--exclude",
            "chaos-tests",
        ],
        &[],
        tally,
    )?;
    // Unit tests that read this machine's BTF and tracefs (ignored by plain `cargo test`).
    util::cargo_test(
        &[
            "--package",
            "chaos",
            "--lib",
            "--",
            "--ignored",
            "--test-threads=1",
        ],
        &[],
        tally,
    )?;
    // The privileged suite: each test loads programs and spawns its own victims; one at a time,
    // so that the "nothing left attached" checks see only their own test.
    util::cargo_test(
        &["--package", "chaos-tests", "--", "--test-threads=1"],
        &[("CHAOS_BIN", &chaos)],
        tally,
    )
}
