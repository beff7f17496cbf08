//! Configuration from the environment (API.md "Running and configuration").

use std::net::SocketAddr;
use std::time::Duration;

use crate::engine::{EngineConfig, PersisterConfig};

/// Everything the service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// The role that owns the schema, for `orderflow migrate` (`MIGRATION_DATABASE_URL`; the
    /// service itself then runs as a role that may only read and write rows).
    pub migration_database_url: Option<String>,
    /// Whether `serve` migrates on start (`MIGRATE_ON_START`, default true); when false it
    /// refuses to start while a migration is pending.
    pub migrate_on_start: bool,
    /// What `serve` does when the database has no synchronous standby (`DATABASE_SYNC_STANDBY`):
    /// a failover could then lose the last acknowledged commits.
    pub sync_standby: SyncStandby,
    pub amqp_url: String,
    /// The RabbitMQ management API (`AMQP_MANAGEMENT_URL`: one `http://user:password@host:15672`
    /// per node, comma-separated): read for the queues' leaders, which AMQP does not tell.
    pub amqp_management: Vec<crate::monitor::leaders::Endpoint>,
    pub http_addr: SocketAddr,
    /// When set, the port actually bound is written to this file once listening (`PORT_FILE`;
    /// with `HTTP_ADDR` port 0, how a supervisor or a test learns it).
    pub port_file: Option<std::path::PathBuf>,
    /// `ADMIN_TOKEN` and `ADMIN_TOKENS` (support staff and operators).
    pub admin_tokens: crate::auth::AdminTokens,
    /// Where customer tokens are verified from (`AUTH_JWT_*`).
    pub auth: crate::auth::KeySettings,
    /// How long dead letters are kept (`DEAD_LETTER_TTL_S`, default 14 days).
    pub dead_letter_ttl: Duration,
    /// RabbitMQ users allowed to publish to each queue (`*_PRODUCERS`).
    pub producers: crate::consumers::Producers,
    /// Writes per customer (`RATE_LIMIT_PER_SECOND`, `RATE_LIMIT_BURST`).
    pub rate_limits: crate::auth::RateSettings,
    /// How long an idempotency key is remembered (`IDEMPOTENCY_KEY_TTL_S`, default 24 h): a
    /// reuse after that is a new order.
    pub key_retention: Duration,
    /// Open server-sent-event streams at most, per SSE route (`SSE_MAX_STREAMS`).
    pub sse_max_streams: usize,
    /// The longest a server-sent-event stream stays open (`SSE_MAX_LIFETIME_S`); a client
    /// reconnects after.
    pub sse_max_lifetime: Duration,
    pub log_filter: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    pub db_pool_size: u32,
    /// HTTP worker threads (`HTTP_WORKERS`, default: the machine's CPUs).
    pub http_workers: usize,
    /// Which events orders publish on `order.events` (`ORDER_EVENTS`: `decisions`, the default,
    /// or `all`).
    pub order_events: crate::orders::EventScope,
    /// `ORDER_WRITES`: `one` (the default) decides a first delivery in memory and writes it
    /// once, decided, with its stock; `staged` writes every step (created, reserved, decided).
    pub one_write: bool,
    /// How long an admin stock write waits for its change to be durable before answering 503.
    pub durable_timeout: Duration,
    /// Unacknowledged deliveries each consumer may hold (RabbitMQ prefetch; `CONSUMER_PREFETCH`,
    /// default 512). It bounds the checkout consumer's throughput at prefetch ÷ the time one
    /// delivery takes to settle (Little's law): at 256, the ~110 ms a delivery takes on a
    /// saturated 2-core machine capped it near 2,300/s, under what the pipeline can do (issue 20).
    pub consumer_prefetch: u16,
    /// How long the sandbox payment gateway takes to answer.
    pub sandbox_payment_delay: Duration,
    /// The wait an admitted checkout may expect, accept → decided (`ADMISSION_TARGET_MS`):
    /// past it, intake sheds load (503 overloaded with Retry-After).
    pub admission_target: Duration,
    /// How long a delivery retries transient trouble before it is handed back to its queue
    /// (`RETRY_WINDOW_MS`).
    pub retry_window: Duration,
    /// Deliveries of one message before RabbitMQ dead-letters it as poison (`DELIVERY_LIMIT`;
    /// an argument of the queues, so it applies to queues declared from then on).
    pub delivery_limit: i64,
    /// Hand-backs of one message (each after a whole retry window of transient trouble)
    /// before it is dead-lettered after all (`HANDBACK_LIMIT`; 2880 × the default 30 s window
    /// is a day): a dependency away for longer, or an error wrongly taken for transient, does
    /// not keep a message circling forever. Replay brings it back.
    pub handback_limit: i64,
    /// Intake's checkouts in one broker message at most, when they wait for the broker together
    /// (`CHECKOUT_BATCH`, default 32; 1: each alone).
    pub checkout_batch: usize,
    /// Checkout publishes unconfirmed at once (`CHECKOUT_PUBLISHES`, default 2): what arrives
    /// while they are out goes out together, as one message.
    pub checkout_publishes: usize,
    /// An order still `received`/`reserved` and untouched this long has lost its delivery and
    /// is decided as `expired` (`ORDER_STALE_AFTER_MS`).
    pub order_stale_after: Duration,
    /// How often the sweeper looks for such orders (`SWEEP_EVERY_MS`).
    pub sweep_every: Duration,
    /// The lease that makes one instance active (`LEASE_TTL_MS`, `LEASE_RENEW_MS`,
    /// `LEASE_RETRY_MS`).
    pub lease: crate::lease::LeaseConfig,
    pub engine: EngineConfig,
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// `DATABASE_SYNC_STANDBY`: `warn` (the default) logs a warning at start when the database has
/// no synchronous standby, `require` refuses to start, `off` says nothing (development).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStandby {
    Warn,
    Require,
    Off,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/orderflow";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let v = Vars(lookup);
        let database_url = v
            .get("DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        crate::persistence::split_database_url(&database_url).map_err(ConfigError)?;
        let migration_database_url = v.get("MIGRATION_DATABASE_URL");
        if let Some(url) = &migration_database_url {
            crate::persistence::split_database_url(url)
                .map_err(|e| ConfigError(format!("MIGRATION_DATABASE_URL: {e}")))?;
        }
        let amqp_url = v.get("AMQP_URL").unwrap_or_else(|| DEFAULT_AMQP_URL.into());
        crate::messaging::node_urls(&amqp_url).map_err(ConfigError)?;
        let amqp_management = v
            .get("AMQP_MANAGEMENT_URL")
            .map(|list| crate::monitor::leaders::endpoints(&list))
            .transpose()
            .map_err(ConfigError)?
            .unwrap_or_default();
        Ok(Config {
            database_url,
            migration_database_url,
            migrate_on_start: migrate_on_start(&v)?,
            sync_standby: sync_standby(&v)?,
            amqp_url,
            amqp_management,
            http_addr: http_addr(&v)?,
            port_file: v.get("PORT_FILE").map(std::path::PathBuf::from),
            admin_tokens: crate::auth::AdminTokens::parse(
                v.get("ADMIN_TOKEN").as_deref(),
                v.get("ADMIN_TOKENS").as_deref(),
            )
            .map_err(ConfigError)?,
            auth: customer_keys(&v)?,
            dead_letter_ttl: v.secs("DEAD_LETTER_TTL_S", 14 * 24 * 3600, 1)?,
            producers: producers(&v),
            rate_limits: rate_limits(&v)?,
            key_retention: v.secs("IDEMPOTENCY_KEY_TTL_S", 86_400, 60)?,
            sse_max_streams: v.number("SSE_MAX_STREAMS", 1024, 1)?,
            sse_max_lifetime: v.secs("SSE_MAX_LIFETIME_S", 3_600, 1)?,
            log_filter: v.get("RUST_LOG").unwrap_or_else(|| "info".into()),
            max_body_bytes: v.number("MAX_BODY_BYTES", 64 * 1024, 1)?,
            db_pool_size: v.number("DB_POOL_SIZE", 16, 2)?,
            order_events: order_events(&v)?,
            one_write: order_writes(&v)?,
            http_workers: http_workers(&v)?,
            durable_timeout: v.millis("DURABLE_TIMEOUT_MS", 5_000, 1)?,
            consumer_prefetch: v.number("CONSUMER_PREFETCH", 512, 1)?,
            admission_target: v.millis("ADMISSION_TARGET_MS", 1_000, 10)?,
            retry_window: v.millis("RETRY_WINDOW_MS", 30_000, 1)?,
            delivery_limit: v.number("DELIVERY_LIMIT", 5, 1)?,
            handback_limit: v.number("HANDBACK_LIMIT", 2880, 1)?,
            checkout_batch: v.number("CHECKOUT_BATCH", 32, 1)?,
            checkout_publishes: v.number("CHECKOUT_PUBLISHES", 2, 1)?,
            order_stale_after: v.millis("ORDER_STALE_AFTER_MS", 600_000, 1)?,
            sweep_every: v.millis("SWEEP_EVERY_MS", 30_000, 10)?,
            lease: lease(&v)?,
            sandbox_payment_delay: v.millis("SANDBOX_PAYMENT_DELAY_MS", 0, 0)?,
            engine: engine(&v)?,
        })
    }
}

