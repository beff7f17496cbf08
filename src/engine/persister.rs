//! The write-behind persister: the shared [`crate::batch`] writer with a sink that takes
//! committed-in-memory changes from the SKU actors, coalesces them per SKU, and writes each
//! batch in one transaction.
//!
//! - Bounded queue: actors submit without blocking and refuse the operation when it is full, so
//!   memory never runs more than `queue_capacity` changes ahead of disk.
//! - Batches are bounded by size (`max_batch`) and by time (`linger`).
//! - A batch that fails because the database is away is retried, in order, until it goes
//!   through: nothing is reported durable before it is committed.
//! - A row the store refuses as a conflict (a `CHECK`, a duplicate reference) resolves its
//!   tickets as `Conflict`; a row it refuses for a data reason resolves them as `Refused` (a
//!   permanent error for that caller alone). Either way the SKU's actor resyncs from the store.
//! - Readers (the stock stream, the availability board) hear of a change only once it is
//!   committed: a refused change is never shown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::feed::{StockEvent, StockFeed};
use super::store::{EventRecord, RowOutcome, RowWrite, Store, StoreError};
use crate::batch::{
    BatchConfig, BatchStats, BatchWriter, Refusal, Sink, SinkError, SubmitError, Ticket, WriteError,
};
use crate::domain::{Ledger, Sku, StockChange};

/// The outcome of waiting for a change to be durable.
pub type Durability = Result<(), DurabilityError>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurabilityError {
    /// The store refused the change: memory was wrong. The SKU is being reloaded; the change
    /// did not happen.
    #[error("the store refused the change (stock conflict)")]
    Conflict,
    /// The store refused the change for a data reason; retrying cannot help. The SKU is being
    /// reloaded; the change did not happen.
    #[error("the database refused the change: {0}")]
    Refused(String),
    /// The persister stopped before the change was written; it may not have happened.
    #[error("the persister stopped before the change was written")]
    Stopped,
    /// Another instance took over: the change was not written, and this instance stops acting.
    #[error("fenced: another instance is active")]
    Fenced,
}

/// Persister tuning.
#[derive(Debug, Clone)]
pub struct PersisterConfig {
    pub max_batch: usize,
    pub linger: Duration,
    pub queue_capacity: usize,
}

impl Default for PersisterConfig {
    fn default() -> Self {
        PersisterConfig {
            max_batch: 2048,
            linger: Duration::from_millis(1),
            queue_capacity: 65_536,
        }
    }
}

/// A change decided by an actor, on its way to the store.
pub(crate) struct Change {
    pub sku: Sku,
    pub generation: u64,
    pub change: StockChange,
    pub reason: Option<String>,
    pub reference: Option<String>,
    pub change_id: uuid::Uuid,
}

/// What became of a change the store answered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Applied,
    Conflict,
}

/// The sink's own counters.
#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    conflicts: AtomicU64,
}

/// Counters of the persister, readable from any thread.
#[derive(Debug)]
pub struct PersisterStats {
    counters: Arc<Counters>,
    batch: Arc<BatchStats>,
}

impl PersisterStats {
    /// True while the last write attempt failed on a database error, or the current one has
    /// been waiting on the database for more than a second.
    pub fn is_failing(&self) -> bool {
        self.batch.is_failing()
    }

    /// The shared writer's counters (batches, items, refusals, transient errors, backlog).
    pub fn batches(&self) -> &BatchStats {
        &self.batch
    }

    /// Row writes (one per SKU per batch round).
    pub fn rows(&self) -> u64 {
        self.counters.rows.load(Ordering::Relaxed)
    }

    /// Changes refused as conflicts.
    pub fn conflicts(&self) -> u64 {
        self.counters.conflicts.load(Ordering::Relaxed)
    }
}

/// Resolves once the change it belongs to is committed to the store, or refused.
#[derive(Debug)]
pub struct DurableTicket(Ticket<Written>);

impl DurableTicket {
    pub async fn wait(self) -> Durability {
        match self.0.wait().await {
            Ok(Written::Applied) => Ok(()),
            Ok(Written::Conflict) => Err(DurabilityError::Conflict),
            Err(WriteError::Refused(why)) => Err(DurabilityError::Refused(why)),
            Err(WriteError::Stopped) => Err(DurabilityError::Stopped),
            Err(WriteError::Fenced) => Err(DurabilityError::Fenced),
        }
    }
}

pub(crate) type ConflictHook = Box<dyn Fn(&Sku, u64) + Send>;

/// The sending side, held by every actor.
#[derive(Clone)]
pub(crate) struct PersisterHandle {
    writer: BatchWriter<StockSink>,
    stats: Arc<PersisterStats>,
}

