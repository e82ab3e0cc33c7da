//! Multi-process services, with the test suite's own programs (so it runs in the guests too):
//! a prefork server (`chaos-pool`, a master and workers, the shape of nginx) under
//! `delay-supervisor`, and a desktop-style app (`chaos-app`) that restarts its own helper.
//! Each runs in a cgroup the test creates, on a loopback port.
//!
//! What is checked is what chaos says of each fault: a worker's death is an in-place recovery,
//! a handled signal has no effect, a killed master is an episode whose orphans are named, and
//! a helper restarted by its app is measured with the app as the supervisor.

mod common;

use chaos_tests::{children_of, comm_of, free_port, scratch_dir, wait_until};
use common::{
    files::Files,
    supervised::{LOOK, Supervised, kill_instance},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

const POOL: &str = env!("CARGO_BIN_EXE_chaos-pool");
const POOL_COMM: &str = "chaos-pool";
const APP: &str = env!("CARGO_BIN_EXE_chaos-app");
const HELPER_COMM: &str = "sync-helper";
const SUPERVISOR: &str = env!("CARGO_BIN_EXE_delay-supervisor");
/// chaos-pool's delay before it replaces a dead worker.
const RESPAWN_MS: u64 = 150;
/// chaos-app's backoff before it restarts its helper.
const BACKOFF_MS: u64 = 200;

/// A chaos-pool of 2 workers under delay-supervisor (which restarts a dead master after
/// 100 ms), once it answers.
fn pool(name: &str) -> (Supervised, u32) {
    let port = free_port();
    let svc = Supervised::start(
        name,
        scratch_dir(),
        port,
        &[
            SUPERVISOR,
            "100",
            POOL,
            "--port",
            &port.to_string(),
            "--workers",
            "2",
            "--respawn-ms",
            &RESPAWN_MS.to_string(),
        ],
    );
    let master = svc.ready_child(POOL_COMM);
    wait_until("2 workers", LOOK, || children_of(master).len() == 2);
    (svc, master)
}

/// The experiment on the pool under `svc`: `hypothesis` and `faults` tables, `target` lines.
fn pool_experiment(files: &Files, svc: &Supervised, id: &str, head: &str, rest: &str) -> String {
    files.write(
        "exp.toml",
        &format!(
            "id = \"{id}\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"the pool shrugs it off\"\n{head}\n\n[target]\nsupervisor = {}\ncomm = \"{POOL_COMM}\"\nready = \"tcp:127.0.0.1:{}\"\nrecovery_timeout = \"3s\"\neffect_window = \"1s\"\n{rest}\n[phases]\nbaseline = \"200ms\"\ncooldown = \"200ms\"\n",
            svc.pid(),
            svc.port
        ),
    )
}

fn faults(result: &Value) -> &Vec<Value> {
    result["faults"].as_array().unwrap()
}

#[test]
fn a_worker_killed_is_recovered_in_place_and_a_handled_signal_has_no_effect() {
    let (svc, master) = pool("services-pool");
    let workers = children_of(master);
    let files = Files::new();
    let exp = pool_experiment(
        &files,
        &svc,
        "workers",
        "max_failed_recoveries = 0\nlatency = [{ phase = \"in_place\", quantile = \"max\", under = \"3s\" }]",
        "hit = \"worker\"\n\n[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 2\ninterval = \"1s\"\n",
    );
    let (code, stdout, stderr) = files.run(&exp, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("verdict: HELD (exit 0)"), "{stdout}");
    assert!(
        stdout.contains("a signal may hit (target.hit = worker)"),
        "the plan names what may be hit: {stdout}"
    );
    let result = files.result();
    assert_eq!(
        result["episodes"].as_array().unwrap().len(),
        0,
        "the master lived"
    );
    let in_place = result["in_place"].as_array().unwrap();
    assert_eq!(in_place.len(), 2, "{result:#}");
    for (fault, recovery) in faults(&result).iter().zip(in_place) {
        assert_eq!(fault["role"], "worker", "{fault:#}");
        assert_eq!(fault["ppid"], master, "{fault:#}");
        assert!(workers.contains(&(fault["pid"].as_u64().unwrap() as u32)) || fault["id"] == 2);
        assert_eq!(fault["outcome"]["kind"], "in_place", "{fault:#}");
        assert_eq!(fault["outcome"]["recovery"], recovery["id"]);
        assert_eq!(recovery["fault_id"], fault["id"]);
        assert_eq!(recovery["outcome"], "recovered", "{recovery:#}");
        // fault -> the worker's exit -> the master's respawn, from kernel events: the master
        // waits RESPAWN_MS before it forks.
        let at = &recovery["at_ns"];
        let (f, exit, respawned) = (
            at["fault"].as_u64().unwrap(),
            at["exit"].as_u64().unwrap(),
            at["respawned"].as_u64().unwrap(),
        );
        assert!(f <= exit && exit < respawned, "{at:#}");
        assert!(respawned - exit >= RESPAWN_MS * 1_000_000, "{at:#}");
        assert!(recovery["total_ns"].as_u64().unwrap() >= respawned - f);
    }
    assert!(stdout.contains("in place: recovered in"), "{stdout}");
    assert_eq!(children_of(svc.pid()), [master], "the master never died");
    assert_eq!(children_of(master).len(), 2, "both workers replaced");
    let audit = files.audit();
    let fault_entries: Vec<&Value> = audit.iter().filter(|e| e["kind"] == "fault").collect();
    assert_eq!(fault_entries.len(), 2);
    for f in fault_entries {
        assert_eq!(f["role"], "worker", "{f:#}");
        assert_eq!(f["ppid"], master, "{f:#}");
    }

    // SIGHUP is a reload the pool handles: nothing dies, nothing stops answering.
    let files = Files::new();
    let exp = pool_experiment(
        &files,
        &svc,
        "reload",
        "no_effect = \"require\"",
        "\n[[faults]]\nkind = \"signal\"\nsignal = \"HUP\"\ncount = 1\ninterval = \"1s\"\n",
    );
    let (code, stdout, stderr) = files.run(&exp, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let result = files.result();
    let fault = &faults(&result)[0];
    assert_eq!(fault["pid"], master);
    assert_eq!(fault["role"], "main");
    assert_eq!(fault["outcome"]["kind"], "no_effect", "{result:#}");
    assert!(stdout.contains("[held] no fault has an effect"), "{stdout}");
    assert_eq!(children_of(svc.pid()), [master]);
}

#[test]
fn a_killed_master_leaves_its_workers_named_as_orphans_and_every_restart_fails() {
    let (svc, master) = pool("services-orphans");
    let workers = children_of(master);
    let supervisor = svc.pid().to_string();
    let mut measure = chaos_tests::Observer::measure(&[
        "--supervisor",
        &supervisor,
        "--ready",
        "listen",
        "--recovery-timeout",
        "2",
        "--episodes",
        "1",
    ]);
    kill_instance(master);
    let episode = measure.wait_for("the episode", |e| e["type"] == "episode");
    // The orphans hold the port: no new master can bind it, so recovery never comes.
    for pid in &workers {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    measure.finish();
    let e = &episode["data"];
    assert_eq!(e["outcome"], "failed", "{e:#}");
    assert!(e["failed_starts"].as_u64().unwrap() >= 1, "{e:#}");
    let orphans = e["orphans"].as_array().unwrap();
    let mut named: Vec<u32> = orphans
        .iter()
        .map(|o| o["pid"].as_u64().unwrap() as u32)
        .collect();
    named.sort_unstable();
    let mut expected = workers.clone();
    expected.sort_unstable();
    assert_eq!(named, expected, "{e:#}");
    for o in orphans {
        assert_eq!(o["comm"], POOL_COMM);
        assert_eq!(o["ports"], serde_json::json!([svc.port]), "{o:#}");
    }
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.contains("orphans of the old instance still hold its ports"),
        "{reason}"
    );
}

#[test]
fn a_guard_aborts_the_run_when_orphans_hold_the_port() {
    let (svc, master) = pool("services-guard");
    let workers = children_of(master);
    let files = Files::new();
    let exp = pool_experiment(
        &files,
        &svc,
        "guarded",
        "max_failed_recoveries = 0",
        "\n[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 3\ninterval = \"1s\"\n\n[guards]\nabort_on_orphans = true\n",
    );
    let (code, stdout, stderr) = files.run(&exp, &[]);
    for pid in &workers {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    let result = files.result();
    let abort = result["abort"].as_str().unwrap_or_default();
    assert!(
        abort.contains("left orphans holding what the service needs"),
        "{result:#}"
    );
    for pid in &workers {
        assert!(
            abort.contains(&format!("{pid} ({POOL_COMM}, port {})", svc.port)),
            "{abort}"
        );
    }
    assert_eq!(result["injected"], 1, "nothing after the abort");
    assert_eq!(faults(&result)[0]["outcome"]["kind"], "episode");
}

/// chaos-app in a new cgroup, its helper answering.
fn app(name: &str) -> (Supervised, u32) {
    let port = free_port();
    let svc = Supervised::start(
        name,
        scratch_dir(),
        port,
        &[
            APP,
            "--port",
            &port.to_string(),
            "--backoff-ms",
            &BACKOFF_MS.to_string(),
        ],
    );
    let helper = svc.ready_child(HELPER_COMM);
    (svc, helper)
}

#[test]
fn an_app_that_restarts_its_own_helper_is_the_supervisor() {
    let (svc, helper) = app("services-app");
    assert_eq!(comm_of(svc.pid()), "chaos-app");
    let app_pid = svc.pid().to_string();
    let mut measure = chaos_tests::Observer::measure(&[
        "--supervisor",
        &app_pid,
        "--comm",
        HELPER_COMM,
        "--ready",
        "listen",
        "--episodes",
        "1",
    ]);
    kill_instance(helper);
    let episode = measure.wait_for("the episode", |e| e["type"] == "episode");
    measure.finish();
    let e = &episode["data"];
    assert_eq!(e["outcome"], "recovered", "{e:#}");
    assert_eq!(e["old_pid"], helper);
    assert_eq!(e["supervisor"], svc.pid());
    // The app's backoff is the reaped -> forked phase.
    let restart = e["phases_ns"]["reaped_to_forked"].as_u64().unwrap();
    assert!(restart >= BACKOFF_MS * 1_000_000, "{e:#}");
    let next = svc.ready_child(HELPER_COMM);
    assert_eq!(e["new_pid"], next);

    let files = Files::new();
    let exp = files.write(
        "exp.toml",
        &format!(
            "id = \"sync-helper\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"the app brings its sync helper back within a second\"\nmax_failed_recoveries = 0\nlatency = [{{ phase = \"total\", quantile = \"max\", under = \"1s\" }}]\n\n[target]\nsupervisor = {}\ncomm = \"{HELPER_COMM}\"\nready = \"listen\"\nrecovery_timeout = \"3s\"\n\n[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 2\ninterval = \"1s\"\n\n[phases]\nbaseline = \"200ms\"\ncooldown = \"200ms\"\n",
            svc.pid()
        ),
    );
    let (code, stdout, stderr) = files.run(&exp, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let result = files.result();
    let episodes = result["episodes"].as_array().unwrap();
    assert_eq!(episodes.len(), 2, "{result:#}");
    for (fault, episode) in faults(&result).iter().zip(episodes) {
        assert_eq!(fault["role"], "main");
        assert_eq!(fault["ppid"], svc.pid());
        assert_eq!(fault["outcome"]["kind"], "episode");
        assert_eq!(fault["outcome"]["episode"], episode["id"]);
        assert_eq!(episode["fault_id"], fault["id"]);
        assert_eq!(episode["outcome"], "recovered");
    }
    assert_eq!(
        comm_of(svc.pid()),
        "chaos-app",
        "the app itself was never hit"
    );
}
