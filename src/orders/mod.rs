//! The order pipeline: intake (HTTP and RabbitMQ) → queue → consumer → SKU actors → payment →
//! delivery → status, events and notifications.
//!
//! - [`intake`]: `POST /v1/checkout` — idempotency key recorded, fast-path 409 when the engine
//!   already knows a line is short, publish to `orders.checkout`; 202 only once the broker
//!   confirmed it.
//! - [`pipeline`]: the `orders.checkout` consumer — creates the order, reserves every line (all
//!   or nothing, [`reservations`]), authorizes the payment outside any actor, books a delivery
//!   ([`capacity`]), and acknowledges the delivery only when the order is decided and durable.
//! - [`transitions`]: every status change, guarded by the status it leaves, with its history,
//!   notification and events.
//! - [`cancel`], [`queries`]: what customers ask of an order.
//! - [`sweeper`]: finds orders whose delivery is gone, and releases still held by orders that
//!   ended, and drives both to the end.
//!
//! Every step is idempotent: the order id is fixed once per customer's idempotency key (random
//! and recorded with the key at intake, carried in the message; or keyed with the server's
//! secret for checkouts from other systems — `auth::ids`), each stock change
//! carries a reference (`order:{id}:reserve` / `…:release`) the database keeps unique, and every
//! status change is guarded by the status it leaves. Decisions are written before stock is
//! released (`settled = false` until it is), so a crash in between never changes a decision. A
//! redelivered message resumes where the order is, and never decides it twice.

mod cancel;
mod capacity;
mod create;
mod delivery;
#[cfg(feature = "fault-injection")]
pub(crate) mod faults;
mod intake;
mod keys;
mod locks;
mod one_write;
pub mod payment;
mod pipeline;
mod processing;
mod queries;
mod recent_keys;
mod reservations;
mod step;
pub mod store;
mod sweeper;
mod transitions;
pub mod writer;

pub use crate::domain::canonical::{fingerprint, fingerprint_of};

pub use cancel::CancelError;
pub use intake::{IntakeError, IntakeOutcome};
pub(crate) use step::Deadline;
pub use step::{Cause, StepError};
pub use sweeper::SweepReport;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::domain::checkout::{Checkout, Payment, PaymentRequest, RawCard};
use crate::domain::clock::Clock;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::Sku;
use crate::engine::Engine;
use crate::messaging::consumer::{Message, Outcome};
use crate::messaging::publisher::Publisher;
use crate::monitor::Monitor;
use crate::persistence::orders::NotificationRecord;
use crate::persistence::{DbError, DbPool};
use capacity::Capacity;
use intake::Intake;
use keys::Keys;
use locks::OrderLocks;
use payment::{PaymentGateway, Payments};
use pipeline::Checkouts;
use reservations::Stock;
use sweeper::Sweeper;
use transitions::Records;

/// `app_id` of checkouts published by orderflow's own HTTP intake.
pub use crate::messaging::checkout::HTTP_ORIGIN;
/// Suggestions offered per short line.
const SUGGESTIONS: usize = 3;

fn order_store_secret(conn: &mut diesel::PgConnection) -> Result<Vec<u8>, DbError> {
    crate::persistence::orders::order_id_secret(conn)
}

/// A status change, as streamed to `GET /v1/orders/{id}/events`.
#[derive(Debug, Clone, Serialize)]
pub struct OrderEvent {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
}

/// Tuning of the order pipeline.
#[derive(Debug, Clone)]
pub struct OrderConfig {
    /// How long a delivery keeps retrying transient trouble (database or broker away) before
    /// it is handed back to the queue — without using up the delivery limit.
    pub retry_window: Duration,
    /// An order still `received`/`reserved` and untouched for this long has lost its delivery:
    /// the sweeper decides it (`expired`).
    pub stale_after: Duration,
    /// How often the sweeper looks.
    pub sweep_every: Duration,
    /// Which events go out on `order.events`.
    pub events: EventScope,
    /// How long an idempotency key is remembered.
    pub key_retention: Duration,
    /// A first delivery is decided in memory and written once, decided, with its stock
    /// (`ORDER_WRITES=one`, the default); `false` takes every delivery through the staged path
    /// (`ORDER_WRITES=staged`: created, reserved, decided, each its own write).
    pub one_write: bool,
}

impl Default for OrderConfig {
    fn default() -> Self {
        OrderConfig {
            retry_window: Duration::from_secs(30),
            stale_after: Duration::from_secs(600),
            sweep_every: Duration::from_secs(30),
            events: EventScope::Decisions,
            key_retention: Duration::from_secs(86_400),
            one_write: true,
        }
    }
}

