//! Bulkheads in both batch writers (issue 7): a row the database refuses for a data reason fails
//! only its own caller, with a permanent error; the rest of its batch commits; nothing retries
//! it. Plus what a retried batch takes as proof of its own commit, and what readers are shown.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::join_all;
use orderflow::domain::checkout::{Address, DeliveryMethod, Payment};
use orderflow::domain::order::{OrderItem, OrderStatus, Origin};
use orderflow::domain::{Ledger, Sku, StockOp};
use orderflow::engine::{
    DurabilityError, Engine, EngineConfig, EventRecord, PersisterConfig, RowOutcome, RowWrite,
    Store,
};
use orderflow::persistence::orders::{HistoryStep, KeyRow, NewOrderRow};
use orderflow::persistence::PgStore;

use uuid::Uuid;

use crate::helpers::{pg_addr, seed_products, sql_i64, Proxy, TestDb};

fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

/// A wait that must end: a writer stuck retrying a batch fails the test instead of hanging it.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the writer answered within 20 s (no batch retried forever)")
}

async fn pool_through(proxy: &Proxy, db: &TestDb) -> orderflow::persistence::DbPool {
    let url = proxy.pg_url(&db.url);
    tokio::task::spawn_blocking(move || orderflow::persistence::connect_pool(&url, 3))
        .await
        .unwrap()
        .expect("pool")
}

