//! The service process SIGKILLed in the middle of a stream of writes: after a restart every
//! change that was reported durable is there, and nothing is half there.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::json;

use crate::helpers::{http_client, Service, TestDb, TestVhost, ADMIN_TOKEN};

#[actix_web::test]
async fn sigkill_mid_stream_loses_nothing_that_was_reported_durable() {
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    let auth = ("Authorization", format!("Bearer {ADMIN_TOKEN}"));

    let mut service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    let base = service.base.clone();
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
    service.kill();
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
    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    let mut resp = client
        .get(service.url("/v1/inventory/KILL-1"))
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
}
