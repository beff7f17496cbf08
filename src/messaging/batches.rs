//! One of intake's checkout batches consumed ([`super::checkout`]): every checkout handled as
//! the message it would have been alone, concurrently, under the same gate and handler; then
//! the batch settled as one.
//!
//! - Every checkout acknowledged: the batch is acknowledged (after every decision is durable,
//!   DESIGN.md rule 1).
//! - A checkout that cannot be acknowledged leaves the batch alone: its dead letter, or its
//!   hand-back copy, is published as a message of its own (the properties it would have had
//!   alone), and the batch is acknowledged once every such copy is confirmed. So a dead letter
//!   is always one checkout with its reason (replayed alone, exactly), one bad checkout never
//!   holds the others (rule 7), and one that met transient trouble goes back alone, its
//!   hand-backs counted from there (rule 8).
//! - A copy the broker does not confirm is tried again (every 2 s, as a hand-back is) while the
//!   batch is held; only after as many attempts as a hand-back gets does the batch go back to
//!   the queue whole (its delivery limit counts it; the checkouts already decided find their
//!   decisions on the redelivery, and a copy already out goes out again — at least once).
//! - Checkouts of a batch are handled at most as many at a time as the permits its delivery
//!   holds (the consumer's prefetch bounds the work in flight, batches or not).
//! - A checkout that must be abandoned (this instance stepped down): the batch is left
//!   unsettled and goes back with the channel, whole.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::types::AMQPValue;
use tracing::Instrument;

use super::checkout::Stamped;
use super::consumer::{outcome_of, Gate, Handler, Message, Outcome, HANDBACK_ATTEMPTS, REQUEUE};
use super::copies::publish_dead_letter;
use super::message::message_span;
use super::topology::{QueueSpec, HANDBACK_HEADER};
use super::{Broker, PublishError};
use crate::monitor::Settled;

/// Handles the checkouts of a batch, `at_once` at a time (the permits its delivery holds), then
/// settles the batch.
pub(super) async fn handle(
    broker: &Broker,
    queue: QueueSpec,
    gate: &Gate,
    handler: &Handler,
    delivery: &Delivery,
    checkouts: Vec<(Stamped, Message)>,
    at_once: usize,
) {
    // Each checkout's handling continues its own trace, linked to the batch's.
    let batch = crate::telemetry::traceparent(&tracing::Span::current());
    let handled = checkouts.into_iter().map(|(mut checkout, message)| {
        let span = message_span(queue, &message, checkout.traceparent.as_deref());
        if let Some(batch) = &batch {
            crate::telemetry::link(&span, batch);
        }
        // One without a trace started one here: a copy of it carries it.
        if checkout.traceparent.is_none() {
            checkout.traceparent = crate::telemetry::traceparent(&span);
        }
        async move {
            let outcome = outcome_of(gate, handler, queue, message).await;
            (checkout, outcome)
        }
        .instrument(span)
    });
    let outcomes = futures_util::stream::iter(handled)
        .buffer_unordered(at_once.max(1))
        .collect::<Vec<_>>()
        .await;
    settle(broker, queue, delivery, outcomes).await;
}

/// A copy published, a blip of the broker (or a full queue: reject-publish) waited out here,
/// holding the batch, as a single message's hand-back does: requeueing the batch would count
/// against the delivery limit of every checkout in it.
async fn copy_out(
    broker: &Broker,
    queue: QueueSpec,
    delivery: &Delivery,
    checkout: &Stamped,
    outcome: &Outcome,
) -> Result<Settled, PublishError> {
    let mut attempt = 0u32;
    loop {
        match copy_once(broker, queue, checkout, outcome.clone()).await {
            Ok(how) => return Ok(how),
            // The batch's channel died meanwhile: the batch is back in the queue already, and
            // a copy now would be a second one.
            Err(e) if delivery.acker.poisoned() => return Err(e),
            Err(e) if attempt < HANDBACK_ATTEMPTS => {
                attempt += 1;
                tracing::warn!(queue = queue.name, error = %e, attempt, "could not copy a checkout out of its batch yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What becomes of a checkout that is not acknowledged with its batch: its copy, once.
async fn copy_once(
    broker: &Broker,
    queue: QueueSpec,
    checkout: &Stamped,
    outcome: Outcome,
) -> Result<Settled, PublishError> {
    let body = checkout.body.as_bytes().to_vec();
    match outcome {
        Outcome::Ack | Outcome::Abandon => Ok(Settled::Acked),
        Outcome::DeadLetter(reason) => {
            publish_dead_letter(broker, queue, checkout.properties(), &reason, body).await?;
            Ok(Settled::DeadLettered)
        }
        Outcome::DeadLetterRedacted { reason, body } => {
            publish_dead_letter(broker, queue, checkout.properties(), &reason, body).await?;
            Ok(Settled::DeadLettered)
        }
        // Back to the tail of the queue, alone, its first hand-back counted.
        Outcome::Retry | Outcome::Requeue => {
            let props = checkout.properties();
            let mut headers = props.headers().clone().unwrap_or_default();
            headers.insert(HANDBACK_HEADER.into(), AMQPValue::LongLongInt(1));
            broker
                .publish(
                    queue.exchange,
                    queue.routing_key,
                    &body,
                    props.with_headers(headers),
                )
                .await?;
            Ok(Settled::HandedBack)
        }
    }
}

/// Settles a batch from its checkouts' outcomes (see the module docs).
async fn settle(
    broker: &Broker,
    queue: QueueSpec,
    delivery: &Delivery,
    outcomes: Vec<(Stamped, Outcome)>,
) {
    let monitor = broker.monitor();
    if outcomes.iter().any(|(_, o)| *o == Outcome::Abandon) {
        return;
    }
    for (checkout, outcome) in outcomes {
        if outcome == Outcome::Ack {
            continue;
        }
        match copy_out(broker, queue, delivery, &checkout, &outcome).await {
            Ok(how) => monitor.record_settled(queue.name, how),
            Err(e) => {
                tracing::warn!(queue = queue.name, error = %e, "could not copy a checkout out of its batch; requeueing the batch");
                monitor.record_settled(queue.name, Settled::Requeued);
                if let Err(e) = delivery.nack(REQUEUE).await {
                    tracing::warn!(queue = queue.name, error = %e, "could not settle a delivery");
                }
                return;
            }
        }
    }
    #[cfg(feature = "fault-injection")]
    super::consumer::fault_abort_before_ack(queue);
    monitor.record_settled(queue.name, Settled::Acked);
    match delivery.ack(BasicAckOptions::default()).await {
        Ok(true) => {}
        // The channel died: the broker redelivers the batch to the next consumer.
        Ok(false) => tracing::warn!(
            queue = queue.name,
            "could not settle a batch: its channel is gone"
        ),
        Err(e) => tracing::warn!(queue = queue.name, error = %e, "could not settle a batch"),
    }
}
