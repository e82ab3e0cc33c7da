//! A fleet on one machine: three "hosts" (network namespaces, each with its own host name)
//! each run a queue under runit and their own `chaos measure`, exporting to one OTLP receiver
//! and one Prometheus in a hub namespace; their outputs merge into one report.

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use chaos_tests::{Spawned, children_of, comm_of, free_port, run_chaos, scratch_dir, wait_until};
use common::{
    consumers::{POLL, Prometheus, Receiver, attribute, chromium},
    fleet::Fleet,
    supervised::{LOOK, QUEUE_COMM, SETTLED, Supervised, kill_instance, service_dir},
};
use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    metrics::v1::metric,
};
use prost::Message as _;
use serde_json::Value;

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
