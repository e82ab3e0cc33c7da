//! A supervisor with a known restart delay, for checking what `chaos measure` reports.
//!
//! `delay-supervisor DELAY_MS CMD [ARGS...]`: runs CMD; whenever it dies, collects it with a
//! blocking wait4 and starts it again exactly DELAY_MS later (CLOCK_MONOTONIC). So the
//! reaped -> forked phase of every episode is DELAY_MS plus the cost of one fork, plus
//! however late the machine runs the sleeper. With `DELAY_SUPERVISOR_LOG=FILE` it appends
//! its own reading of each restart, "REAPED_NS FORKING_NS" (CLOCK_MONOTONIC, just after the
//! wait returned and just before the fork), which the test holds chaos's phase against.

use std::{ffi::CString, io::Write as _};

use nix::{
    sys::{time::TimeSpec, wait::waitpid},
    time::{ClockId, ClockNanosleepFlags, clock_nanosleep},
    unistd::{ForkResult, execvp, fork},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: delay-supervisor DELAY_MS CMD [ARGS...]");
        std::process::exit(2);
    }
    let delay_ms: i64 = args[0].parse().expect("DELAY_MS");
    let argv: Vec<CString> = args[1..]
        .iter()
        .map(|a| CString::new(a.as_str()).expect("no NUL"))
        .collect();
    let delay = TimeSpec::new(delay_ms / 1000, (delay_ms % 1000) * 1_000_000);
    let mut log = std::env::var_os("DELAY_SUPERVISOR_LOG").map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("DELAY_SUPERVISOR_LOG")
    });
    let now = || {
        let t = nix::time::clock_gettime(ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    };
    let mut reaped: Option<u64> = None;
    loop {
        let forking = now();
        // SAFETY: single-threaded; the child only execs (or exits).
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let _ = execvp(&argv[0], &argv);
                std::process::exit(127);
            }
            ForkResult::Parent { child } => {
                if let (Some(log), Some(reaped)) = (log.as_mut(), reaped) {
                    let _ = writeln!(log, "{reaped} {forking}");
                }
                let _ = waitpid(child, None);
                reaped = Some(now());
            }
        }
        // The restart delay under test (not a wait for something: the delay is the subject).
        let _ = clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::empty(),
            &delay,
        );
    }
}
