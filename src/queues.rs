//! The names of API.md's RabbitMQ contract — exchanges, queues, routing keys and orderflow's
//! own headers — as plain data, below everything that uses them (`messaging` declares them, the
//! monitor counts them).

pub const EXCHANGE_ORDERS: &str = "orders";
pub const EXCHANGE_INVENTORY: &str = "inventory";
pub const EXCHANGE_CARTS: &str = "carts";
pub const EXCHANGE_ORDER_EVENTS: &str = "order.events";
/// Where rejected messages go, routed by the name of the queue they came from.
pub const EXCHANGE_DEAD_LETTER: &str = "orderflow.dead-letter";

/// Header carrying why orderflow dead-lettered a message.
pub const REASON_HEADER: &str = "x-orderflow-reason";
/// Header counting how often a message was handed back after transient trouble.
pub const HANDBACK_HEADER: &str = "x-orderflow-handbacks";
/// Header with the wall-clock milliseconds when orderflow's intake accepted a checkout (for the
/// queue-wait and accept → decided measurements).
pub const ACCEPTED_HEADER: &str = "x-orderflow-accepted-ms";
/// Header with the order id orderflow's intake recorded for a checkout's idempotency key (read
/// only on orderflow's own checkouts).
pub const ORDER_ID_HEADER: &str = "x-orderflow-order-id";
/// Header with the fingerprint of the request intake accepted (its published body carries a
/// card token where the request had a card). Read only on orderflow's own checkouts.
pub const FINGERPRINT_HEADER: &str = "x-orderflow-fingerprint";
/// Header naming the verified producer of a message orderflow copied (a hand-back or a dead
/// letter; empty when the original named none). Read only on orderflow's own messages.
pub const PRODUCER_HEADER: &str = "x-orderflow-producer";
/// Header counting how often an operator replayed a dead letter.
pub const REPLAY_HEADER: &str = "x-orderflow-replays";
/// Header of a checkout batch: the W3C `traceparent` of each of its checkouts, in the order of
/// the body (empty where a checkout has none). A checkout alone carries `traceparent`.
pub const TRACEPARENTS_HEADER: &str = "x-orderflow-traceparents";

/// A work queue and where it is bound.
#[derive(Debug, Clone, Copy)]
pub struct QueueSpec {
    pub name: &'static str,
    pub exchange: &'static str,
    pub routing_key: &'static str,
}

impl QueueSpec {
    /// The queue its dead letters land in.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.name)
    }
}

pub const CHECKOUT_QUEUE: QueueSpec = QueueSpec {
    name: "orders.checkout",
    exchange: EXCHANGE_ORDERS,
    routing_key: "checkout",
};
pub const INVENTORY_QUEUE: QueueSpec = QueueSpec {
    name: "inventory.updates",
    exchange: EXCHANGE_INVENTORY,
    routing_key: "stock.update",
};
pub const CARTS_QUEUE: QueueSpec = QueueSpec {
    name: "carts.events",
    exchange: EXCHANGE_CARTS,
    routing_key: "cart.item",
};

pub const QUEUES: [QueueSpec; 3] = [CHECKOUT_QUEUE, INVENTORY_QUEUE, CARTS_QUEUE];
