//! Processes for the integration tests and benchmarks to observe. Each mode does one precise,
//! documented thing so that tests can assert on exactly the events it causes.
//!
//! Modes:
//! - `family DIR`: fork a child that execs /bin/true, wait for it, write and fsync
//!   DIR/family.dat, exit 3.
//! - `pause`: wait until killed.
//! - `segv DIR`: allow core dumps, chdir to DIR, write through a null pointer (SIGSEGV).
//! - `churn N DIR`: fork N children that exit at once (waiting for each), fsync DIR/churn.dat, exit 0.
//! - `on-usr1`: block SIGUSR1 and say `ready` on stdout, wait for SIGUSR1, then fork a child
//!   that exits, wait for it, exit 5.
//! - `unsynced N DIR`: write 4096 bytes to DIR/unsynced.dat and fsync them, then write N more
//!   bytes (in 1000-byte writes) without syncing, exit 0.
//! - `steps KIND ARG`: (SIGUSR1 is handled and survived) one call of KIND per line read on
//!   stdin, each reported on stdout as
//!   `step KIND N ok` or `step KIND N err ENAME`; exits 0 at end of input. KIND: `fsync`
//!   (append a byte to ARG/steps.dat, then fsync), `openat` (open ARG/fileN), `connect` (TCP to
//!   127.0.0.1:ARG), `mkdir` (create ARG/dN), `fsync-abi` (as `fsync`, through the x86-64,
//!   x32 and i386 syscall ABIs in turn: step 1 x86-64, 2 x32, 3 i386, 4 x86-64...),
//!   `open-or-create` (odd steps open ARG/fileN, even steps create ARG/newN: O_CREAT).
//! - `after-usr1 KIND DIR`: block SIGUSR1, say `ready`, wait for it, then make one call of
//!   KIND (`open`, `read`, `write`, `connect`, `fork`, `exec`, `unlink`, `rename`, `mkdir`,
//!   on files under DIR; `connect` to 127.0.0.1:1) and report it as `steps` does.
//! - `repeat getppid N`: N getppid calls; prints `getppid ok=A err=B`.
//! - `ignore-term`: ignore SIGTERM, say `ready`, wait until killed.
//! - `subreaper CMD [ARGS...]`: become a child subreaper, run CMD, and reap every descendant
//!   orphaned on the way (so that nothing a script starts is ever left to pid 1); exit when
//!   none is left, with CMD's status.
//! - `bench getppid N OUT` / `bench fsync N DIR OUT` / `bench fdatasync N DIR OUT` /
//!   `bench forkexec N OUT`: the benchmark workloads; the elapsed CLOCK_MONOTONIC nanoseconds
//!   of the loop are written to OUT.

use std::{
    ffi::CString, fs::OpenOptions, io::Write, os::unix::fs::OpenOptionsExt as _, path::Path,
    time::Instant,
};

use nix::{
    sys::{
        resource::{Resource, setrlimit},
        signal::{SigSet, Signal},
        wait::waitpid,
    },
    unistd::{ForkResult, execv, fork},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    match arg(0) {
        "family" => family(Path::new(arg(1))),
        "pause" => loop {
            nix::unistd::pause();
        },
        "segv" => {
            setrlimit(
                Resource::RLIMIT_CORE,
                libc::RLIM_INFINITY,
                libc::RLIM_INFINITY,
            )
            .expect("setrlimit");
            std::env::set_current_dir(arg(1)).expect("chdir");
            // A real invalid access, not raise(): std's SIGSEGV handler (stack overflow
            // detection) restores the default action and returns, and the access faults again.
            // SAFETY: deliberately invalid; the process dies here.
            unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
            unreachable!("SIGSEGV is fatal");
        }
        "churn" => {
            let n: u32 = arg(1).parse().expect("N");
            for _ in 0..n {
                fork_child(|| 0);
            }
            write_and_sync(&Path::new(arg(2)).join("churn.dat"), b"churn\n");
            std::process::exit(0);
        }
        "on-usr1" => {
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR1);
            set.thread_block().expect("block SIGUSR1");
            // Before this line a SIGUSR1 would kill us (its default action): tests wait for it.
            println!("ready");
            set.wait().expect("sigwait");
            fork_child(|| 0);
            std::process::exit(5);
        }
        "unsynced" => {
            let n: usize = arg(1).parse().expect("N");
            let path = Path::new(arg(2)).join("unsynced.dat");
            write_and_sync(&path, &[b's'; 4096]);
            let mut file = OpenOptions::new().append(true).open(&path).expect("open");
            for chunk in vec![b'u'; n].chunks(1000) {
                file.write_all(chunk).expect("write");
            }
            std::process::exit(0);
        }
        "steps" => steps(arg(1), arg(2)),
        "after-usr1" => {
            let (kind, dir) = (arg(1), Path::new(arg(2)));
            // Prepared before the wait, so the one call after it is the only one that counts.
            std::fs::write(dir.join("present"), b"x").expect("prepare");
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR1);
            set.thread_block().expect("block SIGUSR1");
            println!("ready");
            set.wait().expect("sigwait");
            let result = once(kind, dir);
            report("once", kind, 1, result);
            std::process::exit(0);
        }
        "repeat" => {
            let n: u64 = arg(2).parse().expect("N");
            let (mut ok, mut err) = (0u64, 0u64);
            for _ in 0..n {
                // SAFETY: a raw syscall with no arguments; libc's getppid may be cached.
                if unsafe { libc::syscall(libc::SYS_getppid) } >= 0 {
                    ok += 1;
                } else {
                    err += 1;
                }
            }
            println!("getppid ok={ok} err={err}");
            std::process::exit(0);
        }
        "ignore-term" => {
            // SAFETY: setting a disposition.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            println!("ready");
            loop {
                nix::unistd::pause();
            }
        }
        "subreaper" => subreaper(&args[1..]),
        "bench" => bench(&args[1..]),
        _ => usage(),
    }
}

