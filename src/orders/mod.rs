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
#[cfg(feature = "fault-injection")]
pub(crate) mod faults;
mod intake;
pub mod payment;
mod pipeline;
mod queries;
mod recent_keys;
mod reservations;
mod sweeper;
mod transitions;
pub mod writer;

pub use cancel::CancelError;
pub use intake::{IntakeError, IntakeOutcome};
pub use sweeper::SweepReport;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::batch::{SubmitError, WriteError};
use crate::catalog::Catalog;
use crate::domain::clock::Clock;
use crate::domain::order::OrderStatus;
use crate::engine::Engine;
use crate::messaging::Broker;
use crate::persistence::{DbError, DbPool};
use capacity::Capacity;
use payment::PaymentGateway;
use writer::{OrderWrite, OrderWriter, OrderWritten};

/// `app_id` of checkouts published by orderflow's own HTTP intake.
pub use crate::messaging::checkout::HTTP_ORIGIN;
/// Suggestions offered per short line.
const SUGGESTIONS: usize = 3;
const LOCK_STRIPES: usize = 1024;
/// Intake's key locks: stripes of their own, so a thousand checkouts at the door never hold a
/// lock a decision waits for.
const KEY_LOCK_STRIPES: usize = 4096;
/// Keys per generation of [`recent_keys::RecentKeys`] (two generations: at most twice this).
const RECENT_KEYS: usize = 500_000;

fn order_store_secret(conn: &mut diesel::PgConnection) -> Result<Vec<u8>, DbError> {
    crate::persistence::orders::order_id_secret(conn)
}

/// A stable fingerprint of a request body: FNV-1a over its canonical JSON. Canonical because
/// `serde_json::Value` keeps object keys sorted (the crate is built without `preserve_order`) and
/// writes numbers and strings one way; [`canonical_json`] spells that out.
pub fn fingerprint(body: &serde_json::Value) -> String {
    format!(
        "{:016x}",
        crate::domain::fnv1a(canonical_json(body).bytes())
    )
}

/// JSON with object keys in sorted order and no whitespace, whatever order they came in.
pub fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let body: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => {
            let body: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", body.join(","))
        }
        other => other.to_string(),
    }
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
}

impl Default for OrderConfig {
    fn default() -> Self {
        OrderConfig {
            retry_window: Duration::from_secs(30),
            stale_after: Duration::from_secs(600),
            sweep_every: Duration::from_secs(30),
            events: EventScope::Decisions,
            key_retention: Duration::from_secs(86_400),
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

/// What went wrong in a step: a message, and the error that caused it (kept as the source, so a
/// log shows the whole chain).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Cause {
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause with the error behind it.
    pub fn of(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Cause {
        Cause {
            message,
            source: None,
        }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Cause {
        Cause::from(message.to_owned())
    }
}

/// Why a step of the pipeline could not finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// A dependency is away: the step can succeed later (DESIGN.md rule 8).
    #[error(transparent)]
    Transient(Cause),
    /// The database refused what the step carries: retrying cannot help.
    #[error(transparent)]
    Refused(Cause),
    /// Another instance holds the lease now: this one must stop acting (the delivery goes back
    /// to the queue with its channel, untouched).
    #[error("fenced: another instance is active")]
    Fenced,
}

impl From<DbError> for StepError {
    fn from(e: DbError) -> Self {
        if e.is_transient() {
            StepError::Transient(Cause::of("the database is away", e))
        } else {
            StepError::Refused(Cause::of("the database refused it", e))
        }
    }
}

impl From<WriteError> for StepError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Refused(why) => StepError::Refused(why.into()),
            WriteError::Stopped => StepError::Transient("the order writer stopped".into()),
            WriteError::Fenced => StepError::Fenced,
        }
    }
}

/// When a step must have finished. Waits on the database are bounded by it; waits on the SKU
/// actors (memory) are not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Instant);

impl Deadline {
    pub fn after(window: Duration) -> Deadline {
        Deadline(Instant::now() + window)
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }

    /// Runs `step`, or gives up (transient) when the deadline passes first.
    pub async fn bound<T>(&self, step: impl Future<Output = T>) -> Result<T, StepError> {
        tokio::time::timeout_at(self.0.into(), step)
            .await
            .map_err(|_| StepError::Transient("timed out waiting for the database".into()))
    }
}

