//! The engine: one actix actor per SKU, spread over a fixed set of arbiters, fed by a lock-free
//! registry, with a write-behind persister behind it.
//!
//! ```text
//!  caller ──Apply──▶ SkuActor (arbiter = hash(sku) % n) ──decide (pure)──▶ memory updated
//!                         │ try_send (never blocks)
//!                         ▼
//!                     Persister thread ──one transaction per batch──▶ Store (Postgres)
//!                         │ tickets resolved: durable / conflict
//!                         └──conflict──▶ Resync ──▶ SkuActor reloads from the store
//! ```
//!
//! A reservation is decided in memory by the SKU's actor without locks or `.await`; the caller
//! receives the new ledger and a [`DurableTicket`] that resolves once the change is committed.

mod actor;
mod feed;
mod ids;
mod persister;
mod store;

pub use actor::{Applied, HoldToken, SkuActor};
pub use feed::{AvailabilityBoard, StockEvent, StockFeed};
pub use persister::{Durability, DurabilityError, DurableTicket, PersisterConfig, PersisterStats};
pub use store::{EventRecord, MemStore, RowOutcome, RowWrite, Store, StoreError};

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use dashmap::DashMap;

use crate::domain::{Ledger, LedgerError, Sku, StockOp};
use actor::{Apply, DropHold, Hold, HoldsCommitted, Resync, Snapshot};
#[cfg(feature = "fault-injection")]
use actor::{Corrupt, Crash};
use persister::PersisterHandle;

/// Why the engine could not carry out an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The ledger refused the operation; nothing changed.
    #[error(transparent)]
    Rejected(#[from] LedgerError),
    /// No such SKU in the store.
    #[error("unknown sku")]
    UnknownSku,
    /// The persister queue is full: memory would run too far ahead of disk. Retry shortly.
    #[error("the write-behind queue is full")]
    Overloaded,
    /// The SKU's actor stopped (or the engine is shutting down); the outcome is unknown.
    #[error("the engine could not reach the sku's actor")]
    Unavailable,
    /// Reading the SKU from the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Tuning of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of arbiter threads the SKU actors are spread over.
    pub shards: usize,
    pub persister: PersisterConfig,
    /// Events a stock-stream reader may fall behind before it is told it missed some.
    pub feed_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            persister: PersisterConfig::default(),
            feed_capacity: 4096,
        }
    }
}

type Registry = DashMap<Sku, Addr<SkuActor>>;

struct Inner {
    registry: Arc<Registry>,
    arbiters: Vec<ArbiterHandle>,
    /// Owned arbiters, only touched at shutdown.
    owned: Mutex<Vec<Arbiter>>,
    persister: PersisterHandle,
    store: Arc<dyn Store>,
    feed: StockFeed,
    /// Requests sent to actors and not yet answered (their mailboxes' depth, summed).
    in_flight: std::sync::atomic::AtomicI64,
}

