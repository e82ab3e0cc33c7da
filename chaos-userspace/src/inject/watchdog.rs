//! The dead-man's switch for faults that would outlive chaos: a small process forked before
//! chaos starts any thread, which
//!
//! - decides seccomp notifications: it holds the listener and decides each call itself, with
//!   the rule chaos sent and the same pure [`Decider`] a dry run plays. A call it lets pass
//!   is answered "continue" at once (one hop: kernel -> watchdog -> kernel), and counted; chaos
//!   learns the counts per process in batches. Only a call it decided to hit waits for chaos,
//!   which writes the audit entry durably and answers. Once chaos is gone (its end of the
//!   socket closes, however it died, SIGKILL included) it answers every notification
//!   "continue", so an intercepted call never fails with ENOSYS because nobody listens any
//!   more;
//! - thaws frozen processes: chaos tells it which process it stopped (`--for`); if chaos dies
//!   before sending SIGCONT, the watchdog sends it;
//! - tears a power-loss disk down (`crate::power::Disk::teardown`): chaos tells it the disk
//!   once it is set up; if chaos dies before its own teardown, the watchdog runs it.
//!
//! It exits when the last process under the filter is gone (the listener reports POLLHUP) and
//! no process is frozen, or at once when it has neither.
//!
//! Protocol (SOCK_SEQPACKET, one message per record, native byte order). chaos -> watchdog:
//! `L` with the listener fd (SCM_RIGHTS), `R` + the rule as JSON ([`Deciding`]), `D` (stop
//! deciding: flush the counts, answer `S`), `X` + pid (a process exited: its counts start
//! over), `F` + pid (frozen), `T` + pid (thawed), `V` + id + errno (the verdict on a hit),
//! `M` + the disk as JSON (a power-loss disk is set up), `U` (it is torn down).
//! watchdog -> chaos: `N` + the raw `struct seccomp_notif` + tgid + nth + the path argument
//! (a hit), `P` + (tgid, calls) pairs (calls let pass since the last batch), `S` (stopped
//! deciding; every batch went before it).
//!
//! One file, one concern: both ends of one protocol (chaos's handle and the watchdog's loop),
//! so that each message is encoded and decoded side by side, which is why it stays one file
//! past 700 lines (what a message asks for is done elsewhere: the decisions by
//! `seccomp::Decider`, the disk's teardown by `crate::power`); its tests are in
//! `watchdog/tests.rs`.

use std::{
    collections::{BTreeMap, HashMap},
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
    time::{Duration, Instant},
};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use super::seccomp::{Decider, Rule, read_path};
use crate::{machine::Response, target::proc::tgid_of};

/// How often the watchdog sends chaos the counts of the calls it let pass.
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// How long a thread's process id, read from /proc, is trusted before it is read again (a
/// thread id can come back as another process's only after the pid space wraps).
const TGID_FRESH: Duration = Duration::from_secs(1);
/// (tgid, calls) pairs in one batch message.
const BATCH_PAIRS: usize = 512;
/// The largest message chaos sends (a rule with a path prefix of up to PATH_MAX).
const MAX_MESSAGE: usize = 8192;

/// What chaos tells the watchdog to decide with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Deciding {
    pub rule: Rule,
    /// Which argument of the syscall is its path (for a rule with a path prefix).
    pub path_arg: Option<usize>,
}

/// What the watchdog tells chaos.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWatchdog {
    /// A call the watchdog decided to hit (the `nth` candidate call of process `tgid`): it
    /// waits for chaos's verdict.
    Hit {
        notif: Notif,
        tgid: u32,
        nth: u32,
        path: Option<String>,
    },
    /// Calls let pass since the last batch, per process: (tgid, calls).
    Passed(Vec<(u32, u32)>),
    /// It stopped deciding, after sending every batch.
    Stopped,
}

