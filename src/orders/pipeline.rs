//! The `orders.checkout` consumer: from a delivery to a decided, durable order.
//!
//! ```text
//!  delivery ─parse/validate─▶ create (or find) the order ─▶ received ─reserve all─▶ pay ─▶ scheduled
//!                                                              │            └──declined──▶ failed
//!                                                              └─short──▶ rejected
//!  failed / rejected / cancelled with stock still held ─release─▶ settled
//! ```
//!
//! Each pass of [`Checkouts::run`] looks at where the order is and takes the next step, so
//! a redelivery resumes where the last attempt stopped. Transient trouble is retried within the
//! retry window, then the delivery is handed back (without using up its delivery limit);
//! anything that can never succeed is dead-lettered with the reason.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::payment::Authorization;
use super::reservations::Reservation;
use super::transitions::Move;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::delivery::{self, Parsed};
use super::one_write::Once;
use super::processing::InProcess;
use super::{create, fingerprint, Deadline, Parts, StepError, HTTP_ORIGIN};
use crate::domain::checkout::{Checkout, Payment};
use crate::domain::clock;
use crate::domain::flow::{self, AfterPayment, AfterReservation, Step};
use crate::domain::order::{Order, OrderStatus, Origin, Rejection};
use crate::domain::Sku;
use crate::messaging::consumer::{Message, Outcome};

/// A payment answered within this is written together with `reserved`; a slower one gets
/// `reserved` written (and visible) first.
const RESERVED_VISIBLE_AFTER: Duration = Duration::from_millis(250);

/// Where processing starts: the order, or why the message can never make one.
pub(super) enum Start {
    Order { order: Box<Order>, fresh: bool },
    Refuse(String),
}

/// Where a pass of [`Checkouts::run`] ended.
enum Ran {
    /// The order is decided (now, or before this delivery), settled and announced.
    Decided,
    /// The message can never make an order: the reason, for its dead letter.
    Refused(String),
}

/// What one delivery carries, once validated.
pub(super) struct Request<'a> {
    pub(super) checkout: &'a Checkout,
    /// The payment as kept: a card's token (described by the gateway), pix or boleto.
    pub(super) payment: &'a Payment,
    pub(super) key: &'a str,
    pub(super) fingerprint: &'a str,
    pub(super) origin: Origin,
    /// The order may hold an authorization an earlier attempt made (a redelivery, or a one
    /// write that did not land): an order that ends rejected voids it.
    pub(super) may_be_authorized: std::sync::atomic::AtomicBool,
}

/// The `orders.checkout` consumer's handler: from a delivery to a decided, durable order.
#[derive(Clone)]
pub(super) struct Checkouts {
    p: Arc<Parts>,
    /// Deliveries being processed now, and the most there ever were.
    processing: Arc<(AtomicUsize, AtomicUsize)>,
    /// Orders being decided in memory by the one write, not yet written.
    in_flight: Arc<super::one_write::InFlight>,
}

