//! Developer workflows: `cargo xtask setup | test | demo | bench observe`.

mod bench;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    /// Setup, then every test: unit tests, then the privileged suite as root, one at a time.
    Test,
    /// Setup, build, and observe the sample service (README's first command).
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
        Command::Test => test(),
        Command::Demo => demo(),
        Command::Bench { which } => bench::run(which),
    }
}

fn test() -> Result<()> {
    setup::run()?;
    let root = util::workspace_root();
    util::cargo(&["build", "--package", "chaos", "--package", "chaos-tests"])?;
    let mut tally = util::Tally::default();
    let result = run_tests(&root, &mut tally);
    // The closing line CI reads: every test of every step.
    println!(
        "\nxtask test: {} passed, {} failed",
        tally.passed, tally.failed
    );
    result
}

fn run_tests(root: &std::path::Path, tally: &mut util::Tally) -> Result<()> {
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
    let chaos = util::target_dir(root).join("debug/chaos");
    util::cargo_test(
        &["--package", "chaos-tests", "--", "--test-threads=1"],
        &[("CHAOS_BIN", &chaos)],
        tally,
    )
}

fn demo() -> Result<()> {
    setup::run()?;
    let target = util::build_bins(false, &["chaos-sample"])?;
    let journal = tempfile_dir()?;
    println!(
        "\n== chaos observe -- chaos-sample {} (a parent forks a worker that appends and fsyncs three records; the parent stops it with SIGTERM)\n",
        journal.display()
    );
    let status = std::process::Command::new(target.join("chaos"))
        .arg("observe")
        .arg("--")
        .arg(target.join("chaos-sample"))
        .arg(&journal)
        .status()?;
    let _ = std::fs::remove_dir_all(&journal);
    anyhow::ensure!(status.success(), "chaos observe failed: {status}");
    Ok(())
}

/// A fresh directory on the root filesystem (ext4 here), so the fsync hook sees the syncs.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(format!("/var/tmp/chaos-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
