//! Checkout requests: the body of `POST /v1/checkout` (and of messages on `orders.checkout`),
//! validated field by field — card Luhn, expiry and CVV, CPF/CNPJ check digits, the address,
//! the delivery method, quantities — into a [`Checkout`] that can only exist when valid.

use serde::{Deserialize, Serialize};

use super::canonical::write_plain;
use super::cart::{CustomerId, MAX_LINE_QUANTITY};
use super::documents::{cnpj_valid, cpf_valid, digits_of};
pub use super::payment::{
    card_expired, mask_document, CardInput, Payment, PaymentRequest, RawCard,
};
use super::{FieldErrors, Sku};

/// Most lines in one order.
pub const MAX_LINES: usize = 50;
/// Longest name (recipient, card holder).
pub(super) const MAX_NAME: usize = 100;

/// How an order is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
    pub payment: PaymentRequest,
    pub address: Address,
    pub delivery_method: DeliveryMethod,
}

impl Checkout {
    /// The checkout as it is queued and fingerprinted, as canonical JSON (object keys in sorted
    /// order, no whitespace) written into `out`: only what the validator read (so no field a
    /// client added rides along — a stray `cvv` included), with `payment` as given. Written
    /// straight from the typed checkout, no JSON tree: this runs twice for every checkout at
    /// intake. The bytes are those of the `serde_json::Value` the checkout was once turned into
    /// (stored fingerprints were made from them; a property test holds them equal).
    pub fn write_canonical(&self, out: &mut Vec<u8>, payment: &serde_json::Value) {
        out.push(b'{');
        if let LineSource::Cart(id) = &self.lines {
            write_plain(out, "cart_id");
            out.push(b':');
            write_plain(out, id);
            out.push(b',');
        }
        field(out, "customer_id", self.customer_id.as_str());
        out.push(b',');
        field(out, "delivery_method", self.delivery_method.as_str());
        if let LineSource::Items(items) = &self.lines {
            out.extend_from_slice(b",\"items\":[");
            for (i, (sku, quantity)) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"quantity\":");
                write_plain(out, quantity);
                out.push(b',');
                field(out, "sku", sku.as_str());
                out.push(b'}');
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"payment\":");
        super::canonical::write_canonical(out, payment);
        out.extend_from_slice(b",\"shipping_address\":");
        self.address.write_canonical(out);
        out.push(b'}');
    }
}

impl Address {
    /// The address as canonical JSON: its keys in sorted order, an absent optional field left out.
    fn write_canonical(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        field(out, "city", &self.city);
        optional(out, "complement", self.complement.as_deref());
        out.push(b',');
        field(out, "country", &self.country);
        optional(out, "district", self.district.as_deref());
        for (key, value) in [
            ("number", &self.number),
            ("postal_code", &self.postal_code),
            ("recipient", &self.recipient),
            ("state", &self.state),
            ("street", &self.street),
        ] {
            out.push(b',');
            field(out, key, value);
        }
        out.push(b'}');
    }
}

/// `"key":"value"`, both escaped as serde_json escapes them.
fn field(out: &mut Vec<u8>, key: &str, value: &str) {
    write_plain(out, key);
    out.push(b':');
    write_plain(out, value);
}

/// `,"key":"value"` when there is a value.
fn optional(out: &mut Vec<u8>, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        out.push(b',');
        field(out, key, value);
    }
}

/// One line: a SKU (at most once per order) and how many.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ItemInput {
    #[schema(required = true, value_type = String, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub sku: Option<String>,
    #[schema(required = true, value_type = i64, minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "crate::domain::validation::whole")]
    pub quantity: Option<i64>,
}

/// `method` `card` takes `card_token` (a gateway's token) or `card` (typed, exchanged for a
/// token at intake); `boleto` takes the payer's CPF or CNPJ in `document`; `pix` nothing.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct PaymentInput {
    #[schema(required = true, value_type = String, pattern = "^(card|pix|boleto)$")]
    pub method: Option<String>,
    #[schema(nullable)]
    #[serde(default, deserialize_with = "super::validation::optional_object")]
    pub card: Option<CardInput>,
    /// 1 to 255 visible ASCII characters.
    #[schema(pattern = "^[!-~]{1,255}$")]
    pub card_token: Option<String>,
    /// A CPF (11 digits) or CNPJ (14) with valid check digits; punctuation allowed.
    #[schema(max_length = 32)]
    pub document: Option<String>,
}

