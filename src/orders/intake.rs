//! HTTP intake of checkouts (`POST /v1/checkout`): admission, the idempotency key, the lines,
//! the fast path, the publish. Answers 202 only once the broker confirmed the checkout.
//!
//! The key is recorded in PostgreSQL (batched by the order writer) before the checkout is
//! published, with the fingerprint of its request, once the fast path took the checkout: one
//! refused at the door (out of stock, an unknown cart) records nothing, so a flash sale's
//! refusals cost a read, not a write, and their keys may be used again with another body (a
//! payment refused after the key was recorded lets it go again).
//! Recorded, the same key with another body is refused (422 `idempotency_mismatch`) across
//! restarts and after a publish that timed out. The same key with the same body before its
//! order exists is published again — harmless, the consumer is
//! idempotent — so a checkout whose publish was lost is not lost.

use std::time::Duration;

use uuid::Uuid;

use super::writer::{OrderWrite, OrderWritten};
use crate::monitor::places::Requester;
use std::sync::Arc;

use super::{fingerprint_of, Deadline, Parts, StepError};
use crate::auth::OrderIds;
use crate::domain::checkout::{Checkout, Payment, PaymentRequest};
use crate::domain::order::{OrderStatus, ShortLine};
use crate::domain::{FieldErrors, Sku};
use crate::messaging::checkout::OutgoingCheckout;
use crate::messaging::PublishError;
use crate::monitor::admission;
use crate::persistence::orders::{KeyRow, KeyState, RecordedKey};

mod lines;

/// What identifies a request's payment in its fingerprint: a typed card by a digest keyed with
/// the server's secret (the same card makes the same fingerprint; the digest tells nobody the
/// number), its holder and expiry — never the number or the CVV.
fn payment_identity(asked: &PaymentRequest, ids: &crate::auth::OrderIds) -> serde_json::Value {
    match asked {
        PaymentRequest::Ready(p) => serde_json::to_value(p).unwrap_or_default(),
        PaymentRequest::Card(card) => serde_json::json!({
            "method": "card",
            "digest": ids.digest("card", &card.number),
            "holder_name": card.holder_name,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
        }),
        PaymentRequest::Token(token) => serde_json::json!({"method": "card", "card_token": token}),
    }
}

/// The answer a recorded key gives a request with fingerprint `fp` whatever else holds: 422 for
/// another body, its order (200) once the order exists; `None` while the order is not decided.
fn answer_of(recorded: &RecordedKey, fp: &str) -> Result<Option<IntakeOutcome>, IntakeError> {
    if recorded.fingerprint != fp {
        return Err(IntakeError::Mismatch);
    }
    Ok(recorded
        .status
        .map(|status| IntakeOutcome::Existing(recorded.order_id, status)))
}

/// How long intake waits on the database before answering 503.
const INTAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a shed checkout's key lookup may take before the checkout is shed instead (a
/// healthy writer answers in a few milliseconds), and how many may be in flight at once.
const SHED_LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);
const SHED_LOOKUPS: usize = 64;

/// What intake did with a checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Queued now (or by an earlier request with the same key, still on its way): 202.
    Accepted(Uuid),
    /// The key's order exists already: 200 with its status.
    Existing(Uuid, OrderStatus),
}

/// Why intake refused a checkout.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the idempotency key was used with a different request")]
    Mismatch,
    #[error("invalid request")]
    Validation(FieldErrors),
    #[error("unknown cart")]
    UnknownCart,
    #[error("the cart already produced order {0}")]
    CartOrdered(Uuid),
    #[error("some items are out of stock")]
    OutOfStock(Vec<ShortLine>),
    #[error("{0}")]
    Unavailable(String),
    /// The payment gateway refused the card or its token.
    #[error("{1}")]
    Payment(&'static str, String),
    /// The broker refused the publish (`reject-publish`: the queue is at its hard bound).
    #[error("the checkout queue is full")]
    Overloaded { retry_after: u32 },
    /// Admission control: the wait a checkout can expect is over the budget, or the broker is
    /// blocked or stalled.
    #[error("{backlog} checkouts are waiting ({reason}); retry in {retry_after} s")]
    Shedding {
        backlog: u64,
        retry_after: u32,
        reason: &'static str,
    },
}

