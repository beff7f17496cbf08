//! Change ids: unique per stock change, cheap to make (no system call per id): a random prefix
//! drawn once per process and a counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use uuid::Uuid;

static PREFIX: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new id, unique across processes (a 64-bit random prefix) and within one (a counter).
pub(crate) fn change_id() -> Uuid {
    let prefix = *PREFIX.get_or_init(|| Uuid::new_v4().as_u64_pair().0);
    Uuid::from_u64_pair(prefix, COUNTER.fetch_add(1, Ordering::Relaxed))
}
