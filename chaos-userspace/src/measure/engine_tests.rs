//! The episode logic on synthetic streams: each test is a story a supervisor can tell.
//! One concern (the engine's behaviour, driven through its one entry point), hence one file
//! past 700 lines: its stories share the stream builders at the top.

use super::*;
use crate::{
    episode::*,
    event::{Exec, Exit, Fork, Fsync, Listen, Reap, Signal},
    measure::service::InitialInstance,
};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn service(ready: Ready, instances: &[(u32, u32)]) -> Service {
    let mut supervisors: Vec<u32> = instances.iter().map(|&(_, s)| s).collect();
    supervisors.sort_unstable();
    supervisors.dedup();
    Service {
        comm: "svc".into(),
        supervisors,
        explicit_supervisors: true,
        instances: instances
            .iter()
            .map(|&(pid, supervisor)| InitialInstance {
                pid,
                supervisor,
                child: pid,
            })
            .collect(),
        ready,
        recovery_timeout_ns: 30 * SEC,
        workers: Vec::new(),
        ports: Vec::new(),
        data_dir: None,
        unit: None,
    }
}

fn mark(episode: u64, ts_ns: u64) -> ReadyMark {
    ReadyMark {
        episode,
        ts_ns,
        stale: Vec::new(),
    }
}

/// Builds events at increasing times.
struct Story {
    engine: Engine,
    out: Vec<Output>,
}

impl Story {
    fn new(service: Service) -> Self {
        Self {
            engine: Engine::new(service),
            out: Vec::new(),
        }
    }

    fn feed(&mut self, event: Event) -> &mut Self {
        self.engine.event(&event, &mut self.out);
        self
    }

    fn kill(&mut self, ts: u64, pid: u32, sig: u32) -> &mut Self {
        self.feed(Event::Signal(Signal {
            ts_ns: ts,
            sender_pid: 99,
            sender_comm: "chaos".into(),
            target_pid: pid,
            target_comm: "svc".into(),
            signal: sig,
            signal_name: signal_name(sig),
            code: 0,
            group: true,
            result: "delivered".into(),
        }))
    }

    fn exit(&mut self, ts: u64, pid: u32, ppid: u32, sig: u32, code: u32) -> &mut Self {
        self.feed(Event::Exit(Exit {
            ts_ns: ts,
            pid,
            ppid,
            comm: "svc".into(),
            exit_code: code,
            signal: sig,
            core_dumped: false,
            lifetime_ns: 5 * SEC,
            unsynced_bytes: Some(512),
        }))
    }

    fn reap(&mut self, ts: u64, waiter: u32, child: u32) -> &mut Self {
        self.feed(Event::Reap(Reap {
            ts_ns: ts,
            pid: waiter,
            child_pid: child,
        }))
    }

    fn fork(&mut self, ts: u64, parent: u32, child: u32) -> &mut Self {
        self.feed(Event::Fork(Fork {
            ts_ns: ts,
            parent_pid: parent,
            child_pid: child,
        }))
    }

    fn exec(&mut self, ts: u64, pid: u32, ppid: u32, comm: &str) -> &mut Self {
        self.feed(Event::Exec(Exec {
            ts_ns: ts,
            pid,
            ppid,
            old_pid: pid,
            comm: comm.into(),
            filename: format!("/usr/bin/{comm}"),
        }))
    }

    fn listen(&mut self, ts: u64, pid: u32) -> &mut Self {
        self.feed(Event::Listen(Listen {
            ts_ns: ts,
            pid,
            port: 8080,
            family: "inet".into(),
        }))
    }

    /// A settled death and restart under supervisor `sup`: KILL at `t`, then 1 ms per step.
    fn restart(&mut self, t: u64, sup: u32, old: u32, new: u32) -> &mut Self {
        self.kill(t, old, 9)
            .exit(t + MS, old, sup, 9, 0)
            .reap(t + 2 * MS, sup, old)
            .fork(t + 3 * MS, sup, new)
            .exec(t + 4 * MS, new, sup, "svc")
    }

    fn episodes(&mut self) -> Vec<Episode> {
        self.out
            .drain(..)
            .filter_map(|o| match o {
                Output::Episode(e) => Some(*e),
                Output::Probe { .. } | Output::Inspect { .. } => None,
            })
            .collect()
    }
}