impl From<StepError> for IntakeError {
    fn from(e: StepError) -> Self {
        match e {
            // The cause goes to the log (under the request's id), never into the answer.
            StepError::Transient(why) => {
                tracing::warn!(error = %crate::messaging::error_chain(&why), "checkout intake: the database is unavailable");
                IntakeError::Unavailable("the database is unavailable".into())
            }
            StepError::Refused(why) => {
                tracing::error!(error = %crate::messaging::error_chain(&why), "checkout intake: refused");
                IntakeError::Validation(FieldErrors::single(
                    "body",
                    "the database refused this request",
                ))
            }
            StepError::Fenced => {
                IntakeError::Unavailable("this instance is no longer the active one".into())
            }
        }
    }
}

/// The HTTP door of the order pipeline: admission, the idempotency key, the fast path and the
/// publish.
#[derive(Clone)]
pub(super) struct Intake {
    p: Arc<Parts>,
    /// Key lookups of shed checkouts in flight at once (see [`Intake::admit`]).
    shed_lookups: Arc<tokio::sync::Semaphore>,
}

impl Intake {
    pub fn new(p: Arc<Parts>) -> Intake {
        Intake {
            p,
            shed_lookups: Arc::new(tokio::sync::Semaphore::new(SHED_LOOKUPS)),
        }
    }

    /// Validated checkout from `POST /v1/checkout`, past [`Intake::admit`] (its permit,
    /// if any, is held until the publish is over: until then this checkout waits where the
    /// broker cannot count it): the idempotency checks, the fast path, and the publish. Returns
    /// only once the broker confirmed (or refused) it.
    #[tracing::instrument(skip_all, fields(order_id))]
    pub async fn intake(
        &self,
        key: &str,
        checkout: Checkout,
        _admitted: Option<crate::monitor::Admitted>,
    ) -> Result<IntakeOutcome, IntakeError> {
        let checkout = &checkout;
        let customer = checkout.customer_id.as_str();
        // The request as the validator read it (a typed card as its keyed digest): what the
        // idempotency key is compared on.
        let mut canonical = Vec::with_capacity(512);
        checkout.write_canonical(
            &mut canonical,
            &payment_identity(&checkout.payment, &self.p.keys.ids),
        );
        let fp = fingerprint_of(&canonical);
        let deadline = Deadline::after(INTAKE_TIMEOUT);
        let _guard = deadline
            .bound(self.p.keys.lock(customer, key).lock())
            .await?;
        // A repeat of a checkout still in the queue gets its 202 again.
        if let Some((order_id, known_fp)) = self.p.keys.published(customer, key) {
            return if known_fp == fp {
                Ok(IntakeOutcome::Accepted(order_id))
            } else {
                Err(IntakeError::Mismatch)
            };
        }
        // The fast path first: a checkout it refuses (409 at the door of a flash sale, an
        // unknown cart) records nothing.
        if let Err(refused) = self.fast_path(checkout, &deadline).await {
            return self.refused(checkout, key, &fp, refused, &deadline).await;
        }
        let (order_id, recorded_now) = match self.record_key(customer, key, &fp, &deadline).await? {
            Ok(recorded) => recorded,
            Err(existing) => return Ok(existing),
        };
        tracing::Span::current().record("order_id", tracing::field::display(order_id));
        let published = self.publish_accepted(checkout, key, order_id, &fp).await;
        if recorded_now && matches!(published, Err(IntakeError::Payment(..))) {
            // Refused before anything was published: the key is let go, as a refusal at the
            // door records nothing. (A publish that failed keeps it: its confirm may be lost.)
            self.forget_key(customer, key, order_id, &deadline).await;
        }
        published
    }

    /// Lets go of a key recorded by this request for a checkout it then refused (its order id
    /// never published); a failure only leaves the key, as it was before. A forget still queued
    /// when the wait ends runs before any key its batch records (the writer's order), so a
    /// retry of the key never sees it vanish.
    async fn forget_key(&self, customer: &str, key: &str, order_id: Uuid, deadline: &Deadline) {
        match self
            .p
            .records
            .write(OrderWrite::ForgetKey(order_id), deadline)
            .await
        {
            Ok(_) => self.p.keys.recent.remove(customer, key),
            Err(e) => {
                tracing::warn!(error = %e, %order_id, "a refused checkout's key may have been kept");
            }
        }
    }

