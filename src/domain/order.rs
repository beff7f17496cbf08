//! The order state machine (API.md "Orders"):
//!
//! ```text
//! received ──▶ reserved ──▶ scheduled
//!    │            │  └──────▶ failed (payment_declined; stock released)
//!    └──▶ rejected (out_of_stock | stock_conflict)
//! received | reserved | scheduled ──▶ cancelled (stock released)
//! ```

use serde::{Deserialize, Serialize};

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Received,
    Reserved,
    Scheduled,
    Rejected,
    Failed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Received => "received",
            OrderStatus::Reserved => "reserved",
            OrderStatus::Scheduled => "scheduled",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Failed => "failed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<OrderStatus> {
        Some(match raw {
            "received" => OrderStatus::Received,
            "reserved" => OrderStatus::Reserved,
            "scheduled" => OrderStatus::Scheduled,
            "rejected" => OrderStatus::Rejected,
            "failed" => OrderStatus::Failed,
            "cancelled" => OrderStatus::Cancelled,
            _ => return None,
        })
    }

    /// Decided: the pipeline has nothing more to do (a scheduled order may still be cancelled
    /// by the customer, but it waits for nothing).
    pub fn is_decided(&self) -> bool {
        !matches!(self, OrderStatus::Received | OrderStatus::Reserved)
    }

    /// Whether this order holds reserved stock.
    pub fn holds_stock(&self) -> bool {
        matches!(self, OrderStatus::Reserved | OrderStatus::Scheduled)
    }

    /// Whether the state machine allows `self → next`.
    pub fn can_become(&self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Received, Reserved)
                | (Received, Rejected)
                | (Reserved, Scheduled)
                | (Reserved, Failed)
                | (Received, Cancelled)
                | (Reserved, Cancelled)
                | (Scheduled, Cancelled)
        )
    }

    /// The notification a customer gets on reaching this status, if any.
    pub fn notification_kind(&self, reason: Option<&str>) -> Option<&'static str> {
        match self {
            OrderStatus::Scheduled => Some("order_scheduled"),
            OrderStatus::Failed => Some("payment_declined"),
            OrderStatus::Cancelled => Some("order_cancelled"),
            OrderStatus::Rejected => Some(if reason == Some("stock_conflict") {
                "stock_conflict"
            } else {
                "out_of_stock"
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        let all = [Received, Reserved, Scheduled, Rejected, Failed, Cancelled];
        let allowed: Vec<(OrderStatus, OrderStatus)> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Received, Reserved),
                (Received, Rejected),
                (Received, Cancelled),
                (Reserved, Scheduled),
                (Reserved, Failed),
                (Reserved, Cancelled),
                (Scheduled, Cancelled),
            ]
        );
        for terminal in [Rejected, Failed, Cancelled] {
            assert!(terminal.is_decided());
            assert!(all.iter().all(|n| !terminal.can_become(*n)));
        }
        assert!(!Received.is_decided() && !Reserved.is_decided() && Scheduled.is_decided());
        for s in all {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn notifications_by_outcome() {
        assert_eq!(
            Rejected.notification_kind(Some("stock_conflict")),
            Some("stock_conflict")
        );
        assert_eq!(
            Rejected.notification_kind(Some("out_of_stock")),
            Some("out_of_stock")
        );
        assert_eq!(Scheduled.notification_kind(None), Some("order_scheduled"));
        assert_eq!(Failed.notification_kind(None), Some("payment_declined"));
        assert_eq!(Reserved.notification_kind(None), None);
    }
}
