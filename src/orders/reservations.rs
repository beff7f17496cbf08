//! Stock for orders: every line reserved at its own SKU actor (concurrently) or none kept, and
//! releases — each change carrying a reference (`order:{id}:reserve` / `…:release`) that the
//! database keeps unique per SKU, so a redelivered order finds what an earlier attempt did and
//! never takes or gives stock twice.

use std::time::Duration;

use futures_util::future::join_all;
use uuid::Uuid;

use std::sync::Arc;

use super::payment::Payments;
use super::transitions::Records;
use super::{Cause, Deadline, StepError, SUGGESTIONS};
use crate::catalog::Catalog;
use crate::domain::order::ShortLine;
use crate::domain::order::{release_ref, reserve_ref, Order};
use crate::domain::{LedgerError, Sku, StockOp};
use crate::engine::Engine;
use crate::engine::{DurabilityError, EngineError};
use crate::monitor::Monitor;

/// What reserving an order's lines came to.
#[derive(Debug)]
pub(super) enum Reservation {
    /// Every line is held.
    All,
    /// Some lines are short; `held` are those reserved anyway (to release once decided).
    Short {
        short: Vec<ShortLine>,
        held: Vec<(Sku, i64)>,
    },
}

/// What one stock change came to.
enum Line {
    Done,
    Short(i64),
}

/// Voids the order's authorization (idempotent; nothing held is no error); a gateway that does
/// not answer is transient trouble like any other.
pub(super) async fn void(
    payments: &Payments,
    order_id: Uuid,
    deadline: &Deadline,
) -> Result<(), StepError> {
    deadline
        .bound(payments.void(order_id))
        .await?
        .map_err(|e| StepError::Transient(Cause::of("the payment gateway could not void", e)))
}

impl From<EngineError> for StepError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(s) if !s.is_transient() => {
                StepError::Refused(Cause::of("the database refused it", s))
            }
            // What the ledger refuses, or a SKU the store does not have: asking again cannot
            // help (the callers answer a short line before this; a new caller gets it right).
            refused @ (EngineError::Rejected(_) | EngineError::UnknownSku) => {
                StepError::Refused(Cause::of("the stock engine refused it", refused))
            }
            transient @ (EngineError::Store(_)
            | EngineError::Overloaded
            | EngineError::Unavailable) => {
                StepError::Transient(Cause::of("the stock engine could not answer", transient))
            }
        }
    }
}

/// The stock an order takes and gives back, at the SKU actors.
#[derive(Clone)]
pub(super) struct Stock {
    engine: Engine,
    catalog: Catalog,
    monitor: Arc<Monitor>,
    #[cfg(feature = "fault-injection")]
    faults: Arc<super::faults::Faults>,
}

impl Stock {
    pub fn new(
        engine: Engine,
        catalog: Catalog,
        monitor: Arc<Monitor>,
        #[cfg(feature = "fault-injection")] faults: Arc<super::faults::Faults>,
    ) -> Stock {
        Stock {
            engine,
            catalog,
            monitor,
            #[cfg(feature = "fault-injection")]
            faults,
        }
    }

    /// Gives back whatever an order that ended without its goods still holds — its stock
    /// reservations and its payment's authorization, if an attempt made one — and settles it.
    pub async fn release_order(
        &self,
        records: &Records,
        payments: &Payments,
        order: &mut Order,
        deadline: &Deadline,
    ) -> Result<(), StepError> {
        // A reservation a handed-back delivery left in the persister's queue is settled first,
        // so the references read next are the last word.
        self.flush(deadline).await?;
        self.release_all(order.order_id, &order.lines(), true, deadline)
            .await?;
        void(payments, order.order_id, deadline).await?;
        records.settle(order, deadline).await
    }

    /// Reserves every line. `check_first` when this order may have been processed before: lines
    /// already reserved are recognised by their reference, and an order an earlier attempt was
    /// already releasing is not reserved again.
    pub async fn reserve_all(
        &self,
        order_id: Uuid,
        lines: &[(Sku, i64)],
        check_first: bool,
        deadline: &Deadline,
    ) -> Result<Reservation, StepError> {
        if check_first {
            // A change an earlier attempt left in the persister's queue is settled first, so the
            // references read next are the last word (and memory holds nothing they do not).
            self.flush(deadline).await?;
            for (sku, _) in lines {
                if self.applied(sku, &release_ref(order_id), deadline).await? {
                    return Ok(Reservation::Short {
                        short: self.short_lines(lines),
                        held: lines.to_vec(),
                    });
                }
            }
        }
        let reference = reserve_ref(order_id);
        for (sku, _) in lines {
            self.monitor.record_reservation(sku.as_str());
        }
        let results = join_all(lines.iter().map(|(sku, q)| {
            self.stock_change(sku, StockOp::Reserve(*q), &reference, check_first, deadline)
        }))
        .await;
        let mut short = Vec::new();
        let mut held = Vec::new();
        for ((sku, q), r) in lines.iter().zip(results) {
            match r? {
                Line::Done => held.push((sku.clone(), *q)),
                Line::Short(available) => short.push(ShortLine {
                    sku: sku.clone(),
                    requested: *q,
                    available,
                    suggestions: self.catalog.similar(sku, SUGGESTIONS).unwrap_or_default(),
                }),
            }
        }
        if short.is_empty() {
            Ok(Reservation::All)
        } else {
            Ok(Reservation::Short { short, held })
        }
    }

