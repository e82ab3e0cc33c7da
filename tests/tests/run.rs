//! `chaos run` end to end against the sample durable queue under runit, each in a cgroup the
//! test creates: a hypothesis that holds, one that is refuted, a guard's abort, a dry run,
//! the audit log, and bad experiments refused with exit 2 and nothing injected.

mod common;

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use chaos_tests::{
    ChaosCmd, assert_tampering_is_detected, comm_of, free_port, lsm_available, run_chaos,
    scratch_dir,
};
use common::{
    files::Files,
    supervised::{QUEUE, QUEUE_COMM, Supervised, queue_under_runit},
};
use serde_json::Value;

/// Writes the experiment: `head` (id, blast radius, hypothesis...) then `rest`, with the
/// target table for `svc` between them.
fn experiment(files: &Files, svc: &Supervised, head: &str, rest: &str) -> String {
    files.write(
        "exp.toml",
        &format!(
            "{head}\n[target]\nsupervisor = {}\ncomm = \"{QUEUE_COMM}\"\nready = \"listen\"\nrecovery_timeout = \"3s\"\n\n{rest}\n",
            svc.pid()
        ),
    )
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["kind"].as_str()).collect()
}

fn verify_command(svc: &Supervised) -> String {
    format!("{QUEUE} verify --dir {}", svc.queue_dir().display())
}

