//! The open loop's report (`openloop.rs`): the decisions counted per phase — latencies (HDR
//! histograms), outcomes, what was sold — and each phase's lines.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::arrivals::{PhaseStats, Shared};
use super::driving::Decided;
use super::loadgen::LoadgenConfig;
use super::openloop::{Phase, Sent};
use super::queues::print_timeline;

pub(super) fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The run's records, taken out of the shared cell once every task is done with them.
pub(super) fn take_shared(shared: &Rc<RefCell<Shared>>) -> Shared {
    let mut b = shared.borrow_mut();
    Shared {
        phases: std::mem::take(&mut b.phases),
        timeline: std::mem::take(&mut b.timeline),
        accepted: std::mem::take(&mut b.accepted),
        offered: std::mem::take(&mut b.offered),
        answers: std::mem::take(&mut b.answers),
        in_flight: b.in_flight,
        peak_in_flight: b.peak_in_flight,
        retry_until: b.retry_until,
    }
}

/// The decisions counted: latencies per phase and in all, outcomes, and what was sold.
pub(super) struct Tally {
    pub(super) proto: Histogram<u64>,
    pub(super) latency: Vec<Histogram<u64>>,
    pub(super) all: Histogram<u64>,
    pub(super) decided_in: Vec<u64>,
    pub(super) undecided: u64,
    pub(super) sold: HashMap<String, i64>,
    pub(super) outcome: BTreeMap<String, u64>,
    pub(super) unseen_accepts: u64,
}

impl Tally {
    /// The line over all phases; returns the orders decided (with a known latency).
    pub(super) fn print_all(&self) -> u64 {
        let decided_total: u64 = self.decided_in.iter().sum();
        println!(
            "all: decided {} ({}), accept→decided p99 {:.0} ms max {:.0} ms",
            decided_total,
            self.outcome
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            ms(self.all.value_at_quantile(0.99)),
            ms(self.all.max())
        );
        decided_total
    }

    pub(super) fn of(
        s: &Shared,
        decided: &Decided,
        late: &HashSet<String>,
        phases: usize,
    ) -> Result<Tally, String> {
        // 1 µs … 1 h, 3 significant digits.
        let proto: Histogram<u64> =
            Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
        let mut t = Tally {
            latency: (0..phases).map(|_| proto.clone()).collect(),
            all: proto.clone(),
            proto,
            decided_in: vec![0; phases],
            undecided: 0,
            sold: HashMap::new(),
            outcome: BTreeMap::new(),
            unseen_accepts: 0,
        };
        // What was sold, from the decisions themselves: a checkout whose 202 never arrived (a
        // time-out, then a 503 on every retry) may still have been accepted.
        let seen: HashSet<&String> = s.accepted.iter().map(|a| &a.0).collect();
        for (id, sku) in &s.offered {
            if let Some(d) = decided.get(id) {
                if d.value().1 == "scheduled" {
                    *t.sold.entry(sku.clone()).or_default() += 1;
                }
                if !seen.contains(id) {
                    t.unseen_accepts += 1;
                }
            }
        }
        for (id, phase, at, _sku) in &s.accepted {
            let Some(d) = decided.get(id) else {
                t.undecided += 1;
                continue;
            };
            let (when, status) = d.value();
            if late.contains(id) {
                *t.outcome.entry(status.clone()).or_default() += 1;
                continue;
            }
            let micros = u64::try_from(when.saturating_duration_since(*at).as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            if let Some(h) = t.latency.get_mut(*phase) {
                h.saturating_record(micros);
            }
            t.all.saturating_record(micros);
            if let Some(count) = t.decided_in.get_mut(*phase) {
                *count += 1;
            }
            *t.outcome.entry(status.clone()).or_default() += 1;
        }
        Ok(t)
    }
}

/// What every phase's report reads.
#[derive(Clone, Copy)]
pub(super) struct Report<'a> {
    pub(super) t: &'a Tally,
    pub(super) s: &'a Shared,
    pub(super) decisions: &'a [Instant],
    pub(super) sent: &'a Sent,
    pub(super) c: &'a LoadgenConfig,
}

