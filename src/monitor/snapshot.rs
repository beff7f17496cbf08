//! What the sampler (`crate::sampler`) publishes every half second: the queues, the admission
//! state, the rates, the writers' backlogs, the hot SKUs — for `/v1/queues` and the dashboard.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{AdmissionView, LatencySummary};

/// One queue as `/v1/queues` shows it (API.md), with the extra rates.
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct QueueView {
    pub name: &'static str,
    /// Ready in the broker (last read); `null` when it could not be read.
    pub ready: Option<u64>,
    /// Delivered to this instance and not settled.
    pub unacked: u64,
    pub consumers: Option<u32>,
    /// Per second over the last 5 s.
    pub publish_rate: f64,
    pub confirm_rate: f64,
    pub deliver_rate: f64,
    pub ack_rate: f64,
    pub redeliver_rate: f64,
    pub dead_letter_rate: f64,
    /// Its dead-letter queue's depth.
    pub dead_letters: Option<u64>,
}

/// A SKU reserved often in the last interval.
#[derive(Debug, Clone, Serialize)]
pub struct HotSku {
    pub sku: String,
    pub reservations_per_s: f64,
    pub available: i64,
    pub on_hand: Option<i64>,
    pub reserved: Option<i64>,
}

/// Everything the monitor knows at one moment.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    pub role: &'static str,
    pub queues: Vec<QueueView>,
    pub admission: AdmissionView,
    pub admitted_per_s: f64,
    pub shed_per_s: f64,
    pub decided_per_s: f64,
    /// accept → decided over the last 10 s.
    pub latency: LatencySummary,
    /// Items queued in each write-behind writer: memory ahead of disk.
    pub memory_ahead_of_disk: Vec<WriterBacklog>,
    pub hot_skus: Vec<HotSku>,
    pub broker: BrokerView,
    pub db_pool: PoolView,
    pub engine: EngineView,
}

#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct WriterBacklog {
    pub writer: &'static str,
    pub rows: i64,
    /// The writer's bound: past it, writes answer 503.
    pub capacity: i64,
}

impl WriterBacklog {
    pub fn of(writer: &'static str, stats: &crate::batch::BatchStats) -> WriterBacklog {
        WriterBacklog {
            writer,
            rows: stats.queued.load(Ordering::Relaxed).max(0),
            capacity: i64::try_from(stats.capacity.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Default, utoipa::ToSchema)]
pub struct BrokerView {
    pub connected: bool,
    pub blocked: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct PoolView {
    pub in_use: u32,
    pub idle: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct EngineView {
    pub actors: usize,
    pub requests_in_flight: i64,
}