#[test]
fn a_settled_restart_has_every_phase() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    let episodes = story.restart(100 * MS, 10, 11, 12).episodes();
    assert_eq!(episodes.len(), 1);
    let e = &episodes[0];
    assert_eq!(e.outcome, Outcome::Recovered);
    assert_eq!((e.old_pid, e.new_pid, e.supervisor), (11, Some(12), 10));
    assert_eq!(e.fault.as_ref().unwrap().signal_name, "SIGKILL");
    assert_eq!(e.exit.unsynced_bytes, Some(512));
    assert_eq!(
        e.phases_ns,
        RecoveryPhases {
            fault_to_exit: Some(MS),
            exit_to_reaped: Some(MS),
            reaped_to_forked: Some(MS),
            forked_to_exec: Some(MS),
            exec_to_ready: Some(0),
        }
    );
    assert_eq!(e.total_ns, Some(4 * MS));
    assert_eq!(e.last_milestone, "ready");
    assert_eq!(story.engine.stats().recovered, 1);
}

#[test]
fn a_supervisor_restarting_twice_gives_two_episodes() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    story
        .restart(100 * MS, 10, 11, 12)
        .restart(2 * SEC, 10, 12, 13);
    let episodes = story.episodes();
    assert_eq!(
        episodes
            .iter()
            .map(|e| (e.id, e.old_pid, e.new_pid))
            .collect::<Vec<_>>(),
        [(1, 11, Some(12)), (2, 12, Some(13))]
    );
}

#[test]
fn interleaved_services_keep_to_their_own_supervisor() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10), (21, 20)]));
    story
        .kill(100 * MS, 11, 9)
        .kill(100 * MS + 1, 21, 15)
        .exit(101 * MS, 11, 10, 9, 0)
        .exit(102 * MS, 21, 20, 15, 0)
        .reap(103 * MS, 20, 21)
        .reap(104 * MS, 10, 11)
        .fork(105 * MS, 20, 22)
        .fork(106 * MS, 10, 12)
        .exec(107 * MS, 12, 10, "svc")
        .exec(108 * MS, 22, 20, "svc");
    let episodes = story.episodes();
    let pairs: Vec<_> = episodes
        .iter()
        .map(|e| {
            (
                e.supervisor,
                e.old_pid,
                e.new_pid.unwrap(),
                e.total_ns.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [(10, 11, 12, 7 * MS), (20, 21, 22, 8 * MS - 1)],
        "each death pairs with its own supervisor's replacement"
    );
    assert_eq!(episodes[1].fault.as_ref().unwrap().signal_name, "SIGTERM");
}

#[test]
fn a_reused_pid_is_a_new_process() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    // The replacement gets the dead instance's pid back (possible once it was reaped).
    story.restart(100 * MS, 10, 11, 11);
    let first = story.episodes();
    assert_eq!((first[0].old_pid, first[0].new_pid), (11, Some(11)));
    story.restart(SEC, 10, 11, 12);
    let second = story.episodes();
    assert_eq!(second.len(), 1, "the reused pid is the live instance");
    assert_eq!(second[0].phases_ns.reaped_to_forked, Some(MS));
}

#[test]
fn a_death_during_startup_is_a_failed_start_of_the_same_outage() {
    let mut story = Story::new(service(Ready::Listen, &[(11, 10)]));
    story
        .restart(100 * MS, 10, 11, 12)
        // The replacement dies before listening; the supervisor throttles for a second.
        .exit(110 * MS, 12, 10, 0, 1)
        .reap(111 * MS, 10, 12)
        .fork(1111 * MS, 10, 13)
        .exec(1112 * MS, 13, 10, "svc")
        .listen(1120 * MS, 13);
    let episodes = story.episodes();
    assert_eq!(episodes.len(), 1);
    let e = &episodes[0];
    assert_eq!((e.failed_starts, e.new_pid), (1, Some(13)));
    assert_eq!(
        e.total_ns,
        Some(1020 * MS),
        "from the first fault to the ready"
    );
    assert_eq!(
        e.phases_ns.reaped_to_forked,
        Some(SEC),
        "the last attempt's phases"
    );
    assert_eq!(e.phases_ns.exec_to_ready, Some(8 * MS));
}

