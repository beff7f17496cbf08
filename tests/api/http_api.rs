//! The HTTP contract of API.md for the foundation endpoints: health, catalog, inventory, and
//! the error body for everything a client can get wrong.

use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, Proxy, TestDb, ADMIN_TOKEN};

#[actix_web::test]
async fn health_live_and_ready() {
    let app = spawn_app().await;
    let live = app.get("/health/live").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.body, json!({"status": "ok"}));
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let epoch = ready.body["epoch"].as_i64().expect("an epoch");
    assert!(epoch >= 1);
    assert_eq!(
        ready.body,
        json!({"status": "ready", "role": "active", "epoch": epoch,
               "checks": {"postgres": "ok", "rabbitmq": "ok", "engine": "ok"}})
    );
    app.stop().await;
}

#[actix_web::test]
async fn ready_names_the_broker_when_its_connection_is_cut() {
    let proxy = Proxy::start(crate::helpers::amqp_addr());
    let app = spawn_app_with(TestDb::new(), |c| c.amqp_url = proxy.amqp_url(&c.amqp_url)).await;
    assert!(app.vhost.url.contains("of_test_"));
    assert_eq!(app.get("/health/ready").await.status, 200);

    proxy.cut();
    let mut reply = app.get("/health/ready").await;
    for _ in 0..50 {
        if reply.status == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        reply = app.get("/health/ready").await;
    }
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.body["checks"]["postgres"], "ok");
    assert_ne!(reply.body["checks"]["rabbitmq"], "ok");
    assert_error(&reply, 503, "unavailable");
    assert!(reply.retry_after.is_some());

    // The reconnect loop brings it back once the broker is reachable again.
    proxy.restore();
    let mut back = false;
    for _ in 0..100 {
        if app.get("/health/ready").await.status == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "ready again after the broker came back");
    app.stop().await;
}

#[actix_web::test]
async fn products_are_created_replaced_and_read_with_live_stock() {
    let app = spawn_app().await;
    let body = json!({"name": "Espresso cup", "category": "kitchen", "tags": ["Coffee", "cup"],
                      "price_cents": 1290, "attributes": {"color": "white"}});
    let created = app.admin_put("/v1/products/CUP-1", body.clone()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["sku"], "CUP-1");
    assert_eq!(created.body["currency"], "BRL");
    assert_eq!(created.body["tags"], json!(["coffee", "cup"]));
    assert_eq!(
        created.body["stock"],
        json!({"on_hand": 0, "reserved": 0, "available": 0})
    );

    let mut changed = body;
    changed["price_cents"] = json!(1490);
    let replaced = app.admin_put("/v1/products/CUP-1", changed).await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.body["price_cents"], 1490);

    app.admin_put("/v1/inventory/CUP-1", json!({"on_hand": 12}))
        .await;
    let read = app.get("/v1/products/CUP-1").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["attributes"], json!({"color": "white"}));
    assert_eq!(
        read.body["stock"],
        json!({"on_hand": 12, "reserved": 0, "available": 12})
    );
    app.stop().await;
}

#[actix_web::test]
async fn inventory_writes_are_durable_when_answered() {
    let app = spawn_app().await;
    app.product_with_stock("INV-1", 10).await;
    let set = app
        .admin_put("/v1/inventory/INV-1", json!({"on_hand": 40}))
        .await;
    assert_eq!(set.status, 200);
    assert_eq!(
        set.body,
        json!({"sku": "INV-1", "on_hand": 40, "reserved": 0, "available": 40, "version": 2})
    );
    assert_eq!(
        app.db.stock("INV-1"),
        (40, 0, 2),
        "durable before the answer"
    );

    let adj = app
        .admin_post(
            "/v1/inventory/INV-1/adjustments",
            json!({"delta": -15, "reason": "damaged"}),
        )
        .await;
    assert_eq!(adj.status, 200, "{}", adj.body);
    assert_eq!(adj.body["on_hand"], 25);
    assert_eq!(app.db.stock("INV-1"), (25, 0, 3));

    let too_much = app
        .admin_post(
            "/v1/inventory/INV-1/adjustments",
            json!({"delta": -26, "reason": "lost"}),
        )
        .await;
    assert_error(&too_much, 422, "validation_failed");
    assert!(too_much.body["error"]["details"]["fields"]["delta"].is_array());
    assert_eq!(app.db.stock("INV-1"), (25, 0, 3));

    let read = app.get("/v1/inventory/INV-1").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["available"], 25);
    assert_eq!(read.body["version"], 3);
    app.stop().await;
}

