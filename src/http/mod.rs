//! The actix-web API (API.md). Handlers are thin: parse, call the engine or the database, map
//! the outcome to a response. Every failure goes through [`ApiError`].

pub mod auth;
mod carts;
pub mod error;
mod health;
mod inventory;
mod monitor;
pub mod openapi;
mod orders;
mod products;
pub mod request_span;
mod sandbox;
mod stream;

pub use error::ApiError;

use std::sync::Arc;

use actix_web::error::{JsonPayloadError, PathError};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use std::sync::RwLock;

use actix_web::dev::Payload;
use actix_web::FromRequest;

use crate::active::ActiveParts;
use crate::config::Config;
use crate::domain::Sku;
use crate::lease::Leadership;
use crate::messaging::Broker;
use crate::persistence::DbPool;

/// What every handler can reach: what an instance has whatever its role, and the active parts
/// while it holds the lease.
#[derive(Clone)]
pub struct AppState {
    pub(crate) pool: DbPool,
    pub(crate) broker: Broker,
    /// The service watching itself (the same the broker and the order service count into).
    pub(crate) monitor: Arc<crate::monitor::Monitor>,
    pub(crate) config: Arc<Config>,
    pub(crate) leadership: Leadership,
    /// Customer keys and rate limits.
    pub(crate) gate: Arc<auth::Gate>,
    /// Open server-sent-event streams, a budget per route (`SSE_MAX_STREAMS` each): anonymous
    /// readers of the public streams cannot take the customers' order streams.
    pub(crate) streams: Arc<StreamBudgets>,
    active: Arc<RwLock<Option<Arc<ActiveParts>>>>,
}

impl AppState {
    pub fn new(
        pool: DbPool,
        broker: Broker,
        monitor: Arc<crate::monitor::Monitor>,
        config: Arc<Config>,
        leadership: Leadership,
        gate: Arc<auth::Gate>,
    ) -> Self {
        let slots = || {
            Arc::new(stream::Slots::new(
                config.sse_max_streams,
                config.sse_max_lifetime,
            ))
        };
        let streams = Arc::new(StreamBudgets {
            stock: slots(),
            monitor: slots(),
            orders: slots(),
        });
        AppState {
            pool,
            broker,
            monitor,
            config,
            leadership,
            gate,
            streams,
            active: Arc::default(),
        }
    }

