//! `POST /v1/sandbox/card-tokens`: the sandbox gateway's browser tokenization (API.md). A
//! storefront's page sends the card here (as it would to a real gateway's script) and gives
//! orderflow only the token. Public, like a gateway's tokenization endpoint; its tokens approve
//! or decline like the cards they stand for.

use actix_web::{web, HttpResponse};

#[allow(unused_imports)]
use super::openapi::ErrorBody;
use super::{Active, ApiError};
use crate::domain::checkout::{CardInput, Payment};
use crate::domain::validation::Object;
use crate::domain::FieldErrors;

/// A card as the gateway tokenized it: what a checkout's `payment.card_token` takes.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"card_token": "tok_sandbox_visa_1111_122030_a_3f1c9a0b7d2e4f60", "brand": "visa", "last4": "1111", "exp_month": 12, "exp_year": 2030}))]
pub struct CardToken {
    card_token: String,
    brand: String,
    last4: String,
    exp_month: u32,
    exp_year: i32,
}

/// `POST /v1/sandbox/card-tokens`.
#[utoipa::path(post, path = "/v1/sandbox/card-tokens", tag = "payments", request_body = CardInput, responses((status = 201, description = "The card's token", body = CardToken), (status = 400, description = "Not JSON or not the expected shape", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not application/json", body = ErrorBody), (status = 422, description = "Validation failed (Luhn, expiry, CVV)", body = ErrorBody), (status = 503, description = "Unavailable, with `Retry-After`", body = ErrorBody)))]
pub async fn card_tokens(
    state: Active,
    body: web::Json<Object<CardInput>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let mut errors = FieldErrors::new();
    let card = body.validate(&mut errors, state.orders.today(), "");
    let Some(card) = card else {
        return Err(ApiError::Validation(errors));
    };
    match state.orders.tokenize(&card).await? {
        Payment::Card {
            card_token,
            brand,
            last4,
            exp_month,
            exp_year,
        } => Ok(HttpResponse::Created().json(CardToken {
            card_token,
            brand,
            last4,
            exp_month,
            exp_year,
        })),
        _ => Err(ApiError::Internal(
            "the gateway answered a card with something else".into(),
        )),
    }
}
