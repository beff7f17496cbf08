//! Hostile input (issue 7): what a NUL byte, a control character, a huge number or a duplicate
//! does at every door — HTTP and the queues. Each is refused with a 4xx (or dead-lettered with
//! its reason) or processed to a decision; never a 500, never a stuck pipeline.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};

use crate::checkout::body;
use crate::helpers::{assert_error, settle_depth, spawn_app, TestApp};
use crate::load::decided;

/// After the hostile part: the service still takes and decides an ordinary checkout, is ready,
/// and takes stock writes.
async fn still_serving(app: &TestApp, sku: &str, key: &str) {
    let r = app
        .checkout(key, &body("calm", json!([{"sku": sku, "quantity": 1}])))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let order = decided(
        &app.client,
        &app.address,
        &app.db,
        key,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(order["status"], "scheduled", "{order}");
    assert_eq!(app.get("/health/ready").await.status, 200);
    let r = app
        .admin_post(
            &format!("/v1/inventory/{sku}/adjustments"),
            json!({"delta": 1, "reason": "recount"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A checkout body that is an array, not an object, is refused at both doors: serde would read
/// it field by field in order (`CheckoutInput`'s declaration order below) and take it.
#[actix_web::test]
async fn a_checkout_that_is_an_array_is_refused_at_both_doors() {
    let app = spawn_app().await;
    app.product("ARR-1", "c", &[], 100, 5).await;
    let b = body("arr", json!([{"sku": "ARR-1", "quantity": 1}]));
    let as_array = json!([
        "arr",
        null,
        b["items"],
        {"method": "pix"},
        b["shipping_address"],
        b["delivery_method"]
    ]);
    let r = app.checkout("arr-http", &as_array).await;
    assert_error(&r, 400, "bad_request");
    app.publish("orders", "checkout", &as_array, Some("arr-queue"))
        .await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.starts_with("body is not a checkout"), "{reason}");
    let stock = app.get("/v1/inventory/ARR-1").await;
    assert_eq!(stock.body["reserved"], 0, "{}", stock.body);
    still_serving(&app, "ARR-1", "arr-calm").await;
}

/// serde's derived structs also read an array, field by field in order: no client means that,
/// so an object sent as an array — a nested one too — is refused as the wrong shape at every
/// door (400 over HTTP, dead-lettered on a queue) and changes nothing.
#[actix_web::test]
async fn objects_sent_as_arrays_are_refused_at_every_door() {
    let app = spawn_app().await;
    app.product("ARR-2", "c", &[], 100, 5).await;
    let b = body("arr", json!([{"sku": "ARR-2", "quantity": 1}]));
    let address: Vec<Value> = [
        "recipient",
        "street",
        "number",
        "complement",
        "district",
        "city",
        "state",
        "postal_code",
        "country",
    ]
    .iter()
    .map(|k| b["shipping_address"][*k].clone())
    .collect();
    let mut nested = Vec::new();
    let mut as_array = b.clone();
    as_array["shipping_address"] = json!(address);
    nested.push(("shipping_address", as_array));
    let mut as_array = b.clone();
    as_array["items"] = json!([["ARR-2", 1]]);
    nested.push(("items", as_array));
    let mut as_array = b.clone();
    as_array["payment"] = json!(["pix"]);
    nested.push(("payment", as_array));
    let mut as_array = b.clone();
    as_array["payment"] =
        json!({"method": "card", "card": ["4111111111111111", "Ana", 12, 2031, "123"]});
    nested.push(("payment.card", as_array));
    for (what, checkout) in &nested {
        let r = app.checkout(&format!("arr-{what}"), checkout).await;
        assert_error(&r, 400, "bad_request");
        let r = &r.body["error"]["message"];
        assert!(!r.to_string().contains("4111"), "{what}: {r}");
    }
    // On the queue (the card as a token, as another system sends it).
    let mut queued = nested[0].1.clone();
    queued["payment"] = json!({"method": "pix"});
    app.publish("orders", "checkout", &queued, Some("arr-queued"))
        .await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.starts_with("body is not a checkout"), "{reason}");

    // Every other body.
    let cart = app
        .send(
            app.client.post(app.url("/v1/carts")),
            Some(json!({"customer_id": "arr"})),
        )
        .await;
    assert_eq!(cart.status, 201, "{}", cart.body);
    let cart = cart.body["cart_id"].as_str().unwrap().to_owned();
    let url = |p: String| app.url(&p);
    for (what, req, body) in [
        (
            "cart",
            app.client.post(url("/v1/carts".into())),
            json!(["arr"]),
        ),
        (
            "cart line",
            app.client.put(url(format!("/v1/carts/{cart}/items/ARR-2"))),
            json!([2, true]),
        ),
        (
            "stock count",
            app.admin(app.client.put(url("/v1/inventory/ARR-2".into()))),
            json!([0, "count"]),
        ),
        (
            "stock adjustment",
            app.admin(
                app.client
                    .post(url("/v1/inventory/ARR-2/adjustments".into())),
            ),
            json!([-5, "shrink"]),
        ),
        (
            "product",
            app.admin(app.client.put(url("/v1/products/ARR-2".into()))),
            json!(["Mug", "c", [], 1]),
        ),
        (
            "card token",
            app.anon.post(url("/v1/sandbox/card-tokens".into())),
            json!(["4111111111111111", "Ana", 12, 2031, "123"]),
        ),
    ] {
        let r = app.send(req, Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "bad_request", "{what}: {}", r.body);
    }
    app.publish(
        "carts",
        "cart.item",
        &json!([cart, "arr", "ARR-2", 1, true]),
        None,
    )
    .await;
    let (_, reason) = app.dead_letter("carts.events.dead").await;
    assert!(
        reason.starts_with("body is not the expected JSON"),
        "{reason}"
    );
    app.publish(
        "inventory",
        "stock.update",
        &json!(["ARR-2", 0]),
        Some("arr-inventory"),
    )
    .await;
    let (_, reason) = app.dead_letter("inventory.updates.dead").await;
    assert!(
        reason.starts_with("body is not the expected JSON"),
        "{reason}"
    );
    // Nothing changed: the stock, the product, the cart.
    let stock = app.get("/v1/inventory/ARR-2").await;
    assert_eq!(stock.body["on_hand"], 5, "{}", stock.body);
    assert_eq!(stock.body["reserved"], 0, "{}", stock.body);
    let product = app.get("/v1/products/ARR-2").await;
    assert_eq!(product.body["price_cents"], 100, "{}", product.body);
    let cart = app
        .send(app.client.get(url(format!("/v1/carts/{cart}"))), None)
        .await;
    assert_eq!(cart.body["items"], json!([]), "{}", cart.body);
    still_serving(&app, "ARR-2", "arr-calm").await;
}

#[actix_web::test]
async fn nul_and_control_characters_are_refused_at_every_door_and_orders_keep_being_decided() {
    let app = spawn_app().await;
    app.product("H-1", "c", &[], 100, 100).await;
    let line = json!([{"sku": "H-1", "quantity": 1}]);

    // HTTP checkout: a NUL in the street, a bell and an ANSI escape in the recipient.
    for (field, value) in [
        ("street", "Rua\u{0}Augusta"),
        ("recipient", "Ana\u{7}"),
        ("recipient", "\u{1b}[31mAna"),
        ("city", "x".repeat(101).as_str()),
    ] {
        let mut b = body("h-1", line.clone());
        b["shipping_address"][field] = json!(value);
        let r = app
            .checkout(&format!("nul-{field}-{}", value.len()), &b)
            .await;
        assert_error(&r, 422, "validation_failed");
        assert!(
            r.body["error"]["details"]["fields"][format!("shipping_address.{field}")].is_array(),
            "{}",
            r.body
        );
    }
    let mut b = body("h-1", line.clone());
    b["payment"]["card"]["holder_name"] = json!("Ana\u{0}");
    assert_error(
        &app.checkout("nul-holder", &b).await,
        422,
        "validation_failed",
    );

    // The same on the queue: dead-lettered with the reason, never stored.
    let mut b = body("h-1", line.clone());
    b["shipping_address"]["street"] = json!("Rua\u{0}Augusta");
    app.publish("orders", "checkout", &b, Some("q-nul-street"))
        .await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("shipping_address.street"), "{reason}");
    app.publish(
        "orders",
        "checkout",
        &body("h-1", line.clone()),
        Some("id\u{0}nul"),
    )
    .await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("message_id"), "{reason}");

    // Stock updates: a NUL in the reason, over HTTP and on the queue; a NUL in a message id.
    let r = app
        .admin_post(
            "/v1/inventory/H-1/adjustments",
            json!({"delta": 1, "reason": "truck\u{0}"}),
        )
        .await;
    assert_error(&r, 422, "validation_failed");
    assert!(r.body["error"]["details"]["fields"]["reason"].is_array());
    app.publish(
        "inventory",
        "stock.update",
        &json!({"sku": "H-1", "delta": 5, "reason": "truck\u{0}"}),
        Some("wh-nul-reason"),
    )
    .await;
    let (_, reason) = app.dead_letter("inventory.updates.dead").await;
    assert!(reason.contains("reason"), "{reason}");
    app.publish(
        "inventory",
        "stock.update",
        &json!({"sku": "H-1", "on_hand": 100}),
        Some("wh\u{0}1"),
    )
    .await;
    let (_, reason) = app.dead_letter("inventory.updates.dead").await;
    assert!(reason.contains("message_id"), "{reason}");

    // Catalog: control characters anywhere in a product, and prices past the bound.
    for bad in [
        json!({"name": "Mug\u{0}", "category": "c", "price_cents": 1}),
        json!({"name": "Mug", "category": "c", "tags": ["\u{1b}x"], "price_cents": 1}),
        json!({"name": "Mug", "category": "c", "price_cents": 1, "attributes": {"color": "red\u{0}"}}),
        json!({"name": "Mug", "category": "c", "price_cents": 1, "attributes": {"k\u{0}": 1}}),
        json!({"name": "Mug", "category": "c", "price_cents": i64::MAX}),
    ] {
        let r = app.admin_put("/v1/products/H-BAD", bad.clone()).await;
        assert_error(&r, 422, "validation_failed");
    }
    // Carts: the customer id, over HTTP and on the queue.
    let r = app
        .send(
            app.client.post(app.url("/v1/carts")),
            Some(json!({"customer_id": "c\u{0}1"})),
        )
        .await;
    assert_error(&r, 422, "validation_failed");
    app.publish(
        "carts",
        "cart.item",
        &json!({"cart_id": uuid::Uuid::new_v4(), "customer_id": "c\u{0}1", "sku": "H-1",
                "quantity": 1, "added_to_cart": true}),
        None,
    )
    .await;
    let (_, reason) = app.dead_letter("carts.events.dead").await;
    assert!(reason.contains("customer_id"), "{reason}");

    assert_eq!(
        app.db.stock("H-1").1,
        0,
        "nothing hostile reserved anything"
    );
    still_serving(&app, "H-1", "after-nul").await;
    app.stop().await;
}

#[actix_web::test]
async fn an_order_total_that_does_not_fit_is_refused_not_wrapped() {
    let app = spawn_app().await;
    app.product("OK-1", "c", &[], 100, 10).await;
    // A price past the bound cannot be set through the API…
    let r = app
        .admin_put(
            "/v1/products/HUGE",
            json!({"name": "huge", "category": "c", "price_cents": 5_000_000_000_000_000_000i64}),
        )
        .await;
    assert_error(&r, 422, "validation_failed");
    assert!(r.body["error"]["details"]["fields"]["price_cents"].is_array());
    // …but a row stored before the bound existed can be there: two of it overflow an i64.
    crate::helpers::seed_products(&app.db, &["HUGE"]);
    diesel::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE products SET price_cents = 5000000000000000000 WHERE sku = 'HUGE'",
        ),
        &mut app.db.conn(),
    )
    .unwrap();
    let app = restart(app).await;
    let r = app
        .admin_put("/v1/inventory/HUGE", json!({"on_hand": 10}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .checkout(
            "huge-http",
            &body("h", json!([{"sku": "HUGE", "quantity": 2}])),
        )
        .await;
    assert_error(&r, 422, "validation_failed");
    assert!(
        r.body["error"]["details"]["fields"]["items"].is_array(),
        "{}",
        r.body
    );
    app.publish(
        "orders",
        "checkout",
        &body("h", json!([{"sku": "HUGE", "quantity": 2}])),
        Some("huge-queue"),
    )
    .await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("does not fit"), "{reason}");
    assert_eq!(app.db.stock("HUGE").1, 0);
    still_serving(&app, "OK-1", "after-huge").await;
    app.stop().await;
}

