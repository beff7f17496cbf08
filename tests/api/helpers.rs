//! Test harness: per-test databases, the in-process application, and a TCP proxy that can cut
//! a connection to a dependency without touching the shared service.

use std::net::SocketAddr;
use std::time::Duration;

use diesel::prelude::*;
use orderflow::config::Config;
use orderflow::persistence::{self, DbPool};
use orderflow::startup::Application;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef-support";
/// The HS256 key customer tokens are signed with in the tests.
pub const JWT_SECRET: &str = "test-customer-key-0123456789abcdef0123456789";

/// A checkout body with its typed card (if any) exchanged for a sandbox token, as a producer
/// that tokenized in the browser sends it.
pub fn tokenized(body: &Value) -> Value {
    let mut body = body.clone();
    let card = body["payment"]["card"].clone();
    if card.is_object() {
        let raw = orderflow::domain::checkout::RawCard {
            number: card["number"]
                .as_str()
                .unwrap_or_default()
                .replace([' ', '-'], ""),
            holder_name: card["holder_name"].as_str().unwrap_or_default().to_owned(),
            exp_month: card["exp_month"].as_u64().unwrap_or(0) as u32,
            exp_year: card["exp_year"].as_i64().unwrap_or(0) as i32,
            cvv: String::new(),
        };
        let token = orderflow::orders::payment::SandboxGateway::token_for(&raw);
        body["payment"] = serde_json::to_value(token).unwrap();
    }
    body
}

/// A customer token for `customer`, valid for an hour.
pub fn customer_token(customer: &str) -> String {
    orderflow::auth::customer::issue_token(
        &orderflow::auth::Secret::new(JWT_SECRET),
        customer,
        Duration::from_secs(3600),
        None,
        None,
    )
    .expect("sign a test token")
}

/// The order id the service recorded for an idempotency key (orders from other systems get
/// theirs when the consumer creates them): `None` while there is none.
pub fn order_of_key(db: &TestDb, key: &str) -> Option<String> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    diesel::sql_query("SELECT order_id::text AS id FROM orders WHERE idempotency_key = $1")
        .bind::<diesel::sql_types::Text, _>(key)
        .get_result::<Id>(&mut db.conn())
        .ok()
        .map(|i| i.id)
}

/// Waits (up to 30 s) for the order of an idempotency key to exist; its id.
pub async fn wait_order_of_key(db: &TestDb, key: &str) -> String {
    wait_order_of_key_within(db, key, Duration::from_secs(30)).await
}

