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
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        fn number<T>(key: &str, raw: Option<String>, default: T, min: T) -> Result<T, ConfigError>
        where
            T: std::str::FromStr + PartialOrd + std::fmt::Display,
        {
            match raw {
                None => Ok(default),
                Some(raw) => match raw.trim().parse::<T>() {
                    Ok(v) if v >= min => Ok(v),
                    _ => Err(ConfigError(format!(
                        "{key}={raw:?} is not a number >= {min}"
                    ))),
                },
            }
        }
        let database_url = get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        crate::persistence::split_database_url(&database_url).map_err(ConfigError)?;
        let migration_database_url = get("MIGRATION_DATABASE_URL");
        if let Some(url) = &migration_database_url {
            crate::persistence::split_database_url(url)
                .map_err(|e| ConfigError(format!("MIGRATION_DATABASE_URL: {e}")))?;
        }
        let migrate_on_start = match get("MIGRATE_ON_START").as_deref().map(str::trim) {
            None | Some("true" | "1" | "yes") => true,
            Some("false" | "0" | "no") => false,
            Some(other) => {
                return Err(ConfigError(format!(
                    "MIGRATE_ON_START={other:?}: expected true or false"
                )))
            }
        };
        let sync_standby = match get("DATABASE_SYNC_STANDBY").as_deref().map(str::trim) {
            None | Some("warn") => SyncStandby::Warn,
            Some("require") => SyncStandby::Require,
            Some("off") => SyncStandby::Off,
            Some(other) => {
                return Err(ConfigError(format!(
                    "DATABASE_SYNC_STANDBY={other:?}: expected warn, require or off"
                )))
            }
        };
        let amqp_url = get("AMQP_URL").unwrap_or_else(|| DEFAULT_AMQP_URL.into());
        crate::messaging::node_urls(&amqp_url).map_err(ConfigError)?;
        let amqp_management = get("AMQP_MANAGEMENT_URL")
            .map(|list| crate::monitor::leaders::endpoints(&list))
            .transpose()
            .map_err(ConfigError)?
            .unwrap_or_default();
        let raw_addr = get("HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
        let http_addr = raw_addr.parse().map_err(|_| {
            ConfigError(format!(
                "HTTP_ADDR={raw_addr:?} is not an address like 127.0.0.1:8080"
            ))
        })?;
        let defaults = EngineConfig::default();
        let shards = number("ENGINE_SHARDS", get("ENGINE_SHARDS"), defaults.shards, 1)?;
        let persister = PersisterConfig {
            max_batch: number(
                "PERSIST_BATCH_MAX",
                get("PERSIST_BATCH_MAX"),
                defaults.persister.max_batch,
                1,
            )?,
            linger: Duration::from_millis(number(
                "PERSIST_LINGER_MS",
                get("PERSIST_LINGER_MS"),
                defaults.persister.linger.as_millis() as u64,
                0,
            )?),
            queue_capacity: number(
                "PERSIST_QUEUE",
                get("PERSIST_QUEUE"),
                defaults.persister.queue_capacity,
                1,
            )?,
        };
        Ok(Config {
            database_url,
            migration_database_url,
            migrate_on_start,
            sync_standby,
            amqp_url,
            amqp_management,
            http_addr,
            port_file: get("PORT_FILE").map(std::path::PathBuf::from),
            admin_tokens: crate::auth::AdminTokens::parse(
                get("ADMIN_TOKEN").as_deref(),
                get("ADMIN_TOKENS").as_deref(),
            )
            .map_err(ConfigError)?,
            auth: {
                let secret = get("AUTH_JWT_SECRET");
                if let Some(s) = &secret {
                    if s.len() < crate::auth::customer::MIN_SECRET_BYTES {
                        return Err(ConfigError(format!(
                            "AUTH_JWT_SECRET must be at least {} bytes (it has {}); make one with `openssl rand -hex 32`",
                            crate::auth::customer::MIN_SECRET_BYTES,
                            s.len()
                        )));
                    }
                }
                crate::auth::KeySettings {
                    secret: secret.map(crate::auth::Secret::new),
                    public_keys: get("AUTH_JWT_PUBLIC_KEYS").map(std::path::PathBuf::from),
                    issuer: get("AUTH_JWT_ISSUER"),
                    audience: get("AUTH_JWT_AUDIENCE"),
                }
            },
            dead_letter_ttl: Duration::from_secs(number(
                "DEAD_LETTER_TTL_S",
                get("DEAD_LETTER_TTL_S"),
                14 * 24 * 3600,
                1,
            )?),
            producers: {
                let list = |key: &str| -> Option<Vec<String>> {
                    get(key).map(|raw| {
                        raw.split(',')
                            .map(str::trim)
                            .filter(|u| !u.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                };
                crate::consumers::Producers {
                    checkout: list("CHECKOUT_PRODUCERS"),
                    inventory: list("INVENTORY_PRODUCERS"),
                    carts: list("CART_PRODUCERS"),
                }
            },
            rate_limits: {
                let d = crate::auth::RateSettings::default();
                crate::auth::RateSettings {
                    per_second: number(
                        "RATE_LIMIT_PER_SECOND",
                        get("RATE_LIMIT_PER_SECOND"),
                        d.per_second,
                        1,
                    )?,
                    burst: number("RATE_LIMIT_BURST", get("RATE_LIMIT_BURST"), d.burst, 1)?,
                }
            },
            key_retention: Duration::from_secs(number(
                "IDEMPOTENCY_KEY_TTL_S",
                get("IDEMPOTENCY_KEY_TTL_S"),
                86_400,
                60,
            )?),
            sse_max_streams: number("SSE_MAX_STREAMS", get("SSE_MAX_STREAMS"), 1024, 1)?,
            sse_max_lifetime: Duration::from_secs(number(
                "SSE_MAX_LIFETIME_S",
                get("SSE_MAX_LIFETIME_S"),
                3_600,
                1,
            )?),
            log_filter: get("RUST_LOG").unwrap_or_else(|| "info".into()),
            max_body_bytes: number("MAX_BODY_BYTES", get("MAX_BODY_BYTES"), 64 * 1024, 1)?,
            db_pool_size: number("DB_POOL_SIZE", get("DB_POOL_SIZE"), 16, 2)?,
            order_events: match get("ORDER_EVENTS") {
                None => crate::orders::EventScope::Decisions,
                Some(raw) => crate::orders::EventScope::parse(raw.trim()).ok_or_else(|| {
                    ConfigError(format!("ORDER_EVENTS={raw}: expected all or decisions"))
                })?,
            },
            http_workers: match number(
                "HTTP_WORKERS",
                get("HTTP_WORKERS"),
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                1,
            )? {
                n if n > 1024 => {
                    return Err(ConfigError(format!(
                        "HTTP_WORKERS={n}: at most 1024 threads"
                    )))
                }
                n => n,
            },
            durable_timeout: Duration::from_millis(number(
                "DURABLE_TIMEOUT_MS",
                get("DURABLE_TIMEOUT_MS"),
                5_000,
                1,
            )?),
            consumer_prefetch: number("CONSUMER_PREFETCH", get("CONSUMER_PREFETCH"), 512, 1)?,
            admission_target: Duration::from_millis(number(
                "ADMISSION_TARGET_MS",
                get("ADMISSION_TARGET_MS"),
                1_000,
                10,
            )?),
            retry_window: Duration::from_millis(number(
                "RETRY_WINDOW_MS",
                get("RETRY_WINDOW_MS"),
                30_000,
                1,
            )?),
            delivery_limit: number("DELIVERY_LIMIT", get("DELIVERY_LIMIT"), 5, 1)?,
            handback_limit: number("HANDBACK_LIMIT", get("HANDBACK_LIMIT"), 2880, 1)?,
            checkout_batch: number("CHECKOUT_BATCH", get("CHECKOUT_BATCH"), 32, 1)?,
            checkout_publishes: number("CHECKOUT_PUBLISHES", get("CHECKOUT_PUBLISHES"), 2, 1)?,
            order_stale_after: Duration::from_millis(number(
                "ORDER_STALE_AFTER_MS",
                get("ORDER_STALE_AFTER_MS"),
                600_000,
                1,
            )?),
            sweep_every: Duration::from_millis(number(
                "SWEEP_EVERY_MS",
                get("SWEEP_EVERY_MS"),
                30_000,
                10,
            )?),
            lease: {
                let d = crate::lease::LeaseConfig::default();
                let ms =
                    |key: &str, default: Duration, min: u64| -> Result<Duration, ConfigError> {
                        Ok(Duration::from_millis(number(
                            key,
                            get(key),
                            default.as_millis() as u64,
                            min,
                        )?))
                    };
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
                lease
            },
            sandbox_payment_delay: Duration::from_millis(number(
                "SANDBOX_PAYMENT_DELAY_MS",
                get("SANDBOX_PAYMENT_DELAY_MS"),
                0,
                0,
            )?),
            engine: EngineConfig {
                shards,
                persister,
                feed_capacity: number(
                    "STOCK_STREAM_BUFFER",
                    get("STOCK_STREAM_BUFFER"),
                    defaults.feed_capacity,
                    16,
                )?,
            },
        })
    }
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
