//! The service watching itself: counters per queue (published, confirmed, delivered, acked,
//! redelivered, dead-lettered, handed back), the queue depths the sampler reads from the broker,
//! accept → decided and decision latencies, admission by wait budget, the hottest SKUs and the
//! recent dead letters. One per application (tests run several in one process), made by
//! `startup` and handed to whoever counts into it or reads it — the broker connection
//! (publishes, deliveries, settlements), the order service (admission, decisions,
//! reservations), the sampler and the API; it imports none of them. It also feeds the
//! process's `metrics` facade (`/metrics`).
//!
//! - [`admission`]: the controller (pure); `door`: its verdicts for intake, what is admitted
//!   and on its way, and the state as shown.
//! - [`snapshot`]: the [`Snapshot`] for `/v1/queues`, the dashboard and the gauges, which
//!   `crate::sampler` (above the broker, the pool and the active parts) publishes here every
//!   half second.
//! - [`prometheus`]: the exporter behind `GET /metrics`.

pub mod admission;
mod door;
mod drain;
mod latency;
pub mod leaders;
pub mod places;
pub mod prometheus;
pub mod returns;
pub mod snapshot;
mod views;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::watch;

use crate::queues::{QueueSpec, QUEUES};
use admission::{AdmissionConfig, BrokerHealth, Controller};
use drain::DrainEstimator;

pub use door::{Admitted, Shed};
use latency::Latencies;
pub use latency::LatencySummary;
pub use snapshot::Snapshot;
pub use views::{AdmissionView, DeadLetterSeen, InFlight, PublishOutcome, QueueCounters, Settled};

/// What the sampler last read of the checkout queue, and this process's counters just before
/// that read, to estimate the backlog between samples.
#[derive(Debug, Default)]
struct Baseline {
    ready: AtomicU64,
    confirmed: AtomicU64,
    delivered: AtomicU64,
}

const RECENT_DEAD_LETTERS: usize = 50;
/// Admission state as answered at the last decision.
#[derive(Debug, Clone, Copy, Default)]
struct AdmissionCounters {
    admitted: u64,
    shed: u64,
}

