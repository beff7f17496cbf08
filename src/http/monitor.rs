//! What an operator watches: `GET /metrics` (Prometheus text), `GET /v1/queues` (depths, rates,
//! admission), the live feed `GET /v1/monitor/stream` (a snapshot every half second over SSE),
//! the recent dead letters (admin), and `GET /dashboard` — one page served from `web/` with
//! its vendored chart library (no build step).

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use actix_web_lab::sse::{self, Sse};
use futures_util::stream::{self, Stream};

#[allow(unused_imports)]
use super::openapi::ErrorBody;
use super::{auth::Admin, ApiError, AppState};
use crate::monitor::snapshot::{BrokerView, QueueView, WriterBacklog};
use crate::monitor::{AdmissionView, DeadLetterSeen, LatencySummary, Snapshot};

const DASHBOARD_HTML: &str = include_str!("../../web/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../../web/dashboard.js");
const UPLOT_JS: &str = include_str!("../../web/vendor/uplot.min.js");
const UPLOT_CSS: &str = include_str!("../../web/vendor/uplot.min.css");

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition (version 0.0.4)", content_type = "text/plain"), (status = 503, description = "No metrics recorder in this process", body = ErrorBody)))]
pub async fn metrics() -> Result<HttpResponse, ApiError> {
    let handle = crate::monitor::prometheus::handle()
        .ok_or_else(|| ApiError::unavailable("no metrics recorder in this process", 60))?;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(handle.render()))
}

/// The `/v1/queues` body: API.md's fields first, then the monitor's extras.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct QueuesBody<'a> {
    queues: &'a [QueueView],
    admission: AdmissionView,
    admitted_per_s: f64,
    shed_per_s: f64,
    decided_per_s: f64,
    /// accept → decided over the last 10 s.
    latency: LatencySummary,
    /// Items queued in each write-behind writer.
    memory_ahead_of_disk: &'a [WriterBacklog],
    broker: BrokerView,
    /// `null` until the first sample.
    sampled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Where the broker runs — for the admin token only (host names and ports are not for
    /// strangers): absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    topology: Option<Topology>,
}

/// The broker cluster as this instance sees it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Topology {
    /// `host:port` of the node connected to (the last one, while reconnecting).
    node: String,
    /// Every node of `AMQP_URL`, in order.
    nodes: Vec<String>,
    /// Each queue's leader and members, all and online, as the management API last said
    /// (`AMQP_MANAGEMENT_URL`; empty without it, or after 10 s without an answer).
    queues: Vec<crate::monitor::leaders::Membership>,
}

fn topology(state: &AppState) -> Topology {
    let monitor = &state.monitor;
    Topology {
        node: state.broker.node(),
        nodes: state.broker.nodes(),
        queues: crate::messaging::topology::QUEUES
            .iter()
            .filter_map(|q| monitor.membership(q.name))
            .collect(),
    }
}

fn queues_body<'a>(snapshot: &'a Snapshot, state: &AppState) -> QueuesBody<'a> {
    QueuesBody {
        queues: &snapshot.queues,
        admission: state.monitor.admission_state(),
        admitted_per_s: snapshot.admitted_per_s,
        shed_per_s: snapshot.shed_per_s,
        decided_per_s: snapshot.decided_per_s,
        latency: snapshot.latency,
        memory_ahead_of_disk: &snapshot.memory_ahead_of_disk,
        broker: snapshot.broker,
        sampled_at: snapshot.at,
        topology: None,
    }
}

/// `GET /v1/monitor/dead-letters`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    data: Vec<DeadLetterSeen>,
}

/// `GET /v1/queues`: each queue's depth (read from the broker at least every second), rates over
/// the last 5 s, consumers, and the admission state with its reason.
#[utoipa::path(get, path = "/v1/queues", tag = "operations", security((), ("admin" = [])), responses((status = 200, description = "`queues`: name, ready, unacked, consumers, publish/confirm/deliver/ack/redeliver/dead-letter rates, dead_letters; `admission`: state (open|shedding), reason, expected_wait_ms, target_ms, backlog, pending, intake_ms, in_flight, drain_per_s, returns_booked (shed clients told to come back from now on), returns_remembered (checkouts whose places are remembered); `topology` (admin token only): the broker node in use, the nodes, each queue's leader and members", body = QueuesBody)))]
pub async fn queues(admin: Option<Admin>, state: web::Data<AppState>) -> HttpResponse {
    let snapshot = state.monitor.snapshot();
    let mut body = queues_body(&snapshot, &state);
    if admin.is_some() {
        body.topology = Some(topology(&state));
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

/// `GET /v1/monitor/stream`: the monitor's snapshot every half second, as SSE `snapshot` events
/// (what the dashboard draws).
#[utoipa::path(get, path = "/v1/monitor/stream", tag = "operations", responses((status = 200, description = "text/event-stream of `snapshot` events: queues, admission, rates, latency percentiles, memory ahead of disk, hottest SKUs", content_type = "text/event-stream"), (status = 503, description = "Too many open streams, with `Retry-After`", body = ErrorBody)))]
pub async fn stream(
    state: web::Data<AppState>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, std::convert::Infallible>>>, ApiError> {
    let slot = state.streams.monitor.take()?;
    let receiver = state.monitor.subscribe();
    let body = stream::unfold((receiver, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let snapshot = rx.borrow_and_update().clone();
        let data = serde_json::to_string(&*snapshot).unwrap_or_else(|_| "{}".into());
        let event = sse::Data::new(data).event("snapshot").into();
        Some((Ok(event), (rx, false)))
    });
    Ok(Sse::from_stream(super::stream::bounded(slot, body))
        .with_keep_alive(Duration::from_secs(15)))
}

/// `GET /v1/monitor/dead-letters` (admin): the dead letters this instance wrote recently, newest
/// first, with their reasons.
#[utoipa::path(get, path = "/v1/monitor/dead-letters", tag = "operations", security(("admin" = [])), responses((status = 200, description = "This instance's recent dead letters, newest first", body = DeadLetterList), (status = 401, description = "Admin token missing or wrong", body = ErrorBody)))]
pub async fn dead_letters(_admin: Admin, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(DeadLetterList {
            data: state.monitor.recent_dead_letters(),
        })
}

/// The dashboard's Content-Security-Policy: its own scripts only (no inline script), its own
/// style sheet and inline styles, its own feed; never framed (OWASP secure headers).
const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

/// `GET /dashboard`: the page an operator watches during a sale.
#[utoipa::path(get, path = "/dashboard", tag = "operations", responses((status = 200, description = "HTML page: live charts of queue depth, admitted/shed/decided per second, latency percentiles, memory ahead of disk; admission state; hottest SKUs; recent dead letters (with the admin token)", content_type = "text/html")))]
pub async fn dashboard() -> HttpResponse {
    asset("text/html; charset=utf-8", DASHBOARD_HTML)
}

/// `GET /dashboard/{file}`: the page's script and its chart library.
#[utoipa::path(get, path = "/dashboard/{file}", tag = "operations", params(("file" = String, Path, description = "dashboard.js, uplot.min.js or uplot.min.css")), responses((status = 200, description = "The file"), (status = 404, description = "No such file", body = ErrorBody)))]
pub async fn dashboard_file(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match file.as_str() {
        "dashboard.js" => Ok(asset("text/javascript; charset=utf-8", DASHBOARD_JS)),
        "uplot.min.js" => Ok(asset("text/javascript; charset=utf-8", UPLOT_JS)),
        "uplot.min.css" => Ok(asset("text/css; charset=utf-8", UPLOT_CSS)),
        _ => Err(ApiError::NotFound("no such file".into())),
    }
}
