//! Warehouse stock updates on `inventory.updates`, through the SKU actors, idempotent by
//! message id; invalid ones dead-lettered with the reason.

use serde_json::json;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn warehouse_updates_apply_once_and_bad_ones_are_dead_lettered() {
    let app = spawn_app().await;
    app.product("W-1", "c", &[], 100, 10).await;

    app.publish(
        "inventory",
        "stock.update",
        &json!({"sku": "W-1", "on_hand": 40}),
        Some("wh-1"),
    )
    .await;
    app.eventually("/v1/inventory/W-1", |r| r.body["on_hand"] == 40)
        .await;

    // A delta delivered twice (the producer retried) is applied once.
    let delta = json!({"sku": "W-1", "delta": 5, "reason": "inbound truck"});
    app.publish("inventory", "stock.update", &delta, Some("wh-2"))
        .await;
    app.publish("inventory", "stock.update", &delta, Some("wh-2"))
        .await;
    app.publish(
        "inventory",
        "stock.update",
        &json!({"sku": "W-1", "delta": -1, "reason": "count"}),
        Some("wh-3"),
    )
    .await;
    // Never a state in which the duplicate counted, in memory or on disk.
    for _ in 0..30 {
        let now = app.get("/v1/inventory/W-1").await.body;
        assert!(
            now["on_hand"].as_i64().unwrap() <= 45,
            "duplicate applied: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = app
        .eventually("/v1/inventory/W-1", |r| r.body["version"] == 4)
        .await;
    assert_eq!(r.body["on_hand"], 44);
    assert_eq!(app.db.stock("W-1"), (44, 0, 4));

    app.publish(
        "inventory",
        "stock.update",
        &json!({"sku": "NOPE", "on_hand": 1}),
        Some("wh-4"),
    )
    .await;
    let (_, reason) = app.dead_letter("inventory.updates.dead").await;
    assert!(reason.contains("unknown sku"), "{reason}");
    app.publish(
        "inventory",
        "stock.update",
        &json!({"sku": "W-1", "on_hand": 1, "delta": 2}),
        None,
    )
    .await;
    let (_, reason) = app.dead_letter("inventory.updates.dead").await;
    assert!(reason.contains("exactly one"), "{reason}");
    app.publish(
        "inventory",
        "stock.update",
        &json!({"sku": "W-1", "delta": -100, "reason": "x"}),
        Some("wh-5"),
    )
    .await;
    let (_, reason) = app.dead_letter("inventory.updates.dead").await;
    assert!(reason.contains("refused"), "{reason}");
    // A delta without a message_id could not be told from its redelivery: refused.
    app.publish(
        "inventory",
        "stock.update",
        &json!({"sku": "W-1", "delta": 1, "reason": "x"}),
        None,
    )
    .await;
    let (_, reason) = app.dead_letter("inventory.updates.dead").await;
    assert!(reason.contains("needs a message_id"), "{reason}");
    assert_eq!(app.db.stock("W-1"), (44, 0, 4));
    app.stop().await;
}
