//! Unit tests of checkout validation (a file of its own: `checkout.rs` is the rules).
use super::*;
use crate::domain::documents::luhn_valid;
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
        serde_json::to_value(card.public_view()).unwrap(),
        json!({"method": "card", "brand": "visa", "last4": "4242"})
    );
    let boleto = Payment::Boleto {
        document: "52998224725".into(),
    };
    assert_eq!(
        serde_json::to_value(boleto.public_view()).unwrap()["document"],
        "***.982.247-**"
    );
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

/// The checkout as it was first queued and fingerprinted: a JSON tree (`Value` keeps its keys
/// sorted), written compactly. Stored fingerprints and queued bodies were made with it.
fn canonical_body_as_first_written(c: &Checkout, payment: serde_json::Value) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    body.insert("customer_id".into(), c.customer_id.as_str().into());
    match &c.lines {
        LineSource::Cart(id) => {
            body.insert("cart_id".into(), id.to_string().into());
        }
        LineSource::Items(items) => {
            let lines = items
                .iter()
                .map(|(sku, q)| json!({"sku": sku.as_str(), "quantity": q}))
                .collect();
            body.insert("items".into(), serde_json::Value::Array(lines));
        }
    }
    body.insert("payment".into(), payment);
    body.insert(
        "shipping_address".into(),
        serde_json::to_value(&c.address).unwrap(),
    );
    body.insert("delivery_method".into(), c.delivery_method.as_str().into());
    serde_json::Value::Object(body)
}

fn any_checkout() -> impl proptest::strategy::Strategy<Value = (Checkout, serde_json::Value)> {
    use proptest::prelude::*;
    // Text heavy in what JSON escapes (quotes, backslashes, control characters) and in what it
    // does not (non-ASCII).
    let text = || prop_oneof![any::<String>(), "[\\\\\"\\x00-\\x1f\\x7fa-zé€😀 ]{0,12}"];
    let lines = prop_oneof![
        any::<u128>().prop_map(|id| LineSource::Cart(uuid::Uuid::from_u128(id))),
        proptest::collection::vec(("[A-Za-z0-9._-]{1,12}", any::<i64>()), 0..5).prop_map(|items| {
            LineSource::Items(
                items
                    .into_iter()
                    .map(|(sku, q)| (Sku::parse(&sku).unwrap(), q))
                    .collect(),
            )
        }),
    ];
    let address = (
        proptest::collection::vec(text(), 7),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(|(t, complement, district)| Address {
            recipient: t[0].clone(),
            street: t[1].clone(),
            number: t[2].clone(),
            complement,
            district,
            city: t[3].clone(),
            state: t[4].clone(),
            postal_code: t[5].clone(),
            country: t[6].clone(),
        });
    let method = prop_oneof![
        Just(DeliveryMethod::Standard),
        Just(DeliveryMethod::Express),
        Just(DeliveryMethod::SameDay),
        Just(DeliveryMethod::Pickup),
    ];
    // The payment as intake passes it: a small object (a card's identity, a token, a method),
    // here with whatever JSON may nest in it.
    let leaf = prop_oneof![
        text().prop_map(serde_json::Value::String),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::Bool),
        Just(serde_json::Value::Null),
    ];
    let payment = leaf
        .prop_recursive(2, 16, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
        .prop_map(|v| json!({ "method": "card", "details": v }));
    ("[!-~é€😀]{1,20}", lines, address, method, payment).prop_map(
        |(customer, lines, address, delivery_method, payment)| {
            let checkout = Checkout {
                customer_id: CustomerId::parse(&customer).unwrap(),
                lines,
                payment: PaymentRequest::Token("tok".into()),
                address,
                delivery_method,
            };
            (checkout, payment)
        },
    )
}

proptest::proptest! {
    #[test]
    fn the_canonical_checkout_is_byte_for_byte_what_was_queued_and_fingerprinted(
        (checkout, payment) in any_checkout()
    ) {
        let mut written = Vec::new();
        checkout.write_canonical(&mut written, &payment);
        let tree = canonical_body_as_first_written(&checkout, payment);
        // The same fingerprint as the tree's (what stored keys were compared on) …
        proptest::prop_assert_eq!(
            crate::domain::canonical::fingerprint_of(&written),
            crate::domain::canonical::fingerprint(&tree)
        );
        // … because the same bytes as the tree's, as queued.
        proptest::prop_assert_eq!(String::from_utf8(written).unwrap(), tree.to_string());
    }
}