struct Inner {
    engine: Engine,
    catalog: Catalog,
    pool: DbPool,
    writer: OrderWriter,
    broker: Broker,
    gateway: Arc<dyn PaymentGateway>,
    clock: Arc<dyn Clock>,
    config: OrderConfig,
    capacity: Capacity,
    /// The consumer's per-order locks.
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Intake's per-key locks.
    key_locks: Vec<tokio::sync::Mutex<()>>,
    /// Never used while the stripes are all there; there so a lookup cannot panic.
    spare_lock: tokio::sync::Mutex<()>,
    /// Keys recorded or seen here: while admission sheds, these go on to their order.
    recent_keys: recent_keys::RecentKeys,
    events: broadcast::Sender<OrderEvent>,
    /// Checkouts this process published — `(customer, key)` → `(order id, fingerprint)` —
    /// whose order the consumer has not written yet: a retry with the same key is answered
    /// without publishing again.
    published: DashMap<(String, String), (Uuid, String)>,
    /// Keys the ids of checkouts from other systems (DESIGN.md rule 2).
    ids: crate::auth::OrderIds,
    /// Deliveries of `orders.checkout` being processed now, and the most there ever were.
    processing: std::sync::atomic::AtomicUsize,
    processing_peak: std::sync::atomic::AtomicUsize,
    /// Since when the database and the broker have answered without a break (the sweeper
    /// decides an order "lost" only after it has been untouched for `stale_after` of that).
    healthy_since: std::sync::Mutex<Instant>,
    /// Transient write failures seen by the last sweep (both writers).
    seen_db_errors: std::sync::atomic::AtomicU64,
    #[cfg(feature = "fault-injection")]
    faults: faults::Faults,
}

/// The order pipeline; cheap to clone.
#[derive(Clone)]
pub struct OrderService {
    inner: Arc<Inner>,
}

/// What the order service is made of.
pub struct OrderParts {
    pub engine: Engine,
    pub catalog: Catalog,
    pub pool: DbPool,
    pub broker: Broker,
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
        let (events, _) = broadcast::channel(4096);
        Ok(OrderService {
            inner: Arc::new(Inner {
                writer: writer::spawn(parts.pool.clone(), 65_536, parts.fence),
                engine: parts.engine,
                catalog: parts.catalog,
                pool: parts.pool,
                broker: parts.broker,
                gateway: parts.gateway,
                clock: parts.clock,
                config: parts.config,
                capacity,
                locks: (0..LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                key_locks: (0..KEY_LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                spare_lock: tokio::sync::Mutex::new(()),
                recent_keys: recent_keys::RecentKeys::new(RECENT_KEYS),
                events,
                published: DashMap::new(),
                ids,
                processing: Default::default(),
                processing_peak: Default::default(),
                healthy_since: std::sync::Mutex::new(Instant::now()),
                seen_db_errors: Default::default(),
                #[cfg(feature = "fault-injection")]
                faults: faults::Faults::default(),
            }),
        })
    }

    /// The lock intake holds for a customer's idempotency key.
    fn key_lock(&self, customer: &str, key: &str) -> &tokio::sync::Mutex<()> {
        let hash = recent_keys::slot_hash(customer, key);
        let i = (hash % KEY_LOCK_STRIPES as u64) as usize;
        self.inner
            .key_locks
            .get(i)
            .unwrap_or(&self.inner.spare_lock)
    }

    fn lock(&self, order_id: Uuid) -> &tokio::sync::Mutex<()> {
        let i = (order_id.as_u128() % LOCK_STRIPES as u128) as usize;
        self.inner.locks.get(i).unwrap_or(&self.inner.spare_lock)
    }

    /// Status changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<OrderEvent> {
        self.inner.events.subscribe()
    }

    /// The order writer's counters: what is queued and not yet committed (memory ahead of
    /// disk) and its bound.
    pub fn writer_stats(&self) -> Arc<crate::batch::BatchStats> {
        self.inner.writer.stats()
    }

    /// Whether the order writer cannot write right now.
    pub fn writer_failing(&self) -> bool {
        self.inner.writer.stats().is_failing()
    }

    /// `(year, month)` now, for card expiry at the door.
    pub fn today(&self) -> (i32, u32) {
        crate::domain::clock::year_month(self.inner.clock.now())
    }

    /// Deliveries being processed now.
    pub fn processing(&self) -> usize {
        self.inner
            .processing
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The most deliveries ever processed at once (bounded by the prefetch).
    pub fn processing_peak(&self) -> usize {
        self.inner
            .processing_peak
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn config(&self) -> &OrderConfig {
        &self.inner.config
    }

    /// Queues a write and waits (within `deadline`) until it is committed; waits out a
    /// saturated writer.
    async fn write(
        &self,
        item: OrderWrite,
        deadline: &Deadline,
    ) -> Result<OrderWritten, StepError> {
        loop {
            match self.inner.writer.submit(item.clone()) {
                Ok(ticket) => return Ok(deadline.bound(ticket.wait()).await??),
                Err(SubmitError::Full) => {
                    if deadline.passed() {
                        return Err(StepError::Transient("the order writer is saturated".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(SubmitError::Stopped) => {
                    return Err(StepError::Transient("the order writer stopped".into()))
                }
            }
        }
    }

    /// Writes what the order writer holds and stops it (shutdown, after the consumers stopped).
    pub async fn shutdown(&self) {
        let writer = self.inner.writer.clone();
        let _ = crate::blocking::run(move || writer.stop_blocking()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_do_not_depend_on_key_order() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"é"}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
        let c: serde_json::Value =
            serde_json::from_str(r#"{"b":2,"a":{"y":[1,2],"x":"é"}}"#).unwrap();
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
