//! Where the checkout consumer starts an order: created from the delivery — lines from its
//! items or its cart, priced, the payment as kept — or found, written by an earlier delivery.

use super::pipeline::{Request, Start};
use super::writer::{OrderWrite, OrderWritten};
use super::{Deadline, OrderService, StepError};
use crate::domain::checkout::LineSource;
use crate::domain::money::total_cents;
use crate::domain::order::{Order, OrderItem, OrderStatus, Rejection, RejectionReason};
use crate::domain::Sku;
use crate::persistence::carts::{self as cart_store, CartError};
use crate::persistence::orders::NewOrderRow;
use crate::persistence::run_blocking;

impl OrderService {
    /// Creates the order (or finds it).
    pub(super) async fn create_or_load(
        &self,
        request: &Request<'_>,
        order_id: uuid::Uuid,
        deadline: &Deadline,
    ) -> Result<Start, StepError> {
        let checkout = request.checkout;
        // Lines: from the request, or claimed from the cart (one order per cart).
        let mut status = OrderStatus::Received;
        let mut rejection = None;
        let mut cart_id = None;
        let lines: Vec<(Sku, i64)> = match &checkout.lines {
            LineSource::Items(items) => {
                if let Some((sku, _)) = items
                    .iter()
                    .find(|(s, _)| self.inner.catalog.get(s).is_none())
                {
                    return Ok(Start::Refuse(format!("unknown sku {sku}")));
                }
                items.clone()
            }
            LineSource::Cart(id) => {
                let (id, customer) = (*id, checkout.customer_id.as_str().to_owned());
                cart_id = Some(id);
                let claimed = deadline
                    .bound(run_blocking(&self.inner.pool, move |c| {
                        cart_store::claim(c, id, &customer, order_id)
                    }))
                    .await?;
                match claimed {
                    Ok(lines) => lines
                        .into_iter()
                        .filter_map(|(s, q)| Some((Sku::parse(&s).ok()?, q)))
                        .collect(),
                    Err(CartError::Db(e)) => return Err(e.into()),
                    Err(CartError::NotFound) | Err(CartError::WrongCustomer) => {
                        return Ok(Start::Refuse(format!(
                            "unknown cart {id} for this customer"
                        )))
                    }
                    Err(e @ (CartError::Ordered(_) | CartError::Empty)) => {
                        // Accepted, but the cart cannot serve it: the order is decided as rejected.
                        status = OrderStatus::Rejected;
                        rejection = Some(Rejection::because(
                            RejectionReason::CartUnavailable,
                            e.to_string(),
                        ));
                        Vec::new()
                    }
                }
            }
        };
        let items: Vec<OrderItem> = lines
            .iter()
            .map(|(sku, q)| OrderItem {
                sku: sku.clone(),
                quantity: *q,
                unit_price_cents: self.inner.catalog.get(sku).map_or(0, |p| p.price_cents),
            })
            .collect();
        let Some(total) = total_cents(items.iter().map(|i| (i.unit_price_cents, i.quantity)))
        else {
            return Ok(Start::Refuse(
                "the order total does not fit in a 64-bit number of cents".into(),
            ));
        };
        let currency = lines
            .first()
            .and_then(|(s, _)| self.inner.catalog.get(s))
            .map_or_else(|| "BRL".to_owned(), |p| p.currency.clone());
        let now = self.inner.clock.now();
        let order = Order {
            order_id,
            customer_id: checkout.customer_id.as_str().to_owned(),
            cart_id,
            origin: request.origin,
            status,
            items,
            total_cents: total,
            currency,
            delivery_method: checkout.delivery_method,
            payment: request.payment.clone(),
            delivery: None,
            rejection,
            history: vec![(status, now)],
            created_at: now,
            updated_at: now,
            fingerprint: request.fingerprint.to_owned(),
            settled: true,
        };
        let row = NewOrderRow {
            order_id,
            idempotency_key: request.key.to_owned(),
            request_fingerprint: request.fingerprint.to_owned(),
            customer_id: order.customer_id.clone(),
            cart_id,
            origin: order.origin.as_str().to_owned(),
            status: status.as_str().to_owned(),
            items: serde_json::to_value(&order.items).unwrap_or_default(),
            total_cents: total,
            currency: order.currency.clone(),
            delivery_method: checkout.delivery_method.as_str().to_owned(),
            shipping_address: serde_json::to_value(&checkout.address).unwrap_or_default(),
            payment: serde_json::to_value(request.payment).unwrap_or_default(),
            delivery: None,
            rejection: order
                .rejection
                .as_ref()
                .and_then(|r| serde_json::to_value(r).ok()),
            at: now,
        };
        let created = match self.write(OrderWrite::Create(row), deadline).await? {
            OrderWritten::Created(created) => created,
            other => return Err(StepError::Refused(format!("internal: {other:?}").into())),
        };
        self.forget_published(request);
        if created {
            self.announce(&order);
            return Ok(Start::Order {
                order: Box::new(order),
                fresh: true,
            });
        }
        match deadline.bound(self.get(order_id)).await?? {
            Some(existing) if existing.fingerprint == request.fingerprint => Ok(Start::Order {
                order: Box::new(existing),
                fresh: false,
            }),
            Some(_) | None => Ok(Start::Refuse(format!(
                "idempotency key reused with a different request (order {order_id})"
            ))),
        }
    }
}
