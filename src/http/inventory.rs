//! Inventory: `GET /v1/inventory/{sku}`, and the admin writes `PUT /v1/inventory/{sku}` and
//! `POST /v1/inventory/{sku}/adjustments`. Writes go through the SKU's actor like every other
//! stock change, and answer only once the change is durable.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Admin;
#[allow(unused_imports)]
use super::openapi::ErrorBody;
use super::{ok_json, path_sku, Active, ApiError};
use crate::active::ActiveParts;
use crate::domain::inventory::{StockUpdateInput, UpdateForm};
use crate::domain::validation::Object;
use crate::domain::{Ledger, Sku, StockOp};

/// `PUT /v1/inventory/{sku}`: the warehouse count.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"on_hand": 25}))]
pub struct StockCount {
    #[schema(required = true, value_type = i64, minimum = 0, maximum = 1_000_000_000_i64)]
    #[serde(default, deserialize_with = "crate::domain::validation::whole")]
    on_hand: Option<i64>,
    /// Stored with the change (a stored text, at most 200 characters).
    #[schema(schema_with = crate::domain::validation::text_or_null_schema::<200>)]
    reason: Option<String>,
}

/// `POST /v1/inventory/{sku}/adjustments`: units found (+) or lost (−), with why. Refused with
/// 422 when the SKU's stock cannot take it (below zero, or below what is reserved).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"delta": -2, "reason": "damaged in the warehouse"}))]
pub struct StockAdjustment {
    #[schema(required = true, schema_with = delta_schema)]
    #[serde(default, deserialize_with = "crate::domain::validation::whole")]
    delta: Option<i64>,
    #[schema(required = true, schema_with = crate::domain::validation::text_schema::<200>)]
    reason: Option<String>,
}

/// A delta: from −1,000,000,000 to 1,000,000,000, never 0.
fn delta_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(min as f64))
            .maximum(Some(max as f64))
    };
    OneOfBuilder::new()
        .item(range(-1_000_000_000, -1))
        .item(range(1, 1_000_000_000))
        .build()
        .into()
}

/// A SKU's stock (`GET`/`PUT /v1/inventory/{sku}`, adjustments).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"sku": "MUG-01", "on_hand": 25, "reserved": 2, "available": 23, "version": 7}))]
pub struct StockView<'a> {
    sku: &'a Sku,
    on_hand: i64,
    reserved: i64,
    /// `on_hand - reserved`, never negative.
    available: i64,
    /// Grows by one with every committed change.
    version: i64,
}

fn body(sku: &Sku, ledger: Ledger) -> StockView<'_> {
    StockView {
        sku,
        on_hand: ledger.level.on_hand,
        reserved: ledger.level.reserved,
        available: ledger.available(),
        version: ledger.version,
    }
}

#[utoipa::path(get, path = "/v1/inventory/{sku}", operation_id = "get_stock", tag = "inventory", params(("sku" = String, Path, description = "SKU code")), responses((status = 200, description = "sku, on_hand, reserved, available, version", body = StockView), (status = 404, description = "Not found", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
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

#[utoipa::path(put, path = "/v1/inventory/{sku}", operation_id = "put_stock", tag = "inventory", params(("sku" = String, Path, description = "SKU code")), request_body = StockCount, security(("admin" = [])), responses((status = 415, description = "Not application/json", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 200, description = "The stock, once durable", body = StockView), (status = 400, description = "Not JSON or not the expected shape", body = ErrorBody), (status = 401, description = "Admin token missing or wrong", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 422, description = "Validation failed (`details.fields`)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn put(
    _admin: Admin,
    state: Active,
    path: web::Path<String>,
    input: web::Json<Object<StockCount>>,
) -> Result<HttpResponse, ApiError> {
    let Object(StockCount { on_hand, reason }) = input.into_inner();
    let input = StockUpdateInput {
        on_hand,
        delta: None,
        reason,
    };
    update(&state, &path, &input, UpdateForm::Count, "on_hand").await
}

#[utoipa::path(post, path = "/v1/inventory/{sku}/adjustments", tag = "inventory", params(("sku" = String, Path, description = "SKU code")), request_body = StockAdjustment, security(("admin" = [])), responses((status = 415, description = "Not application/json", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 200, description = "The stock, once durable", body = StockView), (status = 400, description = "Not JSON or not the expected shape", body = ErrorBody), (status = 401, description = "Admin token missing or wrong", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 422, description = "Validation failed (`details.fields`)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn adjust(
    _admin: Admin,
    state: Active,
    path: web::Path<String>,
    input: web::Json<Object<StockAdjustment>>,
) -> Result<HttpResponse, ApiError> {
    let Object(StockAdjustment { delta, reason }) = input.into_inner();
    let input = StockUpdateInput {
        on_hand: None,
        delta,
        reason,
    };
    update(&state, &path, &input, UpdateForm::Adjustment, "delta").await
}

/// A stock update of the given form on the SKU in the path, answered once durable.
async fn update(
    state: &ActiveParts,
    path: &str,
    input: &StockUpdateInput,
    form: UpdateForm,
    field: &str,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(path)?;
    let update = input.validate(form)?;
    apply_durably(state, &sku, update.op, update.reason, field).await
}
