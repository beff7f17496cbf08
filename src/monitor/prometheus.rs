//! `GET /metrics`: the `metrics` facade's recorder, rendered as Prometheus text. Histograms have
//! explicit buckets (not summaries), so they aggregate over instances; every family is described
//! (HELP and TYPE) before it is first used.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::admission::ShedReason;

/// Per-queue counters, each registered at 0 for every queue (and its dead-letter queue's
/// ready gauge) so a rule's `increase()` sees the first event and a dashboard shows 0, not "no
/// data".
const QUEUE_COUNTERS: &[&str] = &[
    "orderflow_queue_published_total",
    "orderflow_queue_confirmed_total",
    "orderflow_queue_publish_rejected_total",
    "orderflow_queue_publish_timeouts_total",
    "orderflow_queue_delivered_total",
    "orderflow_queue_redelivered_total",
    "orderflow_queue_acked_total",
    "orderflow_queue_dead_lettered_total",
    "orderflow_queue_handed_back_total",
    "orderflow_queue_requeued_total",
];

/// Latencies, in seconds: 1 ms … 60 s.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Batch sizes, in rows.
const ROWS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle). `None` when
/// another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), ROWS));
            let handle = match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    return None;
                }
            };
            describe();
            zeroes();
            Some(handle)
        })
        .clone()
}

/// The installed recorder's handle, if any.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned().flatten()
}

/// A metric family's kind.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

use Kind::{Counter, Gauge, Histogram};

