//! Checkout and orders: `POST /v1/checkout`, `GET /v1/orders/{id}`, `GET /v1/orders/{id}/events`,
//! `POST /v1/orders/{id}/cancel`, `GET /v1/customers/{id}/orders`,
//! `GET /v1/customers/{id}/notifications` (and `/v1/customers/me/...`). Who may reach what is
//! decided by the extractors of `auth` in the arguments, never in the handlers' bodies.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse, Responder};
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Caller, CustomerScope, OwnedOrder};
#[allow(unused_imports)]
use super::openapi::ErrorBody;
use super::stream::Step;
use super::{Active, ApiError, AppState};
use crate::domain::checkout::CheckoutInput;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::validation::Object;
use crate::orders::{IntakeOutcome, OrderEvent};
use crate::persistence::orders::NotificationRecord;

const KEY_HEADER: &str = "Idempotency-Key";

/// What `POST /v1/checkout` answers: where to follow the order.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "order_id": "0b6c4cf4-3a29-5e0c-9d0a-5b0f4fbd8a11", "status": "received",
    "status_url": "/v1/orders/0b6c4cf4-3a29-5e0c-9d0a-5b0f4fbd8a11"
}))]
pub struct CheckoutAccepted {
    order_id: Uuid,
    /// `received` on a 202; the order's status now on a 200 (the key's order exists).
    status: OrderStatus,
    status_url: String,
}

fn status_body(order_id: Uuid, status: OrderStatus) -> CheckoutAccepted {
    CheckoutAccepted {
        order_id,
        status,
        status_url: format!("/v1/orders/{order_id}"),
    }
}

/// `GET /v1/customers/{id}/orders`: newest first, at most 100.
#[derive(Serialize, ToSchema)]
pub struct OrderList {
    #[schema(value_type = Vec<crate::domain::order::OrderView>)]
    data: Vec<Order>,
}

/// `GET /v1/customers/{id}/notifications`: newest first, at most 100.
#[derive(Serialize, ToSchema)]
pub struct NotificationList {
    data: Vec<NotificationRecord>,
}

/// `POST /v1/checkout`.
#[utoipa::path(post, path = "/v1/checkout", tag = "orders", security(("customer" = []), ("admin" = [])), params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$", description = "1 to 255 characters, no control characters; scoped to the customer")), request_body = crate::domain::checkout::CheckoutInput, responses((status = 200, description = "The key's order exists", body = CheckoutAccepted), (status = 202, description = "Queued (broker confirmed)", body = CheckoutAccepted), (status = 400, description = "Not JSON or not the expected shape", body = ErrorBody), (status = 401, description = "No valid bearer token (`WWW-Authenticate: Bearer`)", body = ErrorBody), (status = 403, description = "customer_id is not the token's customer", body = ErrorBody), (status = 404, description = "`cart_id` names no cart of this customer", body = ErrorBody), (status = 409, description = "Out of stock at the door (`out_of_stock`, with suggestions)", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not application/json", body = ErrorBody), (status = 422, description = "Validation failed or `idempotency_mismatch`", body = ErrorBody), (status = 429, description = "Rate limited, with `Retry-After`", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn checkout(
    caller: Caller,
    state: Active,
    req: HttpRequest,
    body: web::Json<Object<CheckoutInput>>,
) -> Result<HttpResponse, ApiError> {
    let key = req
        .headers()
        .get(KEY_HEADER)
        .map(|v| v.to_str().map(str::trim).unwrap_or(""))
        .ok_or_else(|| ApiError::field(KEY_HEADER, "is required"))?;
    // The same rule as the queue's `message_id` (what the consumer will check again).
    let key = crate::domain::parse_key(key).map_err(|e| ApiError::field(KEY_HEADER, e))?;
    if key.len() > 255 {
        return Err(ApiError::field(KEY_HEADER, "must be at most 255 bytes"));
    }
    // Read straight into the typed request (a JSON object), no JSON tree on the way; a typed
    // card's number and code are wiped when the request is dropped (`CardInput`'s `Drop`).
    let Object(mut input) = body.into_inner();
    // The customer is the token's; the body may only repeat it. Written into the request, so
    // the fingerprint and the queued message say who it is whether the client named it or not.
    let customer = caller.acting_for(input.customer_id.as_deref())?;
    input.customer_id = Some(customer.as_str().to_owned());
    // Admission before the checkout is validated: a shed answer costs little (issue 20). The
    // lines as sent serve the 409 a shed checkout of known-short stock gets.
    let lines = lines_as_sent(input.items.as_deref());
    let admitted = state
        .orders
        .admit(customer.as_str(), &key, lines.as_deref())
        .await?;
    let checkout = input.validate(state.orders.today());
    drop(input);
    let checkout = checkout?;
    let span = intake_span(&req);
    match state
        .orders
        .intake(&key, checkout, admitted)
        .instrument(span)
        .await?
    {
        IntakeOutcome::Accepted(order_id) => {
            Ok(HttpResponse::Accepted().json(status_body(order_id, OrderStatus::Received)))
        }
        IntakeOutcome::Existing(order_id, status) => {
            Ok(HttpResponse::Ok().json(status_body(order_id, status)))
        }
    }
}