#[actix_web::test]
async fn a_stock_change_the_database_refuses_fails_alone_and_its_batch_commits() {
    let db = TestDb::new();
    let names = ["B0", "B1", "B2", "B3", "BAD"];
    seed_products(&db, &names);
    let proxy = Proxy::start(pg_addr());
    let store: Arc<dyn Store> = Arc::new(PgStore::new(pool_through(&proxy, &db).await));
    let engine = Engine::start(
        store,
        EngineConfig {
            shards: 2,
            persister: PersisterConfig {
                max_batch: 1000,
                ..PersisterConfig::default()
            },
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine");
    for n in names {
        let a = engine
            .apply(&sku(n), StockOp::SetOnHand(10), None)
            .await
            .unwrap();
        a.durable.wait().await.unwrap();
    }
    // With the database away, the next changes queue up behind a batch being retried, so they
    // are written as one batch once it is back.
    proxy.cut();
    let first = engine
        .apply(&sku("B0"), StockOp::Adjust(1), Some("first".into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let skus = [sku("B1"), sku("B2"), sku("B3")];
    let good = join_all(
        skus.iter()
            .map(|s| engine.apply(s, StockOp::Adjust(1), Some("ok".into()))),
    )
    .await;
    // A NUL in the reason: PostgreSQL refuses it in a text column.
    let bad = engine
        .apply(&sku("BAD"), StockOp::Adjust(1), Some("truck\u{0}".into()))
        .await
        .unwrap();
    let batches_before = engine
        .persister_stats()
        .batches()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    proxy.restore();
    within(first.durable.wait()).await.expect("first");
    for g in good {
        within(g.unwrap().durable.wait())
            .await
            .expect("the rest of the batch commits");
    }
    match within(bad.durable.wait()).await {
        Err(DurabilityError::Refused(why)) => assert!(
            why.contains("0x00") || why.to_lowercase().contains("utf8"),
            "{why}"
        ),
        other => panic!("a permanent refusal for its own caller, got {other:?}"),
    }
    let batches = engine
        .persister_stats()
        .batches()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed)
        - batches_before;
    assert!(
        batches <= 2,
        "the refused change shared a batch with the good ones ({batches} batches)"
    );
    for n in ["B0", "B1", "B2", "B3"] {
        assert_eq!(db.stock(n), (11, 0, 2), "{n}");
    }
    assert_eq!(db.stock("BAD"), (10, 0, 1), "nothing of the refused change");
    // Memory follows the database again, and the SKU takes changes.
    let mut resynced = false;
    for _ in 0..100 {
        if engine.ledger(&sku("BAD")).await.unwrap() == Ledger::new(10, 0, 1) {
            resynced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(resynced, "the refused change was taken back from memory");
    let next = engine
        .apply(&sku("BAD"), StockOp::Adjust(2), Some("fine".into()))
        .await
        .unwrap();
    next.durable.wait().await.unwrap();
    assert_eq!(db.stock("BAD"), (12, 0, 2));
    assert_eq!(
        engine
            .persister_stats()
            .batches()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "tried once, never retried"
    );
    engine.shutdown().await;
}

fn new_order(customer: &str, street: &str) -> NewOrderRow {
    let order_id = Uuid::new_v4();
    NewOrderRow {
        order_id,
        idempotency_key: order_id.to_string(),
        request_fingerprint: "f".into(),
        customer_id: customer.into(),
        cart_id: None,
        origin: Origin::Queue,
        status: OrderStatus::Received,
        items: vec![OrderItem {
            sku: Sku::parse("X").unwrap(),
            quantity: 1,
            unit_price_cents: 1,
        }],
        total_cents: 1,
        currency: "BRL".into(),
        delivery_method: DeliveryMethod::Standard,
        shipping_address: Address {
            street: street.into(),
            ..Address::default()
        },
        payment: Payment::Pix,
        delivery: None,
        rejection: None,
        history: vec![HistoryStep {
            status: OrderStatus::Received,
            at: Utc::now(),
        }],
        at: Utc::now(),
        updated_at: Utc::now(),
        settled: true,
    }
}

#[actix_web::test]
async fn an_order_write_the_database_refuses_fails_alone_and_its_batch_commits() {
    use orderflow::batch::WriteError;
    use orderflow::orders::writer::{self, OrderWrite, OrderWritten};
    let db = TestDb::new();
    let proxy = Proxy::start(pg_addr());
    let writer = writer::spawn(pool_through(&proxy, &db).await, 1024, None);
    proxy.cut();
    let first = writer
        .submit(OrderWrite::Create(Box::new(new_order("first", "Rua A"))))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let good: Vec<_> = (0..5)
        .map(|i| {
            writer
                .submit(OrderWrite::Create(Box::new(new_order(
                    &format!("good-{i}"),
                    "Rua B",
                ))))
                .unwrap()
        })
        .collect();
    let bad_text = writer
        .submit(OrderWrite::Create(Box::new(new_order("a\u{0}b", "Rua C"))))
        .unwrap();
    let bad_json = writer
        .submit(OrderWrite::Create(Box::new(new_order(
            "c",
            "Rua\u{0}Augusta",
        ))))
        .unwrap();
    let bad_key = writer
        .submit(OrderWrite::Key(KeyRow {
            order_id: Uuid::new_v4(),
            customer_id: "c".into(),
            idempotency_key: "k\u{0}".into(),
            fingerprint: "f".into(),
        }))
        .unwrap();
    proxy.restore();
    assert_eq!(within(first.wait()).await, Ok(OrderWritten::Created(true)));
    for g in good {
        assert_eq!(
            within(g.wait()).await,
            Ok(OrderWritten::Created(true)),
            "the rest of the batch commits"
        );
    }
    for bad in [bad_text, bad_json, bad_key] {
        assert!(
            matches!(within(bad.wait()).await, Err(WriteError::Refused(_))),
            "a permanent refusal"
        );
    }
    assert_eq!(sql_i64(&db, "SELECT count(*) AS n FROM orders"), 6);
    assert_eq!(
        writer
            .stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // The writer goes on.
    let after = writer
        .submit(OrderWrite::Create(Box::new(new_order("after", "Rua D"))))
        .unwrap();
    assert_eq!(after.wait().await, Ok(OrderWritten::Created(true)));
    tokio::task::spawn_blocking(move || writer.stop_blocking())
        .await
        .unwrap();
}

/// A key let go (a refused payment's) and the same key recorded again by a retry, in one batch
/// — the refused request stopped waiting for its forget and released the key's lock: the retry
/// records the key anew and keeps it, never sees it vanish under it.
#[actix_web::test]
async fn a_key_let_go_and_recorded_again_in_one_batch_is_recorded() {
    use orderflow::orders::writer::{self, OrderWrite, OrderWritten};
    use orderflow::persistence::orders::KeyState;
    let db = TestDb::new();
    let proxy = Proxy::start(pg_addr());
    let writer = writer::spawn(pool_through(&proxy, &db).await, 1024, None);
    let key = |order_id: Uuid, customer: &str| {
        OrderWrite::Key(KeyRow {
            order_id,
            customer_id: customer.into(),
            idempotency_key: "k".into(),
            fingerprint: "f".into(),
        })
    };
    let (refused, retry) = (Uuid::new_v4(), Uuid::new_v4());
    let first = writer.submit(key(refused, "c-1")).unwrap();
    assert_eq!(
        within(first.wait()).await,
        Ok(OrderWritten::Key(KeyState::New))
    );
    // The writer held up by a batch of its own; the forget and the retry's key queue behind it
    // and go together.
    proxy.cut();
    let blocker = writer.submit(key(Uuid::new_v4(), "c-2")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let forget = writer.submit(OrderWrite::ForgetKey(refused)).unwrap();
    let again = writer.submit(key(retry, "c-1")).unwrap();
    proxy.restore();
    assert_eq!(
        within(blocker.wait()).await,
        Ok(OrderWritten::Key(KeyState::New))
    );
    assert_eq!(within(forget.wait()).await, Ok(OrderWritten::KeyForgotten));
    assert_eq!(
        within(again.wait()).await,
        Ok(OrderWritten::Key(KeyState::New)),
        "the retry records the key anew"
    );
    assert_eq!(
        sql_i64(
            &db,
            &format!(
                "SELECT count(*) AS n FROM checkout_keys WHERE customer_id = 'c-1' \
                 AND order_id = '{retry}'"
            )
        ),
        1,
        "and its key stays"
    );
    tokio::task::spawn_blocking(move || writer.stop_blocking())
        .await
        .unwrap();
}

fn row(sku_name: &str, expected: i64, change_id: Uuid, delta: i64) -> RowWrite {
    RowWrite {
        sku: sku(sku_name),
        on_hand: orderflow::domain::OnHandEffect::Delta(delta),
        reserved_delta: 0,
        events: vec![EventRecord {
            version: expected + 1,
            kind: "adjust",
            quantity: delta,
            on_hand: delta,
            reserved: 0,
            reason: Some("test".into()),
            reference: None,
            change_id,
        }],
    }
}

#[actix_web::test]
async fn a_retried_batch_recognises_its_own_commit_by_change_id() {
    let db = TestDb::new();
    seed_products(&db, &["CID"]);
    let store = PgStore::new(db.pool());
    let (ours, theirs) = (Uuid::new_v4(), Uuid::new_v4());
    // Another change took version 1.
    let rows = [row("CID", 0, theirs, 5)];
    let s = store.clone();
    let written = tokio::task::spawn_blocking(move || s.write_batch(&rows, false))
        .await
        .unwrap();
    assert_eq!(written, Ok(vec![RowOutcome::Applied]));
    // Our retried write, decided on version 0, is not in the log: its delta goes on top (stock
    // changes are deltas, so a row moved by another change meanwhile is no conflict).
    let rows = [row("CID", 0, ours, 3)];
    let s = store.clone();
    let retried = tokio::task::spawn_blocking(move || s.write_batch(&rows, true))
        .await
        .unwrap();
    assert_eq!(retried, Ok(vec![RowOutcome::Applied]));
    assert_eq!(db.stock("CID"), (8, 0, 2));
    // The same change retried after its own commit is recognised by its change id and not
    // written twice.
    let rows = [row("CID", 0, theirs, 5)];
    let s = store.clone();
    let again = tokio::task::spawn_blocking(move || s.write_batch(&rows, true))
        .await
        .unwrap();
    assert_eq!(again, Ok(vec![RowOutcome::Applied]));
    assert_eq!(db.stock("CID"), (8, 0, 2));
    assert_eq!(db.event_count("CID"), 2);
}

#[actix_web::test]
async fn readers_are_never_shown_a_change_the_database_refused() {
    let db = TestDb::new();
    seed_products(&db, &["SHOW"]);
    let store: Arc<dyn Store> = Arc::new(PgStore::new(db.pool()));
    let engine = Engine::start(
        store,
        EngineConfig {
            shards: 1,
            ..EngineConfig::default()
        },
    )
    .await
    .unwrap();
    let show = sku("SHOW");
    let a = engine
        .apply(&show, StockOp::SetOnHand(10), None)
        .await
        .unwrap();
    a.durable.wait().await.unwrap();
    engine.flush().await.unwrap();
    let mut stream = engine.feed().subscribe();
    // Memory believes in 1,000 units; the database refuses the reservation it allows.
    engine
        .fault_corrupt_memory(&show, Ledger::new(1000, 0, 1))
        .await
        .unwrap();
    let oversell = engine.reserve(&show, 50).await.unwrap();
    assert_eq!(
        engine.feed().board().available(&show),
        10,
        "the board waits for the commit"
    );
    assert_eq!(
        oversell.durable.wait().await,
        Err(DurabilityError::Conflict)
    );
    for _ in 0..100 {
        if engine.ledger(&show).await.unwrap() == Ledger::new(10, 0, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut shown = Vec::new();
    while let Ok(event) = stream.try_recv() {
        shown.push(event);
    }
    assert!(
        shown.iter().all(|e| e.available == 10 && e.reserved == 0),
        "only committed states are shown: {shown:?}"
    );
    assert_eq!(engine.feed().board().available(&show), 10);
    engine.shutdown().await;
}

#[actix_web::test]
async fn two_writes_for_one_order_in_one_batch_are_applied_one_after_the_other() {
    use orderflow::orders::writer::{self, OrderWrite, OrderWritten};
    use orderflow::persistence::orders::TransitionRow;
    let db = TestDb::new();
    let proxy = Proxy::start(pg_addr());
    let writer = writer::spawn(pool_through(&proxy, &db).await, 1024, None);
    let row = new_order("twice", "Rua A");
    let id = row.order_id;
    let created = writer.submit(OrderWrite::Create(Box::new(row))).unwrap();
    assert_eq!(
        within(created.wait()).await,
        Ok(OrderWritten::Created(true))
    );
    let transition = |to: OrderStatus| TransitionRow {
        order_id: id,
        from_status: OrderStatus::Received,
        to_status: to,
        delivery: None,
        rejection: None,
        at: Utc::now(),
        via_status: None,
        via_at: None,
        settled: true,
        notification: None,
    };
    // Both queue up behind a batch the outage holds, and are written in one batch.
    proxy.cut();
    let hold = writer
        .submit(OrderWrite::Create(Box::new(new_order("hold", "Rua B"))))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = writer
        .submit(OrderWrite::Transition(Box::new(transition(
            OrderStatus::Cancelled,
        ))))
        .unwrap();
    let reject = writer
        .submit(OrderWrite::Transition(Box::new(transition(
            OrderStatus::Rejected,
        ))))
        .unwrap();
    proxy.restore();
    within(hold.wait()).await.unwrap();
    let (cancel, reject) = (within(cancel.wait()).await, within(reject.wait()).await);
    assert_eq!(
        (cancel, reject),
        (
            Ok(OrderWritten::Moved(true)),
            Ok(OrderWritten::Moved(false))
        ),
        "the first wins; the second finds the order moved"
    );
    assert_eq!(
        sql_i64(
            &db,
            &format!(
                "SELECT jsonb_array_length(history)::int8 AS n FROM orders WHERE order_id = '{id}'"
            )
        ),
        2,
        "received and cancelled, nothing of the loser"
    );
    tokio::task::spawn_blocking(move || writer.stop_blocking())
        .await
        .unwrap();
}
