//! What intake and the checkout consumer share about customers' idempotency keys: the lock
//! intake holds per key, the keys seen recently (admission lets their repeats through), the
//! checkouts published and not yet written as orders (a repeat is answered without publishing
//! again), and the keyed ids of checkouts from other systems.

use dashmap::DashMap;
use uuid::Uuid;

use super::recent_keys::{slot_hash, RecentKeys};
use crate::auth::OrderIds;

/// Intake's key locks: stripes of their own, so a thousand checkouts at the door never hold a
/// lock a decision waits for.
const KEY_LOCK_STRIPES: usize = 4096;
/// Keys per generation of [`RecentKeys`] (two generations: at most twice this).
const RECENT_KEYS: usize = 500_000;

pub(super) struct Keys {
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Never used while the stripes are all there; there so a lookup cannot panic.
    spare: tokio::sync::Mutex<()>,
    /// Keys recorded or seen here: while admission sheds, these go on to their order.
    pub recent: RecentKeys,
    /// Checkouts this process published — `(customer, key)` → `(order id, fingerprint)` —
    /// whose order the consumer has not written yet.
    published: DashMap<(String, String), (Uuid, String)>,
    /// Keys the ids of checkouts from other systems (DESIGN.md rule 2).
    pub ids: OrderIds,
}

impl Keys {
    pub fn new(ids: OrderIds) -> Keys {
        Keys {
            locks: (0..KEY_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            spare: tokio::sync::Mutex::new(()),
            recent: RecentKeys::new(RECENT_KEYS),
            published: DashMap::new(),
            ids,
        }
    }

    /// The lock intake holds for a customer's idempotency key.
    pub fn lock(&self, customer: &str, key: &str) -> &tokio::sync::Mutex<()> {
        let i = (slot_hash(customer, key) % KEY_LOCK_STRIPES as u64) as usize;
        self.locks.get(i).unwrap_or(&self.spare)
    }

    /// `(order id, fingerprint)` of a checkout of this key published and not yet written.
    pub fn published(&self, customer: &str, key: &str) -> Option<(Uuid, String)> {
        self.published
            .get(&(customer.to_owned(), key.to_owned()))
            .map(|known| known.value().clone())
    }

    /// Recorded before publishing: the consumer may create the order (and forget this) before
    /// the confirm even reaches intake.
    pub fn publishing(&self, customer: &str, key: &str, order_id: Uuid, fingerprint: &str) {
        self.published.insert(
            (customer.to_owned(), key.to_owned()),
            (order_id, fingerprint.to_owned()),
        );
    }

    /// The checkout is no longer on its way (written as an order, refused, or never
    /// published): a repeat is answered from the database.
    pub fn forget(&self, customer: &str, key: &str) {
        self.published
            .remove(&(customer.to_owned(), key.to_owned()));
    }

    /// The order is decided without its delivery (the sweeper): whatever checkout of it was on
    /// its way is not any more.
    pub fn forget_order(&self, order_id: Uuid) {
        self.published.retain(|_, (id, _)| *id != order_id);
    }
}
