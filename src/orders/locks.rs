//! The per-order locks: the checkout consumer, a cancel and the sweeper take an order one at a
//! time in this process (striped, so the number of locks is fixed).

use uuid::Uuid;

const LOCK_STRIPES: usize = 1024;

pub(super) struct OrderLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Never used while the stripes are all there; there so a lookup cannot panic.
    spare: tokio::sync::Mutex<()>,
}

impl OrderLocks {
    pub fn new() -> OrderLocks {
        OrderLocks {
            stripes: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            spare: tokio::sync::Mutex::new(()),
        }
    }

    /// The lock of this order.
    pub fn of(&self, order_id: Uuid) -> &tokio::sync::Mutex<()> {
        let i = (order_id.as_u128() % LOCK_STRIPES as u128) as usize;
        self.stripes.get(i).unwrap_or(&self.spare)
    }
}
