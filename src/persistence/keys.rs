//! Idempotency keys (a customer's key → the order id it was given, with the request's
//! fingerprint), their retention, and the secret order ids of other systems' checkouts are keyed
//! with.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use serde::Serialize;
use uuid::Uuid;

use super::orders::json;
use super::DbError;
use crate::domain::order::OrderStatus;

/// An idempotency key intake is about to use, with the order id it would get if new.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    pub order_id: Uuid,
    pub customer_id: String,
    pub idempotency_key: String,
    pub fingerprint: String,
}

/// What the database knew of a customer's key before it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Recorded now, with the proposed order id: never seen before.
    New,
    /// Seen before: what is recorded for it.
    Known(RecordedKey),
    /// Being recorded by another request at this very moment (in the same batch): retry.
    Racing,
}

/// Forgets idempotency keys recorded before `before` whose order is decided (or never came):
/// a reuse after that is a new order. At most `limit` a call; returns how many went. Keys
/// another call is forgetting now are skipped, not waited for (two sweeps never block each
/// other, and a batch short of `limit` means none is left).
pub fn prune_keys(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<usize, DbError> {
    diesel::sql_query(
        "DELETE FROM checkout_keys WHERE order_id IN (
             SELECT k.order_id FROM checkout_keys k
             WHERE k.created_at < $1
               AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = k.order_id
                               AND o.status IN ('received', 'reserved'))
             LIMIT $2
             FOR UPDATE OF k SKIP LOCKED)",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(before)
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .execute(conn)
    .map_err(DbError::from)
}

/// Lets go of the keys recorded for these order ids whose order does not exist (intake refused
/// their checkouts after recording the keys, before publishing them).
pub fn forget_unused_keys(conn: &mut PgConnection, order_ids: &[Uuid]) -> Result<(), DbError> {
    if order_ids.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
        "DELETE FROM checkout_keys k WHERE k.order_id = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = k.order_id)",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(order_ids)
    .execute(conn)?;
    Ok(())
}

/// Whether intake recorded a key for this order id (it was accepted, perhaps not decided yet).
pub fn key_recorded(conn: &mut PgConnection, order_id: uuid::Uuid) -> Result<bool, DbError> {
    Ok(accepted_by(conn, order_id)?.is_some())
}

/// What is recorded for a customer's key: the order id it was given, the fingerprint of its
/// request, and the status of its order if the order exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedKey {
    pub order_id: Uuid,
    pub fingerprint: String,
    pub status: Option<OrderStatus>,
}

/// What is recorded for each of these keys (by the customer and key of each), by the
/// `order_id` each was asked with; a key not recorded is absent. A read: one probe of the
/// `(customer, key)` index per key and one of the orders' primary key per key found, planned
/// so whatever the tables hold (`LATERAL … LIMIT 1`, as [`record_keys`]). Intake asks before
/// it answers a checkout the fast path refused: a refusal records nothing, a repeat of an
/// accepted checkout still gets its own answer.
pub fn recorded_keys(
    conn: &mut PgConnection,
    keys: &[KeyRow],
) -> Result<std::collections::HashMap<Uuid, RecordedKey>, DbError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        asked: Uuid,
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        order_id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Text)]
        fingerprint: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        status: Option<String>,
    }
    if keys.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    Ok(
        super::Prepared(diesel::sql_query(RECORDED).bind::<Text, _>(json(keys)?))
            .load::<Found>(conn)?
            .into_iter()
            .map(|f| {
                let key = RecordedKey {
                    order_id: f.order_id,
                    fingerprint: f.fingerprint,
                    // The schema checks the status; one nobody knows reads as no order yet.
                    status: f.status.as_deref().and_then(OrderStatus::parse),
                };
                (f.asked, key)
            })
            .collect(),
    )
}

