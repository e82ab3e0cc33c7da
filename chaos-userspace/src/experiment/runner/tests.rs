//! The runner by replay, without root: a simulated machine ([`super::world`]) answers its
//! actions the way the driver and a supervisor would, on an injected clock.

use std::path::Path;

use super::{world::*, *};
use crate::{
    audit::entry::Decision as AuditDecision,
    event::{Inject, KernelCounters},
    experiment::check,
    fault::{Backend, KernelRule},
    machine::{
        KernelFault,
        record::{Recorder, Recording},
    },
    measure::service::{InitialInstance, Ready, Service},
};

/// 2024-01-01T00:00:00Z, a Monday, at kernel time 0.
const EPOCH: u64 = 1_704_067_200 * SEC;

fn text(hypothesis: &str, faults: &str, rest: &str) -> String {
    format!(
        "id = \"t\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"it comes back\"\n{hypothesis}\n\n[target]\nsupervisor = {SUPERVISOR}\ncomm = \"svc\"\nrecovery_timeout = \"2s\"\n\n{faults}\n{rest}\n"
    )
}

const KILLS_3: &str =
    "[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 3\ninterval = \"1s\"\n";
const PHASES: &str = "[phases]\nbaseline = \"1s\"\ncooldown = \"500ms\"\n";

fn runner(source: &str) -> Runner {
    runner_with(source, Ready::Exec)
}

fn runner_with(source: &str, ready: Ready) -> Runner {
    let experiment = check(source, Path::new("t.toml")).unwrap();
    let mut header = header(source);
    header.service.ready = ready;
    Runner::new(experiment, header)
}

fn header(source: &str) -> RunHeader {
    RunHeader {
        version: crate::experiment::record::VERSION,
        start_ns: 0,
        start_unix_ns: EPOCH,
        tz: Some("UTC".into()),
        chaos_pid: CHAOS,
        host: None,
        file: "t.toml".into(),
        source: source.into(),
        service: Service {
            comm: "svc".into(),
            supervisors: vec![SUPERVISOR],
            explicit_supervisors: true,
            instances: vec![InitialInstance {
                pid: 11,
                supervisor: SUPERVISOR,
                child: 11,
            }],
            ready: Ready::Exec,
            recovery_timeout_ns: 2 * SEC,
            workers: Vec::new(),
            ports: Vec::new(),
            data_dir: None,
            unit: None,
        },
    }
}

fn end(world: &World) -> End {
    End {
        ts_ns: world.now,
        counters: KernelCounters::default(),
    }
}

fn clause<'a>(outcome: &'a RunOutcome, name: &str) -> &'a Clause {
    outcome
        .clauses
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no clause {name}: {:#?}", outcome.clauses))
}

#[test]
fn baseline_then_injection_then_cooldown_and_the_hypothesis_holds() {
    let source = text("max_failed_recoveries = 0", KILLS_3, PHASES);
    let mut r = runner(&source);
    let mut w = World::new();
    w.run(&mut r, 20 * SEC);
    assert!(w.stopped, "the run ended by itself");
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.verdict, Verdict::Held, "{:#?}", outcome.clauses);
    assert_eq!(outcome.code, 0);
    // Nothing before the baseline's end; then the signals one interval apart at least.
    assert!(w.gathers[0] >= SEC, "{:?}", w.gathers);
    assert!(
        w.gathers.windows(2).all(|g| g[1] - g[0] >= SEC),
        "{:?}",
        w.gathers
    );
    let faults: Vec<u32> = outcome.result.faults.iter().map(|f| f.record.pid).collect();
    let episodes: Vec<u32> = outcome.result.episodes.iter().map(|e| e.old_pid).collect();
    assert_eq!(faults, episodes, "each fault is the death of an episode");
    assert_eq!(faults, [11, 12, 13]);
    assert_eq!((outcome.result.injected, outcome.result.confirmed), (3, 3));
    let kinds = w.kinds();
    assert_eq!(kinds[0], "phase");
    assert_eq!(kinds.iter().filter(|k| **k == "guard").count(), 3);
    assert!(
        w.says
            .iter()
            .any(|s| s == "chaos: every fault is done; cool-down")
    );
}

