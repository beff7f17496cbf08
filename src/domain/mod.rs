//! The pure domain core: stock ledger, SKUs and products.
//!
//! Nothing here knows about actix, lapin or diesel. Actors, consumers and HTTP handlers are thin
//! shells that feed these types and carry out what they return, so the rules of the business can
//! be tested (and property-tested) without a runtime.

pub mod cart;
pub mod checkout;
pub mod clock;
pub mod delivery;
pub mod documents;
pub mod inventory;
pub mod ledger;
pub mod money;
pub mod order;
pub mod product;
pub mod similarity;
pub mod sku;
pub mod validation;

pub use ledger::{Ledger, LedgerError, OnHandEffect, StockChange, StockLevel, StockOp};
pub use product::{Product, ProductInput};
pub use sku::Sku;
pub use validation::{clean_text, parse_key, FieldErrors};
