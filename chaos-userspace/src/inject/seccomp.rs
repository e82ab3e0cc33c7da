//! The seccomp errno backend: `-- CMD` is launched under a seccomp filter that hands every
//! call of one syscall to chaos (`SECCOMP_RET_USER_NOTIF`), and chaos decides each one: fail
//! it with the errno (the call does not run) or let it continue. Works on any kernel since 5.5,
//! for any syscall, fsync included; the filter is inherited by every descendant, so a
//! supervisor launched this way carries the fault to the children it restarts.
//!
//! The listener is held by the watchdog (`watchdog.rs`), so the fault ends with chaos however
//! chaos ends: the filter stays (a filter cannot be removed) but every call then continues.

use std::{collections::HashMap, path::Path, time::Duration};

use chaos_common::decide;

/// `struct sock_filter` instructions (include/uapi/linux/filter.h, bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)` and `arch`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// include/uapi/linux/audit.h.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;

/// The classic BPF program: notify on `nr` (x86-64 ABI), allow everything else.
pub fn filter(nr: u32) -> Vec<libc::sock_filter> {
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        op(BPF_LD_W_ABS, 0, 0, DATA_ARCH),
        op(BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        op(BPF_LD_W_ABS, 0, 0, DATA_NR),
        op(BPF_JEQ_K, 0, 1, nr),
        op(BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
        op(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
}

/// What to do with the calls the filter hands over. The watchdog decides each call with it
/// (chaos sends it over, as JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    pub action: Action,
    /// Only the Nth candidate call of each process; None: every candidate.
    pub nth: Option<u32>,
    /// Candidates hit with this probability, seeded.
    pub threshold: u64,
    pub seed: u64,
    /// At most this many faults in all.
    pub count: Option<u32>,
    /// Only calls whose path argument starts with this are candidates.
    pub path: Option<String>,
    pub max_per_minute: u32,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// Fail the call with this errno.
    Fail(i32),
    /// Send this signal to the process, then fail the call with EINTR: the call never runs
    /// (`chaos inject signal --on SYSCALL:nth=N --before`).
    SignalBefore(i32),
}

/// One call's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallDecision {
    /// Which candidate call of its process it was (1-based); None: not a candidate.
    pub nth: Option<u32>,
    /// Hit (or, in a dry run, would have been).
    pub hit: bool,
}

/// The per-process counts and limits behind [`Rule`]; pure, so a dry run and the tests can
/// play it without a kernel.
#[derive(Debug, Default)]
pub struct Decider {
    calls: HashMap<u32, u32>,
    total: u32,
    window: (Duration, u32),
}

impl Decider {
    /// Decides a call of process `tgid` at `now` (since any fixed origin), whose path argument
    /// (for `--path`) is `path`.
    pub fn decide(
        &mut self,
        plan: &Rule,
        tgid: u32,
        path: Option<&str>,
        now: Duration,
    ) -> CallDecision {
        if let Some(prefix) = &plan.path
            && !path.is_some_and(|p| p.starts_with(prefix.as_str()))
        {
            return CallDecision {
                nth: None,
                hit: false,
            };
        }
        let n = self.calls.entry(tgid).or_insert(0);
        *n += 1;
        let n = *n;
        let candidate = plan.nth.is_none_or(|nth| nth == n);
        let mut hit = candidate && decide(plan.seed, u64::from(n), plan.threshold);
        if hit && plan.count.is_some_and(|c| self.total >= c) {
            hit = false;
        }
        if hit {
            if now.saturating_sub(self.window.0) >= Duration::from_secs(60) {
                self.window = (now, 0);
            }
            if self.window.1 >= plan.max_per_minute {
                hit = false;
            } else {
                self.window.1 += 1;
                self.total += 1;
            }
        }
        CallDecision { nth: Some(n), hit }
    }

    /// A call of `tgid` that was decided (and passed) never ran: it is not counted.
    pub fn undo(&mut self, tgid: u32) {
        if let Some(n) = self.calls.get_mut(&tgid) {
            *n = n.saturating_sub(1);
        }
    }

    /// A process exited: its pid may come back as another process.
    pub fn forget(&mut self, tgid: u32) {
        self.calls.remove(&tgid);
    }
}

/// Reads a NUL-terminated path at `addr` in thread `tid`'s memory (up to PATH_MAX). The
/// caller checks the notification is still valid afterwards (the memory could have changed:
/// a path check is advisory, as for every seccomp agent).
pub fn read_path(proc: &Path, tid: u32, addr: u64) -> Option<String> {
    use std::os::unix::fs::FileExt as _;
    let mem = std::fs::File::open(proc.join(tid.to_string()).join("mem")).ok()?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    let mut got = 0;
    // Read page by page: a path near the end of a mapping must not fail the whole read.
    while got < buf.len() {
        let chunk = (4096 - ((addr as usize + got) % 4096)).min(buf.len() - got);
        match mem.read_at(&mut buf[got..got + chunk], addr + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(end) = buf[got..got + n].iter().position(|&b| b == 0) {
                    return Some(String::from_utf8_lossy(&buf[..got + end]).into_owned());
                }
                got += n;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Rule {
        Rule {
            action: Action::Fail(libc::EIO),
            nth: None,
            threshold: chaos_common::threshold(1.0),
            seed: 1,
            count: None,
            path: None,
            max_per_minute: 600,
            dry_run: false,
        }
    }

    fn hits(decider: &mut Decider, plan: &Rule, tgid: u32, calls: u32) -> Vec<bool> {
        (0..calls)
            .map(|i| {
                decider
                    .decide(plan, tgid, None, Duration::from_millis(u64::from(i)))
                    .hit
            })
            .collect()
    }

    #[test]
    fn nth_hits_exactly_that_call_of_each_process() {
        let plan = Rule {
            nth: Some(3),
            ..plan()
        };
        let mut d = Decider::default();
        assert_eq!(
            hits(&mut d, &plan, 10, 5),
            [false, false, true, false, false]
        );
        assert_eq!(hits(&mut d, &plan, 11, 4), [false, false, true, false]);
        d.forget(10);
        assert_eq!(
            hits(&mut d, &plan, 10, 3),
            [false, false, true],
            "a reused pid starts over"
        );
    }

    #[test]
    fn probability_is_the_seeded_sequence_and_count_caps_it() {
        let plan = Rule {
            threshold: chaos_common::threshold(0.5),
            seed: 99,
            ..plan()
        };
        let expected: Vec<bool> = (1..=20u64)
            .map(|n| chaos_common::decide(99, n, plan.threshold))
            .collect();
        assert_eq!(hits(&mut Decider::default(), &plan, 7, 20), expected);
        assert!(expected.iter().any(|&h| h) && expected.iter().any(|&h| !h));
        let capped = Rule {
            count: Some(2),
            ..plan
        };
        let got = hits(&mut Decider::default(), &capped, 7, 20);
        assert_eq!(got.iter().filter(|&&h| h).count(), 2);
    }

    #[test]
    fn path_prefix_picks_the_candidates_and_the_ceiling_holds() {
        let plan = Rule {
            path: Some("/data/".into()),
            ..plan()
        };
        let mut d = Decider::default();
        let at = Duration::ZERO;
        assert!(!d.decide(&plan, 1, Some("/etc/passwd"), at).hit);
        assert!(!d.decide(&plan, 1, None, at).hit);
        let hit = d.decide(&plan, 1, Some("/data/x"), at);
        assert_eq!(
            hit,
            CallDecision {
                nth: Some(1),
                hit: true
            },
            "only candidates are counted"
        );

        let slow = Rule {
            max_per_minute: 3,
            ..super::tests::plan()
        };
        let mut d = Decider::default();
        assert_eq!(hits(&mut d, &slow, 1, 5), [true, true, true, false, false]);
        let later = d.decide(&slow, 1, None, Duration::from_secs(61));
        assert!(later.hit, "a new minute");
    }

    #[test]
    fn the_filter_notifies_on_one_syscall_only() {
        let f = filter(libc::SYS_fsync as u32);
        assert_eq!(f.len(), 6);
        assert_eq!(f[3].k, libc::SYS_fsync as u32);
        assert_eq!(f[4].k, SECCOMP_RET_USER_NOTIF);
    }
}
