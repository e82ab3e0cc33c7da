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
}

/// A launched command waiting at the barrier. Dropping it without [`Launched::release`] makes the
/// child exit (status 127) without running the command.
#[derive(Debug)]
pub struct Launched {
    pub pid: Pid,
    barrier: OwnedFd,
}

impl Launched {
    /// Lets the command run.
    pub fn release(self) -> Result<(), LaunchError> {
        nix::unistd::write(&self.barrier, b"g").map_err(LaunchError::Os)?;
        Ok(())
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

/// Makes this process the reaper of its orphaned descendants, so that `wait` tells when the
/// launched command's whole process tree is gone.
pub fn become_subreaper() -> Result<(), LaunchError> {
    prctl::set_child_subreaper(true).map_err(LaunchError::Os)
}

/// Forks `argv`, held before exec until [`Launched::release`]. Call before any thread exists.
pub fn launch(argv: &[OsString]) -> Result<Launched, LaunchError> {
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
            let _ = nix::unistd::execv(&program, &args);
            // SAFETY: as above.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(wait_end);
            Ok(Launched {
                pid: child,
                barrier: release_end,
            })
        }
    }
}
