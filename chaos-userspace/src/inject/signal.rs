//! Signals sent from userspace through a pidfd: the process is pinned when it is chosen, so a
//! pid reused in between is never hit.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use nix::sys::signal::Signal;

/// A process held by a pidfd, with the start time it had when chosen.
#[derive(Debug)]
pub struct Pinned {
    pub pid: u32,
    pub comm: String,
    fd: OwnedFd,
}

impl Pinned {
    /// Opens a pidfd for `pid` and checks it is still the process that was chosen (same start
    /// time as `start_ticks`, read from /proc before the pidfd existed).
    pub fn open(proc: &Path, pid: u32, comm: &str, start_ticks: u64) -> std::io::Result<Self> {
        // SAFETY: plain syscall; the fd it returns is owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new fd, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if crate::target::proc::start_ticks(proc, pid) != Some(start_ticks) {
            return Err(std::io::Error::other(format!(
                "process {pid} exited and its pid was reused"
            )));
        }
        Ok(Self {
            pid,
            comm: comm.into(),
            fd,
        })
    }

    pub fn send(&self, signal: Signal) -> std::io::Result<()> {
        // SAFETY: plain syscall on our pidfd; no siginfo (the kernel fills SI_USER).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process has exited (its pidfd polls readable).
    pub fn exited(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) > 0 && fds[0].revents & libc::POLLIN != 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_reaches_our_own_child_and_sees_it_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let proc = Path::new("/proc");
        let started = crate::target::proc::start_ticks(proc, pid).unwrap();
        assert!(
            Pinned::open(proc, pid, "sleep", started + 1).is_err(),
            "a different start"
        );
        let pinned = Pinned::open(proc, pid, "sleep", started).unwrap();
        assert!(!pinned.exited());
        pinned.send(Signal::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(pinned.exited());
    }
}
