//! Orders, their history and notifications in Postgres. Writes come in batches from the order
//! writer: one transaction, a handful of statements, whatever the number of orders in it.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

pub use super::decided::{is_stock_refusal, write_decided, DecidedOutcome, DecidedRow};
pub use super::keys::{
    accepted_by, forget_unused_keys, key_recorded, order_id_secret, prune_keys, record_keys,
    recorded_keys, KeyRow, KeyState, RecordedKey,
};
use super::schema::{notifications, orders};
use super::DbError;
use crate::domain::checkout::{Address, DeliveryMethod, Payment};
use crate::domain::delivery::DeliverySlot;
use crate::domain::order::{Order, OrderItem, OrderStatus, Origin, Rejection};

/// A new order as first stored (normally `received`). Typed: it becomes JSON only when the
/// batch is bound to its statement.
#[derive(Debug, Clone, Serialize)]
pub struct NewOrderRow {
    pub order_id: Uuid,
    pub idempotency_key: String,
    pub request_fingerprint: String,
    pub customer_id: String,
    pub cart_id: Option<Uuid>,
    pub origin: Origin,
    pub status: OrderStatus,
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub currency: String,
    pub delivery_method: DeliveryMethod,
    pub shipping_address: Address,
    pub payment: Payment,
    pub delivery: Option<DeliverySlot>,
    pub rejection: Option<Rejection>,
    /// Every step so far, in the order they happened (one for an order written as it arrives;
    /// all of them for an order first written decided).
    pub history: Vec<HistoryStep>,
    /// The order's creation: `created_at`; `updated_at` is the last step's.
    pub at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `false` when the order ends without its stock and may still hold reservations.
    pub settled: bool,
}

/// One step of an order's history as its row keeps it (`{"status", "at"}`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HistoryStep {
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
}

impl NewOrderRow {
    /// The row of a new order: the order as built, with its key and where it goes.
    pub fn of(order: &Order, idempotency_key: &str, shipping_address: &Address) -> NewOrderRow {
        NewOrderRow {
            order_id: order.order_id,
            idempotency_key: idempotency_key.to_owned(),
            request_fingerprint: order.fingerprint.clone(),
            customer_id: order.customer_id.clone(),
            cart_id: order.cart_id,
            origin: order.origin,
            status: order.status,
            items: order.items.clone(),
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            delivery_method: order.delivery_method,
            shipping_address: shipping_address.clone(),
            payment: order.payment.clone(),
            delivery: order.delivery.clone(),
            rejection: order.rejection.clone(),
            history: order
                .history
                .iter()
                .map(|&(status, at)| HistoryStep { status, at })
                .collect(),
            at: order.created_at,
            updated_at: order.updated_at,
            settled: order.settled,
        }
    }
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
    pub from_status: OrderStatus,
    pub to_status: OrderStatus,
    pub delivery: Option<DeliverySlot>,
    pub rejection: Option<Rejection>,
    pub at: DateTime<Utc>,
    /// A status passed through on the way (recorded in the history, e.g. `reserved` on the way
    /// from `received` to `scheduled`), so one write records both steps.
    pub via_status: Option<OrderStatus>,
    pub via_at: Option<DateTime<Utc>>,
    /// `false` when the order ends without its stock and may still hold reservations.
    pub settled: bool,
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
        rejection jsonb, history jsonb, at timestamptz, updated_at timestamptz, settled bool)
), kx AS (
    -- The order's key as intake recorded it (an order taken over HTTP), found by one probe of
    -- the primary key; none for an order from another system's message.
    SELECT x.*, k.customer_id AS key_customer, k.idempotency_key AS key_key,
           k.fingerprint AS key_fingerprint
    FROM x LEFT JOIN LATERAL (SELECT k.customer_id, k.idempotency_key, k.fingerprint
                              FROM checkout_keys k WHERE k.order_id = x.order_id
                              LIMIT 1) k ON true
), ins AS (
    INSERT INTO orders (order_id, idempotency_key, request_fingerprint, customer_id, cart_id,
        origin, status, items, total_cents, currency, delivery_method, shipping_address, payment,
        delivery, rejection, history, created_at, updated_at, settled)
    SELECT order_id, idempotency_key, request_fingerprint, customer_id, cart_id, origin, status,
        items, total_cents, currency, delivery_method, shipping_address, payment, delivery,
        rejection, history, at, updated_at, settled
    FROM kx
    WHERE CASE
        -- Recorded for this order: it must be this request (same customer, key, fingerprint).
        WHEN key_fingerprint IS NOT NULL THEN
            key_customer = customer_id AND key_key = idempotency_key
            AND key_fingerprint = request_fingerprint
        -- Not recorded: the customer's key must not stand for another order yet (`OFFSET 0`:
        -- one probe of its unique index per row, never a join that scans the table; `CASE`
        -- runs it only for these rows).
        ELSE NOT EXISTS (SELECT 1 FROM checkout_keys k
                         WHERE k.customer_id = kx.customer_id
                           AND k.idempotency_key = kx.idempotency_key
                         OFFSET 0)
    END
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
), keys AS (
    -- Only the keys not recorded yet (intake records those of its own checkouts).
    INSERT INTO checkout_keys (order_id, customer_id, idempotency_key, fingerprint)
    SELECT order_id, customer_id, idempotency_key, request_fingerprint
    FROM ins JOIN kx USING (order_id) WHERE kx.key_fingerprint IS NULL
    ON CONFLICT DO NOTHING
)
SELECT order_id FROM ins";