#[test]
fn exits_of_workers_and_threads_are_not_deaths() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    story
        .fork(SEC, 11, 14)
        .feed(Event::Fsync(Fsync {
            ts_ns: SEC + 1,
            pid: 14,
            call: "fsync".into(),
            fd: Some(3),
            dev: None,
            ino: None,
            datasync: Some(false),
            latency_ns: 2 * MS,
            ret: 0,
        }))
        .exit(SEC + 2, 14, 11, 0, 0)
        // A worker that execs the service's own binary is still part of instance 11.
        .fork(SEC + 3, 11, 15)
        .exec(SEC + 4, 15, 11, "svc")
        .exit(SEC + 5, 15, 11, 9, 0);
    assert!(story.episodes().is_empty());
    assert_eq!(story.engine.instance_count(), 1);
    assert_eq!(story.engine.stats().fsync_latency.len(), 1);
}

#[test]
fn other_children_of_the_supervisor_are_not_replacements() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    story
        .kill(100 * MS, 11, 9)
        .exit(101 * MS, 11, 10, 9, 0)
        .reap(102 * MS, 10, 11)
        // runsv runs ./finish, then the log service's svlogd restarts for its own reasons.
        .fork(103 * MS, 10, 30)
        .exec(104 * MS, 30, 10, "finish")
        .exit(105 * MS, 30, 10, 0, 0)
        .reap(106 * MS, 10, 30)
        .fork(107 * MS, 10, 31)
        .exec(108 * MS, 31, 10, "svlogd")
        // Then the run script, a shell that does not exec, starts the service.
        .fork(110 * MS, 10, 12)
        .exec(111 * MS, 12, 10, "sh")
        .fork(112 * MS, 12, 13)
        .exec(113 * MS, 13, 12, "svc");
    let episodes = story.episodes();
    assert_eq!(episodes.len(), 1);
    let e = &episodes[0];
    assert_eq!(e.new_pid, Some(13));
    assert_eq!(
        e.at_ns.forked,
        Some(110 * MS),
        "the shell's fork is the restart"
    );
    assert_eq!(e.phases_ns.reaped_to_forked, Some(8 * MS));
    // The next death is the service under the shell; the supervisor reaps the shell.
    story
        .kill(2 * SEC, 13, 9)
        .exit(2 * SEC + 1, 13, 12, 9, 0)
        .exit(2 * SEC + 2, 12, 10, 0, 137)
        .reap(2 * SEC + 3, 10, 12);
    story.engine.advance(40 * SEC, &mut story.out);
    let e = &story.episodes()[0];
    assert_eq!(e.at_ns.reaped, Some(2 * SEC + 3));
    assert_eq!(e.outcome, Outcome::Failed);
}

#[test]
fn a_death_with_no_restart_fails_at_the_timeout() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    story
        .kill(SEC, 11, 9)
        .exit(SEC + MS, 11, 10, 9, 0)
        .reap(SEC + 2 * MS, 10, 11);
    story.engine.advance(30 * SEC, &mut story.out);
    assert!(story.episodes().is_empty(), "not yet: the deadline is 31 s");
    story.engine.advance(31 * SEC + 1, &mut story.out);
    let episodes = story.episodes();
    let e = &episodes[0];
    assert_eq!(e.outcome, Outcome::Failed);
    assert_eq!(e.last_milestone, "reaped");
    assert_eq!(e.reason.as_deref(), Some("not recovered within 30.000s"));
    assert_eq!(e.total_ns, None);
    // A replacement after the deadline starts no episode of its own.
    story
        .fork(32 * SEC, 10, 12)
        .exec(32 * SEC + 1, 12, 10, "svc");
    assert!(story.episodes().is_empty());
    assert_eq!(story.engine.stats().failed, 1);
}

#[test]
fn a_supervisor_that_exits_fails_its_episode_at_once() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    story.exit(SEC, 11, 10, 0, 1).exit(SEC + MS, 10, 1, 0, 111);
    let e = &story.episodes()[0];
    assert_eq!(e.outcome, Outcome::Failed);
    assert_eq!(e.reason.as_deref(), Some("the supervisor (10) exited"));
    assert!(
        e.fault.is_none(),
        "exit code 1 with no signal: the exit is the start"
    );
}