/// `items` as sent, if every line is a `{"sku": valid SKU, "quantity": integer >= 1}`; else
/// `None` (the full validation says what is wrong, once admitted).
fn lines_as_sent(
    items: Option<&[crate::domain::checkout::ItemInput]>,
) -> Option<Vec<(crate::domain::Sku, i64)>> {
    items?
        .iter()
        .map(|line| {
            let sku = crate::domain::Sku::parse(line.sku.as_deref()?).ok()?;
            let quantity = line.quantity.filter(|q| *q >= 1)?;
            Some((sku, quantity))
        })
        .collect()
}

/// The trace of a checkout starts here, or continues the caller's `traceparent` (disabled when
/// no spans are exported).
fn intake_span(req: &HttpRequest) -> tracing::Span {
    server_span(req, "/v1/checkout")
}

/// The span of a `POST` to `route` that changes an order, continuing the caller's
/// `traceparent` (or starting a trace): its steps and the events it publishes are in it.
fn server_span(req: &HttpRequest, route: &'static str) -> tracing::Span {
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::debug_span!(
        target: crate::telemetry::TARGET,
        "request",
        otel.name = format!("POST {route}"),
        otel.kind = "server",
        http.request.method = "POST",
        http.route = route,
        orderflow.order_id = tracing::field::Empty,
    );
    let parent = req
        .headers()
        .get(crate::telemetry::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|t| t.len() <= 128);
    crate::telemetry::continue_trace(&span, parent);
    span
}

/// `GET /v1/orders/{order_id}`.
#[utoipa::path(get, path = "/v1/orders/{order_id}", operation_id = "get_order", tag = "orders", security(("customer" = []), ("admin" = [])), params(("order_id" = String, Path)), responses((status = 200, description = "The order with its history", body = crate::domain::order::OrderView), (status = 401, description = "No valid bearer token (`WWW-Authenticate: Bearer`)", body = ErrorBody), (status = 404, description = "Not found (or another customer's)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn get(owned: OwnedOrder) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(&owned.order))
}

/// `POST /v1/orders/{order_id}/cancel`.
#[utoipa::path(post, path = "/v1/orders/{order_id}/cancel", tag = "orders", security(("customer" = []), ("admin" = [])), params(("order_id" = String, Path)), responses((status = 200, description = "The cancelled order", body = crate::domain::order::OrderView), (status = 401, description = "No valid bearer token (`WWW-Authenticate: Bearer`)", body = ErrorBody), (status = 404, description = "Not found (or another customer's)", body = ErrorBody), (status = 409, description = "Rejected or failed (`not_cancellable`)", body = ErrorBody), (status = 429, description = "Rate limited, with `Retry-After`", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn cancel(
    req: HttpRequest,
    owned: OwnedOrder,
    state: Active,
) -> Result<HttpResponse, ApiError> {
    let span = server_span(&req, "/v1/orders/{order_id}/cancel");
    span.record("orderflow.order_id", owned.order.order_id.to_string());
    let cancelled = state
        .orders
        .cancel(owned.order.order_id)
        .instrument(span)
        .await?;
    Ok(HttpResponse::Ok().json(&cancelled))
}

async fn orders_of(scope: CustomerScope, state: Active) -> Result<HttpResponse, ApiError> {
    let orders = state
        .orders
        .of_customer(scope.0.as_str().to_owned())
        .await?;
    Ok(HttpResponse::Ok().json(OrderList { data: orders }))
}

async fn notifications_of(scope: CustomerScope, state: Active) -> Result<HttpResponse, ApiError> {
    let notes = state
        .orders
        .notifications(scope.0.as_str().to_owned())
        .await?;
    Ok(HttpResponse::Ok().json(NotificationList { data: notes }))
}