/// `struct seccomp_notif` (include/uapi/linux/seccomp.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

    /// From now on the watchdog decides each call with `deciding`. Send before the filtered
    /// command runs.
    pub fn decide(&self, deciding: &Deciding) -> std::io::Result<()> {
        let json = serde_json::to_vec(deciding)?;
        if json.len() + 1 > MAX_MESSAGE {
            return Err(std::io::Error::other(
                "the seccomp rule is too long to send",
            ));
        }
        self.send(b'R', &json)
    }

    /// No more faults: the watchdog lets every call pass, sends its last batch and
    /// [`FromWatchdog::Stopped`].
    pub fn stop_deciding(&self) -> std::io::Result<()> {
        self.send(b'D', &[])
    }

    /// Process `pid` exited: its calls are counted afresh if the pid comes back.
    pub fn exited(&self, pid: u32) -> std::io::Result<()> {
        self.send(b'X', &pid.to_ne_bytes())
    }

    pub fn frozen(&self, pid: u32) -> std::io::Result<()> {
        self.send(b'F', &pid.to_ne_bytes())
    }

    pub fn thawed(&self, pid: u32) -> std::io::Result<()> {
        self.send(b'T', &pid.to_ne_bytes())
    }

    /// A power-loss disk is set up: the watchdog tears it down if chaos dies first.
    pub fn disk(&self, disk: &crate::power::Disk) -> std::io::Result<()> {
        let json = serde_json::to_vec(disk)?;
        if json.len() + 1 > MAX_MESSAGE {
            return Err(std::io::Error::other(
                "the power-loss disk's paths are too long to send",
            ));
        }
        self.send(b'M', &json)
    }

    /// chaos tore the disk down itself.
    pub fn disk_gone(&self) -> std::io::Result<()> {
        self.send(b'U', &[])
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

    /// Reads one message (call when the socket is readable). None: the watchdog is gone.
    pub fn next_message(&self) -> std::io::Result<Option<FromWatchdog>> {
        let mut buf = vec![0u8; HIT_HEADER + libc::PATH_MAX as usize + 1];
        let len =
            match nix::sys::socket::recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
            {
                Ok(0) => return Ok(None),
                // It exited (its last filtered process gone) before reading what chaos sent
                // last: the kernel reports that once, before what it sent is read.
                Err(nix::errno::Errno::ECONNRESET) => return self.next_message(),
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => return Err(std::io::ErrorKind::WouldBlock.into()),
                Err(e) => return Err(e.into()),
            };
        parse_from_watchdog(&buf[..len])
            .map(Some)
            .ok_or_else(|| std::io::Error::other("a malformed message from the watchdog"))
    }
}

/// `N`, the notification, tgid and nth: what precedes a hit's path.
const HIT_HEADER: usize = 1 + size_of::<Notif>() + 8;

fn encode_hit(notif: &Notif, tgid: u32, nth: u32, path: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HIT_HEADER + path.map_or(0, str::len));
    out.push(b'N');
    // SAFETY: Notif is plain data.
    out.extend_from_slice(unsafe {
        std::slice::from_raw_parts((&raw const *notif).cast::<u8>(), size_of::<Notif>())
    });
    out.extend_from_slice(&tgid.to_ne_bytes());
    out.extend_from_slice(&nth.to_ne_bytes());
    if let Some(p) = path {
        out.extend_from_slice(p.as_bytes());
    }
    out
}

fn parse_from_watchdog(m: &[u8]) -> Option<FromWatchdog> {
    let u32_at = |i: usize| Some(u32::from_ne_bytes(m.get(i..i + 4)?.try_into().ok()?));
    match *m.first()? {
        b'N' if m.len() >= HIT_HEADER => {
            let mut notif = Notif::default();
            // SAFETY: Notif is plain data of exactly this many bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    m[1..].as_ptr(),
                    (&raw mut notif).cast::<u8>(),
                    size_of::<Notif>(),
                );
            }
            let at = 1 + size_of::<Notif>();
            let rest = &m[HIT_HEADER..];
            Some(FromWatchdog::Hit {
                notif,
                tgid: u32_at(at)?,
                nth: u32_at(at + 4)?,
                // The path only travels for a rule with a path prefix, which it matched.
                path: (!rest.is_empty()).then(|| String::from_utf8_lossy(rest).into_owned()),
            })
        }
        b'P' if (m.len() - 1).is_multiple_of(8) => Some(FromWatchdog::Passed(
            (1..m.len())
                .step_by(8)
                .map(|i| Some((u32_at(i)?, u32_at(i + 4)?)))
                .collect::<Option<_>>()?,
        )),
        b'S' if m.len() == 1 => Some(FromWatchdog::Stopped),
        _ => None,
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

/// The rule the watchdog decides with, and the per-process counts behind it.
struct Judge {
    deciding: Deciding,
    decider: Decider,
    since: Instant,
}

/// What the watchdog holds.
struct State {
    listener: Option<OwnedFd>,
    frozen: Vec<(u32, OwnedFd)>,
    disk: Option<crate::power::Disk>,
    chaos_alive: bool,
    judge: Option<Judge>,
    /// Thread id -> (process id, when /proc said so).
    tgids: HashMap<u32, (u32, Instant)>,
    /// Calls let pass since the last batch, per process.
    passed: BTreeMap<u32, u32>,
    batched: Instant,
}

impl State {
    fn new() -> Self {
        Self {
            listener: None,
            frozen: Vec::new(),
            disk: None,
            chaos_alive: true,
            judge: None,
            tgids: HashMap::new(),
            passed: BTreeMap::new(),
            batched: Instant::now(),
        }
    }

