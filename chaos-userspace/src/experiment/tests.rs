//! The checks of experiment files: a valid file, the shipped example, and a table of bad
//! files, each with the line, the key and the message it must produce.

use nix::sys::signal::Signal;

use super::*;
use crate::inject::spec::{FaultAction, Timing};

const VALID: &str = r#"id = "queue-kill"
blast_radius = "local"

[hypothesis]
statement = "the queue comes back"
max_failed_recoveries = 0
latency = [{ phase = "total", quantile = "p99", under = "2s" }]
verify = { command = "true" }

[target]
supervisor = 4242
comm = "queue"
ready = "listen"

[[faults]]
kind = "signal"
signal = "KILL"
count = 3
interval = "2s"

[guards]
max_consecutive_failures = 2
"#;

fn check_text(text: &str) -> Result<Experiment, FileError> {
    check(text, Path::new("exp.toml"))
}

#[test]
fn a_valid_file_is_read_whole() {
    let e = check_text(VALID).unwrap();
    assert_eq!(e.id, "queue-kill");
    assert_eq!(e.radius, BlastRadius::Local);
    assert_eq!(e.target.named, Named::Supervisor(4242));
    assert_eq!(e.target.comm_filter.as_deref(), Some("queue"));
    assert_eq!(e.target.ready, Ready::Listen);
    assert_eq!(e.hypothesis.max_failed, Some(0));
    assert_eq!(e.hypothesis.latency[0].quantile, Quantile::Percentile(99.0));
    assert_eq!(e.faults.len(), 1);
    assert_eq!(e.planned(), 3);
    assert!(matches!(
        e.faults[0].action,
        FaultAction::Signal(ref s)
            if s.signal == Signal::SIGKILL && s.interval == Duration::from_secs(2) && s.timing == Timing::AfterPrevious
    ));
    // The default seed comes from the id: the same file runs the same way each time.
    assert_eq!(e.faults[0].seed, check_text(VALID).unwrap().faults[0].seed);
    assert_eq!(e.phases.baseline, Duration::from_secs(5));
    assert_eq!(e.guards.max_consecutive_failures, Some(2));
}

#[test]
fn kernel_faults_are_read() {
    let text = VALID.replace(
        "[guards]",
        "[[faults]]\nkind = \"trigger\"\nsyscall = \"fdatasync\"\nnth = 3\nsignal = \"KILL\"\ncount = 2\n\n[[faults]]\nkind = \"errno\"\nsyscall = \"openat\"\nerrno = \"EIO\"\nprobability = 0.5\ncount = 10\nwindows = [\"Mon-Fri 09:00-17:00\"]\n\n[guards]",
    );
    let e = check_text(&text).unwrap();
    assert_eq!(e.planned(), 15);
    assert!(matches!(
        e.faults[1].action,
        FaultAction::Trigger { nth: 3, .. }
    ));
    let FaultAction::Lsm { fault, .. } = &e.faults[2].action else {
        panic!("not errno")
    };
    assert_eq!((fault.errno, fault.count), (libc::EIO as u32, 10));
    assert_eq!(
        fault.max_per_minute,
        BlastRadius::Local.caps().max_per_minute
    );
    assert_eq!(e.faults[2].windows.len(), 1);
}

#[test]
fn every_shipped_example_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // The demo's cgroup exists only while the demo runs: a supervisor stands in for it.
        let text = text.replace("cgroup = \"chaos-demo\"", "supervisor = 4242");
        let e = check(&text, &path).unwrap_or_else(|err| panic!("{err}"));
        checked.push((e.id.clone(), e.planned()));
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            ("config-reader-eio".to_string(), 200),
            ("payments-canary-2026-11".to_string(), 5),
            ("queue-crash-at-fsync".to_string(), 2),
            ("queue-power-loss".to_string(), 3),
            ("sync-helper-kill".to_string(), 20),
        ]
    );
}

#[test]
fn the_schema_describes_the_file() {
    let schema: serde_json::Value = serde_json::from_str(&file::schema()).unwrap();
    let props = &schema["properties"];
    for key in [
        "id",
        "blast_radius",
        "hypothesis",
        "target",
        "faults",
        "guards",
        "phases",
        "outputs",
    ] {
        assert!(props.get(key).is_some(), "{key} missing from the schema");
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for key in ["id", "blast_radius", "hypothesis", "target", "faults"] {
        assert!(required.contains(&key), "{key} not required");
    }
}

/// Replaces `from` in the valid file (which must contain it) with `to`.
fn edit(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from}");
    VALID.replacen(from, to, 1)
}

