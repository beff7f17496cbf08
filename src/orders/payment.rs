//! The payment-gateway boundary (PCI DSS: the card never rests here). A card typed into a
//! checkout is exchanged for the gateway's token at intake, before anything is published or
//! stored; from then on only the token travels, with the brand, the last 4 and the expiry. A
//! storefront that tokenizes in the browser sends the token itself, and the gateway describes it.
//! Authorization is asked with the token, after the stock is reserved and outside every SKU
//! actor.
//!
//! The sandbox is one implementation (no real gateway is reachable here); a real gateway would
//! be another, behind the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::checkout::{card_expired, Payment, PaymentRequest, RawCard};
use crate::domain::clock::Clock;

/// What the gateway said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Approved { authorization_id: String },
    Declined { reason: String },
}

/// Why the gateway did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The gateway is away: retry later.
    #[error("the payment gateway is unavailable: {0}")]
    Unavailable(String),
    /// It does not know this token (or refused the card): the request cannot succeed.
    #[error("{0}")]
    Refused(String),
}

type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'a>>;

/// A payment gateway. `authorize` must be idempotent per `order_id`: a redelivered order asks
/// again and must get the same answer without charging twice.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Exchanges a typed card for a token: the payment as it may be kept.
    fn tokenize<'a>(&'a self, card: &'a RawCard) -> Answer<'a, Payment>;

    /// The card a token stands for (brand, last 4, expiry), as the gateway knows it.
    fn describe<'a>(&'a self, card_token: &'a str) -> Answer<'a, Payment>;

    fn authorize<'a>(
        &'a self,
        order_id: uuid::Uuid,
        amount_cents: i64,
        currency: &'a str,
        payment: &'a Payment,
    ) -> Answer<'a, Authorization>;

    /// Voids the order's authorization: the hold on the customer's funds is lifted. Idempotent
    /// per `order_id`; voiding an order that holds no authorization is not an error.
    fn void(&self, order_id: uuid::Uuid) -> Answer<'_, ()>;
}

/// Why a checkout's payment cannot be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentProblem {
    /// The gateway refused the card or does not know the token.
    Refused(String),
    /// The card expired before the month the checkout is judged in.
    Expired,
    /// The gateway is away: retry later.
    Unavailable(String),
}

/// The payment gateway as the order service asks it.
#[derive(Clone)]
pub(super) struct Payments {
    gateway: Arc<dyn PaymentGateway>,
    clock: Arc<dyn Clock>,
}

impl Payments {
    pub fn new(gateway: Arc<dyn PaymentGateway>, clock: Arc<dyn Clock>) -> Payments {
        Payments { gateway, clock }
    }

    /// `(year, month)` now, for card expiry at the door.
    pub fn today(&self) -> (i32, u32) {
        crate::domain::clock::year_month(self.clock.now())
    }

    /// Authorizes the order's amount on its payment.
    pub fn authorize<'a>(
        &'a self,
        order_id: uuid::Uuid,
        amount_cents: i64,
        currency: &'a str,
        payment: &'a Payment,
    ) -> Answer<'a, Authorization> {
        self.gateway
            .authorize(order_id, amount_cents, currency, payment)
    }

    /// Voids the order's authorization, if it holds one (an order that ends without its goods
    /// after its payment may have been authorized: a cancel, an expiry, a decision another
    /// attempt or instance made while this one was paying).
    pub async fn void(&self, order_id: uuid::Uuid) -> Result<(), GatewayError> {
        match self.gateway.void(order_id).await {
            Err(GatewayError::Refused(why)) => {
                // Nothing the gateway could void: nothing is held.
                tracing::warn!(%order_id, %why, "the gateway refused to void an authorization");
                Ok(())
            }
            other => other,
        }
    }

    /// The payment as it may be kept, judged in `today` = `(year, month)`: a typed card
    /// exchanged for the gateway's token, a token described by the gateway (and its expiry
    /// checked), pix and boleto as they are. Intake and the consumer both ask here and differ only
    /// in how they answer a problem.
    pub async fn payment_to_keep(
        &self,
        asked: &PaymentRequest,
        today: (i32, u32),
    ) -> Result<Payment, PaymentProblem> {
        let gateway = &self.gateway;
        let answer = match asked {
            PaymentRequest::Ready(p) => return Ok(p.clone()),
            PaymentRequest::Card(card) => gateway.tokenize(card).await,
            PaymentRequest::Token(token) => gateway.describe(token).await,
        };
        let payment = answer.map_err(|e| match e {
            GatewayError::Refused(why) => PaymentProblem::Refused(why),
            GatewayError::Unavailable(why) => PaymentProblem::Unavailable(why),
        })?;
        match &payment {
            Payment::Card {
                exp_month,
                exp_year,
                ..
            } if card_expired((*exp_year, *exp_month), today) => Err(PaymentProblem::Expired),
            _ => Ok(payment),
        }
    }
}

