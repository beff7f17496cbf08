//! The engine on the real PostgreSQL: persistence of every change, restart, the database as the
//! last line against oversell, concurrency, all-or-nothing reservations, actor crashes.

use std::sync::Arc;

use futures_util::future::join_all;
use orderflow::domain::{Ledger, LedgerError, Sku, StockOp};
use orderflow::engine::{DurabilityError, Engine, EngineConfig, EngineError, Store};
use orderflow::persistence::PgStore;

use crate::helpers::{seed_products, TestDb};

/// A database holding product `sku`, a pool of one connection to it, and the engine's store on
/// that pool: the statements a test watches are prepared on that one connection.
fn one_product_on_one_connection(sku: &str) -> (TestDb, orderflow::persistence::DbPool, PgStore) {
    let db = TestDb::new();
    seed_products(&db, &[sku]);
    let pool = orderflow::persistence::connect_pool(&db.url, 1).expect("pool");
    let store = PgStore::new(pool.clone());
    (db, pool, store)
}

/// One stock row's write setting its `on_hand` to `n` (a warehouse count), with its log entry.
fn set_on_hand(s: &str, n: i64) -> orderflow::engine::RowWrite {
    orderflow::engine::RowWrite {
        sku: sku(s),
        on_hand: orderflow::domain::OnHandEffect::Set(n),
        reserved_delta: 0,
        events: vec![orderflow::engine::EventRecord {
            version: 0,
            kind: "set_on_hand",
            quantity: n,
            on_hand: 0,
            reserved: 0,
            reason: None,
            reference: None,
            change_id: uuid::Uuid::new_v4(),
        }],
    }
}

fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

async fn engine_on(db: &TestDb) -> Engine {
    let store: Arc<dyn Store> = Arc::new(PgStore::new(db.pool()));
    let config = EngineConfig {
        shards: 2,
        ..EngineConfig::default()
    };
    Engine::start(store, config).await.expect("engine starts")
}

/// Applies and waits until durable.
async fn durably(engine: &Engine, s: &Sku, op: StockOp) -> Ledger {
    let applied = engine
        .apply(s, op, Some("test".into()))
        .await
        .expect("accepted");
    applied.durable.wait().await.expect("durable");
    applied.ledger
}

#[actix_web::test]
async fn every_ledger_change_is_persisted_with_its_log() {
    let db = TestDb::new();
    seed_products(&db, &["A"]);
    let engine = engine_on(&db).await;
    let a = sku("A");
    let ops = [
        StockOp::SetOnHand(100),
        StockOp::Reserve(5),
        StockOp::Reserve(7),
        StockOp::Release(3),
        StockOp::CommitSale(4),
        StockOp::Adjust(-10),
        StockOp::Adjust(25),
    ];
    let mut log = Vec::new();
    for op in ops {
        let ledger = durably(&engine, &a, op).await;
        let (on_hand, reserved, version) = db.stock("A");
        assert_eq!(
            (on_hand, reserved, version),
            (ledger.level.on_hand, ledger.level.reserved, ledger.version),
            "after {op:?}"
        );
        log.push((ledger.version, ledger.level.on_hand, ledger.level.reserved));
    }
    assert_eq!(db.stock("A"), (111, 5, 7));
    assert_eq!(db.events("A"), log, "each change logged as it left the row");
    // Changes coalesced into one row write are logged one by one, each as it left the row.
    // (Decided one after the other, their durability not awaited: one batch.)
    let mut pending = Vec::new();
    for op in [
        StockOp::Reserve(2),
        StockOp::SetOnHand(50),
        StockOp::Adjust(3),
    ] {
        pending.push(engine.apply(&a, op, None).await.expect("accepted"));
    }
    for p in pending {
        let ledger = p.ledger;
        p.durable.wait().await.expect("durable");
        log.push((ledger.version, ledger.level.on_hand, ledger.level.reserved));
    }
    log.sort();
    assert_eq!(db.events("A"), log);
    assert_eq!(db.stock("A"), (53, 7, 10));
    // A refused operation changes nothing, in memory or on disk.
    let err = engine.reserve(&a, 1000).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::Rejected(LedgerError::Insufficient {
            requested: 1000,
            available: 46
        })
    );
    engine.flush().await.unwrap();
    assert_eq!(db.stock("A"), (53, 7, 10));
    engine.shutdown().await;
}

