//! The service process SIGKILLed in the middle of a stream of writes: after a restart every
//! change that was reported durable is there, and nothing is half there.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::json;

use crate::helpers::{TestDb, TestVhost, ADMIN_TOKEN};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn start_service(db: &TestDb, vhost: &TestVhost, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("AMQP_URL", &vhost.url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start orderflow")
}

pub async fn wait_ready(client: &awc::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(resp) = client.get(format!("{base}/health/ready")).send().await {
            if resp.status().as_u16() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("orderflow at {base} did not become ready");
}

#[actix_web::test]
async fn sigkill_mid_stream_loses_nothing_that_was_reported_durable() {
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let auth = ("Authorization", format!("Bearer {ADMIN_TOKEN}"));

    let mut child = start_service(&db, &vhost, port);
    wait_ready(&client, &base).await;
    let created = client
        .put(format!("{base}/v1/products/KILL-1"))
        .insert_header(auth.clone())
        .send_json(&json!({"name": "k", "category": "c", "price_cents": 1}))
        .await
        .expect("create product");
    assert_eq!(created.status().as_u16(), 201);

    let acked = Arc::new(AtomicI64::new(0));
    let unknown = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (client, base, auth) = (client.clone(), base.clone(), auth.clone());
            let (acked, unknown, stop) = (acked.clone(), unknown.clone(), stop.clone());
            actix_web::rt::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let sent = client
                        .post(format!("{base}/v1/inventory/KILL-1/adjustments"))
                        .insert_header(auth.clone())
                        .send_json(&json!({"delta": 1, "reason": "restock"}))
                        .await;
                    match sent {
                        Ok(resp) if resp.status().as_u16() == 200 => {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {
                            // No answer: it may or may not have been applied.
                            unknown.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.load(Ordering::SeqCst) < 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.load(Ordering::SeqCst);
    let unknown = unknown.load(Ordering::SeqCst);
    assert!(
        acked >= 400,
        "the stream was running when the process died ({acked} acked)"
    );

    // Restart on the same database.
    let mut child = start_service(&db, &vhost, port);
    wait_ready(&client, &base).await;
    let mut resp = client
        .get(format!("{base}/v1/inventory/KILL-1"))
        .send()
        .await
        .expect("read stock");
    let stock: serde_json::Value = resp.json().await.expect("json");
    let on_hand = stock["on_hand"].as_i64().expect("on_hand");
    assert!(
        on_hand >= acked && on_hand <= acked + unknown,
        "on_hand {on_hand}: acked {acked}, unanswered {unknown}"
    );

    // Nothing half there: the stock row and its change log moved together.
    let (db_on_hand, _, version) = db.stock("KILL-1");
    assert_eq!(
        db_on_hand, on_hand,
        "memory after restart equals the database"
    );
    assert_eq!(db.event_count("KILL-1"), version);
    use orderflow::persistence::schema::stock_events::dsl as ev;
    let logged: Option<i64> = ev::stock_events
        .filter(ev::sku.eq("KILL-1"))
        .select(diesel::dsl::max(ev::on_hand))
        .first(&mut db.conn())
        .expect("log");
    assert_eq!(logged, Some(on_hand));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}
