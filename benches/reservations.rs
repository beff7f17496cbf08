//! Reservation throughput of the engine, beside the conventional baseline, in one run.
//!
//! (a) `memory/hot_sku`      reservations/s on one hot SKU through its actor (in-memory store)
//! (b) `memory/10k_skus`     reservations/s spread over 10,000 SKUs (in-memory store)
//! (c) `durable/hot_sku/N`   reservations/s on one hot SKU, each awaited until committed to
//!                           Postgres by the write-behind persister, N concurrent clients
//! (d) `baseline/hot_sku/N`  the conventional checkout: one transaction per order,
//!                           `UPDATE … SET available = available - $q WHERE sku = $s AND available >= $q`,
//!                           same Postgres, N concurrent clients
//! (e) `redis/hot_sku/N`     what people pick instead: Redis with a Lua check-and-decrement
//!                           (`EVALSHA`), `appendonly yes` + `appendfsync always` (every write in
//!                           the append-only file, fsynced, before the reply), N clients each on
//!                           a connection of its own. The bench starts its own `redis-server` on
//!                           a free port with a scratch directory under the target directory
//!                           (the machine's own Redis keeps nothing on disk; /tmp may be a
//!                           tmpfs); after the case the append-only file must have grown by a
//!                           command per reservation. Without `redis-server` installed, (e) is
//!                           skipped with a message.
//!
//! Fair to both sides: every durable case runs on a fresh database after a `CHECKPOINT` (no WAL
//! or vacuum debt from the case before), with a connection pool of its own — the baseline's sized
//! to its clients (capped below PostgreSQL's `max_connections`, which it then queues on), the
//! engine's small (its persister writes on one connection). (a) and (b) include the persister's
//! flush in their time, so no backlog is left out. After each durable case the database must
//! hold exactly the reservations the clients were told were made. Latency percentiles of each
//! case are printed after the throughput.
//!
//! Postgres: `BENCH_PG_BASE` (default `postgres://postgres@127.0.0.1:5432`); the benchmark creates
//! and drops its own databases. `BENCH_CONCURRENCY` (default 64) clients in (a)–(d); (c) and (d)
//! run again at 256 clients to show how they scale.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "reservations/redis_case.rs"]
mod redis_case;
use diesel::prelude::*;
use futures_util::future::join_all;
use orderflow::domain::{Ledger, Product, Sku, StockOp};
use orderflow::engine::{Engine, EngineConfig, EngineError, MemStore, Store};
use orderflow::persistence::{self, PgStore};

pub(crate) const HUGE_STOCK: i64 = 1_000_000_000_000;

fn concurrency() -> u64 {
    // Clients in (a)–(d).
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

/// The group every case runs in: 10 samples of `seconds`, throughput in reservations.
pub(crate) fn reservations_group(
    c: &mut Criterion,
    seconds: u64,
) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group("reservations");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(seconds));
    group.throughput(Throughput::Elements(1));
    group
}

/// Latencies of one case, in microseconds.
#[derive(Default)]
pub(crate) struct Latencies(std::sync::Mutex<Vec<u32>>);

impl Latencies {
    pub(crate) fn record(&self, took: Duration) {
        if let Ok(mut all) = self.0.lock() {
            all.push(took.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }

    pub(crate) fn report(&self, case: &str) {
        let Ok(mut all) = self.0.lock() else { return };
        if all.is_empty() {
            return;
        }
        all.sort_unstable();
        let at = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
        println!(
            "latency {case}: p50 {} µs, p95 {} µs, p99 {} µs, max {} µs ({} reservations)",
            at(0.50),
            at(0.95),
            at(0.99),
            all[all.len() - 1],
            all.len()
        );
    }
}

/// Runs `total` reservations with `clients` clients; each client reserves one unit at a time,
/// waiting for durability when `durable`. Without `durable` the persister is flushed before the
/// clock stops. Returns the elapsed time; `made` counts the reservations granted.
async fn drive(
    engine: &Engine,
    targets: &Arc<Vec<Sku>>,
    total: u64,
    durable: bool,
    clients: u64,
    latencies: &Arc<Latencies>,
    made: &Arc<AtomicU64>,
) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks = (0..clients).map(|_| {
        let (engine, targets, next) = (engine.clone(), Arc::clone(targets), Arc::clone(&next));
        let (latencies, made) = (Arc::clone(latencies), Arc::clone(made));
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let sku = &targets[(i as usize * 7919) % targets.len()];
                let began = Instant::now();
                loop {
                    match engine.apply(sku, StockOp::Reserve(1), None).await {
                        Ok(applied) => {
                            if durable {
                                applied.durable.wait().await.expect("durable");
                            }
                            made.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        // The write-behind queue is full: back off like a client would.
                        Err(EngineError::Overloaded) => {
                            tokio::time::sleep(Duration::from_micros(200)).await
                        }
                        Err(e) => panic!("reservation failed: {e}"),
                    }
                }
                latencies.record(began.elapsed());
            }
        })
    });
    for r in join_all(tasks).await {
        r.expect("client task");
    }
    if !durable {
        // What memory decided is on disk (here: the in-memory store) before the clock stops.
        engine.flush().await.expect("flush");
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
    let mut group = reservations_group(c, 5);
    let mut reports = Vec::new();
    for (name, n) in [("memory/hot_sku", 1usize), ("memory/10k_skus", 10_000)] {
        let (engine, targets) = memory_engine(&system, n);
        let latencies = Arc::new(Latencies::default());
        let made = Arc::new(AtomicU64::new(0));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(drive(
                    &engine,
                    &targets,
                    iters,
                    false,
                    concurrency(),
                    &latencies,
                    &made,
                ))
            })
        });
        system.block_on(engine.shutdown());
        reports.push((name, latencies));
    }
    group.finish();
    for (name, latencies) in reports {
        latencies.report(name);
    }
}

