//! RabbitMQ: the broker connection, kept alive by a reconnect loop of our own (lapin's built-in
//! recovery has open bugs), and its health for `/health/ready`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;

/// A broker failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to RabbitMQ: {0}")]
pub struct BrokerError(pub String);

/// The service's connection to RabbitMQ.
#[derive(Clone)]
pub struct Broker {
    url: String,
    connected: Arc<AtomicBool>,
    connection: watch::Receiver<Option<Arc<Connection>>>,
}

async fn connect_once(url: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name("orderflow".into());
    match tokio::time::timeout(Duration::from_secs(5), Connection::connect(url, props)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(BrokerError(e.to_string())),
        Err(_) => Err(BrokerError("timed out after 5 s".into())),
    }
}

impl Broker {
    /// Connects once (failing fast, so start-up can report it), then keeps the connection alive
    /// in the background: when it drops, it reconnects with a capped backoff.
    pub async fn connect(url: &str) -> Result<Broker, BrokerError> {
        let first = connect_once(url).await?;
        let (tx, rx) = watch::channel(Some(Arc::new(first)));
        let connected = Arc::new(AtomicBool::new(true));
        let broker = Broker {
            url: url.to_owned(),
            connected: Arc::clone(&connected),
            connection: rx,
        };
        let url = url.to_owned();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if tx.is_closed() {
                    return; // every Broker handle is gone
                }
                let alive = tx.borrow().as_ref().is_some_and(|c| c.status().connected());
                if alive {
                    connected.store(true, Ordering::Relaxed);
                    delay = Duration::from_millis(200);
                    continue;
                }
                connected.store(false, Ordering::Relaxed);
                match connect_once(&url).await {
                    Ok(conn) => {
                        tracing::info!("reconnected to RabbitMQ");
                        let _ = tx.send(Some(Arc::new(conn)));
                        connected.store(true, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "RabbitMQ unreachable");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Ok(broker)
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
            && self
                .connection
                .borrow()
                .as_ref()
                .is_some_and(|c| c.status().connected())
    }

    /// The broker URL (with credentials); for logs use [`Broker::redacted_url`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let conn = self.connection.borrow().clone();
        if let Some(conn) = conn {
            let _ = conn.close(200, "orderflow shutting down".into()).await;
        }
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    match (rest.find(':'), rest.find('@')) {
        (Some(colon), Some(at)) if colon < at => {
            format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            )
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::redact("amqp://h/v"), "amqp://h/v");
    }
}
