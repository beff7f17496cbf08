//! The fault matrix (issue 7): each fault through a TCP proxy or on a child process — the shared
//! PostgreSQL and RabbitMQ are never touched — and after each: every checkout answered 202 is
//! decided exactly once, the books balance, stock never went negative (the database's `CHECK`s
//! would have refused it), memory equals the database.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::checkout::body;
use crate::helpers::{
    amqp_addr, http_client, pg_addr, queue_depth, settle_depth, spawn_app_for_handbacks,
    spawn_app_with, sql_i64, Proxy, Service, TestDb, TestVhost,
};
use crate::load::{decided, stock_up, verify, Load};

fn undecided(db: &TestDb) -> i64 {
    sql_i64(
        db,
        "SELECT count(*) AS n FROM orders WHERE status IN ('received', 'reserved')",
    )
}

/// Orders accepted (202) and not decided in the database: in the queue, being decided in
/// memory (the one write), or written on the way (the staged path).
fn in_flight(db: &TestDb, accepted: usize) -> i64 {
    accepted as i64
        - sql_i64(
            db,
            "SELECT count(*) AS n FROM orders WHERE status NOT IN ('received', 'reserved')",
        )
}

/// Waits (up to `within`) until `check` holds.
async fn until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn sigkill_mid_load_every_accepted_order_is_decided_once_and_nothing_oversold() {
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    // A gateway that takes 300 ms keeps orders in flight (reserved, not yet acked).
    let mut service = Service::start(&db.url, &vhost.url, &[("SANDBOX_PAYMENT_DELAY_MS", "300")]);
    service.ready(&client).await;
    stock_up(
        &client,
        &service.base,
        &[("K-HOT", 60), ("K-COLD", 100_000)],
    )
    .await;
    let load = Load::start(&client, &service.base, 24, "kill", &["K-HOT", "K-COLD"]);
    load.until_accepted(150).await;
    until(Duration::from_secs(10), "orders in flight", || {
        in_flight(&db, load.accepted()) > 0
    })
    .await;
    service.kill();
    let tally = load.stop().await;
    // These can only be decided by their deliveries coming back to the next process.
    let in_flight_at_kill = in_flight(&db, tally.accepted.len());
    assert!(
        in_flight_at_kill > 0,
        "orders were in flight when the process died"
    );

    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    verify(
        &client,
        &service.base,
        &db,
        &tally,
        ("K-HOT", 60),
        &["K-HOT", "K-COLD"],
    )
    .await;
    assert!(tally.accepted.len() >= 150);
}

#[actix_web::test]
async fn sigterm_mid_load_drains_in_order_and_exits_zero() {
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    let mut service = Service::start(&db.url, &vhost.url, &[("SANDBOX_PAYMENT_DELAY_MS", "200")]);
    service.ready(&client).await;
    stock_up(
        &client,
        &service.base,
        &[("T-HOT", 40), ("T-COLD", 100_000)],
    )
    .await;
    let load = Load::start(&client, &service.base, 16, "term", &["T-HOT", "T-COLD"]);
    load.until_accepted(100).await;
    until(Duration::from_secs(10), "orders in flight", || {
        in_flight(&db, load.accepted()) > 0
    })
    .await;
    let status = service.terminate();
    let tally = load.stop().await;
    assert_eq!(status.code(), Some(0), "clean exit: {}", service.log());
    let log = service.log();
    assert!(
        !log.contains("stream ended; restarting"),
        "consumers stopped, not restarted: {log}"
    );
    // What was in flight was finished before the exit: nothing undecided, nothing unsettled.
    assert_eq!(undecided(&db), 0, "the next start finds no undecided order");
    assert_eq!(
        sql_i64(&db, "SELECT count(*) AS n FROM orders WHERE NOT settled"),
        0
    );

    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    verify(
        &client,
        &service.base,
        &db,
        &tally,
        ("T-HOT", 40),
        &["T-HOT", "T-COLD"],
    )
    .await;
}