const TRANSITION: &str = "
WITH x AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
        order_id uuid, from_status text, to_status text, delivery jsonb, rejection jsonb,
        at timestamptz, via_status text, via_at timestamptz, settled bool)
), up AS (
    UPDATE orders o SET
        status = x.to_status,
        delivery = COALESCE(x.delivery, o.delivery),
        rejection = COALESCE(x.rejection, o.rejection),
        settled = x.settled,
        updated_at = x.at,
        history = o.history
            || CASE WHEN x.via_status IS NULL THEN '[]'::jsonb
                    ELSE jsonb_build_array(jsonb_build_object('status', x.via_status, 'at', x.via_at))
               END
            || jsonb_build_array(jsonb_build_object('status', x.to_status, 'at', x.at))
    FROM x
    -- `ANY($2)`, the same ids as an array: planned with its length, the rows of `orders` are
    -- found by index (joined only to `x`, over a batch estimated at 100 rows, the planner
    -- would hash the whole table until it is large).
    WHERE o.order_id = x.order_id AND o.status = x.from_status AND o.order_id = ANY($2)
    RETURNING o.order_id
)
SELECT order_id FROM up";

const NOTIFY: &str = "
INSERT INTO notifications (id, customer_id, kind, order_id, message, suggestions, created_at)
SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
    id uuid, customer_id text, kind text, order_id uuid, message text, suggestions jsonb,
    created_at timestamptz)
ON CONFLICT (id) DO NOTHING";

/// The notifications of a batch's orders, inserted in one prepared statement (none: nothing).
pub(super) fn notify(conn: &mut PgConnection, notes: &[&NotificationRow]) -> Result<(), DbError> {
    if !notes.is_empty() {
        super::Prepared(diesel::sql_query(NOTIFY).bind::<Text, _>(json(notes)?)).execute(conn)?;
    }
    Ok(())
}

const SETTLE: &str = "UPDATE orders SET settled = true WHERE order_id = ANY($1)";

/// The rows as JSON text, bound as `text` and cast by `$1::jsonb` in the statement: no JSON tree
/// of the whole batch is built on the way. (Plain structs of strings, numbers and JSON values
/// cannot fail to serialize; if one did, the write is refused, never silently empty.)
pub(super) fn json<T: Serialize>(rows: &[T]) -> Result<String, DbError> {
    serde_json::to_string(rows)
        .map_err(|e| DbError::Query(diesel::result::Error::SerializationError(Box::new(e))))
}

