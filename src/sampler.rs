//! The queue monitor: every half second it reads each queue's depth and consumers from the broker
//! (a passive declare on a channel of its own — never the management API, never on a request
//! path), computes rates over a short window from the process's counters, feeds the admission
//! controller's drain estimate, sets the gauges, and publishes a [`Snapshot`] for `/v1/queues`
//! and the dashboard's live feed.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::active::ActiveParts;
use crate::domain::Sku;
use crate::messaging::topology::CHECKOUT_QUEUE;
use crate::messaging::Broker;
use crate::monitor::snapshot::{
    BrokerView, EngineView, HotSku, PoolView, QueueView, Snapshot, WriterBacklog,
};
use crate::monitor::Monitor;
use crate::persistence::DbPool;

/// How often the broker is read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Rates are averaged over this window.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// A passive declare that takes longer than this counts as a failed read.
const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Hottest SKUs shown.
const HOT_SKUS: usize = 8;

/// Counter readings at one sample, for rates.
#[derive(Clone)]
struct Reading {
    at: Instant,
    queues: Vec<[u64; 6]>,
    decided: u64,
    admitted: u64,
    shed: u64,
}

fn reading(m: &Monitor, now: Instant) -> Reading {
    let (admitted, shed) = m.admission_counts();
    Reading {
        at: now,
        queues: m
            .queues()
            .iter()
            .map(|(_, c)| {
                [
                    c.published.load(Ordering::Relaxed),
                    c.confirmed.load(Ordering::Relaxed),
                    c.delivered.load(Ordering::Relaxed),
                    c.acked.load(Ordering::Relaxed),
                    c.redelivered.load(Ordering::Relaxed),
                    c.dead_lettered.load(Ordering::Relaxed),
                ]
            })
            .collect(),
        decided: m.decided(),
        admitted,
        shed,
    }
}

fn rate(now: u64, then: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(then) as f64 / seconds
}

/// What the sampler reads besides the broker.
pub struct Sources {
    pub broker: Broker,
    /// Where the readings go.
    pub monitor: Arc<Monitor>,
    pub pool: DbPool,
    /// The active parts, while this instance holds the lease.
    pub active: Box<dyn Fn() -> Option<Arc<ActiveParts>> + Send + Sync>,
}

/// Starts the sampler; it runs for the life of the process.
pub fn spawn(sources: Sources) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut channel: Option<lapin::Channel> = None;
        let mut history: VecDeque<Reading> = VecDeque::new();
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let snapshot = sample(&sources, &mut channel, &mut history).await;
            sources.monitor.publish_snapshot(snapshot);
            if let Some(handle) = crate::monitor::prometheus::handle() {
                handle.run_upkeep();
            }
        }
    })
}

