//! Fault injection: what may be hit (the denylist), the names users give (signals, syscalls,
//! errnos, durations), seeded choices, and the record of each fault and its proof.
//!
//! Every fault is aimed at a target chaos resolved and checked; the kernel programs check the
//! target map again (deny-by-default) and the denylist maps, so a process that joins the set
//! later (a `--comm` match, a child) is held to the same rules.

pub mod denylist;
pub mod driver;
pub mod names;
pub mod plan;
pub mod report;
pub mod seccomp;
pub mod signal;
pub mod watchdog;

use std::path::Path;

use chaos_common::splitmix64;
use denylist::Denylist;
use signal::{Pinned, start_time};

use crate::measure::discover::{Proc, process};

/// Signals per minute at most, whatever `--count` and `--interval` say (`--max-per-minute`
/// lowers it; nothing raises it): ten a second is already more deaths than any service
/// recovers from.
pub const SIGNAL_CEILING_PER_MINUTE: u32 = 600;
/// Failed syscalls per minute at most: a failing call is cheap to survive, and a probability
/// on a busy syscall needs room, but not without bound.
pub const ERRNO_CEILING_PER_MINUTE: u32 = 60_000;

/// A reproducible sequence of numbers from a seed: draw `i` is `splitmix64(seed ^
/// splitmix64(i))`, the function the kernel programs use, so a plan printed by `--dry-run` is
/// the plan that runs.
#[derive(Debug, Clone)]
pub struct Draws {
    seed: u64,
    next: u64,
}

impl Draws {
    pub fn new(seed: u64) -> Self {
        Self { seed, next: 1 }
    }

    pub fn next_u64(&mut self) -> u64 {
        let value = splitmix64(self.seed ^ splitmix64(self.next));
        self.next += 1;
        value
    }

    /// A draw in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift keeps the bias below 2^-32 for the n chaos uses.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// One of `candidates` that is alive, passes the denylist and `allowed`, chosen with the
/// seeded draws and pinned by a pidfd. Only the candidates are read from /proc.
pub fn pick(
    candidates: impl Iterator<Item = u32>,
    denylist: &Denylist,
    allowed: impl Fn(&Proc) -> bool,
    draws: &mut Draws,
) -> Option<Pinned> {
    let proc = Path::new("/proc");
    let live: Vec<Proc> = candidates
        .filter_map(|pid| process(proc, pid))
        .filter(|p| denylist.check_proc(proc, p).is_ok() && allowed(p))
        .collect();
    if live.is_empty() {
        return None;
    }
    let chosen = &live[draws.below(live.len() as u64) as usize];
    let started = start_time(proc, chosen.pid)?;
    Pinned::open(proc, chosen.pid, &chosen.comm, started).ok()
}

/// The default seed when none is given: printed, so the run can be repeated.
pub fn fresh_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix64(now ^ u64::from(std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_repeat_for_a_seed_and_differ_across_seeds() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut d = Draws::new(42);
                move |_| d.below(10)
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut d = Draws::new(42);
                move |_| d.below(10)
            })
            .collect();
        let c: Vec<u64> = (0..5)
            .map({
                let mut d = Draws::new(43);
                move |_| d.below(10)
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&v| v < 10));
    }

    #[test]
    fn decide_matches_the_probability() {
        let t = chaos_common::threshold(0.25);
        let hits = (1..=100_000u64)
            .filter(|&n| chaos_common::decide(7, n, t))
            .count();
        assert!((24_000..26_000).contains(&hits), "{hits}");
        assert!((1..=1000).all(|n| chaos_common::decide(7, n, chaos_common::threshold(1.0))));
        assert!((1..=1000).all(|n| !chaos_common::decide(7, n, chaos_common::threshold(0.0))));
    }
}
