//! Reading orders: one order, a customer's orders, a customer's notifications.

use uuid::Uuid;

use crate::domain::order::Order;
use crate::persistence::orders::{self as order_store, NotificationRecord};
use crate::persistence::{run_blocking, DbError, DbPool};

/// The order with its history, as stored.
pub(super) async fn get(pool: &DbPool, order_id: Uuid) -> Result<Option<Order>, DbError> {
    run_blocking(pool, move |c| order_store::find(c, order_id)).await
}

/// A customer's orders, newest first.
pub(super) async fn of_customer(pool: &DbPool, customer_id: String) -> Result<Vec<Order>, DbError> {
    run_blocking(pool, move |c| {
        order_store::by_customer(c, &customer_id, 100)
    })
    .await
}

/// A customer's notifications, newest first.
pub(super) async fn notifications(
    pool: &DbPool,
    customer_id: String,
) -> Result<Vec<NotificationRecord>, DbError> {
    run_blocking(pool, move |c| {
        order_store::notifications_of(c, &customer_id, 100)
    })
    .await
}
