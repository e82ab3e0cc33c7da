//! The dead-man's switch for faults that would outlive chaos: a small process forked before
//! chaos starts any thread, which
//!
//! - relays seccomp notifications: it holds the listener, hands each notification to chaos
//!   and answers with chaos's verdict. Once chaos is gone (its end of the socket closes,
//!   however it died, SIGKILL included) it answers every notification "continue", so an
//!   intercepted call never fails with ENOSYS because nobody listens any more;
//! - thaws frozen processes: chaos tells it which process it stopped (`--for`); if chaos dies
//!   before sending SIGCONT, the watchdog sends it.
//!
//! It exits when the last process under the filter is gone (the listener reports POLLHUP) and
//! no process is frozen, or at once when it has neither.
//!
//! Protocol (SOCK_SEQPACKET, one message per record): chaos -> watchdog: `L` with the listener
//! fd (SCM_RIGHTS), `F` + pid (frozen), `T` + pid (thawed), `V` + verdict; watchdog -> chaos:
//! the raw `struct seccomp_notif`.

use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use crate::machine::Response;

/// `struct seccomp_notif` (include/uapi/linux/seccomp.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Notif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}
const _: () = assert!(size_of::<Notif>() == 80);

/// `struct seccomp_notif_resp`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

// ioctl numbers: _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp),
// _IOW('!', 2, __u64) (include/uapi/linux/seccomp.h).
const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;
const SECCOMP_IOCTL_NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;
const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;

/// chaos's end of the watchdog.
pub struct Watchdog {
    pub pid: nix::unistd::Pid,
    socket: OwnedFd,
}

impl Watchdog {
    /// Forks the watchdog. Call while chaos has a single thread.
    pub fn spawn() -> std::io::Result<Self> {
        let (mine, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // SAFETY: single-threaded (the documented precondition), so the child may run
        // ordinary code; it never returns into chaos.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                drop(mine);
                // Nothing of chaos's but the socket: above all no eBPF program, link or map
                // fd, which would keep chaos's kernel programs (and their rules) alive after
                // chaos dies, as long as the watchdog serves.
                close_all_but(theirs.as_raw_fd());
                let _ = nix::sys::prctl::set_name(c"chaos-watchdog");
                // Not chaos's signals: a Ctrl-C to the terminal's process group must not take
                // the switch down with chaos.
                let _ = nix::unistd::setsid();
                let code = run(theirs);
                // SAFETY: leave without running chaos's exit handlers.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(theirs);
                Ok(Self {
                    pid: child,
                    socket: mine,
                })
            }
        }
    }

    /// Hands over the seccomp listener.
    pub fn give_listener(&self, listener: &OwnedFd) -> std::io::Result<()> {
        let fds = [listener.as_raw_fd()];
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(b"L")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )?;
        Ok(())
    }

    pub fn frozen(&self, pid: u32) -> std::io::Result<()> {
        self.send(b'F', &pid.to_ne_bytes())
    }

    pub fn thawed(&self, pid: u32) -> std::io::Result<()> {
        self.send(b'T', &pid.to_ne_bytes())
    }

    pub fn respond(&self, id: u64, verdict: Response) -> std::io::Result<()> {
        let mut body = [0u8; 12];
        body[..8].copy_from_slice(&id.to_ne_bytes());
        let error = match verdict {
            Response::Continue => 0,
            Response::Fail(errno) => errno,
        };
        body[8..].copy_from_slice(&error.to_ne_bytes());
        self.send(b'V', &body)
    }

    fn send(&self, tag: u8, body: &[u8]) -> std::io::Result<()> {
        let mut message = Vec::with_capacity(1 + body.len());
        message.push(tag);
        message.extend_from_slice(body);
        nix::sys::socket::send(self.socket.as_raw_fd(), &message, MsgFlags::empty())?;
        Ok(())
    }

    /// The socket notifications arrive on (readable when one is waiting).
    pub fn socket(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Reads one notification (call when the socket is readable). None: the watchdog is gone.
    pub fn next_notif(&self) -> std::io::Result<Option<Notif>> {
        let mut notif = Notif::default();
        // SAFETY: Notif is plain data; recv writes at most its size.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut((&raw mut notif).cast::<u8>(), size_of::<Notif>())
        };
        match nix::sys::socket::recv(self.socket.as_raw_fd(), bytes, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(notif)),
            Err(nix::errno::Errno::EAGAIN) => Err(std::io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Closes every fd from 3 up except `keep` (close_range(2), Linux 5.9).
fn close_all_but(keep: RawFd) {
    let close = |first: RawFd, last: RawFd| {
        if first <= last {
            // SAFETY: plain syscall; closing fds this process owns and will not use.
            unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
        }
    };
    close(3, keep - 1);
    close(keep + 1, RawFd::MAX);
}

/// What the watchdog holds.
#[derive(Default)]
struct State {
    listener: Option<OwnedFd>,
    frozen: Vec<(u32, OwnedFd)>,
    chaos_alive: bool,
}

impl State {
    /// Applies a message from chaos; returns a verdict if it was one.
    fn apply(&mut self, message: Message) -> Option<(u64, Response)> {
        match message {
            Message::Listener(fd) => self.listener = Some(fd),
            Message::Frozen(pid) => {
                if let Some(fd) = pidfd_open(pid) {
                    self.frozen.push((pid, fd));
                }
            }
            Message::Thawed(pid) => self.frozen.retain(|(p, _)| *p != pid),
            Message::Verdict(id, verdict) => return Some((id, verdict)),
            Message::Nothing => {}
            Message::Closed => self.chaos_alive = false,
        }
        None
    }
}

/// The watchdog's life. Returns its exit code.
fn run(socket: OwnedFd) -> i32 {
    let mut state = State {
        chaos_alive: true,
        ..State::default()
    };
    while state.chaos_alive {
        let mut fds = vec![libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(l) = &state.listener {
            fds.push(libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: valid pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, -1) } < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let message = read_message(&socket);
            state.apply(message);
            continue;
        }
        if fds.get(1).is_some_and(|f| f.revents & libc::POLLHUP != 0) {
            // The last filtered process is gone.
            state.listener = None;
            if state.frozen.is_empty() {
                return 0;
            }
            continue;
        }
        let Some(notif) = state.listener.as_ref().and_then(receive) else {
            continue;
        };
        // SAFETY: Notif is plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const notif).cast::<u8>(), size_of::<Notif>())
        };
        let mut verdict = Response::Continue;
        if nix::sys::socket::send(socket.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL).is_ok() {
            while state.chaos_alive {
                let message = read_message(&socket);
                if let Some((id, v)) = state.apply(message)
                    && id == notif.id
                {
                    verdict = v;
                    break;
                }
            }
        } else {
            state.chaos_alive = false;
        }
        if let Some(l) = &state.listener {
            respond(l, notif.id, verdict);
        }
    }
    // chaos is gone: thaw what it froze, then serve the filter alone.
    for (_, pidfd) in state.frozen.drain(..) {
        pidfd_signal(&pidfd, libc::SIGCONT);
    }
    if let Some(listener) = state.listener.take() {
        serve_alone(&listener);
    }
    0
}

enum Message {
    Listener(OwnedFd),
    Frozen(u32),
    Thawed(u32),
    Verdict(u64, Response),
    Nothing,
    Closed,
}

fn read_message(socket: &OwnedFd) -> Message {
    let mut buf = [0u8; 16];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let Ok(msg) = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    ) else {
        return Message::Closed;
    };
    let len = msg.bytes;
    let mut passed = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: fds just received, owned by us.
                passed = fds.first().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if len == 0 {
        return Message::Closed;
    }
    let u32_at = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().unwrap());
    match buf[0] {
        b'L' => passed.map_or(Message::Nothing, Message::Listener),
        b'F' if len >= 5 => Message::Frozen(u32_at(1)),
        b'T' if len >= 5 => Message::Thawed(u32_at(1)),
        b'V' if len >= 13 => {
            let id = u64::from_ne_bytes(buf[1..9].try_into().unwrap());
            let error = i32::from_ne_bytes(buf[9..13].try_into().unwrap());
            let verdict = if error == 0 {
                Response::Continue
            } else {
                Response::Fail(error)
            };
            Message::Verdict(id, verdict)
        }
        _ => Message::Nothing,
    }
}

