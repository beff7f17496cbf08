//! Intake's checkouts that wait for the broker together go out as one message (issue 19, item
//! 4): each is decided as if it had travelled alone; what cannot be acknowledged leaves the
//! batch alone (a dead letter of one checkout, a hand-back of one checkout); a process killed
//! after deciding a batch and before its ack decides nothing twice.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::checkout::body;
use crate::helpers::{
    amqp_addr, http_client, order_of_key, pg_addr, settle_depth, spawn_app,
    spawn_app_for_handbacks, spawn_app_with, sql_i64, tokenized, Proxy, Service, TestApp, TestDb,
    TestVhost,
};
use crate::load::{decided, stock_up};
use orderflow::messaging::checkout::{Batch, Stamped};

/// One of intake's checkouts as it waits for a batch: the canonical body of `body`, a card as
/// its token.
fn stamped(key: &str, body: &Value) -> Stamped {
    Stamped {
        key: key.into(),
        order_id: uuid::Uuid::new_v4(),
        fingerprint: format!("fp-{key}"),
        judged_at: u64::try_from(chrono::Utc::now().timestamp()).unwrap(),
        accepted_ms: chrono::Utc::now().timestamp_millis(),
        traceparent: None,
        body: body.to_string(),
    }
}

/// A batch published as the service's own intake would (the tests connect as the service's
/// user, so the broker stamps it as the service's).
async fn publish_batch(broker: &orderflow::messaging::Broker, checkouts: Vec<Stamped>) {
    let (data, props) = Batch { checkouts }.message();
    broker
        .publish("orders", "checkout", &data, props)
        .await
        .expect("published");
}

fn checkout_queue(app: &TestApp) -> (u64, u64) {
    let monitor = app.app_state.broker().monitor();
    let c = monitor
        .queue("orders.checkout")
        .expect("the checkout queue");
    (
        c.confirmed.load(Ordering::Relaxed),
        c.delivered.load(Ordering::Relaxed),
    )
}

