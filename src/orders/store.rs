//! Where the order records are kept, as a trait (issue 19, item 2): the PostgreSQL order writer
//! ([`super::writer::PgOrderStore`]) in the service, [`MemOrderStore`] in tests — the same
//! typed writes ([`OrderWrite`]) and the same answers ([`OrderWritten`]), as the engine has
//! its `Store` with `PgStore` and `MemStore`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::writer::{OrderWrite, OrderWritten};
use crate::batch::{BatchStats, SubmitError, Ticket};
use crate::domain::order::Order;
use crate::persistence::orders::{
    DecidedOutcome, KeyState, NewOrderRow, RecordedKey, TransitionRow,
};
use crate::persistence::DbError;

/// A read's answer, later.
pub type Read<'a, T> = Pin<Box<dyn Future<Output = Result<T, DbError>> + Send + 'a>>;

/// The order records.
pub trait OrderStore: Send + Sync + 'static {
    /// Queues a write; its ticket answers once it is durable (or refused).
    fn submit(&self, item: OrderWrite) -> Result<Ticket<OrderWritten>, SubmitError>;
    /// The order with its history, as kept.
    fn get(&self, order_id: Uuid) -> Read<'_, Option<Order>>;
    /// The writer's counters (queued, failing, …).
    fn stats(&self) -> Arc<BatchStats>;
    /// Writes what is queued and stops (shutdown).
    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

#[derive(Default)]
struct Kept {
    orders: HashMap<Uuid, Order>,
    /// `(customer, key)` → `(order id, fingerprint)`.
    keys: HashMap<(String, String), (Uuid, String)>,
    notifications: Vec<crate::persistence::orders::NotificationRow>,
}

/// The order records in memory, with the database's rules: a key keeps the order id and
/// fingerprint it was first recorded with; an order is created once, and not under a key that
/// stands for another request; a status change applies only from the status it expects.
#[derive(Default)]
pub struct MemOrderStore {
    kept: Mutex<Kept>,
    stats: Arc<BatchStats>,
}

impl MemOrderStore {
    /// The notifications written so far.
    pub fn notifications(&self) -> Vec<crate::persistence::orders::NotificationRow> {
        self.lock().notifications.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, item: OrderWrite) -> OrderWritten {
        let mut kept = self.lock();
        match item {
            OrderWrite::Key(k) => {
                let slot = (k.customer_id.clone(), k.idempotency_key.clone());
                match kept.keys.get(&slot).cloned() {
                    Some((order_id, fingerprint)) => {
                        let status = kept.orders.get(&order_id).map(|o| o.status);
                        OrderWritten::Key(KeyState::Known(RecordedKey {
                            order_id,
                            fingerprint,
                            status,
                        }))
                    }
                    None => {
                        kept.keys.insert(slot, (k.order_id, k.fingerprint));
                        OrderWritten::Key(KeyState::New)
                    }
                }
            }
            OrderWrite::ForgetKey(order_id) => {
                if !kept.orders.contains_key(&order_id) {
                    kept.keys.retain(|_, (id, _)| *id != order_id);
                }
                OrderWritten::KeyForgotten
            }
            OrderWrite::KeyLookup(k) => {
                let slot = (k.customer_id, k.idempotency_key);
                OrderWritten::KeyFound(kept.keys.get(&slot).map(|(order_id, fingerprint)| {
                    RecordedKey {
                        order_id: *order_id,
                        fingerprint: fingerprint.clone(),
                        status: kept.orders.get(order_id).map(|o| o.status),
                    }
                }))
            }
            OrderWrite::Create(row) => OrderWritten::Created(create(&mut kept, *row)),
            OrderWrite::Transition(row) => OrderWritten::Moved(transition(&mut kept, *row)),
            OrderWrite::Decided(d) => {
                if !create(&mut kept, d.order) {
                    return OrderWritten::Decided(DecidedOutcome::Exists);
                }
                if let Some(note) = d.notification {
                    kept.notifications.push(note);
                }
                // No stock here: its held units are not this store's to commit.
                OrderWritten::Decided(DecidedOutcome::Written(Vec::new()))
            }
            OrderWrite::Settle(order_id) => {
                if let Some(order) = kept.orders.get_mut(&order_id) {
                    order.settled = true;
                }
                OrderWritten::Settled
            }
        }
    }
}