/// chaos is gone: every notification continues, until no filtered process is left.
fn serve_alone(listener: &OwnedFd) {
    loop {
        let mut fd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut fd, 1, -1) } < 0 {
            continue;
        }
        if fd.revents & libc::POLLHUP != 0 {
            return;
        }
        if let Some(notif) = receive(listener) {
            respond(listener, notif.id, Response::Continue);
        }
    }
}

fn receive(listener: &OwnedFd) -> Option<Notif> {
    let mut notif = Notif::default();
    // SAFETY: the ioctl fills a zeroed struct seccomp_notif of the kernel's size (80 bytes on
    // every kernel chaos supports; doctor checks SECCOMP_GET_NOTIF_SIZES).
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            SECCOMP_IOCTL_NOTIF_RECV,
            &raw mut notif,
        )
    };
    (rc == 0).then_some(notif)
}

fn respond(listener: &OwnedFd, id: u64, verdict: Response) {
    let resp = match verdict {
        Response::Continue => NotifResp {
            id,
            val: 0,
            error: 0,
            flags: SECCOMP_USER_NOTIF_FLAG_CONTINUE,
        },
        Response::Fail(errno) => NotifResp {
            id,
            val: 0,
            error: -errno,
            flags: 0,
        },
    };
    // SAFETY: a valid response struct; a notification whose task died meanwhile gives ENOENT,
    // which is fine.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            SECCOMP_IOCTL_NOTIF_SEND,
            &raw const resp,
        )
    };
}

/// Whether a notification is still pending (its task has not died or been interrupted).
pub fn id_valid(listener: RawFd, id: u64) -> bool {
    // SAFETY: reads the id.
    unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &raw const id) == 0 }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a new fd, ours.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_signal(fd: &OwnedFd, signal: i32) {
    // SAFETY: plain syscall on our pidfd.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}