/// One call of `kind` on files under `dir`.
fn once(kind: &str, dir: &Path) -> std::io::Result<()> {
    use std::io::Read as _;
    let present = dir.join("present");
    match kind {
        "open" => std::fs::File::open(&present).map(drop),
        "read" => {
            let mut file = std::fs::File::open(&present)?;
            let mut buf = [0u8; 1];
            file.read(&mut buf).map(drop)
        }
        "write" => OpenOptions::new()
            .append(true)
            .open(&present)
            .and_then(|mut f| f.write_all(b"y")),
        "connect" => match std::net::TcpStream::connect(("127.0.0.1", 1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            other => other.map(drop),
        },
        "fork" => {
            // SAFETY: the child exits at once.
            match unsafe { libc::fork() } {
                -1 => Err(std::io::Error::last_os_error()),
                0 => unsafe { libc::_exit(0) },
                child => {
                    let _ = waitpid(nix::unistd::Pid::from_raw(child), None);
                    Ok(())
                }
            }
        }
        "exec" => std::process::Command::new("/bin/true").status().map(drop),
        "unlink" => std::fs::remove_file(&present),
        "rename" => std::fs::rename(&present, dir.join("renamed")),
        "mkdir" => std::fs::create_dir(dir.join("made")),
        _ => usage(),
    }
}

fn report(what: &str, kind: &str, n: usize, result: std::io::Result<()>) {
    match result {
        Ok(()) => println!("{what} {kind} {n} ok"),
        Err(e) => println!(
            "{what} {kind} {n} err {:?}",
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
        ),
    }
}

extern "C" fn on_usr1(_: libc::c_int) {}

/// fsync(fd) through ABI `abi`: 1 x86-64, 2 x32 (its number with bit 30 set; a kernel
/// without the x32 ABI answers ENOSYS), 0 i386 (`int 0x80`, number 118).
fn fsync_through(abi: usize, fd: i32) -> std::io::Result<()> {
    let ret: i64 = match abi {
        1 => {
            // SAFETY: fsync on an fd this process owns.
            unsafe { libc::syscall(libc::SYS_fsync, fd) }
        }
        2 => {
            // SAFETY: as above, by the x32 number.
            unsafe { libc::syscall(libc::SYS_fsync | 0x4000_0000, fd) }
        }
        _ => {
            let mut rax: u64 = 118;
            // SAFETY: the i386 fsync through int 0x80 (ebx: the fd). rbx is LLVM's, so it is
            // swapped in and back out; nothing else is touched but rax (the result).
            unsafe {
                std::arch::asm!(
                    "xchg {fd}, rbx",
                    "int 0x80",
                    "xchg {fd}, rbx",
                    fd = inout(reg) u64::from(fd as u32) => _,
                    inout("rax") rax,
                );
            }
            let ret = rax as u32 as i32;
            if ret < 0 {
                return Err(std::io::Error::from_raw_os_error(-ret));
            }
            0
        }
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn steps(kind: &str, arg: &str) -> ! {
    use std::io::BufRead as _;
    // A handler, so that a SIGUSR1 is taken and survived (the signal_deliver proof).
    // SAFETY: installing an async-signal-safe (empty) handler.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let dir = Path::new(arg);
    let mut log = None;
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        if line.is_err() {
            break;
        }
        let n = i + 1;
        let result: std::io::Result<()> = match kind {
            "fsync" | "fsync-abi" => {
                use std::os::fd::AsRawFd as _;
                let file = log.get_or_insert_with(|| {
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.join("steps.dat"))
                        .expect("open steps.dat")
                });
                file.write_all(b"s").and_then(|()| {
                    if kind == "fsync" {
                        file.sync_all()
                    } else {
                        fsync_through(n % 3, file.as_raw_fd())
                    }
                })
            }
            "openat" => std::fs::File::open(dir.join(format!("file{n}"))).map(drop),
            "open-or-create" if n % 2 == 1 => {
                std::fs::File::open(dir.join(format!("file{n}"))).map(drop)
            }
            "open-or-create" => std::fs::File::create(dir.join(format!("new{n}"))).map(drop),
            "connect" => {
                std::net::TcpStream::connect(("127.0.0.1", arg.parse::<u16>().expect("PORT")))
                    .map(drop)
            }
            "mkdir" => std::fs::create_dir(dir.join(format!("d{n}"))),
            _ => usage(),
        };
        report("step", kind, n, result);
    }
    std::process::exit(0)
}

fn subreaper(command: &[String]) -> ! {
    if command.is_empty() {
        usage();
    }
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let child = std::process::Command::new(&command[0])
        .args(&command[1..])
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", command[0]));
    let first = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut code = 0;
    while let Ok(status) = waitpid(None, None) {
        if status.pid() == Some(first) {
            code = match status {
                nix::sys::wait::WaitStatus::Exited(_, c) => c,
                nix::sys::wait::WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
                _ => 0,
            };
        }
    }
    std::process::exit(code)
}

fn usage() -> ! {
    eprintln!(
        "usage: victim family DIR | pause | segv DIR | churn N DIR | on-usr1 | steps KIND ARG | after-usr1 KIND DIR | repeat getppid N | ignore-term | subreaper CMD... | bench ..."
    );
    std::process::exit(64)
}

fn family(dir: &Path) -> ! {
    // SAFETY: single-threaded program.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let path = CString::new("/bin/true").unwrap();
            let _ = execv(&path, &[&path]);
            // SAFETY: exec failed; leave without running the parent's code.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            waitpid(child, None).expect("wait");
        }
    }
    write_and_sync(&dir.join("family.dat"), b"family\n");
    std::process::exit(3)
}