#[test]
fn a_graceful_stop_starts_at_the_request() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    story
        .kill(SEC, 11, 1) // SIGHUP: a reload, not a stop
        .kill(SEC + MS, 11, 15)
        .exit(SEC + 50 * MS, 11, 10, 0, 0)
        .reap(SEC + 51 * MS, 10, 11)
        .fork(SEC + 52 * MS, 10, 12)
        .exec(SEC + 53 * MS, 12, 10, "svc");
    let e = &story.episodes()[0];
    assert_eq!(e.fault.as_ref().unwrap().signal_name, "SIGTERM");
    assert_eq!(e.phases_ns.fault_to_exit, Some(49 * MS));
}

#[test]
fn a_missing_milestone_folds_into_the_next_phase() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    // No reap seen (--no-reap) and no signal (it crashed on its own, exit code 2).
    story
        .exit(SEC, 11, 10, 0, 2)
        .fork(SEC + 5 * MS, 10, 12)
        .exec(SEC + 6 * MS, 12, 10, "svc");
    let e = &story.episodes()[0];
    assert_eq!(e.phases_ns.exit_to_reaped, None);
    assert_eq!(e.phases_ns.reaped_to_forked, Some(5 * MS));
    assert_eq!(e.total_ns, Some(6 * MS));
}

#[test]
fn probed_readiness_asks_for_a_probe_and_takes_its_time() {
    let tcp = Ready::Tcp {
        addr: "127.0.0.1:9".into(),
    };
    let mut story = Story::new(service(tcp, &[(11, 10)]));
    story.restart(SEC, 10, 11, 12);
    assert_eq!(
        story.out,
        [Output::Probe {
            episode: 1,
            new_pid: 12
        }]
    );
    story.out.clear();
    story.engine.ready(&mark(7, SEC + 9 * MS), &mut story.out);
    assert!(story.out.is_empty(), "an unknown episode is ignored");
    story.engine.ready(&mark(1, SEC + 9 * MS), &mut story.out);
    let e = &story.episodes()[0];
    assert_eq!(e.phases_ns.exec_to_ready, Some(5 * MS));
}

#[test]
fn found_by_name_a_new_parent_becomes_a_supervisor() {
    let mut by_name = service(Ready::Exec, &[(11, 10)]);
    by_name.explicit_supervisors = false;
    let mut story = Story::new(by_name);
    // Another copy appears under a parent chaos did not know: it is an instance.
    story.exec(SEC, 41, 40, "svc");
    assert_eq!(story.engine.instance_count(), 2);
    story.restart(2 * SEC, 40, 41, 42);
    assert_eq!(story.episodes()[0].supervisor, 40);

    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    story.exec(SEC, 41, 40, "svc");
    assert_eq!(
        story.engine.instance_count(),
        1,
        "explicit supervisors only"
    );
}

#[test]
fn measurement_end_leaves_open_episodes_unfinished() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    story.kill(SEC, 11, 9).exit(SEC + 1, 11, 10, 9, 0);
    story.engine.finish(2 * SEC, &mut story.out);
    let e = &story.episodes()[0];
    assert_eq!(e.outcome, Outcome::Unfinished);
    assert_eq!(e.last_milestone, "exit");
    assert_eq!(story.engine.stats().unfinished, 1);
}