impl Report<'_> {
    /// Every phase's lines (and the timeline when asked for); the expectations that failed.
    pub(super) fn phases(&self, phases: &[Phase]) -> Vec<String> {
        let mut failed = Vec::new();
        for (i, (phase, stats)) in phases.iter().zip(&self.s.phases).enumerate() {
            let slower = i > 0 && phases.get(i - 1).is_some_and(|p| p.rate > phase.rate);
            let seen = self.phase(i, phase, stats, slower);
            failed.extend(super::expect::phase_failures(
                &self.c.expect(),
                i + 1,
                &seen,
            ));
        }
        if self.c.timeline {
            print_timeline(
                self.sent.started,
                &self.sent.phase_starts,
                &self.s.timeline,
                &self.s.answers,
                self.decisions,
            );
        }
        failed
    }

    /// Prints what happened while phase `i` ran, by the wall clock (retries of earlier
    /// arrivals included); returns the decided rate in that window and when its last 503 came (s after its start).
    fn while_running(&self, i: usize) -> (f64, Option<f64>) {
        let (s, sent) = (self.s, self.sent);
        let from = sent.phase_starts.get(i).copied().unwrap_or(sent.started);
        let to = sent
            .phase_starts
            .get(i + 1)
            .copied()
            .unwrap_or(sent.started + sent.sending);
        let window = to.saturating_duration_since(from).as_secs_f64().max(1e-9);
        let within = |t: &Instant| *t >= from && *t < to;
        let count = |codes: &[u16]| {
            s.answers
                .iter()
                .filter(|(t, c)| within(t) && codes.contains(c))
                .count() as f64
                / window
        };
        let decided_rate = self.decisions.iter().filter(|t| within(t)).count() as f64 / window;
        let last_shed = s
            .answers
            .iter()
            .filter(|(t, c)| within(t) && *c == 503)
            .map(|(t, _)| t.saturating_duration_since(from).as_secs_f64())
            .fold(None, |a: Option<f64>, t| Some(a.map_or(t, |a| a.max(t))));
        println!(
            "phase {} while it ran: 202 {:.0}/s, 503 {:.0}/s, 409 {:.0}/s, no answer {:.0}/s, decided {:.0}/s; last 503 {}",
            i + 1,
            count(&[202, 200]),
            count(&[503]),
            count(&[409]),
            count(&[0]),
            decided_rate,
            last_shed.map_or("none".into(), |t| format!("{t:.1} s after the phase began"))
        );
        (decided_rate, last_shed)
    }

    /// Prints one phase: wall-clock rates while it ran (retries of earlier arrivals included), its
    /// arrivals' fate and latencies; returns what the expectations are checked on.
    pub(super) fn phase(
        &self,
        i: usize,
        phase: &Phase,
        stats: &PhaseStats,
        slower_than_before: bool,
    ) -> super::expect::PhaseSeen {
        let Report { t, c, .. } = *self;
        let h = t.latency.get(i).cloned().unwrap_or_else(|| t.proto.clone());
        let secs = phase.seconds;
        let (decided_rate, last_shed) = self.while_running(i);
        println!(
        "  its arrivals @ {:.0}/s for {:.0} s: offered {:.0}/s ({} not sent: {} requests already in flight); over their retries: requests {}, admitted {}, shed {} (503 without Retry-After: {}), other answers {:?}",
        phase.rate,
        secs,
        stats.offered as f64 / secs,
        stats.client_dropped,
        c.customers,
        stats.requests,
        stats.admitted,
        stats.shed,
        stats.shed_without_retry_after,
        stats.other
        );
        println!(
        "  decided {} of {} admitted; accept→decided p50 {:.0} ms  p95 {:.0} ms  p99 {:.0} ms  max {:.0} ms; queue peak depth {}{}",
        t.decided_in.get(i).copied().unwrap_or(0),
        stats.admitted,
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        stats.peak_depth,
        match (stats.shedding_at_start, stats.reopened_after) {
            (true, Some(t)) => format!("; shedding when it began, admission reopened after {t:.1} s"),
            (true, None) => "; shedding when it began, admission did NOT reopen".into(),
            _ => String::new(),
        }
        );
        print_shed_answers(&stats.shed_answer_us);
        print_told(&stats.told_s, stats.gave_up_after_run);
        super::expect::PhaseSeen {
            rate: phase.rate,
            slower_than_before,
            decided_per_s: decided_rate,
            p99_ms: ms(h.value_at_quantile(0.99)),
            last_shed_s: last_shed,
            shed_without_retry_after: stats.shed_without_retry_after,
        }
    }
}

/// How long the phase's 503s took to come back.
fn print_shed_answers(us: &[u64]) {
    if us.is_empty() {
        return;
    }
    let mut t = us.to_vec();
    t.sort_unstable();
    let at = |q: f64| {
        let i = ((t.len() - 1) as f64 * q).round() as usize;
        ms(t.get(i).copied().unwrap_or(0))
    };
    println!(
        "  503 answered in p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        at(0.5),
        at(0.99),
        ms(t.last().copied().unwrap_or(0))
    );
}

/// What the phase's 503s told their clients to wait, and how many of them were told a time
/// after the run's end (and gave up rather than retry into the books' check).
fn print_told(told: &[u64], gave_up: u64) {
    if told.is_empty() {
        return;
    }
    let mut t = told.to_vec();
    t.sort_unstable();
    let at = |q: f64| {
        t.get(((t.len() - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "  503 told Retry-After p50 {} s  p90 {} s  p99 {} s  max {} s; {gave_up} told a time after the run's end (not retried)",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}
