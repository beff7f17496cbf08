//! Admission control for checkouts: intake watches the `orders.checkout` backlog and, past a
//! bound, answers 503 `overloaded` with a `Retry-After` computed from how fast the pipeline is
//! draining — so overload becomes a clear "try again in N s" instead of ever-growing latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::messaging::topology::CHECKOUT_QUEUE;
use crate::messaging::Broker;

const POLL: Duration = Duration::from_millis(250);

/// The backlog as last seen and the pipeline's recent drain rate.
pub struct Admission {
    max_backlog: u64,
    ready: AtomicU64,
    decided: AtomicU64,
    drain_per_s: AtomicU64,
}

impl Admission {
    /// Starts watching the checkout queue in the background.
    pub fn start(broker: Broker, max_backlog: u64) -> Arc<Admission> {
        let admission = Arc::new(Admission {
            max_backlog,
            ready: AtomicU64::new(0),
            decided: AtomicU64::new(0),
            drain_per_s: AtomicU64::new(0),
        });
        let watcher = Arc::downgrade(&admission);
        tokio::spawn(async move {
            let mut channel: Option<lapin::Channel> = None;
            let mut last_decided = 0u64;
            loop {
                tokio::time::sleep(POLL).await;
                let Some(this) = watcher.upgrade() else {
                    return;
                };
                let decided = this.decided.load(Ordering::Relaxed);
                let rate =
                    (decided.saturating_sub(last_decided) as f64 / POLL.as_secs_f64()) as u64;
                last_decided = decided;
                let previous = this.drain_per_s.load(Ordering::Relaxed);
                // A smoothed rate: half the last reading, half the new one.
                this.drain_per_s
                    .store((previous + rate) / 2, Ordering::Relaxed);
                if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                    channel = match broker.current() {
                        Some(conn) => conn.create_channel().await.ok(),
                        None => None,
                    };
                }
                let Some(ch) = channel.as_ref() else { continue };
                let queue = ch
                    .queue_declare(
                        CHECKOUT_QUEUE.name.into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await;
                match queue {
                    Ok(q) => this
                        .ready
                        .store(u64::from(q.message_count()), Ordering::Relaxed),
                    Err(e) => {
                        tracing::debug!(error = %e, "could not read the checkout backlog");
                        channel = None;
                    }
                }
            }
        });
        admission
    }

    /// The consumer decided one more order.
    pub fn record_decision(&self) {
        self.decided.fetch_add(1, Ordering::Relaxed);
    }

    /// `Some(retry_after_seconds)` when intake should shed this checkout.
    pub fn shed(&self) -> Option<u32> {
        let ready = self.ready.load(Ordering::Relaxed);
        if ready < self.max_backlog {
            return None;
        }
        let drain = self.drain_per_s.load(Ordering::Relaxed).max(1);
        Some(ready.div_ceil(drain).clamp(1, 60) as u32)
    }

    /// Orders waiting in the checkout queue, as last seen.
    pub fn backlog(&self) -> u64 {
        self.ready.load(Ordering::Relaxed)
    }
}