#[test]
fn bad_files_name_the_line_the_key_and_the_problem() {
    // VALID's lines: 1 id, 2 blast_radius, 4 [hypothesis], 7 latency, 10 [target],
    // 11 supervisor, 12 comm, 13 ready, 15 [[faults]], 16 kind, 17 signal, 18 count,
    // 19 interval, 21 [guards], 22 max_consecutive_failures.
    let errno = |extra: &str| {
        edit(
            "kind = \"signal\"\nsignal = \"KILL\"\ncount = 3\ninterval = \"2s\"",
            &format!("kind = \"errno\"\ncount = 3\n{extra}"),
        )
    };
    let cases: Vec<(String, usize, &str, &str)> = vec![
        // (file, line, key, part of the message)
        (
            "id = \"x\"\nblast_radius = \"local\"\nbogus = 1\n".into(),
            3,
            "bogus",
            "unknown field `bogus`",
        ),
        (
            VALID.replace("id = \"queue-kill\"\n", ""),
            1,
            "id",
            "missing field `id`",
        ),
        (
            edit("id = \"queue-kill\"", "id = \"queue kill!\""),
            1,
            "id",
            "letters, digits",
        ),
        (
            edit("blast_radius = \"local\"", "blast_radius = \"prod\""),
            2,
            "blast_radius",
            "unknown variant `prod`",
        ),
        (
            edit("count = 3", "count = \"three\""),
            18,
            "faults.count",
            "invalid type",
        ),
        (
            edit("count = 3", "count = 0"),
            18,
            "faults[0].count",
            "0: give at least 1",
        ),
        (
            edit("count = 3", "count = 500"),
            18,
            "faults[0].count",
            "blast_radius local allows at most 100 faults",
        ),
        (
            edit("interval = \"2s\"", "interval = \"soon\""),
            19,
            "faults[0].interval",
            "`soon` is not a duration",
        ),
        (
            edit("interval = \"2s\"", "interval = \"100ms\""),
            19,
            "faults[0].interval",
            "allows 60 faults a minute, so at least 1s apart",
        ),
        (
            edit("signal = \"KILL\"", "signal = \"SIGBOGUS\""),
            17,
            "faults[0].signal",
            "not a signal name or number",
        ),
        (
            edit("kind = \"signal\"", "kind = \"explode\""),
            16,
            "faults.kind",
            "unknown variant `explode`",
        ),
        (
            edit("interval = \"2s\"", "interval = \"2s\"\nerrno = \"EIO\""),
            20,
            "faults[0].errno",
            "not a key of a signal fault",
        ),
        (
            edit("signal = \"KILL\"\n", ""),
            15,
            "faults[0].signal",
            "a signal fault needs signal",
        ),
        (
            errno("syscall = \"fsync\"\nerrno = \"EIO\""),
            18,
            "faults[0].syscall",
            "fsync: no LSM hook covers it",
        ),
        (
            errno("syscall = \"openat\"\nerrno = \"ENOTANERRNO\""),
            19,
            "faults[0].errno",
            "ENOTANERRNO",
        ),
        (
            errno("syscall = \"openat\"\nerrno = \"EIO\"\nprobability = 1.5"),
            20,
            "faults[0].probability",
            "give a number from 0 to 1",
        ),
        (
            edit(
                "kind = \"signal\"\nsignal = \"KILL\"\ncount = 3\ninterval = \"2s\"",
                "kind = \"trigger\"\nsyscall = \"fsync\"\nnth = 0\nsignal = \"KILL\"\ncount = 1",
            ),
            18,
            "faults[0].nth",
            "calls are counted from 1",
        ),
        (
            edit(
                "kind = \"signal\"",
                "kind = \"trigger\"\nsyscall = \"fsync\"\nnth = 2",
            ),
            21,
            "faults[0].interval",
            "not a key of a trigger fault",
        ),
        (
            edit(
                "interval = \"2s\"",
                "interval = \"2s\"\nwindows = [\"Mon-Fri 9-5\"]",
            ),
            20,
            "faults[0].windows[0]",
            "`9` is not a time of day",
        ),
        (
            edit("quantile = \"p99\"", "quantile = \"p200\""),
            7,
            "hypothesis.latency[0].quantile",
            "give p50, p90, p99",
        ),
        (
            edit("phase = \"total\"", "phase = \"reboot\""),
            7,
            "hypothesis.latency[0].phase",
            "`reboot` is not a phase",
        ),
        (
            edit(
                "max_failed_recoveries = 0\nlatency = [{ phase = \"total\", quantile = \"p99\", under = \"2s\" }]\nverify = { command = \"true\" }\n",
                "",
            ),
            1,
            "hypothesis",
            "nothing to measure",
        ),
        (
            edit("supervisor = 4242\n", "supervisor = 4242\npid = 7\n"),
            10,
            "target",
            "give one of supervisor, pid, exe, cgroup and unit",
        ),
        (
            edit("supervisor = 4242\ncomm = \"queue\"\n", ""),
            10,
            "target",
            "name the service",
        ),
        (
            edit("supervisor = 4242", "supervisor = 1"),
            11,
            "target.supervisor",
            "pid 1 and below",
        ),
        (
            edit("comm = \"queue\"", "comm = \"a-name-longer-than-fifteen\""),
            12,
            "target.comm",
            "15-byte command name",
        ),
        (
            edit("ready = \"listen\"", "ready = \"tcp:nowhere\""),
            13,
            "target.ready",
            "give tcp:HOST:PORT",
        ),
        (
            edit(
                "max_consecutive_failures = 2",
                "max_consecutive_failures = 0",
            ),
            22,
            "guards.max_consecutive_failures",
            "0: give at least 1",
        ),
        (
            edit("[guards]\n", "[guards]\ncrash_rate_factor = 0.5\n"),
            22,
            "guards.crash_rate_factor",
            "a factor of 1 or more",
        ),
        (
            edit(
                "[guards]\n",
                "[phases]\nbaseline = \"0\"\n\n[guards]\ncrash_rate_factor = 2\n",
            ),
            22,
            "phases.baseline",
            "compares with the baseline",
        ),
        (
            edit(
                "ready = \"listen\"",
                "ready = \"listen\"\nallow = { titles = [\"a[\"] }",
            ),
            14,
            "target.allow.titles",
            "not a glob pattern",
        ),
        (
            edit(
                "ready = \"listen\"\n\n[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 3\ninterval = \"2s\"",
                "ready = \"listen\"\ndeny = { titles = [\"*checkpointer*\"] }\n\n[[faults]]\nkind = \"trigger\"\nsignal = \"KILL\"\nsyscall = \"write\"\nnth = 3\ncount = 1",
            ),
            17,
            "faults[0].kind",
            "only a signal fault can",
        ),
        (
            "id = \"x\"\n[hypothesis\n".into(),
            2,
            "hypothesis",
            "unclosed table",
        ),
    ];
    assert!(cases.len() >= 15);
    let mut wrong = Vec::new();
    for (text, line, key, message) in &cases {
        match check_text(text) {
            Ok(_) => wrong.push(format!("accepted (want line {line}, key {key}):\n{text}")),
            Err(err) => {
                let shown = err.to_string();
                let right = err.line == *line
                    && err.key == *key
                    && err.message.contains(message)
                    && shown.starts_with(&format!("exp.toml:{line}:"));
                if !right {
                    wrong.push(format!(
                        "want line {line}, key {key}, message containing {message:?}; got {shown:?}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn power_loss_files_need_a_sized_data_dir_of_their_own_and_a_supervisor_that_can_be_frozen() {
    let power = |target: &str| {
        edit(
            "ready = \"listen\"",
            &format!("ready = \"listen\"\n{target}"),
        )
        .replacen(
            "kind = \"signal\"\nsignal = \"KILL\"",
            "kind = \"power_loss\"",
            1,
        )
    };
    let sized = "data_dir = \"/srv/queue\"\ndata_size = \"64MiB\"";
    let ok = check_text(&power(sized)).unwrap();
    assert!(matches!(
        ok.faults[0].action,
        FaultAction::Signal(ref s) if s.power && s.signal == Signal::SIGKILL
    ));
    assert_eq!(ok.faults[0].kind(), crate::fault::FaultKind::PowerLoss);
    assert_eq!(ok.faults[0].backend(), crate::fault::Backend::PowerCut);
    assert_eq!(ok.target.data_size, Some(64 << 20));
    let cases = [
        (power(""), "faults[0].kind", "needs target.data_dir"),
        (
            power("data_dir = \"/srv/queue\""),
            "target.data_size",
            "needs the size",
        ),
        (
            power("data_dir = \"srv/q\"\ndata_size = \"64MiB\""),
            "target.data_dir",
            "absolute path",
        ),
        (
            power("data_dir = \"/etc\"\ndata_size = \"64MiB\""),
            "target.data_dir",
            "a system directory",
        ),
        (
            power("data_dir = \"/srv/queue\"\ndata_size = \"4MiB\""),
            "target.data_size",
            "at least 16MiB",
        ),
        (
            power("data_dir = \"/srv/queue\"\ndata_size = \"lots\""),
            "target.data_size",
            "not a size",
        ),
        (
            edit(
                "ready = \"listen\"",
                "ready = \"listen\"\ndata_size = \"64MiB\"",
            ),
            "target.data_size",
            "only a power_loss fault",
        ),
        (
            power(sized).replace("supervisor = 4242", "unit = \"queue\""),
            "faults[0].kind",
            "systemd (pid 1) is never frozen",
        ),
        (
            power(sized).replace("count = 3", "signal = \"TERM\"\ncount = 3"),
            "faults[0].signal",
            "not a key of a power_loss fault",
        ),
    ];
    for (file, key, message) in cases {
        let e = check_text(&file).expect_err(&file);
        assert_eq!(e.key, key, "{e}\n{file}");
        assert!(e.message.contains(message), "{e}\n{file}");
    }
}
