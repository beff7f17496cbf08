//! `inventory.updates`: `{"sku","on_hand"}` or `{"sku","delta","reason"}` from warehouse
//! systems, validated like the HTTP admin endpoints and applied through the SKU's actor like
//! every other stock change. The AMQP `message_id` is recorded with the change, so a redelivered
//! message is recognised and not applied twice; a delta without one is refused (dead-lettered),
//! because a redelivery of it could not be told from a second delta.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use serde::Deserialize;

use super::parse;
use crate::domain::inventory::{StockUpdate, StockUpdateInput, UpdateForm};
use crate::domain::{parse_key, FieldErrors, Sku, StockOp};
use crate::engine::{DurabilityError, Engine, EngineError};
use crate::messaging::consumer::{Message, Outcome};

/// A message on `inventory.updates`: `{"sku","on_hand"}` or `{"sku","delta","reason"}`.
#[derive(Debug, Default, Deserialize)]
pub struct InventoryMessage {
    pub sku: Option<String>,
    #[serde(flatten)]
    pub update: StockUpdateInput,
}

impl InventoryMessage {
    /// The SKU and the update, or every problem at once (the same rules as the HTTP API).
    pub fn validate(&self) -> Result<(Sku, StockUpdate), FieldErrors> {
        let mut errors = FieldErrors::new();
        let sku = errors.required("sku", self.sku.as_deref(), Sku::parse);
        match (sku, self.update.validate(UpdateForm::Either)) {
            (Some(sku), Ok(update)) => Ok((sku, update)),
            (_, result) => {
                if let Err(more) = result {
                    errors.extend(more);
                }
                Err(errors)
            }
        }
    }
}

/// References being processed right now: a second delivery of the same message (a producer's
/// retry arriving while the first is still in flight) waits for the first to finish instead of
/// racing it into the SKU's memory.
#[derive(Clone, Default)]
pub struct InFlight(Arc<DashMap<String, ()>>);

struct Claim {
    set: InFlight,
    reference: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.0.remove(&self.reference);
    }
}

impl InFlight {
    async fn claim(&self, reference: &str) -> Claim {
        loop {
            let fresh = match self.0.entry(reference.to_owned()) {
                dashmap::Entry::Occupied(_) => false,
                dashmap::Entry::Vacant(v) => {
                    v.insert(());
                    true
                }
            };
            if fresh {
                return Claim {
                    set: self.clone(),
                    reference: reference.to_owned(),
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The change's reference, from its message id: a delta needs one (without it a redelivery
/// would apply it twice); a count does not (applying it again gives the same stock).
fn reference_of(message_id: Option<&str>, op: &StockOp) -> Result<Option<String>, Outcome> {
    match message_id.map(parse_key) {
        Some(Ok(id)) => Ok(Some(format!("inventory:{id}"))),
        Some(Err(e)) => Err(Outcome::DeadLetter(format!("message_id {e}"))),
        None if matches!(op, StockOp::Adjust(_)) => Err(Outcome::DeadLetter(
            "a delta needs a message_id: without one a redelivery would apply it twice".into(),
        )),
        None => Ok(None),
    }
}

pub async fn handle(
    engine: &Engine,
    in_flight: &InFlight,
    message: Message,
    retry_window: Duration,
) -> Outcome {
    let update: InventoryMessage = match parse(&message) {
        Ok(u) => u,
        Err(outcome) => return outcome,
    };
    let (sku, StockUpdate { op, reason }) = match update.validate() {
        Ok(v) => v,
        Err(fields) => {
            return Outcome::DeadLetter(format!("invalid stock update: {}", fields.summary()))
        }
    };
    let reference = match reference_of(message.message_id.as_deref(), &op) {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    // Held until this delivery is settled; a duplicate in flight waits for it.
    let _claim = match &reference {
        Some(r) => Some(in_flight.claim(r).await),
        None => None,
    };
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        if started.elapsed() > retry_window {
            return Outcome::Retry;
        }
        if let Some(r) = &reference {
            match engine.change_applied(&sku, r).await {
                Ok(true) => return Outcome::Ack, // a redelivery of a change already made
                Ok(false) => {}
                Err(EngineError::Store(e)) if !e.is_transient() => {
                    return Outcome::DeadLetter(format!("stock update refused: {e}"))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stock update waits for the database");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let applied = engine
            .apply_with_ref(&sku, op, reason.clone(), reference.clone())
            .await;
        match applied {
            Ok(applied) => match applied.durable.wait().await {
                Ok(()) => return Outcome::Ack,
                // Memory was wrong or this was a duplicate: the SKU resyncs; look again.
                Err(DurabilityError::Conflict) => {}
                Err(DurabilityError::Refused(why)) => {
                    return Outcome::DeadLetter(format!(
                        "stock update refused by the database: {why}"
                    ))
                }
                Err(DurabilityError::Stopped) => return Outcome::Requeue,
                Err(DurabilityError::Fenced) => return Outcome::Abandon,
            },
            Err(EngineError::Rejected(e)) => {
                return Outcome::DeadLetter(format!("stock update refused for {sku}: {e}"))
            }
            Err(EngineError::UnknownSku) => {
                return Outcome::DeadLetter(format!("unknown sku {sku}"))
            }
            Err(EngineError::Store(e)) if !e.is_transient() => {
                return Outcome::DeadLetter(format!("stock update refused: {e}"))
            }
            Err(e) => tracing::warn!(%sku, error = %e, "stock update retrying"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
