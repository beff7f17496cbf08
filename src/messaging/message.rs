//! A delivery as a handler sees it: the message, what its headers say (accept stamp, order id,
//! fingerprint, producer), how long it waited, and the span its handling continues.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::types::AMQPValue;

use super::checkout::{Batch, Stamped, BATCH_CONTENT_TYPE, HTTP_ORIGIN};
use super::topology::{QueueSpec, ACCEPTED_HEADER, PRODUCER_HEADER};

/// A delivery as a handler sees it.
#[derive(Debug, Clone)]
pub struct Message {
    pub data: Vec<u8>,
    pub message_id: Option<String>,
    /// The RabbitMQ user that published it, as the broker validated it (`user_id`; for a copy
    /// orderflow made, the original's); `None` when it named none.
    pub producer: Option<String>,
    /// Published by orderflow itself (not a copy of someone else's message).
    pub own: bool,
    /// The producer's `app_id` property (orderflow's own HTTP intake says `orderflow-http`);
    /// only on orderflow's own messages.
    pub app_id: Option<String>,
    /// The `timestamp` property (seconds since the epoch), only on orderflow's own messages.
    pub timestamp: Option<u64>,
    pub redelivered: bool,
    /// A copy orderflow handed back to the queue after a retry window of transient trouble (an
    /// earlier delivery may have gone some way with it).
    pub handed_back: bool,
    /// When orderflow's intake accepted it (wall-clock ms), if it came that way.
    pub accepted_ms: Option<i64>,
    /// When the delivery arrived.
    pub consumed: std::time::Instant,
    /// The order id intake recorded for the key (orderflow's own checkouts carry it).
    pub order_id: Option<uuid::Uuid>,
    /// Intake's fingerprint of the request (orderflow's own checkouts carry it).
    pub fingerprint: Option<String>,
}

impl Message {
    pub(super) fn of(delivery: &Delivery, own_user: &str) -> Message {
        let props = &delivery.properties;
        let user = props.user_id().as_ref().map(|u| u.to_string());
        let copied_from = match props
            .headers()
            .as_ref()
            .map(|h| h.inner().get(PRODUCER_HEADER))
        {
            Some(Some(AMQPValue::LongString(p))) => Some(p.to_string()),
            _ => None,
        };
        let (producer, own) = match (user, copied_from) {
            // orderflow's copy of someone's message: judged as that producer's.
            (Some(u), Some(original)) if u == own_user => {
                (Some(original).filter(|p| !p.is_empty()), false)
            }
            (Some(u), None) if u == own_user => (Some(u), true),
            (user, _) => (user, false),
        };
        Message {
            data: delivery.data.clone(),
            message_id: props.message_id().as_ref().map(|m| m.to_string()),
            producer,
            own,
            app_id: props
                .app_id()
                .as_ref()
                .filter(|_| own)
                .map(|m| m.to_string()),
            timestamp: props.timestamp().filter(|_| own),
            redelivered: delivery.redelivered,
            handed_back: own_copy_header(delivery, own_user, crate::queues::HANDBACK_HEADER),
            accepted_ms: accepted_ms(delivery).filter(|_| own),
            consumed: std::time::Instant::now(),
            order_id: order_id(delivery).filter(|_| own),
            fingerprint: text_header(delivery, super::topology::FINGERPRINT_HEADER).filter(|_| own),
        }
    }

    /// The header a copy of this message carries so that it is judged like the original.
    pub(super) fn provenance(&self) -> Option<String> {
        (!self.own).then(|| self.producer.clone().unwrap_or_default())
    }
}

/// Whether a header orderflow writes on its own copies is there (read only from orderflow's
/// own publishes: a producer cannot forge it).
fn own_copy_header(delivery: &Delivery, own_user: &str, name: &str) -> bool {
    let from_us = delivery.properties.user_id().as_ref().map(|u| u.as_str()) == Some(own_user);
    let headers = delivery.properties.headers().as_ref();
    from_us && headers.is_some_and(|h| h.inner().contains_key(name))
}

/// Intake's accept stamp, from its header.
fn accepted_ms(delivery: &Delivery) -> Option<i64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(ACCEPTED_HEADER)? {
        AMQPValue::LongLongInt(ms) => Some(*ms),
        _ => None,
    }
}

