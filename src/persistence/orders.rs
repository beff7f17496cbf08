//! Orders, their history and notifications in Postgres. Writes come in batches from the order
//! writer: one transaction, a handful of statements, whatever the number of orders in it.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Jsonb;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::schema::{notifications, order_history, orders};
use super::DbError;

/// A new order as first stored (normally `received`).
#[derive(Debug, Clone, Serialize)]
pub struct NewOrderRow {
    pub order_id: Uuid,
    pub idempotency_key: String,
    pub request_fingerprint: String,
    pub customer_id: String,
    pub cart_id: Option<Uuid>,
    pub origin: String,
    pub status: String,
    pub items: Value,
    pub total_cents: i64,
    pub currency: String,
    pub delivery_method: String,
    pub shipping_address: Value,
    pub payment: Value,
    pub delivery: Option<Value>,
    pub rejection: Option<Value>,
    pub at: DateTime<Utc>,
}

/// A notification to a customer.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationRow {
    pub id: Uuid,
    pub customer_id: String,
    pub kind: String,
    pub order_id: Uuid,
    pub message: String,
    pub suggestions: Value,
    pub created_at: DateTime<Utc>,
}

/// A status change, applied only if the order is still in `from_status`.
#[derive(Debug, Clone, Serialize)]
pub struct TransitionRow {
    pub order_id: Uuid,
    pub from_status: String,
    pub to_status: String,
    pub delivery: Option<Value>,
    pub rejection: Option<Value>,
    pub at: DateTime<Utc>,
    /// A status passed through on the way (recorded in the history, e.g. `reserved` on the way
    /// from `received` to `scheduled`), so one write records both steps.
    pub via_status: Option<String>,
    pub via_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub notification: Option<NotificationRow>,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    order_id: Uuid,
}

const CREATE: &str = "
WITH x AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
        order_id uuid, idempotency_key text, request_fingerprint text, customer_id text,
        cart_id uuid, origin text, status text, items jsonb, total_cents int8, currency text,
        delivery_method text, shipping_address jsonb, payment jsonb, delivery jsonb,
        rejection jsonb, at timestamptz)
), ins AS (
    INSERT INTO orders (order_id, idempotency_key, request_fingerprint, customer_id, cart_id,
        origin, status, items, total_cents, currency, delivery_method, shipping_address, payment,
        delivery, rejection, created_at, updated_at)
    SELECT order_id, idempotency_key, request_fingerprint, customer_id, cart_id, origin, status,
        items, total_cents, currency, delivery_method, shipping_address, payment, delivery,
        rejection, at, at
    FROM x
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id, status, created_at
), hist AS (
    INSERT INTO order_history (order_id, status, at)
    SELECT order_id, status, created_at FROM ins
    ON CONFLICT DO NOTHING
)
SELECT order_id FROM ins";

const TRANSITION: &str = "
WITH x AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
        order_id uuid, from_status text, to_status text, delivery jsonb, rejection jsonb,
        at timestamptz, via_status text, via_at timestamptz)
), up AS (
    UPDATE orders o SET
        status = x.to_status,
        delivery = COALESCE(x.delivery, o.delivery),
        rejection = COALESCE(x.rejection, o.rejection),
        updated_at = x.at
    FROM x
    WHERE o.order_id = x.order_id AND o.status = x.from_status
    RETURNING o.order_id, o.status, x.at
), hist AS (
    INSERT INTO order_history (order_id, status, at)
    SELECT order_id, status, at FROM up
    UNION ALL
    SELECT x.order_id, x.via_status, x.via_at FROM x JOIN up ON up.order_id = x.order_id
    WHERE x.via_status IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT order_id FROM up";

const NOTIFY: &str = "
INSERT INTO notifications (id, customer_id, kind, order_id, message, suggestions, created_at)
SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
    id uuid, customer_id text, kind text, order_id uuid, message text, suggestions jsonb,
    created_at timestamptz)
ON CONFLICT (id) DO NOTHING";

fn json<T: Serialize>(rows: &[T]) -> Result<Value, DbError> {
    serde_json::to_value(rows).map_err(|e| DbError::Pool(format!("serializing a batch: {e}")))
}