/// Longest gateway token accepted.
const MAX_TOKEN: usize = 255;

/// Where the order goes. `postal_code` and `state` follow the country's rules (a Brazilian
/// CEP is 8 digits, `state` a UF).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct AddressInput {
    #[schema(required = true, schema_with = super::validation::text_schema::<100>)]
    pub recipient: Option<String>,
    #[schema(required = true, schema_with = super::validation::text_schema::<200>)]
    pub street: Option<String>,
    #[schema(required = true, schema_with = super::validation::text_schema::<20>)]
    pub number: Option<String>,
    #[schema(schema_with = super::validation::optional_text_schema::<100>)]
    pub complement: Option<String>,
    #[schema(schema_with = super::validation::optional_text_schema::<100>)]
    pub district: Option<String>,
    #[schema(required = true, schema_with = super::validation::text_schema::<100>)]
    pub city: Option<String>,
    #[schema(required = true, schema_with = super::validation::text_schema::<50>)]
    pub state: Option<String>,
    #[schema(required = true, schema_with = super::validation::text_schema::<20>)]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[schema(required = true, value_type = String, pattern = "^[A-Za-z]{2}$")]
    pub country: Option<String>,
}

/// The request as sent; every field optional so each problem is reported on its own path.
/// Give exactly one of `cart_id` (a cart of the customer's) and `items`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"items": [{"sku": "MUG-1", "quantity": 2}], "payment": {"method": "pix"}, "shipping_address": {"recipient": "Ana", "street": "Av. Paulista", "number": "1000", "city": "São Paulo", "state": "SP", "postal_code": "01310-100", "country": "BR"}, "delivery_method": "express"}))]
pub struct CheckoutInput {
    #[schema(schema_with = super::cart::customer_id_schema)]
    pub customer_id: Option<String>,
    #[schema(value_type = Option<String>, pattern = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
    pub cart_id: Option<String>,
    /// 1 to 50 lines.
    #[schema(min_items = 1, max_items = 50)]
    #[serde(default, deserialize_with = "super::validation::optional_objects")]
    pub items: Option<Vec<ItemInput>>,
    #[schema(required = true, nullable = false)]
    #[serde(default, deserialize_with = "super::validation::optional_object")]
    pub payment: Option<PaymentInput>,
    #[schema(required = true, nullable = false)]
    #[serde(default, deserialize_with = "super::validation::optional_object")]
    pub shipping_address: Option<AddressInput>,
    #[schema(required = true, value_type = String, pattern = "^(standard|express|same_day|pickup)$")]
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
                    // Nothing past the limit is looked at (a huge list costs no more than this).
                    errors.add("items", format!("at most {MAX_LINES} lines"));
                    return None;
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

    fn validate_payment(
        &self,
        errors: &mut FieldErrors,
        today: (i32, u32),
    ) -> Option<PaymentRequest> {
        let Some(p) = &self.payment else {
            errors.add("payment", "is required");
            return None;
        };
        match p.method.as_deref() {
            None => {
                errors.add("payment.method", "is required");
                None
            }
            Some("pix") => Some(PaymentRequest::Ready(Payment::Pix)),
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
                Some(PaymentRequest::Ready(Payment::Boleto { document: digits }))
            }
            Some("card") => {
                let card = match (&p.card, p.card_token.as_deref()) {
                    (Some(_), Some(_)) => {
                        errors.add(
                            "payment.card_token",
                            "give either card or card_token, not both",
                        );
                        return None;
                    }
                    (None, None) => {
                        errors.add(
                            "payment.card",
                            "is required for card payments (or card_token)",
                        );
                        return None;
                    }
                    (None, Some(token)) => {
                        let ok = !token.is_empty()
                            && token.len() <= MAX_TOKEN
                            && token.bytes().all(|b| b.is_ascii_graphic());
                        if !ok {
                            errors.add(
                                "payment.card_token",
                                format!("must be 1 to {MAX_TOKEN} visible ASCII characters"),
                            );
                            return None;
                        }
                        return Some(PaymentRequest::Token(token.to_owned()));
                    }
                    (Some(card), None) => card,
                };
                card.validate(errors, today, "payment.card.")
                    .map(PaymentRequest::Card)
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
#[path = "checkout_tests.rs"]
mod tests;
