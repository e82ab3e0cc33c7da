//! `chaos observe` against processes these tests spawn themselves. Root only: run through
//! `cargo xtask test`.

use std::{os::unix::fs::MetadataExt as _, process::Command};

use chaos_tests::{
    ChaosCmd, Observer, Spawned, TestCgroup, assert_refused, loaded_chaos_programs, monotonic_ns,
    scratch_dir,
};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

/// The processes these tests observe (tests/src/bin/victim.rs).
fn victim_bin() -> &'static str {
    env!("CARGO_BIN_EXE_victim")
}

fn data(e: &Value) -> &Value {
    &e["data"]
}

fn is(e: &Value, kind: &str, key: &str, value: u64) -> bool {
    e["type"] == kind && e["data"][key].as_u64() == Some(value)
}

#[test]
fn fork_exec_fsync_exit_yield_exactly_the_expected_events() {
    let dir = scratch_dir();
    let dir_arg = dir.path().to_str().unwrap();
    let t0 = monotonic_ns();
    let observer = Observer::start(&["--", victim_bin(), "family", dir_arg]).finish();
    let t1 = monotonic_ns();

    let execs: Vec<_> = observer.of_type("exec").collect();
    let forks: Vec<_> = observer.of_type("fork").collect();
    let exits: Vec<_> = observer.of_type("exit").collect();
    let fsyncs: Vec<_> = observer.of_type("fsync").collect();
    let signals: Vec<_> = observer.of_type("signal").collect();
    assert_eq!(
        (
            execs.len(),
            forks.len(),
            exits.len(),
            fsyncs.len(),
            signals.len()
        ),
        (2, 1, 2, 1, 1),
        "events: {:#?}",
        observer.events
    );

    let parent = data(execs[0])["pid"].as_u64().unwrap();
    assert_eq!(data(execs[0])["filename"], victim_bin());
    assert_eq!(data(execs[0])["comm"], "victim");
    let child = data(forks[0])["child_pid"].as_u64().unwrap();
    assert_eq!(data(forks[0])["parent_pid"].as_u64(), Some(parent));
    assert_eq!(data(execs[1])["pid"].as_u64(), Some(child));
    assert_eq!(data(execs[1])["ppid"].as_u64(), Some(parent));
    assert_eq!(data(execs[1])["filename"], "/bin/true");
    assert_eq!(data(execs[1])["comm"], "true");

    // The child exits first (the parent waits for it), then the parent with code 3.
    assert!(is(exits[0], "exit", "pid", child), "{:#?}", exits);
    assert_eq!(
        (
            data(exits[0])["exit_code"].as_u64(),
            data(exits[0])["signal"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(is(exits[1], "exit", "pid", parent));
    assert_eq!(data(exits[1])["exit_code"].as_u64(), Some(3));
    assert_eq!(data(exits[1])["signal"].as_u64(), Some(0));
    assert_eq!(data(exits[1])["core_dumped"], false);
    assert_eq!(data(exits[1])["comm"], "victim");
    let lifetime = data(exits[1])["lifetime_ns"].as_u64().unwrap();
    assert!(
        lifetime > 0 && lifetime < t1 - t0,
        "lifetime {lifetime} outside the run ({} ns)",
        t1 - t0
    );

    // SIGCHLD from the exiting child to its parent.
    assert_eq!(data(signals[0])["signal_name"], "SIGCHLD");
    assert_eq!(data(signals[0])["sender_pid"].as_u64(), Some(child));
    assert_eq!(data(signals[0])["target_pid"].as_u64(), Some(parent));

    // The fsync names the file that was synced.
    let meta = std::fs::metadata(dir.path().join("family.dat")).unwrap();
    let f = data(fsyncs[0]);
    assert_eq!(f["pid"].as_u64(), Some(parent));
    assert_eq!(f["call"], "ext4_sync_file");
    assert_eq!(f["ino"].as_u64(), Some(meta.ino()));
    let dev = meta.dev();
    assert_eq!(
        f["dev"],
        format!("{}:{}", libc::major(dev), libc::minor(dev))
    );
    assert_eq!(f["ret"].as_i64(), Some(0));
    assert!(f["latency_ns"].as_u64().unwrap() > 0);

    // Kernel timestamps: ordered, and inside this test's own CLOCK_MONOTONIC window.
    let ts: Vec<u64> = observer
        .events
        .iter()
        .map(|e| data(e)["ts_ns"].as_u64().unwrap())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "timestamps out of order: {ts:?}"
    );
    assert!(
        ts.iter().all(|&t| t0 <= t && t <= t1),
        "timestamps {ts:?} outside [{t0}, {t1}]"
    );

    let summary = observer.summary.expect("summary line");
    assert_eq!(summary["data"]["events"]["exec"].as_u64(), Some(2));
    assert_eq!(summary["data"]["lost"].as_u64(), Some(0));
}

#[test]
fn sigkill_from_another_process_names_the_sender_then_the_exit() {
    let mut victim = Spawned::new(Command::new(victim_bin()).arg("pause"));
    let pid = victim.pid();
    let mut observer = Observer::start(&["--pid", &pid.to_string()]);
    let mut killer = Spawned::new(Command::new("kill").args(["-KILL", &pid.to_string()]));
    let killer_pid = killer.pid();
    assert!(killer.wait().success());
    let exit = observer.wait_for("the victim's exit", |e| is(e, "exit", "pid", pid as u64));
    victim.wait();
    let observer = observer.stop();

    let signal = observer
        .of_type("signal")
        .find(|e| data(e)["target_pid"].as_u64() == Some(pid as u64))
        .expect("a signal event aimed at the victim");
    let s = data(signal);
    assert_eq!(s["sender_pid"].as_u64(), Some(killer_pid as u64));
    assert_eq!(s["sender_comm"], "kill");
    assert_eq!(
        (s["signal"].as_u64(), s["signal_name"].as_str()),
        (Some(9), Some("SIGKILL"))
    );
    assert_eq!(s["result"], "delivered");
    assert_eq!(data(&exit)["signal"].as_u64(), Some(9));
    assert!(s["ts_ns"].as_u64() < data(&exit)["ts_ns"].as_u64());
}

#[test]
fn sigsegv_with_core_dumps_enabled_sets_core_dumped() {
    let dir = scratch_dir();
    let observer =
        Observer::start(&["--", victim_bin(), "segv", dir.path().to_str().unwrap()]).finish();
    let exit = observer.of_type("exit").next().expect("exit event");
    assert_eq!(data(exit)["signal"].as_u64(), Some(11), "{exit}");
    assert_eq!(data(exit)["core_dumped"], true, "{exit}");
    // Independent evidence: the kernel wrote a core file (core_pattern permitting).
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    if !pattern.starts_with('|') {
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_some(),
            "no core file in {}",
            dir.path().display()
        );
    }
}

#[test]
fn bystander_with_the_same_comm_is_invisible_under_pid() {
    let dir = scratch_dir();
    let mut target = Spawned::on_usr1(victim_bin());
    let mut observer = Observer::start(&["--pid", &target.pid().to_string()]);
    let mut bystander = Spawned::new(Command::new(victim_bin()).args([
        "churn",
        "20",
        dir.path().to_str().unwrap(),
    ]));
    let bystander_pid = bystander.pid() as u64;
    assert!(bystander.wait().success());
    nix::sys::signal::kill(Pid::from_raw(target.pid() as i32), Signal::SIGUSR1).unwrap();
    observer.wait_for("the target's exit", |e| {
        is(e, "exit", "pid", target.pid() as u64)
    });
    target.wait();
    let observer = observer.stop();
    assert!(
        !observer.pids().contains(&bystander_pid),
        "bystander {bystander_pid} seen: {:#?}",
        observer.events
    );
    // The target's own fork and child exit were seen (so the filter is not just empty).
    assert_eq!(
        observer.of_type("fork").count(),
        1,
        "{:#?}",
        observer.events
    );
}

#[test]
fn cgroup_target_picks_up_a_process_moved_in_and_ignores_bystanders() {
    let cgroup = TestCgroup::new("moved");
    let _dir = scratch_dir();
    let mut observer = Observer::start(&["--cgroup", cgroup.path.to_str().unwrap()]);
    let mut target = Spawned::on_usr1(victim_bin());
    let mut bystander = Spawned::on_usr1(victim_bin());
    cgroup.add(target.pid());
    for victim in [&target, &bystander] {
        nix::sys::signal::kill(Pid::from_raw(victim.pid() as i32), Signal::SIGUSR1).unwrap();
    }
    let exit = observer.wait_for("the moved process's exit", |e| {
        is(e, "exit", "pid", target.pid() as u64)
    });
    assert_eq!(data(&exit)["exit_code"].as_u64(), Some(5));
    assert!(bystander.wait().code() == Some(5) && target.wait().code() == Some(5));
    let observer = observer.stop();
    let target_pid = target.pid() as u64;
    assert!(
        observer
            .of_type("fork")
            .any(|e| data(e)["parent_pid"].as_u64() == Some(target_pid))
    );
    assert!(
        observer
            .of_type("signal")
            .any(|e| data(e)["target_pid"].as_u64() == Some(target_pid)),
        "SIGUSR1 to the moved process not seen: {:#?}",
        observer.events
    );
    assert!(
        !observer.pids().contains(&(bystander.pid() as u64)),
        "bystander seen: {:#?}",
        observer.events
    );
}

#[test]
fn comm_target_follows_exec_into_the_name() {
    let mut observer = Observer::start(&["--comm", "true"]);
    let mut child = Spawned::new(&mut Command::new("/bin/true"));
    assert!(child.wait().success());
    let pid = child.pid() as u64;
    observer.wait_for("exit of /bin/true", |e| is(e, "exit", "pid", pid));
    let observer = observer.stop();
    assert!(
        observer
            .of_type("exec")
            .any(|e| is(e, "exec", "pid", pid) && data(e)["comm"] == "true")
    );
}

#[test]
fn no_follow_stops_at_the_named_process() {
    let mut target = Spawned::on_usr1(victim_bin());
    let pid = target.pid() as u64;
    let mut observer = Observer::start(&["--pid", &pid.to_string(), "--no-follow"]);
    nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).unwrap();
    observer.wait_for("the target's exit", |e| is(e, "exit", "pid", pid));
    target.wait();
    let observer = observer.stop();
    let fork = observer
        .of_type("fork")
        .next()
        .expect("the target's own fork is reported");
    let child = data(fork)["child_pid"].as_u64().unwrap();
    assert!(
        !observer
            .of_type("exit")
            .any(|e| is(e, "exit", "pid", child)),
        "child followed: {:#?}",
        observer.events
    );
}