/// The same database, a new process (the catalog is read on start).
async fn restart(app: TestApp) -> TestApp {
    let TestApp { db, .. } = app.stop_keeping_db().await;
    crate::helpers::spawn_app_with(db, |_| {}).await
}

/// Arbitrary JSON values of the kinds clients send: strings (control characters, NUL, long),
/// numbers at the edges, booleans, nulls, nested values.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => any::<String>().prop_map(Value::String),
        2 => "[\\x00-\\x1f\\x7f\\x{80}-\\x{9f}a-z ]{0,12}".prop_map(Value::String),
        1 => (0usize..5000).prop_map(|n| Value::String("é".repeat(n))),
        3 => any::<i64>().prop_map(|n| json!(n)),
        1 => prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(0), Just(-1), Just(1_000_000_001)].prop_map(|n| json!(n)),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<String>().prop_map(|s| json!({"nested": s})),
        1 => prop::collection::vec(any::<String>(), 0..3).prop_map(|v| json!(v)),
    ]
}

fn sample<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).expect("a value").current()
}

/// Sets the value at a JSON pointer (its parent must exist).
fn set(target: &mut Value, pointer: &str, value: Value) {
    if let Some(slot) = target.pointer_mut(pointer) {
        *slot = value;
    }
}

const CHECKOUT_FIELDS: [&str; 18] = [
    "/customer_id",
    "/items/0/sku",
    "/items/0/quantity",
    "/payment/method",
    "/payment/card/number",
    "/payment/card/holder_name",
    "/payment/card/exp_month",
    "/payment/card/exp_year",
    "/payment/card/cvv",
    "/shipping_address/recipient",
    "/shipping_address/street",
    "/shipping_address/number",
    "/shipping_address/complement",
    "/shipping_address/city",
    "/shipping_address/state",
    "/shipping_address/postal_code",
    "/shipping_address/country",
    "/delivery_method",
];

