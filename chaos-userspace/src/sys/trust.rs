//! Whether a file may tell chaos what to run as root: it, and every directory above it, must
//! be owned by root or by the invoking user and writable by nobody else. The same rule as
//! sudo's for sudoers, cron's for crontabs and OpenSSH's StrictModes.
//!
//! - A directory others may write is acceptable only when it is sticky (/tmp, /var/tmp) and
//!   the entry below it is owned by root or the invoking user: in a sticky directory nobody
//!   else can replace or rename an entry they do not own.
//! - A symlink is followed: what it resolves to is checked, and so is the directory that
//!   holds the link (whoever can replace the link decides where it points).

use std::{
    fmt,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// What is wrong with a file or a directory above it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct Untrusted {
    pub path: PathBuf,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Writable by its group or by others (the mode, in octal).
    Writable { mode: u32 },
    /// Owned by someone who is neither root nor the invoking user.
    Owner { uid: u32 },
    /// Cannot be read (the message).
    Unreadable(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Writable { mode } => {
                let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                    (true, true) => "its group and others",
                    (true, false) => "its group",
                    _ => "others",
                };
                write!(f, "mode {mode:04o}: writable by {who}")
            }
            Problem::Owner { uid } => write!(f, "owned by uid {uid}, neither root nor you"),
            Problem::Unreadable(why) => write!(f, "cannot be checked: {why}"),
        }
    }
}

/// Who may own a trusted file: root, and the user who invoked chaos (under sudo, the user
/// sudo names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners(Vec<u32>);

impl Owners {
    pub fn of_this_process() -> Self {
        let mut uids = vec![0, nix::unistd::getuid().as_raw()];
        if let Some(uid) = std::env::var("SUDO_UID").ok().and_then(|u| u.parse().ok()) {
            uids.push(uid);
        }
        uids.sort_unstable();
        uids.dedup();
        Self(uids)
    }

    pub fn new(uids: &[u32]) -> Self {
        Self(uids.to_vec())
    }

    fn allows(&self, uid: u32) -> bool {
        self.0.contains(&uid)
    }
}

/// Checks `path` and every directory above it (see the module's rules).
pub fn check_file(path: &Path, owners: &Owners) -> Result<(), Untrusted> {
    let untrusted = |path: &Path, problem| Untrusted {
        path: path.into(),
        problem,
    };
    let unreadable =
        |path: &Path, e: std::io::Error| untrusted(path, Problem::Unreadable(e.to_string()));
    let resolved = std::fs::canonicalize(path).map_err(|e| unreadable(path, e))?;
    check_chain(&resolved, owners)?;
    // The link itself: its directory decides what it points to.
    if std::fs::symlink_metadata(path)
        .map_err(|e| unreadable(path, e))?
        .file_type()
        .is_symlink()
    {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::fs::canonicalize(dir).map_err(|e| unreadable(dir, e))?;
        check_chain(&dir, owners)?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| unreadable(path, e))?;
        let parent = std::fs::metadata(&dir).map_err(|e| unreadable(&dir, e))?;
        if parent.permissions().mode() & 0o1000 != 0 && !owners.allows(meta.uid()) {
            return Err(untrusted(path, Problem::Owner { uid: meta.uid() }));
        }
    }
    Ok(())
}

/// Checks a directory chaos writes into (an audit log's): itself and every directory above.
pub fn check_dir(dir: &Path, owners: &Owners) -> Result<(), Untrusted> {
    let resolved = std::fs::canonicalize(dir).map_err(|e| Untrusted {
        path: dir.into(),
        problem: Problem::Unreadable(e.to_string()),
    })?;
    check_chain(&resolved, owners)
}

