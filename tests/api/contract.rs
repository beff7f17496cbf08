//! Behaviour the README and API.md state, each shown by a test (issue 10): what a client can get
//! wrong at checkout, every payment and delivery method end to end, cancel from each status, the
//! events other systems receive, the queues as declared, the stock stream's `lagged`, start-up
//! failures.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::checkout::body;
use crate::helpers::{assert_error, next_event, spawn_app, spawn_app_with, watch_events, TestDb};

#[actix_web::test]
async fn checkout_refuses_what_a_client_can_get_wrong_with_the_error_body() {
    let app = spawn_app_with(TestDb::new(), |c| c.max_body_bytes = 4096).await;
    app.product("CW-1", "c", &[], 100, 10).await;
    let good = body("cw", json!([{"sku": "CW-1", "quantity": 1}]));
    // An empty (or blank) Idempotency-Key.
    for key in ["", "   "] {
        let r = app
            .send(
                app.client
                    .post(app.url("/v1/checkout"))
                    .insert_header(("Idempotency-Key", key)),
                Some(good.clone()),
            )
            .await;
        assert_error(&r, 422, "validation_failed");
        assert!(r.body["error"]["details"]["fields"]["Idempotency-Key"].is_array());
    }
    // A body over the limit: 413.
    let mut big = good.clone();
    big["shipping_address"]["complement"] = json!("x".repeat(8000));
    let r = app.checkout("cw-big", &big).await;
    assert_error(&r, 413, "payload_too_large");
    // Not JSON: 415.
    let resp = app
        .client
        .post(app.url("/v1/checkout"))
        .insert_header(("Idempotency-Key", "cw-text"))
        .insert_header(("Content-Type", "text/plain"))
        .send_body(good.to_string())
        .await
        .unwrap();
    assert_error(
        &crate::helpers::read(resp).await,
        415,
        "unsupported_media_type",
    );
    // Broken JSON: 400.
    let resp = app
        .client
        .post(app.url("/v1/checkout"))
        .insert_header(("Idempotency-Key", "cw-broken"))
        .insert_header(("Content-Type", "application/json"))
        .send_body("{\"customer_id\": ")
        .await
        .unwrap();
    assert_error(&crate::helpers::read(resp).await, 400, "bad_request");
    assert_eq!(app.db.stock("CW-1").1, 0);
    app.stop().await;
}

#[actix_web::test]
async fn every_payment_and_delivery_method_ends_scheduled_with_its_carrier() {
    let app = spawn_app().await;
    app.product("PM-1", "c", &[], 1000, 100).await;
    let line = json!([{"sku": "PM-1", "quantity": 1}]);
    let cases = [
        ("standard", json!({"method": "pix"}), "Correios PAC", "PC"),
        (
            "express",
            json!({"method": "boleto", "document": "529.982.247-25"}),
            "Correios SEDEX",
            "SX",
        ),
        (
            "same_day",
            json!({"method": "boleto", "document": "11.222.333/0001-81"}),
            "Loggi",
            "LG",
        ),
        (
            "pickup",
            json!({"method": "card", "card": {"number": "4242424242424242", "holder_name": "Ana",
                          "exp_month": 12, "exp_year": 2031, "cvv": "123"}}),
            "Store pickup",
            "PK",
        ),
    ];
    for (method, payment, carrier, prefix) in cases {
        let mut b = body("pm", line.clone());
        b["delivery_method"] = json!(method);
        b["payment"] = payment.clone();
        let r = app.checkout(&format!("pm-{method}"), &b).await;
        assert_eq!(r.status, 202, "{method}: {}", r.body);
        let order = app.decided(r.body["order_id"].as_str().unwrap()).await;
        assert_eq!(order["status"], "scheduled", "{method}: {order}");
        assert_eq!(order["delivery_method"], method);
        assert_eq!(order["delivery"]["carrier"], carrier);
        assert!(order["delivery"]["tracking_code"]
            .as_str()
            .unwrap()
            .starts_with(prefix));
        assert_eq!(order["payment"]["method"], payment["method"]);
        if payment["method"] == "boleto" {
            // Masked in every view (issue 18): recognisable, not usable.
            let digits: String = payment["document"]
                .as_str()
                .unwrap()
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            assert_eq!(
                order["payment"]["document"],
                orderflow::domain::checkout::mask_document(&digits)
            );
            assert!(
                !order.to_string().contains(&digits),
                "never the full document"
            );
        }
        if payment["method"] == "card" {
            assert_eq!(
                order["payment"],
                json!({"method": "card", "brand": "visa", "last4": "4242"})
            );
        }
        assert!(
            !order.to_string().contains("4242424242424242"),
            "never the full card number"
        );
        assert!(!order.to_string().contains("\"cvv\""), "never the cvv");
    }
    assert_eq!(app.db.stock("PM-1").1, 4);
    app.db.assert_books_balance();
    app.stop().await;
}