    /// Records the key with a random order id (a key seen before keeps the id it got):
    /// `Ok((order_id, recorded now))` to go on with, `Err(outcome)` when the key's order exists
    /// already.
    async fn record_key(
        &self,
        customer: &str,
        key: &str,
        fp: &str,
        deadline: &Deadline,
    ) -> Result<Result<(Uuid, bool), IntakeOutcome>, IntakeError> {
        let proposed = OrderIds::random();
        let recorded = self
            .p
            .records
            .write(
                OrderWrite::Key(KeyRow {
                    order_id: proposed,
                    customer_id: customer.to_owned(),
                    idempotency_key: key.to_owned(),
                    fingerprint: fp.to_owned(),
                }),
                deadline,
            )
            .await?;
        self.p.keys.recent.insert(customer, key);
        let recorded = match recorded {
            OrderWritten::Key(KeyState::Known(known)) => {
                if let Some(answer) = answer_of(&known, fp)? {
                    return Ok(Err(answer));
                }
                // Known, no order yet: its publish may have been lost; it goes out again. (Known
                // under the id this request proposed: its own insert, answered on a retry of
                // the batch — recorded now all the same.)
                (known.order_id, known.order_id == proposed)
            }
            OrderWritten::Key(KeyState::New) => (proposed, true),
            OrderWritten::Key(KeyState::Racing) => {
                return Err(IntakeError::Unavailable(
                    "this key is being recorded by another request; retry".into(),
                ))
            }
            other => {
                return Err(StepError::Refused(format!("internal: {other:?}").into()).into());
            }
        };
        Ok(Ok(recorded))
    }

    /// The answer to a checkout the fast path refused; nothing is recorded for it. A key used
    /// before gets its own answer first: its order (200), 422 for another body — and, for the
    /// same body accepted before and not decided yet, its 202 again: when only the stock refused
    /// it now, published again (still in the queue, or its publish lost: the consumer is
    /// idempotent, and rejects the order if the units are still short); when its cart names
    /// this very order, as it is (the consumer has it).
    async fn refused(
        &self,
        checkout: &Checkout,
        key: &str,
        fp: &str,
        refused: IntakeError,
        deadline: &Deadline,
    ) -> Result<IntakeOutcome, IntakeError> {
        if matches!(refused, IntakeError::Unavailable(_)) {
            return Err(refused); // nothing to look up through an outage
        }
        let customer = checkout.customer_id.as_str();
        let Some(recorded) = self.recorded_key(customer, key, deadline).await? else {
            return Err(refused);
        };
        if let Some(answer) = answer_of(&recorded, fp)? {
            return Ok(answer);
        }
        match refused {
            IntakeError::OutOfStock(_) => {}
            IntakeError::CartOrdered(order) if order == recorded.order_id => {
                return Ok(IntakeOutcome::Accepted(order));
            }
            _ => return Err(refused),
        }
        tracing::Span::current().record("order_id", tracing::field::display(recorded.order_id));
        self.publish_accepted(checkout, key, recorded.order_id, fp)
            .await
    }

    /// What is recorded for the customer's key, looked up in the order writer's batch (writes
    /// nothing). A key found joins the in-memory set: while admission sheds, its repeats go on
    /// to their own answer.
    async fn recorded_key(
        &self,
        customer: &str,
        key: &str,
        deadline: &Deadline,
    ) -> Result<Option<RecordedKey>, StepError> {
        let lookup = KeyRow {
            order_id: OrderIds::random(),
            customer_id: customer.to_owned(),
            idempotency_key: key.to_owned(),
            fingerprint: String::new(),
        };
        let found = match self
            .p
            .records
            .write(OrderWrite::KeyLookup(lookup), deadline)
            .await?
        {
            OrderWritten::KeyFound(found) => found,
            other => return Err(StepError::Refused(format!("internal: {other:?}").into())),
        };
        if found.is_some() {
            self.p.keys.recent.insert(customer, key);
        }
        Ok(found)
    }

