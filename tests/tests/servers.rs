//! Real multi-process servers from Debian (`cargo xtask setup` installs them, and no system
//! service is started): PostgreSQL and nginx, each under runsv in a cgroup the test creates,
//! on a loopback port, with its data in a scratch directory removed afterwards.
//!
//! - PostgreSQL: a killed postmaster is an episode that recovers through WAL replay with every
//!   committed row present; a killed backend is recovered in place (the postmaster's
//!   crash-restart), readiness lost and regained.
//! - nginx: a killed worker is replaced by its master in place; a killed master leaves its
//!   workers on the port, so every restart fails, and they are named.
//!
//! Each test prints the measured phases (`--nocapture` shows them).

mod common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use chaos_tests::{Spawned, children_of, free_port, scratch_dir, wait_until};
use common::{
    files::Files,
    supervised::{Supervised, kill_instance},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

const LOOK: Duration = Duration::from_millis(20);

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn uid_of(user: &str) -> (u32, u32) {
    let user = nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {user}: run cargo xtask setup"));
    (user.uid.as_raw(), user.gid.as_raw())
}

/// The newest PostgreSQL server binaries Debian installed.
fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed (cargo xtask setup)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    found.sort();
    found.pop().expect("a PostgreSQL server")
}

/// A PostgreSQL cluster under runsv: initdb'd as the postgres user in a scratch directory,
/// on 127.0.0.1:port, its socket in the scratch directory too.
struct Postgres {
    svc: Supervised,
    bin: PathBuf,
    root: PathBuf,
}