fn create(kept: &mut Kept, row: NewOrderRow) -> bool {
    let slot = (row.customer_id.clone(), row.idempotency_key.clone());
    // As the database's creation: the key recorded for this order id must be this request's
    // (customer, key, fingerprint); an id nobody recorded a key for needs its customer's key
    // free.
    let recorded = kept.keys.iter().find(|(_, (id, _))| *id == row.order_id);
    let allowed = match recorded {
        Some((at, (_, fp))) => *at == slot && *fp == row.request_fingerprint,
        None => !kept.keys.contains_key(&slot),
    };
    if !allowed || kept.orders.contains_key(&row.order_id) {
        return false;
    }
    kept.keys
        .entry(slot)
        .or_insert((row.order_id, row.request_fingerprint.clone()));
    kept.orders.insert(
        row.order_id,
        Order {
            order_id: row.order_id,
            customer_id: row.customer_id,
            cart_id: row.cart_id,
            origin: row.origin,
            status: row.status,
            items: row.items,
            total_cents: row.total_cents,
            currency: row.currency,
            delivery_method: row.delivery_method,
            payment: row.payment,
            delivery: row.delivery,
            rejection: row.rejection,
            history: row.history.iter().map(|h| (h.status, h.at)).collect(),
            created_at: row.at,
            updated_at: row.updated_at,
            fingerprint: row.request_fingerprint,
            settled: row.settled,
        },
    );
    true
}

fn transition(kept: &mut Kept, row: TransitionRow) -> bool {
    let Some(order) = kept.orders.get_mut(&row.order_id) else {
        return false;
    };
    if order.status != row.from_status {
        return false;
    }
    if let (Some(via), Some(at)) = (row.via_status, row.via_at) {
        order.history.push((via, at));
    }
    order.status = row.to_status;
    order.history.push((row.to_status, row.at));
    if row.delivery.is_some() {
        order.delivery = row.delivery;
    }
    if row.rejection.is_some() {
        order.rejection = row.rejection;
    }
    order.settled = row.settled;
    order.updated_at = row.at;
    if let Some(note) = row.notification {
        kept.notifications.push(note);
    }
    true
}

impl OrderStore for MemOrderStore {
    fn submit(&self, item: OrderWrite) -> Result<Ticket<OrderWritten>, SubmitError> {
        Ok(Ticket::ready(Ok(self.apply(item))))
    }