/// Handle to the running engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Starts the persister and the arbiters, then rebuilds every SKU's actor from the store.
    /// Must run inside an actix `System`. Returns only once memory equals what the store holds.
    pub async fn start(store: Arc<dyn Store>, config: EngineConfig) -> Result<Engine, StoreError> {
        let registry: Arc<Registry> = Arc::new(DashMap::new());
        let conflict_registry = Arc::clone(&registry);
        let feed = StockFeed::new(config.feed_capacity);
        let persister = persister::spawn(
            Arc::clone(&store),
            config.persister.clone(),
            feed.clone(),
            Box::new(move |sku: &Sku, generation: u64| {
                let addr = conflict_registry.get(sku).map(|a| a.value().clone());
                if let Some(addr) = addr {
                    addr.do_send(Resync { generation });
                }
            }),
        );
        let owned: Vec<Arbiter> = (0..config.shards.max(1)).map(|_| Arbiter::new()).collect();
        let arbiters = owned.iter().map(Arbiter::handle).collect();
        let engine = Engine {
            inner: Arc::new(Inner {
                registry,
                arbiters,
                owned: Mutex::new(owned),
                persister,
                store: Arc::clone(&store),
                feed,
                in_flight: std::sync::atomic::AtomicI64::new(0),
            }),
        };
        let all = crate::blocking::run(move || store.load_all())
            .await
            .map_err(StoreError::from_join)??;
        for (sku, ledger) in all {
            let addr = engine.spawn_actor(sku.clone(), ledger);
            engine.inner.registry.insert(sku, addr);
        }
        Ok(engine)
    }

    fn spawn_actor(&self, sku: Sku, ledger: Ledger) -> Addr<SkuActor> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        sku.hash(&mut hasher);
        let n = self.inner.arbiters.len();
        let shard = (hasher.finish() % n as u64) as usize;
        let actor = SkuActor::new(
            sku,
            ledger,
            self.inner.persister.clone(),
            Arc::clone(&self.inner.store),
            self.inner.feed.clone(),
        );
        match self.inner.arbiters.get(shard) {
            Some(arbiter) => SkuActor::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        }
    }

    /// The address of the SKU's actor, loading the SKU from the store on first use.
    async fn addr(&self, sku: &Sku) -> Result<Addr<SkuActor>, EngineError> {
        let known = self.inner.registry.get(sku).map(|a| a.value().clone());
        match known {
            Some(addr) if addr.connected() => Ok(addr),
            Some(dead) => self.replace(sku, &dead).await,
            None => self.load_actor(sku, false).await,
        }
    }

    /// The actor behind `dead` stopped (a panic): forget it and rebuild it from what is durable.
    async fn replace(
        &self,
        sku: &Sku,
        dead: &Addr<SkuActor>,
    ) -> Result<Addr<SkuActor>, EngineError> {
        if self
            .inner
            .registry
            .remove_if(sku, |_, a| a == dead)
            .is_some()
        {
            tracing::warn!(%sku, "sku actor had stopped; reloading it from the store");
        }
        self.load_actor(sku, true).await
    }

    async fn load_actor(
        &self,
        sku: &Sku,
        after_crash: bool,
    ) -> Result<Addr<SkuActor>, EngineError> {
        let store = Arc::clone(&self.inner.store);
        let persister = self.inner.persister.clone();
        let key = sku.clone();
        let loaded = crate::blocking::run(move || {
            if after_crash {
                // Whatever the dead actor sent must be settled before we read the row.
                persister
                    .flush_blocking()
                    .map_err(|_| StoreError::Unavailable("persister stopped".into()))?;
            }
            store.load(&key)
        })
        .await
        .map_err(StoreError::from_join)??;
        let ledger = loaded.ok_or(EngineError::UnknownSku)?;
        let addr = self
            .inner
            .registry
            .entry(sku.clone())
            .or_insert_with(|| self.spawn_actor(sku.clone(), ledger))
            .value()
            .clone();
        Ok(addr)
    }

    /// Applies one operation to one SKU through its actor.
    ///
    /// If the actor turns out to be dead and never started on this operation, the operation is
    /// retried once on a fresh actor rebuilt from the store. If it died while handling it, the
    /// outcome is unknown and `Unavailable` is returned (the operation is not repeated).
    pub async fn apply(
        &self,
        sku: &Sku,
        op: StockOp,
        reason: Option<String>,
    ) -> Result<Applied, EngineError> {
        self.apply_with_ref(sku, op, reason, None).await
    }

    /// Like [`Engine::apply`], recording `reference` (a message id) with the change. The store
    /// refuses a second change with the same reference for the same SKU (it resolves as a
    /// conflict), which makes redelivered messages harmless; check [`Engine::change_applied`]
    /// first to skip them cheaply.
    #[tracing::instrument(level = "debug", skip(self, reason, reference), fields(sku = %sku, op = ?op))]
    pub async fn apply_with_ref(
        &self,
        sku: &Sku,
        op: StockOp,
        reason: Option<String>,
        reference: Option<String>,
    ) -> Result<Applied, EngineError> {
        let mut addr = self.addr(sku).await?;
        for attempt in 0..2 {
            let started = Arc::new(AtomicBool::new(false));
            let msg = Apply {
                op,
                reason: reason.clone(),
                reference: reference.clone(),
                started: Arc::clone(&started),
                span: crate::telemetry::current(),
            };
            let sent = self.counted(addr.send(msg)).await;
            match sent {
                Ok(result) => return result,
                Err(_) if attempt == 0 && !started.load(Ordering::Acquire) => {
                    addr = self.replace(sku, &addr).await?;
                }
                Err(_) => break,
            }
        }
        Err(EngineError::Unavailable)
    }

    /// Waits for an actor's answer, counted in [`Engine::requests_in_flight`] until it comes —
    /// or until this future is dropped (a caller gone).
    async fn counted<T>(&self, answer: impl std::future::Future<Output = T>) -> T {
        struct Counted<'a>(&'a std::sync::atomic::AtomicI64);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        let _counted = Counted(&self.inner.in_flight);
        answer.await
    }

    /// Holds `qty` units of one SKU for an order being decided: memory only (see
    /// [`Ledger::hold`]). The order's one write commits them ([`Engine::holds_committed`]) or
    /// they are let go ([`Engine::drop_hold`]), with the token of the actor that holds them.
    pub async fn hold(&self, sku: &Sku, qty: i64) -> Result<HoldToken, EngineError> {
        let mut addr = self.addr(sku).await?;
        for attempt in 0..2 {
            let started = Arc::new(AtomicBool::new(false));
            let msg = Hold {
                qty,
                started: Arc::clone(&started),
                span: crate::telemetry::current(),
            };
            match self.counted(addr.send(msg)).await {
                Ok(result) => return result,
                Err(_) if attempt == 0 && !started.load(Ordering::Acquire) => {
                    addr = self.replace(sku, &addr).await?;
                }
                // The actor died holding it: its memory, and the hold, are gone with it.
                Err(_) => break,
            }
        }
        Err(EngineError::Unavailable)
    }

    /// Lets go of units held by [`Engine::hold`] (the order was decided without them, or its
    /// write did not happen).
    pub fn drop_hold(&self, sku: &Sku, qty: i64, token: HoldToken) {
        if let Some(addr) = self.inner.registry.get(sku) {
            addr.do_send(DropHold { qty, token });
        }
    }

    /// Held units were committed with their orders: `qty` units reserved by `changes` stock
    /// changes, which left the SKU's row as `after`. The actor moves them from held to
    /// reserved; readers (the board, the stock stream) hear of it now.
    pub fn holds_committed(
        &self,
        sku: &Sku,
        qty: i64,
        changes: i64,
        after: Ledger,
        token: HoldToken,
    ) {
        if let Some(addr) = self.inner.registry.get(sku) {
            addr.do_send(HoldsCommitted {
                qty,
                changes,
                version_after: after.version,
                token,
            });
        }
        self.inner
            .feed
            .board
            .cell(sku)
            .store(after.available(), Ordering::Relaxed);
        // No subscriber is not an error; a slow one is told it lagged, on its side.
        let _ = self
            .inner
            .feed
            .events
            .send(StockEvent::new(sku.clone(), "reserve", after));
    }

    /// Reloads the SKU's memory from the store (its holds kept): after the database refused
    /// what memory held, or when a write's outcome is unknown.
    pub fn resync(&self, sku: &Sku) {
        if let Some(addr) = self.inner.registry.get(sku) {
            addr.do_send(Resync {
                generation: u64::MAX,
            });
        }
    }

    /// Reserves `qty` units of one SKU.
    pub async fn reserve(&self, sku: &Sku, qty: i64) -> Result<Applied, EngineError> {
        self.apply(sku, StockOp::Reserve(qty), None).await
    }

    /// Whether a change with this reference was committed for this SKU (blocking store call on a
    /// blocking thread).
    pub async fn change_applied(&self, sku: &Sku, reference: &str) -> Result<bool, EngineError> {
        let store = Arc::clone(&self.inner.store);
        let (sku, reference) = (sku.clone(), reference.to_owned());
        crate::blocking::run(move || store.change_applied(&sku, &reference))
            .await
            .map_err(StoreError::from_join)?
            .map_err(EngineError::Store)
    }

    /// The SKU's current in-memory ledger.
    pub async fn ledger(&self, sku: &Sku) -> Result<Ledger, EngineError> {
        let addr = self.addr(sku).await?;
        match addr.send(Snapshot).await {
            Ok(ledger) => Ok(ledger),
            // A read is safe to repeat on a fresh actor.
            Err(_) => self
                .replace(sku, &addr)
                .await?
                .send(Snapshot)
                .await
                .map_err(|_| EngineError::Unavailable),
        }
    }

    /// Live availability and stock events, as the actors publish them.
    pub fn feed(&self) -> &StockFeed {
        &self.inner.feed
    }

    /// Requests sent to SKU actors and not yet answered.
    pub fn requests_in_flight(&self) -> i64 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Number of SKU actors currently registered.
    pub fn sku_count(&self) -> usize {
        self.inner.registry.len()
    }

    /// Counters of the write-behind persister.
    pub fn persister_stats(&self) -> Arc<PersisterStats> {
        self.inner.persister.stats()
    }

    /// Whether the engine can take work: its persister runs and is not failing.
    pub fn is_healthy(&self) -> bool {
        self.inner.persister.is_running() && !self.persister_stats().is_failing()
    }

    /// Blocks until every change submitted so far is settled (committed or refused).
    pub async fn flush(&self) -> Result<(), EngineError> {
        let persister = self.inner.persister.clone();
        crate::blocking::run(move || persister.flush_blocking())
            .await
            .map_err(|_| EngineError::Unavailable)?
            .map_err(|_| EngineError::Unavailable)
    }

    /// Drains the persister, then stops the arbiters. Changes submitted before are written.
    pub async fn shutdown(&self) {
        let persister = self.inner.persister.clone();
        let _ = crate::blocking::run(move || persister.stop_blocking()).await;
        let owned = match self.inner.owned.lock() {
            Ok(mut owned) => std::mem::take(&mut *owned),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for arbiter in owned {
            arbiter.stop();
        }
        self.inner.registry.clear();
    }

    /// Fault injection for tests: overwrite the actor's memory with a wrong ledger, bypassing
    /// the ledger rules, to prove that the database refuses what memory gets wrong.
    #[cfg(feature = "fault-injection")]
    pub async fn fault_corrupt_memory(&self, sku: &Sku, ledger: Ledger) -> Result<(), EngineError> {
        let addr = self.addr(sku).await?;
        addr.send(Corrupt(ledger))
            .await
            .map_err(|_| EngineError::Unavailable)
    }

    /// Fault injection for tests: make the SKU's actor panic.
    #[cfg(feature = "fault-injection")]
    pub async fn fault_crash_actor(&self, sku: &Sku) -> Result<(), EngineError> {
        let addr = self.addr(sku).await?;
        // The actor dies handling this, so the reply never comes.
        let _ = addr.send(Crash).await;
        Ok(())
    }
}