#[actix_web::test]
async fn restart_rebuilds_exactly_the_durable_state() {
    let db = TestDb::new();
    let names: Vec<String> = (0..20).map(|i| format!("R{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    seed_products(&db, &refs);
    let engine = engine_on(&db).await;
    let mut expected = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let s = sku(name);
        durably(&engine, &s, StockOp::SetOnHand(50 + i as i64)).await;
        let mut last = Ledger::default();
        for _ in 0..i {
            last = durably(&engine, &s, StockOp::Reserve(1)).await;
        }
        if i == 0 {
            last = engine.ledger(&s).await.unwrap();
        }
        expected.push((s, last));
    }
    engine.shutdown().await;

    let restarted = engine_on(&db).await;
    assert_eq!(restarted.sku_count(), names.len());
    for (s, ledger) in &expected {
        assert_eq!(&restarted.ledger(s).await.unwrap(), ledger, "{s}");
    }
    restarted.shutdown().await;
}

#[actix_web::test]
async fn shutdown_writes_what_was_accepted_but_not_yet_awaited() {
    let db = TestDb::new();
    seed_products(&db, &["S"]);
    let engine = engine_on(&db).await;
    let s = sku("S");
    durably(&engine, &s, StockOp::SetOnHand(1000)).await;
    for _ in 0..300 {
        // not awaited: the tickets are dropped
        engine.reserve(&s, 1).await.unwrap();
    }
    engine.shutdown().await;
    assert_eq!(db.stock("S"), (1000, 300, 301));
    assert_eq!(db.event_count("S"), 301);
}

#[actix_web::test]
async fn the_database_refuses_an_oversell_when_memory_is_wrong_and_the_engine_recovers() {
    let db = TestDb::new();
    seed_products(&db, &["HOT"]);
    let engine = engine_on(&db).await;
    let hot = sku("HOT");
    let good = durably(&engine, &hot, StockOp::SetOnHand(10)).await;
    assert_eq!(db.stock("HOT"), (10, 0, 1));

    // Memory now believes there are 1,000 units (same version, so only the CHECK can catch it).
    engine
        .fault_corrupt_memory(&hot, Ledger::new(1000, 0, good.version))
        .await
        .unwrap();
    let oversell = engine.reserve(&hot, 50).await.expect("memory accepts it");
    assert_eq!(oversell.ledger.available(), 950);
    assert_eq!(
        oversell.durable.wait().await,
        Err(DurabilityError::Conflict)
    );
    assert_eq!(db.stock("HOT"), (10, 0, 1), "the database kept the truth");
    assert_eq!(
        db.event_count("HOT"),
        1,
        "no log row for the refused change"
    );

    // The engine reloads the SKU and serves correctly again.
    let mut resynced = false;
    for _ in 0..100 {
        if engine.ledger(&hot).await.unwrap() == Ledger::new(10, 0, 1) {
            resynced = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(resynced, "memory was reloaded from the database");
    let ok = durably(&engine, &hot, StockOp::Reserve(10)).await;
    assert_eq!(ok, Ledger::new(10, 10, 2));
    assert!(matches!(
        engine.reserve(&hot, 1).await,
        Err(EngineError::Rejected(LedgerError::Insufficient { .. }))
    ));
    assert_eq!(db.stock("HOT"), (10, 10, 2));

    // Memory that under-counts what is reserved lets a change through that the database cannot
    // take: refused by the `CHECK`, nothing written.
    engine
        .fault_corrupt_memory(&hot, Ledger::new(10, 0, 2))
        .await
        .unwrap();
    let stale = engine.apply(&hot, StockOp::Adjust(-5), None).await.unwrap();
    assert_eq!(stale.durable.wait().await, Err(DurabilityError::Conflict));
    assert_eq!(db.stock("HOT"), (10, 10, 2));
    engine.shutdown().await;
}

#[actix_web::test]
async fn a_thousand_concurrent_reservations_sell_exactly_the_stock_across_a_restart() {
    let db = TestDb::new();
    let names = ["C0", "C1", "C2", "C3", "C4"];
    seed_products(&db, &names);
    let engine = engine_on(&db).await;
    for n in names {
        durably(&engine, &sku(n), StockOp::SetOnHand(100)).await;
    }
    let race = |engine: Engine, range: std::ops::Range<usize>| {
        let attempts = range.map(move |i| {
            let engine = engine.clone();
            let s = sku(names[i % names.len()]);
            tokio::spawn(async move {
                match engine.reserve(&s, 1).await {
                    Ok(applied) => applied.durable.wait().await.is_ok(),
                    Err(EngineError::Rejected(LedgerError::Insufficient { .. })) => false,
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            })
        });
        join_all(attempts)
    };
    // 400 buyers, a restart (memory rebuilt from the database), then 600 more.
    let first: Vec<bool> = race(engine.clone(), 0..400)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    engine.shutdown().await;
    let engine = engine_on(&db).await;
    let second: Vec<bool> = race(engine.clone(), 400..1000)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let granted = first.iter().chain(&second).filter(|ok| **ok).count();
    assert_eq!(
        first.iter().filter(|ok| **ok).count(),
        400,
        "all fit before the restart"
    );
    assert_eq!(granted, 500, "exactly the stock, across the restart");
    for n in names {
        let (on_hand, reserved, version) = db.stock(n);
        assert_eq!((on_hand, reserved), (100, 100), "{n}");
        assert_eq!(
            on_hand,
            reserved + engine.ledger(&sku(n)).await.unwrap().available()
        );
        assert_eq!(version, 101);
        assert_eq!(db.event_count(n), 101);
    }
    engine.shutdown().await;
}

#[actix_web::test]
async fn a_crashed_actor_is_replaced_from_durable_state() {
    let db = TestDb::new();
    seed_products(&db, &["X"]);
    let engine = engine_on(&db).await;
    let x = sku("X");
    durably(&engine, &x, StockOp::SetOnHand(20)).await;
    durably(&engine, &x, StockOp::Reserve(3)).await;
    // A change that is still on its way to disk when the actor dies must not be lost either.
    let in_flight = engine.reserve(&x, 2).await.unwrap();
    engine.fault_crash_actor(&x).await.unwrap();
    assert_eq!(in_flight.durable.wait().await, Ok(()));

    let after = engine.ledger(&x).await.expect("a new actor answers");
    assert_eq!(after, Ledger::new(20, 5, 3));
    assert_eq!(
        engine.sku_count(),
        1,
        "the dead address was replaced, not added to"
    );
    let next = durably(&engine, &x, StockOp::Reserve(1)).await;
    assert_eq!(next, Ledger::new(20, 6, 4));
    assert_eq!(db.stock("X"), (20, 6, 4));
    engine.shutdown().await;
}

/// A hold belongs to the actor that took it: the actor that replaces a crashed one never had the
/// dead one's holds, and letting one of those go leaves the holds it took itself alone.
#[actix_web::test]
async fn a_hold_of_a_crashed_actor_is_not_let_go_from_its_replacement() {
    let db = TestDb::new();
    seed_products(&db, &["TOK"]);
    let engine = engine_on(&db).await;
    let s = sku("TOK");
    durably(&engine, &s, StockOp::SetOnHand(10)).await;
    let old = engine.hold(&s, 1).await.expect("held");
    engine.fault_crash_actor(&s).await.unwrap();
    let new = engine.hold(&s, 2).await.expect("held by the new actor");
    assert_ne!(old, new);
    engine.drop_hold(&s, 1, old);
    let ledger = engine.ledger(&s).await.unwrap();
    assert_eq!((ledger.held, ledger.available()), (2, 8), "{ledger:?}");
    engine.drop_hold(&s, 2, new);
    assert_eq!(engine.ledger(&s).await.unwrap(), Ledger::new(10, 0, 1));
    assert_eq!(db.stock("TOK"), (10, 0, 1), "a hold is never written");
    engine.shutdown().await;
}

#[actix_web::test]
async fn unknown_skus_are_reported_not_invented() {
    let db = TestDb::new();
    let engine = engine_on(&db).await;
    assert_eq!(
        engine.reserve(&sku("GHOST"), 1).await.unwrap_err(),
        EngineError::UnknownSku
    );
    assert_eq!(engine.sku_count(), 0);
    // A product created after start is picked up on first use.
    seed_products(&db, &["LATE"]);
    let ledger = durably(&engine, &sku("LATE"), StockOp::SetOnHand(3)).await;
    assert_eq!(ledger, Ledger::new(3, 0, 1));
    engine.shutdown().await;
}

#[actix_web::test]
async fn a_database_outage_delays_durability_but_loses_nothing() {
    use crate::helpers::Proxy;
    use std::time::Duration;

    let db = TestDb::new();
    seed_products(&db, &["OUT"]);
    let proxy = Proxy::start(crate::helpers::pg_addr());
    let url = proxy.pg_url(&db.url);
    assert_ne!(url, db.url, "the test database goes through the proxy");
    let pool = tokio::task::spawn_blocking(move || orderflow::persistence::connect_pool(&url, 4))
        .await
        .unwrap()
        .expect("pool via proxy");
    let store: Arc<dyn Store> = Arc::new(PgStore::new(pool));
    let engine = Engine::start(
        store,
        EngineConfig {
            shards: 2,
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine");
    let out = sku("OUT");
    durably(&engine, &out, StockOp::SetOnHand(10)).await;

    proxy.cut();
    let reserved = engine
        .reserve(&out, 3)
        .await
        .expect("memory decides without the database");
    let mut durable = Box::pin(reserved.durable.wait());
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut durable)
            .await
            .is_err(),
        "nothing is reported durable while the database is away"
    );
    let mut unhealthy = false;
    for _ in 0..50 {
        if !engine.is_healthy() {
            unhealthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unhealthy, "the engine reports that it cannot write");
    assert_eq!(db.stock("OUT"), (10, 0, 1));

    proxy.restore();
    let settled = tokio::time::timeout(Duration::from_secs(20), &mut durable).await;
    assert_eq!(
        settled,
        Ok(Ok(())),
        "the retried batch commits once the database is back"
    );
    assert_eq!(db.stock("OUT"), (10, 3, 2));
    assert_eq!(db.event_count("OUT"), 2, "written once, not once per retry");
    assert!(engine.is_healthy());
    engine.shutdown().await;
}

#[actix_web::test]
async fn a_slow_stock_reader_never_slows_the_engine_and_is_told_what_it_missed() {
    use orderflow::engine::MemStore;
    use tokio::sync::broadcast::error::RecvError;

    let store = Arc::new(MemStore::new());
    store.put(sku("FAST"), Ledger::new(1_000, 0, 0));
    let store: Arc<dyn Store> = store;
    let engine = Engine::start(
        store,
        EngineConfig {
            shards: 1,
            feed_capacity: 16,
            ..EngineConfig::default()
        },
    )
    .await
    .unwrap();
    let mut slow = engine.feed().subscribe();
    let fast = sku("FAST");
    // 100 changes while the reader reads nothing: none of them waits for it.
    for _ in 0..100 {
        engine
            .reserve(&fast, 1)
            .await
            .expect("never blocked by the reader");
    }
    // Readers hear of changes once committed.
    engine.flush().await.unwrap();
    match slow.recv().await {
        Err(RecvError::Lagged(missed)) => assert_eq!(missed, 84),
        other => panic!("expected to be told about the gap, got {other:?}"),
    }
    // Then the newest 16, in order.
    let versions: Vec<i64> = (0..16).map(|_| slow.try_recv().unwrap().version).collect();
    assert_eq!(versions, (85..=100).collect::<Vec<_>>());
    assert_eq!(engine.feed().board().available(&fast), 900);
    engine.shutdown().await;
}

/// Issue 19: the stock batch is one statement the writer's connection prepares once and keeps
/// (parsed and planned once, not per batch): three batches, one prepared statement.
#[test]
fn the_stock_batch_statement_is_prepared_once_per_connection() {
    use diesel::RunQueryDsl;
    use orderflow::engine::RowOutcome;
    let (db, pool, store) = one_product_on_one_connection("P");
    for n in 1..=3 {
        let row = set_on_hand("P", 10 * n);
        assert_eq!(
            store.write_batch(&[row], false).expect("written"),
            [RowOutcome::Applied]
        );
    }
    assert_eq!(db.stock("P").0, 30);
    assert_eq!(db.events("P").len(), 3);
    // The store kept the pool's only connection; dropped, it goes back, and that session shows
    // what it prepared.
    drop(store);
    #[derive(diesel::QueryableByName)]
    struct Statement {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement: String,
    }
    let prepared: Vec<Statement> =
        diesel::sql_query("SELECT statement FROM pg_prepared_statements")
            .load(&mut pool.get().expect("the same connection"))
            .unwrap();
    let batch = prepared
        .iter()
        .filter(|p| p.statement.contains("INSERT INTO stock_events"))
        .count();
    assert_eq!(batch, 1, "one prepared batch statement");
}

/// Intake's key batch, its lookup of a refused checkout's key and the writer's order creation
/// look `checkout_keys` up one unique-index probe per row, whatever the table holds, so both can keep one generic plan per connection:
/// planned as joins over a batch estimated at 100 rows, the key batch scanned the whole table on
/// every batch (20,000 keys read per batch in a closed-loop run at 20,000 orders).
#[test]
fn intake_keys_and_order_creation_probe_checkout_keys_whatever_it_holds() {
    use diesel::RunQueryDsl;
    use orderflow::persistence::keys::{
        forget_unused_keys, record_keys, recorded_keys, KeyRow, KeyState, RecordedKey,
    };
    use orderflow::persistence::orders::create_orders;
    let db = TestDb::new();
    diesel::sql_query(
        "INSERT INTO checkout_keys (order_id, customer_id, idempotency_key, fingerprint)
         SELECT gen_random_uuid(), 'old-' || i, 'k', 'f' FROM generate_series(1, 20000) i",
    )
    .execute(&mut db.conn())
    .unwrap();
    let pool = orderflow::persistence::connect_pool(&db.url, 1).expect("pool");
    let mut conn = pool.get().expect("the pool's one connection");
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let seq_scans = |conn: &mut diesel::PgConnection| -> i64 {
        // This session's counts reach the shared statistics when it is next idle.
        diesel::sql_query("SELECT pg_stat_force_next_flush()")
            .execute(conn)
            .unwrap();
        diesel::sql_query(
            "SELECT seq_scan AS n FROM pg_stat_user_tables WHERE relname = 'checkout_keys'",
        )
        .get_result::<Count>(conn)
        .unwrap()
        .n
    };
    let before = seq_scans(&mut conn);
    // More rounds than the five custom plans PostgreSQL makes before it may keep a generic one.
    for round in 0..8 {
        let keys: Vec<KeyRow> = (0..20)
            .map(|i| KeyRow {
                order_id: uuid::Uuid::new_v4(),
                customer_id: format!("c-{round}-{i}"),
                idempotency_key: "k".into(),
                fingerprint: "f".into(),
            })
            .collect();
        // Looked up before they are recorded (a refusal's lookup): none is there, none is left.
        let lookups: Vec<KeyRow> = keys
            .iter()
            .map(|k| KeyRow {
                order_id: uuid::Uuid::new_v4(),
                ..k.clone()
            })
            .collect();
        let found = recorded_keys(&mut conn, &lookups).expect("keys looked up");
        assert!(found.is_empty(), "{found:?}");
        let states = record_keys(&mut conn, &keys).expect("keys recorded");
        assert!(states.iter().all(|s| *s == KeyState::New), "{states:?}");
        // Each key looked up by the lookup's id: its order id, fingerprint and order status.
        let each_found = |conn: &mut diesel::PgConnection, status| {
            let found = recorded_keys(conn, &lookups).expect("keys looked up");
            assert_eq!(found.len(), 20);
            for (asked, k) in lookups.iter().zip(&keys) {
                let expected = RecordedKey {
                    order_id: k.order_id,
                    fingerprint: "f".into(),
                    status,
                };
                assert_eq!(found.get(&asked.order_id), Some(&expected));
            }
        };
        // Recorded, no order yet: no status.
        each_found(&mut conn, None);
        // The same keys again: each is known, with its order id and fingerprint.
        let again = record_keys(&mut conn, &keys).expect("keys looked up");
        for (k, s) in keys.iter().zip(&again) {
            assert_eq!(
                *s,
                KeyState::Known(RecordedKey {
                    order_id: k.order_id,
                    fingerprint: "f".into(),
                    status: None
                })
            );
        }
        let rows: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "order_id": k.order_id, "idempotency_key": k.idempotency_key,
                    "request_fingerprint": k.fingerprint, "customer_id": k.customer_id,
                    "origin": "http", "status": "scheduled", "items": [], "total_cents": 1,
                    "currency": "BRL", "delivery_method": "standard", "shipping_address": {},
                    "payment": {"method": "pix"}, "history": [], "at": "2026-12-07T00:00:00Z",
                    "updated_at": "2026-12-07T00:00:00Z", "settled": true
                })
            })
            .collect();
        let created = create_orders(&mut conn, &rows).expect("orders created");
        assert_eq!(created.len(), 20, "every order with its own key is created");
        // A key whose order exists is never let go.
        let ids: Vec<uuid::Uuid> = keys.iter().map(|k| k.order_id).collect();
        forget_unused_keys(&mut conn, &ids).expect("nothing to forget");
        // Looked up now: the order's status too.
        each_found(
            &mut conn,
            Some(orderflow::domain::order::OrderStatus::Scheduled),
        );
    }
    assert_eq!(
        seq_scans(&mut conn) - before,
        0,
        "no batch scanned checkout_keys whole"
    );
    #[derive(diesel::QueryableByName)]
    struct Statement {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement: String,
    }
    let prepared: Vec<Statement> =
        diesel::sql_query("SELECT statement FROM pg_prepared_statements")
            .load(&mut conn)
            .unwrap();
    let of = |table: &str| {
        prepared
            .iter()
            .filter(|p| p.statement.contains(&format!("INSERT INTO {table} ")))
            .count()
    };
    assert_eq!(
        of("checkout_keys"),
        2,
        "the key batch and the creation, prepared once each"
    );
    assert_eq!(
        prepared
            .iter()
            .filter(|p| p
                .statement
                .contains("JOIN LATERAL (SELECT k.order_id, k.fingerprint"))
            .count(),
        2,
        "the key batch and the lookup, prepared once each"
    );
    assert_eq!(of("orders"), 1, "the creation, prepared once");
}

/// An order is created only if its key allows it: the key intake recorded for it must be this
/// request's (customer, key and fingerprint); an order whose key was never recorded (another
/// system's message) is created only while its customer's key stands for no other order, and
/// its key is recorded with it. Whatever was refused leaves the tables as they were.
#[test]
fn an_order_is_created_only_where_its_key_allows_it() {
    use diesel::RunQueryDsl;
    use orderflow::persistence::keys::{record_keys, KeyRow};
    use orderflow::persistence::orders::create_orders;
    use uuid::Uuid;
    let db = TestDb::new();
    let mut conn = db.conn();
    let key = |order_id: Uuid, customer: &str, k: &str, fp: &str| KeyRow {
        order_id,
        customer_id: customer.into(),
        idempotency_key: k.into(),
        fingerprint: fp.into(),
    };
    let row = |order_id: Uuid, customer: &str, k: &str, fp: &str| {
        serde_json::json!({
            "order_id": order_id, "idempotency_key": k, "request_fingerprint": fp,
            "customer_id": customer, "origin": "http", "status": "scheduled", "items": [],
            "total_cents": 1, "currency": "BRL", "delivery_method": "standard",
            "shipping_address": {}, "payment": {"method": "pix"}, "history": [],
            "at": "2026-12-07T00:00:00Z", "updated_at": "2026-12-07T00:00:00Z", "settled": true
        })
    };
    let ids: Vec<Uuid> = (0..7).map(|_| Uuid::new_v4()).collect();
    // Intake recorded: 0 (this request), 1 (another fingerprint), 2 (another customer's key
    // under this id), 3 (another key of the same customer); and a key of customer c-4 stands
    // for order 6 already.
    record_keys(
        &mut conn,
        &[
            key(ids[0], "c-0", "k", "f"),
            key(ids[1], "c-1", "k", "f"),
            key(ids[2], "c-9", "k", "f"),
            key(ids[3], "c-3", "other", "f"),
            key(ids[6], "c-4", "k", "f"),
        ],
    )
    .expect("keys recorded");
    let created = create_orders(
        &mut conn,
        &[
            row(ids[0], "c-0", "k", "f"),
            row(ids[1], "c-1", "k", "g"),
            row(ids[2], "c-2", "k", "f"),
            row(ids[3], "c-3", "k", "f"),
            // Never recorded: 4's key is order 6's, 5's is free.
            row(ids[4], "c-4", "k", "f"),
            row(ids[5], "c-5", "k", "f"),
        ],
    )
    .expect("creation");
    let expected: std::collections::HashSet<Uuid> = [ids[0], ids[5]].into();
    assert_eq!(created, expected);
    #[derive(diesel::QueryableByName, Debug, PartialEq)]
    struct Key {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        order_id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Text)]
        customer_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        idempotency_key: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        fingerprint: String,
    }
    let keys: Vec<Key> = diesel::sql_query(
        "SELECT order_id, customer_id, idempotency_key, fingerprint FROM checkout_keys
         ORDER BY customer_id, idempotency_key",
    )
    .load(&mut conn)
    .unwrap();
    let k = |order_id: Uuid, customer: &str, key: &str| Key {
        order_id,
        customer_id: customer.into(),
        idempotency_key: key.into(),
        fingerprint: "f".into(),
    };
    assert_eq!(
        keys,
        vec![
            k(ids[0], "c-0", "k"),
            k(ids[1], "c-1", "k"),
            k(ids[3], "c-3", "other"),
            k(ids[6], "c-4", "k"),
            k(ids[5], "c-5", "k"),
            k(ids[2], "c-9", "k"),
        ],
        "the new order's key recorded once, every other key as it was"
    );
    // Created again (a redelivery): nothing new, nothing refused twice over.
    let again = create_orders(
        &mut conn,
        &[row(ids[0], "c-0", "k", "f"), row(ids[5], "c-5", "k", "f")],
    )
    .expect("creation again");
    assert!(again.is_empty(), "{again:?}");
}