/// Creates the orders that do not exist yet (and whose key is not another request's); returns
/// those created now.
pub fn create_orders<R: Serialize>(
    conn: &mut PgConnection,
    creates: &[R],
) -> Result<HashSet<Uuid>, DbError> {
    if creates.is_empty() {
        return Ok(HashSet::new());
    }
    // Prepared once per connection: its lookups of `checkout_keys` are index probes per row (a
    // `LATERAL … LIMIT 1`, and a subplan `OFFSET 0` keeps from becoming an anti-join) whatever
    // the table's size, so a generic plan made while the table was empty stays right as it
    // grows.
    Ok(
        super::Prepared(diesel::sql_query(CREATE).bind::<Text, _>(json(creates)?))
            .load::<Id>(conn)?
            .into_iter()
            .map(|r| r.order_id)
            .collect(),
    )
}

/// Applies the status changes whose order is still in `from_status`, with their history and
/// notifications; returns the orders moved now.
pub fn apply_transitions(
    conn: &mut PgConnection,
    transitions: &[TransitionRow],
) -> Result<HashSet<Uuid>, DbError> {
    if transitions.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = transitions.iter().map(|t| t.order_id).collect();
    let moved: HashSet<Uuid> = diesel::sql_query(TRANSITION)
        .bind::<Text, _>(json(transitions)?)
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(&ids)
        .load::<Id>(conn)?
        .into_iter()
        .map(|r| r.order_id)
        .collect();
    let notes: Vec<&NotificationRow> = transitions
        .iter()
        .filter(|t| moved.contains(&t.order_id))
        .filter_map(|t| t.notification.as_ref())
        .collect();
    notify(conn, &notes)?;
    Ok(moved)
}

/// Marks orders whose stock is all released.
pub fn settle(conn: &mut PgConnection, order_ids: &[Uuid]) -> Result<(), DbError> {
    if !order_ids.is_empty() {
        diesel::sql_query(SETTLE)
            .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(order_ids)
            .execute(conn)?;
    }
    Ok(())
}

/// An order as stored: the SQL edge, read into an [`Order`] at once and never handed out.
#[derive(Debug, Clone, Queryable)]
struct OrderRecord {
    order_id: Uuid,
    // Kept by `checkout_keys` for intake; the order does not carry it.
    #[allow(dead_code)]
    idempotency_key: String,
    request_fingerprint: String,
    customer_id: String,
    cart_id: Option<Uuid>,
    origin: String,
    status: String,
    items: Value,
    total_cents: i64,
    currency: String,
    delivery_method: String,
    // Shown by no read path yet (the order does not carry it).
    #[allow(dead_code)]
    shipping_address: Value,
    payment: Value,
    delivery: Option<Value>,
    rejection: Option<Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    settled: bool,
    /// `[{"status", "at"}, …]`, in the order the steps happened.
    history: Value,
}

/// A step as stored, its status still text (a status nobody knows is the row's failure).
#[derive(serde::Deserialize)]
struct StoredStep {
    status: String,
    at: DateTime<Utc>,
}