/// `GET /v1/customers/{customer_id}/orders`.
#[utoipa::path(get, path = "/v1/customers/{customer_id}/orders", tag = "orders", security(("customer" = []), ("admin" = [])), params(("customer_id" = String, Path, description = "the token's customer (else 404)")), responses((status = 200, description = "The customer's orders, newest first", body = OrderList), (status = 401, description = "No valid bearer token (`WWW-Authenticate: Bearer`)", body = ErrorBody), (status = 404, description = "Not found (or not the caller)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn of_customer(scope: CustomerScope, state: Active) -> Result<HttpResponse, ApiError> {
    orders_of(scope, state).await
}

/// `GET /v1/customers/me/orders`.
#[utoipa::path(get, path = "/v1/customers/me/orders", tag = "orders", security(("customer" = [])), responses((status = 200, description = "The caller's orders, newest first", body = OrderList), (status = 401, description = "No valid bearer token (`WWW-Authenticate: Bearer`)", body = ErrorBody), (status = 404, description = "Support staff have no orders of their own", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn my_orders(scope: CustomerScope, state: Active) -> Result<HttpResponse, ApiError> {
    orders_of(scope, state).await
}

/// `GET /v1/customers/{customer_id}/notifications`.
#[utoipa::path(get, path = "/v1/customers/{customer_id}/notifications", tag = "orders", security(("customer" = []), ("admin" = [])), params(("customer_id" = String, Path, description = "the token's customer (else 404)")), responses((status = 200, description = "The customer's notifications, newest first", body = NotificationList), (status = 401, description = "No valid bearer token (`WWW-Authenticate: Bearer`)", body = ErrorBody), (status = 404, description = "Not found (or not the caller)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn notifications(scope: CustomerScope, state: Active) -> Result<HttpResponse, ApiError> {
    notifications_of(scope, state).await
}

/// `GET /v1/customers/me/notifications`.
#[utoipa::path(get, path = "/v1/customers/me/notifications", tag = "orders", security(("customer" = [])), responses((status = 200, description = "The caller's notifications, newest first", body = NotificationList), (status = 401, description = "No valid bearer token (`WWW-Authenticate: Bearer`)", body = ErrorBody), (status = 404, description = "Support staff have no notifications of their own", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn my_notifications(
    scope: CustomerScope,
    state: Active,
) -> Result<HttpResponse, ApiError> {
    notifications_of(scope, state).await
}

fn status_event(event: &OrderEvent) -> actix_web_lab::sse::Event {
    let data = json!({ "order_id": event.order_id, "status": event.status, "at": event.at });
    actix_web_lab::sse::Data::new(data.to_string())
        .event("status")
        .into()
}

/// `GET /v1/orders/{order_id}/events`: the history so far, then each change, ending after a
/// decided status.
#[utoipa::path(get, path = "/v1/orders/{order_id}/events", tag = "orders", security(("customer" = []), ("admin" = [])), params(("order_id" = String, Path)), responses((status = 200, description = "Server-sent events of status changes, ending at a decision", content_type = "text/event-stream"), (status = 401, description = "No valid bearer token (`WWW-Authenticate: Bearer`)", body = ErrorBody), (status = 404, description = "Not found (or another customer's)", body = ErrorBody), (status = 503, description = "Unavailable, overloaded or too many open streams, with `Retry-After`", body = ErrorBody)))]
pub async fn events(
    owned: OwnedOrder,
    state: Active,
    app: web::Data<AppState>,
) -> Result<impl Responder, ApiError> {
    let order_id = owned.order.order_id;
    let slot = app.streams.orders.take()?;
    // Subscribe first, so nothing falls between the history read and the live stream.
    let live = state.orders.subscribe();
    let order = state
        .orders
        .get(order_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("unknown order".into()))?;
    let first = order
        .history
        .iter()
        .map(|(status, at)| {
            status_event(&OrderEvent {
                order_id,
                status: *status,
                at: *at,
            })
        })
        .collect();
    // A change that happened between subscribing and reading is in the history already.
    let replayed: Vec<_> = order.history.iter().map(|(s, _)| *s).collect();
    Ok(super::stream::events(
        slot,
        first,
        live,
        order.status.is_decided(),
        format!("re-read GET /v1/orders/{order_id}"),
        move |event: &OrderEvent| {
            if event.order_id != order_id || replayed.contains(&event.status) {
                Step::Skip
            } else if event.status.is_decided() {
                Step::Last(status_event(event))
            } else {
                Step::Send(status_event(event))
            }
        },
    ))
}
