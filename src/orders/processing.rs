//! Deliveries of `orders.checkout` in process, and the most there ever were at once.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts a delivery in process while it lives.
pub(super) struct InProcess<'a>(&'a (AtomicUsize, AtomicUsize));

impl<'a> InProcess<'a> {
    pub(super) fn enter(counters: &'a (AtomicUsize, AtomicUsize)) -> InProcess<'a> {
        let now = counters.0.fetch_add(1, Ordering::Relaxed) + 1;
        counters.1.fetch_max(now, Ordering::Relaxed);
        InProcess(counters)
    }
}

impl Drop for InProcess<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}
