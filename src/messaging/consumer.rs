//! A consumer that survives broker restarts: it waits for a live connection, opens a channel
//! with its prefetch, consumes, and starts over when the channel or connection dies. Every
//! delivery is handled concurrently (up to the prefetch) and acknowledged only after its handler
//! says the outcome is durable (DESIGN.md rule 1).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;

use super::topology::{QueueSpec, EXCHANGE_DEAD_LETTER, REASON_HEADER};
use super::Broker;

/// A delivery as a handler sees it.
#[derive(Debug, Clone)]
pub struct Message {
    pub data: Vec<u8>,
    pub message_id: Option<String>,
    /// The producer's `app_id` property (orderflow's own HTTP intake says `orderflow-http`).
    pub app_id: Option<String>,
    pub redelivered: bool,
}

/// What to do with a delivery once handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done and durable: acknowledge.
    Ack,
    /// Cannot ever be processed: move it to the dead-letter queue with this reason, then ack.
    DeadLetter(String),
    /// Not now (shutting down): give it back to the queue.
    Requeue,
}

pub type Handler =
    Arc<dyn Fn(Message) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// Starts consuming `queue` in the background, forever.
pub fn spawn(broker: Broker, queue: QueueSpec, prefetch: u16, handler: Handler) {
    tokio::spawn(async move {
        loop {
            let conn = broker.wait_connection().await;
            match consume(&broker, &conn, queue, prefetch, &handler).await {
                Ok(()) => tracing::warn!(queue = queue.name, "consumer stream ended; restarting"),
                Err(e) => {
                    tracing::warn!(queue = queue.name, error = %e, "consumer failed; restarting")
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

async fn consume(
    broker: &Broker,
    conn: &lapin::Connection,
    queue: QueueSpec,
    prefetch: u16,
    handler: &Handler,
) -> lapin::Result<()> {
    let channel = conn.create_channel().await?;
    // Re-applied on every reconnect: prefetch belongs to the channel.
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut deliveries = channel
        .basic_consume(
            queue.name.into(),
            format!("orderflow-{}", queue.name).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = queue.name, prefetch, "consuming");
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let handler = Arc::clone(handler);
        let broker = broker.clone();
        tokio::spawn(async move {
            let message = Message {
                data: delivery.data.clone(),
                message_id: delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.to_string()),
                app_id: delivery.properties.app_id().as_ref().map(|m| m.to_string()),
                redelivered: delivery.redelivered,
            };
            let outcome = handler(message).await;
            let settled = match outcome {
                Outcome::Ack => delivery.ack(BasicAckOptions::default()).await,
                Outcome::DeadLetter(reason) => {
                    tracing::warn!(queue = queue.name, %reason, "dead-lettering a message");
                    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
                    headers.insert(
                        REASON_HEADER.into(),
                        AMQPValue::LongString(LongString::from(reason)),
                    );
                    let mut props = BasicProperties::default().with_headers(headers);
                    if let Some(id) = delivery.properties.message_id() {
                        props = props.with_message_id(id.clone());
                    }
                    match broker
                        .publish(EXCHANGE_DEAD_LETTER, queue.name, &delivery.data, props)
                        .await
                    {
                        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                        Err(e) => {
                            // Keep it: it comes back, and the delivery limit still applies.
                            tracing::warn!(queue = queue.name, error = %e, "could not dead-letter; requeueing");
                            delivery
                                .nack(BasicNackOptions {
                                    requeue: true,
                                    ..BasicNackOptions::default()
                                })
                                .await
                        }
                    }
                }
                Outcome::Requeue => {
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
            };
            if let Err(e) = settled {
                // The channel died: the broker redelivers it to the next consumer.
                tracing::warn!(queue = queue.name, error = %e, "could not settle a delivery");
            }
        });
    }
    Ok(())
}
