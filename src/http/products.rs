//! Catalog: `PUT /v1/products/{sku}` (admin) and `GET /v1/products/{sku}`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::auth::Admin;
use super::{path_sku, ApiError, AppState};
use crate::domain::{Ledger, Product, ProductInput, Sku};
use crate::engine::EngineError;
use crate::persistence::products;

fn body(product: &Product, ledger: Ledger) -> serde_json::Value {
    json!({
        "sku": product.sku,
        "name": product.name,
        "category": product.category,
        "tags": product.tags,
        "price_cents": product.price_cents,
        "currency": product.currency,
        "attributes": product.attributes,
        "stock": {
            "on_hand": ledger.level.on_hand,
            "reserved": ledger.level.reserved,
            "available": ledger.available(),
        }
    })
}

/// Live stock from the SKU's actor.
async fn live_ledger(state: &AppState, sku: &Sku) -> Result<Ledger, ApiError> {
    match state.engine.ledger(sku).await {
        Ok(ledger) => Ok(ledger),
        // Created a moment ago and not yet visible: it has no stock yet.
        Err(EngineError::UnknownSku) => Ok(Ledger::default()),
        Err(e) => Err(ApiError::from_engine(e, "sku")),
    }
}

pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&path)?;
    let pool = state.pool.clone();
    let key = sku.clone();
    let product = web::block(move || {
        let mut conn = pool.get()?;
        products::get(&mut conn, &key)
    })
    .await??
    .ok_or_else(|| ApiError::NotFound(format!("unknown sku {sku}")))?;
    let ledger = live_ledger(&state, &sku).await?;
    Ok(HttpResponse::Ok().json(body(&product, ledger)))
}

pub async fn put(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
    input: web::Json<ProductInput>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&path).map_err(|e| ApiError::field("sku", e))?;
    let product = input.into_inner().validate(sku.clone())?;
    let pool = state.pool.clone();
    let stored = product.clone();
    let created = web::block(move || {
        let mut conn = pool.get()?;
        products::upsert(&mut conn, &stored)
    })
    .await??;
    let ledger = live_ledger(&state, &sku).await?;
    let response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    }
    .json(body(&product, ledger));
    Ok(response)
}

impl From<crate::domain::FieldErrors> for ApiError {
    fn from(fields: crate::domain::FieldErrors) -> Self {
        ApiError::Validation(fields)
    }
}