#[test]
fn a_master_killed_leaves_its_workers_named_as_orphans_and_they_keep_it_down() {
    let tcp = Ready::Tcp {
        addr: "127.0.0.1:8080".into(),
    };
    let mut svc = service(tcp, &[(11, 10)]);
    // A worker alive before measurement began, and one forked after.
    svc.workers = vec![crate::measure::service::InitialWorker {
        pid: 20,
        parent: 11,
        comm: "svc".into(),
    }];
    let mut story = Story::new(svc);
    story.fork(SEC, 11, 21);
    assert_eq!(story.engine.role(11, 10), Some(crate::fault::Role::Main));
    assert_eq!(story.engine.role(21, 11), Some(crate::fault::Role::Worker));
    assert_eq!(story.engine.role(20, 11), Some(crate::fault::Role::Worker));
    assert_eq!(story.engine.role(10, 1), None, "the supervisor is no role");
    story.kill(2 * SEC, 11, 9).exit(2 * SEC + MS, 11, 10, 9, 0);
    assert_eq!(
        story.out,
        [Output::Inspect {
            episode: 1,
            pids: vec![(20, "svc".into()), (21, "svc".into())]
        }]
    );
    story.out.clear();
    let orphan = |pid| Orphan {
        pid,
        comm: "svc".into(),
        ports: vec![8080],
        files: Vec::new(),
        exited_ns: None,
    };
    story.engine.inspected(1, &[orphan(20), orphan(21)]);
    // The supervisor restarts it; the new instance cannot bind, the orphans answer.
    story
        .reap(2 * SEC + 2 * MS, 10, 11)
        .fork(2 * SEC + 3 * MS, 10, 12)
        .exec(2 * SEC + 4 * MS, 12, 10, "svc");
    story.out.clear();
    let stale = ReadyMark {
        episode: 1,
        ts_ns: 2 * SEC + 5 * MS,
        stale: vec![crate::episode::Holder {
            pid: 20,
            comm: "svc".into(),
        }],
    };
    story.engine.ready(&stale, &mut story.out);
    assert!(
        story.out.is_empty(),
        "answered by an orphan: not a recovery"
    );
    story.exit(3 * SEC, 21, 1, 15, 0);
    story.engine.advance(40 * SEC, &mut story.out);
    let e = &story.episodes()[0];
    assert_eq!(e.outcome, Outcome::Failed);
    assert_eq!(e.orphans.len(), 2);
    assert_eq!(e.orphans[1].exited_ns, Some(3 * SEC), "21 died later");
    assert_eq!(e.answered_by[0].pid, 20);
    let why = e.reason.as_deref().unwrap();
    assert!(
        why.contains("orphans of the old instance still hold its ports: 20 (svc, port 8080)")
            && !why.contains("21 (svc"),
        "{why}"
    );
    assert!(
        why.contains("the probe was answered by 20 (svc), not the new instance"),
        "{why}"
    );
}

fn unit_state(ts: u64, active: &str, sub: &str, main: u32) -> crate::systemd::UnitState {
    crate::systemd::UnitState {
        ts_ns: ts,
        active: active.into(),
        sub: sub.into(),
        result: "success".into(),
        exec_main_pid: main,
        exec_main_start_ns: None,
        exec_main_exit_ns: None,
        active_enter_ns: None,
        n_restarts: 0,
    }
}

#[test]
fn a_unit_is_ready_when_systemd_says_it_runs_with_its_own_timestamps_kept() {
    let mut story = Story::new(service(Ready::Unit, &[(11, 1)]));
    // pid 1 kills nothing: chaos's SIGKILL, then systemd's SIGCHLD handling and its reap.
    story.kill(100 * MS, 11, 9).exit(101 * MS, 11, 1, 9, 0);
    let dying = crate::systemd::UnitState {
        exec_main_exit_ns: Some(101 * MS + 300_000),
        ..unit_state(102 * MS, "activating", "auto-restart", 11)
    };
    story.engine.unit(&dying, &mut story.out);
    story
        .reap(101 * MS + 400_000, 1, 11)
        .fork(1_102 * MS, 1, 12)
        .exec(1_103 * MS, 12, 1, "svc");
    assert!(story.episodes().is_empty(), "exec'd, but not active yet");
    let running = crate::systemd::UnitState {
        exec_main_start_ns: Some(1_102 * MS + 100_000),
        active_enter_ns: Some(1_105 * MS),
        n_restarts: 1,
        ..unit_state(1_106 * MS, "active", "running", 12)
    };
    story.engine.unit(&running, &mut story.out);
    let episodes = story.episodes();
    assert_eq!(episodes.len(), 1);
    let e = &episodes[0];
    assert_eq!(e.outcome, Outcome::Recovered);
    assert_eq!(
        e.at_ns.ready,
        Some(1_105 * MS),
        "systemd's ActiveEnter timestamp"
    );
    let times = e.systemd.as_ref().unwrap();
    assert_eq!(times.offsets(&e.at_ns), (Some(-100_000), Some(100_000)));
    let o = story.engine.offsets();
    assert_eq!(o.episodes, 1);
    assert_eq!(
        (o.exit_vs_reaped_ns, o.start_vs_forked_ns),
        (Some(-100_000), Some(100_000))
    );
}

