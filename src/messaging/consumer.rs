//! A consumer that survives broker restarts and stops cleanly.
//!
//! - It waits for a live connection, opens a channel with its prefetch, consumes, and starts
//!   over when the channel or connection dies.
//! - Deliveries are handled concurrently, at most `prefetch` checkouts at a time *in all*: a
//!   permit per checkout (one for any other message) is taken before a delivery is handled and
//!   given back when it is settled, so tasks still finishing on a dead channel count against the
//!   new one (never more work in flight than the prefetch says). Every delivery the broker sent
//!   is taken in and counted at once, waiting for its permits if need be: with checkout batches
//!   the broker's prefetch (in messages) can send more checkouts than there are permits.
//! - A delivery is acknowledged only after its handler says the outcome is durable (DESIGN.md
//!   rule 1). `DeadLetter` moves it, with the reason, to the dead-letter queue. `Retry` (the
//!   handler met transient trouble for its whole retry window) hands it back as a fresh copy at
//!   the tail of the queue — the broker's delivery limit counts returns, and a message that
//!   failed because a dependency was away must not use it up (rule 8).
//! - `stop` cancels consuming, lets every delivery in flight finish and settle, then returns.
//! - Before a handler sees a delivery, the queue's [`Gate`] looks at it unparsed: a message over
//!   the size limit is dead-lettered `too_large` (the dead letter keeps no body), and on a queue
//!   with an allow-list, a message whose broker-validated `user_id` is not on it is
//!   dead-lettered `unauthorized_producer`. Properties only orderflow sets (`timestamp`, `app_id`,
//!   its headers) are read only from its own messages (`user_id` = the service's own user).
//! - Copies orderflow publishes (hand-backs, dead letters) carry its own `user_id` and name the
//!   original's verified producer in a header, so a copy is judged like the original.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::copies::{dead_letter, hand_back, handbacks};
pub use super::gate::{Gate, MAX_MESSAGE_BYTES};
pub use super::message::Message;
use super::message::{batch_span, delivery_span, queue_wait};
use super::topology::QueueSpec;
use super::Broker;
use crate::monitor::Settled;

/// How often a hand-back copy is tried (2 s apart) before the original is requeued instead.
pub(super) const HANDBACK_ATTEMPTS: u32 = 60;

/// What to do with a delivery once handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done and durable: acknowledge.
    Ack,
    /// Cannot ever be processed: move it to the dead-letter queue with this reason, then ack.
    DeadLetter(String),
    /// Like `DeadLetter`, but the dead letter holds `body` instead of the original (which must
    /// not rest on a queue: card data, or a body too large to keep).
    DeadLetterRedacted { reason: String, body: Vec<u8> },
    /// A dependency stayed away for the whole retry window: hand it back to the queue as a
    /// fresh copy, without using up its delivery limit.
    Retry,
    /// Give it back to the queue as it is (its delivery count goes up).
    Requeue,
    /// Leave it unsettled: this instance stepped down, and the delivery goes back to the queue
    /// when its channel closes.
    Abandon,
}

pub type Handler =
    Arc<dyn Fn(Message) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// How a consumer is stopped.
#[derive(Clone, Default)]
pub struct Stopping {
    /// Stop consuming; deliveries in flight finish and are settled first.
    pub stop: CancellationToken,
    /// With `stop`: do not wait — close the channel now, so what is in flight goes back to the
    /// queue (this instance lost the lease).
    pub abandon: CancellationToken,
}

/// Consumes `queue` in the background until stopped; the handle resolves once every delivery in
/// flight is settled (or, abandoning, once the channel is closed).
pub fn spawn(
    broker: Broker,
    queue: QueueSpec,
    prefetch: u16,
    gate: Gate,
    handler: Handler,
    stopping: Stopping,
) -> tokio::task::JoinHandle<()> {
    let stop = stopping.stop.clone();
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(usize::from(prefetch.max(1))));
        let tracker = TaskTracker::new();
        let consumer = Consumer {
            broker: broker.clone(),
            queue,
            prefetch,
            gate: Arc::new(gate),
            handler,
            permits,
            tracker: tracker.clone(),
            stop: stop.clone(),
            abandon: stopping.abandon.clone(),
        };
        loop {
            let conn = tokio::select! {
                conn = broker.wait_connection() => conn,
                _ = stop.cancelled() => break,
            };
            match consumer.consume(&conn).await {
                Ok(Ended::Stopped) => break,
                Ok(Ended::Closed) => {
                    tracing::warn!(queue = queue.name, "consumer stream ended; restarting")
                }
                Err(e) => {
                    tracing::warn!(queue = queue.name, error = %e, "consumer failed; restarting")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.cancelled() => break,
            }
        }
        tracker.close();
        if !stopping.abandon.is_cancelled() {
            tracker.wait().await;
        }
        tracing::info!(queue = queue.name, "consumer stopped");
    })
}

