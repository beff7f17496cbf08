//! RabbitMQ: the broker connection, kept alive by a reconnect loop of our own (lapin's built-in
//! recovery has open bugs), the topology declared on every connect, publishing with publisher
//! confirms, and consumers that survive broker restarts.

mod batcher;
mod batches;
pub mod checkout;
pub mod consumer;
mod copies;
pub mod dead_letters;
pub mod gate;
mod message;
pub mod publisher;
pub mod topology;

pub use crate::telemetry::error_chain;
pub use crate::urls::{first_node, node_label, node_urls, redact, user_of};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
pub enum BrokerError {
    /// Not connected, a time-out, a bad URL, or every node's failure in one line.
    #[error("cannot connect to RabbitMQ: {0}")]
    Unreachable(String),
    #[error("cannot connect to RabbitMQ: {0}")]
    Amqp(#[source] lapin::Error),
    #[error("cannot connect to RabbitMQ: declaring the topology: {0}")]
    Topology(#[source] lapin::Error),
}

impl BrokerError {
    /// What went wrong, without the "cannot connect" prefix (for a line that says it itself).
    pub fn detail(&self) -> String {
        match self {
            BrokerError::Unreachable(why) => why.clone(),
            BrokerError::Amqp(e) => e.to_string(),
            BrokerError::Topology(e) => format!("declaring the topology: {e}"),
        }
    }
}

/// Why a publish was not confirmed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("the broker is unreachable: not connected")]
    NotConnected,
    #[error("the broker is unreachable: {0}")]
    Unavailable(#[source] lapin::Error),
    #[error("the broker refused the message (queue full)")]
    Rejected,
    #[error("no queue is bound for the message")]
    Unroutable,
    #[error("the broker did not confirm in time")]
    Timeout,
}

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

struct Inner {
    /// The cluster's nodes (`AMQP_URL`); `node` is the index of the one connected (or last
    /// connected) to.
    nodes: Vec<String>,
    node: AtomicUsize,
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
    /// Intake's checkouts waiting to go out together.
    batcher: batcher::Batcher,
    /// The runtime the connection was made on (the process's main one): where publishes that
    /// serve many callers run.
    runtime: tokio::runtime::Handle,
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
            Ok(Err(e)) => return Err(BrokerError::Amqp(e)),
            Err(_) => return Err(BrokerError::Unreachable("timed out after 5 s".into())),
        };
    topology::declare(&conn, topology)
        .await
        .map_err(BrokerError::Topology)?;
    Ok(conn)
}

/// Connects to the first node that answers, trying them in list order from `start` (wrapping);
/// returns its index. The errors of every node tried, when none answers.
async fn connect_any(
    nodes: &[String],
    start: usize,
    topology: &TopologyConfig,
) -> Result<(usize, Connection), BrokerError> {
    let mut errors = Vec::new();
    for k in 0..nodes.len() {
        let i = (start + k) % nodes.len();
        let Some(url) = nodes.get(i) else { continue };
        match connect_once(url, topology).await {
            Ok(conn) => return Ok((i, conn)),
            Err(e) => errors.push(format!("{}: {}", node_label(url), e.detail())),
        }
    }
    Err(BrokerError::Unreachable(errors.join("; ")))
}

impl Broker {
    /// Connects and declares the topology (failing fast, so start-up can report it), then keeps
    /// the connection alive in the background: when it drops, it reconnects — to the next node
    /// of the list first, so a dead node is left at once — with a capped backoff once every node
    /// failed, and declares the topology again. `urls` is one node URL or a comma-separated list
    /// of a cluster's nodes: the first connection starts at a node chosen at random (instances
    /// spread over the cluster), then goes in list order.
    pub async fn connect(
        urls: &str,
        topology: TopologyConfig,
        monitor: Arc<Monitor>,
    ) -> Result<Broker, BrokerError> {
        let nodes = node_urls(urls).map_err(BrokerError::Unreachable)?;
        let start = fastrand::usize(..nodes.len());
        let (node, first) = connect_any(&nodes, start, &topology).await?;
        let (tx, rx) = watch::channel(Some(Arc::new(first)));
        let own_user = nodes.first().map(|n| user_of(n)).unwrap_or_default();
        let broker = Broker {
            inner: Arc::new(Inner {
                nodes,
                node: AtomicUsize::new(node),
                own_user,
                connected: AtomicBool::new(true),
                connection: rx,
                publish_channel: Mutex::new(None),
                monitor,
                batcher: batcher::Batcher::new(
                    topology.checkout_batch,
                    topology.checkout_publishes,
                ),
                runtime: tokio::runtime::Handle::current(),
                topology,
            }),
        };
        tracing::info!(node = %broker.node(), "connected to RabbitMQ");
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
                let lost = inner.node.load(Ordering::Relaxed);
                match connect_any(&inner.nodes, lost + 1, &inner.topology).await {
                    Ok((node, conn)) => {
                        inner.node.store(node, Ordering::Relaxed);
                        let label = inner.nodes.get(node).map(|n| node_label(n));
                        tracing::info!(
                            node = label.as_deref().unwrap_or_default(),
                            "reconnected to RabbitMQ"
                        );
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

    /// `host:port` of the node connected to (or last connected to, while reconnecting).
    pub fn node(&self) -> String {
        let i = self.inner.node.load(Ordering::Relaxed);
        self.inner
            .nodes
            .get(i)
            .map(|n| node_label(n))
            .unwrap_or_default()
    }

    /// `host:port` of every node of the list, in order.
    pub fn nodes(&self) -> Vec<String> {
        self.inner.nodes.iter().map(|n| node_label(n)).collect()
    }

    /// How long dead letters orderflow writes are kept.
    pub fn dead_letter_ttl(&self) -> Duration {
        self.inner.topology.dead_letter_ttl
    }

    /// Hand-backs of one message before it is dead-lettered after all.
    pub fn handback_limit(&self) -> i64 {
        self.inner.topology.handback_limit
    }

    fn batcher(&self) -> &batcher::Batcher {
        &self.inner.batcher
    }

    /// Runs `task` on the broker's runtime, beyond any caller.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.runtime.spawn(task);
    }

    /// The RabbitMQ user this service publishes as.
    pub fn own_user(&self) -> &str {
        &self.inner.own_user
    }

    /// The monitor this connection counts its traffic into (publishes, deliveries,
    /// settlements) — the one it was given; the rest of the service is given it too.
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
        let conn = self.current().ok_or(PublishError::NotConnected)?;
        let ch = conn
            .create_channel()
            .await
            .map_err(PublishError::Unavailable)?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(PublishError::Unavailable)?;
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
                .map_err(PublishError::Unavailable)?;
            match confirm.await.map_err(PublishError::Unavailable)? {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_returned)) => Err(PublishError::Unroutable),
                Confirmation::Nack(_) => {
                    self.replace_publish_channel(channel.id()).await;
                    Err(PublishError::Rejected)
                }
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

    /// Retires the publish channel after a nack: the next publish opens a new one. A quorum
    /// queue whose leader died while a channel was publishing to it can leave that channel
    /// refusing every later publish although the queue, under its new leader, takes messages
    /// again (seen with RabbitMQ 3.10: every checkout nacked for 30 s and more after the node
    /// was killed, until the channel was replaced). A queue that is really full nacks the new
    /// channel too, so this costs one channel per nack at worst; the old channel is closed once
    /// the confirms still in flight on it had their time.
    async fn replace_publish_channel(&self, id: u16) {
        let old = {
            let mut slot = self.inner.publish_channel.lock().await;
            if slot.as_ref().map(Channel::id) != Some(id) {
                return; // replaced already
            }
            slot.take()
        };
        let Some(old) = old else { return };
        tokio::spawn(async move {
            tokio::time::sleep(CONFIRM_TIMEOUT).await;
            let _ = old.close(200, "replaced after a nack".into()).await;
        });
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Some(conn) = self.current() {
            let _ = conn.close(200, "orderflow shutting down".into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19, item 7: a broker failure keeps lapin's error as its source, said once.
    #[actix_web::test]
    async fn a_failed_amqp_call_keeps_lapins_error_as_its_source() {
        let refused = Connection::connect(
            "amqp://guest:guest@127.0.0.1:1/%2f",
            ConnectionProperties::default(),
        )
        .await
        .map(|_| ())
        .unwrap_err();
        let publish = PublishError::Unavailable(refused.clone());
        assert!(std::error::Error::source(&publish).is_some());
        assert_eq!(error_chain(&publish), publish.to_string(), "said once");
        let connect = BrokerError::Amqp(refused);
        assert!(std::error::Error::source(&connect).is_some());
        assert!(
            connect
                .to_string()
                .starts_with("cannot connect to RabbitMQ: "),
            "{connect}"
        );
        assert_eq!(error_chain(&connect), connect.to_string(), "said once");
    }
}
