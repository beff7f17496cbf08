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
