//! Field-level validation: the errors reported to clients as `details.fields`, and the rules every
//! text that may reach storage follows, whichever door it came through (HTTP or a queue).
//!
//! PostgreSQL refuses NUL in `text` and `jsonb`, and control characters in a name or an address
//! are never meant (they are terminal escapes, log forgery, or garbage). So every stored text is
//! trimmed, capped in length and free of control characters before anything else sees it
//! (DESIGN.md rule 7): one bad record must be refused at the door, not inside a batch.

use std::collections::BTreeMap;

/// `{"field.path": ["message", ...]}`, in a stable order.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

/// Longest idempotency key / AMQP `message_id` accepted.
pub const MAX_KEY_LEN: usize = 255;

/// Reads an optional whole number the way JSON Schema counts integers: `2076` and `2076.0` are
/// the same number; `2076.5`, or one out of `T`'s range, is refused as unreadable (400).
pub fn whole<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::Error;
    use serde::Deserialize;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
            .map(|f| f as i64)
    });
    let whole =
        whole.ok_or_else(|| D::Error::custom(format!("expected a whole number, got {n}")))?;
    T::try_from(whole)
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{whole} is out of range")))
}

/// What [`clean_text`] accepts, as a JSON Schema (ECMA-262) pattern: no control character
/// (Unicode `Cc`) and at least one character that is not white space.
pub const TEXT_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// No control character (Unicode `Cc`); blank allowed: an optional text.
pub const OPTIONAL_TEXT_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// A text that may be absent (`null`), and when present is a stored text of at most `MAX`.
pub fn text_or_null_schema<const MAX: usize>() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(MAX))
        .pattern(Some(TEXT_PATTERN))
        .build()
}

/// An optional text ([`FieldErrors::optional_text`]): `null`, blank, or a stored text.
pub fn optional_text_schema<const MAX: usize>() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(MAX))
        .pattern(Some(OPTIONAL_TEXT_PATTERN))
        .build()
}

/// The OpenAPI schema of a stored text of at most `MAX` characters (what [`clean_text`]
/// accepts): the typed contract clients are generated from.
pub fn text_schema<const MAX: usize>() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX))
        .pattern(Some(TEXT_PATTERN))
        .build()
}

/// Checks a text that will be stored: trimmed, not empty, at most `max` characters, and free of
/// control characters (NUL included). Returns the trimmed text or what is wrong with it.
pub fn clean_text(raw: &str, max: usize) -> Result<String, String> {
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let text = raw.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    // As sent, padding included: the limit the OpenAPI document states (`maxLength`).
    if raw.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(text.to_owned())
}

/// An idempotency key (`Idempotency-Key` header, AMQP `message_id`): 1 to 255 characters, no
/// control characters. Not trimmed: a key is compared byte for byte.
pub fn parse_key(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.chars().count() > MAX_KEY_LEN {
        return Err(format!("must be 1 to {MAX_KEY_LEN} characters"));
    }
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(raw.to_owned())
}

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding one error.
    pub fn single(field: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every field with its messages.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Adds every error of `other` (field paths unchanged).
    pub fn extend(&mut self, other: FieldErrors) {
        for (field, messages) in other.0 {
            self.0.entry(field).or_default().extend(messages);
        }
    }

    /// One line for logs and dead-letter reasons: `field: message; …`.
    pub fn summary(&self) -> String {
        self.iter()
            .map(|(f, m)| format!("{f}: {}", m.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn get(&self, field: &str) -> Option<&[String]> {
        self.0.get(field).map(Vec::as_slice)
    }

    /// Parses a required field with `parse`, recording "is required" or the parser's message
    /// under `field` when it fails.
    pub fn required<T>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match raw.map(parse) {
            None => {
                self.add(field, "is required");
                None
            }
            Some(Err(e)) => {
                self.add(field, e);
                None
            }
            Some(Ok(v)) => Some(v),
        }
    }

    /// A required stored text ([`clean_text`]); an empty string (and the error) when it is not.
    pub fn text(&mut self, field: &str, raw: Option<&str>, max: usize) -> String {
        self.required(field, raw, |v| clean_text(v, max))
            .unwrap_or_default()
    }

    /// An optional stored text: absent or blank is `None`, anything else must be clean.
    pub fn optional_text(&mut self, field: &str, raw: Option<&str>, max: usize) -> Option<String> {
        let raw = raw.filter(|v| {
            !v.trim().is_empty() || v.chars().any(char::is_control) || v.chars().count() > max
        })?;
        match clean_text(raw, max) {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e);
                None
            }
        }
    }

    /// `Ok(value)` when nothing was added, the errors otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, FieldErrors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// A request body read as `T` only when it is a JSON object: serde's derived structs also take
/// an array, field by field in order, which no client means (400, as any body of the wrong
/// shape).
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData))
            .map(Object)
    }
}

/// `deserialize_with` of a nested request struct that may be absent or `null`: read only from
/// a JSON object, as [`Object`] reads a body.
pub fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<Object<T>> as serde::Deserialize>::deserialize(d).map(|o| o.map(|Object(t)| t))
}

/// `deserialize_with` of a list of nested request structs that may be absent or `null`: each
/// read only from a JSON object.
pub fn optional_objects<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<Vec<Object<T>>> as serde::Deserialize>::deserialize(d)
        .map(|o| o.map(|v| v.into_iter().map(|Object(t)| t).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_characters_and_nul_are_refused() {
        assert_eq!(
            clean_text("  Rua Augusta ", 50).as_deref(),
            Ok("Rua Augusta")
        );
        for bad in [
            "Rua\u{0}Augusta",
            "bell\u{7}",
            "\u{1b}[31mred",
            "tab\there",
            "a\u{85}b",
        ] {
            assert!(clean_text(bad, 50).is_err(), "{bad:?}");
        }
        assert!(clean_text("   ", 50).is_err());
        assert!(
            clean_text("São Paulo — Centro", 18).is_ok(),
            "counts characters"
        );
        assert!(clean_text(&"x".repeat(51), 50).is_err());
        assert!(parse_key("k-1").is_ok());
        assert!(parse_key("").is_err());
        assert!(parse_key("a\u{0}b").is_err());
        assert!(parse_key(&"k".repeat(256)).is_err());
    }

    proptest! {
        /// Whatever comes in, what comes out is storable: no control character, within the cap,
        /// trimmed and not empty.
        #[test]
        fn whatever_passes_is_storable(raw in any::<String>(), max in 1usize..40) {
            if let Ok(text) = clean_text(&raw, max) {
                prop_assert!(!text.chars().any(char::is_control));
                prop_assert!(!text.contains('\0'));
                prop_assert!(text.chars().count() <= max);
                prop_assert_eq!(text.trim(), text.as_str());
                prop_assert!(!text.is_empty());
            }
            if let Ok(key) = parse_key(&raw) {
                prop_assert!(!key.chars().any(char::is_control));
                prop_assert!((1..=MAX_KEY_LEN).contains(&key.chars().count()));
            }
        }
    }
}
