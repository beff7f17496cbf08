//! Logs and traces. Logs go to stderr (`RUST_LOG`, plain or JSON). Traces leave the process
//! only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set:
//! then orderflow's spans — the pipeline's own ([`TARGET`], `debug` level) and those its
//! functions already open for the logs — go over OTLP/HTTP (protobuf) through
//! a batch exporter, and a W3C `traceparent` travels in the AMQP headers of every checkout and
//! event, so one checkout is one trace from the HTTP request to its decision, across processes
//! and redeliveries. When it is not set, those spans are disabled at their call sites (the log
//! filter never enables [`TARGET`]) and no header is written: they cost a relaxed atomic load.
//!
//! The standard variables apply: `OTEL_SERVICE_NAME` (default `orderflow`),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_BSP_MAX_QUEUE_SIZE` (a full queue drops spans, never blocks an order).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, Layer};

/// The target of the pipeline's spans: only the trace exporter listens to it.
pub const TARGET: &str = "orderflow::trace";

/// The AMQP header (and HTTP header) that carries the trace context (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// An error with its causes, `a: b: c` — for a dead letter's reason or a log line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    // A cause already said (perhaps folded onto one line) is not said again.
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !squash(&text).contains(&squash(&next)) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Whether spans leave the process (an OTLP endpoint is configured).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

static PROVIDER: std::sync::OnceLock<SdkTracerProvider> = std::sync::OnceLock::new();

/// Sends the spans still buffered (before a deliberate abort in tests, say).
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.force_flush() {
            eprintln!("orderflow: could not send the last spans: {e}");
        }
    }
}

/// Sends what is buffered and stops the exporter (at exit).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            eprintln!("orderflow: could not send the last spans: {e}");
        }
    }
}

/// The OTLP endpoint the environment names, if any.
pub fn otlp_endpoint(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .filter(|e| !e.trim().is_empty())
}

/// Installs the global subscriber: logs by `log_filter` (`json` or plain), and the trace
/// exporter when `otlp` names an endpoint. An exporter that cannot be built is reported and
/// left out (the service runs without traces rather than not at all).
pub fn init(log_filter: &str, json: bool, otlp: Option<&str>) {
    let filter = filter::EnvFilter::try_new(log_filter)
        .unwrap_or_else(|_| filter::EnvFilter::new("info"))
        // The pipeline's spans are for the exporter, never for the log lines.
        .add_directive(
            format!("{TARGET}=off")
                .parse()
                .unwrap_or_else(|_| filter::Directive::from(tracing::Level::ERROR)),
        );
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed()
    };
    let (provider, traces) = match otlp.map(build_provider) {
        Some(Ok(provider)) => {
            let tracer = provider.tracer("orderflow");
            eprintln!(
                "orderflow: exporting traces over OTLP/HTTP to {}",
                otlp.unwrap_or_default()
            );
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // orderflow's spans (the pipeline's and every `#[instrument]`), no events.
                .with_filter(filter::filter_fn(|meta| {
                    meta.is_span() && meta.target().starts_with("orderflow")
                }));
            (Some(provider), Some(layer))
        }
        Some(Err(e)) => {
            eprintln!("orderflow: traces are not exported: {e}");
            (None, None)
        }
        None => (None, None),
    };
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(traces)
        .try_init();
    if let (Ok(()), Some(provider)) = (installed, provider) {
        let _ = PROVIDER.set(provider);
        EXPORTING.store(true, Ordering::Relaxed);
    }
}

fn build_provider(_endpoint: &str) -> Result<SdkTracerProvider, String> {
    // The exporter reads the endpoint (and its headers, timeout) from the standard variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("orderflow");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The `traceparent` of `span`, when spans are exported and it is being recorded.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !exporting() || span.is_none() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The context a `traceparent` names (invalid when it is malformed).
fn context_of(traceparent: &str) -> opentelemetry::Context {
    let mut carrier = HashMap::new();
    carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` continue the trace of `traceparent` (a malformed one is ignored: the span
/// starts a trace of its own).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|_| exporting() && !span.is_none()) else {
        return;
    };
    let cx = context_of(traceparent);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Whether `traceparent` names a span (a valid W3C `traceparent` of at most 128 bytes).
pub fn is_trace(traceparent: &str) -> bool {
    traceparent.len() <= 128 && context_of(traceparent).span().span_context().is_valid()
}

/// Links `span` to the span `traceparent` names, in another trace (a message of a batch and
/// the batch, say); a malformed one is ignored.
pub fn link(span: &tracing::Span, traceparent: &str) {
    if !exporting() || span.is_none() {
        return;
    }
    let cx = context_of(traceparent);
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// The current span, to hand to another thread or actor (none when nothing is exported).
pub fn current() -> tracing::Span {
    if exporting() {
        tracing::Span::current()
    } else {
        tracing::Span::none()
    }
}