/// A text header.
fn text_header(delivery: &Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The order id intake recorded, from its header.
fn order_id(delivery: &Delivery) -> Option<uuid::Uuid> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(super::topology::ORDER_ID_HEADER)? {
        AMQPValue::LongString(s) => uuid::Uuid::parse_str(&s.to_string()).ok(),
        _ => None,
    }
}

/// How long a delivery waited in the queue: from intake's accept stamp, else from the
/// publisher's timestamp (whole seconds).
pub(super) fn queue_wait(message: &Message) -> Option<Duration> {
    let now = chrono::Utc::now().timestamp_millis();
    let published = message
        .accepted_ms
        .or_else(|| i64::try_from(message.timestamp?).ok()?.checked_mul(1000))?;
    u64::try_from(now.saturating_sub(published))
        .ok()
        .map(Duration::from_millis)
}

/// The span of one delivery's handling, from its arrival to its settlement, continuing the
/// trace its `traceparent` header names (any producer's: it is only a parent's id). Disabled,
/// and the header not read, when no spans are exported.
pub(super) fn delivery_span(
    queue: QueueSpec,
    delivery: &Delivery,
    message: &Message,
) -> tracing::Span {
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    let parent = text_header(delivery, crate::telemetry::TRACEPARENT);
    message_span(queue, message, parent.as_deref())
}

/// The span of one of intake's batches received, from its arrival to its settlement: in the
/// batch's own trace (its `traceparent` header, the publish's); each checkout's handling is a
/// trace of its own, linked to this one.
pub(super) fn batch_span(queue: QueueSpec, delivery: &Delivery, checkouts: usize) -> tracing::Span {
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::debug_span!(
        target: crate::telemetry::TARGET,
        parent: None,
        "receive",
        otel.name = format!("{} receive", queue.name),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.destination.name = queue.name,
        messaging.message.id = delivery.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default(),
        messaging.rabbitmq.redelivered = delivery.redelivered,
        messaging.batch.message_count = checkouts,
    );
    let parent = text_header(delivery, crate::telemetry::TRACEPARENT);
    crate::telemetry::continue_trace(&span, parent.as_deref().filter(|t| t.len() <= 128));
    span
}

/// The span of one message's handling (alone, or one checkout of a batch), continuing the
/// trace `parent` names.
pub(super) fn message_span(
    queue: QueueSpec,
    message: &Message,
    parent: Option<&str>,
) -> tracing::Span {
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    // A trace of its own (or its producer's), not its caller's: within a batch, a checkout
    // is not a step of the batch.
    let span = tracing::debug_span!(
        target: crate::telemetry::TARGET,
        parent: None,
        "consume",
        otel.name = format!("{} process", queue.name),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.destination.name = queue.name,
        messaging.message.id = message.message_id.as_deref().unwrap_or(""),
        messaging.rabbitmq.redelivered = message.redelivered,
        orderflow.order_id = message.order_id.map(|id| id.to_string()).unwrap_or_default(),
    );
    crate::telemetry::continue_trace(&span, parent.filter(|t| t.len() <= 128));
    span
}

impl Message {
    /// The checkouts of one of orderflow's own checkout batches, each as the message it would
    /// have been alone (and as it is republished, should it be dead-lettered or handed back).
    /// `None`: the delivery is not one (anyone else's message never is); `Some(Err)`: it says
    /// it is one and is not.
    pub(super) fn checkouts(
        &self,
        delivery: &Delivery,
    ) -> Option<Result<Vec<(Stamped, Message)>, String>> {
        let content_type = delivery.properties.content_type().as_ref();
        if !self.own || content_type.map(|c| c.as_str()) != Some(BATCH_CONTENT_TYPE) {
            return None;
        }
        let batch = match Batch::read(&self.data, delivery.properties.headers().as_ref()) {
            Ok(batch) => batch,
            Err(why) => return Some(Err(why)),
        };
        let items = batch.checkouts.into_iter().map(|checkout| {
            let message = Message {
                data: checkout.body.clone().into_bytes(),
                message_id: Some(checkout.key.clone()),
                producer: self.producer.clone(),
                own: true,
                app_id: Some(HTTP_ORIGIN.to_owned()),
                timestamp: Some(checkout.judged_at),
                redelivered: self.redelivered,
                handed_back: self.handed_back,
                accepted_ms: Some(checkout.accepted_ms),
                consumed: self.consumed,
                order_id: Some(checkout.order_id),
                fingerprint: Some(checkout.fingerprint.clone()),
            };
            (checkout, message)
        });
        Some(Ok(items.collect()))
    }
}
