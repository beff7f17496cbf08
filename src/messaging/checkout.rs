//! Publishing intake's own checkouts to `orders.checkout`: the properties and headers the
//! consumer reads (API.md's message plus orderflow's stamps), built here so that nothing above
//! `messaging` handles an AMQP type.
//!
//! Checkouts that wait for the broker at the same moment go out together, as one confirmed
//! message ([`super::batcher`]): a *checkout batch* — `content_type` [`BATCH_CONTENT_TYPE`],
//! a JSON body `{"checkouts":[{key, order_id, fingerprint, judged_at, accepted_ms, body}]}`
//! whose `body` is the checkout's canonical JSON as a string, and each checkout's trace in the
//! AMQP header [`TRACEPARENTS_HEADER`] (W3C `traceparent`s, in the body's order). Only
//! orderflow's own messages are read that way (the broker checks `user_id`): for anyone else a
//! batch is a body that is not a checkout. The consumer handles every checkout of a batch as
//! its own message, and what it cannot ack it republishes alone (dead letter, hand-back), so
//! the dead letters and the replay tool see single checkouts only.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use uuid::Uuid;

use super::topology::{
    ACCEPTED_HEADER, CHECKOUT_QUEUE, EXCHANGE_ORDERS, FINGERPRINT_HEADER, ORDER_ID_HEADER,
    TRACEPARENTS_HEADER,
};
use super::{Broker, PublishError};

/// `app_id` of checkouts orderflow's own HTTP intake published: the consumer trusts their order
/// id and fingerprint headers (the broker checks `user_id`, so nobody else can claim it).
pub const HTTP_ORIGIN: &str = "orderflow-http";

/// `content_type` of a message carrying several of intake's checkouts.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.orderflow.checkout-batch+json";

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

/// One checkout as it travels: stamped when it was handed to the broker (accept time, trace),
/// owned so that it can wait for a batch; alone it is a message with these as properties, in a
/// batch an element of the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped {
    pub key: String,
    pub order_id: Uuid,
    pub fingerprint: String,
    pub judged_at: u64,
    /// Wall-clock ms when accepted, for the queue-wait and accept → decided measurements.
    pub accepted_ms: i64,
    /// The request's trace (when spans are exported): it continues in the consumer. It travels
    /// in the AMQP headers — alone as `traceparent`, in a batch in [`TRACEPARENTS_HEADER`] —
    /// never in the body (a batch of an earlier version that has it there is still read).
    #[serde(default, skip_serializing)]
    pub traceparent: Option<String>,
    /// The canonical checkout, JSON text.
    pub body: String,
}

impl Stamped {
    /// Stamped now, in the request's span.
    pub fn of(checkout: &OutgoingCheckout<'_>) -> Stamped {
        Stamped {
            key: checkout.key.to_owned(),
            order_id: checkout.order_id,
            fingerprint: checkout.fingerprint.to_owned(),
            judged_at: checkout.judged_at,
            accepted_ms: chrono::Utc::now().timestamp_millis(),
            traceparent: crate::telemetry::traceparent(&tracing::Span::current()),
            body: String::from_utf8_lossy(checkout.body).into_owned(),
        }
    }

    /// The properties of this checkout as a message of its own.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            ACCEPTED_HEADER.into(),
            AMQPValue::LongLongInt(self.accepted_ms),
        );
        headers.insert(
            ORDER_ID_HEADER.into(),
            AMQPValue::LongString(self.order_id.to_string().into()),
        );
        headers.insert(
            FINGERPRINT_HEADER.into(),
            AMQPValue::LongString(self.fingerprint.as_str().into()),
        );
        if let Some(traceparent) = &self.traceparent {
            headers.insert(
                crate::telemetry::TRACEPARENT.into(),
                AMQPValue::LongString(traceparent.as_str().into()),
            );
        }
        BasicProperties::default()
            .with_message_id(self.key.as_str().into())
            .with_app_id(HTTP_ORIGIN.into())
            .with_content_type("application/json".into())
            .with_timestamp(self.judged_at)
            .with_headers(headers)
    }

    /// What this checkout adds to a batch at most (the JSON around it included; its trace
    /// travels in the headers, counted here all the same).
    pub fn weight(&self) -> usize {
        escaped_len(&self.body)
            + escaped_len(&self.key)
            + escaped_len(&self.fingerprint)
            + self.traceparent.as_deref().map_or(0, escaped_len)
            + 256
    }
}

