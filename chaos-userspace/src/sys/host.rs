//! Which machine an output came from: its host name and kernel release, as the kernel says
//! (`/proc/sys/kernel/hostname`, `/proc/sys/kernel/osrelease`; the host name is that of the
//! UTS namespace chaos runs in). Results, summaries and recordings carry it, so that a merged
//! report can tell its sources apart and the exports can be aggregated across nodes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    pub kernel: String,
}

/// Where and when an output was made: the machine, and the start on the wall clock (ns since
/// the epoch) and in kernel time (CLOCK_MONOTONIC, the clock of every `ts_ns` and `at_ns`).
/// Summaries carry it flattened (`host`, `start_unix_ns`, `start_ns`); each is absent in
/// outputs made before chaos kept it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_unix_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ns: Option<u64>,
}

impl Host {
    /// This machine; a value the kernel does not give is empty.
    pub fn current() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Self {
            name: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_a_kernel_release() {
        let host = super::Host::current();
        assert!(!host.kernel.is_empty());
        assert!(
            host.kernel.chars().next().unwrap().is_ascii_digit(),
            "{host:?}"
        );
    }
}