#[actix_web::test]
async fn cancel_from_received_and_reserved_releases_and_rejected_or_failed_are_final() {
    let app = spawn_app().await;
    app.product("CX-1", "c", &[], 100, 3).await;
    let cancel = |id: String| {
        let app = &app;
        async move {
            app.send(
                app.client.post(app.url(&format!("/v1/orders/{id}/cancel"))),
                None,
            )
            .await
        }
    };
    for (key, status) in [("cx-received", "received"), ("cx-reserved", "reserved")] {
        let r = app
            .checkout(key, &body("cx", json!([{"sku": "CX-1", "quantity": 1}])))
            .await;
        let id = r.body["order_id"].as_str().unwrap().to_owned();
        assert_eq!(app.decided(&id).await["status"], "scheduled");
        // The order as it stands while the pipeline works on it (its stock already held).
        let mut conn = app.db.conn();
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!(
                "UPDATE orders SET status = '{status}', delivery = NULL WHERE order_id = '{id}'"
            )),
            &mut conn,
        )
        .unwrap();
        let r = cancel(id.clone()).await;
        assert_eq!(r.status, 200, "{status}: {}", r.body);
        assert_eq!(r.body["status"], "cancelled");
    }
    assert_eq!(app.db.stock("CX-1").1, 0, "both released");
    // A rejected order (out of stock, from a queue) and a failed one (declined) are final.
    app.publish(
        "orders",
        "checkout",
        &body("cx", json!([{"sku": "CX-1", "quantity": 9}])),
        Some("cx-rejected"),
    )
    .await;
    let rejected = crate::load::decided(
        &app.client,
        &app.address,
        &app.db,
        "cx-rejected",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(rejected["status"], "rejected");
    assert_error(
        &cancel(rejected["order_id"].as_str().unwrap().to_owned()).await,
        409,
        "not_cancellable",
    );
    let mut declined = body("cx", json!([{"sku": "CX-1", "quantity": 1}]));
    declined["payment"]["card"]["number"] = json!("4000000000000002");
    let r = app.checkout("cx-failed", &declined).await;
    let failed = app.decided(r.body["order_id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert_error(
        &cancel(failed["order_id"].as_str().unwrap().to_owned()).await,
        409,
        "not_cancellable",
    );
    app.db.assert_books_balance();
    app.stop().await;
}

#[actix_web::test]
async fn a_queue_checkout_reusing_a_message_id_with_another_body_is_dead_lettered() {
    let app = spawn_app().await;
    app.product("MI-1", "c", &[], 100, 10).await;
    app.publish(
        "orders",
        "checkout",
        &body("mi", json!([{"sku": "MI-1", "quantity": 1}])),
        Some("mi-key"),
    )
    .await;
    let first = crate::load::decided(
        &app.client,
        &app.address,
        &app.db,
        "mi-key",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(first["status"], "scheduled");
    app.publish(
        "orders",
        "checkout",
        &body("mi", json!([{"sku": "MI-1", "quantity": 5}])),
        Some("mi-key"),
    )
    .await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("idempotency key reused"), "{reason}");
    assert_eq!(
        app.db.stock("MI-1").1,
        1,
        "the second body reserved nothing"
    );
    app.stop().await;
}

/// Another system's message that reuses the key of a storefront checkout by the same customer is
/// no second order: dead-lettered with its reason, the stock taken once, and the authorization
/// its attempt made voided.
#[actix_web::test]
async fn a_message_reusing_a_storefront_checkouts_key_is_no_second_order() {
    use diesel::{QueryDsl, RunQueryDsl};
    use orderflow::orders::payment::{AuthorizationState, SandboxGateway};
    use orderflow::persistence::schema::server_secrets;
    let app = spawn_app().await;
    app.product("RK-1", "c", &[], 100, 10).await;
    let r = app
        .checkout(
            "rk-key",
            &body("rk", json!([{"sku": "RK-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let first = r.body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(app.decided(&first).await["status"], "scheduled");
    app.publish(
        "orders",
        "checkout",
        &body("rk", json!([{"sku": "RK-1", "quantity": 2}])),
        Some("rk-key"),
    )
    .await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("idempotency key reused"), "{reason}");
    assert_eq!(app.db.stock("RK-1").1, 1, "the message reserved nothing");
    let orders = app.get("/v1/customers/rk/orders").await;
    assert_eq!(
        orders.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        orders.body
    );
    // The message's own order id (keyed over customer and key) was authorized, then voided.
    let secret: Vec<u8> = server_secrets::table
        .find("order_ids")
        .select(server_secrets::secret)
        .first(&mut app.db.conn())
        .unwrap();
    let theirs = orderflow::auth::OrderIds::new(secret)
        .unwrap()
        .derive("rk", "rk-key");
    assert_eq!(
        SandboxGateway::authorization_of(theirs),
        Some(AuthorizationState::Voided)
    );
    app.stop().await;
}

#[actix_web::test]
async fn with_order_events_all_other_systems_receive_every_step_by_routing_key() {
    let app = spawn_app_with(TestDb::new(), |c| {
        c.order_events = orderflow::orders::EventScope::All
    })
    .await;
    app.product("EV-1", "c", &[], 100, 10).await;
    let (_channel, mut events) = watch_events(&app, &["order.*", "notification.*"]).await;
    let r = app
        .checkout("ev-1", &body("ev", json!([{"sku": "EV-1", "quantity": 1}])))
        .await;
    let id = r.body["order_id"].as_str().unwrap().to_owned();
    let mut seen: Vec<(String, Value)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    // The steps on the way go out without waiting (API.md): no order among the events is
    // promised, so every one is waited for.
    let expected = [
        "order.received",
        "order.reserved",
        "order.scheduled",
        "notification.order_scheduled",
    ];
    while !expected
        .iter()
        .all(|key| seen.iter().any(|(k, _)| k == key))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "events so far: {seen:?}"
        );
        seen.extend(next_event(&mut events).await.map(|(k, _, b)| (k, b)));
    }
    let (_, scheduled) = seen.iter().find(|(k, _)| k == "order.scheduled").unwrap();
    assert_eq!(scheduled["order_id"], id);
    assert_eq!(scheduled["status"], "scheduled");
    assert!(
        scheduled["delivery"]["tracking_code"].is_string(),
        "the order JSON: {scheduled}"
    );
    let (_, note) = seen
        .iter()
        .find(|(k, _)| k == "notification.order_scheduled")
        .unwrap();
    assert_eq!(note["kind"], "order_scheduled");
    assert_eq!(note["order_id"], id);
    app.stop().await;
}

#[actix_web::test]
async fn by_default_the_decision_and_its_notification_go_out_with_stable_ids_and_the_steps() {
    // The default (ORDER_EVENTS=decisions, API.md).
    let app = spawn_app().await;
    app.product("ED-1", "c", &[], 100, 10).await;
    let (_channel, mut events) = watch_events(&app, &["#"]).await;
    let mut seen: Vec<(String, Value)> = Vec::new();
    let mut message_ids: Vec<String> = Vec::new();
    let mut ids = Vec::new();
    // Two orders one after the other: whatever the first published is in by the time the second
    // is decided.
    for n in 0..2 {
        let r = app
            .checkout(
                &format!("ed-{n}"),
                &body("ed", json!([{"sku": "ED-1", "quantity": 1}])),
            )
            .await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        let id = r.body["order_id"].as_str().unwrap().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while seen
            .iter()
            .filter(|(_, b)| b["order_id"] == id.as_str())
            .count()
            < 2
        {
            assert!(
                std::time::Instant::now() < deadline,
                "events so far: {seen:?}"
            );
            if let Some((key, message_id, event)) = next_event(&mut events).await {
                message_ids.push(message_id.expect("every event has a message_id"));
                seen.push((key, event));
            }
        }
        ids.push(id);
    }
    let keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "order.scheduled",
            "notification.order_scheduled",
            "order.scheduled",
            "notification.order_scheduled"
        ],
        "per order: the decision, then its notification; no step events"
    );
    let distinct: std::collections::BTreeSet<&String> = message_ids.iter().collect();
    assert_eq!(distinct.len(), 4, "one id per event: {message_ids:?}");
    // The notification event's id is the notification's own.
    assert_eq!(seen[1].1["id"].as_str(), Some(message_ids[1].as_str()));
    let orders: Vec<&(String, Value)> = seen
        .iter()
        .filter(|(k, _)| k.starts_with("order."))
        .collect();
    for ((_, order), id) in orders.into_iter().zip(&ids) {
        assert_eq!(order["order_id"], id.as_str());
        let steps: Vec<&str> = order["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["received", "reserved", "scheduled"], "{order}");
    }
    // The notifications are still there, through the API.
    let notes = app.get("/v1/customers/ed/notifications").await;
    assert_eq!(notes.status, 200, "{:?}", notes.body);
    assert!(
        notes.body.to_string().matches("order_scheduled").count() >= 2,
        "{:?}",
        notes.body
    );
    app.stop().await;
}

#[actix_web::test]
async fn the_queues_are_declared_as_documented() {
    let app = spawn_app_with(TestDb::new(), |c| c.delivery_limit = 7).await;
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "-p",
            &app.vhost.name,
            "name",
            "arguments",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for queue in ["orders.checkout", "inventory.updates", "carts.events"] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(queue))
            .unwrap_or_else(|| panic!("{queue} declared: {text}"));
        for arg in [
            r#"{"x-queue-type","quorum"}"#,
            r#"{"x-delivery-limit",7}"#,
            r#"{"x-max-length",100000}"#,
            r#"{"x-overflow","reject-publish"}"#,
            r#"{"x-dead-letter-exchange","orderflow.dead-letter"}"#,
            r#"{"x-dead-letter-strategy","at-least-once"}"#,
        ] {
            assert!(line.contains(arg), "{queue} has {arg}: {line}");
        }
        let dead = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(format!("{queue}.dead").as_str()))
            .unwrap_or_else(|| panic!("{queue}.dead declared: {text}"));
        assert!(dead.contains("quorum"), "{dead}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_stock_stream_reader_that_falls_behind_is_told_how_many_it_missed() {
    let app = spawn_app_with(TestDb::new(), |c| c.engine.feed_capacity = 16).await;
    app.product("LAG-1", "c", &[], 100, 10).await;
    let mut resp = app
        .client
        .get(app.url("/v1/inventory/stream"))
        .send()
        .await
        .unwrap();
    // 200 changes committed in a burst: far more than the 16 a reader may fall behind.
    let sku = orderflow::domain::Sku::parse("LAG-1").unwrap();
    let engine = &app.active().engine;
    let mut tickets = Vec::new();
    for _ in 0..200 {
        let applied = engine
            .apply(
                &sku,
                orderflow::domain::StockOp::Adjust(1),
                Some("burst".into()),
            )
            .await
            .unwrap();
        tickets.push(applied.durable);
    }
    for t in tickets {
        t.wait().await.unwrap();
    }
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("event: lagged") && std::time::Instant::now() < deadline {
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), resp.next()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let lagged = text
        .split("event: lagged\ndata: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .unwrap_or_else(|| panic!("no lagged event in {text}"));
    assert!(lagged["missed"].as_u64().unwrap() > 0, "{lagged}");
    app.stop().await;
}

#[test]
fn start_up_failures_exit_non_zero_with_one_line_naming_the_setting() {
    let run = |env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"));
        command
            .arg("serve")
            .env("RUST_LOG", "off")
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("AUTH_JWT_SECRET", crate::helpers::JWT_SECRET);
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().expect("run orderflow");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )
    };
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let db = crate::helpers::pg_base();
    for (env, setting, code) in [
        (
            vec![(
                "DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:{closed}/x"),
            )],
            "DATABASE_URL",
            1,
        ),
        (
            vec![
                ("DATABASE_URL", format!("{db}/of_startup_probe")),
                (
                    "AMQP_URL",
                    format!("amqp://guest:guest@127.0.0.1:{closed}/%2f"),
                ),
            ],
            "AMQP_URL",
            1,
        ),
        (vec![("HTTP_ADDR", "nowhere".to_owned())], "HTTP_ADDR", 2),
        (vec![("DB_POOL_SIZE", "zero".to_owned())], "DB_POOL_SIZE", 2),
        // No customer key: nobody could be told apart (issue 17).
        (
            vec![("AUTH_JWT_SECRET", String::new())],
            "AUTH_JWT_SECRET",
            1,
        ),
        (
            vec![("AUTH_JWT_SECRET", "short".to_owned())],
            "AUTH_JWT_SECRET",
            2,
        ),
        (
            vec![
                ("AUTH_JWT_SECRET", String::new()),
                ("AUTH_JWT_PUBLIC_KEYS", "/nonexistent/keys.pem".to_owned()),
            ],
            "AUTH_JWT_PUBLIC_KEYS",
            1,
        ),
        (
            vec![("ADMIN_TOKEN", "change-me".to_owned())],
            "ADMIN_TOKEN",
            2,
        ),
    ] {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, stderr) = run(&env);
        assert_eq!(status, Some(code), "{setting}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(setting), "names {setting}: {stderr}");
        assert!(
            !stderr.contains("change-me"),
            "never shows a secret: {stderr}"
        );
    }
    let maintenance = format!("{db}/postgres");
    if let Ok(mut conn) = <diesel::PgConnection as diesel::Connection>::establish(&maintenance) {
        let _ = diesel::RunQueryDsl::execute(
            diesel::sql_query("DROP DATABASE IF EXISTS of_startup_probe WITH (FORCE)"),
            &mut conn,
        );
    }
}

