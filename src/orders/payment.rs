//! Payment: the gateway trait and the sandbox API.md describes (no real gateway is reachable).
//! Called after the stock is reserved and outside every SKU actor.

use std::future::Future;
use std::pin::Pin;

use crate::domain::checkout::Payment;

/// What the gateway said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Approved { authorization_id: String },
    Declined { reason: String },
}

/// A payment gateway. Implementations must be idempotent per `order_id`: a redelivered order
/// asks again and must get the same answer without charging twice.
pub trait PaymentGateway: Send + Sync + 'static {
    fn authorize<'a>(
        &'a self,
        order_id: uuid::Uuid,
        amount_cents: i64,
        currency: &'a str,
        payment: &'a Payment,
    ) -> Pin<Box<dyn Future<Output = Result<Authorization, String>> + Send + 'a>>;
}

/// Card `4242424242424242` (and any other valid card) is approved, `4000000000000002` is
/// declined; pix and boleto are approved. `delay` simulates a gateway's answer time
/// (`SANDBOX_PAYMENT_DELAY_MS`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SandboxGateway {
    pub delay: std::time::Duration,
}

pub const DECLINED_CARD: &str = "4000000000000002";

impl PaymentGateway for SandboxGateway {
    fn authorize<'a>(
        &'a self,
        order_id: uuid::Uuid,
        _amount_cents: i64,
        _currency: &'a str,
        payment: &'a Payment,
    ) -> Pin<Box<dyn Future<Output = Result<Authorization, String>> + Send + 'a>> {
        Box::pin(async move {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            Ok(match payment {
                Payment::Card { number, .. } if number == DECLINED_CARD => {
                    Authorization::Declined {
                        reason: "card declined by the issuer".into(),
                    }
                }
                _ => Authorization::Approved {
                    authorization_id: format!("sandbox-{}", order_id.simple()),
                },
            })
        })
    }
}
