//! Per-customer rate limits on writes (checkout, cart changes, cancel): a token bucket per
//! customer (`governor`'s GCRA), so one customer cannot send writes as fast as the socket allows.
//! Past the allowance the answer is 429 `rate_limited` with the seconds until the next write fits.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Allowance per customer (`RATE_LIMIT_PER_SECOND`, `RATE_LIMIT_BURST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    /// Writes per second a customer may keep up.
    pub per_second: u32,
    /// Writes a customer may send at once after a pause.
    pub burst: u32,
}

impl Default for RateSettings {
    /// Generous for a person at a storefront (or a storefront's retries): 10 writes a second,
    /// 30 at once.
    fn default() -> Self {
        RateSettings {
            per_second: 10,
            burst: 30,
        }
    }
}

/// How often the limiter forgets customers whose bucket is full again.
const PRUNE_EVERY: u64 = 4096;

/// The buckets of every customer that wrote recently.
pub struct RateLimits {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    calls: AtomicU64,
}

impl RateLimits {
    pub fn new(settings: RateSettings) -> RateLimits {
        let per_second = NonZeroU32::new(settings.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.burst).unwrap_or(per_second);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        RateLimits {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            calls: AtomicU64::new(0),
        }
    }

    /// Takes one write from `customer`'s allowance; `Err(seconds)` to wait when there is none.
    pub fn spend(&self, customer: &str) -> Result<(), u32> {
        if self.calls.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        match self.limiter.check_key(&customer.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait: Duration = not_until.wait_time_from(self.clock.now());
                Err(u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_customer_waits_and_others_do_not() {
        let limits = RateLimits::new(RateSettings {
            per_second: 1,
            burst: 3,
        });
        for _ in 0..3 {
            assert_eq!(limits.spend("ana"), Ok(()));
        }
        let wait = limits.spend("ana").unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        assert_eq!(limits.spend("bia"), Ok(()), "one bucket per customer");
    }
}
