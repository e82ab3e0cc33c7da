//! OTLP over HTTP/protobuf with the opentelemetry crates: a span per fault with a child per
//! recovery phase (start and end from kernel timestamps), and the metrics of [`super`].
//!
//! The SDK exports from its own threads (batch span processor, periodic metric reader), so
//! the blocking HTTP client never runs inside chaos's async runtime; `shutdown` flushes both.

use std::collections::HashMap;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::{
    Context, KeyValue,
    metrics::{Counter, Histogram, MeterProvider as _},
    trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _},
};
use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    logs::{SdkLogger, SdkLoggerProvider},
    metrics::SdkMeterProvider,
    trace::{SdkTracer, SdkTracerProvider},
};

use super::{BUCKETS, Clock, ExportError, Exporter, phase_seconds, phase_spans};
use crate::{
    audit::{Mirror, Written},
    episode::{Episode, Outcome},
    event::Event,
    fault::FaultRecord,
};

/// Where OTLP goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `--otlp URL`: the base URL; `/v1/traces` and `/v1/metrics` are added.
    Url(String),
    /// No `--otlp`, but OTEL_EXPORTER_OTLP_ENDPOINT (or a per-signal one) is set: the SDK
    /// reads the standard variables (endpoints, headers, timeout, compression).
    Environment,
}

const ENV_ENDPOINTS: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

impl Endpoint {
    pub fn from_args(url: Option<&str>) -> Result<Option<Self>, ExportError> {
        match url {
            Some(url) => {
                let host = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"))
                    .and_then(|rest| rest.split(['/', ':']).next());
                let ok = host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace));
                if !ok {
                    return Err(ExportError::Config(format!(
                        "--otlp {url}: give the collector's OTLP/HTTP base URL, for example http://127.0.0.1:4318"
                    )));
                }
                Ok(Some(Endpoint::Url(url.trim_end_matches('/').to_string())))
            }
            None => Ok(ENV_ENDPOINTS
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
                .then_some(Endpoint::Environment)),
        }
    }

    fn signal(&self, path: &str) -> Option<String> {
        match self {
            Endpoint::Url(base) => Some(format!("{base}{path}")),
            Endpoint::Environment => None,
        }
    }
}

pub struct Otlp {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    /// The audit log's copy that leaves the machine: a log record per entry.
    logger_provider: SdkLoggerProvider,
    logger: SdkLogger,
    tracer: SdkTracer,
    phases: Histogram<f64>,
    injected: Counter<u64>,
    confirmed: Counter<u64>,
    restarts: Counter<u64>,
    failed: Counter<u64>,
    events: Counter<u64>,
    lost: Counter<u64>,
    lost_seen: u64,
    /// Faults not yet matched to an episode, with their proof's time once seen: their spans
    /// are made when the episode ends, or at shutdown (ending at the proof).
    pending: HashMap<u64, (FaultRecord, Option<u64>)>,
    /// The last fault per pid (a fault's episode is the death of that pid).
    by_pid: HashMap<u32, u64>,
}

fn build_error(what: &'static str, e: impl std::fmt::Display) -> ExportError {
    ExportError::Config(format!("--otlp: cannot set up the {what} exporter: {e}"))
}

