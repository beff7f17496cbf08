//! Catalog products in Postgres. Products are admin data written directly (they are not stock:
//! stock only ever changes through the SKU actors).

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Text};

use super::schema::products;
use super::DbError;
use crate::domain::{Product, Sku};

#[derive(Queryable)]
struct ProductRow {
    sku: String,
    name: String,
    category: String,
    tags: Vec<String>,
    price_cents: i64,
    currency: String,
    attributes: serde_json::Value,
}

impl ProductRow {
    fn into_product(self) -> Option<Product> {
        let sku = Sku::parse(&self.sku).ok()?;
        let attributes = match self.attributes {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        Some(Product {
            sku,
            name: self.name,
            category: self.category,
            tags: self.tags,
            price_cents: self.price_cents,
            currency: self.currency,
            attributes,
        })
    }
}

#[derive(QueryableByName)]
struct Inserted {
    #[diesel(sql_type = Bool)]
    inserted: bool,
}

/// Creates or replaces a product, and creates its (empty) stock row when it is new.
/// Returns `true` when the product was created.
pub fn upsert(conn: &mut PgConnection, product: &Product) -> Result<bool, DbError> {
    let created = conn.transaction(|conn| {
        let row = diesel::sql_query(
            "INSERT INTO products (sku, name, category, tags, price_cents, currency, attributes)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (sku) DO UPDATE SET
                name = EXCLUDED.name, category = EXCLUDED.category, tags = EXCLUDED.tags,
                price_cents = EXCLUDED.price_cents, currency = EXCLUDED.currency,
                attributes = EXCLUDED.attributes, updated_at = now()
             RETURNING (xmax = 0) AS inserted",
        )
        .bind::<Text, _>(product.sku.as_str())
        .bind::<Text, _>(&product.name)
        .bind::<Text, _>(&product.category)
        .bind::<Array<Text>, _>(&product.tags)
        .bind::<BigInt, _>(product.price_cents)
        .bind::<Text, _>(&product.currency)
        .bind::<Jsonb, _>(serde_json::Value::Object(product.attributes.clone()))
        .get_result::<Inserted>(conn)?;
        diesel::sql_query("INSERT INTO stock (sku) VALUES ($1) ON CONFLICT (sku) DO NOTHING")
            .bind::<Text, _>(product.sku.as_str())
            .execute(conn)?;
        Ok::<_, DbError>(row.inserted)
    })?;
    if created {
        if let Err(e) = replan_stock_when_grown(conn) {
            // The product is in; only the plans stay as they were until the next time.
            tracing::warn!(error = %e, "could not refresh the statistics of stock");
        }
    }
    Ok(created)
}

#[derive(QueryableByName)]
struct Pages {
    #[diesel(sql_type = BigInt)]
    now: i64,
    #[diesel(sql_type = BigInt)]
    measured: i64,
}

/// `ANALYZE stock` once the table has twice the pages PostgreSQL last measured (at most a
/// logarithmic number of times as the catalog grows). The stock batches are prepared once per
/// connection, and a generic plan made while `stock` held a few rows joins it by a whole scan;
/// the plan stays until the table's statistics change. Autovacuum's `ANALYZE` changes them
/// where it runs; where it does not, a catalog grown from a hundred SKUs to ten thousand kept
/// every stock batch scanning the whole table (650 rows read per order in a closed-loop run).
fn replan_stock_when_grown(conn: &mut PgConnection) -> Result<(), DbError> {
    // One transaction (a savepoint, should a caller's be open): a failure here leaves nothing
    // behind on the connection.
    conn.transaction(|conn| {
        let pages = diesel::sql_query(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int8 AS now,
                    c.relpages::int8 AS measured
             FROM pg_class c WHERE c.oid = 'stock'::regclass",
        )
        .get_result::<Pages>(conn)?;
        if pages.now >= 2 * pages.measured.max(1) {
            // Not behind a long VACUUM of the table (their locks conflict): the wait for the lock
            // is bounded; skipped now, it runs at the next product created. (The ANALYZE itself
            // reads a sample of at most 30,000 rows.)
            diesel::sql_query("SET LOCAL lock_timeout = '200ms'").execute(conn)?;
            diesel::sql_query("ANALYZE stock").execute(conn)?;
        }
        Ok::<_, DbError>(())
    })
}

/// Every product, to fill the in-memory catalog on start.
pub fn list_all(conn: &mut PgConnection) -> Result<Vec<Product>, DbError> {
    let rows = products::table
        .select((
            products::sku,
            products::name,
            products::category,
            products::tags,
            products::price_cents,
            products::currency,
            products::attributes,
        ))
        .order(products::sku)
        .load::<ProductRow>(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(ProductRow::into_product)
        .collect())
}
