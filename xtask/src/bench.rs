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
    /// A getppid loop untraced, under `chaos inject errno` (seccomp backend) letting every
    /// call continue and failing every call, and under `strace -e inject` failing every call.
    Inject {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Multiplies the workload size (1.0 = 20k getppid).
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
    /// chaos inject errno, seccomp backend, probability 0: every call goes to chaos and back.
    ChaosPass,
    /// The same, probability 1: every call fails with EPERM, each proven.
    ChaosFail,
    /// strace -f -e inject=getppid:error=EPERM: ptrace stops on every syscall.
    StraceInject,
}

impl Tool {
    const OBSERVE: [Tool; 4] = [Tool::Untraced, Tool::Chaos, Tool::Bpftrace, Tool::Strace];
    const INJECT: [Tool; 4] = [
        Tool::Untraced,
        Tool::ChaosPass,
        Tool::ChaosFail,
        Tool::StraceInject,
    ];

    fn name(self) -> &'static str {
        match self {
            Tool::Untraced => "untraced",
            Tool::Chaos => "chaos observe",
            Tool::Bpftrace => "bpftrace",
            Tool::Strace => "strace -f",
            Tool::ChaosPass => "chaos seccomp, pass",
            Tool::ChaosFail => "chaos seccomp, fail",
            Tool::StraceInject => "strace inject, fail",
        }
    }
}

struct Workload {
    name: String,
    args: Vec<String>,
}

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
    let inject_workloads = [Workload {
        name: format!("getppid x{}", n(20_000.0)),
        args: vec!["getppid".into(), n(20_000.0)],
    }];
    let observe_workloads = [
        Workload {
            name: format!("W1 getppid x{}", n(200_000.0)),
            args: vec!["getppid".into(), n(200_000.0)],
        },
        Workload {
            name: format!("W2 write4k+fsync x{} ext4", n(20_000.0)),
            args: vec!["fsync".into(), n(20_000.0), ext4.display().to_string()],
        },
        Workload {
            name: format!("W2 write4k+fsync x{} tmpfs", n(20_000.0)),
            args: vec!["fsync".into(), n(20_000.0), tmpfs.display().to_string()],
        },
        Workload {
            name: format!("W3 fork+exec+wait x{}", n(2_000.0)),
            args: vec!["forkexec".into(), n(2_000.0)],
        },
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
        for round in 0..rounds {
            // Alternate the order each round so drift (page cache, CPU frequency) is shared.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..tools.len()).collect()
            } else {
                (0..tools.len()).rev().collect()
            };
            for i in order {
                let ns = run_once(tools[i], bin, workload, &out)
                    .with_context(|| format!("{} under {}", workload.name, tools[i].name()))?;
                samples[i].push(ns);
            }
            eprintln!("bench: {} round {}/{rounds} done", workload.name, round + 1);
        }
        table.push((workload.name.clone(), samples));
    }
    print_table(&table, rounds, tools);
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
            let p = if tool == Tool::ChaosPass { "0" } else { "1" };
            let mut c = Command::new(bin.join("chaos"));
            c.args([
                "inject",
                "errno",
                "--syscall",
                "getppid",
                "--errno",
                "EPERM",
            ])
            .args(["--probability", p, "--seed", "1", "--json", "--"])
            .arg(&victim)
            .args(&args);
            c
        }
        Tool::StraceInject => {
            let mut c = Command::new("strace");
            c.args(["-f", "-o", "/dev/null", "-e", "trace=getppid"])
                .args(["-e", "inject=getppid:error=EPERM"])
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
            print!(" {:>7.2}x ±{:>4.1}%         |", median(s) / base, spread(s));
        }
        println!();
    }
}
