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

fn describe() {
    describe_counter!(
        "orderflow_publishes_total",
        "Messages this instance published (persistent, each with a confirm awaited), by exchange: checkouts, events, hand-backs, dead letters."
    );
    describe_counter!(
        "orderflow_checkouts_admitted_total",
        "Checkouts admission control let through to the queue."
    );
    describe_counter!(
        "orderflow_checkouts_shed_total",
        "Checkouts answered 503 overloaded, by reason (wait_budget, broker_blocked, broker_stalled, queue_full)."
    );
    describe_gauge!(
        "orderflow_admission_shedding",
        "1 while admission control sheds checkouts."
    );
    describe_gauge!(
        "orderflow_admission_expected_wait_seconds",
        Unit::Seconds,
        "Expected accept-to-decided wait of a checkout arriving now (queued / drain rate + max(in flight / drain rate, median decision latency))."
    );
    describe_gauge!(
        "orderflow_admission_drain_per_second",
        "Measured checkout decisions per second while there is a backlog."
    );
    describe_gauge!(
        "orderflow_checkout_backlog",
        "Checkouts waiting in orders.checkout (the last read, corrected by what this instance published and consumed since)."
    );
    describe_gauge!(
        "orderflow_queue_ready_messages",
        "Messages ready in a queue, as the broker counts them (sampled)."
    );
    describe_gauge!(
        "orderflow_queue_unacked_messages",
        "Messages delivered to this instance and not yet settled."
    );
    describe_gauge!(
        "orderflow_queue_consumers",
        "Consumers of a queue, as the broker counts them (sampled)."
    );
    for (name, help) in [
        (
            "orderflow_queue_published_total",
            "Messages published to a queue's exchange by this instance.",
        ),
        (
            "orderflow_queue_confirmed_total",
            "Publishes the broker confirmed.",
        ),
        (
            "orderflow_queue_publish_rejected_total",
            "Publishes the broker refused (the queue is full: reject-publish).",
        ),
        (
            "orderflow_queue_publish_timeouts_total",
            "Publishes not confirmed in time.",
        ),
        (
            "orderflow_queue_delivered_total",
            "Deliveries received from a queue.",
        ),
        (
            "orderflow_queue_redelivered_total",
            "Deliveries flagged redelivered by the broker.",
        ),
        ("orderflow_queue_acked_total", "Deliveries acknowledged."),
        (
            "orderflow_queue_dead_lettered_total",
            "Deliveries moved to the dead-letter queue.",
        ),
        (
            "orderflow_queue_handed_back_total",
            "Deliveries handed back as a fresh copy after a transient outage.",
        ),
        (
            "orderflow_queue_requeued_total",
            "Deliveries given back to the queue as they were.",
        ),
    ] {
        describe_counter!(name, help);
    }
    describe_histogram!(
        "orderflow_queue_wait_seconds",
        Unit::Seconds,
        "Time from publish (orderflow's accept stamp, else the message timestamp) to consume."
    );
    describe_histogram!(
        "orderflow_checkout_accept_to_decided_seconds",
        Unit::Seconds,
        "Time from the 202 of a checkout to its decision."
    );
    describe_histogram!(
        "orderflow_checkout_processing_seconds",
        Unit::Seconds,
        "Time from consuming a checkout message to its outcome."
    );
    describe_counter!(
        "orderflow_orders_decided_total",
        "Orders reaching a decision, by status and rejection reason."
    );
    describe_histogram!(
        "orderflow_batch_rows",
        "Rows per batch a write-behind writer commits (writer = stock persister or order writer)."
    );
    describe_histogram!(
        "orderflow_batch_commit_seconds",
        Unit::Seconds,
        "Time to commit one batch, retries included."
    );
    describe_gauge!(
        "orderflow_batch_backlog_rows",
        "Items queued in a writer and not yet committed: memory ahead of disk."
    );
    describe_gauge!(
        "orderflow_batch_capacity_rows",
        "The most items a write-behind writer may hold before writes answer 503 (its bound)."
    );
    describe_gauge!("orderflow_engine_actors", "SKU actors running.");
    describe_gauge!(
        "orderflow_engine_requests_in_flight",
        "Engine requests sent to SKU actors and not yet answered (the mailboxes' depth, summed)."
    );
    describe_gauge!(
        "orderflow_db_pool_connections",
        "PostgreSQL pool connections, by state (in_use, idle)."
    );
    describe_gauge!(
        "orderflow_broker_connected",
        "1 while the RabbitMQ connection is open."
    );
    describe_gauge!(
        "orderflow_database_reachable",
        "1 while the lease's PostgreSQL connection answers (checked every LEASE_RENEW_MS or LEASE_RETRY_MS)."
    );
    describe_gauge!(
        "orderflow_lease_active",
        "1 while this instance holds the lease (the active instance)."
    );
    describe_gauge!(
        "orderflow_lease_epoch",
        "The lease epoch this instance holds (0 when standby)."
    );
    describe_counter!(
        "orderflow_lease_acquired_total",
        "Times this instance took the lease (each is a failover or a start)."
    );
    describe_gauge!(
        "orderflow_broker_blocked",
        "1 while the broker blocks this connection's publishes (connection.blocked: a memory or disk alarm)."
    );
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
