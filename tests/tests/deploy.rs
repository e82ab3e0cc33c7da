//! `deploy/`, checked with the real tools Debian has: `systemd-analyze verify` for the node
//! agent's units, `yamllint` for the manifests, and the DaemonSet's privileges and mounts
//! read back from its YAML (Debian packages no Kubernetes schema validator).

use std::{path::PathBuf, process::Command};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    // verify checks that every command a unit runs exists and that the units it names load:
    // a root of the test's own holds chaos where the units expect it, the programs they run
    // (this machine's), and systemd's own units (this machine's, for the targets).
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    let bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(chaos_tests::chaos_bin(), bin.join("chaos")).unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    for program in ["sh", "mkdir", "date"] {
        std::fs::copy(
            PathBuf::from("/bin").join(program),
            root.path().join("bin").join(program),
        )
        .unwrap();
    }
    let system = root.path().join("lib/systemd/system");
    std::fs::create_dir_all(&system).unwrap();
    for entry in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), system.join(entry.file_name())).unwrap();
        }
    }
    for unit in [
        "chaos-measure@.service",
        "chaos-run@.service",
        "chaos-run@.timer",
    ] {
        std::fs::copy(deploy().join(unit), units.join(unit)).unwrap();
    }
    // The unit chaos-measure@ follows (After=%i) must exist too.
    std::fs::write(
        units.join("queue.service"),
        "[Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    let instances = [
        "chaos-measure@queue.service",
        "chaos-run@sync-helper.service",
        "chaos-run@sync-helper.timer",
    ];
    let out = Command::new("systemd-analyze")
        .arg(format!("--root={}", root.path().display()))
        .arg("verify")
        .args(instances.iter().map(|u| units.join(u)))
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify names what it finds wrong on stderr (and fails for most of it).
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("chaos-") || l.contains("Failed") || l.contains("Unknown"))
        .collect();
    assert!(out.status.success() && problems.is_empty(), "{stderr}");
}

#[test]
fn the_manifests_pass_yamllint() {
    for file in [
        "kubernetes/daemonset.yaml",
        "otel-collector.yaml",
        "prometheus.yml",
    ] {
        let out = Command::new("yamllint")
            .args(["-d", "{extends: default, rules: {line-length: {max: 100}, document-start: disable, comments: {min-spaces-from-content: 1}}}"])
            .arg(deploy().join(file))
            .output()
            .expect("yamllint (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The DaemonSet's container, as JSON (python3's yaml, which yamllint depends on).
fn daemonset() -> serde_json::Value {
    let script = "import json, sys, yaml\nfor d in yaml.safe_load_all(open(sys.argv[1])):\n    if d and d.get('kind') == 'DaemonSet':\n        print(json.dumps(d))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(deploy().join("kubernetes/daemonset.yaml"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one DaemonSet")
}

#[test]
fn the_daemonset_has_exactly_the_privileges_and_mounts_chaos_needs() {
    let ds = daemonset();
    assert_eq!(ds["apiVersion"], "apps/v1");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "the node's processes");
    assert_eq!(pod["hostNetwork"], true, "the node's host name");
    let selector = &ds["spec"]["selector"]["matchLabels"];
    assert_eq!(&ds["spec"]["template"]["metadata"]["labels"], selector);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    // The one privilege beyond capabilities, named in the manifest's header.
    assert_eq!(sc["seccompProfile"]["type"], "Unconfined");
    let text = std::fs::read_to_string(deploy().join("kubernetes/daemonset.yaml")).unwrap();
    assert!(
        text.contains("#   seccomp Unconfined"),
        "the header says why"
    );
    let mut added: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    added.sort();
    assert_eq!(
        added,
        [
            "BPF",
            "DAC_READ_SEARCH",
            "PERFMON",
            "SYS_ADMIN",
            "SYS_PTRACE",
            "SYS_RESOURCE"
        ]
    );
    let mounts: Vec<(&str, bool)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap(), m["readOnly"] == true))
        .collect();
    assert_eq!(
        mounts,
        [("/sys/kernel/tracing", true), ("/sys/fs/cgroup", true)]
    );
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["hostPath"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["/sys/kernel/tracing", "/sys/fs/cgroup"]);
    // chaos takes its arguments: run here, it gets past parsing and is refused only for
    // what this machine lacks (no kubepods slice), with chaos's own message, not clap's.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "measure");
    assert!(!std::path::Path::new("/sys/fs/cgroup/kubepods.slice").exists());
    let run = chaos_tests::ChaosCmd::new().args(&args).output();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("chaos: error:") && run.stderr.contains("kubepods.slice"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_prometheus_configuration_passes_promtool() {
    let out = Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(deploy().join("prometheus.yml"))
        .output()
        .expect("promtool (cargo xtask setup installs prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
