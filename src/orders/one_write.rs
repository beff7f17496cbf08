//! The one write (issue 19, item 3; `docs/one-write.md`): a first delivery of a checkout is
//! decided in memory — its lines held at their SKU actors ([`crate::engine::Engine::hold`]), its
//! payment authorized, a delivery slot booked — and written **once, decided**, in one
//! transaction of the order writer: the order row with its key, fingerprint and whole history,
//! its held units as reservations (the guarded `stock` deltas and their `stock_events`
//! references), its notification. Then its events, then the ack.
//!
//! ```text
//!  delivery ─▶ hold every line ─all held─▶ authorize ─approved─▶ book a slot ─▶ scheduled ┐
//!                  │                           └─declined─▶ drop the holds ─▶ failed      ├─▶ one write
//!                  └─short─▶ drop the holds ─▶ rejected (with suggestions) ───────────────┘
//!  one write ─written─▶ holds become reservations ─▶ events (confirmed) ─▶ ack
//!            ─exists / stock refused─▶ holds dropped ─▶ the staged path takes the order from there
//! ```
//!
//! Nothing of the order reaches PostgreSQL before its decision: a crash before the commit
//! leaves the checkout in the queue and no trace of it, and the redelivery (`redelivered`) is
//! taken by the staged path ([`super::pipeline`]), which resumes from whatever is recorded and
//! voids an authorization an order that ends rejected may hold. The order's lock (held from the
//! first hold to the ack) keeps a cancel of it waiting until it is decided.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use uuid::Uuid;

use super::payment::Authorization;
use super::pipeline::{Checkouts, Request};
use super::writer::{OrderWrite, OrderWritten};
use super::{create, Cause, Deadline, StepError, SUGGESTIONS};
use crate::domain::delivery::DeliverySlot;
use crate::domain::flow::{self, AfterPayment, AfterReservation};
use crate::domain::order::{Order, OrderStatus, Rejection, ShortLine};
use crate::domain::{LedgerError, Sku};
use crate::engine::{EngineError, HoldToken};
use crate::persistence::orders::{DecidedOutcome, DecidedRow, NewOrderRow};

/// Where the one write left a delivery.
pub(super) enum Once {
    /// Decided, written and announced.
    Decided,
    /// The message can never make an order: the reason, for its dead letter.
    Refused(String),
    /// The staged path goes on with the order: it was there already (an earlier delivery), or
    /// the database refused what memory held.
    Staged,
}

/// Units held at one SKU's actor for this order, and the actor that holds them.
#[derive(Debug, Clone)]
struct Held {
    sku: Sku,
    qty: i64,
    token: HoldToken,
}

/// What an order decided in memory holds, and what it took on the way.
struct Decided {
    /// Units held at the SKU actors (a scheduled order's lines; nothing otherwise).
    held: Vec<Held>,
    /// The delivery slot booked (a scheduled order).
    slot: Option<DeliverySlot>,
}

/// Orders being decided in memory, readable by `GET /v1/orders/{id}` until they are written.
pub(super) type InFlight = dashmap::DashMap<Uuid, Order>;

/// Takes the order out of [`InFlight`] when its attempt ends, however it ends.
struct Listed<'a>(&'a InFlight, Uuid);

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

impl Checkouts {
    /// Decides a first delivery in memory and writes it once.
    pub(super) async fn run_once(
        &self,
        request: &Request<'_>,
        order_id: Uuid,
        deadline: &Deadline,
    ) -> Result<Once, StepError> {
        let p = self.parts();
        let lines = match create::lines(p, request, order_id, deadline).await? {
            Ok(lines) => lines,
            Err(refused) => return Ok(Once::Refused(refused)),
        };
        let mut order = match create::new_order(p, request, order_id, lines) {
            Ok(order) => order,
            Err(refused) => return Ok(Once::Refused(refused)),
        };
        self.in_flight().insert(order_id, order.clone());
        let _listed = Listed(self.in_flight(), order_id);
        let decided = if order.status == OrderStatus::Received {
            self.decide_in_memory(&mut order, request).await?
        } else {
            // Decided already (a cart that cannot serve it): nothing to hold.
            Decided {
                held: Vec::new(),
                slot: None,
            }
        };
        self.write_once(order, decided, request, deadline).await
    }

