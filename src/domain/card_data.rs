//! Card data where it must not be (PCI DSS 3.3, 3.5): recognising a card number or a CVV in a
//! message, and the redacted copy a dead letter keeps instead.
//!
//! A card number is a run of 13 to 19 digits (spaces or dashes between them allowed) that passes
//! Luhn; a CVV is any field named `cvv`. The checkout consumer refuses both; every dead letter
//! orderflow writes is scrubbed of both, whatever queue it came from.

use serde_json::Value;

use super::documents::{cnpj_valid, cpf_valid, luhn_valid};

/// Whether a checkout message carries a card (a `payment.card` object, a `cvv` anywhere, or a
/// card number in any string).
pub fn carried(body: &Value) -> bool {
    let card = body
        .get("payment")
        .and_then(|p| p.get("card"))
        .is_some_and(|c| !c.is_null());
    card || has_cvv(body) || has_card_number(body)
}

/// Names a card's security code goes by.
const CODE_NAMES: [&str; 8] = [
    "cvv",
    "cvc",
    "cvv2",
    "cvc2",
    "cid",
    "csc",
    "security_code",
    "card_verification",
];

fn is_code_name(key: &str) -> bool {
    CODE_NAMES.iter().any(|n| key.eq_ignore_ascii_case(n))
}

fn has_cvv(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| is_code_name(k) || has_cvv(v)),
        Value::Array(items) => items.iter().any(has_cvv),
        _ => false,
    }
}

/// Fields whose values are identifiers, never free text: a numeric SKU (an EAN-13 passes Luhn
/// one time in ten), a numeric customer id, a cart id, a gateway token.
const IDENTIFIERS: [&str; 5] = ["sku", "customer_id", "cart_id", "card_token", "order_id"];

fn has_card_number(value: &Value) -> bool {
    match value {
        Value::String(s) => text_has_card_number(s),
        // A CNPJ is 14 digits, and one in ten passes Luhn: a valid CPF/CNPJ is a document.
        Value::Object(map) => map.iter().any(|(k, v)| {
            let document =
                k == "document" && v.as_str().is_some_and(|d| cpf_valid(d) || cnpj_valid(d));
            !document && !IDENTIFIERS.contains(&k.as_str()) && has_card_number(v)
        }),
        Value::Array(items) => items.iter().any(has_card_number),
        _ => false,
    }
}

