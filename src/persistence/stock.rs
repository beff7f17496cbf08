//! [`PgStore`]: the engine's durable store on Postgres.
//!
//! A batch is one transaction: one `UPDATE … FROM unnest(…)` writes every SKU row of the batch,
//! each guarded by its expected version, then one `INSERT … SELECT FROM unnest(…)` appends the
//! change log. A hot SKU costs one row write per batch, however many orders it served.

use std::collections::HashSet;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};

use super::schema::stock;
use super::DbPool;
use crate::domain::{Ledger, OnHandEffect, Sku};
use crate::engine::{RowOutcome, RowWrite, Store, StoreError};

/// The engine's store on Postgres.
#[derive(Clone)]
pub struct PgStore {
    pool: DbPool,
}

impl PgStore {
    pub fn new(pool: DbPool) -> PgStore {
        PgStore { pool }
    }
}

fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

#[derive(QueryableByName)]
struct SkuRow {
    #[diesel(sql_type = Text)]
    sku: String,
}

const UPDATE_ROWS: &str = "
UPDATE stock AS s SET
    on_hand = CASE WHEN v.set_on_hand THEN v.on_hand ELSE s.on_hand + v.on_hand END,
    reserved = s.reserved + v.reserved_delta,
    version = v.new_version,
    updated_at = now()
FROM unnest($1::text[], $2::bool[], $3::int8[], $4::int8[], $5::int8[], $6::int8[])
    AS v(sku, set_on_hand, on_hand, reserved_delta, expected_version, new_version)
WHERE s.sku = v.sku AND s.version = v.expected_version
RETURNING s.sku";

const INSERT_EVENTS: &str = "
INSERT INTO stock_events (sku, version, kind, quantity, on_hand, reserved, reason, ref)
SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::text[], $8::text[])";

const ALREADY_LOGGED: &str = "
SELECT e.sku FROM stock_events e
JOIN unnest($1::text[], $2::int8[]) AS v(sku, version) ON e.sku = v.sku AND e.version = v.version";

/// Writes the rows with one statement; returns the SKUs whose guard matched.
fn update_rows(
    conn: &mut PgConnection,
    rows: &[&RowWrite],
) -> Result<HashSet<String>, DieselError> {
    let mut skus = Vec::with_capacity(rows.len());
    let mut set = Vec::with_capacity(rows.len());
    let mut on_hand = Vec::with_capacity(rows.len());
    let mut reserved = Vec::with_capacity(rows.len());
    let mut expected = Vec::with_capacity(rows.len());
    let mut new = Vec::with_capacity(rows.len());
    for row in rows {
        skus.push(row.sku.as_str());
        let (is_set, value) = match row.on_hand {
            OnHandEffect::Set(v) => (true, v),
            OnHandEffect::Delta(d) => (false, d),
        };
        set.push(is_set);
        on_hand.push(value);
        reserved.push(row.reserved_delta);
        expected.push(row.expected_version);
        new.push(row.new_version);
    }
    let updated = diesel::sql_query(UPDATE_ROWS)
        .bind::<Array<Text>, _>(skus)
        .bind::<Array<Bool>, _>(set)
        .bind::<Array<BigInt>, _>(on_hand)
        .bind::<Array<BigInt>, _>(reserved)
        .bind::<Array<BigInt>, _>(expected)
        .bind::<Array<BigInt>, _>(new)
        .load::<SkuRow>(conn)?;
    Ok(updated.into_iter().map(|r| r.sku).collect())
}

fn insert_events(conn: &mut PgConnection, rows: &[&RowWrite]) -> Result<(), DieselError> {
    let n: usize = rows.iter().map(|r| r.events.len()).sum();
    if n == 0 {
        return Ok(());
    }
    let mut skus = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut quantities = Vec::with_capacity(n);
    let mut on_hand = Vec::with_capacity(n);
    let mut reserved = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    let mut references = Vec::with_capacity(n);
    for row in rows {
        for e in &row.events {
            skus.push(row.sku.as_str());
            versions.push(e.version);
            kinds.push(e.kind);
            quantities.push(e.quantity);
            on_hand.push(e.on_hand);
            reserved.push(e.reserved);
            reasons.push(e.reason.as_deref());
            references.push(e.reference.as_deref());
        }
    }
    diesel::sql_query(INSERT_EVENTS)
        .bind::<Array<Text>, _>(skus)
        .bind::<Array<BigInt>, _>(versions)
        .bind::<Array<Text>, _>(kinds)
        .bind::<Array<BigInt>, _>(quantities)
        .bind::<Array<BigInt>, _>(on_hand)
        .bind::<Array<BigInt>, _>(reserved)
        .bind::<Array<Nullable<Text>>, _>(reasons)
        .bind::<Array<Nullable<Text>>, _>(references)
        .execute(conn)?;
    Ok(())
}