    /// The checkout published with the payment as kept (a card's token); `Ok` once the broker
    /// confirmed it.
    async fn publish_accepted(
        &self,
        checkout: &Checkout,
        key: &str,
        order_id: Uuid,
        fp: &str,
    ) -> Result<IntakeOutcome, IntakeError> {
        // The card for the gateway's token, last thing before the publish (nothing refused the
        // checkout before this point).
        let field = match checkout.payment {
            PaymentRequest::Card(_) => "payment.card",
            _ => "payment.card_token",
        };
        let payment = self.resolve_payment(&checkout.payment, field).await?;
        // Only what the validator read is published: no field a client added rides along.
        let mut payload = Vec::with_capacity(512);
        checkout.write_canonical(
            &mut payload,
            &serde_json::to_value(&payment).unwrap_or_default(),
        );
        let outgoing = OutgoingCheckout {
            key,
            order_id,
            fingerprint: fp,
            judged_at: u64::try_from(self.p.clock.now().timestamp()).unwrap_or(0),
            body: &payload,
        };
        // Recorded before publishing: the consumer may create the order (and clear this entry)
        // before the confirm even reaches us.
        let customer = checkout.customer_id.as_str();
        self.p.keys.publishing(customer, key, order_id, fp);
        let published = self.p.publisher.publish_checkout(&outgoing).await;
        if published.is_err() {
            self.p.keys.forget(customer, key);
        }
        match published {
            Ok(()) => Ok(IntakeOutcome::Accepted(order_id)),
            Err(PublishError::Rejected) => {
                self.p.monitor.record_rejected_by_broker();
                Err(IntakeError::Overloaded {
                    retry_after: admission::jittered(
                        admission::BROKER_RETRY_AFTER_S,
                        fastrand::f64(),
                    ),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "checkout intake: the publish failed");
                Err(IntakeError::Unavailable("the broker is unavailable".into()))
            }
        }
    }

    /// Admission, before anything else of a checkout (issue 20): from the customer, the key and
    /// the lines as sent (`None` when they are not plain items), so that a 503 costs no
    /// validation, fingerprint, lock or database (only the body's read) — the keys are looked up in memory
    /// ([`super::recent_keys`]), the stock in the engine's snapshot; only a 409 about to be
    /// given looks its key up in the database first (bounded). `Ok(Some(permit))`:
    /// admitted (the permit held while the checkout is on its way); `Ok(None)`: shedding, but a
    /// key seen before is not a new checkout and goes on to its 200/202 (or 422 mismatch).
    pub async fn admit(
        &self,
        customer: &str,
        key: &str,
        lines: Option<&[(Sku, i64)]>,
    ) -> Result<Option<crate::monitor::Admitted>, IntakeError> {
        let monitor = &self.p.monitor;
        let refused = match monitor.admit() {
            Ok(permit) => return Ok(Some(permit)),
            Err(refused) => refused,
        };
        if self.p.keys.recent.contains(customer, key) {
            return Ok(None);
        }
        // Told when to come back only when the answer is this 503 (the time is booked).
        let shed = || IntakeError::Shedding {
            backlog: monitor.checkout_backlog() + monitor.admitted_pending(),
            retry_after: monitor.retry_after(&refused, Some(Requester { customer, key })),
            reason: refused.reason.as_str(),
        };
        // A new checkout the engine already knows cannot be served gets the clearer answer:
        // 409 at the door (no retry), not 503 (retry).
        let Some(items) = lines else {
            return Err(shed());
        };
        let known_skus = items
            .iter()
            .all(|(sku, _)| self.p.catalog.get(sku).is_some());
        let short = if known_skus {
            self.p.stock.short_lines(items)
        } else {
            Vec::new()
        };
        if short.is_empty() {
            return Err(shed());
        }
        // But a 409 is final: a key recorded before (before a restart, by another instance, or
        // longer ago than memory keeps) is looked up first and goes on to its own answer — one
        // probe in the order writer's batch, only for a checkout about to be told 409, at most
        // `SHED_LOOKUPS` at once and never while the writer is failing. One that cannot be
        // looked up now is shed (retry), never told 409.
        let Ok(_lookup) = self.shed_lookups.try_acquire() else {
            return Err(shed());
        };
        if self.p.records.writer_failing() {
            return Err(shed());
        }
        match self
            .recorded_key(customer, key, &Deadline::after(SHED_LOOKUP_TIMEOUT))
            .await
        {
            Ok(None) => Err(IntakeError::OutOfStock(short)),
            Ok(Some(_)) => Ok(None),
            Err(e) => {
                tracing::debug!(error = %e, "a shed checkout's key could not be looked up");
                Err(shed())
            }
        }
    }

    /// A typed card exchanged for the gateway's token (the sandbox's browser tokenization).
    pub async fn tokenize(
        &self,
        card: &crate::domain::checkout::RawCard,
    ) -> Result<Payment, IntakeError> {
        let asked = PaymentRequest::Card(card.clone());
        self.resolve_payment(&asked, "number").await
    }

    /// [`super::payment::Payments::payment_to_keep`] judged now, its problems as the door's answers on
    /// `field`.
    async fn resolve_payment(
        &self,
        asked: &PaymentRequest,
        field: &'static str,
    ) -> Result<Payment, IntakeError> {
        use super::payment::PaymentProblem;
        self.p
            .payments
            .payment_to_keep(asked, self.p.payments.today())
            .await
            .map_err(|problem| match problem {
                PaymentProblem::Refused(why) => IntakeError::Payment(field, why),
                PaymentProblem::Expired => {
                    IntakeError::Payment(field, "the card has expired".into())
                }
                PaymentProblem::Unavailable(why) => {
                    tracing::warn!(error = %why, "the payment gateway is unavailable");
                    IntakeError::Unavailable("the payment gateway is unavailable".into())
                }
            })
    }
}
