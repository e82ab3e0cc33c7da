//! The two clocks chaos reads: CLOCK_MONOTONIC, which the kernel stamps events with
//! (`bpf_ktime_get_ns`), and the wall clock, which people and exports read. A [`Clock`] ties
//! the two together at one instant, so every conversion in a run uses the same offset.

use std::time::SystemTime;

use nix::time::{ClockId, clock_gettime};

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, so comparable with
/// kernel event timestamps.
pub fn monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// The wall clock in nanoseconds since the Unix epoch.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Kernel time (CLOCK_MONOTONIC ns) to wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Wall-clock ns since the epoch minus monotonic ns, at the same instant.
    offset_ns: i128,
}

impl Clock {
    pub fn new(monotonic_ns: u64, unix_ns: u64) -> Self {
        Self {
            offset_ns: i128::from(unix_ns) - i128::from(monotonic_ns),
        }
    }

    /// Reads both clocks now.
    pub fn now() -> Self {
        let mono = monotonic_ns();
        Self::new(mono, unix_ns())
    }

    pub fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        (i128::from(monotonic_ns) + self.offset_ns).max(0) as u64
    }

    pub fn wall(&self, monotonic_ns: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(self.unix_ns(monotonic_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_converts_with_one_offset() {
        let clock = Clock::new(1_000, 5_000_000);
        assert_eq!(clock.unix_ns(1_000), 5_000_000);
        assert_eq!(clock.unix_ns(2_500), 5_001_500);
        assert_eq!(Clock::new(10, 0).unix_ns(0), 0, "never before the epoch");
    }
}
