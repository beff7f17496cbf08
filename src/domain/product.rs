//! Catalog products and the validation of what an admin sends for one.

use serde::{Deserialize, Serialize};

use super::{FieldErrors, Sku};

/// A product in the catalog. Stock lives in the engine, not here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    pub category: String,
    pub tags: Vec<String>,
    pub price_cents: i64,
    pub currency: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// The body of `PUT /v1/products/{sku}` as sent. Fields are optional here so that a missing one
/// is reported as a validation error on that field rather than as an unreadable body. Unknown
/// fields are ignored, so newer clients keep working.
#[derive(Debug, Default, Deserialize)]
pub struct ProductInput {
    pub name: Option<String>,
    pub category: Option<String>,
    pub tags: Option<Vec<String>>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

const MAX_NAME: usize = 200;
const MAX_CATEGORY: usize = 100;
const MAX_TAGS: usize = 32;
const MAX_TAG: usize = 50;

fn text(errors: &mut FieldErrors, field: &str, value: Option<String>, max: usize) -> String {
    match value.map(|v| v.trim().to_owned()) {
        None => {
            errors.add(field, "is required");
            String::new()
        }
        Some(v) if v.is_empty() => {
            errors.add(field, "must not be empty");
            v
        }
        Some(v) if v.chars().count() > max => {
            errors.add(field, format!("must be at most {max} characters"));
            v
        }
        Some(v) => v,
    }
}

impl ProductInput {
    /// Checks every field and returns the product, or all that is wrong at once.
    pub fn validate(self, sku: Sku) -> Result<Product, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = text(&mut errors, "name", self.name, MAX_NAME);
        let category = text(&mut errors, "category", self.category, MAX_CATEGORY);
        let mut tags = Vec::new();
        let raw_tags = self.tags.unwrap_or_default();
        if raw_tags.len() > MAX_TAGS {
            errors.add("tags", format!("at most {MAX_TAGS} tags"));
        }
        for (i, tag) in raw_tags.into_iter().enumerate() {
            let tag = tag.trim().to_lowercase();
            if tag.is_empty() || tag.chars().count() > MAX_TAG {
                errors.add(
                    &format!("tags.{i}"),
                    format!("must be 1 to {MAX_TAG} characters"),
                );
            } else if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        let price_cents = match self.price_cents {
            None => {
                errors.add("price_cents", "is required");
                0
            }
            Some(p) if p < 0 => {
                errors.add("price_cents", "must be >= 0");
                p
            }
            Some(p) => p,
        };
        let currency = self.currency.unwrap_or_else(|| "BRL".to_owned());
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            errors.add(
                "currency",
                "must be an ISO-4217 code of three capital letters",
            );
        }
        let attributes = self.attributes.unwrap_or_default();
        errors.into_result(Product {
            sku,
            name,
            category,
            tags,
            price_cents,
            currency,
            attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku() -> Sku {
        Sku::parse("P-1").unwrap()
    }

    #[test]
    fn valid_product_is_normalised() {
        let p = ProductInput {
            name: Some(" Mug ".into()),
            category: Some("kitchen".into()),
            tags: Some(vec!["Coffee".into(), "coffee".into(), "cup".into()]),
            price_cents: Some(1990),
            ..Default::default()
        }
        .validate(sku())
        .unwrap();
        assert_eq!(p.name, "Mug");
        assert_eq!(p.tags, vec!["coffee", "cup"]);
        assert_eq!(p.currency, "BRL");
        assert!(p.attributes.is_empty());
    }

    #[test]
    fn every_problem_is_reported() {
        let errors = ProductInput {
            name: Some("".into()),
            tags: Some(vec!["".into()]),
            price_cents: Some(-1),
            currency: Some("brl".into()),
            ..Default::default()
        }
        .validate(sku())
        .unwrap_err();
        for field in ["name", "category", "tags.0", "price_cents", "currency"] {
            assert!(errors.get(field).is_some(), "{field} not reported");
        }
    }
}
