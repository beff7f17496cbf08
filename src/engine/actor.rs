//! `SkuActor`: the single owner of one SKU's ledger (DESIGN.md rule 4).
//!
//! Its handlers decide synchronously with the pure ledger and hand the change to the persister
//! with a non-blocking `try_send`; there is no lock and no `.await` on the reservation path. The
//! only waiting it ever does is a resync after the store refused one of its writes, and then it
//! pauses its own mailbox (`ctx.wait`) so no decision is taken on a ledger known to be wrong.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::feed::{StockEvent, StockFeed};
use super::persister::{Change, DurableTicket, PersisterHandle};
use super::store::Store;
use super::EngineError;
use crate::batch::SubmitError;
use crate::domain::{Ledger, Sku, StockOp};
use actix::prelude::*;

/// The actor owning one SKU.
pub struct SkuActor {
    sku: Sku,
    ledger: Ledger,
    /// Bumped by every resync; changes carry it so stale conflicts are recognised.
    generation: u64,
    persister: PersisterHandle,
    store: Arc<dyn Store>,
    feed: StockFeed,
    /// This SKU's cell on the availability board.
    available: Arc<AtomicI64>,
}

impl SkuActor {
    pub(crate) fn new(
        sku: Sku,
        ledger: Ledger,
        persister: PersisterHandle,
        store: Arc<dyn Store>,
        feed: StockFeed,
    ) -> SkuActor {
        let available = feed.board.cell(&sku);
        available.store(ledger.available(), Ordering::Relaxed);
        SkuActor {
            sku,
            ledger,
            generation: 0,
            persister,
            store,
            feed,
            available,
        }
    }

    /// Moves memory to `ledger`, which the store holds (a resync): tells the board and the
    /// stream too. Decided changes are announced by the persister once committed, not here.
    fn set_committed(&mut self, ledger: Ledger, kind: &'static str) {
        self.ledger = ledger;
        self.available.store(ledger.available(), Ordering::Relaxed);
        // No subscriber is not an error; a slow one is told it lagged, on its side.
        let _ = self
            .feed
            .events
            .send(StockEvent::new(self.sku.clone(), kind, ledger));
    }
}

impl Actor for SkuActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

/// An operation the actor accepted: the ledger after it, and its durability ticket.
#[derive(Debug)]
pub struct Applied {
    pub ledger: Ledger,
    pub durable: DurableTicket,
}

/// Apply one ledger operation.
#[derive(Message)]
#[rtype(result = "Result<Applied, EngineError>")]
pub(crate) struct Apply {
    pub op: StockOp,
    pub reason: Option<String>,
    pub reference: Option<String>,
    /// Set when the handler begins: tells the sender, if the actor dies, whether the operation
    /// was never looked at (safe to retry elsewhere) or its outcome is unknown.
    pub started: Arc<AtomicBool>,
    /// The caller's span: the actor's work continues its trace (none when nothing is exported).
    pub span: tracing::Span,
}

impl Handler<Apply> for SkuActor {
    type Result = Result<Applied, EngineError>;

    fn handle(&mut self, msg: Apply, _ctx: &mut Self::Context) -> Self::Result {
        msg.started.store(true, Ordering::Release);
        // The change handed to the persister below carries this span (its write continues it).
        let span = if msg.span.is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!(target: crate::telemetry::TARGET, parent: &msg.span, "sku actor", otel.name = "sku actor apply", sku = %self.sku)
        };
        let _entered = span.enter();
        let change = self.ledger.decide(msg.op)?;
        let durable = self
            .persister
            .try_submit(Change {
                sku: self.sku.clone(),
                generation: self.generation,
                change,
                reason: msg.reason,
                reference: msg.reference,
                change_id: super::ids::change_id(),
            })
            .map_err(|e| match e {
                SubmitError::Full => EngineError::Overloaded,
                SubmitError::Stopped => EngineError::Unavailable,
            })?;
        // Memory moves only once the change is on its way to disk; readers hear of it once it
        // is committed.
        self.ledger = change.after;
        Ok(Applied {
            ledger: self.ledger,
            durable,
        })
    }
}

/// Read the current ledger.
#[derive(Message)]
#[rtype(result = "Ledger")]
pub(crate) struct Snapshot;

impl Handler<Snapshot> for SkuActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.ledger)
    }
}

/// The store refused a write decided in `generation`: reload from the store.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Resync {
    pub generation: u64,
}

impl Handler<Resync> for SkuActor {
    type Result = ();

    fn handle(&mut self, msg: Resync, ctx: &mut Self::Context) {
        if msg.generation < self.generation {
            return; // already resynced since that write was decided
        }
        let store = Arc::clone(&self.store);
        let persister = self.persister.clone();
        let sku = self.sku.clone();
        let reload = async move {
            let mut delay = Duration::from_millis(50);
            loop {
                let (store, persister, key) = (Arc::clone(&store), persister.clone(), sku.clone());
                // Settle everything in flight first, so the row read is the last word.
                let loaded = crate::blocking::run(move || {
                    persister
                        .flush_blocking()
                        .map_err(|_| "persister stopped".to_owned())?;
                    store.load(&key).map_err(|e| e.to_string())
                })
                .await;
                match loaded {
                    Ok(Ok(ledger)) => return ledger,
                    Ok(Err(e)) => tracing::warn!(%sku, error = %e, "resync failed; retrying"),
                    Err(e) => tracing::warn!(%sku, error = %e, "resync task failed; retrying"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        };
        // Pause this actor's mailbox until memory equals the store again.
        ctx.wait(reload.into_actor(self).map(|loaded, actor, _| {
            if let Some(ledger) = loaded {
                tracing::info!(sku = %actor.sku, old = ?actor.ledger, new = ?ledger, "sku resynced from the store");
                actor.set_committed(ledger, "resync");
            }
            actor.generation += 1;
        }));
    }
}

/// Fault injection: replace memory with a wrong ledger.
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Corrupt(pub Ledger);

#[cfg(feature = "fault-injection")]
impl Handler<Corrupt> for SkuActor {
    type Result = ();

    fn handle(&mut self, msg: Corrupt, _: &mut Self::Context) {
        tracing::warn!(sku = %self.sku, wrong = ?msg.0, "fault injection: corrupting sku memory");
        self.ledger = msg.0;
    }
}

/// Fault injection: panic inside the actor.
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Crash;

#[cfg(feature = "fault-injection")]
impl Handler<Crash> for SkuActor {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("fault injection: sku actor {} crashed", self.sku);
    }
}