/// Card `4242424242424242` (and any other valid card) is approved, `4000000000000002` is
/// declined; pix and boleto are approved. Its tokens describe themselves
/// (`tok_sandbox_<brand>_<last4>_<MMYYYY>_<a|d>_<random>`), so any instance can read any token
/// and a declining card's token declines. `delay` simulates a gateway's answer time
/// (`SANDBOX_PAYMENT_DELAY_MS`). Authorizations are kept by order id, process-wide, the way a
/// real gateway keeps them outside every instance of the service.
#[derive(Debug, Default, Clone, Copy)]
pub struct SandboxGateway {
    pub delay: std::time::Duration,
}

/// Where an order's authorization stands at the sandbox gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationState {
    /// Funds held for the order.
    Authorized,
    /// The hold was lifted.
    Voided,
}

/// Authorizations the sandbox remembers at most (an arbitrary one is forgotten past this): a
/// sandbox under load for days must not grow without bound.
const SANDBOX_AUTHORIZATIONS_KEPT: usize = 500_000;

/// The sandbox gateway's authorizations (what a real gateway would keep on its side).
fn sandbox_authorizations() -> &'static DashMap<uuid::Uuid, AuthorizationState> {
    static AUTHORIZATIONS: std::sync::OnceLock<DashMap<uuid::Uuid, AuthorizationState>> =
        std::sync::OnceLock::new();
    AUTHORIZATIONS.get_or_init(DashMap::new)
}

pub const DECLINED_CARD: &str = "4000000000000002";

/// 128 random bits as 32 letters `a`–`p`: no run of digits in a token can look like a card
/// number to the scanners that refuse card data.
fn random_letters() -> String {
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .flat_map(|b| [b >> 4, b & 0x0f])
        .map(|nibble| char::from(b'a' + nibble))
        .collect()
}
const SANDBOX_PREFIX: &str = "tok_sandbox_";

impl SandboxGateway {
    /// Where the order's authorization stands at the sandbox (`None`: never authorized).
    pub fn authorization_of(order_id: uuid::Uuid) -> Option<AuthorizationState> {
        sandbox_authorizations().get(&order_id).map(|s| *s)
    }

    /// The token of a card (what the sandbox's tokenization route and intake give out).
    pub fn token_for(card: &RawCard) -> Payment {
        let outcome = if card.number == DECLINED_CARD {
            'd'
        } else {
            'a'
        };
        Payment::Card {
            card_token: format!(
                "{SANDBOX_PREFIX}{}_{}_{:02}{:04}_{outcome}_{}",
                card.brand(),
                card.last4(),
                card.exp_month,
                card.exp_year,
                random_letters()
            ),
            brand: card.brand().to_owned(),
            last4: card.last4().to_owned(),
            exp_month: card.exp_month,
            exp_year: card.exp_year,
        }
    }

    /// A sandbox token read back; `None` when it is not one.
    fn read(token: &str) -> Option<(Payment, bool)> {
        let rest = token.strip_prefix(SANDBOX_PREFIX)?;
        let mut parts = rest.split('_');
        let brand = parts.next()?;
        let last4 = parts.next()?;
        let exp = parts.next()?;
        let declines = match parts.next()? {
            "a" => false,
            "d" => true,
            _ => return None,
        };
        let random = parts.next()?;
        let valid = parts.next().is_none()
            && random.len() == 32
            && random.bytes().all(|b| (b'a'..=b'p').contains(&b))
            && last4.len() == 4
            && last4.bytes().all(|b| b.is_ascii_digit())
            && exp.len() == 6
            && brand.bytes().all(|b| b.is_ascii_lowercase());
        if !valid {
            return None;
        }
        let exp_month: u32 = exp.get(..2)?.parse().ok()?;
        let exp_year: i32 = exp.get(2..)?.parse().ok()?;
        Some((
            Payment::Card {
                card_token: token.to_owned(),
                brand: brand.to_owned(),
                last4: last4.to_owned(),
                exp_month,
                exp_year,
            },
            declines,
        ))
    }

