//! No single point of failure below the service (issue 21): a RabbitMQ cluster of this test's
//! own — three nodes with their own names, ports, data directories and cookie, on loopback,
//! started from the package's own scripts and removed afterwards; the machine's shared broker is
//! never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{http_client, Service, TempDir, TestDb, ADMIN_TOKEN};
use crate::load::{decided, stock_up, verify, Load};

/// The package's own scripts (not the wrapper on the PATH, which runs the machine's node):
/// `/usr/lib/rabbitmq/lib/rabbitmq_server-<version>/sbin`.
fn rabbitmq_sbin() -> String {
    std::fs::read_dir("/usr/lib/rabbitmq/lib")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("sbin"))
        .find(|p| p.join("rabbitmq-server").exists())
        .map(|p| p.display().to_string())
        .expect("RabbitMQ's package (rabbitmq-server) is installed")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One node of a [`RabbitCluster`].
pub struct RabbitNode {
    pub name: String,
    pub port: u16,
    /// The management API's port.
    pub management: u16,
    child: Option<Child>,
}

/// A RabbitMQ cluster of its own; every node killed and every file removed when dropped.
pub struct RabbitCluster {
    pub nodes: Vec<RabbitNode>,
    dir: TempDir,
}

impl RabbitCluster {
    /// Starts `n` nodes that form one cluster by classic peer discovery (the node list in each
    /// one's config file, as the compose file does): the first alone, then the others, which
    /// join it.
    pub fn start(n: usize) -> RabbitCluster {
        let dir = TempDir::new();
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let names: Vec<String> = (1..=n).map(|i| format!("of{tag}n{i}@localhost")).collect();
        std::fs::write(dir.0.join(".erlang.cookie"), format!("ofcookie{tag}")).unwrap();
        set_mode(&dir.0.join(".erlang.cookie"), 0o400);
        let mut cluster = RabbitCluster {
            nodes: Vec::new(),
            dir,
        };
        for (i, name) in names.iter().enumerate() {
            let port = free_port();
            let management = free_port();
            let home = cluster.dir.0.clone();
            let base = home.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&base).unwrap();
            let mut conf = format!(
                "listeners.tcp.default = {port}\n\
                 management.tcp.port = {management}\n\
                 management.tcp.ip = 127.0.0.1\n\
                 loopback_users = none\n\
                 cluster_formation.peer_discovery_backend = classic_config\n"
            );
            for (j, other) in names.iter().enumerate() {
                conf.push_str(&format!(
                    "cluster_formation.classic_config.nodes.{} = {other}\n",
                    j + 1
                ));
            }
            std::fs::write(base.join("rabbitmq.conf"), conf).unwrap();
            std::fs::write(base.join("enabled_plugins"), "[rabbitmq_management].\n").unwrap();
            std::fs::write(base.join("env.conf"), "").unwrap();
            let mut command = Command::new(format!("{}/rabbitmq-server", rabbitmq_sbin()));
            command
                .env("HOME", &home)
                .env("RABBITMQ_CONF_ENV_FILE", base.join("env.conf"))
                .env("RABBITMQ_NODENAME", name)
                .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODE_PORT", port.to_string())
                .env("RABBITMQ_DIST_PORT", free_port().to_string())
                .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", base.join("log"))
                .env("RABBITMQ_CONFIG_FILE", base.join("rabbitmq.conf"))
                .env(
                    "RABBITMQ_ENABLED_PLUGINS_FILE",
                    base.join("enabled_plugins"),
                )
                .env("RABBITMQ_PID_FILE", base.join("pid"))
                .env("ERL_EPMD_ADDRESS", "127.0.0.1")
                .env(
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                    "-kernel inet_dist_use_interface {127,0,0,1}",
                )
                .stdout(std::fs::File::create(base.join("stdout")).unwrap())
                .stderr(std::fs::File::create(base.join("stderr")).unwrap());
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            let child = command.spawn().expect("start a RabbitMQ node");
            cluster.nodes.push(RabbitNode {
                name: name.clone(),
                port,
                management,
                child: Some(child),
            });
            cluster.await_startup(i);
        }
        let status = cluster.ctl(0, &["cluster_status", "--formatter", "json"]);
        let status: Value = serde_json::from_str(&status).expect("cluster_status as JSON");
        let running = status["running_nodes"].as_array().map_or(0, Vec::len);
        assert_eq!(running, n, "the nodes did not form one cluster: {status}");
        cluster
    }

    /// `rabbitmqctl` of node `i` (this cluster's cookie); its stdout.
    pub fn ctl(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new(format!("{}/rabbitmqctl", rabbitmq_sbin()))
            .env("HOME", &self.dir.0)
            .env("RABBITMQ_CONF_ENV_FILE", self.base(i).join("env.conf"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .args(["-n", &self.nodes[i].name])
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} on {}: {}{}",
            self.nodes[i].name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn base(&self, i: usize) -> PathBuf {
        self.dir.0.join(format!("n{}", i + 1))
    }

    fn await_startup(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = Command::new(format!("{}/rabbitmqctl", rabbitmq_sbin()))
                .env("HOME", &self.dir.0)
                .env("RABBITMQ_CONF_ENV_FILE", self.base(i).join("env.conf"))
                .env("ERL_EPMD_ADDRESS", "127.0.0.1")
                .args([
                    "-n",
                    &self.nodes[i].name,
                    "await_startup",
                    "--timeout",
                    "60",
                ])
                .output()
                .expect("run rabbitmqctl");
            if out.status.success() {
                return;
            }
            if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(Child::try_wait) {
                panic!(
                    "RabbitMQ node {} exited ({status}): {}",
                    self.nodes[i].name,
                    std::fs::read_to_string(self.base(i).join("stdout")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "RabbitMQ node {} did not start: {}",
                self.nodes[i].name,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `AMQP_URL` for the whole cluster: every node, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("amqp://guest:guest@127.0.0.1:{}/%2f", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `AMQP_MANAGEMENT_URL` for the whole cluster.
    pub fn management_url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("http://guest:guest@127.0.0.1:{}", n.management))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL to node `i`'s whole process group (the Erlang VM and its helpers).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            kill_group(child.id());
            let _ = child.wait();
        }
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `/v1/queues` as an operator reads it.
async fn queues(client: &awc::Client, service: &Service) -> Option<Value> {
    client
        .get(service.url("/v1/queues"))
        .insert_header(("Authorization", format!("Bearer {ADMIN_TOKEN}")))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// What `/v1/queues` says about the broker: the node connected to (`host:port`).
async fn connected_node(client: &awc::Client, service: &Service) -> Option<String> {
    let body = queues(client, service).await?;
    body["broker"]["connected"]
        .as_bool()
        .filter(|c| *c)
        .and(body["topology"]["node"].as_str().map(str::to_owned))
}

/// The checkout queue's leader as `/v1/queues` shows it, once `accept` takes it (20 s at most).
async fn checkout_leader(
    client: &awc::Client,
    service: &Service,
    accept: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = queues(client, service).await;
        let leader = body.as_ref().and_then(|b| {
            b["topology"]["queues"]
                .as_array()?
                .iter()
                .find(|q| q["name"] == "orders.checkout")?["leader"]
                .as_str()
                .map(str::to_owned)
        });
        if let Some(leader) = leader.filter(|l| accept(l)) {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "no acceptable leader shown: {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn until_ready(client: &awc::Client, service: &Service) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(service.readiness(client).await, Some((200, _))) {
        assert!(Instant::now() < deadline, "never ready: {}", service.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn kill_9_of_the_broker_node_in_use_loses_no_order_and_the_service_moves_on() {
    let mut cluster = RabbitCluster::start(3);
    let db = TestDb::new();
    let client = http_client();
    let management = cluster.management_url();
    let service = Service::start(
        &db.url,
        &cluster.url(),
        &[
            ("DATABASE_SYNC_STANDBY", "off"),
            ("AMQP_MANAGEMENT_URL", management.as_str()),
        ],
    );
    until_ready(&client, &service).await;
    // Where the broker runs is for operators: a stranger's view has no topology.
    let public: Value = awc::Client::default()
        .get(service.url("/v1/queues"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        public["queues"].is_array() && public.get("topology").is_none(),
        "{public}"
    );
    // The monitor names the checkout queue's leader as the cluster does.
    let leader = checkout_leader(&client, &service, |_| true).await;
    let listed = cluster.ctl(0, &["list_queues", "name", "leader", "--no-table-headers"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("orders.checkout\t") && l.ends_with(&leader)),
        "monitor says {leader}, the cluster: {listed}"
    );
    // The checkout queue is replicated on all three nodes (the cluster's default for a quorum
    // queue declared while all three run).
    let members = cluster.ctl(
        0,
        &[
            "list_queues",
            "name",
            "type",
            "members",
            "--no-table-headers",
        ],
    );
    let checkout = members
        .lines()
        .find(|l| l.starts_with("orders.checkout\t"))
        .unwrap_or_else(|| panic!("no checkout queue: {members}"));
    assert!(checkout.contains("quorum"), "{checkout}");
    for node in &cluster.nodes {
        assert!(
            checkout.contains(&node.name),
            "{} not a member: {checkout}",
            node.name
        );
    }
    stock_up(
        &client,
        &service.base,
        &[("RMQ-HOT", 80), ("RMQ-COLD", 100_000)],
    )
    .await;
    let load = Load::start(
        &client,
        &service.base,
        16,
        "rmq-kill",
        &["RMQ-HOT", "RMQ-COLD"],
    );
    load.until_accepted(150).await;
    let node = connected_node(&client, &service)
        .await
        .expect("the monitor names the node in use");
    let victim = cluster
        .nodes
        .iter()
        .position(|n| node == format!("127.0.0.1:{}", n.port))
        .unwrap_or_else(|| panic!("{node} is none of the cluster's nodes"));
    let killed = Instant::now();
    cluster.kill(victim);
    let Ok(first) =
        tokio::time::timeout(Duration::from_secs(30), load.first_accepted_after(killed)).await
    else {
        let queues = queues(&client, &service).await;
        let mut one = client
            .post(service.url("/v1/checkout"))
            .insert_header(("Idempotency-Key", "rmq-kill-probe"))
            .send_json(&crate::checkout::body(
                "rmq-probe",
                serde_json::json!([{"sku": "RMQ-COLD", "quantity": 1}]),
            ))
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&one.body().await.unwrap()).into_owned();
        let survivor = (victim + 1) % cluster.nodes.len();
        let status = cluster.ctl(
            survivor,
            &[
                "list_queues",
                "name",
                "type",
                "leader",
                "members",
                "online",
                "state",
                "messages",
            ],
        );
        eprintln!("queues on a survivor: {status}");
        panic!(
            "no checkout accepted within 30 s of killing {node}: answers {:?}, queues {queues:?}; \
             one more checkout: {} {answer}",
            load.statuses(),
            one.status()
        );
    };
    let accepted_again = first.answered - killed;
    let order = decided(
        &client,
        &service.base,
        &db,
        &first.key,
        Duration::from_secs(30),
    )
    .await;
    let decided_again = killed.elapsed();
    // The monitor samples every second: wait for it to see the new connection.
    let mut now_on = None;
    for _ in 0..50 {
        now_on = connected_node(&client, &service).await;
        if now_on.as_ref().is_some_and(|n| *n != node) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "broker node {node} killed: a checkout accepted again after {accepted_again:?}, \
         decided ({}) after {decided_again:?}; now on {now_on:?}",
        order["status"]
    );
    assert!(now_on.is_some_and(|n| n != node), "still on the dead node");
    // And, once the cluster noticed, a leader among the living.
    let dead = cluster.nodes[victim].name.clone();
    let leader = checkout_leader(&client, &service, |l| l != dead).await;
    eprintln!("orders.checkout led by {leader} (was {dead} killed)");
    let accepted = load.accepted();
    load.until_accepted(accepted + 150).await;
    let tally = load.stop().await;
    eprintln!(
        "orders accepted {}, answers {:?}",
        tally.accepted.len(),
        tally.statuses
    );
    verify(
        &client,
        &service.base,
        &db,
        &tally,
        ("RMQ-HOT", 80),
        &["RMQ-HOT", "RMQ-COLD"],
    )
    .await;
}

/// A PostgreSQL primary and a synchronous standby under pg_auto_failover (a monitor and two
/// nodes) of this test's own, on loopback ports, in a temporary directory; everything killed
/// and removed when dropped. Made by `tests/cluster/pg-failover.sh`.
pub struct PgFailover {
    dir: PathBuf,
    pub ports: [u16; 2],
}

impl PgFailover {
    pub fn start() -> PgFailover {
        let dir =
            std::env::temp_dir().join(format!("orderflow-pgaf-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/pg-failover.sh");
        let mut cluster = PgFailover { dir, ports: [0, 0] };
        let out = Command::new(&script)
            .args(["up", cluster.dir.to_str().unwrap()])
            .output()
            .expect("run pg-failover.sh");
        assert!(
            out.status.success(),
            "pg-failover.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let ports: Vec<u16> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        assert_eq!(ports.len(), 3, "pg-failover.sh printed {text}");
        cluster.ports = [ports[1], ports[2]];
        cluster
    }

    /// `DATABASE_URL` in libpq's multi-host form: whichever node is the primary.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{database}?target_session_attrs=read-write",
            self.ports[0], self.ports[1]
        )
    }

    /// SIGKILL to node `i` (1 or 2): its keeper and its PostgreSQL, as a lost machine.
    pub fn kill(&self, node: usize) {
        let pgid = std::fs::read_to_string(self.dir.join(format!("node{node}.pgid")))
            .expect("the node's process group");
        kill_group(pgid.trim().parse().expect("a process group id"));
    }

    /// A planned switchover (`pg_autoctl perform switchover`), on a thread of its own so the
    /// test's runtime (and the load on it) goes on meanwhile; resolves when it is done.
    pub async fn switchover(&self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/pg-failover.sh");
        let dir = self.dir.clone();
        let done = std::thread::spawn(move || {
            Command::new(script)
                .args(["switchover", dir.to_str().unwrap()])
                .output()
                .expect("run pg-failover.sh switchover")
        });
        while !done.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out = done.join().expect("the switchover thread");
        assert!(
            out.status.success(),
            "switchover: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Which node answers as primary now (1 or 2), if one does.
    pub fn primary(&self) -> Option<usize> {
        use diesel::{Connection, PgConnection, RunQueryDsl};
        self.ports.iter().position(|port| {
            PgConnection::establish(&format!(
                "postgres://postgres@127.0.0.1:{port}/postgres?target_session_attrs=read-write&connect_timeout=1"
            ))
            .ok()
            .and_then(|mut c| diesel::sql_query("SELECT 1").execute(&mut c).ok())
            .is_some()
        })
        .map(|i| i + 1)
    }
}

impl Drop for PgFailover {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/pg-failover.sh");
        let _ = Command::new(script)
            .args(["down", self.dir.to_str().unwrap_or_default()])
            .output();
    }
}

/// Whether pg_auto_failover is here (Debian: postgresql-15-auto-failover; .ci/run installs it
/// and makes the tests that need it required).
fn pg_autoctl_available() -> bool {
    if Command::new("pg_autoctl").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("ORDERFLOW_FAILOVER_TESTS").as_deref() != Ok("required"),
        "ORDERFLOW_FAILOVER_TESTS=required but pg_autoctl is not installed"
    );
    eprintln!("skipped: no pg_autoctl (apt-get install postgresql-15-auto-failover; see .ci/run)");
    false
}

/// A service on a database of a [`PgFailover`] cluster (a `TestDb` of the cluster, not of the
/// shared server: it lives and dies with the cluster) and a vhost of its own, with stock for a hot
/// and a cold SKU and 16 customers checking out until 150 were accepted.
struct PgScene {
    pg: PgFailover,
    db: TestDb,
    _vhost: crate::helpers::TestVhost,
    client: awc::Client,
    service: Service,
    load: Load,
    skus: [&'static str; 2],
}

impl PgScene {
    async fn start(prefix: &str, skus: [&'static str; 2]) -> PgScene {
        let pg = PgFailover::start();
        assert_eq!(pg.primary(), Some(1));
        let name = format!("of_test_{}", uuid::Uuid::new_v4().simple());
        let db = TestDb {
            name: name.clone(),
            url: pg.url(&name),
        };
        let vhost = crate::helpers::TestVhost::new();
        let client = http_client();
        // `require`: the service refuses to start unless its commits wait for the standby.
        let service = Service::start(&db.url, &vhost.url, &[("DATABASE_SYNC_STANDBY", "require")]);
        until_ready(&client, &service).await;
        stock_up(&client, &service.base, &[(skus[0], 80), (skus[1], 100_000)]).await;
        let load = Load::start(&client, &service.base, 16, prefix, &skus);
        load.until_accepted(150).await;
        PgScene {
            pg,
            db,
            _vhost: vhost,
            client,
            service,
            load,
            skus,
        }
    }

    /// The order of `key`, once decided.
    async fn decided(&self, key: &str) -> Value {
        decided(
            &self.client,
            &self.service.base,
            &self.db,
            key,
            Duration::from_secs(45),
        )
        .await
    }

    /// 150 more accepted, then the fault tests' checks over everything sent.
    async fn finish(self, what: &str) {
        let accepted = self.load.accepted();
        self.load.until_accepted(accepted + 150).await;
        let tally = self.load.stop().await;
        eprintln!(
            "{what}: orders accepted {}, answers {:?}",
            tally.accepted.len(),
            tally.statuses
        );
        verify(
            &self.client,
            &self.service.base,
            &self.db,
            &tally,
            (self.skus[0], 80),
            &self.skus,
        )
        .await;
    }
}

#[actix_web::test]
async fn a_switchover_turns_the_primary_read_only_and_no_order_is_lost() {
    if !pg_autoctl_available() {
        return;
    }
    let scene = PgScene::start("pg-switch", ["SW-HOT", "SW-COLD"]).await;
    let began = Instant::now();
    scene.pg.switchover().await;
    let took = began.elapsed();
    // The old primary lives on as a standby: connections to it are read-only now.
    assert_eq!(scene.pg.primary(), Some(2));
    let first = scene.load.first_accepted_after(began + took).await;
    scene.decided(&first.key).await;
    scene.finish(&format!("switchover in {took:?}")).await;
}

#[actix_web::test]
async fn kill_9_of_the_database_primary_loses_no_order_once_the_standby_is_promoted() {
    if !pg_autoctl_available() {
        return;
    }
    let scene = PgScene::start("pg-kill", ["PG-HOT", "PG-COLD"]).await;
    let (client, service) = (&scene.client, &scene.service);
    let epoch_before = service.readiness(client).await.expect("ready").1["epoch"]
        .as_i64()
        .expect("an epoch");
    let killed = Instant::now();
    scene.pg.kill(1);
    let Ok(first) = tokio::time::timeout(
        Duration::from_secs(45),
        scene.load.first_accepted_after(killed),
    )
    .await
    else {
        panic!(
            "no checkout accepted within 45 s of killing the primary: answers {:?}; {}",
            scene.load.statuses(),
            service.log()
        );
    };
    let accepted_again = first.answered - killed;
    let order = scene.decided(&first.key).await;
    let decided_again = killed.elapsed();
    eprintln!(
        "database primary killed: node {:?} is primary now; a checkout accepted again after \
         {accepted_again:?}, decided ({}) after {decided_again:?}",
        scene.pg.primary(),
        order["status"]
    );
    assert_eq!(scene.pg.primary(), Some(2));
    // The lease row came across with the commits (synchronous replication): its epoch never
    // went back, and the new primary's row names the epoch the instance serves under.
    let (_, ready) = service.readiness(client).await.expect("ready");
    let epoch_after = ready["epoch"].as_i64().expect("an epoch");
    assert!(
        epoch_after >= epoch_before,
        "epoch {epoch_before} → {epoch_after}"
    );
    assert_eq!(
        crate::helpers::sql_i64(&scene.db, "SELECT max(epoch) AS n FROM leader_lease"),
        epoch_after
    );
    eprintln!("lease epoch {epoch_before} before the failover, {epoch_after} after");
    scene.finish("primary killed").await;
}
