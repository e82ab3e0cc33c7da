//! The injector on its own: schedules, follow-ups, kernel rules, seccomp decisions, ids.

use std::time::Duration;

use nix::sys::signal::Signal;
use syscalls::Sysno;

use super::*;
use crate::{
    event::Inject,
    fault::{Backend, FaultKind, Hit, KernelRule, Role},
    inject::{
        ledger::Intercepted,
        seccomp::Rule,
        spec::{FaultAction, SignalSchedule},
        window::Window,
    },
    machine::{
        Answer, Candidate, Candidates, KernelFault, Notification, Order, Passed, Pin, Response,
        SendOutcome, Sent, WatchdogNote,
    },
};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn signal_spec(count: u32, interval: Duration, timing: Timing) -> FaultSpec {
    FaultSpec {
        index: 0,
        action: FaultAction::Signal(SignalSchedule {
            signal: Signal::SIGKILL,
            interval,
            jitter: Duration::ZERO,
            escalate_after: None,
            freeze_for: None,
            timing,
            power: false,
        }),
        count: Some(count),
        seed: 7,
        windows: Vec::new(),
        max_per_minute: 600,
        hit: Hit::Any,
    }
}

fn injector(specs: Vec<FaultSpec>, dry_run: bool) -> Injector {
    // 2024-01-01T00:00:00Z at kernel time 0: a Monday.
    Injector::new(
        specs,
        dry_run,
        Clock::new(0, 1_704_067_200 * SEC),
        TimeZone::UTC,
    )
}

fn candidates(fault: usize, ts_ns: u64, pids: &[u32]) -> Candidates {
    Candidates {
        fault,
        ts_ns,
        procs: pids
            .iter()
            .map(|&pid| Candidate {
                pid,
                ppid: 1,
                comm: "svc".into(),
                exe: Some("/usr/bin/svc".into()),
                title: None,
                start_ticks: u64::from(pid) * 10,
            })
            .collect(),
    }
}

fn gathers(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Gather { .. }))
        .count()
}

fn orders(actions: &[Action]) -> Vec<&Order> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn sent(id: u64, ts_ns: u64) -> Sent {
    Sent {
        id,
        ts_ns,
        outcome: SendOutcome::Sent,
    }
}

#[test]
fn a_grid_fires_one_interval_in_then_every_interval() {
    let mut inj = injector(
        vec![signal_spec(3, Duration::from_secs(1), Timing::Grid)],
        false,
    );
    let mut out = Vec::new();
    inj.start(0, &mut out);
    assert_eq!(inj.wake_at(), Some(SEC), "the first comes one interval in");
    inj.tick(SEC / 2, true, &mut out);
    assert_eq!(gathers(&out), 0);
    for round in 1..=3u64 {
        out.clear();
        inj.tick(round * SEC, true, &mut out);
        assert_eq!(gathers(&out), 1, "round {round}");
        inj.candidates(
            &candidates(0, round * SEC, &[11]),
            &|_| Some(Role::Main),
            &mut out,
        );
        let order = orders(&out)[0].clone();
        assert_eq!(order.id, round, "ids are 1, 2, 3");
        assert_eq!(
            order.pin,
            Pin::Fresh {
                pid: 11,
                start_ticks: 110
            }
        );
        let Entry::Fault(entry) = &order.audit else {
            panic!("{:?}", order.audit)
        };
        assert_eq!(
            (entry.exe.as_str(), entry.reported_by_kernel),
            ("/usr/bin/svc", false)
        );
        inj.sent(&sent(order.id, round * SEC + 5), &mut out);
    }
    assert!(inj.signals_done());
    assert_eq!(inj.ledger().len(), 3);
    assert_eq!(
        inj.ledger().records().next().unwrap().ts_ns,
        SEC + 5,
        "the send's time"
    );
    assert_eq!(inj.unfired(), 0);
}

