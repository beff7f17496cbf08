//! Who is calling (DESIGN.md rule 9): verified customer identity, the admin (support staff)
//! tokens, per-customer rate limits, and the keyed derivation that keeps order ids out of
//! clients' reach. Plain types with no actix in them; `http::auth` turns them into extractors.
//!
//! - [`customer`]: JWT bearer tokens (HS256 with `AUTH_JWT_SECRET`; RS256/ES256/EdDSA with a key
//!   file that is re-read when it changes), pinned algorithms, `exp` required, `iss`/`aud` when
//!   configured; `sub` is the customer.
//! - [`admin`]: `ADMIN_TOKEN`/`ADMIN_TOKENS`, compared in constant time.
//! - [`limits`]: a token bucket per customer for writes.
//! - [`ids`]: order ids keyed with a secret the server keeps.

pub mod admin;
pub mod customer;
pub mod ids;
pub mod limits;

pub use admin::AdminTokens;
pub use customer::{AuthError, CustomerKeys, KeySettings};
pub use ids::OrderIds;
pub use limits::{RateLimits, RateSettings};

/// A secret from the configuration: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}
