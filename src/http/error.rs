//! The API's error type: every non-2xx answer is built here, once, with the body API.md fixes:
//! `{"error": {"code", "message", "details"}}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use crate::carts::CartServiceError;
use crate::domain::FieldErrors;
use crate::engine::{DurabilityError, EngineError};
use crate::orders::{CancelError, IntakeError};
use crate::persistence::carts::CartError;
use crate::persistence::DbError;

/// Every `error.code` an answer can carry (the OpenAPI document lists them; a test checks that
/// every code this file writes is here).
pub const CODES: [&str; 17] = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "unsupported_media_type",
    "validation_failed",
    "idempotency_mismatch",
    "out_of_stock",
    "cart_checked_out",
    "cart_empty",
    "not_cancellable",
    "overloaded",
    "unavailable",
    "internal",
];

/// An error answer of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String, details: Value },
    #[error("a valid bearer token is required for this route")]
    Unauthorized,
    /// A valid credential acting for someone else.
    #[error("{0}")]
    Forbidden(String),
    /// One customer writing faster than its allowance.
    #[error("too many writes from this customer; retry in {retry_after} s")]
    RateLimited { retry_after: u32 },
    #[error("{0}")]
    NotFound(String),
    /// `allow`: the methods the resource answers (the `Allow` header RFC 9110 requires).
    #[error("method not allowed; this resource answers {}", allow.join(", "))]
    MethodNotAllowed { allow: &'static [&'static str] },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    #[error("the request has invalid fields")]
    Validation(FieldErrors),
    /// A 422 with its own code (`idempotency_mismatch`).
    #[error("{message}")]
    Unprocessable {
        code: &'static str,
        message: String,
        details: Value,
    },
    /// A 409 with its own code (`out_of_stock`, `not_cancellable`, `cart_checked_out`, …).
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error("{message}")]
    Overloaded { message: String, retry_after: u32 },
    #[error("{message}")]
    Unavailable { message: String, retry_after: u32 },
    /// A 500: the cause is logged with its chain, never shown to the caller.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            details: json!({}),
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Validation(FieldErrors::single(field, message))
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u32) -> ApiError {
        ApiError::Unavailable {
            message: message.into(),
            retry_after,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Conflict { code, .. } | ApiError::Unprocessable { code, .. } => code,
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::BadRequest { details, .. }
            | ApiError::Conflict { details, .. }
            | ApiError::Unprocessable { details, .. } => details.clone(),
            ApiError::Validation(fields) => json!({ "fields": fields }),
            ApiError::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
            // What went wrong on our side is in the log, under this request id.
            ApiError::Unavailable { .. } | ApiError::Overloaded { .. } | ApiError::Internal(_) => {
                match request_id() {
                    Some(id) => json!({ "request_id": id }),
                    None => json!({}),
                }
            }
            _ => json!({}),
        }
    }

    /// An answer for an engine failure on the given request field.
    pub fn from_engine(e: EngineError, field: &str) -> ApiError {
        match e {
            EngineError::Rejected(reason) => ApiError::field(field, reason.to_string()),
            EngineError::UnknownSku => ApiError::NotFound("unknown sku".into()),
            EngineError::Overloaded => ApiError::Overloaded {
                message: "the stock engine is saturated; retry shortly".into(),
                retry_after: 1,
            },
            EngineError::Unavailable => {
                ApiError::unavailable("the stock engine is restarting this sku; retry", 1)
            }
            EngineError::Store(e) if !e.is_transient() => {
                tracing::error!(error = %e, "the database refused a stock change");
                ApiError::Validation(FieldErrors::single(field, refused_message()))
            }
            EngineError::Store(e) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable("the database is unavailable", 5)
            }
        }
    }

    /// An answer for a change that did not become durable.
    pub fn from_durability(e: DurabilityError) -> ApiError {
        match e {
            DurabilityError::Conflict => ApiError::unavailable(
                "the stored stock disagreed with memory; the sku was reloaded and the change not applied, retry",
                1,
            ),
            DurabilityError::Refused(why) => {
                tracing::error!(error = %why, "the database refused a stock change");
                ApiError::Validation(FieldErrors::single("body", refused_message()))
            }
            DurabilityError::Fenced => ApiError::unavailable(
                "this instance is no longer the active one; retry (the load balancer routes to the active one)",
                1,
            ),
            DurabilityError::Stopped => ApiError::unavailable(
                "the service is shutting down; the change may not have been applied",
                5,
            ),
        }
    }
}

tokio::task_local! {
    /// The id of the request being answered (the tracing span's `request_id`), for error bodies
    /// that point at the log instead of carrying a driver's text.
    pub static REQUEST_ID: String;
}

/// Middleware (inside the tracing logger): runs the request with its id at hand, so an error
/// body can name the id its log lines carry, and returns it as `X-Request-Id`.
pub async fn scope_request_id(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    let id = req
        .extensions()
        .get::<tracing_actix_web::RequestId>()
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), |id| id.to_string());
    let mut res = REQUEST_ID.scope(id.clone(), next.call(req)).await?;
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

