//! Field-level validation errors, reported to clients as `details.fields`.

use std::collections::BTreeMap;

/// `{"field.path": ["message", ...]}`, in a stable order.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

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

    /// `Ok(value)` when nothing was added, the errors otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, FieldErrors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}
