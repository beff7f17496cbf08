//! A delivery of `orders.checkout` read: JSON, no card data, a checkout, a key, valid when it
//! was accepted — or the outcome that ends it here (dead-lettered with the reason, never
//! retried: it would be read the same way again).

use chrono::{DateTime, Utc};

use super::payment::PaymentProblem;
use crate::domain::card_data;
use crate::domain::checkout::{Checkout, CheckoutInput, PaymentRequest};
use crate::domain::clock;
use crate::domain::parse_key;
use crate::domain::validation::Object;
use crate::messaging::consumer::{Message, Outcome};

/// A delivery read and validated: its body (kept for the fingerprint), the checkout, its key and
/// when it was judged.
pub(super) struct Parsed {
    pub body: serde_json::Value,
    pub checkout: Checkout,
    pub key: String,
    pub judged_at: DateTime<Utc>,
}

/// A payment that cannot be kept: a refused or expired token is the message's permanent
/// failure; a gateway away is transient.
pub(super) fn payment_outcome(problem: PaymentProblem) -> Outcome {
    match problem {
        PaymentProblem::Refused(why) => {
            Outcome::DeadLetter(format!("invalid checkout: payment.card_token: {why}"))
        }
        PaymentProblem::Expired => {
            Outcome::DeadLetter("invalid checkout: payment.card_token: the card has expired".into())
        }
        PaymentProblem::Unavailable(why) => {
            tracing::warn!(error = %why, "the payment gateway is unavailable; handing the checkout back");
            Outcome::Retry
        }
    }
}

/// The delivery read and validated, or the outcome that ends it here.
pub(super) fn parse(message: &Message, now: DateTime<Utc>) -> Result<Parsed, Outcome> {
    let body: serde_json::Value = serde_json::from_slice(&message.data)
        .map_err(|e| Outcome::DeadLetter(format!("body is not JSON: {e}")))?;
    // Card data never rests on a queue: only tokens may come this way (API.md). The dead
    // letter is a copy without it.
    if card_data::carried(&body) {
        return Err(Outcome::DeadLetterRedacted {
            reason: "card_data_refused: a checkout on a queue must carry a card_token, never a card number or security code".into(),
            body: card_data::redacted(&body),
        });
    }
    // Read from the tree (no copy of it): the tree stays for the fingerprint.
    let Object(input) = <Object<CheckoutInput> as serde::Deserialize>::deserialize(&body)
        .map_err(|e| Outcome::DeadLetter(format!("body is not a checkout: {e}")))?;
    let key = match message.message_id.as_deref().map(parse_key) {
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            return Err(Outcome::DeadLetter(format!(
                "message_id (the idempotency key) {e}"
            )))
        }
        None => {
            return Err(Outcome::DeadLetter(
                "message_id (the idempotency key, 1 to 255 characters) is required".into(),
            ))
        }
    };
    // Validity is judged once, when the checkout was accepted: the publisher's timestamp
    // (orderflow's intake always sets it), else now.
    let judged_at = message
        .timestamp
        .and_then(|t| DateTime::<Utc>::from_timestamp(i64::try_from(t).ok()?, 0))
        .unwrap_or(now);
    let checkout = input
        .validate(clock::year_month(judged_at))
        .map_err(|fields| Outcome::DeadLetter(format!("invalid checkout: {}", fields.summary())))?;
    if let PaymentRequest::Card(_) = &checkout.payment {
        return Err(Outcome::DeadLetterRedacted {
            reason: "card_data_refused".into(),
            body: card_data::redacted(&body),
        });
    }
    Ok(Parsed {
        body,
        checkout,
        key,
        judged_at,
    })
}
