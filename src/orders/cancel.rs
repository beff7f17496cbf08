//! Cancelling an order (`POST /v1/orders/{id}/cancel`).
//!
//! The cancel is recorded first (`cancelled`, not yet settled), then the stock is released line
//! by line (by reference, so whatever the order holds — even a `received` order whose
//! reservation already committed), then the order is settled. A failure between the steps
//! leaves a cancelled order that a retry of the cancel, a redelivery or the sweeper finishes;
//! never a live order with part of its stock back on sale.

use std::time::Duration;

use uuid::Uuid;

use super::transitions::Move;
use super::{Deadline, Parts, StepError};
use crate::domain::order::{Order, OrderStatus};

/// How long a cancel may take before it answers 503 (the order stays consistent).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a cancel was refused.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("unknown order")]
    NotFound,
    #[error("an order that is {0:?} cannot be cancelled")]
    NotCancellable(OrderStatus),
    #[error("{0}")]
    Unavailable(String),
}

impl From<crate::persistence::DbError> for CancelError {
    fn from(e: crate::persistence::DbError) -> Self {
        tracing::warn!(error = %e, "cancel: the database is unavailable");
        CancelError::Unavailable("the database is unavailable; retry".into())
    }
}

impl From<StepError> for CancelError {
    fn from(e: StepError) -> Self {
        tracing::warn!(error = %crate::messaging::error_chain(&e), "cancel could not finish");
        CancelError::Unavailable("the order could not be cancelled now; retry".into())
    }
}

/// Cancels an order that is received, reserved or scheduled; its stock is released. Asking
/// again for a cancelled order answers it (and finishes its releases if they were cut short).
#[tracing::instrument(skip(p))]
pub(super) async fn cancel(p: &Parts, order_id: Uuid) -> Result<Order, CancelError> {
    let deadline = Deadline::after(CANCEL_TIMEOUT);
    let _guard = deadline
        .bound(p.locks.of(order_id).lock())
        .await
        .map_err(|_| CancelError::Unavailable("the order is being processed; retry".into()))?;
    let Some(mut order) = deadline.bound(p.records.get(order_id)).await?? else {
        // Accepted at intake and not decided yet (its delivery is in the queue, or was handed
        // back): ask again shortly, rather than hear it does not exist.
        let accepted = deadline
            .bound(crate::persistence::run_blocking(&p.pool, move |c| {
                crate::persistence::orders::key_recorded(c, order_id)
            }))
            .await??;
        return Err(match accepted {
            true => CancelError::Unavailable("the order is being processed; retry".into()),
            false => CancelError::NotFound,
        });
    };
    if order.status != OrderStatus::Cancelled {
        if !order.status.can_become(OrderStatus::Cancelled) {
            return Err(CancelError::NotCancellable(order.status));
        }
        let slot = order.delivery.clone();
        let was = order.status;
        p.records
            .transition(
                &mut order,
                Move {
                    settled: false,
                    ..Move::to(OrderStatus::Cancelled)
                },
                &deadline,
            )
            .await?;
        if order.status != OrderStatus::Cancelled {
            return Err(CancelError::Unavailable("the order changed; retry".into()));
        }
        if let (OrderStatus::Scheduled, Some(slot)) = (was, slot) {
            p.capacity.unbook(order.delivery_method, slot.scheduled_for);
        }
    }
    if !order.settled {
        if let Err(e) = p
            .stock
            .release_order(&p.records, &p.payments, &mut order, &deadline)
            .await
        {
            // The cancel stands; the releases are finished by a retry or by the sweeper.
            tracing::warn!(%order_id, error = %e, "cancelled; its stock will be released later");
        }
    }
    // The cancel stands either way; its events are confirmed before the 200, and asking
    // again publishes them again (same ids).
    p.records.publish_decision(&order).await?;
    Ok(order)
}