    /// The broker connection (every instance has one).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This instance's side of the lease.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// The active parts, while this instance is the active one.
    pub fn active(&self) -> Option<Arc<ActiveParts>> {
        match self.active.read() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set_active(&self, parts: Arc<ActiveParts>) {
        match self.active.write() {
            Ok(mut slot) => *slot = Some(parts),
            Err(poisoned) => *poisoned.into_inner() = Some(parts),
        }
    }

    pub(crate) fn take_active(&self) -> Option<Arc<ActiveParts>> {
        match self.active.write() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

/// The open-stream budgets of the SSE routes.
pub(crate) struct StreamBudgets {
    /// `GET /v1/inventory/stream`.
    pub(crate) stock: Arc<stream::Slots>,
    /// `GET /v1/monitor/stream` (the dashboard).
    pub(crate) monitor: Arc<stream::Slots>,
    /// `GET /v1/orders/{id}/events`.
    pub(crate) orders: Arc<stream::Slots>,
}

/// The active parts, in a handler's arguments: a standby answers 503 `unavailable` with
/// `Retry-After` (a load balancer sends the request to the active instance).
pub struct Active(pub Arc<ActiveParts>);

impl std::ops::Deref for Active {
    type Target = ActiveParts;

    fn deref(&self) -> &ActiveParts {
        &self.0
    }
}

impl FromRequest for Active {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Active, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let active = req
            .app_data::<web::Data<AppState>>()
            .and_then(|s| s.active());
        std::future::ready(active.map(Active).ok_or_else(|| {
            ApiError::unavailable(
                "this instance is a standby (another instance is active, or none is yet); retry",
                1,
            )
        }))
    }
}

/// Declares the routes once: `ROUTES` (what the OpenAPI test compares with the document) and
/// `register` (what the app serves) come from the same list, so they cannot drift apart.
macro_rules! api_routes {
    ($( $path:literal => { $( $method:ident : $handler:path ),+ $(,)? } ),* $(,)?) => {
        /// Every `(method, path)` the app registers.
        pub const ROUTES: &[(&str, &str)] = &[ $( $( (stringify!($method), $path), )+ )* ];

        fn register(cfg: &mut web::ServiceConfig) {
            $(
                cfg.service(
                    web::resource($path)
                        $( .route(web::$method().to($handler)) )+
                        .default_service(web::to(|| async {
                            const ALLOW: &[&str] = &[$( allow_name(stringify!($method)) ),+];
                            Err::<HttpResponse, ApiError>(ApiError::MethodNotAllowed { allow: ALLOW })
                        })),
                );
            )*
        }
    };
}

api_routes! {
    "/health/live" => { get: health::live },
    "/health/ready" => { get: health::ready },
    "/openapi.json" => { get: openapi::document },
    "/metrics" => { get: monitor::metrics },
    "/v1/queues" => { get: monitor::queues },
    "/v1/monitor/stream" => { get: monitor::stream },
    "/v1/monitor/dead-letters" => { get: monitor::dead_letters },
    "/dashboard" => { get: monitor::dashboard },
    "/dashboard/{file}" => { get: monitor::dashboard_file },
    "/v1/products" => { get: products::list },
    "/v1/products/{sku}/similar" => { get: products::similar },
    "/v1/products/{sku}" => { get: products::get, put: products::put },
    "/v1/carts" => { post: carts::create },
    "/v1/carts/{cart_id}" => { get: carts::get },
    "/v1/carts/{cart_id}/items/{sku}" => { put: carts::put_item },
    "/v1/checkout" => { post: orders::checkout },
    "/v1/sandbox/card-tokens" => { post: sandbox::card_tokens },
    "/v1/orders/{order_id}" => { get: orders::get },
    "/v1/orders/{order_id}/events" => { get: orders::events },
    "/v1/orders/{order_id}/cancel" => { post: orders::cancel },
    "/v1/customers/me/orders" => { get: orders::my_orders },
    "/v1/customers/me/notifications" => { get: orders::my_notifications },
    "/v1/customers/{customer_id}/orders" => { get: orders::of_customer },
    "/v1/customers/{customer_id}/notifications" => { get: orders::notifications },
    "/v1/inventory/stream" => { get: stream::stock },
    "/v1/inventory/{sku}" => { get: inventory::get, put: inventory::put },
    "/v1/inventory/{sku}/adjustments" => { post: inventory::adjust },
}

/// Registers every route, with the JSON and path error handlers that turn extractor failures
/// into the API's error body.
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let limit = state.config.max_body_bytes;
        cfg.app_data(web::Data::new(state))
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(move |e, _req| json_error(e, limit).into()),
            )
            .app_data(web::PayloadConfig::default().limit(limit))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                ApiError::bad_request(format!("bad query string: {e}")).into()
            }))
            .app_data(web::PathConfig::default().error_handler(|e: PathError, _| {
                ApiError::NotFound(format!("no such resource: {e}")).into()
            }))
            .configure(register);
    }
}

/// The answer for any path no route matches.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no such resource: {}",
        req.path()
    )))
}

/// A route macro's method name as the `Allow` header spells it.
const fn allow_name(method: &str) -> &'static str {
    match method.as_bytes() {
        b"get" => "GET",
        b"put" => "PUT",
        b"post" => "POST",
        b"delete" => "DELETE",
        b"patch" => "PATCH",
        _ => panic!("a method the route macro does not know"),
    }
}

fn json_error(e: JsonPayloadError, limit: usize) -> ApiError {
    match e {
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest {
            // serde's message may echo a value sent ("invalid type: integer `…`").
            message: crate::domain::card_data::without_card_numbers(&format!(
                "body is not the expected JSON: {e}"
            ))
            .into_owned(),
            details: json!({ "line": e.line(), "column": e.column() }),
        },
        other => ApiError::bad_request(format!("could not read the body: {other}")),
    }
}

/// A SKU from a path that names an existing resource: an impossible code is simply not found.
fn path_sku(raw: &str) -> Result<Sku, ApiError> {
    Sku::parse(raw).map_err(|_| ApiError::NotFound(format!("unknown sku {raw:?}")))
}

/// `200` with a JSON body.
fn ok_json(body: impl serde::Serialize) -> HttpResponse {
    HttpResponse::Ok().json(body)
}
