//! The catalog in memory: every product, indexed by category, tag and price, and the suggestion
//! engine that finds similar products in stock.
//!
//! Suggestions run for every loser of a flash sale, so they must stay cheap: the ranking of a
//! product's neighbours does not depend on stock and is computed once and cached (until a product
//! changes); each request then only filters that ranking by the live availability cells the SKU
//! actors keep up to date — a handful of atomic loads.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use dashmap::DashMap;

use crate::domain::{Product, Sku};
use crate::engine::AvailabilityBoard;
use index::Index;

mod index;
mod suggest;

pub use crate::domain::similarity::Suggestion;

/// A page of products.
pub struct Page {
    pub products: Vec<Arc<Product>>,
    pub next_cursor: Option<String>,
}

struct Inner {
    products: DashMap<Sku, Arc<Product>>,
    index: RwLock<Index>,
    availability: AvailabilityBoard,
    ranked: DashMap<Sku, Arc<Vec<(Sku, f64)>>>,
}

/// The in-memory catalog; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

impl Catalog {
    /// An empty catalog reading availability from `availability`.
    pub fn new(availability: AvailabilityBoard) -> Catalog {
        Catalog {
            inner: Arc::new(Inner {
                products: DashMap::new(),
                index: RwLock::new(Index::default()),
                availability,
                ranked: DashMap::new(),
            }),
        }
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a product.
    pub fn upsert(&self, product: Product) {
        let product = Arc::new(product);
        {
            let mut index = self.inner.index.write().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = self.inner.products.get(&product.sku) {
                index.remove(old.value());
            }
            index.insert(&product);
            self.inner
                .products
                .insert(product.sku.clone(), Arc::clone(&product));
        }
        // Any product's neighbours may have changed; rankings are rebuilt lazily.
        self.inner.ranked.clear();
    }

    pub fn get(&self, sku: &Sku) -> Option<Arc<Product>> {
        self.inner.products.get(sku).map(|p| Arc::clone(p.value()))
    }

    pub fn len(&self) -> usize {
        self.inner.products.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.products.is_empty()
    }

    /// Units of a SKU available now.
    pub fn available(&self, sku: &Sku) -> i64 {
        self.inner.availability.available(sku)
    }

    /// Products in SKU order, filtered by category and/or tag, after the cursor SKU.
    pub fn list(
        &self,
        category: Option<&str>,
        tag: Option<&str>,
        limit: usize,
        after: Option<&Sku>,
    ) -> Page {
        let index = self.read_index();
        let empty = BTreeSet::new();
        let base: &BTreeSet<Sku> = match (category, tag) {
            (Some(c), _) => index.by_category.get(&c.to_lowercase()).unwrap_or(&empty),
            (None, Some(t)) => index.by_tag.get(&t.to_lowercase()).unwrap_or(&empty),
            (None, None) => &index.all,
        };
        let tag = tag.map(str::to_lowercase);
        let start = match after {
            Some(s) => Bound::Excluded(s),
            None => Bound::Unbounded,
        };
        let mut products = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for sku in base.range((start, Bound::Unbounded)) {
            let Some(p) = self.get(sku) else { continue };
            if let Some(t) = &tag {
                if !p.tags.contains(t) {
                    continue;
                }
            }
            if products.len() == limit {
                more = true;
                break;
            }
            products.push(p);
        }
        let next_cursor = if more {
            products.last().map(|p| p.sku.to_string())
        } else {
            None
        };
        Page {
            products,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn product(sku: &str, category: &str, tags: &[&str], price: i64) -> Product {
        Product {
            sku: Sku::parse(sku).unwrap(),
            name: format!("name {sku}"),
            category: category.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            price_cents: price,
            currency: "BRL".into(),
            attributes: Default::default(),
        }
    }

    fn catalog(items: &[(Product, i64)]) -> (Catalog, AvailabilityBoard) {
        let board = AvailabilityBoard::default();
        let c = Catalog::new(board.clone());
        for (p, stock) in items {
            board.cell(&p.sku).store(*stock, Ordering::Relaxed);
            c.upsert(p.clone());
        }
        (c, board)
    }

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    fn skus(v: &[Suggestion]) -> Vec<&str> {
        v.iter().map(|s| s.sku.as_str()).collect()
    }

    #[test]
    fn closest_product_first_and_never_itself_or_out_of_stock() {
        let (c, _) = catalog(&[
            (product("RUN-1", "shoes", &["running", "men"], 30000), 0),
            (product("RUN-2", "shoes", &["running", "men"], 31000), 5),
            (product("RUN-3", "shoes", &["running"], 45000), 5),
            (product("BOOT-1", "shoes", &["hiking"], 30000), 5),
            (product("RUN-4", "shoes", &["running", "men"], 29000), 0),
            (product("SOCK-1", "socks", &["running"], 3000), 5),
            (product("MUG-1", "kitchen", &[], 30000), 5),
        ]);
        let s = c.similar(&sku("RUN-1"), 5).unwrap();
        assert_eq!(skus(&s)[..3], ["RUN-2", "RUN-3", "BOOT-1"]);
        assert!(!skus(&s).contains(&"RUN-1"));
        assert!(!skus(&s).contains(&"RUN-4"), "out of stock");
        assert!(s.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(s.iter().all(|x| x.available > 0));
        assert_eq!(c.similar(&sku("NOPE"), 5), None);
    }

    #[test]
    fn a_lonely_product_still_gets_suggestions_by_price_and_tags() {
        let (c, _) = catalog(&[
            (product("TENT-1", "camping", &["outdoor"], 50000), 3),
            (product("BIKE-1", "cycling", &["outdoor"], 90000), 3),
            (product("LAMP-1", "home", &[], 52000), 3),
            (product("PEN-1", "office", &[], 300), 3),
        ]);
        let s = c.similar(&sku("TENT-1"), 3).unwrap();
        assert_eq!(skus(&s), ["BIKE-1", "LAMP-1", "PEN-1"]);
    }

    #[test]
    fn suggestions_follow_stock() {
        let (c, board) = catalog(&[
            (product("A", "toys", &["lego"], 1000), 1),
            (product("B", "toys", &["lego"], 1000), 2),
            (product("C", "toys", &["lego"], 1100), 2),
        ]);
        assert_eq!(skus(&c.similar(&sku("A"), 5).unwrap()), ["B", "C"]);
        board.cell(&sku("B")).store(0, Ordering::Relaxed);
        assert_eq!(skus(&c.similar(&sku("A"), 5).unwrap()), ["C"]);
        board.cell(&sku("C")).store(0, Ordering::Relaxed);
        assert!(c.similar(&sku("A"), 5).unwrap().is_empty());
        board.cell(&sku("B")).store(7, Ordering::Relaxed);
        let back = c.similar(&sku("A"), 5).unwrap();
        assert_eq!(skus(&back), ["B"]);
        assert_eq!(back[0].available, 7);
    }

    #[test]
    fn fallback_finds_stock_beyond_the_cached_neighbours() {
        let mut items: Vec<(Product, i64)> = (0..200)
            .map(|i| {
                (
                    product(&format!("T{i:03}"), "tools", &["drill"], 1000 + i),
                    0,
                )
            })
            .collect();
        items.push((product("FAR", "garden", &[], 1_000_000), 4));
        let (c, _) = catalog(&items);
        assert_eq!(skus(&c.similar(&sku("T000"), 3).unwrap()), ["FAR"]);
    }

    #[test]
    fn listing_filters_and_pages() {
        let (c, _) = catalog(&[
            (product("A1", "Toys", &["lego"], 1), 0),
            (product("A2", "toys", &["puzzle"], 1), 0),
            (product("A3", "toys", &["lego"], 1), 0),
            (product("B1", "books", &["lego"], 1), 0),
        ]);
        let p = c.list(Some("TOYS"), None, 2, None);
        assert_eq!(p.products.len(), 2);
        assert_eq!(p.next_cursor.as_deref(), Some("A2"));
        let p2 = c.list(Some("toys"), None, 2, Some(&sku("A2")));
        assert_eq!(p2.products.len(), 1);
        assert_eq!(p2.next_cursor, None);
        let lego = c.list(None, Some("lego"), 10, None);
        let names: Vec<&str> = lego.products.iter().map(|p| p.sku.as_str()).collect();
        assert_eq!(names, ["A1", "A3", "B1"]);
        let both = c.list(Some("toys"), Some("lego"), 10, None);
        assert_eq!(both.products.len(), 2);
        // A replaced product moves between indexes.
        c.upsert(product("A3", "books", &["puzzle"], 1));
        assert_eq!(
            c.list(Some("toys"), Some("lego"), 10, None).products.len(),
            1
        );
    }
}
