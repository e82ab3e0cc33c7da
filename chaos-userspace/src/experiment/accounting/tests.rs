//! Outcomes decided from made-up kernel events and probe results.

use super::*;
use crate::{
    event::{Exit, Fork},
    fault::{Backend, FaultKind},
};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const MAIN: u32 = 100;
const WORKER: u32 = 101;

/// An effect window of 2 s and a recovery timeout of 5 s.
fn accounting(probed: bool) -> Accounting {
    Accounting::new(2 * SEC, 5 * SEC, probed)
}

fn record(id: u64, ts_ns: u64, pid: u32, role: Role) -> FaultRecord {
    FaultRecord {
        id,
        ts_ns,
        pid,
        tid: None,
        comm: "svc".into(),
        role: Some(role),
        ppid: Some(if role == Role::Main { 1 } else { MAIN }),
        kind: FaultKind::Signal,
        value: "SIGKILL".into(),
        syscall: None,
        nth: None,
        backend: Backend::Pidfd,
        dry_run: false,
    }
}

fn exit(ts_ns: u64, pid: u32, ppid: u32) -> Event {
    Event::Exit(Exit::from_raw(ts_ns, pid, ppid, "svc".into(), 9, SEC, None))
}

fn fork(ts_ns: u64, parent_pid: u32, child_pid: u32) -> Event {
    Event::Fork(Fork {
        ts_ns,
        parent_pid,
        child_pid,
    })
}

fn is_main(pid: u32) -> bool {
    pid == MAIN
}

/// A SIGKILL of the worker at 1 s.
fn worker_fault(a: &mut Accounting, out: &mut Vec<Action>) {
    a.fault(&record(1, SEC, WORKER, Role::Worker), Some(MAIN), out);
}

#[test]
fn a_worker_respawned_by_its_main_process_is_an_in_place_recovery_timed_to_the_respawn() {
    let mut a = accounting(false);
    let mut out = Vec::new();
    worker_fault(&mut a, &mut out);
    a.event(&exit(SEC + MS, WORKER, MAIN), &is_main);
    // The main process replaces it 40 ms later.
    a.event(&fork(SEC + 41 * MS, MAIN, 102), &is_main);
    // Not before the effect window after the death: a later loss would still count.
    a.tick(2 * SEC, &mut out);
    assert_eq!(a.pending(), 1);
    a.tick(3 * SEC + MS, &mut out);
    assert_eq!(a.pending(), 0);
    assert_eq!(a.outcome(1), Some(&FaultOutcome::InPlace { recovery: 1 }));
    let r = &a.in_place[0];
    assert_eq!(r.outcome, Outcome::Recovered);
    assert_eq!(
        (r.at_ns.exit, r.at_ns.respawned),
        (Some(SEC + MS), Some(SEC + 41 * MS))
    );
    assert_eq!(r.total_ns, Some(41 * MS));
    assert_eq!(r.fault_id, 1);
    assert!(
        out.iter()
            .any(|o| matches!(o, Action::Say(s) if s.contains("in place, recovered in 41.00ms"))),
        "{out:?}"
    );
}

#[test]
fn a_fork_by_another_process_is_not_a_respawn() {
    let mut a = accounting(false);
    let mut out = Vec::new();
    worker_fault(&mut a, &mut out);
    a.event(&exit(SEC + MS, WORKER, MAIN), &is_main);
    a.event(&fork(SEC + 10 * MS, 555, 556), &is_main);
    a.tick(5 * SEC, &mut out);
    assert_eq!(a.pending(), 1, "not decided before the recovery timeout");
    a.tick(6 * SEC + MS, &mut out);
    let r = &a.in_place[0];
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.total_ns, None);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("not replaced within 5.000s"),
        "{r:?}"
    );
}

#[test]
fn readiness_lost_and_regained_without_the_main_process_dying_is_timed_to_the_regain() {
    // PostgreSQL's crash-restart: a backend dies, the postmaster resets every other one
    // and the probe fails until the reset is done.
    let mut a = accounting(true);
    let mut out = Vec::new();
    worker_fault(&mut a, &mut out);
    assert!(out.contains(&Action::Watch {
        fault: 1,
        until_ns: SEC + 7 * SEC
    }));
    a.readiness(1, SEC + 5 * MS, true);
    a.event(&exit(SEC + MS, WORKER, MAIN), &is_main);
    a.event(&fork(SEC + 20 * MS, MAIN, 102), &is_main);
    a.readiness(1, SEC + 30 * MS, false);
    a.readiness(1, SEC + 300 * MS, true);
    a.tick(4 * SEC, &mut out);
    let r = &a.in_place[0];
    assert_eq!(r.outcome, Outcome::Recovered);
    assert_eq!(r.at_ns.lost, Some(SEC + 30 * MS));
    assert_eq!(r.at_ns.ready, Some(SEC + 300 * MS));
    assert_eq!(r.total_ns, Some(300 * MS));
    assert!(out.contains(&Action::EndWatch { fault: 1 }));
}

