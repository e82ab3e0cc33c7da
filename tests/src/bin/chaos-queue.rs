//! The sample service for recovery measurement: a tiny durable queue.
//!
//! `chaos-queue serve --dir DIR --port PORT [--interval-ms N] [--notify-fd FD] [--acked FILE]
//!  [--ack-before-sync]`
//!   On start it recovers: reads `DIR/queue.log`, keeps the complete, valid records and cuts a
//!   torn tail. Then it listens on 127.0.0.1:PORT (that is "ready"; under systemd's Type=notify
//!   it sends READY=1 to $NOTIFY_SOCKET; with --notify-fd it also
//!   writes a newline to FD, s6's readiness notification). Every N ms (default 10) it appends a
//!   record, fdatasyncs the log, and only then acknowledges it by writing its sequence number
//!   to `DIR/acked` (fdatasync'd too). A connection gets `records N` and is closed.
//!   `--acked FILE` keeps the acknowledgements elsewhere: what the clients were told, off the
//!   disk under test. `--ack-before-sync` is the bug a power cut finds and a kill does not:
//!   each record is acknowledged as soon as it is written (the acknowledgement not synced),
//!   and the log is fdatasync'd only every 50 records.
//!   On start, a log holding fewer records than were acknowledged is a loss: it is appended
//!   to `ACKED.lost` before the queue goes on (the acknowledgement never goes back), so a
//!   record written again later does not hide it.
//! `chaos-queue verify --dir DIR [--acked FILE]`
//!   Exits 0 when every acknowledged record is in the log, intact and in order, and no loss
//!   was recorded; else prints what is missing and exits 1.
//!
//! Records are 32 bytes: `seq` (u64 LE), `seq ^ SALT` (u64 LE) and 16 bytes of padding ending in
//! a newline, so a torn or stray write is detected.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    net::TcpListener,
    os::{
        fd::{AsFd as _, FromRawFd as _},
        unix::fs::FileExt as _,
    },
    path::{Path, PathBuf},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

const RECORD: usize = 32;
const SALT: u64 = 0x5eed_c0de_d00d_f00d;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let dir = PathBuf::from(flag("--dir").unwrap_or_else(|| usage()));
    let acked = flag("--acked").map_or_else(|| dir.join("acked"), PathBuf::from);
    match args.first().map(String::as_str) {
        Some("serve") => {
            let port: u16 = flag("--port")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| usage());
            let interval: i32 =
                flag("--interval-ms").map_or(10, |n| n.parse().unwrap_or_else(|_| usage()));
            let notify = flag("--notify-fd").map(|n| n.parse::<i32>().unwrap_or_else(|_| usage()));
            let ack_first = args.iter().any(|a| a == "--ack-before-sync");
            serve(&dir, &acked, port, interval, notify, ack_first);
        }
        Some("verify") => std::process::exit(verify(&dir, &acked)),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: chaos-queue serve --dir DIR --port PORT [--interval-ms N] [--notify-fd FD] [--acked FILE] [--ack-before-sync]"
    );
    eprintln!("       chaos-queue verify --dir DIR [--acked FILE]");
    std::process::exit(2);
}

fn record(seq: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    r[8..16].copy_from_slice(&(seq ^ SALT).to_le_bytes());
    r[RECORD - 1] = b'\n';
    r
}

/// The valid records at the head of the log: their count.
fn valid_records(bytes: &[u8]) -> u64 {
    let mut count = 0;
    for chunk in bytes.chunks_exact(RECORD) {
        if chunk != record(count) {
            break;
        }
        count += 1;
    }
    count
}

/// How many records the log holds between two fdatasyncs with `--ack-before-sync`.
const SYNC_EVERY: u64 = 50;

fn lost_file(acked: &Path) -> PathBuf {
    let mut name = acked.as_os_str().to_owned();
    name.push(".lost");
    PathBuf::from(name)
}