#[test]
fn jitter_is_seeded_so_a_seed_repeats_its_times() {
    let jittered = |seed| {
        let mut spec = signal_spec(5, Duration::from_secs(1), Timing::Grid);
        spec.seed = seed;
        if let FaultAction::Signal(s) = &mut spec.action {
            s.jitter = Duration::from_millis(500);
        }
        let mut inj = injector(vec![spec], false);
        inj.start(0, &mut Vec::new());
        let mut times = vec![inj.schedules[0].next.unwrap()];
        times.extend(inj.schedules[0].grid.iter().rev());
        times
    };
    let a = jittered(1);
    assert_eq!(a, jittered(1));
    assert_ne!(a, jittered(2));
    assert!(
        a.windows(2).all(|w| w[0] <= w[1]),
        "fired in time order: {a:?}"
    );
    // 500 ms of jitter on a 1 s grid cannot reorder it: signal i is within its slot.
    assert!(a.iter().enumerate().all(|(i, &t)| {
        let base = (i as u64 + 1) * SEC;
        (base..=base + 500 * MS).contains(&t)
    }));
}

#[test]
fn after_previous_waits_for_the_gate_and_retries_without_a_target() {
    let mut inj = injector(
        vec![signal_spec(
            2,
            Duration::from_secs(2),
            Timing::AfterPrevious,
        )],
        false,
    );
    let mut out = Vec::new();
    inj.start(0, &mut out);
    inj.tick(0, false, &mut out);
    assert_eq!(gathers(&out), 0, "the gate is shut");
    assert_eq!(inj.wake_at(), Some(RETRY.as_nanos() as u64));
    inj.tick(100 * MS, true, &mut out);
    assert_eq!(gathers(&out), 1);
    out.clear();
    inj.candidates(&candidates(0, 100 * MS, &[11]), &|_| None, &mut out);
    assert!(orders(&out).is_empty(), "nothing allowed: no order");
    assert_eq!(inj.wake_at(), Some(200 * MS), "it looks again");
    inj.tick(200 * MS, true, &mut out);
    inj.candidates(
        &candidates(0, 200 * MS, &[11]),
        &|_| Some(Role::Main),
        &mut out,
    );
    let id = orders(&out)[0].id;
    inj.sent(&sent(id, 210 * MS), &mut out);
    assert_eq!(
        inj.wake_at(),
        Some(210 * MS + 2 * SEC),
        "an interval after the last one"
    );
    assert_eq!(inj.unfired(), 1);
}

#[test]
fn a_grid_with_no_target_left_ends_and_says_so() {
    let mut inj = injector(
        vec![signal_spec(3, Duration::from_secs(1), Timing::Grid)],
        false,
    );
    let mut out = Vec::new();
    inj.start(0, &mut out);
    inj.tick(SEC, true, &mut out);
    inj.candidates(&candidates(0, SEC, &[]), &|_| Some(Role::Main), &mut out);
    assert!(out.contains(&Action::Say("chaos: no live target left to signal".into())));
    assert!(inj.signals_done());
    assert_eq!(inj.unfired(), 3);
}

#[test]
fn a_failed_send_is_not_recorded_and_its_id_is_given_again() {
    let mut inj = injector(
        vec![signal_spec(2, Duration::from_secs(1), Timing::Grid)],
        false,
    );
    let mut out = Vec::new();
    inj.start(0, &mut out);
    inj.tick(SEC, true, &mut out);
    inj.candidates(&candidates(0, SEC, &[11]), &|_| Some(Role::Main), &mut out);
    inj.sent(
        &Sent {
            id: 1,
            ts_ns: SEC,
            outcome: SendOutcome::Failed("No such process".into()),
        },
        &mut out,
    );
    assert!(out.contains(&Action::Say(
        "chaos: signal to 11 failed: No such process".into()
    )));
    assert!(inj.ledger().is_empty());
    out.clear();
    inj.tick(2 * SEC, true, &mut out);
    inj.candidates(
        &candidates(0, 2 * SEC, &[12]),
        &|_| Some(Role::Main),
        &mut out,
    );
    assert_eq!(orders(&out)[0].id, 1);
}

