//! What an open-loop run is expected to show (`--expect-goodput`, `--expect-p99-ms`,
//! `--expect-reopen-s`), judged per phase from what was seen. Pure: the run feeds it.

/// The expectations, as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// Every phase offered more than this decides at least this many orders per second.
    pub goodput: Option<f64>,
    /// Admitted p99 accept → decided under this, in every phase.
    pub p99_ms: Option<f64>,
    /// In a phase slower than the one before, the last 503 at most this long after it began.
    pub reopen_s: Option<f64>,
}

/// One phase as the run saw it.
#[derive(Debug, Clone, Copy)]
pub struct PhaseSeen {
    /// Offered rate.
    pub rate: f64,
    pub slower_than_before: bool,
    pub decided_per_s: f64,
    pub p99_ms: f64,
    /// Seconds from the phase's start to its last 503.
    pub last_shed_s: Option<f64>,
    pub shed_without_retry_after: u64,
}

/// What phase `n` (from 1) failed of the expectations; empty when it met them all. A 503
/// without `Retry-After` always fails.
pub fn phase_failures(expect: &Expect, n: usize, seen: &PhaseSeen) -> Vec<String> {
    let mut failed = Vec::new();
    if let Some(floor) = expect.goodput.filter(|f| seen.rate > *f) {
        if seen.decided_per_s < floor {
            failed.push(format!(
                "phase {n}: decided {:.0}/s under the expected {floor:.0}/s",
                seen.decided_per_s
            ));
        }
    }
    if let Some(ceiling) = expect.p99_ms.filter(|m| seen.p99_ms >= *m) {
        failed.push(format!(
            "phase {n}: accept→decided p99 {:.0} ms, expected under {ceiling:.0} ms",
            seen.p99_ms
        ));
    }
    if let (true, Some(within), Some(last)) =
        (seen.slower_than_before, expect.reopen_s, seen.last_shed_s)
    {
        if last > within {
            failed.push(format!(
                "phase {n}: last 503 {last:.1} s after it began, expected within {within:.1} s"
            ));
        }
    }
    if seen.shed_without_retry_after > 0 {
        failed.push(format!(
            "phase {n}: {} answers 503 without Retry-After",
            seen.shed_without_retry_after
        ));
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> PhaseSeen {
        PhaseSeen {
            rate: 6000.0,
            slower_than_before: false,
            decided_per_s: 2000.0,
            p99_ms: 450.0,
            last_shed_s: Some(29.0),
            shed_without_retry_after: 0,
        }
    }

    const EXPECT: Expect = Expect {
        goodput: Some(1800.0),
        p99_ms: Some(1000.0),
        reopen_s: Some(2.0),
    };

    #[test]
    fn a_phase_that_meets_every_expectation_has_no_failures() {
        assert!(phase_failures(&EXPECT, 1, &seen()).is_empty());
        // Nothing expected: only a 503 without Retry-After fails.
        let mut s = seen();
        s.decided_per_s = 1.0;
        assert!(phase_failures(&Expect::default(), 1, &s).is_empty());
        s.shed_without_retry_after = 3;
        assert_eq!(phase_failures(&Expect::default(), 1, &s).len(), 1);
    }

    #[test]
    fn each_expectation_fails_on_its_own() {
        let mut s = seen();
        s.decided_per_s = 1500.0;
        s.p99_ms = 1200.0;
        let failed = phase_failures(&EXPECT, 1, &s);
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(failed[0].contains("1500/s under the expected 1800/s"));
        // Goodput is judged only where the phase offered more than the floor.
        s.rate = 900.0;
        assert_eq!(phase_failures(&EXPECT, 2, &s).len(), 1);
        // The reopening time only in a phase slower than the one before it.
        let mut s = seen();
        s.last_shed_s = Some(4.3);
        assert!(phase_failures(&EXPECT, 2, &s).is_empty());
        s.slower_than_before = true;
        assert_eq!(
            phase_failures(&EXPECT, 2, &s),
            ["phase 2: last 503 4.3 s after it began, expected within 2.0 s"]
        );
    }
}
