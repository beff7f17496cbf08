//! Where the checkout consumer starts an order: created from the delivery — lines from its
//! items or its cart, priced, the payment as kept — or found, written by an earlier delivery.

use super::pipeline::{Request, Start};
use super::writer::{OrderWrite, OrderWritten};
use super::{Deadline, Parts, StepError};
use crate::domain::checkout::LineSource;
use crate::domain::money::total_cents;
use crate::domain::order::{Order, OrderItem, OrderStatus, Rejection, RejectionReason};
use crate::domain::Sku;
use crate::persistence::carts::{self as cart_store, CartError};
use crate::persistence::orders::NewOrderRow;
use crate::persistence::run_blocking;

/// An order's lines and where they leave it.
pub(super) struct Lines {
    lines: Vec<(Sku, i64)>,
    status: OrderStatus,
    rejection: Option<Rejection>,
    cart_id: Option<uuid::Uuid>,
}

/// Creates the order (or finds it).
pub(super) async fn create_or_load(
    p: &Parts,
    request: &Request<'_>,
    order_id: uuid::Uuid,
    deadline: &Deadline,
) -> Result<Start, StepError> {
    let lines = match lines(p, request, order_id, deadline).await? {
        Ok(lines) => lines,
        Err(refused) => return Ok(Start::Refuse(refused)),
    };
    let order = match new_order(p, request, order_id, lines) {
        Ok(order) => order,
        Err(refused) => return Ok(Start::Refuse(refused)),
    };
    let row = NewOrderRow::of(&order, request.key, &request.checkout.address);
    let created = match p
        .records
        .write(OrderWrite::Create(Box::new(row)), deadline)
        .await?
    {
        OrderWritten::Created(created) => created,
        other => return Err(StepError::Refused(format!("internal: {other:?}").into())),
    };
    p.keys
        .forget(request.checkout.customer_id.as_str(), request.key);
    if created {
        p.records.announce(&order);
        return Ok(Start::Order {
            order: Box::new(order),
            fresh: true,
        });
    }
    match deadline.bound(p.records.get(order_id)).await?? {
        Some(existing) if existing.fingerprint == request.fingerprint => Ok(Start::Order {
            order: Box::new(existing),
            fresh: false,
        }),
        Some(_) | None => Ok(Start::Refuse(format!(
            "idempotency key reused with a different request (order {order_id})"
        ))),
    }
}

/// The order as first written: priced from the catalog, the payment as kept. `Err(why)`:
/// it can never be one.
pub(super) fn new_order(
    p: &Parts,
    request: &Request<'_>,
    order_id: uuid::Uuid,
    lines: Lines,
) -> Result<Order, String> {
    let checkout = request.checkout;
    let Lines {
        lines,
        status,
        rejection,
        cart_id,
    } = lines;
    let items: Vec<OrderItem> = lines
        .iter()
        .map(|(sku, q)| OrderItem {
            sku: sku.clone(),
            quantity: *q,
            unit_price_cents: p.catalog.get(sku).map_or(0, |p| p.price_cents),
        })
        .collect();
    let Some(total) = total_cents(items.iter().map(|i| (i.unit_price_cents, i.quantity))) else {
        return Err("the order total does not fit in a 64-bit number of cents".into());
    };
    let currency = lines
        .first()
        .and_then(|(s, _)| p.catalog.get(s))
        .map_or_else(|| "BRL".to_owned(), |p| p.currency.clone());
    let now = p.clock.now();
    Ok(Order {
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
    })
}

/// The order's lines: from the request (every SKU known), or claimed from the cart (one
/// order per cart; a cart that cannot serve it makes the order rejected). `Ok(Err(why))`:
/// the message can never make an order.
pub(super) async fn lines(
    p: &Parts,
    request: &Request<'_>,
    order_id: uuid::Uuid,
    deadline: &Deadline,
) -> Result<Result<Lines, String>, StepError> {
    let checkout = request.checkout;
    // Lines: from the request, or claimed from the cart (one order per cart).
    let mut status = OrderStatus::Received;
    let mut rejection = None;
    let mut cart_id = None;
    let lines: Vec<(Sku, i64)> = match &checkout.lines {
        LineSource::Items(items) => {
            if let Some((sku, _)) = items.iter().find(|(s, _)| p.catalog.get(s).is_none()) {
                return Ok(Err(format!("unknown sku {sku}")));
            }
            items.clone()
        }
        LineSource::Cart(id) => {
            let (id, customer) = (*id, checkout.customer_id.as_str().to_owned());
            cart_id = Some(id);
            let claimed = deadline
                .bound(run_blocking(&p.pool, move |c| {
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
                    return Ok(Err(format!("unknown cart {id} for this customer")))
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
    Ok(Ok(Lines {
        lines,
        status,
        rejection,
        cart_id,
    }))
}
