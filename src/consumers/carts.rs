//! `carts.events`: `{"cart_id","customer_id","sku","quantity","added_to_cart"}` from other
//! systems, applied like `PUT /v1/carts/{cart_id}/items/{sku}` (setting a line is idempotent).

use std::time::{Duration, Instant};

use super::parse;
use crate::carts::CartService;
use crate::domain::cart::CartEvent;
use crate::messaging::consumer::{Message, Outcome};

pub async fn handle(carts: &CartService, message: Message, retry_window: Duration) -> Outcome {
    let event: CartEvent = match parse(&message) {
        Ok(e) => e,
        Err(outcome) => return outcome,
    };
    let update = match event.validate() {
        Ok(u) => u,
        Err(fields) => {
            return Outcome::DeadLetter(format!("invalid cart event: {}", fields.summary()))
        }
    };
    let started = Instant::now();
    loop {
        let result = carts
            .change_line(
                update.cart_id,
                update.sku.clone(),
                update.change,
                Some(update.customer_id.clone()),
            )
            .await;
        match result {
            Ok(_) => return Outcome::Ack,
            Err(e) if e.is_transient() => {
                if started.elapsed() > retry_window {
                    return Outcome::Retry;
                }
                tracing::warn!(error = %e, "cart event waits for the database");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Outcome::DeadLetter(format!("cart event refused: {e}")),
        }
    }
}
