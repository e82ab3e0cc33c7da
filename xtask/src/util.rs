//! Running commands, and where the workspace is.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Runs a command with inherited output; fails unless it succeeds.
pub fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Runs `cargo ARGS` in the workspace root.
pub fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root()))
}

/// Builds `chaos` and the given binaries of the tests crate; returns their directory.
pub fn build_bins(release: bool, test_bins: &[&str]) -> Result<PathBuf> {
    let mut args = vec![
        "build",
        "--package",
        "chaos",
        "--package",
        "chaos-tests",
        "--bin",
        "chaos",
    ];
    if release {
        args.push("--release");
    }
    for bin in test_bins {
        args.extend(["--bin", bin]);
    }
    cargo(&args)?;
    Ok(target_dir(&workspace_root()).join(if release { "release" } else { "debug" }))
}

/// Runs a command and returns its stdout, or None if it cannot run or fails.
/// This machine's systemd version (`252`), what the systemd guest boots.
pub fn systemd_version() -> String {
    output("systemctl", &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Tally of `cargo test` runs, printed as the closing line of `cargo xtask test`.
#[derive(Default, Clone, Copy)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Tally {
    /// Adds a libtest `test result: ...` line (other lines are ignored).
    pub fn line(&mut self, line: &str) {
        let Some(rest) = line.trim_start().strip_prefix("test result: ") else {
            return;
        };
        let count = |word: &str| {
            rest.split(';')
                .find_map(|part| {
                    part.trim()
                        .trim_start_matches("ok. ")
                        .trim_start_matches("FAILED. ")
                        .strip_suffix(word)
                })
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        self.passed += count(" passed");
        self.failed += count(" failed");
        self.ignored += count(" ignored");
    }

    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// Runs `cargo test ARGS` with `envs`, echoing its output and adding its `test result:` lines
/// to `tally`.
pub fn cargo_test(args: &[&str], envs: &[(&str, &Path)], tally: &mut Tally) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut command = Command::new(env!("CARGO"));
    command
        .args(["test", "--no-fail-fast"])
        .args(args)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    let shown = format!("{command:?}");
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        tally.line(&line);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}