#[test]
fn a_signal_waits_while_a_recovery_is_open() {
    let source = text("max_failed_recoveries = 0", KILLS_3, PHASES);
    let mut r = runner_with(&source, Ready::Listen);
    let mut w = World::new();
    // The replacement runs at once but listens only 1.5 s later, longer than the interval:
    // a live instance the next signal must not hit before the recovery ends.
    w.listen_delay = 1_500 * MS;
    w.run(&mut r, 30 * SEC);
    let outcome = r.finish(&end(&w));
    for pair in outcome.result.episodes.windows(2) {
        let ready = pair[0].at_ns.ready.unwrap();
        let next_fault = outcome.result.faults[pair[1].id as usize - 1].record.ts_ns;
        assert!(next_fault >= ready, "a fault during a recovery: {pair:#?}");
    }
    assert_eq!(outcome.verdict, Verdict::Held);
}

#[test]
fn the_episode_timeout_guard_aborts_when_the_service_stays_down() {
    let source = text(
        "max_failed_recoveries = 0",
        KILLS_3,
        "[guards]\nepisode_timeout = \"1s\"\n\n[phases]\nbaseline = \"1s\"\n",
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.restarts = 0;
    w.run(&mut r, 20 * SEC);
    assert!(w.stopped);
    let outcome = r.finish(&end(&w));
    assert_eq!((outcome.verdict, outcome.code), (Verdict::Aborted, 3));
    let why = outcome.result.abort.clone().unwrap();
    assert!(why.contains("not recovered within the guard's 1s"), "{why}");
    assert_eq!(outcome.result.injected, 1, "no fault after the abort");
    let kinds = w.kinds();
    let abort = kinds.iter().position(|k| *k == "abort").unwrap();
    assert!(!kinds[abort..].contains(&"fault"), "{kinds:?}");
}

#[test]
fn consecutive_failures_abort() {
    let source = text(
        "max_failed_recoveries = 5",
        KILLS_3,
        "[guards]\nmax_consecutive_failures = 1\n\n[phases]\nbaseline = \"1s\"\n",
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.restarts = 0;
    w.run(&mut r, 20 * SEC);
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.verdict, Verdict::Aborted);
    assert!(
        outcome
            .result
            .abort
            .as_deref()
            .unwrap()
            .starts_with("1 failed recoveries in a row"),
        "{:?}",
        outcome.result.abort
    );
    assert!(w.audit.iter().any(|e| matches!(e,
        Entry::Guard(g) if g.decision == AuditDecision::Abort && g.episode == Some(1))));
}

#[test]
fn crashes_beyond_the_baseline_rate_abort_and_chaos_kills_are_not_crashes() {
    let source = text(
        "max_failed_recoveries = 5",
        "[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 5\ninterval = \"3s\"\n",
        "[guards]\ncrash_rate_factor = 1.0\n\n[phases]\nbaseline = \"2s\"\n",
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.run(&mut r, 2_500 * MS);
    assert!(r.injected() >= 1, "one chaos kill, not a crash");
    // Two deaths of their own (exit code 1) within the baseline-long stretch.
    for delay in [100, 900] {
        let pid = w.instance.expect("an instance");
        let at = w.now + delay * MS;
        w.die(at, pid, 0, 1);
        w.run(&mut r, at + 200 * MS);
    }
    w.run(&mut r, 10 * SEC);
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.verdict, Verdict::Aborted, "{:?}", w.says);
    assert!(
        outcome
            .result
            .abort
            .as_deref()
            .unwrap()
            .starts_with("crash rate: 2 crashes")
    );
    assert!(
        w.says
            .iter()
            .any(|s| s.contains(", a crash chaos did not cause)"))
    );
}

#[test]
fn a_crash_in_the_baseline_is_counted_not_guarded() {
    let source = text(
        "max_failed_recoveries = 5",
        KILLS_3,
        "[guards]\nmax_consecutive_failures = 1\n\n[phases]\nbaseline = \"2s\"\ncooldown = \"100ms\"\n",
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.die(200 * MS, 11, 0, 1);
    w.run(&mut r, 30 * SEC);
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.result.baseline.crashes, 1);
    assert_eq!(outcome.verdict, Verdict::Held, "{:#?}", outcome.clauses);
    assert_eq!(outcome.result.episodes.len(), 4);
}

#[test]
fn a_closed_window_holds_the_signals_and_the_run_is_not_a_pass() {
    // The clock is Monday 00:00 UTC; the window opens at 10:00.
    let faults = format!("{KILLS_3}windows = [\"Mon 10:00-11:00 UTC\"]\n");
    let source = text(
        "max_failed_recoveries = 0",
        &faults,
        "[phases]\nbaseline = \"100ms\"\nmax_duration = \"3s\"\n",
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.run(&mut r, 10 * SEC);
    assert!(w.gathers.is_empty());
    assert!(w.says.iter().any(|s| s.contains("max_duration reached")));
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.verdict, Verdict::Refuted);
    let c = clause(&outcome, "faults injected, confirmed and accounted for");
    assert!(
        !c.held && c.detail.contains("3 scheduled signal(s) never fired"),
        "{c:?}"
    );
}

#[test]
fn a_window_that_opens_lets_the_signals_go_on_the_injected_clock() {
    // Open from 00:00:30 on, by the run's own clock (an overnight window from Sunday).
    let faults = format!("{KILLS_3}windows = [\"Mon 00:01-23:59 UTC\"]\n");
    let source = text(
        "max_failed_recoveries = 0",
        &faults,
        "[phases]\nbaseline = \"100ms\"\ncooldown = \"100ms\"\n",
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.run(&mut r, 120 * SEC);
    assert!(
        w.gathers[0] >= 60 * SEC,
        "not before 00:01: {:?}",
        w.gathers
    );
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.verdict, Verdict::Held, "{:#?}", outcome.clauses);
}

#[test]
fn verify_runs_after_each_recovery_and_at_the_end() {
    let source = text("verify = { command = \"true\" }", KILLS_3, PHASES);
    let mut r = runner(&source);
    let mut w = World::new();
    w.verify_fails_after = vec![2];
    w.run(&mut r, 20 * SEC);
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.verdict, Verdict::Refuted);
    let after = clause(&outcome, "verify passes after each recovery");
    assert!(!after.held);
    assert_eq!(
        after.detail,
        "2 passed, 1 failed; first failure: after episode 2: 2 records lost"
    );
    assert!(clause(&outcome, "verify passes at the end").held);
    let verifies = w
        .audit
        .iter()
        .filter(|e| matches!(e, Entry::Verify(_)))
        .count();
    assert_eq!(verifies, 4, "three after, one at the end");
}