#[test]
fn escalation_and_thaw_follow_on_the_kept_pidfd() {
    let mut spec = signal_spec(1, Duration::from_secs(1), Timing::Grid);
    if let FaultAction::Signal(s) = &mut spec.action {
        s.signal = Signal::SIGSTOP;
        s.escalate_after = Some(Duration::from_secs(5));
        s.freeze_for = Some(Duration::from_secs(3));
    }
    let mut inj = injector(vec![spec], false);
    let mut out = Vec::new();
    inj.start(0, &mut out);
    inj.tick(SEC, true, &mut out);
    inj.candidates(&candidates(0, SEC, &[11]), &|_| Some(Role::Main), &mut out);
    let first = orders(&out)[0].clone();
    assert!(first.keep && first.watchdog == Some(WatchdogNote::Frozen));
    inj.sent(&sent(1, SEC), &mut out);
    assert!(!inj.signals_done(), "follow-ups pending");
    out.clear();
    inj.tick(4 * SEC, true, &mut out);
    let thaw = orders(&out)[0].clone();
    assert_eq!(
        (thaw.pin, thaw.signal, thaw.watchdog, thaw.only_if_alive),
        (
            Pin::Kept { of: 1 },
            libc::SIGCONT,
            Some(WatchdogNote::Thawed),
            false
        )
    );
    inj.sent(&sent(thaw.id, 4 * SEC), &mut out);
    out.clear();
    inj.tick(6 * SEC, true, &mut out);
    let kill = orders(&out)[0].clone();
    assert_eq!(
        (kill.pin, kill.signal, kill.only_if_alive),
        (Pin::Kept { of: 1 }, libc::SIGKILL, true)
    );
    inj.sent(
        &Sent {
            id: kill.id,
            ts_ns: 6 * SEC,
            outcome: SendOutcome::Gone,
        },
        &mut out,
    );
    assert!(inj.signals_done());
    let backends: Vec<Backend> = inj.ledger().records().map(|r| r.backend).collect();
    assert_eq!(
        backends,
        [Backend::Pidfd, Backend::PidfdThaw],
        "a gone process: no escalation"
    );
}

fn trigger_spec(count: Option<u32>, windows: Vec<Window>) -> FaultSpec {
    FaultSpec {
        index: 1,
        action: FaultAction::Trigger {
            nr: Sysno::fdatasync,
            nth: 20,
            signal: Signal::SIGKILL,
        },
        count,
        seed: 1,
        windows,
        max_per_minute: 60,
        hit: Hit::Any,
    }
}

fn kernel_fault(ts_ns: u64, pid: u32) -> KernelFault {
    KernelFault {
        event: Inject {
            ts_ns,
            pid,
            tid: pid,
            fault: KernelRule::Trigger,
            what: "fdatasync".into(),
            value: "SIGKILL".into(),
            nth: 20,
            dry_run: false,
        },
        comm: "svc".into(),
        exe: "/usr/bin/svc".into(),
        ppid: 1,
    }
}

#[test]
fn a_kernel_rule_is_armed_at_start_and_disarmed_once_it_fired_its_count() {
    let mut inj = injector(vec![trigger_spec(Some(2), Vec::new())], false);
    let mut out = Vec::new();
    inj.start(0, &mut out);
    assert_eq!(out[0], Action::Arm(KernelRule::Trigger));
    assert!(matches!(&out[1], Action::Audit(Entry::Armed(s)) if s.fault == 1));
    out.clear();
    inj.kernel_fault(&kernel_fault(SEC, 11), Some(Role::Main), &mut out);
    assert!(matches!(&out[0], Action::Audit(Entry::Fault(f)) if f.reported_by_kernel));
    assert!(!inj.rules_done());
    out.clear();
    inj.kernel_fault(&kernel_fault(2 * SEC, 12), Some(Role::Main), &mut out);
    assert!(out.contains(&Action::Disarm(KernelRule::Trigger)));
    assert!(out.iter().any(|a| matches!(a,
        Action::Audit(Entry::Disarmed(s)) if s.reason.as_deref() == Some("it fired its count"))));
    assert!(inj.rules_done());
    let record = inj.ledger().records().last().unwrap();
    assert_eq!(
        (record.backend, record.nth, record.kind),
        (Backend::BpfSendSignal, Some(20), FaultKind::Signal)
    );
}