    async fn answer_time(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

impl PaymentGateway for SandboxGateway {
    fn tokenize<'a>(&'a self, card: &'a RawCard) -> Answer<'a, Payment> {
        Box::pin(async move { Ok(SandboxGateway::token_for(card)) })
    }

    fn describe<'a>(&'a self, card_token: &'a str) -> Answer<'a, Payment> {
        Box::pin(async move {
            SandboxGateway::read(card_token)
                .map(|(payment, _)| payment)
                .ok_or_else(|| GatewayError::Refused("unknown card token".into()))
        })
    }

    fn authorize<'a>(
        &'a self,
        order_id: uuid::Uuid,
        _amount_cents: i64,
        _currency: &'a str,
        payment: &'a Payment,
    ) -> Answer<'a, Authorization> {
        Box::pin(async move {
            self.answer_time().await;
            let answer = match payment {
                Payment::Card { card_token, .. } => match SandboxGateway::read(card_token) {
                    Some((_, false)) => Authorization::Approved {
                        authorization_id: format!("sandbox-{}", order_id.simple()),
                    },
                    Some((_, true)) => Authorization::Declined {
                        reason: "card declined by the issuer".into(),
                    },
                    None => Authorization::Declined {
                        reason: "unknown card token".into(),
                    },
                },
                Payment::Pix | Payment::Boleto { .. } => Authorization::Approved {
                    authorization_id: format!("sandbox-{}", order_id.simple()),
                },
            };
            if matches!(answer, Authorization::Approved { .. }) {
                let kept = sandbox_authorizations();
                if kept.len() >= SANDBOX_AUTHORIZATIONS_KEPT {
                    // The iterator's shard guard is gone before the removal takes its own.
                    let forgotten = kept.iter().next().map(|e| *e.key());
                    if let Some(id) = forgotten {
                        kept.remove(&id);
                    }
                }
                kept.insert(order_id, AuthorizationState::Authorized);
            }
            Ok(answer)
        })
    }

    fn void(&self, order_id: uuid::Uuid) -> Answer<'_, ()> {
        Box::pin(async move {
            self.answer_time().await;
            if let Some(mut state) = sandbox_authorizations().get_mut(&order_id) {
                *state = AuthorizationState::Voided;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(number: &str) -> RawCard {
        RawCard {
            number: number.into(),
            holder_name: "Ana".into(),
            exp_month: 7,
            exp_year: 2031,
            cvv: "123".into(),
        }
    }

    #[tokio::test]
    async fn tokens_carry_no_card_number_and_decline_like_their_card() {
        let gw = SandboxGateway::default();
        let approved = gw.tokenize(&card("4242424242424242")).await.unwrap();
        let declined = gw.tokenize(&card(DECLINED_CARD)).await.unwrap();
        for p in [&approved, &declined] {
            let text = serde_json::to_string(p).unwrap();
            assert!(
                !text.contains("42424242") && !text.contains("40000000000"),
                "{text}"
            );
            assert!(!text.contains("123\""), "{text}");
        }
        let Payment::Card { card_token, .. } = &approved else {
            panic!()
        };
        assert_eq!(gw.describe(card_token).await.unwrap(), approved);
        let id = uuid::Uuid::new_v4();
        assert!(matches!(
            gw.authorize(id, 100, "BRL", &approved).await.unwrap(),
            Authorization::Approved { .. }
        ));
        assert_eq!(
            SandboxGateway::authorization_of(id),
            Some(AuthorizationState::Authorized)
        );
        gw.void(id).await.unwrap();
        gw.void(id).await.unwrap();
        assert_eq!(
            SandboxGateway::authorization_of(id),
            Some(AuthorizationState::Voided),
            "voided, and voiding again changes nothing"
        );
        let other = uuid::Uuid::new_v4();
        assert!(matches!(
            gw.authorize(other, 100, "BRL", &declined).await.unwrap(),
            Authorization::Declined { .. }
        ));
        gw.void(other).await.unwrap();
        assert_eq!(
            SandboxGateway::authorization_of(other),
            None,
            "a declined payment holds nothing, and voiding it is no error"
        );
        assert!(gw
            .describe("tok_sandbox_visa_4242_072031_a_short")
            .await
            .is_err());
        assert!(gw.describe("tok_other").await.is_err());
    }
}
