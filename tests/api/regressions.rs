//! Regression tests of defects found in review (issue 7): each failed before its fix.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Utc};
use diesel::RunQueryDsl;
use orderflow::orders::payment::{AuthorizationState, SandboxGateway};
use serde_json::json;

use crate::checkout::body;
use crate::helpers::{
    amqp_addr, assert_error, http_client, settle_depth, spawn_app, spawn_app_on, spawn_app_with,
    sql_i64, Proxy, Service, TestDb, TestVhost,
};
use crate::load::{decided, stock_up};

fn exec(db: &TestDb, sql: &str) {
    diesel::sql_query(sql)
        .execute(&mut db.conn())
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[actix_web::test]
async fn cancelling_a_received_order_whose_reservation_committed_releases_it() {
    let app = spawn_app().await;
    app.product("RC-1", "c", &[], 100, 5).await;
    let r = app
        .checkout("rc-1", &body("rc", json!([{"sku": "RC-1", "quantity": 2}])))
        .await;
    let id = r.body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(app.decided(&id).await["status"], "scheduled");
    // The state a crash leaves: the reservation is committed (its reference is in the change
    // log), the order still says `received`.
    exec(
        &app.db,
        &format!(
            "UPDATE orders SET status = 'received', delivery = NULL, history = (SELECT jsonb_agg(s) FROM jsonb_array_elements(history) s WHERE s->>'status' = 'received') WHERE order_id = '{id}'"
        ),
    );
    assert_eq!(app.db.stock("RC-1").1, 2);
    let r = app.cancel(&id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(
        app.db.stock("RC-1").1,
        0,
        "the committed reservation was released"
    );
    app.db.assert_books_balance();
    app.stop().await;
}

#[actix_web::test]
async fn card_validity_is_judged_when_the_checkout_was_accepted_not_when_it_is_consumed() {
    let app = spawn_app().await;
    app.product("EXP-1", "c", &[], 100, 5).await;
    // A card valid through last month, accepted at 23:00 (São Paulo) on that month's last day.
    let now = Utc::now();
    let first_of_this_month = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 2, 0, 0)
        .unwrap();
    let last_month = first_of_this_month - chrono::Duration::days(1);
    let mut b = body("exp", json!([{"sku": "EXP-1", "quantity": 1}]));
    b["payment"]["card"]["exp_month"] = json!(last_month.month());
    b["payment"]["card"]["exp_year"] = json!(last_month.year());
    // Accepted by orderflow's intake, the card was exchanged for a token.
    let b = crate::helpers::tokenized(&b);
    let accepted_at = first_of_this_month; // 02:00 UTC on the 1st = 23:00 the day before, local
    let props = lapin::BasicProperties::default()
        .with_message_id("exp-accepted-in-time".into())
        .with_app_id(orderflow::orders::HTTP_ORIGIN.into())
        .with_timestamp(accepted_at.timestamp() as u64);
    app.app_state
        .broker()
        .publish("orders", "checkout", b.to_string().as_bytes(), props)
        .await
        .unwrap();
    let order = decided(
        &app.client,
        &app.address,
        &app.db,
        "exp-accepted-in-time",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(order["status"], "scheduled", "{order}");
    // Without a time of acceptance it is judged now: expired, dead-lettered.
    app.publish("orders", "checkout", &b, Some("exp-no-timestamp"))
        .await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("expired"), "{reason}");
    // And the door itself refuses it now.
    assert_error(
        &app.checkout("exp-http", &b).await,
        422,
        "validation_failed",
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_cancel_cut_short_between_lines_is_cancelled_and_finished_later() {
    let app = spawn_app_with(TestDb::new(), |c| c.sweep_every = Duration::from_secs(3600)).await;
    app.product("CA-A", "c", &[], 100, 10).await;
    app.product("CA-B", "c", &[], 100, 10).await;
    let lines = json!([{"sku": "CA-A", "quantity": 1}, {"sku": "CA-B", "quantity": 2}]);
    let mut ids = Vec::new();
    for key in ["cut-1", "cut-2"] {
        let r = app.checkout(key, &body("ca", lines.clone())).await;
        let id = r.body["order_id"].as_str().unwrap().to_owned();
        assert_eq!(app.decided(&id).await["status"], "scheduled");
        ids.push(id);
    }
    assert_eq!((app.db.stock("CA-A").1, app.db.stock("CA-B").1), (2, 4));
    // The database "blips" when the second line is released.
    let orders = &app.active().orders;
    orders.fault_fail_releases_of(Some(orderflow::domain::Sku::parse("CA-B").unwrap()));
    for id in &ids {
        let r = app.cancel(id).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body["status"], "cancelled",
            "the cancel is recorded first"
        );
    }
    let order = app.get(&format!("/v1/orders/{}", ids[0])).await.body;
    assert_eq!(
        order["status"], "cancelled",
        "never left scheduled with stock back on sale"
    );
    assert_eq!((app.db.stock("CA-A").1, app.db.stock("CA-B").1), (0, 4));
    assert_eq!(
        sql_i64(
            &app.db,
            "SELECT count(*) AS n FROM orders WHERE NOT settled"
        ),
        2
    );
    orders.fault_fail_releases_of(None);
    // Finished by a retried cancel…
    let r = app
        .send(
            app.client
                .post(app.url(&format!("/v1/orders/{}/cancel", ids[0]))),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.db.stock("CA-B").1, 2);
    // …or by the sweeper (past its grace; a round that meets trouble — a slow database on a
    // loaded machine — leaves the order to the next round, as the sweeper's rounds do).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut settled = 0;
    for _ in 0..10 {
        let report = orders.sweep().await.expect("sweep");
        settled += report.settled;
        if settled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(settled, 1, "the sweeper settles the cut-short cancel, once");
    assert_eq!((app.db.stock("CA-A").1, app.db.stock("CA-B").1), (0, 0));
    app.db.assert_books_balance();
    app.stop().await;
}

#[actix_web::test]
async fn the_same_key_with_another_body_is_refused_after_a_publish_time_out() {
    let proxy = Proxy::start(amqp_addr());
    let app = spawn_app_with(TestDb::new(), |c| {
        c.amqp_url = format!("{}?heartbeat=2", proxy.amqp_url(&c.amqp_url));
    })
    .await;
    app.product("IK-1", "c", &[], 100, 10).await;
    app.product("IK-2", "c", &[], 100, 10).await;
    let first = body("ik", json!([{"sku": "IK-1", "quantity": 1}]));
    let other = body("ik", json!([{"sku": "IK-2", "quantity": 1}]));
    proxy.stall();
    let r = app.checkout("ik-key", &first).await;
    assert_error(&r, 503, "unavailable");
    proxy.restore();
    app.eventually("/health/ready", |r| r.status == 200).await;
    assert_error(
        &app.checkout("ik-key", &other).await,
        422,
        "idempotency_mismatch",
    );
    // The same body goes through (published again) and is decided once.
    let r = app.checkout("ik-key", &first).await;
    assert!(matches!(r.status, 200 | 202), "{} {}", r.status, r.body);
    let order = decided(
        &app.client,
        &app.address,
        &app.db,
        "ik-key",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(order["items"][0]["sku"], "IK-1");
    app.stop().await;
}

#[actix_web::test]
async fn the_same_key_with_another_body_is_refused_across_a_restart() {
    let db = TestDb::new();
    let app = spawn_app_with(db, |c| {
        c.consumer_prefetch = 1;
        c.sandbox_payment_delay = Duration::from_millis(1500);
    })
    .await;
    app.product("RK-1", "c", &[], 100, 10).await;
    app.product("RK-2", "c", &[], 100, 10).await;
    // The only consumer is busy with the first checkout; the second waits in the queue.
    let busy = app
        .checkout(
            "rk-busy",
            &body("rk", json!([{"sku": "RK-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(busy.status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = body("rk", json!([{"sku": "RK-1", "quantity": 1}]));
    assert_eq!(app.checkout("rk-key", &first).await.status, 202);
    let app = app.stop_keeping_db().await;
    assert_eq!(
        sql_i64(&app.db, "SELECT count(*) AS n FROM orders"),
        1,
        "the second checkout is still queued, not an order"
    );
    // A new process (on a vhost of its own, so the queued message stays where it is).
    let crate::helpers::TestApp { db, .. } = app;
    let app = spawn_app_on(db, TestVhost::new(), |_| {}).await;
    let other = body("rk", json!([{"sku": "RK-2", "quantity": 1}]));
    assert_error(
        &app.checkout("rk-key", &other).await,
        422,
        "idempotency_mismatch",
    );
    assert_eq!(app.checkout("rk-key", &first).await.status, 202);
    let order = decided(
        &app.client,
        &app.address,
        &app.db,
        "rk-key",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(order["items"][0]["sku"], "RK-1");
    app.stop().await;
}

#[actix_web::test]
async fn a_crash_right_after_a_declined_order_released_its_stock_still_ends_failed() {
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    stock_up(&client, &service.base, &[("DC-1", 5)]).await;
    drop(service);
    // The staged path's releases (a redelivery takes it; a first delivery decided in memory
    // releases nothing it wrote): this process writes every step.
    let mut dying = Service::start(
        &db.url,
        &vhost.url,
        &[
            ("ORDERFLOW_FAULT_ABORT_AFTER_RELEASE", "1"),
            ("ORDER_WRITES", "staged"),
        ],
    );
    dying.ready(&client).await;
    let mut declined = body("dc", json!([{"sku": "DC-1", "quantity": 2}]));
    declined["payment"]["card"]["number"] = json!("4000000000000002");
    let r = client
        .post(dying.url("/v1/checkout"))
        .insert_header(("Idempotency-Key", "dc-1"))
        .send_json(&declined)
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dying.log().contains("aborting after releasing") {
        assert!(
            Instant::now() < deadline,
            "the fault never fired: {}",
            dying.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dying.kill();
    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    let order = decided(&client, &service.base, &db, "dc-1", Duration::from_secs(30)).await;
    assert_eq!(order["status"], "failed", "{order}");
    assert_eq!(order["rejection"]["reason"], "payment_declined");
    let statuses: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["received", "reserved", "failed"]);
    db.assert_books_balance();
    assert_eq!(db.stock("DC-1"), (5, 0, 3), "reserved once, released once");
}

#[actix_web::test]
async fn work_in_flight_never_exceeds_the_prefetch_across_a_consumer_restart() {
    let proxy = Proxy::start(amqp_addr());
    let app = spawn_app_with(TestDb::new(), |c| {
        c.amqp_url = proxy.amqp_url(&c.amqp_url);
        c.consumer_prefetch = 4;
        c.sandbox_payment_delay = Duration::from_millis(3000);
    })
    .await;
    app.product("PF-1", "c", &[], 100, 1000).await;
    for i in 0..12 {
        app.publish(
            "orders",
            "checkout",
            &body("pf", json!([{"sku": "PF-1", "quantity": 1}])),
            Some(&format!("pf-{i}")),
        )
        .await;
    }
    // Deliveries being processed (in memory, or written on the way).
    let in_flight = || app.active().orders.processing() as i64;
    let mut peak = 0;
    let started = Instant::now();
    let mut cut = false;
    loop {
        let now = in_flight();
        peak = peak.max(now);
        if !cut && now >= 3 && started.elapsed() > Duration::from_millis(500) {
            // The channel dies with four deliveries being processed; they keep running.
            proxy.cut();
            tokio::time::sleep(Duration::from_millis(200)).await;
            proxy.restore();
            cut = true;
        }
        let done = sql_i64(
            &app.db,
            "SELECT count(*) AS n FROM orders WHERE status = 'scheduled'",
        );
        if done == 12 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{done} of 12 decided"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cut, "the consumer's channel was cut while it worked");
    assert!(
        peak <= 4,
        "at most the prefetch of orders in flight, saw {peak}"
    );
    // Deliveries of the dead channel still being processed count against the new one.
    let processing_peak = app.active().orders.processing_peak();
    assert!(
        (1..=4).contains(&processing_peak),
        "at most the prefetch of deliveries in process (and some), saw {processing_peak}"
    );
    let keys: HashSet<String> = (0..12).map(|i| format!("pf-{i}")).collect();
    for key in &keys {
        decided(
            &app.client,
            &app.address,
            &app.db,
            key,
            Duration::from_secs(10),
        )
        .await;
    }
    // Each delivery leaves the count when it is settled (after its order is decided).
    let settling = Instant::now();
    while app.active().orders.processing() > 0 && settling.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.active().orders.processing(), 0, "none left counted");
    app.db.assert_books_balance();
    app.stop().await;
}

#[actix_web::test]
async fn an_order_whose_delivery_is_gone_is_decided_expired_and_its_stock_released() {
    // The sweep is run by hand here; the periodic one stays out of the way.
    let app = spawn_app_with(TestDb::new(), |c| {
        c.sweep_every = Duration::from_secs(3600);
        c.order_stale_after = Duration::from_secs(1);
    })
    .await;
    app.product("SW-1", "c", &[], 100, 10).await;
    let mut ids = Vec::new();
    for (key, status) in [("sw-received", "received"), ("sw-reserved", "reserved")] {
        let r = app
            .checkout(key, &body("sw", json!([{"sku": "SW-1", "quantity": 2}])))
            .await;
        let id = r.body["order_id"].as_str().unwrap().to_owned();
        assert_eq!(app.decided(&id).await["status"], "scheduled");
        // Its delivery was lost long ago (dead-lettered, or lost before a hand-back existed).
        exec(&app.db, &format!(
            "UPDATE orders SET status = '{status}', delivery = NULL, updated_at = now() - interval '1 hour', history = (SELECT jsonb_agg(s) FROM jsonb_array_elements(history) s WHERE s->>'status' <> 'scheduled') WHERE order_id = '{id}'"
        ));
        ids.push(id);
    }
    assert_eq!(app.db.stock("SW-1").1, 4);
    // Only once the database and the broker have worked for `stale_after` without a break.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = app.active().orders.sweep().await.expect("sweep");
    assert_eq!(report.expired, 2, "{report:?}");
    for (id, status) in ids.iter().zip(["rejected", "failed"]) {
        let order = app.get(&format!("/v1/orders/{id}")).await.body;
        assert_eq!(order["status"], status, "{order}");
        assert_eq!(order["rejection"]["reason"], "expired");
        // The attempt before the crash had authorized the payment: the expiry voids it.
        assert_eq!(
            SandboxGateway::authorization_of(id.parse().unwrap()),
            Some(AuthorizationState::Voided),
            "{id}"
        );
    }
    assert_eq!(app.db.stock("SW-1").1, 0, "their stock is back on sale");
    let kinds: Vec<String> = app.get("/v1/customers/sw/notifications").await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains(&"order_expired".to_owned()), "{kinds:?}");
    // A second round finds nothing to do.
    assert_eq!(
        app.active().orders.sweep().await.unwrap(),
        Default::default()
    );
    app.db.assert_books_balance();
    app.stop().await;
}

#[actix_web::test]
async fn an_operator_lists_dead_letters_and_replays_them_once_they_can_succeed() {
    let app = spawn_app().await;
    app.product("DL-OK", "c", &[], 100, 10).await;
    // A checkout for a product that does not exist yet: dead-lettered with the reason.
    app.publish(
        "orders",
        "checkout",
        &body("dl", json!([{"sku": "DL-LATE", "quantity": 1}])),
        Some("dl-1"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::helpers::queue_depth(&app.vhost, "orders.checkout.dead").0 == 0 {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Run on a blocking thread: the application shares this test's runtime.
    let cli = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let url = app.vhost.url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
                    .args(&args)
                    .env("AMQP_URL", &url)
                    .env("RUST_LOG", "off")
                    .output()
                    .expect("run orderflow");
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                )
            })
            .await
            .unwrap()
        }
    };
    let (code, listed) = cli(&["dead-letters", "list", "orders.checkout"]).await;
    assert_eq!(code, Some(0), "{listed}");
    assert!(listed.contains("message_id=dl-1"), "{listed}");
    assert!(listed.contains("unknown sku DL-LATE"), "{listed}");
    let (code, listed_again) = cli(&["dead-letters", "list", "orders.checkout"]).await;
    assert_eq!(code, Some(0));
    assert!(
        listed_again.contains("message_id=dl-1"),
        "listing leaves them where they are"
    );
    assert_eq!(cli(&["dead-letters", "list", "nope"]).await.0, Some(2));
    // The product exists now: the replay makes the order.
    app.product("DL-LATE", "c", &[], 100, 10).await;
    let (code, replayed) = cli(&["dead-letters", "replay", "orders.checkout"]).await;
    assert_eq!(code, Some(0), "{replayed}");
    assert!(replayed.contains("replayed 1"), "{replayed}");
    let order = decided(
        &app.client,
        &app.address,
        &app.db,
        "dl-1",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(order["status"], "scheduled");
    assert_eq!(
        crate::helpers::settle_depth(&app.vhost, "orders.checkout.dead", (0, 0)).await,
        (0, 0),
        "removed once the broker confirmed its copy"
    );
    app.stop().await;
}

/// Issue 19, item 7: a panic while handling a checkout is that message's permanent failure —
/// dead-lettered with the reason, once — never a delivery left unsettled (its prefetch slot
/// lost) nor a retry that comes back forever; the checkouts after it are decided.
#[actix_web::test]
async fn a_checkout_whose_handling_panics_is_dead_lettered_once_and_the_rest_go_on() {
    let app = spawn_app().await;
    app.product("PN-1", "c", &[], 100, 5).await;
    app.product("PN-2", "c", &[], 100, 5).await;
    let orders = &app.active().orders;
    orders.fault_panic_on(Some(orderflow::domain::Sku::parse("PN-1").unwrap()));
    let bad = app
        .checkout(
            "pn-bad",
            &body("pn", json!([{"sku": "PN-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(bad.status, 202, "{}", bad.body);
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(
        reason.contains("panicked") && reason.contains("PN-1"),
        "{reason}"
    );
    // The others go on, more of them than the consumer's prefetch would allow if the panicked
    // deliveries had kept their slots.
    for i in 0..3 {
        let r = app
            .checkout(
                &format!("pn-good-{i}"),
                &body("pn", json!([{"sku": "PN-2", "quantity": 1}])),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        let id = r.body["order_id"].as_str().unwrap();
        assert_eq!(app.decided(id).await["status"], "scheduled");
    }
    // Not retried: no second dead letter, nothing of PN-1 taken.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        settle_depth(&app.vhost, "orders.checkout.dead", (0, 0)).await,
        (0, 0),
        "dead-lettered once"
    );
    assert_eq!(
        settle_depth(&app.vhost, "orders.checkout", (0, 0)).await,
        (0, 0),
        "nothing left unsettled or handed back"
    );
    assert_eq!(app.db.stock("PN-1").1, 0);
    assert_eq!(app.db.stock("PN-2").1, 3);
    orders.fault_panic_on(None);
    app.db.assert_books_balance();
    app.stop().await;
}
