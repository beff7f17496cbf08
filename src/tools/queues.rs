//! What the service says about its checkout queue and admission (`/v1/queues`), as the load
//! generator reads it, and the open loop's second-by-second timeline of it.

use std::time::{Duration, Instant};

use serde_json::Value;

/// Reads the checkout queue's depth and the admission state from `/v1/queues`.
pub(super) async fn queue_state(client: &awc::Client, url: &str) -> Option<QueueState> {
    let mut r = client.get(format!("{url}/v1/queues")).send().await.ok()?;
    let body: Value = r.json().limit(1 << 20).await.ok()?;
    let checkout = body
        .get("queues")?
        .as_array()?
        .iter()
        .find(|q| q.get("name").and_then(Value::as_str) == Some("orders.checkout"))?;
    let count = |field: &str| checkout.get(field).and_then(Value::as_u64).unwrap_or(0);
    let admission = |field: &str| {
        body.pointer(&format!("/admission/{field}"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    Some(QueueState {
        depth: count("ready") + count("unacked"),
        shedding: body.pointer("/admission/state").and_then(Value::as_str) == Some("shedding"),
        backlog: admission("backlog") as u64,
        pending: admission("pending") as u64,
        intake_ms: admission("intake_ms"),
        expected_wait_ms: admission("expected_wait_ms"),
        drain_per_s: admission("drain_per_s"),
    })
}

/// The checkout queue and admission as `/v1/queues` shows them.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueueState {
    /// Ready + unacked, as the broker last said.
    pub depth: u64,
    pub shedding: bool,
    /// Admission's view of the queue, and of the checkouts admitted on their way to it.
    pub backlog: u64,
    pub pending: u64,
    pub intake_ms: f64,
    pub expected_wait_ms: f64,
    pub drain_per_s: f64,
}

/// Second by second: the phase, the broker's queue depth (ready + unacked), admission's backlog
/// and admitted-not-yet-published checkouts and their intake time (highest seen), the share of
/// samples shedding, the expected wait and drain rate admission used, and the
/// answers and decisions in that second.
pub(super) fn print_timeline(
    started: Instant,
    phase_starts: &[Instant],
    timeline: &[(Instant, QueueState)],
    answers: &[(Instant, u16)],
    decisions: &[Instant],
) {
    let second = |t: &Instant| t.saturating_duration_since(started).as_secs() as usize;
    let Some(last) = timeline.last().map(|(t, _)| second(t)) else {
        return;
    };
    println!(
        "timeline  s  phase   depth  backlog  pending  intake_ms  shedding  wait_ms  drain/s   202/s   503/s  decided/s"
    );
    for sec in 0..=last {
        let samples: Vec<&QueueState> = timeline
            .iter()
            .filter(|(t, _)| second(t) == sec)
            .map(|(_, q)| q)
            .collect();
        if samples.is_empty() {
            continue;
        }
        let at = started + Duration::from_secs(sec as u64);
        let phase = phase_starts.iter().filter(|p| **p <= at).count();
        let answered = |codes: &[u16]| {
            answers
                .iter()
                .filter(|(t, c)| second(t) == sec && codes.contains(c))
                .count()
        };
        let shedding = samples.iter().filter(|q| q.shedding).count() * 100 / samples.len();
        println!(
            "timeline {sec:>3}  {phase:>5}  {:>6}  {:>7}  {:>7}  {:>9.0}  {:>7}%  {:>7.0}  {:>7.0}  {:>6}  {:>6}  {:>9}",
            samples.iter().map(|q| q.depth).max().unwrap_or(0),
            samples.iter().map(|q| q.backlog).max().unwrap_or(0),
            samples.iter().map(|q| q.pending).max().unwrap_or(0),
            samples.iter().map(|q| q.intake_ms).fold(0.0, f64::max),
            shedding,
            samples.iter().map(|q| q.expected_wait_ms).fold(0.0, f64::max),
            samples.last().map_or(0.0, |q| q.drain_per_s),
            answered(&[202, 200]),
            answered(&[503]),
            decisions.iter().filter(|t| second(t) == sec).count(),
        );
    }
}
