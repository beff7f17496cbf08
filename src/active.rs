//! What runs only while this instance holds the lease: the engine rebuilt from PostgreSQL, the
//! catalog, the carts and order services, the queue consumers and the sweeper. A standby has
//! none of it; taking the lease builds it, losing the lease drops it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::carts::CartService;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::consumers::Consumers;
use crate::domain::clock::SystemClock;
use crate::engine::{Engine, Store};
use crate::lease::FenceGuard;
use crate::messaging::consumer::Stopping;
use crate::messaging::Broker;
use crate::orders::payment::SandboxGateway;
use crate::orders::{OrderConfig, OrderParts, OrderService};
use crate::persistence::{self, DbPool, PgStore};

/// The longest a shutdown step may take before shutdown goes on without it.
const SHUTDOWN_STEP: Duration = Duration::from_secs(45);

/// The active instance's working parts.
pub struct ActiveParts {
    /// The lease epoch these parts act for.
    pub epoch: i64,
    pub engine: Engine,
    pub catalog: Catalog,
    pub carts: CartService,
    pub orders: OrderService,
    pub pool: DbPool,
    pub broker: Broker,
    pub config: Arc<Config>,
    stopping: Stopping,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl ActiveParts {
    /// Rebuilds the engine and the catalog from PostgreSQL, then starts the services, the
    /// consumers and the sweeper. Nothing is consumed before memory equals what is durable
    /// (DESIGN.md rule 6).
    pub async fn start(
        epoch: i64,
        fence: Option<FenceGuard>,
        pool: DbPool,
        broker: Broker,
        monitor: Arc<crate::monitor::Monitor>,
        config: Arc<Config>,
    ) -> Result<Arc<ActiveParts>, String> {
        let started = std::time::Instant::now();
        let store: Arc<dyn Store> = Arc::new(match fence.clone() {
            Some(guard) => PgStore::fenced(pool.clone(), guard),
            None => PgStore::new(pool.clone()),
        });
        let engine = Engine::start(store, config.engine.clone())
            .await
            .map_err(|e| format!("could not rebuild the stock engine from PostgreSQL: {e}"))?;
        let catalog = Catalog::new(engine.feed().board().clone());
        let products = persistence::run_blocking(&pool, persistence::products::list_all)
            .await
            .map_err(|e| format!("could not load the catalog: {e}"))?;
        for product in products {
            catalog.upsert(product);
        }
        let carts = CartService::new(pool.clone(), catalog.clone());
        let orders = OrderService::start(OrderParts {
            engine: engine.clone(),
            catalog: catalog.clone(),
            pool: pool.clone(),
            publisher: Arc::new(broker.clone()),
            monitor,
            gateway: Arc::new(SandboxGateway {
                delay: config.sandbox_payment_delay,
            }),
            clock: Arc::new(SystemClock),
            config: OrderConfig {
                retry_window: config.retry_window,
                stale_after: config.order_stale_after,
                sweep_every: config.sweep_every,
                key_retention: config.key_retention,
                events: config.order_events,
                one_write: config.one_write,
            },
            fence,
        })
        .await
        .map_err(|e| format!("could not start the order pipeline: {e}"))?;
        let stopping = Stopping::default();
        let mut workers = crate::consumers::start(
            &broker,
            Consumers {
                engine: engine.clone(),
                carts: carts.clone(),
                orders: orders.clone(),
                prefetch: config.consumer_prefetch,
                retry_window: config.retry_window,
                producers: config.producers.clone(),
            },
            &stopping,
        );
        workers.push(orders.spawn_sweeper(stopping.stop.clone()));
        tracing::info!(
            epoch,
            skus = engine.sku_count(),
            products = catalog.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "active: engine and catalog rebuilt from PostgreSQL, consuming"
        );
        Ok(Arc::new(ActiveParts {
            epoch,
            engine,
            catalog,
            carts,
            orders,
            pool,
            broker,
            config,
            stopping,
            workers: Mutex::new(workers),
        }))
    }

    fn take_workers(&self) -> Vec<JoinHandle<()>> {
        match self.workers.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    /// Orderly stop (shutdown, or handing over): consumers stop consuming and settle what they
    /// hold, the sweeper stops, the order writer and the persister write what they hold. Each
    /// step is bounded, so one stuck part cannot hold the rest.
    pub async fn stop(&self) {
        self.stopping.stop.cancel();
        for worker in self.take_workers() {
            if tokio::time::timeout(SHUTDOWN_STEP, worker).await.is_err() {
                tracing::error!("a consumer did not finish within {SHUTDOWN_STEP:?}; going on");
            }
        }
        tracing::info!(
            epoch = self.epoch,
            "consumers stopped; flushing the order writer and the persister"
        );
        self.orders.shutdown().await;
        self.engine.shutdown().await;
    }

    /// Steps down at once (the lease is lost): stop consuming — deliveries in flight go back to
    /// their queue with their channels — and drop the engine. The writers' fence refuses
    /// whatever they still hold.
    pub async fn abandon(&self) {
        tracing::warn!(
            epoch = self.epoch,
            "stepping down: consumers stop, the engine is dropped"
        );
        self.stopping.abandon.cancel();
        self.stopping.stop.cancel();
        for worker in self.take_workers() {
            if tokio::time::timeout(Duration::from_secs(10), worker)
                .await
                .is_err()
            {
                tracing::error!("a consumer did not close its channel in time");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.orders.shutdown()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.engine.shutdown()).await;
    }
}