/// The stock batch is prepared once per connection; a generic plan made while `stock` held a
/// few rows joins it by a whole scan, and would keep doing so as the catalog grows unless the
/// table's statistics change. A product created when the table has doubled since PostgreSQL last
/// measured it refreshes them, so the batches go back to one index probe per row.
#[test]
fn the_stock_batch_is_planned_again_by_index_once_the_catalog_has_grown() {
    use diesel::RunQueryDsl;
    use orderflow::engine::{RowOutcome, RowWrite};
    let db = TestDb::new();
    let small: Vec<String> = (0..50).map(|i| format!("S{i:03}")).collect();
    seed_products(&db, &small.iter().map(String::as_str).collect::<Vec<_>>());
    let pool = orderflow::persistence::connect_pool(&db.url, 1).expect("pool");
    let store = PgStore::new(pool);
    let mut writes = 0;
    let mut round = |n: i64| {
        let rows: Vec<RowWrite> = small[..20].iter().map(|s| set_on_hand(s, n)).collect();
        let outcomes = store.write_batch(&rows, false).expect("written");
        assert!(outcomes.iter().all(|o| *o == RowOutcome::Applied));
        writes += 20;
        writes
    };
    #[derive(diesel::QueryableByName)]
    struct Counts {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        seq_scan: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n_tup_upd: i64,
    }
    // The statistics of the writer's session, once it has reported its `updates` (a session
    // reports when idle, at most once a second).
    let scans_after = |updates: i64| -> i64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let c: Counts = diesel::sql_query(
                "SELECT seq_scan, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'stock'",
            )
            .get_result(&mut db.conn())
            .unwrap();
            if c.n_tup_upd >= updates {
                return c.seq_scan;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no statistics reported"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    // Planned (custom five times, then generic) while the table is small.
    let mut updates = 0;
    for n in 1..=8 {
        updates = round(n);
    }
    let before = scans_after(updates);
    // The catalog grows (loaded in bulk), and one more product is created the usual way.
    diesel::sql_query(
        "WITH p AS (INSERT INTO products (sku, name, category, tags, price_cents, currency)
                    SELECT 'B' || i, 'bulk', 'test', '{}', 100, 'BRL'
                    FROM generate_series(1, 20000) i RETURNING sku)
         INSERT INTO stock (sku) SELECT sku FROM p",
    )
    .execute(&mut db.conn())
    .unwrap();
    seed_products(&db, &["GROWN"]);
    for n in 9..=16 {
        updates = round(n);
    }
    assert_eq!(
        scans_after(updates) - before,
        0,
        "the batches over a grown catalog did not scan stock whole"
    );
    assert_eq!(db.stock("S000").0, 16);
}

