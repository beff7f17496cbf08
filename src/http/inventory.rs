//! Inventory: `GET /v1/inventory/{sku}`, and the admin writes `PUT /v1/inventory/{sku}` and
//! `POST /v1/inventory/{sku}/adjustments`. Writes go through the SKU's actor like every other
//! stock change, and answer only once the change is durable.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::{ok_json, path_sku, ApiError, AppState};
use crate::domain::{FieldErrors, Ledger, Sku, StockOp};

const MAX_REASON: usize = 200;

fn body(sku: &Sku, ledger: Ledger) -> serde_json::Value {
    json!({
        "sku": sku,
        "on_hand": ledger.level.on_hand,
        "reserved": ledger.level.reserved,
        "available": ledger.available(),
        "version": ledger.version,
    })
}

pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&path)?;
    let ledger = state
        .engine
        .ledger(&sku)
        .await
        .map_err(|e| ApiError::from_engine(e, "sku"))?;
    Ok(ok_json(body(&sku, ledger)))
}

#[derive(Deserialize)]
pub struct SetStock {
    on_hand: Option<i64>,
}

#[derive(Deserialize)]
pub struct Adjustment {
    delta: Option<i64>,
    reason: Option<String>,
}

/// Applies one operation and waits until it is durable.
async fn apply_durably(
    state: &AppState,
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
    state: web::Data<AppState>,
    path: web::Path<String>,
    input: web::Json<SetStock>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&path)?;
    let on_hand = match input.on_hand {
        None => return Err(ApiError::field("on_hand", "is required")),
        Some(v) if v < 0 => return Err(ApiError::field("on_hand", "must be >= 0")),
        Some(v) => v,
    };
    apply_durably(&state, &sku, StockOp::SetOnHand(on_hand), None, "on_hand").await
}

pub async fn adjust(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
    input: web::Json<Adjustment>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&path)?;
    let input = input.into_inner();
    let mut errors = FieldErrors::new();
    match input.delta {
        None => errors.add("delta", "is required"),
        Some(0) => errors.add("delta", "must not be zero"),
        Some(_) => {}
    }
    let reason = input.reason.map(|r| r.trim().to_owned());
    match &reason {
        None => errors.add("reason", "is required"),
        Some(r) if r.is_empty() => errors.add("reason", "must not be empty"),
        Some(r) if r.chars().count() > MAX_REASON => {
            errors.add("reason", format!("must be at most {MAX_REASON} characters"))
        }
        Some(_) => {}
    }
    let (delta, reason) = errors.into_result((input.delta.unwrap_or(0), reason))?;
    apply_durably(&state, &sku, StockOp::Adjust(delta), reason, "delta").await
}
