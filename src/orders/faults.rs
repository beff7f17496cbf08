//! Faults tests switch on (`fault-injection` feature only).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::domain::Sku;

#[derive(Default)]
pub struct Faults {
    /// Releases of this SKU fail as if the database were away.
    pub fail_release_of: Mutex<Option<Sku>>,
    /// Handling a checkout with a line of this SKU panics (a bug in the handler, as it were).
    pub panic_on: Mutex<Option<Sku>>,
    /// Every n-th publish of a decision's events is not confirmed (0: none).
    pub fail_every_nth_event: AtomicU64,
    pub events_published: AtomicU64,
}

impl Faults {
    /// Whether this publish of a decision's events fails.
    pub fn event_fails(&self) -> bool {
        let n = self.fail_every_nth_event.load(Ordering::Relaxed);
        n > 0 && (self.events_published.fetch_add(1, Ordering::Relaxed) + 1) % n == 0
    }
}
