//! The sweeper: nothing is left undecided (DESIGN.md rule 8). On start and periodically it
//!
//! - finishes orders that ended without their goods (rejected, failed, cancelled) but may still
//!   hold stock (`settled = false`): their releases are completed;
//! - decides orders still `received`/`reserved` untouched for `stale_after` — once the
//!   database and the broker have also worked without a break for `stale_after` (so deliveries
//!   waiting out an outage are not mistaken for lost ones): their delivery is gone
//!   (dead-lettered, or lost before it could be handed back). Without the request (the card
//!   number is never stored) they cannot be paid, so they end `rejected`/`failed` with reason
//!   `expired`, their reservations released, the customer notified. A late redelivery finds
//!   them decided and is acknowledged.
//!
//! It also forgets idempotency keys older than their retention whose order is decided.
//!
//! An order being processed in this process right now (its lock held) is skipped this round.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::transitions::Move;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Deadline, Parts, StepError};
use crate::domain::order::{OrderStatus, Rejection, RejectionReason};
use crate::persistence::orders as order_store;
use crate::persistence::run_blocking;

/// Orders looked at per kind per round.
const BATCH: i64 = 500;
/// Keys forgotten per statement, and statements per round at most (a round every 30 s by
/// default: up to 600,000 keys, 20,000 a second — several times what one instance takes in).
const KEY_BATCH: i64 = 10 * BATCH;
const KEY_BATCHES_PER_ROUND: usize = 120;
/// A settled-late order is left alone this long (its own consumer is probably finishing it).
const UNSETTLED_GRACE: Duration = Duration::from_secs(2);

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Orders whose releases were completed.
    pub settled: usize,
    /// Orders decided as `expired`.
    pub expired: usize,
    /// Idempotency keys forgotten after their retention.
    pub keys_forgotten: usize,
}

/// The sweeper: what it shares with the rest of the order service, and how healthy the
/// database and the broker have been.
#[derive(Clone)]
pub(super) struct Sweeper {
    p: Arc<Parts>,
    /// Since when the database and the broker have answered without a break (an order is
    /// decided "lost" only after it has been untouched for `stale_after` of that).
    healthy_since: Arc<Mutex<Instant>>,
    /// Transient write failures seen by the last round (both writers).
    seen_db_errors: Arc<AtomicU64>,
}

impl Sweeper {
    pub fn new(p: Arc<Parts>) -> Sweeper {
        Sweeper {
            p,
            healthy_since: Arc::new(Mutex::new(Instant::now())),
            seen_db_errors: Arc::default(),
        }
    }

