//! Checkout requests: the body of `POST /v1/checkout` (and of messages on `orders.checkout`),
//! validated field by field — card Luhn, expiry and CVV, CPF/CNPJ check digits, the address,
//! the delivery method, quantities — into a [`Checkout`] that can only exist when valid.

use serde::{Deserialize, Serialize};

use super::cart::{CustomerId, MAX_LINE_QUANTITY};
use super::documents::{cnpj_valid, cpf_valid, digits_of, luhn_valid};
use super::{FieldErrors, Sku};

/// Most lines in one order.
pub const MAX_LINES: usize = 50;
/// Longest name (recipient, card holder).
const MAX_NAME: usize = 100;

/// How an order is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMethod {
    Standard,
    Express,
    SameDay,
    Pickup,
}

impl DeliveryMethod {
    pub fn parse(raw: &str) -> Option<DeliveryMethod> {
        match raw {
            "standard" => Some(DeliveryMethod::Standard),
            "express" => Some(DeliveryMethod::Express),
            "same_day" => Some(DeliveryMethod::SameDay),
            "pickup" => Some(DeliveryMethod::Pickup),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryMethod::Standard => "standard",
            DeliveryMethod::Express => "express",
            DeliveryMethod::SameDay => "same_day",
            DeliveryMethod::Pickup => "pickup",
        }
    }
}

/// The payment as kept with the order: never the full card number or the CVV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Payment {
    Card {
        /// Kept only in memory for the authorization; not serialized.
        #[serde(skip)]
        number: String,
        last4: String,
        holder_name: String,
        exp_month: u32,
        exp_year: i32,
    },
    Pix,
    Boleto {
        document: String,
    },
}

/// The shipping address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Address {
    pub recipient: String,
    pub street: String,
    pub number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    pub country: String,
}

/// Where the lines come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineSource {
    Cart(uuid::Uuid),
    Items(Vec<(Sku, i64)>),
}

/// A valid checkout request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub customer_id: CustomerId,
    pub lines: LineSource,
    pub payment: Payment,
    pub address: Address,
    pub delivery_method: DeliveryMethod,
}

