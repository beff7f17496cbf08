//! The SQL of a stock batch (what [`super::stock::PgStore`] runs): the one-statement fast path
//! (fence, each row's deltas under the table's `CHECK`s, and the change log, in one CTE), the multi-statement path a retry
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

/// A row as a write left it.
#[derive(QueryableByName)]
struct RowAfter {
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = BigInt)]
    on_hand: i64,
    #[diesel(sql_type = BigInt)]
    reserved: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

/// Every row of a batch as deltas on what the database holds (a warehouse count sets `on_hand`),
/// the version moved by one per change; the `CHECK`s refuse stock going negative.
const UPDATE_ROWS: &str = "
UPDATE stock AS s SET
    on_hand = CASE WHEN v.set_on_hand THEN v.on_hand ELSE s.on_hand + v.on_hand END,
    reserved = s.reserved + v.reserved_delta,
    version = s.version + v.changes,
    updated_at = now()
FROM unnest($1::text[], $2::bool[], $3::int8[], $4::int8[], $5::int8[])
    AS v(sku, set_on_hand, on_hand, reserved_delta, changes)
WHERE s.sku = v.sku
RETURNING s.sku, s.on_hand, s.reserved, s.version";

const INSERT_EVENTS: &str = "
INSERT INTO stock_events (sku, version, kind, quantity, on_hand, reserved, reason, ref, change_id)
SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::text[], $8::text[], $9::uuid[])";

/// The fast path as one statement, its own transaction: the fence (when the store has one), every
/// row's deltas, and the change log, each log row numbered and valued from the row as the
/// database left it (its version less the changes after it in the batch, its numbers less their
/// deltas). Answers the SKUs written, and one `NULL` row when the fence is stale (then nothing is
/// written). Any refusal (a `CHECK`, a duplicate reference) fails the whole statement: nothing
/// is written.
const WRITE_IN_ONE: &str = "
WITH fence AS (
    SELECT 1 FROM leader_lease WHERE $16 AND id = 1 AND holder = $17 AND epoch = $18 FOR SHARE
), allowed AS (
    SELECT (NOT $16 OR EXISTS (SELECT 1 FROM fence)) AS ok
), up AS (
    UPDATE stock AS s SET
        on_hand = CASE WHEN v.set_on_hand THEN v.on_hand ELSE s.on_hand + v.on_hand END,
        reserved = s.reserved + v.reserved_delta,
        version = s.version + v.changes,
        updated_at = now()
    FROM unnest($1::text[], $2::bool[], $3::int8[], $4::int8[], $5::int8[])
        AS v(sku, set_on_hand, on_hand, reserved_delta, changes)
    WHERE s.sku = v.sku AND (SELECT ok FROM allowed)
    RETURNING s.sku, s.on_hand, s.reserved, s.version
), logged AS (
    INSERT INTO stock_events (sku, version, kind, quantity, on_hand, reserved, reason, ref, change_id)
    SELECT e.sku, up.version - e.later, e.kind, e.quantity,
           COALESCE(e.on_hand_at, up.on_hand - e.on_hand_later), up.reserved - e.reserved_later,
           e.reason, e.ref, e.change_id
    FROM unnest($6::text[], $7::int8[], $8::text[], $9::int8[], $10::int8[], $11::int8[],
                $12::int8[], $13::text[], $14::text[], $15::uuid[])
        AS e(sku, later, kind, quantity, on_hand_at, on_hand_later, reserved_later, reason, ref, change_id)
    JOIN up ON up.sku = e.sku
)
SELECT sku FROM up
UNION ALL
SELECT NULL FROM allowed WHERE NOT ok";

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = Nullable<Text>)]
    sku: Option<String>,
}

/// Binds a batch's [`RowColumns`] to a statement, in the order its first five parameters expect
/// (`sku, set_on_hand, on_hand, reserved_delta, changes`).
macro_rules! bind_rows {
    ($query:expr, $c:expr) => {
        $query
            .bind::<Array<Text>, _>($c.skus)
            .bind::<Array<Bool>, _>($c.set)
            .bind::<Array<BigInt>, _>($c.on_hand)
            .bind::<Array<BigInt>, _>($c.reserved)
            .bind::<Array<BigInt>, _>($c.changes)
    };
}

/// The rows of a batch as the statements bind them, column by column.
#[derive(Default)]
struct RowColumns<'a> {
    skus: Vec<&'a str>,
    set: Vec<bool>,
    on_hand: Vec<i64>,
    reserved: Vec<i64>,
    changes: Vec<i64>,
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
            c.changes.push(row.events.len() as i64);
        }
        c
    }
}

