//! A load of checkouts for the fault tests, and the checks every fault test ends with: every
//! checkout answered 202 is decided exactly once, the hot SKU sold exactly what it could, every
//! accepted order of an SKU with stock to spare is scheduled, the books balance, and memory
//! agrees with the database.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::checkout::body;
use crate::helpers::{sql_i64, TestDb, ADMIN_TOKEN};

/// A checkout a worker sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: String,
    pub sku: String,
    /// When the first attempt left, and when the answer that counted came.
    pub started: Instant,
    pub answered: Instant,
}

/// What became of the requests.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answered 202 (or 200 for a key already accepted).
    pub accepted: Vec<Sent>,
    /// No answer, or a 5xx: it may or may not have been accepted.
    pub unknown: Vec<Sent>,
    pub statuses: HashMap<u16, usize>,
}

/// Concurrent customers sending single-unit checkouts, round-robin over `skus`, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<actix_web::rt::task::JoinHandle<()>>,
    tally: Arc<Mutex<Tally>>,
}

impl Load {
    pub fn start(
        client: &awc::Client,
        base: &str,
        workers: usize,
        prefix: &str,
        skus: &[&str],
    ) -> Load {
        Load::start_many(client, &[base.to_owned()], workers, prefix, skus)
    }

    /// Like [`Load::start`] over several instances behind a (client-side) load balancer: a
    /// request that finds no one (connection refused) or a standby (503) goes to the next
    /// instance, as a load balancer routing by `/health/ready` would send it; only the answer of
    /// an instance that took it counts.
    pub fn start_many(
        client: &awc::Client,
        bases: &[String],
        workers: usize,
        prefix: &str,
        skus: &[&str],
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally: Arc<Mutex<Tally>> = Arc::default();
        let skus: Vec<String> = skus.iter().map(|s| s.to_string()).collect();
        let workers = (0..workers)
            .map(|w| {
                let (client, bases, stop, tally, skus) = (
                    client.clone(),
                    bases.to_vec(),
                    stop.clone(),
                    tally.clone(),
                    skus.clone(),
                );
                let prefix = prefix.to_owned();
                actix_web::rt::spawn(async move {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let sku = skus[(w + n) % skus.len()].clone();
                        let key = format!("{prefix}-{w}-{n}");
                        let body = body(
                            &format!("{prefix}-c{w}"),
                            json!([{"sku": sku, "quantity": 1}]),
                        );
                        let started = Instant::now();
                        let mut target = w % bases.len();
                        let mut sent;
                        let mut tries = 0;
                        loop {
                            tries += 1;
                            sent = client
                                .post(format!("{}/v1/checkout", bases[target]))
                                .timeout(Duration::from_secs(15))
                                .insert_header(("Idempotency-Key", key.as_str()))
                                .send_json(&body)
                                .await
                                .map(|r| r.status().as_u16());
                            // A transport error that is not a time-out (refused, or a
                            // kept-alive connection the stopping server closed under the
                            // request) is sent again with the same key, as a client does.
                            let elsewhere = match &sent {
                                Err(awc::error::SendRequestError::Timeout) => false,
                                Err(_) => true,
                                Ok(503) => bases.len() > 1,
                                _ => false,
                            };
                            if !elsewhere || tries > 200 {
                                break;
                            }
                            target = (target + 1) % bases.len();
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                        let s = Sent {
                            key,
                            sku,
                            started,
                            answered: Instant::now(),
                        };
                        let failed = {
                            let mut t = tally.lock().unwrap();
                            match sent {
                                Ok(status) => {
                                    *t.statuses.entry(status).or_default() += 1;
                                    match status {
                                        200 | 202 => t.accepted.push(s),
                                        500..=599 => t.unknown.push(s),
                                        _ => {}
                                    }
                                    false
                                }
                                Err(_) => {
                                    *t.statuses.entry(0).or_default() += 1;
                                    t.unknown.push(s);
                                    true
                                }
                            }
                        };
                        if failed {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            workers,
            tally,
        }
    }

    /// The answers so far, by status (0: no answer).
    pub fn statuses(&self) -> HashMap<u16, usize> {
        self.tally.lock().unwrap().statuses.clone()
    }

    pub fn accepted(&self) -> usize {
        self.tally.lock().unwrap().accepted.len()
    }

    /// Waits until at least `n` checkouts were accepted (60 s at most).
    pub async fn until_accepted(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.accepted() < n {
            assert!(
                Instant::now() < deadline,
                "only {} accepted",
                self.accepted()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The first checkout sent after `t` that was accepted, once there is one (60 s at most).
    pub async fn first_accepted_after(&self, t: Instant) -> Sent {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let first = {
                let tally = self.tally.lock().unwrap();
                tally
                    .accepted
                    .iter()
                    .filter(|s| s.started >= t)
                    .min_by_key(|s| s.answered)
                    .cloned()
            };
            if let Some(first) = first {
                return first;
            }
            assert!(Instant::now() < deadline, "nothing accepted in 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        Arc::try_unwrap(self.tally)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

/// Creates products with stock through the admin API, asserting each reply.
pub async fn stock_up(client: &awc::Client, base: &str, products: &[(&str, i64)]) {
    let auth = ("Authorization", format!("Bearer {ADMIN_TOKEN}"));
    for (sku, stock) in products {
        let mut r = client
            .put(format!("{base}/v1/products/{sku}"))
            .insert_header(auth.clone())
            .send_json(&json!({"name": sku, "category": "c", "price_cents": 100}))
            .await
            .expect("create product");
        assert!(
            matches!(r.status().as_u16(), 200 | 201),
            "{:?}",
            r.body().await
        );
        let mut r = client
            .put(format!("{base}/v1/inventory/{sku}"))
            .insert_header(auth.clone())
            .send_json(&json!({"on_hand": stock}))
            .await
            .expect("set stock");
        assert_eq!(r.status().as_u16(), 200, "{:?}", r.body().await);
    }
}

pub async fn get_json(client: &awc::Client, url: &str) -> Option<(u16, Value)> {
    let mut resp = client.get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().limit(1 << 22).await.ok()?;
    Some((status, body))
}

/// Waits until the order is decided (`within`); returns it.
pub async fn decided(
    client: &awc::Client,
    base: &str,
    db: &TestDb,
    key: &str,
    within: Duration,
) -> Value {
    let id = crate::helpers::wait_order_of_key_within(db, key, within).await;
    let url = format!("{base}/v1/orders/{id}");
    let deadline = Instant::now() + within;
    loop {
        if let Some((200, o)) = get_json(client, &url).await {
            if matches!(
                o["status"].as_str(),
                Some("scheduled" | "rejected" | "failed" | "cancelled")
            ) {
                return o;
            }
        }
        assert!(
            Instant::now() < deadline,
            "order {key} accepted with 202 was never decided"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every accepted order decided exactly once; the hot SKU (`hot`, with `hot_stock` units) sold
/// exactly what it could; every accepted order of another SKU scheduled; no order left
/// undecided or holding released stock; every SKU's reserved units held by its orders; memory
/// equal to the database.
pub async fn verify(
    client: &awc::Client,
    base: &str,
    db: &TestDb,
    tally: &Tally,
    hot: (&str, i64),
    skus: &[&str],
) {
    let mut seen = HashSet::new();
    for sent in &tally.accepted {
        if !seen.insert(sent.key.clone()) {
            continue;
        }
        let order = decided(client, base, db, &sent.key, Duration::from_secs(90)).await;
        let history: Vec<&str> = order["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap())
            .collect();
        let unique: HashSet<&&str> = history.iter().collect();
        assert_eq!(unique.len(), history.len(), "a status twice: {history:?}");
        let decisions = history
            .iter()
            .filter(|s| matches!(**s, "scheduled" | "rejected" | "failed"))
            .count();
        assert_eq!(decisions, 1, "decided once: {history:?}");
        if sent.sku != hot.0 {
            assert_eq!(
                order["status"], "scheduled",
                "{} has stock to spare: {order}",
                sent.sku
            );
        }
    }
    // Orders whose answer was lost in the fault are decided too (they are in the database).
    for _ in 0..600 {
        if sql_i64(
            db,
            "SELECT count(*) AS n FROM orders WHERE status IN ('received', 'reserved')",
        ) == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hot_orders = sql_i64(
        db,
        &format!(
            "SELECT count(*) AS n FROM orders WHERE items->0->>'sku' = '{}'",
            hot.0
        ),
    );
    let hot_sold = sql_i64(db, &format!(
        "SELECT count(*) AS n FROM orders WHERE status = 'scheduled' AND items->0->>'sku' = '{}'", hot.0));
    let accepted_hot = tally
        .accepted
        .iter()
        .filter(|s| s.sku == hot.0)
        .map(|s| &s.key)
        .collect::<HashSet<_>>()
        .len() as i64;
    assert!(
        hot_orders >= accepted_hot,
        "every accepted hot order is an order ({hot_orders} < {accepted_hot})"
    );
    assert_eq!(
        hot_sold,
        hot.1.min(hot_orders),
        "hot sku sold min(stock {}, orders {hot_orders})",
        hot.1
    );
    db.assert_books_balance();
    for sku in skus {
        let (status, inventory) = get_json(client, &format!("{base}/v1/inventory/{sku}"))
            .await
            .expect("inventory");
        assert_eq!(status, 200);
        let (on_hand, reserved, version) = db.stock(sku);
        assert_eq!(
            (
                inventory["on_hand"].as_i64(),
                inventory["reserved"].as_i64(),
                inventory["version"].as_i64()
            ),
            (Some(on_hand), Some(reserved), Some(version)),
            "GET /v1/inventory/{sku} equals the database row"
        );
        assert_eq!(inventory["available"].as_i64(), Some(on_hand - reserved));
    }
}
