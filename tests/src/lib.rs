//! Harness for the privileged integration tests: runs the real `chaos` binary against victims
//! the tests spawn themselves, and waits for expected events or a deadline (never a fixed sleep).
//! One concern, the harness every suite shares (spawning chaos and victims, waiting, cleanup),
//! which is why it stays one file past 700 lines.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The `chaos` binary under test: `CHAOS_BIN` (set by `cargo xtask test`) or the workspace's
/// debug build.
pub fn chaos_bin() -> PathBuf {
    let path = std::env::var_os("CHAOS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/chaos"));
    assert!(
        path.exists(),
        "{} missing: run the suite through `cargo xtask test`",
        path.display()
    );
    path
}

/// How every test starts chaos: a builder over the binary under test (ripgrep's
/// `TestCommand` is the model). Finish it with [`ChaosCmd::output`] (run to the end),
/// [`ChaosCmd::start`] (a running chaos whose stdout lines are read as they come) or
/// [`ChaosCmd::stream`] (a running `observe`/`measure --json`, its events parsed).
pub struct ChaosCmd {
    command: Command,
    shown: Vec<String>,
}

/// What a chaos run to its end left.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ChaosCmd {
    pub fn new() -> Self {
        Self {
            command: Command::new(chaos_bin()),
            shown: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.shown.push(arg.as_ref().to_string_lossy().into_owned());
        self.command.arg(arg);
        self
    }

    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Arguments as one readable line, split at spaces (none of them holds one).
    pub fn line(self, line: &str) -> Self {
        self.args(line.split_whitespace())
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Runs as this user and group (for the privilege checks).
    pub fn as_user(mut self, uid: u32, gid: u32) -> Self {
        use std::os::unix::process::CommandExt as _;
        self.command.uid(uid).gid(gid);
        self
    }

    /// The command line, for messages.
    pub fn shown(&self) -> String {
        self.shown.join(" ")
    }

    /// Runs chaos to completion.
    pub fn output(mut self) -> Finished {
        let output = self.command.output().expect("run chaos");
        Finished {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn spawn(mut self) -> Spawned {
        self.command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Spawned::new(&mut self.command)
    }
}

impl Default for ChaosCmd {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs chaos to completion with `args`; returns (exit code, stdout, stderr).
pub fn run_chaos(args: &[&str]) -> (i32, String, String) {
    let f = ChaosCmd::new().args(args).output();
    (f.code, f.stdout, f.stderr)
}

/// Why `run` is not a clean refusal of bad input naming `expected`: exit 2, the message on
/// the first line (and alone on it when it is chaos's own), nothing on stdout.
pub fn refusal_problem(shown: &str, run: &Finished, expected: &str) -> Option<String> {
    let first = run.stderr.lines().next().unwrap_or_default();
    let problem = if run.code != 2 {
        format!("exit {} (not 2)", run.code)
    } else if !run.stderr.contains(expected) {
        format!("no {expected:?}")
    } else if !first.contains(expected) {
        "the first line does not say it".into()
    } else if first.starts_with("chaos: error:") && run.stderr.trim().lines().count() != 1 {
        "not one line".into()
    } else if !run.stdout.is_empty() {
        format!("printed {:?}", run.stdout)
    } else {
        return None;
    };
    Some(format!("{shown}: {problem}: {}", run.stderr))
}

/// Each line of arguments is refused as bad input naming its message, and nothing stays
/// attached afterwards.
pub fn assert_refused(cases: &[(&str, &str)]) {
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(line, expected)| {
            let cmd = ChaosCmd::new().line(line);
            let shown = cmd.shown();
            refusal_problem(&shown, &cmd.output(), expected)
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_nothing_attached("the refusals");
}

/// No program of chaos is loaded (after `what`). A chaos that a test killed releases its
/// programs when its last file closes, which the kernel finishes a little later (the
/// program's memory is freed from a work queue): the check looks again until the deadline.
pub fn assert_nothing_attached(what: &str) {
    let mut left = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        left = loaded_chaos_programs();
        if left.is_empty() {
            return;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    panic!("left attached after {what}: {left:?}");
}

/// A directory on the root filesystem (ext4 here, so the fs fsync hook sees syncs in it).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("chaos-test-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir")
}

pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Receives from `lines` until one matches `pred` or [`DEADLINE`] passes; returns the match
/// (or why there was none) and everything received, the match included, in order.
fn next_matching<T: Clone>(
    lines: &Receiver<T>,
    pred: &impl Fn(&T) -> bool,
) -> (Result<T, RecvTimeoutError>, Vec<T>) {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(value) => {
                let hit = pred(&value);
                seen.push(value.clone());
                if hit {
                    return (Ok(value), seen);
                }
            }
            Err(e) => return (Err(e), seen),
        }
    }
}

fn gave_up(e: RecvTimeoutError) -> String {
    match e {
        RecvTimeoutError::Timeout => format!("nothing within {DEADLINE:?} for"),
        RecvTimeoutError::Disconnected => "chaos ended before".into(),
    }
}

/// A process the test started; killed (by its own pid) and reaped when dropped.
pub struct Spawned(pub Child);

impl Spawned {
    pub fn new(command: &mut Command) -> Self {
        Self(command.spawn().expect("spawn"))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().expect("wait")
    }

    /// Starts `victim on-usr1` and returns once it has blocked SIGUSR1 (it says `ready`), so
    /// that the signal a test sends is the one it waits for, not one that kills it.
    pub fn on_usr1(victim: &str) -> Self {
        let mut spawned = Self::new(Command::new(victim).arg("on-usr1").stdout(Stdio::piped()));
        let mut line = String::new();
        BufReader::new(spawned.0.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read the victim's stdout");
        assert_eq!(line.trim(), "ready", "victim on-usr1 did not get ready");
        spawned
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A running `chaos observe --json`, its events parsed as they arrive.
pub struct Observer {
    child: Spawned,
    lines: Receiver<Value>,
    pub events: Vec<Value>,
    pub summary: Option<Value>,
    pub stderr: String,
}

impl Observer {
    /// Starts `chaos observe --json ARGS` and returns once it reports that it is attached.
    pub fn start(args: &[&str]) -> Self {
        Self::launch("observe", args, "chaos: observing")
    }

    /// Starts `chaos measure --json ARGS` and returns once it reports that it is measuring;
    /// episodes arrive as events.
    pub fn measure(args: &[&str]) -> Self {
        Self::launch("measure", args, "chaos: measuring")
    }

    fn launch(subcommand: &str, args: &[&str], ready: &str) -> Self {
        ChaosCmd::new()
            .arg(subcommand)
            .arg("--json")
            .args(args)
            .stream(ready)
    }
}

impl ChaosCmd {
    /// Starts a chaos whose stdout is JSON Lines and returns once stderr has a line that
    /// starts with `ready`.
    pub fn stream(self, ready: &str) -> Observer {
        let subcommand = self.shown();
        let mut child = self.spawn();
        let stdout = child.0.stdout.take().unwrap();
        let stderr = child.0.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        // The readiness line comes on stderr once every program is attached.
        let (err_tx, err_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut observer = Observer {
            child,
            lines,
            events: Vec::new(),
            summary: None,
            stderr: String::new(),
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            let line = err_rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "chaos {subcommand} never became ready; stderr: {}",
                        observer.stderr
                    )
                });
            observer.stderr.push_str(&line);
            observer.stderr.push('\n');
            if line.starts_with(ready) {
                break;
            }
        }
        std::thread::spawn(move || while err_rx.recv().is_ok() {});
        observer
    }
}

impl Observer {
    fn take(&mut self, value: Value) {
        if value["type"] == "summary" {
            self.summary = Some(value);
        } else {
            self.events.push(value);
        }
    }

    /// Waits until an event matching `pred` has arrived; returns it.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.events.iter().find(|e| pred(e)) {
            return found.clone();
        }
        match next_matching(&self.lines, &pred) {
            (Ok(value), seen) => {
                seen.into_iter().for_each(|v| self.take(v));
                value
            }
            (Err(e), seen) => {
                seen.into_iter().for_each(|v| self.take(v));
                panic!("{} {what}; events: {:#?}", gave_up(e), self.events)
            }
        }
    }

    /// Reads until chaos exits by itself (e.g. when a launched command's tree is gone).
    pub fn finish(mut self) -> Self {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(value) => self.take(value),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("chaos did not finish; events: {:#?}", self.events)
                }
            }
        }
        let status = self.child.wait();
        assert!(
            status.success(),
            "chaos exited with {status}; stderr: {}",
            self.stderr
        );
        self
    }

    /// Stops chaos with SIGINT (as Ctrl-C would) and collects the rest of the stream.
    pub fn stop(self) -> Self {
        self.signal(nix::sys::signal::Signal::SIGINT);
        self.finish()
    }

    /// Sends a signal to the chaos process this test started.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.pid() as i32), signal)
            .expect("signal chaos");
    }

    pub fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |e| e["type"] == kind)
    }

    /// Every pid an event mentions.
    pub fn pids(&self) -> Vec<u64> {
        let keys = [
            "pid",
            "ppid",
            "parent_pid",
            "child_pid",
            "target_pid",
            "sender_pid",
        ];
        self.events
            .iter()
            .flat_map(|e| {
                keys.iter()
                    .filter_map(|k| e["data"][k].as_u64())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A cgroup v2 directory the test creates; removed when dropped (its processes must be gone).
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let root = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f[2] == "cgroup2")
            .map(|f| PathBuf::from(f[1]))
            .expect("a cgroup2 mount (cargo xtask setup mounts one)");
        let path = root.join(format!("chaos-test-{}-{name}", std::process::id()));
        std::fs::create_dir(&path).expect("create cgroup");
        Self { path }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
    }
}