enum Ended {
    /// Asked to stop; everything in flight is settled.
    Stopped,
    /// The channel or connection went away.
    Closed,
}

struct Consumer {
    broker: Broker,
    queue: QueueSpec,
    prefetch: u16,
    gate: Arc<Gate>,
    handler: Handler,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
    abandon: CancellationToken,
}

impl Consumer {
    async fn consume(&self, conn: &lapin::Connection) -> lapin::Result<Ended> {
        let queue = self.queue;
        let channel = conn.create_channel().await?;
        // Re-applied on every reconnect: prefetch belongs to the channel.
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("orderflow-{}-{}", queue.name, uuid::Uuid::new_v4().simple());
        let mut deliveries = channel
            .basic_consume(
                queue.name.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = queue.name, prefetch = self.prefetch, "consuming");
        loop {
            let next = tokio::select! {
                next = deliveries.next() => next,
                _ = self.stop.cancelled() => break,
            };
            let Some(delivery) = next else {
                return Ok(Ended::Closed);
            };
            self.take_in(delivery?);
        }
        let step = Duration::from_secs(5);
        if self.abandon.is_cancelled() {
            // Stepping down: what this channel holds goes back to the queue now.
            let _ =
                tokio::time::timeout(step, channel.close(200, "orderflow stepping down".into()))
                    .await;
            return Ok(Ended::Stopped);
        }
        // Stop: no new deliveries; those in flight finish and are settled on this channel.
        let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
        if tokio::time::timeout(step, cancel).await.is_err() {
            tracing::warn!(queue = queue.name, "the broker did not confirm the cancel");
        }
        self.tracker.close();
        self.tracker.wait().await;
        let _ = tokio::time::timeout(step, channel.close(200, "orderflow stopping".into())).await;
        Ok(Ended::Stopped)
    }

    /// One delivery taken in: read (a batch of intake's split into its checkouts), counted in
    /// flight from now, and handled on a task of its own once its turn comes.
    fn take_in(&self, delivery: Delivery) {
        let queue = self.queue;
        let message = Message::of(&delivery, self.broker.own_user());
        let checkouts = self.checkouts(&delivery, &message);
        let count = match &checkouts {
            Ok(Some(items)) => items.len(),
            _ => 1,
        };
        if queue.name == super::topology::CHECKOUT_QUEUE.name {
            self.broker.monitor().record_checkouts_per_message(count);
        }
        // Counted from its arrival: a delivery waiting here for its turn waits as surely as one
        // in the queue (admission reads both).
        let in_flight = self.broker.monitor().record_delivery(
            queue.name,
            message.redelivered,
            queue_wait(&message),
            count,
        );
        let turn = Turn {
            permits: Arc::clone(&self.permits),
            needed: count.clamp(1, usize::from(self.prefetch.max(1))),
            stop: self.stop.clone(),
        };
        let (handler, gate, broker) = (
            Arc::clone(&self.handler),
            Arc::clone(&self.gate),
            self.broker.clone(),
        );
        match checkouts {
            Ok(Some(items)) => {
                let span = batch_span(queue, &delivery, items.len());
                self.tracker.spawn(
                    async move {
                        let _in_flight = in_flight;
                        let Some(permit) = turn.wait(&delivery).await else {
                            return;
                        };
                        let (d, n) = (&delivery, turn.needed);
                        super::batches::handle(&broker, queue, &gate, &handler, d, items, n).await;
                        drop(permit);
                    }
                    .instrument(span),
                )
            }
            single => {
                let span = delivery_span(queue, &delivery, &message);
                self.tracker.spawn(
                    async move {
                        let _in_flight = in_flight;
                        let Some(permit) = turn.wait(&delivery).await else {
                            return;
                        };
                        let provenance = message.provenance();
                        let outcome = match single {
                            Err(why) => Outcome::DeadLetter(why),
                            Ok(_) => outcome_of(&gate, &handler, queue, message).await,
                        };
                        settle(&broker, queue, &delivery, provenance, outcome).await;
                        drop(permit);
                    }
                    .instrument(span),
                )
            }
        };
    }

    /// The checkouts of one of intake's batches (only ever on the checkout queue, and only past
    /// the gate): `Ok(None)` for any other message, `Err` for a batch that is not one.
    fn checkouts(
        &self,
        delivery: &Delivery,
        message: &Message,
    ) -> Result<Option<Vec<(super::checkout::Stamped, Message)>>, String> {
        let on_checkouts = self.queue.name == super::topology::CHECKOUT_QUEUE.name;
        if !on_checkouts || self.gate.check(message).is_some() {
            return Ok(None);
        }
        message.checkouts(delivery).transpose()
    }
}

