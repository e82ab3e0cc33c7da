//! Where tracefs is mounted.

use std::path::PathBuf;

/// Overrides where tracefs is looked for (an unusual mount point).
pub const ENV: &str = "CHAOS_TRACEFS";

/// The tracefs mount: `$CHAOS_TRACEFS`, /sys/kernel/tracing (4.1+), or the older debugfs
/// location.
pub fn find() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV) {
        let dir = PathBuf::from(dir);
        return dir.join("events").is_dir().then_some(dir);
    }
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}