    /// Runs the sweeper until `stop` is cancelled: once now, then every `sweep_every`.
    pub fn spawn(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                match service.sweep().await {
                    Ok(report) if report != SweepReport::default() => {
                        tracing::info!(
                            settled = report.settled,
                            expired = report.expired,
                            "sweeper finished orders"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "sweeper round failed; next round retries")
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(service.p.config.sweep_every) => {}
                }
            }
        })
    }

    /// Whether the database and the broker have worked without a break for `stale_after`:
    /// only then can an order untouched for that long be taken to have lost its delivery (during
    /// an outage, deliveries wait and retry without touching their orders).
    fn healthy_long_enough(&self, failed: bool) -> bool {
        use std::sync::atomic::Ordering;
        let errors = self
            .p
            .records
            .store()
            .stats()
            .db_errors
            .load(Ordering::Relaxed)
            .saturating_add(
                self.p
                    .engine
                    .persister_stats()
                    .batches()
                    .db_errors
                    .load(Ordering::Relaxed),
            );
        let previous = self.seen_db_errors.swap(errors, Ordering::Relaxed);
        let unhealthy = failed
            || errors != previous
            || !self.p.publisher.is_connected()
            || self.p.records.writer_failing()
            || !self.p.engine.is_healthy();
        let mut since = match self.healthy_since.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if unhealthy {
            *since = std::time::Instant::now();
        }
        since.elapsed() >= self.p.config.stale_after
    }

    /// One round of the sweeper. An order it cannot finish is logged and left for the next
    /// round; it never holds up the others.
    pub async fn sweep(&self) -> Result<SweepReport, StepError> {
        let mut report = SweepReport::default();
        let now = Utc::now();
        let grace = chrono::Duration::from_std(UNSETTLED_GRACE).unwrap_or_default();
        let unsettled = run_blocking(&self.p.pool, move |c| {
            order_store::unsettled_since(c, now - grace, BATCH)
        })
        .await;
        let unsettled = match unsettled {
            Ok(ids) => ids,
            Err(e) => {
                self.healthy_long_enough(true);
                return Err(e.into());
            }
        };
        let before =
            now - chrono::Duration::from_std(self.p.config.key_retention).unwrap_or_default();
        // Batch after batch while they come full: keys arrive at the checkout rate (thousands a
        // second), far more than one batch a round. Bounded, so one round always ends.
        for _ in 0..KEY_BATCHES_PER_ROUND {
            match run_blocking(&self.p.pool, move |c| {
                order_store::prune_keys(c, before, KEY_BATCH)
            })
            .await
            {
                Ok(n) => {
                    report.keys_forgotten += n;
                    if n < KEY_BATCH as usize {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sweeper could not forget old idempotency keys; next round");
                    break;
                }
            }
        }
        for order_id in unsettled {
            match self.finish(order_id, false).await {
                Ok(true) => report.settled += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%order_id, error = %e, "sweeper could not settle an order; next round")
                }
            }
        }
        if !self.healthy_long_enough(false) {
            return Ok(report);
        }
        let stale = chrono::Duration::from_std(self.p.config.stale_after).unwrap_or_default();
        let open = run_blocking(&self.p.pool, move |c| {
            order_store::open_since(c, now - stale, BATCH)
        })
        .await?;
        for order_id in open {
            match self.finish(order_id, true).await {
                Ok(true) => report.expired += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%order_id, error = %e, "sweeper could not decide an order; next round")
                }
            }
        }
        Ok(report)
    }

    /// Finishes one order unless it is busy. `expire`: decide it if it is still open.
    async fn finish(&self, order_id: Uuid, expire: bool) -> Result<bool, StepError> {
        let Ok(_guard) = self.p.locks.of(order_id).try_lock() else {
            return Ok(false); // being processed right now
        };
        let deadline = Deadline::after(self.p.config.retry_window);
        let Some(mut order) = deadline.bound(self.p.records.get(order_id)).await?? else {
            return Ok(false);
        };
        if expire {
            let step = match order.status {
                OrderStatus::Received => OrderStatus::Rejected,
                OrderStatus::Reserved => OrderStatus::Failed,
                _ => return Ok(false), // decided meanwhile
            };
            tracing::warn!(%order_id, status = ?order.status, "order lost its delivery; deciding it as expired");
            self.p
                .records
                .transition(
                    &mut order,
                    Move {
                        rejection: Some(Rejection::because(
                            RejectionReason::Expired,
                            "the order could not be processed in time and was closed",
                        )),
                        settled: false,
                        ..Move::to(step)
                    },
                    &deadline,
                )
                .await?;
            // (Rare: a walk over the checkouts still on their way.)
            self.p.keys.forget_order(order_id);
            if order.status.is_decided() {
                if let Err(e) = self.p.records.publish_decision(&order).await {
                    // Decided and durable; the event is what is missing (a redelivery of its
                    // checkout would publish it again).
                    tracing::warn!(%order_id, error = %e, "expired; its event was not confirmed");
                }
            }
        }
        if order.status.releases_stock() && !order.settled {
            self.p
                .stock
                .release_order(&self.p.records, &self.p.payments, &mut order, &deadline)
                .await?;
            return Ok(true);
        }
        Ok(false)
    }
}
