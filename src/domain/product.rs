//! Catalog products and the validation of what an admin sends for one.

use serde::{Deserialize, Serialize};

use super::money::MAX_PRICE_CENTS;
use super::validation::text_schema;
use super::{clean_text, FieldErrors, Sku};

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
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "Coffee mug", "category": "kitchen", "tags": ["coffee"], "price_cents": 1990}))]
pub struct ProductInput {
    #[schema(required = true, schema_with = text_schema::<200>)]
    pub name: Option<String>,
    #[schema(required = true, schema_with = text_schema::<100>)]
    pub category: Option<String>,
    /// At most 32; kept lower-cased, each once.
    #[schema(schema_with = tag_list)]
    pub tags: Option<Vec<String>>,
    /// Cents of `currency`.
    #[schema(required = true, nullable = false, value_type = i64, minimum = 0, maximum = 100_000_000_000_i64)]
    #[serde(default, deserialize_with = "crate::domain::validation::whole")]
    pub price_cents: Option<i64>,
    /// ISO 4217, three capital letters; `BRL` when absent.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    /// Free-form: at most 64 keys, 4 levels deep, 16 KiB as JSON; texts at most 500
    /// characters and keys at most 64, without control characters.
    #[schema(schema_with = attributes_schema)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `attributes`, level by level: what `check_value` accepts (the 16 KiB bound aside).
fn attributes_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let mut schema = ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(MAX_ATTRIBUTES))
        .property_names(Some(key_schema()))
        .additional_properties(Some(attribute_value(MAX_ATTRIBUTE_DEPTH - 1)))
        .build();
    schema.description = Some("Free-form product attributes".into());
    schema
}

fn key_schema() -> utoipa::openapi::schema::Object {
    text_schema::<MAX_ATTRIBUTE_KEY>()
}

/// A value `depth` levels below which nothing may nest.
fn attribute_value(depth: usize) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_ATTRIBUTE_TEXT))
        .pattern(Some(super::validation::OPTIONAL_TEXT_PATTERN));
    let mut one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(text);
    if depth > 0 {
        one_of = one_of
            .item(ArrayBuilder::new().items(utoipa::openapi::RefOr::T(attribute_value(depth - 1))))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property_names(Some(key_schema()))
                    .additional_properties(Some(attribute_value(depth - 1))),
            );
    }
    one_of.build().into()
}

/// `tags`: an array of at most 32 stored texts of at most 50 characters.
fn tag_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(text_schema::<MAX_TAG>())
        .max_items(Some(MAX_TAGS))
        .build()
}

const MAX_NAME: usize = 200;
const MAX_CATEGORY: usize = 100;
const MAX_TAGS: usize = 32;
const MAX_TAG: usize = 50;
/// Attributes: at most this many keys, keys and string values this long, this deep, and this
/// many bytes once encoded.
const MAX_ATTRIBUTES: usize = 64;
const MAX_ATTRIBUTE_KEY: usize = 64;
const MAX_ATTRIBUTE_TEXT: usize = 500;
const MAX_ATTRIBUTE_DEPTH: usize = 4;
const MAX_ATTRIBUTE_BYTES: usize = 16 * 1024;

/// Checks one attribute value (recursively): storable strings and keys, bounded depth.
fn check_value(errors: &mut FieldErrors, field: &str, value: &serde_json::Value, depth: usize) {
    use serde_json::Value;
    if depth > MAX_ATTRIBUTE_DEPTH {
        errors.add(
            field,
            format!("nests deeper than {MAX_ATTRIBUTE_DEPTH} levels"),
        );
        return;
    }
    match value {
        Value::String(text) => {
            if text.chars().any(char::is_control) {
                errors.add(field, "must not contain control characters");
            } else if text.chars().count() > MAX_ATTRIBUTE_TEXT {
                errors.add(
                    field,
                    format!("must be at most {MAX_ATTRIBUTE_TEXT} characters"),
                );
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_value(errors, &format!("{field}.{i}"), item, depth + 1);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                match clean_text(key, MAX_ATTRIBUTE_KEY) {
                    Ok(_) => check_value(errors, &format!("{field}.{key}"), item, depth + 1),
                    Err(e) => errors.add(field, format!("a key {e}")),
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

impl ProductInput {
    /// Checks every field and returns the product, or all that is wrong at once.
    pub fn validate(self, sku: Sku) -> Result<Product, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.text("name", self.name.as_deref(), MAX_NAME);
        let category = errors.text("category", self.category.as_deref(), MAX_CATEGORY);
        let mut tags = Vec::new();
        let raw_tags = self.tags.unwrap_or_default();
        if raw_tags.len() > MAX_TAGS {
            errors.add("tags", format!("at most {MAX_TAGS} tags"));
        }
        for (i, tag) in raw_tags.iter().enumerate() {
            match clean_text(tag, MAX_TAG) {
                Ok(tag) => {
                    let tag = tag.to_lowercase();
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
                Err(e) => errors.add(&format!("tags.{i}"), e),
            }
        }
        let price_cents = match self.price_cents {
            None => {
                errors.add("price_cents", "is required");
                0
            }
            Some(p) if !(0..=MAX_PRICE_CENTS).contains(&p) => {
                errors.add(
                    "price_cents",
                    format!("must be from 0 to {MAX_PRICE_CENTS}"),
                );
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
        let attributes = serde_json::Value::Object(self.attributes.unwrap_or_default());
        check_value(&mut errors, "attributes", &attributes, 0);
        if let serde_json::Value::Object(map) = &attributes {
            if map.len() > MAX_ATTRIBUTES {
                errors.add("attributes", format!("at most {MAX_ATTRIBUTES} keys"));
            }
        }
        if attributes.to_string().len() > MAX_ATTRIBUTE_BYTES {
            errors.add(
                "attributes",
                format!("must be at most {MAX_ATTRIBUTE_BYTES} bytes as JSON"),
            );
        }
        let serde_json::Value::Object(attributes) = attributes else {
            return Err(errors);
        };
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
        let mut attributes = serde_json::Map::new();
        attributes.insert("color".into(), serde_json::json!("red\u{0}"));
        attributes.insert(
            "size".into(),
            serde_json::json!({"nested": ["ok", "\u{1b}[31m"]}),
        );
        let errors = ProductInput {
            name: Some("Mug\u{7}".into()),
            category: Some("kitchen".into()),
            tags: Some(vec!["a\u{0}".into()]),
            price_cents: Some(MAX_PRICE_CENTS + 1),
            attributes: Some(attributes),
            ..Default::default()
        }
        .validate(sku())
        .unwrap_err();
        for field in [
            "name",
            "tags.0",
            "price_cents",
            "attributes.color",
            "attributes.size.nested.1",
        ] {
            assert!(
                errors.get(field).is_some(),
                "{field} not reported: {errors:?}"
            );
        }
    }
}
