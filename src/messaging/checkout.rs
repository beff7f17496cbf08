//! Publishing one of intake's own checkouts to `orders.checkout`: the properties and headers the
//! consumer reads (API.md's message plus orderflow's stamps), built here so that nothing above
//! `messaging` handles an AMQP type.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use uuid::Uuid;

use super::topology::{
    ACCEPTED_HEADER, CHECKOUT_QUEUE, EXCHANGE_ORDERS, FINGERPRINT_HEADER, ORDER_ID_HEADER,
};
use super::{Broker, PublishError};

/// `app_id` of checkouts orderflow's own HTTP intake published: the consumer trusts their order
/// id and fingerprint headers (the broker checks `user_id`, so nobody else can claim it).
pub const HTTP_ORIGIN: &str = "orderflow-http";

/// A checkout intake accepted, as it goes on the queue.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingCheckout<'a> {
    /// The idempotency key: the message id.
    pub key: &'a str,
    /// The order id the key was given (the consumer creates the order under it).
    pub order_id: Uuid,
    /// The request's fingerprint (the body holds a token where the request held a card).
    pub fingerprint: &'a str,
    /// When it was judged valid, in Unix seconds (the message's timestamp).
    pub judged_at: u64,
    /// The canonical body, JSON.
    pub body: &'a [u8],
}

impl OutgoingCheckout<'_> {
    fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        // Wall-clock ms when accepted, for the queue-wait and accept → decided measurements.
        headers.insert(
            ACCEPTED_HEADER.into(),
            AMQPValue::LongLongInt(chrono::Utc::now().timestamp_millis()),
        );
        headers.insert(
            ORDER_ID_HEADER.into(),
            AMQPValue::LongString(self.order_id.to_string().into()),
        );
        headers.insert(
            FINGERPRINT_HEADER.into(),
            AMQPValue::LongString(self.fingerprint.into()),
        );
        // The request's trace continues in the consumer (when spans are exported).
        if let Some(traceparent) = crate::telemetry::traceparent(&tracing::Span::current()) {
            headers.insert(
                crate::telemetry::TRACEPARENT.into(),
                AMQPValue::LongString(traceparent.into()),
            );
        }
        BasicProperties::default()
            .with_message_id(self.key.into())
            .with_app_id(HTTP_ORIGIN.into())
            .with_content_type("application/json".into())
            .with_timestamp(self.judged_at)
            .with_headers(headers)
    }
}

impl Broker {
    /// Publishes one of intake's checkouts, persistent and confirmed; returns once the broker
    /// confirmed (or refused) it.
    pub async fn publish_checkout(
        &self,
        checkout: &OutgoingCheckout<'_>,
    ) -> Result<(), PublishError> {
        self.publish(
            EXCHANGE_ORDERS,
            CHECKOUT_QUEUE.routing_key,
            checkout.body,
            checkout.properties(),
        )
        .await
    }
}