/// The process's monitor (see the module docs).
pub struct Monitor {
    started: Instant,
    queues: Vec<(QueueSpec, QueueCounters)>,
    checkout: Baseline,
    decided: AtomicU64,
    /// The median decision latency of the last 5 s, in µs (the sampler refreshes it: merging
    /// histograms is too dear for every checkout).
    decision_p50_us: AtomicU64,
    accept_to_decided: Mutex<Latencies>,
    decision: Mutex<Latencies>,
    controller: Mutex<Controller>,
    drain: Mutex<DrainEstimator>,
    admission: Mutex<AdmissionCounters>,
    broker_connected: AtomicBool,
    broker_blocked: AtomicBool,
    /// Wall-clock ms since when reading the checkout queue fails on a connected broker (0: it
    /// answers, or the connection is down — then intake answers `unavailable` itself).
    stall_since_ms: AtomicI64,
    /// Until when (wall-clock ms) a publish that timed out counts the broker as stalled.
    publish_stalled_until_ms: AtomicI64,
    publish_timeouts: AtomicU64,
    /// Checkouts per message on the checkout queue lately, as published and delivered (an
    /// exponentially weighted mean, ×1000): the broker counts messages, admission counts
    /// checkouts.
    checkouts_per_message_milli: AtomicU64,
    /// Checkouts admitted and not yet published (recording their key, publishing): waiting as
    /// surely as those in the queue, though the broker does not count them yet. Without them a
    /// thousand clients at the door all pass admission in the instant before the first publish.
    admitted_pending: AtomicU64,
    /// Admission → published, µs: an exponentially weighted mean (1/16 per checkout).
    intake_us: AtomicU64,
    reservations: DashMap<String, (u64, u64)>,
    dead_letters: Mutex<VecDeque<DeadLetterSeen>>,
    /// The queues' leaders and members as the management API last said, and when.
    memberships: Mutex<(Vec<leaders::Membership>, Option<Instant>)>,
    snapshots: watch::Sender<Arc<Snapshot>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How long reading the checkout queue may keep failing on a connected broker (each read waits
/// up to a second) before the broker counts as stalled.
const STALLED_AFTER_MS: i64 = 1_000;
/// How long a publish that was not confirmed in time keeps the broker counted as stalled.
const PUBLISH_STALL_MS: i64 = 3_000;

impl Default for Monitor {
    fn default() -> Self {
        Monitor::new()
    }
}

impl Monitor {
    /// Records what the management API said about the queues' leaders and members.
    pub fn set_memberships(&self, queues: Vec<leaders::Membership>, at: Instant) {
        if let Ok(mut m) = self.memberships.lock() {
            *m = (queues, Some(at));
        }
    }

    /// A queue's leader and members, if the management API told within the last 10 s.
    pub fn membership(&self, queue: &str) -> Option<leaders::Membership> {
        let m = self.memberships.lock().ok()?;
        let fresh = m.1.is_some_and(|at| at.elapsed() < Duration::from_secs(10));
        fresh
            .then(|| m.0.iter().find(|q| q.name == queue).cloned())
            .flatten()
    }

    pub fn new() -> Monitor {
        let (snapshots, _) = watch::channel(Arc::new(Snapshot::default()));
        Monitor {
            started: Instant::now(),
            queues: QUEUES
                .iter()
                .map(|q| (*q, QueueCounters::default()))
                .collect(),
            checkout: Baseline::default(),
            decided: AtomicU64::new(0),
            decision_p50_us: AtomicU64::new(0),
            accept_to_decided: Mutex::new(Latencies::new()),
            decision: Mutex::new(Latencies::new()),
            controller: Mutex::new(Controller::new(AdmissionConfig::default())),
            drain: Mutex::new(DrainEstimator::default()),
            admission: Mutex::new(AdmissionCounters::default()),
            broker_connected: AtomicBool::new(false),
            broker_blocked: AtomicBool::new(false),
            stall_since_ms: AtomicI64::new(0),
            publish_stalled_until_ms: AtomicI64::new(0),
            publish_timeouts: AtomicU64::new(0),
            checkouts_per_message_milli: AtomicU64::new(1000),
            admitted_pending: AtomicU64::new(0),
            intake_us: AtomicU64::new(0),
            reservations: DashMap::new(),
            dead_letters: Mutex::new(VecDeque::with_capacity(RECENT_DEAD_LETTERS)),
            memberships: Mutex::new((Vec::new(), None)),
            snapshots,
        }
    }

    /// Sets the wait budget (at startup).
    pub fn configure(&self, config: AdmissionConfig) {
        *lock(&self.controller) = Controller::new(config);
    }

    /// The counters of a work queue, by name (`None` for a queue orderflow does not own).
    pub fn queue(&self, name: &str) -> Option<&QueueCounters> {
        self.queues
            .iter()
            .find(|(q, _)| q.name == name)
            .map(|(_, c)| c)
    }

    /// The work queue a publish to `exchange` with `routing_key` lands in.
    pub fn queue_of_publish(&self, exchange: &str, routing_key: &str) -> Option<&QueueCounters> {
        self.queues
            .iter()
            .find(|(q, _)| q.exchange == exchange && q.routing_key == routing_key)
            .map(|(_, c)| c)
    }

    pub(crate) fn queues(&self) -> &[(QueueSpec, QueueCounters)] {
        &self.queues
    }

    fn seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// A checkout was decided (confirmed, rejected, failed or cancelled).
    pub fn record_decision(&self, status: &str, reason: Option<&str>) {
        self.decided.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "orderflow_orders_decided_total",
            "status" => status.to_owned(),
            "reason" => reason.unwrap_or("none").to_owned()
        )
        .increment(1);
    }

    pub fn decided(&self) -> u64 {
        self.decided.load(Ordering::Relaxed)
    }

    /// A checkout message was taken to its outcome: `accepted_ms` is when intake accepted it
    /// (wall clock), `consumed` when its delivery arrived.
    pub fn record_processed(&self, accepted_ms: Option<i64>, consumed: Instant) {
        let second = self.seconds();
        let took = consumed.elapsed();
        lock(&self.decision).record(second, took);
        metrics::histogram!("orderflow_checkout_processing_seconds").record(took.as_secs_f64());
        if let Some(accepted) = accepted_ms {
            let ms = now_ms().saturating_sub(accepted).max(0);
            let latency = Duration::from_millis(ms.unsigned_abs());
            lock(&self.accept_to_decided).record(second, latency);
            metrics::histogram!("orderflow_checkout_accept_to_decided_seconds")
                .record(latency.as_secs_f64());
        }
    }

    /// accept → decided percentiles over the last `seconds`.
    pub fn accept_to_decided(&self, seconds: u64) -> LatencySummary {
        lock(&self.accept_to_decided).summary(self.seconds(), seconds)
    }

    /// consume → decided percentiles over the last `seconds`.
    pub fn decision_latency(&self, seconds: u64) -> LatencySummary {
        lock(&self.decision).summary(self.seconds(), seconds)
    }

    /// A delivery arrived: `waited` since it was published, when known; it carries `checkouts`
    /// (1, or a batch's). In flight until the returned guard is dropped.
    pub fn record_delivery(
        self: &Arc<Self>,
        queue: &str,
        redelivered: bool,
        waited: Option<Duration>,
        checkouts: usize,
    ) -> Option<InFlight> {
        let count = i64::try_from(checkouts.max(1)).unwrap_or(1);
        let index = self.queues.iter().position(|(q, _)| q.name == queue);
        if let Some(c) = index.and_then(|i| self.queues.get(i)).map(|(_, c)| c) {
            c.delivered.fetch_add(1, Ordering::Relaxed);
            c.in_flight.fetch_add(count, Ordering::Relaxed);
            if redelivered {
                c.redelivered.fetch_add(1, Ordering::Relaxed);
            }
        }
        metrics::counter!("orderflow_queue_delivered_total", "queue" => queue.to_owned())
            .increment(1);
        if redelivered {
            metrics::counter!("orderflow_queue_redelivered_total", "queue" => queue.to_owned())
                .increment(1);
        }
        if let Some(w) = waited {
            metrics::histogram!("orderflow_queue_wait_seconds", "queue" => queue.to_owned())
                .record(w.as_secs_f64());
        }
        index.map(|index| InFlight {
            monitor: Arc::clone(self),
            index,
            count,
        })
    }

    /// A message of the checkout queue carrying `checkouts` (1 alone, or a batch's) went in
    /// (intake's publish, confirmed) or came out (a delivery, anyone's): the mean that turns the
    /// broker's message count into checkouts follows both — after a restart the deliveries
    /// teach it what the queue holds before intake published anything.
    pub fn record_checkouts_per_message(&self, checkouts: usize) {
        let n = u64::try_from(checkouts.max(1))
            .unwrap_or(1)
            .saturating_mul(1000);
        let _ = self.checkouts_per_message_milli.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |mean| Some(mean - mean / 32 + n / 32),
        );
    }

