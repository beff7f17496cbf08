//! The canonical JSON of a request body and its fingerprint: what an idempotency key is
//! compared on, at intake and in the consumer, and what is stored with the key.

use serde::Serialize;

/// A stable fingerprint of a request body: FNV-1a over its canonical JSON. Canonical because
/// `serde_json::Value` keeps object keys sorted (the crate is built without `preserve_order`) and
/// writes numbers and strings one way; [`write_canonical`] spells that out.
pub fn fingerprint(body: &serde_json::Value) -> String {
    let mut out = Vec::with_capacity(512);
    write_canonical(&mut out, body);
    fingerprint_of(&out)
}

/// The fingerprint of a body already in canonical JSON (as
/// [`super::checkout::Checkout::write_canonical`] writes it).
pub fn fingerprint_of(canonical: &[u8]) -> String {
    format!("{:016x}", super::fnv1a(canonical.iter().copied()))
}

/// The canonical JSON of `value` — object keys in sorted order, no whitespace, whatever order
/// they came in — written into one buffer: no string per node (the consumer's fingerprint of a
/// checkout from another system; intake's payments).
pub fn write_canonical(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_plain(out, key);
                out.push(b':');
                write_canonical(out, item);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        other => write_plain(out, other),
    }
}

/// A string, a number or a scalar as serde_json writes it compactly. Writing one into a `Vec`
/// cannot fail.
pub(crate) fn write_plain<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_json(value: &serde_json::Value) -> String {
        let mut out = Vec::new();
        write_canonical(&mut out, value);
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// The canonical form as first written (a string per node): stored fingerprints were made
    /// with it, so the one-buffer writer must give the same bytes for every value.
    fn canonical_json_as_first_written(value: &serde_json::Value) -> String {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let body: Vec<String> = entries
                    .into_iter()
                    .map(|(k, v)| {
                        format!(
                            "{}:{}",
                            Value::String(k.clone()),
                            canonical_json_as_first_written(v)
                        )
                    })
                    .collect();
                format!("{{{}}}", body.join(","))
            }
            Value::Array(items) => {
                let body: Vec<String> = items.iter().map(canonical_json_as_first_written).collect();
                format!("[{}]", body.join(","))
            }
            other => other.to_string(),
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        // Strings heavy in what JSON escapes (quotes, backslashes, control characters) and in
        // what it does not (non-ASCII), for values and keys alike.
        let text = || prop_oneof![any::<String>(), "[\\\\\"\\x00-\\x1f\\x7fa-zé€😀]{0,8}"];
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            text().prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(text(), inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn the_canonical_form_is_byte_for_byte_what_stored_fingerprints_were_made_with(
            value in json_value()
        ) {
            proptest::prop_assert_eq!(canonical_json(&value), canonical_json_as_first_written(&value));
        }
    }

    #[test]
    fn fingerprints_do_not_depend_on_key_order() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"é"}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
        let c: serde_json::Value =
            serde_json::from_str(r#"{"b":2,"a":{"y":[1,2],"x":"é"}}"#).unwrap();
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