/// The variables, through a lookup: a blank one counts as unset.
struct Vars<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    fn get(&self, key: &str) -> Option<String> {
        (self.0)(key).filter(|v| !v.trim().is_empty())
    }

    /// A number of at least `min`, `default` when unset.
    fn number<T>(&self, key: &str, default: T, min: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => match raw.trim().parse::<T>() {
                Ok(v) if v >= min => Ok(v),
                _ => Err(ConfigError(format!(
                    "{key}={raw:?} is not a number >= {min}"
                ))),
            },
        }
    }

    fn millis(&self, key: &str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        self.number(key, default, min).map(Duration::from_millis)
    }

    fn secs(&self, key: &str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        self.number(key, default, min).map(Duration::from_secs)
    }

    /// A comma-separated list (blank entries dropped), `None` when unset.
    fn list(&self, key: &str) -> Option<Vec<String>> {
        self.get(key).map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }
}

fn migrate_on_start<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<bool, ConfigError> {
    match v.get("MIGRATE_ON_START").as_deref().map(str::trim) {
        None | Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(ConfigError(format!(
            "MIGRATE_ON_START={other:?}: expected true or false"
        ))),
    }
}

fn sync_standby<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<SyncStandby, ConfigError> {
    match v.get("DATABASE_SYNC_STANDBY").as_deref().map(str::trim) {
        None | Some("warn") => Ok(SyncStandby::Warn),
        Some("require") => Ok(SyncStandby::Require),
        Some("off") => Ok(SyncStandby::Off),
        Some(other) => Err(ConfigError(format!(
            "DATABASE_SYNC_STANDBY={other:?}: expected warn, require or off"
        ))),
    }
}

