//! `SkuActor`: the single owner of one SKU's ledger (DESIGN.md rule 4).
//!
//! Its handlers decide synchronously with the pure ledger and hand the change to the persister
//! with a non-blocking `try_send`; there is no lock and no `.await` on the reservation path. The
//! only waiting it ever does is a resync after the store refused one of its writes, and then it
//! pauses its own mailbox (`ctx.wait`) so no decision is taken on a ledger known to be wrong.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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
    /// The database's version when memory was last loaded from it: a commit of held units that
    /// left the row at this version or below is already in what was loaded.
    synced_at: i64,
    /// This actor among every actor the process started: holds are its own (an actor rebuilt
    /// after a crash never had its predecessor's).
    incarnation: HoldToken,
}

/// Which actor took a hold: letting it go, or committing it, touches only that actor's holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldToken(u64);

fn next_incarnation() -> HoldToken {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    HoldToken(NEXT.fetch_add(1, Ordering::Relaxed))
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
            synced_at: ledger.version,
            incarnation: next_incarnation(),
        }
    }

    /// Moves memory to `ledger`, which the store holds (a resync): tells the board and the
    /// stream too. Decided changes are announced by the persister once committed, not here.
    fn set_committed(&mut self, ledger: Ledger, kind: &'static str) {
        // Units held for orders being decided are memory's alone: a reload keeps them.
        self.synced_at = ledger.version;
        let ledger = Ledger {
            held: self.ledger.held,
            ..ledger
        };
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

/// Hold units for an order being decided: memory only, nothing written (the order's one write
/// commits them with its decision, or they are dropped).
#[derive(Message)]
#[rtype(result = "Result<HoldToken, EngineError>")]
pub(crate) struct Hold {
    pub qty: i64,
    /// Set when the handler begins (see [`Apply::started`]).
    pub started: Arc<AtomicBool>,
    /// The caller's span (none when nothing is exported).
    pub span: tracing::Span,
}

impl Handler<Hold> for SkuActor {
    type Result = Result<HoldToken, EngineError>;

    fn handle(&mut self, msg: Hold, _: &mut Self::Context) -> Self::Result {
        msg.started.store(true, Ordering::Release);
        let span = if msg.span.is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!(target: crate::telemetry::TARGET, parent: &msg.span, "sku actor", otel.name = "sku actor hold", sku = %self.sku)
        };
        let _entered = span.enter();
        self.ledger = self.ledger.hold(msg.qty)?;
        Ok(self.incarnation)
    }
}

/// Let go of held units: their order was decided without them, or its write never happened.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DropHold {
    pub qty: i64,
    pub token: HoldToken,
}

impl Handler<DropHold> for SkuActor {
    type Result = ();

    fn handle(&mut self, msg: DropHold, _: &mut Self::Context) {
        if msg.token != self.incarnation {
            return; // taken by an actor that died since (a crash): it went with it
        }
        match self.ledger.drop_hold(msg.qty) {
            Ok(ledger) => self.ledger = ledger,
            Err(e) => {
                tracing::error!(sku = %self.sku, error = %e, "dropping a hold this actor does not have")
            }
        }
    }
}

/// Held units were committed as reservations, with their orders, by the order writer: the
/// database's row moved by `qty` reserved and `changes` versions, to `version_after`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct HoldsCommitted {
    pub qty: i64,
    pub changes: i64,
    pub version_after: i64,
    pub token: HoldToken,
}

impl Handler<HoldsCommitted> for SkuActor {
    type Result = ();

    fn handle(&mut self, msg: HoldsCommitted, _: &mut Self::Context) {
        let ours = msg.token == self.incarnation;
        self.ledger = absorb_commit(self.ledger, &msg, ours, self.synced_at);
    }
}

/// Memory after a commit of held units. The units leave `held` when this actor took them
/// (`ours`; an actor rebuilt after a crash never had them); they join `reserved`, and the version
/// moves, unless memory was loaded after the commit (then they are in what was loaded).
fn absorb_commit(ledger: Ledger, msg: &HoldsCommitted, ours: bool, synced_at: i64) -> Ledger {
    let held = if ours {
        ledger.held - msg.qty.min(ledger.held).max(0)
    } else {
        ledger.held
    };
    if msg.version_after <= synced_at {
        return Ledger { held, ..ledger };
    }
    Ledger {
        level: crate::domain::StockLevel {
            on_hand: ledger.level.on_hand,
            reserved: ledger.level.reserved.saturating_add(msg.qty),
        },
        version: ledger.version.saturating_add(msg.changes),
        held,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_moves_held_units_to_reserved_unless_memory_was_loaded_after_it() {
        let holding = Ledger::new(10, 2, 5).hold(3).unwrap();
        let commit = HoldsCommitted {
            qty: 3,
            changes: 2,
            version_after: 7,
            token: HoldToken(1),
        };
        assert_eq!(
            absorb_commit(holding, &commit, true, 5),
            Ledger::new(10, 5, 7)
        );
        // Loaded at version 7 (the commit included), the hold is let go and nothing added.
        let loaded = Ledger {
            held: 3,
            ..Ledger::new(10, 5, 7)
        };
        assert_eq!(
            absorb_commit(loaded, &commit, true, 7),
            Ledger::new(10, 5, 7)
        );
        // An actor rebuilt after a crash never had the hold: the commit still counts, and the
        // holds it took itself stay.
        let rebuilt = Ledger::new(10, 2, 5).hold(1).unwrap();
        assert_eq!(
            absorb_commit(rebuilt, &commit, false, 5),
            Ledger {
                held: 1,
                ..Ledger::new(10, 5, 7)
            }
        );
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
