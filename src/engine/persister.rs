//! The write-behind persister: one OS thread that takes committed-in-memory changes from the SKU
//! actors, coalesces them per SKU, and writes each batch in one transaction.
//!
//! - Bounded queue: actors `try_send` and refuse the operation when it is full, so memory never
//!   runs more than `queue_capacity` changes ahead of disk.
//! - Batches are bounded by size (`max_batch`) and by time (`linger`: how long the first change of
//!   a batch may wait for company).
//! - A batch that fails on a database error is retried, in order, until it goes through: nothing
//!   is reported durable before it is committed, and nothing behind it overtakes it.
//! - A row the store refuses (version or `CHECK`) resolves its tickets as `Conflict` and asks the
//!   SKU's actor to resync from the store.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::store::{EventRecord, RowOutcome, RowWrite, Store};
use crate::domain::{Sku, StockChange};

/// A batch closes early when no change arrives for this long, even before `linger` is up.
const IDLE_GAP: Duration = Duration::from_micros(200);

/// The outcome of waiting for a change to be durable.
pub type Durability = Result<(), DurabilityError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurabilityError {
    /// The store refused the change: memory was wrong. The SKU is being reloaded; the change
    /// did not happen.
    #[error("the store refused the change (stock conflict)")]
    Conflict,
    /// The persister stopped before the change was written; it may not have happened.
    #[error("the persister stopped before the change was written")]
    Stopped,
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
    pub ticket: oneshot::Sender<Durability>,
}

enum Msg {
    Change(Change),
    Flush(mpsc::Sender<()>),
    Stop,
}

/// Counters, readable from any thread.
#[derive(Debug, Default)]
pub struct PersisterStats {
    pub batches: AtomicU64,
    pub rows: AtomicU64,
    pub changes: AtomicU64,
    pub conflicts: AtomicU64,
    pub db_errors: AtomicU64,
    pub queued: AtomicI64,
    failing: AtomicBool,
    running: AtomicBool,
    /// Wall-clock milliseconds when the write under way began; 0 when idle.
    write_started_ms: AtomicU64,
}

/// A write taking longer than this counts as failing (the database is not answering).
const STUCK_AFTER_MS: u64 = 1_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl PersisterStats {
    /// True while the last write attempt failed on a database error, or the current one has
    /// been waiting on the database for more than a second.
    pub fn is_failing(&self) -> bool {
        let started = self.write_started_ms.load(Ordering::Relaxed);
        self.failing.load(Ordering::Relaxed)
            || (started != 0 && now_ms().saturating_sub(started) > STUCK_AFTER_MS)
    }
}

/// Why a change could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubmitError {
    Full,
    Stopped,
}

/// The sending side, held by every actor.
#[derive(Clone)]
pub(crate) struct PersisterHandle {
    tx: SyncSender<Msg>,
    stats: Arc<PersisterStats>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

pub(crate) type ConflictHook = Box<dyn Fn(&Sku, u64) + Send>;

impl PersisterHandle {
    /// Queues a change without blocking. On error nothing was queued.
    pub fn try_submit(&self, change: Change) -> Result<(), SubmitError> {
        match self.tx.try_send(Msg::Change(change)) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// Blocks until everything queued before this call is settled. Blocking: call it from a
    /// blocking thread.
    pub fn flush_blocking(&self) -> Result<(), SubmitError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| SubmitError::Stopped)?;
        rx.recv().map_err(|_| SubmitError::Stopped)
    }

    /// Writes what is queued, then stops the thread and waits for it.
    pub fn stop_blocking(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = match self.thread.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    pub fn stats(&self) -> Arc<PersisterStats> {
        Arc::clone(&self.stats)
    }

    pub fn is_running(&self) -> bool {
        self.stats.running.load(Ordering::Relaxed)
    }
}

/// Starts the persister thread.
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    config: PersisterConfig,
    on_conflict: ConflictHook,
) -> PersisterHandle {
    let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
    let stats = Arc::new(PersisterStats::default());
    stats.running.store(true, Ordering::Relaxed);
    let thread_stats = Arc::clone(&stats);
    let thread = std::thread::Builder::new()
        .name("orderflow-persister".into())
        .spawn(move || {
            let mut persister = Persister {
                store,
                config,
                on_conflict,
                stats: Arc::clone(&thread_stats),
            };
            persister.run(rx);
            thread_stats.running.store(false, Ordering::Relaxed);
        });
    let thread = match thread {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::error!(error = %e, "could not start the persister thread");
            stats.running.store(false, Ordering::Relaxed);
            None
        }
    };
    PersisterHandle {
        tx,
        stats,
        thread: Arc::new(std::sync::Mutex::new(thread)),
    }
}

