//! A supervisor running the sample queue in a cgroup the test creates (shared by the measure
//! and run suites).

use std::{
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use chaos_tests::{
    Observer, Spawned, TestCgroup, children_of, comm_of, free_port, scratch_dir, wait_until,
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

pub const QUEUE: &str = env!("CARGO_BIN_EXE_chaos-queue");
pub const QUEUE_COMM: &str = "chaos-queue";
/// How often the test looks again for a process or a listening port.
pub const LOOK: Duration = Duration::from_millis(2);
/// runsv and supervise wait a second before restarting a service that ran for less than one
/// (runit's runsv.c, daemontools' supervise.c); an instance older than this is "settled".
pub const SETTLED: Duration = Duration::from_millis(1100);
/// A settled restart takes milliseconds here (median 2 to 4 ms); on a busy CI machine it may
/// take tens. Anything under this is clearly not a one-second throttle.
pub const NOT_THROTTLED: u64 = 500_000_000;

/// A supervisor the test started in its own cgroup, running the sample queue.
pub struct Supervised {
    pub supervisor: Spawned,
    pub port: u16,
    pub dir: tempfile::TempDir,
    // Dropped last (fields drop in order): kills whatever the supervisor left behind.
    _cgroup: TestCgroup,
}

impl Supervised {
    /// Starts `program` (a supervisor command line) inside a new cgroup.
    pub fn start(name: &str, dir: tempfile::TempDir, port: u16, program: &[&str]) -> Self {
        // The test runs as a subreaper, so that nothing it starts is ever left to pid 1.
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        let cgroup = TestCgroup::new(name);
        let procs = cgroup.path.join("cgroup.procs");
        let script = format!("echo $$ > {} && exec \"$@\"", procs.display());
        let supervisor = Spawned::new(
            Command::new("sh")
                .args(["-c", &script, "sh"])
                .args(program)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        Self {
            supervisor,
            port,
            dir,
            _cgroup: cgroup,
        }
    }

    pub fn pid(&self) -> u32 {
        self.supervisor.pid()
    }

    /// The cgroup the test made for it.
    pub fn cgroup_path(&self) -> PathBuf {
        self._cgroup.path.clone()
    }

    /// The supervisor's child running the queue, once it accepts connections.
    pub fn ready_instance(&self) -> u32 {
        self.ready_child(QUEUE_COMM)
    }

    /// The supervisor's child named `comm`, once the port accepts connections.
    pub fn ready_child(&self, comm: &str) -> u32 {
        let mut found = 0;
        wait_until("a listening instance", LOOK, || {
            found = children_of(self.pid())
                .into_iter()
                .find(|&c| comm_of(c) == comm)
                .unwrap_or(0);
            found != 0 && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        found
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// A service directory whose `run` execs the queue (runit, daemontools and s6 all read one).
pub fn service_dir(port: u16, notify_fd: Option<u32>) -> tempfile::TempDir {
    let dir = scratch_dir();
    let data = dir.path().join("data");
    let notify = notify_fd.map_or(String::new(), |fd| format!(" --notify-fd {fd}"));
    let run = format!(
        "#!/bin/sh\nexec {QUEUE} serve --dir {} --port {port}{notify}\n",
        data.display()
    );
    let path = dir.path().join("run");
    std::fs::write(&path, run).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some(fd) = notify_fd {
        std::fs::write(dir.path().join("notification-fd"), format!("{fd}\n")).unwrap();
    }
    dir
}

/// `supervisor DIR` (runsv, supervise, s6-supervise) on a fresh service directory.
pub fn supervise_run_dir(name: &str, supervisor: &str, notify_fd: Option<u32>) -> Supervised {
    let port = free_port();
    let dir = service_dir(port, notify_fd);
    let path = dir.path().to_str().unwrap().to_string();
    Supervised::start(name, dir, port, &[supervisor, &path])
}

pub fn kill_instance(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill our own instance");
}

/// Starts `chaos measure` on the supervisor and kills the instance once per entry of
/// `settle`, each after that much uptime, waiting for each episode; chaos is left running
/// (`.finish()` stops it).
pub fn measure_kills(svc: &Supervised, extra: &[&str], settle: &[Duration]) -> Observer {
    let episodes = settle.len().to_string();
    let mut args = vec!["--episodes", &episodes];
    args.extend_from_slice(extra);
    measure_kills_then_wait(svc, &args, settle)
}

/// As [`measure_kills`], but chaos measure goes on after the kills (until `.stop()`).
pub fn measure_kills_then_wait(svc: &Supervised, extra: &[&str], settle: &[Duration]) -> Observer {
    let first = svc.ready_instance();
    let pid = svc.pid().to_string();
    let kills = settle.len() as u64;
    let mut args = vec!["--supervisor", &pid, "--ready", "listen"];
    args.extend_from_slice(extra);
    let mut measure = Observer::measure(&args);
    let mut instance = first;
    let mut since = Instant::now();
    for (id, &settle) in (1..=kills).zip(settle) {
        wait_until("the instance to settle", LOOK, || since.elapsed() >= settle);
        kill_instance(instance);
        measure.wait_for(&format!("episode {id}"), |e| {
            e["type"] == "episode" && e["data"]["id"] == id
        });
        if id < kills {
            instance = svc.ready_instance();
            since = Instant::now();
        }
    }
    measure
}

/// A queue under runsv, settled (runsv throttles a service that ran for less than a second).
pub fn queue_under_runit(name: &str) -> (Supervised, u32) {
    let svc = supervise_run_dir(name, "runsv", None);
    let instance = svc.ready_instance();
    let since = std::time::Instant::now();
    wait_until("the instance to settle", LOOK, || {
        since.elapsed() >= SETTLED
    });
    (svc, instance)
}
