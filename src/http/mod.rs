//! The actix-web API (API.md). Handlers are thin: parse, call the engine or the database, map
//! the outcome to a response. Every failure goes through [`ApiError`].

mod auth;
mod carts;
pub mod error;
mod health;
mod inventory;
mod orders;
mod products;
mod stream;

pub use error::ApiError;

use std::sync::Arc;

use actix_web::error::{JsonPayloadError, PathError};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::carts::CartService;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::domain::Sku;
use crate::engine::Engine;
use crate::messaging::Broker;
use crate::orders::OrderService;
use crate::persistence::DbPool;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub catalog: Catalog,
    pub carts: CartService,
    pub orders: OrderService,
    pub pool: DbPool,
    pub broker: Broker,
    pub config: Arc<Config>,
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
            .service(
                web::resource("/health/live")
                    .route(web::get().to(health::live))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/health/ready")
                    .route(web::get().to(health::ready))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/products")
                    .route(web::get().to(products::list))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/products/{sku}/similar")
                    .route(web::get().to(products::similar))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/products/{sku}")
                    .route(web::get().to(products::get))
                    .route(web::put().to(products::put))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/carts")
                    .route(web::post().to(carts::create))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/carts/{cart_id}")
                    .route(web::get().to(carts::get))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/carts/{cart_id}/items/{sku}")
                    .route(web::put().to(carts::put_item))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/checkout")
                    .route(web::post().to(orders::checkout))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/orders/{order_id}")
                    .route(web::get().to(orders::get))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/orders/{order_id}/events")
                    .route(web::get().to(orders::events))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/orders/{order_id}/cancel")
                    .route(web::post().to(orders::cancel))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/customers/{customer_id}/orders")
                    .route(web::get().to(orders::of_customer))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/customers/{customer_id}/notifications")
                    .route(web::get().to(orders::notifications))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/inventory/stream")
                    .route(web::get().to(stream::stock))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/inventory/{sku}")
                    .route(web::get().to(inventory::get))
                    .route(web::put().to(inventory::put))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/inventory/{sku}/adjustments")
                    .route(web::post().to(inventory::adjust))
                    .default_service(web::to(method_not_allowed)),
            );
    }
}

/// The answer for any path no route matches.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no such resource: {}",
        req.path()
    )))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

fn json_error(e: JsonPayloadError, limit: usize) -> ApiError {
    match e {
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest {
            message: format!("body is not the expected JSON: {e}"),
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
fn ok_json(body: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok().json(body)
}
