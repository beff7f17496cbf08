//! Who may call what (API.md), in one place: handlers name what they need in their arguments
//! and never compare ids by hand.
//!
//! - [`Admin`]: the admin token (catalog and inventory writes, dead letters).
//! - [`Caller`]: a customer's verified token, or the admin token acting as support staff; 401
//!   otherwise. A write (any method but GET/HEAD) by a customer spends from that customer's
//!   rate limit here. [`Caller::acting_for`] turns a body's `customer_id` into the customer the
//!   request acts for (403 when a customer names someone else).
//! - [`CustomerScope`], [`OwnedOrder`], [`OwnedCart`]: the customer, order or cart in the path,
//!   only when it is the caller's (or the caller is staff); anything else is 404, so ids cannot
//!   be probed.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;

use actix_web::{dev::Payload, http::header, http::Method, web, FromRequest, HttpRequest};
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::active::ActiveParts;
use crate::auth::{CustomerKeys, RateLimits};
use crate::domain::cart::CustomerId;
use crate::domain::order::Order;

/// What verifies callers: the customer keys and the per-customer write allowance.
pub struct Gate {
    pub keys: CustomerKeys,
    pub limits: RateLimits,
}

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("the application state is missing".into()))
}

/// The bearer credential of a request, if it has one.
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Present in a handler's arguments when the request carries an admin token. Put it first, so
/// that an unauthenticated request is refused before its body is read.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let admitted = match (state(req), bearer(req)) {
            (Ok(s), Some(given)) => s.config.admin_tokens.accepts(given),
            _ => false,
        };
        ready(if admitted {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        })
    }
}

/// Who is calling a customer route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A customer, from a verified token's `sub`.
    Customer(CustomerId),
    /// Support staff (the admin token): any customer's resources.
    Staff,
}

impl Caller {
    fn identify(req: &HttpRequest) -> Result<Caller, ApiError> {
        let state = state(req)?;
        let token = bearer(req).ok_or(ApiError::Unauthorized)?;
        if state.config.admin_tokens.accepts(token) {
            return Ok(Caller::Staff);
        }
        let customer = state.gate.keys.verify(token).map_err(|e| {
            tracing::info!(error = %e, "customer token refused");
            ApiError::Unauthorized
        })?;
        let write = !matches!(*req.method(), Method::GET | Method::HEAD);
        if write {
            state
                .gate
                .limits
                .spend(customer.as_str())
                .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
        }
        Ok(Caller::Customer(customer))
    }

    /// Whether the caller may reach a resource of `owner`.
    pub fn owns(&self, owner: &str) -> bool {
        match self {
            Caller::Staff => true,
            Caller::Customer(me) => me.as_str() == owner,
        }
    }

    /// The customer a request acts for: the token's `sub` (a body `customer_id` must be the
    /// same, else 403); support staff must name the customer.
    pub fn acting_for(&self, named: Option<&str>) -> Result<CustomerId, ApiError> {
        match (self, named) {
            (Caller::Customer(me), None) => Ok(me.clone()),
            (Caller::Customer(me), Some(named)) if named == me.as_str() => Ok(me.clone()),
            (Caller::Customer(_), Some(_)) => Err(ApiError::Forbidden(
                "customer_id is not the customer of this token".into(),
            )),
            (Caller::Staff, Some(named)) => {
                CustomerId::parse(named).map_err(|e| ApiError::field("customer_id", e))
            }
            (Caller::Staff, None) => Err(ApiError::field(
                "customer_id",
                "is required when support staff act for a customer",
            )),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Caller::identify(req))
    }
}

type Checked<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// The active parts, or the standby's 503.
fn active(req: &HttpRequest) -> Result<Arc<ActiveParts>, ApiError> {
    state(req)?.active().ok_or_else(|| {
        ApiError::unavailable(
            "this instance is a standby (another instance is active, or none is yet); retry",
            1,
        )
    })
}

/// The customer of `/v1/customers/{customer_id}/...` (or `/v1/customers/me/...`): the caller's
/// own; another id is 404.
#[derive(Debug)]
pub struct CustomerScope(pub CustomerId);