/// `(ready, consumers)` of a queue, on the sampler's channel.
async fn read_queue(channel: &lapin::Channel, name: &str) -> Result<(u64, u32), String> {
    let declare = channel.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    );
    match tokio::time::timeout(READ_TIMEOUT, declare).await {
        Ok(Ok(q)) => Ok((u64::from(q.message_count()), q.consumer_count())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

async fn read_opt(channel: Option<&lapin::Channel>, name: &str) -> Option<(u64, u32)> {
    read_queue(channel?, name).await.ok()
}

async fn sample(
    sources: &Sources,
    channel: &mut Option<lapin::Channel>,
    history: &mut VecDeque<Reading>,
) -> Snapshot {
    let m = &sources.monitor;
    let now = Instant::now();
    let (connected, blocked, depths) = read_broker(sources, channel, m).await;
    m.observe_drain(now);
    m.refresh_decision_latency();
    // The state follows the broker and the backlog even when no checkout arrives to ask.
    m.evaluate();

    let current = reading(m, now);
    history.push_back(current.clone());
    while history
        .front()
        .is_some_and(|r| now.duration_since(r.at) > RATE_WINDOW)
    {
        history.pop_front();
    }
    let oldest = history.front().cloned().unwrap_or_else(|| current.clone());
    let seconds = now.duration_since(oldest.at).as_secs_f64();

    let queues = queue_views(m, &current, &oldest, seconds, &depths);
    let admission = m.admission_state();
    metrics::gauge!("orderflow_admission_shedding")
        .set(f64::from(u8::from(admission.state == "shedding")));
    metrics::gauge!("orderflow_admission_expected_wait_seconds")
        .set(admission.expected_wait_ms / 1000.0);
    metrics::gauge!("orderflow_admission_drain_per_second").set(m.drain_per_s());
    metrics::gauge!("orderflow_admission_returns_booked").set(admission.returns_booked as f64);
    metrics::gauge!("orderflow_admission_returns_remembered")
        .set(admission.returns_remembered as f64);
    metrics::gauge!("orderflow_checkout_backlog").set(admission.backlog as f64);

    let pool_state = sources.pool.state();
    let db_pool = PoolView {
        in_use: pool_state
            .connections
            .saturating_sub(pool_state.idle_connections),
        idle: pool_state.idle_connections,
    };
    metrics::gauge!("orderflow_db_pool_connections", "state" => "in_use")
        .set(f64::from(db_pool.in_use));
    metrics::gauge!("orderflow_db_pool_connections", "state" => "idle")
        .set(f64::from(db_pool.idle));

    let active = (sources.active)();
    let (memory_ahead_of_disk, hot_skus, engine) = active_view(m, active.as_deref()).await;
    Snapshot {
        at: Some(chrono::Utc::now()),
        role: if active.is_some() {
            "active"
        } else {
            "standby"
        },
        queues,
        admission,
        admitted_per_s: rate(current.admitted, oldest.admitted, seconds),
        shed_per_s: rate(current.shed, oldest.shed, seconds),
        decided_per_s: rate(current.decided, oldest.decided, seconds),
        latency: m.accept_to_decided(10),
        memory_ahead_of_disk,
        hot_skus,
        broker: BrokerView { connected, blocked },
        db_pool,
        engine,
    }
}

/// Queue depths as read from the broker this round: `(work queue, its dead letters)` per queue.
type Depths = Vec<(Option<(u64, u32)>, Option<(u64, u32)>)>;

/// The broker's state and every queue's depth (a passive declare each, on the sampler's own
/// channel, reopened when it is gone); the checkout queue's reading feeds admission.
async fn read_broker(
    sources: &Sources,
    channel: &mut Option<lapin::Channel>,
    m: &Monitor,
) -> (bool, bool, Depths) {
    let connection = sources.broker.current();
    let connected = connection.as_ref().is_some_and(|c| c.status().connected());
    let blocked = connection.as_ref().is_some_and(|c| c.status().blocked());
    m.set_broker(connected, blocked);
    metrics::gauge!("orderflow_broker_connected").set(f64::from(u8::from(connected)));
    metrics::gauge!("orderflow_broker_blocked").set(f64::from(u8::from(blocked)));

    if channel.as_ref().is_none_or(|c| !c.status().connected()) {
        *channel = match connection {
            // Bounded: on a stalled connection the open would never be answered.
            Some(conn) if connected => tokio::time::timeout(READ_TIMEOUT, conn.create_channel())
                .await
                .ok()
                .and_then(Result::ok),
            _ => None,
        };
    }
    let mut depths = Vec::new();
    for (spec, _) in m.queues() {
        let counts = m.checkout_counts();
        let work = read_opt(channel.as_ref(), spec.name).await;
        if spec.name == CHECKOUT_QUEUE.name {
            match work {
                Some((ready, _)) => m.set_checkout_ready(ready, counts),
                None if connected => m.checkout_read_failed(),
                None => {}
            }
        }
        // After a failed read the channel is closed: the rest wait for the next round.
        let dead = match work {
            Some(_) => read_opt(channel.as_ref(), &spec.dead_letter_queue()).await,
            None => None,
        };
        if work.is_none() {
            // A failed passive declare closes the channel: open a new one next time.
            *channel = None;
        }
        depths.push((work, dead));
    }
    (connected, blocked, depths)
}

/// Each queue as `/v1/queues` shows it, with its rates over the window; sets the queue gauges.
fn queue_views(
    m: &Monitor,
    current: &Reading,
    oldest: &Reading,
    seconds: f64,
    depths: &Depths,
) -> Vec<QueueView> {
    let mut queues = Vec::new();
    for (i, ((spec, counters), (work, dead))) in m.queues().iter().zip(depths).enumerate() {
        let (Some(c), Some(o)) = (current.queues.get(i), oldest.queues.get(i)) else {
            continue;
        };
        let r = |k: usize| {
            rate(
                c.get(k).copied().unwrap_or(0),
                o.get(k).copied().unwrap_or(0),
                seconds,
            )
        };
        let unacked = counters
            .in_flight
            .load(Ordering::Relaxed)
            .max(0)
            .unsigned_abs();
        let view = QueueView {
            name: spec.name,
            ready: work.map(|(r, _)| r),
            unacked,
            consumers: work.map(|(_, c)| c),
            publish_rate: r(0),
            confirm_rate: r(1),
            deliver_rate: r(2),
            ack_rate: r(3),
            redeliver_rate: r(4),
            dead_letter_rate: r(5),
            dead_letters: dead.map(|(r, _)| r),
        };
        if let Some(ready) = view.ready {
            metrics::gauge!("orderflow_queue_ready_messages", "queue" => spec.name)
                .set(ready as f64);
        }
        if let Some(consumers) = view.consumers {
            metrics::gauge!("orderflow_queue_consumers", "queue" => spec.name)
                .set(f64::from(consumers));
        }
        if let Some(dead) = view.dead_letters {
            metrics::gauge!("orderflow_queue_ready_messages", "queue" => spec.dead_letter_queue())
                .set(dead as f64);
        }
        metrics::gauge!("orderflow_queue_unacked_messages", "queue" => spec.name)
            .set(unacked as f64);
        queues.push(view);
    }

    queues
}

/// What the active parts show: the writers' backlogs, the hottest SKUs with their ledgers, the
/// engine's size; sets their gauges. Empty on a standby.
async fn active_view(
    m: &Monitor,
    active: Option<&ActiveParts>,
) -> (Vec<WriterBacklog>, Vec<HotSku>, EngineView) {
    let memory_ahead_of_disk: Vec<WriterBacklog> = match active {
        Some(parts) => vec![
            WriterBacklog::of("stock", parts.engine.persister_stats().batches()),
            WriterBacklog::of("orders", &parts.orders.writer_stats()),
        ],
        None => Vec::new(),
    };
    for w in &memory_ahead_of_disk {
        metrics::gauge!("orderflow_batch_backlog_rows", "writer" => w.writer).set(w.rows as f64);
        metrics::gauge!("orderflow_batch_capacity_rows", "writer" => w.writer)
            .set(w.capacity as f64);
    }
    let hottest = m.take_hottest(HOT_SKUS);
    let interval = SAMPLE_EVERY.as_secs_f64();
    let mut hot_skus = Vec::new();
    let mut engine = EngineView::default();
    if let Some(parts) = active {
        engine = EngineView {
            actors: parts.engine.sku_count(),
            requests_in_flight: parts.engine.requests_in_flight(),
        };
        for (name, count) in hottest {
            let Ok(sku) = Sku::parse(&name) else { continue };
            let ledger =
                tokio::time::timeout(Duration::from_millis(200), parts.engine.ledger(&sku))
                    .await
                    .ok()
                    .and_then(Result::ok);
            hot_skus.push(HotSku {
                available: parts.engine.feed().board().available(&sku),
                on_hand: ledger.map(|l| l.level.on_hand),
                reserved: ledger.map(|l| l.level.reserved),
                sku: name,
                reservations_per_s: count as f64 / interval,
            });
        }
    }
    metrics::gauge!("orderflow_engine_actors").set(engine.actors as f64);
    metrics::gauge!("orderflow_engine_requests_in_flight").set(engine.requests_in_flight as f64);

    (memory_ahead_of_disk, hot_skus, engine)
}
