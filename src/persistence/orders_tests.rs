//! Unit tests of the order rows (`orders.rs`): typed rows as bound, stored rows read back.

use super::*;
use crate::domain::order::RejectionReason;
use crate::domain::Sku;
use serde_json::json;

fn order(status: OrderStatus, origin: Origin, method: DeliveryMethod) -> Order {
    let at = DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap_or_default();
    Order {
        order_id: Uuid::from_u128(7),
        customer_id: "c-1".into(),
        cart_id: Some(Uuid::from_u128(9)),
        origin,
        status,
        items: vec![OrderItem {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: 2,
            unit_price_cents: 1990,
        }],
        total_cents: 3980,
        currency: "BRL".into(),
        delivery_method: method,
        payment: Payment::Boleto {
            document: "39053344705".into(),
        },
        delivery: None,
        rejection: Some(Rejection::because(RejectionReason::OutOfStock, "short")),
        history: vec![(status, at)],
        created_at: at,
        updated_at: at,
        fingerprint: "f".repeat(64),
        settled: true,
    }
}

/// The record the columns of a bound row would give back.
fn stored(row: &Value) -> OrderRecord {
    let text = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
    let at: DateTime<Utc> = serde_json::from_value(row["at"].clone()).unwrap();
    OrderRecord {
        order_id: serde_json::from_value(row["order_id"].clone()).unwrap(),
        idempotency_key: text("idempotency_key"),
        request_fingerprint: text("request_fingerprint"),
        customer_id: text("customer_id"),
        cart_id: serde_json::from_value(row["cart_id"].clone()).unwrap(),
        origin: text("origin"),
        status: text("status"),
        items: row["items"].clone(),
        total_cents: row["total_cents"].as_i64().unwrap_or_default(),
        currency: text("currency"),
        delivery_method: text("delivery_method"),
        shipping_address: row["shipping_address"].clone(),
        payment: row["payment"].clone(),
        delivery: Some(row["delivery"].clone()),
        rejection: Some(row["rejection"].clone()),
        created_at: at,
        updated_at: serde_json::from_value(row["updated_at"].clone()).unwrap(),
        settled: row["settled"].as_bool().unwrap(),
        history: row["history"].clone(),
    }
}

/// Issue 19, item 2: a typed row becomes JSON only when it is bound, with the column text
/// the schema's checks know, and reads back as the order it was made of.
#[test]
fn a_typed_row_as_bound_reads_back_as_the_order_it_was_made_of() {
    let statuses = [
        OrderStatus::Received,
        OrderStatus::Reserved,
        OrderStatus::Scheduled,
        OrderStatus::Rejected,
        OrderStatus::Failed,
        OrderStatus::Cancelled,
    ];
    let methods = [
        DeliveryMethod::Standard,
        DeliveryMethod::Express,
        DeliveryMethod::SameDay,
        DeliveryMethod::Pickup,
    ];
    for (i, status) in statuses.into_iter().enumerate() {
        let origin = [Origin::Http, Origin::Queue][i % 2];
        let method = methods[i % methods.len()];
        let order = order(status, origin, method);
        let row = NewOrderRow::of(&order, "key-1", &Address::default());
        let bound: Value = serde_json::from_str(&json(&[row]).unwrap()).unwrap();
        let row = &bound[0];
        assert_eq!(row["status"], json!(status.as_str()));
        assert_eq!(row["origin"], json!(origin.as_str()));
        assert_eq!(row["delivery_method"], json!(method.as_str()));
        assert_eq!(row["idempotency_key"], json!("key-1"));
        assert_eq!(
            row["history"],
            json!([{"status": status.as_str(), "at": order.created_at}])
        );
        assert_eq!(stored(row).into_order(), Ok(order));
    }
}

/// A history status nobody knows makes the row unreadable (logged and left out by the
/// readers), never an entry silently dropped from the history shown.
#[test]
fn a_history_status_nobody_knows_makes_the_row_unreadable() {
    let order = order(OrderStatus::Scheduled, Origin::Http, DeliveryMethod::Pickup);
    let row = NewOrderRow::of(&order, "k", &Address::default());
    let mut bound: Value = serde_json::from_str(&json(&[row]).unwrap()).unwrap();
    bound[0]["history"] = json!([
        {"status": "received", "at": order.created_at},
        {"status": "shipped", "at": order.created_at},
    ]);
    let e = stored(&bound[0]).into_order().unwrap_err();
    assert!(e.contains("shipped"), "{e}");
}
