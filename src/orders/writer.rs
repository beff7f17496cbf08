//! The order writer: the shared [`crate::batch`] writer with a sink that records idempotency
//! keys, order creations, status changes (with their history rows and notifications) and
//! settlements, one transaction per batch. A caller awaits its ticket to know the write is
//! durable.
//!
//! The batch is a bulkhead (DESIGN.md rule 7): the whole batch goes in a handful of statements;
//! if the database refuses it for what one row carries, every item is written again under a
//! savepoint of its own, so only the offender fails (with a permanent error) and the rest
//! commits. Only connection-class errors are retried, by the writer, with backoff.

use std::time::Duration;

use diesel::Connection;
use uuid::Uuid;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::store::{OrderStore, Read};
use crate::batch::{
    BatchConfig, BatchStats, BatchWriter, Refusal, Sink, SinkError, SubmitError, Ticket,
};
use crate::domain::order::Order;
use crate::lease::FenceGuard;
use crate::persistence::orders::{
    self, DecidedOutcome, DecidedRow, KeyRow, KeyState, NewOrderRow, RecordedKey, TransitionRow,
};
use crate::persistence::{DbError, DbPool};

/// One write of the order pipeline.
#[derive(Debug, Clone)]
pub enum OrderWrite {
    /// Record an idempotency key before its checkout is published.
    Key(KeyRow),
    /// What is recorded for a customer's key, if anything (a read, batched with the writes;
    /// the row's `order_id` only tells the lookups apart, its fingerprint is not used).
    KeyLookup(KeyRow),
    /// Let go of the key recorded for this order id, unless its order exists (intake refused
    /// the checkout after recording its key, before publishing it).
    ForgetKey(Uuid),
    /// Create an order unless it exists.
    Create(Box<NewOrderRow>),
    /// Move an order, if it is still in `from_status`.
    Transition(Box<TransitionRow>),
    /// Every reservation of this order is released.
    Settle(Uuid),
    /// An order written once, decided, with the units it holds (the one write).
    Decided(Box<DecidedRow>),
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderWritten {
    Key(KeyState),
    KeyFound(Option<RecordedKey>),
    KeyForgotten,
    /// `true` when the order was created now (not found already there).
    Created(bool),
    /// `true` when the order moved now (it was still in `from_status`).
    Moved(bool),
    Settled,
    Decided(DecidedOutcome),
}

pub type OrderWriter = BatchWriter<OrderSink>;

/// The order records in PostgreSQL: writes through the batching order writer, reads on the
/// pool.
pub struct PgOrderStore {
    writer: OrderWriter,
    pool: DbPool,
}

impl PgOrderStore {
    pub fn new(writer: OrderWriter, pool: DbPool) -> PgOrderStore {
        PgOrderStore { writer, pool }
    }
}

impl OrderStore for PgOrderStore {
    fn submit(&self, item: OrderWrite) -> Result<Ticket<OrderWritten>, SubmitError> {
        self.writer.submit(item)
    }

    fn get(&self, order_id: Uuid) -> Read<'_, Option<Order>> {
        Box::pin(super::queries::get(&self.pool, order_id))
    }

    fn stats(&self) -> Arc<BatchStats> {
        self.writer.stats()
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let writer = self.writer.clone();
        Box::pin(async move {
            let _ = crate::blocking::run(move || writer.stop_blocking()).await;
        })
    }
}

/// Starts the order writer thread; with a fence, every batch checks the lease first.
pub fn spawn(pool: DbPool, capacity: usize, fence: Option<FenceGuard>) -> OrderWriter {
    BatchWriter::spawn(
        OrderSink {
            pool,
            fence,
            kept: None,
        },
        BatchConfig {
            name: "orderflow-order-writer",
            max_batch: 1024,
            linger: Duration::from_millis(2),
            idle_gap: Duration::from_micros(300),
            capacity: capacity.max(16),
        },
    )
}

/// Writes order batches to Postgres.
pub struct OrderSink {
    pool: DbPool,
    fence: Option<FenceGuard>,
    /// The connection of the last batch that went through, kept for the next (no pool
    /// check-out query before each batch); dropped on any error.
    kept: Option<PooledConn>,
}