#[test]
fn a_failing_verify_at_the_end_refutes() {
    let source = text("verify = { command = \"true\" }", KILLS_3, PHASES);
    let mut r = runner(&source);
    let mut w = World::new();
    w.verify_fails_at_end = true;
    w.run(&mut r, 20 * SEC);
    let outcome = r.finish(&end(&w));
    let c = clause(&outcome, "verify passes at the end");
    assert!(!c.held && c.detail == "2 records lost", "{c:?}");
}

#[test]
fn ctrl_c_aborts_disarms_and_skips_the_last_verify() {
    let source = text(
        "verify = { command = \"true\" }",
        &format!(
            "{KILLS_3}\n[[faults]]\nkind = \"trigger\"\nsyscall = \"fdatasync\"\nnth = 3\nsignal = \"KILL\"\ncount = 2\n"
        ),
        PHASES,
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.run(&mut r, 1_500 * MS);
    assert_eq!(
        w.armed,
        [KernelRule::Trigger],
        "armed in the injection phase"
    );
    w.feed(&mut r, Input::Stop(StopCause::Interrupted));
    assert!(w.stopped && w.armed.is_empty());
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.verdict, Verdict::Aborted);
    assert_eq!(
        outcome.result.abort.as_deref(),
        Some("interrupted by a signal (Ctrl-C or SIGTERM)")
    );
    assert_eq!(
        clause(&outcome, "verify passes at the end").detail,
        "not run (the run was aborted)"
    );
    assert!(w.audit.iter().any(|e| matches!(e,
        Entry::Disarmed(s) if s.reason.as_deref() == Some("abort"))));
}