#[test]
fn a_kernel_rule_follows_its_window_on_the_injected_clock() {
    // Open 00:10-00:20 UTC on the clock's Monday.
    let window = Window::parse("Mon 00:10-00:20 UTC").unwrap();
    let mut inj = injector(vec![trigger_spec(Some(5), vec![window])], false);
    let mut out = Vec::new();
    inj.start(0, &mut out);
    assert!(out.is_empty(), "closed at 00:00");
    inj.tick(600 * SEC, true, &mut out);
    assert_eq!(out[0], Action::Arm(KernelRule::Trigger), "open at 00:10");
    out.clear();
    inj.tick(900 * SEC, true, &mut out);
    assert!(out.is_empty(), "still open");
    inj.tick(1200 * SEC, true, &mut out);
    assert_eq!(
        out[0],
        Action::Disarm(KernelRule::Trigger),
        "closed at 00:20"
    );
}

#[test]
fn stop_disarms_what_is_armed_with_the_reason_and_sends_nothing_more() {
    let mut inj = injector(
        vec![
            signal_spec(3, Duration::from_secs(1), Timing::Grid),
            trigger_spec(None, Vec::new()),
        ],
        false,
    );
    let mut out = Vec::new();
    inj.start(0, &mut out);
    out.clear();
    inj.stop("abort", &mut out);
    assert_eq!(out[0], Action::Disarm(KernelRule::Trigger));
    assert!(
        matches!(&out[1], Action::Audit(Entry::Disarmed(s)) if s.reason.as_deref() == Some("abort"))
    );
    out.clear();
    inj.tick(5 * SEC, true, &mut out);
    assert!(out.is_empty());
    assert_eq!(inj.wake_at(), None);
}

fn seccomp_spec(nth: Option<u32>) -> FaultSpec {
    FaultSpec {
        index: 0,
        action: FaultAction::Seccomp {
            nr: Sysno::fsync,
            rule: Rule::failing_with(libc::EIO, nth),
        },
        count: None,
        seed: 1,
        windows: Vec::new(),
        max_per_minute: 600,
        hit: Hit::Any,
    }
}

fn notification(id: u64, tgid: u32, nth: u32) -> Notification {
    Notification {
        id,
        ts_ns: id * MS,
        tid: tgid + 1,
        tgid,
        nth,
        comm: "db".into(),
        exe: "/usr/bin/db".into(),
        path: None,
        ppid: 1,
    }
}

fn answers(actions: &[Action]) -> Vec<&Answer> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Answer(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn a_hit_the_watchdog_decided_fails_with_its_audit_entry_and_passes_are_counted() {
    let mut inj = injector(vec![seccomp_spec(Some(2))], false);
    let mut out = Vec::new();
    inj.start(0, &mut out);
    inj.passed(&Passed {
        ts_ns: MS,
        calls: vec![(40, 1), (50, 1)],
    });
    inj.notification(&notification(2, 40, 2), None, &mut out);
    inj.passed(&Passed {
        ts_ns: 3 * MS,
        calls: vec![(40, 1)],
    });
    inj.notification(&notification(4, 50, 2), None, &mut out);
    let responses: Vec<Response> = answers(&out).iter().map(|a| a.response).collect();
    assert_eq!(
        responses,
        [Response::Fail(libc::EIO), Response::Fail(libc::EIO)]
    );
    assert!(answers(&out).iter().all(|a| a.audit.is_some()));
    let hit = inj.ledger().records().next().unwrap();
    assert_eq!(
        (hit.pid, hit.tid, hit.nth, hit.value.as_str(), hit.backend),
        (40, Some(41), Some(2), "EIO", Backend::Seccomp)
    );
    assert_eq!(
        inj.intercepted(),
        Some(Intercepted {
            calls: 5,
            processes: 2
        })
    );
    // A hit the watchdog sent as the faults stopped is let through, unrecorded.
    inj.stop("over", &mut out);
    out.clear();
    inj.notification(&notification(5, 40, 3), None, &mut out);
    assert_eq!(answers(&out)[0], &Answer::pass(5));
    assert_eq!(inj.ledger().len(), 2);
}

#[test]
fn a_dry_run_decides_and_records_but_lets_every_call_run() {
    let mut inj = injector(vec![seccomp_spec(None)], true);
    let mut out = Vec::new();
    inj.start(0, &mut out);
    inj.notification(&notification(1, 40, 1), None, &mut out);
    assert_eq!(answers(&out)[0].response, Response::Continue);
    assert!(inj.ledger().records().next().unwrap().dry_run);
}