    fn get(&self, order_id: Uuid) -> Read<'_, Option<Order>> {
        let order = self.lock().orders.get(&order_id).cloned();
        Box::pin(async move { Ok(order) })
    }

    fn stats(&self) -> Arc<BatchStats> {
        Arc::clone(&self.stats)
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::checkout::{Address, DeliveryMethod, Payment};
    use crate::domain::order::{OrderStatus, Origin};
    use crate::persistence::keys::KeyRow;

    fn key(order_id: Uuid, customer: &str, key: &str, fp: &str) -> OrderWrite {
        OrderWrite::Key(KeyRow {
            order_id,
            customer_id: customer.into(),
            idempotency_key: key.into(),
            fingerprint: fp.into(),
        })
    }

    fn create(order_id: Uuid, customer: &str, key: &str, fp: &str) -> OrderWrite {
        let at = chrono::DateTime::<chrono::Utc>::from_timestamp(1_780_000_000, 0).unwrap();
        let order = Order {
            order_id,
            customer_id: customer.into(),
            cart_id: None,
            origin: Origin::Http,
            status: OrderStatus::Scheduled,
            items: Vec::new(),
            total_cents: 1,
            currency: "BRL".into(),
            delivery_method: DeliveryMethod::Standard,
            payment: Payment::Pix,
            delivery: None,
            rejection: None,
            history: vec![(OrderStatus::Scheduled, at)],
            created_at: at,
            updated_at: at,
            fingerprint: fp.into(),
            settled: true,
        };
        OrderWrite::Create(Box::new(NewOrderRow::of(&order, key, &Address::default())))
    }

    /// A lookup finds a key by its customer and key, whatever id it asks with, says what is
    /// recorded for it, and records nothing.
    #[test]
    fn a_key_lookup_says_what_is_recorded_and_records_nothing() {
        let store = MemOrderStore::default();
        let lookup =
            |id: u128, customer: &str, k: &str| match key(Uuid::from_u128(id), customer, k, "") {
                OrderWrite::Key(row) => OrderWrite::KeyLookup(row),
                other => other,
            };
        assert_eq!(
            store.apply(lookup(1, "c-1", "k")),
            OrderWritten::KeyFound(None)
        );
        assert!(store.lock().keys.is_empty());
        let id = Uuid::from_u128(2);
        store.apply(key(id, "c-1", "k", "f"));
        let recorded = |status| {
            OrderWritten::KeyFound(Some(RecordedKey {
                order_id: id,
                fingerprint: "f".into(),
                status,
            }))
        };
        assert_eq!(store.apply(lookup(3, "c-1", "k")), recorded(None));
        store.apply(create(id, "c-1", "k", "f"));
        assert_eq!(
            store.apply(lookup(4, "c-1", "k")),
            recorded(Some(OrderStatus::Scheduled))
        );
        assert_eq!(
            store.apply(lookup(5, "c-2", "k")),
            OrderWritten::KeyFound(None)
        );
        assert_eq!(
            store.apply(lookup(6, "c-1", "k2")),
            OrderWritten::KeyFound(None)
        );
        // A key is let go only while its order does not exist.
        store.apply(OrderWrite::ForgetKey(id));
        assert_ne!(
            store.apply(lookup(7, "c-1", "k")),
            OrderWritten::KeyFound(None)
        );
        let unused = Uuid::from_u128(8);
        store.apply(key(unused, "c-3", "k", "f"));
        store.apply(OrderWrite::ForgetKey(unused));
        assert_eq!(
            store.apply(lookup(9, "c-3", "k")),
            OrderWritten::KeyFound(None)
        );
    }

    /// The same cases as `engine_pg::an_order_is_created_only_where_its_key_allows_it`, against
    /// the database: the store the pipeline's tests run on keeps the database's rule.
    #[test]
    fn an_order_is_created_only_where_its_key_allows_it() {
        let store = MemOrderStore::default();
        let ids: Vec<Uuid> = (0..7).map(Uuid::from_u128).collect();
        for k in [
            key(ids[0], "c-0", "k", "f"),
            key(ids[1], "c-1", "k", "f"),
            key(ids[2], "c-9", "k", "f"),
            key(ids[3], "c-3", "other", "f"),
            key(ids[6], "c-4", "k", "f"),
        ] {
            assert!(matches!(store.apply(k), OrderWritten::Key(KeyState::New)));
        }
        let created: Vec<bool> = [
            create(ids[0], "c-0", "k", "f"),
            create(ids[1], "c-1", "k", "g"),
            create(ids[2], "c-2", "k", "f"),
            create(ids[3], "c-3", "k", "f"),
            create(ids[4], "c-4", "k", "f"),
            create(ids[5], "c-5", "k", "f"),
        ]
        .into_iter()
        .map(|w| matches!(store.apply(w), OrderWritten::Created(true)))
        .collect();
        assert_eq!(created, [true, false, false, false, false, true]);
        let kept = store.lock();
        assert_eq!(
            kept.keys.len(),
            6,
            "one key recorded with order 5, none twice"
        );
        assert_eq!(
            kept.keys.get(&("c-5".to_owned(), "k".to_owned())),
            Some(&(ids[5], "f".to_owned()))
        );
        assert!(!kept.keys.values().any(|(id, _)| *id == ids[4]));
    }
}
