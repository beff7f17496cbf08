//! What the load tools share (`loadgen`, the open loop, the arrivals, the limit probe, the
//! online demo): the run's catalog and buyers, their tokens and checkouts, and the watches on
//! the service — decisions from `order.events`, reservations and order statuses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::future::join_all;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};

use super::args::LoadgenConfig;

pub(super) fn sku_name(i: usize) -> String {
    format!("LG-{i:05}")
}

/// A checkout of one buyer. Every checkout is its own buyer (a flash sale's thousands of
/// customers, each within its rate limit), and the buyer's id names the order in the reports:
/// order ids are the service's secret until it answers.
pub(super) fn checkout_body(customer: &str, sku: &str) -> Value {
    json!({
        "customer_id": customer,
        "items": [{"sku": sku, "quantity": 1}],
        "payment": {"method": "pix"},
        "shipping_address": {"recipient": "Load Test", "street": "Rua do Teste", "number": "1",
                             "city": "São Paulo", "state": "SP", "postal_code": "01001-000", "country": "BR"},
        "delivery_method": "standard"
    })
}

pub(super) async fn setup(client: &awc::Client, c: &LoadgenConfig) -> Result<(), String> {
    let token = c
        .admin_token
        .clone()
        .ok_or("setup needs ADMIN_TOKEN (or pass --no-setup)")?;
    let auth = ("Authorization", format!("Bearer {token}"));
    let mut products: Vec<(String, i64)> = vec![("LG-HOT".into(), c.hot_stock())];
    if c.hot_share < 1.0 {
        let per_sku = ((c.orders as f64 * (1.0 - c.hot_share)) / c.skus as f64).ceil() as i64 + 5;
        products.extend((0..c.skus).map(|i| (sku_name(i), per_sku)));
    }
    let chunks: Vec<Vec<(String, i64)>> = products
        .chunks(products.len().div_ceil(32).max(1))
        .map(|c| c.to_vec())
        .collect();
    let results = join_all(chunks.into_iter().map(|chunk| {
        let (client, auth, url) = (client.clone(), auth.clone(), c.url.clone());
        async move {
            for (sku, stock) in chunk {
                let p = client
                    .put(format!("{url}/v1/products/{sku}"))
                    .insert_header(auth.clone())
                    .send_json(&json!({"name": format!("Load {sku}"), "category": "loadgen", "tags": ["load"], "price_cents": 1990}))
                    .await
                    .map_err(|e| e.to_string())?;
                if !p.status().is_success() {
                    return Err(format!("PUT product {sku}: {}", p.status()));
                }
                // On top of what earlier runs still hold reserved.
                let held = reserved_of(&client, &url, &sku).await.unwrap_or(0);
                let s = client
                    .put(format!("{url}/v1/inventory/{sku}"))
                    .insert_header(auth.clone())
                    .send_json(&json!({"on_hand": held + stock}))
                    .await
                    .map_err(|e| e.to_string())?;
                if !s.status().is_success() {
                    return Err(format!("PUT inventory {sku}: {}", s.status()));
                }
            }
            Ok::<(), String>(())
        }
    }))
    .await;
    results.into_iter().collect()
}

