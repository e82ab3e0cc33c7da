//! A supervisor running the sample queue in a cgroup the test creates (shared by the measure
//! and run suites).

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, process::Command, time::Duration};

use chaos_tests::{Spawned, TestCgroup, children_of, comm_of, free_port, scratch_dir, wait_until};

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

    /// The supervisor's child running the queue, once it accepts connections.
    pub fn ready_instance(&self) -> u32 {
        let mut found = 0;
        wait_until("a listening instance", LOOK, || {
            found = children_of(self.pid())
                .into_iter()
                .find(|&c| comm_of(c) == QUEUE_COMM)
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
