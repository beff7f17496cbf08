//! One arrival of the open loop (`openloop.rs`): a checkout sent, its 503s retried after their
//! `Retry-After`, what happened recorded per phase.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::args::LoadgenConfig;
use super::driving::{checkout_body, send_checkout};
use super::queues::QueueState;

/// Attempts per checkout (the first and the retries after 503).
pub(super) const ATTEMPTS: u32 = 10;

#[derive(Default)]
pub(super) struct PhaseStats {
    pub(super) offered: u64,
    /// Arrivals not sent because `--customers` requests were already in flight (the client's
    /// own limit: queueing them in the client would hide the overload it measures).
    pub(super) client_dropped: u64,
    pub(super) requests: u64,
    pub(super) admitted: u64,
    pub(super) shed: u64,
    pub(super) shed_without_retry_after: u64,
    pub(super) other: BTreeMap<u16, u64>,
    pub(super) peak_depth: u64,
    /// Seconds from the phase's start until admission was seen open again (if it was shedding
    /// when the phase began).
    pub(super) reopened_after: Option<f64>,
    pub(super) shedding_at_start: bool,
    /// How long each 503 took to come back (µs).
    pub(super) shed_answer_us: Vec<u64>,
    /// What each 503 said to wait (`Retry-After`, s).
    pub(super) told_s: Vec<u64>,
    /// Checkouts told to come back after the last phase ends: the run does not wait for them
    /// (their retry would land while it checks its books).
    pub(super) gave_up_after_run: u64,
}

pub(super) struct Shared {
    pub(super) phases: Vec<PhaseStats>,
    /// (buyer — one per order, phase, accepted at, sku)
    pub(super) accepted: Vec<(String, usize, Instant, String)>,
    /// Every checkout offered: (buyer, sku).
    pub(super) offered: Vec<(String, String)>,
    /// Every answer, when it came: (at, status; 0 = none).
    pub(super) answers: Vec<(Instant, u16)>,
    pub(super) in_flight: u64,
    pub(super) peak_in_flight: u64,
    /// `/v1/queues` every quarter second.
    pub(super) timeline: Vec<(Instant, QueueState)>,
    /// When the last phase ends: no retry is sent within a second of it, or after it.
    pub(super) retry_until: Option<Instant>,
}

impl Shared {
    /// Nothing recorded yet, for `phases` phases.
    pub(super) fn for_phases(phases: usize) -> Shared {
        Shared {
            phases: (0..phases).map(|_| PhaseStats::default()).collect(),
            accepted: Vec::new(),
            offered: Vec::new(),
            answers: Vec::new(),
            in_flight: 0,
            peak_in_flight: 0,
            timeline: Vec::new(),
            retry_until: None,
        }
    }
}

/// Sends one checkout, retrying 503s after Retry-After; records what happened.
pub(super) async fn one_checkout(
    client: awc::Client,
    c: Rc<LoadgenConfig>,
    shared: Rc<RefCell<Shared>>,
    phase: usize,
    key: String,
    sku: String,
) {
    let url = &c.url;
    let body = checkout_body(&key, &sku);
    let token = super::driving::token_for(&c, &key);
    for _ in 0..ATTEMPTS {
        shared.borrow_mut().in_flight += 1;
        {
            let mut s = shared.borrow_mut();
            s.peak_in_flight = s.peak_in_flight.max(s.in_flight);
        }
        let asked_at = Instant::now();
        let (code, retry_after) = send_checkout(&client, url, &key, &token, &body).await;
        let again = {
            let mut s = shared.borrow_mut();
            s.in_flight -= 1;
            s.answers.push((Instant::now(), code));
            let Some(stats) = s.phases.get_mut(phase) else {
                return;
            };
            stats.requests += 1;
            match code {
                202 | 200 => {
                    stats.admitted += 1;
                    s.accepted
                        .push((key.clone(), phase, Instant::now(), sku.clone()));
                    false
                }
                503 => {
                    stats.shed += 1;
                    stats
                        .shed_answer_us
                        .push(u64::try_from(asked_at.elapsed().as_micros()).unwrap_or(u64::MAX));
                    if retry_after.is_none() {
                        stats.shed_without_retry_after += 1;
                    }
                    stats.told_s.extend(retry_after);
                    // A second's margin: the run waits for what is in flight from the end on.
                    let back_at = Instant::now() + retry_wait(retry_after) + Duration::from_secs(1);
                    if s.retry_until.is_some_and(|until| back_at > until) {
                        if let Some(stats) = s.phases.get_mut(phase) {
                            stats.gave_up_after_run += 1;
                        }
                        false
                    } else {
                        true
                    }
                }
                other => {
                    // Final: another answer (409 out of stock), or none within the client's
                    // time-out (retrying it would only add load the client cannot carry).
                    *stats.other.entry(other).or_default() += 1;
                    false
                }
            }
        };
        if !again {
            return;
        }
        tokio::time::sleep(retry_wait(retry_after)).await;
    }
}

/// What a 503's `Retry-After` says to wait (half a second without one).
fn retry_wait(retry_after: Option<u64>) -> Duration {
    retry_after.map_or(Duration::from_millis(500), Duration::from_secs)
}