/// The database refused a row on its own terms: a `CHECK` (stock would go negative) or the
/// unique change reference (a redelivered message). Both are conflicts, not outages.
fn is_refusal(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(
            DatabaseErrorKind::CheckViolation | DatabaseErrorKind::UniqueViolation,
            _
        )
    )
}

/// The batch's transaction. With `per_row` false, one statement writes every row and one the
/// change log (a refusal then aborts the transaction, and the caller runs it again with
/// `per_row`); with `per_row` true, each row and its log go under their own savepoint so only
/// the offenders are refused.
/// Returns the SKUs applied now, and those found applied by an earlier attempt whose commit was
/// not confirmed.
fn write_in_transaction(
    conn: &mut PgConnection,
    rows: &[RowWrite],
    retry: bool,
    per_row: bool,
) -> Result<(HashSet<String>, HashSet<String>), DieselError> {
    let all: Vec<&RowWrite> = rows.iter().collect();
    let applied = if per_row {
        let mut applied = HashSet::new();
        for row in &all {
            let one = std::slice::from_ref(row);
            let written = conn.transaction(|conn| {
                let updated = update_rows(conn, one)?;
                if !updated.is_empty() {
                    insert_events(conn, one)?;
                }
                Ok(updated)
            });
            match written {
                Ok(updated) => applied.extend(updated),
                Err(e) if is_refusal(&e) => {}
                Err(e) => return Err(e),
            }
        }
        applied
    } else {
        update_rows(conn, &all)?
    };
    let mut earlier = HashSet::new();
    if retry && applied.len() < rows.len() {
        // An earlier attempt may have committed before its connection died: its change log rows
        // are the proof, written in the same transaction as the stock row.
        let missing: Vec<&RowWrite> = rows
            .iter()
            .filter(|r| !applied.contains(r.sku.as_str()))
            .collect();
        let skus: Vec<&str> = missing.iter().map(|r| r.sku.as_str()).collect();
        let versions: Vec<i64> = missing.iter().map(|r| r.new_version).collect();
        earlier = diesel::sql_query(ALREADY_LOGGED)
            .bind::<Array<Text>, _>(skus)
            .bind::<Array<BigInt>, _>(versions)
            .load::<SkuRow>(conn)?
            .into_iter()
            .map(|r| r.sku)
            .collect();
    }
    if !per_row {
        let logged: Vec<&RowWrite> = rows
            .iter()
            .filter(|r| applied.contains(r.sku.as_str()))
            .collect();
        insert_events(conn, &logged)?;
    }
    Ok((applied, earlier))
}

impl Store for PgStore {
    fn change_applied(&self, sku: &Sku, reference: &str) -> Result<bool, StoreError> {
        use super::schema::stock_events;
        let mut conn = self.pool.get().map_err(db)?;
        let found = stock_events::table
            .filter(stock_events::sku.eq(sku.as_str()))
            .filter(stock_events::reference.eq(reference))
            .select(stock_events::version)
            .first::<i64>(&mut conn)
            .optional()
            .map_err(db)?;
        Ok(found.is_some())
    }

    fn load(&self, sku: &Sku) -> Result<Option<Ledger>, StoreError> {
        let mut conn = self.pool.get().map_err(db)?;
        let row = stock::table
            .find(sku.as_str())
            .select((stock::on_hand, stock::reserved, stock::version))
            .first::<(i64, i64, i64)>(&mut conn)
            .optional()
            .map_err(db)?;
        Ok(row.map(|(on_hand, reserved, version)| Ledger::new(on_hand, reserved, version)))
    }

    fn load_all(&self) -> Result<Vec<(Sku, Ledger)>, StoreError> {
        let mut conn = self.pool.get().map_err(db)?;
        let rows = stock::table
            .select((stock::sku, stock::on_hand, stock::reserved, stock::version))
            .load::<(String, i64, i64, i64)>(&mut conn)
            .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for (sku, on_hand, reserved, version) in rows {
            match Sku::parse(&sku) {
                Ok(sku) => out.push((sku, Ledger::new(on_hand, reserved, version))),
                Err(e) => {
                    tracing::error!(%sku, error = %e, "skipping a stock row with an invalid sku")
                }
            }
        }
        Ok(out)
    }

    fn write_batch(&self, rows: &[RowWrite], retry: bool) -> Result<Vec<RowOutcome>, StoreError> {
        let mut conn = self.pool.get().map_err(db)?;
        let (applied, earlier) =
            match conn.transaction(|conn| write_in_transaction(conn, rows, retry, false)) {
                Ok(done) => done,
                // Memory was wrong somewhere in this batch: find the offending rows one by one.
                Err(e) if is_refusal(&e) => conn
                    .transaction(|conn| write_in_transaction(conn, rows, retry, true))
                    .map_err(db)?,
                Err(e) => return Err(db(e)),
            };
        Ok(rows
            .iter()
            .map(|r| {
                if applied.contains(r.sku.as_str()) || earlier.contains(r.sku.as_str()) {
                    RowOutcome::Applied
                } else {
                    RowOutcome::Conflict
                }
            })
            .collect())
    }
}