impl PersisterHandle {
    /// Queues a change without blocking. On error nothing was queued.
    pub fn try_submit(&self, change: Change) -> Result<DurableTicket, SubmitError> {
        self.writer.submit(change).map(DurableTicket)
    }

    /// Blocks until everything queued before this call is settled. Blocking: call it from a
    /// blocking thread.
    pub fn flush_blocking(&self) -> Result<(), SubmitError> {
        self.writer.flush_blocking()
    }

    /// Writes what is queued, then stops the thread and waits for it.
    pub fn stop_blocking(&self) {
        self.writer.stop_blocking()
    }

    pub fn stats(&self) -> Arc<PersisterStats> {
        Arc::clone(&self.stats)
    }

    pub fn is_running(&self) -> bool {
        self.stats.batch.is_running()
    }
}

/// Starts the persister thread.
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    config: PersisterConfig,
    feed: StockFeed,
    on_conflict: ConflictHook,
) -> PersisterHandle {
    let counters = Arc::new(Counters::default());
    let sink = StockSink {
        store,
        feed,
        on_conflict,
        counters: Arc::clone(&counters),
    };
    let writer = BatchWriter::spawn(
        sink,
        BatchConfig {
            name: "orderflow-persister",
            max_batch: config.max_batch.max(1),
            linger: config.linger,
            idle_gap: Duration::from_micros(200),
            capacity: config.queue_capacity.max(1),
        },
    );
    let stats = Arc::new(PersisterStats {
        counters,
        batch: writer.stats(),
    });
    PersisterHandle { writer, stats }
}

struct StockSink {
    store: Arc<dyn Store>,
    feed: StockFeed,
    on_conflict: ConflictHook,
    counters: Arc<Counters>,
}

impl Sink for StockSink {
    type Item = Change;
    type Output = Written;

    fn write(
        &mut self,
        items: &[Change],
        attempt: u32,
    ) -> Result<Vec<Result<Written, Refusal>>, SinkError> {
        let mut results: Vec<Option<Result<Written, Refusal>>> = vec![None; items.len()];
        let mut committed: Vec<(Sku, Vec<EventRecord>)> = Vec::new();
        for round in coalesce(items) {
            let rows: Vec<RowWrite> = round.iter().map(|g| g.row.clone()).collect();
            let outcomes = match self.store.write_batch(&rows, attempt > 0) {
                Ok(outcomes) if outcomes.len() == rows.len() => outcomes,
                Ok(_) => {
                    vec![RowOutcome::Refused("internal: unmatched row outcomes".into()); rows.len()]
                }
                Err(StoreError::Fenced) => return Err(SinkError::Fenced),
                Err(e) if e.is_transient() => return Err(SinkError::Transient(Box::new(e))),
                Err(e) => vec![RowOutcome::Refused(e.to_string()); rows.len()],
            };
            self.counters
                .rows
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            for (group, outcome) in round.into_iter().zip(outcomes) {
                let result = match outcome {
                    RowOutcome::Applied => {
                        committed.push((group.row.sku.clone(), group.row.events));
                        Ok(Written::Applied)
                    }
                    RowOutcome::Conflict => {
                        self.counters
                            .conflicts
                            .fetch_add(group.members.len() as u64, Ordering::Relaxed);
                        tracing::warn!(sku = %group.row.sku, changes = group.members.len(), "store refused a stock write; resyncing the sku");
                        (self.on_conflict)(&group.row.sku, group.generation);
                        Ok(Written::Conflict)
                    }
                    RowOutcome::Refused(why) => {
                        tracing::error!(sku = %group.row.sku, changes = group.members.len(), reason = %why, "the database refused a stock write; resyncing the sku");
                        (self.on_conflict)(&group.row.sku, group.generation);
                        Err(Refusal(why))
                    }
                };
                for i in group.members {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(result.clone());
                    }
                }
            }
        }
        // Only now, with every round committed, do readers hear of the changes.
        for (sku, events) in committed {
            let cell = self.feed.board.cell(&sku);
            for e in events {
                let ledger = Ledger::new(e.on_hand, e.reserved, e.version);
                cell.store(ledger.available(), Ordering::Relaxed);
                // No subscriber is not an error; a slow one is told it lagged, on its side.
                let _ = self
                    .feed
                    .events
                    .send(StockEvent::new(sku.clone(), e.kind, ledger));
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Refusal("internal: change not in any round".into()))))
            .collect())
    }
}