/// The property test: arbitrary strings and numbers in every field of checkout, cart, product,
/// inventory and queue messages. Over HTTP each is answered below 500; on a queue each is
/// dead-lettered or processed; every checkout answered 202 is decided; afterwards nothing is
/// left in any queue and an ordinary checkout is decided.
#[actix_web::test]
async fn arbitrary_values_in_every_field_are_refused_or_decided_never_a_500_never_stuck() {
    const CASES: usize = 40;
    let app = spawn_app().await;
    app.product("PT-1", "c", &["t"], 100, 1_000_000).await;
    let mut runner = TestRunner::deterministic();
    let mut accepted = HashSet::new();
    let mut queued_checkouts = 0;
    let check = |what: &str, status: u16, body: &Value| {
        assert!(status < 500 || status == 503, "{what}: {status} {body}");
        if status >= 400 {
            assert!(
                body["error"]["code"].is_string(),
                "{what}: error body {body}"
            );
        }
    };
    let base = body("pt", json!([{"sku": "PT-1", "quantity": 1}]));
    for case in 0..CASES {
        for field in CHECKOUT_FIELDS {
            let value = sample(&mut runner, &hostile());
            let mut b = base.clone();
            set(&mut b, field, value.clone());
            let key = format!("pt-{case}-{field}");
            let r = app.checkout(&key, &b).await;
            check(&format!("checkout {field}={value}"), r.status, &r.body);
            if r.status == 202 {
                accepted.insert(key.clone());
            }
            // The same body as a message from another system, with a hostile message id now
            // and then.
            let id = if case % 4 == 0 {
                sample(&mut runner, &any::<String>())
            } else {
                format!("{key}-q")
            };
            app.publish("orders", "checkout", &b, Some(&id)).await;
            queued_checkouts += 1;
        }
        // Products.
        let mut product = json!({"name": "P", "category": "c", "tags": ["t"], "price_cents": 100, "attributes": {"a": "b"}});
        for field in [
            "/name",
            "/category",
            "/tags/0",
            "/price_cents",
            "/currency",
            "/attributes/a",
        ] {
            let value = sample(&mut runner, &hostile());
            let mut p = product.clone();
            if field == "/currency" {
                p["currency"] = value.clone();
            } else {
                set(&mut p, field, value.clone());
            }
            let r = app.admin_put(&format!("/v1/products/PX-{case}"), p).await;
            check(&format!("product {field}={value}"), r.status, &r.body);
        }
        product["attributes"] =
            json!({ sample(&mut runner, &any::<String>()): sample(&mut runner, &hostile()) });
        let r = app
            .admin_put(&format!("/v1/products/PY-{case}"), product)
            .await;
        check("product attributes", r.status, &r.body);
        // Inventory, over HTTP and on the queue.
        let (v, reason) = (
            sample(&mut runner, &hostile()),
            sample(&mut runner, &hostile()),
        );
        let r = app
            .admin_put("/v1/inventory/PT-1", json!({"on_hand": v}))
            .await;
        check(&format!("on_hand={v}"), r.status, &r.body);
        if r.status == 200 {
            // Put the stock back so checkouts keep being served.
            app.admin_put("/v1/inventory/PT-1", json!({"on_hand": 1_000_000}))
                .await;
        }
        let r = app
            .admin_post(
                "/v1/inventory/PT-1/adjustments",
                json!({"delta": v, "reason": reason}),
            )
            .await;
        check(&format!("delta={v} reason={reason}"), r.status, &r.body);
        let message = if case % 2 == 0 {
            json!({"sku": "PT-2", "on_hand": v})
        } else {
            json!({"sku": "PT-2", "delta": v, "reason": reason})
        };
        let id = sample(&mut runner, &any::<String>());
        app.publish("inventory", "stock.update", &message, Some(&id))
            .await;
        // Carts, over HTTP and on the queue.
        let customer = sample(&mut runner, &hostile());
        let r = app
            .send(
                app.client.post(app.url("/v1/carts")),
                Some(json!({"customer_id": customer})),
            )
            .await;
        check(&format!("cart customer={customer}"), r.status, &r.body);
        let cart = app
            .send(
                app.client.post(app.url("/v1/carts")),
                Some(json!({"customer_id": "pt"})),
            )
            .await
            .body["cart_id"]
            .clone();
        let (q, added) = (
            sample(&mut runner, &hostile()),
            sample(&mut runner, &hostile()),
        );
        let r = app
            .send(
                app.client
                    .put(app.url(&format!("/v1/carts/{}/items/PT-1", cart.as_str().unwrap()))),
                Some(json!({"quantity": q, "added_to_cart": added})),
            )
            .await;
        check(
            &format!("cart line quantity={q} added={added}"),
            r.status,
            &r.body,
        );
        let mut event = json!({"cart_id": cart, "customer_id": "pt", "sku": "PT-1", "quantity": 1, "added_to_cart": true});
        let field = [
            "/cart_id",
            "/customer_id",
            "/sku",
            "/quantity",
            "/added_to_cart",
        ][case % 5];
        set(&mut event, field, sample(&mut runner, &hostile()));
        app.publish("carts", "cart.item", &event, None).await;
    }
    // Every checkout answered 202 is decided.
    for key in &accepted {
        decided(
            &app.client,
            &app.address,
            &app.db,
            key,
            Duration::from_secs(60),
        )
        .await;
    }
    // Every message was dead-lettered or processed: no queue holds anything.
    for queue in ["orders.checkout", "inventory.updates", "carts.events"] {
        assert_eq!(
            settle_depth(&app.vhost, queue, (0, 0)).await,
            (0, 0),
            "{queue} drained"
        );
    }
    let dead = settle_depth(&app.vhost, "orders.checkout.dead", (u64::MAX, 0))
        .await
        .0;
    let queue_orders = crate::helpers::sql_i64(
        &app.db,
        "SELECT count(*) AS n FROM orders WHERE origin = 'queue'",
    );
    assert_eq!(
        dead + queue_orders as u64,
        queued_checkouts as u64,
        "each checkout message became an order or a dead letter"
    );
    eprintln!(
        "{} checkouts accepted over HTTP; {queue_orders} queue orders, {dead} dead letters of {queued_checkouts}",
        accepted.len()
    );
    app.db.assert_books_balance();
    still_serving(&app, "PT-1", "after-property").await;
    app.stop().await;
}