type PooledConn =
    diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<diesel::PgConnection>>;

type Results = Vec<Result<OrderWritten, Refusal>>;

impl Sink for OrderSink {
    type Item = OrderWrite;
    type Output = OrderWritten;

    fn write(&mut self, items: &[OrderWrite], attempt: u32) -> Result<Results, SinkError> {
        let mut conn = match self.kept.take() {
            Some(conn) => conn,
            None => self
                .pool
                .get()
                .map_err(|e| SinkError::Transient(Box::new(DbError::from(e))))?,
        };
        let mut written = self.write_on(&mut conn, items);
        if written.is_ok() {
            self.kept = Some(conn);
        }
        if let (true, Ok(results)) = (attempt > 0, written.as_mut()) {
            // An earlier attempt may have committed before its answer was lost: an order found
            // there may be this write's own.
            for result in results.iter_mut() {
                if let Ok(OrderWritten::Decided(outcome @ DecidedOutcome::Exists)) = result {
                    *outcome = DecidedOutcome::Unsure;
                }
            }
        }
        written
    }
}

impl OrderSink {
    /// One batch on `conn`, in one transaction that checks the fence first.
    fn write_on(
        &self,
        conn: &mut diesel::PgConnection,
        items: &[OrderWrite],
    ) -> Result<Results, SinkError> {
        let fenced = std::cell::Cell::new(false);
        // First, in the same transaction: is this instance still the one that may write?
        let check = |conn: &mut diesel::PgConnection| -> Result<(), DbError> {
            match &self.fence {
                Some(guard) if !guard.check(conn)? => {
                    fenced.set(true);
                    Err(DbError::Query(diesel::result::Error::RollbackTransaction))
                }
                _ => Ok(()),
            }
        };
        let first = conn.transaction(|conn| {
            check(conn)?;
            write_rounds(conn, items)
        });
        match first {
            Ok(results) => Ok(results.into_iter().map(Ok).collect()),
            Err(_) if fenced.get() => Err(SinkError::Fenced),
            Err(e) if e.is_transient() => {
                if let DbError::Query(q) = &e {
                    crate::persistence::forget_statements_if_stale(conn, q);
                }
                Err(SinkError::Transient(Box::new(e)))
            }
            // One row (or more) the database will not take: isolate it.
            Err(_) => {
                let each = conn.transaction(|conn| {
                    check(conn)?;
                    write_each(conn, items)
                });
                match each {
                    Ok(results) => Ok(results),
                    Err(_) if fenced.get() => Err(SinkError::Fenced),
                    Err(e) => Err(SinkError::Transient(Box::new(e))),
                }
            }
        }
    }
}

/// The whole batch, in rounds: one statement per kind of write per round, and an order at most
/// once per round — two writes for one order (a timed-out caller's and a retry's) are applied
/// one after the other, each guarded by the state the first left, never merged.
fn write_rounds(
    conn: &mut diesel::PgConnection,
    items: &[OrderWrite],
) -> Result<Vec<OrderWritten>, DbError> {
    use std::collections::HashMap;
    let mut round_of: Vec<usize> = Vec::with_capacity(items.len());
    let mut next_round: HashMap<Uuid, usize> = HashMap::new();
    for item in items {
        let slot = next_round.entry(kind(item).1).or_insert(0);
        round_of.push(*slot);
        *slot += 1;
    }
    let rounds = round_of.iter().copied().max().map_or(0, |r| r + 1);
    if rounds <= 1 {
        return write_all(conn, items);
    }
    let mut results: Vec<Option<OrderWritten>> = vec![None; items.len()];
    for round in 0..rounds {
        let (slots, batch): (Vec<&mut Option<OrderWritten>>, Vec<OrderWrite>) = results
            .iter_mut()
            .zip(items.iter().zip(&round_of))
            .filter(|(_, (_, r))| **r == round)
            .map(|(slot, (item, _))| (slot, item.clone()))
            .unzip();
        for (slot, written) in slots.into_iter().zip(write_all(conn, &batch)?) {
            *slot = Some(written);
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or(OrderWritten::Settled))
        .collect())
}

