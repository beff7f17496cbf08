//! Unit tests of the order records (`transitions.rs`) kept and published in memory.

use super::super::store::MemOrderStore;
use super::*;
use crate::domain::checkout::{DeliveryMethod, Payment};
use crate::domain::order::{OrderItem, Origin};
use crate::domain::Sku;
use crate::messaging::publisher::MemoryPublisher;
use crate::persistence::orders::NewOrderRow;
use std::collections::BTreeSet;

/// Records kept in memory, published in memory: no database, no broker.
fn records(publisher: Arc<MemoryPublisher>) -> Records {
    Records::new(
        Arc::new(MemOrderStore::default()),
        publisher,
        Arc::new(Monitor::new()),
        EventScope::Decisions,
        Arc::new(crate::domain::clock::SystemClock),
        #[cfg(feature = "fault-injection")]
        Arc::default(),
    )
}

fn order(status: OrderStatus) -> Order {
    let at = Utc::now();
    Order {
        order_id: Uuid::from_u128(42),
        customer_id: "c-1".into(),
        cart_id: None,
        origin: Origin::Http,
        status,
        items: vec![OrderItem {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: 1,
            unit_price_cents: 1990,
        }],
        total_cents: 1990,
        currency: "BRL".into(),
        delivery_method: DeliveryMethod::Standard,
        payment: Payment::Pix,
        delivery: None,
        rejection: None,
        history: if status == OrderStatus::Received {
            vec![(status, at)]
        } else {
            vec![(OrderStatus::Received, at), (status, at)]
        },
        created_at: at,
        updated_at: at,
        fingerprint: "f".into(),
        settled: true,
    }
}

/// Issue 19: the events go through the publisher trait `messaging` provides — here one in
/// memory, no broker. A decision is announced as its two events, under ids that do not
/// change when it is announced again (a redelivery, a retry).
#[actix_web::test]
async fn a_decision_is_announced_as_its_two_events_under_ids_that_do_not_change() {
    let publisher = Arc::new(MemoryPublisher::default());
    let records = records(Arc::clone(&publisher));
    let scheduled = order(OrderStatus::Scheduled);
    records.publish_decision(&scheduled).await.unwrap();
    let first = publisher.published();
    let keys: BTreeSet<&str> = first.iter().map(|p| p.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["notification.order_scheduled", "order.scheduled"])
    );
    assert!(first.iter().all(|p| p.exchange == EXCHANGE_ORDER_EVENTS));
    let event = first
        .iter()
        .find(|p| p.routing_key == "order.scheduled")
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&event.body).unwrap();
    assert_eq!(body["status"], "scheduled");
    assert_eq!(body["order_id"], scheduled.order_id.to_string());

    records.publish_decision(&scheduled).await.unwrap();
    let again = publisher.published();
    let ids = |p: &[crate::messaging::publisher::Published]| {
        p.iter().map(|m| m.id.clone()).collect::<BTreeSet<_>>()
    };
    assert_eq!(again.len(), 4, "announced again");
    assert_eq!(ids(&again), ids(&first), "under the same ids");
}

/// An event the broker does not confirm makes the announcement transient (retried, or
/// handed back); an order on its way is not announced by `publish_decision` at all.
#[actix_web::test]
async fn an_unconfirmed_event_is_transient_and_an_undecided_order_announces_nothing() {
    let publisher = Arc::new(MemoryPublisher::default());
    let records = records(Arc::clone(&publisher));
    records
        .publish_decision(&order(OrderStatus::Reserved))
        .await
        .unwrap();
    assert!(publisher.published().is_empty());
    publisher.fail_every(2);
    let failed = records.publish_decision(&order(OrderStatus::Failed)).await;
    assert!(matches!(failed, Err(StepError::Transient(_))), "{failed:?}");
}

/// Issue 19, item 2: the order store as a trait, kept in memory here. A status change
/// applies only from the status it expects: of two moves from `received`, the second finds
/// the order moved, reloads it and leaves it as the first made it — history, notification
/// and the event included.
#[actix_web::test]
async fn a_status_change_applies_only_from_the_status_it_expects() {
    let publisher = Arc::new(MemoryPublisher::default());
    let records = records(Arc::clone(&publisher));
    let deadline = Deadline::after(Duration::from_secs(5));
    let received = order(OrderStatus::Received);
    let row = NewOrderRow::of(&received, "key-1", &Default::default());
    let created = records
        .write(OrderWrite::Create(Box::new(row.clone())), &deadline)
        .await
        .unwrap();
    assert_eq!(created, OrderWritten::Created(true));
    let again = records
        .write(OrderWrite::Create(Box::new(row)), &deadline)
        .await
        .unwrap();
    assert_eq!(again, OrderWritten::Created(false), "created once");

    let mut first = records.get(received.order_id).await.unwrap().unwrap();
    let mut second = first.clone();
    records
        .transition(&mut first, Move::to(OrderStatus::Cancelled), &deadline)
        .await
        .unwrap();
    assert_eq!(first.status, OrderStatus::Cancelled);
    let rejection = Rejection::because(crate::domain::order::RejectionReason::OutOfStock, "short");
    records
        .transition(
            &mut second,
            Move {
                rejection: Some(rejection),
                ..Move::to(OrderStatus::Rejected)
            },
            &deadline,
        )
        .await
        .unwrap();
    assert_eq!(second.status, OrderStatus::Cancelled, "reloaded, not moved");
    let kept = records.get(received.order_id).await.unwrap().unwrap();
    assert_eq!(kept.status, OrderStatus::Cancelled);
    assert_eq!(kept.rejection, None);
    let steps: Vec<OrderStatus> = kept.history.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, [OrderStatus::Received, OrderStatus::Cancelled]);
}