    /// Holds every line and decides: rejected short (holds dropped), failed on a declined
    /// payment (holds dropped), or scheduled (holds kept for the write).
    async fn decide_in_memory(
        &self,
        order: &mut Order,
        request: &Request<'_>,
    ) -> Result<Decided, StepError> {
        let p = self.parts();
        let (held, short) = self.hold_all(order).await?;
        fault_point("held");
        let reserved_at = p.clock.now();
        if short.is_empty() {
            // Held, the payment next: a reader sees it `reserved` meanwhile.
            if let Some(mut shown) = self.in_flight().get_mut(&order.order_id) {
                shown.status = OrderStatus::Reserved;
                shown.history.push((OrderStatus::Reserved, reserved_at));
                shown.updated_at = reserved_at;
            }
        }
        if !short.is_empty() {
            self.drop_holds(&held);
            let found = flow::Reserved::Short {
                kept_any: !held.is_empty(),
            };
            if let AfterReservation::Reject { reason, .. } =
                flow::after_reservation(order.origin, true, found)
            {
                let rejection = Rejection::short(reason, short);
                decide(
                    order,
                    OrderStatus::Rejected,
                    None,
                    None,
                    Some(rejection),
                    reserved_at,
                );
            }
            return Ok(Decided {
                held: Vec::new(),
                slot: None,
            });
        }
        self.pay_and_book(order, request, held, reserved_at).await
    }

    /// Authorizes the payment of an order that holds every line, and decides: scheduled with a
    /// slot (its holds kept for the write), or failed (its holds dropped).
    async fn pay_and_book(
        &self,
        order: &mut Order,
        request: &Request<'_>,
        held: Vec<Held>,
        reserved_at: DateTime<Utc>,
    ) -> Result<Decided, StepError> {
        let p = self.parts();
        // From here on an authorization may exist (an answer lost on the way counts): whoever
        // decides the order rejected voids it.
        request.may_be_authorized.store(true, Ordering::Relaxed);
        // Not bounded by the retry window (nor is the staged path's): a slow gateway is no
        // outage, and the units stay held meanwhile.
        let authorized = p
            .payments
            .authorize(
                order.order_id,
                order.total_cents,
                &order.currency,
                request.payment,
            )
            .await
            .map_err(|e| StepError::Transient(Cause::of("the payment gateway did not answer", e)));
        let auth = match authorized {
            Ok(auth) => auth,
            Err(e) => {
                self.drop_holds(&held);
                return Err(e);
            }
        };
        fault_point("authorized");
        let via = Some((OrderStatus::Reserved, reserved_at));
        let now = p.clock.now();
        match (
            flow::after_payment(matches!(auth, Authorization::Approved { .. })),
            auth,
        ) {
            (AfterPayment::Schedule, _) => {
                let method = request.checkout.delivery_method;
                let Some(slot) = p.capacity.book(method, order.order_id, now) else {
                    self.drop_holds(&held);
                    return Err(StepError::Transient(
                        "no delivery capacity within a year".into(),
                    ));
                };
                decide(
                    order,
                    OrderStatus::Scheduled,
                    via,
                    Some(slot.clone()),
                    None,
                    now,
                );
                Ok(Decided {
                    held,
                    slot: Some(slot),
                })
            }
            (AfterPayment::Fail { reason }, auth) => {
                self.drop_holds(&held);
                let declined = match auth {
                    Authorization::Declined { reason } => reason,
                    Authorization::Approved { .. } => String::new(),
                };
                let rejection = Rejection::because(reason, declined);
                decide(order, OrderStatus::Failed, via, None, Some(rejection), now);
                Ok(Decided {
                    held: Vec::new(),
                    slot: None,
                })
            }
        }
    }

