//! Carts: `POST /v1/carts`, `PUT /v1/carts/{cart_id}/items/{sku}`, `GET /v1/carts/{cart_id}`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{path_sku, Active, ApiError};
use crate::domain::cart::{CartItemInput, CustomerId};

fn path_cart(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("unknown cart".into()))
}

#[derive(Deserialize)]
pub struct NewCart {
    customer_id: Option<String>,
}

pub async fn create(state: Active, body: web::Json<NewCart>) -> Result<HttpResponse, ApiError> {
    let customer = match body.customer_id.as_deref() {
        None => return Err(ApiError::field("customer_id", "is required")),
        Some(raw) => CustomerId::parse(raw).map_err(|e| ApiError::field("customer_id", e))?,
    };
    let cart = state.carts.create(customer).await?;
    Ok(HttpResponse::Created().json(cart))
}

pub async fn get(state: Active, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let cart_id = path_cart(&path)?;
    Ok(HttpResponse::Ok().json(state.carts.get(cart_id).await?))
}

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