impl Otlp {
    pub fn new(endpoint: &Endpoint, attributes: &[(String, String)]) -> Result<Self, ExportError> {
        // The machine, in OpenTelemetry's semantic conventions: every span, metric and log
        // record of a node carries it, so that one backend aggregates a fleet.
        let host = crate::sys::host::Host::current();
        let resource = Resource::builder()
            .with_service_name("chaos")
            .with_attributes(
                [
                    KeyValue::new("host.name", host.name),
                    KeyValue::new("os.type", "linux"),
                    KeyValue::new("os.version", host.kernel),
                ]
                .into_iter()
                .chain(
                    attributes
                        .iter()
                        .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
                ),
            )
            .build();
        let mut spans = SpanExporter::builder().with_http();
        if let Some(url) = endpoint.signal("/v1/traces") {
            spans = spans.with_endpoint(url);
        }
        let spans = spans.build().map_err(|e| build_error("trace", e))?;
        let mut metrics = MetricExporter::builder().with_http();
        if let Some(url) = endpoint.signal("/v1/metrics") {
            metrics = metrics.with_endpoint(url);
        }
        let metrics = metrics.build().map_err(|e| build_error("metric", e))?;
        let mut logs = LogExporter::builder().with_http();
        if let Some(url) = endpoint.signal("/v1/logs") {
            logs = logs.with_endpoint(url);
        }
        let logs = logs.build().map_err(|e| build_error("log", e))?;
        let logger_provider = SdkLoggerProvider::builder()
            .with_batch_exporter(logs)
            .with_resource(resource.clone())
            .build();
        let logger = logger_provider.logger("chaos.audit");
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_periodic_exporter(metrics)
            .with_resource(resource)
            .build();
        let tracer = tracer_provider.tracer("chaos");
        let meter = meter_provider.meter("chaos");
        Ok(Self {
            phases: meter
                .f64_histogram("chaos.recovery.phase.duration")
                .with_unit("s")
                .with_description("Recovery phases of recovered episodes, and their total")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
            injected: meter
                .u64_counter("chaos.faults.injected")
                .with_description("Faults injected")
                .build(),
            confirmed: meter
                .u64_counter("chaos.faults.confirmed")
                .with_description("Faults proven by a kernel event")
                .build(),
            restarts: meter
                .u64_counter("chaos.restarts")
                .with_description("Recovered episodes")
                .build(),
            failed: meter
                .u64_counter("chaos.recoveries.failed")
                .with_description("Episodes not recovered in time")
                .build(),
            events: meter
                .u64_counter("chaos.events")
                .with_description("Kernel events of the target set")
                .build(),
            lost: meter
                .u64_counter("chaos.events.lost")
                .with_description("Events the ring buffer dropped")
                .build(),
            lost_seen: 0,
            tracer,
            tracer_provider,
            meter_provider,
            logger_provider,
            logger,
            pending: HashMap::new(),
            by_pid: HashMap::new(),
        })
    }

    /// A span for `fault` from `start` to `end` (kernel times), with the episode's phases as
    /// children when there is one.
    fn span(
        &self,
        fault: Option<&FaultRecord>,
        episode: Option<&Episode>,
        start: u64,
        end: u64,
        clock: &Clock,
    ) {
        let name = fault
            .map(|f| f.value.clone())
            .or_else(|| episode.and_then(|e| e.fault.as_ref().map(|f| f.signal_name.clone())))
            .unwrap_or_else(|| "exit".into());
        let mut attributes = Vec::new();
        if let Some(f) = fault {
            attributes.extend([
                KeyValue::new("chaos.fault.id", f.id as i64),
                KeyValue::new("chaos.fault.kind", f.kind.as_str()),
                KeyValue::new("chaos.fault.backend", f.backend.as_str()),
                KeyValue::new("process.pid", i64::from(f.pid)),
                KeyValue::new("process.command", f.comm.clone()),
            ]);
            if let Some(syscall) = &f.syscall {
                attributes.push(KeyValue::new("chaos.fault.syscall", syscall.clone()));
            }
        }
        if let Some(e) = episode {
            attributes.extend([
                KeyValue::new("chaos.episode.id", e.id as i64),
                KeyValue::new(
                    "chaos.episode.outcome",
                    format!("{:?}", e.outcome).to_lowercase(),
                ),
                KeyValue::new("chaos.episode.old_pid", i64::from(e.old_pid)),
                KeyValue::new("chaos.episode.supervisor", i64::from(e.supervisor)),
            ]);
            if let Some(new) = e.new_pid {
                attributes.push(KeyValue::new("chaos.episode.new_pid", i64::from(new)));
            }
        }
        let root = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(clock.wall(start))
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &Context::new());
        let cx = Context::new().with_span(root);
        if let Some(e) = episode {
            for phase in phase_spans(e) {
                let mut child = self
                    .tracer
                    .span_builder(phase.name)
                    .with_start_time(clock.wall(phase.start_ns))
                    .start_with_context(&self.tracer, &cx);
                child.end_with_timestamp(clock.wall(phase.end_ns));
            }
            if e.outcome != Outcome::Recovered {
                cx.span().set_status(Status::error(
                    e.reason.clone().unwrap_or_else(|| "not recovered".into()),
                ));
            }
        }
        cx.span().end_with_timestamp(clock.wall(end.max(start)));
    }
}