/// Waits (up to `within`) for the order of an idempotency key to exist; its id.
pub async fn wait_order_of_key_within(db: &TestDb, key: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(id) = order_of_key(db, key) {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no order for key {key} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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

/// `(ready, unacknowledged)` messages of a queue in a vhost, as the broker counts them.
pub fn queue_depth(vhost: &TestVhost, queue: &str) -> (u64, u64) {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "-p",
            &vhost.name,
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .output()
        .expect("run rabbitmqctl");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() == Some(&queue) && cols.len() == 3 {
            return (cols[1].parse().unwrap_or(0), cols[2].parse().unwrap_or(0));
        }
    }
    panic!("no queue {queue} in {}: {text}", vhost.name);
}

/// Waits (up to 20 s; the broker's counts lag by a few seconds) until a queue holds `expected`
/// `(ready, unacknowledged)` messages; the last counts otherwise.
pub async fn settle_depth(vhost: &TestVhost, queue: &str, expected: (u64, u64)) -> (u64, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let depth = queue_depth(vhost, queue);
        if depth == expected || std::time::Instant::now() > deadline {
            return depth;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A database of this test's own, created and migrated; dropped (forcibly) when this is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

/// A migrated database the tests' databases are copied from (`CREATE DATABASE … TEMPLATE`,
/// much faster than migrating each). Named by a hash of the migrations, so a changed migration
/// gets a fresh one (and the stale ones are dropped); made once, under an advisory lock, by
/// whichever test process comes first.
fn template() -> &'static str {
    static TEMPLATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("migrations")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("up.sql"))
            .collect();
        files.sort();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for file in &files {
            for b in std::fs::read(file).unwrap_or_default() {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        let name = format!("of_template_{hash:016x}");
        let mut admin = PgConnection::establish(&format!("{}/postgres", pg_base()))
            .expect("connect to the maintenance database");
        diesel::sql_query("SELECT pg_advisory_lock(7411002)")
            .execute(&mut admin)
            .expect("lock");
        let exists = sql_count(
            &mut admin,
            &format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{name}'"),
        ) > 0;
        if !exists {
            let url = format!("{}/{}", pg_base(), name);
            persistence::prepare_database(&url).expect("create and migrate the template database");
            // Stale templates (older migrations) go.
            #[derive(QueryableByName)]
            struct Name {
                #[diesel(sql_type = diesel::sql_types::Text)]
                datname: String,
            }
            let stale: Vec<Name> = diesel::sql_query(format!(
                "SELECT datname FROM pg_database WHERE datname LIKE 'of_template_%' AND datname <> '{name}'"
            ))
            .load(&mut admin)
            .unwrap_or_default();
            for old in stale {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", old.datname))
                    .execute(&mut admin);
            }
        }
        diesel::sql_query("SELECT pg_advisory_unlock(7411002)")
            .execute(&mut admin)
            .expect("unlock");
        name
    })
}

fn sql_count(conn: &mut PgConnection, query: &str) -> i64 {
    #[derive(QueryableByName)]
    struct One {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(query)
        .get_result::<One>(conn)
        .map(|o| o.n)
        .unwrap_or(0)
}

impl TestDb {
    /// A database of this test's own: a copy of the migrated template.
    pub fn new() -> TestDb {
        let name = format!("of_test_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{}/{}", pg_base(), name);
        let template = template();
        let mut admin = PgConnection::establish(&format!("{}/postgres", pg_base()))
            .expect("connect to the maintenance database");
        let mut attempt = 0;
        loop {
            let created = diesel::sql_query(format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
            ))
            .execute(&mut admin);
            match created {
                Ok(_) => break,
                // Another test is copying the template this very moment: try again.
                Err(e)
                    if attempt < 50 && e.to_string().contains("being accessed by other users") =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(20 * attempt));
                }
                Err(e) => panic!("create the test database from {template}: {e}"),
            }
        }
        TestDb { name, url }
    }

    pub fn pool(&self) -> DbPool {
        persistence::connect_pool(&self.url, 3).expect("pool")
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

    /// The change log of a SKU in version order: (version, on_hand, reserved) after each change.
    pub fn events(&self, sku: &str) -> Vec<(i64, i64, i64)> {
        use orderflow::persistence::schema::stock_events;
        stock_events::table
            .filter(stock_events::sku.eq(sku))
            .order(stock_events::version)
            .select((
                stock_events::version,
                stock_events::on_hand,
                stock_events::reserved,
            ))
            .load(&mut self.conn())
            .expect("load events")
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
    config.admin_tokens = orderflow::auth::AdminTokens::from_tokens(admin);
    config.auth.secret = Some(orderflow::auth::Secret::new(JWT_SECRET));
    // The pipeline's tests send many writes for one customer; the limit has its own test.
    config.rate_limits = orderflow::auth::RateSettings {
        per_second: 100_000,
        burst: 100_000,
    };
    config.engine.shards = 2;
    config.durable_timeout = Duration::from_secs(5);
    // Many tests run at once against one PostgreSQL (100 connections): small pools.
    config.db_pool_size = 4;
    config
}

/// The application running in-process on a free port, with its own database.
pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub vhost: TestVhost,
    /// Acts as support staff (sends the admin token unless a request sets its own
    /// `Authorization`): the tests of the pipeline act for any customer, as API.md lets staff do.
    pub client: awc::Client,
    /// Sends no credential.
    pub anon: awc::Client,
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
    spawn_app_on(db, TestVhost::new(), tweak).await
}

/// An application whose PostgreSQL goes through `proxy`, with short retry windows and two
/// hand-backs allowed: for the tests of what a long outage does to messages. The instance keeps
/// its lease through the outage (those tests are about the messages).
pub async fn spawn_app_for_handbacks(proxy: &Proxy) -> TestApp {
    spawn_app_with(TestDb::new(), |c| {
        c.database_url = proxy.pg_url(&c.database_url);
        c.retry_window = Duration::from_millis(300);
        c.handback_limit = 2;
        c.lease.ttl = Duration::from_secs(60);
        c.lease.renew_every = Duration::from_secs(20);
    })
    .await
}

