//! The copies orderflow publishes of a delivery it cannot acknowledge as it is: its dead letter
//! (with the reason, without card data, kept for the retention) and its hand-back (a fresh copy
//! at the tail of the queue, its count raised). A copy carries orderflow's `user_id` and names the
//! original's verified producer, so it is judged as the original was.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;

use super::consumer::{HANDBACK_ATTEMPTS, REQUEUE};
use super::topology::{
    QueueSpec, EXCHANGE_DEAD_LETTER, HANDBACK_HEADER, PRODUCER_HEADER, REASON_HEADER,
};
use super::Broker;
use crate::monitor::Settled;

/// How often this message was handed back already: the count orderflow wrote on its copy, read
/// only from a delivery published by orderflow itself (a producer cannot forge it).
pub(super) fn handbacks(broker: &Broker, delivery: &Delivery) -> i64 {
    let from_us =
        delivery.properties.user_id().as_ref().map(|u| u.as_str()) == Some(broker.own_user());
    let headers = delivery.properties.headers().as_ref();
    match headers.and_then(|h| h.inner().get(HANDBACK_HEADER)) {
        Some(AMQPValue::LongLongInt(n)) if from_us => *n,
        _ => 0,
    }
}

/// The properties of a copy orderflow publishes of a delivery (dead letter, hand-back): it
/// carries orderflow's user_id (the broker allows no other) and names the original's producer,
/// so it is judged as the original was. (An own message has no such header: with one it would
/// not be own.)
fn copy_properties(
    delivery: &Delivery,
    provenance: Option<&str>,
    mut headers: FieldTable,
) -> BasicProperties {
    if let Some(p) = provenance {
        headers.insert(
            PRODUCER_HEADER.into(),
            AMQPValue::LongString(LongString::from(p.to_owned())),
        );
    }
    // An original that came without a trace started one here (the delivery's span): its copy
    // carries it, so the message stays one trace across hand-backs, dead letters and replays.
    if let Some(traceparent) = crate::telemetry::traceparent(&tracing::Span::current()) {
        let traced = match headers.inner().get(crate::telemetry::TRACEPARENT) {
            Some(AMQPValue::LongString(t)) => crate::telemetry::is_trace(&t.to_string()),
            _ => false,
        };
        if !traced {
            headers.insert(
                crate::telemetry::TRACEPARENT.into(),
                AMQPValue::LongString(LongString::from(traceparent)),
            );
        }
    }
    delivery.properties.clone().with_headers(headers)
}

/// A copy with the reason to the dead letters (no card data in it, kept for the retention),
/// then the original acknowledged; if the copy cannot be published, the original is requeued
/// (it comes back, and the delivery limit still applies).
pub(super) async fn dead_letter(
    broker: &Broker,
    queue: QueueSpec,
    delivery: &Delivery,
    provenance: Option<&str>,
    reason: String,
    body: Vec<u8>,
) -> (Settled, lapin::Result<bool>) {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let props = copy_properties(delivery, provenance, headers);
    match publish_dead_letter(broker, queue, props, &reason, body).await {
        Ok(()) => (
            Settled::DeadLettered,
            delivery.ack(BasicAckOptions::default()).await,
        ),
        Err(e) => {
            tracing::warn!(queue = queue.name, error = %e, "could not dead-letter; requeueing");
            (Settled::Requeued, delivery.nack(REQUEUE).await)
        }
    }
}

/// Publishes a message's dead letter: `props` (the message's own) with the reason, kept for the
/// retention; `body` without card data, whatever it was refused for (PCI DSS 3.3). Counted as
/// dead-lettered once confirmed.
pub(super) async fn publish_dead_letter(
    broker: &Broker,
    queue: QueueSpec,
    props: BasicProperties,
    reason: &str,
    body: Vec<u8>,
) -> Result<(), super::PublishError> {
    let body = crate::domain::card_data::safe_to_keep(&body).unwrap_or(body);
    // A reason may echo what was refused (serde's "invalid type: integer `…`").
    let reason = &*crate::domain::card_data::without_card_numbers(reason);
    tracing::warn!(queue = queue.name, %reason, "dead-lettering a message");
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        REASON_HEADER.into(),
        AMQPValue::LongString(LongString::from(reason.to_owned())),
    );
    let message_id = props.message_id().as_ref().map(|m| m.to_string());
    // Kept for the retention, then gone (what is refused is not kept forever).
    let ttl_ms = broker.dead_letter_ttl().as_millis().max(1).to_string();
    let props = props
        .with_headers(headers)
        .with_expiration(ttl_ms.as_str().into());
    broker
        .publish(EXCHANGE_DEAD_LETTER, queue.name, &body, props)
        .await?;
    broker
        .monitor()
        .record_dead_letter(queue.name, message_id, reason);
    Ok(())
}

/// A copy with its hand-back count raised goes to the back of the queue, then the original is
/// acknowledged. The copy must go out before the original goes: a full queue (reject-publish)
/// or a broker blip is waited out here, holding the delivery, rather than requeueing it — a
/// requeue would count against its delivery limit.
pub(super) async fn hand_back(
    broker: &Broker,
    queue: QueueSpec,
    delivery: &Delivery,
    provenance: Option<&str>,
) -> (Settled, lapin::Result<bool>) {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(
        HANDBACK_HEADER.into(),
        AMQPValue::LongLongInt(handbacks(broker, delivery).saturating_add(1)),
    );
    let props = copy_properties(delivery, provenance, headers);
    let mut attempt = 0u32;
    loop {
        match broker
            .publish(
                queue.exchange,
                queue.routing_key,
                &delivery.data,
                props.clone(),
            )
            .await
        {
            // The copy is durable: the original can go.
            Ok(()) => {
                return (
                    Settled::HandedBack,
                    delivery.ack(BasicAckOptions::default()).await,
                )
            }
            // The channel died meanwhile: the original is back in the queue already.
            Err(e) if delivery.acker.poisoned() => {
                tracing::warn!(queue = queue.name, error = %e, "could not hand a message back; its channel is gone");
                return (Settled::Requeued, Ok(false));
            }
            Err(e) if attempt < HANDBACK_ATTEMPTS => {
                attempt += 1;
                tracing::warn!(queue = queue.name, error = %e, attempt, "could not hand a message back yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                tracing::warn!(queue = queue.name, error = %e, "could not hand a message back; requeueing");
                return (Settled::Requeued, delivery.nack(REQUEUE).await);
            }
        }
    }
}