#[test]
fn a_failure_of_the_driver_aborts_the_run() {
    let source = text("max_failed_recoveries = 0", KILLS_3, PHASES);
    let mut r = runner(&source);
    let mut w = World::new();
    w.run(&mut r, 1_500 * MS);
    w.feed(
        &mut r,
        Input::Stop(StopCause::Failure(
            "the audit log cannot be written: disk full".into(),
        )),
    );
    let outcome = r.finish(&end(&w));
    assert_eq!((outcome.verdict, outcome.code), (Verdict::Aborted, 3));
    assert_eq!(
        outcome.result.abort.as_deref(),
        Some("the audit log cannot be written: disk full")
    );
}

#[test]
fn the_kernel_trigger_is_armed_for_the_injection_and_disarmed_at_its_count() {
    let source = text(
        "max_failed_recoveries = 0",
        "[[faults]]\nkind = \"trigger\"\nsyscall = \"fdatasync\"\nnth = 20\nsignal = \"KILL\"\ncount = 2\n",
        PHASES,
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.run(&mut r, 500 * MS);
    assert!(w.armed.is_empty(), "disarmed through the baseline");
    w.run(&mut r, 1_200 * MS);
    assert_eq!(w.armed, [KernelRule::Trigger]);
    for _ in 0..2 {
        let pid = w.instance.unwrap();
        let fault = KernelFault {
            event: Inject {
                ts_ns: w.now,
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
            ppid: SUPERVISOR,
        };
        w.feed(&mut r, Input::KernelFault(fault));
        w.die(w.now + 100_000, pid, 9, 0);
        let until = w.now + 500 * MS;
        w.run(&mut r, until);
    }
    assert!(w.armed.is_empty(), "its count fired");
    w.run(&mut r, 10 * SEC);
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.result.injected, 2);
    assert!(
        outcome
            .result
            .faults
            .iter()
            .all(|f| f.record.backend == Backend::BpfSendSignal)
    );
    assert_eq!(outcome.result.baseline.crashes, 0);
    assert!(w.says.iter().any(|s| s.ends_with("[kernel]")));
    // Kernel-fired deaths are chaos's: no crash, and the hypothesis holds.
    assert_eq!(outcome.verdict, Verdict::Held, "{:#?}", outcome.clauses);
}

#[test]
fn a_signal_the_kernel_refuses_is_not_a_fault_and_the_run_is_not_a_pass() {
    let source = text("max_failed_recoveries = 0", KILLS_3, PHASES);
    let mut r = runner(&source);
    let mut w = World::new();
    w.sends_fail = true;
    w.run(&mut r, 20 * SEC);
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.result.injected, 0);
    assert!(
        w.says
            .iter()
            .any(|s| s.starts_with("chaos: signal to 11 failed"))
    );
    assert!(!clause(&outcome, "faults injected, confirmed and accounted for").held);
    assert_eq!(outcome.verdict, Verdict::Refuted);
}

