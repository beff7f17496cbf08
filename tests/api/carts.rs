//! Carts over HTTP and over the `carts.events` queue.

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app};

#[actix_web::test]
async fn cart_lines_are_added_replaced_removed_with_live_availability() {
    let app = spawn_app().await;
    app.product("TEA-1", "tea", &["green"], 1500, 5).await;
    app.product("TEA-2", "tea", &["green"], 1600, 0).await;
    app.product("TEA-3", "tea", &["green"], 1550, 8).await;

    let created = app
        .send(
            app.client.post(app.url("/v1/carts")),
            Some(json!({"customer_id": "cust-1"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["items"], json!([]));
    assert_eq!(created.body["customer_id"], "cust-1");
    let cart = created.body["cart_id"].as_str().unwrap().to_owned();
    let item = |sku: &str| app.url(&format!("/v1/carts/{cart}/items/{sku}"));

    let r = app
        .send(
            app.client.put(item("TEA-1")),
            Some(json!({"quantity": 2, "added_to_cart": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"][0]["quantity"], 2);
    assert_eq!(r.body["items"][0]["unit_price_cents"], 1500);
    assert_eq!(r.body["items"][0]["available_now"], true);
    assert_eq!(r.body["items"][0]["suggestions"], json!([]));

    // A line that cannot be served carries suggestions in stock.
    let r = app
        .send(
            app.client.put(item("TEA-2")),
            Some(json!({"quantity": 1, "added_to_cart": true})),
        )
        .await;
    let line = &r.body["items"][1];
    assert_eq!(line["sku"], "TEA-2");
    assert_eq!(line["available_now"], false);
    let suggested: Vec<&str> = line["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sku"].as_str().unwrap())
        .collect();
    assert_eq!(suggested, ["TEA-3", "TEA-1"]);

    // Replace a quantity beyond stock, then remove a line.
    let r = app
        .send(
            app.client.put(item("TEA-1")),
            Some(json!({"quantity": 6, "added_to_cart": true})),
        )
        .await;
    assert_eq!(r.body["items"][0]["quantity"], 6);
    assert_eq!(r.body["items"][0]["available_now"], false);
    let r = app
        .send(
            app.client.put(item("TEA-2")),
            Some(json!({"quantity": 1, "added_to_cart": false})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["total_cents"], 9000);

    let read = app.get(&format!("/v1/carts/{cart}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["items"], r.body["items"]);
    app.stop().await;
}

#[actix_web::test]
async fn bad_cart_requests_get_the_error_body() {
    let app = spawn_app().await;
    app.product("X-1", "c", &[], 100, 1).await;
    let cart = app
        .send(
            app.client.post(app.url("/v1/carts")),
            Some(json!({"customer_id": "c-9"})),
        )
        .await
        .body["cart_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = |path: String, body: Value| {
        let req = app.client.put(app.url(&path));
        app.send(req, Some(body))
    };
    let unknown_cart = "00000000-0000-4000-8000-000000000000";
    assert_error(
        &app.get(&format!("/v1/carts/{unknown_cart}")).await,
        404,
        "not_found",
    );
    assert_error(&app.get("/v1/carts/not-a-uuid").await, 404, "not_found");
    assert_error(
        &put(
            format!("/v1/carts/{unknown_cart}/items/X-1"),
            json!({"quantity": 1, "added_to_cart": true}),
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &put(
            format!("/v1/carts/{cart}/items/NOPE"),
            json!({"quantity": 1, "added_to_cart": true}),
        )
        .await,
        404,
        "not_found",
    );
    let zero = put(
        format!("/v1/carts/{cart}/items/X-1"),
        json!({"quantity": 0, "added_to_cart": true}),
    )
    .await;
    assert_error(&zero, 422, "validation_failed");
    assert!(zero.body["error"]["details"]["fields"]["quantity"].is_array());
    let missing = put(
        format!("/v1/carts/{cart}/items/X-1"),
        json!({"quantity": 1}),
    )
    .await;
    assert!(missing.body["error"]["details"]["fields"]["added_to_cart"].is_array());
    assert_error(
        &put(
            format!("/v1/carts/{cart}/items/X-1"),
            json!({"quantity": "two", "added_to_cart": true}),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &put(
            format!("/v1/carts/{cart}/items/X-1"),
            json!({"quantity": 1, "added_to_cart": "yes"}),
        )
        .await,
        400,
        "bad_request",
    );
    let no_customer = app
        .send(app.client.post(app.url("/v1/carts")), Some(json!({})))
        .await;
    assert_error(&no_customer, 422, "validation_failed");
    let bad_customer = app
        .send(
            app.client.post(app.url("/v1/carts")),
            Some(json!({"customer_id": "a b"})),
        )
        .await;
    assert_error(&bad_customer, 422, "validation_failed");
    assert_eq!(
        app.get(&format!("/v1/carts/{cart}")).await.body["items"],
        json!([])
    );
    app.stop().await;
}

#[actix_web::test]
async fn cart_events_from_the_queue_update_carts_and_bad_ones_are_dead_lettered() {
    let app = spawn_app().await;
    app.product("Q-1", "c", &[], 250, 9).await;
    let cart = uuid::Uuid::new_v4().to_string();
    app.publish(
        "carts",
        "cart.item",
        &json!({"cart_id": cart, "customer_id": "ext-7", "sku": "Q-1", "quantity": 3, "added_to_cart": true}),
        Some("evt-1"),
    )
    .await;
    let r = app
        .eventually(&format!("/v1/carts/{cart}"), |r| {
            r.status == 200 && r.body["items"][0]["quantity"] == 3
        })
        .await;
    assert_eq!(r.body["customer_id"], "ext-7");
    assert_eq!(r.body["items"][0]["available_now"], true);

    // Same cart, another customer: refused with the reason, never dropped.
    app.publish(
        "carts",
        "cart.item",
        &json!({"cart_id": cart, "customer_id": "intruder", "sku": "Q-1", "quantity": 1, "added_to_cart": true}),
        None,
    )
    .await;
    let (body, reason) = app.dead_letter("carts.events.dead").await;
    assert_eq!(body["customer_id"], "intruder");
    assert!(reason.contains("another customer"), "{reason}");

    app.publish(
        "carts",
        "cart.item",
        &json!({"cart_id": "x", "quantity": 0}),
        None,
    )
    .await;
    let (_, reason) = app.dead_letter("carts.events.dead").await;
    assert!(
        reason.contains("cart_id") && reason.contains("quantity"),
        "{reason}"
    );

    // The service kept serving: a removal by event still works.
    app.publish(
        "carts",
        "cart.item",
        &json!({"cart_id": cart, "customer_id": "ext-7", "sku": "Q-1", "quantity": 1, "added_to_cart": false}),
        None,
    )
    .await;
    app.eventually(&format!("/v1/carts/{cart}"), |r| {
        r.body["items"] == json!([])
    })
    .await;
    app.stop().await;
}