/// A delivery's turn: `needed` of the consumer's permits (one per checkout it carries, at most
/// the prefetch) — so what is handled at once never exceeds the prefetch, while every delivery
/// the broker sent is taken in (and counted) at once.
struct Turn {
    permits: Arc<Semaphore>,
    needed: usize,
    stop: CancellationToken,
}

impl Turn {
    /// The permits, or `None` when the consumer stops first or the delivery's channel died
    /// meanwhile: not started, the delivery goes (or went) back to the queue with its channel,
    /// and its copy comes on the next one — handling the stale one too would do it twice.
    async fn wait(&self, delivery: &Delivery) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let needed = u32::try_from(self.needed).unwrap_or(u32::MAX);
        let permit = tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            permit = Arc::clone(&self.permits).acquire_many_owned(needed) => permit.ok(),
        };
        permit.filter(|_| !delivery.acker.poisoned())
    }
}

/// What becomes of a delivery: the gate's refusal, or what its handler says. A panic is a bug
/// that meets this message every time: its permanent failure, dead-lettered with the reason,
/// never a retry that comes back forever nor a delivery left unsettled.
pub(super) async fn outcome_of(
    gate: &Gate,
    handler: &Handler,
    queue: QueueSpec,
    message: Message,
) -> Outcome {
    if let Some(refused) = gate.check(&message) {
        return refused;
    }
    match AssertUnwindSafe(handler(message)).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let why = crate::blocking::panic_message(panic.as_ref());
            tracing::error!(queue = queue.name, panic = %why, "handling a delivery panicked");
            Outcome::DeadLetter(format!("panicked while handling it: {why}"))
        }
    }
}

pub(super) const REQUEUE: BasicNackOptions = BasicNackOptions {
    requeue: true,
    multiple: false,
};

/// Acknowledges, dead-letters, hands back or requeues a delivery as its outcome says.
async fn settle(
    broker: &Broker,
    queue: QueueSpec,
    delivery: &Delivery,
    provenance: Option<String>,
    outcome: Outcome,
) {
    // A message handed back as often as the limit allows goes to the dead letters after all
    // (an outage longer than a day at the defaults, or an error wrongly taken for transient):
    // replayable, not circling forever.
    // (Only a retry reads the count: the ack path stays as it was.)
    let outcome = match outcome {
        Outcome::Retry => match handbacks(broker, delivery) {
            n if n >= broker.handback_limit() => Outcome::DeadLetter(format!(
                "handed back {n} times, each after a whole retry window of transient trouble"
            )),
            _ => Outcome::Retry,
        },
        other => other,
    };
    let provenance = provenance.as_deref();
    let (how, settled) = match outcome {
        Outcome::Ack => {
            #[cfg(feature = "fault-injection")]
            fault_abort_before_ack(queue);
            (
                Settled::Acked,
                delivery.ack(BasicAckOptions::default()).await,
            )
        }
        Outcome::DeadLetter(reason) => {
            let body = delivery.data.clone();
            dead_letter(broker, queue, delivery, provenance, reason, body).await
        }
        Outcome::DeadLetterRedacted { reason, body } => {
            dead_letter(broker, queue, delivery, provenance, reason, body).await
        }
        Outcome::Retry => hand_back(broker, queue, delivery, provenance).await,
        Outcome::Requeue => (Settled::Requeued, delivery.nack(REQUEUE).await),
        Outcome::Abandon => (Settled::Abandoned, Ok(true)),
    };
    broker.monitor().record_settled(queue.name, how);
    match settled {
        Ok(true) => {}
        // The channel died: the broker redelivers it to the next consumer.
        Ok(false) => tracing::warn!(
            queue = queue.name,
            "could not settle a delivery: its channel is gone"
        ),
        Err(e) => tracing::warn!(queue = queue.name, error = %e, "could not settle a delivery"),
    }
}

/// Fault injection (tests only): `ORDERFLOW_FAULT_ABORT_BEFORE_ACK=N` kills the process after the
/// N-th outcome of `orders.checkout` is durable and before it is acknowledged.
#[cfg(feature = "fault-injection")]
pub(super) fn fault_abort_before_ack(queue: QueueSpec) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static ACKS: AtomicU64 = AtomicU64::new(0);
    if queue.name != super::topology::CHECKOUT_QUEUE.name {
        return;
    }
    let Some(limit) = std::env::var("ORDERFLOW_FAULT_ABORT_BEFORE_ACK")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    if ACKS.fetch_add(1, Ordering::SeqCst) + 1 >= limit {
        eprintln!("fault injection: aborting after a commit, before its ack");
        // What this process traced so far leaves first (a real crash loses up to
        // OTEL_BSP_SCHEDULE_DELAY of it).
        crate::telemetry::flush();
        std::process::abort();
    }
}