/// `resolved` (absolute, no links) and its ancestors, from the top.
fn check_chain(resolved: &Path, owners: &Owners) -> Result<(), Untrusted> {
    let chain: Vec<&Path> = resolved.ancestors().collect();
    // From / down: a sticky directory that others may write is acceptable when the entry
    // below it (the next in the chain) is owned by an allowed owner.
    for (i, path) in chain.iter().enumerate().rev() {
        let meta = std::fs::metadata(path).map_err(|e| Untrusted {
            path: path.to_path_buf(),
            problem: Problem::Unreadable(e.to_string()),
        })?;
        if !owners.allows(meta.uid()) {
            return Err(Untrusted {
                path: path.to_path_buf(),
                problem: Problem::Owner { uid: meta.uid() },
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 == 0 {
            continue;
        }
        let sticky = meta.is_dir() && mode & 0o1000 != 0;
        // The entry below is checked for its owner on the next turn of the loop; a sticky
        // directory at the very end (checking a directory itself) is its own entry.
        if !(sticky && i > 0) {
            return Err(Untrusted {
                path: path.to_path_buf(),
                problem: Problem::Writable { mode },
            });
        }
    }
    Ok(())
}

/// Creates (or truncates) an output file chaos writes as root, without following a symlink
/// at its path: a link planted there (in /tmp, say) would otherwise have root overwrite
/// whatever it points to.
pub fn create_output(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The file a shell command runs first, when it names one (a path, or a program found on
/// PATH); None for a shell builtin or a command chaos cannot resolve.
pub fn program_of(command: &str) -> Option<PathBuf> {
    let first = command
        .split_whitespace()
        .find(|w| !w.contains('=') || w.starts_with(['/', '.']))?;
    let first = first.trim_matches(['\'', '"']);
    if first.contains('/') {
        return Some(PathBuf::from(first));
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(first))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A directory the tests control, below a trusted one, owned by this user.
    fn dir() -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("chaos-trust-")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        chmod(dir.path(), 0o755);
        dir
    }

    fn owners() -> Owners {
        Owners::new(&[0, nix::unistd::getuid().as_raw()])
    }

    #[test]
    fn a_file_writable_by_others_or_in_a_writable_directory_is_refused() {
        let d = dir();
        let file = d.path().join("exp.toml");
        std::fs::write(&file, "x").unwrap();
        chmod(&file, 0o644);
        assert_eq!(check_file(&file, &owners()), Ok(()));
        chmod(&file, 0o666);
        let err = check_file(&file, &owners()).unwrap_err();
        assert_eq!(err.problem, Problem::Writable { mode: 0o666 });
        assert!(
            err.to_string()
                .ends_with("exp.toml: mode 0666: writable by its group and others"),
            "{err}"
        );
        chmod(&file, 0o644);
        chmod(d.path(), 0o777);
        let err = check_file(&file, &owners()).unwrap_err();
        assert_eq!(err.path, std::fs::canonicalize(d.path()).unwrap());
        // Sticky, as /tmp: acceptable, the entry below is ours.
        chmod(d.path(), 0o1777);
        assert_eq!(check_file(&file, &owners()), Ok(()));
        chmod(d.path(), 0o755);
    }

    #[test]
    fn a_file_owned_by_someone_else_is_refused() {
        let d = dir();
        let file = d.path().join("exp.toml");
        std::fs::write(&file, "x").unwrap();
        let me = nix::unistd::getuid().as_raw();
        let err = check_file(&file, &Owners::new(&[me + 1])).unwrap_err();
        assert!(matches!(err.problem, Problem::Owner { .. }), "{err}");
    }

    #[test]
    fn a_symlink_is_checked_where_it_points_and_where_it_lies() {
        let safe = dir();
        let unsafe_dir = dir();
        chmod(unsafe_dir.path(), 0o777);
        let target = unsafe_dir.path().join("exp.toml");
        std::fs::write(&target, "x").unwrap();
        chmod(&target, 0o644);
        let link = safe.path().join("link.toml");
        symlink(&target, &link).unwrap();
        let err = check_file(&link, &owners()).unwrap_err();
        assert_eq!(err.path, std::fs::canonicalize(unsafe_dir.path()).unwrap());
        // A link in a writable directory to a safe file: whoever writes there decides.
        chmod(unsafe_dir.path(), 0o755);
        let good = safe.path().join("good.toml");
        std::fs::write(&good, "x").unwrap();
        let open = dir();
        chmod(open.path(), 0o777);
        let link = open.path().join("link.toml");
        symlink(&good, &link).unwrap();
        assert!(check_file(&link, &owners()).is_err());
    }

    #[test]
    fn an_output_is_never_written_through_a_link() {
        let d = dir();
        let target = d.path().join("precious");
        std::fs::write(&target, "keep").unwrap();
        let link = d.path().join("result.json");
        symlink(&target, &link).unwrap();
        assert!(create_output(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(create_output(&d.path().join("new.json")).is_ok());
    }

    #[test]
    fn the_program_of_a_command_is_found() {
        assert_eq!(
            program_of("/opt/x/verify --dir /d"),
            Some("/opt/x/verify".into())
        );
        assert_eq!(program_of("LANG=C /bin/true"), Some("/bin/true".into()));
        assert!(program_of("sh -c true").is_some_and(|p| p.ends_with("sh")));
        assert_eq!(program_of("no-such-program-here"), None);
    }
}
