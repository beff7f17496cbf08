//! `inventory.updates`: `{"sku","on_hand"}` or `{"sku","delta","reason"}` from warehouse
//! systems, validated like the HTTP admin endpoints and applied through the SKU's actor like
//! every other stock change. With an AMQP `message_id` the change is recorded with it, so a
//! redelivered message is recognised and not applied twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use serde::Deserialize;

use super::{parse, RETRY_FOR};
use crate::domain::{FieldErrors, Sku, StockOp};
use crate::engine::{DurabilityError, Engine, EngineError};
use crate::messaging::consumer::{Message, Outcome};

#[derive(Debug, Default, Deserialize)]
pub struct InventoryUpdate {
    pub sku: Option<String>,
    pub on_hand: Option<i64>,
    pub delta: Option<i64>,
    pub reason: Option<String>,
}

impl InventoryUpdate {
    /// The SKU, the operation and its reason, or every problem at once.
    pub fn validate(self) -> Result<(Sku, StockOp, Option<String>), FieldErrors> {
        let mut errors = FieldErrors::new();
        let sku = errors.required("sku", self.sku.as_deref(), Sku::parse);
        let reason = self
            .reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        let op = match (self.on_hand, self.delta) {
            (Some(_), Some(_)) | (None, None) => {
                errors.add("on_hand", "give exactly one of on_hand and delta");
                None
            }
            (Some(v), None) if v < 0 => {
                errors.add("on_hand", "must be >= 0");
                None
            }
            (Some(v), None) => Some(StockOp::SetOnHand(v)),
            (None, Some(0)) => {
                errors.add("delta", "must not be zero");
                None
            }
            (None, Some(d)) => {
                if reason.is_none() {
                    errors.add("reason", "is required with delta");
                }
                Some(StockOp::Adjust(d))
            }
        };
        match (sku, op) {
            (Some(sku), Some(op)) if errors.is_empty() => Ok((sku, op, reason)),
            _ => Err(errors),
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

pub async fn handle(engine: &Engine, in_flight: &InFlight, message: Message) -> Outcome {
    let update: InventoryUpdate = match parse(&message) {
        Ok(u) => u,
        Err(outcome) => return outcome,
    };
    let (sku, op, reason) = match update.validate() {
        Ok(v) => v,
        Err(fields) => {
            return Outcome::DeadLetter(format!("invalid stock update: {}", fields.summary()))
        }
    };
    let reference = message
        .message_id
        .as_ref()
        .map(|id| format!("inventory:{id}"));
    // Held until this delivery is settled; a duplicate in flight waits for it.
    let _claim = match &reference {
        Some(r) => Some(in_flight.claim(r).await),
        None => None,
    };
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        if started.elapsed() > RETRY_FOR {
            return Outcome::Requeue;
        }
        if let Some(r) = &reference {
            match engine.change_applied(&sku, r).await {
                Ok(true) => return Outcome::Ack, // a redelivery of a change already made
                Ok(false) => {}
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
                Err(DurabilityError::Stopped) => return Outcome::Requeue,
            },
            Err(EngineError::Rejected(e)) => {
                return Outcome::DeadLetter(format!("stock update refused for {sku}: {e}"))
            }
            Err(EngineError::UnknownSku) => {
                return Outcome::DeadLetter(format!("unknown sku {sku}"))
            }
            Err(e) => tracing::warn!(%sku, error = %e, "stock update retrying"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