#[test]
fn a_hypothesis_that_holds_exits_0_with_each_clause_in_every_output() {
    let (svc, first) = queue_under_runit("run-holds");
    let files = Files::new();
    let exp = experiment(
        &files,
        &svc,
        &format!(
            "id = \"holds\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"the queue comes back fast and intact\"\nmax_failed_recoveries = 0\nlatency = [{{ phase = \"total\", quantile = \"max\", under = \"900ms\" }}]\nverify = {{ command = \"{}\" }}\n",
            verify_command(&svc)
        ),
        "[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 3\ninterval = \"1200ms\"\n\n[guards]\nmax_consecutive_failures = 1\n\n[phases]\nbaseline = \"1s\"\ncooldown = \"200ms\"\n",
    );
    let (code, stdout, stderr) = files.run(&exp, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("verdict: HELD (exit 0)"), "{stdout}");
    assert!(stdout.contains("total "), "the histogram table: {stdout}");

    let result = files.result();
    assert_eq!(result["verdict"], "held");
    assert_eq!(result["injected"], 3);
    assert_eq!(result["confirmed"], 3);
    let clauses = result["clauses"].as_array().unwrap();
    let names: Vec<&str> = clauses.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "faults injected, confirmed and accounted for",
            "at most 0 failed recoveries",
            "total max under 900ms",
            "verify passes after each recovery",
            "verify passes at the end"
        ]
    );
    assert!(clauses.iter().all(|c| c["held"] == true), "{clauses:#?}");
    // Each fault killed the instance alive at the time, and each death is one episode.
    let faults: Vec<u64> = result["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["pid"].as_u64().unwrap())
        .collect();
    let episodes: Vec<u64> = result["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["outcome"], "recovered", "{e:#}");
            e["old_pid"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(faults, episodes);
    assert_eq!(faults[0], u64::from(first));
    let junit = files.junit();
    assert!(
        junit.contains("tests=\"5\"") && junit.contains("failures=\"0\""),
        "{junit}"
    );
    assert!(
        std::fs::metadata(files.path("result.hlog")).unwrap().len() > 0,
        "the HdrHistogram log"
    );

    // The audit log: each fault written before the episode it caused was judged.
    let audit = files.audit();
    let kinds = kinds(&audit);
    assert_eq!(kinds[..3], ["start", "verify", "phase"], "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"end"));
    assert_eq!(kinds.iter().filter(|k| **k == "fault").count(), 3);
    for (i, kind) in kinds.iter().enumerate() {
        if *kind == "guard" {
            assert!(kinds[..i].contains(&"fault"), "{kinds:?}");
        }
    }
    assert_eq!(audit[0]["experiment"], "holds");
    assert_eq!(
        audit[0]["hypothesis"],
        "the queue comes back fast and intact"
    );
    let (code, stdout, _) = run_chaos(&["audit", "verify", &files.arg("audit.jsonl")]);
    assert_eq!(code, 0, "{stdout}");
    assert_tampering_is_detected(
        &files.path("audit.jsonl"),
        ("\"passed\":true", "\"passed\":false"),
    );
}

#[test]
fn a_refuted_hypothesis_exits_1_and_names_the_clause() {
    let (svc, _) = queue_under_runit("run-refuted");
    let files = Files::new();
    let exp = experiment(
        &files,
        &svc,
        "id = \"refuted\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"a restart takes under a microsecond\"\nlatency = [{ phase = \"total\", quantile = \"p50\", under = \"1us\" }]\n",
        "[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 1\ninterval = \"1s\"\n\n[phases]\nbaseline = \"200ms\"\ncooldown = \"100ms\"\n",
    );
    let record = files.arg("run.jsonl");
    let (code, stdout, stderr) = files.run(&exp, &["--record", &record]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("verdict: REFUTED (exit 1)"), "{stdout}");
    assert_replays_exactly(&files, &stdout);
    assert!(
        stdout.contains("[FAILED] total p50 under 1us: p50 = "),
        "{stdout}"
    );
    let result = files.result();
    assert_eq!(result["verdict"], "refuted");
    let failed: Vec<&Value> = result["clauses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["held"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["name"], "total p50 under 1us");
    assert!(
        files.junit().contains("failures=\"1\""),
        "{}",
        files.junit()
    );
}

/// `chaos run --replay` of the run's recording, as an unprivileged user: the same exit
/// code, the same verdict and table, and the same result JSON, byte for byte.
fn assert_replays_exactly(files: &Files, live_stdout: &str) {
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let recording = open.path().join("run.jsonl");
    std::fs::copy(files.path("run.jsonl"), &recording).unwrap();
    std::fs::set_permissions(&recording, std::fs::Permissions::from_mode(0o644)).unwrap();
    let json = open.path().join("replayed.json");
    let replay = ChaosCmd::new()
        .arg("run")
        .arg("--replay")
        .arg(&recording)
        .arg("--json")
        .arg(&json)
        .as_user(65534, 65534)
        .output();
    let live = std::fs::read(files.path("result.json")).unwrap();
    assert_eq!(
        replay.code,
        files.result()["exit_code"].as_i64().unwrap() as i32,
        "{}",
        replay.stderr
    );
    assert_eq!(
        std::fs::read(&json).unwrap(),
        live,
        "the replayed result differs"
    );
    let verdict = |text: &str| text[text.find("\nverdict:").unwrap()..].to_string();
    assert_eq!(verdict(&replay.stdout), verdict(live_stdout));
    // chaos report replays the recording too, and agrees with the live result.
    let report = ChaosCmd::new()
        .arg("report")
        .arg(&recording)
        .arg("--json")
        .as_user(65534, 65534)
        .output();
    assert_eq!(report.code, 0, "{}", report.stderr);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    let result = files.result();
    let source = &report["sources"][0];
    assert_eq!(source["kind"], "run_recording");
    assert_eq!(
        source["verdict"].as_str().map(str::to_lowercase).as_deref(),
        result["verdict"].as_str()
    );
    assert_eq!(source["experiment"], result["experiment"]);
    assert_eq!(
        report["episodes"].as_u64(),
        result["episodes"].as_array().map(|e| e.len() as u64)
    );
    assert_eq!(report["faults"].as_u64(), result["injected"].as_u64());
}

#[test]
fn a_service_that_stops_restarting_trips_the_guard_exit_3_and_no_fault_after() {
    // The run script starts the queue once; every restart after that runs something else.
    let port = free_port();
    let dir = scratch_dir();
    let marker = dir.path().join("started");
    let run = format!(
        "#!/bin/sh\nif [ -e {m} ]; then exec sleep 600; fi\ntouch {m}\nexec {QUEUE} serve --dir {} --port {port}\n",
        dir.path().join("data").display(),
        m = marker.display()
    );
    std::fs::write(dir.path().join("run"), run).unwrap();
    std::fs::set_permissions(
        dir.path().join("run"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let svc = Supervised::start("run-guard", dir, port, &["runsv", &path]);
    svc.ready_instance();
    let files = Files::new();
    let exp = experiment(
        &files,
        &svc,
        "id = \"guard\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"it always comes back\"\nmax_failed_recoveries = 0\n",
        "[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 3\ninterval = \"1s\"\n\n[guards]\nepisode_timeout = \"1s\"\n\n[phases]\nbaseline = \"1200ms\"\n",
    );
    let (code, stdout, stderr) = files.run(&exp, &[]);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(stdout.contains("verdict: ABORTED (exit 3)"), "{stdout}");
    let result = files.result();
    assert_eq!(result["verdict"], "aborted");
    assert!(
        result["abort"]
            .as_str()
            .unwrap()
            .contains("not recovered within the guard's 1s"),
        "{result:#}"
    );
    assert_eq!(result["injected"], 1);
    let audit = files.audit();
    let kinds = kinds(&audit);
    let abort = kinds
        .iter()
        .position(|k| *k == "abort")
        .expect("an abort entry");
    assert_eq!(
        kinds.iter().filter(|k| **k == "fault").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        !kinds[abort..].contains(&"fault"),
        "a fault after the abort: {kinds:?}"
    );
    assert!(
        files.junit().contains("name=\"guards\""),
        "{}",
        files.junit()
    );
}

#[test]
fn a_dry_run_checks_everything_and_hits_nothing() {
    let (svc, instance) = queue_under_runit("run-dry");
    let files = Files::new();
    let exp = experiment(
        &files,
        &svc,
        &format!(
            "id = \"dry\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"s\"\nverify = {{ command = \"{}\" }}\n",
            verify_command(&svc)
        ),
        "[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 5\ninterval = \"1s\"\n",
    );
    let (code, stdout, stderr) = files.run(&exp, &["--dry-run"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("experiment dry (dry run)"), "{stdout}");
    assert!(
        stdout.contains("nothing was injected") && stdout.contains("verify passed"),
        "{stdout}"
    );
    assert_eq!(comm_of(instance), QUEUE_COMM, "the instance is untouched");
    assert_eq!(svc.ready_instance(), instance);
    let audit = files.audit();
    assert_eq!(kinds(&audit), ["start", "verify", "end"]);
    assert_eq!(audit[0]["dry_run"], true);
    assert_eq!(audit[2]["injected"], 0);
}

#[test]
fn bad_experiments_exit_2_with_the_reason_and_inject_nothing() {
    let (svc, instance) = queue_under_runit("run-bad");
    let files = Files::new();
    let hypothesis = "[hypothesis]\nstatement = \"s\"\nmax_failed_recoveries = 0\n";
    let fault = "[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 2\ninterval = \"1s\"\n";
    // Within canary's 6 a minute.
    let slow = fault.replace("\"1s\"", "\"10s\"");
    let local = format!("id = \"bad\"\nblast_radius = \"local\"\n\n{hypothesis}");
    let radius = |level: &str| format!("id = \"bad\"\nblast_radius = \"{level}\"\n\n{hypothesis}");
    // (experiment head, the rest after the target, extra arguments, part of the message)
    let cases: Vec<(String, String, Vec<&str>, &str)> = vec![
        (
            local.clone(),
            format!("{fault}bogus = 1\n"),
            vec![],
            "unknown field `bogus`",
        ),
        (
            local.replace("local", "prod"),
            fault.into(),
            vec![],
            "blast_radius: unknown variant `prod`",
        ),
        (
            local.clone(),
            fault.replace("count = 2", "count = 101"),
            vec![],
            "faults[0].count: 101: blast_radius local allows at most 100",
        ),
        (
            local.clone(),
            fault.replace("\"1s\"", "\"10ms\""),
            vec![],
            "faults[0].interval: 10ms: blast_radius local allows 60 faults a minute",
        ),
        (
            local.clone(),
            fault.replace("KILL", "KABOOM"),
            vec![],
            "faults[0].signal: `KABOOM`: not a signal",
        ),
        (
            "id = \"bad\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"s\"\n".into(),
            fault.into(),
            vec![],
            "hypothesis: nothing to measure",
        ),
        (
            local.replace(
                "max_failed_recoveries = 0",
                "latency = [{ phase = \"boot\", quantile = \"p99\", under = \"1s\" }]",
            ),
            fault.into(),
            vec![],
            "`boot` is not a phase",
        ),
        (
            local.clone(),
            format!("{fault}windows = [\"Someday 09:00-17:00\"]\n"),
            vec![],
            "`Someday` is not a day",
        ),
        (
            local.clone(),
            format!("{fault}\n[guards]\nepisode_timeout = \"10s\"\n"),
            vec![],
            "guards.episode_timeout: 10s is longer than target.recovery_timeout",
        ),
        (
            radius("ci"),
            fault.into(),
            vec![],
            "blast_radius ci (at most 500 faults, 120 a minute) needs --accept-blast-radius ci",
        ),
        (
            radius("lab"),
            fault.into(),
            vec!["--accept-blast-radius", "ci"],
            "needs --accept-blast-radius lab",
        ),
        (
            radius("canary"),
            slow.clone(),
            vec![],
            "needs --approve bad",
        ),
        (
            radius("canary"),
            slow.clone(),
            vec!["--approve", "other"],
            "--approve other: this experiment's id is bad",
        ),
        (
            local.replace(
                "max_failed_recoveries = 0",
                "verify = { command = \"exit 3\" }",
            ),
            fault.into(),
            vec![],
            "hypothesis.verify fails before any fault (`exit 3` exit status: 3",
        ),
        (
            local.clone(),
            fault.into(),
            vec!["TARGET:allow"],
            "no instance may be hit",
        ),
        (
            local.clone(),
            fault.into(),
            vec!["TARGET:deny"],
            "on the experiment's deny list",
        ),
        (
            local.clone(),
            fault.into(),
            vec!["TARGET:nobody"],
            "no such process",
        ),
        (
            local.clone(),
            "[[faults]]\nkind = \"errno\"\nsyscall = \"fsync\"\nerrno = \"EIO\"\ncount = 1\n"
                .into(),
            vec![],
            "faults[0].syscall: fsync: no LSM hook covers it",
        ),
    ];
    assert!(cases.len() >= 15);
    let mut wrong = Vec::new();
    for (head, rest, extra, expected) in &cases {
        let exp = experiment(&files, &svc, head, rest);
        // Target variations: an allow list without the service, a deny list with it, a
        // supervisor pid that does not exist.
        let args: Vec<&str> = extra
            .iter()
            .copied()
            .filter(|a| !a.starts_with("TARGET:"))
            .collect();
        if let Some(variant) = extra.iter().find_map(|a| a.strip_prefix("TARGET:")) {
            let text = std::fs::read_to_string(&exp).unwrap();
            let text = match variant {
                "allow" => text.replace(
                    "[target]\n",
                    "[target]\nallow = { comms = [\"postgres\"] }\n",
                ),
                "deny" => text.replace(
                    "[target]\n",
                    &format!("[target]\ndeny = {{ comms = [\"{QUEUE_COMM}\"] }}\n"),
                ),
                _ => text.replace(
                    &format!("supervisor = {}", svc.pid()),
                    "supervisor = 4194304",
                ),
            };
            std::fs::write(&exp, text).unwrap();
        }
        let _ = std::fs::remove_file(files.path("audit.jsonl"));
        let (code, stdout, stderr) = files.run(&exp, &args);
        let injected = kinds(&files.audit()).contains(&"fault");
        if code != 2 || !stderr.contains(expected) || injected {
            wrong.push(format!(
                "want exit 2 with {expected:?}, nothing injected; got {code}, injected {injected}:\n{stderr}{stdout}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Nothing was hit: the first instance is still the one running.
    assert_eq!(svc.ready_instance(), instance);
    assert!(
        !Path::new(&files.arg("result.json")).exists(),
        "no result for a run that never started"
    );
}

#[test]
fn an_errno_fault_on_a_kernel_without_bpf_lsm_is_refused_before_any_fault() {
    let (svc, instance) = queue_under_runit("run-lsm");
    let files = Files::new();
    let exp = experiment(
        &files,
        &svc,
        "id = \"lsm\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"s\"\nmax_failed_recoveries = 0\n",
        "[[faults]]\nkind = \"errno\"\nsyscall = \"openat\"\nerrno = \"EIO\"\ncount = 1\n\n[phases]\nbaseline = \"100ms\"\nmax_duration = \"3s\"\n",
    );
    if lsm_available() {
        eprintln!(
            "this kernel allows BPF LSM: the refusal is not exercised here (the guests run inject's LSM tests)"
        );
        return;
    }
    let (code, stdout, stderr) = files.run(&exp, &[]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("an errno fault needs BPF LSM, and this kernel refused it"),
        "{stderr}"
    );
    assert!(!kinds(&files.audit()).contains(&"fault"));
    assert_eq!(svc.ready_instance(), instance);
}

#[test]
fn a_kernel_trigger_fires_its_count_then_is_disarmed() {
    let (svc, _) = queue_under_runit("run-trigger");
    let files = Files::new();
    // The queue fdatasyncs twice per record, every 10 ms: each instance meets its 20th call
    // within a fraction of a second, so a missing count limit would show as a third kill.
    let exp = experiment(
        &files,
        &svc,
        "id = \"trigger\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"s\"\nmax_failed_recoveries = 0\n",
        "[[faults]]\nkind = \"trigger\"\nsyscall = \"fdatasync\"\nnth = 20\nsignal = \"KILL\"\ncount = 2\n\n[phases]\nbaseline = \"200ms\"\ncooldown = \"1500ms\"\n",
    );
    let (code, stdout, stderr) = files.run(&exp, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let result = files.result();
    assert_eq!(result["injected"], 2, "{result:#}");
    for fault in result["faults"].as_array().unwrap() {
        assert_eq!(fault["backend"], "bpf_send_signal");
        assert_eq!(fault["syscall"], "fdatasync");
        assert_eq!(fault["nth"], 20);
    }
    let recovered = result["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "recovered")
        .count();
    assert_eq!(recovered, 2, "{result:#}");
    let audit = files.audit();
    let kinds = kinds(&audit);
    let armed = kinds.iter().position(|k| *k == "armed").expect("armed");
    let disarmed = kinds
        .iter()
        .position(|k| *k == "disarmed")
        .expect("disarmed");
    let faults: Vec<usize> = (0..kinds.len()).filter(|&i| kinds[i] == "fault").collect();
    assert!(
        faults.iter().all(|&i| armed < i && i < disarmed),
        "{kinds:?}"
    );
}

#[test]
fn a_signal_waits_for_its_time_window() {
    let (svc, instance) = queue_under_runit("run-window");
    let files = Files::new();
    // A window that opens two hours from now (UTC) and lasts one.
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        + 2)
        % 24;
    let window = format!("daily {hour:02}:00-{:02}:00 UTC", (hour + 1) % 24);
    let exp = experiment(
        &files,
        &svc,
        "id = \"window\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"s\"\nmax_failed_recoveries = 0\n",
        &format!(
            "[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 1\ninterval = \"1s\"\nwindows = [\"{window}\"]\n\n[phases]\nbaseline = \"100ms\"\nmax_duration = \"2s\"\n"
        ),
    );
    let (code, stdout, stderr) = files.run(&exp, &[]);
    assert!(
        stdout.contains("(opens in "),
        "the plan says when: {stdout}"
    );
    assert_eq!(code, 1, "never fired, so not held: {stdout}\n{stderr}");
    assert!(
        stdout.contains("1 scheduled signal(s) never fired"),
        "{stdout}"
    );
    assert!(!kinds(&files.audit()).contains(&"fault"));
    assert_eq!(svc.ready_instance(), instance);
}
