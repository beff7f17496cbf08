//! Issue 20: decision events that are not lost. A decision's events (`order.<status>` and its
//! `notification.<kind>`) are confirmed by the broker before the checkout's delivery is acked;
//! when a publish is not confirmed the delivery is retried (or handed back) and the events go
//! out again with the same message ids.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::checkout::body;
use crate::helpers::{next_event, spawn_app, watch_events};

#[actix_web::test]
async fn every_decision_goes_out_on_order_events_even_when_publishes_are_not_confirmed() {
    let app = spawn_app().await;
    app.product("EVL-1", "c", &[], 100, 1_000).await;
    app.product("EVL-2", "c", &[], 100, 3).await;
    let (_channel, mut events) = watch_events(&app, &["#"]).await;
    // Every third publish of a decision's events fails after its first event went out.
    app.active().orders.fault_fail_every_nth_event(3);
    let sends = (0..60).map(|n| {
        let sku = if n % 4 == 0 { "EVL-2" } else { "EVL-1" };
        let request = body(&format!("evl-{n}"), json!([{"sku": sku, "quantity": 1}]));
        let app = &app;
        async move { app.checkout(&format!("evl-key-{n}"), &request).await }
    });
    let replies = futures_util::future::join_all(sends).await;
    let mut accepted = BTreeSet::new();
    for r in &replies {
        match r.status {
            202 => {
                accepted.insert(r.body["order_id"].as_str().unwrap().to_owned());
            }
            409 => {} // EVL-2 sold out at the door
            other => panic!("unexpected answer {other}: {:?}", r.body),
        }
    }
    assert!(accepted.len() >= 45, "accepted {}", accepted.len());
    // Every accepted order is decided (the retries are within the delivery's window)…
    let mut decided: BTreeMap<String, String> = BTreeMap::new();
    for id in &accepted {
        let order = app.decided(id).await;
        decided.insert(id.clone(), order["status"].as_str().unwrap().to_owned());
    }
    // …and each has its decision and its notification on order.events, every copy of an event
    // under one message id.
    let mut ids: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut copies = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    let complete = |ids: &BTreeMap<(String, String), BTreeSet<String>>| {
        decided.iter().all(|(id, status)| {
            ids.contains_key(&(id.clone(), format!("order.{status}")))
                && ids
                    .keys()
                    .any(|(o, k)| o == id && k.starts_with("notification."))
        })
    };
    while !complete(&ids) {
        assert!(
            Instant::now() < deadline,
            "decisions without their events: {:?}",
            decided
                .iter()
                .filter(
                    |(id, status)| !ids.contains_key(&((*id).clone(), format!("order.{status}")))
                )
                .collect::<Vec<_>>()
        );
        if let Some((key, message_id, event)) = next_event(&mut events).await {
            let order_id = event["order_id"].as_str().unwrap().to_owned();
            copies += 1;
            ids.entry((order_id, key))
                .or_default()
                .insert(message_id.expect("an event carries its id"));
        }
    }
    // Whatever else is still arriving (the last retries' copies).
    while let Some((key, message_id, event)) = next_event(&mut events).await {
        copies += 1;
        ids.entry((event["order_id"].as_str().unwrap().to_owned(), key))
            .or_default()
            .insert(message_id.unwrap());
    }
    for ((order_id, key), seen) in &ids {
        assert_eq!(
            seen.len(),
            1,
            "{key} of {order_id} under several ids: {seen:?}"
        );
    }
    let statuses: BTreeSet<&str> = decided.values().map(String::as_str).collect();
    assert!(statuses.contains("scheduled"), "{statuses:?}");
    // The fault fired: some events went out more than once (the first of a pair whose second
    // was not confirmed), yet none is missing.
    assert!(
        copies > ids.len(),
        "{copies} events for {} distinct: the fault never fired",
        ids.len()
    );
    app.stop().await;
}
