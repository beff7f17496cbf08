//! The `orders.checkout` consumer: from a delivery to a decided, durable order.
//!
//! ```text
//!  delivery ─parse/validate─▶ create (or find) the order ─▶ received ─reserve all─▶ pay ─▶ scheduled
//!                                                              │            └──declined──▶ failed
//!                                                              └─short──▶ rejected
//!  failed / rejected / cancelled with stock still held ─release─▶ settled
//! ```
//!
//! Each pass of [`OrderService::run`] looks at where the order is and takes the next step, so
//! a redelivery resumes where the last attempt stopped. Transient trouble is retried within the
//! retry window, then the delivery is handed back (without using up its delivery limit);
//! anything that can never succeed is dead-lettered with the reason.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::payment::{Authorization, PaymentProblem};
use super::reservations::Reservation;
use super::transitions::Move;
use super::{fingerprint, Deadline, OrderService, StepError, HTTP_ORIGIN};
use crate::domain::card_data;
use crate::domain::checkout::{Checkout, CheckoutInput, Payment, PaymentRequest};
use crate::domain::clock;
use crate::domain::flow::{self, AfterReservation, Step};
use crate::domain::order::{Order, OrderStatus, Origin, Rejection, RejectionReason};
use crate::domain::{parse_key, Sku};
use crate::messaging::consumer::{Message, Outcome};

/// A payment answered within this is written together with `reserved`; a slower one gets
/// `reserved` written (and visible) first.
const RESERVED_VISIBLE_AFTER: Duration = Duration::from_millis(250);

/// Where processing starts: the order, or why the message can never make one.
pub(super) enum Start {
    Order { order: Box<Order>, fresh: bool },
    Refuse(String),
}

/// Where a pass of [`OrderService::run`] ended.
enum Ran {
    /// The order is decided (now, or before this delivery) and settled.
    Decided(Box<Order>),
    /// The message can never make an order: the reason, for its dead letter.
    Refused(String),
}

/// A delivery read and validated: its body (kept for the fingerprint), the checkout, its key and
/// when it was judged.
struct Parsed {
    body: serde_json::Value,
    checkout: Checkout,
    key: String,
    judged_at: DateTime<Utc>,
}

/// A payment that cannot be kept: a refused or expired token is the message's permanent
/// failure; a gateway away is transient.
fn payment_outcome(problem: PaymentProblem) -> Outcome {
    match problem {
        PaymentProblem::Refused(why) => {
            Outcome::DeadLetter(format!("invalid checkout: payment.card_token: {why}"))
        }
        PaymentProblem::Expired => {
            Outcome::DeadLetter("invalid checkout: payment.card_token: the card has expired".into())
        }
        PaymentProblem::Unavailable(why) => {
            tracing::warn!(error = %why, "the payment gateway is unavailable; handing the checkout back");
            Outcome::Retry
        }
    }
}

/// What one delivery carries, once validated.
pub(super) struct Request<'a> {
    pub(super) checkout: &'a Checkout,
    /// The payment as kept: a card's token (described by the gateway), pix or boleto.
    pub(super) payment: &'a Payment,
    pub(super) key: &'a str,
    pub(super) fingerprint: &'a str,
    pub(super) origin: Origin,
}