#[actix_web::test]
async fn a_consumer_killed_after_commit_and_before_ack_decides_nothing_twice() {
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    stock_up(&client, &service.base, &[("A-HOT", 10), ("A-COLD", 1000)]).await;
    drop(service);
    // This process dies right after the 15th decision is durable, before its ack.
    let mut dying = Service::start(
        &db.url,
        &vhost.url,
        &[("ORDERFLOW_FAULT_ABORT_BEFORE_ACK", "15")],
    );
    dying.ready(&client).await;
    let load = Load::start(&client, &dying.base, 8, "abort", &["A-HOT", "A-COLD"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dying.log().contains("aborting after a commit") {
        assert!(
            Instant::now() < deadline,
            "the fault never fired: {}",
            dying.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dying.kill();
    let tally = load.stop().await;
    assert!(!tally.accepted.is_empty());
    let decided_before = sql_i64(
        &db,
        "SELECT count(*) AS n FROM orders WHERE status NOT IN ('received', 'reserved')",
    );
    assert!(
        decided_before >= 15,
        "{decided_before} decided before the abort"
    );

    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    verify(
        &client,
        &service.base,
        &db,
        &tally,
        ("A-HOT", 10),
        &["A-HOT", "A-COLD"],
    )
    .await;
}

#[actix_web::test]
async fn postgres_cut_for_five_seconds_during_load_loses_nothing() {
    let proxy = Proxy::start(pg_addr());
    let app = spawn_app_with(TestDb::new(), |c| {
        c.database_url = proxy.pg_url(&c.database_url);
        c.retry_window = Duration::from_secs(2);
    })
    .await;
    stock_up(
        &app.client,
        &app.address,
        &[("PG-HOT", 50), ("PG-COLD", 100_000)],
    )
    .await;
    let load = Load::start(
        &app.client,
        &app.address,
        16,
        "pgcut",
        &["PG-HOT", "PG-COLD"],
    );
    load.until_accepted(80).await;
    proxy.cut();
    let cut_at = Instant::now();
    // Readiness says which dependency is down.
    let mut ready = app.get("/health/ready").await;
    while ready.status == 200 && cut_at.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = app.get("/health/ready").await;
    }
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_ne!(ready.body["checks"]["postgres"], "ok", "{}", ready.body);
    assert!(ready.retry_after.is_some());
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(cut_at.elapsed())).await;
    let during = load.accepted();
    proxy.restore();
    load.until_accepted(during + 60).await;
    let tally = load.stop().await;
    assert!(
        tally.statuses.get(&503).copied().unwrap_or(0) > 0,
        "checkouts during the cut got a clear 503: {:?}",
        tally.statuses
    );
    assert_eq!(tally.statuses.get(&500), None, "{:?}", tally.statuses);
    verify(
        &app.client,
        &app.address,
        &app.db,
        &tally,
        ("PG-HOT", 50),
        &["PG-HOT", "PG-COLD"],
    )
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn a_postgres_outage_longer_than_every_retry_dead_letters_nothing() {
    // Retry window × delivery limit = 0.6 s; the outage lasts 4 s. Orders untouched for 2 s
    // count as lost — but only once the database has worked for 2 s again: the ones waiting
    // out the outage are not expired.
    let proxy = Proxy::start(pg_addr());
    let app = spawn_app_with(TestDb::new(), |c| {
        c.database_url = proxy.pg_url(&c.database_url);
        c.retry_window = Duration::from_millis(300);
        c.delivery_limit = 2;
        c.order_stale_after = Duration::from_secs(2);
        c.sweep_every = Duration::from_millis(500);
        c.sandbox_payment_delay = Duration::from_millis(800);
    })
    .await;
    app.product("LO-1", "c", &[], 100, 1000).await;
    // Orders in the middle of their processing when the database goes away.
    for i in 0..10 {
        app.publish(
            "orders",
            "checkout",
            &body("lo", json!([{"sku": "LO-1", "quantity": 1}])),
            Some(&format!("early-{i}")),
        )
        .await;
    }
    until(
        Duration::from_secs(10),
        "orders reserved, waiting for payment",
        || app.active().orders.processing() > 0,
    )
    .await;
    // (Past their holds: the gateway takes 800 ms.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.cut();
    for i in 0..60 {
        app.publish(
            "orders",
            "checkout",
            &body("lo", json!([{"sku": "LO-1", "quantity": 1}])),
            Some(&format!("long-{i}")),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.restore();
    let keys = (0..60)
        .map(|i| format!("long-{i}"))
        .chain((0..10).map(|i| format!("early-{i}")));
    for key in keys {
        let order = decided(
            &app.client,
            &app.address,
            &app.db,
            &key,
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(
            order["status"], "scheduled",
            "{key} waited out the outage: {order}"
        );
    }
    assert_eq!(
        settle_depth(&app.vhost, "orders.checkout.dead", (0, 0)).await,
        (0, 0),
        "nothing accepted was dead-lettered"
    );
    assert_eq!(app.db.stock("LO-1"), (1000, 70, 71));
    app.db.assert_books_balance();
    app.stop().await;
}

#[actix_web::test]
async fn broker_cut_with_checkouts_in_flight_loses_nothing() {
    let proxy = Proxy::start(amqp_addr());
    let app = spawn_app_with(TestDb::new(), |c| {
        c.amqp_url = proxy.amqp_url(&c.amqp_url);
        c.sandbox_payment_delay = Duration::from_millis(400);
    })
    .await;
    stock_up(
        &app.client,
        &app.address,
        &[("BC-HOT", 30), ("BC-COLD", 100_000)],
    )
    .await;
    let load = Load::start(
        &app.client,
        &app.address,
        16,
        "bcut",
        &["BC-HOT", "BC-COLD"],
    );
    load.until_accepted(60).await;
    until(Duration::from_secs(10), "orders in flight", || {
        in_flight(&app.db, load.accepted()) > 0
    })
    .await;
    proxy.cut();
    let in_flight = in_flight(&app.db, load.accepted());
    let started = Instant::now();
    let refused = app
        .checkout(
            "bc-during",
            &body("bc", json!([{"sku": "BC-COLD", "quantity": 1}])),
        )
        .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "unavailable");
    assert!(refused.retry_after.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a clear answer, not a hang"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = load.accepted();
    proxy.restore();
    load.until_accepted(during + 40).await;
    let tally = load.stop().await;
    assert!(in_flight > 0, "checkouts were in flight across the cut");
    verify(
        &app.client,
        &app.address,
        &app.db,
        &tally,
        ("BC-HOT", 30),
        &["BC-HOT", "BC-COLD"],
    )
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn a_stalled_broker_connection_gets_503_in_bounded_time_and_recovers() {
    // A silent drop: the proxy keeps the connection open and forwards nothing, as a broker
    // blocking publishers under a memory alarm, or a partition. Heartbeats every 2 s notice.
    let proxy = Proxy::start(amqp_addr());
    let app = spawn_app_with(TestDb::new(), |c| {
        c.amqp_url = format!("{}?heartbeat=2", proxy.amqp_url(&c.amqp_url));
    })
    .await;
    stock_up(
        &app.client,
        &app.address,
        &[("ST-HOT", 20), ("ST-COLD", 100_000)],
    )
    .await;
    let load = Load::start(
        &app.client,
        &app.address,
        8,
        "stall",
        &["ST-HOT", "ST-COLD"],
    );
    load.until_accepted(40).await;
    proxy.stall();
    let started = Instant::now();
    let refused = app
        .checkout(
            "st-during",
            &body("st", json!([{"sku": "ST-COLD", "quantity": 1}])),
        )
        .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.retry_after.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered within the confirm time-out ({:?})",
        started.elapsed()
    );
    // Long enough for the heartbeats to declare the connection dead.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = load.accepted();
    proxy.restore();
    load.until_accepted(during + 30).await;
    let tally = load.stop().await;
    verify(
        &app.client,
        &app.address,
        &app.db,
        &tally,
        ("ST-HOT", 20),
        &["ST-HOT", "ST-COLD"],
    )
    .await;
    app.stop().await;
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[actix_web::test]
async fn a_restart_with_fifty_thousand_checkouts_queued_drains_them_with_bounded_memory() {
    const QUEUED: usize = 50_000;
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    let skus: Vec<String> = (0..20).map(|i| format!("Q-{i}")).collect();
    let mut products: Vec<(&str, i64)> = skus.iter().map(|s| (s.as_str(), 10_000)).collect();
    products.push(("Q-HOT", 500));
    let mut service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    stock_up(&client, &service.base, &products).await;
    assert_eq!(service.terminate().code(), Some(0));

    // 50,000 checkouts published (confirmed) while no orderflow runs.
    let broker =
        orderflow::messaging::Broker::connect(&vhost.url, Default::default(), Default::default())
            .await
            .expect("broker");
    let published = Instant::now();
    for chunk in (0..QUEUED).collect::<Vec<_>>().chunks(2_000) {
        let sends = chunk.iter().map(|i| {
            let sku = if i % 10 == 0 {
                "Q-HOT".to_owned()
            } else {
                format!("Q-{}", i % 20)
            };
            // As another system sends it: the card as the gateway's token.
            let payload = crate::helpers::tokenized(&body(
                &format!("q-c{}", i % 500),
                json!([{"sku": sku, "quantity": 1}]),
            ))
            .to_string();
            let broker = broker.clone();
            async move {
                let props =
                    lapin::BasicProperties::default().with_message_id(format!("queued-{i}").into());
                broker
                    .publish("orders", "checkout", payload.as_bytes(), props)
                    .await
            }
        });
        for r in futures_util::future::join_all(sends).await {
            r.expect("published");
        }
    }
    broker.close().await;
    eprintln!("published {QUEUED} checkouts in {:?}", published.elapsed());
    assert_eq!(
        settle_depth(&vhost, "orders.checkout", (QUEUED as u64, 0)).await,
        (QUEUED as u64, 0)
    );

    let started = Instant::now();
    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    let ready_after = started.elapsed();
    let (left_at_ready, _) = queue_depth(&vhost, "orders.checkout");
    assert!(
        left_at_ready > 0,
        "ready before the backlog is drained ({ready_after:?})"
    );
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        peak = peak.max(rss_mib(service.pid()).unwrap_or(0));
        let decided_now = sql_i64(
            &db,
            "SELECT count(*) AS n FROM orders WHERE status NOT IN ('received', 'reserved')",
        );
        if decided_now == QUEUED as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{decided_now} of {QUEUED} decided in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained = started.elapsed();
    eprintln!(
        "ready after {ready_after:?} with {left_at_ready} still queued; {QUEUED} decided after {drained:?} \
         ({:.0}/s); peak RSS {peak} MiB",
        QUEUED as f64 / drained.as_secs_f64()
    );
    assert!(
        peak < 512,
        "memory stays bounded while draining (peak {peak} MiB)"
    );
    assert_eq!(
        settle_depth(&vhost, "orders.checkout", (0, 0)).await,
        (0, 0)
    );
    assert_eq!(
        settle_depth(&vhost, "orders.checkout.dead", (0, 0)).await,
        (0, 0)
    );
    assert_eq!(
        sql_i64(&db, "SELECT count(*) AS n FROM orders WHERE status = 'scheduled' AND items->0->>'sku' = 'Q-HOT'"),
        500,
        "the hot sku sold out exactly"
    );
    db.assert_books_balance();
}

/// Issue 19, item 7: hand-backs are capped. A checkout that meets transient trouble for every
/// retry window is handed back (a fresh copy, its delivery limit untouched) — but only as often
/// as `HANDBACK_LIMIT` says; then it is dead-lettered with the reason, not circling forever.
#[actix_web::test]
async fn a_checkout_handed_back_as_often_as_the_limit_allows_is_dead_lettered() {
    let proxy = Proxy::start(pg_addr());
    let app = spawn_app_for_handbacks(&proxy).await;
    app.product("HB-1", "c", &[], 100, 10).await;
    proxy.cut();
    app.publish(
        "orders",
        "checkout",
        &body("hb", json!([{"sku": "HB-1", "quantity": 1}])),
        Some("hb-1"),
    )
    .await;
    let started = Instant::now();
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("handed back 2 times"), "{reason}");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "three retry windows (the original and two copies) before the dead letter: {:?}",
        started.elapsed()
    );
    proxy.restore();
    app.db.assert_books_balance();
    app.stop().await;
}
