//! What the order service needs of the broker, as a trait `messaging` provides: publish one of
//! intake's checkouts, publish an event, say whether the broker is there. [`Broker`] is the
//! RabbitMQ implementation; [`MemoryPublisher`] keeps what is published in memory (tests, and
//! whatever runs the order flow without a broker).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use uuid::Uuid;

use super::checkout::OutgoingCheckout;
use super::{Broker, PublishError};

/// A publish's answer, later.
pub type Confirm<'a> = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>>;

/// Confirmed, persistent publishing, as the order service uses it.
pub trait Publisher: Send + Sync + 'static {
    /// One of intake's checkouts to `orders.checkout`; `Ok` once the broker confirmed it.
    fn publish_checkout<'a>(&'a self, checkout: &'a OutgoingCheckout<'a>) -> Confirm<'a>;
    /// An event (`message_id` = `id`) to `exchange` with `routing_key`; `Ok` once confirmed. An
    /// event no queue is bound for is fine.
    fn publish_event<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        body: &'a [u8],
        id: Uuid,
    ) -> Confirm<'a>;
    /// Whether the broker is connected now.
    fn is_connected(&self) -> bool;
}

impl Publisher for Broker {
    fn publish_checkout<'a>(&'a self, checkout: &'a OutgoingCheckout<'a>) -> Confirm<'a> {
        Box::pin(Broker::publish_checkout(self, checkout))
    }

    fn publish_event<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        body: &'a [u8],
        id: Uuid,
    ) -> Confirm<'a> {
        Box::pin(Broker::publish_event(self, exchange, routing_key, body, id))
    }

    fn is_connected(&self) -> bool {
        Broker::is_connected(self)
    }
}

/// A message as [`MemoryPublisher`] kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub exchange: String,
    pub routing_key: String,
    /// The message id: the idempotency key of a checkout, the event's id.
    pub id: String,
    pub body: Vec<u8>,
}

/// Keeps every publish in memory; can be told to refuse every `n`-th one, as a broker that
/// does not confirm.
#[derive(Debug, Default)]
pub struct MemoryPublisher {
    published: Mutex<Vec<Published>>,
    fail_every: AtomicU64,
    attempts: AtomicU64,
    disconnected: AtomicBool,
}

impl MemoryPublisher {
    /// Every `n`-th publish is not confirmed (0: none).
    pub fn fail_every(&self, n: u64) {
        self.fail_every.store(n, Ordering::Relaxed);
    }

    /// The broker goes away (`false`) or comes back, as `is_connected` will say.
    pub fn set_connected(&self, connected: bool) {
        self.disconnected.store(!connected, Ordering::Relaxed);
    }

    /// What was published (and confirmed), in order.
    pub fn published(&self) -> Vec<Published> {
        self.published.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn keep(&self, message: Published) -> Result<(), PublishError> {
        let n = self.fail_every.load(Ordering::Relaxed);
        let attempt = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        if n > 0 && attempt % n == 0 {
            return Err(PublishError::Timeout);
        }
        if let Ok(mut p) = self.published.lock() {
            p.push(message);
        }
        Ok(())
    }
}

impl Publisher for MemoryPublisher {
    fn publish_checkout<'a>(&'a self, checkout: &'a OutgoingCheckout<'a>) -> Confirm<'a> {
        let message = Published {
            exchange: super::topology::EXCHANGE_ORDERS.to_owned(),
            routing_key: super::topology::CHECKOUT_QUEUE.routing_key.to_owned(),
            id: checkout.key.to_owned(),
            body: checkout.body.to_vec(),
        };
        Box::pin(async move { self.keep(message) })
    }

    fn publish_event<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        body: &'a [u8],
        id: Uuid,
    ) -> Confirm<'a> {
        let message = Published {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            id: id.to_string(),
            body: body.to_vec(),
        };
        Box::pin(async move { self.keep(message) })
    }

    fn is_connected(&self) -> bool {
        !self.disconnected.load(Ordering::Relaxed)
    }
}