/// Where one change of a row sits among the row's changes: how many come after it, and what
/// they do — so its log row can be valued from the row as the whole write left it.
struct Tail {
    later: i64,
    /// `on_hand` after this change when a later change of the row sets it outright (a warehouse
    /// count): memory's, because the database's end value no longer tells it.
    on_hand_at: Option<i64>,
    on_hand_later: i64,
    reserved_later: i64,
}

/// Each change's [`Tail`], in the row's order.
fn tails(row: &RowWrite) -> Vec<Tail> {
    let mut out = Vec::with_capacity(row.events.len());
    let (mut on_hand_later, mut reserved_later, mut set_later) = (0i64, 0i64, false);
    for (i, e) in row.events.iter().enumerate().rev() {
        out.push(Tail {
            later: (row.events.len() - 1 - i) as i64,
            on_hand_at: set_later.then_some(e.on_hand),
            on_hand_later,
            reserved_later,
        });
        let (on_hand, reserved) = e.effect();
        match on_hand {
            OnHandEffect::Set(_) => set_later = true,
            OnHandEffect::Delta(d) => on_hand_later += d,
        }
        reserved_later += reserved;
    }
    out.reverse();
    out
}

/// The change-log rows of a batch, column by column, as [`WRITE_IN_ONE`] values them.
#[derive(Default)]
struct TailColumns<'a> {
    skus: Vec<&'a str>,
    later: Vec<i64>,
    kinds: Vec<&'a str>,
    quantities: Vec<i64>,
    on_hand_at: Vec<Option<i64>>,
    on_hand_later: Vec<i64>,
    reserved_later: Vec<i64>,
    reasons: Vec<Option<&'a str>>,
    references: Vec<Option<&'a str>>,
    change_ids: Vec<uuid::Uuid>,
}