    /// Checkouts per message on the checkout queue, lately.
    pub fn checkouts_per_message(&self) -> f64 {
        (self.checkouts_per_message_milli.load(Ordering::Relaxed) as f64 / 1000.0).max(1.0)
    }

    /// A delivery was settled: `how` is `acked`, `dead_lettered`, `handed_back` or `requeued`.
    pub fn record_settled(&self, queue: &str, how: Settled) {
        if let Some(c) = self.queue(queue) {
            let counter = match how {
                Settled::Acked => &c.acked,
                Settled::DeadLettered => &c.dead_lettered,
                Settled::HandedBack => &c.handed_back,
                Settled::Requeued => &c.requeued,
                Settled::Abandoned => return,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let name = match how {
            Settled::Acked => "orderflow_queue_acked_total",
            Settled::DeadLettered => "orderflow_queue_dead_lettered_total",
            Settled::HandedBack => "orderflow_queue_handed_back_total",
            Settled::Requeued => "orderflow_queue_requeued_total",
            Settled::Abandoned => return,
        };
        metrics::counter!(name, "queue" => queue.to_owned()).increment(1);
    }

    /// A publish was sent (`confirmed`: the broker confirmed it); per queue when it went to a
    /// work queue.
    pub fn record_publish(&self, exchange: &str, routing_key: &str, outcome: PublishOutcome) {
        // Every publish, events included: the work per order (`orderflow loadgen`).
        metrics::counter!("orderflow_publishes_total", "exchange" => exchange_label(exchange))
            .increment(1);
        let Some((spec, c)) = self
            .queues
            .iter()
            .find(|(q, _)| q.exchange == exchange && q.routing_key == routing_key)
        else {
            return;
        };
        let queue = spec.name;
        c.published.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("orderflow_queue_published_total", "queue" => queue).increment(1);
        match outcome {
            PublishOutcome::Confirmed => {
                c.confirmed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("orderflow_queue_confirmed_total", "queue" => queue).increment(1);
            }
            PublishOutcome::Rejected => {
                metrics::counter!("orderflow_queue_publish_rejected_total", "queue" => queue)
                    .increment(1);
            }
            PublishOutcome::TimedOut => {
                self.publish_timeouts.fetch_add(1, Ordering::Relaxed);
                self.publish_stalled_until_ms
                    .store(now_ms() + PUBLISH_STALL_MS, Ordering::Relaxed);
                metrics::counter!("orderflow_queue_publish_timeouts_total", "queue" => queue)
                    .increment(1);
            }
            PublishOutcome::Failed => {}
        }
    }

    /// The broker connection's state (the sampler sets it).
    pub(crate) fn set_broker(&self, connected: bool, blocked: bool) {
        self.broker_connected.store(connected, Ordering::Relaxed);
        self.broker_blocked.store(blocked, Ordering::Relaxed);
        if !connected {
            self.stall_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// `(confirmed, delivered)` of the checkout queue now (taken just before reading it).
    pub(crate) fn checkout_counts(&self) -> (u64, u64) {
        self.queue(crate::queues::CHECKOUT_QUEUE.name)
            .map_or((0, 0), |c| {
                (
                    c.confirmed.load(Ordering::Relaxed),
                    c.delivered.load(Ordering::Relaxed),
                )
            })
    }

    /// The checkout queue was read: `ready` messages, with the counters taken just before.
    pub(crate) fn set_checkout_ready(&self, ready: u64, (confirmed, delivered): (u64, u64)) {
        self.checkout.ready.store(ready, Ordering::Relaxed);
        self.checkout.confirmed.store(confirmed, Ordering::Relaxed);
        self.checkout.delivered.store(delivered, Ordering::Relaxed);
        self.stall_since_ms.store(0, Ordering::Relaxed);
    }

    /// Reading the checkout queue failed (a time-out or a closed channel).
    pub(crate) fn checkout_read_failed(&self) {
        if self.broker_connected.load(Ordering::Relaxed) {
            let _ = self.stall_since_ms.compare_exchange(
                0,
                now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Checkouts waiting in the queue now: the last read of the queue, corrected by what this
    /// process published and was delivered since — messages, each counted for the checkouts a
    /// message carried lately. (What is in flight here is not waiting: its time is the decision
    /// latency.)
    pub fn checkout_backlog(&self) -> u64 {
        let Some(c) = self.queue(crate::queues::CHECKOUT_QUEUE.name) else {
            return 0;
        };
        let confirmed = c.confirmed.load(Ordering::Relaxed);
        let delivered = c.delivered.load(Ordering::Relaxed);
        let ready = self.checkout.ready.load(Ordering::Relaxed) as i64
            + confirmed.saturating_sub(self.checkout.confirmed.load(Ordering::Relaxed)) as i64
            - delivered.saturating_sub(self.checkout.delivered.load(Ordering::Relaxed)) as i64;
        let checkouts = ready.max(0) as f64 * self.checkouts_per_message();
        checkouts.round() as u64
    }

    fn broker_health(&self) -> BrokerHealth {
        if self.broker_blocked.load(Ordering::Relaxed) {
            return BrokerHealth::Blocked;
        }
        let since = self.stall_since_ms.load(Ordering::Relaxed);
        let now = now_ms();
        if (since != 0 && now.saturating_sub(since) >= STALLED_AFTER_MS)
            || now < self.publish_stalled_until_ms.load(Ordering::Relaxed)
        {
            return BrokerHealth::Stalled;
        }
        BrokerHealth::Ok
    }

    /// Checkouts delivered to this process and not yet settled.
    pub fn checkout_in_flight(&self) -> u64 {
        self.queue(crate::queues::CHECKOUT_QUEUE.name)
            .map_or(0, |c| {
                c.in_flight.load(Ordering::Relaxed).max(0).unsigned_abs()
            })
    }

    /// Refreshes the decision latency admission uses: the median of the last 5 s, one
    /// decision's own time (what is in flight is added by the controller, ahead of the
    /// measurement). The sampler calls it.
    pub(crate) fn refresh_decision_latency(&self) {
        let p50 = self.decision_latency(5).p50_ms.max(0.0);
        self.decision_p50_us
            .store((p50 * 1000.0) as u64, Ordering::Relaxed);
    }

    /// Feeds the drain estimator (the sampler calls it).
    pub(crate) fn observe_drain(&self, now: Instant) {
        let (queued, in_flight) = (self.checkout_backlog(), self.checkout_in_flight());
        lock(&self.drain).observe(now, self.decided(), queued, in_flight);
    }

    pub fn drain_per_s(&self) -> f64 {
        lock(&self.drain).rate()
    }

    /// The drain estimate and what is decided with work queued
    /// ([`DrainEstimator::deciding`]), read under one lock.
    pub(crate) fn drain_readings(&self) -> (f64, f64) {
        let d = lock(&self.drain);
        (d.rate(), d.deciding())
    }

    /// The latest snapshot (the sampler publishes one every half second).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// Snapshots as they are published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    pub(crate) fn publish_snapshot(&self, snapshot: Snapshot) {
        self.snapshots.send_replace(Arc::new(snapshot));
    }
}

/// The exchange as a label without an allocation per publish (the contract's exchanges; any
/// other is "other").
fn exchange_label(exchange: &str) -> &'static str {
    use crate::queues::{
        EXCHANGE_CARTS, EXCHANGE_DEAD_LETTER, EXCHANGE_INVENTORY, EXCHANGE_ORDERS,
        EXCHANGE_ORDER_EVENTS,
    };
    [
        EXCHANGE_ORDERS,
        EXCHANGE_ORDER_EVENTS,
        EXCHANGE_INVENTORY,
        EXCHANGE_CARTS,
        EXCHANGE_DEAD_LETTER,
    ]
    .into_iter()
    .find(|e| *e == exchange)
    .unwrap_or("other")
}
