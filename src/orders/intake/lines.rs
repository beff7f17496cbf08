//! The fast path of intake: the lines a checkout asks for (the catalog's, or its cart's), their
//! total, and the engine's snapshot of the stock — what refuses a checkout at the door before
//! anything of it is recorded.

use super::{Intake, IntakeError};
use crate::domain::checkout::{Checkout, LineSource};
use crate::domain::money::total_cents;
use crate::domain::{FieldErrors, Sku};
use crate::orders::{Deadline, StepError};
use crate::persistence::carts as cart_store;
use crate::persistence::run_blocking;

impl Intake {
    /// The fast path: the lines (a cart's read), their total, and the engine's snapshot of the
    /// stock — a short line is refused now, with suggestions.
    pub(super) async fn fast_path(
        &self,
        checkout: &Checkout,
        deadline: &Deadline,
    ) -> Result<(), IntakeError> {
        let lines = self.intake_lines(checkout, deadline).await?;
        let prices = lines.iter().map(|(sku, q)| {
            let price = self.p.catalog.get(sku).map_or(0, |p| p.price_cents);
            (price, *q)
        });
        if total_cents(prices).is_none() {
            return Err(IntakeError::Validation(FieldErrors::single(
                "items",
                "the order total does not fit in a 64-bit number of cents",
            )));
        }
        let short = self.p.stock.short_lines(&lines);
        if !short.is_empty() {
            return Err(IntakeError::OutOfStock(short));
        }
        Ok(())
    }

    /// The lines a checkout asks for, checked against the catalog (and the cart).
    async fn intake_lines(
        &self,
        checkout: &Checkout,
        deadline: &Deadline,
    ) -> Result<Vec<(Sku, i64)>, IntakeError> {
        match &checkout.lines {
            LineSource::Items(items) => {
                let mut errors = FieldErrors::new();
                for (i, (sku, _)) in items.iter().enumerate() {
                    if self.p.catalog.get(sku).is_none() {
                        errors.add(&format!("items.{i}.sku"), "unknown sku");
                    }
                }
                errors
                    .into_result(items.clone())
                    .map_err(IntakeError::Validation)
            }
            LineSource::Cart(cart_id) => {
                let cart_id = *cart_id;
                let found = deadline
                    .bound(run_blocking(&self.p.pool, move |c| {
                        cart_store::find_with_lines(c, cart_id)
                    }))
                    .await?
                    .map_err(StepError::from)?;
                let (cart, lines) = found.ok_or(IntakeError::UnknownCart)?;
                if cart.customer_id != checkout.customer_id.as_str() {
                    return Err(IntakeError::UnknownCart);
                }
                if let Some(order) = cart.order_id {
                    return Err(IntakeError::CartOrdered(order));
                }
                if lines.is_empty() {
                    return Err(IntakeError::Validation(FieldErrors::single(
                        "cart_id",
                        "the cart is empty",
                    )));
                }
                Ok(lines
                    .into_iter()
                    .filter_map(|(s, q)| Some((Sku::parse(&s).ok()?, q)))
                    .collect())
            }
        }
    }
}
