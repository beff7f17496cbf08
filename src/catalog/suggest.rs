//! Similar products in stock: the ranking of a product's neighbours does not depend on stock and
//! is computed once and cached (until a product changes); each request then only filters that
//! ranking by the live availability cells — a handful of atomic loads.

use std::collections::HashSet;
use std::sync::Arc;

use super::index::price_neighbours;
use super::Catalog;
use crate::domain::similarity::{self, Suggestion};
use crate::domain::{Product, Sku};

/// How many ranked neighbours are kept per product.
const RANKED_DEPTH: usize = 64;
/// Most products looked at when the cached ranking has too few in stock.
const FALLBACK_SCAN: usize = 4096;

impl Catalog {
    /// The stock-independent ranking of a product's neighbours, cached.
    fn ranking(&self, base: &Product) -> Arc<Vec<(Sku, f64)>> {
        if let Some(r) = self.inner.ranked.get(&base.sku) {
            return Arc::clone(r.value());
        }
        let candidates = self.read_index().candidates(base);
        let mut scored: Vec<(Sku, f64)> = candidates
            .into_iter()
            .filter_map(|sku| {
                let p = self.get(&sku)?;
                Some((sku, similarity::score(base, &p)))
            })
            .collect();
        sort_ranked(&mut scored);
        scored.truncate(RANKED_DEPTH);
        let ranked = Arc::new(scored);
        self.inner
            .ranked
            .insert(base.sku.clone(), Arc::clone(&ranked));
        ranked
    }

    /// Up to `limit` products similar to `sku` with stock now, best first; `None` for an
    /// unknown SKU. Never the product itself, never one with nothing available.
    pub fn similar(&self, sku: &Sku, limit: usize) -> Option<Vec<Suggestion>> {
        let base = self.get(sku)?;
        let mut out = Vec::with_capacity(limit);
        if limit == 0 {
            return Some(out);
        }
        let ranked = self.ranking(&base);
        for (candidate, score) in ranked.iter() {
            if let Some(s) = self.suggestion(candidate, *score) {
                out.push(s);
                if out.len() == limit {
                    return Some(out);
                }
            }
        }
        // Too few of the nearest neighbours are in stock: widen to the whole catalog, walking
        // outwards by price, and rank what is found.
        let seen: HashSet<&Sku> = ranked.iter().map(|(s, _)| s).collect();
        let wider = price_neighbours(
            &self.read_index().price_all,
            base.price_cents,
            &base.sku,
            FALLBACK_SCAN / 2,
        );
        let mut extra: Vec<(Sku, f64)> = wider
            .into_iter()
            .filter(|s| !seen.contains(s) && self.available(s) > 0)
            .filter_map(|s| {
                let p = self.get(&s)?;
                Some((s, similarity::score(&base, &p)))
            })
            .collect();
        sort_ranked(&mut extra);
        for (candidate, score) in extra {
            if out.len() == limit {
                break;
            }
            if let Some(s) = self.suggestion(&candidate, score) {
                out.push(s);
            }
        }
        Some(out)
    }

    fn suggestion(&self, sku: &Sku, score: f64) -> Option<Suggestion> {
        let available = self.available(sku);
        if available <= 0 {
            return None;
        }
        let p = self.get(sku)?;
        Some(Suggestion {
            sku: sku.clone(),
            name: p.name.clone(),
            price_cents: p.price_cents,
            available,
            score: (score * 1000.0).round() / 1000.0,
        })
    }
}

/// Best score first; SKU order breaks ties so rankings are stable.
fn sort_ranked(v: &mut [(Sku, f64)]) {
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}