fn http_addr<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
) -> Result<std::net::SocketAddr, ConfigError> {
    let raw = v
        .get("HTTP_ADDR")
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    raw.parse().map_err(|_| {
        ConfigError(format!(
            "HTTP_ADDR={raw:?} is not an address like 127.0.0.1:8080"
        ))
    })
}

/// How customer tokens are verified.
fn customer_keys<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
) -> Result<crate::auth::KeySettings, ConfigError> {
    let secret = v.get("AUTH_JWT_SECRET");
    if let Some(s) = &secret {
        if s.len() < crate::auth::customer::MIN_SECRET_BYTES {
            return Err(ConfigError(format!(
                "AUTH_JWT_SECRET must be at least {} bytes (it has {}); make one with `openssl rand -hex 32`",
                crate::auth::customer::MIN_SECRET_BYTES,
                s.len()
            )));
        }
    }
    Ok(crate::auth::KeySettings {
        secret: secret.map(crate::auth::Secret::new),
        public_keys: v.get("AUTH_JWT_PUBLIC_KEYS").map(std::path::PathBuf::from),
        issuer: v.get("AUTH_JWT_ISSUER"),
        audience: v.get("AUTH_JWT_AUDIENCE"),
    })
}

fn producers<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> crate::consumers::Producers {
    crate::consumers::Producers {
        checkout: v.list("CHECKOUT_PRODUCERS"),
        inventory: v.list("INVENTORY_PRODUCERS"),
        carts: v.list("CART_PRODUCERS"),
    }
}

fn rate_limits<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
) -> Result<crate::auth::RateSettings, ConfigError> {
    let d = crate::auth::RateSettings::default();
    Ok(crate::auth::RateSettings {
        per_second: v.number("RATE_LIMIT_PER_SECOND", d.per_second, 1)?,
        burst: v.number("RATE_LIMIT_BURST", d.burst, 1)?,
    })
}

fn order_events<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
) -> Result<crate::orders::EventScope, ConfigError> {
    match v.get("ORDER_EVENTS") {
        None => Ok(crate::orders::EventScope::Decisions),
        Some(raw) => crate::orders::EventScope::parse(raw.trim())
            .ok_or_else(|| ConfigError(format!("ORDER_EVENTS={raw}: expected all or decisions"))),
    }
}

fn order_writes<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<bool, ConfigError> {
    match v.get("ORDER_WRITES").as_deref().map(str::trim) {
        None | Some("one") => Ok(true),
        Some("staged") => Ok(false),
        Some(raw) => Err(ConfigError(format!(
            "ORDER_WRITES={raw}: expected one or staged"
        ))),
    }
}

