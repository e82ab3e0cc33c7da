//! Exports against real consumers: a Prometheus server (Debian's) scraping `--prometheus`
//! during a measure run, promtool checking `--textfile`, an OTLP/HTTP receiver decoding what
//! `chaos run --otlp` sent with the official protobuf definitions, and the HTML report
//! rendered by headless Chromium. Each service runs under runit in a cgroup the test creates.
//! A fleet of three "hosts" (network namespaces) exports to one receiver and one Prometheus,
//! and their outputs merge into one report.

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use chaos_tests::{Spawned, children_of, comm_of, free_port, run_chaos, scratch_dir, wait_until};
use common::{
    fleet::Fleet,
    supervised::{
        LOOK, QUEUE_COMM, SETTLED, Supervised, kill_instance, measure_kills_then_wait,
        queue_under_runit, service_dir,
    },
};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, KeyValue, any_value},
    logs::v1::LogRecord,
    metrics::v1::metric,
    trace::v1::Span,
};
use prost::Message as _;
use serde_json::Value;

const POLL: Duration = Duration::from_millis(200);

/// A Prometheus server scraping `targets` every second, with its own storage: on loopback,
/// or in a network namespace of the test's (a fleet's hub).
struct Prometheus {
    _process: Spawned,
    addr: String,
    netns: Option<String>,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        Self::start_on(None, "127.0.0.1", &[target.to_string()])
    }

    fn start_on(netns: Option<&str>, ip: &str, targets: &[String]) -> Self {
        let dir = scratch_dir();
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: chaos\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let addr = format!("{ip}:{}", free_port());
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("prometheus");
                c
            }
            None => Command::new("prometheus"),
        };
        let process = Spawned::new(
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let prometheus = Self {
            _process: process,
            addr,
            netns: netns.map(str::to_string),
            _dir: dir,
        };
        wait_until("Prometheus to be ready", POLL, || {
            prometheus.get("/-/ready").is_some()
        });
        prometheus
    }

    /// The body of a successful GET of `path`.
    fn get(&self, path: &str) -> Option<String> {
        let url = format!("http://{}{path}", self.addr);
        match &self.netns {
            None => {
                let response = reqwest::blocking::get(url).ok()?;
                response
                    .status()
                    .is_success()
                    .then(|| response.text().ok())?
            }
            Some(ns) => {
                let out = Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{ns}"))
                    .args(["curl", "-sf", &url])
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            }
        }
    }

    /// Every series of an instant query: (labels, value).
    fn series(&self, query: &str) -> Vec<(Value, f64)> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let Some(text) = self.get(&format!("/api/v1/query?query={encoded}")) else {
            return Vec::new();
        };
        let body: Value = serde_json::from_str(&text).unwrap_or_default();
        body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r["metric"].clone(), r["value"][1].as_str()?.parse().ok()?)))
            .collect()
    }

    /// The value of an instant query with one result, if it has one.
    fn query(&self, query: &str) -> Option<f64> {
        match self.series(query).as_slice() {
            [(_, value)] => Some(*value),
            _ => None,
        }
    }
}

