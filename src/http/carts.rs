//! Carts: `POST /v1/carts`, `PUT /v1/carts/{cart_id}/items/{sku}`, `GET /v1/carts/{cart_id}`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

#[allow(unused_imports)]
use super::openapi::ErrorBody;
use super::{path_sku, Active, ApiError};
use crate::domain::cart::{CartItemInput, CustomerId};

fn path_cart(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("unknown cart".into()))
}

#[derive(Deserialize)]
pub struct NewCart {
    customer_id: Option<String>,
}

#[utoipa::path(post, path = "/v1/carts", tag = "carts", request_body(content = Object, description = "customer_id"), responses((status = 201, description = "An empty cart", body = Object), (status = 400, description = "Not JSON or not the expected shape", body = ErrorBody), (status = 422, description = "Validation failed (`details.fields`)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn create(state: Active, body: web::Json<NewCart>) -> Result<HttpResponse, ApiError> {
    let customer = match body.customer_id.as_deref() {
        None => return Err(ApiError::field("customer_id", "is required")),
        Some(raw) => CustomerId::parse(raw).map_err(|e| ApiError::field("customer_id", e))?,
    };
    let cart = state.carts.create(customer).await?;
    Ok(HttpResponse::Created().json(cart))
}

#[utoipa::path(get, path = "/v1/carts/{cart_id}", tag = "carts", params(("cart_id" = String, Path)), responses((status = 200, description = "The cart, each line with availability and suggestions", body = Object), (status = 404, description = "Not found", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn get(state: Active, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let cart_id = path_cart(&path)?;
    Ok(HttpResponse::Ok().json(state.carts.get(cart_id).await?))
}

#[utoipa::path(put, path = "/v1/carts/{cart_id}/items/{sku}", tag = "carts", params(("cart_id" = String, Path), ("sku" = String, Path, description = "SKU code")), request_body(content = Object, description = "quantity, added_to_cart"), responses((status = 200, description = "The cart", body = Object), (status = 400, description = "Not JSON or not the expected shape", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "The cart produced an order (`cart_checked_out`)", body = ErrorBody), (status = 422, description = "Validation failed (`details.fields`)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn put_item(
    state: Active,
    path: web::Path<(String, String)>,
    body: web::Json<CartItemInput>,
) -> Result<HttpResponse, ApiError> {
    let (raw_cart, raw_sku) = path.into_inner();
    let cart_id = path_cart(&raw_cart)?;
    let sku = path_sku(&raw_sku)?;
    let change = body.validate()?;
    let cart = state.carts.change_line(cart_id, sku, change, None).await?;
    Ok(HttpResponse::Ok().json(cart))
}
