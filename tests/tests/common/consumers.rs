//! The real consumers the export suites check chaos against: a Prometheus server (Debian's),
//! an OTLP/HTTP receiver that keeps every request, and headless Chromium.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use chaos_tests::{Spawned, free_port, scratch_dir, wait_until};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::Value;

pub const POLL: Duration = Duration::from_millis(200);

/// A Prometheus server scraping `targets` every second, with its own storage: on loopback,
/// or in a network namespace of the test's (a fleet's hub).
pub struct Prometheus {
    _process: Spawned,
    addr: String,
    netns: Option<String>,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(target: &str) -> Self {
        Self::start_on(None, "127.0.0.1", &[target.to_string()])
    }

    pub fn start_on(netns: Option<&str>, ip: &str, targets: &[String]) -> Self {
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
    pub fn get(&self, path: &str) -> Option<String> {
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
    pub fn series(&self, query: &str) -> Vec<(Value, f64)> {
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
    pub fn query(&self, query: &str) -> Option<f64> {
        match self.series(query).as_slice() {
            [(_, value)] => Some(*value),
            _ => None,
        }
    }
}

/// Requests received: (path, body).
pub type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An OTLP/HTTP receiver on loopback: every request's path and body, answered 200.
pub struct Receiver {
    pub port: u16,
    requests: Requests,
    server: Arc<tiny_http::Server>,
}

impl Receiver {
    pub fn start() -> Self {
        Self::bind("127.0.0.1:0")
    }

    pub fn bind(addr: &str) -> Self {
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

    pub fn bodies(&self, path: &str) -> Vec<Vec<u8>> {
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

pub fn string(value: &Option<AnyValue>) -> Option<String> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string(&kv.value))
}

/// Chromium, headless, on a file: its DOM after rendering, and a screenshot.
pub fn chromium(page: &Path, screenshot: &Path) -> String {
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