#[test]
fn prometheus_scrapes_measure_and_its_counts_match_the_json() {
    let (svc, _) = queue_under_runit("export-prom");
    let metrics_port = free_port();
    let target = format!("127.0.0.1:{metrics_port}");
    let prometheus = Prometheus::start(&target);
    let dir = scratch_dir();
    let textfile = dir.path().join("chaos.prom");
    let m = measure_kills_then_wait(
        &svc,
        &[
            "--prometheus",
            &target,
            "--textfile",
            textfile.to_str().unwrap(),
        ],
        &[SETTLED; 3],
    );
    // Prometheus sees what chaos measured (it scrapes every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen = (
            prometheus.query("chaos_restarts_total"),
            prometheus.query("chaos_recovery_phase_seconds_count{phase=\"total\"}"),
            prometheus.query("chaos_recovery_phase_seconds_sum{phase=\"total\"}"),
        );
        if seen.0 == Some(3.0) && seen.1 == Some(3.0) && seen.2.is_some() {
            break seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus has {seen:?}; its targets: {}",
            prometheus.get("/api/v1/targets").unwrap_or_default()
        );
        std::thread::park_timeout(POLL);
    };
    // Read everything while chaos still serves (a stopped target's series go stale).
    let failed = prometheus.query("chaos_recoveries_failed_total");
    let phases: Vec<(&str, Option<f64>)> = [
        "fault_to_exit",
        "exit_to_reaped",
        "reaped_to_forked",
        "forked_to_exec",
        "exec_to_ready",
    ]
    .into_iter()
    .map(|phase| {
        let query = format!("chaos_recovery_phase_seconds_count{{phase=\"{phase}\"}}");
        (phase, prometheus.query(&query))
    })
    .collect();
    let m = m.stop();
    let summary = &m.summary.as_ref().expect("a summary")["data"];
    assert_eq!(summary["recovered"], 3, "{summary:#}");
    assert_eq!(failed, Some(0.0));
    let total_ns: u64 = m
        .of_type("episode")
        .map(|e| e["data"]["total_ns"].as_u64().unwrap())
        .sum();
    let sum = seen.2.unwrap();
    assert!(
        (sum - total_ns as f64 / 1e9).abs() < 1e-6,
        "Prometheus has {sum} s in all, the episodes {total_ns} ns"
    );
    // Every phase the JSON counts is in Prometheus with the same count.
    for (phase, count) in phases {
        let json = m
            .of_type("episode")
            .filter(|e| e["data"]["phases_ns"][phase].is_u64())
            .count();
        assert_eq!(count, Some(json as f64), "{phase}");
    }

    // The textfile: the same numbers, in a format promtool accepts.
    let text = std::fs::read_to_string(&textfile).unwrap();
    let read = |p: &str| std::fs::read_to_string(p).unwrap().trim().to_string();
    let (host, kernel) = (
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/osrelease"),
    );
    assert!(
        text.contains(&format!(
            "chaos_restarts_total{{host=\"{host}\",kernel=\"{kernel}\"}} 3\n"
        )),
        "{text}"
    );
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs prometheus)");
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    // promtool exits 0, or 3 for lint remarks only (it flags nothing here but may in
    // future versions); 1 is a parse error.
    assert!(
        out.status.code() != Some(1),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Requests received: (path, body).
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An OTLP/HTTP receiver on loopback: every request's path and body, answered 200.
struct Receiver {
    port: u16,
    requests: Requests,
    server: Arc<tiny_http::Server>,
}

impl Receiver {
    fn start() -> Self {
        Self::bind("127.0.0.1:0")
    }

    fn bind(addr: &str) -> Self {
        let server = Arc::new(tiny_http::Server::http(addr).unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let requests: Requests = Arc::new(Mutex::new(Vec::new()));
        let (srv, store) = (server.clone(), requests.clone());
        std::thread::spawn(move || {
            for mut request in srv.incoming_requests() {
                let mut body = Vec::new();
                let _ = request.as_reader().read_to_end(&mut body);
                store
                    .lock()
                    .unwrap()
                    .push((request.url().to_string(), body));
                let _ = request.respond(
                    tiny_http::Response::from_data(Vec::new()).with_header(
                        "Content-Type: application/x-protobuf"
                            .parse::<tiny_http::Header>()
                            .unwrap(),
                    ),
                );
            }
        });
        Self {
            port,
            requests,
            server,
        }
    }

    fn bodies(&self, path: &str) -> Vec<Vec<u8>> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn string(value: &Option<AnyValue>) -> Option<String> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string(&kv.value))
}

/// `chaos run` on a settled queue: `kills` SIGKILLs, with `extra` arguments; returns the
/// result JSON.
fn run_kills(name: &str, svc: &Supervised, kills: u32, extra: &[&str]) -> (Value, PathBuf) {
    let dir = scratch_dir().keep();
    let exp = dir.join("exp.toml");
    std::fs::write(
        &exp,
        format!(
            "id = \"{name}\"\nblast_radius = \"local\"\n\n[hypothesis]\nstatement = \"comes back\"\nmax_failed_recoveries = 0\n\n[target]\nsupervisor = {}\ncomm = \"{QUEUE_COMM}\"\nready = \"listen\"\n\n[[faults]]\nkind = \"signal\"\nsignal = \"KILL\"\ncount = {kills}\ninterval = \"1200ms\"\n\n[phases]\nbaseline = \"500ms\"\ncooldown = \"100ms\"\n",
            svc.pid()
        ),
    )
    .unwrap();
    let json = dir.join("result.json");
    let audit = dir.join("audit.jsonl");
    let mut args = vec![
        "run",
        exp.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--audit",
        audit.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run_chaos(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let result = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (result, json)
}

#[test]
fn otlp_spans_metrics_and_the_audit_log_decode_and_match_the_result() {
    let (svc, _) = queue_under_runit("export-otlp");
    let receiver = Receiver::start();
    let url = format!("http://127.0.0.1:{}", receiver.port);
    let (result, json) = run_kills("otlp", &svc, 2, &["--otlp", &url]);

    // The audit log's copy off the machine: a log record per entry, one for one, in order,
    // with its sequence number and hash.
    let audit = std::fs::read_to_string(json.with_file_name("audit.jsonl")).unwrap();
    let mut records: Vec<LogRecord> = Vec::new();
    for body in receiver.bodies("/v1/logs") {
        let request = ExportLogsServiceRequest::decode(body.as_slice()).expect("OTLP logs");
        records.extend(
            request
                .resource_logs
                .into_iter()
                .flat_map(|r| r.scope_logs)
                .flat_map(|s| s.log_records),
        );
    }
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(records.len(), lines.len(), "{records:#?}");
    for (record, line) in records.iter().zip(&lines) {
        let entry: Value = serde_json::from_str(line).unwrap();
        assert_eq!(string(&record.body).as_deref(), Some(*line));
        assert_eq!(
            attribute(&record.attributes, "chaos.audit.seq"),
            Some(entry["seq"].to_string())
        );
        assert_eq!(
            attribute(&record.attributes, "chaos.audit.hash").as_deref(),
            entry["hash"].as_str()
        );
        assert_eq!(
            attribute(&record.attributes, "chaos.audit.kind").as_deref(),
            entry["event"]["kind"].as_str()
        );
    }
    let offset = result["start_unix_ns"].as_i64().unwrap() - result["start_ns"].as_i64().unwrap();

    // Traces: a root span per fault, a child per phase, all from kernel timestamps.
    let mut spans: Vec<Span> = Vec::new();
    for body in receiver.bodies("/v1/traces") {
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP traces");
        for rs in request.resource_spans {
            let resource = rs.resource.expect("a resource").attributes;
            assert_eq!(
                attribute(&resource, "service.name").as_deref(),
                Some("chaos")
            );
            assert_eq!(
                attribute(&resource, "chaos.experiment.id").as_deref(),
                Some("otlp")
            );
            assert!(attribute(&resource, "host.name").is_some_and(|h| !h.is_empty()));
            spans.extend(rs.scope_spans.into_iter().flat_map(|s| s.spans));
        }
    }
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 2, "{spans:#?}");
    let episodes = result["episodes"].as_array().unwrap();
    let faults = result["faults"].as_array().unwrap();
    for (root, (episode, fault)) in roots.iter().zip(episodes.iter().zip(faults)) {
        assert_eq!(root.name, "SIGKILL");
        assert_eq!(
            attribute(&root.attributes, "chaos.episode.old_pid"),
            Some(episode["old_pid"].to_string())
        );
        // The exporter converts kernel time with the run's own clock reading.
        let fault_unix = fault["ts_ns"].as_i64().unwrap() + offset;
        assert_eq!(root.start_time_unix_nano as i64, fault_unix);
        let children: HashMap<&str, &Span> = spans
            .iter()
            .filter(|s| s.parent_span_id == root.span_id)
            .map(|s| (s.name.as_str(), s))
            .collect();
        for (phase, ns) in episode["phases_ns"].as_object().unwrap() {
            let child = children
                .get(phase.as_str())
                .unwrap_or_else(|| panic!("no {phase} span under {root:#?}"));
            assert_eq!(child.trace_id, root.trace_id);
            assert_eq!(
                child.end_time_unix_nano - child.start_time_unix_nano,
                ns.as_u64().unwrap(),
                "{phase}: the span lasts exactly the measured phase"
            );
        }
        assert_eq!(children.len(), 5);
    }

    // Metrics: the last export holds the run's totals (cumulative).
    let last = receiver
        .bodies("/v1/metrics")
        .last()
        .map(|b| ExportMetricsServiceRequest::decode(b.as_slice()).expect("OTLP metrics"))
        .expect("a metrics export");
    let metrics: HashMap<String, metric::Data> = last
        .resource_metrics
        .into_iter()
        .flat_map(|r| r.scope_metrics)
        .flat_map(|s| s.metrics)
        .filter_map(|m| Some((m.name, m.data?)))
        .collect();
    let sum = |name: &str| match &metrics[name] {
        metric::Data::Sum(s) => s
            .data_points
            .iter()
            .map(|p| match p.value {
                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(
                    i,
                )) => i,
                _ => 0,
            })
            .sum::<i64>(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(sum("chaos.faults.injected"), 2);
    assert_eq!(sum("chaos.restarts"), 2);
    let metric::Data::Histogram(h) = &metrics["chaos.recovery.phase.duration"] else {
        panic!("not a histogram")
    };
    let total = h
        .data_points
        .iter()
        .find(|p| attribute(&p.attributes, "phase").as_deref() == Some("total"))
        .expect("phase=total");
    assert_eq!(total.count, 2);
    let total_ns: u64 = episodes
        .iter()
        .map(|e| e["total_ns"].as_u64().unwrap())
        .sum();
    assert!((total.sum.unwrap() - total_ns as f64 / 1e9).abs() < 1e-9);
}

/// Chromium, headless, on a file: its DOM after rendering, and a screenshot.
fn chromium(page: &Path, screenshot: &Path) -> String {
    let profile = scratch_dir();
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
    ];
    let url = format!("file://{}", page.display());
    let run = |extra: &[String]| {
        let out = Command::new("chromium")
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .stderr(Stdio::null())
            .output()
            .expect("chromium (cargo xtask setup installs it)");
        assert!(out.status.success(), "chromium: {:?}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "--window-size=1000,2600".into(),
        format!("--screenshot={}", screenshot.display()),
    ]);
    run(&["--dump-dom".into()])
}

/// The number of `needle`s between `start` and the next `end` after it.
fn count_within(text: &str, start: &str, end: &str, needle: &str) -> usize {
    let from = text.find(start).unwrap_or_else(|| panic!("no {start}"));
    let to = text[from..].find(end).map_or(text.len(), |i| from + i);
    text[from..to].matches(needle).count()
}

#[test]
fn the_html_report_renders_every_episode_and_bar_in_chromium() {
    let (svc, _) = queue_under_runit("export-html");
    let (result, json) = run_kills("html", &svc, 3, &[]);
    let page = json.with_file_name("report.html");
    let (code, stdout, stderr) = run_chaos(&[
        "report",
        json.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // The screenshot is kept as a test artifact.
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&screenshot);
    let dom = chromium(&page, &screenshot);
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot"
    );

    let episodes = result["episodes"].as_array().unwrap().len();
    assert_eq!(episodes, 3);
    assert_eq!(
        dom.matches("<tr class=\"episode recovered\"").count(),
        episodes
    );
    // The timeline draws each episode as a bar.
    assert_eq!(
        count_within(
            &dom,
            "<figure class=\"timeline\"",
            "</figure>",
            "fill=\"#54A24B\""
        ),
        episodes
    );
    // A histogram per phase with data, each with as many bars as it says, over every episode.
    let figures: Vec<&str> = dom.split("<figure class=\"histogram\"").skip(1).collect();
    assert_eq!(figures.len(), 6, "five phases and the total");
    for figure in figures {
        let figure = &figure[..figure.find("</figure>").unwrap()];
        let attr = |name: &str| -> usize {
            let at = figure.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            figure[at..at + figure[at..].find('"').unwrap()]
                .parse()
                .unwrap()
        };
        assert_eq!(attr("data-count"), episodes);
        let bars = figure.matches("fill=\"#4C78A8\"").count();
        assert_eq!(bars, attr("data-bars"));
        assert!((1..=episodes).contains(&bars), "{bars}");
    }
    assert!(dom.contains("HELD"));
    // The terminal rendition of the same result.
    let (code, text, _) = run_chaos(&["report", json.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        text.contains("experiment html (local): HELD (exit 0)"),
        "{text}"
    );
    assert!(text.contains("total recovery CDF:"), "{text}");
    assert_eq!(text.matches("  episode ").count(), episodes, "{text}");
}

/// A `chaos measure --json` started by the test, its stdout and stderr in files.
struct Agent {
    process: Spawned,
    stream: PathBuf,
    errors: PathBuf,
}

impl Agent {
    fn start(command: &[String], dir: &Path, name: &str) -> Self {
        let stream = dir.join(format!("{name}.jsonl"));
        let errors = dir.join(format!("{name}.err"));
        let process = Spawned::new(
            Command::new(&command[0])
                .args(&command[1..])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&stream).unwrap())
                .stderr(std::fs::File::create(&errors).unwrap()),
        );
        let agent = Self {
            process,
            stream,
            errors,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !agent.stderr().contains("chaos: measuring") {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not attach: {}",
                command.join(" "),
                agent.stderr()
            );
            std::thread::sleep(POLL);
        }
        agent
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.errors).unwrap_or_default()
    }

    fn lines(&self, kind: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.stream)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == kind)
            .collect()
    }

    /// Ends it as Ctrl-C would; it writes its summary and its last exports.
    fn stop(self) -> (Vec<Value>, Value, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.process.pid() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let mut process = self.process;
        let status = process.wait();
        let stderr = std::fs::read_to_string(&self.errors).unwrap_or_default();
        assert!(status.success(), "chaos measure: {status}; {stderr}");
        let text = std::fs::read_to_string(&self.stream).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let summary = lines.last().cloned().unwrap();
        assert_eq!(summary["type"], "summary", "{text}");
        (lines, summary, stderr)
    }
}

