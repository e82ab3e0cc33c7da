//! `cargo xtask bench observe|inject`: the cost of observing (next to bpftrace and strace) and
//! of intercepting a syscall to fail it (chaos's seccomp backend next to strace's inject),
//! measured side by side in one run. Runs alternate between tools round by round, each workload reports
//! the CLOCK_MONOTONIC time of its own loop (tool start-up is not counted), and the table gives
//! medians, spread and ratios. Not a test: nothing here fails on timing.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;

use crate::util;

#[derive(Subcommand)]
pub enum Which {
    /// W1 getppid loop, W2 write+fsync on ext4 and tmpfs, W3 fork+exec+wait; each untraced,
    /// under `chaos observe`, under bpftrace with equivalent probes, and under `strace -f`.
    Observe {
        /// Rounds per cell (each round runs every tool once, alternating).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Multiplies the workload sizes (1.0 = 200k getppid, 20k fsync, 2k fork+exec).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
    /// Intercepted calls: a getppid loop (every call intercepted) and write4k+fdatasync on
    /// tmpfs and ext4 with a rule armed at the millionth call (armed, never firing); each
    /// untraced, under `chaos inject errno` (seccomp backend) letting calls continue and
    /// failing them, under `strace -e inject` (ptrace) and `strace --seccomp-bpf -e inject`.
    /// Then the in-kernel cost per call of the kernel trigger, from kernel.bpf_stats_enabled.
    Inject {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Multiplies the workload sizes (1.0 = 20k getppid, 20k fdatasync).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
}

/// The bpftrace equivalent of what `chaos observe` attaches: the same tracepoints, the same
/// follow-children target set, one line per event.
const BPFTRACE_SCRIPT: &str = r#"
BEGIN { @t[cpid] = 1; }
tracepoint:sched:sched_process_fork /@t[pid]/ { @t[args->child_pid] = 1; printf("fork %d %d\n", pid, args->child_pid); }
tracepoint:sched:sched_process_exec /@t[pid]/ { printf("exec %d %s\n", pid, str(args->filename)); }
tracepoint:sched:sched_process_exit /@t[pid]/ { printf("exit %d\n", pid); }
tracepoint:signal:signal_generate /@t[args->pid] || @t[pid]/ { printf("signal %d %d %d\n", pid, args->pid, args->sig); }
tracepoint:ext4:ext4_sync_file_enter /@t[pid]/ { @s[tid] = nsecs; }
tracepoint:ext4:ext4_sync_file_exit /@s[tid]/ { printf("fsync %d %d\n", pid, nsecs - @s[tid]); delete(@s[tid]); }
"#;

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Untraced,
    Chaos,
    Bpftrace,
    Strace,
    /// chaos inject errno, seccomp backend, probability 0: every call goes to chaos and back
    /// (on an armed row: the rule at the millionth call, which never comes).
    ChaosPass,
    /// The same, probability 1: every call fails with EPERM, each proven (not on armed rows:
    /// the workload stops at its first failed call).
    ChaosFail,
    /// strace -f -e inject=SYSCALL:error=E: ptrace stops on every syscall.
    StraceInject,
    /// The same with --seccomp-bpf: only the traced syscall stops.
    StraceSeccomp,
}

impl Tool {
    const OBSERVE: [Tool; 4] = [Tool::Untraced, Tool::Chaos, Tool::Bpftrace, Tool::Strace];
    const INJECT: [Tool; 5] = [
        Tool::Untraced,
        Tool::ChaosPass,
        Tool::ChaosFail,
        Tool::StraceInject,
        Tool::StraceSeccomp,
    ];

    fn name(self) -> &'static str {
        match self {
            Tool::Untraced => "untraced",
            Tool::Chaos => "chaos observe",
            Tool::Bpftrace => "bpftrace",
            Tool::Strace => "strace -f",
            Tool::ChaosPass => "chaos seccomp, pass",
            Tool::ChaosFail => "chaos seccomp, fail",
            Tool::StraceInject => "strace inject (ptrace)",
            Tool::StraceSeccomp => "strace --seccomp-bpf inj.",
        }
    }
}

struct Workload {
    name: String,
    args: Vec<String>,
    /// The syscall an inject rule names, and its errno.
    syscall: &'static str,
    errno: &'static str,
    /// The rule fires only at this call (armed, never firing); None: at every call.
    nth: Option<u32>,
}

impl Workload {
    fn observe(name: String, args: Vec<String>) -> Self {
        Self {
            name,
            args,
            syscall: "getppid",
            errno: "EPERM",
            nth: None,
        }
    }
}

/// The call an armed row's rule waits for: far beyond the workload's last.
const NEVER: u32 = 1_000_000;

