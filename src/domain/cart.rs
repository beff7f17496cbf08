//! Carts: who owns one, and the validation of a change to one of its lines (from HTTP or from
//! the `carts.events` queue — the same rules for both).

use serde::Deserialize;

use super::{FieldErrors, Sku};

/// Most units of one SKU on one cart line or order line.
pub const MAX_LINE_QUANTITY: i64 = 100;

/// A customer id: 1 to 64 printable characters without spaces (UUIDs in practice).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomerId(String);

impl CustomerId {
    pub fn parse(raw: &str) -> Result<CustomerId, String> {
        if raw.is_empty() || raw.chars().count() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        Ok(CustomerId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a cart is: open for changes, or ordered (it produced its one order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CartStatus {
    Open,
    Ordered,
}

impl CartStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CartStatus::Open => "open",
            CartStatus::Ordered => "ordered",
        }
    }
}

/// The column's text (the schema's check admits only these).
impl TryFrom<String> for CartStatus {
    type Error = String;

    fn try_from(raw: String) -> Result<CartStatus, String> {
        match raw.as_str() {
            "open" => Ok(CartStatus::Open),
            "ordered" => Ok(CartStatus::Ordered),
            _ => Err(format!("cart status {raw:?}")),
        }
    }
}

/// What a change does to a cart line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineChange {
    /// The line holds exactly this quantity (added or replaced).
    Set(i64),
    /// The line is removed.
    Remove,
}

/// A customer id as [`CustomerId::parse`] accepts it: 1 to 64 characters, no white space or
/// control characters (JSON Schema, ECMA-262).
pub const CUSTOMER_ID_PATTERN: &str = "^[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]{1,64}$";

/// `customer_id` in a body: absent (`null`: the token's customer) or a customer id.
pub fn customer_id_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let mut schema = ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some(CUSTOMER_ID_PATTERN))
        .build();
    schema.description = Some(
        "The customer: a customer token's own `sub` (or absent); support staff must name one"
            .into(),
    );
    schema
}

/// Body of `PUT /v1/carts/{cart_id}/items/{sku}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"quantity": 2, "added_to_cart": true}))]
pub struct CartItemInput {
    /// 1 to 100; required when `added_to_cart` is true.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "crate::domain::validation::whole")]
    pub quantity: Option<i64>,
    /// `true` sets the line to `quantity`; `false` removes it.
    #[schema(required = true, value_type = bool)]
    pub added_to_cart: Option<bool>,
}

impl CartItemInput {
    pub fn validate(&self) -> Result<LineChange, FieldErrors> {
        let mut errors = FieldErrors::new();
        match self.quantity {
            Some(q) if q < 1 => errors.add("quantity", "must be >= 1"),
            Some(q) if q > MAX_LINE_QUANTITY => {
                errors.add("quantity", format!("must be at most {MAX_LINE_QUANTITY}"))
            }
            _ => {}
        }
        let change = match (self.added_to_cart, self.quantity) {
            (None, _) => {
                errors.add("added_to_cart", "is required");
                LineChange::Remove
            }
            (Some(false), _) => LineChange::Remove,
            (Some(true), None) => {
                errors.add("quantity", "is required");
                LineChange::Remove
            }
            (Some(true), Some(q)) => LineChange::Set(q),
        };
        errors.into_result(change)
    }
}

/// A message on `carts.events`: `{"cart_id","customer_id","sku","quantity","added_to_cart"}`.
#[derive(Debug, Default, Deserialize)]
pub struct CartEvent {
    pub cart_id: Option<String>,
    pub customer_id: Option<String>,
    pub sku: Option<String>,
    pub quantity: Option<i64>,
    pub added_to_cart: Option<bool>,
}

/// A validated cart event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartLineUpdate {
    pub cart_id: uuid::Uuid,
    pub customer_id: CustomerId,
    pub sku: Sku,
    pub change: LineChange,
}

impl CartEvent {
    pub fn validate(self) -> Result<CartLineUpdate, FieldErrors> {
        let mut errors = FieldErrors::new();
        let cart_id = match self.cart_id.as_deref().map(uuid::Uuid::parse_str) {
            None => {
                errors.add("cart_id", "is required");
                None
            }
            Some(Err(_)) => {
                errors.add("cart_id", "must be a UUID");
                None
            }
            Some(Ok(id)) => Some(id),
        };
        let customer_id = errors.required(
            "customer_id",
            self.customer_id.as_deref(),
            CustomerId::parse,
        );
        let sku = errors.required("sku", self.sku.as_deref(), Sku::parse);
        let line = CartItemInput {
            quantity: self.quantity,
            added_to_cart: self.added_to_cart,
        }
        .validate();
        let change = match line {
            Ok(c) => Some(c),
            Err(e) => {
                for (field, messages) in e.iter() {
                    for m in messages {
                        errors.add(field, m.clone());
                    }
                }
                None
            }
        };
        match (cart_id, customer_id, sku, change) {
            (Some(cart_id), Some(customer_id), Some(sku), Some(change)) if errors.is_empty() => {
                Ok(CartLineUpdate {
                    cart_id,
                    customer_id,
                    sku,
                    change,
                })
            }
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_changes() {
        let set = CartItemInput {
            quantity: Some(3),
            added_to_cart: Some(true),
        };
        assert_eq!(set.validate(), Ok(LineChange::Set(3)));
        let remove = CartItemInput {
            quantity: None,
            added_to_cart: Some(false),
        };
        assert_eq!(remove.validate(), Ok(LineChange::Remove));
        for (q, added) in [
            (Some(0), Some(true)),
            (None, Some(true)),
            (Some(101), Some(true)),
            (Some(1), None),
        ] {
            let input = CartItemInput {
                quantity: q,
                added_to_cart: added,
            };
            assert!(input.validate().is_err(), "{q:?} {added:?}");
        }
    }

    #[test]
    fn events_are_validated_like_http() {
        let ok = CartEvent {
            cart_id: Some("6f0c1c2e-9a43-4a49-9a40-3e3f0c6b9a11".into()),
            customer_id: Some("c-1".into()),
            sku: Some("MUG-1".into()),
            quantity: Some(2),
            added_to_cart: Some(true),
        }
        .validate()
        .unwrap();
        assert_eq!(ok.change, LineChange::Set(2));
        let bad = CartEvent {
            cart_id: Some("nope".into()),
            quantity: Some(0),
            added_to_cart: Some(true),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        for f in ["cart_id", "customer_id", "sku", "quantity"] {
            assert!(bad.get(f).is_some(), "{f}");
        }
    }
}