/// Which events an order publishes on `order.events` (`ORDER_EVENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventScope {
    /// Every step (`order.received`, `order.reserved`, the decision) and `notification.<kind>`.
    /// The steps on the way go out without waiting; the decision's two are confirmed.
    All,
    /// The decision (`order.scheduled`, `order.rejected`, `order.failed`, `order.cancelled`,
    /// with the steps in its history) and its `notification.<kind>`: two confirmed publishes per
    /// order (the default, API.md).
    Decisions,
}

impl EventScope {
    pub fn parse(raw: &str) -> Option<EventScope> {
        match raw {
            "all" => Some(EventScope::All),
            "decisions" => Some(EventScope::Decisions),
            _ => None,
        }
    }
}

/// What the order service's parts share: each a component with its own file, or a plain
/// handle. Intake, the checkout consumer, cancels and the sweeper each hold it.
struct Parts {
    records: Records,
    stock: Stock,
    payments: Payments,
    keys: Keys,
    locks: OrderLocks,
    capacity: Capacity,
    catalog: Catalog,
    pool: DbPool,
    publisher: Arc<dyn Publisher>,
    monitor: Arc<Monitor>,
    engine: Engine,
    clock: Arc<dyn Clock>,
    config: OrderConfig,
    #[cfg(feature = "fault-injection")]
    faults: Arc<faults::Faults>,
}

/// The order pipeline, as the API, the consumers and the active instance see it: intake at
/// one end of the queue, the checkout consumer at the other, cancels, reads and the sweeper.
/// Cheap to clone.
#[derive(Clone)]
pub struct OrderService {
    parts: Arc<Parts>,
    intake: Intake,
    checkouts: Checkouts,
    sweeper: Sweeper,
}

/// What the order service is made of.
pub struct OrderParts {
    pub engine: Engine,
    pub catalog: Catalog,
    pub pool: DbPool,
    /// Where checkouts and events are published (the broker, or a [`MemoryPublisher`]).
    ///
    /// [`MemoryPublisher`]: crate::messaging::publisher::MemoryPublisher
    pub publisher: Arc<dyn Publisher>,
    /// The service watching itself: admission, decisions, reservations counted here.
    pub monitor: Arc<Monitor>,
    pub gateway: Arc<dyn PaymentGateway>,
    pub clock: Arc<dyn Clock>,
    pub config: OrderConfig,
    /// The lease this instance holds (its writers check it); `None` outside a leased instance.
    pub fence: Option<crate::lease::FenceGuard>,
}

impl OrderService {
    /// Starts the order writer and rebuilds the delivery capacity counters from the database.
    pub async fn start(parts: OrderParts) -> Result<OrderService, DbError> {
        let capacity = Capacity::load(&parts.pool).await?;
        let secret = crate::persistence::run_blocking(&parts.pool, order_store_secret).await?;
        let ids = crate::auth::OrderIds::new(secret)
            .ok_or_else(|| DbError::Query(diesel::result::Error::NotFound))?;
        #[cfg(feature = "fault-injection")]
        let faults = Arc::new(faults::Faults::default());
        let records = Records::new(
            Arc::new(writer::PgOrderStore::new(
                writer::spawn(parts.pool.clone(), 65_536, parts.fence),
                parts.pool.clone(),
            )),
            Arc::clone(&parts.publisher),
            Arc::clone(&parts.monitor),
            parts.config.events,
            parts.clock.clone(),
            #[cfg(feature = "fault-injection")]
            faults.clone(),
        );
        let stock = Stock::new(
            parts.engine.clone(),
            parts.catalog.clone(),
            Arc::clone(&parts.monitor),
            #[cfg(feature = "fault-injection")]
            faults.clone(),
        );
        let shared = Arc::new(Parts {
            records,
            stock,
            payments: Payments::new(parts.gateway, parts.clock.clone()),
            keys: Keys::new(ids),
            locks: OrderLocks::new(),
            capacity,
            catalog: parts.catalog,
            pool: parts.pool,
            publisher: parts.publisher,
            monitor: parts.monitor,
            engine: parts.engine,
            clock: parts.clock,
            config: parts.config,
            #[cfg(feature = "fault-injection")]
            faults,
        });
        Ok(OrderService {
            intake: Intake::new(shared.clone()),
            checkouts: Checkouts::new(shared.clone()),
            sweeper: Sweeper::new(shared.clone()),
            parts: shared,
        })
    }

    /// Admission, before anything else of a checkout: see [`Intake::admit`].
    pub async fn admit(
        &self,
        customer: &str,
        key: &str,
        lines: Option<&[(Sku, i64)]>,
    ) -> Result<Option<crate::monitor::Admitted>, IntakeError> {
        self.intake.admit(customer, key, lines).await
    }