#[test]
fn summary_counts_events_lost_when_the_ring_buffer_is_full() {
    let dir = scratch_dir();
    let dir = dir.path().to_str().unwrap();
    // One page of ring buffer, and chaos stopped while a target floods it.
    let observer = Observer::start(&["--comm", "victim", "--buffer-pages", "1"]);
    observer.signal(Signal::SIGSTOP);
    let mut flood = Spawned::new(Command::new(victim_bin()).args(["churn", "400", dir]));
    let status = flood.wait();
    observer.signal(Signal::SIGCONT);
    assert!(status.success());
    let observer = observer.stop();
    let summary = &observer.summary.as_ref().expect("summary")["data"];
    let lost = summary["lost"].as_u64().unwrap();
    assert!(lost > 0, "nothing lost: {summary}");
    // 400 forks, 400 exits and 400 SIGCHLDs of children, plus the flood's own events: what
    // arrived and what was counted lost add up to at least that.
    let seen = observer.events.len() as u64;
    assert!(seen + lost >= 1200, "seen {seen} + lost {lost} < 1200");
    assert_eq!(
        summary["events"]["fork"].as_u64().unwrap() as usize,
        observer.of_type("fork").count()
    );
}

#[test]
fn bad_input_is_refused_with_one_line_and_exit_2_leaving_nothing_attached() {
    assert_refused(&[
        ("observe --bogus", "unexpected argument '--bogus'"),
        (
            "observe",
            "no target: name one with --pid, --comm, --cgroup, --unit or -- CMD",
        ),
        ("observe --pid 4194304", "--pid 4194304: no such process"),
        (
            "observe --unit chaos-no-such-unit",
            if std::path::Path::new("/run/systemd/system").is_dir() {
                "--unit chaos-no-such-unit.service: no such unit"
            } else {
                "--unit chaos-no-such-unit: this machine does not run systemd"
            },
        ),
        (
            "observe --cgroup /sys/fs/cgroup/unified/chaos-no-such-cgroup",
            "no such directory",
        ),
        (
            "observe --cgroup /tmp",
            "not a directory of a cgroup v2 filesystem",
        ),
        (
            "observe --comm a-name-that-is-too-long",
            "longer than the kernel's 15-byte command name",
        ),
        (
            "observe --pid 1 --duration 0",
            "--duration 0: give a positive number of seconds",
        ),
        (
            "observe --pid 1 --buffer-pages 3",
            "--buffer-pages 3: give a power of two",
        ),
        (
            "observe --pid 1 --fsync-hook fentry",
            "invalid value 'fentry' for '--fsync-hook <HOOK>'",
        ),
        (
            "observe -- /no/such/program",
            "command not found: /no/such/program",
        ),
    ]);
}

