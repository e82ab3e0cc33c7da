//! One short successful run of each command that loads kernel programs, and nothing of
//! chaos's left attached after it (`bpftool prog show`). Each command brings the kernel up
//! through the same session builder and drives its engine with the same driver: a leak in
//! either would show in every row.

mod common;

use std::process::Command;

use chaos_tests::{ChaosCmd, Spawned, assert_nothing_attached};
use common::supervised::queue_under_runit;

fn nothing_attached(after: &str) {
    assert_nothing_attached(after);
}

fn sleeper() -> Spawned {
    Spawned::new(Command::new("sleep").arg("30"))
}

#[test]
fn observe_leaves_nothing_attached() {
    let run = ChaosCmd::new().line("observe --json -- true").output();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("\"type\":\"summary\""),
        "{}",
        run.stdout
    );
    nothing_attached("observe");
}

#[test]
fn measure_leaves_nothing_attached() {
    let victim = sleeper();
    let run = ChaosCmd::new()
        .line(&format!(
            "measure --pid {} --duration 0.5 --json",
            victim.pid()
        ))
        .output();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("\"type\":\"summary\""),
        "{}",
        run.stdout
    );
    nothing_attached("measure");
}

#[test]
fn inject_leaves_nothing_attached() {
    let mut victim = sleeper();
    let run = ChaosCmd::new()
        .line(&format!(
            "inject signal --signal TERM --interval 100ms --seed 1 --json --pid {}",
            victim.pid()
        ))
        .output();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("\"type\":\"confirmed\""),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&victim.wait()),
        Some(libc::SIGTERM)
    );
    nothing_attached("inject");
}

#[test]
fn run_leaves_nothing_attached() {
    let (svc, instance) = queue_under_runit("smoke-run");
    let dir = chaos_tests::scratch_dir();
    let exp = dir.path().join("exp.toml");
    std::fs::write(
        &exp,
        format!(
            "id = \"smoke\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"s\"\nmax_failed_recoveries = 0\n\n[target]\nsupervisor = {}\ncomm = \"chaos-queue\"\n\n[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 1\ninterval = \"1s\"\n",
            svc.pid()
        ),
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    let run = ChaosCmd::new()
        .arg("run")
        .arg(&exp)
        .arg("--dry-run")
        .arg("--audit")
        .arg(&audit)
        .output();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(svc.ready_instance(), instance, "a dry run hits nothing");
    nothing_attached("run --dry-run");
}

#[test]
fn doctor_leaves_nothing_attached() {
    let run = ChaosCmd::new().line("doctor").output();
    assert_eq!(run.code, 0, "{}", run.stderr);
    nothing_attached("doctor");
}