impl Exporter for Otlp {
    fn event(&mut self, event: &Event) {
        self.events.add(1, &[KeyValue::new("kind", event.kind())]);
    }

    fn fault(&mut self, fault: &FaultRecord, _clock: &Clock) {
        self.injected
            .add(1, &[KeyValue::new("fault", fault.kind.as_str())]);
        self.by_pid.insert(fault.pid, fault.id);
        self.pending.insert(fault.id, (fault.clone(), None));
    }

    fn confirmed(&mut self, fault: &FaultRecord, ts_ns: u64, clock: &Clock) {
        self.confirmed
            .add(1, &[KeyValue::new("fault", fault.kind.as_str())]);
        // A signal that kills is the start of an episode: its span waits for it (or for the
        // end). An errno ends at its proof.
        if fault.kind != crate::fault::FaultKind::Signal {
            self.pending.remove(&fault.id);
            self.span(Some(fault), None, fault.ts_ns, ts_ns, clock);
        } else if let Some((_, proof)) = self.pending.get_mut(&fault.id) {
            *proof = Some(ts_ns);
        }
    }

    fn episode(&mut self, episode: &Episode, clock: &Clock) {
        let phases = phase_seconds(episode);
        for (phase, seconds) in &phases {
            self.phases
                .record(*seconds, &[KeyValue::new("phase", *phase)]);
        }
        match episode.outcome {
            Outcome::Recovered => self.restarts.add(1, &[]),
            Outcome::Failed => self.failed.add(1, &[]),
            Outcome::Unfinished => {}
        }
        let fault = self
            .by_pid
            .remove(&episode.old_pid)
            .and_then(|id| self.pending.remove(&id))
            .map(|(fault, _)| fault);
        let at = &episode.at_ns;
        let start = fault
            .as_ref()
            .map(|f| f.ts_ns)
            .or(at.fault)
            .or(at.exit)
            .unwrap_or(0);
        let end = [at.ready, at.exec, at.forked, at.reaped, at.exit]
            .into_iter()
            .flatten()
            .next()
            .unwrap_or(start);
        self.span(fault.as_ref(), Some(episode), start, end, clock);
    }

    fn audit_mirror(&self) -> Option<Mirror> {
        let logger = self.logger.clone();
        Some(Box::new(move |w: &Written| {
            let mut record = logger.create_log_record();
            record.set_event_name("chaos.audit");
            record.set_timestamp(std::time::SystemTime::now());
            record.set_body(AnyValue::String(w.line.clone().into()));
            record.add_attribute("chaos.audit.seq", w.seq as i64);
            record.add_attribute("chaos.audit.hash", w.hash.clone());
            record.add_attribute("chaos.audit.prev", w.prev.clone());
            record.add_attribute("chaos.audit.kind", w.kind.clone());
            logger.emit(record);
        }))
    }

    fn lost(&mut self, total: u64) {
        if total > self.lost_seen {
            self.lost.add(total - self.lost_seen, &[]);
            self.lost_seen = total;
        }
    }

    fn shutdown(self: Box<Self>) -> Result<(), ExportError> {
        let clock = Clock::now();
        // Faults with no episode (none measured, or none came): a span each, from the fault to
        // its proof (or an instant, unproven).
        let mut left: Vec<&(FaultRecord, Option<u64>)> = self.pending.values().collect();
        left.sort_by_key(|(f, _)| f.id);
        for (f, proof) in left {
            self.span(Some(f), None, f.ts_ns, proof.unwrap_or(f.ts_ns), &clock);
        }
        let traces = self.tracer_provider.shutdown();
        let metrics = self.meter_provider.shutdown();
        let logs = self.logger_provider.shutdown();
        let failed = |what: &str, e: opentelemetry_sdk::error::OTelSdkError| {
            ExportError::Send(format!("--otlp: exporting {what} failed: {e}"))
        };
        traces
            .map_err(|e| failed("traces", e))
            .and(metrics.map_err(|e| failed("metrics", e)))
            .and(logs.map_err(|e| failed("the audit log", e)))
    }
}