fn http_workers<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<usize, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match v.number("HTTP_WORKERS", cores, 1)? {
        n if n > 1024 => Err(ConfigError(format!(
            "HTTP_WORKERS={n}: at most 1024 threads"
        ))),
        n => Ok(n),
    }
}

/// The lease's timing; renewing at least twice per time-to-live.
fn lease<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
) -> Result<crate::lease::LeaseConfig, ConfigError> {
    let d = crate::lease::LeaseConfig::default();
    let ms =
        |key: &str, default: Duration, min: u64| v.millis(key, default.as_millis() as u64, min);
    let lease = crate::lease::LeaseConfig {
        ttl: ms("LEASE_TTL_MS", d.ttl, 500)?,
        renew_every: ms("LEASE_RENEW_MS", d.renew_every, 50)?,
        retry_every: ms("LEASE_RETRY_MS", d.retry_every, 50)?,
    };
    if lease.renew_every * 2 > lease.ttl {
        return Err(ConfigError(format!(
            "LEASE_RENEW_MS={} must be at most half of LEASE_TTL_MS={}",
            lease.renew_every.as_millis(),
            lease.ttl.as_millis()
        )));
    }
    Ok(lease)
}

/// The engine: its arbiters, its persister and its stock stream.
fn engine<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<EngineConfig, ConfigError> {
    let d = EngineConfig::default();
    Ok(EngineConfig {
        shards: v.number("ENGINE_SHARDS", d.shards, 1)?,
        persister: PersisterConfig {
            max_batch: v.number("PERSIST_BATCH_MAX", d.persister.max_batch, 1)?,
            linger: v.millis(
                "PERSIST_LINGER_MS",
                d.persister.linger.as_millis() as u64,
                0,
            )?,
            queue_capacity: v.number("PERSIST_QUEUE", d.persister.queue_capacity, 1)?,
        },
        feed_capacity: v.number("STOCK_STREAM_BUFFER", d.feed_capacity, 16)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_work_on_a_development_machine() {
        let c = config(&[]).unwrap();
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.amqp_url, DEFAULT_AMQP_URL);
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert!(c.admin_tokens.is_empty());
        assert!(!c.auth.any());
        assert_eq!(c.max_body_bytes, 65536);
    }

    #[test]
    fn bad_values_are_named() {
        let e = config(&[("HTTP_ADDR", "nowhere")]).unwrap_err();
        assert!(e.0.contains("HTTP_ADDR"));
        let e = config(&[("PERSIST_BATCH_MAX", "0")]).unwrap_err();
        assert!(e.0.contains("PERSIST_BATCH_MAX"));
        let e = config(&[("AMQP_URL", "http://x")]).unwrap_err();
        assert!(e.0.contains("AMQP_URL"));
        let e = config(&[("DATABASE_URL", "mysql://x/y")]).unwrap_err();
        assert!(e.0.contains("postgres"));
        let e = config(&[("ORDER_EVENTS", "some")]).unwrap_err();
        assert!(e.0.contains("ORDER_EVENTS"), "{e}");
        let e = config(&[("ORDER_WRITES", "two")]).unwrap_err();
        assert!(e.0.contains("ORDER_WRITES"), "{e}");
        assert!(config(&[]).unwrap().one_write);
        assert!(!config(&[("ORDER_WRITES", "staged")]).unwrap().one_write);
        for bad in ["0", "100000"] {
            let e = config(&[("HTTP_WORKERS", bad)]).unwrap_err();
            assert!(e.0.contains("HTTP_WORKERS"), "{e}");
        }
        use crate::orders::EventScope;
        assert_eq!(config(&[]).unwrap().order_events, EventScope::Decisions);
        assert_eq!(
            config(&[("ORDER_EVENTS", "all")]).unwrap().order_events,
            EventScope::All
        );
        let long = "s3cret-s3cret-s3cret-s3cret-s3cret";
        let c = config(&[("ADMIN_TOKEN", long)]).unwrap();
        assert!(c.admin_tokens.accepts(long));
        let e = config(&[("ADMIN_TOKEN", "s3cret")]).unwrap_err();
        assert!(
            e.0.contains("ADMIN_TOKEN") && !e.0.contains("s3cret"),
            "{e}"
        );
        let e = config(&[("AUTH_JWT_SECRET", "short")]).unwrap_err();
        assert!(
            e.0.contains("AUTH_JWT_SECRET") && !e.0.contains("short"),
            "{e}"
        );
        let c = config(&[("AUTH_JWT_SECRET", long)]).unwrap();
        assert!(c.auth.any());
        assert!(
            !format!("{c:?}").contains(long),
            "Debug never shows a secret"
        );
    }
}