    /// A validated checkout from `POST /v1/checkout`: see [`Intake::intake`].
    pub async fn intake(
        &self,
        key: &str,
        checkout: Checkout,
        admitted: Option<crate::monitor::Admitted>,
    ) -> Result<IntakeOutcome, IntakeError> {
        self.intake.intake(key, checkout, admitted).await
    }

    /// A typed card exchanged for the gateway's token (the sandbox's browser tokenization).
    pub async fn tokenize(&self, card: &RawCard) -> Result<Payment, IntakeError> {
        self.intake.tokenize(card).await
    }

    /// The payment as it may be kept, judged in `today`: see [`Payments::payment_to_keep`].
    pub async fn payment_to_keep(
        &self,
        asked: &PaymentRequest,
        today: (i32, u32),
    ) -> Result<Payment, payment::PaymentProblem> {
        self.parts.payments.payment_to_keep(asked, today).await
    }

    /// Handles one delivery of `orders.checkout`: see [`Checkouts::process`].
    pub async fn process(&self, message: Message) -> Outcome {
        self.checkouts.process(message).await
    }

    /// Cancels an order: see [`cancel::cancel`].
    pub async fn cancel(&self, order_id: Uuid) -> Result<Order, CancelError> {
        cancel::cancel(&self.parts, order_id).await
    }

    /// The order with its history, as stored — or, while it is being decided in memory (not
    /// written yet), as it stands (`received`).
    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, DbError> {
        match queries::get(&self.parts.pool, order_id).await? {
            Some(order) => Ok(Some(order)),
            None => Ok(self.checkouts.in_flight_order(order_id)),
        }
    }

    /// The customer whose checkout was accepted with this order id, and when, if intake recorded
    /// its key — the order may still be in the queue, in no table yet.
    pub async fn accepted_by(
        &self,
        order_id: Uuid,
    ) -> Result<Option<(String, DateTime<Utc>)>, DbError> {
        crate::persistence::run_blocking(&self.parts.pool, move |c| {
            crate::persistence::orders::accepted_by(c, order_id)
        })
        .await
    }

    /// A customer's orders, newest first.
    pub async fn of_customer(&self, customer_id: String) -> Result<Vec<Order>, DbError> {
        queries::of_customer(&self.parts.pool, customer_id).await
    }

    /// A customer's notifications, newest first.
    pub async fn notifications(
        &self,
        customer_id: String,
    ) -> Result<Vec<NotificationRecord>, DbError> {
        queries::notifications(&self.parts.pool, customer_id).await
    }

    /// One round of the sweeper: see [`Sweeper::sweep`].
    pub async fn sweep(&self) -> Result<SweepReport, StepError> {
        self.sweeper.sweep().await
    }

    /// Runs the sweeper until `stop` is cancelled.
    pub fn spawn_sweeper(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        self.sweeper.spawn(stop)
    }

    /// Status changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<OrderEvent> {
        self.parts.records.subscribe()
    }

    /// The order writer's counters: what is queued and not yet committed (memory ahead of
    /// disk) and its bound.
    pub fn writer_stats(&self) -> Arc<crate::batch::BatchStats> {
        self.parts.records.store().stats()
    }

    /// Whether the order writer cannot write right now.
    pub fn writer_failing(&self) -> bool {
        self.parts.records.writer_failing()
    }

    /// `(year, month)` now, for card expiry at the door.
    pub fn today(&self) -> (i32, u32) {
        self.parts.payments.today()
    }

    /// Deliveries of `orders.checkout` being processed now.
    pub fn processing(&self) -> usize {
        self.checkouts.processing()
    }

    /// The most deliveries ever processed at once.
    pub fn processing_peak(&self) -> usize {
        self.checkouts.processing_peak()
    }

    pub fn config(&self) -> &OrderConfig {
        &self.parts.config
    }

    /// Writes what the order writer holds and stops it (shutdown, after the consumers stopped).
    pub async fn shutdown(&self) {
        self.parts.records.store().stop().await;
    }

    /// Fault injection: make every release of `sku` fail transiently (or none, with `None`).
    #[cfg(feature = "fault-injection")]
    pub fn fault_fail_releases_of(&self, sku: Option<Sku>) {
        if let Ok(mut slot) = self.parts.faults.fail_release_of.lock() {
            *slot = sku;
        }
    }

    /// Fault injection: handling a checkout with a line of `sku` panics (or none, with `None`).
    #[cfg(feature = "fault-injection")]
    pub fn fault_panic_on(&self, sku: Option<Sku>) {
        if let Ok(mut slot) = self.parts.faults.panic_on.lock() {
            *slot = sku;
        }
    }

    /// Fault injection: every `n`-th publish of a decision's events is not confirmed (0: none).
    #[cfg(feature = "fault-injection")]
    pub fn fault_fail_every_nth_event(&self, n: u64) {
        self.parts
            .faults
            .fail_every_nth_event
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }
}