/// The application on a given database and vhost.
pub async fn spawn_app_on(
    db: TestDb,
    vhost: TestVhost,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    init_logs();
    let mut config = config_for(&db.url, &vhost.url, Some(ADMIN_TOKEN));
    tweak(&mut config);
    let app = Application::build(config)
        .await
        .expect("application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stopper = app.stopper();
    let app_state = app.state.clone();
    actix_web::rt::spawn(app.run_until_stopped(false));
    // The single instance takes the lease and becomes active within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app_state.active().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the application never became active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    TestApp {
        address,
        db,
        vhost,
        client: http_client(),
        anon: awc::Client::builder()
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
    /// The active parts (engine, catalog, carts, orders) of this instance.
    pub fn active(&self) -> std::sync::Arc<orderflow::active::ActiveParts> {
        self.app_state.active().expect("the instance is active")
    }

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

    /// A GET. A pooled keep-alive connection the service closed just as the client reused it
    /// fails to connect (`Disconnected`, seen once in CI on a loaded machine): a GET is safe
    /// to send again, on a fresh connection.
    pub async fn get(&self, path: &str) -> Reply {
        for _ in 0..2 {
            match self.client.get(self.url(path)).send().await {
                Err(awc::error::SendRequestError::Connect(
                    awc::error::ConnectError::Disconnected,
                )) => continue,
                sent => return read(sent.expect("request sent")).await,
            }
        }
        self.send(self.client.get(self.url(path)), None).await
    }

    /// A request with `customer`'s own token.
    pub fn as_customer(&self, req: awc::ClientRequest, customer: &str) -> awc::ClientRequest {
        req.insert_header((
            "Authorization",
            format!("Bearer {}", customer_token(customer)),
        ))
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
        self.stop_keeping_db().await;
    }

    /// Stops the application but keeps its database and vhost (for a restart on them).
    pub async fn stop_keeping_db(self) -> TestApp {
        tokio::time::timeout(Duration::from_secs(120), self.stopper.stop())
            .await
            .expect("the application shut down within 2 minutes");
        self
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

/// What a [`Proxy`] does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards both ways.
    Open,
    /// Closes every connection and refuses new ones (a dependency that went down).
    Cut,
    /// Keeps every connection open but forwards nothing, either way (a silent drop: a network
    /// partition, or a broker under a memory alarm). Only heartbeats and timeouts notice.
    Stall,
}

/// A TCP proxy in front of a dependency, on a thread and runtime of its own (so a test blocking
/// its own runtime never stalls the traffic). The shared service is never touched.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<ProxyMode>,
}

/// `host:port` of a `scheme://user@host:port` base URL, as written.
fn host_port(base: &str) -> String {
    let rest = base.split("://").nth(1).unwrap_or(base);
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    host_port.split('/').next().unwrap_or(host_port).to_owned()
}

/// Host and port of a `scheme://user@host:port` base URL.
fn addr_of(base: &str) -> SocketAddr {
    std::net::ToSocketAddrs::to_socket_addrs(host_port(base).as_str())
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("no address in {base:?}"))
}

/// The machine's PostgreSQL (from `TEST_PG_BASE`).
pub fn pg_addr() -> SocketAddr {
    addr_of(&pg_base())
}