/// The whole batch with one statement per kind of write.
fn write_all(
    conn: &mut diesel::PgConnection,
    items: &[OrderWrite],
) -> Result<Vec<OrderWritten>, DbError> {
    let mut keys = Vec::new();
    let mut lookups = Vec::new();
    let mut forgets = Vec::new();
    let mut creates = Vec::new();
    let mut transitions = Vec::new();
    let mut settles = Vec::new();
    let mut decided = Vec::new();
    for item in items {
        match item {
            OrderWrite::Key(k) => keys.push(k.clone()),
            OrderWrite::KeyLookup(k) => lookups.push(k.clone()),
            OrderWrite::ForgetKey(id) => forgets.push(*id),
            OrderWrite::Create(c) => creates.push(NewOrderRow::clone(c)),
            OrderWrite::Transition(t) => transitions.push(TransitionRow::clone(t)),
            OrderWrite::Settle(id) => settles.push(*id),
            OrderWrite::Decided(d) => decided.push(d.as_ref()),
        }
    }
    // A key let go before any key is recorded: a retry that reuses it in the same batch (its
    // refused request stopped waiting for the forget) records it anew, never sees it vanish.
    orders::forget_unused_keys(conn, &forgets)?;
    let mut key_states = orders::record_keys(conn, &keys)?.into_iter();
    let created = orders::create_orders(conn, &creates)?;
    let mut decisions = orders::write_decided(conn, &decided)?.into_iter();
    let moved = orders::apply_transitions(conn, &transitions)?;
    orders::settle(conn, &settles)?;
    // Last: a lookup sees what its own batch wrote (an order decided beside it).
    let mut found = orders::recorded_keys(conn, &lookups)?;
    Ok(items
        .iter()
        .map(|item| match item {
            OrderWrite::Key(_) => OrderWritten::Key(key_states.next().unwrap_or(KeyState::New)),
            OrderWrite::KeyLookup(k) => OrderWritten::KeyFound(found.remove(&k.order_id)),
            OrderWrite::ForgetKey(_) => OrderWritten::KeyForgotten,
            OrderWrite::Create(c) => OrderWritten::Created(created.contains(&c.order_id)),
            OrderWrite::Transition(t) => OrderWritten::Moved(moved.contains(&t.order_id)),
            OrderWrite::Settle(_) => OrderWritten::Settled,
            OrderWrite::Decided(_) => {
                OrderWritten::Decided(decisions.next().unwrap_or(DecidedOutcome::StockRefused))
            }
        })
        .collect())
}

/// The bulkhead: every item under its own savepoint. `Err` only for a transient error.
fn write_each(conn: &mut diesel::PgConnection, items: &[OrderWrite]) -> Result<Results, DbError> {
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let one = std::slice::from_ref(item);
        match conn.transaction(|conn| write_all(conn, one)) {
            Ok(mut written) => results.push(
                written
                    .pop()
                    .ok_or_else(|| Refusal("internal: no result".into())),
            ),
            Err(e) if e.is_transient() => return Err(e),
            // Memory believed in stock the database does not hold: the order is decided again.
            Err(e) if matches!(item, OrderWrite::Decided(_)) && orders::is_stock_refusal(&e) => {
                tracing::warn!(error = %e, order_id = %kind(item).1, "the database refused an order's held units");
                results.push(Ok(OrderWritten::Decided(DecidedOutcome::StockRefused)));
            }
            Err(e) => {
                tracing::error!(error = %e, write = ?kind(item), "the database refused an order write");
                results.push(Err(Refusal(e.to_string())));
            }
        }
    }
    Ok(results)
}

fn kind(item: &OrderWrite) -> (&'static str, Uuid) {
    match item {
        OrderWrite::Key(k) => ("key", k.order_id),
        OrderWrite::KeyLookup(k) => ("key lookup", k.order_id),
        OrderWrite::ForgetKey(id) => ("forget key", *id),
        OrderWrite::Create(c) => ("create", c.order_id),
        OrderWrite::Transition(t) => ("transition", t.order_id),
        OrderWrite::Settle(id) => ("settle", *id),
        OrderWrite::Decided(d) => ("decided", d.order.order_id),
    }
}