/// `text` as it may be written down — a dead letter's reason, an error message echoing what was
/// sent: unchanged unless it holds a card number; then every digit in it masked (`#`).
pub fn without_card_numbers(text: &str) -> std::borrow::Cow<'_, str> {
    if text_has_card_number(text) {
        std::borrow::Cow::Owned(
            text.chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Whether a text holds a card number: a run of 13–19 digits (single spaces or dashes between
/// digits allowed) that passes Luhn and stands on its own — not glued to letters or other digits
/// on either side (so the digit groups of a UUID or a token are not taken for one).
pub fn text_has_card_number(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let is_sep = |c: char| c == ' ' || c == '-';
    let mut i = 0;
    while i < chars.len() {
        if !at(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
            continue;
        }
        // What stands before the run (through a dash; a space ends a word).
        let before = match i.checked_sub(1).and_then(at) {
            Some('-') => i.checked_sub(2).and_then(at),
            other => other,
        };
        let mut digits = String::new();
        let mut j = i;
        while let Some(c) = at(j) {
            if c.is_ascii_digit() {
                digits.push(c);
                j += 1;
            } else if is_sep(c) && at(j + 1).is_some_and(|n| n.is_ascii_digit()) {
                j += 1;
            } else {
                break;
            }
        }
        let after = match at(j) {
            Some('-') => at(j + 1),
            other => other,
        };
        let glued = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !glued(before)
            && !glued(after)
            && (13..=19).contains(&digits.len())
            && luhn_valid(&digits)
        {
            return true;
        }
        i = j.max(i + 1);
    }
    false
}

/// A copy of a JSON body without card data: `payment.card` replaced by a marker, every `cvv`
/// field dropped, every string or number holding a card number replaced.
pub fn redacted(body: &Value) -> Vec<u8> {
    let mut copy = body.clone();
    if let Some(card) = copy.get_mut("payment").and_then(|p| p.get_mut("card")) {
        *card = Value::String("[redacted: card_data_refused]".into());
    }
    scrub(&mut copy);
    copy.to_string().into_bytes()
}

fn scrub(value: &mut Value) {
    match value {
        Value::String(s) if text_has_card_number(s) => *s = "[redacted]".into(),
        Value::Number(n) if text_has_card_number(&n.to_string()) => {
            *value = Value::String("[redacted]".into())
        }
        Value::Object(map) => {
            map.retain(|k, _| !is_code_name(k));
            map.values_mut().for_each(scrub);
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// A dead letter's body as it may be kept: the original when it holds no card data; else a
/// redacted copy (JSON) or, when it is not JSON, a note of its size.
pub fn safe_to_keep(data: &[u8]) -> Option<Vec<u8>> {
    // JSON is judged parsed (an escaped `\u0034242…` or `"\u0063vv"` is what it decodes to);
    // anything else by its bytes.
    match serde_json::from_slice::<Value>(data) {
        Ok(body) => {
            let everywhere = has_cvv(&body) || any_string_has_card_number(&body);
            everywhere.then(|| redacted(&body))
        }
        Err(_) => {
            let text = String::from_utf8_lossy(data);
            let lower = text.to_ascii_lowercase();
            let suspicious =
                text_has_card_number(&text) || CODE_NAMES.iter().any(|n| lower.contains(n));
            suspicious.then(|| {
                serde_json::json!({"redacted": "card_data", "bytes": data.len()})
                    .to_string()
                    .into_bytes()
            })
        }
    }
}

/// Any string or number anywhere (a dead letter is scrubbed more eagerly than a message is
/// refused: losing a body there costs nothing).
fn any_string_has_card_number(value: &Value) -> bool {
    match value {
        Value::String(s) => text_has_card_number(s),
        Value::Number(n) => text_has_card_number(&n.to_string()),
        Value::Object(map) => map.values().any(any_string_has_card_number),
        Value::Array(items) => items.iter().any(any_string_has_card_number),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_text_with_a_card_number_is_written_with_its_digits_masked() {
        let echoed =
            "invalid type: integer `4242424242424242`, expected a string at line 1 column 31";
        let kept = without_card_numbers(echoed);
        assert!(!text_has_card_number(&kept), "{kept}");
        assert!(!kept.chars().any(|c| c.is_ascii_digit()), "{kept}");
        assert!(kept.starts_with("invalid type: integer `####"), "{kept}");
        // Anything else is kept as it is (no copy).
        let plain = "missing field `sku` at line 1 column 31";
        assert!(matches!(
            without_card_numbers(plain),
            std::borrow::Cow::Borrowed(p) if p == plain
        ));
    }

    #[test]
    fn card_numbers_and_cvvs_are_found_and_removed() {
        assert!(text_has_card_number("4242424242424242"));
        assert!(text_has_card_number("card 4242 4242 4242 4242 ok"));
        assert!(text_has_card_number("4000-0000-0000-0002"));
        assert!(!text_has_card_number("4242424242424241"), "fails Luhn");
        assert!(!text_has_card_number("424242424242"), "12 digits");
        assert!(!text_has_card_number("01310-100"));
        // The digit groups of a UUID are not a card number.
        assert!(!text_has_card_number(
            "f394afab-0014-4543-9818-2ecadd21e88a"
        ));
        assert!(text_has_card_number("\"4242424242424242\""));
        let body = json!({
            "customer_id": "a",
            "payment": {"method": "card", "card": {"number": "4242424242424242", "cvv": "123"}},
            "note": "paid with 4000 0000 0000 0002",
            "items": [{"sku": "X", "quantity": 1, "cvv": 99}]
        });
        assert!(carried(&body));
        let copy = String::from_utf8(redacted(&body)).unwrap();
        assert!(
            !copy.contains("4242") && !copy.contains("0002") && !copy.contains("cvv"),
            "{copy}"
        );
        assert!(copy.contains("customer_id"), "{copy}");
        // A CNPJ that happens to pass Luhn is a document, not a card.
        let cnpj = (0..100_000u64)
            .map(|n| format!("{:08}0001", 11_222_333 + n))
            .map(|base| {
                let digits: Vec<u32> = base.chars().filter_map(|c| c.to_digit(10)).collect();
                let check = |d: &[u32], w: &[u32]| {
                    let r = d.iter().zip(w).map(|(a, b)| a * b).sum::<u32>() % 11;
                    if r < 2 {
                        0
                    } else {
                        11 - r
                    }
                };
                let w1 = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
                let w2 = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
                let d1 = check(&digits, &w1);
                let mut with = digits.clone();
                with.push(d1);
                let d2 = check(&with, &w2);
                format!("{base}{d1}{d2}")
            })
            .find(|c| cnpj_valid(c) && luhn_valid(c))
            .unwrap();
        assert!(!carried(
            &json!({"payment": {"method": "boleto", "document": cnpj}})
        ));
        let token = json!({"payment": {"method": "card", "card_token": "tok_sandbox_visa_4242_122031_a_x"}});
        assert!(!carried(&token));
        assert_eq!(safe_to_keep(token.to_string().as_bytes()), None);
        // An EAN-13 SKU that passes Luhn is a SKU.
        assert!(!carried(
            &json!({"items": [{"sku": "7891000100011", "quantity": 1}]})
        ));
        // Escaped in JSON, still found in a dead letter.
        let escaped = br#"{"payment": {"n": "\u0034242424242424242", "\u0063vv": "1"}}"#;
        let kept = String::from_utf8(safe_to_keep(escaped).unwrap()).unwrap();
        assert!(!kept.contains("4242") && !kept.contains("cvv"), "{kept}");
        let raw = b"not json 4242424242424242";
        let kept = String::from_utf8(safe_to_keep(raw).unwrap()).unwrap();
        assert!(!kept.contains("4242"), "{kept}");
    }
}
