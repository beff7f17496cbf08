//! RabbitMQ: the broker connection, kept alive by a reconnect loop of our own (lapin's built-in
//! recovery has open bugs), the topology declared on every connect, publishing with publisher
//! confirms, and consumers that survive broker restarts.

pub mod consumer;
pub mod dead_letters;
pub mod gate;
mod message;
pub mod topology;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::{watch, Mutex};

use crate::monitor::{Monitor, PublishOutcome};
use topology::TopologyConfig;

/// A broker failure at connect time.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to RabbitMQ: {0}")]
pub struct BrokerError(pub String);

/// Why a publish was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the broker is unreachable: {0}")]
    Unavailable(String),
    #[error("the broker refused the message (queue full)")]
    Rejected,
    #[error("no queue is bound for the message")]
    Unroutable,
    #[error("the broker did not confirm in time")]
    Timeout,
}

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

struct Inner {
    url: String,
    /// The RabbitMQ user this service connects as: every publish carries it as `user_id`
    /// (the broker refuses a `user_id` that is not the connection's), which is how a consumer
    /// tells orderflow's own messages from anyone else's.
    own_user: String,
    topology: TopologyConfig,
    connected: AtomicBool,
    connection: watch::Receiver<Option<Arc<Connection>>>,
    /// The confirm-mode channel publishes go through; replaced when its connection died.
    publish_channel: Mutex<Option<Channel>>,
    monitor: Arc<Monitor>,
}

/// The service's connection to RabbitMQ; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

async fn connect_once(url: &str, topology: &TopologyConfig) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name("orderflow".into());
    let conn =
        match tokio::time::timeout(Duration::from_secs(5), Connection::connect(url, props)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(BrokerError(e.to_string())),
            Err(_) => return Err(BrokerError("timed out after 5 s".into())),
        };
    topology::declare(&conn, topology)
        .await
        .map_err(|e| BrokerError(format!("declaring the topology: {e}")))?;
    Ok(conn)
}

