//! Intake's checkouts to the broker, several in one confirmed message when they wait together.
//!
//! At most `in_flight` checkout publishes are unconfirmed at once. A checkout that finds a slot
//! free goes out at once — alone when nobody else waits, so a quiet service adds no latency; one
//! that finds every slot taken waits, and whoever frees a slot sends everything waiting by then
//! (up to `max_items`, and under the size a message may have) as one message. Publishes run on
//! tasks of their own on the broker's runtime, never inside one client's request. Under load the
//! broker so stores, replicates, delivers and settles one message for many checkouts; each
//! checkout's caller still answers only after *its* message is confirmed (API.md: 202 once the
//! broker confirmed).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::checkout::Stamped;
use super::gate::MAX_MESSAGE_BYTES;
use super::{Broker, PublishError};

/// How a batch's body stays under the size limit every queue enforces (with room for the
/// properties).
const MAX_BATCH_BYTES: usize = MAX_MESSAGE_BYTES - 4 * 1024;

/// How long a checkout waits for a publish slot before it is withdrawn, unpublished, and its
/// client answered 503: half the confirm time-out, so that one taken just before still has its
/// answer within ~1.5 × that time-out. (Slots stay taken that long only while the broker does
/// not confirm: a stalled connection, a memory alarm.)
const WAIT_LIMIT: Duration = Duration::from_millis(super::CONFIRM_TIMEOUT.as_millis() as u64 / 2);

type Answer = oneshot::Sender<Result<(), PublishError>>;

/// A checkout waiting: its number (to withdraw it), itself, where its answer goes.
type Waiting = (u64, Stamped, Answer);

/// The checkouts waiting for a publish slot, and the slots.
pub(super) struct Batcher {
    waiting: Mutex<VecDeque<Waiting>>,
    numbers: AtomicU64,
    slots: Arc<Semaphore>,
    max_items: usize,
}

