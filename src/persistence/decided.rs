//! The one write of a decided order (issue 19; `docs/one-write.md`): the order's row, its held
//! units as reservations and its notification, in the order writer's transaction.

use diesel::pg::PgConnection;
use uuid::Uuid;

use super::orders::{create_orders, NewOrderRow, NotificationRow};
use super::DbError;

/// An order written once, decided (issue 19's one write): its row with its whole history, its
/// notification, and the units it holds in memory (a `scheduled` order's lines; none for an order
/// decided without its goods), committed as reservations in the same transaction.
#[derive(Debug, Clone)]
pub struct DecidedRow {
    pub order: NewOrderRow,
    pub notification: Option<NotificationRow>,
    pub holds: Vec<(crate::domain::Sku, i64)>,
}

/// What the one write of a decided order came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedOutcome {
    /// Written now; its held units are reserved, and each SKU's row is as this left it.
    Written(Vec<(crate::domain::Sku, crate::domain::Ledger)>),
    /// The order was already there (an earlier delivery decided it), or its key stands for
    /// another request: nothing was written.
    Exists,
    /// The database refused its units (memory believed in stock it does not hold): nothing was
    /// written.
    StockRefused,
    /// The order is there, and this write was retried after an attempt whose answer was lost:
    /// it may be this write's own commit (its units reserved).
    Unsure,
}

/// Writes decided orders once each, in the caller's transaction: the rows not there yet, the
/// units each holds as reservations (one delta per SKU for the whole batch, one change-log row
/// per order line with the order's reference), and their notifications. A `CHECK` refusing the
/// units fails the statement (and the caller's transaction): the caller then writes the orders
/// one by one to find which.
pub fn write_decided(
    conn: &mut PgConnection,
    decided: &[&DecidedRow],
) -> Result<Vec<DecidedOutcome>, DbError> {
    use crate::engine::{EventRecord, RowWrite};
    if decided.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<&NewOrderRow> = decided.iter().map(|d| &d.order).collect();
    let created = create_orders(conn, &rows)?;
    // By SKU in order: every writer of `stock` updates a batch's rows in the same order.
    let mut by_sku: std::collections::BTreeMap<&str, RowWrite> = Default::default();
    for d in decided
        .iter()
        .filter(|d| created.contains(&d.order.order_id))
    {
        for (sku, qty) in &d.holds {
            let row = by_sku.entry(sku.as_str()).or_insert_with(|| RowWrite {
                sku: sku.clone(),
                on_hand: crate::domain::OnHandEffect::Delta(0),
                reserved_delta: 0,
                events: Vec::new(),
            });
            row.reserved_delta += qty;
            row.events.push(EventRecord {
                version: 0,
                kind: "reserve",
                quantity: *qty,
                on_hand: 0,
                reserved: 0,
                reason: None,
                reference: Some(crate::domain::order::reserve_ref(d.order.order_id)),
                change_id: Uuid::new_v4(),
            });
        }
    }
    let stock: Vec<&RowWrite> = by_sku.values().collect();
    let after = super::stock_sql::write_rows(conn, &stock)?;
    let notes: Vec<&NotificationRow> = decided
        .iter()
        .filter(|d| created.contains(&d.order.order_id))
        .filter_map(|d| d.notification.as_ref())
        .collect();
    super::orders::notify(conn, &notes)?;
    Ok(decided
        .iter()
        .map(|d| {
            if !created.contains(&d.order.order_id) {
                return DecidedOutcome::Exists;
            }
            DecidedOutcome::Written(
                d.holds
                    .iter()
                    .filter_map(|(sku, _)| after.get(sku.as_str()).map(|l| (sku.clone(), *l)))
                    .collect(),
            )
        })
        .collect())
}

/// The database refused stock for what memory believed (a `CHECK` on `stock`, or a reference
/// already in its change log).
pub fn is_stock_refusal(e: &DbError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        DbError::Query(Error::DatabaseError(DatabaseErrorKind::CheckViolation, info)) => {
            info.table_name() == Some("stock")
                || info
                    .constraint_name()
                    .is_some_and(|c| c.starts_with("stock_"))
        }
        DbError::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info)) => {
            info.table_name() == Some("stock_events")
                || info
                    .constraint_name()
                    .is_some_and(|c| c.starts_with("stock_events"))
        }
        _ => false,
    }
}
