//! The order pipeline: intake (HTTP and RabbitMQ) → queue → consumer → SKU actors → payment →
//! delivery → status, events and notifications.
//!
//! - Intake validates, answers the fast-path 409 when the engine already knows a line is short,
//!   and publishes the checkout to `orders.checkout`; 202 only once the broker confirmed it.
//! - The consumer creates the order (batched by the [`writer::OrderWriter`]), reserves every
//!   line at its SKU actor (all or nothing), authorizes the payment outside any actor, books a
//!   delivery slot, and acknowledges the delivery only when the order is decided and durable.
//! - Every step is idempotent: the order id comes from the idempotency key, each stock change
//!   carries a reference (`order:{id}:reserve` / `…:release`) the database keeps unique, and every
//!   status change is guarded by the status it leaves. A redelivered message resumes where the
//!   order is, and never decides it twice.

mod admission;
pub mod payment;
mod seen;
pub mod writer;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use dashmap::DashMap;
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::catalog::{Catalog, Suggestion};
use crate::domain::checkout::{Checkout, CheckoutInput, DeliveryMethod, LineSource};
use crate::domain::delivery::{self, DeliverySlot};
use crate::domain::order::OrderStatus;
use crate::domain::{FieldErrors, LedgerError, Sku, StockOp};
use crate::engine::{DurabilityError, Engine, EngineError};
use crate::messaging::consumer::{Message, Outcome};
use crate::messaging::topology::{EXCHANGE_ORDERS, EXCHANGE_ORDER_EVENTS};
use crate::messaging::{Broker, PublishError};
use crate::persistence::carts::{self as cart_store, ClaimError};
use crate::persistence::orders::{
    self as order_store, NewOrderRow, NotificationRow, OrderRecord, TransitionRow,
};
use crate::persistence::{run_blocking, DbError, DbPool};
use admission::Admission;
use payment::{Authorization, PaymentGateway};
use seen::SeenOrders;
use writer::{OrderWriter, WriteError};

/// `app_id` of checkouts published by orderflow's own HTTP intake.
pub const HTTP_ORIGIN: &str = "orderflow-http";
/// Suggestions offered per short line.
const SUGGESTIONS: usize = 3;
/// A payment answered within this is written together with `reserved`; a slower one gets
/// `reserved` written (and visible) first.
const RESERVED_VISIBLE_AFTER: Duration = Duration::from_millis(250);
/// How long the consumer retries transient trouble before handing the delivery back.
const RETRY_FOR: Duration = Duration::from_secs(30);
const LOCK_STRIPES: usize = 1024;

/// Namespace of order ids derived from idempotency keys.
const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_775f_6f72_6465_7273);

/// The order id an idempotency key stands for: the same key is always the same order.
pub fn order_id_for(key: &str) -> Uuid {
    Uuid::new_v5(&ORDER_NAMESPACE, key.as_bytes())
}