/// The current request's id, inside a request.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// What a caller is told when the database refused its request: the reason is in the log only.
fn refused_message() -> String {
    match request_id() {
        Some(id) => format!("the database refused this request (request id {id})"),
        None => "the database refused this request".into(),
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_transient() {
            tracing::warn!(error = %e, "database call failed");
            ApiError::unavailable("the database is unavailable", 5)
        } else {
            // Input gets here only if a validator let it through: say so, as a 422 (API.md).
            tracing::error!(error = %e, "the database refused a request");
            ApiError::Validation(FieldErrors::single("body", refused_message()))
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(Box::new(e))
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            // Names no order: the key's order is only the caller's business when the bodies match.
            IntakeError::Mismatch => ApiError::Unprocessable {
                code: "idempotency_mismatch",
                message: "this Idempotency-Key was already used with a different request".into(),
                details: json!({}),
            },
            IntakeError::Validation(fields) => ApiError::Validation(fields),
            IntakeError::Payment(field, why) => ApiError::field(field, why),
            IntakeError::UnknownCart => ApiError::NotFound("unknown cart".into()),
            IntakeError::CartOrdered(order) => ApiError::Conflict {
                code: "cart_checked_out",
                message: format!("the cart already produced order {order}"),
                details: json!({ "order_id": order }),
            },
            IntakeError::OutOfStock(items) => ApiError::Conflict {
                code: "out_of_stock",
                message: "some items cannot be served; nothing was ordered".into(),
                details: json!({ "items": items }),
            },
            IntakeError::Unavailable(message) => ApiError::unavailable(message, 2),
            IntakeError::Shedding {
                backlog,
                retry_after,
                reason,
            } => ApiError::Overloaded {
                message: format!(
                    "{backlog} checkouts are waiting to be processed ({reason}); retry in {retry_after} s"
                ),
                retry_after,
            },
            IntakeError::Overloaded { retry_after } => ApiError::Overloaded {
                message: "the checkout queue is full; retry shortly".into(),
                retry_after,
            },
        }
    }
}

impl From<CartServiceError> for ApiError {
    fn from(e: CartServiceError) -> Self {
        match e {
            CartServiceError::UnknownSku(sku) => ApiError::NotFound(format!("unknown sku {sku}")),
            CartServiceError::Cart(e) => e.into(),
        }
    }
}

impl From<CartError> for ApiError {
    fn from(e: CartError) -> Self {
        match e {
            // Another customer's cart is not shown to exist.
            CartError::NotFound | CartError::WrongCustomer => {
                ApiError::NotFound("unknown cart".into())
            }
            CartError::Ordered(order) => ApiError::Conflict {
                code: "cart_checked_out",
                message: format!("the cart already produced order {order}"),
                details: serde_json::json!({ "order_id": order }),
            },
            CartError::Empty => ApiError::Conflict {
                code: "cart_empty",
                message: "the cart is empty".into(),
                details: Value::Null,
            },
            CartError::Db(e) => e.into(),
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(fields: FieldErrors) -> Self {
        ApiError::Validation(fields)
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::NotFound => ApiError::NotFound("unknown order".into()),
            CancelError::NotCancellable(status) => ApiError::Conflict {
                code: "not_cancellable",
                message: format!("an order that is {} cannot be cancelled", status.as_str()),
                details: json!({ "status": status }),
            },
            CancelError::Unavailable(m) => ApiError::unavailable(m, 2),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) | ApiError::Unprocessable { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Overloaded { .. } | ApiError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(e) = self {
            tracing::error!(error = %crate::telemetry::error_chain(e.as_ref()), "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::Overloaded { retry_after, .. }
        | ApiError::Unavailable { retry_after, .. }
        | ApiError::RateLimited { retry_after } = self
        {
            response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
        }
        if let ApiError::Unauthorized = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, allow.join(", ")));
        }
        response.json(json!({
            "error": {
                "code": self.code(),
                "message": self.to_string(),
                "details": self.details(),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document's list of codes is every code this file can write, and nothing else.
    #[test]
    fn every_code_written_here_is_in_the_documented_list() {
        let source = include_str!("error.rs");
        let (code, _) = source.split_once("#[cfg(test)]").unwrap_or((source, ""));
        let mut written = std::collections::BTreeSet::new();
        for line in code.lines().map(str::trim) {
            let literal = line
                .strip_prefix("code: \"")
                .or_else(|| line.split_once("=> \"").map(|(_, rest)| rest));
            if let Some(rest) = literal {
                // A code is a snake_case word (a message is not).
                let name = rest.split_once('"').map(|(name, _)| name);
                if let Some(name) =
                    name.filter(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                {
                    written.insert(name);
                }
            }
        }
        let listed: std::collections::BTreeSet<&str> = CODES.into_iter().collect();
        assert_eq!(written, listed);
    }

    /// Issue 19, item 7: a 500 keeps what went wrong as its source (for the log), and says
    /// nothing of it to the caller.
    #[actix_web::test]
    async fn an_internal_error_keeps_its_cause_and_shows_none_of_it() {
        let cause = std::io::Error::other("connection to 10.0.0.7 refused");
        let e = ApiError::Internal(Box::new(cause));
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("connection to 10.0.0.7 refused"));
        let response = e.error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("\"code\":\"internal\""), "{text}");
        assert!(!text.contains("10.0.0.7"), "{text}");
    }
}
