//! The SKU stock ledger: how many units are on hand, how many are held for orders, and how each
//! operation changes them.
//!
//! Invariants, enforced by every operation (and proven by the property tests below):
//! `on_hand >= 0`, `reserved >= 0`, `available = on_hand - reserved >= 0`, and every accepted
//! operation bumps `version` by exactly one. The database repeats the first three as `CHECK`
//! constraints and guards every write with the version, so a wrong in-memory ledger is refused
//! there too.

use serde::Serialize;

/// Units of one SKU: physically on hand, and held (reserved) for orders not yet shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
}

impl StockLevel {
    /// Units that can still be promised to a new order.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    fn is_valid(&self) -> bool {
        self.on_hand >= 0 && self.reserved >= 0 && self.reserved <= self.on_hand
    }
}

/// A SKU's stock level with the version of the last change applied to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ledger {
    pub level: StockLevel,
    pub version: i64,
}

/// One operation on a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockOp {
    /// Hold `qty` units for an order.
    Reserve(i64),
    /// Give back `qty` held units (order rejected, failed or cancelled).
    Release(i64),
    /// `qty` held units leave the warehouse: both on hand and reserved drop.
    CommitSale(i64),
    /// The warehouse counted the shelf: on hand becomes exactly this.
    SetOnHand(i64),
    /// Add (or, negative, remove) units on hand.
    Adjust(i64),
}

impl StockOp {
    /// Stable name, stored with each stock event.
    pub fn kind(&self) -> &'static str {
        match self {
            StockOp::Reserve(_) => "reserve",
            StockOp::Release(_) => "release",
            StockOp::CommitSale(_) => "commit_sale",
            StockOp::SetOnHand(_) => "set_on_hand",
            StockOp::Adjust(_) => "adjust",
        }
    }

    /// The operation's number (quantity, new on-hand count or delta).
    pub fn quantity(&self) -> i64 {
        match *self {
            StockOp::Reserve(q)
            | StockOp::Release(q)
            | StockOp::CommitSale(q)
            | StockOp::SetOnHand(q)
            | StockOp::Adjust(q) => q,
        }
    }
}

/// Why an operation was refused. The ledger is unchanged when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("quantity must be at least 1, got {0}")]
    NonPositiveQuantity(i64),
    #[error("only {available} available, {requested} requested")]
    Insufficient { requested: i64, available: i64 },
    #[error("cannot release or sell {requested}: only {reserved} reserved")]
    NotReserved { requested: i64, reserved: i64 },
    #[error("on hand cannot be negative (would be {0})")]
    NegativeOnHand(i64),
    #[error("on hand {on_hand} would be below the {reserved} units reserved for orders")]
    BelowReserved { on_hand: i64, reserved: i64 },
    #[error("adjustment delta must not be zero")]
    ZeroDelta,
    #[error("number out of range")]
    Overflow,
}

/// How a change affects `on_hand` when written to the database: set outright (a warehouse count)
/// or moved by a delta. Deltas let the database check the change against what it holds, not
/// against what memory believes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHandEffect {
    Set(i64),
    Delta(i64),
}

impl OnHandEffect {
    /// The effect of doing `self` and then `next`.
    pub fn then(self, next: OnHandEffect) -> OnHandEffect {
        match (self, next) {
            (_, OnHandEffect::Set(v)) => OnHandEffect::Set(v),
            (OnHandEffect::Set(v), OnHandEffect::Delta(d)) => OnHandEffect::Set(v + d),
            (OnHandEffect::Delta(a), OnHandEffect::Delta(b)) => OnHandEffect::Delta(a + b),
        }
    }

    /// Applies the effect to a stored on-hand value.
    pub fn apply_to(self, on_hand: i64) -> i64 {
        match self {
            OnHandEffect::Set(v) => v,
            OnHandEffect::Delta(d) => on_hand + d,
        }
    }
}

/// What an accepted operation did: enough to write it to the database and to record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockChange {
    pub op: StockOp,
    pub on_hand: OnHandEffect,
    pub reserved_delta: i64,
    /// The version the change was decided against.
    pub version_before: i64,
    /// The ledger after the change (its version is `version_before + 1`).
    pub after: Ledger,
}

impl Ledger {
    pub fn new(on_hand: i64, reserved: i64, version: i64) -> Ledger {
        Ledger {
            level: StockLevel { on_hand, reserved },
            version,
        }
    }

    pub fn available(&self) -> i64 {
        self.level.available()
    }