impl TestCgroup {
    /// Every process in this cgroup (which only the test's own processes ever join).
    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // cgroup.kill (Linux 5.14) SIGKILLs exactly this cgroup's processes: the supervisors a
        // test started and whatever they started in turn.
        let inside = self.procs();
        if !inside.is_empty() {
            let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        }
        // A dead process keeps its cgroup busy until it is reaped; those orphaned to the test
        // (a subreaper) are reaped here, by pid, so no other child's status is taken.
        let deadline = Instant::now() + DEADLINE;
        loop {
            for &pid in &inside {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid as i32),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
            if std::fs::remove_dir(&self.path).is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::yield_now();
        }
    }
}

/// Re-checks `done` every `every` until it holds; panics after [`DEADLINE`]. The interval is
/// how often to look, not a guess at how long the thing takes.
pub fn wait_until(what: &str, every: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        std::thread::park_timeout(every);
    }
}

/// The children of `pid` (its threads' `children` files in /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The command name of `pid`, or "" once it is gone.
pub fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default()
}

/// A free loopback TCP port (free when asked; the kernel does not hand it out again soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Edits, deletes and reorders entries of a valid audit log of at least three entries (the
/// edit replaces `edit.0` with `edit.1` in the second); `chaos audit verify` must name the
/// line each time and exit 1. The log is left tampered.
pub fn assert_tampering_is_detected(log: &Path, edit: (&str, &str)) {
    let lines: Vec<String> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(lines.len() >= 3 && lines[1].contains(edit.0), "{lines:#?}");
    let mut edited = lines.clone();
    edited[1] = lines[1].replacen(edit.0, edit.1, 1);
    let mut deleted = lines.clone();
    deleted.remove(1);
    let mut reordered = lines.clone();
    reordered.swap(1, 2);
    let log_arg = log.to_str().unwrap();
    for (content, expected) in [
        (edited, ":2: its content does not match its hash: edited"),
        (deleted, ":2: entry 3 where 2 was expected"),
        (reordered, ":2: entry 3 where 2 was expected"),
    ] {
        std::fs::write(log, content.join("\n") + "\n").unwrap();
        let (code, _, stderr) = run_chaos(&["audit", "verify", log_arg]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

/// Whether this kernel lets BPF LSM programs load (doctor's verdict).
pub fn lsm_available() -> bool {
    let (_, stdout, _) = run_chaos(&["doctor", "--json"]);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "bpf_lsm" && c["status"] == "ok")
}

/// Names of loaded BPF programs of chaos (`chaos_*` observers, `probe_*` doctor probes), from
/// `bpftool prog show`.
pub fn loaded_chaos_programs() -> Vec<String> {
    let output = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    let progs: Value = serde_json::from_slice(&output.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| n.starts_with("chaos_") || n.starts_with("probe_"))
        .map(str::to_string)
        .collect()
}

/// A running chaos command whose stdout lines (JSON or a launched command's own output) are
/// read as they come, and whose stdin the test writes (it reaches a launched command).
pub struct Chaos {
    pub child: Spawned,
    lines: Receiver<String>,
    stdin: Option<std::process::ChildStdin>,
    /// Every stdout line so far.
    pub out: Vec<String>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Chaos {
    /// Starts `chaos ARGS` and returns once stderr has a line starting with `ready`.
    pub fn start(args: &[&str], ready: &str) -> Self {
        ChaosCmd::new().args(args).start(ready)
    }
}

impl ChaosCmd {
    /// Starts chaos and returns once stderr has a line starting with `ready`; its stdout
    /// lines are read as they come and its stdin is the test's.
    pub fn start(self, ready: &str) -> Chaos {
        let args = self.shown();
        let mut child = self.spawn();
        let stdin = child.0.stdin.take();
        let stdout = child.0.stdout.take().unwrap();
        let stderr = child.0.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready_rx) = channel();
        let shared = text.clone();
        let ready = ready.to_string();
        std::thread::spawn(move || {
            let mut told = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                shared.lock().unwrap().push_str(&format!("{line}\n"));
                if !told && line.starts_with(&ready) {
                    told = true;
                    let _ = ready_tx.send(());
                }
            }
        });
        if ready_rx.recv_timeout(DEADLINE).is_err() {
            panic!(
                "chaos {args} never became ready; stderr: {}",
                text.lock().unwrap()
            );
        }
        Chaos {
            child,
            lines,
            stdin,
            out: Vec::new(),
            stderr: text,
        }
    }
}

impl Chaos {
    /// Writes a line to chaos's stdin (which a launched command inherits).
    pub fn send(&mut self, line: &str) {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the command");
        stdin.flush().unwrap();
    }

    /// Closes stdin (end of input for a launched command).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a stdout line matching `pred`; returns it.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(found) = self.out.iter().find(|l| pred(l)) {
            return found.clone();
        }
        let (found, seen) = next_matching(&self.lines, &|l: &String| pred(l));
        self.out.extend(seen);
        found.unwrap_or_else(|e| {
            panic!(
                "{} {what}; stdout: {:#?}; stderr: {}",
                gave_up(e),
                self.out,
                self.stderr.lock().unwrap()
            )
        })
    }

    /// Reads everything until chaos exits; returns its exit code.
    pub fn finish(&mut self) -> i32 {
        self.close_stdin();
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.out.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("chaos did not finish; stdout: {:#?}", self.out)
                }
            }
        }
        self.child.wait().code().unwrap_or(-1)
    }

    /// The JSON lines of a type (`fault`, `confirmed`, `summary`), their `data`.
    pub fn json(&self, kind: &str) -> Vec<Value> {
        self.out
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == kind)
            .map(|v| v["data"].clone())
            .collect()
    }

    /// The launched command's own lines that start with `prefix`.
    pub fn own(&self, prefix: &str) -> Vec<String> {
        self.out
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl Spawned {
    /// Starts a command that says `ready` on stdout once it can take what the test sends;
    /// returns it with the rest of its stdout.
    pub fn ready(command: &mut Command) -> (Self, BufReader<std::process::ChildStdout>) {
        let mut spawned = Self::new(command.stdout(Stdio::piped()));
        let mut out = BufReader::new(spawned.0.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read the command's stdout");
        assert_eq!(line.trim(), "ready", "{command:?} did not get ready");
        (spawned, out)
    }
}
