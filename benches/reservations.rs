//! Reservation throughput of the engine, beside the conventional baseline, in one run.
//!
//! (a) `memory/hot_sku`      reservations/s on one hot SKU through its actor (in-memory store)
//! (b) `memory/10k_skus`     reservations/s spread over 10,000 SKUs (in-memory store)
//! (c) `durable/hot_sku`     reservations/s on one hot SKU, each awaited until committed to
//!                           Postgres by the write-behind persister
//! (d) `baseline/hot_sku`    the conventional checkout: one transaction per order,
//!                           `UPDATE … SET available = available - $q WHERE sku = $s AND available >= $q`,
//!                           same Postgres, same number of concurrent clients
//!
//! Postgres: `BENCH_PG_BASE` (default `postgres://postgres@127.0.0.1:5432`); the benchmark creates
//! and drops its own database. `BENCH_CONCURRENCY` (default 64) clients run at once in every case.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diesel::prelude::*;
use futures_util::future::join_all;
use orderflow::domain::{Ledger, Product, Sku, StockOp};
use orderflow::engine::{Engine, EngineConfig, EngineError, MemStore, Store};
use orderflow::persistence::{self, PgStore};

const HUGE_STOCK: i64 = 1_000_000_000_000;

fn concurrency() -> u64 {
    std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&c| c > 0)
        .unwrap_or(64)
}

fn pg_base() -> String {
    std::env::var("BENCH_PG_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn skus(n: usize) -> Vec<Sku> {
    (0..n)
        .map(|i| Sku::parse(&format!("SKU-{i:05}")).unwrap())
        .collect()
}

/// Runs `total` reservations with `concurrency()` clients; each client reserves one unit at a
/// time, waiting for durability when `durable`. Returns the elapsed time.
async fn drive(engine: &Engine, targets: &Arc<Vec<Sku>>, total: u64, durable: bool) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let clients = (0..concurrency()).map(|_| {
        let (engine, targets, next) = (engine.clone(), Arc::clone(targets), Arc::clone(&next));
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let sku = &targets[(i as usize * 7919) % targets.len()];
                loop {
                    match engine.apply(sku, StockOp::Reserve(1), None).await {
                        Ok(applied) => {
                            if durable {
                                applied.durable.wait().await.expect("durable");
                            }
                            break;
                        }
                        // The write-behind queue is full: back off like a client would.
                        Err(EngineError::Overloaded) => {
                            tokio::time::sleep(Duration::from_micros(200)).await
                        }
                        Err(e) => panic!("reservation failed: {e}"),
                    }
                }
            }
        })
    });
    for r in join_all(clients).await {
        r.expect("client task");
    }
    start.elapsed()
}

fn memory_engine(system: &actix_rt::SystemRunner, n: usize) -> (Engine, Arc<Vec<Sku>>) {
    let store = Arc::new(MemStore::new());
    let targets = skus(n);
    for s in &targets {
        store.put(s.clone(), Ledger::new(HUGE_STOCK, 0, 0));
    }
    let store: Arc<dyn Store> = store;
    let engine = system
        .block_on(Engine::start(store, EngineConfig::default()))
        .expect("engine");
    (engine, Arc::new(targets))
}

fn in_memory(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let mut group = c.benchmark_group("reservations");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for (name, n) in [("memory/hot_sku", 1usize), ("memory/10k_skus", 10_000)] {
        let (engine, targets) = memory_engine(&system, n);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| system.block_on(drive(&engine, &targets, iters, false)))
        });
        system.block_on(engine.shutdown());
    }
    group.finish();
}

struct BenchDb {
    name: String,
    url: String,
}

impl BenchDb {
    fn new() -> BenchDb {
        let name = format!("orderflow_bench_{}", std::process::id());
        let url = format!("{}/{}", pg_base(), name);
        persistence::prepare_database(&url).expect("bench database (is PostgreSQL running?)");
        BenchDb { name, url }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&format!("{}/postgres", pg_base())) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

fn durable_vs_baseline(c: &mut Criterion) {
    let db = BenchDb::new();
    let system = actix_rt::System::new();
    let hot = Sku::parse("HOT").unwrap();
    let mut conn = PgConnection::establish(&db.url).expect("connect");
    persistence::products::upsert(
        &mut conn,
        &Product {
            sku: hot.clone(),
            name: "hot".into(),
            category: "bench".into(),
            tags: vec![],
            price_cents: 1,
            currency: "BRL".into(),
            attributes: Default::default(),
        },
    )
    .expect("product");
    diesel::sql_query(format!("UPDATE stock SET on_hand = {HUGE_STOCK}"))
        .execute(&mut conn)
        .expect("stock");
    diesel::sql_query(
        "CREATE TABLE baseline_stock (sku TEXT PRIMARY KEY, available BIGINT NOT NULL CHECK (available >= 0))",
    )
    .execute(&mut conn)
    .expect("baseline table");
    diesel::sql_query(format!(
        "INSERT INTO baseline_stock VALUES ('HOT', {HUGE_STOCK})"
    ))
    .execute(&mut conn)
    .expect("baseline row");

    let clients = concurrency();
    let pool = persistence::connect_pool(&db.url, (clients as u32).clamp(2, 80)).expect("pool");
    let store: Arc<dyn Store> = Arc::new(PgStore::new(pool.clone()));
    let engine = system
        .block_on(Engine::start(store, EngineConfig::default()))
        .expect("engine");
    let targets = Arc::new(vec![hot]);

    let mut group = c.benchmark_group("reservations");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    group.bench_function("durable/hot_sku", |b| {
        b.iter_custom(|iters| system.block_on(drive(&engine, &targets, iters, true)))
    });
    group.bench_function("baseline/hot_sku", |b| {
        b.iter_custom(|iters| {
            let next = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..clients {
                    let (pool, next) = (pool.clone(), Arc::clone(&next));
                    scope.spawn(move || {
                        let mut conn = pool.get().expect("connection");
                        while next.fetch_add(1, Ordering::Relaxed) < iters {
                            let updated = conn
                                .transaction(|conn| {
                                    diesel::sql_query(
                                        "UPDATE baseline_stock SET available = available - $2
                                         WHERE sku = $1 AND available >= $2",
                                    )
                                    .bind::<diesel::sql_types::Text, _>("HOT")
                                    .bind::<diesel::sql_types::BigInt, _>(1i64)
                                    .execute(conn)
                                })
                                .expect("baseline update");
                            assert_eq!(updated, 1);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
    system.block_on(engine.shutdown());
}

criterion_group!(benches, in_memory, durable_vs_baseline);
criterion_main!(benches);