/// A migration run by another instance changes the type of a column a prepared statement returns:
/// PostgreSQL answers that connection "cached plan must not change result type" on every use.
/// That is transient — retried, never refused, so no order is dead-lettered or answered 422 for
/// it — and the connection prepares its statements again, so the retry goes through.
#[test]
fn a_schema_change_under_a_prepared_statement_is_retried_not_refused() {
    use diesel::RunQueryDsl;
    use orderflow::engine::{RowOutcome, StoreError};
    use orderflow::persistence::keys::{record_keys, KeyRow};
    let (db, pool, store) = one_product_on_one_connection("P");
    let row = |n: i64| set_on_hand("P", n);
    assert_eq!(
        store.write_batch(&[row(1)], false).expect("written"),
        [RowOutcome::Applied]
    );
    // The same values, another type for the column the stock batch returns.
    diesel::sql_query("ALTER TABLE stock ALTER COLUMN sku TYPE varchar(64)")
        .execute(&mut db.conn())
        .unwrap();
    match store.write_batch(&[row(2)], false) {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("cached plan"), "{why}"),
        other => panic!("a stale prepared statement must be a transient failure: {other:?}"),
    }
    assert_eq!(
        store.write_batch(&[row(2)], false).expect("prepared again"),
        [RowOutcome::Applied]
    );
    assert_eq!(db.stock("P").0, 2);
    drop(store);

    // Intake's key batch on a connection that prepared it before such a change.
    let mut conn = pool.get().expect("the pool's one connection");
    let key = |i: u32| KeyRow {
        order_id: uuid::Uuid::new_v4(),
        customer_id: format!("c-{i}"),
        idempotency_key: "k".into(),
        fingerprint: "f".into(),
    };
    record_keys(&mut conn, &[key(1)]).expect("recorded");
    diesel::sql_query("ALTER TABLE checkout_keys ALTER COLUMN fingerprint TYPE varchar(64)")
        .execute(&mut db.conn())
        .unwrap();
    let stale = record_keys(&mut conn, &[key(2)]).expect_err("the statement is stale");
    assert!(
        stale.is_transient(),
        "a stale prepared statement is transient: {stale}"
    );
}

