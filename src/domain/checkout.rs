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

/// The payment as queued and kept with the order: a card is the gateway's token with what may
/// be shown of it — never its number or CVV (PCI DSS 3.3, 3.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Payment {
    Card {
        /// The payment gateway's token for the card (orders stored before tokenization have none).
        #[serde(default)]
        card_token: String,
        #[serde(default)]
        brand: String,
        last4: String,
        exp_month: u32,
        exp_year: i32,
    },
    Pix,
    Boleto {
        /// The full CPF/CNPJ (digits): the boleto is issued with it. Shown masked.
        document: String,
    },
}

impl Payment {
    /// What a customer-facing view or event shows: brand and last 4 of a card, the document
    /// masked (`***.982.247-**`).
    pub fn public_view(&self) -> serde_json::Value {
        match self {
            Payment::Card { brand, last4, .. } => {
                serde_json::json!({"method": "card", "brand": brand, "last4": last4})
            }
            Payment::Pix => serde_json::json!({"method": "pix"}),
            Payment::Boleto { document } => {
                serde_json::json!({"method": "boleto", "document": mask_document(document)})
            }
        }
    }
}

/// A CPF shown as `***.982.247-**`, a CNPJ as `**.222.333/****-**`: enough for a customer to
/// recognise it, not enough to use it.
pub fn mask_document(document: &str) -> String {
    let digits: Vec<char> = document.chars().filter(char::is_ascii_digit).collect();
    let part = |from: usize, to: usize| -> String {
        digits
            .get(from..to)
            .map(|d| d.iter().collect())
            .unwrap_or_default()
    };
    match digits.len() {
        11 => format!("***.{}.{}-**", part(3, 6), part(6, 9)),
        14 => format!("**.{}.{}/****-**", part(2, 5), part(5, 8)),
        _ => "***".to_owned(),
    }
}

/// A card as the customer typed it. It lives only in the request that carried it: it is
/// exchanged for the gateway's token at intake, never serialized, never printed (`Debug` shows
/// the last 4), and its memory is wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct RawCard {
    pub number: String,
    pub holder_name: String,
    pub exp_month: u32,
    pub exp_year: i32,
    pub cvv: String,
}

impl RawCard {
    pub fn last4(&self) -> &str {
        self.number
            .get(self.number.len().saturating_sub(4)..)
            .unwrap_or("")
    }

    /// The card network, from the number's prefix.
    pub fn brand(&self) -> &'static str {
        let n = &self.number;
        let prefix = |len: usize| n.get(..len).and_then(|p| p.parse::<u32>().ok());
        match (prefix(1), prefix(2), prefix(4), prefix(6)) {
            (Some(4), ..) => "visa",
            (_, Some(51..=55), ..) | (.., Some(2221..=2720), _) => "mastercard",
            (_, Some(34 | 37), ..) => "amex",
            (
                ..,
                Some(
                    401178
                    | 401179
                    | 431274
                    | 438935
                    | 451416
                    | 457393
                    | 504175
                    | 506699..=506778
                    | 509000..=509999
                    | 627780
                    | 636297
                    | 636368
                    | 650031..=650033
                    | 650035..=650051,
                ),
            ) => "elo",
            (.., Some(6062), _) => "hipercard",
            _ => "unknown",
        }
    }
}

impl std::fmt::Debug for RawCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawCard(**** {})", self.last4())
    }
}

impl Drop for RawCard {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.number.zeroize();
        self.cvv.zeroize();
        self.holder_name.zeroize();
    }
}

/// How a checkout pays, as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentRequest {
    /// Pix or boleto: nothing to exchange.
    Ready(Payment),
    /// A card typed into this request: to be exchanged for a token before anything is kept.
    Card(RawCard),
    /// A token the gateway gave the storefront (browser tokenization), to be described by it.
    Token(String),
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
    /// The checkout as it is queued and fingerprinted: only what the validator read (so no
    /// field a client added rides along — a stray `cvv` included), with `payment` as given.
    pub fn canonical_body(&self, payment: serde_json::Value) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert("customer_id".into(), self.customer_id.as_str().into());
        match &self.lines {
            LineSource::Cart(id) => {
                body.insert("cart_id".into(), id.to_string().into());
            }
            LineSource::Items(items) => {
                let lines = items
                    .iter()
                    .map(|(sku, q)| serde_json::json!({"sku": sku.as_str(), "quantity": q}))
                    .collect();
                body.insert("items".into(), serde_json::Value::Array(lines));
            }
        }
        body.insert("payment".into(), payment);
        body.insert(
            "shipping_address".into(),
            serde_json::to_value(&self.address).unwrap_or_default(),
        );
        body.insert(
            "delivery_method".into(),
            self.delivery_method.as_str().into(),
        );
        serde_json::Value::Object(body)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ItemInput {
    pub sku: Option<String>,
    pub quantity: Option<i64>,
}

#[derive(Default, Deserialize)]
pub struct CardInput {
    pub number: Option<String>,
    pub holder_name: Option<String>,
    pub exp_month: Option<u32>,
    pub exp_year: Option<i32>,
    pub cvv: Option<String>,
}

