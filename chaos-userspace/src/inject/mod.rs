//! Fault injection: the one fault model ([`spec`]), the engine that carries it out
//! ([`injector`]) with its ledger of proofs, and what `chaos inject` adds on top
//! ([`machine`]); the seccomp and watchdog pieces of the seccomp backend, pidfd signals,
//! time windows, and the names users give (signals, syscalls, errnos, durations).
//!
//! Every fault is aimed at a target chaos resolved and checked; the kernel programs check the
//! target map again (deny-by-default) and the denylist maps, so a process that joins the set
//! later (a `--comm` match, a child) is held to the same rules.

pub mod injector;
pub mod ledger;
pub mod machine;
pub mod names;
pub mod seccomp;
pub mod signal;
pub mod spec;
pub mod watchdog;
pub mod window;

use chaos_common::splitmix64;

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
