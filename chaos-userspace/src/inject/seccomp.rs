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
use libseccomp::{ScmpAction, ScmpArch, ScmpFilterContext, ScmpSyscall};
use syscalls::Sysno;

/// A seccomp program that hands every call of one syscall to the listener
/// (`SECCOMP_RET_USER_NOTIF`) and allows everything else. libseccomp builds it, for every ABI
/// an x86-64 process can make the call through: x86-64, x32 (`nr | 0x40000000`, same arch
/// token) and i386 (`int 0x80`, its own numbers), so that no ABI slips past. Built before a
/// fork: the child only hands the instructions to seccomp(2).
#[derive(Debug)]
pub struct Filter {
    /// The syscall, as x86-64 numbers it.
    pub nr: Sysno,
    program: Vec<libc::sock_filter>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("libseccomp cannot build a filter for {syscall}")]
    Build {
        syscall: &'static str,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("cannot read the filter libseccomp exported")]
    Export(#[source] std::io::Error),
}

impl Filter {
    /// Notifies on the calls of `nr` whose arguments match all of `args`.
    pub fn notify_on(nr: Sysno, args: &[ArgMatch]) -> Result<Self, FilterError> {
        let build = |source| FilterError::Build {
            syscall: nr.name(),
            source,
        };
        let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(build)?;
        // The native arch (x86-64) is in every new context.
        ctx.add_arch(ScmpArch::X32).map_err(build)?;
        ctx.add_arch(ScmpArch::X86).map_err(build)?;
        // No other ABI exists on x86-64; were one to appear, chaos leaves it alone.
        ctx.set_act_badarch(ScmpAction::Allow).map_err(build)?;
        // A native number, translated by libseccomp for the other ABIs (where the syscall
        // has another name or is multiplexed, as connect through i386's socketcall, it
        // writes those checks too).
        let compares: Vec<_> = args.iter().map(ArgMatch::compare).collect();
        ctx.add_rule_conditional(ScmpAction::Notify, ScmpSyscall::from(nr.id()), &compares)
            .map_err(build)?;
        Ok(Self {
            nr,
            program: export(&ctx)?,
        })
    }

    pub fn program(&self) -> &[libc::sock_filter] {
        &self.program
    }
}

/// The classic BPF instructions of a libseccomp context (exported into a memfd: the
/// export-to-memory call needs libseccomp 2.6, Debian 12 has 2.5).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, FilterError> {
    use std::io::{Read as _, Seek as _};
    let fd =
        nix::sys::memfd::memfd_create(c"chaos-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| FilterError::Export(e.into()))?;
    ctx.export_bpf(&fd).map_err(|source| FilterError::Build {
        syscall: "the export",
        source,
    })?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|()| file.read_to_end(&mut bytes))
        .map_err(FilterError::Export)?;
    const INSN: usize = size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % INSN != 0 || bytes.len() / INSN > u16::MAX as usize {
        return Err(FilterError::Export(std::io::Error::other(format!(
            "{} bytes is no BPF program",
            bytes.len()
        ))));
    }
    Ok(bytes
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
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
    /// Only calls whose arguments match all of these are candidates; the filter checks them
    /// in the kernel, so that no other call is handed over at all.
    #[serde(default)]
    pub args: Vec<ArgMatch>,
    pub max_per_minute: u32,
    pub dry_run: bool,
}

/// A condition on one argument: `(arg & mask) == value` (mask: every bit when None).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArgMatch {
    /// 0 to 5.
    pub index: u8,
    pub mask: Option<u64>,
    pub value: u64,
}

