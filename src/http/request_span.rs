//! The span every request runs in: what its log lines carry (method, route, path, client,
//! request id, status). Leaner than `tracing-actix-web`'s default span, which also formats the
//! user agent, the `Forwarded` host and scheme, the HTTP version and the OpenTelemetry fields
//! into every request's span — work the log layer does for every request (about a tenth of a
//! checkout's time in the HTTP workers), for fields no log line here needs. The exporter never
//! sees this span (it takes orderflow's own spans: a checkout's trace starts at its
//! `POST /v1/checkout` span).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tracing::field::Empty;
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

/// [`RootSpanBuilder`] for orderflow's requests.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let route = request.match_pattern();
        let id = request.extensions().get::<RequestId>().copied();
        let peer = request.peer_addr();
        // Under tracing-actix-web's target, as its own span was: `RUST_LOG` directives for
        // `tracing_actix_web` still apply, and the exporter (orderflow's targets only) leaves
        // it out, as before. The client is the socket's peer (behind a proxy, the proxy): no
        // `Forwarded` header a client could forge.
        tracing::info_span!(
            target: "tracing_actix_web",
            "HTTP request",
            http.method = %request.method(),
            http.route = route.as_deref().unwrap_or("default"),
            http.target = request.uri().path(),
            http.client_ip = peer.map(|a| tracing::field::display(a.ip())),
            request_id = id.map(tracing::field::display),
            http.status_code = Empty,
            exception.message = Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, error) = match outcome {
            Ok(response) => (response.status(), response.response().error()),
            Err(error) => (error.as_response_error().status_code(), Some(error)),
        };
        span.record("http.status_code", status.as_u16());
        // A server error's cause, for the log; a client's mistake is the client's answer only
        // (its text may echo what was sent).
        if let Some(error) = error.filter(|_| status.is_server_error()) {
            span.record("exception.message", error.to_string());
        }
    }
}
