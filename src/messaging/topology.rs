//! The RabbitMQ topology of API.md, declared on every (re)connect: durable exchanges, quorum
//! queues with a dead-letter exchange (at-least-once), a delivery limit for poison messages and
//! `x-max-length` with `reject-publish` as the hard bound.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};

pub use crate::queues::*;

/// Bounds of the work queues.
#[derive(Debug, Clone)]
pub struct TopologyConfig {
    /// Messages a queue holds before publishes to it are refused (`reject-publish`).
    pub max_length: i64,
    /// Deliveries of one message before it is dead-lettered as poison.
    pub delivery_limit: i64,
    /// How long a dead letter orderflow writes is kept (its `expiration`): long enough to look
    /// at and replay, not forever (`DEAD_LETTER_TTL_S`).
    pub dead_letter_ttl: std::time::Duration,
    /// Hand-backs of one message before it is dead-lettered after all (`HANDBACK_LIMIT`).
    pub handback_limit: i64,
    /// Intake's checkouts in one message at most, when they wait for the broker together
    /// (`CHECKOUT_BATCH`; 1: every checkout alone).
    pub checkout_batch: usize,
    /// Publishes of intake's checkouts unconfirmed at once (`CHECKOUT_PUBLISHES`): the
    /// checkouts that arrive while all are out wait, and go out together.
    pub checkout_publishes: usize,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            max_length: 100_000,
            delivery_limit: 5,
            dead_letter_ttl: std::time::Duration::from_secs(14 * 24 * 3600),
            handback_limit: 2880,
            checkout_batch: 32,
            checkout_publishes: 2,
        }
    }
}

fn text(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v.to_owned()))
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// A dead-letter queue with a retention (`x-message-ttl`): dead letters the broker itself makes
/// (a message past its delivery limit) expire too, not only those orderflow writes with their
/// own `expiration`. A queue declared before the retention existed cannot take the argument
/// (the broker refuses a redeclaration with other arguments): it is used as it is, with a
/// warning — delete it (after replaying or purging it) and the next start makes it anew.
async fn declare_dead_letter_queue(
    conn: &Connection,
    name: &str,
    ttl: std::time::Duration,
) -> lapin::Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
    let channel = conn.create_channel().await?;
    match channel
        .queue_declare(name.into(), durable_queue(), args)
        .await
    {
        Ok(_) => {
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
        Err(e) => {
            tracing::warn!(queue = name, error = %e, "this dead-letter queue has no retention (made by an older version): delete it once replayed or purged, and the next start makes it with one");
            let channel = conn.create_channel().await?;
            channel
                .queue_declare(
                    name.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
    }
}

/// Declares every exchange, queue and binding. Idempotent.
pub async fn declare(conn: &Connection, config: &TopologyConfig) -> lapin::Result<()> {
    let channel = conn.create_channel().await?;
    let result = declare_on(conn, &channel, config).await;
    let _ = channel.close(200, "topology declared".into()).await;
    result
}

async fn declare_on(
    conn: &Connection,
    channel: &Channel,
    config: &TopologyConfig,
) -> lapin::Result<()> {
    for (name, kind) in [
        (EXCHANGE_ORDERS, ExchangeKind::Direct),
        (EXCHANGE_INVENTORY, ExchangeKind::Direct),
        (EXCHANGE_CARTS, ExchangeKind::Direct),
        (EXCHANGE_ORDER_EVENTS, ExchangeKind::Topic),
        (EXCHANGE_DEAD_LETTER, ExchangeKind::Direct),
    ] {
        channel
            .exchange_declare(name.into(), kind, durable_exchange(), FieldTable::default())
            .await?;
    }
    for q in QUEUES {
        let dead = q.dead_letter_queue();
        declare_dead_letter_queue(conn, &dead, config.dead_letter_ttl).await?;
        channel
            .queue_bind(
                dead.as_str().into(),
                EXCHANGE_DEAD_LETTER.into(),
                q.name.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        args.insert("x-dead-letter-exchange".into(), text(EXCHANGE_DEAD_LETTER));
        args.insert("x-dead-letter-routing-key".into(), text(q.name));
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(config.max_length),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(config.delivery_limit),
        );
        channel
            .queue_declare(q.name.into(), durable_queue(), args)
            .await?;
        channel
            .queue_bind(
                q.name.into(),
                q.exchange.into(),
                q.routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}
