//! `Sku`: a stock-keeping unit code, parsed once at the boundary.

use std::fmt;
use std::sync::Arc;

/// Longest SKU code accepted.
pub const MAX_SKU_LEN: usize = 64;

/// A valid SKU code: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
///
/// Cheap to clone (shared string), because the engine passes SKUs between threads on every change.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(Arc<str>);

impl Sku {
    /// Parses a SKU code, explaining what is wrong when it is not one.
    pub fn parse(raw: &str) -> Result<Sku, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.len() > MAX_SKU_LEN {
            return Err(format!("must be at most {MAX_SKU_LEN} characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("may only contain letters, digits, '.', '_' and '-'".into());
        }
        Ok(Sku(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sku({})", &*self.0)
    }
}

impl serde::Serialize for Sku {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Sku {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Sku::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI document: the string [`Sku::parse`] accepts.
impl utoipa::PartialSchema for Sku {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(64))
            .pattern(Some("^[A-Za-z0-9._-]{1,64}$"))
            .examples([serde_json::json!("MUG-01")])
            .into()
    }
}

impl utoipa::ToSchema for Sku {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_codes_and_rejects_junk() {
        assert_eq!(Sku::parse("ABC-1.x_2").unwrap().as_str(), "ABC-1.x_2");
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("a b").is_err());
        assert!(Sku::parse("é").is_err());
        assert!(Sku::parse(&"x".repeat(65)).is_err());
        assert!(Sku::parse(&"x".repeat(64)).is_ok());
    }
}
