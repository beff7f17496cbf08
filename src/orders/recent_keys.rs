//! The idempotency keys this process has recorded or seen, in memory: what lets a shed answer
//! skip the database. While admission sheds, a checkout whose key is here goes on to its
//! 200/202 (or 422 mismatch) through the usual path; any other gets 503 without touching a
//! shared resource (or, about to be told 409 for short stock, is looked up in the database
//! first: `Intake::admit`). The set only opens that door: a stale or colliding entry lets one request
//! through admission to the path that checks the key properly, never answers for it.
//!
//! Bounded: two generations of at most `capacity` hashes each; when the current one is full it
//! becomes the previous one and the oldest generation is dropped.

use std::collections::HashSet;
use std::sync::Mutex;

/// A customer's key as the set holds it.
pub(super) fn slot_hash(customer: &str, key: &str) -> u64 {
    crate::domain::fnv1a(customer.bytes().chain([0]).chain(key.bytes()))
}

#[derive(Debug)]
pub(super) struct RecentKeys {
    capacity: usize,
    generations: Mutex<(HashSet<u64>, HashSet<u64>)>,
}

impl RecentKeys {
    pub fn new(capacity: usize) -> RecentKeys {
        RecentKeys {
            capacity: capacity.max(1),
            generations: Mutex::new((HashSet::new(), HashSet::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashSet<u64>, HashSet<u64>)> {
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, customer: &str, key: &str) {
        let hash = slot_hash(customer, key);
        let mut g = self.lock();
        if g.0.contains(&hash) {
            return;
        }
        if g.0.len() >= self.capacity {
            let full = std::mem::take(&mut g.0);
            g.1 = full;
        }
        g.0.insert(hash);
    }

    /// Forgets a key (one recorded and let go again); another key of the same hash goes too,
    /// which only closes admission's door to it.
    pub fn remove(&self, customer: &str, key: &str) {
        let hash = slot_hash(customer, key);
        let mut g = self.lock();
        g.0.remove(&hash);
        g.1.remove(&hash);
    }

    pub fn contains(&self, customer: &str, key: &str) -> bool {
        let hash = slot_hash(customer, key);
        let g = self.lock();
        g.0.contains(&hash) || g.1.contains(&hash)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.0.len() + g.1.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_belongs_to_its_customer() {
        let keys = RecentKeys::new(10);
        keys.insert("c-1", "k");
        assert!(keys.contains("c-1", "k"));
        assert!(!keys.contains("c-2", "k"));
        assert!(!keys.contains("c-1", "k2"));
        // The separator keeps ("c-1", "0k") and ("c-10", "k") apart.
        assert!(!keys.contains("c-", "1k"));
        // Removed from whichever generation holds it.
        let keys = RecentKeys::new(1);
        keys.insert("c-1", "k");
        keys.insert("c-2", "k");
        keys.remove("c-1", "k");
        keys.remove("c-2", "k");
        assert!(!keys.contains("c-1", "k") && !keys.contains("c-2", "k"));
    }

    #[test]
    fn it_keeps_at_most_two_generations() {
        let keys = RecentKeys::new(100);
        for i in 0..1000 {
            keys.insert("c", &format!("k{i}"));
            assert!(keys.len() <= 200);
        }
        // The newest are kept; the oldest went with their generation.
        assert!(keys.contains("c", "k999"));
        assert!(keys.contains("c", "k850"));
        assert!(!keys.contains("c", "k0"));
    }
}