/// An exclusive queue (`name`, or one the broker names when empty) bound to `exchange` with
/// `keys`, consumed without acks: how the load generator and the limit probe watch events.
pub(super) async fn watch_queue(
    ch: &lapin::Channel,
    name: &str,
    exchange: &str,
    keys: &[&str],
) -> Result<lapin::Consumer, lapin::Error> {
    let q = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in keys {
        ch.queue_bind(
            q.name().clone(),
            exchange.into(),
            (*key).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.basic_consume(
        q.name().clone(),
        "watch".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

/// A customer token for a buyer of the run (signed with `AUTH_JWT_SECRET`).
pub(super) fn token_for(c: &LoadgenConfig, customer: &str) -> String {
    let token = c
        .customer_secret
        .as_ref()
        .and_then(|s| {
            orderflow::auth::customer::issue_token(
                s,
                customer,
                Duration::from_secs(3600),
                c.issuer.as_deref(),
                c.audience.as_deref(),
            )
            .ok()
        })
        .unwrap_or_default();
    format!("Bearer {token}")
}

/// The SKU of the next checkout: the hot one with `hot_share`'s chance, else one of `skus`
/// uniformly (a xorshift step of `rng`, so a run's sequence repeats).
pub(super) fn next_sku(rng: &mut u64, c: &LoadgenConfig) -> String {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    if (*rng % 10_000) as f64 / 10_000.0 < c.hot_share {
        "LG-HOT".to_owned()
    } else {
        sku_name((*rng >> 16) as usize % c.skus.max(1))
    }
}

/// Decision times (by the buyer, one per order) as `order.events` announces them.
pub(super) async fn watch_decisions(amqp_url: &str, decided: Decided) -> Result<(), String> {
    // No heartbeats: a load generator saturating its own thread must not lose this connection
    // (and every decision after it) to a missed heartbeat.
    let node = orderflow::messaging::first_node(amqp_url);
    let mut url = url::Url::parse(&node).map_err(|e| format!("AMQP URL: {e}"))?;
    url.query_pairs_mut().append_pair("heartbeat", "0");
    let conn = lapin::Connection::connect(url.as_str(), lapin::ConnectionProperties::default())
        .await
        .map_err(|e| format!("AMQP {}: {e}", orderflow::messaging::redact(&node)))?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    let mut consumer = watch_queue(
        &ch,
        "",
        "order.events",
        &["order.scheduled", "order.rejected", "order.failed"],
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _keep = conn;
        while let Some(Ok(d)) = consumer.next().await {
            let now = Instant::now();
            if let Ok(order) = serde_json::from_slice::<Value>(&d.data) {
                if let (Some(customer), Some(status)) = (
                    order.get("customer_id").and_then(Value::as_str),
                    order.get("status").and_then(Value::as_str),
                ) {
                    decided
                        .entry(customer.to_owned())
                        .or_insert((now, status.to_owned()));
                }
            }
        }
    });
    Ok(())
}

pub(super) async fn reserved_of(client: &awc::Client, url: &str, sku: &str) -> Option<i64> {
    let mut r = client
        .get(format!("{url}/v1/inventory/{sku}"))
        .send()
        .await
        .ok()?;
    r.json::<Value>().await.ok()?.get("reserved")?.as_i64()
}

/// Decisions as `order.events` announces them: the buyer (one per order), when, and the status.
pub(super) type Decided = Arc<DashMap<String, (Instant, String)>>;

/// Decisions as `order.events` announces them, the SKUs the run uses, and what each had
/// reserved before it (for the consistency check).
pub(super) type Watch = (Decided, Vec<String>, HashMap<String, i64>);

/// Starts watching decisions and reads the SKUs' reservations before the run.
pub(super) async fn watch(client: &awc::Client, c: &LoadgenConfig) -> Result<Watch, String> {
    let decided: Decided = Arc::new(DashMap::new());
    watch_decisions(&c.amqp_url, Arc::clone(&decided)).await?;
    let mut skus_used: Vec<String> = vec!["LG-HOT".into()];
    if c.hot_share < 1.0 {
        skus_used.extend((0..c.skus).map(sku_name));
    }
    let mut before = HashMap::new();
    for sku in &skus_used {
        before.insert(
            sku.clone(),
            reserved_of(client, &c.url, sku).await.unwrap_or(0),
        );
    }
    Ok((decided, skus_used, before))
}

/// The status of a buyer's order, asked with the buyer's own token.
pub(super) async fn order_status(
    client: &awc::Client,
    c: &LoadgenConfig,
    customer: &str,
) -> Option<String> {
    let mut r = client
        .get(format!("{}/v1/customers/me/orders", c.url))
        .insert_header(("Authorization", token_for(c, customer)))
        .send()
        .await
        .ok()?;
    let body: Value = r.json().await.ok()?;
    body.get("data")?
        .get(0)?
        .get("status")?
        .as_str()
        .map(str::to_owned)
}

/// Sends a checkout and reads its answer to the end, as a storefront does (the 202 carries the
/// order's id): awc closes a connection whose answer was left unread, so skipping it would
/// cost a TCP connection per order, which no real client pays. The status (0 when none came)
/// and `Retry-After` in seconds.
pub(super) async fn send_checkout(
    client: &awc::Client,
    url: &str,
    key: &str,
    token: &str,
    body: &Value,
) -> (u16, Option<u64>) {
    let sent = client
        .post(format!("{url}/v1/checkout"))
        .insert_header(("Idempotency-Key", key))
        .insert_header(("Authorization", token))
        .send_json(body)
        .await;
    let answered = answer(&sent);
    if let Ok(response) = sent {
        // awc's request time-out ends with the headers: the body gets its own.
        let _ = response
            .timeout(Duration::from_secs(30))
            .body()
            .limit(64 * 1024)
            .await;
    }
    answered
}

/// A checkout's answer: the status (0 when none came) and `Retry-After` in seconds.
pub(super) fn answer<S>(
    sent: &Result<awc::ClientResponse<S>, awc::error::SendRequestError>,
) -> (u16, Option<u64>) {
    match sent {
        Ok(r) => (
            r.status().as_u16(),
            r.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok()),
        ),
        Err(_) => (0, None),
    }
}

/// The units each SKU's `reserved` grew by since `before`, against what was sold of it:
/// `(every SKU's matches, units taken in all)`.
pub(super) async fn stock_taken(
    client: &awc::Client,
    url: &str,
    skus: &[String],
    before: &HashMap<String, i64>,
    sold: &HashMap<String, i64>,
) -> (bool, i64) {
    let (mut ok, mut total) = (true, 0i64);
    for sku in skus {
        let after = reserved_of(client, url, sku).await.unwrap_or(-1);
        let taken = after - before.get(sku).copied().unwrap_or(0);
        total += taken;
        if taken != sold.get(sku).copied().unwrap_or(0) {
            ok = false;
        }
    }
    (ok, total)
}

/// The load tools' HTTP client: at most `connections` at once, 30 s per request. Connections
/// are kept between requests, but only while younger than the service's idle limit (actix-web
/// closes a connection idle for 5 s): one kept longer fails the next request sent on it, as
/// after the limit probe's seconds.
pub(super) fn http_client(connections: usize) -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .connector(
            awc::Connector::new()
                .limit(connections)
                .conn_keep_alive(Duration::from_secs(2)),
        )
        .finish()
}