impl Checkouts {
    pub fn new(p: Arc<Parts>) -> Checkouts {
        Checkouts {
            p,
            processing: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    pub(super) fn parts(&self) -> &Parts {
        &self.p
    }

    pub(super) fn in_flight(&self) -> &super::one_write::InFlight {
        &self.in_flight
    }

    /// An order being decided in memory (not written yet), as it stands.
    pub fn in_flight_order(&self, order_id: uuid::Uuid) -> Option<Order> {
        self.in_flight.get(&order_id).map(|o| o.clone())
    }

    /// Deliveries being processed now.
    pub fn processing(&self) -> usize {
        self.processing.0.load(Ordering::Relaxed)
    }

    /// The most deliveries ever processed at once.
    pub fn processing_peak(&self) -> usize {
        self.processing.1.load(Ordering::Relaxed)
    }

    /// Handles one delivery of `orders.checkout`.
    #[tracing::instrument(skip_all, fields(message_id = message.message_id.as_deref().unwrap_or("")))]
    pub async fn process(&self, message: Message) -> Outcome {
        let _counted = InProcess::enter(&self.processing);
        let parsed = match delivery::parse(&message, self.p.clock.now()) {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        #[cfg(feature = "fault-injection")]
        self.fault_panic(&parsed.checkout);
        let Parsed {
            body,
            checkout,
            key,
            judged_at,
        } = parsed;
        // The card a token stands for, as the gateway knows it, judged when it was accepted.
        let payment = match self
            .p
            .payments
            .payment_to_keep(&checkout.payment, clock::year_month(judged_at))
            .await
        {
            Ok(p) => p,
            Err(problem) => return delivery::payment_outcome(problem),
        };
        let origin = if message.app_id.as_deref() == Some(HTTP_ORIGIN) {
            Origin::Http
        } else {
            Origin::Queue
        };
        // The id intake recorded for the key (orderflow's own checkouts), else one keyed with
        // the server's secret: stable for a redelivery, computable by no client.
        if origin == Origin::Http {
            // A repeat of this key goes on to its order even while admission sheds (after a
            // failover too: this process may not be the one that took the checkout).
            self.p
                .keys
                .recent
                .insert(checkout.customer_id.as_str(), &key);
        }
        let order_id = match (origin, message.order_id) {
            (Origin::Http, Some(id)) => id,
            _ => self.p.keys.ids.derive(checkout.customer_id.as_str(), &key),
        };
        // Intake's fingerprint of the request (it held a card where this body holds a token).
        let fp = match (origin, message.fingerprint.clone()) {
            (Origin::Http, Some(fp)) => fp,
            _ => fingerprint(&body),
        };
        let request = Request {
            checkout: &checkout,
            payment: &payment,
            key: &key,
            fingerprint: &fp,
            origin,
            may_be_authorized: std::sync::atomic::AtomicBool::new(
                message.redelivered || message.handed_back,
            ),
        };
        self.decide(&request, order_id, &message).await
    }

    /// Fault injection: a checkout of the chosen SKU panics while it is handled.
    #[cfg(feature = "fault-injection")]
    fn fault_panic(&self, checkout: &Checkout) {
        let panic_on = self.p.faults.panic_on.lock().ok().and_then(|s| s.clone());
        if let Some(sku) = panic_on {
            if matches!(&checkout.lines, crate::domain::checkout::LineSource::Items(lines) if lines.iter().any(|(s, _)| *s == sku))
            {
                panic!("fault injection: a checkout of {sku}");
            }
        }
    }

    /// Runs the order to its decision under its lock, retrying transient trouble within the
    /// retry window: acked once decided and announced, dead-lettered when it can never be.
    async fn decide(
        &self,
        request: &Request<'_>,
        order_id: uuid::Uuid,
        message: &Message,
    ) -> Outcome {
        let mut deadline = Deadline::after(self.p.config.retry_window);
        let _guard = self.p.locks.of(order_id).lock().await;
        // A first delivery is decided in memory and written once; a redelivery, and any attempt
        // after the first, takes the staged path (it resumes from what is recorded).
        // (Copies an earlier delivery may have taken some way — redeliveries, hand-backs —
        // are taken by the staged path.)
        let mut once = self.p.config.one_write && !message.redelivered && !message.handed_back;
        loop {
            let ran = if std::mem::take(&mut once) {
                match self.run_once(request, order_id, &deadline).await {
                    Ok(Once::Decided) => Ok(Ran::Decided),
                    Ok(Once::Refused(reason)) => Ok(Ran::Refused(reason)),
                    Ok(Once::Staged) => {
                        // A retry window of its own: the time the attempt spent deciding in
                        // memory (a slow gateway) was no outage.
                        deadline = Deadline::after(self.p.config.retry_window);
                        self.run(request, order_id, &deadline).await
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.run(request, order_id, &deadline).await
            };
            let ran = match ran {
                Ok(Ran::Decided) => Ok(None),
                Ok(Ran::Refused(reason)) => Ok(Some(reason)),
                Err(e) => Err(e),
            };
            match ran {
                Ok(Some(reason)) => return self.dead_letter(request, order_id, reason),
                Err(StepError::Refused(cause)) => {
                    return self.dead_letter(
                        request,
                        order_id,
                        crate::messaging::error_chain(&cause),
                    )
                }
                Ok(None) => {
                    self.p
                        .monitor
                        .record_processed(message.accepted_ms, message.consumed);
                    return Outcome::Ack;
                }
                Err(StepError::Fenced) => return Outcome::Abandon,
                Err(StepError::Transient(cause)) => {
                    let e = crate::messaging::error_chain(&cause);
                    if deadline.passed() {
                        tracing::warn!(%order_id, error = %e, "order processing handed back to the queue");
                        return Outcome::Retry;
                    }
                    tracing::warn!(%order_id, error = %e, "order processing retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// The message can never make an order: dead-letter it with the reason.
    fn dead_letter(&self, request: &Request<'_>, order_id: uuid::Uuid, reason: String) -> Outcome {
        self.p
            .keys
            .forget(request.checkout.customer_id.as_str(), request.key);
        tracing::warn!(%order_id, %reason, "checkout cannot be processed");
        Outcome::DeadLetter(reason)
    }

    /// Takes the order to a decision (or finds it decided).
    async fn run(
        &self,
        request: &Request<'_>,
        order_id: uuid::Uuid,
        deadline: &Deadline,
    ) -> Result<Ran, StepError> {
        let (mut order, fresh) =
            match create::create_or_load(&self.p, request, order_id, deadline).await? {
                Start::Order { order, fresh } => (*order, fresh),
                Start::Refuse(reason) => return Ok(Ran::Refused(reason)),
            };
        // Lines this attempt knows it holds (a fresh order reserved nothing before).
        let mut held: Option<Vec<(Sku, i64)>> = None;
        // Every delivery announces the decision it finds or makes (events confirmed before the
        // ack; a failed publish is transient like any other: retried, or handed back and
        // published again by the redelivery).
        let mut announced = false;
        loop {
            let position = flow::Position {
                status: order.status,
                settled: order.settled,
                holds_known: held.is_some(),
                announced,
            };
            match flow::next(position) {
                Step::Reserve => {
                    held = self.reserve(&mut order, request, fresh, deadline).await?;
                }
                Step::PayAndDecide => {
                    self.pay_and_decide(&mut order, request, None, deadline)
                        .await?
                }
                Step::ReleaseHeld | Step::ReleaseRecorded => match held.take() {
                    Some(lines) => {
                        self.p
                            .stock
                            .release_all(order_id, &lines, false, deadline)
                            .await?;
                        self.p.records.settle(&mut order, deadline).await?;
                    }
                    // Not known from this attempt: look at what is recorded (after a flush).
                    None => {
                        self.p
                            .stock
                            .release_order(&self.p.records, &self.p.payments, &mut order, deadline)
                            .await?
                    }
                },
                Step::Announce => {
                    self.p.records.publish_decision(&order).await?;
                    announced = true;
                }
                Step::Done => return Ok(Ran::Decided),
            }
        }
    }

    /// Reserves the order's lines and decides what that allows: on to payment, or rejected
    /// short. Returns the lines this attempt knows it holds (a fresh order reserved nothing
    /// before; a redelivery cannot tell).
    async fn reserve(
        &self,
        order: &mut Order,
        request: &Request<'_>,
        fresh: bool,
        deadline: &Deadline,
    ) -> Result<Option<Vec<(Sku, i64)>>, StepError> {
        let lines = order.lines();
        let (found, kept, short) = match self
            .p
            .stock
            .reserve_all(order.order_id, &lines, !fresh, deadline)
            .await?
        {
            Reservation::All => (flow::Reserved::All, lines, Vec::new()),
            Reservation::Short { short, held: kept } => (
                flow::Reserved::Short {
                    kept_any: !kept.is_empty(),
                },
                kept,
                short,
            ),
        };
        match flow::after_reservation(order.origin, fresh, found) {
            // Reserved: go on to payment; `reserved` is recorded with the decision,
            // in the same write (a crash before it redoes the idempotent steps).
            AfterReservation::Pay => {
                let reserved_at = self.p.clock.now();
                self.pay_and_decide(order, request, Some(reserved_at), deadline)
                    .await?
            }
            // The decision first; the lines it kept are released after.
            AfterReservation::Reject { reason, settled } => {
                // An earlier attempt may have authorized it (and crashed, or lost its write):
                // the funds are not held for an order that ends rejected. Voided before the
                // decision is written (idempotent), so a failure here is retried by whoever
                // takes the order next, never forgotten behind a written decision.
                if request
                    .may_be_authorized
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    super::reservations::void(&self.p.payments, order.order_id, deadline).await?;
                }
                self.p
                    .records
                    .transition(
                        order,
                        Move {
                            rejection: Some(Rejection::short(reason, short)),
                            settled,
                            ..Move::to(OrderStatus::Rejected)
                        },
                        deadline,
                    )
                    .await?
            }
        }
        Ok(fresh.then_some(kept))
    }

    /// Authorizes the payment (outside every actor) and decides: `scheduled` with a delivery
    /// slot, or `failed` (stock released after, by the caller's next pass). `reserved_at` when
    /// the order is still `received` in the database: `reserved` is then written with the
    /// decision.
    async fn pay_and_decide(
        &self,
        order: &mut Order,
        request: &Request<'_>,
        reserved_at: Option<DateTime<Utc>>,
        deadline: &Deadline,
    ) -> Result<(), StepError> {
        let mut via = reserved_at.map(|at| (OrderStatus::Reserved, at));
        let currency = order.currency.clone();
        let authorize = self.p.payments.authorize(
            order.order_id,
            order.total_cents,
            &currency,
            request.payment,
        );
        tokio::pin!(authorize);
        let auth = if via.is_some() {
            tokio::select! {
                auth = &mut authorize => auth,
                // A slow gateway: make `reserved` durable and visible now, decide later.
                _ = tokio::time::sleep(RESERVED_VISIBLE_AFTER) => {
                    self.p.records.transition(order, Move::to(OrderStatus::Reserved), deadline).await?;
                    via = None;
                    if order.status != OrderStatus::Reserved {
                        return Ok(()); // it moved meanwhile; the caller looks again
                    }
                    authorize.await
                }
            }
        } else {
            authorize.await
        }
        .map_err(|e| {
            StepError::Transient(super::Cause::of("the payment gateway did not answer", e))
        })?;
        let declined = match auth {
            Authorization::Approved { .. } => None,
            Authorization::Declined { reason } => Some(reason),
        };
        match flow::after_payment(declined.is_none()) {
            AfterPayment::Schedule => self.schedule(order, request, via, deadline).await,
            AfterPayment::Fail { reason } => {
                self.p
                    .records
                    .transition(
                        order,
                        Move {
                            via,
                            rejection: Some(Rejection::because(
                                reason,
                                declined.unwrap_or_default(),
                            )),
                            settled: false,
                            ..Move::to(OrderStatus::Failed)
                        },
                        deadline,
                    )
                    .await
            }
        }
    }

    /// Paid: a delivery slot booked and the order scheduled (through `reserved` when that was
    /// not yet written).
    async fn schedule(
        &self,
        order: &mut Order,
        request: &Request<'_>,
        via: Option<(OrderStatus, DateTime<Utc>)>,
        deadline: &Deadline,
    ) -> Result<(), StepError> {
        let method = request.checkout.delivery_method;
        let Some(slot) = self
            .p
            .capacity
            .book(method, order.order_id, self.p.clock.now())
        else {
            return Err(StepError::Transient(
                "no delivery capacity within a year".into(),
            ));
        };
        let moved = self
            .p
            .records
            .transition(
                order,
                Move {
                    via,
                    delivery: Some(slot.clone()),
                    ..Move::to(OrderStatus::Scheduled)
                },
                deadline,
            )
            .await;
        if moved.is_ok() && order.status != OrderStatus::Scheduled {
            // A cancel (or an expiry) decided the order while this attempt was paying: the
            // authorization this attempt just made holds the customer's funds for nothing.
            super::reservations::void(&self.p.payments, order.order_id, deadline).await?;
        }
        if moved.is_ok() && order.delivery.as_ref() != Some(&slot) {
            // Another attempt won with another slot: this one is free again. (When the write
            // failed it may still commit later; the place stays booked — a day is under-filled
            // by one rather than over-filled.)
            self.p.capacity.unbook(method, slot.scheduled_for);
        }
        moved
    }
}
