//! The sample service of `cargo xtask demo`: a supervisor-like parent that forks a worker; the
//! worker appends records to a journal with fsync after each; the parent then stops the worker
//! with SIGTERM, reaps it and exits. Everything it does is visible to `chaos observe`.
//!
//! Usage: `chaos-sample [DIR] [RECORDS]` (defaults: a new directory under /var/tmp, 3 records).

use std::{
    fs::OpenOptions,
    io::{Read as _, Write as _},
    path::PathBuf,
};

use nix::{
    sys::{
        signal::{Signal, kill},
        wait::waitpid,
    },
    unistd::{ForkResult, fork, pause, pipe},
};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        tempfile::Builder::new()
            .prefix("chaos-sample-")
            .tempdir_in("/var/tmp")
            .expect("tempdir")
            .keep()
    });
    let records: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(3);
    let journal = dir.join("journal.log");
    let (ready_read, ready_write) = pipe().expect("pipe");

    // SAFETY: single-threaded program.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(ready_read);
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&journal)
                .expect("open journal");
            for i in 0..records {
                writeln!(file, "record {i}").expect("append");
                file.sync_all().expect("fsync"); // durable before it counts
            }
            // Tell the parent the records are durable, then wait for its signal.
            nix::unistd::write(&ready_write, b"k").expect("notify");
            loop {
                pause();
            }
        }
        ForkResult::Parent { child } => {
            drop(ready_write);
            let mut byte = [0u8; 1];
            std::fs::File::from(ready_read)
                .read_exact(&mut byte)
                .expect("worker ready");
            kill(child, Signal::SIGTERM).expect("stop the worker");
            let status = waitpid(child, None).expect("reap the worker");
            println!(
                "chaos-sample: worker {child} wrote {records} records to {}, ended with {status:?}",
                journal.display()
            );
        }
    }
}