const RECORDED: &str = "
SELECT x.order_id AS asked, k.order_id, k.fingerprint, o.status
FROM jsonb_to_recordset($1::jsonb) AS x(order_id uuid, customer_id text, idempotency_key text)
JOIN LATERAL (SELECT k.order_id, k.fingerprint FROM checkout_keys k
              WHERE k.customer_id = x.customer_id AND k.idempotency_key = x.idempotency_key
              LIMIT 1) k ON true
LEFT JOIN LATERAL (SELECT o.status FROM orders o WHERE o.order_id = k.order_id LIMIT 1) o ON true";

/// The customer whose checkout intake accepted with this order id, and when (its key is
/// recorded; the order may not be decided yet), if any.
pub fn accepted_by(
    conn: &mut PgConnection,
    order_id: uuid::Uuid,
) -> Result<Option<(String, DateTime<Utc>)>, DbError> {
    use super::schema::checkout_keys;
    use diesel::prelude::*;
    Ok(checkout_keys::table
        .find(order_id)
        .select((checkout_keys::customer_id, checkout_keys::created_at))
        .first::<(String, DateTime<Utc>)>(conn)
        .optional()?)
}

/// The secret order ids of checkouts from other systems are keyed with (made by a migration).
pub fn order_id_secret(conn: &mut PgConnection) -> Result<Vec<u8>, DbError> {
    use super::schema::server_secrets;
    server_secrets::table
        .find("order_ids")
        .select(server_secrets::secret)
        .first(conn)
        .map_err(DbError::from)
}

/// Every lookup is one probe of a unique index per row (`LATERAL … LIMIT 1` keeps the planner
/// from hashing the whole table instead: with the batch estimated at 100 rows it did so for
/// `checkout_keys` up to tens of thousands of keys, a scan per batch), so the plan does not
/// depend on the tables' sizes and the statement is prepared once per connection.
const KEYS: &str = "
WITH x AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
        order_id uuid, customer_id text, idempotency_key text, fingerprint text)
), ins AS (
    INSERT INTO checkout_keys (order_id, customer_id, idempotency_key, fingerprint)
    SELECT order_id, customer_id, idempotency_key, fingerprint FROM x
    ON CONFLICT DO NOTHING
    RETURNING order_id
)
SELECT x.order_id, (ins.order_id IS NOT NULL) AS inserted, k.order_id AS known_id,
       k.fingerprint, o.status
FROM x
LEFT JOIN ins ON ins.order_id = x.order_id
LEFT JOIN LATERAL (SELECT k.order_id, k.fingerprint FROM checkout_keys k
                   WHERE ins.order_id IS NULL
                     AND k.customer_id = x.customer_id AND k.idempotency_key = x.idempotency_key
                   LIMIT 1) k ON true
LEFT JOIN LATERAL (SELECT o.status FROM orders o WHERE o.order_id = k.order_id LIMIT 1) o ON true";

/// Records idempotency keys (those already there are left as they are) and says, for each, what
/// was known of it before.
pub fn record_keys(conn: &mut PgConnection, keys: &[KeyRow]) -> Result<Vec<KeyState>, DbError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        order_id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        inserted: bool,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
        known_id: Option<Uuid>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        fingerprint: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        status: Option<String>,
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let found: std::collections::HashMap<Uuid, Found> =
        super::Prepared(diesel::sql_query(KEYS).bind::<Text, _>(json(keys)?))
            .load::<Found>(conn)?
            .into_iter()
            .map(|f| (f.order_id, f))
            .collect();
    Ok(keys
        .iter()
        .map(|k| match found.get(&k.order_id) {
            Some(f) if !f.inserted => match f.known_id {
                Some(order_id) => KeyState::Known(RecordedKey {
                    order_id,
                    fingerprint: f.fingerprint.clone().unwrap_or_default(),
                    // The schema checks the status; one nobody knows reads as no order yet.
                    status: f.status.as_deref().and_then(OrderStatus::parse),
                }),
                None => KeyState::Racing,
            },
            _ => KeyState::New,
        })
        .collect())
}
