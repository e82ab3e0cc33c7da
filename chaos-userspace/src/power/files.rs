//! The data directory's files: who holds them, where they are, copying them on and off the
//! disk, and what is mounted where.

use std::{path::Path, process::Command};

use super::preflight::tool;

/// A mount point's source, from /proc/self/mountinfo (the last mount over `path` wins).
pub(super) fn mounted_source(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_str()?;
    info.lines().rev().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let point = fields.get(4)?.replace("\\040", " ");
        let dash = fields.iter().position(|f| *f == "-")?;
        (point == want).then(|| fields.get(dash + 2).map(|s| s.to_string()))?
    })
}

/// `cp -a FROM/. TO/`: contents, modes, owners and times.
pub(super) fn copy_contents(from: &Path, to: &Path) -> Result<(), String> {
    tool(
        Command::new("cp")
            .arg("-a")
            .arg(from.join("."))
            .arg(format!("{}/", to.display())),
    )
    .map(|_| ())
}

/// Makes `original` hold exactly what `disk` holds: what the service deleted or renamed
/// during the run does not come back.
pub(super) fn restore(disk: &Path, original: &Path) -> Result<(), String> {
    let entries =
        std::fs::read_dir(original).map_err(|e| format!("read {}: {e}", original.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| format!("clear {}: {e}", path.display()))?;
    }
    copy_contents(disk, original)
}

/// Whether `pid` has a file (open or mapped), its working directory or its root under
/// `dir`.
pub(super) fn holds(pid: u32, dir: &Path) -> bool {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    !crate::target::sockets::files_under(Path::new("/proc"), pid, dir).is_empty()
        || ["cwd", "root"]
            .iter()
            .any(|l| std::fs::read_link(proc_dir.join(l)).is_ok_and(|p| p.starts_with(dir)))
        || std::fs::read_to_string(proc_dir.join("maps")).is_ok_and(|maps| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .any(|p| Path::new(p).starts_with(dir))
        })
}

/// The processes among `pids` with an open file or working directory named under `dir`
/// that is not on `dir`'s filesystem now.
pub(super) fn elsewhere(pids: &[u32], dir: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(here) = std::fs::metadata(dir).map(|m| m.dev()) else {
        return Vec::new();
    };
    pids.iter()
        .copied()
        .filter(|pid| {
            let base = Path::new("/proc").join(pid.to_string());
            let links = std::fs::read_dir(base.join("fd"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .chain([base.join("cwd")]);
            links.into_iter().any(|link| {
                std::fs::read_link(&link).is_ok_and(|t| t.starts_with(dir))
                    && std::fs::metadata(&link).is_ok_and(|m| m.dev() != here)
            })
        })
        .collect()
}

/// The processes that hold something under `dir`, as `pid (comm)` pairs.
pub(super) fn holders(dir: &Path) -> String {
    crate::target::proc::pids(Path::new("/proc"))
        .filter(|&pid| holds(pid, dir))
        .map(|pid| format!("{pid} ({})", crate::target::proc::comm_of(pid)))
        .collect::<Vec<_>>()
        .join(", ")
}
