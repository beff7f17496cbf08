//! The probe's RabbitMQ side.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use uuid::Uuid;

use super::{ProbeConfig, Side, CHECKOUT_BYTES, EVENT_BYTES, NOTIFICATION_BYTES};
use crate::tools::cpu;
use orderflow::orders::EventScope;

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// The probe's own names on the broker.
struct Names {
    queue: String,
    exchange: String,
    watch: String,
}

/// RabbitMQ alone: checkouts published with confirms for 64 concurrent customers (several in one
/// message when they wait together, as intake sends them), consumed and acked, the service's
/// confirmed events per checkout, one routed to a watcher. Bounded in time (a
/// broker blocking publishers cannot hang it); its queues and exchange are deleted however it
/// ends.
pub(super) async fn run(c: &ProbeConfig) -> Result<Side, String> {
    let props = lapin::ConnectionProperties::default();
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        lapin::Connection::connect(&orderflow::messaging::first_node(&c.amqp_url), props),
    )
    .await
    .map_err(|_| "probe, RabbitMQ: no connection within 10 s".to_owned())?
    .map_err(|e| format!("probe, RabbitMQ: {e}"))?;
    let tag = Uuid::new_v4().simple().to_string();
    let names = Names {
        queue: format!("probe.checkout.{tag}"),
        exchange: format!("probe.events.{tag}"),
        watch: format!("probe.watch.{tag}"),
    };
    let limit = Duration::from_secs_f64(c.seconds) + Duration::from_secs(60);
    let result = tokio::time::timeout(limit, measure(c, &conn, &names))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "probe, RabbitMQ: not done within {} s (publishers blocked?)",
                limit.as_secs()
            ))
        });
    let cleaned = tokio::time::timeout(Duration::from_secs(10), async {
        let ch = conn.create_channel().await?;
        ch.queue_delete(names.queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
        ch.queue_delete(names.watch.as_str().into(), QueueDeleteOptions::default())
            .await?;
        ch.exchange_delete(
            names.exchange.as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
    })
    .await;
    if !matches!(cleaned, Ok(Ok(()))) {
        eprintln!(
            "probe: could not delete queue {} / exchange {}; delete them by hand",
            names.queue, names.exchange
        );
    }
    let _ =
        tokio::time::timeout(Duration::from_secs(5), conn.close(200, "probe done".into())).await;
    result
}

async fn measure(c: &ProbeConfig, conn: &lapin::Connection, names: &Names) -> Result<Side, String> {
    let admin = conn.create_channel().await.map_err(err)?;
    declare(&admin, names).await?;
    let publish = conn.create_channel().await.map_err(err)?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(err)?;
    let consume = conn.create_channel().await.map_err(err)?;
    consume
        .basic_qos(c.prefetch, BasicQosOptions::default())
        .await
        .map_err(err)?;
    let deliveries = consume
        .basic_consume(
            names.queue.as_str().into(),
            "probe".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(err)?;

    let counts = Counts {
        done: Arc::new(AtomicU64::new(0)),
        last_ack_us: Arc::new(AtomicU64::new(0)),
        t0: Instant::now(),
    };
    let started = cpu::read();
    let deadline = Instant::now() + Duration::from_secs_f64(c.seconds);
    let every_step = c.events == EventScope::All;
    let consumer = tokio::spawn(consume_and_announce(
        deliveries,
        publish.clone(),
        names.exchange.clone(),
        every_step,
        counts.clone(),
    ));
    publish_checkouts(c, &publish, &names.queue, deadline).await;
    drain(&admin, &names.queue, &counts.done).await;
    let used = started.until(&cpu::read());
    let orders = counts.done.load(Ordering::Relaxed);
    consumer.abort();
    let seconds = (counts.last_ack_us.load(Ordering::Relaxed) as f64 / 1e6).max(1e-9);
    Ok(Side {
        orders,
        per_second: orders as f64 / seconds,
        cpu: used,
    })
}

fn err(e: lapin::Error) -> String {
    format!("probe, RabbitMQ: {e}")
}

/// The probe's quorum queue and events exchange, and the watcher on `order.scheduled` (the load
/// generator's part: no acks), drained in the background.
async fn declare(admin: &lapin::Channel, names: &Names) -> Result<(), String> {
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    admin
        .queue_declare(names.queue.as_str().into(), durable, quorum)
        .await
        .map_err(err)?;
    admin
        .exchange_declare(
            names.exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(err)?;
    let mut watcher = crate::tools::driving::watch_queue(
        admin,
        &names.watch,
        &names.exchange,
        &["order.scheduled"],
    )
    .await
    .map_err(err)?;
    tokio::spawn(async move { while let Some(Ok(_)) = watcher.next().await {} });
    Ok(())
}

/// Checkouts consumed, and when the last delivery was acked (µs after `t0`: the clock stops
/// there).
#[derive(Clone)]
struct Counts {
    done: Arc<AtomicU64>,
    last_ack_us: Arc<AtomicU64>,
    t0: Instant,
}

/// The consumer: per checkout in a delivery, its confirmed events (not awaited before the ack,
/// as the service's are not); then one ack for the delivery.
async fn consume_and_announce(
    mut deliveries: lapin::Consumer,
    publish: lapin::Channel,
    exchange: String,
    every_step: bool,
    counts: Counts,
) {
    let all = [
        ("order.received", EVENT_BYTES),
        ("order.reserved", EVENT_BYTES),
        ("order.scheduled", EVENT_BYTES),
        ("notification.order_scheduled", NOTIFICATION_BYTES),
    ];
    let decision = [
        ("order.scheduled", EVENT_BYTES),
        ("notification.order_scheduled", NOTIFICATION_BYTES),
    ];
    let events: &[(&str, usize)] = if every_step { &all } else { &decision };
    while let Some(Ok(delivery)) = deliveries.next().await {
        let checkouts = (delivery.data.len() / CHECKOUT_BYTES).max(1);
        for _ in 0..checkouts {
            for &(key, size) in events {
                let (publish, exchange) = (publish.clone(), exchange.clone());
                tokio::spawn(async move {
                    if let Ok(confirm) = publish
                        .basic_publish(
                            exchange.as_str().into(),
                            key.into(),
                            BasicPublishOptions::default(),
                            &vec![b'e'; size],
                            persistent(),
                        )
                        .await
                    {
                        let _ = confirm.await;
                    }
                });
            }
        }
        if delivery.ack(BasicAckOptions::default()).await.is_ok() {
            counts.done.fetch_add(checkouts as u64, Ordering::Relaxed);
            let at = u64::try_from(counts.t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            counts.last_ack_us.fetch_max(at, Ordering::Relaxed);
        }
    }
}

/// 64 customers until `deadline`, each waiting for its checkout's confirm before the next (as
/// HTTP handlers do), and with a `rate` its next slot too; as intake does, at most `checkout_publishes` messages are out at once,
/// and the checkouts that wait meanwhile go out together (up to `checkout_batch` in one
/// message).
async fn publish_checkouts(
    c: &ProbeConfig,
    publish: &lapin::Channel,
    queue: &str,
    deadline: Instant,
) {
    let stop = Rc::new(AtomicBool::new(false));
    let waiting: Rc<std::cell::RefCell<Vec<tokio::sync::oneshot::Sender<bool>>>> = Rc::default();
    let wake = Rc::new(tokio::sync::Notify::new());
    let senders = (0..c.checkout_publishes.max(1)).map(|_| {
        let (publish, stop) = (publish.clone(), Rc::clone(&stop));
        let (waiting, wake) = (Rc::clone(&waiting), Rc::clone(&wake));
        let most = c.checkout_batch.max(1);
        async move {
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = {
                    let mut w = waiting.borrow_mut();
                    let n = w.len().min(most);
                    w.drain(..n).collect()
                };
                if batch.is_empty() {
                    let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
                    continue;
                }
                let body = vec![b'x'; CHECKOUT_BYTES * batch.len()];
                let confirmed = match publish
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        &body,
                        persistent(),
                    )
                    .await
                {
                    Ok(confirm) => confirm.await.is_ok(),
                    Err(_) => false,
                };
                for answer in batch {
                    let _ = answer.send(confirmed);
                }
            }
        }
    });
    // Paced (`rate` orders/s in all): each customer keeps its own schedule, one checkout every
    // 64 / rate s, starting at an offset of its own; one that falls behind does not catch up.
    let start = Instant::now();
    let every = (c.rate > 0.0).then(|| Duration::from_secs_f64(64.0 / c.rate));
    let customers = (0..64u32).map(|i| {
        let (waiting, wake) = (Rc::clone(&waiting), Rc::clone(&wake));
        async move {
            let mut next = every.map(|e| start + e.mul_f64(f64::from(i) / 64.0));
            while Instant::now() < deadline {
                if let (Some(at), Some(e)) = (next.as_mut(), every) {
                    if *at >= deadline {
                        return;
                    }
                    tokio::time::sleep_until((*at).into()).await;
                    *at = (*at + e).max(Instant::now());
                }
                let (answer, answered) = tokio::sync::oneshot::channel();
                waiting.borrow_mut().push(answer);
                wake.notify_one();
                if !matches!(answered.await, Ok(true)) {
                    return;
                }
            }
        }
    });
    let senders = futures_util::future::join_all(senders);
    let publishers = async {
        futures_util::future::join_all(customers).await;
        stop.store(true, Ordering::Relaxed);
    };
    futures_util::future::join(senders, publishers).await;
}

/// What was published is consumed before the clock stops: until the queue is empty and no ack
/// came for 50 ms (30 s at most).
async fn drain(admin: &lapin::Channel, queue: &str, done: &AtomicU64) {
    let drain_until = Instant::now() + Duration::from_secs(30);
    let mut last = done.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = done.load(Ordering::Relaxed);
        let queued = admin
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        if (queued == 0 && now == last) || Instant::now() > drain_until {
            break;
        }
        last = now;
    }
}