#[actix_web::test]
async fn checkouts_waiting_together_go_out_as_one_message_and_each_is_decided_once() {
    // One publish out at a time: whatever arrives meanwhile waits, and goes out together.
    let app = spawn_app_with(TestDb::new(), |c| c.checkout_publishes = 1).await;
    app.product("BT-1", "c", &[], 100, 30).await;
    let sent = 48;
    let replies = futures_util::future::join_all((0..sent).map(|i| {
        let app = &app;
        async move {
            let b = body(&format!("bt-{i}"), json!([{"sku": "BT-1", "quantity": 1}]));
            app.checkout(&format!("bt-key-{i}"), &b).await
        }
    }))
    .await;
    let mut accepted = Vec::new();
    for r in &replies {
        match r.status {
            202 => accepted.push(r.body["order_id"].as_str().unwrap().to_owned()),
            409 => assert_eq!(r.body["error"]["code"], "out_of_stock", "{}", r.body),
            other => panic!("{other}: {}", r.body),
        }
    }
    let mut scheduled = 0;
    for id in &accepted {
        let order = app.decided(id).await;
        match order["status"].as_str() {
            Some("scheduled") => scheduled += 1,
            Some("rejected") => {}
            other => panic!("{other:?}: {order}"),
        }
    }
    assert_eq!(scheduled, 30, "every unit sold, none twice");
    let (messages, _) = checkout_queue(&app);
    assert!(
        messages < accepted.len() as u64,
        "{} checkouts accepted in {messages} messages",
        accepted.len()
    );
    let (on_hand, reserved, _) = app.db.stock("BT-1");
    assert_eq!((on_hand, reserved), (30, 30), "every unit reserved once");
    assert_eq!(
        sql_i64(&app.db, "SELECT count(*) AS n FROM orders"),
        accepted.len() as i64,
        "one order per accepted checkout"
    );
    app.db.assert_books_balance();
    assert_eq!(
        settle_depth(&app.vhost, "orders.checkout", (0, 0)).await,
        (0, 0)
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_checkout_that_cannot_be_processed_leaves_its_batch_alone_as_its_own_dead_letter() {
    let app = spawn_app().await;
    app.product("BD-1", "c", &[], 100, 10).await;
    let good = tokenized(&body("bd", json!([{"sku": "BD-1", "quantity": 1}])));
    let with_card = body("bd", json!([{"sku": "BD-1", "quantity": 1}]));
    let checkouts = vec![
        stamped("bd-good-1", &good),
        Stamped {
            body: "{\"half\": ".into(),
            ..stamped("bd-garbage", &Value::Null)
        },
        stamped("bd-card", &with_card),
        stamped("bd-good-2", &good),
    ];
    let ids: Vec<String> = [&checkouts[0], &checkouts[3]]
        .iter()
        .map(|c| c.order_id.to_string())
        .collect();
    publish_batch(app.app_state.broker(), checkouts).await;
    for id in &ids {
        assert_eq!(app.decided(id).await["status"], "scheduled");
    }
    let mut letters = Vec::new();
    for _ in 0..2 {
        letters.push(app.dead_letter_with_id("orders.checkout.dead").await);
    }
    letters.sort_by(|a, b| a.0.cmp(&b.0));
    let (card_key, card_body, card_reason) = &letters[0];
    assert_eq!(card_key, "bd-card");
    assert!(
        card_reason.starts_with("card_data_refused"),
        "{card_reason}"
    );
    assert!(
        !card_body.contains("4242424242424242") && !card_body.contains("\"123\""),
        "the dead letter keeps no card data: {card_body}"
    );
    let (garbage_key, garbage_body, garbage_reason) = &letters[1];
    assert_eq!(garbage_key, "bd-garbage");
    assert!(
        garbage_reason.starts_with("body is not JSON"),
        "{garbage_reason}"
    );
    assert_eq!(garbage_body, "{\"half\": ", "the checkout, not its batch");
    // Nothing else: no copy of the batch, and the batch itself acknowledged.
    assert_eq!(
        settle_depth(&app.vhost, "orders.checkout.dead", (0, 0)).await,
        (0, 0)
    );
    assert_eq!(
        settle_depth(&app.vhost, "orders.checkout", (0, 0)).await,
        (0, 0)
    );
    assert_eq!(app.db.stock("BD-1").1, 2, "two units reserved");
    app.db.assert_books_balance();
    app.stop().await;
}

/// Transient trouble for one checkout of a batch: it goes back alone, its hand-backs counted
/// from there, as the same checkout alone would (issue 19, item 7: capped).
#[actix_web::test]
async fn the_checkouts_of_a_batch_are_handed_back_alone_and_capped_like_any_other() {
    let proxy = Proxy::start(pg_addr());
    let app = spawn_app_for_handbacks(&proxy).await;
    app.product("BH-1", "c", &[], 100, 10).await;
    proxy.cut();
    let b = tokenized(&body("bh", json!([{"sku": "BH-1", "quantity": 1}])));
    let started = Instant::now();
    publish_batch(
        app.app_state.broker(),
        vec![stamped("bh-1", &b), stamped("bh-2", &b)],
    )
    .await;
    let mut letters = Vec::new();
    for _ in 0..2 {
        letters.push(app.dead_letter_with_id("orders.checkout.dead").await);
    }
    letters.sort_by(|a, b| a.0.cmp(&b.0));
    for ((key, body, reason), expected) in letters.iter().zip(["bh-1", "bh-2"]) {
        assert_eq!(key, expected);
        assert!(reason.contains("handed back 2 times"), "{reason}");
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap(),
            b,
            "the checkout alone"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "three retry windows each (in the batch, then two copies alone): {:?}",
        started.elapsed()
    );
    proxy.restore();
    app.db.assert_books_balance();
    app.stop().await;
}

/// kill -9 after every checkout of a batch is decided and before the batch is acknowledged: the
/// batch comes back whole, and each of its orders is found decided — none decided twice, no
/// unit reserved twice.
#[actix_web::test]
async fn a_process_killed_after_deciding_a_batch_and_before_its_ack_decides_nothing_twice() {
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    stock_up(&client, &service.base, &[("BK-1", 10)]).await;
    drop(service);
    let mut dying = Service::start(
        &db.url,
        &vhost.url,
        &[("ORDERFLOW_FAULT_ABORT_BEFORE_ACK", "1")],
    );
    dying.ready(&client).await;
    let broker = orderflow::messaging::Broker::connect(
        &vhost.url,
        Default::default(),
        std::sync::Arc::new(orderflow::monitor::Monitor::new()),
    )
    .await
    .expect("broker");
    let b = tokenized(&body("bk", json!([{"sku": "BK-1", "quantity": 2}])));
    let keys = ["bk-1", "bk-2", "bk-3"];
    publish_batch(&broker, keys.iter().map(|k| stamped(k, &b)).collect()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dying.log().contains("aborting after a commit") {
        assert!(Instant::now() < deadline, "never aborted: {}", dying.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dying.wait_exit(Duration::from_secs(10)).await);
    let decided_before = sql_i64(
        &db,
        "SELECT count(*) AS n FROM orders WHERE status = 'scheduled'",
    );
    assert_eq!(decided_before, 3, "all three decided before the abort");

    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    for key in keys {
        let order = decided(&client, &service.base, &db, key, Duration::from_secs(30)).await;
        assert_eq!(order["status"], "scheduled", "{order}");
        let steps: Vec<&str> = order["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["status"].as_str())
            .collect();
        assert_eq!(
            steps.iter().filter(|s| **s == "scheduled").count(),
            1,
            "decided once: {steps:?}"
        );
        assert!(order_of_key(&db, key).is_some());
    }
    // The redelivered batch was acknowledged this time.
    assert_eq!(
        settle_depth(&vhost, "orders.checkout", (0, 0)).await,
        (0, 0)
    );
    assert_eq!(
        db.stock("BK-1").1,
        6,
        "three orders of two, each reserved once"
    );
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) AS n FROM stock_events WHERE sku = 'BK-1' AND ref LIKE '%:reserve'"
        ),
        3
    );
    db.assert_books_balance();
    broker.close().await;
}

/// A batch of more checkouts than the consumer's prefetch: handled at most the prefetch at a
/// time, and counted whole, from its arrival, in what admission reads as in flight.
#[actix_web::test]
async fn a_batch_larger_than_the_prefetch_is_handled_within_it_and_counted_whole() {
    let app = spawn_app_with(TestDb::new(), |c| {
        c.consumer_prefetch = 2;
        c.sandbox_payment_delay = Duration::from_millis(400);
    })
    .await;
    app.product("BP-1", "c", &[], 100, 100).await;
    let b = tokenized(&body("bp", json!([{"sku": "BP-1", "quantity": 1}])));
    let batch: Vec<Stamped> = (0..6).map(|i| stamped(&format!("bp-{i}"), &b)).collect();
    publish_batch(app.app_state.broker(), batch).await;
    let monitor = std::sync::Arc::clone(app.app_state.broker().monitor());
    let started = Instant::now();
    let mut counted = 0;
    loop {
        counted = counted.max(monitor.checkout_in_flight());
        let done = sql_i64(
            &app.db,
            "SELECT count(*) AS n FROM orders WHERE status = 'scheduled'",
        );
        if done == 6 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{done} of 6 decided"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counted, 6, "the batch counted in flight whole");
    let peak = app.active().orders.processing_peak();
    assert!(
        (1..=2).contains(&peak),
        "at most the prefetch handled at once, saw {peak}"
    );
    assert_eq!(
        settle_depth(&app.vhost, "orders.checkout", (0, 0)).await,
        (0, 0)
    );
    app.db.assert_books_balance();
    app.stop().await;
}

/// The broker stops answering while checkouts wait for a publish slot: each is answered 503 in
/// bounded time — those still waiting are withdrawn, never published — not one publish time-out
/// after another down the queue.
#[actix_web::test]
async fn checkouts_waiting_for_a_stalled_broker_are_answered_503_in_bounded_time() {
    let proxy = Proxy::start(amqp_addr());
    let app = spawn_app_with(TestDb::new(), |c| {
        // No quick heartbeat: the connection stays up, as under a memory alarm.
        c.amqp_url = proxy.amqp_url(&c.amqp_url);
        // One publish out at a time, two checkouts in it: a long queue behind a stalled one.
        c.checkout_publishes = 1;
        c.checkout_batch = 2;
    })
    .await;
    app.product("BS-1", "c", &[], 100, 1000).await;
    let warm = app
        .checkout(
            "bs-warm",
            &body("bs", json!([{"sku": "BS-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(warm.status, 202, "{}", warm.body);
    app.decided(warm.body["order_id"].as_str().unwrap()).await;
    proxy.stall();
    let replies = futures_util::future::join_all((0..40).map(|i| {
        let app = &app;
        async move {
            let started = Instant::now();
            let b = body("bs", json!([{"sku": "BS-1", "quantity": 1}]));
            let reply = app.checkout(&format!("bs-{i}"), &b).await;
            (reply, started.elapsed())
        }
    }))
    .await;
    for (reply, took) in &replies {
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(reply.retry_after.is_some());
        assert!(
            *took < Duration::from_secs(9),
            "answered within the confirm time-out and a half: {took:?}"
        );
    }
    proxy.restore();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // At most the one batch that was out when the broker stalled can have reached it; what
    // waited behind it was never published.
    let orders = sql_i64(&app.db, "SELECT count(*) AS n FROM orders");
    assert!(
        orders <= 3,
        "{orders} orders: the warm-up and at most one batch of two"
    );
    app.stop().await;
}

/// The consumer's channel dies while a delivery waits for its permits behind a batch: the
/// broker sends it again on the next channel, and the stale one is not handled too — a poison
/// message waiting there is dead-lettered once, not twice.
#[actix_web::test]
async fn a_delivery_waiting_for_permits_when_its_channel_dies_is_handled_once() {
    let proxy = Proxy::start(amqp_addr());
    let app = spawn_app_with(TestDb::new(), |c| {
        c.amqp_url = proxy.amqp_url(&c.amqp_url);
        c.consumer_prefetch = 2;
        c.sandbox_payment_delay = Duration::from_millis(1500);
    })
    .await;
    app.product("BC-1", "c", &[], 100, 100).await;
    let b = tokenized(&body("bc", json!([{"sku": "BC-1", "quantity": 1}])));
    // The batch takes both permits for 1.5 s; the poison message, delivered too, waits.
    let slow = vec![stamped("bc-1", &b), stamped("bc-2", &b)];
    publish_batch(app.app_state.broker(), slow).await;
    app.publish_checkout_raw(b"{\"half\": ", "bc-poison").await;
    let monitor = std::sync::Arc::clone(app.app_state.broker().monitor());
    let started = Instant::now();
    while monitor.checkout_in_flight() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "both delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    let scheduled = || {
        sql_i64(
            &app.db,
            "SELECT count(*) AS n FROM orders WHERE status = 'scheduled'",
        )
    };
    while scheduled() < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "both decided");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        settle_depth(&app.vhost, "orders.checkout", (0, 0)).await,
        (0, 0)
    );
    // Long enough for a stale copy to have been handled after the batch's permits came back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        settle_depth(&app.vhost, "orders.checkout.dead", (1, 0)).await,
        (1, 0),
        "the poison message dead-lettered once"
    );
    let (key, _, reason) = app.dead_letter_with_id("orders.checkout.dead").await;
    assert_eq!(key, "bc-poison");
    assert!(reason.starts_with("body is not JSON"), "{reason}");
    app.db.assert_books_balance();
    app.stop().await;
}
