//! Admission at the door: the verdict for one checkout, the checkouts admitted and still on
//! their way to the queue ([`Admitted`]), and the admission state as the monitor shows it. The
//! controller itself is pure ([`super::admission`]); this is where the monitor's observations
//! meet it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::admission::{self, Observation, Verdict};
use super::places::Requester;
use super::{lock, AdmissionView, Monitor};

/// A checkout the door shed: why, and what was seen when it was (for its `Retry-After`, booked
/// when the 503 is about to be sent).
#[derive(Debug, Clone, Copy)]
pub struct Shed {
    pub reason: admission::ShedReason,
    /// The earliest `Retry-After`, before jitter or booking.
    retry_after_s: u32,
    observed: Observation,
}

/// An admitted checkout on its way to the queue (see [`Monitor::admit`]).
#[must_use]
pub struct Admitted(Arc<Monitor>, Instant);

impl Drop for Admitted {
    fn drop(&mut self) {
        let monitor = &self.0;
        monitor.admitted_pending.fetch_sub(1, Ordering::Relaxed);
        let took = u64::try_from(self.1.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = monitor
            .intake_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| {
                Some(if mean == 0 {
                    took
                } else {
                    (mean as i128 + (took as i128 - mean as i128) / 16) as u64
                })
            });
    }
}

impl Monitor {
    /// Checkouts admitted here whose publish has not finished.
    pub fn admitted_pending(&self) -> u64 {
        self.admitted_pending.load(Ordering::Relaxed)
    }

    /// How long an admitted checkout has recently taken to be published (a mean of the last
    /// few dozen).
    pub fn intake_latency(&self) -> Duration {
        Duration::from_micros(self.intake_us.load(Ordering::Relaxed))
    }

    fn observation(&self) -> Observation {
        let (drain_per_s, deciding_per_s) = self.drain_readings();
        Observation {
            backlog: self.checkout_backlog(),
            pending: self.admitted_pending(),
            intake_latency: self.intake_latency(),
            in_flight: self.checkout_in_flight(),
            drain_per_s,
            deciding_per_s,
            decision_latency: Duration::from_micros(self.decision_p50_us.load(Ordering::Relaxed)),
            broker: self.broker_health(),
        }
    }

    /// Admit this checkout, or shed it. An admitted checkout counts as waiting until its
    /// [`Admitted`] is dropped (its publish finished); a shed one is told when to come back by
    /// [`Monitor::retry_after`], asked only if the answer is a 503.
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, Shed> {
        let o = self.observation();
        let now = Instant::now();
        let verdict = lock(&self.controller).decide(&o, now);
        match verdict {
            Verdict::Admit => {
                self.admitted_pending.fetch_add(1, Ordering::Relaxed);
                lock(&self.admission).admitted += 1;
                metrics::counter!("orderflow_checkouts_admitted_total").increment(1);
                Ok(Admitted(self.clone(), Instant::now()))
            }
            Verdict::Shed {
                reason,
                retry_after_s,
            } => {
                lock(&self.admission).shed += 1;
                metrics::counter!("orderflow_checkouts_shed_total", "reason" => reason.as_str())
                    .increment(1);
                Err(Shed {
                    reason,
                    retry_after_s,
                    observed: o,
                })
            }
        }
    }

    /// The `Retry-After` for a checkout shed at the door, to be sent with its 503: for the wait
    /// budget, a second booked among the clients already told to come back (so a checkout
    /// that is answered otherwise — its key known, out of stock — never asks); for the
    /// broker, the broker's wait, jittered. `who`: the customer and key of the checkout, so
    /// that its retries hold one place, and a customer only so many ([`super::places`]).
    pub fn retry_after(&self, shed: &Shed, who: Option<Requester<'_>>) -> u32 {
        match shed.reason {
            admission::ShedReason::WaitBudget => {
                lock(&self.controller).book_return(&shed.observed, Instant::now(), who)
            }
            _ => admission::jittered(shed.retry_after_s, fastrand::f64()),
        }
    }

    /// Moves the admission state on with what is observed now (the sampler calls it, so a
    /// stalled broker shows as shedding before any checkout arrives).
    pub(crate) fn evaluate(&self) {
        let o = self.observation();
        let now = Instant::now();
        let mut c = lock(&self.controller);
        let _ = c.decide(&o, now);
        c.tick(now);
    }

    /// A checkout refused by the broker itself (`reject-publish`, the hard stop).
    pub fn record_rejected_by_broker(&self) {
        lock(&self.admission).shed += 1;
        metrics::counter!("orderflow_checkouts_shed_total", "reason" => "queue_full").increment(1);
    }

    /// `(admitted, shed)` so far.
    pub fn admission_counts(&self) -> (u64, u64) {
        let c = *lock(&self.admission);
        (c.admitted, c.shed)
    }

    /// The admission state now, re-evaluated (as a checkout arriving now would see it).
    pub fn admission_state(&self) -> AdmissionView {
        let o = self.observation();
        let mut c = lock(&self.controller);
        let expected = c.expected_wait(&o);
        let (returns_booked, returns_remembered) = c.returns_ahead(Instant::now());
        AdmissionView {
            in_flight: o.in_flight,
            state: if c.shedding().is_some() {
                "shedding"
            } else {
                "open"
            },
            reason: c.shedding().map(|r| r.as_str()),
            expected_wait_ms: expected.as_secs_f64() * 1000.0,
            target_ms: c.config().target.as_secs_f64() * 1000.0,
            backlog: o.backlog,
            pending: o.pending,
            intake_ms: o.intake_latency.as_secs_f64() * 1000.0,
            drain_per_s: c.drain(&o),
            returns_booked,
            returns_remembered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_checkouts_at_the_door_at_once_are_not_all_admitted() {
        // 1 s target, 500/s assumed: shedding starts past 0.5 s of waiting work, 250 checkouts.
        let monitor = Arc::new(Monitor::new());
        let mut admitted = Vec::new();
        let mut shed = 0;
        // A thousand requests ask before the first of them is published (the broker's count
        // of the queue has not moved): each admitted one counts as waiting all the same.
        for _ in 0..1000 {
            match monitor.admit() {
                Ok(permit) => admitted.push(permit),
                Err(refused) => {
                    assert_eq!(refused.reason, admission::ShedReason::WaitBudget);
                    assert!(monitor.retry_after(&refused, None) >= 1);
                    shed += 1;
                }
            }
        }
        assert!(
            (240..=260).contains(&admitted.len()),
            "admitted {} of 1000 (shed {shed})",
            admitted.len()
        );
        assert_eq!(monitor.admitted_pending(), admitted.len() as u64);
        // Their publishes end (confirmed or failed): the door opens again without any wait.
        admitted.clear();
        assert_eq!(monitor.admitted_pending(), 0);
        assert!(monitor.admit().is_ok());
    }
}
