//! The order state machine (API.md "Orders"):
//!
//! ```text
//! received ──▶ reserved ──▶ scheduled
//!    │            │  └──────▶ failed (payment_declined; stock released)
//!    └──▶ rejected (out_of_stock | stock_conflict)
//! received | reserved | scheduled ──▶ cancelled (stock released)
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::checkout::{DeliveryMethod, Payment};
use super::delivery::DeliverySlot;
use super::payment::PaymentView;
use super::similarity::Suggestion;
use super::Sku;

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

    /// Whether the order ended without its goods: whatever it reserved goes back on sale.
    pub fn releases_stock(&self) -> bool {
        matches!(
            self,
            OrderStatus::Rejected | OrderStatus::Failed | OrderStatus::Cancelled
        )
    }

    /// The notification a customer gets on reaching this status, if any.
    pub fn notification_kind(&self, reason: Option<RejectionReason>) -> Option<&'static str> {
        match (self, reason) {
            (OrderStatus::Scheduled, _) => Some("order_scheduled"),
            (OrderStatus::Failed, Some(RejectionReason::Expired)) => Some("order_expired"),
            (OrderStatus::Failed, _) => Some("payment_declined"),
            (OrderStatus::Cancelled, _) => Some("order_cancelled"),
            (OrderStatus::Rejected, Some(RejectionReason::StockConflict)) => Some("stock_conflict"),
            (OrderStatus::Rejected, Some(RejectionReason::Expired)) => Some("order_expired"),
            (OrderStatus::Rejected, _) => Some("out_of_stock"),
            _ => None,
        }
    }
}

/// Where an order came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `POST /v1/checkout` (the engine's fast path already said the stock was there).
    Http,
    /// A message from another system on `orders.checkout`.
    Queue,
}

impl Origin {
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Http => "http",
            Origin::Queue => "queue",
        }
    }

    pub fn parse(raw: &str) -> Option<Origin> {
        match raw {
            "http" => Some(Origin::Http),
            "queue" => Some(Origin::Queue),
            _ => None,
        }
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderItem {
    pub sku: Sku,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// A line that cannot be served, with what to offer instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShortLine {
    pub sku: Sku,
    pub requested: i64,
    pub available: i64,
    pub suggestions: Vec<Suggestion>,
}

/// Why an order ended without its goods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    /// A line was short when the order was processed (queue orders: no fast path before).
    OutOfStock,
    /// The intake saw the stock, but concurrent orders took it before this one was processed.
    StockConflict,
    /// The cart had already produced an order, or was empty.
    CartUnavailable,
    /// The gateway declined the payment (status `failed`).
    PaymentDeclined,
    /// The order's delivery was lost (dead-lettered, or it never came back) and the order was
    /// driven to a decision without it.
    Expired,
}

impl RejectionReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectionReason::OutOfStock => "out_of_stock",
            RejectionReason::StockConflict => "stock_conflict",
            RejectionReason::CartUnavailable => "cart_unavailable",
            RejectionReason::PaymentDeclined => "payment_declined",
            RejectionReason::Expired => "expired",
        }
    }
}

/// `rejection` of a rejected or failed order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rejection {
    pub reason: RejectionReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub items: Vec<ShortLine>,
}

impl Rejection {
    /// Lines short, with suggestions.
    pub fn short(reason: RejectionReason, items: Vec<ShortLine>) -> Rejection {
        Rejection {
            reason,
            message: None,
            items,
        }
    }

    /// A rejection with a message and no lines.
    pub fn because(reason: RejectionReason, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            message: Some(message.into()),
            items: Vec::new(),
        }
    }

    /// Every suggestion of every line, for the customer's notification.
    pub fn suggestions(&self) -> Vec<Suggestion> {
        self.items
            .iter()
            .flat_map(|i| i.suggestions.iter().cloned())
            .collect()
    }
}

