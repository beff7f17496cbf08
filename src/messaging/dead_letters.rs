//! The operator's view of dead letters (`orderflow dead-letters list|replay <queue>`): what is in
//! `<queue>.dead` and why, and a replay that re-publishes each dead letter to its queue with
//! publisher confirms and removes only what the broker confirmed.
//!
//! Both take the messages present when they start (a replayed message that is dead-lettered
//! again is not replayed twice in one run). `list` returns every message to the dead-letter
//! queue untouched.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::topology::{QueueSpec, QUEUES, REASON_HEADER, REPLAY_HEADER};
use super::{Broker, BrokerError};

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    /// Why orderflow dead-lettered it (empty when the broker did: delivery limit).
    pub reason: String,
    /// The body, as text (lossy).
    pub body: String,
}

/// A dead letter's properties for its replay, without its `expiration`.
fn replay_properties(from: &lapin::BasicProperties) -> lapin::BasicProperties {
    let mut props = lapin::BasicProperties::default();
    if let Some(v) = from.message_id() {
        props = props.with_message_id(v.clone());
    }
    if let Some(v) = from.content_type() {
        props = props.with_content_type(v.clone());
    }
    if let Some(v) = from.app_id() {
        props = props.with_app_id(v.clone());
    }
    if let Some(v) = from.timestamp() {
        props = props.with_timestamp(*v);
    }
    if let Some(v) = from.correlation_id() {
        props = props.with_correlation_id(v.clone());
    }
    props
}

/// Fields holding a person's data, masked when dead letters are listed.
const PERSONAL: [&str; 9] = [
    "recipient",
    "holder_name",
    "street",
    "number",
    "complement",
    "district",
    "postal_code",
    "document",
    "card_token",
];

