//! Prometheus: `--prometheus ADDR` serves /metrics (OpenMetrics text, the registry of
//! prometheus-client) while the command runs; `--textfile PATH` writes the same metrics in the
//! classic text format for node_exporter's textfile collector, about once a second and at
//! the end (written to a temporary file and renamed, so the collector never reads half).
//! Every metric carries the labels `host` (the host name) and `kernel` (its release).

use std::{
    borrow::Cow,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::text::encode_registry,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::{BUCKETS, Clock, ExportConfig, ExportError, Exporter, phase_seconds};
use crate::{
    episode::{Episode, Outcome},
    event::Event,
    fault::FaultRecord,
};

type Labels = Vec<(String, String)>;

/// `ADDR` of `--prometheus`: `HOST:PORT`, or a bare port on 127.0.0.1 (loopback unless the
/// user names another address).
pub fn listen_addr(text: &str) -> Result<SocketAddr, ExportError> {
    let bad = || {
        ExportError::Config(format!(
            "--prometheus {text}: give PORT (on 127.0.0.1) or HOST:PORT, for example 127.0.0.1:9464"
        ))
    };
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse::<SocketAddr>().map_err(|_| bad())
}

/// What serving on `addr` exposes, when more than this machine can reach it.
pub fn exposure(addr: SocketAddr) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    let reach = if addr.ip().is_unspecified() {
        "every network this machine is on"
    } else {
        "the network of that address"
    };
    Some(format!(
        "--prometheus {addr}: /metrics (the service's pids, faults and recovery times) is served to {reach}, without TLS or authentication; serve it on loopback behind a reverse proxy, or send OTLP to a Collector (README, Security model)"
    ))
}

pub struct Metrics {
    registry: Arc<Registry>,
    phases: Family<Labels, Histogram>,
    injected: Family<Labels, Counter>,
    confirmed: Counter,
    restarts: Counter,
    failed: Counter,
    events: Family<Labels, Counter>,
    lost: Counter,
    lost_seen: u64,
    textfile: Option<PathBuf>,
}

/// The /metrics endpoint, bound when the command starts (so a taken port is an error before
/// anything else happens) and served once the runtime runs.
pub struct Server {
    listener: std::net::TcpListener,
    registry: Arc<Registry>,
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

impl Metrics {
    pub fn new(config: &ExportConfig) -> Result<(Self, Option<Server>), ExportError> {
        // Every metric names its machine, so that one Prometheus tells a fleet's nodes apart.
        let host = crate::sys::host::Host::current();
        let mut registry = Registry::with_labels(
            [
                (Cow::Borrowed("host"), Cow::Owned(host.name)),
                (Cow::Borrowed("kernel"), Cow::Owned(host.kernel)),
            ]
            .into_iter(),
        );
        let phases = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(BUCKETS.iter().copied())
        });
        registry.register_with_unit(
            "chaos_recovery_phase",
            "Recovery phases of recovered episodes, and their total (phase=\"total\")",
            Unit::Seconds,
            phases.clone(),
        );
        let injected = Family::<Labels, Counter>::default();
        registry.register("chaos_faults_injected", "Faults injected", injected.clone());
        let confirmed = Counter::default();
        registry.register(
            "chaos_faults_confirmed",
            "Faults proven by a kernel event",
            confirmed.clone(),
        );
        let restarts = Counter::default();
        registry.register("chaos_restarts", "Recovered episodes", restarts.clone());
        let failed = Counter::default();
        registry.register(
            "chaos_recoveries_failed",
            "Episodes not recovered in time",
            failed.clone(),
        );
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "chaos_events",
            "Kernel events of the target set",
            events.clone(),
        );
        let lost = Counter::default();
        registry.register(
            "chaos_events_lost",
            "Events the ring buffer dropped",
            lost.clone(),
        );
        let registry = Arc::new(registry);
        let server = config
            .prometheus
            .map(|addr| {
                if let Some(warning) = exposure(addr) {
                    eprintln!("chaos: warning: {warning}");
                }
                let listener = std::net::TcpListener::bind(addr).map_err(|source| {
                    ExportError::Config(format!("--prometheus {addr}: cannot listen: {source}"))
                })?;
                listener
                    .set_nonblocking(true)
                    .map_err(|source| ExportError::Io {
                        what: "cannot set up the /metrics listener",
                        source,
                    })?;
                Ok::<_, ExportError>(Server {
                    listener,
                    registry: registry.clone(),
                })
            })
            .transpose()?;
        if let Some(path) = &config.textfile {
            check_textfile(path)?;
        }
        Ok((
            Self {
                registry,
                phases,
                injected,
                confirmed,
                restarts,
                failed,
                events,
                lost,
                lost_seen: 0,
                textfile: config.textfile.clone(),
            },
            server,
        ))
    }

    fn write_textfile(&self) -> Result<(), ExportError> {
        let Some(path) = &self.textfile else {
            return Ok(());
        };
        let text = classic_text(&self.registry);
        let tmp = path.with_extension("prom.tmp");
        crate::sys::trust::create_output(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| ExportError::Io {
                what: "cannot write the --textfile",
                source,
            })
    }
}