/// The length of `text` as a JSON string, at most: a quote or backslash takes two bytes, a
/// control character six.
fn escaped_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// The body of a checkout batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    pub checkouts: Vec<Stamped>,
}

impl Batch {
    /// The batch as a message: its body and properties (the earliest accept stamp and judged
    /// time of its checkouts; each checkout keeps its own in the body).
    pub fn message(&self) -> (Vec<u8>, BasicProperties) {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let accepted = self.checkouts.iter().map(|c| c.accepted_ms).min();
        let judged = self.checkouts.iter().map(|c| c.judged_at).min();
        let mut headers = FieldTable::default();
        headers.insert(
            ACCEPTED_HEADER.into(),
            AMQPValue::LongLongInt(accepted.unwrap_or(0)),
        );
        if self.checkouts.iter().any(|c| c.traceparent.is_some()) {
            let traces = self.checkouts.iter().map(|c| {
                AMQPValue::LongString(c.traceparent.as_deref().unwrap_or_default().into())
            });
            headers.insert(
                TRACEPARENTS_HEADER.into(),
                AMQPValue::FieldArray(traces.collect::<Vec<_>>().into()),
            );
        }
        let props = BasicProperties::default()
            .with_message_id(format!("batch:{}", Uuid::new_v4()).into())
            .with_app_id(HTTP_ORIGIN.into())
            .with_content_type(BATCH_CONTENT_TYPE.into())
            .with_timestamp(judged.unwrap_or(0))
            .with_headers(headers);
        (body, props)
    }

    /// A batch's body read back; `Err` says why it is not one.
    pub fn parse(body: &[u8]) -> Result<Batch, String> {
        let batch: Batch =
            serde_json::from_slice(body).map_err(|e| format!("not a checkout batch: {e}"))?;
        if batch.checkouts.is_empty() {
            return Err("not a checkout batch: no checkouts".into());
        }
        Ok(batch)
    }

    /// A batch read back with its headers: each checkout's trace from
    /// [`TRACEPARENTS_HEADER`] (one that is not a short text is no trace).
    pub fn read(body: &[u8], headers: Option<&FieldTable>) -> Result<Batch, String> {
        let mut batch = Batch::parse(body)?;
        // One per checkout, in order; an array of another length matches none of them.
        let traces = headers.and_then(|h| match h.inner().get(TRACEPARENTS_HEADER) {
            Some(AMQPValue::FieldArray(traces))
                if traces.as_slice().len() == batch.checkouts.len() =>
            {
                Some(traces.as_slice().to_vec())
            }
            _ => None,
        });
        for (checkout, trace) in batch.checkouts.iter_mut().zip(traces.unwrap_or_default()) {
            if let AMQPValue::LongString(trace) = trace {
                let trace = trace.to_string();
                if !trace.is_empty() && trace.len() <= 128 {
                    checkout.traceparent = Some(trace);
                }
            }
        }
        Ok(batch)
    }
}

/// The span of a batch's publish (when spans are exported): a trace of its own — the message's,
/// whose `traceparent` header it becomes — linked to each checkout's (OpenTelemetry's
/// messaging conventions for a batch); each checkout's trace continues from its own context in
/// [`TRACEPARENTS_HEADER`].
fn publish_span(checkouts: &[Stamped]) -> tracing::Span {
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::debug_span!(
        target: crate::telemetry::TARGET,
        parent: None,
        "publish",
        otel.name = format!("{} publish", CHECKOUT_QUEUE.name),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.destination.name = CHECKOUT_QUEUE.name,
        messaging.batch.message_count = checkouts.len(),
    );
    for traceparent in checkouts.iter().filter_map(|c| c.traceparent.as_deref()) {
        crate::telemetry::link(&span, traceparent);
    }
    span
}

