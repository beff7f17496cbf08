//! How similar two products are, as a shopper would judge it: same category first, then shared
//! tags, then a close price, then matching attributes. A score in `[0, 1]`.

use serde::{Deserialize, Serialize};

use super::{Product, Sku};

/// A product offered instead of one that cannot be served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Suggestion {
    pub sku: Sku,
    pub name: String,
    pub price_cents: i64,
    pub available: i64,
    pub score: f64,
}

/// Weight of each signal; they add up to 1.
const CATEGORY: f64 = 0.45;
const TAGS: f64 = 0.30;
const PRICE: f64 = 0.20;
const ATTRIBUTES: f64 = 0.05;

/// Similarity of `candidate` to `base`, in `[0, 1]`.
pub fn score(base: &Product, candidate: &Product) -> f64 {
    let category = if base.category.eq_ignore_ascii_case(&candidate.category) {
        1.0
    } else {
        0.0
    };
    let tags = jaccard(&base.tags, &candidate.tags);
    let price = price_proximity(base.price_cents, candidate.price_cents);
    let attributes = if base.attributes.is_empty() {
        0.0
    } else {
        let same = base
            .attributes
            .iter()
            .filter(|(k, v)| candidate.attributes.get(*k) == Some(*v))
            .count();
        same as f64 / base.attributes.len() as f64
    };
    CATEGORY * category + TAGS * tags + PRICE * price + ATTRIBUTES * attributes
}

/// `1` for equal prices, falling linearly to `0` when one is double the other or more.
pub fn price_proximity(a: i64, b: i64) -> f64 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    if hi <= 0 {
        return 1.0;
    }
    let ratio = (hi - lo.max(0)) as f64 / hi as f64;
    (1.0 - 2.0 * ratio).clamp(0.0, 1.0)
}

fn jaccard(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 0.0;
    }
    let shared = a.iter().filter(|t| b.contains(t)).count();
    let union = a.len() + b.len() - shared;
    if union == 0 {
        0.0
    } else {
        shared as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Sku;

    fn product(sku: &str, category: &str, tags: &[&str], price: i64) -> Product {
        Product {
            sku: Sku::parse(sku).unwrap(),
            name: sku.into(),
            category: category.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            price_cents: price,
            currency: "BRL".into(),
            attributes: Default::default(),
        }
    }

    #[test]
    fn category_outweighs_tags_and_price() {
        let base = product("A", "shoes", &["running", "men"], 30000);
        let same_cat = product("B", "shoes", &[], 60000);
        let other_cat_same_tags = product("C", "socks", &["running", "men"], 30000);
        assert!(score(&base, &same_cat) > 0.4);
        assert!(score(&base, &other_cat_same_tags) < score(&base, &same_cat) + 0.1);
        let close = product("D", "shoes", &["running"], 29000);
        assert!(score(&base, &close) > score(&base, &same_cat));
    }

    #[test]
    fn price_proximity_is_symmetric_and_bounded() {
        assert_eq!(price_proximity(100, 100), 1.0);
        assert_eq!(price_proximity(100, 200), 0.0);
        assert_eq!(price_proximity(100, 1000), 0.0);
        assert!((price_proximity(100, 125) - price_proximity(125, 100)).abs() < 1e-12);
        assert!((price_proximity(100, 125) - 0.6).abs() < 1e-9);
        assert_eq!(price_proximity(0, 0), 1.0);
    }
}
