//! What the engine needs from durable storage, and an in-memory implementation for benchmarks
//! and unit tests. The Postgres implementation lives in `crate::persistence`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::{Ledger, OnHandEffect, Sku};

/// A failure talking to the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store is away (connection-class): the same call can succeed later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The store refused the call for what it carries: it will refuse it again.
    #[error("the database refused the request: {0}")]
    Refused(String),
    /// This instance no longer holds the lease: nothing was written.
    #[error("fenced: another instance is active")]
    Fenced,
}

impl StoreError {
    /// A blocking store call that did not return: a panic is a bug the same call meets again
    /// (refused, never retried); a task cancelled at shutdown is the store going away.
    pub fn from_join(e: tokio::task::JoinError) -> StoreError {
        if e.is_panic() {
            StoreError::Refused(format!(
                "panicked: {}",
                crate::blocking::panic_message(e.into_panic().as_ref())
            ))
        } else {
            StoreError::Unavailable(e.to_string())
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// One recorded stock change, stored in the change log with the row write it belongs to.
///
/// `version`, `on_hand` and `reserved` are memory's view when the change was decided; the
/// database writes the log row with its own (the row's version and numbers as each change left
/// them), which equal memory's whenever no other writer moved the row in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub version: i64,
    pub kind: &'static str,
    pub quantity: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub reason: Option<String>,
    /// What caused it (a message id), unique per SKU: a redelivery cannot apply it twice.
    pub reference: Option<String>,
    /// Unique to this change: a retried batch recognises its own earlier commit by it.
    pub change_id: uuid::Uuid,
}

impl EventRecord {
    /// What the change does to the row: its effect on `on_hand` and on `reserved`.
    pub fn effect(&self) -> (OnHandEffect, i64) {
        let q = self.quantity;
        match self.kind {
            "reserve" => (OnHandEffect::Delta(0), q),
            "release" => (OnHandEffect::Delta(0), -q),
            "commit_sale" => (OnHandEffect::Delta(-q), -q),
            "set_on_hand" => (OnHandEffect::Set(q), 0),
            "adjust" => (OnHandEffect::Delta(q), 0),
            _ => (OnHandEffect::Delta(0), 0),
        }
    }
}

/// All changes to one SKU inside a batch, coalesced into one row write: deltas (and at most a
/// warehouse count's absolute `on_hand`) that the database applies to what it holds, guarded by
/// the table's `CHECK`s (stock never negative, never more reserved than on hand). The version
/// moves by one per change. Deltas commute, so two writers (the persister, and the order writer
/// committing held units with their orders) may each write a SKU without knowing of the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowWrite {
    pub sku: Sku,
    pub on_hand: OnHandEffect,
    pub reserved_delta: i64,
    pub events: Vec<EventRecord>,
}

/// What became of one row write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    Applied,
    /// Memory was wrong: a `CHECK` constraint failed (stock would go negative, or below what is
    /// reserved), or the change's reference is already recorded (a duplicate).
    Conflict,
    /// The store refused the row for a data reason; retrying cannot help.
    Refused(String),
}

/// Durable storage of SKU ledgers.
///
/// Every method blocks; the engine calls them on blocking threads only.
pub trait Store: Send + Sync + 'static {
    /// The ledger of one SKU, `None` when the SKU does not exist.
    fn load(&self, sku: &Sku) -> Result<Option<Ledger>, StoreError>;
    /// Every SKU's ledger, to rebuild memory on start.
    fn load_all(&self) -> Result<Vec<(Sku, Ledger)>, StoreError>;
    /// Writes the rows (each SKU at most once) in ONE transaction: a row whose constraints fail,
    /// or that the database refuses for a data reason, is refused alone and the others commit.
    /// `Err` only when the store is away ([`StoreError::Unavailable`]): then nothing is known
    /// and the batch is retried. `retry` says that an earlier attempt of this batch failed in a
    /// way that may have committed it, so a row whose last change is already in the change log
    /// (by change id) is not written again.
    fn write_batch(&self, rows: &[RowWrite], retry: bool) -> Result<Vec<RowOutcome>, StoreError>;
    /// Whether a change with this reference was already committed for this SKU.
    fn change_applied(&self, sku: &Sku, reference: &str) -> Result<bool, StoreError>;
}

/// A store in memory, with the same guards as the database. For benchmarks and tests.
#[derive(Debug, Default)]
pub struct MemStore {
    rows: Mutex<HashMap<Sku, Ledger>>,
    references: Mutex<std::collections::HashSet<(Sku, String)>>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Creates or replaces a SKU's stored ledger.
    pub fn put(&self, sku: Sku, ledger: Ledger) {
        self.lock().insert(sku, ledger);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Sku, Ledger>> {
        match self.rows.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Store for MemStore {
    fn load(&self, sku: &Sku) -> Result<Option<Ledger>, StoreError> {
        Ok(self.lock().get(sku).copied())
    }

    fn load_all(&self) -> Result<Vec<(Sku, Ledger)>, StoreError> {
        Ok(self.lock().iter().map(|(s, l)| (s.clone(), *l)).collect())
    }

    fn change_applied(&self, sku: &Sku, reference: &str) -> Result<bool, StoreError> {
        let refs = match self.references.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        Ok(refs.contains(&(sku.clone(), reference.to_owned())))
    }

    fn write_batch(&self, rows: &[RowWrite], _retry: bool) -> Result<Vec<RowOutcome>, StoreError> {
        let mut stored = self.lock();
        Ok(rows
            .iter()
            .map(|row| {
                let Some(current) = stored.get_mut(&row.sku) else {
                    return RowOutcome::Conflict;
                };
                let on_hand = row.on_hand.apply_to(current.level.on_hand);
                let reserved = current.level.reserved + row.reserved_delta;
                if on_hand < 0 || reserved < 0 || reserved > on_hand {
                    return RowOutcome::Conflict;
                }
                let mut refs = match self.references.lock() {
                    Ok(r) => r,
                    Err(p) => p.into_inner(),
                };
                let new_refs: Vec<(Sku, String)> = row
                    .events
                    .iter()
                    .filter_map(|e| e.reference.clone())
                    .map(|r| (row.sku.clone(), r))
                    .collect();
                if new_refs.iter().any(|r| refs.contains(r)) {
                    return RowOutcome::Conflict;
                }
                refs.extend(new_refs);
                *current =
                    Ledger::new(on_hand, reserved, current.version + row.events.len() as i64);
                RowOutcome::Applied
            })
            .collect())
    }
}