/// The machine's RabbitMQ (from `TEST_AMQP_BASE`).
pub fn amqp_addr() -> SocketAddr {
    addr_of(&amqp_base())
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<ProxyMode>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Wait while stalled; stop when cut.
        loop {
            let now = *mode.borrow_and_update();
            match now {
                ProxyMode::Open => break,
                ProxyMode::Cut => return,
                ProxyMode::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        // Bytes read before a stall are held until it ends (or dropped on a cut).
        loop {
            let now = *mode.borrow_and_update();
            match now {
                ProxyMode::Open => break,
                ProxyMode::Cut => return,
                ProxyMode::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().unwrap();
        let (mode, watcher) = watch::channel(ProxyMode::Open);
        std::thread::Builder::new()
            .name(format!("proxy-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("proxy listener");
                    loop {
                        let accepted = tokio::select! {
                            a = listener.accept() => a,
                            _ = async { let mut w = watcher.clone(); while w.changed().await.is_ok() {} } => return,
                        };
                        let Ok((inbound, _)) = accepted else { return };
                        if *watcher.borrow() == ProxyMode::Cut {
                            drop(inbound);
                            continue;
                        }
                        let watcher = watcher.clone();
                        tokio::spawn(async move {
                            let Ok(outbound) = TcpStream::connect(target).await else {
                                return;
                            };
                            let (ri, wi) = inbound.into_split();
                            let (ro, wo) = outbound.into_split();
                            tokio::select! {
                                _ = pump(ri, wo, watcher.clone()) => {},
                                _ = pump(ro, wi, watcher.clone()) => {},
                            }
                        });
                    }
                });
            })
            .expect("proxy thread");
        Proxy { addr, mode }
    }

    /// `url` (of the machine's PostgreSQL) through this proxy.
    pub fn pg_url(&self, url: &str) -> String {
        url.replacen(&host_port(&pg_base()), &self.addr.to_string(), 1)
    }

    /// `url` (of the machine's RabbitMQ) through this proxy.
    pub fn amqp_url(&self, url: &str) -> String {
        url.replacen(&host_port(&amqp_base()), &self.addr.to_string(), 1)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        let _ = self.mode.send(ProxyMode::Cut);
    }

    /// Stops forwarding without closing anything.
    pub fn stall(&self) {
        let _ = self.mode.send(ProxyMode::Stall);
    }

    /// Forwards again.
    pub fn restore(&self) {
        let _ = self.mode.send(ProxyMode::Open);
    }
}

/// An `orderflow serve` child process on a port of its own choosing (port 0, reported through
/// `PORT_FILE`), killed when dropped — a failing test leaves no process behind.
pub struct Service {
    child: Option<std::process::Child>,
    pub port: u16,
    pub base: String,
    _dir: TempDir,
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("orderflow-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Service {
    /// Starts `orderflow serve` on this database and vhost (URLs may point at proxies), with
    /// extra environment, and waits until it listens.
    pub fn start(db_url: &str, amqp_url: &str, env: &[(&str, &str)]) -> Service {
        let dir = TempDir::new();
        let port_file = dir.0.join("port");
        let log = std::fs::File::create(dir.0.join("log")).expect("log file");
        // `ORDERFLOW_BIN` runs another build (a release binary for measurements).
        let binary = std::env::var("ORDERFLOW_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_orderflow").to_owned());
        let mut command = std::process::Command::new(binary);
        command
            .arg("serve")
            .env("DATABASE_URL", db_url)
            .env("AMQP_URL", amqp_url)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("PORT_FILE", &port_file)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("AUTH_JWT_SECRET", JWT_SECRET)
            .env("DB_POOL_SIZE", "6")
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start orderflow");
        let mut service = Service {
            child: Some(child),
            port: 0,
            base: String::new(),
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(raw) = std::fs::read_to_string(&port_file) {
                if let Ok(port) = raw.trim().parse::<u16>() {
                    service.port = port;
                    service.base = format!("http://127.0.0.1:{port}");
                    return service;
                }
            }
            if let Some(child) = service.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "orderflow exited before listening ({status}): {}",
                        service.log()
                    );
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "orderflow never listened: {}",
                service.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the process wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (up to `limit`) for the process to end on its own (an injected abort); kills it
    /// after that. Whether it ended by itself.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | None => {
                    self.child = None;
                    return true;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        self.kill();
        false
    }

    /// SIGTERM, and wait (up to 60 s) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "orderflow did not exit within 60 s of SIGTERM: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `/health/ready`: the status and the body (`None` when nothing answers).
    pub async fn readiness(&self, client: &awc::Client) -> Option<(u16, Value)> {
        let mut resp = client
            .get(self.url("/health/ready"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.ok()?;
        Some((status, body))
    }

    /// Waits (up to 60 s) until `/health/ready` answers 200.
    pub async fn ready(&self, client: &awc::Client) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(resp) = client.get(self.url("/health/ready")).send().await {
                if resp.status().as_u16() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "orderflow at {} did not become ready: {}",
            self.base,
            self.log()
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client acting as support staff (the admin token on every request that sets no
/// `Authorization` of its own).
pub fn http_client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .add_default_header(("Authorization", format!("Bearer {ADMIN_TOKEN}")))
        .finish()
}

/// One SQL value, through psql-free diesel.
pub fn sql_i64(db: &TestDb, query: &str) -> i64 {
    #[derive(QueryableByName)]
    struct One {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(query)
        .get_result::<One>(&mut db.conn())
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .n
}

impl TestDb {
    /// The books balance: every SKU's reserved units are exactly what the orders holding stock
    /// (`reserved`, `scheduled`) hold; no order is left undecided or unsettled.
    pub fn assert_books_balance(&self) {
        let off = sql_i64(
            self,
            "WITH held AS (
               SELECT i->>'sku' AS sku, sum((i->>'quantity')::bigint) AS q
               FROM orders o, jsonb_array_elements(o.items) i
               WHERE o.status IN ('reserved', 'scheduled') GROUP BY 1)
             SELECT count(*) AS n FROM stock s LEFT JOIN held h USING (sku)
             WHERE s.reserved <> coalesce(h.q, 0)",
        );
        if off > 0 {
            let out = std::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-Atc",
                    "SELECT s.sku, s.on_hand, s.reserved FROM stock s ORDER BY 1 LIMIT 20",
                    &self.name,
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!("{off} sku(s) hold reservations no order accounts for:\n{out}");
        }
        assert_eq!(
            sql_i64(
                self,
                "SELECT count(*) AS n FROM orders WHERE status IN ('received', 'reserved')"
            ),
            0,
            "orders left undecided"
        );
        assert_eq!(
            sql_i64(self, "SELECT count(*) AS n FROM orders WHERE NOT settled"),
            0,
            "orders that ended with stock still held"
        );
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
        // Other systems send a card as the gateway's token, never the card (API.md): a test
        // body with a card goes out tokenized, as such a producer's would.
        let body = if exchange == "orders" {
            tokenized(body)
        } else {
            body.clone()
        };
        self.app_state
            .broker()
            .publish(exchange, routing_key, body.to_string().as_bytes(), props)
            .await
            .expect("published");
    }

    /// Publishes raw bytes to `orders.checkout` (a producer that sends garbage).
    pub async fn publish_checkout_raw(&self, data: &[u8], message_id: &str) {
        let props = lapin::BasicProperties::default().with_message_id(message_id.into());
        self.app_state
            .broker()
            .publish("orders", "checkout", data, props)
            .await
            .expect("published");
    }

    /// Waits (up to 10 s) for a message on a dead-letter queue; returns its body and the reason
    /// orderflow gave.
    pub async fn dead_letter(&self, queue: &str) -> (Value, String) {
        let (_, body, reason) = self.dead_letter_with_id(queue).await;
        (serde_json::from_str(&body).unwrap_or(Value::Null), reason)
    }

    /// Waits (up to 10 s) for a message on a dead-letter queue; returns its message id, its body
    /// as text and the reason orderflow gave.
    pub async fn dead_letter_with_id(&self, queue: &str) -> (String, String, String) {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        let conn = self.app_state.broker().wait_connection().await;
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
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let body = String::from_utf8_lossy(&delivery.data).into_owned();
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
                return (id, body, reason);
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

/// A queue of the test's own, bound to `order.events` with `keys`, consumed without acks (keep
/// the channel as long as the consumer).
pub async fn watch_events(app: &TestApp, keys: &[&str]) -> (lapin::Channel, lapin::Consumer) {
    let conn = app.app_state.broker().wait_connection().await;
    let channel = conn.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    for key in keys {
        channel
            .queue_bind(
                queue.name().as_str().into(),
                "order.events".into(),
                (*key).into(),
                lapin::options::QueueBindOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let events = channel
        .basic_consume(
            queue.name().as_str().into(),
            "events".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    (channel, events)
}

/// The next event within half a second: its routing key, message id and body.
pub async fn next_event(events: &mut lapin::Consumer) -> Option<(String, Option<String>, Value)> {
    match tokio::time::timeout(
        Duration::from_millis(500),
        futures_util::StreamExt::next(events),
    )
    .await
    {
        Ok(Some(Ok(d))) => Some((
            d.routing_key.to_string(),
            d.properties.message_id().as_ref().map(|m| m.to_string()),
            serde_json::from_slice(&d.data).unwrap(),
        )),
        _ => None,
    }
}
