//! A supervisor with a known restart delay, for checking what `chaos measure` reports.
//!
//! `delay-supervisor DELAY_MS CMD [ARGS...]`: runs CMD; whenever it dies, collects it with a
//! blocking wait4 and starts it again exactly DELAY_MS later (CLOCK_MONOTONIC). So the
//! reaped -> forked phase of every episode is DELAY_MS plus the cost of one fork.

use std::ffi::CString;

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
    loop {
        // SAFETY: single-threaded; the child only execs (or exits).
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let _ = execvp(&argv[0], &argv);
                std::process::exit(127);
            }
            ForkResult::Parent { child } => {
                let _ = waitpid(child, None);
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
