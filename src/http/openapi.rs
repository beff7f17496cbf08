//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' own annotations and
//! served at `GET /openapi.json`. A test checks that every route the app registers
//! ([`super::ROUTES`]) is in it, and nothing else.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{carts, health, inventory, monitor, orders, products, sandbox, stream};

/// Every error answer: `{"error": {"code", "message", "details"}}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// The error itself.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `not_found`, `method_not_allowed`, `out_of_stock`,
    /// `not_cancellable`, `cart_checked_out`, `payload_too_large`, `unsupported_media_type`,
    /// `validation_failed`, `idempotency_mismatch`, `overloaded`, `unavailable`.
    code: String,
    /// For humans.
    message: String,
    /// `fields` for `validation_failed`, `items` for `out_of_stock`, …
    #[schema(value_type = Object)]
    details: (),
}

/// The admin bearer token (`Authorization: Bearer $ADMIN_TOKEN`).
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // A customer's JWT (`sub` = the customer id).
        components.add_security_scheme(
            "customer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow",
        description = "Order-flow and inventory engine: catalog, real-time stock, carts, checkout, orders. Every non-2xx answer has the ErrorBody shape."
    ),
    paths(
        health::live,
        health::ready,
        document,
        monitor::metrics,
        monitor::queues,
        monitor::stream,
        monitor::dead_letters,
        monitor::dashboard,
        monitor::dashboard_file,
        products::list,
        products::similar,
        products::get,
        products::put,
        carts::create,
        carts::get,
        carts::put_item,
        orders::checkout,
        sandbox::card_tokens,
        orders::get,
        orders::events,
        orders::cancel,
        orders::of_customer,
        orders::my_orders,
        orders::notifications,
        orders::my_notifications,
        stream::stock,
        inventory::get,
        inventory::put,
        inventory::adjust,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&AdminToken),
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "This document", body = Object)))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
