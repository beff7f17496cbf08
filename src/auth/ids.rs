//! Order ids no client can compute (API.md, DESIGN.md rule 2).
//!
//! A checkout from the storefront gets a random id when its idempotency key is first recorded
//! (and the id travels in the message). A checkout from another system carries no id: its id is
//! keyed with a secret the server keeps — HMAC-SHA256 over the customer and the key — so a
//! redelivery after a crash finds the same order, while nobody without the secret can derive it.
//! The secret is made once by a migration (random, in PostgreSQL), so every instance derives the
//! same ids.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// The derivation of order ids for checkouts that arrive without one.
#[derive(Clone)]
pub struct OrderIds {
    secret: Vec<u8>,
}

impl std::fmt::Debug for OrderIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderIds([redacted])")
    }
}

impl OrderIds {
    /// The shortest secret accepted.
    pub const MIN_SECRET: usize = 16;

    pub fn new(secret: Vec<u8>) -> Option<OrderIds> {
        (secret.len() >= Self::MIN_SECRET).then_some(OrderIds { secret })
    }

    /// The order id of `customer`'s checkout with idempotency `key` (a UUIDv8: 122 bits of the
    /// HMAC). The customer and the key are length-prefixed, so no two pairs share an input.
    pub fn derive(&self, customer: &str, key: &str) -> Uuid {
        let mut bytes = [0u8; 16];
        // HMAC takes a key of any length.
        if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret) {
            mac.update(b"orderflow/order-id/v1");
            for part in [customer, key] {
                mac.update(&(part.len() as u64).to_be_bytes());
                mac.update(part.as_bytes());
            }
            let digest = mac.finalize().into_bytes();
            for (b, d) in bytes.iter_mut().zip(digest.iter()) {
                *b = *d;
            }
        }
        Uuid::new_v8(bytes)
    }

    /// A keyed digest (hex) of `data` for `purpose`: lets a request with a card be recognised
    /// again (its fingerprint) without anything that reveals the number (PCI DSS 3.5.1: a keyed
    /// cryptographic hash).
    pub fn digest(&self, purpose: &str, data: &str) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret) else {
            return String::new();
        };
        mac.update(b"orderflow/digest/v1");
        for part in [purpose, data] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A fresh random order id (the storefront's checkouts).
    pub fn random() -> Uuid {
        Uuid::new_v4()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_the_secret_the_customer_and_the_key() {
        let ids = OrderIds::new(b"0123456789abcdef0123".to_vec()).unwrap();
        let other = OrderIds::new(b"another-secret-of-20".to_vec()).unwrap();
        let a = ids.derive("ana", "k-1");
        assert_eq!(a, ids.derive("ana", "k-1"), "stable for a redelivery");
        assert_ne!(a, ids.derive("bia", "k-1"), "keys belong to a customer");
        assert_ne!(a, ids.derive("ana", "k-2"));
        assert_ne!(a, other.derive("ana", "k-1"), "the secret is part of it");
        assert_ne!(ids.derive("ab", "c"), ids.derive("a", "bc"));
        assert_eq!(a.get_version_num(), 8);
        assert!(OrderIds::new(b"short".to_vec()).is_none());
        assert!(!format!("{ids:?}").contains("0123"));
    }
}