/// `props` with a `traceparent` header, when there is one.
fn with_traceparent(props: BasicProperties, traceparent: Option<String>) -> BasicProperties {
    let Some(traceparent) = traceparent else {
        return props;
    };
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        crate::telemetry::TRACEPARENT.into(),
        AMQPValue::LongString(traceparent.into()),
    );
    props.with_headers(headers)
}

impl Broker {
    /// Publishes one of intake's checkouts, persistent and confirmed; returns once the broker
    /// confirmed (or refused) it — alone, or in a batch with the checkouts that waited with it.
    pub async fn publish_checkout(
        &self,
        checkout: &OutgoingCheckout<'_>,
    ) -> Result<(), PublishError> {
        self.batcher().submit(self, Stamped::of(checkout)).await
    }

    /// Publishes checkouts that waited together: one alone as its own message, several as a
    /// batch.
    pub(super) async fn publish_stamped(
        &self,
        checkouts: Vec<Stamped>,
    ) -> Result<(), PublishError> {
        let (exchange, key) = (EXCHANGE_ORDERS, CHECKOUT_QUEUE.routing_key);
        let n = checkouts.len();
        let result = match checkouts.as_slice() {
            [one] => {
                self.publish(exchange, key, one.body.as_bytes(), one.properties())
                    .await
            }
            _ => {
                let span = publish_span(&checkouts);
                let (body, props) = Batch { checkouts }.message();
                let props = with_traceparent(props, crate::telemetry::traceparent(&span));
                self.publish(exchange, key, &body, props)
                    .instrument(span)
                    .await
            }
        };
        if result.is_ok() {
            self.monitor().record_checkouts_per_message(n);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(key: &str, body: &str) -> Stamped {
        Stamped {
            key: key.into(),
            order_id: Uuid::new_v4(),
            fingerprint: format!("fp-{key}"),
            judged_at: 1_700_000_000,
            accepted_ms: 1_700_000_000_123,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            body: body.into(),
        }
    }

    #[test]
    fn a_batch_reads_back_checkout_by_checkout_with_each_ones_stamps() {
        let sent = vec![
            stamped(
                "k-1",
                r#"{"items":[{"sku":"A","quantity":1}],"note":"a \"quoted\" \u0000"}"#,
            ),
            stamped("k-2", r#"{"items":[{"sku":"B","quantity":2}]}"#),
        ];
        let (body, props) = Batch {
            checkouts: sent.clone(),
        }
        .message();
        assert_eq!(
            props.content_type().as_ref().map(|c| c.as_str()),
            Some(BATCH_CONTENT_TYPE)
        );
        assert_eq!(props.timestamp(), &Some(1_700_000_000));
        let back = Batch::read(&body, props.headers().as_ref()).unwrap();
        assert_eq!(
            back.checkouts, sent,
            "every field, the bodies byte for byte"
        );
    }

    #[test]
    fn a_batch_carries_each_checkouts_trace_in_its_headers_not_its_body() {
        let mut untraced = stamped("k-2", "{}");
        untraced.traceparent = None;
        let mut other = stamped("k-3", "{}");
        other.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let sent = vec![stamped("k-1", "{}"), untraced, other];
        let (body, props) = Batch {
            checkouts: sent.clone(),
        }
        .message();
        assert!(
            !String::from_utf8_lossy(&body).contains("traceparent"),
            "no trace in the body"
        );
        let headers = props.headers().clone().unwrap_or_default();
        let Some(AMQPValue::FieldArray(traces)) = headers.inner().get(TRACEPARENTS_HEADER) else {
            panic!("no {TRACEPARENTS_HEADER} header: {headers:?}");
        };
        assert_eq!(traces.as_slice().len(), 3);
        let back = Batch::read(&body, Some(&headers)).unwrap();
        let traces: Vec<_> = back
            .checkouts
            .iter()
            .map(|c| c.traceparent.clone())
            .collect();
        let sent_traces: Vec<_> = sent.iter().map(|c| c.traceparent.clone()).collect();
        assert_eq!(traces, sent_traces, "each checkout its own, in order");
        // An array that does not match the body one for one gives no checkout a trace.
        let mut short = headers.clone();
        short.insert(
            TRACEPARENTS_HEADER.into(),
            AMQPValue::FieldArray(
                sent[..2]
                    .iter()
                    .map(|c| {
                        AMQPValue::LongString(c.traceparent.clone().unwrap_or_default().into())
                    })
                    .collect::<Vec<_>>()
                    .into(),
            ),
        );
        let back = Batch::read(&body, Some(&short)).unwrap();
        assert!(back.checkouts.iter().all(|c| c.traceparent.is_none()));
        // Without the header (spans not exported), no checkout has a trace.
        let back = Batch::read(&body, None).unwrap();
        assert!(back.checkouts.iter().all(|c| c.traceparent.is_none()));
        // Untraced batches carry no header at all.
        let (_, props) = Batch {
            checkouts: vec![stamped("k-4", "{}")]
                .into_iter()
                .map(|mut c| {
                    c.traceparent = None;
                    c
                })
                .collect(),
        }
        .message();
        let headers = props.headers().clone().unwrap_or_default();
        assert!(headers.inner().get(TRACEPARENTS_HEADER).is_none());
    }

    #[test]
    fn a_batch_with_its_traces_in_the_body_as_an_earlier_version_sent_it_is_read() {
        let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let body = format!(
            r#"{{"checkouts":[{{"key":"k","order_id":"{}","fingerprint":"f","judged_at":1,"accepted_ms":2,"traceparent":"{trace}","body":"{{}}"}}]}}"#,
            Uuid::nil()
        );
        let back = Batch::read(body.as_bytes(), None).unwrap();
        assert_eq!(back.checkouts[0].traceparent.as_deref(), Some(trace));
    }

    #[test]
    fn what_is_not_a_batch_says_so() {
        assert!(Batch::parse(b"{\"checkouts\":[]}").is_err());
        assert!(Batch::parse(b"{\"items\":[]}").is_err());
        assert!(Batch::parse(b"\0").is_err());
    }

    #[test]
    fn a_checkout_alone_carries_its_stamps_as_properties() {
        let one = stamped("k-1", "{}");
        let props = one.properties();
        assert_eq!(props.message_id().as_ref().map(|m| m.as_str()), Some("k-1"));
        let headers = props.headers().clone().unwrap_or_default();
        assert_eq!(
            headers.inner().get(ACCEPTED_HEADER),
            Some(&AMQPValue::LongLongInt(one.accepted_ms))
        );
        assert_eq!(
            headers.inner().get(ORDER_ID_HEADER),
            Some(&AMQPValue::LongString(one.order_id.to_string().into()))
        );
        assert!(headers.inner().contains_key(crate::telemetry::TRACEPARENT));
    }

    #[test]
    fn a_checkouts_weight_bounds_what_it_adds_to_a_batch() {
        let quotes = stamped("k\"", &"\"".repeat(1000));
        let controls = stamped("k", &"\u{0}\n\\".repeat(300));
        let light = stamped("k", "{}");
        for one in [quotes, controls, light] {
            let alone = serde_json::to_vec(&Batch {
                checkouts: vec![one.clone()],
            })
            .unwrap();
            assert!(
                alone.len() <= one.weight(),
                "{} > {}",
                alone.len(),
                one.weight()
            );
        }
    }
}
