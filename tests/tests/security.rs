//! Trust boundaries: what chaos runs as root comes only from files only root (or the
//! invoking user) can change; commands from a file run as the account it names; the audit
//! log is chaos's alone, and a chain rewritten whole is caught by a hash kept elsewhere.

mod common;

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink},
    path::{Path, PathBuf},
};

use chaos_tests::{ChaosCmd, Finished, Spawned, assert_nothing_attached, scratch_dir};
use common::supervised::{QUEUE_COMM, queue_under_runit};
use serde_json::Value;

const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory of the test's: trusted (0755, ours) unless a test loosens it.
fn place() -> tempfile::TempDir {
    let dir = scratch_dir();
    chmod(dir.path(), 0o755);
    dir
}

fn experiment(dir: &Path, supervisor: u32, extra_target: &str, hypothesis: &str) -> PathBuf {
    let path = dir.join("exp.toml");
    std::fs::write(
        &path,
        format!(
            "id = \"trust\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"s\"\n{hypothesis}\n\n[target]\nsupervisor = {supervisor}\ncomm = \"{QUEUE_COMM}\"\n{extra_target}\n\n[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 1\ninterval = \"1s\"\n"
        ),
    )
    .unwrap();
    chmod(&path, 0o644);
    path
}

fn run(exp: &Path, audit: &Path, extra: &[&str]) -> Finished {
    ChaosCmd::new()
        .arg("run")
        .arg(exp)
        .arg("--dry-run")
        .arg("--audit")
        .arg(audit)
        .args(extra)
        .output()
}

fn audit_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].clone())
        .collect()
}

#[test]
fn files_others_could_change_are_refused_before_anything_is_read() {
    let dir = place();
    let audit = dir.path().join("audit.jsonl");
    // The checks come first: no service is needed to be refused.
    let exp = experiment(dir.path(), 4_194_304, "", "max_failed_recoveries = 0");
    let refused = |exp: &Path, expected: &str| {
        let r = run(exp, &audit, &[]);
        assert_eq!(r.code, 2, "{expected}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(expected), "{expected}: {}", r.stderr);
        assert!(r.stderr.contains("--allow-unsafe-file"), "{}", r.stderr);
        assert!(r.stdout.is_empty(), "the plan was printed: {}", r.stdout);
        assert!(!audit.exists(), "nothing was done");
    };
    chmod(&exp, 0o666);
    refused(
        &exp,
        "exp.toml: mode 0666: writable by its group and others",
    );
    chmod(&exp, 0o644);

    let open = place();
    chmod(open.path(), 0o777);
    let exp_in_open = experiment(open.path(), 4_194_304, "", "max_failed_recoveries = 0");
    refused(&exp_in_open, "mode 0777: writable by its group and others");

    let link = dir.path().join("link.toml");
    symlink(&exp_in_open, &link).unwrap();
    refused(&link, &format!("{}: mode 0777", open.path().display()));

    std::os::unix::fs::chown(&exp, Some(NOBODY), Some(NOBODY)).unwrap();
    refused(&exp, "owned by uid 65534, neither root nor you");
    std::os::unix::fs::chown(&exp, Some(0), Some(0)).unwrap();

    // A verify command whose program others could change is refused the same way.
    let tool = open.path().join("verify.sh");
    std::fs::write(&tool, "#!/bin/sh\nexit 0\n").unwrap();
    chmod(&tool, 0o755);
    let exp = experiment(
        dir.path(),
        4_194_304,
        "",
        &format!("verify = {{ command = \"{} --check\" }}", tool.display()),
    );
    refused(&exp, "hypothesis.verify's program");
    assert_nothing_attached("the refusals");
}

#[test]
fn the_override_runs_anyway_and_is_in_the_audit_log() {
    let (svc, _) = queue_under_runit("trust-override");
    let dir = place();
    let exp = experiment(dir.path(), svc.pid(), "", "max_failed_recoveries = 0");
    chmod(&exp, 0o666);
    let audit = dir.path().join("audit.jsonl");
    let r = run(&exp, &audit, &["--allow-unsafe-file"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("run anyway (--allow-unsafe-file)"),
        "{}",
        r.stderr
    );
    let start = &audit_events(&audit)[0];
    assert_eq!(start["kind"], "start");
    let overridden = start["unsafe_files"][0].as_str().unwrap();
    assert!(
        overridden.starts_with("the experiment file: ") && overridden.contains("mode 0666"),
        "{start:#}"
    );
}

#[test]
fn verify_runs_as_the_named_user_and_the_plan_and_the_log_say_so() {
    let (svc, _) = queue_under_runit("trust-user");
    let dir = place();
    // Where the command, as nobody, may write its uid.
    let out = tempfile::tempdir().unwrap();
    chmod(out.path(), 0o1777);
    let uid_file = out.path().join("uid");
    let exp = experiment(
        dir.path(),
        svc.pid(),
        "",
        &format!(
            "verify = {{ command = \"id -u > {}\", user = \"nobody\" }}",
            uid_file.display()
        ),
    );
    let audit = dir.path().join("audit.jsonl");
    let r = run(&exp, &audit, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read_to_string(&uid_file).unwrap().trim(),
        NOBODY.to_string(),
        "verify ran as nobody"
    );
    assert!(
        r.stdout.contains("verify: `id -u > ") && r.stdout.contains("runs as nobody (uid 65534)"),
        "the plan: {}",
        r.stdout
    );
    let start = &audit_events(&audit)[0];
    assert_eq!(start["commands"][0]["what"], "verify");
    assert_eq!(start["commands"][0]["user"], "nobody (uid 65534)");
    // An account that does not exist is refused, naming the key.
    let exp = experiment(
        dir.path(),
        svc.pid(),
        "",
        "verify = { command = \"true\", user = \"no-such-account\" }",
    );
    let r = run(&exp, &dir.path().join("other.jsonl"), &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("hypothesis.verify.user: no user no-such-account on this machine"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_audit_log_is_chaos_alone() {
    let victim = Spawned::new(std::process::Command::new("sleep").arg("30"));
    let dir = place();
    let audit = dir.path().join("new/audit.jsonl");
    let inject = |audit: &Path| {
        ChaosCmd::new()
            .line(&format!(
                "inject signal --signal TERM --dry-run --seed 1 --pid {}",
                victim.pid()
            ))
            .arg("--audit")
            .arg(audit)
            .output()
    };
    let r = inject(&audit);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&audit), 0o600, "the log");
    assert_eq!(mode(audit.parent().unwrap()), 0o700, "its new directory");
    assert_eq!(std::fs::metadata(&audit).unwrap().uid(), 0);
    assert!(
        r.stderr.contains("entries, last hash ") && r.stderr.contains("--expect-hash"),
        "the last hash is printed: {}",
        r.stderr
    );
    // A log, or a directory, others may write: refused, nothing injected.
    chmod(&audit, 0o622);
    let before = std::fs::read_to_string(&audit).unwrap();
    let r = inject(&audit);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("mode 0622: writable by its group and others"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&audit).unwrap(),
        before,
        "not appended to"
    );
    let verify = ChaosCmd::new()
        .arg("audit")
        .arg("verify")
        .arg(&audit)
        .output();
    assert_eq!(verify.code, 0, "the chain itself is intact");
    assert!(
        verify.stderr.contains("warning:") && verify.stderr.contains("mode 0622"),
        "{}",
        verify.stderr
    );
    chmod(&audit, 0o600);
    chmod(audit.parent().unwrap(), 0o777);
    let r = inject(&audit);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("mode 0777"), "{}", r.stderr);
}

/// An audit log's lines with entry `index`'s event edited and every hash after it
/// recomputed, as someone who rewrites the whole file would.
fn rewrite(lines: &[String], index: usize, edit: (&str, &str)) -> Vec<String> {
    use sha2::{Digest as _, Sha256};
    let mut prev = String::new();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let cut = line.rfind(",\"hash\":\"").expect("a hash last");
        let mut body = line[..cut].to_string() + "}";
        if i == index {
            body = body.replacen(edit.0, edit.1, 1);
        }
        if i > 0 {
            let at = body.find("\"prev\":\"").unwrap() + 8;
            body.replace_range(at..at + 64, &prev);
        } else {
            prev = body[body.find("\"prev\":\"").unwrap() + 8..][..64].to_string();
        }
        let mut digest = Sha256::new();
        digest.update(prev.as_bytes());
        digest.update(body.as_bytes());
        let hash: String = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push(format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]));
        prev = hash;
    }
    out
}

