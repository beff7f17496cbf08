//! The catalog's indexes: every product by category and tag, and price-ordered views, so the
//! candidates of a suggestion are the products nearest in price within each group a shopper
//! would look at — never a scan of a whole category.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use crate::domain::{Product, Sku};

/// How many price neighbours on each side each group contributes to the candidates.
const PER_GROUP: usize = 24;

pub(super) type PriceIndex = BTreeSet<(i64, Sku)>;

#[derive(Default)]
pub(super) struct Index {
    pub(super) all: BTreeSet<Sku>,
    pub(super) by_category: HashMap<String, BTreeSet<Sku>>,
    pub(super) by_tag: HashMap<String, BTreeSet<Sku>>,
    /// Price-ordered views, so candidates are the products nearest in price within each group
    /// a shopper would look at — never a scan of a whole category.
    pub(super) price_all: PriceIndex,
    pub(super) price_by_category: HashMap<String, PriceIndex>,
    pub(super) price_by_tag: HashMap<String, PriceIndex>,
    pub(super) price_by_category_tag: HashMap<(String, String), PriceIndex>,
}

impl Index {
    pub(super) fn insert(&mut self, p: &Product) {
        let category = p.category.to_lowercase();
        let entry = (p.price_cents, p.sku.clone());
        self.all.insert(p.sku.clone());
        self.price_all.insert(entry.clone());
        self.by_category
            .entry(category.clone())
            .or_default()
            .insert(p.sku.clone());
        self.price_by_category
            .entry(category.clone())
            .or_default()
            .insert(entry.clone());
        for tag in &p.tags {
            self.by_tag
                .entry(tag.clone())
                .or_default()
                .insert(p.sku.clone());
            self.price_by_tag
                .entry(tag.clone())
                .or_default()
                .insert(entry.clone());
            self.price_by_category_tag
                .entry((category.clone(), tag.clone()))
                .or_default()
                .insert(entry.clone());
        }
    }

    pub(super) fn remove(&mut self, p: &Product) {
        let category = p.category.to_lowercase();
        let entry = (p.price_cents, p.sku.clone());
        self.price_all.remove(&entry);
        if let Some(set) = self.by_category.get_mut(&category) {
            set.remove(&p.sku);
        }
        if let Some(set) = self.price_by_category.get_mut(&category) {
            set.remove(&entry);
        }
        for tag in &p.tags {
            if let Some(set) = self.by_tag.get_mut(tag) {
                set.remove(&p.sku);
            }
            if let Some(set) = self.price_by_tag.get_mut(tag) {
                set.remove(&entry);
            }
            if let Some(set) = self
                .price_by_category_tag
                .get_mut(&(category.clone(), tag.clone()))
            {
                set.remove(&entry);
            }
        }
    }

    /// Candidates for `base`: the nearest in price within its category and tag, its category,
    /// each tag, and the whole catalog.
    pub(super) fn candidates(&self, base: &Product) -> HashSet<Sku> {
        let category = base.category.to_lowercase();
        let mut out = HashSet::new();
        let mut add = |set: Option<&PriceIndex>| {
            if let Some(set) = set {
                out.extend(price_neighbours(
                    set,
                    base.price_cents,
                    &base.sku,
                    PER_GROUP,
                ));
            }
        };
        for tag in &base.tags {
            add(self
                .price_by_category_tag
                .get(&(category.clone(), tag.clone())));
            add(self.price_by_tag.get(tag));
        }
        add(self.price_by_category.get(&category));
        add(Some(&self.price_all));
        out.remove(&base.sku);
        out
    }
}

/// Up to `n` SKUs on each side of `price` in `set`, nearest first, alternating sides.
pub(super) fn price_neighbours(set: &PriceIndex, price: i64, sku: &Sku, n: usize) -> Vec<Sku> {
    let pivot = (price, sku.clone());
    let mut below = set.range((Bound::Unbounded, Bound::Excluded(&pivot))).rev();
    let mut above = set.range((Bound::Excluded(&pivot), Bound::Unbounded));
    let mut out = Vec::with_capacity(2 * n);
    let (mut b, mut a) = (below.next(), above.next());
    while out.len() < 2 * n && (b.is_some() || a.is_some()) {
        let take_below = match (b, a) {
            (Some((pb, _)), Some((pa, _))) => price - pb <= pa - price,
            (Some(_), None) => true,
            _ => false,
        };
        if take_below {
            if let Some((_, s)) = b {
                out.push(s.clone());
            }
            b = below.next();
        } else {
            if let Some((_, s)) = a {
                out.push(s.clone());
            }
            a = above.next();
        }
    }
    out
}