#[test]
fn no_instance_to_hit_holds_the_signal_until_the_run_ends() {
    let source = text(
        "max_failed_recoveries = 0",
        KILLS_3,
        "[phases]\nbaseline = \"100ms\"\nmax_duration = \"2s\"\n",
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.no_candidates = true;
    w.run(&mut r, 10 * SEC);
    assert!(
        w.gathers.len() > 10,
        "it keeps looking: {}",
        w.gathers.len()
    );
    let outcome = r.finish(&end(&w));
    assert_eq!(outcome.result.injected, 0);
    assert_eq!(outcome.verdict, Verdict::Refuted);
}

#[test]
fn a_fault_without_proof_fails_the_first_clause() {
    let source = text("max_failed_recoveries = 5", KILLS_3, PHASES);
    let mut r = runner(&source);
    let mut w = World::new();
    // The first signal goes out, but the kernel never shows it; the instance then exits
    // cleanly on its own, which proves nothing.
    w.silent_kills = 1;
    w.run(&mut r, 1_050 * MS);
    assert_eq!(r.injected(), 1);
    w.die(w.now + MS, 11, 0, 0);
    w.run(&mut r, 20 * SEC);
    let outcome = r.finish(&end(&w));
    let first = clause(&outcome, "faults injected, confirmed and accounted for");
    assert!(
        !first.held && first.detail.contains("1 without proof"),
        "{first:?}"
    );
}

#[test]
fn the_max_duration_ends_the_run_with_what_was_left() {
    let source = text(
        "max_failed_recoveries = 0",
        "[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 10\ninterval = \"1s\"\n",
        "[phases]\nbaseline = \"100ms\"\nmax_duration = \"3500ms\"\n",
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.run(&mut r, 20 * SEC);
    assert!(w.stopped);
    assert!(w.now <= 3_600 * MS, "{}", w.now);
    let outcome = r.finish(&end(&w));
    assert!(outcome.result.injected >= 3 && outcome.result.injected < 10);
    assert!(
        clause(&outcome, "faults injected, confirmed and accounted for")
            .detail
            .contains("never fired")
    );
}

#[test]
fn a_recording_of_the_inputs_replays_the_same_result_byte_for_byte() {
    let source = text(
        "max_failed_recoveries = 0\nlatency = [{ phase = \"total\", quantile = \"p99\", under = \"1s\" }]\nverify = { command = \"true\" }",
        "[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 4\ninterval = \"1s\"\njitter = \"300ms\"\n",
        PHASES,
    );
    let mut r = runner(&source);
    let mut w = World::new();
    w.verify_fails_after = vec![3];
    w.run(&mut r, 30 * SEC);
    let end = end(&w);
    let live = r.finish(&end);
    let mut buffer = Vec::new();
    let mut recorder = Recorder::new(&mut buffer, &header(&source)).unwrap();
    for input in &w.inputs {
        recorder.input(input).unwrap();
    }
    recorder.end(&end).unwrap();
    let recording = Recording::<RunHeader>::from_reader(Path::new("r"), buffer.as_slice()).unwrap();
    assert_eq!(recording.inputs, w.inputs);
    let experiment = check(&recording.header.source, &recording.header.file).unwrap();
    let mut replayed = Runner::new(experiment, recording.header);
    let mut actions = Vec::new();
    for input in &recording.inputs {
        replayed.feed(input, &mut actions);
    }
    let again = replayed.finish(&recording.end.unwrap());
    let json = |o: &RunOutcome| serde_json::to_string_pretty(&o.result).unwrap();
    assert_eq!(json(&live), json(&again));
    assert_eq!(
        live.verdict,
        Verdict::Refuted,
        "verify failed after episode 3"
    );
}

#[test]
fn the_end_entry_names_the_verdict_and_each_clause() {
    let source = text("max_failed_recoveries = 0", KILLS_3, PHASES);
    let mut r = runner(&source);
    let mut w = World::new();
    w.run(&mut r, 20 * SEC);
    let outcome = r.finish(&end(&w));
    let Entry::End(e) = Runner::end_entry(&outcome) else {
        panic!()
    };
    assert_eq!(
        (e.verdict.as_deref(), e.exit_code, e.injected),
        (Some("held"), Some(0), 3)
    );
    assert_eq!(e.clauses.len(), outcome.clauses.len());
}

const TERMS_2: &str =
    "[[faults]]\nkind = \"signal\"\nsignal = \"TERM\"\ncount = 2\ninterval = \"1s\"\n";

#[test]
fn a_signal_the_service_handles_is_no_effect_which_a_hypothesis_may_forbid_or_require() {
    for (no_effect, clause_name, held) in [
        ("allow", None, true),
        ("forbid", Some("every fault has an effect"), false),
        ("require", Some("no fault has an effect"), true),
    ] {
        let hypothesis = format!("max_failed_recoveries = 0\nno_effect = \"{no_effect}\"");
        let source = text(&hypothesis, TERMS_2, PHASES);
        let mut r = runner(&source);
        let mut w = World::new();
        w.survives = true;
        w.run(&mut r, 30 * SEC);
        assert!(w.stopped, "{no_effect}: the run ended by itself");
        let outcome = r.finish(&end(&w));
        let outcomes: Vec<_> = outcome
            .result
            .faults
            .iter()
            .map(|f| f.outcome.name())
            .collect();
        assert_eq!(outcomes, ["no_effect", "no_effect"], "{no_effect}");
        // Each fault waited out its effect window before the next.
        let f = &outcome.result.faults;
        assert!(f[1].record.ts_ns - f[0].record.ts_ns >= 2 * SEC, "{f:?}");
        assert!(clause(&outcome, "faults injected, confirmed and accounted for").held);
        if let Some(name) = clause_name {
            assert_eq!(clause(&outcome, name).held, held, "{no_effect}");
        }
        let verdict = if held {
            Verdict::Held
        } else {
            Verdict::Refuted
        };
        assert_eq!(
            outcome.verdict, verdict,
            "{no_effect}: {:#?}",
            outcome.clauses
        );
    }
}

#[test]
fn a_run_is_never_held_over_a_fault_it_could_not_account_for() {
    let source = text("max_failed_recoveries = 0", TERMS_2, PHASES);
    // Interrupted inside the first fault's effect window.
    let mut r = runner(&source);
    let mut w = World::new();
    w.survives = true;
    w.run(&mut r, 1_500 * MS);
    assert_eq!(r.injected(), 1);
    let outcome = r.finish(&end(&w));
    let c = clause(&outcome, "faults injected, confirmed and accounted for");
    assert!(!c.held, "{c:?}");
    assert!(
        c.detail
            .contains("1 not accounted for (fault 1: the run ended before its effect was known)"),
        "{c:?}"
    );
    assert_eq!(outcome.result.faults[0].outcome.name(), "unmeasured");
    assert_ne!(outcome.verdict, Verdict::Held);

    // Ended normally, but the kernel lost events: "nothing happened" cannot be told.
    let mut r = runner(&source);
    let mut w = World::new();
    w.survives = true;
    w.run(&mut r, 30 * SEC);
    let mut lossy = end(&w);
    lossy.counters.lost = 4;
    let outcome = r.finish(&lossy);
    assert!(
        outcome
            .result
            .faults
            .iter()
            .all(|f| f.outcome.name() == "unmeasured"),
        "{:?}",
        outcome.result.faults
    );
    assert_ne!(outcome.verdict, Verdict::Held, "{:#?}", outcome.clauses);
}

#[test]
fn each_fault_links_to_its_episode_and_back() {
    let source = text("max_failed_recoveries = 0", KILLS_3, PHASES);
    let mut r = runner(&source);
    let mut w = World::new();
    w.run(&mut r, 20 * SEC);
    let outcome = r.finish(&end(&w));
    for (fault, episode) in outcome.result.faults.iter().zip(&outcome.result.episodes) {
        assert_eq!(
            fault.outcome,
            FaultOutcome::Episode {
                episode: episode.id
            }
        );
        assert_eq!(episode.fault_id, Some(fault.record.id));
    }
}
