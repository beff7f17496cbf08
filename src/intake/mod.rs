//! Intake: the handlers behind the RabbitMQ consumers. Each parses and validates a message with
//! the same rules as the HTTP API, hands it to the engine or a service, and says when the
//! delivery may be acknowledged — only once its outcome is durable (DESIGN.md rule 1). A message
//! that can never be processed is dead-lettered with its reason, never dropped.

pub mod carts;
pub mod inventory;

use std::sync::Arc;
use std::time::Duration;

use crate::carts::CartService;
use crate::engine::Engine;
use crate::messaging::consumer::{self, Handler, Message, Outcome};
use crate::messaging::topology::{CARTS_QUEUE, CHECKOUT_QUEUE, INVENTORY_QUEUE};
use crate::messaging::Broker;
use crate::orders::OrderService;

/// How long a handler keeps retrying a transient failure (database away, engine saturated)
/// before giving the delivery back to the queue.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(30);

/// Parses a JSON body, or says why it is not one.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(message: &Message) -> Result<T, Outcome> {
    serde_json::from_slice(&message.data)
        .map_err(|e| Outcome::DeadLetter(format!("body is not the expected JSON: {e}")))
}

/// Starts the `orders.checkout`, `inventory.updates` and `carts.events` consumers.
pub fn start(
    broker: &Broker,
    engine: Engine,
    carts: CartService,
    orders: OrderService,
    prefetch: u16,
) {
    let checkout: Handler = Arc::new(move |m| {
        let orders = orders.clone();
        Box::pin(async move { orders.process(m).await })
    });
    consumer::spawn(broker.clone(), CHECKOUT_QUEUE, prefetch, checkout);
    let in_flight = inventory::InFlight::default();
    let inventory: Handler = Arc::new(move |m| {
        let (engine, in_flight) = (engine.clone(), in_flight.clone());
        Box::pin(async move { inventory::handle(&engine, &in_flight, m).await })
    });
    consumer::spawn(broker.clone(), INVENTORY_QUEUE, prefetch, inventory);
    let cart_handler: Handler = Arc::new(move |m| {
        let carts = carts.clone();
        Box::pin(async move { carts::handle(&carts, m).await })
    });
    consumer::spawn(broker.clone(), CARTS_QUEUE, prefetch, cart_handler);
}
