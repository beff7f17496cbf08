//! Watching the queues: `/metrics` read by a Prometheus text parser, `/v1/queues` against what
//! the broker and the pipeline did, admission shedding on a stalled broker and reopening, the
//! live feed, and the dashboard in a real headless browser.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::checkout::body;
use crate::helpers::{amqp_addr, assert_error, spawn_app, spawn_app_with, Proxy, TestApp, TestDb};

/// Polls `/v1/queues` until `ok` holds (or panics after `within`).
async fn queues_until(
    app: &TestApp,
    within: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = app.get("/v1/queues").await;
        assert_eq!(r.status, 200, "{}", r.body);
        if ok(&r.body) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; last /v1/queues: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn queue<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {body}"))
}

#[actix_web::test]
async fn metrics_are_valid_prometheus_text_with_every_family_described() {
    let app = spawn_app().await;
    app.product("MX-1", "c", &[], 100, 100).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = app
            .checkout(
                &format!("mx-{i}"),
                &body("mx", json!([{"sku": "MX-1", "quantity": 1}])),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        ids.push(r.body["order_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.decided(id).await;
    }
    // A message that can never be processed: dead-lettered, and counted.
    app.publish_checkout_raw(b"not json", "mx-poison").await;
    // Gauges are set by the sampler (every half second).
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let mut resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = String::from_utf8(resp.body().limit(8 << 20).await.unwrap().to_vec()).unwrap();

    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a Prometheus text parser reads it");
    assert!(!scrape.samples.is_empty());

    // Every family has HELP (the parser's docs) and TYPE (no sample is untyped).
    let typed: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for sample in &scrape.samples {
        // A histogram's _sum and _count belong to the family without the suffix.
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|s| sample.metric.strip_suffix(s))
            .filter(|f| typed.contains(f))
            .unwrap_or(&sample.metric);
        assert!(scrape.docs.contains_key(family), "{family} has no HELP");
        assert!(typed.contains(family), "{family} has no TYPE");
        // (The parser reads a histogram's _sum and _count as loose samples.)
        assert!(
            family != sample.metric || !matches!(sample.value, prometheus_parse::Value::Untyped(_)),
            "{} is untyped",
            sample.metric
        );
        assert!(sample.metric.starts_with("orderflow_"), "{}", sample.metric);
    }

    // Histograms are consistent: cumulative buckets never decrease, +Inf equals _count.
    let counts: HashMap<String, f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            if !name.contains("_count") {
                return None;
            }
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect();
    let mut histograms = 0;
    for sample in &scrape.samples {
        if let prometheus_parse::Value::Histogram(buckets) = &sample.value {
            histograms += 1;
            let mut last = 0.0;
            let mut bounds = Vec::new();
            for b in buckets {
                assert!(b.count >= last, "{}: buckets decrease", sample.metric);
                last = b.count;
                bounds.push(b.less_than);
            }
            assert!(
                bounds.windows(2).all(|w| w[0] < w[1]),
                "{}: bounds out of order",
                sample.metric
            );
            assert_eq!(
                bounds.last(),
                Some(&f64::INFINITY),
                "{}: no +Inf bucket",
                sample.metric
            );
            let labels = sample.labels.to_string();
            let key = if labels.is_empty() {
                format!("{}_count", sample.metric)
            } else {
                format!("{}_count{{{labels}}}", sample.metric)
            };
            if let Some(count) = counts.get(&key) {
                assert_eq!(
                    *count, last,
                    "{}: +Inf bucket is not the count",
                    sample.metric
                );
            }
        }
    }
    assert!(histograms >= 3, "latency and batch histograms are exported");

    // And the figures follow what happened (the recorder is the process's: other tests in this
    // binary add to it, so at least).
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => *v,
                prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
                _ => 0.0,
            })
            .sum()
    };
    assert!(value("orderflow_checkouts_admitted_total", &[]) >= 5.0);
    assert!(
        value(
            "orderflow_queue_delivered_total",
            &[("queue", "orders.checkout")]
        ) >= 6.0
    );
    assert!(
        value(
            "orderflow_queue_dead_lettered_total",
            &[("queue", "orders.checkout")]
        ) >= 1.0
    );
    assert!(value("orderflow_orders_decided_total", &[("status", "scheduled")]) >= 5.0);
    assert!(value("orderflow_checkout_accept_to_decided_seconds", &[]) >= 5.0);
    assert!(value("orderflow_batch_rows", &[]) >= 1.0);
    for family in [
        "orderflow_queue_ready_messages",
        "orderflow_queue_consumers",
        "orderflow_db_pool_connections",
        "orderflow_engine_actors",
        "orderflow_broker_connected",
        "orderflow_broker_blocked",
        "orderflow_admission_shedding",
        "orderflow_admission_returns_booked",
        "orderflow_admission_returns_remembered",
        "orderflow_batch_backlog_rows",
        "orderflow_batch_capacity_rows",
        "orderflow_database_reachable",
        "orderflow_lease_active",
        "orderflow_lease_epoch",
        "orderflow_lease_acquired_total",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == family),
            "{family} missing"
        );
    }
    // These two gauges are the process's, and other tests in this binary cut their database
    // or run standbys: they are 0 or 1 here, and 1 again once nobody else holds them down.
    for gauge in ["orderflow_lease_active", "orderflow_database_reachable"] {
        assert!([0.0, 1.0].contains(&value(gauge, &[])), "{gauge}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut resp = app.client.get(app.url("/metrics")).send().await.unwrap();
        let body = resp.body().limit(8 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        let up = |gauge: &str| {
            text.lines()
                .any(|l| l.strip_prefix(gauge).is_some_and(|rest| rest.trim() == "1"))
        };
        if up("orderflow_lease_active") && up("orderflow_database_reachable") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the active instance never shows its lease and its database: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(value("orderflow_batch_capacity_rows", &[("writer", "stock")]) >= 1.0);

    // The operator's bundle is built on these metrics: every metric the Grafana dashboard and
    // the alert rules name is one this service exposes.
    let exposed: HashSet<String> = scrape
        .samples
        .iter()
        .map(|s| s.metric.clone())
        .chain(typed.iter().map(|t| (*t).to_owned()))
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("deploy/grafana/dashboards/orderflow.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for t in targets {
            exprs.push(t["expr"].as_str().expect("a PromQL expression").to_owned());
        }
    }
    assert!(exprs.len() >= 20, "{} dashboard queries", exprs.len());
    let rules = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    let mut named = HashSet::new();
    for text in exprs.iter().map(String::as_str).chain([rules.as_str()]) {
        named.extend(metric_names(text));
    }
    assert!(named.len() >= 20, "{named:?}");
    let unknown: Vec<&String> = named
        .iter()
        .filter(|n| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            !exposed.contains(*n) && !exposed.contains(family)
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard or the alerts name metrics /metrics does not expose: {unknown:?}"
    );
    app.stop().await;
}

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every `orderflow_…` metric name in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("orderflow_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[actix_web::test]
async fn queues_shows_depths_rates_consumers_admission_and_recent_dead_letters() {
    let app = spawn_app().await;
    app.product("QS-1", "c", &[], 100, 100).await;
    // The sampler's first snapshot (it reads the broker twice a second).
    let first = queues_until(&app, Duration::from_secs(5), "a first snapshot", |b| {
        b["queues"].as_array().is_some_and(|q| !q.is_empty())
    })
    .await;
    let first = crate::helpers::Reply {
        status: 200,
        retry_after: None,
        body: first,
    };
    let names: Vec<&str> = first.body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["orders.checkout", "inventory.updates", "carts.events"]
    );
    assert_eq!(first.body["admission"]["state"], "open");
    assert_eq!(first.body["admission"]["reason"], Value::Null);
    for q in first.body["queues"].as_array().unwrap() {
        for field in [
            "ready",
            "unacked",
            "consumers",
            "publish_rate",
            "deliver_rate",
            "ack_rate",
        ] {
            assert!(q.get(field).is_some(), "{field} in {q}");
        }
    }
    // The consumer is seen by the broker.
    queues_until(
        &app,
        Duration::from_secs(5),
        "the checkout consumer is counted",
        |b| queue(b, "orders.checkout")["consumers"] == 1,
    )
    .await;

    for i in 0..12 {
        let r = app
            .checkout(
                &format!("qs-{i}"),
                &body("qs", json!([{"sku": "QS-1", "quantity": 1}])),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    app.publish_checkout_raw(b"{\"half\": ", "qs-poison").await;
    let seen = queues_until(
        &app,
        Duration::from_secs(10),
        "the rates show the traffic",
        |b| {
            let q = queue(b, "orders.checkout");
            q["publish_rate"].as_f64().unwrap() > 0.0
                && q["ack_rate"].as_f64().unwrap() > 0.0
                && q["dead_letters"].as_u64() == Some(1)
                && q["unacked"] == 0
        },
    )
    .await;
    let q = queue(&seen, "orders.checkout");
    // The 13 publishes (12 checkouts and the poison) and their deliveries, as counted here.
    assert!(q["deliver_rate"].as_f64().unwrap() > 0.0, "{q}");
    assert_eq!(q["unacked"], 0, "everything settled: {q}");

    // The dead letter, with its reason, for the admin only.
    let anonymous = app
        .send(app.anon.get(app.url("/v1/monitor/dead-letters")), None)
        .await;
    assert_error(&anonymous, 401, "unauthorized");
    let recent = app
        .send(
            app.admin(app.client.get(app.url("/v1/monitor/dead-letters"))),
            None,
        )
        .await;
    assert_eq!(recent.status, 200);
    let letter = &recent.body["data"][0];
    assert_eq!(letter["queue"], "orders.checkout");
    assert_eq!(letter["message_id"], "qs-poison");
    assert!(
        letter["reason"].as_str().unwrap().contains("not JSON"),
        "{letter}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_stalled_broker_sheds_checkouts_at_once_and_admission_reopens_when_it_answers() {
    let proxy = Proxy::start(amqp_addr());
    let app = spawn_app_with(TestDb::new(), |c| {
        // Heartbeats far apart: the connection stays "connected" through the stall.
        c.amqp_url = format!("{}?heartbeat=60", proxy.amqp_url(&c.amqp_url));
    })
    .await;
    app.product("SB-1", "c", &[], 100, 100).await;
    let ok = app
        .checkout(
            "sb-before",
            &body("sb", json!([{"sku": "SB-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(ok.status, 202, "{}", ok.body);
    proxy.stall();
    queues_until(
        &app,
        Duration::from_secs(10),
        "admission sheds on the stalled broker",
        |b| b["admission"]["state"] == "shedding" && b["admission"]["reason"] == "broker_stalled",
    )
    .await;
    let started = Instant::now();
    let shed = app
        .checkout(
            "sb-during",
            &body("sb", json!([{"sku": "SB-1", "quantity": 1}])),
        )
        .await;
    assert_error(&shed, 503, "overloaded");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shed at once, not after a publish time-out"
    );
    let retry: u32 = shed.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=4).contains(&retry), "Retry-After {retry}");
    assert!(shed.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("broker_stalled"));

    proxy.restore();
    queues_until(&app, Duration::from_secs(10), "admission reopens", |b| {
        b["admission"]["state"] == "open"
    })
    .await;
    let after = app
        .checkout(
            "sb-during",
            &body("sb", json!([{"sku": "SB-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(after.status, 202, "{}", after.body);
    assert_eq!(
        app.decided(after.body["order_id"].as_str().unwrap()).await["status"],
        "scheduled"
    );
    app.stop().await;
}

/// While admission sheds, a 409 at the door is final, so a key recorded before — here by the
/// process before a restart, whose memory is gone — is looked up first: its repeat gets its
/// order (200), another body 422, and only a new key 409.
#[actix_web::test]
async fn while_shedding_a_key_recorded_before_a_restart_gets_its_order_not_409() {
    let proxy = Proxy::start(amqp_addr());
    let stallable = |c: &mut orderflow::config::Config| {
        c.amqp_url = format!("{}?heartbeat=60", proxy.amqp_url(&c.amqp_url));
    };
    let app = spawn_app_with(TestDb::new(), stallable).await;
    app.product("SR-1", "c", &[], 100, 2).await;
    let first = body("sr", json!([{"sku": "SR-1", "quantity": 1}]));
    let mut id = String::new();
    for key in ["sr-key", "sr-other"] {
        let r = app.checkout(key, &first).await;
        assert_eq!(r.status, 202, "{}", r.body);
        id = r.body["order_id"].as_str().unwrap().to_owned();
        assert_eq!(app.decided(&id).await["status"], "scheduled");
    }

    let TestApp { db, .. } = app.stop_keeping_db().await;
    let app = spawn_app_with(db, stallable).await;
    proxy.stall();
    queues_until(&app, Duration::from_secs(10), "admission sheds", |b| {
        b["admission"]["state"] == "shedding"
    })
    .await;
    // Each key looked up at the door (neither is in this process's memory).
    let r = app.checkout("sr-other", &first).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["order_id"], id.as_str());
    let two = body("sr", json!([{"sku": "SR-1", "quantity": 2}]));
    assert_error(
        &app.checkout("sr-key", &two).await,
        422,
        "idempotency_mismatch",
    );
    assert_error(&app.checkout("sr-new", &first).await, 409, "out_of_stock");
    proxy.restore();
    app.stop().await;
}

#[actix_web::test]
async fn the_live_feed_streams_snapshots() {
    let app = spawn_app().await;
    let mut resp = app
        .client
        .get(app.url("/v1/monitor/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while text.matches("event: snapshot").count() < 3 {
        assert!(
            Instant::now() < deadline,
            "three snapshots within 10 s: {text}"
        );
        let chunk = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut resp),
        )
        .await
        .expect("a snapshot within 5 s")
        .expect("the stream stays open")
        .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let snapshot: Value = serde_json::from_str(data).unwrap();
    assert_eq!(snapshot["role"], "active");
    assert_eq!(snapshot["queues"].as_array().unwrap().len(), 3);
    assert_eq!(snapshot["admission"]["state"], "open");
    app.stop().await;
}

/// Where the browser test's pieces are: node, playwright-core (`npm ci` in tests/browser) and
/// Debian's chromium. `None` when one is missing (the test is then skipped), unless the kit is
/// required (`.ci/run` installs it and sets ORDERFLOW_BROWSER_TESTS=required): then it fails.
fn browser_kit() -> Option<(std::path::PathBuf, String)> {
    let kit = browser_kit_found();
    if kit.is_none() {
        assert!(
            std::env::var("ORDERFLOW_BROWSER_TESTS").as_deref() != Ok("required"),
            "the browser test is required here, but node, tests/browser/node_modules or chromium is missing"
        );
        eprintln!("skipped: no node + playwright-core + chromium (see .ci/run)");
    }
    kit
}

fn browser_kit_found() -> Option<(std::path::PathBuf, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (node_ok
        && dir.join("node_modules/playwright-core").exists()
        && std::path::Path::new(&chromium).exists())
    .then_some((dir, chromium))
}

#[actix_web::test]
async fn the_dashboard_in_a_real_browser_follows_traffic_and_shows_shedding() {
    let Some((dir, chromium)) = browser_kit() else {
        return;
    };
    // Slow decisions, two at a time: ~10/s, so 40/s offered overloads it within seconds.
    let app = spawn_app_with(TestDb::new(), |c| {
        c.consumer_prefetch = 2;
        c.sandbox_payment_delay = Duration::from_millis(200);
    })
    .await;
    app.product("DB-HOT", "c", &[], 100, 100_000).await;
    app.publish_checkout_raw(b"<html>not a checkout</html>", "db-poison")
        .await;
    let screenshot = std::env::var("ORDERFLOW_DASHBOARD_SCREENSHOT").ok();
    let mut command = std::process::Command::new("node");
    command
        .current_dir(&dir)
        .arg("dashboard.mjs")
        .arg(&app.address)
        .arg(crate::helpers::ADMIN_TOKEN)
        .env("CHROMIUM", chromium)
        .stdout(std::process::Stdio::piped());
    if let Some(path) = &screenshot {
        command.arg(path);
    }
    let child = command.spawn().expect("node starts");
    let browser = std::thread::spawn(move || child.wait_with_output());
    // Traffic until the browser is done (at most a minute).
    let started = Instant::now();
    let mut sent = 0u32;
    let mut shed = 0u32;
    // (The page's own waits add up to under 2.5 minutes; it always ends.)
    while !browser.is_finished() && started.elapsed() < Duration::from_secs(180) {
        let r = app
            .checkout(
                &format!("db-{sent}"),
                &body("db", json!([{"sku": "DB-HOT", "quantity": 1}])),
            )
            .await;
        match r.status {
            202 => {}
            503 => {
                assert_error(&r, 503, "overloaded");
                assert!(r.retry_after.is_some());
                shed += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let output = browser.join().unwrap().expect("node ran");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the browser test failed: {report}");
    let report: Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["ok"], true);
    assert!(shed > 0, "the traffic was shed at some point ({sent} sent)");
    assert!(
        report["deadLetter"].as_str().unwrap().contains("not JSON"),
        "{report}"
    );
    app.stop().await;
}

/// The browser gives up for good on a stream the service refused: the dashboard must open a
/// new one itself, and be live again once a slot is free, without a reload.
#[actix_web::test]
async fn the_dashboard_reconnects_after_its_live_feed_was_refused() {
    let Some((dir, chromium)) = browser_kit() else {
        return;
    };
    let app = spawn_app_with(TestDb::new(), |c| c.sse_max_streams = 1).await;
    // The one slot, taken by a client of its own (dropped whole to free it).
    let holder = awc::Client::default();
    let held = holder
        .get(app.url("/v1/monitor/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let refused = app.get("/v1/monitor/stream").await;
    assert_error(&refused, 503, "unavailable");
    let mut child = std::process::Command::new("node")
        .current_dir(&dir)
        .arg("reconnect.mjs")
        .arg(&app.address)
        .env("CHROMIUM", chromium)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node starts");
    // Until the page says it was refused (or node ends: the report says why).
    let stderr = child.stderr.take().unwrap();
    let seen = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.trim() == "refused")
    })
    .await
    .unwrap();
    drop(held);
    drop(holder);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .expect("node ran");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(seen, "the page never saw its feed refused: {report}");
    assert!(output.status.success(), "the browser test failed: {report}");
    let report: Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["snapshotsWhileRefused"], 0, "{report}");
    assert_eq!(report["role"], "active", "{report}");
    app.stop().await;
}
