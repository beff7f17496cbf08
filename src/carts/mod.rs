//! Carts as a service: used by the HTTP API and by the `carts.events` consumer alike. Lines are
//! stored in Postgres; prices, live availability and suggestions come from the catalog.

use serde::Serialize;
use uuid::Uuid;

use crate::catalog::{Catalog, Suggestion};
use crate::domain::cart::{CartStatus, CustomerId, LineChange};
use crate::domain::Sku;
use crate::persistence::carts::{self, CartError, CartRecord};
use crate::persistence::{run_blocking, DbError, DbPool};

/// Suggestions shown under a line that cannot be served.
const LINE_SUGGESTIONS: usize = 3;

/// A cart line as clients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LineView {
    pub sku: Sku,
    pub name: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub currency: String,
    /// Whether the whole quantity could be reserved right now.
    pub available_now: bool,
    pub available: i64,
    pub suggestions: Vec<Suggestion>,
}

/// A cart as clients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "cart_id": "5d0f6a7e-2b1c-4c7e-9a55-0e6f4e1f9b21", "customer_id": "cust-1", "status": "open",
    "order_id": null, "total_cents": 3980, "currency": "BRL",
    "items": [{"sku": "MUG-01", "name": "Coffee mug", "quantity": 2, "unit_price_cents": 1990,
               "currency": "BRL", "available_now": true, "available": 23, "suggestions": []}]
}))]
pub struct CartView {
    pub cart_id: Uuid,
    pub customer_id: String,
    /// `open`, or `ordered` once it produced an order (`order_id`).
    pub status: CartStatus,
    pub order_id: Option<Uuid>,
    pub items: Vec<LineView>,
    pub total_cents: i64,
    pub currency: String,
}

/// Why a cart operation failed: the cart store's reasons, or a SKU the catalog does not know.
#[derive(Debug, thiserror::Error)]
pub enum CartServiceError {
    #[error("unknown sku {0}")]
    UnknownSku(Sku),
    #[error(transparent)]
    Cart(#[from] CartError),
}

impl From<DbError> for CartServiceError {
    fn from(e: DbError) -> Self {
        CartServiceError::Cart(CartError::Db(e))
    }
}

impl CartServiceError {
    /// The database is away: the operation can succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, CartServiceError::Cart(CartError::Db(e)) if e.is_transient())
    }
}

/// Carts over the database pool and the catalog.
#[derive(Clone)]
pub struct CartService {
    pool: DbPool,
    catalog: Catalog,
}

impl CartService {
    pub fn new(pool: DbPool, catalog: Catalog) -> CartService {
        CartService { pool, catalog }
    }

    /// Opens an empty cart.
    pub async fn create(&self, customer: CustomerId) -> Result<CartView, CartServiceError> {
        let record = run_blocking(&self.pool, move |c| carts::create(c, &customer)).await?;
        Ok(self.view_of(record, Vec::new()))
    }

    /// The customer a cart belongs to, if the cart exists.
    pub async fn owner(&self, cart_id: Uuid) -> Result<Option<String>, CartServiceError> {
        let record = run_blocking(&self.pool, move |c| carts::find(c, cart_id)).await?;
        Ok(record.map(|r| r.customer_id))
    }

    /// The cart with its lines, priced and checked against live stock.
    pub async fn get(&self, cart_id: Uuid) -> Result<CartView, CartServiceError> {
        let (record, lines) = run_blocking(&self.pool, move |c| carts::find_with_lines(c, cart_id))
            .await?
            .ok_or(CartError::NotFound)?;
        Ok(self.view_of(record, lines))
    }

    /// Sets or removes a line. With `customer`, a cart unknown so far is created for that
    /// customer (events from other systems); without, it must exist (HTTP).
    pub async fn change_line(
        &self,
        cart_id: Uuid,
        sku: Sku,
        change: LineChange,
        customer: Option<CustomerId>,
    ) -> Result<CartView, CartServiceError> {
        if self.catalog.get(&sku).is_none() {
            return Err(CartServiceError::UnknownSku(sku));
        }
        run_blocking(&self.pool, move |c| {
            if let Some(customer) = &customer {
                carts::ensure(c, cart_id, customer)?;
            }
            carts::change_line(c, cart_id, &sku, change)
        })
        .await?;
        self.get(cart_id).await
    }

    fn view_of(&self, record: CartRecord, lines: Vec<(String, i64)>) -> CartView {
        let mut items = Vec::with_capacity(lines.len());
        let mut total = 0i64;
        let mut currency = None;
        for (raw, quantity) in lines {
            let Ok(sku) = Sku::parse(&raw) else { continue };
            let product = self.catalog.get(&sku);
            let (name, price, cur) = product
                .as_ref()
                .map(|p| (p.name.clone(), p.price_cents, p.currency.clone()))
                .unwrap_or_else(|| (String::new(), 0, "BRL".into()));
            let available = self.catalog.available(&sku);
            let available_now = available >= quantity;
            let suggestions = if available_now {
                Vec::new()
            } else {
                self.catalog
                    .similar(&sku, LINE_SUGGESTIONS)
                    .unwrap_or_default()
            };
            total = total.saturating_add(price.saturating_mul(quantity));
            currency.get_or_insert_with(|| cur.clone());
            items.push(LineView {
                sku,
                name,
                quantity,
                unit_price_cents: price,
                currency: cur,
                available_now,
                available,
                suggestions,
            });
        }
        CartView {
            cart_id: record.cart_id,
            customer_id: record.customer_id,
            status: record.status,
            order_id: record.order_id,
            items,
            total_cents: total,
            currency: currency.unwrap_or_else(|| "BRL".into()),
        }
    }
}