impl OrderService {
    /// Handles one delivery of `orders.checkout`.
    #[tracing::instrument(skip_all, fields(message_id = message.message_id.as_deref().unwrap_or("")))]
    pub async fn process(&self, message: Message) -> Outcome {
        let parsed = match self.parse(&message) {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        let Parsed {
            body,
            checkout,
            key,
            judged_at,
        } = parsed;
        // The card a token stands for, as the gateway knows it, judged when it was accepted.
        let payment = match self
            .payment_to_keep(&checkout.payment, clock::year_month(judged_at))
            .await
        {
            Ok(p) => p,
            Err(problem) => return payment_outcome(problem),
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
            self.inner
                .recent_keys
                .insert(checkout.customer_id.as_str(), &key);
        }
        let order_id = match (origin, message.order_id) {
            (Origin::Http, Some(id)) => id,
            _ => self.inner.ids.derive(checkout.customer_id.as_str(), &key),
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
        };
        self.decide(&request, order_id, &message).await
    }

    /// The delivery read and validated, or the outcome that ends it here.
    fn parse(&self, message: &Message) -> Result<Parsed, Outcome> {
        let body: serde_json::Value = serde_json::from_slice(&message.data)
            .map_err(|e| Outcome::DeadLetter(format!("body is not JSON: {e}")))?;
        // Card data never rests on a queue: only tokens may come this way (API.md). The dead
        // letter is a copy without it.
        if card_data::carried(&body) {
            return Err(Outcome::DeadLetterRedacted {
                reason: "card_data_refused: a checkout on a queue must carry a card_token, never a card number or security code".into(),
                body: card_data::redacted(&body),
            });
        }
        // Read from the tree (no copy of it): the tree stays for the fingerprint.
        let input = <CheckoutInput as serde::Deserialize>::deserialize(&body)
            .map_err(|e| Outcome::DeadLetter(format!("body is not a checkout: {e}")))?;
        let key = match message.message_id.as_deref().map(parse_key) {
            Some(Ok(k)) => k,
            Some(Err(e)) => {
                return Err(Outcome::DeadLetter(format!(
                    "message_id (the idempotency key) {e}"
                )))
            }
            None => {
                return Err(Outcome::DeadLetter(
                    "message_id (the idempotency key, 1 to 255 characters) is required".into(),
                ))
            }
        };
        // Validity is judged once, when the checkout was accepted: the publisher's timestamp
        // (orderflow's intake always sets it), else now.
        let judged_at = message
            .timestamp
            .and_then(|t| DateTime::<Utc>::from_timestamp(i64::try_from(t).ok()?, 0))
            .unwrap_or_else(|| self.inner.clock.now());
        let checkout = input
            .validate(clock::year_month(judged_at))
            .map_err(|fields| {
                Outcome::DeadLetter(format!("invalid checkout: {}", fields.summary()))
            })?;
        #[cfg(feature = "fault-injection")]
        self.fault_panic(&checkout);
        if let PaymentRequest::Card(_) = &checkout.payment {
            return Err(Outcome::DeadLetterRedacted {
                reason: "card_data_refused".into(),
                body: card_data::redacted(&body),
            });
        }
        Ok(Parsed {
            body,
            checkout,
            key,
            judged_at,
        })
    }

    /// Fault injection: a checkout of the chosen SKU panics while it is handled.
    #[cfg(feature = "fault-injection")]
    fn fault_panic(&self, checkout: &Checkout) {
        let panic_on = self
            .inner
            .faults
            .panic_on
            .lock()
            .ok()
            .and_then(|s| s.clone());
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
        let deadline = Deadline::after(self.inner.config.retry_window);
        let _guard = self.lock(order_id).lock().await;
        loop {
            let ran = match self.run(request, order_id, &deadline).await {
                // Decided: its events confirmed before the delivery is acked. A failed publish
                // is transient like any other: retried, or handed back and published again by
                // the redelivery.
                Ok(Ran::Decided(order)) => self.publish_decision(&order).await.map(|()| None),
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
                    self.inner
                        .broker
                        .monitor()
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
        self.forget_published(request);
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
        let (mut order, fresh) = match self.create_or_load(request, order_id, deadline).await? {
            Start::Order { order, fresh } => (*order, fresh),
            Start::Refuse(reason) => return Ok(Ran::Refused(reason)),
        };
        // Lines this attempt knows it holds (a fresh order reserved nothing before).
        let mut held: Option<Vec<(Sku, i64)>> = None;
        loop {
            let position = flow::Position {
                status: order.status,
                settled: order.settled,
                holds_known: held.is_some(),
            };
            match flow::next(position) {
                Step::Reserve => {
                    let lines = order.lines();
                    let (found, kept, short) =
                        match self.reserve_all(order_id, &lines, !fresh, deadline).await? {
                            Reservation::All => (flow::Reserved::All, lines, Vec::new()),
                            Reservation::Short { short, held: kept } => (
                                flow::Reserved::Short {
                                    kept_any: !kept.is_empty(),
                                },
                                kept,
                                short,
                            ),
                        };
                    held = fresh.then_some(kept);
                    match flow::after_reservation(order.origin, fresh, found) {
                        // Reserved: go on to payment; `reserved` is recorded with the decision,
                        // in the same write (a crash before it redoes the idempotent steps).
                        AfterReservation::Pay => {
                            let reserved_at = self.inner.clock.now();
                            self.pay_and_decide(&mut order, request, Some(reserved_at), deadline)
                                .await?
                        }
                        // The decision first; the lines it kept are released after.
                        AfterReservation::Reject { reason, settled } => {
                            self.transition(
                                &mut order,
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
                }
                Step::PayAndDecide => {
                    self.pay_and_decide(&mut order, request, None, deadline)
                        .await?
                }
                Step::ReleaseHeld | Step::ReleaseRecorded => match held.take() {
                    Some(lines) => {
                        self.release_all(order_id, &lines, false, deadline).await?;
                        self.settle(&mut order, deadline).await?;
                    }
                    // Not known from this attempt: look at what is recorded (after a flush).
                    None => self.release_order(&mut order, deadline).await?,
                },
                Step::Done => return Ok(Ran::Decided(Box::new(order))),
            }
        }
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
        let authorize = self.inner.gateway.authorize(
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
                    self.transition(order, Move::to(OrderStatus::Reserved), deadline).await?;
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
        match auth {
            Authorization::Approved { .. } => self.schedule(order, request, via, deadline).await,
            Authorization::Declined { reason } => {
                self.transition(
                    order,
                    Move {
                        via,
                        rejection: Some(Rejection::because(
                            RejectionReason::PaymentDeclined,
                            reason,
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
            .inner
            .capacity
            .book(method, order.order_id, self.inner.clock.now())
        else {
            return Err(StepError::Transient(
                "no delivery capacity within a year".into(),
            ));
        };
        let moved = self
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
        if moved.is_ok() && order.delivery.as_ref() != Some(&slot) {
            // Another attempt won with another slot: this one is free again. (When the write
            // failed it may still commit later; the place stays booked — a day is under-filled
            // by one rather than over-filled.)
            self.inner.capacity.unbook(method, slot.scheduled_for);
        }
        moved
    }

    /// The checkout is no longer on its way: intake answers a repeat from the database.
    pub(super) fn forget_published(&self, request: &Request<'_>) {
        let slot = (
            request.checkout.customer_id.as_str().to_owned(),
            request.key.to_owned(),
        );
        self.inner.published.remove(&slot);
    }
}
