//! Card data never rests anywhere (issue 18, API.md "Card data"), producers are who they say
//! ("Messages from other systems"), and nothing a producer sends can stall a consumer.

use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicNackOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};

use crate::checkout::body;
use crate::helpers::{
    assert_error, customer_token, http_client, order_of_key, spawn_app, spawn_app_with, sql_i64,
    tokenized, Service, TestApp, TestDb, TestVhost,
};

/// Every 13–19-digit run (single spaces or dashes between digits allowed) that passes Luhn, and
/// every `cvv` standing as a word (a key or a label: not the three letters inside a random
/// token, as pg_dump's `\restrict` key once had them), in a text.
fn card_data_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let lower = text.to_ascii_lowercase();
    for (i, _) in lower.match_indices("cvv") {
        let before = lower[..i].chars().next_back();
        let after = lower[i + 3..].chars().next();
        if before.is_some_and(|c| c.is_ascii_alphanumeric())
            || after.is_some_and(|c| c.is_ascii_alphabetic())
        {
            continue;
        }
        found.push(format!(
            "cvv at …{}…",
            text.get(i.saturating_sub(40)..(i + 40).min(text.len()))
                .unwrap_or("")
        ));
    }
    // Runs of digits (single spaces or dashes between them) standing on their own: not glued
    // to a letter or digit on either side, as the groups inside a UUID are.
    let chars: Vec<char> = text.chars().collect();
    let sep = |c: char| c == ' ' || c == '-';
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let before = match i.checked_sub(1).map(|k| chars[k]) {
            Some('-') => i.checked_sub(2).map(|k| chars[k]),
            other => other,
        };
        let (mut digits, mut j) = (String::new(), i);
        while j < chars.len() {
            if chars[j].is_ascii_digit() {
                digits.push(chars[j]);
            } else if !(sep(chars[j]) && chars.get(j + 1).is_some_and(|n| n.is_ascii_digit())) {
                break;
            }
            j += 1;
        }
        let after = match chars.get(j) {
            Some('-') => chars.get(j + 1).copied(),
            other => other.copied(),
        };
        let glued = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        // (One digit repeated is no card: no issuer has an all-zero number.)
        let repeated = digits.bytes().all(|b| Some(b) == digits.bytes().next());
        if !glued(before)
            && !glued(after)
            && (13..=19).contains(&digits.len())
            && !repeated
            && orderflow::domain::documents::luhn_valid(&digits)
        {
            let from: String = chars[i.saturating_sub(60)..(j + 20).min(chars.len())]
                .iter()
                .collect();
            found.push(format!("{digits} in …{from}…"));
        }
        i = j.max(i + 1);
    }
    found
}

/// A RabbitMQ user of this test's own on its vhost, deleted when dropped.
struct BrokerUser {
    name: String,
    password: String,
}

