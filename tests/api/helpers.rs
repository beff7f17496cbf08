//! Test harness: per-test databases, the in-process application, and a TCP proxy that can cut
//! a connection to a dependency without touching the shared service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use orderflow::config::Config;
use orderflow::persistence::{self, DbPool};
use orderflow::startup::Application;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Base URL of the machine's PostgreSQL server, without a database name.
pub fn pg_base() -> String {
    std::env::var("TEST_PG_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Host part of the machine's RabbitMQ, without a vhost.
pub fn amqp_base() -> String {
    std::env::var("TEST_AMQP_BASE").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A RabbitMQ vhost of this test's own (queue names are fixed by the API, so isolation is by
/// vhost); deleted, with everything in it, when dropped.
pub struct TestVhost {
    pub name: String,
    pub url: String,
}

impl TestVhost {
    pub fn new() -> TestVhost {
        let name = format!("of_test_{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        let url = format!("{}/{}", amqp_base(), name);
        TestVhost { name, url }
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// A database of this test's own, created and migrated; dropped (forcibly) when this is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let name = format!("of_test_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{}/{}", pg_base(), name);
        persistence::prepare_database(&url).expect("create and migrate the test database");
        TestDb { name, url }
    }

    pub fn pool(&self) -> DbPool {
        persistence::connect_pool(&self.url, 8).expect("pool")
    }

    pub fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("connect to the test database")
    }

    /// (on_hand, reserved, version) of a SKU as stored.
    pub fn stock(&self, sku: &str) -> (i64, i64, i64) {
        use orderflow::persistence::schema::stock;
        stock::table
            .find(sku)
            .select((stock::on_hand, stock::reserved, stock::version))
            .first(&mut self.conn())
            .expect("stock row")
    }

    /// Number of change-log rows of a SKU.
    pub fn event_count(&self, sku: &str) -> i64 {
        use orderflow::persistence::schema::stock_events;
        stock_events::table
            .filter(stock_events::sku.eq(sku))
            .count()
            .get_result(&mut self.conn())
            .expect("count events")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let maintenance = format!("{}/postgres", pg_base());
        if let Ok(mut conn) = PgConnection::establish(&maintenance) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

/// Creates products directly in the database (with empty stock rows).
pub fn seed_products(db: &TestDb, skus: &[&str]) {
    let mut conn = db.conn();
    for sku in skus {
        let product = orderflow::domain::Product {
            sku: orderflow::domain::Sku::parse(sku).unwrap(),
            name: format!("Product {sku}"),
            category: "test".into(),
            tags: vec![],
            price_cents: 1000,
            currency: "BRL".into(),
            attributes: Default::default(),
        };
        persistence::products::upsert(&mut conn, &product).expect("seed product");
    }
}

pub fn config_for(db_url: &str, amqp: &str, admin: Option<&str>) -> Config {
    let mut config = Config::from_lookup(|_| None).expect("default config");
    config.database_url = db_url.to_owned();
    config.amqp_url = amqp.to_owned();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.admin_token = admin.map(str::to_owned);
    config.engine.shards = 2;
    config.durable_timeout = Duration::from_secs(5);
    config
}

/// The application running in-process on a free port, with its own database.
pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub vhost: TestVhost,
    pub client: awc::Client,
    pub app_state: orderflow::http::AppState,
    stopper: orderflow::startup::Stopper,
}

pub async fn spawn_app() -> TestApp {
    let db = TestDb::new();
    spawn_app_with(db, |_| {}).await
}

/// `TEST_LOG=debug cargo test …` shows the service's logs.
fn init_logs() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

pub async fn spawn_app_with(db: TestDb, tweak: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let vhost = TestVhost::new();
    let mut config = config_for(&db.url, &vhost.url, Some(ADMIN_TOKEN));
    tweak(&mut config);
    let app = Application::build(config)
        .await
        .expect("application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stopper = app.stopper();
    let app_state = app.state.clone();
    actix_web::rt::spawn(app.run_until_stopped(false));
    TestApp {
        address,
        db,
        vhost,
        client: awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish(),
        app_state,
        stopper,
    }
}

/// A response read whole: status, headers we care about, JSON body (Null when not JSON).
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn send(&self, req: awc::ClientRequest, body: Option<Value>) -> Reply {
        let resp = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        };
        read(resp.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)), None).await
    }

    pub fn admin(&self, req: awc::ClientRequest) -> awc::ClientRequest {
        req.insert_header(("Authorization", format!("Bearer {ADMIN_TOKEN}")))
    }

    pub async fn admin_put(&self, path: &str, body: Value) -> Reply {
        self.send(self.admin(self.client.put(self.url(path))), Some(body))
            .await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Reply {
        self.send(self.admin(self.client.post(self.url(path))), Some(body))
            .await
    }

    /// Creates a product through the API and sets its stock.
    pub async fn product_with_stock(&self, sku: &str, on_hand: i64) {
        self.product(sku, "test", &["t"], 500, on_hand).await;
    }

    /// Shuts the application down in order (as SIGTERM would) and waits until it is down.
    pub async fn stop(self) {
        self.stopper.stop().await;
    }
}

pub async fn read(
    mut resp: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
            + Unpin,
    >,
) -> Reply {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.body().limit(10 * 1024 * 1024).await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        retry_after,
        body,
    }
}

/// Asserts the API's error body shape and code.
pub fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "body: {}", reply.body);
    assert_eq!(reply.body["error"]["code"], code, "body: {}", reply.body);
    assert!(
        reply.body["error"]["message"].is_string(),
        "body: {}",
        reply.body
    );
    assert!(
        reply.body["error"]["details"].is_object(),
        "body: {}",
        reply.body
    );
}

