//! Fault tests of the checkout pipeline: the process killed mid-load, the broker connection cut.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::checkout::body;
use crate::crash::{free_port, start_service, wait_ready};
use crate::helpers::{spawn_app_with, Proxy, TestDb, TestVhost, ADMIN_TOKEN};

async fn get_json(client: &awc::Client, url: &str) -> Option<(u16, Value)> {
    let mut resp = client.get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().limit(1 << 22).await.ok()?;
    Some((status, body))
}

#[actix_web::test]
async fn sigkill_mid_load_every_accepted_order_is_decided_once_and_nothing_oversold() {
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
    for (sku, stock) in [("K-HOT", 120), ("K-COLD", 1000)] {
        client
            .put(format!("{base}/v1/products/{sku}"))
            .insert_header(auth.clone())
            .send_json(&json!({"name": sku, "category": "c", "price_cents": 100}))
            .await
            .unwrap();
        client
            .put(format!("{base}/v1/inventory/{sku}"))
            .insert_header(auth.clone())
            .send_json(&json!({"on_hand": stock}))
            .await
            .unwrap();
    }

    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..24)
        .map(|w| {
            let (client, base, accepted, stop) =
                (client.clone(), base.clone(), accepted.clone(), stop.clone());
            actix_web::rt::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sku = if n % 2 == 0 { "K-HOT" } else { "K-COLD" };
                    let key = format!("kill-{w}-{n}");
                    let sent = client
                        .post(format!("{base}/v1/checkout"))
                        .insert_header(("Idempotency-Key", key.as_str()))
                        .send_json(&body(
                            &format!("kc-{w}"),
                            json!([{"sku": sku, "quantity": 1}]),
                        ))
                        .await;
                    match sent {
                        Ok(r) if r.status().as_u16() == 202 => accepted.lock().unwrap().push(key),
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() >= 300,
        "load was running ({} accepted)",
        accepted.len()
    );

    let mut child = start_service(&db, &vhost, port);
    wait_ready(&client, &base).await;
    let mut scheduled_hot = 0;
    for key in &accepted {
        let id = orderflow::orders::order_id_for(key);
        let url = format!("{base}/v1/orders/{id}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let order = loop {
            if let Some((200, o)) = get_json(&client, &url).await {
                if matches!(
                    o["status"].as_str(),
                    Some("scheduled" | "rejected" | "failed" | "cancelled")
                ) {
                    break o;
                }
            }
            assert!(
                Instant::now() < deadline,
                "order {key} accepted with 202 was never decided"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
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
        if order["status"] == "scheduled" && order["items"][0]["sku"] == "K-HOT" {
            scheduled_hot += 1;
        }
    }
    // Books balance: what the scheduled orders hold is exactly what is reserved, never more
    // than the stock — counting every order in the database, answered or not.
    let (on_hand, reserved, _) = db.stock("K-HOT");
    assert!(reserved <= on_hand);
    assert!(scheduled_hot <= 120);
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-Atc",
            "SELECT count(*) FROM orders WHERE status = 'scheduled' AND items->0->>'sku' = 'K-HOT'",
            &db.name,
        ])
        .output()
        .unwrap();
    let all_scheduled_hot: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(
        reserved, all_scheduled_hot,
        "reserved units = scheduled orders"
    );
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

#[actix_web::test]
async fn broker_cut_mid_load_intake_says_503_and_nothing_accepted_is_lost() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let proxied = proxy.addr.to_string();
    let app = spawn_app_with(TestDb::new(), |c| {
        c.amqp_url = c.amqp_url.replace("127.0.0.1:5672", &proxied)
    })
    .await;
    app.product("BC-1", "c", &[], 100, 1000).await;

    let mut accepted = Vec::new();
    for i in 0..40 {
        let r = app
            .checkout(
                &format!("bc-before-{i}"),
                &body("bc", json!([{"sku": "BC-1", "quantity": 1}])),
            )
            .await;
        assert_eq!(r.status, 202);
        accepted.push(r.body["order_id"].as_str().unwrap().to_owned());
    }
    proxy.cut();
    let started = Instant::now();
    let refused = app
        .checkout(
            "bc-during",
            &body("bc", json!([{"sku": "BC-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "unavailable");
    assert!(refused.retry_after.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a clear answer, not a hang"
    );
    let missing = app
        .get(&format!(
            "/v1/orders/{}",
            orderflow::orders::order_id_for("bc-during")
        ))
        .await;
    assert_eq!(missing.status, 404, "nothing half-accepted");

    proxy.restore();
    let mut back = None;
    for i in 0..100 {
        let r = app
            .checkout(
                &format!("bc-after-{i}"),
                &body("bc", json!([{"sku": "BC-1", "quantity": 1}])),
            )
            .await;
        if r.status == 202 {
            back = Some(r.body["order_id"].as_str().unwrap().to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    accepted.push(back.expect("intake works again once the broker is back"));
    for id in &accepted {
        assert_eq!(app.decided(id).await["status"], "scheduled", "{id}");
    }
    assert_eq!(app.db.stock("BC-1").1, accepted.len() as i64);
    app.stop().await;
}
