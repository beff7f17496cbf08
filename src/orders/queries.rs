//! Reading orders: one order, a customer's orders, a customer's notifications.

use uuid::Uuid;

use super::OrderService;
use crate::domain::order::Order;
use crate::persistence::orders::{self as order_store, NotificationRecord, OrderRecord};
use crate::persistence::{run_blocking, DbError};

/// The typed order of a stored row; a row that cannot be read is logged and left out.
fn typed(
    record: OrderRecord,
    history: Vec<(String, chrono::DateTime<chrono::Utc>)>,
) -> Option<Order> {
    match record.into_order(history) {
        Ok(order) => Some(order),
        Err(e) => {
            tracing::error!(error = %e, "a stored order cannot be read");
            None
        }
    }
}

impl OrderService {
    /// The order with its history, as stored.
    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, DbError> {
        run_blocking(&self.inner.pool, move |c| {
            let Some(record) = order_store::find(c, order_id)? else {
                return Ok(None);
            };
            let history = order_store::history(c, order_id)?;
            Ok(typed(record, history))
        })
        .await
    }

    /// A customer's orders, newest first.
    pub async fn of_customer(&self, customer_id: String) -> Result<Vec<Order>, DbError> {
        run_blocking(&self.inner.pool, move |c| {
            let records = order_store::by_customer(c, &customer_id, 100)?;
            let mut out = Vec::with_capacity(records.len());
            for record in records {
                let history = order_store::history(c, record.order_id)?;
                out.extend(typed(record, history));
            }
            Ok(out)
        })
        .await
    }

    /// A customer's notifications, newest first.
    pub async fn notifications(
        &self,
        customer_id: String,
    ) -> Result<Vec<NotificationRecord>, DbError> {
        run_blocking(&self.inner.pool, move |c| {
            order_store::notifications_of(c, &customer_id, 100)
        })
        .await
    }
}