/// Writes one batch in one transaction. Returns the orders created now and the transitions
/// applied now (the others found their order elsewhere: already there, or no longer in
/// `from_status`).
pub fn write_batch(
    conn: &mut PgConnection,
    creates: &[NewOrderRow],
    transitions: &[TransitionRow],
) -> Result<(HashSet<Uuid>, HashSet<Uuid>), DbError> {
    conn.transaction(|conn| {
        let created: HashSet<Uuid> = if creates.is_empty() {
            HashSet::new()
        } else {
            diesel::sql_query(CREATE)
                .bind::<Jsonb, _>(json(creates)?)
                .load::<Id>(conn)?
                .into_iter()
                .map(|r| r.order_id)
                .collect()
        };
        let moved: HashSet<Uuid> = if transitions.is_empty() {
            HashSet::new()
        } else {
            diesel::sql_query(TRANSITION)
                .bind::<Jsonb, _>(json(transitions)?)
                .load::<Id>(conn)?
                .into_iter()
                .map(|r| r.order_id)
                .collect()
        };
        let notes: Vec<&NotificationRow> = transitions
            .iter()
            .filter(|t| moved.contains(&t.order_id))
            .filter_map(|t| t.notification.as_ref())
            .collect();
        if !notes.is_empty() {
            diesel::sql_query(NOTIFY)
                .bind::<Jsonb, _>(json(&notes)?)
                .execute(conn)?;
        }
        Ok((created, moved))
    })
}

/// An order as stored.
#[derive(Debug, Clone, Queryable)]
pub struct OrderRecord {
    pub order_id: Uuid,
    pub idempotency_key: String,
    pub request_fingerprint: String,
    pub customer_id: String,
    pub cart_id: Option<Uuid>,
    pub origin: String,
    pub status: String,
    pub items: Value,
    pub total_cents: i64,
    pub currency: String,
    pub delivery_method: String,
    pub shipping_address: Value,
    pub payment: Value,
    pub delivery: Option<Value>,
    pub rejection: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub fn find(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<OrderRecord>, DbError> {
    Ok(orders::table
        .find(order_id)
        .first::<OrderRecord>(conn)
        .optional()?)
}

/// `(status, at)` in the order they happened.
pub fn history(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Vec<(String, DateTime<Utc>)>, DbError> {
    Ok(order_history::table
        .filter(order_history::order_id.eq(order_id))
        .order(order_history::at)
        .select((order_history::status, order_history::at))
        .load(conn)?)
}

/// A customer's orders, newest first.
pub fn by_customer(
    conn: &mut PgConnection,
    customer_id: &str,
    limit: i64,
) -> Result<Vec<OrderRecord>, DbError> {
    Ok(orders::table
        .filter(orders::customer_id.eq(customer_id))
        .order(orders::created_at.desc())
        .limit(limit)
        .load(conn)?)
}

/// A notification as stored.
#[derive(Debug, Clone, Queryable, Serialize)]
pub struct NotificationRecord {
    pub id: Uuid,
    pub customer_id: String,
    pub kind: String,
    pub order_id: Uuid,
    pub message: String,
    pub suggestions: Value,
    pub created_at: DateTime<Utc>,
}

pub fn notifications_of(
    conn: &mut PgConnection,
    customer_id: &str,
    limit: i64,
) -> Result<Vec<NotificationRecord>, DbError> {
    Ok(notifications::table
        .filter(notifications::customer_id.eq(customer_id))
        .order(notifications::created_at.desc())
        .limit(limit)
        .load(conn)?)
}

/// Scheduled deliveries per (method, date), to rebuild capacity counters on start.
pub fn booked_deliveries(conn: &mut PgConnection) -> Result<Vec<(String, String, i64)>, DbError> {
    #[derive(QueryableByName)]
    struct Booked {
        #[diesel(sql_type = diesel::sql_types::Text)]
        method: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        day: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    Ok(diesel::sql_query(
        "SELECT delivery_method AS method, delivery->>'scheduled_for' AS day, count(*) AS n
         FROM orders WHERE status = 'scheduled' AND delivery IS NOT NULL
         GROUP BY 1, 2",
    )
    .load::<Booked>(conn)?
    .into_iter()
    .map(|b| (b.method, b.day, b.n))
    .collect())
}

/// Every order id, to fill intake's filter of known orders on start.
pub fn all_ids(conn: &mut PgConnection) -> Result<Vec<Uuid>, DbError> {
    Ok(orders::table.select(orders::order_id).load(conn)?)
}