impl OrderRecord {
    /// The typed order, or why the stored row (or a status of its history) cannot be read as
    /// one — a status nobody knows is the row's failure, never a history entry left out.
    fn into_order(self) -> Result<Order, String> {
        let id = self.order_id;
        let field = |name: &str, e: serde_json::Error| format!("order {id}: {name}: {e}");
        let history = serde_json::from_value::<Vec<StoredStep>>(self.history)
            .map_err(|e| field("history", e))?
            .into_iter()
            .map(|StoredStep { status, at }| {
                OrderStatus::parse(&status)
                    .map(|status| (status, at))
                    .ok_or_else(|| format!("order {id}: history status {status:?}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Order {
            order_id: id,
            customer_id: self.customer_id,
            cart_id: self.cart_id,
            origin: Origin::parse(&self.origin)
                .ok_or_else(|| format!("order {id}: origin {:?}", self.origin))?,
            status: OrderStatus::parse(&self.status)
                .ok_or_else(|| format!("order {id}: status {:?}", self.status))?,
            items: serde_json::from_value::<Vec<OrderItem>>(self.items)
                .map_err(|e| field("items", e))?,
            total_cents: self.total_cents,
            currency: self.currency,
            delivery_method: DeliveryMethod::parse(&self.delivery_method)
                .ok_or_else(|| format!("order {id}: delivery_method {:?}", self.delivery_method))?,
            payment: serde_json::from_value::<Payment>(self.payment)
                .map_err(|e| field("payment", e))?,
            delivery: optional(self.delivery).map_err(|e| field("delivery", e))?,
            rejection: optional(self.rejection).map_err(|e| field("rejection", e))?,
            history,
            created_at: self.created_at,
            updated_at: self.updated_at,
            fingerprint: self.request_fingerprint,
            settled: self.settled,
        })
    }
}

/// A JSON column that may be empty (SQL `NULL` or JSON `null`).
fn optional<T: serde::de::DeserializeOwned>(
    v: Option<Value>,
) -> Result<Option<T>, serde_json::Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some),
    }
}

/// The typed order of a stored row; a row that cannot be read is logged and left out, so one
/// bad row never hides the others (DESIGN.md rule 7).
fn typed(record: OrderRecord) -> Option<Order> {
    match record.into_order() {
        Ok(order) => Some(order),
        Err(e) => {
            tracing::error!(error = %e, "a stored order cannot be read");
            None
        }
    }
}

/// The order with its history, as stored.
pub fn find(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Order>, DbError> {
    match orders::table
        .find(order_id)
        .first::<OrderRecord>(conn)
        .optional()?
    {
        Some(record) => Ok(typed(record)),
        None => Ok(None),
    }
}

/// A customer's orders with their histories, newest first.
pub fn by_customer(
    conn: &mut PgConnection,
    customer_id: &str,
    limit: i64,
) -> Result<Vec<Order>, DbError> {
    let records: Vec<OrderRecord> = orders::table
        .filter(orders::customer_id.eq(customer_id))
        .order(orders::created_at.desc())
        .limit(limit)
        .load(conn)?;
    Ok(records.into_iter().filter_map(typed).collect())
}

/// A notification as stored (and as `GET /v1/customers/{id}/notifications` shows it).
#[derive(Debug, Clone, Queryable, Serialize, utoipa::ToSchema)]
pub struct NotificationRecord {
    pub id: Uuid,
    pub customer_id: String,
    /// `order_scheduled`, `out_of_stock`, `stock_conflict`, `payment_declined`,
    /// `order_cancelled` or `order_expired`.
    pub kind: String,
    pub order_id: Uuid,
    pub message: String,
    /// Products in stock instead of what was short (empty for other kinds).
    #[schema(value_type = Vec<crate::domain::similarity::Suggestion>)]
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

/// Orders still `received`/`reserved` and untouched since `before`: candidates whose delivery
/// may be gone.
pub fn open_since(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, DbError> {
    Ok(orders::table
        .filter(orders::status.eq_any(["received", "reserved"]))
        .filter(orders::updated_at.lt(before))
        .order(orders::updated_at)
        .limit(limit)
        .select(orders::order_id)
        .load(conn)?)
}

/// Orders that ended without their stock and may still hold reservations, untouched since
/// `before`.
pub fn unsettled_since(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, DbError> {
    Ok(orders::table
        .filter(orders::settled.eq(false))
        .filter(orders::updated_at.lt(before))
        .order(orders::updated_at)
        .limit(limit)
        .select(orders::order_id)
        .load(conn)?)
}

#[cfg(test)]
#[path = "orders_tests.rs"]
mod tests;