/// Every metric family the service exposes: kind, name, unit and help (described at install).
const FAMILIES: &[(Kind, &str, Option<Unit>, &str)] = &[
    (Counter, "orderflow_publishes_total", None, "Messages this instance published (persistent, each with a confirm awaited), by exchange: checkouts, events, hand-backs, dead letters."),
    (Counter, "orderflow_checkouts_admitted_total", None, "Checkouts admission control let through to the queue."),
    (Counter, "orderflow_checkouts_shed_total", None, "Checkouts answered 503 overloaded, by reason (wait_budget, broker_blocked, broker_stalled, queue_full)."),
    (Gauge, "orderflow_admission_shedding", None, "1 while admission control sheds checkouts."),
    (Gauge, "orderflow_admission_expected_wait_seconds", Some(Unit::Seconds), "Expected accept-to-decided wait of a checkout arriving now (queued / drain rate + max(in flight / drain rate, median decision latency))."),
    (Gauge, "orderflow_admission_drain_per_second", None, "Measured checkout decisions per second while there is a backlog."),
    (Gauge, "orderflow_admission_returns_booked", None, "Shed clients told to come back from now on (places booked in the timetable of returns)."),
    (Gauge, "orderflow_admission_returns_remembered", None, "Shed checkouts whose place among the returns is remembered (at most 262,144; past that, places are booked unremembered)."),
    (Gauge, "orderflow_checkout_backlog", None, "Checkouts waiting in orders.checkout (the last read, corrected by what this instance published and consumed since)."),
    (Gauge, "orderflow_queue_ready_messages", None, "Messages ready in a queue, as the broker counts them (sampled)."),
    (Gauge, "orderflow_queue_unacked_messages", None, "Messages delivered to this instance and not yet settled."),
    (Gauge, "orderflow_queue_consumers", None, "Consumers of a queue, as the broker counts them (sampled)."),
    (Counter, "orderflow_queue_published_total", None, "Messages published to a queue's exchange by this instance."),
    (Counter, "orderflow_queue_confirmed_total", None, "Publishes the broker confirmed."),
    (Counter, "orderflow_queue_publish_rejected_total", None, "Publishes the broker refused (the queue is full: reject-publish)."),
    (Counter, "orderflow_queue_publish_timeouts_total", None, "Publishes not confirmed in time."),
    (Counter, "orderflow_queue_delivered_total", None, "Deliveries received from a queue."),
    (Counter, "orderflow_queue_redelivered_total", None, "Deliveries flagged redelivered by the broker."),
    (Counter, "orderflow_queue_acked_total", None, "Deliveries acknowledged."),
    (Counter, "orderflow_queue_dead_lettered_total", None, "Deliveries moved to the dead-letter queue."),
    (Counter, "orderflow_queue_handed_back_total", None, "Deliveries handed back as a fresh copy after a transient outage."),
    (Counter, "orderflow_queue_requeued_total", None, "Deliveries given back to the queue as they were."),
    (Histogram, "orderflow_queue_wait_seconds", Some(Unit::Seconds), "Time from publish (orderflow's accept stamp, else the message timestamp) to consume."),
    (Histogram, "orderflow_checkout_accept_to_decided_seconds", Some(Unit::Seconds), "Time from the 202 of a checkout to its decision."),
    (Histogram, "orderflow_checkout_processing_seconds", Some(Unit::Seconds), "Time from consuming a checkout message to its outcome."),
    (Counter, "orderflow_orders_decided_total", None, "Orders reaching a decision, by status and rejection reason."),
    (Histogram, "orderflow_batch_rows", None, "Rows per batch a write-behind writer commits (writer = stock persister or order writer)."),
    (Histogram, "orderflow_batch_commit_seconds", Some(Unit::Seconds), "Time to commit one batch, retries included."),
    (Gauge, "orderflow_batch_backlog_rows", None, "Items queued in a writer and not yet committed: memory ahead of disk."),
    (Gauge, "orderflow_batch_capacity_rows", None, "The most items a write-behind writer may hold before writes answer 503 (its bound)."),
    (Gauge, "orderflow_engine_actors", None, "SKU actors running."),
    (Gauge, "orderflow_engine_requests_in_flight", None, "Engine requests sent to SKU actors and not yet answered (the mailboxes' depth, summed)."),
    (Gauge, "orderflow_db_pool_connections", None, "PostgreSQL pool connections, by state (in_use, idle)."),
    (Gauge, "orderflow_broker_connected", None, "1 while the RabbitMQ connection is open."),
    (Gauge, "orderflow_database_reachable", None, "1 while the lease's PostgreSQL connection answers (checked every LEASE_RENEW_MS or LEASE_RETRY_MS)."),
    (Gauge, "orderflow_lease_active", None, "1 while this instance holds the lease (the active instance)."),
    (Gauge, "orderflow_lease_epoch", None, "The lease epoch this instance holds (0 when standby)."),
    (Counter, "orderflow_lease_acquired_total", None, "Times this instance took the lease (each is a failover or a start)."),
    (Gauge, "orderflow_broker_blocked", None, "1 while the broker blocks this connection's publishes (connection.blocked: a memory or disk alarm)."),
];

fn describe() {
    for &(kind, name, unit, help) in FAMILIES {
        match (kind, unit) {
            (Counter, None) => describe_counter!(name, help),
            (Counter, Some(unit)) => describe_counter!(name, unit, help),
            (Gauge, None) => describe_gauge!(name, help),
            (Gauge, Some(unit)) => describe_gauge!(name, unit, help),
            (Histogram, None) => describe_histogram!(name, help),
            (Histogram, Some(unit)) => describe_histogram!(name, unit, help),
        }
    }
}

/// Registers the counters whose first event an alert must see, at 0.
fn zeroes() {
    for spec in crate::queues::QUEUES {
        for name in QUEUE_COUNTERS {
            metrics::counter!(*name, "queue" => spec.name).increment(0);
        }
    }
    metrics::counter!("orderflow_checkouts_admitted_total").increment(0);
    for reason in [
        ShedReason::WaitBudget,
        ShedReason::BrokerBlocked,
        ShedReason::BrokerStalled,
    ] {
        metrics::counter!("orderflow_checkouts_shed_total", "reason" => reason.as_str())
            .increment(0);
    }
    metrics::counter!("orderflow_checkouts_shed_total", "reason" => "queue_full").increment(0);
    metrics::counter!("orderflow_lease_acquired_total").increment(0);
}