impl Batcher {
    /// `max_items` checkouts at most in one message (1: each alone), `in_flight` publishes
    /// unconfirmed at once.
    pub(super) fn new(max_items: usize, in_flight: usize) -> Batcher {
        Batcher {
            waiting: Mutex::new(VecDeque::new()),
            numbers: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(in_flight.max(1))),
            max_items: max_items.max(1),
        }
    }

    /// Publishes `checkout` — now, or with the next batch — and answers when its message was
    /// confirmed or refused.
    pub(super) async fn submit(
        &self,
        broker: &Broker,
        checkout: Stamped,
    ) -> Result<(), PublishError> {
        if self.max_items == 1 {
            return broker.publish_stamped(vec![checkout]).await;
        }
        let (answer, mut answered) = oneshot::channel();
        let number = self.numbers.fetch_add(1, Ordering::Relaxed);
        self.lock().push_back((number, checkout, answer));
        // A free slot: what waits (this checkout among it) goes out on a task of its own — never
        // in this caller's future, which its client may drop, while it carries others' answers.
        if let Some(slot) = self.slot() {
            let sender = broker.clone();
            broker.spawn(async move {
                let batcher = sender.batcher();
                batcher.send(&sender, slot).await;
                batcher.drain(&sender).await;
            });
        }
        // Sent by now, or by whoever holds a slot: each frees it, then sends what waits.
        match tokio::time::timeout(WAIT_LIMIT, &mut answered).await {
            Ok(answer) => answer.unwrap_or(Err(PublishError::NotConnected)),
            // Still waiting for a slot: withdrawn, never published — a clear 503 in bounded
            // time, and nothing half-accepted.
            Err(_) if self.withdraw(number) => Err(PublishError::Timeout),
            // Taken into a publish meanwhile: its own confirm time-out bounds the rest.
            Err(_) => answered.await.unwrap_or(Err(PublishError::NotConnected)),
        }
    }

    /// Takes checkout `number` out of the queue, if it is still waiting there.
    fn withdraw(&self, number: u64) -> bool {
        let mut waiting = self.lock();
        match waiting.iter().position(|(n, _, _)| *n == number) {
            Some(i) => waiting.remove(i).is_some(),
            None => false,
        }
    }

    /// Sends batches while checkouts wait and a slot is free.
    async fn drain(&self, broker: &Broker) {
        while let Some(slot) = self.slot() {
            self.send(broker, slot).await;
        }
    }

    /// A free slot, when something waits for one. (A slot taken when nothing waited is given
    /// back, and the queue looked at again: a checkout that came in between saw no slot free
    /// and counts on this.)
    fn slot(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            if self.is_idle() {
                return None;
            }
            let slot = Arc::clone(&self.slots).try_acquire_owned().ok()?;
            if !self.is_idle() {
                return Some(slot);
            }
            drop(slot);
        }
    }

    /// One message of what waits, published while holding `slot`; every checkout in it answered.
    async fn send(&self, broker: &Broker, slot: OwnedSemaphorePermit) {
        let batch = self.take();
        if batch.is_empty() {
            return;
        }
        let (checkouts, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|(_, c, a)| (c, a)).unzip();
        let result = broker.publish_stamped(checkouts).await;
        // The slot is free before anyone is answered: whoever is woken and submits again finds it.
        drop(slot);
        for answer in answers {
            let _ = answer.send(result.clone());
        }
    }

    /// The oldest checkouts waiting, as many as one message takes.
    fn take(&self) -> Vec<Waiting> {
        let mut waiting = self.lock();
        let mut batch = Vec::new();
        let mut bytes = 64;
        while let Some((_, next, _)) = waiting.front() {
            let weight = next.weight();
            let full = batch.len() >= self.max_items || bytes + weight > MAX_BATCH_BYTES;
            if full && !batch.is_empty() {
                break;
            }
            bytes += weight;
            match waiting.pop_front() {
                Some(one) => batch.push(one),
                None => break,
            }
        }
        batch
    }

    fn is_idle(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        // Nothing panics while holding it; a poisoned lock still holds a consistent queue.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout(body_bytes: usize) -> Stamped {
        Stamped {
            key: "k".into(),
            order_id: uuid::Uuid::new_v4(),
            fingerprint: "fp".into(),
            judged_at: 0,
            accepted_ms: 0,
            traceparent: None,
            body: "x".repeat(body_bytes),
        }
    }

    fn waiting(b: &Batcher, items: impl IntoIterator<Item = Stamped>) {
        for c in items {
            let (answer, _) = oneshot::channel();
            let number = b.numbers.fetch_add(1, Ordering::Relaxed);
            b.lock().push_back((number, c, answer));
        }
    }

    #[test]
    fn a_batch_takes_the_oldest_up_to_its_count() {
        let b = Batcher::new(3, 1);
        waiting(&b, (0..7).map(|_| checkout(10)));
        assert_eq!(b.take().len(), 3);
        assert_eq!(b.take().len(), 3);
        assert_eq!(b.take().len(), 1);
        assert!(b.take().is_empty());
    }

    #[test]
    fn a_batch_stays_under_the_size_a_message_may_have() {
        let b = Batcher::new(1000, 1);
        waiting(&b, (0..40).map(|_| checkout(4_000)));
        let mut total = 0;
        loop {
            let batch = b.take();
            if batch.is_empty() {
                break;
            }
            total += batch.len();
            let checkouts = batch.into_iter().map(|(_, c, _)| c).collect();
            let (body, _) = super::super::checkout::Batch { checkouts }.message();
            assert!(body.len() <= MAX_BATCH_BYTES, "{} bytes", body.len());
        }
        assert_eq!(total, 40, "every checkout taken once");
    }

    #[test]
    fn one_checkout_larger_than_a_batch_goes_alone() {
        let b = Batcher::new(10, 1);
        waiting(&b, [checkout(MAX_BATCH_BYTES), checkout(10)]);
        assert_eq!(b.take().len(), 1);
        assert_eq!(b.take().len(), 1);
    }

    #[test]
    fn a_checkout_withdrawn_is_never_sent_and_one_taken_cannot_be_withdrawn() {
        let b = Batcher::new(2, 1);
        waiting(&b, (0..4).map(|_| checkout(1)));
        let taken: Vec<u64> = b.take().into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(taken, [0, 1]);
        assert!(
            !b.withdraw(0),
            "taken into a publish: it waits for that publish"
        );
        assert!(b.withdraw(2));
        assert!(!b.withdraw(2), "once");
        let rest: Vec<u64> = b.take().into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(rest, [3], "the withdrawn one is not sent");
    }

    #[test]
    fn a_slot_is_taken_only_for_something_waiting() {
        let b = Batcher::new(10, 1);
        assert!(b.slot().is_none(), "nothing waits");
        waiting(&b, [checkout(1)]);
        let slot = b.slot();
        assert!(slot.is_some());
        assert!(b.slot().is_none(), "the only slot is held");
        drop(slot);
        assert!(b.slot().is_some());
    }
}