impl BrokerUser {
    fn new(vhost: &TestVhost, configure: &str, write: &str, read: &str) -> BrokerUser {
        let name = format!("of_user_{}", uuid::Uuid::new_v4().simple());
        let password = uuid::Uuid::new_v4().simple().to_string();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("rabbitmqctl")
                .args(args)
                .output()
                .expect("rabbitmqctl");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["add_user", &name, &password]);
        run(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &name,
            configure,
            write,
            read,
        ]);
        BrokerUser { name, password }
    }

    async fn channel(&self, vhost: &TestVhost) -> (lapin::Connection, lapin::Channel) {
        let url = format!(
            "amqp://{}:{}@127.0.0.1:5672/{}",
            self.name, self.password, vhost.name
        );
        let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .expect("connect as the test user");
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        (conn, ch)
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

async fn publish_as(
    ch: &lapin::Channel,
    exchange: &str,
    key: &str,
    data: &[u8],
    props: lapin::BasicProperties,
) -> Result<(), String> {
    let confirm = ch
        .basic_publish(exchange.into(), key.into(), Default::default(), data, props)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    match confirm {
        lapin::Confirmation::Ack(_) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn the_detector_finds_a_cvv_key_or_label_and_a_card_number_not_letters_inside_a_token() {
    for leak in [
        r#"{"cvv":"123"}"#,
        "cvv=123",
        "CVV: 123",
        "card 4242 4242 4242 4242 here",
    ] {
        assert!(!card_data_in(leak).is_empty(), "{leak}");
    }
    for clean in [
        "\\restrict 9TfqcvVQcjHA8Bb1ea",
        "token cvvQ12",
        "order 4242424242424241 (fails Luhn)",
    ] {
        assert!(card_data_in(clean).is_empty(), "{clean}");
    }
}

#[actix_web::test]
async fn no_card_number_or_cvv_rests_anywhere_after_approved_declined_and_refused_checkouts() {
    let db = TestDb::new();
    let vhost = TestVhost::new();
    // Every event, as a subscriber sees it, from before the first order.
    let conn = lapin::Connection::connect(&vhost.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let watch = conn.create_channel().await.unwrap();
    let service = Service::start(&db.url, &vhost.url, &[("RUST_LOG", "debug")]);
    let client = http_client();
    service.ready(&client).await;
    watch
        .queue_declare(
            "scan-events".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    watch
        .queue_bind(
            "scan-events".into(),
            "order.events".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for (path, b) in [(
        "/v1/products/SC-1",
        json!({"name": "Scan", "category": "c", "price_cents": 100}),
    )] {
        let r = client.put(service.url(path)).send_json(&b).await.unwrap();
        assert!(r.status().is_success());
    }
    let r = client
        .put(service.url("/v1/inventory/SC-1"))
        .send_json(&json!({"on_hand": 20}))
        .await
        .unwrap();
    assert!(r.status().is_success());
    let checkout = |key: &'static str, b: Value| {
        let client = client.clone();
        let url = service.url("/v1/checkout");
        async move {
            let mut resp = client
                .post(url)
                .insert_header(("Idempotency-Key", key))
                .insert_header((
                    "Authorization",
                    format!("Bearer {}", customer_token("scan")),
                ))
                .send_json(&b)
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Approved and declined, typed into the checkout.
    let approved = body("scan", json!([{"sku": "SC-1", "quantity": 1}]));
    let mut declined = approved.clone();
    declined["payment"]["card"]["number"] = json!("4000 0000 0000 0002");
    let (s1, a) = checkout("scan-approved", approved.clone()).await;
    let (s2, d) = checkout("scan-declined", declined).await;
    assert_eq!((s1, s2), (202, 202), "{a} {d}");
    // A browser-tokenized card, through the sandbox route.
    let mut tok = client
        .post(service.url("/v1/sandbox/card-tokens"))
        .send_json(&approved["payment"]["card"])
        .await
        .unwrap();
    assert_eq!(tok.status().as_u16(), 201);
    let tok: Value = tok.json().await.unwrap();
    assert_eq!(
        (tok["brand"].as_str(), tok["last4"].as_str()),
        (Some("visa"), Some("4242"))
    );
    let mut by_token = approved.clone();
    by_token["payment"] = json!({"method": "card", "card_token": tok["card_token"]});
    let (s3, t) = checkout("scan-token", by_token).await;
    assert_eq!(s3, 202, "{t}");
    // A card on the queue (refused), and a checkout with an unknown token (dead-lettered).
    let raw = |b: &Value, id: &str| {
        (
            b.to_string(),
            lapin::BasicProperties::default().with_message_id(id.into()),
        )
    };
    let (data, props) = raw(&approved, "scan-queue-card");
    watch.confirm_select(Default::default()).await.unwrap();
    publish_as(&watch, "orders", "checkout", data.as_bytes(), props)
        .await
        .unwrap();
    let mut unknown = approved.clone();
    unknown["payment"] = json!({"method": "card", "card_token": "tok_forged"});
    let (data, props) = raw(&unknown, "scan-queue-unknown-token");
    publish_as(&watch, "orders", "checkout", data.as_bytes(), props)
        .await
        .unwrap();

    // Decisions: approved, declined, approved; two dead letters.
    let status_of = |id: String| {
        let client = client.clone();
        let url = service.url(&format!("/v1/orders/{id}"));
        async move {
            for _ in 0..200 {
                let mut r = client.get(&url).send().await.unwrap();
                let order: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(s @ ("scheduled" | "failed" | "rejected")) = order["status"].as_str() {
                    return (s.to_owned(), order);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("order {url} never decided");
        }
    };
    let (sa, oa) = status_of(a["order_id"].as_str().unwrap().to_owned()).await;
    let (sd, _) = status_of(d["order_id"].as_str().unwrap().to_owned()).await;
    let (st, _) = status_of(t["order_id"].as_str().unwrap().to_owned()).await;
    assert_eq!(
        (sa.as_str(), sd.as_str(), st.as_str()),
        ("scheduled", "failed", "scheduled")
    );
    assert_eq!(
        oa["payment"],
        json!({"method": "card", "brand": "visa", "last4": "4242"})
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reasons = Vec::new();
    let dead = conn.create_channel().await.unwrap();
    let mut texts: Vec<(String, String)> = Vec::new();
    while reasons.len() < 2 && Instant::now() < deadline {
        if let Some(m) = dead
            .basic_get("orders.checkout.dead".into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            let reason = m
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-orderflow-reason").cloned())
                .map(|v| match v {
                    lapin::types::AMQPValue::LongString(s) => s.to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            reasons.push(reason);
            texts.push((
                "dead letter".into(),
                String::from_utf8_lossy(&m.delivery.data).into_owned(),
            ));
            m.delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            if reasons.len() == 1 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(dead);
    let reasons = reasons.join(" | ");
    assert!(reasons.contains("card_data_refused"), "{reasons}");
    assert!(reasons.contains("unknown card token"), "{reasons}");

    // Every message on every queue and dead-letter queue, read and put back.
    let scan = conn.create_channel().await.unwrap();
    for q in [
        "orders.checkout",
        "orders.checkout.dead",
        "inventory.updates",
        "inventory.updates.dead",
        "carts.events",
        "carts.events.dead",
        "scan-events",
    ] {
        let mut seen = 0;
        while let Some(m) = scan
            .basic_get(q.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            texts.push((
                q.to_owned(),
                String::from_utf8_lossy(&m.delivery.data).into_owned(),
            ));
            seen += 1;
            if seen > 1000 {
                break;
            }
        }
        // Unacknowledged, they go back when the channel closes.
    }
    let _ = scan.close(200, "scanned".into()).await;
    let events = texts.iter().filter(|(q, _)| q == "scan-events").count();
    assert!(
        events >= 3,
        "every decision was announced ({events} events read)"
    );
    // Every table (but diesel's list of applied migrations: their 14-digit version numbers are
    // all it holds, and one passes Luhn).
    let dump = std::process::Command::new("pg_dump")
        .args([
            "--data-only",
            "--exclude-table-data=__diesel_schema_migrations",
            &db.url,
        ])
        .output()
        .expect("pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    texts.push((
        "pg_dump".into(),
        String::from_utf8_lossy(&dump.stdout).into_owned(),
    ));
    // The service's own log, at debug level.
    texts.push(("service log".into(), service.log()));
    for (place, text) in &texts {
        let found = card_data_in(text);
        assert!(found.is_empty(), "card data in {place}: {found:?}");
    }
    assert!(
        texts
            .iter()
            .any(|(p, t)| p == "pg_dump" && t.contains("tok_sandbox_")),
        "the token is what is kept"
    );
    drop(service);
    let _ = conn.close(200, "done".into()).await;
}

async fn inventory_app(allowed: &str) -> TestApp {
    let allowed = allowed.to_owned();
    spawn_app_with(TestDb::new(), move |c| {
        c.producers.inventory = Some(vec![allowed]);
    })
    .await
}

#[actix_web::test]
async fn only_allow_listed_producers_change_stock_and_the_rest_is_dead_lettered() {
    let warehouse_name = format!("of_wh_{}", uuid::Uuid::new_v4().simple());
    let app = inventory_app(&warehouse_name).await;
    app.product_with_stock("PR-1", 10).await;
    // A user on the vhost that is not the warehouse, and the warehouse itself.
    let stranger = BrokerUser::new(&app.vhost, "", ".*", "");
    let warehouse = BrokerUser {
        name: warehouse_name,
        password: uuid::Uuid::new_v4().simple().to_string(),
    };
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["add_user", &warehouse.name, &warehouse.password])
        .output();
    let _ = std::process::Command::new("rabbitmqctl")
        .args([
            "set_permissions",
            "-p",
            &app.vhost.name,
            &warehouse.name,
            "",
            ".*",
            "",
        ])
        .output();
    let (_c1, outsider) = stranger.channel(&app.vhost).await;
    let set_zero = json!({"sku": "PR-1", "on_hand": 0}).to_string();
    // Without user_id, and with its own (validated) user_id.
    for (i, props) in [
        lapin::BasicProperties::default(),
        lapin::BasicProperties::default().with_user_id(stranger.name.as_str().into()),
    ]
    .into_iter()
    .enumerate()
    {
        let props = props.with_message_id(format!("pr-stranger-{i}").into());
        publish_as(
            &outsider,
            "inventory",
            "stock.update",
            set_zero.as_bytes(),
            props,
        )
        .await
        .unwrap();
        let (_, reason) = app.dead_letter("inventory.updates.dead").await;
        assert!(reason.starts_with("unauthorized_producer"), "{reason}");
    }
    // Claiming to be the warehouse: the broker itself refuses a user_id that is not the
    // connection's (the channel is closed).
    let forged = lapin::BasicProperties::default()
        .with_user_id(warehouse.name.as_str().into())
        .with_message_id("pr-forged".into());
    assert!(publish_as(
        &outsider,
        "inventory",
        "stock.update",
        set_zero.as_bytes(),
        forged
    )
    .await
    .is_err());
    assert_eq!(app.db.stock("PR-1").0, 10, "nothing changed");
    // The warehouse's update applies.
    let (_c2, wh) = warehouse.channel(&app.vhost).await;
    let props = lapin::BasicProperties::default()
        .with_user_id(warehouse.name.as_str().into())
        .with_message_id("pr-warehouse".into());
    publish_as(
        &wh,
        "inventory",
        "stock.update",
        json!({"sku": "PR-1", "on_hand": 4}).to_string().as_bytes(),
        props,
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.db.stock("PR-1").0 != 4 {
        assert!(
            Instant::now() < deadline,
            "the warehouse's update never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_forged_timestamp_from_outside_does_not_let_an_expired_card_through() {
    let app = spawn_app_with(TestDb::new(), |_| {}).await;
    app.product("TS-1", "c", &[], 100, 5).await;
    let producer = BrokerUser::new(&app.vhost, "", ".*", "");
    let (_c, ch) = producer.channel(&app.vhost).await;
    // A card that expired last month, "accepted" (says the producer) a year ago.
    let now = chrono::Utc::now();
    let last_month = now - chrono::Duration::days(35);
    use chrono::Datelike;
    let mut b = body("ts", json!([{"sku": "TS-1", "quantity": 1}]));
    b["payment"]["card"]["exp_month"] = json!(last_month.month());
    b["payment"]["card"]["exp_year"] = json!(last_month.year());
    let b = tokenized(&b);
    let props = lapin::BasicProperties::default()
        .with_message_id("ts-forged".into())
        .with_app_id(orderflow::orders::HTTP_ORIGIN.into())
        .with_timestamp((now - chrono::Duration::days(365)).timestamp() as u64);
    publish_as(&ch, "orders", "checkout", b.to_string().as_bytes(), props)
        .await
        .unwrap();
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("expired"), "{reason}");
    assert_eq!(sql_i64(&app.db, "SELECT count(*) AS n FROM orders"), 0);
    app.stop().await;
}

#[actix_web::test]
async fn a_message_over_64_kib_is_refused_unparsed_in_milliseconds_while_orders_go_on() {
    let app = spawn_app_with(TestDb::new(), |_| {}).await;
    app.product("BIG-1", "c", &[], 100, 50).await;
    let big = vec![b'['; 64 * 1024 + 1];
    let started = Instant::now();
    app.publish_checkout_raw(&big, "big-1").await;
    // Meanwhile, orders keep being decided.
    let r = app
        .checkout(
            "big-ok",
            &body("big", json!([{"sku": "BIG-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(r.status, 202);
    let (dead, reason) = app.dead_letter("orders.checkout.dead").await;
    let took = started.elapsed();
    assert!(reason.starts_with("too_large"), "{reason}");
    assert_eq!(
        dead["bytes"],
        64 * 1024 + 1,
        "the dead letter keeps no body: {dead}"
    );
    println!(
        "a 64 KiB + 1 message refused {} ms after its publish",
        took.as_millis()
    );
    assert_eq!(
        app.decided(r.body["order_id"].as_str().unwrap()).await["status"],
        "scheduled"
    );
    // A checkout past the line limit is refused at the limit, whatever its length.
    let items: Vec<Value> = (0..2000)
        .map(|i| json!({"sku": format!("S-{i}"), "quantity": 1}))
        .collect();
    let r = app
        .checkout("big-lines", &body("big", Value::Array(items)))
        .await;
    assert_error(&r, 422, "validation_failed");
    app.stop().await;
}

#[actix_web::test]
async fn raw_cards_on_the_queue_are_refused_and_the_sandbox_route_validates_like_checkout() {
    let app = spawn_app_with(TestDb::new(), |_| {}).await;
    app.product("RQ-1", "c", &[], 100, 5).await;
    let b = body("rq", json!([{"sku": "RQ-1", "quantity": 1}]));
    app.publish_checkout_raw(b.to_string().as_bytes(), "rq-1")
        .await;
    let (dead, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.starts_with("card_data_refused"), "{reason}");
    let text = dead.to_string();
    assert!(
        !text.contains("4242424242424242") && !text.contains("cvv"),
        "{text}"
    );
    assert_eq!(
        dead["customer_id"], "rq",
        "the rest is kept for the operator"
    );
    assert!(order_of_key(&app.db, "rq-1").is_none());
    // The sandbox route: 201 for a good card, 422 naming the field for a bad one.
    let good = app
        .send(
            app.anon.post(app.url("/v1/sandbox/card-tokens")),
            Some(b["payment"]["card"].clone()),
        )
        .await;
    assert_eq!(good.status, 201, "{}", good.body);
    assert!(!good.body.to_string().contains("42424242"));
    let mut bad = b["payment"]["card"].clone();
    bad["number"] = json!("4242424242424241");
    let r = app
        .send(app.anon.post(app.url("/v1/sandbox/card-tokens")), Some(bad))
        .await;
    assert_error(&r, 422, "validation_failed");
    assert!(
        r.body["error"]["details"]["fields"]["number"].is_array(),
        "{}",
        r.body
    );
    // A token the gateway never gave: 422 at the door.
    let mut forged = b.clone();
    forged["payment"] = json!({"method": "card", "card_token": "tok_sandbox_visa_4242_122031_a_0"});
    let r = app.checkout("rq-forged", &forged).await;
    assert_error(&r, 422, "validation_failed");
    app.stop().await;
}

/// serde's message for a value of the wrong type echoes it ("invalid type: integer `…`"): a
/// card number sent as a JSON number where a string belongs is written nowhere — not in the
/// 400 answered, not in a dead letter's reason, not in the dead letters listed.
#[actix_web::test]
async fn a_card_number_echoed_by_a_parse_error_is_written_nowhere() {
    let app = spawn_app().await;
    app.product("ECHO-1", "c", &[], 100, 5).await;
    let mut b = body("echo", json!([{"sku": "ECHO-1", "quantity": 1}]));
    b["shipping_address"]["street"] = json!(4242424242424242u64);
    let r = app.checkout("echo-http", &b).await;
    assert_error(&r, 400, "bad_request");
    assert_eq!(
        card_data_in(&r.body.to_string()),
        Vec::<String>::new(),
        "{}",
        r.body
    );
    // On the queues: a cart event and a stock message, each with one.
    app.publish(
        "carts",
        "cart.item",
        &json!({"cart_id": 4242424242424242u64, "sku": "ECHO-1", "quantity": 1}),
        None,
    )
    .await;
    let (_, reason) = app.dead_letter("carts.events.dead").await;
    assert!(
        reason.starts_with("body is not the expected JSON"),
        "{reason}"
    );
    assert_eq!(card_data_in(&reason), Vec::<String>::new(), "{reason}");
    app.publish(
        "inventory",
        "stock.update",
        &json!({"sku": 4242424242424242u64, "on_hand": 1}),
        Some("echo-stock"),
    )
    .await;
    let (_, reason) = app.dead_letter("inventory.updates.dead").await;
    assert_eq!(card_data_in(&reason), Vec::<String>::new(), "{reason}");
    let listed = app
        .send(
            app.admin(app.client.get(app.url("/v1/monitor/dead-letters"))),
            None,
        )
        .await;
    assert_eq!(listed.status, 200);
    assert!(
        listed.body["data"].as_array().unwrap().len() >= 2,
        "{}",
        listed.body
    );
    assert_eq!(
        card_data_in(&listed.body.to_string()),
        Vec::<String>::new(),
        "{}",
        listed.body
    );
}

#[actix_web::test]
async fn dead_letters_are_kept_for_their_retention_only_and_listed_masked() {
    let app = spawn_app_with(TestDb::new(), |c| {
        c.dead_letter_ttl = Duration::from_secs(4);
    })
    .await;
    let mut b = tokenized(&body("dl", json!([{"sku": "NOPE", "quantity": 1}])));
    b["payment"] = json!({"method": "boleto", "document": "529.982.247-25"});
    app.publish("orders", "checkout", &b, Some("dl-ttl")).await;
    // The operator's list masks the person's data.
    let list = || async {
        orderflow::messaging::dead_letters::list(
            app.app_state.broker(),
            orderflow::messaging::topology::CHECKOUT_QUEUE,
        )
        .await
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut letters = list().await;
    while letters.is_empty() {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
        letters = list().await;
    }
    let shown = letters[0].masked_body();
    assert!(
        !shown.contains("529.982.247-25")
            && !shown.contains("Ana Silva")
            && !shown.contains("Paulista"),
        "{shown}"
    );
    assert!(shown.contains("NOPE"), "the rest stays readable: {shown}");
    assert!(
        letters[0].body.contains("Paulista"),
        "--unmasked shows it all"
    );
    // After the retention, gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !list().await.is_empty() {
        assert!(Instant::now() < deadline, "the dead letter never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.stop().await;
}

#[actix_web::test]
async fn the_dashboard_is_never_framed_and_no_answer_is_sniffed() {
    let app = spawn_app_with(TestDb::new(), |_| {}).await;
    let page = app.anon.get(app.url("/dashboard")).send().await.unwrap();
    let csp = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.headers().get("x-frame-options").unwrap(), "DENY");
    for path in [
        "/dashboard",
        "/v1/queues",
        "/v1/products/NOPE",
        "/health/live",
    ] {
        let r = app.anon.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            r.headers().get("x-content-type-options").unwrap(),
            "nosniff",
            "{path}"
        );
    }
    app.stop().await;
}

/// The broker users deploy/make-secrets.sh defines (the service, a warehouse, a cart system),
/// made on this test's vhost with the permissions its definitions file gives them.
fn definitions_users(vhost: &TestVhost) -> (Vec<BrokerUser>, crate::helpers::TempDir) {
    let dir = crate::helpers::TempDir::new();
    let ok = std::process::Command::new("bash")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/make-secrets.sh"))
        .env("SECRETS_DIR", &dir.0)
        .output()
        .expect("run make-secrets.sh");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let defs: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("definitions.json")).unwrap())
            .unwrap();
    let users = ["orderflow", "warehouse", "carts"]
        .iter()
        .map(|name| {
            let p = defs["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["user"] == *name)
                .unwrap();
            BrokerUser::new(
                vhost,
                p["configure"].as_str().unwrap(),
                p["write"].as_str().unwrap(),
                p["read"].as_str().unwrap(),
            )
        })
        .collect();
    (users, dir)
}

#[actix_web::test]
async fn the_service_runs_with_its_least_privilege_broker_user_and_a_warehouse_cannot_order() {
    let vhost = TestVhost::new();
    let (users, _dir) = definitions_users(&vhost);
    let (service_user, warehouse) = (&users[0], &users[1]);
    let url = format!(
        "amqp://{}:{}@127.0.0.1:5672/{}",
        service_user.name, service_user.password, vhost.name
    );
    let warehouse_name = warehouse.name.clone();
    let app = crate::helpers::spawn_app_on(TestDb::new(), vhost, move |c| {
        c.amqp_url = url;
        c.producers.inventory = Some(vec![warehouse_name]);
    })
    .await;
    app.product("LP-1", "c", &[], 100, 5).await;
    let r = app
        .checkout("lp-1", &body("lp", json!([{"sku": "LP-1", "quantity": 1}])))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        app.decided(r.body["order_id"].as_str().unwrap()).await["status"],
        "scheduled"
    );
    // The warehouse may publish stock updates, and only that.
    let (_c, ch) = warehouse.channel(&app.vhost).await;
    let order = tokenized(&body("wh", json!([{"sku": "LP-1", "quantity": 1}])));
    let refused = publish_as(
        &ch,
        "orders",
        "checkout",
        order.to_string().as_bytes(),
        lapin::BasicProperties::default().with_message_id("wh-order".into()),
    )
    .await
    .unwrap_err();
    assert!(
        refused.contains("ACCESS_REFUSED") || refused.contains("access"),
        "{refused}"
    );
    let (_c2, ch) = warehouse.channel(&app.vhost).await;
    publish_as(
        &ch,
        "inventory",
        "stock.update",
        json!({"sku": "LP-1", "on_hand": 9}).to_string().as_bytes(),
        lapin::BasicProperties::default()
            .with_message_id("wh-stock".into())
            .with_user_id(warehouse.name.as_str().into()),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.db.stock("LP-1").0 != 9 {
        assert!(
            Instant::now() < deadline,
            "the warehouse's update never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
    drop(users);
}

#[actix_web::test]
async fn what_intake_accepts_is_what_its_consumer_decides_and_stray_card_fields_never_travel() {
    let app = spawn_app_with(TestDb::new(), |_| {}).await;
    app.product("7891000100011", "c", &[], 100, 5).await;
    // Stray fields a client added (a CVV at the top, card data under an item, a card on a pix
    // payment), and a numeric SKU that passes Luhn: accepted, and decided — only what the
    // validator read is published.
    let mut b = body(
        "st",
        json!([{"sku": "7891000100011", "quantity": 1, "cvv": "999"}]),
    );
    b["cvv"] = json!("123");
    b["card"] = json!({"number": "4000000000000002"});
    b["payment"]["method"] = json!("pix");
    let r = app.checkout("stray-1", &b).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let order = app.decided(r.body["order_id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "scheduled", "{order}");
    assert_eq!(order["payment"], json!({"method": "pix"}));
    // The same request again is the same order (the stray fields are not part of it).
    let again = app.checkout("stray-1", &b).await;
    assert_eq!(again.body["order_id"], r.body["order_id"]);
    // A key the consumer would refuse is refused at the door.
    let tab = app
        .send(
            app.as_customer(app.anon.post(app.url("/v1/checkout")), "st")
                .insert_header(("Idempotency-Key", "a\tb")),
            Some(body("st", json!([{"sku": "7891000100011", "quantity": 1}]))),
        )
        .await;
    assert_error(&tab, 422, "validation_failed");
    app.stop().await;
}

#[actix_web::test]
async fn a_dead_letter_queue_from_an_older_version_is_used_as_it_is() {
    // `orders.checkout.dead` as a version before the retention made it (no x-message-ttl).
    let vhost = TestVhost::new();
    let conn = lapin::Connection::connect(&vhost.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        "orders.checkout.dead".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    let _ = conn.close(200, "made".into()).await;
    let app = crate::helpers::spawn_app_on(TestDb::new(), vhost, |_| {}).await;
    app.product("OLD-1", "c", &[], 100, 5).await;
    let r = app
        .checkout(
            "old-1",
            &body("old", json!([{"sku": "OLD-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        app.decided(r.body["order_id"].as_str().unwrap()).await["status"],
        "scheduled"
    );
    app.publish_checkout_raw(b"{not json", "old-poison").await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("not JSON"), "{reason}");
    app.stop().await;
}