    /// Applies a message from chaos; returns a verdict if it was one.
    fn apply(&mut self, message: Message, socket: &OwnedFd) -> Option<(u64, Response)> {
        match message {
            Message::Listener(fd) if self.listener.is_none() => self.listener = Some(fd),
            Message::Listener(_) => {}
            Message::Decide(deciding) => {
                self.judge = Some(Judge {
                    deciding,
                    decider: Decider::default(),
                    since: Instant::now(),
                });
            }
            Message::StopDeciding => {
                self.judge = None;
                self.send_batch(socket);
                self.tell(socket, b"S");
            }
            Message::Exited(pid) => {
                if let Some(j) = &mut self.judge {
                    j.decider.forget(pid);
                }
                self.tgids
                    .retain(|tid, (tgid, _)| *tid != pid && *tgid != pid);
            }
            Message::Frozen(pid) => {
                if let Some(fd) = pidfd_open(pid) {
                    self.frozen.push((pid, fd));
                }
            }
            Message::Thawed(pid) => self.frozen.retain(|(p, _)| *p != pid),
            Message::Disk(disk) => self.disk = Some(*disk),
            Message::DiskGone => self.disk = None,
            Message::Verdict(id, verdict) => return Some((id, verdict)),
            Message::Nothing => {}
            Message::Closed => self.chaos_alive = false,
        }
        None
    }

    /// Sends chaos a message; a failure means chaos is gone.
    fn tell(&mut self, socket: &OwnedFd, message: &[u8]) {
        if self.chaos_alive
            && nix::sys::socket::send(socket.as_raw_fd(), message, MsgFlags::MSG_NOSIGNAL).is_err()
        {
            self.chaos_alive = false;
        }
    }

    /// Sends the counts of the calls let pass since the last batch.
    fn send_batch(&mut self, socket: &OwnedFd) {
        self.batched = Instant::now();
        let passed = std::mem::take(&mut self.passed);
        let pairs: Vec<(u32, u32)> = passed.into_iter().collect();
        for chunk in pairs.chunks(BATCH_PAIRS) {
            let mut message = Vec::with_capacity(1 + chunk.len() * 8);
            message.push(b'P');
            for (tgid, calls) in chunk {
                message.extend_from_slice(&tgid.to_ne_bytes());
                message.extend_from_slice(&calls.to_ne_bytes());
            }
            self.tell(socket, &message);
        }
    }

    /// How long poll may wait before the next batch is due.
    fn batch_due_in(&self) -> i32 {
        if self.passed.is_empty() {
            -1
        } else {
            BATCH_EVERY
                .saturating_sub(self.batched.elapsed())
                .as_millis() as i32
        }
    }

    /// The process of thread `tid`, from /proc, trusted for [`TGID_FRESH`].
    fn tgid(&mut self, tid: u32) -> u32 {
        let now = Instant::now();
        match self.tgids.get(&tid) {
            Some(&(tgid, read)) if now.duration_since(read) < TGID_FRESH => tgid,
            _ => {
                let tgid = tgid_of(Path::new("/proc"), tid).unwrap_or(tid);
                self.tgids.insert(tid, (tgid, now));
                tgid
            }
        }
    }

    /// Decides a call.
    fn judge(&mut self, notif: &Notif) -> Judged {
        if self.judge.is_none() {
            return Judged::Pass { counted: None };
        }
        let tgid = self.tgid(notif.pid);
        let Some(judge) = self.judge.as_mut() else {
            return Judged::Pass { counted: None };
        };
        let path = match (&judge.deciding.rule.path, judge.deciding.path_arg) {
            (Some(_), Some(i)) => read_path(Path::new("/proc"), notif.pid, notif.args[i]),
            _ => None,
        };
        let decision = judge.decider.decide(
            &judge.deciding.rule,
            tgid,
            path.as_deref(),
            judge.since.elapsed(),
        );
        match decision.nth {
            Some(nth) if decision.hit => Judged::Hit { tgid, nth, path },
            Some(_) => {
                *self.passed.entry(tgid).or_insert(0) += 1;
                Judged::Pass {
                    counted: Some(tgid),
                }
            }
            None => Judged::Pass { counted: None },
        }
    }

    /// A hit on `tgid` never ran: its call, and the limits it used, are given back.
    fn unhit(&mut self, tgid: u32) {
        if let Some(j) = &mut self.judge {
            j.decider.undo_hit(tgid);
        }
    }

    /// A passed call of `tgid` never ran: the kernel no longer had its notification when
    /// the answer came (its caller was interrupted, and will make the call again, or died).
    fn unpass(&mut self, tgid: u32) {
        if let Some(j) = &mut self.judge {
            j.decider.undo(tgid);
        }
        if let Some(n) = self.passed.get_mut(&tgid) {
            *n -= 1;
            if *n == 0 {
                self.passed.remove(&tgid);
            }
        }
    }
}

