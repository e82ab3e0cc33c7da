//! `cargo xtask demo`: the README's first command. Observes the sample service, then runs the
//! sample durable queue under runit and the experiment examples/sync-helper.toml against it
//! (20 kills, every recovery timed, no acknowledged record lost), checks the audit log, and
//! removes everything it started.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{setup, util};

/// The kills examples/sync-helper.toml asks for.
const KILLS: u32 = 20;

pub fn run() -> Result<()> {
    setup::run()?;
    let bin = util::build_bins(true, &["chaos-sample", "chaos-queue", "victim"])?;
    observe(&bin)?;
    recovery(&bin)
}

/// Part 1: every event of a small service, from its first instruction.
fn observe(bin: &Path) -> Result<()> {
    let journal = PathBuf::from(format!("/var/tmp/chaos-demo-{}", std::process::id()));
    std::fs::create_dir_all(&journal)?;
    println!(
        "\n== 1. chaos observe -- chaos-sample (a parent forks a worker that appends and fsyncs three records; the parent stops it with SIGTERM)\n"
    );
    let status = Command::new(bin.join("chaos"))
        .arg("observe")
        .arg("--")
        .arg(bin.join("chaos-sample"))
        .arg(&journal)
        .status()?;
    let _ = std::fs::remove_dir_all(&journal);
    anyhow::ensure!(status.success(), "chaos observe failed: {status}");
    Ok(())
}

/// What the recovery demo started, removed when dropped: the cgroup (its processes killed
/// with cgroup.kill, so only what the demo started), the subreaper that holds them, the files.
struct Started {
    cgroup: PathBuf,
    reaper: Option<Child>,
    work: PathBuf,
}

impl Drop for Started {
    fn drop(&mut self) {
        remove_cgroup(&self.cgroup);
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.wait();
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Kills what is in the demo's cgroup (only what a demo started there) and removes it.
fn remove_cgroup(cgroup: &Path) {
    if cgroup.exists() {
        let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(cgroup).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Part 2: the experiment examples/sync-helper.toml against the sample durable queue under
/// runit. The file names the places set up here: the cgroup `chaos-demo` and the data in
/// /var/tmp/chaos-demo/data.
fn recovery(bin: &Path) -> Result<()> {
    let root = util::workspace_root();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let work = PathBuf::from("/var/tmp/chaos-demo");
    let cgroup = cgroup2_root()?.join("chaos-demo");
    // A demo that was stopped half-way may have left its own service behind.
    remove_cgroup(&cgroup);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&cgroup)?;
    let mut started = Started {
        cgroup: cgroup.clone(),
        reaper: None,
        work: work.clone(),
    };
    std::fs::create_dir_all(work.join("svc"))?;
    std::fs::create_dir_all(work.join("data"))?;
    let run = work.join("svc/run");
    std::fs::write(
        &run,
        format!(
            "#!/bin/sh\nexec {} serve --dir {} --port {port}\n",
            bin.join("chaos-queue").display(),
            work.join("data").display()
        ),
    )?;
    util::run(Command::new("chmod").arg("755").arg(&run))?;

    // runsv in the demo's cgroup, under a subreaper that collects whatever it leaves behind.
    let reaper = Command::new(bin.join("victim"))
        .arg("subreaper")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec runsv {}",
            cgroup.join("cgroup.procs").display(),
            work.join("svc").display()
        ))
        .spawn()
        .context("cannot start runsv (cargo xtask setup installs runit)")?;
    let reaper_pid = reaper.id();
    started.reaper = Some(reaper);
    let runsv = wait_for("runsv", || children(reaper_pid).first().copied())?;
    wait_for("the queue to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })?;

    let experiment = root.join("examples/sync-helper.toml");
    let out = root.join("target/demo");
    std::fs::create_dir_all(&out)?;
    let audit = out.join("audit.jsonl");
    let _ = std::fs::remove_file(&audit);
    println!(
        "\n== 2. chaos run examples/sync-helper.toml: the sample durable queue under runit (runsv {runsv}), killed {KILLS} times while every recovery is timed and the data checked\n"
    );
    // The verify command names chaos-queue: the build directory goes first on PATH.
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new(bin.join("chaos"))
        .arg("run")
        .arg(&experiment)
        .arg("--audit")
        .arg(&audit)
        .env("PATH", path)
        .current_dir(&root)
        .status()?;
    drop(started);
    match status.code() {
        Some(0) | Some(1) => {}
        _ => anyhow::bail!("chaos run did not reach a verdict: {status}"),
    }

    println!("\n== 3. the audit log: every fault was written (and fsynced) before it fired\n");
    util::run(
        Command::new(bin.join("chaos"))
            .args(["audit", "verify"])
            .arg(&audit),
    )?;
    let report = out.join("report.html");
    util::run(
        Command::new(bin.join("chaos"))
            .arg("report")
            .arg(out.join("sync-helper.json"))
            .arg("--html")
            .arg(&report),
    )?;
    println!(
        "\nresults: {} (the report: histograms, CDF, timeline), {} (JSON), {} (JUnit), {} (HdrHistogram log), {} (audit log)",
        report.display(),
        out.join("sync-helper.json").display(),
        out.join("sync-helper.xml").display(),
        out.join("sync-helper.hlog").display(),
        audit.display()
    );
    if status.code() == Some(1) {
        println!("the hypothesis was refuted on this machine: the clauses above say which part");
    }
    Ok(())
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|t| {
            t.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Looks again every few milliseconds until `found` gives something, for at most 30 s.
fn wait_for<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = found() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn cgroup2_root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| PathBuf::from(f[1]))
        .context("no cgroup2 mount (cargo xtask setup mounts one)")
}