    /// Waits until every stock change submitted so far is committed or refused.
    pub async fn flush(&self, deadline: &Deadline) -> Result<(), StepError> {
        deadline
            .bound(self.engine.flush())
            .await?
            .map_err(|e| StepError::Transient(Cause::of("the stock engine could not flush", e)))
    }

    /// Lines the engine already knows it cannot serve, with suggestions.
    pub fn short_lines(&self, lines: &[(Sku, i64)]) -> Vec<ShortLine> {
        lines
            .iter()
            .filter_map(|(sku, q)| {
                let available = self.catalog.available(sku);
                (available < *q).then(|| ShortLine {
                    sku: sku.clone(),
                    requested: *q,
                    available: available.max(0),
                    suggestions: self.catalog.similar(sku, SUGGESTIONS).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Releases the lines' reservations (idempotently, by reference). With `check_first`, only
    /// lines whose reservation is recorded are released; without, the caller knows they are.
    pub async fn release_all(
        &self,
        order_id: Uuid,
        lines: &[(Sku, i64)],
        check_first: bool,
        deadline: &Deadline,
    ) -> Result<(), StepError> {
        let reference = release_ref(order_id);
        let reserved = reserve_ref(order_id);
        for (sku, q) in lines {
            #[cfg(feature = "fault-injection")]
            {
                let fail = self
                    .faults
                    .fail_release_of
                    .lock()
                    .map(|f| f.as_ref() == Some(sku))
                    .unwrap_or(false);
                if fail {
                    return Err(StepError::Transient(
                        format!("fault injection: release of {sku}").into(),
                    ));
                }
            }
            if check_first && !self.applied(sku, &reserved, deadline).await? {
                continue; // only what was reserved is released
            }
            match self
                .stock_change(sku, StockOp::Release(*q), &reference, check_first, deadline)
                .await?
            {
                Line::Done => {}
                Line::Short(_) => {
                    tracing::error!(%order_id, %sku, "a release was refused: the reservation was not there");
                }
            }
        }
        #[cfg(feature = "fault-injection")]
        if !lines.is_empty() && std::env::var_os("ORDERFLOW_FAULT_ABORT_AFTER_RELEASE").is_some() {
            eprintln!("fault injection: aborting after releasing order {order_id}");
            std::process::abort();
        }
        Ok(())
    }

    /// Whether the stock change with this reference is committed for this SKU.
    async fn applied(
        &self,
        sku: &Sku,
        reference: &str,
        deadline: &Deadline,
    ) -> Result<bool, StepError> {
        Ok(deadline
            .bound(self.engine.change_applied(sku, reference))
            .await??)
    }

    /// One stock change with a reference, until it is durable (or known done, or refused).
    async fn stock_change(
        &self,
        sku: &Sku,
        op: StockOp,
        reference: &str,
        mut check_first: bool,
        deadline: &Deadline,
    ) -> Result<Line, StepError> {
        loop {
            if deadline.passed() {
                return Err(StepError::Transient(
                    format!("stock change on {sku} did not settle").into(),
                ));
            }
            if check_first && self.applied(sku, reference, deadline).await? {
                return Ok(Line::Done);
            }
            // The actor answers from memory: this wait is not bounded by the deadline, so a
            // handed-back delivery never leaves a decision behind in an actor's mailbox.
            let applied = self
                .engine
                .apply_with_ref(sku, op, None, Some(reference.to_owned()))
                .await;
            match applied {
                Ok(applied) => match deadline.bound(applied.durable.wait()).await? {
                    Ok(()) => return Ok(Line::Done),
                    // Memory was wrong, or this reference is already in: look, then retry.
                    Err(DurabilityError::Conflict) => check_first = true,
                    Err(DurabilityError::Refused(why)) => {
                        return Err(StepError::Refused(why.into()))
                    }
                    Err(DurabilityError::Fenced) => return Err(StepError::Fenced),
                    Err(DurabilityError::Stopped) => {
                        return Err(StepError::Transient("the engine is stopping".into()))
                    }
                },
                Err(EngineError::Rejected(LedgerError::Insufficient { available, .. })) => {
                    return Ok(Line::Short(available))
                }
                Err(EngineError::Rejected(LedgerError::NotReserved { .. })) => {
                    return Ok(Line::Short(0))
                }
                Err(EngineError::Rejected(e)) => {
                    return Err(StepError::Refused(
                        format!("stock change refused: {e}").into(),
                    ))
                }
                Err(EngineError::UnknownSku) => return Ok(Line::Short(0)),
                Err(EngineError::Overloaded) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => {
                    let e = StepError::from(e);
                    if matches!(e, StepError::Refused(_)) {
                        return Err(e);
                    }
                    tracing::warn!(%sku, error = %e, "stock change retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_engine_refuses_is_refused_and_only_its_outages_are_transient() {
        let refused = [
            EngineError::Rejected(LedgerError::NonPositiveQuantity(0)),
            EngineError::Rejected(LedgerError::Overflow),
            EngineError::UnknownSku,
        ];
        for e in refused {
            let shown = e.to_string();
            assert!(
                matches!(StepError::from(e), StepError::Refused(_)),
                "{shown}"
            );
        }
        for e in [EngineError::Overloaded, EngineError::Unavailable] {
            let shown = e.to_string();
            assert!(
                matches!(StepError::from(e), StepError::Transient(_)),
                "{shown}"
            );
        }
    }
}