    /// Decides `op` against this ledger. Pure: returns the change (with the new ledger in
    /// `after`) or why it is refused, and leaves `self` as it was.
    pub fn decide(&self, op: StockOp) -> Result<StockChange, LedgerError> {
        let StockLevel { on_hand, reserved } = self.level;
        let positive = |q: i64| {
            if q >= 1 {
                Ok(q)
            } else {
                Err(LedgerError::NonPositiveQuantity(q))
            }
        };
        let (on_hand_effect, reserved_delta) = match op {
            StockOp::Reserve(q) => {
                let q = positive(q)?;
                if q > self.available() {
                    return Err(LedgerError::Insufficient {
                        requested: q,
                        available: self.available(),
                    });
                }
                (OnHandEffect::Delta(0), q)
            }
            StockOp::Release(q) | StockOp::CommitSale(q) => {
                let q = positive(q)?;
                if q > reserved {
                    return Err(LedgerError::NotReserved {
                        requested: q,
                        reserved,
                    });
                }
                let on_hand_delta = if matches!(op, StockOp::CommitSale(_)) {
                    -q
                } else {
                    0
                };
                (OnHandEffect::Delta(on_hand_delta), -q)
            }
            StockOp::SetOnHand(v) => {
                if v < 0 {
                    return Err(LedgerError::NegativeOnHand(v));
                }
                (OnHandEffect::Set(v), 0)
            }
            StockOp::Adjust(d) => {
                if d == 0 {
                    return Err(LedgerError::ZeroDelta);
                }
                (OnHandEffect::Delta(d), 0)
            }
        };
        let new_on_hand = match on_hand_effect {
            OnHandEffect::Set(v) => v,
            OnHandEffect::Delta(d) => on_hand.checked_add(d).ok_or(LedgerError::Overflow)?,
        };
        let new_reserved = reserved
            .checked_add(reserved_delta)
            .ok_or(LedgerError::Overflow)?;
        if new_on_hand < 0 {
            return Err(LedgerError::NegativeOnHand(new_on_hand));
        }
        if new_on_hand < new_reserved {
            return Err(LedgerError::BelowReserved {
                on_hand: new_on_hand,
                reserved: new_reserved,
            });
        }
        let level = StockLevel {
            on_hand: new_on_hand,
            reserved: new_reserved,
        };
        debug_assert!(level.is_valid());
        Ok(StockChange {
            op,
            on_hand: on_hand_effect,
            reserved_delta,
            version_before: self.version,
            after: Ledger {
                level,
                version: self.version.checked_add(1).ok_or(LedgerError::Overflow)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ledger(on_hand: i64, reserved: i64) -> Ledger {
        Ledger::new(on_hand, reserved, 7)
    }

    #[test]
    fn reserve_holds_units_and_bumps_version() {
        let c = ledger(10, 2).decide(StockOp::Reserve(3)).unwrap();
        assert_eq!(c.after, Ledger::new(10, 5, 8));
        assert_eq!(c.version_before, 7);
        assert_eq!(c.reserved_delta, 3);
        assert_eq!(c.on_hand, OnHandEffect::Delta(0));
        assert_eq!(c.after.available(), 5);
    }

    #[test]
    fn reserve_refuses_more_than_available() {
        assert_eq!(
            ledger(10, 8).decide(StockOp::Reserve(3)),
            Err(LedgerError::Insufficient {
                requested: 3,
                available: 2
            })
        );
        assert_eq!(
            ledger(10, 0).decide(StockOp::Reserve(0)),
            Err(LedgerError::NonPositiveQuantity(0))
        );
        assert_eq!(
            ledger(10, 0).decide(StockOp::Reserve(-1)),
            Err(LedgerError::NonPositiveQuantity(-1))
        );
    }

    #[test]
    fn release_and_sale() {
        let l = ledger(10, 4);
        assert_eq!(
            l.decide(StockOp::Release(4)).unwrap().after,
            Ledger::new(10, 0, 8)
        );
        let sale = l.decide(StockOp::CommitSale(3)).unwrap();
        assert_eq!(sale.after, Ledger::new(7, 1, 8));
        assert_eq!(sale.on_hand, OnHandEffect::Delta(-3));
        assert_eq!(sale.reserved_delta, -3);
        assert_eq!(
            l.decide(StockOp::Release(5)),
            Err(LedgerError::NotReserved {
                requested: 5,
                reserved: 4
            })
        );
    }

    #[test]
    fn warehouse_updates_cannot_strand_reservations() {
        let l = ledger(10, 6);
        assert_eq!(
            l.decide(StockOp::SetOnHand(5)),
            Err(LedgerError::BelowReserved {
                on_hand: 5,
                reserved: 6
            })
        );
        assert_eq!(
            l.decide(StockOp::SetOnHand(-1)),
            Err(LedgerError::NegativeOnHand(-1))
        );
        assert_eq!(
            l.decide(StockOp::SetOnHand(6)).unwrap().on_hand,
            OnHandEffect::Set(6)
        );
        assert_eq!(
            l.decide(StockOp::Adjust(-5)),
            Err(LedgerError::BelowReserved {
                on_hand: 5,
                reserved: 6
            })
        );
        assert_eq!(
            l.decide(StockOp::Adjust(-4)).unwrap().after,
            Ledger::new(6, 6, 8)
        );
        assert_eq!(l.decide(StockOp::Adjust(0)), Err(LedgerError::ZeroDelta));
        assert_eq!(
            Ledger::new(i64::MAX, 0, 0).decide(StockOp::Adjust(1)),
            Err(LedgerError::Overflow)
        );
    }

    #[test]
    fn effects_compose_like_applying_them_in_order() {
        use OnHandEffect::*;
        assert_eq!(Delta(2).then(Delta(3)), Delta(5));
        assert_eq!(Set(4).then(Delta(-1)), Set(3));
        assert_eq!(Delta(9).then(Set(1)), Set(1));
        assert_eq!(Set(4).then(Set(1)).apply_to(100), 1);
    }

    fn op() -> impl Strategy<Value = StockOp> {
        prop_oneof![
            (-2i64..20).prop_map(StockOp::Reserve),
            (-2i64..20).prop_map(StockOp::Release),
            (-2i64..20).prop_map(StockOp::CommitSale),
            (-5i64..60).prop_map(StockOp::SetOnHand),
            (-30i64..30).prop_map(StockOp::Adjust),
        ]
    }

    proptest! {
        /// Random sequences never break the invariants, refused operations change nothing,
        /// and the coalesced database effect of the accepted ones lands exactly on memory.
        #[test]
        fn invariants_hold_for_any_sequence(start in 0i64..50, ops in prop::collection::vec(op(), 0..200)) {
            let mut l = Ledger::new(start, 0, 0);
            let mut effect = OnHandEffect::Delta(0);
            let mut reserved_delta = 0;
            for op in ops {
                // A refused operation leaves `l` as it was.
                if let Ok(change) = l.decide(op) {
                    prop_assert_eq!(change.version_before, l.version);
                    prop_assert_eq!(change.after.version, l.version + 1);
                    effect = effect.then(change.on_hand);
                    reserved_delta += change.reserved_delta;
                    l = change.after;
                }
                prop_assert!(l.available() >= 0);
                prop_assert!(l.level.reserved >= 0);
                prop_assert_eq!(l.level.on_hand, l.available() + l.level.reserved);
            }
            prop_assert_eq!(effect.apply_to(start), l.level.on_hand);
            prop_assert_eq!(reserved_delta, l.level.reserved);
        }

        /// Liveness: every decision equals that of a plain reference model (counts in `i128`, the
        /// rules written out once more), so a ledger that refuses what it should grant — or
        /// grants what it should refuse — fails.
        #[test]
        fn every_decision_matches_a_reference_model(start in 0i64..50, ops in prop::collection::vec(op(), 0..200)) {
            let mut l = Ledger::new(start, 0, 0);
            let (mut on_hand, mut reserved) = (i128::from(start), 0i128);
            for op in ops {
                let q = i128::from(op.quantity());
                let expected: Option<(i128, i128)> = match op {
                    StockOp::Reserve(_) if q >= 1 && q <= on_hand - reserved => Some((on_hand, reserved + q)),
                    StockOp::Release(_) if q >= 1 && q <= reserved => Some((on_hand, reserved - q)),
                    StockOp::CommitSale(_) if q >= 1 && q <= reserved => Some((on_hand - q, reserved - q)),
                    StockOp::SetOnHand(_) if q >= 0 && q >= reserved => Some((q, reserved)),
                    StockOp::Adjust(_) if q != 0 && on_hand + q >= reserved => Some((on_hand + q, reserved)),
                    _ => None,
                };
                match (l.decide(op), expected) {
                    (Ok(change), Some((h, r))) => {
                        prop_assert_eq!((i128::from(change.after.level.on_hand), i128::from(change.after.level.reserved)), (h, r), "{:?}", op);
                        l = change.after;
                        on_hand = h;
                        reserved = r;
                    }
                    (Err(_), None) => {}
                    (got, want) => prop_assert!(false, "{:?} on {:?}: got {:?}, the model says {:?}", op, l, got, want),
                }
            }
        }

        /// Reservations never oversell: the units granted never exceed the stock.
        #[test]
        fn reservations_never_exceed_stock(stock in 0i64..100, asks in prop::collection::vec(1i64..10, 0..100)) {
            let mut l = Ledger::new(stock, 0, 0);
            let mut granted = 0;
            for q in asks {
                if let Ok(c) = l.decide(StockOp::Reserve(q)) {
                    granted += q;
                    l = c.after;
                }
            }
            prop_assert!(granted <= stock);
            prop_assert_eq!(l.level.reserved, granted);
        }
    }
}
