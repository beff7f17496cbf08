//! The SQL of a stock batch (what [`super::stock::PgStore`] runs): the one-statement fast path
//! (fence, version-guarded rows and change log in one CTE), the multi-statement path a retry
//! takes (it first looks for what an attempt whose answer was lost did commit), and the bulkhead
//! that isolates a row the database refuses.

use std::collections::HashSet;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};

use crate::domain::OnHandEffect;
use crate::engine::{RowOutcome, RowWrite};
use crate::lease::FenceGuard;

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

/// The fast path as one statement, its own transaction: the fence (when the store has one), every
/// row guarded by its version, and the change log of the rows whose guard matched. Answers the
/// SKUs written, and one `NULL` row when the fence is stale (then nothing is written). Any
/// refusal (a `CHECK`, a duplicate reference) fails the whole statement: nothing is written.
const WRITE_IN_ONE: &str = "
WITH fence AS (
    SELECT 1 FROM leader_lease WHERE $16 AND id = 1 AND holder = $17 AND epoch = $18 FOR SHARE
), allowed AS (
    SELECT (NOT $16 OR EXISTS (SELECT 1 FROM fence)) AS ok
), up AS (
    UPDATE stock AS s SET
        on_hand = CASE WHEN v.set_on_hand THEN v.on_hand ELSE s.on_hand + v.on_hand END,
        reserved = s.reserved + v.reserved_delta,
        version = v.new_version,
        updated_at = now()
    FROM unnest($1::text[], $2::bool[], $3::int8[], $4::int8[], $5::int8[], $6::int8[])
        AS v(sku, set_on_hand, on_hand, reserved_delta, expected_version, new_version)
    WHERE s.sku = v.sku AND s.version = v.expected_version AND (SELECT ok FROM allowed)
    RETURNING s.sku
), logged AS (
    INSERT INTO stock_events (sku, version, kind, quantity, on_hand, reserved, reason, ref, change_id)
    SELECT e.* FROM unnest($7::text[], $8::int8[], $9::text[], $10::int8[], $11::int8[],
                           $12::int8[], $13::text[], $14::text[], $15::uuid[])
        AS e(sku, version, kind, quantity, on_hand, reserved, reason, ref, change_id)
    WHERE e.sku IN (SELECT sku FROM up)
)
SELECT sku FROM up
UNION ALL
SELECT NULL FROM allowed WHERE NOT ok";

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = Nullable<Text>)]
    sku: Option<String>,
}

/// Binds a batch's [`RowColumns`] to a statement, in the order its first six parameters expect
/// (`sku, set_on_hand, on_hand, reserved_delta, expected_version, new_version`).
macro_rules! bind_rows {
    ($query:expr, $c:expr) => {
        $query
            .bind::<Array<Text>, _>($c.skus)
            .bind::<Array<Bool>, _>($c.set)
            .bind::<Array<BigInt>, _>($c.on_hand)
            .bind::<Array<BigInt>, _>($c.reserved)
            .bind::<Array<BigInt>, _>($c.expected)
            .bind::<Array<BigInt>, _>($c.new)
    };
}

/// Binds a batch's [`EventColumns`] after what the statement bound before, in the order of
/// `stock_events (sku, version, kind, quantity, on_hand, reserved, reason, ref, change_id)`.
macro_rules! bind_events {
    ($query:expr, $c:expr) => {
        $query
            .bind::<Array<Text>, _>($c.skus)
            .bind::<Array<BigInt>, _>($c.versions)
            .bind::<Array<Text>, _>($c.kinds)
            .bind::<Array<BigInt>, _>($c.quantities)
            .bind::<Array<BigInt>, _>($c.on_hand)
            .bind::<Array<BigInt>, _>($c.reserved)
            .bind::<Array<Nullable<Text>>, _>($c.reasons)
            .bind::<Array<Nullable<Text>>, _>($c.references)
            .bind::<Array<diesel::sql_types::Uuid>, _>($c.change_ids)
    };
}