fn read_acked(acked: &Path) -> u64 {
    std::fs::read(acked)
        .ok()
        .and_then(|b| {
            b.get(..8)
                .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
        })
        .unwrap_or(0)
}

/// Under systemd with Type=notify: `READY=1` to `$NOTIFY_SOCKET` (a path, or `@` and an
/// abstract name), sd_notify(3)'s protocol.
fn notify_systemd() {
    use std::os::{linux::net::SocketAddrExt as _, unix::net::UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()),
        None => std::os::unix::net::SocketAddr::from_pathname(&path),
    };
    let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(b"READY=1", &addr?));
    if let Err(e) = sent {
        eprintln!("chaos-queue: cannot notify systemd at {path}: {e}");
    }
}

fn serve(
    dir: &Path,
    acked_path: &Path,
    port: u16,
    interval_ms: i32,
    notify: Option<i32>,
    ack_first: bool,
) {
    std::fs::create_dir_all(dir).expect("create the queue directory");
    let mut log = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(dir.join("queue.log"))
        .expect("open queue.log");
    let mut bytes = Vec::new();
    log.read_to_end(&mut bytes).expect("read queue.log");
    let mut next = valid_records(&bytes);
    // Recovery: cut whatever follows the last valid record (a torn write).
    log.set_len(next * RECORD as u64)
        .expect("truncate the torn tail");
    log.seek(SeekFrom::End(0)).expect("seek");
    let told = read_acked(acked_path);
    if next < told {
        let mut lost = OpenOptions::new()
            .create(true)
            .append(true)
            .open(lost_file(acked_path))
            .expect("open the loss record");
        writeln!(
            lost,
            "lost {} acknowledged records: {told} acknowledged, {next} recovered",
            told - next
        )
        .expect("record the loss");
        lost.sync_data().expect("fdatasync the loss record");
    }
    let acked = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(acked_path)
        .expect("open acked");

    let listener = TcpListener::bind(("127.0.0.1", port)).expect("listen");
    if let Some(fd) = notify {
        // SAFETY: the supervisor handed us this fd for exactly this use.
        let mut pipe = unsafe { File::from_raw_fd(fd) };
        let _ = pipe.write_all(b"\n");
    }
    notify_systemd();
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let ready = poll(
            &mut fds,
            PollTimeout::try_from(interval_ms).unwrap_or(PollTimeout::MAX),
        )
        .unwrap_or(0);
        if ready > 0 {
            if let Ok((mut conn, _)) = listener.accept() {
                let _ = writeln!(conn, "records {next}");
            }
            continue;
        }
        log.write_all(&record(next)).expect("append");
        if !ack_first {
            log.sync_data().expect("fdatasync the log");
        }
        next += 1;
        // An acknowledgement never goes back: after a loss the queue refills the log up
        // to what it had told before acknowledging further.
        if next > told {
            acked
                .write_all_at(&next.to_le_bytes(), 0)
                .expect("acknowledge");
            if !ack_first {
                acked.sync_data().expect("fdatasync acked");
            }
        }
        if ack_first && next.is_multiple_of(SYNC_EVERY) {
            log.sync_data().expect("fdatasync the log");
        }
    }
}

fn verify(dir: &Path, acked_path: &Path) -> i32 {
    let lost = std::fs::read_to_string(lost_file(acked_path)).unwrap_or_default();
    if !lost.is_empty() {
        print!("LOST (recorded at restarts):\n{lost}");
        return 1;
    }
    // The acknowledgement first: whatever it names was synced to the log before it was
    // written, so a queue still running while this reads cannot make it report a loss.
    let acked = read_acked(acked_path);
    let bytes = std::fs::read(dir.join("queue.log")).unwrap_or_default();
    let valid = valid_records(&bytes);
    if valid >= acked {
        println!("ok: {acked} acknowledged, {valid} intact records");
        0
    } else {
        println!("LOST: {acked} acknowledged but only {valid} intact records");
        1
    }
}
