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
use crate::lease::FenceGuard;

/// The engine's store on Postgres.
#[derive(Clone)]
pub struct PgStore {
    pool: DbPool,
    /// Checked in every write transaction when this store belongs to a leased instance.
    fence: Option<FenceGuard>,
}

impl PgStore {
    pub fn new(pool: DbPool) -> PgStore {
        PgStore { pool, fence: None }
    }

    /// A store whose every write checks, in its transaction, that this instance still holds the
    /// lease (and commits nothing when it does not).
    pub fn fenced(pool: DbPool, fence: FenceGuard) -> PgStore {
        PgStore {
            pool,
            fence: Some(fence),
        }
    }
}

/// A store error from a diesel error: transient (retry) or refused (do not).
fn db(e: DieselError) -> StoreError {
    match super::classify(&e) {
        super::ErrorClass::Transient => StoreError::Unavailable(super::one_line(&e)),
        super::ErrorClass::Refused => StoreError::Refused(super::one_line(&e)),
    }
}

/// The pool could not give a connection: the database is away.
fn pool(e: diesel::r2d2::PoolError) -> StoreError {
    StoreError::Unavailable(super::one_line(e))
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
INSERT INTO stock_events (sku, version, kind, quantity, on_hand, reserved, reason, ref, change_id)
SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::text[], $8::text[], $9::uuid[])";

/// Rows whose last change is already in the log — by its change id, not merely its version: a
/// different change at the same version is not ours.
const ALREADY_LOGGED: &str = "
SELECT e.sku FROM stock_events e
JOIN unnest($1::text[], $2::int8[], $3::uuid[]) AS v(sku, version, change_id)
  ON e.sku = v.sku AND e.version = v.version AND e.change_id = v.change_id";

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
    let mut change_ids = Vec::with_capacity(n);
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
            change_ids.push(e.change_id);
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
        .bind::<Array<diesel::sql_types::Uuid>, _>(change_ids)
        .execute(conn)?;
    Ok(())
}

/// The database refused a row on its own terms: a `CHECK` (stock would go negative) or the
/// unique change reference (a redelivered message). Both are conflicts (memory was wrong or the
/// change is already in), not outages and not bad data.
fn is_conflict(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(
            DatabaseErrorKind::CheckViolation | DatabaseErrorKind::UniqueViolation,
            _
        )
    )
}

/// The rows among `missing` whose last change an earlier attempt committed (its connection died
/// before the commit was confirmed): the change log, written in the same transaction as the stock
/// row, holds its change id.
fn committed_earlier(
    conn: &mut PgConnection,
    missing: &[&RowWrite],
) -> Result<HashSet<String>, DieselError> {
    if missing.is_empty() {
        return Ok(HashSet::new());
    }
    let mut skus = Vec::with_capacity(missing.len());
    let mut versions = Vec::with_capacity(missing.len());
    let mut ids = Vec::with_capacity(missing.len());
    for row in missing {
        if let Some(last) = row.events.last() {
            skus.push(row.sku.as_str());
            versions.push(row.new_version);
            ids.push(last.change_id);
        }
    }
    Ok(diesel::sql_query(ALREADY_LOGGED)
        .bind::<Array<Text>, _>(skus)
        .bind::<Array<BigInt>, _>(versions)
        .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
        .load::<SkuRow>(conn)?
        .into_iter()
        .map(|r| r.sku)
        .collect())
}

/// The fast path: every row with one statement, the change log with another. Any refusal aborts
/// the transaction (the caller then isolates the offenders with [`write_each`]).
fn write_all(
    conn: &mut PgConnection,
    rows: &[RowWrite],
    retry: bool,
) -> Result<Vec<RowOutcome>, DieselError> {
    let all: Vec<&RowWrite> = rows.iter().collect();
    let applied = update_rows(conn, &all)?;
    let earlier = if retry {
        let missing: Vec<&RowWrite> = rows
            .iter()
            .filter(|r| !applied.contains(r.sku.as_str()))
            .collect();
        committed_earlier(conn, &missing)?
    } else {
        HashSet::new()
    };
    let logged: Vec<&RowWrite> = rows
        .iter()
        .filter(|r| applied.contains(r.sku.as_str()))
        .collect();
    insert_events(conn, &logged)?;
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

/// The bulkhead: each row and its log under a savepoint of its own, so a row the database
/// refuses fails alone. A transient error aborts the whole batch (it is retried).
fn write_each(
    conn: &mut PgConnection,
    rows: &[RowWrite],
    retry: bool,
) -> Result<Vec<RowOutcome>, DieselError> {
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        let one = [row];
        let written = conn.transaction(|conn| {
            let updated = update_rows(conn, &one)?;
            if !updated.is_empty() {
                insert_events(conn, &one)?;
            }
            Ok(!updated.is_empty())
        });
        let outcome = match written {
            Ok(true) => RowOutcome::Applied,
            Ok(false) if retry && !committed_earlier(conn, &one)?.is_empty() => RowOutcome::Applied,
            Ok(false) => RowOutcome::Conflict,
            Err(e) if is_conflict(&e) => RowOutcome::Conflict,
            Err(e) if super::classify(&e) == super::ErrorClass::Transient => return Err(e),
            Err(e) => {
                tracing::error!(sku = %row.sku, error = %super::one_line(&e), "the database refused a stock row");
                RowOutcome::Refused(super::one_line(&e))
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

impl Store for PgStore {
    fn change_applied(&self, sku: &Sku, reference: &str) -> Result<bool, StoreError> {
        use super::schema::stock_events;
        let mut conn = self.pool.get().map_err(pool)?;
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
        let mut conn = self.pool.get().map_err(pool)?;
        let row = stock::table
            .find(sku.as_str())
            .select((stock::on_hand, stock::reserved, stock::version))
            .first::<(i64, i64, i64)>(&mut conn)
            .optional()
            .map_err(db)?;
        Ok(row.map(|(on_hand, reserved, version)| Ledger::new(on_hand, reserved, version)))
    }

    fn load_all(&self) -> Result<Vec<(Sku, Ledger)>, StoreError> {
        let mut conn = self.pool.get().map_err(pool)?;
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
        let mut conn = self.pool.get().map_err(pool)?;
        let fenced = std::cell::Cell::new(false);
        // First, in the same transaction: is this instance still the one that may write?
        let check = |conn: &mut PgConnection| -> Result<(), DieselError> {
            match &self.fence {
                Some(guard) if !guard.check(conn)? => {
                    fenced.set(true);
                    Err(DieselError::RollbackTransaction)
                }
                _ => Ok(()),
            }
        };
        let first = conn.transaction(|conn| {
            check(conn)?;
            write_all(conn, rows, retry)
        });
        match first {
            Ok(outcomes) => Ok(outcomes),
            Err(_) if fenced.get() => Err(StoreError::Fenced),
            Err(e) if super::classify(&e) == super::ErrorClass::Transient => {
                Err(StoreError::Unavailable(super::one_line(&e)))
            }
            // Some row was refused (memory was wrong, or bad data): find it, write the others.
            Err(_) => {
                let each = conn.transaction(|conn| {
                    check(conn)?;
                    write_each(conn, rows, retry)
                });
                match each {
                    Err(_) if fenced.get() => Err(StoreError::Fenced),
                    other => other.map_err(db),
                }
            }
        }
    }
}
