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
//! - A copy the broker does not confirm: the batch goes back to the queue whole (its delivery
//!   limit counts it); the checkouts already decided find their decisions on the redelivery.
//! - A checkout that must be abandoned (this instance stepped down): the batch is left
//!   unsettled and goes back with the channel, whole.

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::types::AMQPValue;
use tracing::Instrument;

use super::checkout::Stamped;
use super::consumer::{outcome_of, publish_dead_letter, Gate, Handler, Message, Outcome, REQUEUE};
use super::message::message_span;
use super::topology::{QueueSpec, HANDBACK_HEADER};
use super::{Broker, PublishError};
use crate::monitor::Settled;

/// Handles every checkout of a batch, then settles the batch.
pub(super) async fn handle(
    broker: &Broker,
    queue: QueueSpec,
    gate: &Gate,
    handler: &Handler,
    delivery: &Delivery,
    checkouts: Vec<(Stamped, Message)>,
) {
    let handled = checkouts.into_iter().map(|(checkout, message)| {
        let span = message_span(queue, &message, checkout.traceparent.as_deref());
        async move {
            let outcome = outcome_of(gate, handler, queue, message).await;
            (checkout, outcome)
        }
        .instrument(span)
    });
    let outcomes = futures_util::future::join_all(handled).await;
    settle(broker, queue, delivery, outcomes).await;
}

/// What becomes of a checkout that is not acknowledged with its batch.
async fn copy_out(
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
        match copy_out(broker, queue, &checkout, outcome).await {
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
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The channel died: the broker redelivers the batch to the next consumer.
        tracing::warn!(queue = queue.name, error = %e, "could not settle a delivery");
    }
}
