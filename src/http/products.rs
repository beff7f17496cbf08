//! Catalog: `PUT /v1/products/{sku}` (admin) and `GET /v1/products/{sku}`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Admin;
#[allow(unused_imports)]
use super::openapi::ErrorBody;
use super::{path_sku, Active, ApiError};
use crate::active::ActiveParts;
use crate::domain::similarity::Suggestion;
use crate::domain::validation::Object;
use crate::domain::{Ledger, Product, ProductInput, Sku};
use crate::engine::EngineError;
use crate::persistence::products;

/// A product with its live stock (`GET`/`PUT /v1/products/{sku}`, each entry of a page).
#[derive(Serialize, ToSchema)]
#[schema(as = ProductView, example = json!({
    "sku": "MUG-01", "name": "Coffee mug", "category": "kitchen", "tags": ["coffee"],
    "price_cents": 1990, "currency": "BRL", "attributes": {"color": "blue"},
    "stock": {"on_hand": 25, "reserved": 2, "available": 23}
}))]
pub struct ProductView<'a> {
    sku: &'a Sku,
    name: &'a str,
    category: &'a str,
    tags: &'a [String],
    price_cents: i64,
    /// ISO 4217, upper case.
    currency: &'a str,
    /// Free-form, as stored.
    #[schema(value_type = Object)]
    attributes: &'a serde_json::Map<String, serde_json::Value>,
    stock: StockNow,
}

/// The stock a product view shows.
#[derive(Serialize, ToSchema)]
pub struct StockNow {
    on_hand: i64,
    reserved: i64,
    available: i64,
}

fn body(product: &Product, ledger: Ledger) -> ProductView<'_> {
    ProductView {
        sku: &product.sku,
        name: &product.name,
        category: &product.category,
        tags: &product.tags,
        price_cents: product.price_cents,
        currency: &product.currency,
        attributes: &product.attributes,
        stock: StockNow {
            on_hand: ledger.level.on_hand,
            reserved: ledger.level.reserved,
            available: ledger.available(),
        },
    }
}

/// `GET /v1/products`: a page in SKU order.
#[derive(Serialize, ToSchema)]
pub struct ProductPage<'a> {
    data: Vec<ProductView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// `GET /v1/products/{sku}/similar`.
#[derive(Serialize, ToSchema)]
pub struct SimilarProducts {
    sku: Sku,
    /// In stock now, best first.
    suggestions: Vec<Suggestion>,
}

/// Live stock from the SKU's actor.
async fn live_ledger(state: &ActiveParts, sku: &Sku) -> Result<Ledger, ApiError> {
    match state.engine.ledger(sku).await {
        Ok(ledger) => Ok(ledger),
        // Created a moment ago and not yet visible: it has no stock yet.
        Err(EngineError::UnknownSku) => Ok(Ledger::default()),
        Err(e) => Err(ApiError::from_engine(e, "sku")),
    }
}

#[utoipa::path(get, path = "/v1/products/{sku}", operation_id = "get_product", tag = "catalog", params(("sku" = String, Path, description = "SKU code")), responses((status = 200, description = "The product with live stock", body = ProductView), (status = 404, description = "Not found", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn get(state: Active, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&path)?;
    let product = state
        .catalog
        .get(&sku)
        .ok_or_else(|| ApiError::NotFound(format!("unknown sku {sku}")))?;
    let ledger = live_ledger(&state, &sku).await?;
    Ok(HttpResponse::Ok().json(body(&product, ledger)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    category: Option<String>,
    tag: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `limit` from a query string: 1..=max, `default` when absent.
pub(super) fn parse_limit(
    raw: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::field(
                "limit",
                format!("must be a whole number from 1 to {max}"),
            )),
        },
    }
}

/// `GET /v1/products?category=&tag=&limit=&cursor=`: the catalog in SKU order, with live stock.
#[utoipa::path(get, path = "/v1/products", tag = "catalog", params(("category" = Option<String>, Query), ("tag" = Option<String>, Query), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100; 20 when absent"), ("cursor" = Option<String>, Query, pattern = "^[A-Za-z0-9._-]{0,64}$", description = "`next_cursor` of the previous page (the last SKU it showed)")), responses((status = 400, description = "A query parameter given twice or unreadable", body = ErrorBody), (status = 200, description = "A page of products with live stock and `next_cursor`", body = ProductPage), (status = 422, description = "Validation failed (`details.fields`)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn list(state: Active, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let limit = parse_limit(query.limit.as_deref(), 20, 100)?;
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            Sku::parse(c)
                .map_err(|_| ApiError::field("cursor", "is not a cursor this API returned"))?,
        ),
    };
    let category = query.category.as_deref().filter(|c| !c.is_empty());
    let tag = query.tag.as_deref().filter(|t| !t.is_empty());
    let page = state.catalog.list(category, tag, limit, after.as_ref());
    let mut data = Vec::with_capacity(page.products.len());
    for product in &page.products {
        let ledger = live_ledger(&state, &product.sku).await?;
        data.push(body(product, ledger));
    }
    Ok(HttpResponse::Ok().json(ProductPage {
        data,
        next_cursor: page.next_cursor.clone(),
    }))
}

#[derive(Deserialize)]
pub struct SimilarQuery {
    limit: Option<String>,
}

/// `GET /v1/products/{sku}/similar?limit=5`: similar products in stock now.
#[utoipa::path(get, path = "/v1/products/{sku}/similar", tag = "catalog", params(("sku" = String, Path, description = "SKU code"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 50, description = "1 to 50; 5 when absent")), responses((status = 400, description = "A query parameter given twice or unreadable", body = ErrorBody), (status = 200, description = "Similar products in stock, best first", body = SimilarProducts), (status = 404, description = "Not found", body = ErrorBody), (status = 422, description = "Validation failed (`details.fields`)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn similar(
    state: Active,
    path: web::Path<String>,
    query: web::Query<SimilarQuery>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&path)?;
    let limit = parse_limit(query.limit.as_deref(), 5, 50)?;
    let suggestions = state
        .catalog
        .similar(&sku, limit)
        .ok_or_else(|| ApiError::NotFound(format!("unknown sku {sku}")))?;
    Ok(HttpResponse::Ok().json(SimilarProducts { sku, suggestions }))
}

#[utoipa::path(put, path = "/v1/products/{sku}", operation_id = "put_product", tag = "catalog", params(("sku" = String, Path, description = "SKU code")), request_body = ProductInput, security(("admin" = [])), responses((status = 415, description = "Not application/json", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 200, description = "Replaced", body = ProductView), (status = 201, description = "Created", body = ProductView), (status = 400, description = "Not JSON or not the expected shape", body = ErrorBody), (status = 401, description = "Admin token missing or wrong", body = ErrorBody), (status = 422, description = "Validation failed (`details.fields`)", body = ErrorBody), (status = 503, description = "Unavailable or overloaded, with `Retry-After`", body = ErrorBody)))]
pub async fn put(
    _admin: Admin,
    state: Active,
    path: web::Path<String>,
    input: web::Json<Object<ProductInput>>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&path).map_err(|e| ApiError::field("sku", e))?;
    let Object(input) = input.into_inner();
    let product = input.validate(sku.clone())?;
    let pool = state.pool.clone();
    let stored = product.clone();
    let created =
        crate::persistence::run_blocking(&pool, move |conn| products::upsert(conn, &stored))
            .await?;
    state.catalog.upsert(product.clone());
    let ledger = live_ledger(&state, &sku).await?;
    let response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    }
    .json(body(&product, ledger));
    Ok(response)
}
