//! The names users give: signals, syscalls, errnos, and which syscalls take a path.

use nix::{errno::Errno, sys::signal::Signal};

/// `TERM`, `SIGTERM` or `15`.
pub fn signal(text: &str) -> Result<Signal, String> {
    let upper = text.to_ascii_uppercase();
    let named = if upper.starts_with("SIG") {
        upper.clone()
    } else {
        format!("SIG{upper}")
    };
    if let Ok(sig) = named.parse::<Signal>() {
        return Ok(sig);
    }
    if let Ok(number) = text.parse::<i32>()
        && let Ok(sig) = Signal::try_from(number)
    {
        return Ok(sig);
    }
    Err(format!(
        "--signal {text}: not a signal name or number (for example TERM, SIGKILL, 9)"
    ))
}

/// A syscall of this architecture by name.
pub fn syscall(flag: &str, text: &str) -> Result<syscalls::Sysno, String> {
    text.parse::<syscalls::Sysno>().map_err(|_| {
        format!(
            "{flag} {text}: not a syscall of this architecture (for example fsync, openat, connect)"
        )
    })
}

/// `EIO` or `5`.
pub fn errno(text: &str) -> Result<Errno, String> {
    let upper = text.to_ascii_uppercase();
    if let Some(found) = (1..4096)
        .map(Errno::from_raw)
        .find(|e| *e != Errno::UnknownErrno && format!("{e:?}") == upper)
    {
        return Ok(found);
    }
    match text.parse::<i32>() {
        Ok(n) if (1..4096).contains(&n) && Errno::from_raw(n) != Errno::UnknownErrno => {
            Ok(Errno::from_raw(n))
        }
        _ => Err(format!(
            "--errno {text}: not an errno name or number (for example EIO, ENOSPC, 28)"
        )),
    }
}

/// `2s`, `150ms`, `1m30s` (humantime), or plain seconds.
pub fn duration(flag: &str, text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .or_else(|_| {
            text.parse::<f64>()
                .ok()
                .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
                .ok_or(())
        })
        .map_err(|()| format!("{flag} {text}: not a duration (for example 500ms, 2s, 1m)"))
}

/// Which argument of a syscall is a path, for `--path` (the pathname the kernel will open,
/// create or remove).
pub fn path_arg(nr: syscalls::Sysno) -> Option<usize> {
    use syscalls::Sysno::*;
    match nr {
        open | creat | mkdir | rmdir | unlink | rename | truncate | chmod | chown | stat
        | lstat | access | execve | link | symlink | readlink | chdir | mknod => Some(0),
        openat | openat2 | mkdirat | unlinkat | renameat | renameat2 | newfstatat | faccessat
        | faccessat2 | execveat | fchmodat | fchownat | mknodat | readlinkat | statx => Some(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers_and_names_what_is_wrong() {
        assert_eq!(signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(signal("sigkill"), Ok(Signal::SIGKILL));
        assert_eq!(signal("10"), Ok(Signal::SIGUSR1));
        assert!(
            signal("BOGUS")
                .unwrap_err()
                .starts_with("--signal BOGUS: not a signal")
        );
        assert_eq!(syscall("--syscall", "fsync"), Ok(syscalls::Sysno::fsync));
        assert!(
            syscall("--syscall", "fsyncc")
                .unwrap_err()
                .starts_with("--syscall fsyncc: not a syscall")
        );
        assert_eq!(errno("EIO"), Ok(Errno::EIO));
        assert_eq!(errno("enospc"), Ok(Errno::ENOSPC));
        assert_eq!(errno("28"), Ok(Errno::ENOSPC));
        assert!(
            errno("EWHAT")
                .unwrap_err()
                .starts_with("--errno EWHAT: not an errno")
        );
        assert_eq!(
            duration("--interval", "150ms"),
            Ok(std::time::Duration::from_millis(150))
        );
        assert_eq!(
            duration("--for", "2"),
            Ok(std::time::Duration::from_secs(2))
        );
        assert!(duration("--for", "soon").is_err());
        assert_eq!(path_arg(syscalls::Sysno::openat), Some(1));
        assert_eq!(path_arg(syscalls::Sysno::fsync), None);
    }
}
