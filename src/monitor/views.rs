//! The monitor's vocabulary: how deliveries and publishes ended, and the admission state as it
//! is shown.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use super::{lock, Monitor, RECENT_DEAD_LETTERS};

/// How a delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Acked,
    DeadLettered,
    HandedBack,
    Requeued,
    /// Left to go back with the channel (stepping down).
    Abandoned,
}

/// How a publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    Confirmed,
    /// The broker refused it (`reject-publish`: the queue is full).
    Rejected,
    TimedOut,
    Failed,
}

/// Admission as `/v1/queues` and the dashboard show it.
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct AdmissionView {
    pub state: &'static str,
    pub reason: Option<&'static str>,
    pub expected_wait_ms: f64,
    pub target_ms: f64,
    pub backlog: u64,
    /// Admitted here and not yet published.
    pub pending: u64,
    /// Admission → published, recent mean (ms).
    pub intake_ms: f64,
    pub in_flight: u64,
    pub drain_per_s: f64,
    /// Shed clients told to come back from now on (places booked in the timetable of returns).
    pub returns_booked: u64,
    /// Checkouts whose place is remembered (one each; a customer holds a few at most).
    pub returns_remembered: usize,
}

/// Counters of one work queue, as this process saw them.
#[derive(Debug, Default)]
pub struct QueueCounters {
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
    pub redelivered: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub handed_back: AtomicU64,
    pub requeued: AtomicU64,
    /// Delivered to this process and not settled yet (its share of `unacked`), counted in
    /// checkouts (a batch counts for each of its checkouts).
    pub in_flight: AtomicI64,
}

/// A delivery held by this process: counted in flight until dropped (settled, abandoned, or its
/// task gone however it went).
pub struct InFlight {
    pub(super) monitor: Arc<Monitor>,
    pub(super) index: usize,
    /// What it counts for: 1, or the checkouts of a batch.
    pub(super) count: i64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some((_, c)) = self.monitor.queues.get(self.index) {
            c.in_flight.fetch_sub(self.count, Ordering::Relaxed);
        }
    }
}

/// A dead letter this process wrote.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetterSeen {
    pub queue: &'static str,
    pub message_id: Option<String>,
    pub reason: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The dashboard's lists: recent dead letters, the hottest SKUs.
impl Monitor {
    /// A dead letter was written (kept for the dashboard).
    pub fn record_dead_letter(
        &self,
        queue: &'static str,
        message_id: Option<String>,
        reason: &str,
    ) {
        let mut recent = lock(&self.dead_letters);
        if recent.len() >= RECENT_DEAD_LETTERS {
            recent.pop_front();
        }
        recent.push_back(DeadLetterSeen {
            queue,
            message_id,
            reason: reason.chars().take(500).collect(),
            at: chrono::Utc::now(),
        });
    }

    /// The dead letters this process wrote, newest first.
    pub fn recent_dead_letters(&self) -> Vec<DeadLetterSeen> {
        lock(&self.dead_letters).iter().rev().cloned().collect()
    }

    /// A reservation of `sku` succeeded (the hottest SKUs on the dashboard).
    pub fn record_reservation(&self, sku: &str) {
        if let Some(mut entry) = self.reservations.get_mut(sku) {
            entry.0 += 1;
            return;
        }
        self.reservations.entry(sku.to_owned()).or_insert((0, 0)).0 += 1;
    }

    /// The SKUs with the most reservations since the last call, and how many.
    pub(crate) fn take_hottest(&self, n: usize) -> Vec<(String, u64)> {
        let mut hot: Vec<(String, u64)> = Vec::new();
        for mut entry in self.reservations.iter_mut() {
            let (total, seen) = *entry.value();
            entry.value_mut().1 = total;
            let delta = total - seen;
            if delta > 0 {
                hot.push((entry.key().clone(), delta));
            }
        }
        hot.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        hot.truncate(n);
        hot
    }
}