impl ArgMatch {
    /// `N=VALUE`, `N&MASK=VALUE` or `N&MASK` (all of MASK's bits set). Numbers are decimal,
    /// 0x hex or 0o octal, or open(2) flag names joined by `|` (O_CREAT|O_TRUNC).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--arg {text}: {why}; give N=VALUE, N&MASK=VALUE or N&MASK");
        let (lhs, value) = match text.split_once('=') {
            Some((l, v)) => (l, Some(v)),
            None => (text, None),
        };
        let (index, mask) = match lhs.split_once('&') {
            Some((i, m)) => (i, Some(number(m).map_err(|e| bad(&e))?)),
            None => (lhs, None),
        };
        let index: u8 = index
            .trim()
            .parse()
            .ok()
            .filter(|i| *i < 6)
            .ok_or_else(|| bad("the argument number is 0 to 5"))?;
        let value = match (value, mask) {
            (Some(v), _) => number(v).map_err(|e| bad(&e))?,
            (None, Some(m)) => m,
            (None, None) => return Err(bad("no value")),
        };
        if mask.is_some_and(|m| value & !m != 0) {
            return Err(bad(
                "the value has bits outside the mask, so no call could match",
            ));
        }
        Ok(Self { index, mask, value })
    }

    fn compare(&self) -> libseccomp::ScmpArgCompare {
        let op = match self.mask {
            Some(m) => libseccomp::ScmpCompareOp::MaskedEqual(m),
            None => libseccomp::ScmpCompareOp::Equal,
        };
        libseccomp::ScmpArgCompare::new(u32::from(self.index), op, self.value)
    }
}

impl std::fmt::Display for ArgMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.mask {
            Some(m) => write!(f, "arg{} & {m:#x} == {:#x}", self.index, self.value),
            None => write!(f, "arg{} == {}", self.index, self.value),
        }
    }
}