#[test]
fn a_running_state_that_came_before_the_exec_event_ends_the_episode_at_the_exec() {
    // Type=simple is active once forked, and D-Bus may be read before the ring buffer.
    let mut story = Story::new(service(Ready::Unit, &[(11, 1)]));
    story
        .kill(100 * MS, 11, 9)
        .exit(101 * MS, 11, 1, 9, 0)
        .reap(102 * MS, 1, 11);
    let running = crate::systemd::UnitState {
        active_enter_ns: Some(300 * MS),
        ..unit_state(301 * MS, "active", "running", 12)
    };
    story.engine.unit(&running, &mut story.out);
    assert!(story.episodes().is_empty());
    story.fork(300 * MS, 1, 12).exec(302 * MS, 12, 1, "svc");
    let e = &story.episodes()[0];
    assert_eq!(e.outcome, Outcome::Recovered);
    assert_eq!(e.at_ns.ready, Some(302 * MS), "never before the exec");
}

#[test]
fn a_unit_that_hit_its_start_limit_fails_the_episode_with_that_reason() {
    let mut story = Story::new(Service {
        unit: Some(crate::systemd::UnitInfo {
            name: "quick.service".into(),
            path: "/org/freedesktop/systemd1/unit/quick_2eservice".into(),
            control_group: "/system.slice/quick.service".into(),
            main_pid: 11,
            service_type: "simple".into(),
            restart: "always".into(),
            restart_usec: 100_000,
            start_limit_burst: 3,
            start_limit_interval_usec: 10_000_000,
            n_restarts: 0,
            version: "252".into(),
        }),
        ..service(Ready::Unit, &[(11, 1)])
    });
    story.kill(100 * MS, 11, 9).exit(101 * MS, 11, 1, 9, 0);
    let failed = crate::systemd::UnitState {
        result: "start-limit-hit".into(),
        ..unit_state(200 * MS, "failed", "failed", 11)
    };
    story.engine.unit(&failed, &mut story.out);
    let e = &story.episodes()[0];
    assert_eq!(e.outcome, Outcome::Failed);
    assert_eq!(
        e.reason.as_deref(),
        Some(
            "start-limit-hit: systemd stopped restarting the unit (StartLimitBurst=3 starts within 10s)"
        )
    );
    assert_eq!(
        e.systemd.as_ref().unwrap().result.as_deref(),
        Some("start-limit-hit")
    );
}

/// systemd 252 leaves the death's Result when the restart after it hits the start limit:
/// three starts (ExecMainStart) within StartLimitIntervalSec and a failed unit that would be
/// restarted mean the limit, with systemd's own Result kept as it said it.
#[test]
fn a_start_limit_that_systemd_reports_as_the_deaths_result_is_still_named() {
    let unit = crate::systemd::UnitInfo {
        name: "quick.service".into(),
        path: "/org/freedesktop/systemd1/unit/quick_2eservice".into(),
        control_group: "/system.slice/quick.service".into(),
        main_pid: 11,
        service_type: "exec".into(),
        restart: "always".into(),
        restart_usec: 100_000,
        start_limit_burst: 3,
        start_limit_interval_usec: 10_000_000,
        n_restarts: 0,
        version: "252".into(),
    };
    let on_abort = crate::systemd::UnitInfo {
        restart: "on-abort".into(),
        ..unit.clone()
    };
    for (unit, starts, result, limited) in [
        (&unit, 3, "signal", true),
        (&unit, 2, "signal", false),
        // on-abort does not restart after an exit code: that is no start limit.
        (&on_abort, 3, "exit-code", false),
    ] {
        let mut story = Story::new(Service {
            unit: Some(unit.clone()),
            ..service(Ready::Unit, &[(11, 1)])
        });
        for i in 0..starts {
            let running = crate::systemd::UnitState {
                exec_main_start_ns: Some((10 + i) * MS),
                ..unit_state((10 + i) * MS, "active", "running", 11)
            };
            story.engine.unit(&running, &mut story.out);
        }
        story.kill(100 * MS, 11, 9).exit(101 * MS, 11, 1, 9, 0);
        let failed = crate::systemd::UnitState {
            result: result.into(),
            ..unit_state(300 * MS, "failed", "failed", 11)
        };
        story.engine.unit(&failed, &mut story.out);
        let e = &story.episodes()[0];
        assert_eq!(e.outcome, Outcome::Failed);
        let reason = e.reason.as_deref().unwrap();
        assert_eq!(
            reason.starts_with(
                "start-limit-hit: systemd stopped restarting the unit (StartLimitBurst=3 starts within 10s): 3 starts seen"
            ),
            limited,
            "{reason}"
        );
        assert_eq!(e.systemd.as_ref().unwrap().result.as_deref(), Some(result));
    }
}