pub fn run(which: Which) -> Result<()> {
    let (rounds, scale, tools): (usize, f64, &[Tool]) = match which {
        Which::Observe { rounds, scale } => (rounds, scale, &Tool::OBSERVE),
        Which::Inject { rounds, scale } => (rounds, scale, &Tool::INJECT),
    };
    crate::setup::run()?;
    let bin = util::build_bins(true, &["victim"])?;
    let scratch = Path::new("/var/tmp").join(format!("chaos-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let tmpfs = scratch.join("tmpfs");
    std::fs::create_dir_all(&tmpfs)?;
    util::run(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256m", "chaos-bench"])
            .arg(&tmpfs),
    )?;
    let result = measure(&bin, &scratch, &tmpfs, rounds, scale, tools);
    let _ = Command::new("umount").arg(&tmpfs).status();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn measure(
    bin: &Path,
    scratch: &Path,
    tmpfs: &Path,
    rounds: usize,
    scale: f64,
    tools: &[Tool],
) -> Result<()> {
    let n = |base: f64| ((base * scale).round() as u64).max(1).to_string();
    let ext4 = scratch.join("ext4");
    std::fs::create_dir_all(&ext4)?;
    let armed = |dir: &Path, fs: &str| Workload {
        name: format!("fdatasync x{} {fs}, armed", n(20_000.0)),
        args: vec!["fdatasync".into(), n(20_000.0), dir.display().to_string()],
        syscall: "fdatasync",
        errno: "EIO",
        nth: Some(NEVER),
    };
    let inject_workloads = [
        Workload::observe(
            format!("getppid x{}", n(20_000.0)),
            vec!["getppid".into(), n(20_000.0)],
        ),
        armed(tmpfs, "tmpfs"),
        armed(&ext4, "ext4"),
    ];
    let observe_workloads = [
        Workload::observe(
            format!("W1 getppid x{}", n(200_000.0)),
            vec!["getppid".into(), n(200_000.0)],
        ),
        Workload::observe(
            format!("W2 write4k+fsync x{} ext4", n(20_000.0)),
            vec!["fsync".into(), n(20_000.0), ext4.display().to_string()],
        ),
        Workload::observe(
            format!("W2 write4k+fsync x{} tmpfs", n(20_000.0)),
            vec!["fsync".into(), n(20_000.0), tmpfs.display().to_string()],
        ),
        Workload::observe(
            format!("W3 fork+exec+wait x{}", n(2_000.0)),
            vec!["forkexec".into(), n(2_000.0)],
        ),
    ];
    let workloads: &[Workload] = if tools == Tool::INJECT {
        &inject_workloads
    } else {
        &observe_workloads
    };
    let out = scratch.join("elapsed");
    let mut table = Vec::new();
    for workload in workloads {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
        let applies = |tool: Tool| !(tool == Tool::ChaosFail && workload.nth.is_some());
        for round in 0..rounds {
            // Alternate the order each round so drift (page cache, CPU frequency) is shared.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..tools.len()).collect()
            } else {
                (0..tools.len()).rev().collect()
            };
            for i in order.into_iter().filter(|&i| applies(tools[i])) {
                let ns = run_once(tools[i], bin, workload, &out)
                    .with_context(|| format!("{} under {}", workload.name, tools[i].name()))?;
                samples[i].push(ns);
            }
            eprintln!("bench: {} round {}/{rounds} done", workload.name, round + 1);
        }
        table.push((workload.name.clone(), samples));
    }
    print_table(&table, rounds, tools);
    if tools == Tool::INJECT {
        kernel_cost(bin, scratch, &n(200_000.0))?;
    }
    Ok(())
}

/// The in-kernel cost per call of the kernel trigger (`chaos inject signal --on`, armed at
/// the millionth getppid, never firing), from kernel.bpf_stats_enabled: each program's
/// run_time_ns / run_cnt as bpftool shows them, read from inside the launched tree while
/// chaos still runs. These do not drift with the machine's noise as wall-clock ratios do.
fn kernel_cost(bin: &Path, scratch: &Path, calls: &str) -> Result<()> {
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(STATS)?.trim().to_string();
    std::fs::write(STATS, "1")?;
    let stats = scratch.join("bpf-stats.json");
    let out = scratch.join("elapsed");
    let script = format!(
        "{} bench getppid {calls} {} && bpftool prog show --json > {}",
        bin.join("victim").display(),
        out.display(),
        stats.display()
    );
    let status = Command::new(bin.join("chaos"))
        .args(["inject", "signal", "--signal", "USR1"])
        .args([
            "--on",
            &format!("getppid:nth={NEVER}"),
            "--seed",
            "1",
            "--json",
        ])
        .args(["--", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    std::fs::write(STATS, &before)?;
    if !status?.success() {
        bail!("chaos inject signal --on getppid:nth={NEVER} failed");
    }
    let programs: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&stats)?)?;
    println!(
        "\nin-kernel cost per call (kernel.bpf_stats_enabled; chaos inject signal --on getppid:nth={NEVER}, {calls} getppid calls, armed, never firing):\n"
    );
    println!("| program | runs | ns per run |");
    println!("|---|---|---|");
    let mut any = false;
    for p in &programs {
        let name = p["name"].as_str().unwrap_or("");
        let (Some(ns), Some(runs)) = (p["run_time_ns"].as_u64(), p["run_cnt"].as_u64()) else {
            continue;
        };
        if name.starts_with("chaos") && runs > 0 {
            any = true;
            println!("| {name} | {runs} | {:.1} |", ns as f64 / runs as f64);
        }
    }
    if !any {
        bail!("bpftool showed no chaos program with runs (bpf_stats off?)");
    }
    // The LSM backend's hooks (file_open, ...) run on other calls than the trigger's; on a
    // kernel that refuses them (this host), say so rather than print nothing.
    let doctor = Command::new(bin.join("chaos"))
        .args(["doctor", "--json"])
        .output()?;
    let doctor: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap_or_default();
    let lsm = doctor["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "bpf_lsm");
    match lsm {
        Some(c) if c["status"] == "ok" => {
            println!("\nLSM: available here, not measured by this bench (it measures the trigger)")
        }
        Some(c) => println!(
            "\nLSM: not measured: {} (chaos doctor); the 6.1 and 6.12 guests allow it",
            c["detail"].as_str().unwrap_or("unavailable")
        ),
        None => println!("\nLSM: not measured (chaos doctor has no bpf_lsm check)"),
    }
    Ok(())
}

fn run_once(tool: Tool, bin: &Path, workload: &Workload, out: &Path) -> Result<f64> {
    let _ = std::fs::remove_file(out);
    let victim = bin.join("victim");
    let mut args: Vec<String> = vec!["bench".into()];
    args.extend(workload.args.iter().cloned());
    args.push(out.display().to_string());
    let mut command = match tool {
        Tool::Untraced => {
            let mut c = Command::new(&victim);
            c.args(&args);
            c
        }
        Tool::Chaos => {
            let mut c = Command::new(bin.join("chaos"));
            c.args(["observe", "--json", "--"]).arg(&victim).args(&args);
            c
        }
        Tool::Bpftrace => {
            let mut c = Command::new("bpftrace");
            let cmdline = std::iter::once(victim.display().to_string())
                .chain(args)
                .collect::<Vec<_>>()
                .join(" ");
            c.args(["-q", "-o", "/dev/null", "-e", BPFTRACE_SCRIPT, "-c"])
                .arg(cmdline);
            c
        }
        Tool::Strace => {
            let mut c = Command::new("strace");
            c.args(["-f", "-o", "/dev/null"]).arg(&victim).args(&args);
            c
        }
        Tool::ChaosPass | Tool::ChaosFail => {
            let mut c = Command::new(bin.join("chaos"));
            c.args(["inject", "errno", "--syscall", workload.syscall])
                .args(["--errno", workload.errno]);
            match workload.nth {
                Some(nth) => c.args(["--nth", &nth.to_string()]),
                None if tool == Tool::ChaosPass => c.args(["--probability", "0"]),
                None => c.args(["--probability", "1"]),
            };
            c.args(["--seed", "1", "--json", "--"])
                .arg(&victim)
                .args(&args);
            c
        }
        Tool::StraceInject | Tool::StraceSeccomp => {
            let mut c = Command::new("strace");
            c.args(["-f", "-o", "/dev/null"]);
            if tool == Tool::StraceSeccomp {
                c.arg("--seccomp-bpf");
            }
            // strace's `when=` stops at 65535, still far beyond the workload's last call.
            let when = workload
                .nth
                .map_or(String::new(), |n| format!(":when={}", n.min(65_535)));
            c.args(["-e", &format!("trace={}", workload.syscall)])
                .args([
                    "-e",
                    &format!("inject={}:error={}{when}", workload.syscall, workload.errno),
                ])
                .arg(&victim)
                .args(&args);
            c
        }
    };
    let status = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("exited with {status}");
    }
    let ns: f64 = std::fs::read_to_string(out)
        .context("the workload wrote no result")?
        .trim()
        .parse()?;
    Ok(ns)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// (max - min) / median, as a percentage.
fn spread(values: &[f64]) -> f64 {
    let (min, max) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    (max - min) / median(values) * 100.0
}

fn print_table(table: &[(String, Vec<Vec<f64>>)], rounds: usize, tools: &[Tool]) {
    println!(
        "\noverhead: workload loop time, median of {rounds} alternated rounds (spread = (max-min)/median)\n"
    );
    print!("| {:<30} |", "workload");
    for tool in tools {
        print!(" {:<22} |", tool.name());
    }
    println!();
    println!("|{}|", vec!["---"; tools.len() + 1].join("|"));
    for (name, samples) in table {
        let base = median(&samples[0]);
        print!(
            "| {name:<30} | {:>9.1} ms ±{:>4.1}%      |",
            base / 1e6,
            spread(&samples[0])
        );
        for s in &samples[1..] {
            if s.is_empty() {
                print!(" {:<22} |", "-");
            } else {
                print!(" {:>7.2}x ±{:>4.1}%         |", median(s) / base, spread(s));
            }
        }
        println!();
    }
}
