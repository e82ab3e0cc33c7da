//! `-- CMD`: start a command held at a barrier, so it can join the target set before it runs a
//! single instruction of its own.
//!
//! The fork happens before chaos starts any thread (see `commands/observe.rs`), so the child
//! only calls async-signal-safe functions (read, execvp, _exit) on memory prepared before it.

use std::{
    ffi::{CString, OsString},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use nix::{
    sys::prctl,
    unistd::{ForkResult, Pid, fork, pipe},
};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("command contains a NUL byte")]
    Nul,
    #[error("cannot start the command")]
    Os(#[source] nix::Error),
    #[error("the command's seccomp filter did not come up: {0}")]
    Seccomp(String),
}

/// A launched command waiting at the barrier. Dropping it without [`Launched::release`] makes the
/// child exit (status 127) without running the command.
#[derive(Debug)]
pub struct Launched {
    pub pid: Pid,
    barrier: OwnedFd,
    /// With a seccomp filter: released once the listener is in safe hands.
    filter_barrier: Option<OwnedFd>,
}

impl Launched {
    /// Lets the command run.
    pub fn release(self) -> Result<(), LaunchError> {
        nix::unistd::write(&self.barrier, b"g").map_err(LaunchError::Os)?;
        Ok(())
    }
}

impl Launched {
    /// Lets a command launched with a seccomp filter install it, takes its listener (through
    /// a pidfd, so the command makes no call of its own for the handover), lets `hand_over`
    /// put it in safe hands, and only then lets the command exec. Every call the filter names
    /// from then on, the command's own execve included, goes to the listener.
    pub fn release_filtered(
        mut self,
        hand_over: impl FnOnce(&OwnedFd) -> std::io::Result<()>,
    ) -> Result<OwnedFd, LaunchError> {
        let filter_barrier = self
            .filter_barrier
            .take()
            .ok_or_else(|| LaunchError::Seccomp("launched without a filter".into()))?;
        let pid = self.pid.as_raw() as u32;
        nix::unistd::write(&self.barrier, b"g").map_err(LaunchError::Os)?;
        let listener = take_listener(pid)?;
        // Where the kernel has it, a notification hands the CPU straight to whoever waits
        // on the listener (the watchdog) instead of waking it through the scheduler.
        if let Err(e) = sync_wake_up(&listener) {
            log::debug!("seccomp listener: no synchronous wake-up ({e})");
        }
        hand_over(&listener).map_err(|e| LaunchError::Seccomp(e.to_string()))?;
        nix::unistd::write(&filter_barrier, b"g").map_err(LaunchError::Os)?;
        Ok(listener)
    }
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` (`_IOW('!', 4, __u64)`) and its one flag,
/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (include/uapi/linux/seccomp.h; Linux 6.7+).
pub(crate) const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
pub(crate) const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// Asks the kernel to wake the listener's waiter synchronously, on the CPU of the process
/// that made the call (EINVAL before Linux 6.7).
pub fn sync_wake_up(listener: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: an ioctl on a descriptor we own, with an integer argument.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Finds the seccomp listener among `pid`'s fds and duplicates it with pidfd_getfd.
fn take_listener(pid: u32) -> Result<OwnedFd, LaunchError> {
    use std::os::fd::FromRawFd as _;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let number = loop {
        let found = std::fs::read_dir(&fd_dir).ok().and_then(|entries| {
            entries.filter_map(Result::ok).find_map(|e| {
                let link = std::fs::read_link(e.path()).ok()?;
                (link.as_os_str() == "anon_inode:seccomp notify")
                    .then(|| e.file_name().to_str()?.parse::<i32>().ok())
                    .flatten()
            })
        });
        if let Some(number) = found {
            break number;
        }
        if std::time::Instant::now() > deadline || !fd_dir.exists() {
            return Err(LaunchError::Seccomp(
                "the command exited before installing it (seccomp refused?)".into(),
            ));
        }
        std::thread::yield_now();
    };
    // SAFETY: plain syscalls; the fds they return are owned below.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if pidfd < 0 {
            return Err(LaunchError::Os(nix::Error::last()));
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), number, 0);
        if fd < 0 {
            return Err(LaunchError::Os(nix::Error::last()));
        }
        Ok(OwnedFd::from_raw_fd(fd as i32))
    }
}

/// Finds `program` the way execvp does, to fail with a clear message before anything starts.
pub fn resolve(program: &OsString) -> Result<PathBuf, LaunchError> {
    let path = Path::new(program);
    let executable =
        |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file();
    if program.as_bytes().contains(&b'/') {
        return executable(path)
            .then(|| path.to_path_buf())
            .ok_or_else(|| not_found(program));
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(path))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| not_found(program))
}

fn not_found(program: &OsString) -> LaunchError {
    LaunchError::NotFound(program.to_string_lossy().into_owned())
}

/// Reports, once, when every child of chaos but `except` (the watchdog) is gone: chaos is the
/// subreaper, so the launched command's whole tree is waited for here, in a thread of its own.
pub fn watch_tree(except: Option<Pid>) -> Result<tokio::sync::oneshot::Receiver<()>, LaunchError> {
    let (done, gone) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            while nix::sys::wait::waitpid(Pid::from_raw(-1), None).is_ok() {
                let left = children();
                if left
                    .iter()
                    .all(|&c| Some(Pid::from_raw(c as i32)) == except)
                {
                    break;
                }
            }
            let _ = done.send(());
        })
        .map_err(|e| LaunchError::Os(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
    Ok(gone)
}

/// This process's children (its threads' `children` files).
fn children() -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Makes this process the reaper of its orphaned descendants, so that `wait` tells when the
/// launched command's whole process tree is gone.
pub fn become_subreaper() -> Result<(), LaunchError> {
    prctl::set_child_subreaper(true).map_err(LaunchError::Os)
}

/// Forks `argv`, held before exec until [`Launched::release`]. Call before any thread exists.
pub fn launch(argv: &[OsString]) -> Result<Launched, LaunchError> {
    launch_filtered(argv, None)
}

/// As [`launch`]; with `filter`, the command installs it before exec and waits for
/// [`Launched::release_filtered`].
pub fn launch_filtered(
    argv: &[OsString],
    filter: Option<&crate::inject::seccomp::Filter>,
) -> Result<Launched, LaunchError> {
    let program = resolve(
        argv.first()
            .ok_or_else(|| LaunchError::NotFound(String::new()))?,
    )?;
    let program = CString::new(program.as_os_str().as_bytes()).map_err(|_| LaunchError::Nul)?;
    let args = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| LaunchError::Nul))
        .collect::<Result<Vec<_>, _>>()?;
    let (wait_end, release_end) = pipe().map_err(LaunchError::Os)?;
    // Close-on-exec: the command must not inherit the handover pipe.
    let filter_pipe = filter
        .map(|_| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::Os))
        .transpose()?;
    let fprog = filter.map(|f| libc::sock_fprog {
        len: f.program().len() as u16,
        filter: f.program().as_ptr().cast_mut(),
    });
    // The child waits for the listener handover with a call the filter does not name.
    let wait_with_read = filter.is_some_and(|f| f.nr == syscalls::Sysno::ppoll);
    // SAFETY: chaos has a single thread here (documented precondition); the child only calls
    // async-signal-safe functions on memory prepared above.
    match unsafe { fork() }.map_err(LaunchError::Os)? {
        ForkResult::Child => {
            drop(release_end);
            let mut byte = [0u8; 1];
            // SAFETY: read(2) into a local buffer.
            let n = unsafe { libc::read(wait_end.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
            if n != 1 {
                // chaos gave up before releasing us: run nothing.
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(127) };
            }
            drop(wait_end);
            if let (Some(fprog), Some((wait_filter, _))) = (&fprog, &filter_pipe) {
                // SAFETY: prctl and seccomp(2) on a program that lives in this address space;
                // then a wait on the second barrier.
                unsafe {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                        || libc::syscall(
                            libc::SYS_seccomp,
                            1, // SECCOMP_SET_MODE_FILTER
                            8, // SECCOMP_FILTER_FLAG_NEW_LISTENER
                            fprog as *const libc::sock_fprog,
                        ) < 0
                    {
                        libc::_exit(126);
                    }
                    if wait_with_read {
                        libc::read(wait_filter.as_raw_fd(), byte.as_mut_ptr().cast(), 1);
                    } else {
                        let mut fd = libc::pollfd {
                            fd: wait_filter.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        libc::ppoll(&mut fd, 1, std::ptr::null(), std::ptr::null());
                    }
                }
            }
            let _ = nix::unistd::execv(&program, &args);
            // SAFETY: as above.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(wait_end);
            Ok(Launched {
                pid: child,
                barrier: release_end,
                filter_barrier: filter_pipe.map(|(_, write)| write),
            })
        }
    }
}
