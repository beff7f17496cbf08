//! Wiring: database, broker, engine and HTTP server, built from a [`Config`]. Tests build the
//! same [`Application`] on port 0 so they exercise the real thing in-process.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::active::ActiveParts;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::lease::{FenceGuard, Leadership, Role};
use crate::messaging::topology::TopologyConfig;
use crate::messaging::{Broker, BrokerError};
use crate::monitor::admission::AdmissionConfig;
use crate::persistence::{self, DbError};
use crate::sampler;

/// The longest a shutdown step may take before shutdown goes on without it.
const SHUTDOWN_STEP: std::time::Duration = std::time::Duration::from_secs(45);

/// Why the service could not start. Each reads as one line that says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("PostgreSQL at {url} is not usable ({source}). Is it running? Check DATABASE_URL.")]
    Database { url: String, source: DbError },
    #[error("RabbitMQ at {url} is not reachable ({source}). Is it running? Check AMQP_URL.")]
    Broker { url: String, source: BrokerError },
    #[error("could not rebuild the stock engine from PostgreSQL: {0}")]
    Engine(#[source] crate::engine::StoreError),
    #[error("an internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the server failed: {source}")]
    Serve { source: std::io::Error },
    #[error("PostgreSQL has no synchronous standby and DATABASE_SYNC_STANDBY=require: a failover could lose acknowledged orders. Start a synchronous standby (synchronous_standby_names), or set DATABASE_SYNC_STANDBY=warn")]
    NoSyncStandby,
    #[error("{0} migration(s) pending and MIGRATE_ON_START=false: run `orderflow migrate` (as the schema owner, MIGRATION_DATABASE_URL) first")]
    Pending(usize),
    #[error("no customer key: set AUTH_JWT_SECRET (HS256, at least 32 bytes) or AUTH_JWT_PUBLIC_KEYS (a PEM or JWKS file) so customer tokens can be verified")]
    NoCustomerKey,
    #[error("customer keys: {0}. Check AUTH_JWT_PUBLIC_KEYS.")]
    CustomerKeys(#[source] crate::auth::AuthError),
    /// `demo-data` offline: a service holds the lease (it owns the stock).
    #[error("a service is active on this database (it holds the lease and owns the stock): load the demo data through it with `demo-data N --url http://…`, or stop it first")]
    ServiceActive,
    /// `demo-data`: SKUs whose stock could not be set, each with why.
    #[error("{} demo SKU(s) did not get their stock: {}", .0.len(), .0.iter().take(20).cloned().collect::<Vec<_>>().join("; "))]
    Demo(Vec<String>),
    #[error("cannot listen on {addr}: {source}. Is another process using it? Check HTTP_ADDR.")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

fn redacted_db(url: &str) -> String {
    crate::messaging::redact(url)
}

/// Creates the database if missing and runs the migrations (`orderflow migrate`), as the
/// schema's owner (`MIGRATION_DATABASE_URL`) when one is configured.
pub async fn migrate(config: &Config) -> Result<usize, StartupError> {
    let url = config
        .migration_database_url
        .clone()
        .unwrap_or_else(|| config.database_url.clone());
    let shown = redacted_db(&url);
    crate::blocking::run(move || persistence::prepare_database(&url))
        .await?
        .map_err(|source| StartupError::Database { url: shown, source })
}

/// `serve` without migrating: the schema must be current (`orderflow migrate` ran).
async fn check_migrated(config: &Config) -> Result<(), StartupError> {
    let url = config.database_url.clone();
    let pending = crate::blocking::run(move || persistence::pending_migrations(&url))
        .await?
        .map_err(|source| StartupError::Database {
            url: redacted_db(&config.database_url),
            source,
        })?;
    if pending > 0 {
        return Err(StartupError::Pending(pending));
    }
    Ok(())
}

/// Says (or, with `DATABASE_SYNC_STANDBY=require`, refuses to start) when the database has no
/// synchronous standby: with asynchronous replication a failover can lose the last commits this
/// service acknowledged (DESIGN.md rule 1 then holds only while the primary lives).
async fn check_sync_standby(
    pool: &persistence::DbPool,
    config: &Config,
) -> Result<(), StartupError> {
    use crate::config::SyncStandby;
    if config.sync_standby == SyncStandby::Off {
        return Ok(());
    }
    let pool = pool.clone();
    let seen = crate::blocking::run(move || {
        let mut conn = pool.get().map_err(DbError::from)?;
        persistence::replication(&mut conn)
    })
    .await?
    .map_err(|source| StartupError::Database {
        url: redacted_db(&config.database_url),
        source,
    })?;
    match (seen.synchronous(), config.sync_standby) {
        (Some(true), _) => {
            tracing::info!(standbys = seen.sync_standbys, names = %seen.synchronous_standby_names, "PostgreSQL commits wait for a synchronous standby");
            Ok(())
        }
        (None, _) => {
            tracing::warn!(names = %seen.synchronous_standby_names, "PostgreSQL names synchronous standbys but this role cannot see whether one is streaming (grant pg_read_all_stats to check)");
            Ok(())
        }
        (Some(false), SyncStandby::Require) => Err(StartupError::NoSyncStandby),
        (Some(false), _) => {
            tracing::warn!(
                names = %seen.synchronous_standby_names,
                "PostgreSQL has no synchronous standby: a failover can lose the last acknowledged orders. \
                 Run a standby with synchronous replication (pg_auto_failover does), or set \
                 DATABASE_SYNC_STANDBY=off for development"
            );
            Ok(())
        }
    }
}

/// The running service: the HTTP server, the broker connection, the lease, and — while this
/// instance holds the lease — the active parts ([`ActiveParts`]).
pub struct Application {
    port: u16,
    server: Server,
    pub state: AppState,
    stop: CancellationToken,
    stopped: watch::Sender<bool>,
}

/// Stops a running [`Application`] from outside (tests, a supervisor) and waits until it is
/// down.
#[derive(Clone)]
pub struct Stopper {
    stop: CancellationToken,
    stopped: watch::Receiver<bool>,
}

impl Stopper {
    /// Asks the application to stop and waits for the whole shutdown to finish.
    pub async fn stop(&self) {
        self.stop.cancel();
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|done| *done).await;
    }
}

impl Application {
    /// Prepares the database, connects to the broker, binds the HTTP listener (`HTTP_ADDR` port 0
    /// picks a free port) and starts competing for the lease. The instance serves as a standby
    /// (503 to everything but health) until it holds the lease; then it rebuilds the engine from
    /// PostgreSQL and starts consuming (DESIGN.md rules 4 and 6).
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let gate = customer_gate(&config)?;
        let pool = database(&config).await?;
        let topology = TopologyConfig {
            delivery_limit: config.delivery_limit,
            dead_letter_ttl: config.dead_letter_ttl,
            handback_limit: config.handback_limit,
            checkout_batch: config.checkout_batch,
            checkout_publishes: config.checkout_publishes,
            ..TopologyConfig::default()
        };
        // The service watching itself: given to the broker (it counts publishes and
        // deliveries), the order service, the sampler and the API alike.
        let monitor = Arc::new(crate::monitor::Monitor::new());
        let broker = Broker::connect(&config.amqp_url, topology, Arc::clone(&monitor))
            .await
            .map_err(|source| StartupError::Broker {
                url: crate::messaging::redact(&config.amqp_url),
                source,
            })?;
        crate::monitor::leaders::spawn(
            Arc::clone(&monitor),
            config.amqp_management.clone(),
            crate::monitor::leaders::vhost_path(&config.amqp_url),
        );
        let listener =
            TcpListener::bind(config.http_addr).map_err(|source| StartupError::Listen {
                addr: config.http_addr.to_string(),
                source,
            })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        crate::monitor::prometheus::install();
        monitor.configure(AdmissionConfig {
            target: config.admission_target,
            ..AdmissionConfig::default()
        });
        let leadership = Leadership::start(&config.database_url, config.lease.clone());
        let state = AppState::new(pool, broker, monitor, Arc::new(config), leadership, gate);
        let server = http_server(&state, listener)?;
        tracing::info!(port, "orderflow listening");
        if let Some(path) = &state.config.port_file {
            write_port_file(path, port)?;
        }
        let (stopped, _) = watch::channel(false);
        Ok(Application {
            port,
            server,
            state,
            stop: CancellationToken::new(),
            stopped,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the application and waits until it is down.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: self.stop.clone(),
            stopped: self.stopped.subscribe(),
        }
    }

    /// Serves until stopped (a [`Stopper`], or SIGINT/SIGTERM when `handle_signals`), following
    /// the lease: active parts are started when it is taken and dropped when it is lost. Then
    /// shuts down in order: the HTTP server finishes the requests in flight, the active parts
    /// stop (consumers settle what they hold, both writers flush), the lease is released (a
    /// standby takes over at once), the broker connection is closed.
    pub async fn run_until_stopped(self, handle_signals: bool) -> std::io::Result<()> {
        let Application {
            server,
            state,
            stop,
            stopped,
            ..
        } = self;
        let handle = server.handle();
        let watched = state.clone();
        let sampler = sampler::spawn(sampler::Sources {
            broker: state.broker.clone(),
            monitor: Arc::clone(&state.monitor),
            pool: state.pool.clone(),
            active: Box::new(move || watched.active()),
        });
        let mut server = actix_web::rt::spawn(server);
        let roles = actix_web::rt::spawn(follow_the_lease(state.clone(), stop.clone()));
        let result = tokio::select! {
            served = &mut server => Some(served),
            _ = stop.cancelled() => None,
            _ = shutdown_signal(), if handle_signals => {
                tracing::info!("shutdown signal received; draining");
                None
            }
        };
        stop.cancel();
        let result = match result {
            Some(served) => served,
            None => {
                handle.stop(true).await;
                server.await
            }
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        tracing::info!("HTTP server stopped");
        let _ = roles.await;
        if let Some(active) = state.take_active() {
            active.stop().await;
        }
        state.leadership.release().await;
        if tokio::time::timeout(SHUTDOWN_STEP, state.broker.close())
            .await
            .is_err()
        {
            tracing::warn!("the broker did not confirm the close; leaving it");
        }
        sampler.abort();
        tracing::info!("orderflow stopped");
        let _ = stopped.send(true);
        result
    }
}

/// Starts the active parts when this instance takes the lease, drops them when it loses it,
/// until `stop`.
async fn follow_the_lease(state: AppState, stop: CancellationToken) {
    let mut roles = state.leadership.watch();
    loop {
        let role = *roles.borrow_and_update();
        let current = state.active().map(|a| a.epoch);
        match (role, current) {
            (Role::Active { epoch }, Some(now)) if now == epoch => {}
            (Role::Active { epoch }, _) => {
                if let Some(old) = state.take_active() {
                    old.abandon().await;
                }
                let fence = state
                    .leadership
                    .fence()
                    .filter(|f| f.epoch == epoch)
                    .map(|fence| {
                        let leadership = state.leadership.clone();
                        FenceGuard::new(fence, Arc::new(move || leadership.demote()))
                    });
                match ActiveParts::start(
                    epoch,
                    fence,
                    state.pool.clone(),
                    state.broker.clone(),
                    Arc::clone(&state.monitor),
                    Arc::clone(&state.config),
                )
                .await
                {
                    Ok(parts) => {
                        if state.leadership.role() == (Role::Active { epoch }) {
                            state.set_active(parts);
                        } else {
                            parts.abandon().await; // lost meanwhile
                        }
                    }
                    Err(e) => {
                        tracing::error!(epoch, error = %e, "could not become active; stepping down");
                        state.leadership.demote();
                    }
                }
            }
            (Role::Standby, Some(_)) => {
                if let Some(old) = state.take_active() {
                    old.abandon().await;
                }
            }
            (Role::Standby, None) => {}
        }
        tokio::select! {
            changed = roles.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
/// The HTTP server on `listener`, serving the API with `state` (not yet running).
fn http_server(
    state: &AppState,
    listener: TcpListener,
) -> Result<actix_web::dev::Server, StartupError> {
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            // No answer is ever sniffed into something it is not (JSON as HTML, …).
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add((actix_web::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
            )
            .wrap(actix_web::middleware::from_fn(
                http::error::scope_request_id,
            ))
            .wrap(tracing_actix())
            .configure(http::configure(app_state.clone()))
            .default_service(web::to(http::not_found))
    })
    .workers(state.config.http_workers)
    .disable_signals()
    .shutdown_timeout(10)
    .listen(listener)
    .map_err(|source| StartupError::Listen {
        addr: state.config.http_addr.to_string(),
        source,
    })?
    .run();
    Ok(server)
}

/// `PORT_FILE`: the port, written whole under a temporary name, then renamed (a reader never
/// sees half).
fn write_port_file(path: &std::path::Path, port: u16) -> Result<(), StartupError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, port.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| StartupError::Listen {
            addr: format!("PORT_FILE {}", path.display()),
            source,
        })
}

/// Request logging through tracing: one span per request (method, route, path, client, status,
/// request id) that the handlers' own logs nest in.
fn tracing_actix() -> tracing_actix_web::TracingLogger<http::request_span::RequestSpan> {
    tracing_actix_web::TracingLogger::new()
}

/// The database as the service needs it: migrated (or checked to be), its pool, and — when
/// asked for — a synchronous standby behind it.
async fn database(config: &Config) -> Result<persistence::DbPool, StartupError> {
    if config.migrate_on_start {
        let applied = migrate(config).await?;
        if applied > 0 {
            tracing::info!(applied, "database migrated");
        }
    } else {
        check_migrated(config).await?;
    }
    let db_url = config.database_url.clone();
    let pool_size = config.db_pool_size;
    let db_err = |source| StartupError::Database {
        url: redacted_db(&config.database_url),
        source,
    };
    let pool = crate::blocking::run(move || persistence::connect_pool(&db_url, pool_size))
        .await?
        .map_err(db_err)?;
    check_sync_standby(&pool, config).await?;
    Ok(pool)
}

/// Who a customer is and how often they may ask. Every customer route needs a verified token:
/// without a key, nobody could be served (or, worse, everybody would be).
fn customer_gate(config: &Config) -> Result<Arc<http::auth::Gate>, StartupError> {
    if !config.auth.any() {
        return Err(StartupError::NoCustomerKey);
    }
    Ok(Arc::new(http::auth::Gate {
        keys: crate::auth::CustomerKeys::load(&config.auth).map_err(StartupError::CustomerKeys)?,
        limits: crate::auth::RateLimits::new(config.rate_limits),
    }))
}