/// The first child of `pid` named `comm`, once there is one.
fn child_named(pid: u32, comm: &str) -> u32 {
    let mut found = 0;
    wait_until(&format!("a {comm} under {pid}"), LOOK, || {
        found = children_of(pid)
            .into_iter()
            .find(|&c| comm_of(c) == comm)
            .unwrap_or(0);
        found != 0
    });
    found
}

/// Quantiles as chaos computes them: an HdrHistogram of 3 significant digits.
fn quantiles(values: &[u64]) -> (u64, u64, u64, u64) {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for &v in values {
        h.record(v).unwrap();
    }
    (
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max(),
    )
}

/// Three "hosts" (network namespaces, each with its own host name) each run a queue under
/// runit and their own `chaos measure`; all three export OTLP to one receiver and are
/// scraped by one real Prometheus, in a hub namespace. The merged report of the three
/// streams has their counts and the quantiles of all their episodes, and its page, rendered
/// by Chromium, a row per host.
#[test]
fn three_hosts_export_to_one_collector_and_merge_into_one_report() {
    const KILLS: u64 = 2;
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let fleet = Fleet::new(&["fleet-a", "fleet-b", "fleet-c"]);
    let hub = fleet.hub_addr();
    let receiver = {
        let addr = format!("{hub}:0");
        fleet.in_hub(move || Receiver::bind(&addr))
    };
    let otlp = format!("http://{hub}:{}", receiver.port);
    let targets: Vec<String> = fleet
        .hosts
        .iter()
        .map(|h| format!("{}:9464", h.addr))
        .collect();
    let prometheus = Prometheus::start_on(Some(&fleet.hub), &hub, &targets);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string();
    let out = scratch_dir();
    let chaos = chaos_tests::chaos_bin();
    let mut services = Vec::new();
    let mut agents = Vec::new();
    for host in &fleet.hosts {
        let port = free_port();
        let dir = service_dir(port, None);
        let run_dir = dir.path().to_str().unwrap().to_string();
        let program = host.wrap(&["runsv", &run_dir]);
        let program: Vec<&str> = program.iter().map(String::as_str).collect();
        let svc = Supervised::start(&host.name, dir, port, &program);
        child_named(svc.pid(), QUEUE_COMM);
        let supervisor = svc.pid().to_string();
        let listen = format!("{}:9464", host.addr);
        let command = host.wrap(&[
            chaos.to_str().unwrap(),
            "measure",
            "--json",
            "--supervisor",
            &supervisor,
            "--ready",
            "listen",
            "--otlp",
            &otlp,
            "--prometheus",
            &listen,
        ]);
        agents.push(Agent::start(&command, out.path(), &host.name));
        services.push(svc);
    }
    // Every host's instance killed KILLS times, each once it has settled (runsv throttles a
    // service younger than a second).
    for kill in 1..=KILLS {
        std::thread::sleep(SETTLED);
        for svc in &services {
            kill_instance(child_named(svc.pid(), QUEUE_COMM));
        }
        for agent in &agents {
            wait_until("the episode", POLL, || {
                agent.lines("episode").len() as u64 >= kill
            });
        }
    }
    // One Prometheus has every host's count, told apart by chaos's host and kernel labels.
    wait_until("Prometheus to scrape every host's restarts", POLL, || {
        let series = prometheus.series("chaos_restarts_total");
        series.len() == 3 && series.iter().all(|(_, v)| *v == KILLS as f64)
    });
    let series = prometheus.series("chaos_restarts_total");
    let mut hosts: Vec<String> = series
        .iter()
        .map(|(labels, _)| {
            assert_eq!(labels["kernel"], kernel.as_str(), "{labels}");
            labels["host"].as_str().unwrap().to_string()
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["fleet-a", "fleet-b", "fleet-c"]);

    let mut streams = Vec::new();
    let mut totals = Vec::new();
    for (agent, host) in agents.into_iter().zip(&fleet.hosts) {
        let (lines, summary, stderr) = agent.stop();
        let episodes: Vec<&Value> = lines.iter().filter(|l| l["type"] == "episode").collect();
        assert_eq!(episodes.len() as u64, KILLS, "{stderr}");
        assert_eq!(summary["data"]["host"]["name"], host.name.as_str());
        assert_eq!(summary["data"]["host"]["kernel"], kernel.as_str());
        for e in episodes {
            assert_eq!(e["data"]["outcome"], "recovered", "{e:#}");
            totals.push(e["data"]["total_ns"].as_u64().unwrap());
        }
        streams.push(out.path().join(format!("{}.jsonl", host.name)));
    }
    drop(services);

    // OTLP: one receiver has every host's spans and metrics, each under its own resource.
    let mut exported: HashMap<String, i64> = HashMap::new();
    for body in receiver.bodies("/v1/metrics") {
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).expect("OTLP metrics");
        for rm in request.resource_metrics {
            let resource = rm.resource.expect("a resource").attributes;
            let host = attribute(&resource, "host.name").expect("host.name");
            assert_eq!(attribute(&resource, "os.version"), Some(kernel.clone()));
            assert_eq!(attribute(&resource, "os.type").as_deref(), Some("linux"));
            for m in rm.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                if let (true, Some(metric::Data::Sum(sum))) = (m.name == "chaos.restarts", m.data) {
                    let value: i64 = sum
                        .data_points
                        .iter()
                        .filter_map(|p| match p.value {
                            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i)) => Some(i),
                            _ => None,
                        })
                        .sum();
                    // Cumulative: the last export of a host holds its total.
                    exported.insert(host.clone(), value);
                }
            }
        }
    }
    let mut exported: Vec<(String, i64)> = exported.into_iter().collect();
    exported.sort();
    assert_eq!(
        exported,
        [
            ("fleet-a".to_string(), KILLS as i64),
            ("fleet-b".to_string(), KILLS as i64),
            ("fleet-c".to_string(), KILLS as i64)
        ]
    );
    let mut span_hosts = std::collections::BTreeSet::new();
    for body in receiver.bodies("/v1/traces") {
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP traces");
        for rs in request.resource_spans {
            let resource = rs.resource.expect("a resource").attributes;
            span_hosts.insert(attribute(&resource, "host.name").unwrap());
        }
    }
    assert_eq!(span_hosts.len(), 3, "{span_hosts:?}");

    // The merged report: a source per host, the summed counts, and the quantiles of all six
    // episodes (HdrHistograms merged exactly).
    let paths: Vec<&str> = streams.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec!["report"];
    args.extend(&paths);
    args.push("--json");
    let (code, stdout, stderr) = run_chaos(&args);
    assert_eq!(code, 0, "{stderr}");
    let merged: Value = serde_json::from_str(&stdout).unwrap();
    let sources = merged["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 3);
    for (source, host) in sources.iter().zip(&fleet.hosts) {
        assert_eq!(source["host"], host.name.as_str());
        assert_eq!(source["kernel"], kernel.as_str());
        assert_eq!(source["kind"], "measure");
        assert_eq!(source["recovered"], KILLS);
        assert_eq!(source["failed"], 0);
        assert!(source["start_unix_ns"].as_u64().is_some());
    }
    assert_eq!(merged["recovered"], 3 * KILLS);
    assert_eq!(merged["episodes"], 3 * KILLS);
    assert_eq!(merged["failed"], 0);
    let total = merged["phases_ns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "total")
        .unwrap()[1]
        .clone();
    let (count, p50, p99, max) = quantiles(&totals);
    assert_eq!(
        (
            total["count"].as_u64().unwrap(),
            total["p50"].as_u64().unwrap(),
            total["p99"].as_u64().unwrap(),
            total["max"].as_u64().unwrap()
        ),
        (count, p50, p99, max),
        "merged total against the six episodes' own"
    );

    // The merged page, rendered: a row per host with its counts, and every episode.
    let page = out.path().join("fleet.html");
    let mut args = vec!["report"];
    args.extend(&paths);
    args.extend(["--html", page.to_str().unwrap()]);
    let (code, stdout, stderr) = run_chaos(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let dom = chromium(&page, &artifacts.join("fleet-report.png"));
    let rows: Vec<&str> = dom.split("<tr class=\"source\"").skip(1).collect();
    assert_eq!(rows.len(), 3, "{dom}");
    for (row, host) in rows.iter().zip(&fleet.hosts) {
        assert!(
            row.contains(&format!("data-host=\"{}\"", host.name)),
            "{row}"
        );
        assert!(row.contains(&format!("data-kernel=\"{kernel}\"")), "{row}");
        assert!(
            row.contains(&format!("data-recovered=\"{KILLS}\"")),
            "{row}"
        );
    }
    assert!(
        dom.contains(&format!("data-recovered=\"{}\"", 3 * KILLS)),
        "the merged counts"
    );
    assert_eq!(
        dom.matches("<tr class=\"episode recovered\"").count() as u64,
        3 * KILLS
    );
    // The terminal rendition names each host, and the comparison of one host against the
    // other two says how little six episodes can tell.
    let mut args = vec!["report"];
    args.extend(&paths);
    let (code, text, _) = run_chaos(&args);
    assert_eq!(code, 0);
    // Kept as an artifact: the merged table of three hosts.
    std::fs::write(artifacts.join("fleet-report.txt"), &text).unwrap();
    for host in &fleet.hosts {
        assert!(
            text.contains(&format!("on {} ({kernel})", host.name)),
            "{text}"
        );
    }
    let (code, text, stderr) =
        run_chaos(&["report", "--baseline", paths[0], "--", paths[1], paths[2]]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        text.contains("too few to tell: 2 against 4 episode(s)"),
        "{text}"
    );
}

/// What chaos report cannot read is refused (exit 2) with the file, the line and why.
#[test]
fn bad_report_input_is_refused_with_the_file_and_line() {
    let dir = scratch_dir();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let observe = file(
        "observe.jsonl",
        "{\"type\":\"fork\",\"data\":{\"ts_ns\":1,\"parent_pid\":1,\"child_pid\":2}}\n",
    );
    let empty = file("empty.json", "");
    let broken = file(
        "broken.jsonl",
        "{\"type\":\"episode\",\"data\":{\"id\":1}}\n",
    );
    let fine = file(
        "inject.jsonl",
        "{\"type\":\"summary\",\"data\":{\"injected\":0,\"confirmed\":0,\"unconfirmed\":[],\"dry_run\":false,\"duration_ns\":1,\"lost\":0}}\n",
    );
    let missing = dir.path().join("missing.json");
    let cases = [
        (
            format!("report {}", missing.display()),
            format!(
                "{}: cannot read: No such file or directory",
                missing.display()
            ),
        ),
        (
            format!("report {observe}"),
            format!("{observe}:1: a `fork` line: this is a chaos observe stream (events)"),
        ),
        (
            format!("report {empty}"),
            format!("{empty}:1: empty: not a chaos output"),
        ),
        (
            format!("report {fine} {broken}"),
            format!("{broken}:1: not a measure episode: missing field"),
        ),
        (
            format!("report {fine} --hdr-log x.hlog --hdr-interval 0s"),
            "--hdr-interval 0s: give a positive duration".to_string(),
        ),
        (
            format!("report --baseline {fine} --html x.html -- {fine}"),
            "--baseline compares in the terminal or as --json".to_string(),
        ),
    ];
    let cases: Vec<(&str, &str)> = cases
        .iter()
        .map(|(line, expected)| (line.as_str(), expected.as_str()))
        .collect();
    chaos_tests::assert_refused(&cases);
    // What was refused wrote nothing.
    assert!(!Path::new("x.hlog").exists() && !Path::new("x.html").exists());
}