#[test]
fn missing_privileges_are_refused_before_anything_loads() {
    let run = ChaosCmd::new()
        .args(["observe", "--pid", &std::process::id().to_string()])
        .as_user(65534, 65534)
        .output();
    let stderr = run.stderr;
    assert_eq!(run.code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "chaos: error: loading eBPF programs needs root (or CAP_BPF and CAP_PERFMON): run chaos with sudo"
    );
}

#[test]
fn a_kernel_lacking_a_tracepoint_gets_a_clear_error_and_nothing_attached() {
    // A tracefs that has everything but cgroup:cgroup_attach_task, as an older or trimmed
    // kernel would.
    let fake = scratch_dir();
    let real = std::path::Path::new("/sys/kernel/tracing/events");
    for (group, name) in [
        ("sched", "sched_process_exec"),
        ("sched", "sched_process_exit"),
        ("signal", "signal_generate"),
        ("ext4", "ext4_sync_file_enter"),
        ("ext4", "ext4_sync_file_exit"),
    ] {
        let dir = fake.path().join("events").join(group).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            real.join(group).join(name).join("format"),
            dir.join("format"),
        )
        .unwrap();
    }
    let run = ChaosCmd::new()
        .args(["observe", "--pid", &std::process::id().to_string()])
        .env("CHAOS_TRACEFS", fake.path())
        .output();
    let stderr = run.stderr;
    assert_eq!(run.code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("tracepoint cgroup:cgroup_attach_task does not exist on this kernel"),
        "{stderr}"
    );
    assert!(loaded_chaos_programs().is_empty());
}