#[test]
fn a_chain_rewritten_whole_passes_alone_and_fails_against_the_hash_kept_elsewhere() {
    let victim = Spawned::new(std::process::Command::new("sleep").arg("30"));
    let dir = place();
    let audit = dir.path().join("audit.jsonl");
    let r = ChaosCmd::new()
        .line(&format!(
            "inject signal --signal TERM --dry-run --seed 1 --pid {}",
            victim.pid()
        ))
        .arg("--audit")
        .arg(&audit)
        .output();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let kept = r
        .stderr
        .split("--expect-hash ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the printed hash")
        .to_string();
    let verify = |extra: &[&str]| {
        ChaosCmd::new()
            .arg("audit")
            .arg("verify")
            .arg(&audit)
            .args(extra)
            .output()
    };
    assert_eq!(verify(&["--expect-hash", &kept]).code, 0);
    let lines: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let forged = rewrite(&lines, 1, ("\"dry_run\":true", "\"dry_run\":false"));
    assert_ne!(forged, lines);
    std::fs::write(&audit, forged.join("\n") + "\n").unwrap();
    assert_eq!(
        verify(&[]).code,
        0,
        "a chain recomputed whole verifies alone"
    );
    let caught = verify(&["--expect-hash", &kept]);
    assert_eq!(caught.code, 1, "{}", caught.stdout);
    assert!(
        caught.stderr.contains("no entry has the hash"),
        "{}",
        caught.stderr
    );
}

#[test]
fn prometheus_beyond_loopback_is_warned_about() {
    let port = chaos_tests::free_port();
    let r = ChaosCmd::new()
        .line(&format!(
            "observe --json --prometheus 0.0.0.0:{port} -- true"
        ))
        .output();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("every network this machine is on, without TLS or authentication"),
        "{}",
        r.stderr
    );
    let local = ChaosCmd::new()
        .line(&format!("observe --json --prometheus {port} -- true"))
        .output();
    assert!(!local.stderr.contains("warning"), "{}", local.stderr);
}
