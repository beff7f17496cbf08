//! Rolling latency percentiles: one HDR histogram per second, the last few kept and merged on
//! demand (by the sampler, never per request).

use std::collections::VecDeque;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency windows: one histogram per second, this many kept.
const LATENCY_SECONDS: usize = 10;

/// Rolling per-second latency histograms (microseconds).
pub(super) struct Latencies {
    windows: VecDeque<(u64, Histogram<u64>)>,
}

impl Latencies {
    pub(super) fn new() -> Latencies {
        Latencies {
            windows: VecDeque::with_capacity(LATENCY_SECONDS + 1),
        }
    }

    pub(super) fn record(&mut self, second: u64, value: Duration) {
        let micros = u64::try_from(value.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 3_600_000_000);
        if self.windows.back().is_none_or(|(s, _)| *s != second) {
            let Ok(h) = Histogram::new_with_bounds(1, 3_600_000_000, 2) else {
                return;
            };
            self.windows.push_back((second, h));
            while self.windows.len() > LATENCY_SECONDS {
                self.windows.pop_front();
            }
        }
        if let Some((_, h)) = self.windows.back_mut() {
            h.saturating_record(micros);
        }
    }

    /// Percentiles over the windows of the last `seconds` (ending at `now_second`).
    pub(super) fn summary(&self, now_second: u64, seconds: u64) -> LatencySummary {
        let mut merged: Option<Histogram<u64>> = None;
        for (s, h) in &self.windows {
            if *s + seconds <= now_second {
                continue;
            }
            match merged.as_mut() {
                None => merged = Some(h.clone()),
                Some(m) => {
                    let _ = m.add(h);
                }
            }
        }
        let Some(h) = merged.filter(|h| !h.is_empty()) else {
            return LatencySummary::default();
        };
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// Latency percentiles over a recent window.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}
