//! A Bloom filter of the order ids that exist, so intake asks the database about an
//! idempotency key only when the key may have been used before. A "no" is certain; a "maybe"
//! (a key seen before, or a rare false positive) costs the lookup it always used to cost.
//!
//! Lock-free: an array of atomic words, set with `fetch_or`.

use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// Bits per expected key and probes per key: about a 1 % false-positive rate at capacity.
const BITS_PER_KEY: usize = 10;
const PROBES: u64 = 7;

pub struct SeenOrders {
    words: Vec<AtomicU64>,
    bits: u64,
}

impl SeenOrders {
    /// A filter sized for `expected` orders (more still work, with more false positives).
    pub fn with_capacity(expected: usize) -> SeenOrders {
        let bits = (expected.max(1024) * BITS_PER_KEY).next_power_of_two() as u64;
        let words = (0..bits / 64).map(|_| AtomicU64::new(0)).collect();
        SeenOrders { words, bits }
    }

    /// Order ids are UUIDv5 (SHA-1) values: their two halves are already uniform hashes.
    fn probes(&self, id: &Uuid) -> impl Iterator<Item = u64> + '_ {
        let (h1, h2) = id.as_u64_pair();
        let h2 = h2 | 1;
        (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & (self.bits - 1))
    }

    pub fn insert(&self, id: &Uuid) {
        for bit in self.probes(id) {
            if let Some(word) = self.words.get((bit / 64) as usize) {
                word.fetch_or(1 << (bit % 64), Ordering::Relaxed);
            }
        }
    }

    /// `false`: this order certainly does not exist. `true`: it may.
    pub fn may_contain(&self, id: &Uuid) -> bool {
        self.probes(id).all(|bit| {
            self.words
                .get((bit / 64) as usize)
                .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (bit % 64)) != 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let seen = SeenOrders::with_capacity(10_000);
        let ids: Vec<Uuid> = (0..10_000)
            .map(|i| crate::orders::order_id_for(&format!("key-{i}")))
            .collect();
        for id in &ids {
            seen.insert(id);
        }
        assert!(ids.iter().all(|id| seen.may_contain(id)));
        let false_positives = (0..10_000)
            .map(|i| crate::orders::order_id_for(&format!("other-{i}")))
            .filter(|id| seen.may_contain(id))
            .count();
        assert!(
            false_positives < 300,
            "{false_positives} false positives in 10,000"
        );
    }
}
