//! Carts: `POST /v1/carts`, `PUT /v1/carts/{cart_id}/items/{sku}`, `GET /v1/carts/{cart_id}`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::auth::{Caller, OwnedCart};
#[allow(unused_imports)]
use super::openapi::ErrorBody;
use super::{path_sku, Active, ApiError};
use crate::domain::cart::CartItemInput;
use crate::domain::validation::Object;

/// `POST /v1/carts`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewCart {
    #[schema(schema_with = crate::domain::cart::customer_id_schema)]
    customer_id: Option<String>,
}

#[utoipa::path(post, path = "/v1/carts", tag = "carts", request_body = NewCart, security(("customer" = []), ("admin" = [])), responses((status = 415, description = "Not application/json", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 201, description = "An empty cart", body = crate::carts::CartView), (status = 400, description = "Not JSON or not the expected shape", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "customer_id is not the token's customer", body = ErrorBody), (status = 429, description = "Rate limited, with `Retry-After`", body = ErrorBody), (status = 422, description = "Validation failed (`details.fields`)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn create(
    caller: Caller,
    state: Active,
    body: web::Json<Object<NewCart>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let customer = caller.acting_for(body.customer_id.as_deref())?;
    let cart = state.carts.create(customer).await?;
    Ok(HttpResponse::Created().json(cart))
}

#[utoipa::path(get, path = "/v1/carts/{cart_id}", operation_id = "get_cart", tag = "carts", params(("cart_id" = String, Path)), security(("customer" = []), ("admin" = [])), responses((status = 200, description = "The cart, each line with availability and suggestions", body = crate::carts::CartView), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn get(cart: OwnedCart, state: Active) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.carts.get(cart.cart_id).await?))
}

#[utoipa::path(put, path = "/v1/carts/{cart_id}/items/{sku}", tag = "carts", params(("cart_id" = String, Path), ("sku" = String, Path, description = "SKU code")), request_body = CartItemInput, security(("customer" = []), ("admin" = [])), responses((status = 415, description = "Not application/json", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 200, description = "The cart", body = crate::carts::CartView), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 429, description = "Rate limited, with `Retry-After`", body = ErrorBody), (status = 400, description = "Not JSON or not the expected shape", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "The cart produced an order (`cart_checked_out`)", body = ErrorBody), (status = 422, description = "Validation failed (`details.fields`)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn put_item(
    cart: OwnedCart,
    state: Active,
    path: web::Path<(String, String)>,
    body: web::Json<Object<CartItemInput>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let (_, raw_sku) = path.into_inner();
    let sku = path_sku(&raw_sku)?;
    let change = body.validate()?;
    let cart = state
        .carts
        .change_line(cart.cart_id, sku, change, None)
        .await?;
    Ok(HttpResponse::Ok().json(cart))
}