struct Persister {
    store: Arc<dyn Store>,
    config: PersisterConfig,
    on_conflict: ConflictHook,
    stats: Arc<PersisterStats>,
}

impl Persister {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        let mut stopping = false;
        while !stopping {
            let Ok(first) = rx.recv() else { break };
            let mut changes = Vec::new();
            let mut flushes = Vec::new();
            let mut take = |msg: Msg, changes: &mut Vec<Change>| match msg {
                Msg::Change(c) => changes.push(c),
                Msg::Flush(tx) => flushes.push(tx),
                Msg::Stop => stopping = true,
            };
            take(first, &mut changes);
            let deadline = Instant::now() + self.config.linger;
            while changes.len() < self.config.max_batch {
                let next = match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Disconnected) => None,
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if changes.is_empty() || now >= deadline {
                            None
                        } else {
                            // Wait for company only while it keeps coming: a pause of
                            // `IDLE_GAP` means the burst is over and the batch should go.
                            rx.recv_timeout((deadline - now).min(IDLE_GAP)).ok()
                        }
                    }
                };
                match next {
                    Some(msg) => take(msg, &mut changes),
                    None => break,
                }
            }
            let n = changes.len() as i64;
            if n > 0 {
                self.stats
                    .write_started_ms
                    .store(now_ms(), Ordering::Relaxed);
                self.write(changes, stopping);
                self.stats.write_started_ms.store(0, Ordering::Relaxed);
                self.stats.queued.fetch_sub(n, Ordering::Relaxed);
            }
            for flush in flushes {
                let _ = flush.send(());
            }
        }
    }

    /// Writes a batch: splits it into rounds in which each SKU appears once with an unbroken
    /// version chain, writes each round in one transaction, and settles every ticket.
    fn write(&mut self, changes: Vec<Change>, stopping: bool) {
        for round in coalesce(changes) {
            let rows: Vec<RowWrite> = round.iter().map(|g| g.row.clone()).collect();
            let outcomes = self.write_with_retry(&rows, stopping);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .rows
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            for (group, outcome) in round.into_iter().zip(outcomes) {
                let n = group.tickets.len() as u64;
                self.stats.changes.fetch_add(n, Ordering::Relaxed);
                let result = match outcome {
                    Some(RowOutcome::Applied) => Ok(()),
                    Some(RowOutcome::Conflict) => {
                        self.stats.conflicts.fetch_add(n, Ordering::Relaxed);
                        tracing::warn!(sku = %group.row.sku, changes = n, "store refused a stock write; resyncing the sku");
                        (self.on_conflict)(&group.row.sku, group.generation);
                        Err(DurabilityError::Conflict)
                    }
                    None => Err(DurabilityError::Stopped),
                };
                for ticket in group.tickets {
                    let _ = ticket.send(result);
                }
            }
        }
    }

    /// Retries on database errors with a capped backoff. Gives up (`None` outcomes) only when
    /// stopping and the database stays away.
    fn write_with_retry(&mut self, rows: &[RowWrite], stopping: bool) -> Vec<Option<RowOutcome>> {
        let mut attempt: u32 = 0;
        loop {
            match self.store.write_batch(rows, attempt > 0) {
                Ok(outcomes) if outcomes.len() == rows.len() => {
                    self.stats.failing.store(false, Ordering::Relaxed);
                    return outcomes.into_iter().map(Some).collect();
                }
                Ok(outcomes) => {
                    tracing::error!(
                        rows = rows.len(),
                        outcomes = outcomes.len(),
                        "store answered a batch with the wrong number of outcomes"
                    );
                    self.stats.failing.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                    self.stats.failing.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, attempt, rows = rows.len(), "write-behind batch failed; retrying");
                }
            }
            attempt = attempt.saturating_add(1);
            if stopping && attempt >= 5 {
                tracing::error!(
                    rows = rows.len(),
                    "giving up on a batch at shutdown; it was never reported durable"
                );
                return vec![None; rows.len()];
            }
            let backoff = Duration::from_millis(50u64.saturating_mul(1 << attempt.min(5)));
            std::thread::sleep(backoff.min(Duration::from_secs(2)));
        }
    }
}

