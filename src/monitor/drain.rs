//! The drain rate admission divides the backlog by: what the checkout pipeline can decide per
//! second, measured from the decided counter and the queue's depth, the way it shows itself
//! only while there is work waiting. Pure: the sampler feeds it readings with their instants.

use std::time::Instant;

/// Measures how fast checkouts can be decided: the capacity, not the current rate.
///
/// Only a reading taken while checkouts were queued at both ends of the interval (every
/// consumer slot taken, more waiting) shows the capacity; it moves an exponentially weighted
/// mean both ways (one slow interval does not halve it, one burst does not double it). A
/// reading while the queue was empty but decisions were in flight at both ends shows only that
/// the capacity is at least that much: it may raise the estimate, never lower it. (Lowering it
/// there was the collapse of issue 20: consumers starved by a slow door measured their own
/// starvation as the capacity, admission shrank with it, and the door let in fewer still.) An
/// idle interval, or a burst drained from an empty start, says nothing.
#[derive(Debug, Clone, Default)]
pub struct DrainEstimator {
    rate: f64,
    /// Every saturated reading, both ways: what is decided now with work waiting.
    deciding: f64,
    /// (at, decided so far, queued, in flight)
    last: Option<(Instant, u64, u64, u64)>,
}

/// Weight of a new busy reading.
const DRAIN_WEIGHT: f64 = 0.4;

impl DrainEstimator {
    /// Records the decided counter, the checkouts queued and those in flight at `now`.
    pub fn observe(&mut self, now: Instant, decided_total: u64, queued: u64, in_flight: u64) {
        if let Some((then, decided_then, queued_then, in_flight_then)) = self.last {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            if dt < 0.05 {
                return;
            }
            let reading = decided_total.saturating_sub(decided_then) as f64 / dt;
            let saturated = queued_then > 0 && queued > 0;
            let busy = queued_then + in_flight_then > 0 && queued + in_flight > 0;
            if self.rate == 0.0 && busy {
                self.rate = reading;
            } else if saturated || (busy && reading > self.rate) {
                self.rate += DRAIN_WEIGHT * (reading - self.rate);
            }
            if saturated {
                self.deciding = if self.deciding == 0.0 {
                    reading
                } else {
                    self.deciding + DRAIN_WEIGHT * (reading - self.deciding)
                };
            }
        }
        self.last = Some((now, decided_total, queued, in_flight));
    }

    /// Decisions per second; 0 until measured.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Decisions per second while checkouts were queued: every saturated reading, followed
    /// both ways (a reading while the queue ran empty shows the arrivals, and is left out); 0
    /// until measured. Unlike [`DrainEstimator::rate`], never raised by an unsaturated
    /// reading, so under overload it is what is decided, where the estimate may run ahead.
    pub fn deciding(&self) -> f64 {
        self.deciding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_drain_estimate_follows_saturated_readings_and_ignores_idle_ones() {
        let mut d = DrainEstimator::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        d.observe(t0, 0, 100, 50);
        d.observe(t0 + s, 1000, 100, 50);
        assert_eq!(d.rate(), 1000.0);
        // Saturated and slower: moves part of the way down.
        d.observe(t0 + 2 * s, 1500, 100, 50);
        assert!((d.rate() - 800.0).abs() < 1e-9, "{}", d.rate());
        // The queue ran empty: 10/s is the arrival rate, not the capacity.
        d.observe(t0 + 3 * s, 1510, 0, 0);
        assert!((d.rate() - 800.0).abs() < 1e-9);
        // Nor is a burst drained from an empty start (decisions piled up behind a stall).
        d.observe(t0 + 4 * s, 4510, 10, 5);
        assert!((d.rate() - 800.0).abs() < 1e-9);
        // Saturated again: counts.
        d.observe(t0 + 5 * s, 5310, 10, 5);
        assert!((d.rate() - 800.0).abs() < 1e-9);
    }

    #[test]
    fn consumers_starved_by_the_door_never_lower_the_estimate() {
        let mut d = DrainEstimator::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        d.observe(t0, 0, 100, 200);
        d.observe(t0 + s, 2000, 100, 200);
        assert_eq!(d.rate(), 2000.0);
        // Nothing queued, a few in flight: 700/s is what arrived, not what could be decided.
        d.observe(t0 + 2 * s, 2700, 0, 30);
        d.observe(t0 + 3 * s, 3400, 0, 30);
        assert_eq!(d.rate(), 2000.0);
        // …but more than the estimate, unsaturated, shows the capacity is at least that.
        d.observe(t0 + 4 * s, 5900, 0, 30);
        assert!((d.rate() - 2200.0).abs() < 1e-9, "{}", d.rate());
        // What is decided with work queued: only the first, saturated, reading counted (the
        // rest show the arrivals).
        assert_eq!(d.deciding(), 2000.0);
        // Saturated again, and slower: both follow it (from 2000 and 2200).
        d.observe(t0 + 5 * s, 5900, 100, 30);
        d.observe(t0 + 6 * s, 7400, 100, 30);
        assert!((d.deciding() - 1800.0).abs() < 1e-9, "{}", d.deciding());
        assert!((d.rate() - 1920.0).abs() < 1e-9, "{}", d.rate());
    }
}