#[test]
fn syscall_fsync_hook_reports_the_call_and_fd_on_any_filesystem() {
    // tmpfs has no sync hook of its own; the syscall tracepoints see the call anyway.
    let dir = tempfile::Builder::new()
        .prefix("chaos-test-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let observer = Observer::start(&[
        "--fsync-hook",
        "syscalls",
        "--",
        victim_bin(),
        "family",
        dir.path().to_str().unwrap(),
    ])
    .finish();
    let fsyncs: Vec<_> = observer.of_type("fsync").collect();
    assert_eq!(fsyncs.len(), 1, "{:#?}", observer.events);
    let f = data(fsyncs[0]);
    assert_eq!(f["call"], "fsync");
    assert_eq!(f["datasync"], false);
    assert!(f["fd"].as_i64().is_some_and(|fd| fd >= 3), "{f}");
    assert_eq!(f["ret"].as_i64(), Some(0));
}

#[test]
fn an_exit_reports_the_bytes_written_since_the_last_sync_with_either_hook() {
    let dir = scratch_dir();
    for hook in ["fs", "syscalls"] {
        let observer = Observer::start(&[
            "--fsync-hook",
            hook,
            "--",
            victim_bin(),
            "unsynced",
            "2500",
            dir.path().to_str().unwrap(),
        ])
        .finish();
        let exits: Vec<_> = observer.of_type("exit").collect();
        assert_eq!(exits.len(), 1, "{hook}: {:#?}", observer.events);
        assert_eq!(
            data(exits[0])["unsynced_bytes"],
            2500,
            "{hook}: the 4096 synced bytes are not counted, the 2500 after are"
        );
    }
    let observer = Observer::start(&[
        "--fsync-hook",
        "off",
        "--",
        victim_bin(),
        "unsynced",
        "10",
        dir.path().to_str().unwrap(),
    ])
    .finish();
    let exit = observer.of_type("exit").next().unwrap();
    assert!(
        data(exit)["unsynced_bytes"].is_null(),
        "no write hook, no count"
    );
}
