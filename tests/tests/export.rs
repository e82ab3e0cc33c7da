//! Exports against real consumers: a Prometheus server (Debian's) scraping `--prometheus`
//! during a measure run, promtool checking `--textfile`, an OTLP/HTTP receiver decoding what
//! `chaos run --otlp` sent with the official protobuf definitions, and the HTML report
//! rendered by headless Chromium. Each service runs under runit in a cgroup the test creates.
//! The fleet (three hosts merged into one report) is `fleet.rs`; the consumers are
//! `common/consumers.rs`.

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use chaos_tests::{free_port, run_chaos, scratch_dir};
use common::{
    consumers::{POLL, Prometheus, Receiver, attribute, chromium, string},
    supervised::{QUEUE_COMM, SETTLED, Supervised, measure_kills_then_wait, queue_under_runit},
};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    logs::v1::LogRecord,
    metrics::v1::metric,
    trace::v1::Span,
};
use prost::Message as _;
use serde_json::Value;

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