/// The rows of a batch as the statements bind them, column by column.
#[derive(Default)]
struct RowColumns<'a> {
    skus: Vec<&'a str>,
    set: Vec<bool>,
    on_hand: Vec<i64>,
    reserved: Vec<i64>,
    expected: Vec<i64>,
    new: Vec<i64>,
}

impl<'a> RowColumns<'a> {
    fn of(rows: &[&'a RowWrite]) -> RowColumns<'a> {
        let mut c = RowColumns::default();
        for row in rows {
            c.skus.push(row.sku.as_str());
            let (is_set, value) = match row.on_hand {
                OnHandEffect::Set(v) => (true, v),
                OnHandEffect::Delta(d) => (false, d),
            };
            c.set.push(is_set);
            c.on_hand.push(value);
            c.reserved.push(row.reserved_delta);
            c.expected.push(row.expected_version);
            c.new.push(row.new_version);
        }
        c
    }
}

/// The change-log rows of a batch, column by column.
#[derive(Default)]
struct EventColumns<'a> {
    skus: Vec<&'a str>,
    versions: Vec<i64>,
    kinds: Vec<&'a str>,
    quantities: Vec<i64>,
    on_hand: Vec<i64>,
    reserved: Vec<i64>,
    reasons: Vec<Option<&'a str>>,
    references: Vec<Option<&'a str>>,
    change_ids: Vec<uuid::Uuid>,
}

impl<'a> EventColumns<'a> {
    fn of(rows: &[&'a RowWrite]) -> EventColumns<'a> {
        let mut c = EventColumns::default();
        for row in rows {
            for e in &row.events {
                c.skus.push(row.sku.as_str());
                c.versions.push(e.version);
                c.kinds.push(e.kind);
                c.quantities.push(e.quantity);
                c.on_hand.push(e.on_hand);
                c.reserved.push(e.reserved);
                c.reasons.push(e.reason.as_deref());
                c.references.push(e.reference.as_deref());
                c.change_ids.push(e.change_id);
            }
        }
        c
    }
}

/// [`WRITE_IN_ONE`]: `Ok(Some(applied SKUs))`, or `Ok(None)` when the fence is stale.
pub(super) fn write_in_one(
    conn: &mut PgConnection,
    rows: &[RowWrite],
    fence: Option<&FenceGuard>,
) -> Result<Option<HashSet<String>>, DieselError> {
    let all: Vec<&RowWrite> = rows.iter().collect();
    let (r, e) = (RowColumns::of(&all), EventColumns::of(&all));
    let query = bind_rows!(diesel::sql_query(WRITE_IN_ONE), r);
    let written = bind_events!(query, e)
        .bind::<Bool, _>(fence.is_some())
        .bind::<diesel::sql_types::Uuid, _>(fence.map_or(uuid::Uuid::nil(), |g| g.fence.holder))
        .bind::<BigInt, _>(fence.map_or(0, |g| g.fence.epoch))
        .load::<Written>(conn)?;
    let mut applied = HashSet::with_capacity(written.len());
    for row in written {
        match row.sku {
            Some(sku) => {
                applied.insert(sku);
            }
            None => return Ok(None),
        }
    }
    Ok(Some(applied))
}

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
    let c = RowColumns::of(rows);
    let updated = bind_rows!(diesel::sql_query(UPDATE_ROWS), c).load::<SkuRow>(conn)?;
    Ok(updated.into_iter().map(|r| r.sku).collect())
}

fn insert_events(conn: &mut PgConnection, rows: &[&RowWrite]) -> Result<(), DieselError> {
    let c = EventColumns::of(rows);
    if c.skus.is_empty() {
        return Ok(());
    }
    bind_events!(diesel::sql_query(INSERT_EVENTS), c).execute(conn)?;
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
pub(super) fn write_all(
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
pub(super) fn write_each(
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