impl FromRequest for CustomerScope {
    type Error = ApiError;
    type Future = Ready<Result<CustomerScope, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let unknown = || ApiError::NotFound("unknown customer".into());
        let named = req.match_info().get("customer_id").unwrap_or("me");
        ready(Caller::identify(req).and_then(|caller| {
            match caller {
                Caller::Customer(me) if named == "me" || named == me.as_str() => {
                    Ok(CustomerScope(me))
                }
                Caller::Customer(_) => Err(unknown()),
                Caller::Staff if named == "me" => Err(unknown()),
                Caller::Staff => CustomerId::parse(named)
                    .map(CustomerScope)
                    .map_err(|_| unknown()),
            }
        }))
    }
}

/// The caller, the UUID in path segment `name`, and the active parts — what an ownership check
/// starts from; an id that is not a UUID is the resource's 404 (`unknown`).
fn path_resource(
    req: &HttpRequest,
    name: &str,
    unknown: fn() -> ApiError,
) -> Result<(Caller, Uuid, Arc<ActiveParts>), ApiError> {
    let caller = Caller::identify(req)?;
    let raw = req.match_info().get(name).unwrap_or_default();
    let id = Uuid::parse_str(raw).map_err(|_| unknown())?;
    Ok((caller, id, active(req)?))
}

/// How long an accepted checkout may wait in the queue and still be answered "retry" (503)
/// rather than "unknown" (404).
fn queued_at_most() -> chrono::Duration {
    chrono::Duration::minutes(10)
}

fn unknown_order() -> ApiError {
    ApiError::NotFound("unknown order".into())
}

fn unknown_cart() -> ApiError {
    ApiError::NotFound("unknown cart".into())
}

/// The order of `/v1/orders/{order_id}...`, read once, when it is the caller's; 404 otherwise
/// (503 with `Retry-After` while the caller's accepted order waits in the queue).
pub struct OwnedOrder {
    pub order: Order,
    pub caller: Caller,
}

impl FromRequest for OwnedOrder {
    type Error = ApiError;
    type Future = Checked<OwnedOrder>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = path_resource(req, "order_id", unknown_order);
        Box::pin(async move {
            let (caller, order_id, parts) = checked?;
            match parts.orders.get(order_id).await? {
                Some(order) if caller.owns(&order.customer_id) => Ok(OwnedOrder { order, caller }),
                Some(_) => Err(unknown_order()),
                // Accepted (its key recorded) and still in the queue: the caller's own order
                // is there, only not readable yet — retry, never "unknown". Not for ever: a
                // checkout accepted longer ago than `queued_at_most()` and still no order was
                // dead-lettered (its reason is with the dead letter), and reads as unknown.
                None => match parts.orders.accepted_by(order_id).await? {
                    Some((owner, at))
                        if caller.owns(&owner) && chrono::Utc::now() - at < queued_at_most() =>
                    {
                        Err(ApiError::unavailable(
                            "the order is accepted and waiting to be processed; retry",
                            1,
                        ))
                    }
                    _ => Err(unknown_order()),
                },
            }
        })
    }
}

/// The cart of `/v1/carts/{cart_id}...` when it is the caller's; 404 otherwise.
pub struct OwnedCart {
    pub cart_id: Uuid,
    pub caller: Caller,
}

impl FromRequest for OwnedCart {
    type Error = ApiError;
    type Future = Checked<OwnedCart>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = path_resource(req, "cart_id", unknown_cart);
        Box::pin(async move {
            let (caller, cart_id, parts) = checked?;
            match parts.carts.owner(cart_id).await? {
                Some(owner) if caller.owns(&owner) => Ok(OwnedCart { cart_id, caller }),
                _ => Err(unknown_cart()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_acts_only_for_itself_and_staff_must_name_one() {
        let ana = Caller::Customer(CustomerId::parse("ana").unwrap());
        assert_eq!(ana.acting_for(None).unwrap().as_str(), "ana");
        assert_eq!(ana.acting_for(Some("ana")).unwrap().as_str(), "ana");
        assert!(matches!(
            ana.acting_for(Some("bia")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(ana.owns("ana") && !ana.owns("bia"));
        assert_eq!(
            Caller::Staff.acting_for(Some("bia")).unwrap().as_str(),
            "bia"
        );
        assert!(matches!(
            Caller::Staff.acting_for(None),
            Err(ApiError::Validation(_))
        ));
        assert!(Caller::Staff.owns("anyone"));
    }
}
