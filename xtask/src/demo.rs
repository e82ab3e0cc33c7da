//! `cargo xtask demo`: the README's first command. Observes the sample service, then runs the
//! sample durable queue under runit, kills it five times with `chaos inject` while `chaos
//! measure` times every recovery, checks no acknowledged record was lost, and removes
//! everything it started.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{setup, util};

const KILLS: u32 = 5;

pub fn run() -> Result<()> {
    setup::run()?;
    let bin = util::build_bins(false, &["chaos-sample", "chaos-queue", "victim"])?;
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
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.wait();
        }
        let _ = std::fs::remove_dir(self.cgroup.join("svc"));
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Part 2: recovery under a real supervisor, measured while faults are injected.
fn recovery(bin: &Path) -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let work = PathBuf::from(format!("/var/tmp/chaos-demo-runit-{}", std::process::id()));
    let cgroup = cgroup2_root()?.join(format!("chaos-demo-{}", std::process::id()));
    std::fs::create_dir_all(cgroup.join("svc"))?;
    let mut started = Started {
        cgroup: cgroup.clone(),
        reaper: None,
        work: work.clone(),
    };
    std::fs::create_dir_all(work.join("svc"))?;
    let run = work.join("svc/run");
    std::fs::write(
        &run,
        format!(
            "#!/bin/sh\n# Instances live in their own cgroup, the one chaos inject aims at.\necho $$ > {}\nexec {} serve --dir {} --port {port}\n",
            cgroup.join("svc/cgroup.procs").display(),
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

    println!(
        "\n== 2. the sample durable queue under runit (runsv {runsv}); chaos measure times each recovery while chaos inject kills it {KILLS} times\n"
    );
    let mut measure = Command::new(bin.join("chaos"))
        .args([
            "measure",
            "--supervisor",
            &runsv.to_string(),
            "--ready",
            "listen",
        ])
        .args(["--episodes", &KILLS.to_string()])
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = measure.stderr.take().expect("piped");
    let (tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.starts_with("chaos: measuring") {
                let _ = tx.send(());
            }
        }
    });
    ready
        .recv_timeout(Duration::from_secs(30))
        .context("chaos measure did not start")?;
    let inject = Command::new(bin.join("chaos"))
        .args(["inject", "signal", "--signal", "KILL"])
        .args([
            "--count",
            &KILLS.to_string(),
            "--interval",
            "1500ms",
            "--seed",
            "7",
        ])
        .arg("--cgroup")
        .arg(cgroup.join("svc"))
        .status()?;
    let measured = measure.wait()?;
    anyhow::ensure!(inject.success(), "chaos inject failed: {inject}");
    anyhow::ensure!(measured.success(), "chaos measure failed: {measured}");

    println!("\n== 3. no acknowledged record lost?\n");
    let verify = Command::new(bin.join("chaos-queue"))
        .args(["verify", "--dir"])
        .arg(work.join("data"))
        .status()?;
    anyhow::ensure!(verify.success(), "the queue lost acknowledged records");
    drop(started);
    Ok(())
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