/// The changes of one SKU inside one batch, coalesced into a single row write.
struct Group {
    row: RowWrite,
    /// The newest actor generation among its changes (a conflict resyncs the SKU unless it
    /// resynced since).
    generation: u64,
    /// Indexes of the changes it carries.
    members: Vec<usize>,
}

/// Coalesces changes per SKU, in the order they were decided: one row write per SKU per batch,
/// however many changes it carries. Changes are deltas on what the database holds, so changes
/// decided in different actor generations (a resync between them) coalesce too.
fn coalesce(changes: &[Change]) -> Vec<Vec<Group>> {
    use std::collections::HashMap;
    let mut round: Vec<Group> = Vec::new();
    let mut open: HashMap<&Sku, usize> = HashMap::new();
    for (index, c) in changes.iter().enumerate() {
        let after = c.change.after;
        let event = EventRecord {
            version: after.version,
            kind: c.change.op.kind(),
            quantity: c.change.op.quantity(),
            on_hand: after.level.on_hand,
            reserved: after.level.reserved,
            reason: c.reason.clone(),
            reference: c.reference.clone(),
            change_id: c.change_id,
        };
        if let Some(group) = open.get(&c.sku).and_then(|&i| round.get_mut(i)) {
            group.row.on_hand = group.row.on_hand.then(c.change.on_hand);
            group.row.reserved_delta += c.change.reserved_delta;
            group.row.events.push(event);
            group.generation = group.generation.max(c.generation);
            group.members.push(index);
            continue;
        }
        open.insert(&c.sku, round.len());
        round.push(Group {
            row: RowWrite {
                sku: c.sku.clone(),
                on_hand: c.change.on_hand,
                reserved_delta: c.change.reserved_delta,
                events: vec![event],
            },
            generation: c.generation,
            members: vec![index],
        });
    }
    if round.is_empty() {
        Vec::new()
    } else {
        // By SKU in order: every writer of `stock` updates a batch's rows in the same order.
        round.sort_by(|a, b| a.row.sku.cmp(&b.row.sku));
        vec![round]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Ledger, OnHandEffect, StockOp};

    fn change(sku: &str, ledger: &mut Ledger, op: StockOp, generation: u64) -> Change {
        let c = ledger.decide(op).unwrap();
        *ledger = c.after;
        Change {
            sku: Sku::parse(sku).unwrap(),
            generation,
            change: c,
            reason: None,
            reference: None,
            change_id: super::super::ids::change_id(),
        }
    }

    #[test]
    fn coalesces_a_chain_into_one_row() {
        let mut a = Ledger::new(10, 0, 3);
        let mut b = Ledger::new(5, 0, 0);
        let changes = vec![
            change("A", &mut a, StockOp::Reserve(2), 0),
            change("B", &mut b, StockOp::Reserve(1), 0),
            change("A", &mut a, StockOp::Adjust(5), 0),
            change("A", &mut a, StockOp::CommitSale(1), 0),
        ];
        let rounds = coalesce(&changes);
        assert_eq!(rounds.len(), 1);
        let row_a = &rounds[0][0].row;
        assert_eq!(row_a.on_hand, OnHandEffect::Delta(4));
        assert_eq!(row_a.reserved_delta, 1);
        assert_eq!(row_a.events.len(), 3);
        assert_eq!(rounds[0][0].members, vec![0, 2, 3]);
        assert_eq!(rounds[0][1].row.sku.as_str(), "B");
        // Rows in SKU order, whatever order their changes came in (every writer of `stock`
        // locks a batch's rows in the same order).
        let mut c = Ledger::new(5, 0, 0);
        let later = vec![
            change("C", &mut c, StockOp::Reserve(1), 0),
            change("B", &mut b, StockOp::Reserve(1), 0),
        ];
        let rounds = coalesce(&later);
        let skus: Vec<&str> = rounds[0].iter().map(|g| g.row.sku.as_str()).collect();
        assert_eq!(skus, ["B", "C"]);
    }

    #[test]
    fn changes_of_two_generations_coalesce_into_one_delta() {
        let mut stale = Ledger::new(10, 0, 3);
        let mut fresh = Ledger::new(10, 0, 3);
        let changes = vec![
            change("A", &mut stale, StockOp::Reserve(2), 0),
            change("A", &mut fresh, StockOp::Reserve(1), 1),
        ];
        let rounds = coalesce(&changes);
        assert_eq!(rounds.len(), 1);
        assert_eq!(rounds[0][0].row.reserved_delta, 3);
        assert_eq!(rounds[0][0].row.events.len(), 2);
        assert_eq!(rounds[0][0].generation, 1);
    }
}
