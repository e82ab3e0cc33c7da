//! A prefork server, the shape of nginx or Apache: a master binds 127.0.0.1:PORT, forks
//! worker processes that accept on that socket, and replaces a worker that dies. The tests
//! hit its workers and its master and check what chaos tells of each.
//!
//! `chaos-pool --port PORT [--workers N] [--respawn-ms MS]`
//! - A connection gets `pool PID\n` from the worker that accepted it.
//! - SIGHUP is handled (a "reload" that changes nothing): a fault without effect.
//! - When the master dies its workers live on, holding the port, as nginx's do: the next
//!   master cannot bind and exits 1.
//! - `--respawn-ms` (default 50) is how long the master waits before replacing a worker.

use std::{io::Write as _, net::TcpListener, time::Duration};

use nix::{
    errno::Errno,
    sys::{
        signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction},
        wait::{WaitStatus, waitpid},
    },
    unistd::{ForkResult, Pid, fork},
};

extern "C" fn on_hup(_: libc::c_int) {}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<u64>().unwrap_or_else(|_| usage()))
    };
    let port = flag("--port").unwrap_or_else(|| usage());
    let workers = flag("--workers").unwrap_or(2);
    let respawn = Duration::from_millis(flag("--respawn-ms").unwrap_or(50));
    let listener = match TcpListener::bind(("127.0.0.1", port as u16)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chaos-pool: cannot bind 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    // SAFETY: a handler that does nothing, installed before any thread or child exists.
    unsafe {
        sigaction(
            Signal::SIGHUP,
            &SigAction::new(
                SigHandler::Handler(on_hup),
                SaFlags::empty(),
                SigSet::empty(),
            ),
        )
    }
    .expect("SIGHUP handler");
    for _ in 0..workers {
        spawn(&listener);
    }
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                // The replacement's delay is the subject of the tests, not a wait for something.
                std::thread::sleep(respawn);
                spawn(&listener);
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("chaos-pool: waitpid: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Forks a worker serving `listener` until it is killed.
fn spawn(listener: &TcpListener) {
    // SAFETY: the master is single-threaded; the child only serves and never returns.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let me = std::process::id();
            loop {
                if let Ok((mut conn, _)) = listener.accept() {
                    let _ = writeln!(conn, "pool {me}");
                }
            }
        }
        ForkResult::Parent { .. } => {}
    }
}

fn usage() -> ! {
    eprintln!("usage: chaos-pool --port PORT [--workers N] [--respawn-ms MS]");
    std::process::exit(2);
}