#[derive(Debug, Default, Deserialize)]
pub struct ItemInput {
    pub sku: Option<String>,
    pub quantity: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CardInput {
    pub number: Option<String>,
    pub holder_name: Option<String>,
    pub exp_month: Option<u32>,
    pub exp_year: Option<i32>,
    pub cvv: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PaymentInput {
    pub method: Option<String>,
    pub card: Option<CardInput>,
    pub document: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AddressInput {
    pub recipient: Option<String>,
    pub street: Option<String>,
    pub number: Option<String>,
    pub complement: Option<String>,
    pub district: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

/// The request as sent; every field optional so each problem is reported on its own path.
#[derive(Debug, Default, Deserialize)]
pub struct CheckoutInput {
    pub customer_id: Option<String>,
    pub cart_id: Option<String>,
    pub items: Option<Vec<ItemInput>>,
    pub payment: Option<PaymentInput>,
    pub shipping_address: Option<AddressInput>,
    pub delivery_method: Option<String>,
}

impl CheckoutInput {
    /// Validates everything; `today` is `(year, month)` for the card expiry check.
    pub fn validate(&self, today: (i32, u32)) -> Result<Checkout, FieldErrors> {
        let mut errors = FieldErrors::new();
        let customer_id = errors.required(
            "customer_id",
            self.customer_id.as_deref(),
            CustomerId::parse,
        );
        let lines = self.validate_lines(&mut errors);
        let payment = self.validate_payment(&mut errors, today);
        let address = self.validate_address(&mut errors);
        let delivery_method = match self.delivery_method.as_deref() {
            None => {
                errors.add("delivery_method", "is required");
                None
            }
            Some(raw) => {
                let m = DeliveryMethod::parse(raw);
                if m.is_none() {
                    errors.add(
                        "delivery_method",
                        "must be one of standard, express, same_day, pickup",
                    );
                }
                m
            }
        };
        match (customer_id, lines, payment, delivery_method) {
            (Some(customer_id), Some(lines), Some(payment), Some(delivery_method))
                if errors.is_empty() =>
            {
                Ok(Checkout {
                    customer_id,
                    lines,
                    payment,
                    address,
                    delivery_method,
                })
            }
            _ => Err(errors),
        }
    }

    fn validate_lines(&self, errors: &mut FieldErrors) -> Option<LineSource> {
        match (&self.cart_id, &self.items) {
            (Some(_), Some(_)) => {
                errors.add("cart_id", "give either cart_id or items, not both");
                None
            }
            (None, None) => {
                errors.add("items", "give either cart_id or items");
                None
            }
            (Some(cart), None) => match uuid::Uuid::parse_str(cart) {
                Ok(id) => Some(LineSource::Cart(id)),
                Err(_) => {
                    errors.add("cart_id", "must be a UUID");
                    None
                }
            },
            (None, Some(items)) => {
                if items.is_empty() {
                    errors.add("items", "must not be empty");
                    return None;
                }
                if items.len() > MAX_LINES {
                    errors.add("items", format!("at most {MAX_LINES} lines"));
                }
                let mut lines: Vec<(Sku, i64)> = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let sku = match item.sku.as_deref().map(Sku::parse) {
                        None => {
                            errors.add(&format!("items.{i}.sku"), "is required");
                            None
                        }
                        Some(Err(e)) => {
                            errors.add(&format!("items.{i}.sku"), e);
                            None
                        }
                        Some(Ok(s)) => Some(s),
                    };
                    let quantity = match item.quantity {
                        None => {
                            errors.add(&format!("items.{i}.quantity"), "is required");
                            None
                        }
                        Some(q) if q < 1 => {
                            errors.add(&format!("items.{i}.quantity"), "must be >= 1");
                            None
                        }
                        Some(q) if q > MAX_LINE_QUANTITY => {
                            errors.add(
                                &format!("items.{i}.quantity"),
                                format!("must be at most {MAX_LINE_QUANTITY}"),
                            );
                            None
                        }
                        Some(q) => Some(q),
                    };
                    if let (Some(sku), Some(q)) = (sku, quantity) {
                        if lines.iter().any(|(s, _)| *s == sku) {
                            errors.add(
                                &format!("items.{i}.sku"),
                                "appears twice; give one line per sku",
                            );
                        } else {
                            lines.push((sku, q));
                        }
                    }
                }
                Some(LineSource::Items(lines))
            }
        }
    }

    fn validate_payment(&self, errors: &mut FieldErrors, today: (i32, u32)) -> Option<Payment> {
        let Some(p) = &self.payment else {
            errors.add("payment", "is required");
            return None;
        };
        match p.method.as_deref() {
            None => {
                errors.add("payment.method", "is required");
                None
            }
            Some("pix") => Some(Payment::Pix),
            Some("boleto") => {
                let doc = p.document.as_deref().unwrap_or("");
                if doc.is_empty() {
                    errors.add("payment.document", "is required for boleto");
                    return None;
                }
                let digits: String = doc.chars().filter(char::is_ascii_digit).collect();
                let ok = match digits.len() {
                    11 => cpf_valid(doc),
                    14 => cnpj_valid(doc),
                    _ => false,
                };
                if !ok {
                    errors.add("payment.document", "is not a valid CPF or CNPJ");
                    return None;
                }
                Some(Payment::Boleto { document: digits })
            }
            Some("card") => {
                let Some(card) = &p.card else {
                    errors.add("payment.card", "is required for card payments");
                    return None;
                };
                let before = errors.clone();
                let number: String = card
                    .number
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_whitespace() && *c != '-')
                    .collect();
                if card.number.is_none() {
                    errors.add("payment.card.number", "is required");
                } else if !luhn_valid(&number) {
                    errors.add("payment.card.number", "is not a valid card number");
                }
                let holder = errors.text(
                    "payment.card.holder_name",
                    card.holder_name.as_deref(),
                    MAX_NAME,
                );
                let month = card.exp_month.unwrap_or(0);
                if card.exp_month.is_none() {
                    errors.add("payment.card.exp_month", "is required");
                } else if !(1..=12).contains(&month) {
                    errors.add("payment.card.exp_month", "must be 1 to 12");
                }
                let year = card.exp_year.unwrap_or(0);
                if card.exp_year.is_none() {
                    errors.add("payment.card.exp_year", "is required");
                } else if (1..=12).contains(&month) && (year, month) < today {
                    errors.add("payment.card.exp_year", "the card has expired");
                } else if year > today.0 + 20 {
                    errors.add("payment.card.exp_year", "is too far in the future");
                }
                match card.cvv.as_deref() {
                    None => errors.add("payment.card.cvv", "is required"),
                    Some(c)
                        if !(c.len() == 3 || c.len() == 4)
                            || !c.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        errors.add("payment.card.cvv", "must be 3 or 4 digits")
                    }
                    Some(_) => {}
                }
                if *errors != before {
                    return None;
                }
                let last4 = number[number.len().saturating_sub(4)..].to_owned();
                Some(Payment::Card {
                    number,
                    last4,
                    holder_name: holder,
                    exp_month: month,
                    exp_year: year,
                })
            }
            Some(_) => {
                errors.add("payment.method", "must be card, pix or boleto");
                None
            }
        }
    }

    fn validate_address(&self, errors: &mut FieldErrors) -> Address {
        let Some(a) = &self.shipping_address else {
            errors.add("shipping_address", "is required");
            return Address::default();
        };
        let f = |name: &str| format!("shipping_address.{name}");
        let address = Address {
            recipient: errors.text(&f("recipient"), a.recipient.as_deref(), MAX_NAME),
            street: errors.text(&f("street"), a.street.as_deref(), 200),
            number: errors.text(&f("number"), a.number.as_deref(), 20),
            complement: errors.optional_text(&f("complement"), a.complement.as_deref(), 100),
            district: errors.optional_text(&f("district"), a.district.as_deref(), 100),
            city: errors.text(&f("city"), a.city.as_deref(), 100),
            state: errors.text(&f("state"), a.state.as_deref(), 50),
            postal_code: errors.text(&f("postal_code"), a.postal_code.as_deref(), 20),
            country: errors
                .text(&f("country"), a.country.as_deref(), 2)
                .to_uppercase(),
        };
        if !address.country.is_empty()
            && (address.country.len() != 2
                || !address.country.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            errors.add(&f("country"), "must be an ISO 3166 two-letter code");
        }
        if address.country == "BR" && !address.postal_code.is_empty() {
            let digits = digits_of(&address.postal_code);
            let shape_ok = address
                .postal_code
                .chars()
                .all(|c| c.is_ascii_digit() || c == '-');
            if digits.len() != 8 || !shape_ok {
                errors.add(&f("postal_code"), "must be a CEP of 8 digits (12345-678)");
            }
        }
        address
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: serde_json::Value) -> CheckoutInput {
        serde_json::from_value(v).unwrap()
    }

    fn valid() -> serde_json::Value {
        json!({
            "customer_id": "c-1",
            "items": [{"sku": "A-1", "quantity": 2}],
            "payment": {"method": "card", "card": {"number": "4242 4242 4242 4242", "holder_name": "Ana",
                        "exp_month": 12, "exp_year": 2030, "cvv": "123"}},
            "shipping_address": {"recipient": "Ana", "street": "Rua A", "number": "10", "city": "São Paulo",
                                 "state": "SP", "postal_code": "01310-100", "country": "br"},
            "delivery_method": "express"
        })
    }

    #[test]
    fn a_valid_request_passes_and_keeps_only_the_last_four_digits() {
        let c = input(valid()).validate((2026, 11)).unwrap();
        assert_eq!(c.delivery_method, DeliveryMethod::Express);
        assert_eq!(c.address.country, "BR");
        let Payment::Card { last4, .. } = &c.payment else {
            panic!()
        };
        assert_eq!(last4, "4242");
        let stored = serde_json::to_value(&c.payment).unwrap();
        assert!(!stored.to_string().contains("42424242"));
    }

    #[test]
    fn luhn_cpf_and_cnpj() {
        assert!(luhn_valid("4242424242424242"));
        assert!(luhn_valid("4000000000000002"));
        assert!(!luhn_valid("4242424242424241"));
        assert!(cpf_valid("529.982.247-25"));
        assert!(!cpf_valid("529.982.247-24"));
        assert!(!cpf_valid("111.111.111-11"));
        assert!(cnpj_valid("11.222.333/0001-81"));
        assert!(!cnpj_valid("11.222.333/0001-82"));
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let mut v = valid();
        v["payment"]["card"]["number"] = json!("4242424242424241");
        v["payment"]["card"]["exp_year"] = json!(2020);
        v["payment"]["card"]["cvv"] = json!("12");
        v["items"] = json!([{"sku": "A-1", "quantity": 0}, {"sku": "bad sku", "quantity": 101}]);
        v["shipping_address"]["postal_code"] = json!("123");
        v["delivery_method"] = json!("drone");
        v["cart_id"] = json!("6f0c1c2e-9a43-4a49-9a40-3e3f0c6b9a11");
        let e = input(v).validate((2026, 11)).unwrap_err();
        for f in [
            "payment.card.number",
            "payment.card.exp_year",
            "payment.card.cvv",
            "shipping_address.postal_code",
            "delivery_method",
            "cart_id",
        ] {
            assert!(e.get(f).is_some(), "{f} in {e:?}");
        }
        let mut v = valid();
        v["items"] = json!([{"sku": "A-1", "quantity": 0}, {"sku": "bad sku", "quantity": 101}]);
        let e = input(v).validate((2026, 11)).unwrap_err();
        for f in ["items.0.quantity", "items.1.sku", "items.1.quantity"] {
            assert!(e.get(f).is_some(), "{f} in {e:?}");
        }
    }

    #[test]
    fn boleto_needs_a_real_document_and_expiry_is_by_month() {
        let mut v = valid();
        v["payment"] = json!({"method": "boleto", "document": "529.982.247-25"});
        assert!(input(v.clone()).validate((2026, 11)).is_ok());
        v["payment"] = json!({"method": "boleto", "document": "123"});
        assert!(input(v.clone()).validate((2026, 11)).is_err());
        let mut v = valid();
        v["payment"]["card"]["exp_year"] = json!(2026);
        v["payment"]["card"]["exp_month"] = json!(11);
        assert!(
            input(v.clone()).validate((2026, 11)).is_ok(),
            "valid through its month"
        );
        assert!(input(v).validate((2026, 12)).is_err());
        let mut v = valid();
        v["items"] = json!([]);
        assert!(input(v)
            .validate((2026, 11))
            .unwrap_err()
            .get("items")
            .is_some());
        let mut v = valid();
        v.as_object_mut().unwrap().remove("items");
        assert!(input(v)
            .validate((2026, 11))
            .unwrap_err()
            .get("items")
            .is_some());
    }
}
