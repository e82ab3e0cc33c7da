//! Where tracefs is mounted.

use std::path::PathBuf;

/// The tracefs mount: /sys/kernel/tracing (4.1+), or the older debugfs location.
pub fn find() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}
