//! The limit probe: what RabbitMQ alone and PostgreSQL alone can do for the pipeline's pattern,
//! on this machine, now — the ceiling a load generator run is measured against.
//!
//! Per order the pipeline does, with the default configuration:
//! - RabbitMQ: one persistent checkout published with a confirm to the quorum queue
//!   `orders.checkout`, delivered (prefetch 256) and acked once; four persistent events published
//!   with confirms to the topic exchange `order.events` (`order.received`, `order.reserved`,
//!   `order.scheduled`, `notification.order_scheduled`), one of them (`order.scheduled`) routed
//!   to a watcher's queue and delivered (as the load generator watches decisions); with
//!   `ORDER_EVENTS=decisions` (the default; `--probe-events decisions`) only the decision's two,
//!   `order.scheduled` and `notification.order_scheduled`.
//! - PostgreSQL (the one write, `ORDER_WRITES=one`): in the order writer's batches, intake's
//!   idempotency key; then the order written once, decided (its row with its whole history and
//!   its key), its held unit committed with it (the stock row, once per batch per SKU, and one
//!   change-log row) and its notification — one transaction per batch.
//!
//! The probe does exactly that with nothing in between — its own quorum queue and exchange, its
//! own scratch database, the crate's own SQL — and reports orders/s and CPU µs per order of each
//! process. Each side runs alone, so each figure is that side's ceiling with the whole machine;
//! together they share it: `ceiling = 1 / (1/rabbit + 1/postgres)`.

use std::time::Duration;

mod postgres;
mod rabbit;

use super::cpu::CpuUse;

/// Size of a checkout body as the load generator sends it (bytes).
pub const CHECKOUT_BYTES: usize = 330;
/// Size of an order event (the order's JSON) and of a notification event, as the service
/// publishes them for a one-line order (bytes).
pub const EVENT_BYTES: usize = 780;
pub const NOTIFICATION_BYTES: usize = 260;

/// What the probe does.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub amqp_url: String,
    /// A PostgreSQL URL whose server the probe may create a scratch database on.
    pub database_url: String,
    /// Seconds per side.
    pub seconds: f64,
    /// Orders per database batch (the writers' batch at the rate being probed).
    pub batch: usize,
    /// One SKU for every order (the flash sale), or each order a SKU of its own in a batch.
    pub hot: bool,
    pub prefetch: u16,
    /// The events the service publishes per order (its `ORDER_EVENTS`).
    pub events: orderflow::orders::EventScope,
    /// Checkouts per message at most, and publishes out at once (the service's
    /// `CHECKOUT_BATCH`, `CHECKOUT_PUBLISHES`).
    pub checkout_batch: usize,
    pub checkout_publishes: usize,
    /// RabbitMQ's side paced to this many orders/s (0: as fast as it goes) — what the pattern
    /// costs the broker at the rate a pipeline runs at, rather than at the broker's own ceiling.
    pub rate: f64,
}

/// One side's result.
#[derive(Debug, Clone)]
pub struct Side {
    pub orders: u64,
    pub per_second: f64,
    pub cpu: CpuUse,
}

/// Both sides.
#[derive(Debug, Clone)]
pub struct Ceiling {
    pub rabbit: Side,
    pub postgres: Side,
    /// The RabbitMQ side was paced to this many orders/s: its figure is no ceiling.
    pub paced: Option<f64>,
}

impl Ceiling {
    /// Orders/s both could sustain sharing the machine (each side alone used it whole).
    pub fn per_second(&self) -> f64 {
        1.0 / (1.0 / self.rabbit.per_second.max(1e-9) + 1.0 / self.postgres.per_second.max(1e-9))
    }

    /// The infrastructure's own CPU per order (RabbitMQ + PostgreSQL), µs.
    pub fn infrastructure_micros(&self) -> f64 {
        let per = |s: &Side, g: &str| s.cpu.of(g) * 1e6 / s.orders.max(1) as f64;
        per(&self.rabbit, "beam.smp") + per(&self.postgres, "postgres")
    }

    pub fn print(&self) {
        for (name, side) in [
            ("RabbitMQ alone", &self.rabbit),
            ("Postgres alone", &self.postgres),
        ] {
            println!(
                "probe {name:<15} {:>6.0} orders/s  ({} orders; CPU per order: {})",
                side.per_second,
                side.orders,
                side.cpu.per_unit(side.orders)
            );
        }
        if let Some(rate) = self.paced {
            println!("probe paced      the RabbitMQ side at {rate:.0} orders/s asked: no ceiling");
            return;
        }
        println!(
            "probe ceiling    {:>6.0} orders/s  (both sharing the machine); their own CPU {:.0} µs/order \
             → at most {:.0}/s on {} cores with a free service",
            self.per_second(),
            self.infrastructure_micros(),
            cores() * 1e6 / self.infrastructure_micros().max(1e-9),
            cores()
        );
    }
}

/// The machine's CPUs.
pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// Runs both sides, one after the other.
pub async fn run(c: &ProbeConfig) -> Result<Ceiling, String> {
    let rabbit = rabbit::run(c).await?;
    let config = c.clone();
    // Bounded: a database that stops answering cannot hang the load generator (the thread is
    // left to its fate; the process ends after the run).
    let limit = Duration::from_secs_f64(c.seconds) + Duration::from_secs(60);
    let postgres = tokio::time::timeout(
        limit,
        tokio::task::spawn_blocking(move || postgres::run(&config)),
    )
    .await
    .map_err(|_| format!("probe, Postgres: not done within {} s", limit.as_secs()))?
    .map_err(|e| e.to_string())??;
    Ok(Ceiling {
        rabbit,
        postgres,
        paced: (c.rate > 0.0).then_some(c.rate),
    })
}
