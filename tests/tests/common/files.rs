//! Where a `chaos run` leaves its files: a scratch directory holding the experiment, the
//! audit log and every output.

use std::path::PathBuf;

use chaos_tests::{run_chaos, scratch_dir};
use serde_json::Value;

/// Where a run leaves its files.
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Self {
        Self { dir: scratch_dir() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// `chaos run` with every output in this directory.
    pub fn run(&self, experiment: &str, extra: &[&str]) -> (i32, String, String) {
        let (audit, json, junit, hlog) = (
            self.arg("audit.jsonl"),
            self.arg("result.json"),
            self.arg("result.xml"),
            self.arg("result.hlog"),
        );
        let mut args = vec![
            "run",
            experiment,
            "--audit",
            &audit,
            "--json",
            &json,
            "--junit",
            &junit,
            "--hdr-log",
            &hlog,
        ];
        args.extend_from_slice(extra);
        run_chaos(&args)
    }

    pub fn result(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path("result.json")).unwrap()).unwrap()
    }

    pub fn junit(&self) -> String {
        std::fs::read_to_string(self.path("result.xml")).unwrap()
    }

    /// The audit log's events, in order (empty when there is no log).
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].clone())
            .collect()
    }
}

impl Files {
    /// Writes `text` to `name` here; returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.path(name), text).unwrap();
        self.arg(name)
    }
}