/// A stable fingerprint of a request body (FNV-1a over its canonical JSON, keys sorted).
pub fn fingerprint(body: &Value) -> String {
    let canonical = body.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Brazil (São Paulo), where the warehouses work: UTC−3, no daylight saving since 2019.
fn local_now() -> chrono::NaiveDateTime {
    let utc = Utc::now();
    match FixedOffset::west_opt(3 * 3600) {
        Some(offset) => utc.with_timezone(&offset).naive_local(),
        None => utc.naive_utc(),
    }
}

/// `(year, month)` today, for card expiry.
pub fn today() -> (i32, u32) {
    use chrono::Datelike;
    let now = local_now();
    (now.year(), now.month())
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OrderItem {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// A line that cannot be served, with what to offer instead.
#[derive(Debug, Clone, Serialize)]
pub struct ShortLine {
    pub sku: Sku,
    pub requested: i64,
    pub available: i64,
    pub suggestions: Vec<Suggestion>,
}

/// A status change, as streamed to `GET /v1/orders/{id}/events`.
#[derive(Debug, Clone, Serialize)]
pub struct OrderEvent {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
}

/// An order in memory.
#[derive(Debug, Clone)]
pub struct Order {
    pub order_id: Uuid,
    pub customer_id: String,
    pub cart_id: Option<Uuid>,
    pub origin: String,
    pub status: OrderStatus,
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub currency: String,
    pub delivery_method: String,
    pub payment: Value,
    pub delivery: Option<Value>,
    pub rejection: Option<Value>,
    pub history: Vec<(OrderStatus, DateTime<Utc>)>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub fingerprint: String,
}

impl Order {
    fn from_record(rec: OrderRecord, history: Vec<(String, DateTime<Utc>)>) -> Option<Order> {
        Some(Order {
            order_id: rec.order_id,
            customer_id: rec.customer_id,
            cart_id: rec.cart_id,
            origin: rec.origin,
            status: OrderStatus::parse(&rec.status)?,
            items: serde_json::from_value(rec.items).ok()?,
            total_cents: rec.total_cents,
            currency: rec.currency,
            delivery_method: rec.delivery_method,
            payment: rec.payment,
            delivery: rec.delivery,
            rejection: rec.rejection,
            history: history
                .into_iter()
                .filter_map(|(s, at)| Some((OrderStatus::parse(&s)?, at)))
                .collect(),
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            fingerprint: rec.request_fingerprint,
        })
    }

    /// The order as API.md shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "status": self.status,
            "items": self.items,
            "total_cents": self.total_cents,
            "currency": self.currency,
            "delivery_method": self.delivery_method,
            "delivery": self.delivery,
            "rejection": self.rejection,
            "payment": self.payment,
            "cart_id": self.cart_id,
            "history": self.history.iter().map(|(s, at)| json!({"status": s, "at": at})).collect::<Vec<_>>(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

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
    Mismatch(Uuid),
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
    #[error("the checkout queue is full")]
    Overloaded,
    #[error("{backlog} checkouts are waiting; retry in {retry_after} s")]
    Shedding { backlog: u64, retry_after: u32 },
}

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

enum LineOutcome {
    Reserved,
    Short(i64),
}

/// A transient failure: retry later (the delivery goes back to the queue).
#[derive(Debug)]
struct Transient(String);

struct Inner {
    engine: Engine,
    catalog: Catalog,
    pool: DbPool,
    writer: OrderWriter,
    broker: Broker,
    gateway: Arc<dyn PaymentGateway>,
    capacity: DashMap<(DeliveryMethod, NaiveDate), Arc<AtomicU32>>,
    locks: Vec<tokio::sync::Mutex<()>>,
    events: broadcast::Sender<OrderEvent>,
    /// Orders queued by intake whose row the consumer has not written yet: key fingerprints,
    /// so a retry with the same key is recognised before the order is in the database.
    accepted: DashMap<Uuid, String>,
    /// Every order id in the database (a Bloom filter): intake skips its lookup on a sure "no".
    seen: SeenOrders,
    admission: Arc<Admission>,
}

/// The order pipeline; cheap to clone.
#[derive(Clone)]
pub struct OrderService {
    inner: Arc<Inner>,
}

fn item_lines(items: &[OrderItem]) -> Vec<(Sku, i64)> {
    items
        .iter()
        .filter_map(|i| Some((Sku::parse(&i.sku).ok()?, i.quantity)))
        .collect()
}

impl OrderService {
    /// Starts the order writer and rebuilds the delivery capacity counters from the database.
    pub async fn start(
        engine: Engine,
        catalog: Catalog,
        pool: DbPool,
        broker: Broker,
        gateway: Arc<dyn PaymentGateway>,
        max_backlog: u64,
    ) -> Result<OrderService, DbError> {
        let booked = run_blocking(&pool, order_store::booked_deliveries).await?;
        let capacity = DashMap::new();
        for (method, day, n) in booked {
            if let (Some(m), Ok(d)) = (DeliveryMethod::parse(&method), day.parse::<NaiveDate>()) {
                capacity.insert((m, d), Arc::new(AtomicU32::new(n.max(0) as u32)));
            }
        }
        let ids = run_blocking(&pool, order_store::all_ids).await?;
        let seen = SeenOrders::with_capacity((ids.len() * 2).max(1 << 20));
        for id in &ids {
            seen.insert(id);
        }
        let (events, _) = broadcast::channel(4096);
        let admission = Admission::start(broker.clone(), max_backlog);
        Ok(OrderService {
            inner: Arc::new(Inner {
                engine,
                catalog,
                writer: OrderWriter::spawn(pool.clone(), 65_536),
                pool,
                broker,
                gateway,
                capacity,
                locks: (0..LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                events,
                accepted: DashMap::new(),
                seen,
                admission,
            }),
        })
    }

    fn lock(&self, order_id: Uuid) -> &tokio::sync::Mutex<()> {
        let i = (order_id.as_u128() % LOCK_STRIPES as u128) as usize;
        &self.inner.locks[i % self.inner.locks.len().max(1)]
    }

    /// Status changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<OrderEvent> {
        self.inner.events.subscribe()
    }

    pub fn writer_failing(&self) -> bool {
        self.inner.writer.is_failing()
    }

    // ---------------------------------------------------------------- intake (HTTP)

    /// Validated checkout from `POST /v1/checkout`: the idempotency checks, the fast path, and
    /// the publish. Returns only once the broker confirmed (or refused) it.
    pub async fn intake(
        &self,
        key: &str,
        body: &Value,
        checkout: &Checkout,
    ) -> Result<IntakeOutcome, IntakeError> {
        let order_id = order_id_for(key);
        let fp = fingerprint(body);
        if let Some(retry_after) = self.inner.admission.shed() {
            return Err(IntakeError::Shedding {
                backlog: self.inner.admission.backlog(),
                retry_after,
            });
        }
        let _guard = self.lock(order_id).lock().await;
        if let Some(known) = self.inner.accepted.get(&order_id) {
            return if *known == fp {
                Ok(IntakeOutcome::Accepted(order_id))
            } else {
                Err(IntakeError::Mismatch(order_id))
            };
        }
        // A key never seen needs no database lookup; one that may have been asks.
        let existing = if self.inner.seen.may_contain(&order_id) {
            run_blocking(&self.inner.pool, move |c| order_store::find(c, order_id))
                .await
                .map_err(|e| {
                    IntakeError::Unavailable(format!("the database is unavailable: {e}"))
                })?
        } else {
            None
        };
        if let Some(order) = existing {
            return if order.request_fingerprint == fp {
                let status = OrderStatus::parse(&order.status).unwrap_or(OrderStatus::Received);
                Ok(IntakeOutcome::Existing(order_id, status))
            } else {
                Err(IntakeError::Mismatch(order_id))
            };
        }
        let lines = self.intake_lines(checkout).await?;
        let short = self.short_lines(&lines);
        if !short.is_empty() {
            return Err(IntakeError::OutOfStock(short));
        }
        let props = lapin::BasicProperties::default()
            .with_message_id(key.into())
            .with_app_id(HTTP_ORIGIN.into())
            .with_content_type("application/json".into());
        let payload = body.to_string();
        // Recorded before publishing: the consumer may create the order (and clear this entry)
        // before the confirm even reaches us.
        self.inner.accepted.insert(order_id, fp);
        let published = self
            .inner
            .broker
            .publish(EXCHANGE_ORDERS, "checkout", payload.as_bytes(), props)
            .await;
        if published.is_err() {
            self.inner.accepted.remove(&order_id);
        }
        match published {
            Ok(()) => Ok(IntakeOutcome::Accepted(order_id)),
            Err(PublishError::Rejected) => Err(IntakeError::Overloaded),
            Err(e) => Err(IntakeError::Unavailable(format!(
                "the broker is unavailable: {e}"
            ))),
        }
    }

    /// The lines a checkout asks for, checked against the catalog (and the cart).
    async fn intake_lines(&self, checkout: &Checkout) -> Result<Vec<(Sku, i64)>, IntakeError> {
        match &checkout.lines {
            LineSource::Items(items) => {
                let mut errors = FieldErrors::new();
                for (i, (sku, _)) in items.iter().enumerate() {
                    if self.inner.catalog.get(sku).is_none() {
                        errors.add(&format!("items.{i}.sku"), "unknown sku");
                    }
                }
                errors
                    .into_result(items.clone())
                    .map_err(IntakeError::Validation)
            }
            LineSource::Cart(cart_id) => {
                let cart_id = *cart_id;
                let (cart, lines) = run_blocking(&self.inner.pool, move |c| {
                    let cart = cart_store::find(c, cart_id)?;
                    let lines = match cart {
                        Some(_) => cart_store::lines(c, cart_id)?,
                        None => Vec::new(),
                    };
                    Ok::<_, DbError>((cart, lines))
                })
                .await
                .map_err(|e| {
                    IntakeError::Unavailable(format!("the database is unavailable: {e}"))
                })?;
                let cart = cart.ok_or(IntakeError::UnknownCart)?;
                if cart.customer_id != checkout.customer_id.as_str() {
                    return Err(IntakeError::UnknownCart);
                }
                if let Some(order) = cart.order_id {
                    return Err(IntakeError::CartOrdered(order));
                }
                if lines.is_empty() {
                    return Err(IntakeError::Validation(FieldErrors::single(
                        "cart_id",
                        "the cart is empty",
                    )));
                }
                Ok(lines
                    .into_iter()
                    .filter_map(|(s, q)| Some((Sku::parse(&s).ok()?, q)))
                    .collect())
            }
        }
    }

    /// Lines the engine already knows it cannot serve, with suggestions.
    fn short_lines(&self, lines: &[(Sku, i64)]) -> Vec<ShortLine> {
        lines
            .iter()
            .filter_map(|(sku, q)| {
                let available = self.inner.catalog.available(sku);
                (available < *q).then(|| ShortLine {
                    sku: sku.clone(),
                    requested: *q,
                    available: available.max(0),
                    suggestions: self
                        .inner
                        .catalog
                        .similar(sku, SUGGESTIONS)
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    // ---------------------------------------------------------------- consumer

    /// Handles one delivery of `orders.checkout`.
    pub async fn process(&self, message: Message) -> Outcome {
        let body: Value = match serde_json::from_slice(&message.data) {
            Ok(v) => v,
            Err(e) => return Outcome::DeadLetter(format!("body is not JSON: {e}")),
        };
        let input: CheckoutInput = match serde_json::from_value(body.clone()) {
            Ok(i) => i,
            Err(e) => return Outcome::DeadLetter(format!("body is not a checkout: {e}")),
        };
        let checkout = match input.validate(today()) {
            Ok(c) => c,
            Err(fields) => {
                return Outcome::DeadLetter(format!("invalid checkout: {}", fields.summary()))
            }
        };
        let key = match message.message_id.as_deref() {
            Some(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
            _ => {
                return Outcome::DeadLetter(
                    "message_id (the idempotency key, 1 to 255 characters) is required".into(),
                )
            }
        };
        let origin = if message.app_id.as_deref() == Some(HTTP_ORIGIN) {
            "http"
        } else {
            "queue"
        };
        let order_id = order_id_for(&key);
        let fp = fingerprint(&body);
        let started = Instant::now();
        let _guard = self.lock(order_id).lock().await;
        loop {
            match self
                .run(&checkout, order_id, &key, &fp, origin, message.redelivered)
                .await
            {
                Ok(outcome) => return outcome,
                Err(Transient(e)) => {
                    if started.elapsed() > RETRY_FOR {
                        tracing::warn!(%order_id, error = %e, "order processing handed back to the queue");
                        return Outcome::Requeue;
                    }
                    tracing::warn!(%order_id, error = %e, "order processing retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn run(
        &self,
        checkout: &Checkout,
        order_id: Uuid,
        key: &str,
        fp: &str,
        origin: &str,
        redelivered: bool,
    ) -> Result<Outcome, Transient> {
        let (mut order, fresh) = match self
            .create_or_load(checkout, order_id, key, fp, origin)
            .await?
        {
            Ok(v) => v,
            Err(outcome) => return Ok(outcome),
        };
        loop {
            match order.status {
                OrderStatus::Received => {
                    let lines = item_lines(&order.items);
                    match self.reserve_all(order_id, &lines, !fresh).await? {
                        // Reserved: go on to payment; `reserved` is recorded with the decision,
                        // in the same write (a crash before it redoes the idempotent steps).
                        Ok(()) => {
                            self.pay_and_decide(&mut order, checkout, fresh, Some(Utc::now()))
                                .await?
                        }
                        Err(short) => {
                            let reason = if order.origin == "http" {
                                "stock_conflict"
                            } else {
                                "out_of_stock"
                            };
                            let rejection = json!({ "reason": reason, "items": short });
                            self.transition(
                                &mut order,
                                None,
                                OrderStatus::Rejected,
                                None,
                                Some(rejection),
                            )
                            .await?;
                        }
                    }
                }
                OrderStatus::Reserved => {
                    self.pay_and_decide(&mut order, checkout, fresh, None)
                        .await?
                }
                _ => {
                    if redelivered && !fresh {
                        // The events of a decision made just before a crash may not have gone out.
                        self.announce(&order);
                    }
                    return Ok(Outcome::Ack);
                }
            }
        }
    }

    /// Authorizes the payment (outside every actor) and decides: `scheduled` with a delivery
    /// slot, or `failed` with the stock released. `reserved_at` when the order is still
    /// `received` in the database: `reserved` is then written with the decision.
    async fn pay_and_decide(
        &self,
        order: &mut Order,
        checkout: &Checkout,
        fresh: bool,
        reserved_at: Option<DateTime<Utc>>,
    ) -> Result<(), Transient> {
        let mut via = reserved_at.map(|at| (OrderStatus::Reserved, at));
        let currency = order.currency.clone();
        let authorize = self.inner.gateway.authorize(
            order.order_id,
            order.total_cents,
            &currency,
            &checkout.payment,
        );
        tokio::pin!(authorize);
        let auth = if via.is_some() {
            tokio::select! {
                auth = &mut authorize => auth,
                // A slow gateway: make `reserved` durable and visible now, decide later.
                _ = tokio::time::sleep(RESERVED_VISIBLE_AFTER) => {
                    self.transition(order, None, OrderStatus::Reserved, None, None).await?;
                    via = None;
                    authorize.await
                }
            }
        } else {
            authorize.await
        }
        .map_err(Transient)?;
        match auth {
            Authorization::Approved { .. } => {
                let method = checkout.delivery_method;
                let Some(slot) = self.book(method, order.order_id) else {
                    return Err(Transient("no delivery capacity within a year".into()));
                };
                let delivery = serde_json::to_value(&slot).unwrap_or(Value::Null);
                let moved = self
                    .transition(order, via, OrderStatus::Scheduled, Some(delivery), None)
                    .await;
                if moved.is_err() || order.status != OrderStatus::Scheduled {
                    self.unbook(method, slot.scheduled_for);
                }
                moved
            }
            Authorization::Declined { reason } => {
                self.release_all(order.order_id, &item_lines(&order.items), !fresh)
                    .await?;
                let rejection =
                    json!({ "reason": "payment_declined", "message": reason, "items": [] });
                self.transition(order, via, OrderStatus::Failed, None, Some(rejection))
                    .await
            }
        }
    }

    /// Creates the order (or finds it). `Err(outcome)` when the message cannot make an order.
    async fn create_or_load(
        &self,
        checkout: &Checkout,
        order_id: Uuid,
        key: &str,
        fp: &str,
        origin: &str,
    ) -> Result<Result<(Order, bool), Outcome>, Transient> {
        // Lines: from the request, or claimed from the cart (one order per cart).
        let mut status = OrderStatus::Received;
        let mut rejection = None;
        let mut cart_id = None;
        let lines: Vec<(Sku, i64)> = match &checkout.lines {
            LineSource::Items(items) => {
                if let Some((sku, _)) = items
                    .iter()
                    .find(|(s, _)| self.inner.catalog.get(s).is_none())
                {
                    return Ok(Err(Outcome::DeadLetter(format!("unknown sku {sku}"))));
                }
                items.clone()
            }
            LineSource::Cart(id) => {
                let (id, customer) = (*id, checkout.customer_id.as_str().to_owned());
                cart_id = Some(id);
                let claimed = run_blocking(&self.inner.pool, move |c| {
                    cart_store::claim(c, id, &customer, order_id)
                })
                .await;
                match claimed {
                    Ok(lines) => lines
                        .into_iter()
                        .filter_map(|(s, q)| Some((Sku::parse(&s).ok()?, q)))
                        .collect(),
                    Err(ClaimError::Db(e)) => return Err(Transient(e.to_string())),
                    Err(ClaimError::NotFound) | Err(ClaimError::WrongCustomer) => {
                        return Ok(Err(Outcome::DeadLetter(format!(
                            "unknown cart {id} for this customer"
                        ))))
                    }
                    Err(e @ (ClaimError::Ordered(_) | ClaimError::Empty)) => {
                        // Accepted, but the cart cannot serve it: the order is decided as rejected.
                        status = OrderStatus::Rejected;
                        rejection = Some(
                            json!({ "reason": "cart_unavailable", "message": e.to_string(), "items": [] }),
                        );
                        Vec::new()
                    }
                }
            }
        };
        let items: Vec<OrderItem> = lines
            .iter()
            .map(|(sku, q)| OrderItem {
                sku: sku.to_string(),
                quantity: *q,
                unit_price_cents: self.inner.catalog.get(sku).map_or(0, |p| p.price_cents),
            })
            .collect();
        let total: i64 = items
            .iter()
            .map(|i| i.unit_price_cents.saturating_mul(i.quantity))
            .sum();
        let currency = lines
            .first()
            .and_then(|(s, _)| self.inner.catalog.get(s))
            .map_or_else(|| "BRL".to_owned(), |p| p.currency.clone());
        let now = Utc::now();
        let row = NewOrderRow {
            order_id,
            idempotency_key: key.to_owned(),
            request_fingerprint: fp.to_owned(),
            customer_id: checkout.customer_id.as_str().to_owned(),
            cart_id,
            origin: origin.to_owned(),
            status: status.as_str().to_owned(),
            items: serde_json::to_value(&items).unwrap_or(Value::Null),
            total_cents: total,
            currency: currency.clone(),
            delivery_method: checkout.delivery_method.as_str().to_owned(),
            shipping_address: serde_json::to_value(&checkout.address).unwrap_or(Value::Null),
            payment: serde_json::to_value(&checkout.payment).unwrap_or(Value::Null),
            delivery: None,
            rejection: rejection.clone(),
            at: now,
        };
        let created = self.write(|w| w.create(row.clone())).await?;
        self.inner.seen.insert(&order_id);
        if created {
            self.inner.accepted.remove(&order_id);
            let order = Order {
                order_id,
                customer_id: row.customer_id,
                cart_id,
                origin: row.origin,
                status,
                items,
                total_cents: total,
                currency,
                delivery_method: row.delivery_method,
                payment: row.payment,
                delivery: None,
                rejection,
                history: vec![(status, now)],
                created_at: now,
                updated_at: now,
                fingerprint: fp.to_owned(),
            };
            self.announce(&order);
            return Ok(Ok((order, true)));
        }
        self.inner.accepted.remove(&order_id);
        let order = self
            .load(order_id)
            .await
            .map_err(|e| Transient(e.to_string()))?;
        let Some(order) = order else {
            return Err(Transient("the order was neither created nor found".into()));
        };
        if order.fingerprint != fp {
            return Ok(Err(Outcome::DeadLetter(format!(
                "idempotency key reused with a different request (order {order_id} exists)"
            ))));
        }
        Ok(Ok((order, false)))
    }

    /// Queues a write and waits until it is committed; waits out a saturated writer.
    async fn write(
        &self,
        queue: impl Fn(&OrderWriter) -> Result<tokio::sync::oneshot::Receiver<bool>, WriteError>,
    ) -> Result<bool, Transient> {
        loop {
            match queue(&self.inner.writer) {
                Ok(rx) => {
                    return rx
                        .await
                        .map_err(|_| Transient("the order writer stopped".into()))
                }
                Err(WriteError::Full) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(WriteError::Stopped) => {
                    return Err(Transient("the order writer stopped".into()))
                }
            }
        }
    }

    /// Moves the order (guarded by its current status), records history and notification,
    /// publishes the events. If the order had moved meanwhile, `order` is reloaded instead.
    async fn transition(
        &self,
        order: &mut Order,
        via: Option<(OrderStatus, DateTime<Utc>)>,
        to: OrderStatus,
        delivery: Option<Value>,
        rejection: Option<Value>,
    ) -> Result<(), Transient> {
        let allowed = match via {
            Some((step, _)) => order.status.can_become(step) && step.can_become(to),
            None => order.status.can_become(to),
        };
        if !allowed {
            return Err(Transient(format!(
                "{:?} cannot become {to:?}",
                order.status
            )));
        }
        let now = Utc::now();
        let reason = rejection
            .as_ref()
            .and_then(|r| r["reason"].as_str())
            .map(str::to_owned);
        let notification = to.notification_kind(reason.as_deref()).map(|kind| {
            let suggestions = rejection
                .as_ref()
                .and_then(|r| r["items"].as_array())
                .map(|items| {
                    items
                        .iter()
                        .flat_map(|i| i["suggestions"].as_array().cloned().unwrap_or_default())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            NotificationRow {
                id: Uuid::new_v5(&order.order_id, kind.as_bytes()),
                customer_id: order.customer_id.clone(),
                kind: kind.to_owned(),
                order_id: order.order_id,
                message: notification_message(kind, order),
                suggestions: Value::Array(suggestions),
                created_at: now,
            }
        });
        let row = TransitionRow {
            order_id: order.order_id,
            from_status: order.status.as_str().to_owned(),
            to_status: to.as_str().to_owned(),
            delivery: delivery.clone(),
            rejection: rejection.clone(),
            at: now,
            via_status: via.map(|(step, _)| step.as_str().to_owned()),
            via_at: via.map(|(_, at)| at),
            notification: notification.clone(),
        };
        let moved = self.write(|w| w.transition(row.clone())).await?;
        if !moved {
            let reloaded = self
                .load(order.order_id)
                .await
                .map_err(|e| Transient(e.to_string()))?;
            if let Some(o) = reloaded {
                *order = o;
            }
            return Ok(());
        }
        if let Some((step, at)) = via {
            order.status = step;
            order.history.push((step, at));
            self.announce(order);
        }
        order.status = to;
        order.updated_at = now;
        order.history.push((to, now));
        if to.is_decided() {
            self.inner.admission.record_decision();
        }
        if delivery.is_some() {
            order.delivery = delivery;
        }
        if rejection.is_some() {
            order.rejection = rejection;
        }
        self.announce(order);
        if let Some(n) = notification {
            let body = json!({
                "id": n.id, "kind": n.kind, "order_id": n.order_id, "customer_id": n.customer_id,
                "message": n.message, "suggestions": n.suggestions, "created_at": n.created_at,
            });
            self.emit(
                format!("notification.{}", n.kind),
                body.to_string(),
                order.order_id,
            );
        }
        Ok(())
    }

    /// Announces the order's current status: in-process stream and `order.events`.
    fn announce(&self, order: &Order) {
        let at = order.history.last().map_or(order.updated_at, |(_, at)| *at);
        let _ = self.inner.events.send(OrderEvent {
            order_id: order.order_id,
            status: order.status,
            at,
        });
        self.emit(
            format!("order.{}", order.status.as_str()),
            order.to_json().to_string(),
            order.order_id,
        );
    }

    /// Publishes an event on `order.events`, confirmed, without making the order's next step
    /// wait for the broker: the decision it reports is already durable.
    fn emit(&self, key: String, body: String, order_id: Uuid) {
        let broker = self.inner.broker.clone();
        tokio::spawn(async move {
            if let Err(e) = broker
                .publish_event(EXCHANGE_ORDER_EVENTS, &key, body.as_bytes())
                .await
            {
                tracing::warn!(%order_id, %key, error = %e, "event not published");
            }
        });
    }

    // ---------------------------------------------------------------- stock

    /// Reserves every line (each at its own actor, concurrently) or none. `check_first` when
    /// this order may have been processed before: lines already reserved are recognised by
    /// their reference, and an earlier compensation is finished rather than undone.
    async fn reserve_all(
        &self,
        order_id: Uuid,
        lines: &[(Sku, i64)],
        check_first: bool,
    ) -> Result<Result<(), Vec<ShortLine>>, Transient> {
        let release_ref = format!("order:{order_id}:release");
        if check_first {
            for (sku, _) in lines {
                let released = self.applied(sku, &release_ref).await?;
                if released {
                    // An earlier attempt was already rejecting this order.
                    self.release_all(order_id, lines, true).await?;
                    return Ok(Err(self.short_lines(lines)));
                }
            }
        }
        let results = join_all(
            lines
                .iter()
                .map(|(sku, q)| self.reserve_line(order_id, sku, *q, check_first)),
        )
        .await;
        let mut short = Vec::new();
        let mut reserved = Vec::new();
        for ((sku, q), r) in lines.iter().zip(results) {
            match r? {
                LineOutcome::Reserved => reserved.push((sku.clone(), *q)),
                LineOutcome::Short(available) => short.push(ShortLine {
                    sku: sku.clone(),
                    requested: *q,
                    available,
                    suggestions: self
                        .inner
                        .catalog
                        .similar(sku, SUGGESTIONS)
                        .unwrap_or_default(),
                }),
            }
        }
        if short.is_empty() {
            return Ok(Ok(()));
        }
        self.release_all(order_id, &reserved, false).await?;
        Ok(Err(short))
    }

    /// Whether the stock change with this reference is committed for this SKU.
    async fn applied(&self, sku: &Sku, reference: &str) -> Result<bool, Transient> {
        self.inner
            .engine
            .change_applied(sku, reference)
            .await
            .map_err(|e| Transient(e.to_string()))
    }

    async fn reserve_line(
        &self,
        order_id: Uuid,
        sku: &Sku,
        qty: i64,
        check_first: bool,
    ) -> Result<LineOutcome, Transient> {
        let reference = format!("order:{order_id}:reserve");
        self.stock_change(sku, StockOp::Reserve(qty), reference, check_first)
            .await
    }

    /// Releases the lines' reservations (idempotently, by reference).
    async fn release_all(
        &self,
        order_id: Uuid,
        lines: &[(Sku, i64)],
        check_first: bool,
    ) -> Result<(), Transient> {
        let reference = format!("order:{order_id}:release");
        let reserve_ref = format!("order:{order_id}:reserve");
        for (sku, q) in lines {
            if check_first {
                // Only what was reserved is released.
                let reserved = self.applied(sku, &reserve_ref).await?;
                if !reserved {
                    continue;
                }
            }
            match self
                .stock_change(sku, StockOp::Release(*q), reference.clone(), check_first)
                .await?
            {
                LineOutcome::Reserved => {}
                LineOutcome::Short(_) => {
                    tracing::error!(%order_id, %sku, "a release was refused: the reservation was not there");
                }
            }
        }
        Ok(())
    }

    /// One stock change with a reference, until it is durable (or known done, or refused).
    async fn stock_change(
        &self,
        sku: &Sku,
        op: StockOp,
        reference: String,
        mut check_first: bool,
    ) -> Result<LineOutcome, Transient> {
        let started = Instant::now();
        loop {
            if started.elapsed() > RETRY_FOR {
                return Err(Transient(format!("stock change on {sku} did not settle")));
            }
            if check_first {
                let done = self.applied(sku, &reference).await?;
                if done {
                    return Ok(LineOutcome::Reserved);
                }
            }
            match self
                .inner
                .engine
                .apply_with_ref(sku, op, None, Some(reference.clone()))
                .await
            {
                Ok(applied) => match applied.durable.wait().await {
                    Ok(()) => return Ok(LineOutcome::Reserved),
                    // Memory was wrong, or this reference is already in: look, then retry.
                    Err(DurabilityError::Conflict) => check_first = true,
                    Err(DurabilityError::Stopped) => {
                        return Err(Transient("the engine is stopping".into()))
                    }
                },
                Err(EngineError::Rejected(LedgerError::Insufficient { available, .. })) => {
                    return Ok(LineOutcome::Short(available))
                }
                Err(EngineError::Rejected(LedgerError::NotReserved { .. })) => {
                    return Ok(LineOutcome::Short(0))
                }
                Err(EngineError::Rejected(e)) => {
                    return Err(Transient(format!("stock change refused: {e}")))
                }
                Err(EngineError::UnknownSku) => return Ok(LineOutcome::Short(0)),
                Err(EngineError::Overloaded) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => {
                    tracing::warn!(%sku, error = %e, "stock change retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    // ---------------------------------------------------------------- delivery capacity

    fn counter(&self, method: DeliveryMethod, day: NaiveDate) -> Arc<AtomicU32> {
        Arc::clone(
            self.inner
                .capacity
                .entry((method, day))
                .or_default()
                .value(),
        )
    }

    fn book(&self, method: DeliveryMethod, order_id: Uuid) -> Option<DeliverySlot> {
        let rules = delivery::rules(method);
        delivery::schedule(method, &rules, local_now(), &order_id.to_string(), |day| {
            self.counter(method, day)
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < rules.daily_capacity).then_some(n + 1)
                })
                .is_ok()
        })
    }

    fn unbook(&self, method: DeliveryMethod, day: NaiveDate) {
        let _ = self
            .counter(method, day)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    // ---------------------------------------------------------------- reads and cancel

    async fn load(&self, order_id: Uuid) -> Result<Option<Order>, DbError> {
        run_blocking(&self.inner.pool, move |c| {
            let Some(rec) = order_store::find(c, order_id)? else {
                return Ok(None);
            };
            let history = order_store::history(c, order_id)?;
            Ok(Order::from_record(rec, history))
        })
        .await
    }

    /// The order as API.md shows it.
    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, DbError> {
        self.load(order_id).await
    }

    /// A customer's orders, newest first.
    pub async fn of_customer(&self, customer_id: String) -> Result<Vec<Order>, DbError> {
        run_blocking(&self.inner.pool, move |c| {
            let records = order_store::by_customer(c, &customer_id, 100)?;
            let mut out = Vec::with_capacity(records.len());
            for rec in records {
                let history = order_store::history(c, rec.order_id)?;
                if let Some(o) = Order::from_record(rec, history) {
                    out.push(o);
                }
            }
            Ok(out)
        })
        .await
    }

    /// A customer's notifications, newest first.
    pub async fn notifications(
        &self,
        customer_id: String,
    ) -> Result<Vec<order_store::NotificationRecord>, DbError> {
        run_blocking(&self.inner.pool, move |c| {
            order_store::notifications_of(c, &customer_id, 100)
        })
        .await
    }

    /// Cancels an order that is received, reserved or scheduled; its stock is released.
    pub async fn cancel(&self, order_id: Uuid) -> Result<Order, CancelError> {
        let _guard = self.lock(order_id).lock().await;
        let unavailable = |e: String| CancelError::Unavailable(e);
        for _ in 0..3 {
            let mut order = self
                .load(order_id)
                .await
                .map_err(|e| unavailable(e.to_string()))?
                .ok_or(CancelError::NotFound)?;
            if !order.status.can_become(OrderStatus::Cancelled) {
                return Err(CancelError::NotCancellable(order.status));
            }
            let was = order.status;
            if was.holds_stock() {
                self.release_all(order_id, &item_lines(&order.items), true)
                    .await
                    .map_err(|e| unavailable(e.0))?;
            }
            self.transition(&mut order, None, OrderStatus::Cancelled, None, None)
                .await
                .map_err(|e| unavailable(e.0))?;
            if order.status == OrderStatus::Cancelled {
                if was == OrderStatus::Scheduled {
                    if let (Some(method), Some(day)) = (
                        DeliveryMethod::parse(&order.delivery_method),
                        order
                            .delivery
                            .as_ref()
                            .and_then(|d| d["scheduled_for"].as_str())
                            .and_then(|d| d.parse().ok()),
                    ) {
                        self.unbook(method, day);
                    }
                }
                return Ok(order);
            }
        }
        Err(unavailable("the order kept changing; retry".into()))
    }
}

fn notification_message(kind: &str, order: &Order) -> String {
    match kind {
        "order_scheduled" => format!("Your order {} is confirmed and scheduled for delivery.", order.order_id),
        "payment_declined" => format!("The payment for order {} was declined; nothing was charged and the items were released.", order.order_id),
        "order_cancelled" => format!("Your order {} was cancelled.", order.order_id),
        "stock_conflict" => format!("Sorry: other customers took the last units of some items in order {} just before it was processed. Here are similar products in stock.", order.order_id),
        _ => format!("Some items in order {} are out of stock. Here are similar products in stock.", order.order_id),
    }
}
