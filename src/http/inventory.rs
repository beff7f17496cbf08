//! Inventory: `GET /v1/inventory/{sku}`, and the admin writes `PUT /v1/inventory/{sku}` and
//! `POST /v1/inventory/{sku}/adjustments`. Writes go through the SKU's actor like every other
//! stock change, and answer only once the change is durable.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::auth::Admin;
use super::{ok_json, path_sku, Active, ApiError};
use crate::active::ActiveParts;
use crate::domain::inventory::{StockUpdateInput, UpdateForm};
use crate::domain::{Ledger, Sku, StockOp};

fn body(sku: &Sku, ledger: Ledger) -> serde_json::Value {
    json!({
        "sku": sku,
        "on_hand": ledger.level.on_hand,
        "reserved": ledger.level.reserved,
        "available": ledger.available(),
        "version": ledger.version,
    })
}

pub async fn get(state: Active, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&path)?;
    let ledger = state
        .engine
        .ledger(&sku)
        .await
        .map_err(|e| ApiError::from_engine(e, "sku"))?;
    Ok(ok_json(body(&sku, ledger)))
}

/// Applies one operation and waits until it is durable.
async fn apply_durably(
    state: &ActiveParts,
    sku: &Sku,
    op: StockOp,
    reason: Option<String>,
    field: &str,
) -> Result<HttpResponse, ApiError> {
    let applied = state
        .engine
        .apply(sku, op, reason)
        .await
        .map_err(|e| ApiError::from_engine(e, field))?;
    let ledger = applied.ledger;
    match tokio::time::timeout(state.config.durable_timeout, applied.durable.wait()).await {
        Ok(Ok(())) => Ok(ok_json(body(sku, ledger))),
        Ok(Err(e)) => Err(ApiError::from_durability(e)),
        Err(_) => Err(ApiError::unavailable(
            "the database did not confirm the change in time; it will be written when the database is back, check GET /v1/inventory/{sku} before retrying",
            5,
        )),
    }
}

pub async fn put(
    _admin: Admin,
    state: Active,
    path: web::Path<String>,
    input: web::Json<StockUpdateInput>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&path)?;
    let update = input.validate(UpdateForm::Count)?;
    apply_durably(&state, &sku, update.op, update.reason, "on_hand").await
}

pub async fn adjust(
    _admin: Admin,
    state: Active,
    path: web::Path<String>,
    input: web::Json<StockUpdateInput>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&path)?;
    let update = input.validate(UpdateForm::Adjustment)?;
    apply_durably(&state, &sku, update.op, update.reason, "delta").await
}