/// Forks a child that returns `f()` as its exit status at once, and waits for it.
fn fork_child(f: impl FnOnce() -> i32) {
    // SAFETY: single-threaded program.
    match unsafe { fork() }.expect("fork") {
        // SAFETY: _exit skips the parent's atexit handlers and buffers.
        ForkResult::Child => unsafe { libc::_exit(f()) },
        ForkResult::Parent { child } => {
            waitpid(child, None).expect("wait");
        }
    }
}

fn write_and_sync(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open");
    file.write_all(bytes).expect("write");
    file.sync_all().expect("fsync");
}

fn bench(args: &[String]) {
    let n: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage());
    let (out, elapsed) = match args.first().map(String::as_str) {
        Some("getppid") => {
            let start = Instant::now();
            for _ in 0..n {
                // SAFETY: no preconditions.
                std::hint::black_box(unsafe { libc::getppid() });
            }
            (&args[2], start.elapsed())
        }
        Some(kind @ ("fsync" | "fdatasync")) => {
            let path = Path::new(&args[2]).join(format!("bench-{kind}.dat"));
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .expect("open");
            let block = [0x5a_u8; 4096];
            let start = Instant::now();
            for _ in 0..n {
                file.write_all(&block).expect("write");
                if kind == "fsync" {
                    file.sync_all().expect("fsync");
                } else {
                    file.sync_data().expect("fdatasync");
                }
            }
            let elapsed = start.elapsed();
            let _ = std::fs::remove_file(&path);
            (&args[3], elapsed)
        }
        Some("forkexec") => {
            let path = CString::new("/bin/true").unwrap();
            let start = Instant::now();
            for _ in 0..n {
                // SAFETY: single-threaded program; the child only execs or _exits.
                match unsafe { fork() }.expect("fork") {
                    ForkResult::Child => {
                        let _ = execv(&path, &[&path]);
                        // SAFETY: exec failed.
                        unsafe { libc::_exit(127) }
                    }
                    ForkResult::Parent { child } => {
                        waitpid(child, None).expect("wait");
                    }
                }
            }
            (&args[2], start.elapsed())
        }
        _ => usage(),
    };
    std::fs::write(out, elapsed.as_nanos().to_string()).expect("write result");
}