impl CardInput {
    /// A card as typed (checkout, or the sandbox's tokenization route), checked field by field
    /// under `prefix` (`payment.card.`): Luhn, expiry against `today` = `(year, month)`, CVV.
    pub fn validate(
        &self,
        errors: &mut FieldErrors,
        today: (i32, u32),
        prefix: &str,
    ) -> Option<RawCard> {
        let card = self;
        let f = |name: &str| format!("{prefix}{name}");
        let before = errors.clone();
        let number: String = card
            .number
            .as_deref()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        if card.number.is_none() {
            errors.add(&f("number"), "is required");
        } else if !luhn_valid(&number) {
            errors.add(&f("number"), "is not a valid card number");
        }
        let holder = errors.text(&f("holder_name"), card.holder_name.as_deref(), MAX_NAME);
        let month = card.exp_month.unwrap_or(0);
        if card.exp_month.is_none() {
            errors.add(&f("exp_month"), "is required");
        } else if !(1..=12).contains(&month) {
            errors.add(&f("exp_month"), "must be 1 to 12");
        }
        let year = card.exp_year.unwrap_or(0);
        if card.exp_year.is_none() {
            errors.add(&f("exp_year"), "is required");
        } else if (1..=12).contains(&month) && (year, month) < today {
            errors.add(&f("exp_year"), "the card has expired");
        } else if year > today.0 + 20 {
            errors.add(&f("exp_year"), "is too far in the future");
        }
        let cvv = card.cvv.as_deref().unwrap_or("");
        match card.cvv.as_deref() {
            None => errors.add(&f("cvv"), "is required"),
            Some(c)
                if !(c.len() == 3 || c.len() == 4) || !c.bytes().all(|b| b.is_ascii_digit()) =>
            {
                errors.add(&f("cvv"), "must be 3 or 4 digits")
            }
            Some(_) => {}
        }
        if *errors != before {
            return None;
        }
        Some(RawCard {
            number,
            holder_name: holder,
            exp_month: month,
            exp_year: year,
            cvv: cvv.to_owned(),
        })
    }
}

/// Whether a card valid through `(year, month)` has expired by `today`.
pub fn card_expired(exp: (i32, u32), today: (i32, u32)) -> bool {
    exp < today
}

#[derive(Debug, Default, Deserialize)]
pub struct PaymentInput {
    pub method: Option<String>,
    pub card: Option<CardInput>,
    pub card_token: Option<String>,
    pub document: Option<String>,
}

impl Drop for CardInput {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for field in [&mut self.number, &mut self.cvv].into_iter().flatten() {
            field.zeroize();
        }
    }
}

impl std::fmt::Debug for CardInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardInput([redacted])")
    }
}

/// Longest gateway token accepted.
const MAX_TOKEN: usize = 255;

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
    fn a_valid_request_passes_and_its_card_never_prints() {
        let c = input(valid()).validate((2026, 11)).unwrap();
        assert_eq!(c.delivery_method, DeliveryMethod::Express);
        assert_eq!(c.address.country, "BR");
        let PaymentRequest::Card(card) = &c.payment else {
            panic!()
        };
        assert_eq!(card.number, "4242424242424242");
        assert_eq!((card.last4(), card.brand()), ("4242", "visa"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("42424242") && !shown.contains("123"),
            "{shown}"
        );
    }

    #[test]
    fn a_card_token_is_taken_as_it_is_and_not_with_a_card() {
        let mut v = valid();
        v["payment"] = json!({"method": "card", "card_token": "tok_abc"});
        let c = input(v.clone()).validate((2026, 11)).unwrap();
        assert_eq!(c.payment, PaymentRequest::Token("tok_abc".into()));
        v["payment"]["card_token"] = json!("tok with space");
        let e = input(v.clone()).validate((2026, 11)).unwrap_err();
        assert!(
            e.summary().contains("payment.card_token"),
            "{}",
            e.summary()
        );
        let mut both = valid();
        both["payment"]["card_token"] = json!("tok_abc");
        assert!(input(both).validate((2026, 11)).is_err());
    }

    #[test]
    fn views_show_a_card_by_brand_and_last_four_and_a_document_masked() {
        let card = Payment::Card {
            card_token: "tok_secret".into(),
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2031,
        };
        assert_eq!(
            card.public_view(),
            json!({"method": "card", "brand": "visa", "last4": "4242"})
        );
        let boleto = Payment::Boleto {
            document: "52998224725".into(),
        };
        assert_eq!(boleto.public_view()["document"], "***.982.247-**");
        assert_eq!(mask_document("11222333000181"), "**.222.333/****-**");
        assert_eq!(mask_document("1"), "***");
        // An order stored before tokenization still reads.
        let old: Payment = serde_json::from_value(
            json!({"method": "card", "last4": "4242", "holder_name": "Ana", "exp_month": 1, "exp_year": 2030}),
        )
        .unwrap();
        assert!(matches!(old, Payment::Card { .. }));
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
