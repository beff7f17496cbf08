//! The queue consumers: the handlers behind `orders.checkout`, `inventory.updates` and
//! `carts.events`. Each parses and validates a message with
//! the same rules as the HTTP API, hands it to the engine or a service, and says when the
//! delivery may be acknowledged — only once its outcome is durable (DESIGN.md rule 1). A message
//! that can never be processed is dead-lettered with its reason, never dropped; one that met
//! transient trouble for its whole retry window is handed back without using up its delivery
//! limit (rule 8).

pub mod carts;
pub mod inventory;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::carts::CartService;
use crate::engine::Engine;
use crate::messaging::consumer::{self, Handler, Message, Outcome, Stopping};
use crate::messaging::topology::{CARTS_QUEUE, CHECKOUT_QUEUE, INVENTORY_QUEUE};
use crate::messaging::Broker;
use crate::orders::OrderService;

/// Parses a JSON body — an object, never an array read field by field — or says why it is not
/// one.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(message: &Message) -> Result<T, Outcome> {
    serde_json::from_slice::<crate::domain::validation::Object<T>>(&message.data)
        .map(|crate::domain::validation::Object(t)| t)
        .map_err(|e| Outcome::DeadLetter(format!("body is not the expected JSON: {e}")))
}

/// What the consumers need.
pub struct Consumers {
    pub engine: Engine,
    pub carts: CartService,
    pub orders: OrderService,
    pub prefetch: u16,
    /// How long a handler retries transient trouble before handing the delivery back.
    pub retry_window: Duration,
    /// Who may publish to each queue (`CHECKOUT_PRODUCERS`, `INVENTORY_PRODUCERS`,
    /// `CART_PRODUCERS`).
    pub producers: Producers,
}

/// The allow-lists of the three queues (`None`: anyone with access to the vhost).
#[derive(Debug, Clone, Default)]
pub struct Producers {
    pub checkout: Option<Vec<String>>,
    pub inventory: Option<Vec<String>>,
    pub carts: Option<Vec<String>>,
}

fn gate(producers: Option<Vec<String>>) -> consumer::Gate {
    consumer::Gate {
        producers,
        ..consumer::Gate::default()
    }
}

/// Starts the `orders.checkout`, `inventory.updates` and `carts.events` consumers. They run
/// until stopped; the handles resolve once every delivery in flight is settled.
pub fn start(broker: &Broker, consumers: Consumers, stopping: &Stopping) -> Vec<JoinHandle<()>> {
    let Consumers {
        engine,
        carts,
        orders,
        prefetch,
        retry_window,
        producers,
    } = consumers;
    let checkout: Handler = Arc::new(move |m| {
        let orders = orders.clone();
        Box::pin(async move { orders.process(m).await })
    });
    let in_flight = inventory::InFlight::default();
    let inventory: Handler = Arc::new(move |m| {
        let (engine, in_flight) = (engine.clone(), in_flight.clone());
        Box::pin(async move { inventory::handle(&engine, &in_flight, m, retry_window).await })
    });
    let cart_handler: Handler = Arc::new(move |m| {
        let carts = carts.clone();
        Box::pin(async move { carts::handle(&carts, m, retry_window).await })
    });
    vec![
        consumer::spawn(
            broker.clone(),
            CHECKOUT_QUEUE,
            prefetch,
            gate(producers.checkout),
            checkout,
            stopping.clone(),
        ),
        consumer::spawn(
            broker.clone(),
            INVENTORY_QUEUE,
            prefetch,
            gate(producers.inventory),
            inventory,
            stopping.clone(),
        ),
        consumer::spawn(
            broker.clone(),
            CARTS_QUEUE,
            prefetch,
            gate(producers.carts),
            cart_handler,
            stopping.clone(),
        ),
    ]
}