#[test]
fn readiness_lost_for_good_is_a_failed_in_place_recovery() {
    let mut a = accounting(true);
    let mut out = Vec::new();
    a.fault(&record(1, SEC, MAIN, Role::Main), None, &mut out);
    // SIGSTOP, say: nothing dies, the probe fails from then on.
    a.readiness(1, SEC + 10 * MS, false);
    a.tick(5 * SEC, &mut out);
    assert_eq!(a.pending(), 1);
    a.tick(6 * SEC + 10 * MS, &mut out);
    let r = &a.in_place[0];
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("readiness not regained"),
        "{r:?}"
    );
}

#[test]
fn nothing_dead_and_readiness_never_lost_is_no_effect_after_the_window() {
    let mut a = accounting(true);
    let mut out = Vec::new();
    a.fault(&record(1, SEC, MAIN, Role::Main), None, &mut out);
    a.readiness(1, SEC + MS, true);
    a.tick(3 * SEC - 1, &mut out);
    assert_eq!(a.pending(), 1, "undecided inside the effect window");
    a.tick(3 * SEC, &mut out);
    assert_eq!(a.outcome(1), Some(&FaultOutcome::NoEffect));
    assert!(a.in_place.is_empty());
}

#[test]
fn the_death_of_the_main_process_waits_for_its_episode() {
    let mut a = accounting(false);
    let mut out = Vec::new();
    a.fault(&record(1, SEC, MAIN, Role::Main), None, &mut out);
    a.event(&exit(SEC + MS, MAIN, 1), &is_main);
    a.tick(60 * SEC, &mut out);
    assert_eq!(a.pending(), 1, "an open episode decides it, not time");
    assert_eq!(a.episode(MAIN, 7, &mut out), Some(1));
    assert_eq!(a.outcome(1), Some(&FaultOutcome::Episode { episode: 7 }));
}

#[test]
fn a_worker_fault_whose_main_process_dies_is_that_episodes() {
    let mut a = accounting(false);
    let mut out = Vec::new();
    worker_fault(&mut a, &mut out);
    a.event(&exit(SEC + MS, WORKER, MAIN), &is_main);
    a.event(&exit(SEC + 2 * MS, MAIN, 1), &is_main);
    a.tick(10 * SEC, &mut out);
    assert_eq!(a.pending(), 1);
    assert_eq!(a.episode(MAIN, 3, &mut out), Some(1));
    assert_eq!(a.outcome(1), Some(&FaultOutcome::Episode { episode: 3 }));
}

#[test]
fn the_end_leaves_what_it_cannot_decide_unmeasured_with_the_reason() {
    let mut a = accounting(false);
    let mut out = Vec::new();
    a.fault(&record(1, SEC, MAIN, Role::Main), None, &mut out);
    a.fault(&record(2, SEC, WORKER, Role::Worker), Some(MAIN), &mut out);
    a.event(&exit(SEC + MS, MAIN, 1), &is_main);
    a.finish(SEC + 500 * MS, 0, &mut out);
    assert_eq!(a.pending(), 0);
    let reason = |id| match a.outcome(id) {
        Some(FaultOutcome::Unmeasured { reason }) => reason.clone(),
        other => panic!("fault {id}: {other:?}"),
    };
    assert!(
        reason(1).contains("no episode of it was measured"),
        "{}",
        reason(1)
    );
    assert!(
        reason(2).contains("no episode of it was measured"),
        "{}",
        reason(2)
    );
}

#[test]
fn with_events_lost_no_effect_cannot_be_told_and_is_unmeasured() {
    let mut a = accounting(false);
    let mut out = Vec::new();
    a.fault(&record(1, SEC, MAIN, Role::Main), None, &mut out);
    a.tick(4 * SEC, &mut out);
    assert_eq!(a.outcome(1), Some(&FaultOutcome::NoEffect));
    a.finish(5 * SEC, 3, &mut out);
    assert!(
        matches!(a.outcome(1), Some(FaultOutcome::Unmeasured { reason }) if reason.contains("3 kernel events were lost")),
        "{:?}",
        a.outcome(1)
    );
}

#[test]
fn a_worker_death_the_run_ends_on_is_unmeasured() {
    // With `exec`/`listen` readiness nothing is probed: only a respawn ends it.
    let mut a = accounting(false);
    let mut out = Vec::new();
    worker_fault(&mut a, &mut out);
    assert!(!out.iter().any(|o| matches!(o, Action::Watch { .. })));
    a.event(&exit(SEC + MS, WORKER, MAIN), &is_main);
    a.finish(SEC + 2 * MS, 0, &mut out);
    assert!(matches!(
        a.outcome(1),
        Some(FaultOutcome::Unmeasured { .. })
    ));
}
