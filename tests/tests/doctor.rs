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
    assert!(loaded_chaos_programs().is_empty());
}