impl Broker {
    /// Connects once and declares the topology (failing fast, so start-up can report it), then
    /// keeps the connection alive in the background: when it drops, it reconnects with a capped
    /// backoff and declares the topology again.
    pub async fn connect(url: &str, topology: TopologyConfig) -> Result<Broker, BrokerError> {
        let first = connect_once(url, &topology).await?;
        let (tx, rx) = watch::channel(Some(Arc::new(first)));
        let broker = Broker {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                own_user: user_of(url),
                topology,
                connected: AtomicBool::new(true),
                connection: rx,
                publish_channel: Mutex::new(None),
                monitor: Arc::new(Monitor::new()),
            }),
        };
        let weak = Arc::downgrade(&broker.inner);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Some(inner) = weak.upgrade() else { return };
                let alive = tx.borrow().as_ref().is_some_and(|c| c.status().connected());
                if alive {
                    inner.connected.store(true, Ordering::Relaxed);
                    delay = Duration::from_millis(200);
                    continue;
                }
                inner.connected.store(false, Ordering::Relaxed);
                match connect_once(&inner.url, &inner.topology).await {
                    Ok(conn) => {
                        tracing::info!("reconnected to RabbitMQ");
                        let _ = tx.send(Some(Arc::new(conn)));
                        inner.connected.store(true, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "RabbitMQ unreachable");
                        drop(inner);
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Ok(broker)
    }

    /// How long dead letters orderflow writes are kept.
    pub fn dead_letter_ttl(&self) -> Duration {
        self.inner.topology.dead_letter_ttl
    }

    /// The RabbitMQ user this service publishes as.
    pub fn own_user(&self) -> &str {
        &self.inner.own_user
    }

    /// What this connection's traffic (and the service around it) looks like: counters,
    /// depths, latencies, admission.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.inner.monitor
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed) && self.current().is_some()
    }

    /// The live connection, if there is one now.
    pub fn current(&self) -> Option<Arc<Connection>> {
        self.inner
            .connection
            .borrow()
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }

    /// Waits until a live connection is there.
    pub async fn wait_connection(&self) -> Arc<Connection> {
        let mut rx = self.inner.connection.clone();
        loop {
            if let Some(conn) = self.current() {
                return conn;
            }
            // Woken by a reconnect; polled as well in case the old one died silently.
            let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
        }
    }

    async fn publish_channel(&self) -> Result<Channel, PublishError> {
        let mut slot = self.inner.publish_channel.lock().await;
        if let Some(ch) = slot.as_ref() {
            if ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        let conn = self
            .current()
            .ok_or_else(|| PublishError::Unavailable("not connected".into()))?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// Publishes a persistent message and waits for the broker's confirm. Many publishes may be
    /// in flight on the channel at once; each caller awaits only its own confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        self.publish_with(exchange, routing_key, payload, properties, true)
            .await
    }

    /// Publishes an event for whoever listens: confirmed, but a message no queue is bound for
    /// is fine (`mandatory` off).
    pub async fn publish_event(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        id: uuid::Uuid,
    ) -> Result<(), PublishError> {
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(id.to_string().into());
        // Whoever consumes the event can continue the order's trace.
        if let Some(traceparent) = crate::telemetry::traceparent(&tracing::Span::current()) {
            let mut headers = lapin::types::FieldTable::default();
            headers.insert(
                crate::telemetry::TRACEPARENT.into(),
                lapin::types::AMQPValue::LongString(traceparent.into()),
            );
            props = props.with_headers(headers);
        }
        self.publish_with(exchange, routing_key, payload, props, false)
            .await
    }

    async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let properties = properties
            .with_delivery_mode(2)
            .with_user_id(self.inner.own_user.as_str().into());
        // Everything, the channel included, inside the time-out: a connection that stalls
        // (a network partition, a broker blocking publishers under a memory alarm) gets a clear
        // "not confirmed" in bounded time, never a hang.
        let publish = async {
            let channel = self.publish_channel().await?;
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory,
                        ..BasicPublishOptions::default()
                    },
                    payload,
                    properties,
                )
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            match confirm
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?
            {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_returned)) => Err(PublishError::Unroutable),
                Confirmation::Nack(_) => Err(PublishError::Rejected),
                Confirmation::NotRequested => Ok(()),
            }
        };
        let result = match tokio::time::timeout(CONFIRM_TIMEOUT, publish).await {
            Ok(result) => result,
            Err(_) => Err(PublishError::Timeout),
        };
        let outcome = match &result {
            Ok(()) => PublishOutcome::Confirmed,
            Err(PublishError::Rejected) => PublishOutcome::Rejected,
            Err(PublishError::Timeout) => PublishOutcome::TimedOut,
            Err(_) => PublishOutcome::Failed,
        };
        self.inner
            .monitor
            .record_publish(exchange, routing_key, outcome);
        result
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Some(conn) = self.current() {
            let _ = conn.close(200, "orderflow shutting down".into()).await;
        }
    }
}

/// The user name of an AMQP URL (percent-decoded); RabbitMQ's default `guest` when it has none.
pub fn user_of(url: &str) -> String {
    let raw = url::Url::parse(url)
        .map(|u| u.username().to_owned())
        .unwrap_or_default();
    match crate::persistence::percent_decode(&raw) {
        user if !user.is_empty() => user,
        _ => "guest".to_owned(),
    }
}

/// An error with its causes, `a: b: c` — for a dead letter's reason or a log line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Not a URL: it may still hold a secret; show only what precedes an `@`.
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_own_user_is_read_from_the_url() {
        assert_eq!(
            super::user_of("amqp://orderflow:pw@rabbitmq:5672/%2f"),
            "orderflow"
        );
        assert_eq!(super::user_of("amqp://wh%40site:pw@h/v"), "wh@site");
        assert_eq!(super::user_of("amqp://127.0.0.1:5672/%2f"), "guest");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::redact("amqp://h/v"), "amqp://h/v");
        // Percent-encoded passwords (an `@` or `:` inside) and IPv6 hosts.
        assert_eq!(
            super::redact("amqp://user:p%40ss%3Aword@[::1]:5672/vh"),
            "amqp://user:***@[::1]:5672/vh"
        );
        assert_eq!(
            super::redact("postgres://u:s3cr%2Ft@db.example:5432/orderflow?sslmode=require"),
            "postgres://u:***@db.example:5432/orderflow?sslmode=require"
        );
    }
}