#[actix_web::test]
async fn admin_endpoints_need_the_token() {
    let app = spawn_app().await;
    let body = json!({"name": "x", "category": "c", "price_cents": 1});
    let none = app
        .send(app.anon.put(app.url("/v1/products/A1")), Some(body.clone()))
        .await;
    assert_error(&none, 401, "unauthorized");
    let wrong = app
        .send(
            app.anon
                .put(app.url("/v1/inventory/A1"))
                .insert_header(("Authorization", "Bearer nope")),
            Some(json!({"on_hand": 1})),
        )
        .await;
    assert_error(&wrong, 401, "unauthorized");
    let basic = app
        .send(
            app.anon
                .post(app.url("/v1/inventory/A1/adjustments"))
                .insert_header(("Authorization", format!("Basic {ADMIN_TOKEN}"))),
            Some(json!({"delta": 1, "reason": "x"})),
        )
        .await;
    assert_error(&basic, 401, "unauthorized");
    app.stop().await;

    // Without ADMIN_TOKEN configured, no token opens them.
    let locked = spawn_app_with(TestDb::new(), |c| c.admin_tokens = Default::default()).await;
    let r = locked.admin_put("/v1/products/A1", body).await;
    assert_error(&r, 401, "unauthorized");
    locked.stop().await;
}

#[actix_web::test]
async fn bad_input_gets_the_error_body_never_a_500() {
    let app = spawn_app().await;
    app.product_with_stock("B-1", 5).await;

    assert_error(&app.get("/v1/products/NOPE").await, 404, "not_found");
    assert_error(&app.get("/v1/inventory/NOPE").await, 404, "not_found");
    assert_error(&app.get("/v1/inventory/bad%20sku").await, 404, "not_found");
    assert_error(&app.get("/v1/nothing-here").await, 404, "not_found");
    let r = app
        .admin_put("/v1/inventory/NOPE", json!({"on_hand": 1}))
        .await;
    assert_error(&r, 404, "not_found");

    // Not JSON at all, JSON of the wrong shape, wrong types.
    let raw = app
        .send(
            app.admin(app.client.put(app.url("/v1/inventory/B-1")))
                .content_type("application/json"),
            None,
        )
        .await;
    assert_error(&raw, 400, "bad_request");
    let garbage = app
        .admin(app.client.put(app.url("/v1/inventory/B-1")))
        .content_type("application/json")
        .send_body("{not json")
        .await
        .unwrap();
    assert_error(&crate::helpers::read(garbage).await, 400, "bad_request");
    assert_error(
        &app.admin_put("/v1/inventory/B-1", json!([1, 2])).await,
        400,
        "bad_request",
    );
    assert_error(
        &app.admin_put("/v1/inventory/B-1", json!({"on_hand": "7"}))
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &app.admin_put("/v1/inventory/B-1", json!({"on_hand": 1.5}))
            .await,
        400,
        "bad_request",
    );

    // Well-formed but invalid.
    let r = app
        .admin_put("/v1/inventory/B-1", json!({"on_hand": -1}))
        .await;
    assert_error(&r, 422, "validation_failed");
    assert_eq!(
        r.body["error"]["details"]["fields"]["on_hand"],
        json!(["must be from 0 to 1000000000"])
    );
    let r = app.admin_put("/v1/inventory/B-1", json!({})).await;
    assert_eq!(
        r.body["error"]["details"]["fields"]["on_hand"],
        json!(["is required"])
    );
    let r = app
        .admin_post(
            "/v1/inventory/B-1/adjustments",
            json!({"delta": 0, "reason": " "}),
        )
        .await;
    assert_error(&r, 422, "validation_failed");
    assert!(r.body["error"]["details"]["fields"]["delta"].is_array());
    assert!(r.body["error"]["details"]["fields"]["reason"].is_array());
    let r = app
        .admin_put(
            "/v1/products/B-2",
            json!({"name": "", "price_cents": -5, "currency": "real"}),
        )
        .await;
    assert_error(&r, 422, "validation_failed");
    for field in ["name", "category", "price_cents", "currency"] {
        assert!(
            r.body["error"]["details"]["fields"][field].is_array(),
            "{field}: {}",
            r.body
        );
    }
    let r = app
        .admin_put(
            &format!("/v1/products/{}", "x".repeat(65)),
            json!({"name": "n", "category": "c", "price_cents": 1}),
        )
        .await;
    assert_error(&r, 422, "validation_failed");
    assert!(r.body["error"]["details"]["fields"]["sku"].is_array());

    // Media type and size.
    let text = app
        .admin(app.client.put(app.url("/v1/inventory/B-1")))
        .content_type("text/plain")
        .send_body(r#"{"on_hand": 3}"#)
        .await
        .unwrap();
    assert_error(
        &crate::helpers::read(text).await,
        415,
        "unsupported_media_type",
    );
    let huge = json!({"name": "x".repeat(70 * 1024), "category": "c", "price_cents": 1});
    assert_error(
        &app.admin_put("/v1/products/B-3", huge).await,
        413,
        "payload_too_large",
    );

    // Wrong method on a known path.
    let r = app
        .send(app.client.delete(app.url("/v1/inventory/B-1")), None)
        .await;
    assert_error(&r, 405, "method_not_allowed");
    // RFC 9110: a 405 names the methods the resource answers.
    let mut raw = app
        .client
        .delete(app.url("/v1/inventory/B-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 405);
    assert_eq!(
        raw.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, PUT")
    );
    let _ = raw.body().await;
    let mut raw = app
        .client
        .get(app.url("/v1/checkout"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        raw.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let _ = raw.body().await;

    // Nothing above changed the stock.
    assert_eq!(app.db.stock("B-1"), (5, 0, 1));
    app.stop().await;
}