impl Postgres {
    fn start(name: &str) -> Self {
        let bin = pg_bin();
        let (uid, gid) = uid_of("postgres");
        let scratch = scratch_dir();
        let root = scratch.path().to_path_buf();
        // The postgres user must reach its directories; nobody but root may write this one.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for dir in ["data", "socket", "client"] {
            std::fs::create_dir(root.join(dir)).unwrap();
            chown(root.join(dir), Some(uid), Some(gid)).unwrap();
        }
        std::fs::set_permissions(root.join("data"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let initdb = Command::new("chpst")
            .args(["-u", "postgres"])
            .arg(bin.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(root.join("data"))
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb: {initdb:?}");
        let port = free_port();
        let service = root.join("service");
        std::fs::create_dir(&service).unwrap();
        write_executable(
            &service.join("run"),
            &format!(
                "#!/bin/sh\nexec 2>>{root}/postgres.log\nexec chpst -u postgres {bin}/postgres -D {root}/data -k {root}/socket -p {port} -c listen_addresses=127.0.0.1 -c shared_buffers=16MB -c max_connections=20\n",
                root = root.display(),
                bin = bin.display()
            ),
        );
        let svc = Supervised::start(name, scratch, port, &["runsv", service.to_str().unwrap()]);
        let pg = Self { svc, bin, root };
        wait_until("PostgreSQL to accept connections", LOOK, || pg.is_ready());
        pg
    }

    fn psql(&self) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-h", "127.0.0.1", "-p", &self.svc.port.to_string()])
            .args(["-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]);
        c
    }

    fn sql(&self, sql: &str) -> String {
        let out = self.psql().args(["-c", sql]).output().unwrap();
        assert!(out.status.success(), "{sql}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn is_ready(&self) -> bool {
        self.ready_command().status().is_ok_and(|s| s.success())
    }

    fn ready_command(&self) -> Command {
        let mut c = Command::new(self.bin.join("pg_isready"));
        c.args(["-q", "-h", "127.0.0.1", "-p", &self.svc.port.to_string()]);
        c
    }

    fn postmaster(&self) -> u32 {
        let mut found = 0;
        wait_until("the postmaster", LOOK, || {
            found = children_of(self.svc.pid()).first().copied().unwrap_or(0);
            found != 0
        });
        found
    }

    /// A writer: inserts rows one transaction each, and appends a row's id to `client/acked`
    /// only once its commit returned. Killed when dropped.
    fn writer(&self) -> Spawned {
        let script = format!(
            "i=0; while :; do i=$((i+1)); if {psql} -h 127.0.0.1 -p {port} -U postgres -qAtc \"insert into t values ($i)\" >/dev/null 2>&1; then echo $i >> {root}/client/acked; fi; done",
            psql = self.bin.join("psql").display(),
            port = self.svc.port,
            root = self.root.display()
        );
        Spawned::new(
            Command::new("chpst")
                .args(["-u", "postgres", "sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }

    /// The verify command: every acknowledged row is in the table (and there are some).
    fn verify_script(&self) -> PathBuf {
        let path = self.root.join("verify");
        write_executable(
            &path,
            &format!(
                "#!/bin/sh\nset -e\ntest -s {root}/client/acked\nmissing=$({psql} -h 127.0.0.1 -p {port} -U postgres -v ON_ERROR_STOP=1 -qAt <<'EOF'\ncreate temp table acked(id int);\n\\copy acked from '{root}/client/acked'\nselect count(*) from acked where id not in (select id from t);\nEOF\n)\nif [ \"$missing\" != 0 ]; then echo \"$missing acknowledged rows missing\"; exit 1; fi\n",
                root = self.root.display(),
                psql = self.bin.join("psql").display(),
                port = self.svc.port
            ),
        );
        path
    }

    fn acked(&self) -> Vec<u64> {
        std::fs::read_to_string(self.root.join("client/acked"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// A session whose backend the test knows: (its psql, the backend's pid).
    fn session(&self) -> (Spawned, u32) {
        let mut psql = Spawned::new(
            self.psql()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let mut stdin = psql.0.stdin.take().unwrap();
        writeln!(stdin, "select pg_backend_pid();").unwrap();
        let mut line = String::new();
        BufReader::new(psql.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // Keep stdin open: the session stays idle until the test drops it.
        std::mem::forget(stdin);
        (psql, line.trim().parse().expect("a backend pid"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default()
    }
}

/// Writes the experiment for `target` lines and runs it; returns the result.
fn run(files: &Files, text: &str) -> (Value, String) {
    let exp = files.write("exp.toml", text);
    let (code, stdout, stderr) = files.run(&exp, &[]);
    println!("{stdout}");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    (files.result(), stdout)
}

fn phase(e: &Value, name: &str) -> u64 {
    e["phases_ns"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name}: {e:#}"))
}

#[test]
fn postgres_recovers_from_a_killed_postmaster_by_wal_replay_with_every_committed_row() {
    let pg = Postgres::start("pg-postmaster");
    pg.sql("create table t (id int primary key)");
    let postmaster = pg.postmaster();
    let _writer = pg.writer();
    wait_until("rows acknowledged", LOOK, || pg.acked().len() >= 20);
    let files = Files::new();
    let (result, stdout) = run(
        &files,
        &format!(
            "id = \"pg-postmaster\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"PostgreSQL comes back from a killed postmaster with every committed row\"\nmax_failed_recoveries = 0\nverify = {{ command = \"{verify}\", user = \"postgres\" }}\n\n[target]\nsupervisor = {sup}\ncomm = \"postgres\"\nready = \"cmd:{bin}/pg_isready -q -h 127.0.0.1 -p {port}\"\nready_user = \"postgres\"\ndata_dir = \"{root}/data\"\nrecovery_timeout = \"20s\"\n\n[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 2\ninterval = \"2s\"\n\n[phases]\nbaseline = \"500ms\"\ncooldown = \"1s\"\n",
            verify = pg.verify_script().display(),
            sup = pg.svc.pid(),
            bin = pg.bin.display(),
            port = pg.svc.port,
            root = pg.root.display()
        ),
    );
    assert!(stdout.contains("verdict: HELD (exit 0)"), "{stdout}");
    let episodes = result["episodes"].as_array().unwrap();
    assert_eq!(episodes.len(), 2, "{result:#}");
    assert_eq!(episodes[0]["old_pid"], postmaster);
    for (fault, e) in result["faults"].as_array().unwrap().iter().zip(episodes) {
        assert_eq!(fault["role"], "main", "{fault:#}");
        assert_eq!(fault["outcome"]["kind"], "episode");
        assert_eq!(e["fault_id"], fault["id"]);
        assert_eq!(e["outcome"], "recovered", "{e:#}");
        // The new postmaster replays the WAL before pg_isready passes.
        assert!(phase(e, "exec_to_ready") > 0);
        // Its backends and auxiliary processes outlived it, briefly: named, then gone.
        let orphans = e["orphans"].as_array().unwrap();
        assert!(!orphans.is_empty(), "{e:#}");
        println!(
            "postgres episode {}: fault->exit {} us, exit->reaped {} us, reaped->forked {} us, forked->exec {} us, exec->ready {} us, total {} us; {} orphans",
            e["id"],
            phase(e, "fault_to_exit") / 1000,
            phase(e, "exit_to_reaped") / 1000,
            phase(e, "reaped_to_forked") / 1000,
            phase(e, "forked_to_exec") / 1000,
            phase(e, "exec_to_ready") / 1000,
            e["total_ns"].as_u64().unwrap() / 1000,
            orphans.len()
        );
    }
    let log = pg.log();
    assert!(
        log.contains("database system was interrupted")
            || log.contains("was not properly shut down"),
        "crash recovery ran: {log}"
    );
    assert!(
        log.contains("redo done") || log.contains("redo starts"),
        "{log}"
    );
    let audit = files.audit();
    let verifies: Vec<&Value> = audit.iter().filter(|e| e["kind"] == "verify").collect();
    assert_eq!(verifies.len(), 4, "before, after each recovery, at the end");
    assert!(
        verifies.iter().all(|v| v["passed"] == true),
        "{verifies:#?}"
    );
}

#[test]
fn postgres_recovers_in_place_from_a_killed_backend() {
    let pg = Postgres::start("pg-backend");
    pg.sql("create table t (id int primary key)");
    let postmaster = pg.postmaster();
    let (_session, backend) = pg.session();
    let files = Files::new();
    let (result, stdout) = run(
        &files,
        &format!(
            "id = \"pg-backend\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"PostgreSQL survives a backend's death\"\nmax_failed_recoveries = 0\n\n[target]\nsupervisor = {sup}\ncomm = \"postgres\"\nready = \"cmd:{bin}/pg_isready -q -h 127.0.0.1 -p {port}\"\nready_user = \"postgres\"\nrecovery_timeout = \"20s\"\nhit = \"worker\"\nallow = {{ titles = [\"postgres: postgres postgres 127.0.0.1(*) idle\"] }}\n\n[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 1\ninterval = \"1s\"\n\n[phases]\nbaseline = \"500ms\"\ncooldown = \"500ms\"\n",
            sup = pg.svc.pid(),
            bin = pg.bin.display(),
            port = pg.svc.port,
        ),
    );
    assert!(stdout.contains("verdict: HELD (exit 0)"), "{stdout}");
    assert_eq!(
        result["episodes"].as_array().unwrap().len(),
        0,
        "{result:#}"
    );
    let fault = &result["faults"][0];
    assert_eq!(fault["pid"], backend);
    assert_eq!(fault["role"], "worker");
    assert_eq!(fault["ppid"], postmaster);
    assert_eq!(fault["outcome"]["kind"], "in_place", "{result:#}");
    let r = &result["in_place"][0];
    assert_eq!(r["outcome"], "recovered", "{r:#}");
    let at = &r["at_ns"];
    // The postmaster's crash-restart: every session ends, pg_isready fails until the reset
    // is done, and the postmaster forks afresh.
    let (f, exit, respawned, lost, ready) = (
        at["fault"].as_u64().unwrap(),
        at["exit"].as_u64().unwrap(),
        at["respawned"].as_u64().unwrap(),
        at["lost"].as_u64().expect("readiness was lost"),
        at["ready"].as_u64().unwrap(),
    );
    assert!(f <= exit && exit <= respawned && lost < ready, "{at:#}");
    assert_eq!(pg.postmaster(), postmaster, "the postmaster lived");
    assert!(
        pg.log()
            .contains("terminating any other active server processes")
    );
    println!(
        "postgres backend: fault->exit {} us, exit->respawned {} us, ready lost at +{} us, regained at +{} us (total {} us)",
        (exit - f) / 1000,
        (respawned - exit) / 1000,
        lost.saturating_sub(f) / 1000,
        (ready - f) / 1000,
        r["total_ns"].as_u64().unwrap() / 1000
    );
}

/// nginx under runsv: a master and 2 workers on 127.0.0.1:port, everything in a scratch
/// directory.
struct Nginx {
    svc: Supervised,
}

impl Nginx {
    fn start(name: &str) -> Self {
        let scratch = scratch_dir();
        let root = scratch.path().to_path_buf();
        let port = free_port();
        let conf = root.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 2;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {root}/tmp;\n  proxy_temp_path {root}/tmp;\n  fastcgi_temp_path {root}/tmp;\n  uwsgi_temp_path {root}/tmp;\n  scgi_temp_path {root}/tmp;\n  server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
                root = root.display()
            ),
        )
        .unwrap();
        let service = root.join("service");
        std::fs::create_dir(&service).unwrap();
        write_executable(
            &service.join("run"),
            &format!(
                "#!/bin/sh\nexec /usr/sbin/nginx -c {conf} -p {root} -e {root}/error.log\n",
                conf = conf.display(),
                root = root.display()
            ),
        );
        let svc = Supervised::start(name, scratch, port, &["runsv", service.to_str().unwrap()]);
        let master = svc.ready_child("nginx");
        wait_until("2 workers", LOOK, || children_of(master).len() == 2);
        Self { svc }
    }

    fn master(&self) -> u32 {
        self.svc.ready_child("nginx")
    }
}

#[test]
fn nginx_replaces_a_killed_worker_in_place() {
    let nginx = Nginx::start("nginx-worker");
    let master = nginx.master();
    let files = Files::new();
    let (result, _) = run(
        &files,
        &format!(
            "id = \"nginx-worker\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"nginx replaces a dead worker\"\nmax_failed_recoveries = 0\n\n[target]\nsupervisor = {sup}\ncomm = \"nginx\"\nready = \"tcp:127.0.0.1:{port}\"\nrecovery_timeout = \"5s\"\neffect_window = \"1s\"\nhit = \"worker\"\n\n[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = 3\ninterval = \"1s\"\n\n[phases]\nbaseline = \"300ms\"\ncooldown = \"300ms\"\n",
            sup = nginx.svc.pid(),
            port = nginx.svc.port
        ),
    );
    assert_eq!(
        result["episodes"].as_array().unwrap().len(),
        0,
        "{result:#}"
    );
    let in_place = result["in_place"].as_array().unwrap();
    assert_eq!(in_place.len(), 3, "{result:#}");
    for (fault, r) in result["faults"].as_array().unwrap().iter().zip(in_place) {
        assert_eq!(fault["role"], "worker");
        assert_eq!(fault["ppid"], master);
        assert_eq!(fault["outcome"]["kind"], "in_place");
        assert_eq!(r["outcome"], "recovered", "{r:#}");
        let at = &r["at_ns"];
        let (f, exit, respawned) = (
            at["fault"].as_u64().unwrap(),
            at["exit"].as_u64().unwrap(),
            at["respawned"].as_u64().unwrap(),
        );
        assert!(f <= exit && exit <= respawned, "{at:#}");
        println!(
            "nginx worker {}: fault->exit {} us, exit->respawned {} us, total {} us",
            fault["pid"],
            (exit - f) / 1000,
            (respawned - exit) / 1000,
            r["total_ns"].as_u64().unwrap() / 1000
        );
    }
    assert_eq!(nginx.master(), master, "the master lived");
    assert_eq!(children_of(master).len(), 2, "both workers there");
}

#[test]
fn nginx_killed_master_leaves_workers_on_the_port_named_and_every_restart_fails() {
    let nginx = Nginx::start("nginx-master");
    let master = nginx.master();
    let workers = children_of(master);
    let supervisor = nginx.svc.pid().to_string();
    let ready = format!("tcp:127.0.0.1:{}", nginx.svc.port);
    let mut measure = chaos_tests::Observer::measure(&[
        "--supervisor",
        &supervisor,
        "--comm",
        "nginx",
        "--ready",
        &ready,
        "--recovery-timeout",
        "8",
        "--episodes",
        "1",
    ]);
    kill_instance(master);
    let episode = measure.wait_for("the episode", |e| e["type"] == "episode");
    for pid in &workers {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    measure.finish();
    let e = &episode["data"];
    println!("{e:#}");
    // The orphans still answered on the port: that is not a recovery.
    assert_eq!(e["outcome"], "failed", "{e:#}");
    assert!(e["failed_starts"].as_u64().unwrap() >= 1, "{e:#}");
    let mut named: Vec<u32> = e["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["ports"], serde_json::json!([nginx.svc.port]), "{o:#}");
            o["pid"].as_u64().unwrap() as u32
        })
        .collect();
    named.sort_unstable();
    let mut expected = workers.clone();
    expected.sort_unstable();
    assert_eq!(named, expected);
    let answered: Vec<u32> = e["answered_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["pid"].as_u64().unwrap() as u32)
        .collect();
    assert!(
        !answered.is_empty() && answered.iter().all(|p| workers.contains(p)),
        "the probe was answered by the orphans: {e:#}"
    );
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.contains("orphans of the old instance still hold its ports"),
        "{reason}"
    );
    assert!(reason.contains("not the new instance"), "{reason}");
}
