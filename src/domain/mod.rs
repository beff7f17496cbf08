//! The pure domain core: stock ledger, SKUs and products.
//!
//! Nothing here knows about actix, lapin or diesel. Actors, consumers and HTTP handlers are thin
//! shells that feed these types and carry out what they return, so the rules of the business can
//! be tested (and property-tested) without a runtime.

pub mod canonical;
pub mod card_data;
pub mod cart;
pub mod checkout;
pub mod clock;
pub mod delivery;
pub mod documents;
pub mod flow;
pub mod inventory;
pub mod ledger;
pub mod money;
pub mod order;
pub mod payment;
pub mod product;
pub mod similarity;
pub mod sku;
pub mod validation;

/// FNV-1a over bytes: a stable 64-bit hash (the same on every run and machine), for fingerprints
/// and tracking codes — not for anything that must resist an attacker.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub use ledger::{Ledger, LedgerError, OnHandEffect, StockChange, StockLevel, StockOp};
pub use product::{Product, ProductInput};
pub use sku::Sku;
pub use validation::{clean_text, parse_key, FieldErrors};