impl<'a> TailColumns<'a> {
    fn of(rows: &[&'a RowWrite]) -> TailColumns<'a> {
        let mut c = TailColumns::default();
        for row in rows {
            for (e, t) in row.events.iter().zip(tails(row)) {
                c.skus.push(row.sku.as_str());
                c.later.push(t.later);
                c.kinds.push(e.kind);
                c.quantities.push(e.quantity);
                c.on_hand_at.push(t.on_hand_at);
                c.on_hand_later.push(t.on_hand_later);
                c.reserved_later.push(t.reserved_later);
                c.reasons.push(e.reason.as_deref());
                c.references.push(e.reference.as_deref());
                c.change_ids.push(e.change_id);
            }
        }
        c
    }
}

/// [`WRITE_IN_ONE`]: `Ok(Some(applied SKUs))`, or `Ok(None)` when the fence is stale. A
/// statement the connection prepares once and keeps ([`super::Prepared`]): parsed and planned
/// once, not per batch (a hot SKU's batches come a thousand a second).
pub(super) fn write_in_one(
    conn: &mut PgConnection,
    rows: &[RowWrite],
    fence: Option<&FenceGuard>,
) -> Result<Option<HashSet<String>>, DieselError> {
    let all: Vec<&RowWrite> = rows.iter().collect();
    let (r, e) = (RowColumns::of(&all), TailColumns::of(&all));
    let written = run_write_in_one(conn, r, e, fence)?;
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

/// [`WRITE_IN_ONE`] with a batch's columns bound, as the connection's prepared statement.
fn run_write_in_one(
    conn: &mut PgConnection,
    r: RowColumns<'_>,
    e: TailColumns<'_>,
    fence: Option<&FenceGuard>,
) -> Result<Vec<Written>, DieselError> {
    let query = bind_rows!(diesel::sql_query(WRITE_IN_ONE), r)
        .bind::<Array<Text>, _>(e.skus)
        .bind::<Array<BigInt>, _>(e.later)
        .bind::<Array<Text>, _>(e.kinds)
        .bind::<Array<BigInt>, _>(e.quantities)
        .bind::<Array<Nullable<BigInt>>, _>(e.on_hand_at)
        .bind::<Array<BigInt>, _>(e.on_hand_later)
        .bind::<Array<BigInt>, _>(e.reserved_later)
        .bind::<Array<Nullable<Text>>, _>(e.reasons)
        .bind::<Array<Nullable<Text>>, _>(e.references)
        .bind::<Array<diesel::sql_types::Uuid>, _>(e.change_ids)
        .bind::<Bool, _>(fence.is_some())
        .bind::<diesel::sql_types::Uuid, _>(fence.map_or(uuid::Uuid::nil(), |g| g.fence.holder))
        .bind::<BigInt, _>(fence.map_or(0, |g| g.fence.epoch));
    super::Prepared(query).load::<Written>(conn)
}

/// Rows whose last change is already in the log, found by its change id.
const ALREADY_LOGGED: &str = "
SELECT e.sku FROM stock_events e
JOIN unnest($1::text[], $2::uuid[]) AS v(sku, change_id)
  ON e.sku = v.sku AND e.change_id = v.change_id";

/// Writes the rows' deltas with one statement, and their change log with another, valued from
/// the rows as the database left them. Returns the SKUs written.
pub(crate) fn write_rows(
    conn: &mut PgConnection,
    rows: &[&RowWrite],
) -> Result<std::collections::HashMap<String, crate::domain::Ledger>, DieselError> {
    use std::collections::HashMap;
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let c = RowColumns::of(rows);
    let after: HashMap<String, crate::domain::Ledger> =
        super::Prepared(bind_rows!(diesel::sql_query(UPDATE_ROWS), c))
            .load::<RowAfter>(conn)?
            .into_iter()
            .map(|r| {
                (
                    r.sku,
                    crate::domain::Ledger::new(r.on_hand, r.reserved, r.version),
                )
            })
            .collect();
    let mut e = EventColumns::default();
    for row in rows {
        let Some(end) = after.get(row.sku.as_str()) else {
            continue;
        };
        for (ev, t) in row.events.iter().zip(tails(row)) {
            e.skus.push(row.sku.as_str());
            e.versions.push(end.version - t.later);
            e.kinds.push(ev.kind);
            e.quantities.push(ev.quantity);
            e.on_hand
                .push(t.on_hand_at.unwrap_or(end.level.on_hand - t.on_hand_later));
            e.reserved.push(end.level.reserved - t.reserved_later);
            e.reasons.push(ev.reason.as_deref());
            e.references.push(ev.reference.as_deref());
            e.change_ids.push(ev.change_id);
        }
    }
    if !e.skus.is_empty() {
        let insert = diesel::sql_query(INSERT_EVENTS)
            .bind::<Array<Text>, _>(e.skus)
            .bind::<Array<BigInt>, _>(e.versions)
            .bind::<Array<Text>, _>(e.kinds)
            .bind::<Array<BigInt>, _>(e.quantities)
            .bind::<Array<BigInt>, _>(e.on_hand)
            .bind::<Array<BigInt>, _>(e.reserved)
            .bind::<Array<Nullable<Text>>, _>(e.reasons)
            .bind::<Array<Nullable<Text>>, _>(e.references)
            .bind::<Array<diesel::sql_types::Uuid>, _>(e.change_ids);
        super::Prepared(insert).execute(conn)?;
    }
    Ok(after)
}

/// The change-log rows of a batch, column by column, valued.
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

/// The rows among `rows` whose last change an earlier attempt committed (its connection died
/// before the commit was confirmed): the change log, written in the same transaction as the stock
/// row, holds its change id.
fn committed_earlier(
    conn: &mut PgConnection,
    rows: &[&RowWrite],
) -> Result<HashSet<String>, DieselError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let mut skus = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(last) = row.events.last() {
            skus.push(row.sku.as_str());
            ids.push(last.change_id);
        }
    }
    Ok(diesel::sql_query(ALREADY_LOGGED)
        .bind::<Array<Text>, _>(skus)
        .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
        .load::<SkuRow>(conn)?
        .into_iter()
        .map(|r| r.sku)
        .collect())
}

/// The multi-statement path (a retry's): rows an earlier attempt committed are recognised by their
/// change id and not written again; every other row is written. Any refusal aborts the
/// transaction (the caller then isolates the offenders with [`write_each`]).
pub(super) fn write_all(
    conn: &mut PgConnection,
    rows: &[RowWrite],
    retry: bool,
) -> Result<Vec<RowOutcome>, DieselError> {
    let all: Vec<&RowWrite> = rows.iter().collect();
    let earlier = if retry {
        committed_earlier(conn, &all)?
    } else {
        HashSet::new()
    };
    let todo: Vec<&RowWrite> = rows
        .iter()
        .filter(|r| !earlier.contains(r.sku.as_str()))
        .collect();
    let applied = write_rows(conn, &todo)?;
    Ok(rows
        .iter()
        .map(|r| {
            if applied.contains_key(r.sku.as_str()) || earlier.contains(r.sku.as_str()) {
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
        if retry && !committed_earlier(conn, &one)?.is_empty() {
            outcomes.push(RowOutcome::Applied);
            continue;
        }
        let written = conn.transaction(|conn| write_rows(conn, &one));
        let outcome = match written {
            Ok(applied) if !applied.is_empty() => RowOutcome::Applied,
            Ok(_) => RowOutcome::Conflict,
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
