//! `chaos doctor` on this machine: it loads real programs, so it runs as root.

use chaos_tests::{loaded_chaos_programs, run_chaos};
use serde_json::Value;

#[test]
fn doctor_reports_what_this_kernel_allows_and_leaves_nothing_loaded() {
    let (code, stdout, stderr) = run_chaos(&["doctor", "--json"]);
    assert_eq!(
        code, 0,
        "observation should work on the test machine: {stderr}"
    );
    let report: Value =
        serde_json::from_str(&stdout).expect("doctor --json prints one JSON object");
    assert_eq!(report["observe_works"], true);
    let status = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // What the observer and the injection backends need, measured to work on this kernel.
    for name in [
        "privileges",
        "btf",
        "tracefs",
        "ring_buffer",
        "tracepoint",
        "raw_tracepoint",
        "bpf_send_signal",
    ] {
        assert_eq!(status(name), "ok", "{name}: {report:#}");
    }
    // Every probe answers one way or the other, with a reason when unavailable.
    for check in report["checks"].as_array().unwrap() {
        assert!(!check["detail"].as_str().unwrap().is_empty(), "{check}");
    }
    // The seccomp listener's synchronous wake-up is there from Linux 6.7 (6.18 here; the
    // guests run 6.1 and 6.12): doctor's answer is the kernel's version's.
    let detail = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "seccomp_user_notif")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut version = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap(), version.next().unwrap());
    let expected = if (major, minor) >= (6, 7) {
        "yes"
    } else {
        "no"
    };
    assert!(
        detail.ends_with(&format!("6.7+): {expected}")),
        "{release}: {detail}"
    );
    // The library that builds the filters is named with its version (in the guests too: the
    // initramfs carries the libraries ldd names).
    assert!(
        detail.contains("filters built by libseccomp 2."),
        "{detail}"
    );
    assert!(loaded_chaos_programs().is_empty());
}
