//! Payments as a checkout asks for them and as they are kept: a typed card ([`RawCard`], which
//! lives only in its request), the gateway's token ([`Payment::Card`]), pix and boleto, and what a
//! customer is shown of each. Pure; the gateway itself is `orders::payment`.

use serde::{Deserialize, Serialize};

use super::checkout::MAX_NAME;
use super::documents::luhn_valid;
use super::FieldErrors;

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
    pub fn public_view(&self) -> PaymentView<'_> {
        match self {
            Payment::Card { brand, last4, .. } => PaymentView::Card { brand, last4 },
            Payment::Pix => PaymentView::Pix,
            Payment::Boleto { document } => PaymentView::Boleto {
                document: mask_document(document),
            },
        }
    }
}

/// A payment as an order's view shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum PaymentView<'a> {
    Card {
        /// `visa`, `mastercard`, `amex`, `elo`, … (`""` for orders kept before tokenization).
        brand: &'a str,
        last4: &'a str,
    },
    Pix,
    Boleto {
        /// Masked: `***.982.247-**` (CPF) or `**.222.333/****-**` (CNPJ).
        document: String,
    },
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

/// A card as typed. Rules no schema states: the number passes the Luhn check, and the card has
/// not expired and expires within 20 years (422 naming the field otherwise).
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"number": "4111 1111 1111 1111", "holder_name": "ANA SILVA", "exp_month": 12, "exp_year": 2030, "cvv": "123"}))]
pub struct CardInput {
    /// Digits, spaces and hyphens allowed between them.
    #[schema(required = true, value_type = String, pattern = "^[0-9][0-9 -]*$", max_length = 40)]
    pub number: Option<String>,
    #[schema(required = true, schema_with = super::validation::text_schema::<100>)]
    pub holder_name: Option<String>,
    #[schema(required = true, value_type = u32, minimum = 1, maximum = 12)]
    #[serde(default, deserialize_with = "crate::domain::validation::whole")]
    pub exp_month: Option<u32>,
    #[schema(required = true, value_type = i32, minimum = 2000, maximum = 2100)]
    #[serde(default, deserialize_with = "crate::domain::validation::whole")]
    pub exp_year: Option<i32>,
    /// Wiped from memory after the request; never stored or published.
    #[schema(required = true, value_type = String, pattern = "^[0-9]{3,4}$")]
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

impl Drop for CardInput {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for field in [&mut self.number, &mut self.cvv, &mut self.holder_name]
            .into_iter()
            .flatten()
        {
            field.zeroize();
        }
    }
}

impl std::fmt::Debug for CardInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardInput([redacted])")
    }
}