#[test]
fn the_command_line_explains_itself_and_refuses_usage_errors_with_2() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .args(args)
            .output()
            .expect("run orderflow");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["demo-data", "--help"],
        &["loadgen", "--help"],
        &["healthcheck", "--help"],
        &["dead-letters", "--help"],
        &["dead-letters", "list", "--help"],
        &["dead-letters", "replay", "--help"],
    ] {
        let (code, out, _) = run(args);
        assert_eq!(code, Some(0), "{args:?}");
        assert!(out.contains("Usage: orderflow"), "{args:?}: {out}");
    }
    let (_, top, _) = run(&["--help"]);
    for command in [
        "serve",
        "migrate",
        "demo-data",
        "loadgen",
        "healthcheck",
        "dead-letters",
    ] {
        assert!(top.contains(command), "{command} listed: {top}");
    }
    assert!(
        top.contains("[env: DATABASE_URL"),
        "flags mirror the environment: {top}"
    );
    for args in [
        &["demo-data", "x"][..],
        &["nonsense"],
        &["dead-letters", "list"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains("Usage: orderflow") || err.contains("usage:"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn every_route_the_app_registers_is_in_the_openapi_document_and_nothing_else() {
    use std::collections::BTreeSet;
    let doc = orderflow::http::openapi::json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                documented.insert((method.to_owned(), path.clone()));
            }
        }
    }
    let registered: BTreeSet<(String, String)> = orderflow::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        registered.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "registered but not documented"
    );
    assert_eq!(
        documented.difference(&registered).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not registered"
    );
    // Every documented answer of an error status carries the error body.
    let text = doc.to_string();
    assert!(text.contains("#/components/schemas/ErrorBody"));
    // Operation ids are unique (OpenAPI requires it; generated clients name methods by them),
    // and every JSON answer is typed — a named schema, not a bare `object` — except the
    // document's own.
    let mut ids = BTreeSet::new();
    let mut untyped = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let schema = &response["content"]["application/json"]["schema"];
                let typed = schema.get("$ref").is_some()
                    || schema.get("properties").is_some()
                    || schema.get("oneOf").is_some();
                if !schema.is_null() && !typed && path != "/openapi.json" {
                    untyped.push(format!("{method} {path} {status}: {schema}"));
                }
            }
        }
    }
    assert_eq!(untyped, Vec::<String>::new(), "untyped JSON answers");
}

#[actix_web::test]
async fn the_openapi_document_is_served() {
    let app = spawn_app().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body["paths"]["/v1/checkout"]["post"].is_object(),
        "{}",
        r.body
    );
    assert!(r.body["components"]["securitySchemes"]["admin"].is_object());
    app.stop().await;
}

#[test]
fn help_never_prints_a_password_or_a_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .arg("--help")
        .env("DATABASE_URL", "postgres://u:db-secret-pw@127.0.0.1:5432/x")
        .env("AMQP_URL", "amqp://u:amqp-secret-pw@127.0.0.1:5672/%2f")
        .env("ADMIN_TOKEN", "admin-secret-token-0123456789abcdef-help")
        .output()
        .expect("run orderflow --help");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("DATABASE_URL"), "{text}");
    for secret in ["db-secret-pw", "amqp-secret-pw", "admin-secret-token"] {
        assert!(!text.contains(secret), "{secret} in --help: {text}");
    }
}
