//! What the SKU actors tell the rest of the service after every change, without waiting for
//! anyone: the live `available` count of each SKU (an atomic cell per SKU, read by the catalog's
//! suggestion engine) and a broadcast of stock events (read by `GET /v1/inventory/stream`).
//!
//! Neither can slow an actor down: a cell is one atomic store, and the broadcast never waits for
//! readers — a reader that falls behind is told how many events it missed (`Lagged`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::domain::{Ledger, Sku};

/// One stock change, as published to readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockEvent {
    pub sku: Sku,
    pub kind: &'static str,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub version: i64,
}

impl StockEvent {
    pub fn new(sku: Sku, kind: &'static str, ledger: Ledger) -> StockEvent {
        StockEvent {
            sku,
            kind,
            on_hand: ledger.level.on_hand,
            reserved: ledger.level.reserved,
            available: ledger.available(),
            version: ledger.version,
        }
    }
}

/// Live availability of every SKU the engine knows, readable from any thread without locks
/// beyond the map's shard lookup.
#[derive(Clone, Default)]
pub struct AvailabilityBoard {
    cells: Arc<DashMap<Sku, Arc<AtomicI64>>>,
}

impl AvailabilityBoard {
    /// The cell of a SKU, created (at 0) if it has none yet. Actors keep theirs.
    pub fn cell(&self, sku: &Sku) -> Arc<AtomicI64> {
        if let Some(cell) = self.cells.get(sku) {
            return Arc::clone(cell.value());
        }
        Arc::clone(self.cells.entry(sku.clone()).or_default().value())
    }

    /// Units available now; 0 for a SKU the engine has not loaded.
    pub fn available(&self, sku: &Sku) -> i64 {
        self.cells
            .get(sku)
            .map_or(0, |c| c.value().load(Ordering::Relaxed))
    }
}

/// The sending side of the stock event broadcast.
#[derive(Clone)]
pub struct StockFeed {
    pub(crate) events: broadcast::Sender<StockEvent>,
    pub(crate) board: AvailabilityBoard,
}

impl StockFeed {
    pub fn new(capacity: usize) -> StockFeed {
        let (events, _) = broadcast::channel(capacity.max(16));
        StockFeed {
            events,
            board: AvailabilityBoard::default(),
        }
    }

    /// A new reader of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StockEvent> {
        self.events.subscribe()
    }

    pub fn board(&self) -> &AvailabilityBoard {
        &self.board
    }
}