/// What the watchdog decided of a call.
#[derive(Debug, PartialEq, Eq)]
enum Judged {
    /// It continues; `counted`: the process whose candidate calls it was counted among.
    Pass { counted: Option<u32> },
    /// chaos answers it: the `nth` candidate call of `tgid`.
    Hit {
        tgid: u32,
        nth: u32,
        path: Option<String>,
    },
}

/// The watchdog's life. Returns its exit code.
fn run(socket: OwnedFd) -> i32 {
    let mut state = State::new();
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
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, state.batch_due_in()) };
        if ready < 0 {
            continue;
        }
        if ready == 0 || state.batched.elapsed() >= BATCH_EVERY && !state.passed.is_empty() {
            state.send_batch(&socket);
        }
        if fds[0].revents != 0 {
            let message = read_message(&socket);
            state.apply(message, &socket);
            continue;
        }
        if fds.get(1).is_some_and(|f| f.revents & libc::POLLHUP != 0) {
            // The last filtered process is gone.
            state.listener = None;
            state.send_batch(&socket);
            if state.frozen.is_empty() && state.disk.is_none() {
                return 0;
            }
            continue;
        }
        // Only a listener poll said readable: RECV blocks until a call comes, and the
        // watchdog must keep reading chaos's socket (a batch timeout, a freeze, chaos's end).
        let readable = fds.get(1).is_some_and(|f| f.revents & libc::POLLIN != 0);
        let Some(listener) = state.listener.as_ref().map(|l| l.as_raw_fd()) else {
            continue;
        };
        if !readable {
            continue;
        }
        let Some(notif) = receive(listener) else {
            continue;
        };
        let (tgid, nth, path) = match state.judge(&notif) {
            Judged::Hit { tgid, nth, path } => (tgid, nth, path),
            Judged::Pass { counted } => {
                if !respond(listener, notif.id, Response::Continue)
                    && let Some(tgid) = counted
                {
                    state.unpass(tgid);
                }
                continue;
            }
        };
        // A hit: chaos records it before the call returns.
        state.send_batch(&socket);
        state.tell(&socket, &encode_hit(&notif, tgid, nth, path.as_deref()));
        let mut verdict = Response::Continue;
        while state.chaos_alive {
            let message = read_message(&socket);
            if let Some((id, v)) = state.apply(message, &socket)
                && id == notif.id
            {
                verdict = v;
                break;
            }
        }
        if state.listener.is_some() && !respond(listener, notif.id, verdict) {
            // The caller was interrupted (it will make the call again) or died: the hit
            // never happened.
            state.unhit(tgid);
        }
    }
    // chaos is gone: thaw what it froze, tear its disk down, then serve the filter alone.
    for (_, pidfd) in state.frozen.drain(..) {
        pidfd_signal(&pidfd, libc::SIGCONT);
    }
    if let Some(disk) = state.disk.take() {
        for problem in disk.teardown() {
            eprintln!("chaos-watchdog: power-loss teardown: {problem}");
        }
    }
    if let Some(listener) = state.listener.take() {
        serve_alone(&listener);
    }
    0
}

enum Message {
    Listener(OwnedFd),
    Decide(Deciding),
    StopDeciding,
    Exited(u32),
    Frozen(u32),
    Thawed(u32),
    Disk(Box<crate::power::Disk>),
    DiskGone,
    Verdict(u64, Response),
    Nothing,
    Closed,
}

fn read_message(socket: &OwnedFd) -> Message {
    let mut buf = vec![0u8; MAX_MESSAGE];
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
        b'R' => serde_json::from_slice(&buf[1..len]).map_or(Message::Nothing, Message::Decide),
        b'D' => Message::StopDeciding,
        b'X' if len >= 5 => Message::Exited(u32_at(1)),
        b'F' if len >= 5 => Message::Frozen(u32_at(1)),
        b'T' if len >= 5 => Message::Thawed(u32_at(1)),
        b'M' => serde_json::from_slice(&buf[1..len])
            .map_or(Message::Nothing, |d| Message::Disk(Box::new(d))),
        b'U' => Message::DiskGone,
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
        if let Some(notif) = receive(listener.as_raw_fd()) {
            respond(listener.as_raw_fd(), notif.id, Response::Continue);
        }
    }
}

fn receive(listener: RawFd) -> Option<Notif> {
    let mut notif = Notif::default();
    // SAFETY: the ioctl fills a zeroed struct seccomp_notif of the kernel's size (80 bytes on
    // every kernel chaos supports; doctor checks SECCOMP_GET_NOTIF_SIZES).
    let rc = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &raw mut notif) };
    (rc == 0).then_some(notif)
}

/// Answers a notification; false when the kernel no longer has it (ENOENT: its caller was
/// interrupted or died, so the call did not run).
fn respond(listener: RawFd, id: u64, verdict: Response) -> bool {
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
    // SAFETY: a valid response struct.
    unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &raw const resp) == 0 }
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

#[cfg(test)]
mod tests;