/// A TCP proxy in front of a dependency. `cut()` drops every open connection and refuses new
/// ones; `restore()` lets them through again.
pub struct Proxy {
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (open, watcher) = watch::channel(true);
        let watcher = Arc::new(watcher);
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*watcher.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut = (*watcher).clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {},
                        _ = tokio::io::copy(&mut ro, &mut wi) => {},
                        _ = async { while cut.changed().await.is_ok() { if !*cut.borrow() { break; } } } => {},
                    }
                });
            }
        });
        Proxy { addr, open }
    }

    pub fn cut(&self) {
        let _ = self.open.send(false);
    }

    pub fn restore(&self) {
        let _ = self.open.send(true);
    }
}

impl TestApp {
    /// Publishes a JSON message into the app's vhost, confirmed by the broker.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &Value,
        message_id: Option<&str>,
    ) {
        let mut props = lapin::BasicProperties::default();
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        self.app_state
            .broker
            .publish(exchange, routing_key, body.to_string().as_bytes(), props)
            .await
            .expect("published");
    }

    /// Waits (up to 10 s) for a message on a dead-letter queue; returns its body and the reason
    /// orderflow gave.
    pub async fn dead_letter(&self, queue: &str) -> (Value, String) {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        let conn = self.app_state.broker.wait_connection().await;
        let channel = conn.create_channel().await.expect("channel");
        for _ in 0..100 {
            if let Some(msg) = channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .expect("basic_get")
            {
                let delivery = msg.delivery;
                let reason = delivery
                    .properties
                    .headers()
                    .as_ref()
                    .and_then(|h| {
                        h.inner()
                            .get(orderflow::messaging::topology::REASON_HEADER)
                            .cloned()
                    })
                    .map(|v| match v {
                        lapin::types::AMQPValue::LongString(s) => s.to_string(),
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                let body = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
                return (body, reason);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nothing arrived on {queue}");
    }

    /// Polls `path` until `ready(body)` holds (10 s at most).
    pub async fn eventually(&self, path: &str, ready: impl Fn(&Reply) -> bool) -> Reply {
        for _ in 0..100 {
            let reply = self.get(path).await;
            if ready(&reply) {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let last = self.get(path).await;
        panic!(
            "{path} never got there; last: {} {}",
            last.status, last.body
        );
    }

    /// Creates a product with these traits and stock through the API.
    pub async fn product(&self, sku: &str, category: &str, tags: &[&str], price: i64, stock: i64) {
        let r = self
            .admin_put(
                &format!("/v1/products/{sku}"),
                serde_json::json!({"name": format!("Product {sku}"), "category": category, "tags": tags, "price_cents": price}),
            )
            .await;
        assert!(
            r.status == 201 || r.status == 200,
            "product: {} {}",
            r.status,
            r.body
        );
        let r = self
            .admin_put(
                &format!("/v1/inventory/{sku}"),
                serde_json::json!({ "on_hand": stock }),
            )
            .await;
        assert_eq!(r.status, 200, "stock: {}", r.body);
    }
}