/// systemd 254 and later report a dying unit as failed (`failed-before-auto-restart`) before
/// its restart: the episode goes on to the replacement.
#[test]
fn a_unit_failed_on_its_way_to_a_restart_is_not_a_failed_episode() {
    let mut story = Story::new(service(Ready::Unit, &[(11, 1)]));
    story.kill(100 * MS, 11, 9).exit(101 * MS, 11, 1, 9, 0);
    let passing = crate::systemd::UnitState {
        result: "signal".into(),
        ..unit_state(102 * MS, "failed", "failed-before-auto-restart", 11)
    };
    story.engine.unit(&passing, &mut story.out);
    assert!(story.episodes().is_empty(), "still open");
    story
        .reap(103 * MS, 1, 11)
        .fork(300 * MS, 1, 12)
        .exec(301 * MS, 12, 1, "svc");
    let running = crate::systemd::UnitState {
        active_enter_ns: Some(302 * MS),
        ..unit_state(303 * MS, "active", "running", 12)
    };
    story.engine.unit(&running, &mut story.out);
    assert_eq!(story.episodes()[0].outcome, Outcome::Recovered);
}

#[test]
fn a_power_cut_starts_its_episode_at_the_cut_and_counts_each_killed_process_unsynced_bytes() {
    let mut story = Story::new(service(Ready::Exec, &[(11, 10)]));
    story.fork(50 * MS, 11, 13);
    story.engine.power_cut(&PowerCut {
        id: 7,
        cut: crate::power::Cut {
            freeze_ns: 90 * MS,
            frozen_ns: Some(92 * MS),
            cut_ns: Some(95 * MS),
            remounted_ns: Some(150 * MS),
            thawed_ns: Some(151 * MS),
            killed: vec![(11, "svc".into()), (13, "svc".into())],
            error: None,
        },
    });
    let episodes = story
        .kill(96 * MS, 11, 9)
        .kill(96 * MS, 13, 9)
        .exit(97 * MS, 13, 11, 9, 0)
        .exit(98 * MS, 11, 10, 9, 0)
        .reap(152 * MS, 10, 11)
        .fork(153 * MS, 10, 12)
        .exec(154 * MS, 12, 10, "svc")
        .episodes();
    assert_eq!(episodes.len(), 1);
    let e = &episodes[0];
    assert_eq!(e.at_ns.fault, Some(95 * MS), "the cut, not the SIGKILL");
    assert_eq!(e.phases_ns.fault_to_exit, Some(3 * MS));
    assert_eq!(e.total_ns, Some(59 * MS));
    let p = e.power.as_ref().expect("the cut");
    assert_eq!(p.fault_id, 7);
    assert_eq!(p.remount_ns, Some(55 * MS));
    let pids: Vec<u32> = p.unsynced.iter().map(|u| u.pid).collect();
    assert_eq!(pids, [13, 11]);
    assert_eq!(p.unsynced_bytes(), Some(1024));
    // A kill without a cut has no power section.
    let later = story.restart(300 * MS, 10, 12, 14).episodes();
    assert_eq!(later[0].power, None);
    assert_eq!(later[0].at_ns.fault, Some(300 * MS));
}