    /// Holds every line at its SKU's actor, all at once: the lines held, and those short (with
    /// suggestions). Any other answer drops what was held and is the attempt's failure.
    async fn hold_all(&self, order: &Order) -> Result<(Vec<Held>, Vec<ShortLine>), StepError> {
        let p = self.parts();
        let lines = order.lines();
        for (sku, _) in &lines {
            p.monitor.record_reservation(sku.as_str());
        }
        let answers = join_all(lines.iter().map(|(sku, q)| p.engine.hold(sku, *q))).await;
        let (mut held, mut short, mut failed) = (Vec::new(), Vec::new(), None);
        for ((sku, q), answer) in lines.into_iter().zip(answers) {
            let available = match answer {
                Ok(token) => {
                    held.push(Held { sku, qty: q, token });
                    continue;
                }
                Err(EngineError::Rejected(LedgerError::Insufficient { available, .. })) => {
                    available
                }
                Err(EngineError::UnknownSku) => 0,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            let suggestions = p.catalog.similar(&sku, SUGGESTIONS).unwrap_or_default();
            short.push(ShortLine {
                sku,
                requested: q,
                available: available.max(0),
                suggestions,
            });
        }
        if let Some(e) = failed {
            self.drop_holds(&held);
            return Err(match e {
                // The ledger refuses what the line asks (out of range): asking again cannot
                // help — the message's failure, as the staged path has it.
                EngineError::Rejected(why) => {
                    StepError::Refused(format!("stock change refused: {why}").into())
                }
                other => StepError::from(other),
            });
        }
        Ok((held, short))
    }

    /// Writes the decided order once, with what it holds; then announces it.
    async fn write_once(
        &self,
        order: Order,
        decided: Decided,
        request: &Request<'_>,
        deadline: &Deadline,
    ) -> Result<Once, StepError> {
        let p = self.parts();
        let notification = super::transitions::notification_for(
            &order,
            order.status,
            order.rejection.as_ref(),
            order.updated_at,
        );
        let row = DecidedRow {
            order: NewOrderRow::of(&order, request.key, &request.checkout.address),
            notification,
            holds: decided
                .held
                .iter()
                .map(|h| (h.sku.clone(), h.qty))
                .collect(),
        };
        // The write has the retry window from now: what came before it (a slow gateway) is not
        // the database's trouble.
        let deadline = Deadline::after(p.config.retry_window).max(*deadline);
        let ticket = match p
            .records
            .submit(OrderWrite::Decided(Box::new(row)), &deadline)
            .await
        {
            Ok(ticket) => ticket,
            Err(e) => {
                self.let_go(&decided, request);
                return Err(e);
            }
        };
        // The holds follow the write's outcome whenever it comes — also after this attempt gave
        // up waiting (a write that timed out may still commit).
        let mut wait = Box::pin(ticket.wait());
        let written = match deadline.bound(&mut wait).await {
            Ok(written) => written,
            Err(timed_out) => {
                let (engine, held) = (p.engine.clone(), decided.held.clone());
                tokio::spawn(async move { settle_holds(&engine, &held, &wait.await) });
                return Err(timed_out);
            }
        };
        settle_holds(&p.engine, &decided.held, &written);
        self.after_write(order, &decided, written, request, &deadline)
            .await
    }

    /// What the one write's answer leads to: the decision announced, or the staged path (the
    /// holds already follow the answer).
    async fn after_write(
        &self,
        order: Order,
        decided: &Decided,
        written: Result<OrderWritten, crate::batch::WriteError>,
        request: &Request<'_>,
        deadline: &Deadline,
    ) -> Result<Once, StepError> {
        let p = self.parts();
        let outcome = match written {
            Ok(OrderWritten::Decided(outcome)) => outcome,
            Ok(other) => return Err(StepError::Refused(format!("internal: {other:?}").into())),
            Err(e) => {
                let e = StepError::from(e);
                if matches!(e, StepError::Refused(_)) && decided.slot.is_some() {
                    // Never an order (dead-lettered): its authorization holds nothing.
                    super::reservations::void(&p.payments, order.order_id, deadline).await?;
                }
                return Err(e);
            }
        };
        match outcome {
            DecidedOutcome::Written(_) => {
                fault_point("committed");
                p.keys
                    .forget(request.checkout.customer_id.as_str(), request.key);
                p.monitor.record_decision(
                    order.status.as_str(),
                    order.rejection.as_ref().map(|r| r.reason.as_str()),
                );
                p.records.announce_steps(&order);
                p.records.publish_decision(&order).await?;
                fault_point("announced");
                Ok(Once::Decided)
            }
            // Memory held units the database does not have (reloaded): the staged path decides
            // the order again from the database's numbers (voiding the authorization if it ends
            // rejected).
            DecidedOutcome::StockRefused => {
                if let Some(slot) = &decided.slot {
                    p.capacity
                        .unbook(request.checkout.delivery_method, slot.scheduled_for);
                }
                Ok(Once::Staged)
            }
            // The order is there already (an earlier delivery's, or this write's own commit
            // whose answer was lost): the staged path announces what is recorded.
            DecidedOutcome::Exists | DecidedOutcome::Unsure => {
                self.not_ours(&order, decided, request, deadline).await?;
                Ok(Once::Staged)
            }
        }
    }

    /// This attempt's decision lost to one recorded before it: what it took for itself goes —
    /// the slot, unless the recorded order has it; the authorization, unless the recorded order
    /// is scheduled (it then stands for that order).
    async fn not_ours(
        &self,
        order: &Order,
        decided: &Decided,
        request: &Request<'_>,
        deadline: &Deadline,
    ) -> Result<(), StepError> {
        let Some(slot) = &decided.slot else {
            return Ok(()); // nothing booked, nothing authorized
        };
        let p = self.parts();
        let recorded = deadline.bound(p.records.get(order.order_id)).await??;
        let scheduled = recorded
            .as_ref()
            .is_some_and(|o| o.status == OrderStatus::Scheduled);
        if recorded.as_ref().and_then(|o| o.delivery.as_ref()) != Some(slot) {
            p.capacity
                .unbook(request.checkout.delivery_method, slot.scheduled_for);
        }
        if !scheduled {
            super::reservations::void(&p.payments, order.order_id, deadline).await?;
        }
        Ok(())
    }

    /// An order decided in memory that was never submitted: its holds and its slot go.
    fn let_go(&self, decided: &Decided, request: &Request<'_>) {
        self.drop_holds(&decided.held);
        if let Some(slot) = &decided.slot {
            self.parts()
                .capacity
                .unbook(request.checkout.delivery_method, slot.scheduled_for);
        }
    }

    fn drop_holds(&self, held: &[Held]) {
        for h in held {
            self.parts().engine.drop_hold(&h.sku, h.qty, h.token);
        }
    }
}

/// Held units after their order's write: reservations when it was written, let go otherwise
/// (and the SKU reloaded when the database refused them, or when the write may have been an
/// earlier attempt's commit).
fn settle_holds(
    engine: &crate::engine::Engine,
    held: &[Held],
    written: &Result<OrderWritten, crate::batch::WriteError>,
) {
    let outcome = match written {
        Ok(OrderWritten::Decided(outcome)) => outcome,
        // The writer stopped with it queued: written or not, nobody knows.
        Err(crate::batch::WriteError::Stopped) => &DecidedOutcome::Unsure,
        _ => &DecidedOutcome::Exists,
    };
    for h in held {
        match outcome {
            DecidedOutcome::Written(after) => match after.iter().find(|(s, _)| *s == h.sku) {
                Some((_, row)) => engine.holds_committed(&h.sku, h.qty, 1, *row, h.token),
                None => engine.drop_hold(&h.sku, h.qty, h.token),
            },
            DecidedOutcome::Exists => engine.drop_hold(&h.sku, h.qty, h.token),
            DecidedOutcome::StockRefused | DecidedOutcome::Unsure => {
                engine.drop_hold(&h.sku, h.qty, h.token);
                engine.resync(&h.sku);
            }
        }
    }
}

/// The order decided in memory: the step on the way (`reserved`) and the decision in its
/// history, with what the decision carries.
fn decide(
    order: &mut Order,
    to: OrderStatus,
    via: Option<(OrderStatus, DateTime<Utc>)>,
    delivery: Option<DeliverySlot>,
    rejection: Option<Rejection>,
    at: DateTime<Utc>,
) {
    if let Some(step) = via {
        order.history.push(step);
    }
    order.history.push((to, at));
    order.status = to;
    order.updated_at = at;
    order.delivery = delivery;
    order.rejection = rejection;
    order.settled = true;
}

/// Fault injection: `ORDERFLOW_FAULT_ABORT_AT=<point>` ends the process there, as `kill -9`
/// would (the crash tests of the one write).
fn fault_point(point: &str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var("ORDERFLOW_FAULT_ABORT_AT").as_deref() == Ok(point) {
        eprintln!("fault injection: aborting at {point}");
        std::process::abort();
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}
