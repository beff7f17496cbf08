//! Delivery capacity: how many deliveries each method has booked on each date, as lock-free
//! counters rebuilt from the scheduled orders on start. Booking is the pure
//! [`delivery::schedule`] with an atomic increment passed in.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use dashmap::DashMap;
use uuid::Uuid;

use crate::domain::checkout::DeliveryMethod;
use crate::domain::clock;
use crate::domain::delivery::{self, DeliverySlot};
use crate::persistence::orders as order_store;
use crate::persistence::{run_blocking, DbError, DbPool};

/// Booked deliveries per (method, date).
pub(super) struct Capacity {
    booked: DashMap<(DeliveryMethod, NaiveDate), Arc<AtomicU32>>,
}

impl Capacity {
    /// The counters as the scheduled orders in the database say.
    pub async fn load(pool: &DbPool) -> Result<Capacity, DbError> {
        let rows = run_blocking(pool, order_store::booked_deliveries).await?;
        let booked = DashMap::new();
        for (method, day, n) in rows {
            if let (Some(m), Ok(d)) = (DeliveryMethod::parse(&method), day.parse::<NaiveDate>()) {
                booked.insert((m, d), Arc::new(AtomicU32::new(n.max(0) as u32)));
            }
        }
        Ok(Capacity { booked })
    }

    fn counter(&self, method: DeliveryMethod, day: NaiveDate) -> Arc<AtomicU32> {
        Arc::clone(self.booked.entry((method, day)).or_default().value())
    }

    /// Books the first date with room for an order placed `now`.
    pub fn book(
        &self,
        method: DeliveryMethod,
        order_id: Uuid,
        now: DateTime<Utc>,
    ) -> Option<DeliverySlot> {
        let rules = delivery::rules(method);
        delivery::schedule(
            method,
            &rules,
            clock::local(now),
            &order_id.to_string(),
            |day| {
                self.counter(method, day)
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < rules.daily_capacity).then_some(n + 1)
                    })
                    .is_ok()
            },
        )
    }

    /// Gives a booked place back.
    pub fn unbook(&self, method: DeliveryMethod, day: NaiveDate) {
        let _ = self
            .counter(method, day)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}
