//! The one write (issue 19, item 3): a first delivery decided in memory and written once,
//! decided, with its held units. A `kill -9` at each of its steps, a duplicate delivery, and a
//! database that refuses what memory held.

use std::time::{Duration, Instant};

use orderflow::orders::payment::{AuthorizationState, SandboxGateway};
use serde_json::json;

use crate::checkout::body;
use crate::helpers::{http_client, order_of_key, spawn_app, sql_i64, Service, TestDb, TestVhost};
use crate::load::{decided, stock_up};

/// What the database holds of one order: (orders, reserve log rows, notifications).
fn traces_of(db: &TestDb, order_id: &str) -> (i64, i64, i64) {
    (
        sql_i64(
            db,
            &format!("SELECT count(*) AS n FROM orders WHERE order_id = '{order_id}'"),
        ),
        sql_i64(
            db,
            &format!(
                "SELECT count(*) AS n FROM stock_events WHERE ref = 'order:{order_id}:reserve'"
            ),
        ),
        sql_i64(
            db,
            &format!("SELECT count(*) AS n FROM notifications WHERE order_id = '{order_id}'"),
        ),
    )
}

/// A process killed (`abort`, as `kill -9`) at `point` of an order's one write; the next one
/// takes the redelivery. The order ends scheduled exactly once: one row, its units reserved
/// once, one notification, the books balanced. Before the commit nothing of it is in the
/// database; after it, the decision is.
async fn killed_at(point: &str, committed_before_the_kill: bool) {
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    stock_up(&client, &service.base, &[("OW-1", 5)]).await;
    drop(service);
    let mut dying = Service::start(&db.url, &vhost.url, &[("ORDERFLOW_FAULT_ABORT_AT", point)]);
    dying.ready(&client).await;
    let sent = client
        .post(dying.url("/v1/checkout"))
        .insert_header(("Idempotency-Key", "ow-1"))
        .send_json(&body("ow", json!([{"sku": "OW-1", "quantity": 2}])))
        .await;
    match sent {
        Ok(r) => assert_eq!(r.status().as_u16(), 202),
        // The consumer took the checkout and the process died before its 202 went out: the
        // checkout was durable already (a quorum queue delivers only what it committed).
        Err(e) => eprintln!("the 202 was cut short by the abort: {e}"),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let fired = format!("aborting at {point}");
    while !dying.log().contains(&fired) {
        assert!(Instant::now() < deadline, "never fired: {}", dying.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dying.wait_exit(Duration::from_secs(10)).await,
        "did not die: {}",
        dying.log()
    );
    assert_eq!(
        order_of_key(&db, "ow-1").is_some(),
        committed_before_the_kill,
        "killed at {point}: the order is in the database only once its one write committed"
    );
    let service = Service::start(&db.url, &vhost.url, &[]);
    service.ready(&client).await;
    let order = decided(&client, &service.base, &db, "ow-1", Duration::from_secs(30)).await;
    assert_eq!(order["status"], "scheduled", "{order}");
    let steps: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["received", "reserved", "scheduled"]);
    let id = order["order_id"].as_str().unwrap();
    assert_eq!(traces_of(&db, id), (1, 1, 1), "decided once, reserved once");
    let (on_hand, reserved, _) = db.stock("OW-1");
    assert_eq!((on_hand, reserved), (5, 2));
    db.assert_books_balance();
    // Memory agrees with the database (the held units the dead process had died with it).
    let (_, inventory) = crate::load::get_json(&client, &service.url("/v1/inventory/OW-1"))
        .await
        .expect("inventory");
    assert_eq!(inventory["reserved"], 2);
    assert_eq!(inventory["available"], 3);
}

#[actix_web::test]
async fn a_kill_after_the_holds_leaves_no_trace_and_the_redelivery_decides_it() {
    killed_at("held", false).await;
}

#[actix_web::test]
async fn a_kill_after_the_authorization_leaves_no_trace_and_the_redelivery_decides_it() {
    killed_at("authorized", false).await;
}

#[actix_web::test]
async fn a_kill_after_the_commit_before_the_event_keeps_the_decision_and_announces_it_again() {
    killed_at("committed", true).await;
}

#[actix_web::test]
async fn a_kill_after_the_event_before_the_ack_keeps_the_decision_once() {
    killed_at("announced", true).await;
}

/// Rule 2 in the one write: the same checkout delivered twice as a first delivery (a producer
/// that published it twice) is one order, its units reserved once.
#[actix_web::test]
async fn a_duplicate_first_delivery_finds_the_order_its_twin_wrote() {
    let app = spawn_app().await;
    app.product("DUP-1", "c", &[], 100, 10).await;
    let order = body("dup", json!([{"sku": "DUP-1", "quantity": 3}]));
    for _ in 0..2 {
        app.publish("orders", "checkout", &order, Some("dup-key"))
            .await;
    }
    let decided = decided(
        &app.client,
        &app.address,
        &app.db,
        "dup-key",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(decided["status"], "scheduled");
    // Both deliveries settled (acked), the second after finding its twin's decision.
    let settled = Instant::now();
    while app.active().orders.processing() > 0 && settled.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = decided["order_id"].as_str().unwrap();
    assert_eq!(traces_of(&app.db, id), (1, 1, 1));
    assert_eq!(app.db.stock("DUP-1").1, 3);
    let ledger = app
        .active()
        .engine
        .ledger(&orderflow::domain::Sku::parse("DUP-1").unwrap())
        .await
        .unwrap();
    assert_eq!((ledger.level.reserved, ledger.held), (3, 0), "{ledger:?}");
    app.db.assert_books_balance();
    app.stop().await;
}

/// Rule 3 in the one write: memory believes in a unit the database does not hold (another
/// writer took it behind memory's back). The database refuses that order's held unit; the order
/// is decided again from the database's numbers (rejected) while an order of another SKU commits.
#[actix_web::test]
async fn held_units_the_database_refuses_redecide_only_their_order() {
    let app = spawn_app().await;
    app.product("MW-1", "c", &[], 100, 1).await;
    app.product("MW-2", "c", &[], 100, 5).await;
    sql_i64(
        &app.db,
        "WITH up AS (UPDATE stock SET reserved = 1 WHERE sku = 'MW-1' RETURNING 1) SELECT count(*) AS n FROM up",
    );
    let short = app
        .checkout(
            "mw-short",
            &body("mw", json!([{"sku": "MW-1", "quantity": 1}])),
        )
        .await;
    let fine = app
        .checkout(
            "mw-fine",
            &body("mw", json!([{"sku": "MW-2", "quantity": 2}])),
        )
        .await;
    assert_eq!((short.status, fine.status), (202, 202), "{}", short.body);
    let short_id = short.body["order_id"].as_str().unwrap().to_owned();
    let short = app.decided(&short_id).await;
    let fine = app.decided(fine.body["order_id"].as_str().unwrap()).await;
    assert_eq!(short["status"], "rejected", "{short}");
    assert_eq!(short["rejection"]["items"][0]["available"], 0);
    // Its payment was authorized before the database refused its unit: voided.
    assert_eq!(
        SandboxGateway::authorization_of(short_id.parse().unwrap()),
        Some(AuthorizationState::Voided)
    );
    assert_eq!(fine["status"], "scheduled");
    assert_eq!(app.db.stock("MW-1").1, 1, "nothing oversold");
    assert_eq!(app.db.stock("MW-2").1, 2);
    // Memory was reloaded from the database.
    let ledger = app
        .active()
        .engine
        .ledger(&orderflow::domain::Sku::parse("MW-1").unwrap())
        .await
        .unwrap();
    assert_eq!((ledger.level.reserved, ledger.held), (1, 0));
    app.stop().await;
}