impl DeadLetter {
    /// The body as an operator sees it by default: names, the address, documents and tokens
    /// masked (`***`), any card number replaced; a body that is not JSON is shown by its size.
    pub fn masked_body(&self) -> String {
        fn mask(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::Object(map) => {
                    for (k, v) in map.iter_mut() {
                        if PERSONAL.contains(&k.as_str()) && !v.is_object() {
                            *v = serde_json::Value::String("***".into());
                        } else {
                            mask(v);
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(mask),
                serde_json::Value::String(s)
                    if crate::domain::card_data::text_has_card_number(s) =>
                {
                    *s = "[redacted]".into()
                }
                // A checkout inside a batch (one the broker dead-lettered whole) is JSON text:
                // masked like any other.
                serde_json::Value::String(s) if s.starts_with('{') => {
                    if let Ok(mut inner) = serde_json::from_str::<serde_json::Value>(s) {
                        mask(&mut inner);
                        *s = inner.to_string();
                    }
                }
                _ => {}
            }
        }
        match serde_json::from_str::<serde_json::Value>(&self.body) {
            Ok(mut body) => {
                mask(&mut body);
                body.to_string()
            }
            Err(_) => format!(
                "({} bytes, not JSON; --unmasked shows them)",
                self.body.len()
            ),
        }
    }
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Re-published (confirmed) and removed from the dead-letter queue.
    pub replayed: usize,
    /// Left in the dead-letter queue because the broker did not confirm the re-publish.
    pub kept: usize,
}

/// The work queue named `name` (or whose dead-letter queue is named `name`).
pub fn queue_named(name: &str) -> Option<QueueSpec> {
    let name = name.strip_suffix(".dead").unwrap_or(name);
    QUEUES.into_iter().find(|q| q.name == name)
}

fn text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}

async fn channel_and_count(
    broker: &Broker,
    queue: QueueSpec,
) -> Result<(lapin::Channel, u32), BrokerError> {
    let conn = broker
        .current()
        .ok_or_else(|| BrokerError::Unreachable("not connected".into()))?;
    let channel = conn.create_channel().await.map_err(BrokerError::Amqp)?;
    let dead = queue.dead_letter_queue();
    let declared = channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(BrokerError::Amqp)?;
    Ok((channel, declared.message_count()))
}

/// The next dead letter (unacknowledged: it goes back if the channel closes without an ack).
async fn next(
    channel: &lapin::Channel,
    dead: &str,
) -> Result<Option<lapin::message::Delivery>, BrokerError> {
    Ok(channel
        .basic_get(dead.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(BrokerError::Amqp)?
        .map(|m| m.delivery))
}

/// The dead letters of `queue`, oldest first; they stay where they are.
pub async fn list(broker: &Broker, queue: QueueSpec) -> Result<Vec<DeadLetter>, BrokerError> {
    let (channel, count) = channel_and_count(broker, queue).await?;
    let dead = queue.dead_letter_queue();
    let mut letters = Vec::new();
    for _ in 0..count {
        let Some(delivery) = next(&channel, &dead).await? else {
            break;
        };
        let props = &delivery.properties;
        letters.push(DeadLetter {
            message_id: props.message_id().as_ref().map(|m| m.to_string()),
            reason: props
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(REASON_HEADER).map(text))
                .unwrap_or_default(),
            body: String::from_utf8_lossy(&delivery.data).into_owned(),
        });
    }
    // Every message goes back, untouched.
    let _ = channel.close(200, "listed".into()).await;
    Ok(letters)
}

/// Re-publishes the dead letters of `queue` to it, each removed only once the broker confirmed
/// its copy. Stops at the first copy not confirmed (that one and the rest stay).
pub async fn replay(broker: &Broker, queue: QueueSpec) -> Result<Replayed, BrokerError> {
    let (channel, count) = channel_and_count(broker, queue).await?;
    let dead = queue.dead_letter_queue();
    let mut report = Replayed::default();
    for _ in 0..count {
        let Some(delivery) = next(&channel, &dead).await? else {
            break;
        };
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let replays = match headers.inner().get(REPLAY_HEADER) {
            Some(AMQPValue::LongLongInt(n)) => *n,
            _ => 0,
        };
        let mut kept = FieldTable::default();
        for (k, v) in headers.inner() {
            if k.as_str() != REASON_HEADER {
                kept.insert(k.clone(), v.clone());
            }
        }
        headers = kept;
        headers.insert(REPLAY_HEADER.into(), AMQPValue::LongLongInt(replays + 1));
        // The replay goes out as orderflow's (its user_id): a dead letter the broker made from
        // someone else's message keeps that producer's name, so a replay is never trusted more
        // than the original was.
        let user = delivery
            .properties
            .user_id()
            .as_ref()
            .map(|u| u.to_string());
        // (A producer header on a dead letter the broker made from someone else's message is that
        // producer's own words: overwritten with who the broker says it was.)
        if user.as_deref() != Some(broker.own_user()) {
            headers.insert(
                super::topology::PRODUCER_HEADER.into(),
                AMQPValue::LongString(user.unwrap_or_default().into()),
            );
        }
        // Properties copied one by one: the dead letter's retention (`expiration`) stays behind.
        let props = replay_properties(&delivery.properties).with_headers(headers);
        match broker
            .publish(queue.exchange, queue.routing_key, &delivery.data, props)
            .await
        {
            Ok(()) => {
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(BrokerError::Amqp)?;
                report.replayed += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "a replay was not confirmed; it stays a dead letter");
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
                report.kept = count as usize - report.replayed;
                break;
            }
        }
    }
    let _ = channel.close(200, "replayed".into()).await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_dead_lettered_whole_is_listed_with_each_checkout_masked() {
        let checkout = serde_json::json!({
            "customer_id": "c-1",
            "payment": {"method": "card", "card_token": "tok_secret"},
            "shipping_address": {"recipient": "Ana Silva", "street": "Av. Paulista"},
        });
        let batch =
            serde_json::json!({"checkouts": [{"key": "k-1", "body": checkout.to_string()}]});
        let letter = DeadLetter {
            message_id: Some("batch:1".into()),
            reason: String::new(),
            body: batch.to_string(),
        };
        let shown = letter.masked_body();
        for secret in ["tok_secret", "Ana Silva", "Paulista"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("c-1") && shown.contains("k-1"), "{shown}");
    }
}