fn check_textfile(path: &Path) -> Result<(), ExportError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(ExportError::Config(format!(
            "--textfile {}: no directory {}",
            path.display(),
            dir.display()
        )));
    }
    if path.extension().is_none_or(|e| e != "prom") {
        return Err(ExportError::Config(format!(
            "--textfile {}: node_exporter's textfile collector reads *.prom files",
            path.display()
        )));
    }
    Ok(())
}

/// OpenMetrics text as prometheus-client writes it, turned into the classic text format the
/// textfile collector parses: no `# EOF` or `# UNIT`, and a counter's metadata under the
/// name its sample carries (`_total`).
fn classic_text(registry: &Registry) -> String {
    let mut open = String::new();
    let _ = encode_registry(&mut open, registry);
    let counters: Vec<String> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .map(str::to_string)
        .collect();
    let mut out = String::new();
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .iter()
                .any(|c| c == name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

impl Server {
    /// Serves /metrics until the runtime ends; call inside the runtime.
    pub fn spawn(self) -> Result<SocketAddr, ExportError> {
        let addr = self
            .listener
            .local_addr()
            .map_err(|source| ExportError::Io {
                what: "cannot read the /metrics address",
                source,
            })?;
        let listener =
            tokio::net::TcpListener::from_std(self.listener).map_err(|source| ExportError::Io {
                what: "cannot serve /metrics",
                source,
            })?;
        let registry = self.registry;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let registry = registry.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let registry = registry.clone();
                        async move { Ok::<_, Infallible>(respond(&req, &registry)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(addr)
    }
}

fn respond(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        let mut not_found =
            Response::new(Full::new(Bytes::from_static(b"chaos serves /metrics\n")));
        *not_found.status_mut() = hyper::StatusCode::NOT_FOUND;
        return not_found;
    }
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

impl Exporter for Metrics {
    fn event(&mut self, event: &Event) {
        self.events
            .get_or_create(&label("kind", event.kind()))
            .inc();
    }

    fn fault(&mut self, fault: &FaultRecord, _clock: &Clock) {
        self.injected
            .get_or_create(&label("fault", fault.kind.as_str()))
            .inc();
    }

    fn confirmed(&mut self, _fault: &FaultRecord, _ts_ns: u64, _clock: &Clock) {
        self.confirmed.inc();
    }

    fn episode(&mut self, episode: &Episode, _clock: &Clock) {
        for (phase, seconds) in phase_seconds(episode) {
            self.phases
                .get_or_create(&label("phase", phase))
                .observe(seconds);
        }
        match episode.outcome {
            Outcome::Recovered => {
                self.restarts.inc();
            }
            Outcome::Failed => {
                self.failed.inc();
            }
            Outcome::Unfinished => {}
        }
    }

    fn lost(&mut self, total: u64) {
        if total > self.lost_seen {
            self.lost.inc_by(total - self.lost_seen);
            self.lost_seen = total;
        }
    }

    fn tick(&mut self) -> Result<(), ExportError> {
        self.write_textfile()
    }

    fn shutdown(self: Box<Self>) -> Result<(), ExportError> {
        self.write_textfile()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(listen_addr("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(exposure(listen_addr("9464").unwrap()), None);
        assert_eq!(exposure(listen_addr("[::1]:9464").unwrap()), None);
        let wide = exposure(listen_addr("0.0.0.0:9464").unwrap()).unwrap();
        assert!(wide.contains("every network this machine is on") && wide.contains("without TLS"));
        assert_eq!(
            listen_addr("0.0.0.0:9464").unwrap().to_string(),
            "0.0.0.0:9464"
        );
        assert!(listen_addr("localhost").is_err());
    }

    #[test]
    fn the_textfile_is_classic_text_with_the_same_samples() {
        let config = ExportConfig::default();
        let (mut m, server) = Metrics::new(&config).unwrap();
        assert!(server.is_none());
        let clock = Clock::new(0, 0);
        m.episode(&crate::export::tests::episode(), &clock);
        m.lost(4);
        m.lost(4);
        let text = classic_text(&m.registry);
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Every series names the machine.
        let host = crate::sys::host::Host::current();
        let on = format!("host=\"{}\",kernel=\"{}\"", host.name, host.kernel);
        assert!(
            text.contains(&format!(
                "# TYPE chaos_restarts_total counter\nchaos_restarts_total{{{on}}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("chaos_events_lost_total{{{on}}} 4\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "chaos_recovery_phase_seconds_count{{{on},phase=\"total\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("# TYPE chaos_recovery_phase_seconds histogram\n"),
            "{text}"
        );
    }
}