/// A number, or open(2) flags by name joined by `|`.
fn number(text: &str) -> Result<u64, String> {
    const FLAGS: [(&str, i32); 14] = [
        ("O_WRONLY", libc::O_WRONLY),
        ("O_RDWR", libc::O_RDWR),
        ("O_CREAT", libc::O_CREAT),
        ("O_EXCL", libc::O_EXCL),
        ("O_NOCTTY", libc::O_NOCTTY),
        ("O_TRUNC", libc::O_TRUNC),
        ("O_APPEND", libc::O_APPEND),
        ("O_NONBLOCK", libc::O_NONBLOCK),
        ("O_DSYNC", libc::O_DSYNC),
        ("O_SYNC", libc::O_SYNC),
        ("O_DIRECT", libc::O_DIRECT),
        ("O_DIRECTORY", libc::O_DIRECTORY),
        ("O_CLOEXEC", libc::O_CLOEXEC),
        ("O_TMPFILE", libc::O_TMPFILE),
    ];
    text.split('|')
        .map(|part| {
            let part = part.trim();
            let parsed = if let Some(hex) = part.strip_prefix("0x") {
                u64::from_str_radix(hex, 16).ok()
            } else if let Some(oct) = part.strip_prefix("0o") {
                u64::from_str_radix(oct, 8).ok()
            } else if part.starts_with(|c: char| c.is_ascii_digit()) {
                part.parse().ok()
            } else {
                FLAGS
                    .iter()
                    .find(|(name, _)| *name == part)
                    .map(|(_, v)| *v as u64)
            };
            parsed.ok_or_else(|| format!("{part:?} is neither a number nor an O_ flag"))
        })
        .try_fold(0u64, |acc, v| v.map(|v| acc | v))
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

#[cfg(test)]
impl Rule {
    /// Fails every candidate (or only the `nth`) with `errno`, seed 1, no other limit.
    pub(crate) fn failing_with(errno: i32, nth: Option<u32>) -> Self {
        Self {
            action: Action::Fail(errno),
            nth,
            threshold: chaos_common::threshold(1.0),
            seed: 1,
            count: None,
            path: None,
            args: Vec::new(),
            max_per_minute: 600,
            dry_run: false,
        }
    }
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

    /// A hit on `tgid` never ran: its call is not counted, nor its share of the limits.
    pub fn undo_hit(&mut self, tgid: u32) {
        self.undo(tgid);
        self.total = self.total.saturating_sub(1);
        self.window.1 = self.window.1.saturating_sub(1);
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
        Rule::failing_with(libc::EIO, None)
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

    /// Runs a classic BPF seccomp program on (arch, nr): what it returns. Only the
    /// instructions a syscall filter uses: loads of seccomp_data words, jumps, returns.
    fn run(program: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        run_with(program, arch, nr, [0; 6])
    }

    fn run_with(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        // struct seccomp_data: nr, arch, instruction_pointer, args (little-endian words).
        let word = |offset: u32| match offset {
            0 => nr,
            4 => arch,
            16.. if offset < 64 => {
                let arg = args[(offset as usize - 16) / 8];
                if offset.is_multiple_of(8) {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => 0,
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = program[pc];
            pc += 1;
            let (class, op, src) = (i.code & 0x07, i.code & 0xf0, i.code & 0x08);
            let operand = if src == 0 { i.k } else { 0 };
            match class {
                0x00 if i.code == 0x20 => acc = word(i.k), // BPF_LD | BPF_W | BPF_ABS
                0x04 if op == 0x50 => acc &= operand,      // BPF_ALU | BPF_AND
                0x05 => {
                    let taken = match op {
                        0x00 => {
                            pc += i.k as usize; // BPF_JA
                            continue;
                        }
                        0x10 => acc == operand,
                        0x20 => acc > operand,
                        0x30 => acc >= operand,
                        0x40 => acc & operand != 0,
                        _ => panic!("jump {:#x}", i.code),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                0x06 => return i.k, // BPF_RET | BPF_K
                _ => panic!("instruction {:#x}", i.code),
            }
        }
    }

    const NOTIFY: u32 = 0x7fc0_0000;
    const ALLOW: u32 = 0x7fff_0000;
    const X86_64: u32 = 0xc000_003e;
    const I386: u32 = 0x4000_0003;
    const X32_BIT: u32 = 0x4000_0000;

    #[test]
    fn the_filter_notifies_on_one_syscall_in_every_x86_abi() {
        let f = Filter::notify_on(Sysno::fsync, &[]).unwrap();
        let p = f.program();
        // fsync: 74 on x86-64 and x32, 118 on i386; getpid: 39 and 20.
        assert_eq!(run(p, X86_64, 74), NOTIFY);
        assert_eq!(run(p, X86_64, X32_BIT | 74), NOTIFY, "x32");
        assert_eq!(run(p, I386, 118), NOTIFY, "i386");
        assert_eq!(run(p, X86_64, 39), ALLOW);
        assert_eq!(run(p, X86_64, X32_BIT | 39), ALLOW);
        assert_eq!(run(p, I386, 20), ALLOW);
        assert_eq!(run(p, I386, 74), ALLOW, "i386's 74 is another call");
        assert_eq!(
            run(p, 0xc000_00b7, 74),
            ALLOW,
            "an unknown ABI is left alone"
        );
    }

    #[test]
    fn argument_conditions_parse_and_the_filter_checks_them() {
        let creat = ArgMatch::parse("2&O_CREAT").unwrap();
        assert_eq!(
            creat,
            ArgMatch {
                index: 2,
                mask: Some(libc::O_CREAT as u64),
                value: libc::O_CREAT as u64
            }
        );
        let fd = ArgMatch::parse("0=7").unwrap();
        assert_eq!((fd.index, fd.mask, fd.value), (0, None, 7));
        let both = ArgMatch::parse("1&0x3=0o1").unwrap();
        assert_eq!((both.mask, both.value), (Some(3), 1));
        assert_eq!(
            ArgMatch::parse("2&O_CREAT|O_TRUNC").unwrap().value,
            (libc::O_CREAT | libc::O_TRUNC) as u64
        );
        for (bad, why) in [
            ("6=1", "0 to 5"),
            ("x=1", "0 to 5"),
            ("1", "no value"),
            ("1&0x1=0x2", "outside the mask"),
            ("2&O_BOGUS", "neither a number nor an O_ flag"),
        ] {
            let err = ArgMatch::parse(bad).unwrap_err();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }

        let f = Filter::notify_on(Sysno::openat, &[creat]).unwrap();
        let p = f.program();
        // openat: 257 on x86-64, 295 on i386; its flags are argument 2.
        let flags = |f: i32| [0, 0, f as u64, 0, 0, 0];
        let creating = libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC;
        assert_eq!(run_with(p, X86_64, 257, flags(creating)), NOTIFY);
        assert_eq!(run_with(p, X86_64, 257, flags(libc::O_RDONLY)), ALLOW);
        assert_eq!(run_with(p, I386, 295, flags(creating)), NOTIFY);
        assert_eq!(run_with(p, I386, 295, flags(libc::O_RDONLY)), ALLOW);
    }
}