/// The staged path's status changes (a cancel, a redelivery resuming an order) find their orders
/// by index, however many orders the table holds: joined only to a batch PostgreSQL estimates at
/// 100 rows, `orders` was hashed whole on every batch until the table grew large.
#[test]
fn status_changes_find_their_orders_by_index_whatever_the_table_holds() {
    use diesel::RunQueryDsl;
    use orderflow::domain::order::OrderStatus;
    use orderflow::persistence::orders::{apply_transitions, create_orders, TransitionRow};
    let db = TestDb::new();
    diesel::sql_query(
        "INSERT INTO orders (order_id, idempotency_key, request_fingerprint, customer_id, origin,
                             status, items, total_cents, currency, delivery_method,
                             shipping_address, payment)
         SELECT gen_random_uuid(), 'k', 'f', 'old-' || i, 'http', 'scheduled', '[]', 1, 'BRL',
                'standard', '{}', '{}'
         FROM generate_series(1, 20000) i",
    )
    .execute(&mut db.conn())
    .unwrap();
    let mut conn = db.conn();
    let ids: Vec<uuid::Uuid> = (0..20).map(|_| uuid::Uuid::new_v4()).collect();
    let rows: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "order_id": id, "idempotency_key": "k", "request_fingerprint": "f",
                "customer_id": format!("c-{id}"), "origin": "http", "status": "received",
                "items": [], "total_cents": 1, "currency": "BRL", "delivery_method": "standard",
                "shipping_address": {}, "payment": {"method": "pix"}, "history": [],
                "at": "2026-12-07T00:00:00Z", "updated_at": "2026-12-07T00:00:00Z",
                "settled": true
            })
        })
        .collect();
    assert_eq!(create_orders(&mut conn, &rows).expect("created").len(), 20);
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let seq_scans = |conn: &mut diesel::PgConnection| -> i64 {
        diesel::sql_query("SELECT pg_stat_force_next_flush()")
            .execute(conn)
            .unwrap();
        diesel::sql_query("SELECT seq_scan AS n FROM pg_stat_user_tables WHERE relname = 'orders'")
            .get_result::<Count>(conn)
            .unwrap()
            .n
    };
    let before = seq_scans(&mut conn);
    let at = chrono::Utc::now();
    let cancel = |from: OrderStatus, id: &uuid::Uuid| TransitionRow {
        order_id: *id,
        from_status: from,
        to_status: OrderStatus::Cancelled,
        delivery: None,
        rejection: None,
        at,
        via_status: None,
        via_at: None,
        settled: true,
        notification: None,
    };
    let moved = apply_transitions(
        &mut conn,
        &ids.iter()
            .map(|id| cancel(OrderStatus::Received, id))
            .collect::<Vec<_>>(),
    )
    .expect("applied");
    assert_eq!(moved.len(), 20, "every received order is cancelled");
    // Guarded by the status it leaves: the same change again moves nothing.
    let again = apply_transitions(
        &mut conn,
        &ids.iter()
            .map(|id| cancel(OrderStatus::Received, id))
            .collect::<Vec<_>>(),
    )
    .expect("applied");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        seq_scans(&mut conn) - before,
        0,
        "no status change scanned orders whole"
    );
}