struct BenchDb {
    name: String,
    url: String,
}

impl BenchDb {
    /// A fresh database, migrated, after a checkpoint (no write-ahead-log debt from before).
    fn new(case: &str) -> BenchDb {
        let name = format!("orderflow_bench_{}_{case}", std::process::id());
        let url = format!("{}/{}", pg_base(), name);
        persistence::prepare_database(&url).expect("bench database (is PostgreSQL running?)");
        let db = BenchDb { name, url };
        diesel::sql_query("CHECKPOINT")
            .execute(&mut db.conn())
            .expect("checkpoint");
        db
    }

    fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("connect")
    }

    fn value(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct One {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            v: i64,
        }
        diesel::sql_query(sql)
            .get_result::<One>(&mut self.conn())
            .expect(sql)
            .v
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

/// PostgreSQL's connection limit, less a margin for everything else on the machine.
fn connection_cap(db: &BenchDb) -> u32 {
    let max = db.value("SELECT current_setting('max_connections')::bigint AS v");
    (max - 15).clamp(2, 1000) as u32
}

fn durable_case(c: &mut Criterion, system: &actix_rt::SystemRunner, clients: u64) {
    let db = BenchDb::new(&format!("durable{clients}"));
    let hot = Sku::parse("HOT").unwrap();
    persistence::products::upsert(
        &mut db.conn(),
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
        .execute(&mut db.conn())
        .expect("stock");
    diesel::sql_query("CHECKPOINT")
        .execute(&mut db.conn())
        .expect("checkpoint");
    let pool = persistence::connect_pool(&db.url, 4).expect("pool");
    let store: Arc<dyn Store> = Arc::new(PgStore::new(pool));
    let engine = system
        .block_on(Engine::start(store, EngineConfig::default()))
        .expect("engine");
    let targets = Arc::new(vec![hot]);
    let latencies = Arc::new(Latencies::default());
    let made = Arc::new(AtomicU64::new(0));
    let name = format!("durable/hot_sku/{clients}");
    let mut group = reservations_group(c, 8);
    group.bench_function(&name, |b| {
        b.iter_custom(|iters| {
            system.block_on(drive(
                &engine, &targets, iters, true, clients, &latencies, &made,
            ))
        })
    });
    group.finish();
    system.block_on(engine.shutdown());
    // Every reservation a client was told is durable is in the database, and nothing else.
    let reserved = db.value("SELECT reserved AS v FROM stock WHERE sku = 'HOT'");
    assert_eq!(
        reserved,
        made.load(Ordering::Relaxed) as i64,
        "{name}: the database holds exactly the reservations made"
    );
    latencies.report(&name);
}

fn baseline_case(c: &mut Criterion, clients: u64) {
    let db = BenchDb::new(&format!("baseline{clients}"));
    diesel::sql_query(
        "CREATE TABLE baseline_stock (sku TEXT PRIMARY KEY, available BIGINT NOT NULL CHECK (available >= 0))",
    )
    .execute(&mut db.conn())
    .expect("baseline table");
    diesel::sql_query(format!(
        "INSERT INTO baseline_stock VALUES ('HOT', {HUGE_STOCK})"
    ))
    .execute(&mut db.conn())
    .expect("baseline row");
    diesel::sql_query("CHECKPOINT")
        .execute(&mut db.conn())
        .expect("checkpoint");
    let connections = (clients as u32).min(connection_cap(&db));
    // No `SELECT 1` on checkout (the service's pool tests connections; a benchmark of the
    // baseline should not pay for that on every order).
    let pool = diesel::r2d2::Pool::builder()
        .max_size(connections)
        .min_idle(Some(connections))
        .test_on_check_out(false)
        .build(diesel::r2d2::ConnectionManager::<PgConnection>::new(
            &db.url,
        ))
        .expect("pool");
    let latencies = Arc::new(Latencies::default());
    let made = Arc::new(AtomicU64::new(0));
    let name = format!("baseline/hot_sku/{clients}");
    let mut group = reservations_group(c, 8);
    group.bench_function(&name, |b| {
        b.iter_custom(|iters| {
            let next = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..clients {
                    let (pool, next) = (pool.clone(), Arc::clone(&next));
                    let (latencies, made) = (Arc::clone(&latencies), Arc::clone(&made));
                    scope.spawn(move || {
                        while next.fetch_add(1, Ordering::Relaxed) < iters {
                            let began = Instant::now();
                            // A connection per order, as a request handler takes one.
                            let mut conn = pool.get().expect("connection");
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
                            made.fetch_add(1, Ordering::Relaxed);
                            latencies.record(began.elapsed());
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
    let taken =
        HUGE_STOCK - db.value("SELECT available AS v FROM baseline_stock WHERE sku = 'HOT'");
    assert_eq!(
        taken,
        made.load(Ordering::Relaxed) as i64,
        "{name}: every order counted"
    );
    println!("{name}: {connections} connections for {clients} clients");
    latencies.report(&name);
}

fn durable_vs_baseline(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let clients = concurrency();
    durable_case(c, &system, clients);
    baseline_case(c, clients);
    redis_case::run(c, clients);
    if clients != 256 {
        durable_case(c, &system, 256);
        baseline_case(c, 256);
        redis_case::run(c, 256);
    }
}

criterion_group!(benches, in_memory, durable_vs_baseline);
criterion_main!(benches);