/// An order.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub order_id: Uuid,
    pub customer_id: String,
    pub cart_id: Option<Uuid>,
    pub origin: Origin,
    pub status: OrderStatus,
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub currency: String,
    pub delivery_method: DeliveryMethod,
    /// As stored (a card's token, the full document); views show [`Payment::public_view`].
    pub payment: Payment,
    pub delivery: Option<DeliverySlot>,
    pub rejection: Option<Rejection>,
    pub history: Vec<(OrderStatus, DateTime<Utc>)>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Fingerprint of the request that made it (idempotency).
    pub fingerprint: String,
    /// `false` while an order that ended without its stock may still hold reservations.
    pub settled: bool,
}

impl Order {
    /// `(sku, quantity)` of every line.
    pub fn lines(&self) -> Vec<(Sku, i64)> {
        self.items
            .iter()
            .map(|i| (i.sku.clone(), i.quantity))
            .collect()
    }
}

/// One step of an order's history.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
}

/// The order as API.md shows it (`GET /v1/orders/{id}`, `order.events` bodies): no fingerprint,
/// the payment as [`Payment::public_view`] shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Order, example = json!({
    "order_id": "0b6c4cf4-3a29-5e0c-9d0a-5b0f4fbd8a11", "customer_id": "cust-1", "status": "scheduled",
    "items": [{"sku": "MUG-01", "quantity": 2, "unit_price_cents": 1990}], "total_cents": 3980,
    "currency": "BRL", "delivery_method": "standard",
    "delivery": {"scheduled_for": "2026-12-08", "window": {"from": "08:00", "to": "12:00"}, "carrier": "orderflow-logistics", "tracking_code": "OF-0B6C4CF4"},
    "rejection": null, "payment": {"method": "card", "brand": "visa", "last4": "1111"}, "cart_id": null,
    "history": [{"status": "received", "at": "2026-12-05T10:00:00Z"}, {"status": "reserved", "at": "2026-12-05T10:00:00.120Z"}, {"status": "scheduled", "at": "2026-12-05T10:00:00.140Z"}],
    "created_at": "2026-12-05T10:00:00Z", "updated_at": "2026-12-05T10:00:00.140Z"
}))]
pub struct OrderView<'a> {
    pub order_id: Uuid,
    pub customer_id: &'a str,
    pub status: OrderStatus,
    pub items: &'a [OrderItem],
    pub total_cents: i64,
    pub currency: &'a str,
    pub delivery_method: DeliveryMethod,
    pub delivery: &'a Option<DeliverySlot>,
    pub rejection: &'a Option<Rejection>,
    pub payment: PaymentView<'a>,
    pub cart_id: Option<Uuid>,
    pub history: Vec<HistoryEntry>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// What clients and other systems see of it.
    pub fn view(&self) -> OrderView<'_> {
        OrderView {
            order_id: self.order_id,
            customer_id: &self.customer_id,
            status: self.status,
            items: &self.items,
            total_cents: self.total_cents,
            currency: &self.currency,
            delivery_method: self.delivery_method,
            delivery: &self.delivery,
            rejection: &self.rejection,
            payment: self.payment.public_view(),
            cart_id: self.cart_id,
            history: self
                .history
                .iter()
                .map(|(status, at)| HistoryEntry {
                    status: *status,
                    at: *at,
                })
                .collect(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl Serialize for Order {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(s)
    }
}

/// The reference of an order's reservation in a SKU's change log (unique per SKU, so a
/// redelivery cannot reserve twice). Both the staged path and the one write record it.
pub fn reserve_ref(order_id: Uuid) -> String {
    format!("order:{order_id}:reserve")
}

/// The reference of the release of an order's reservation in a SKU's change log.
pub fn release_ref(order_id: Uuid) -> String {
    format!("order:{order_id}:release")
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
            Rejected.notification_kind(Some(RejectionReason::StockConflict)),
            Some("stock_conflict")
        );
        assert_eq!(
            Rejected.notification_kind(Some(RejectionReason::OutOfStock)),
            Some("out_of_stock")
        );
        assert_eq!(
            Failed.notification_kind(Some(RejectionReason::Expired)),
            Some("order_expired")
        );
        assert_eq!(Scheduled.notification_kind(None), Some("order_scheduled"));
        assert_eq!(Failed.notification_kind(None), Some("payment_declined"));
        assert_eq!(Reserved.notification_kind(None), None);
    }
}