/// The changes of one SKU inside one round, coalesced into a single row write.
struct Group {
    row: RowWrite,
    generation: u64,
    tickets: Vec<oneshot::Sender<Durability>>,
}

/// Coalesces changes per SKU. A SKU's changes chain when each was decided on the version the
/// previous one produced (and in the same actor generation); a break in the chain (a resync
/// between them) starts a new group in the next round, so one round never writes a row twice.
fn coalesce(changes: Vec<Change>) -> Vec<Vec<Group>> {
    use std::collections::HashMap;
    let mut rounds: Vec<Vec<Group>> = Vec::new();
    // sku -> (round, index) of its open group
    let mut open: HashMap<Sku, (usize, usize)> = HashMap::new();
    for c in changes {
        let after = c.change.after;
        let event = EventRecord {
            version: after.version,
            kind: c.change.op.kind(),
            quantity: c.change.op.quantity(),
            on_hand: after.level.on_hand,
            reserved: after.level.reserved,
            reason: c.reason,
            reference: c.reference,
        };
        if let Some(&(r, i)) = open.get(&c.sku) {
            if let Some(group) = rounds.get_mut(r).and_then(|round| round.get_mut(i)) {
                if group.row.new_version == c.change.version_before
                    && group.generation == c.generation
                {
                    group.row.on_hand = group.row.on_hand.then(c.change.on_hand);
                    group.row.reserved_delta += c.change.reserved_delta;
                    group.row.new_version = after.version;
                    group.row.events.push(event);
                    group.tickets.push(c.ticket);
                    continue;
                }
            }
        }
        let round_index = open.get(&c.sku).map_or(0, |&(r, _)| r + 1);
        if rounds.len() <= round_index {
            rounds.push(Vec::new());
        }
        let group = Group {
            row: RowWrite {
                sku: c.sku.clone(),
                on_hand: c.change.on_hand,
                reserved_delta: c.change.reserved_delta,
                expected_version: c.change.version_before,
                new_version: after.version,
                events: vec![event],
            },
            generation: c.generation,
            tickets: vec![c.ticket],
        };
        if let Some(round) = rounds.get_mut(round_index) {
            open.insert(c.sku, (round_index, round.len()));
            round.push(group);
        }
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Ledger, OnHandEffect, StockOp};

    fn change(
        sku: &str,
        ledger: &mut Ledger,
        op: StockOp,
        generation: u64,
    ) -> (Change, oneshot::Receiver<Durability>) {
        let c = ledger.decide(op).unwrap();
        *ledger = c.after;
        let (tx, rx) = oneshot::channel();
        (
            Change {
                sku: Sku::parse(sku).unwrap(),
                generation,
                change: c,
                reason: None,
                reference: None,
                ticket: tx,
            },
            rx,
        )
    }

    #[test]
    fn coalesces_a_chain_into_one_row() {
        let mut a = Ledger::new(10, 0, 3);
        let mut b = Ledger::new(5, 0, 0);
        let changes = vec![
            change("A", &mut a, StockOp::Reserve(2), 0).0,
            change("B", &mut b, StockOp::Reserve(1), 0).0,
            change("A", &mut a, StockOp::Adjust(5), 0).0,
            change("A", &mut a, StockOp::CommitSale(1), 0).0,
        ];
        let rounds = coalesce(changes);
        assert_eq!(rounds.len(), 1);
        let row_a = &rounds[0][0].row;
        assert_eq!(row_a.expected_version, 3);
        assert_eq!(row_a.new_version, 6);
        assert_eq!(row_a.on_hand, OnHandEffect::Delta(4));
        assert_eq!(row_a.reserved_delta, 1);
        assert_eq!(row_a.events.len(), 3);
        assert_eq!(rounds[0][0].tickets.len(), 3);
        assert_eq!(rounds[0][1].row.sku.as_str(), "B");
    }

    #[test]
    fn a_broken_chain_goes_to_the_next_round() {
        let mut stale = Ledger::new(10, 0, 3);
        let mut fresh = Ledger::new(10, 0, 3);
        let changes = vec![
            change("A", &mut stale, StockOp::Reserve(2), 0).0,
            change("A", &mut fresh, StockOp::Reserve(1), 1).0,
        ];
        let rounds = coalesce(changes);
        assert_eq!(rounds.len(), 2);
        assert_eq!(rounds[1][0].row.expected_version, 3);
        assert_eq!(rounds[1][0].generation, 1);
    }
}
