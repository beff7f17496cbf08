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

/// A SKU's stock level with the version of the last change applied to it, and the units held in
/// memory for orders not yet decided.
///
/// `level` and `version` are what the database holds (or will, once the write-behind persister
/// catches up); `held` is memory's alone: units an order took while it is being decided, which
/// reach the database only with the order's decision, in the same transaction (or are dropped).
/// Held units count against `available` at once, so two orders never hold the same unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ledger {
    pub level: StockLevel,
    pub version: i64,
    pub held: i64,
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
    #[error("cannot let go of {requested} held units: only {held} held")]
    NotHeld { requested: i64, held: i64 },
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
            held: 0,
        }
    }

    /// Units that can still be promised: on hand, less what is reserved and what is held.
    pub fn available(&self) -> i64 {
        self.level.available() - self.held
    }

    /// Holds `qty` units for an order being decided: memory only, no version (nothing is
    /// written). Refused like a reservation when fewer are available.
    pub fn hold(&self, qty: i64) -> Result<Ledger, LedgerError> {
        if qty < 1 {
            return Err(LedgerError::NonPositiveQuantity(qty));
        }
        if qty > self.available() {
            return Err(LedgerError::Insufficient {
                requested: qty,
                available: self.available(),
            });
        }
        Ok(Ledger {
            held: self.held.checked_add(qty).ok_or(LedgerError::Overflow)?,
            ..*self
        })
    }

    /// Lets go of `qty` held units (the order was decided without them, or never written).
    pub fn drop_hold(&self, qty: i64) -> Result<Ledger, LedgerError> {
        if qty < 1 {
            return Err(LedgerError::NonPositiveQuantity(qty));
        }
        if qty > self.held {
            return Err(LedgerError::NotHeld {
                requested: qty,
                held: self.held,
            });
        }
        Ok(Ledger {
            held: self.held - qty,
            ..*self
        })
    }

    /// `qty` held units were committed as reservations by `changes` stock changes (one per
    /// order line): they move from `held` to `reserved`, and the version moves with the
    /// database's.
    pub fn commit_holds(&self, qty: i64, changes: i64) -> Result<Ledger, LedgerError> {
        let dropped = self.drop_hold(qty)?;
        if changes < 1 {
            return Err(LedgerError::NonPositiveQuantity(changes));
        }
        Ok(Ledger {
            level: StockLevel {
                on_hand: self.level.on_hand,
                reserved: self
                    .level
                    .reserved
                    .checked_add(qty)
                    .ok_or(LedgerError::Overflow)?,
            },
            version: self
                .version
                .checked_add(changes)
                .ok_or(LedgerError::Overflow)?,
            held: dropped.held,
        })
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
        // Held units are promised too: on hand never drops below them either.
        let promised = new_reserved
            .checked_add(self.held)
            .ok_or(LedgerError::Overflow)?;
        if new_on_hand < promised {
            return Err(LedgerError::BelowReserved {
                on_hand: new_on_hand,
                reserved: promised,
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
                held: self.held,
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

    #[derive(Debug, Clone)]
    enum HoldStep {
        Hold(i64),
        Commit(usize),
        Drop(usize),
        Op(StockOp),
    }

    fn hold_step() -> impl Strategy<Value = HoldStep> {
        prop_oneof![
            (-1i64..15).prop_map(HoldStep::Hold),
            (0usize..8).prop_map(HoldStep::Commit),
            (0usize..8).prop_map(HoldStep::Drop),
            op().prop_map(HoldStep::Op),
        ]
    }

    #[test]
    fn a_hold_counts_against_available_until_committed_or_dropped() {
        let l = Ledger::new(10, 2, 5).hold(3).unwrap();
        assert_eq!((l.available(), l.held, l.version), (5, 3, 5));
        assert_eq!(
            l.hold(6),
            Err(LedgerError::Insufficient {
                requested: 6,
                available: 5
            })
        );
        // On hand cannot be set below what is reserved and held.
        assert_eq!(
            l.decide(StockOp::SetOnHand(4)),
            Err(LedgerError::BelowReserved {
                on_hand: 4,
                reserved: 5
            })
        );
        let committed = l.commit_holds(3, 1).unwrap();
        assert_eq!(committed, Ledger::new(10, 5, 6));
        assert_eq!(l.drop_hold(3).unwrap(), Ledger::new(10, 2, 5));
        assert_eq!(
            l.drop_hold(4),
            Err(LedgerError::NotHeld {
                requested: 4,
                held: 3
            })
        );
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

        /// Holds against a reference model: memory's holds, their commits and drops, mixed
        /// with every other operation. The model keeps each order's hold by itself; the ledger
        /// keeps a sum. Every decision agrees, nothing promised (reserved or held) ever exceeds
        /// on hand, a commit moves exactly its units to `reserved` and the version by its
        /// changes, and once every hold is committed or dropped the ledger is the database's
        /// (what the model's committed operations alone produce).
        #[test]
        fn holds_match_a_reference_model(start in 0i64..60, steps in prop::collection::vec(hold_step(), 0..200)) {
            let mut l = Ledger::new(start, 0, 0);
            let (mut on_hand, mut reserved, mut version) = (start, 0i64, 0i64);
            let mut holds: Vec<i64> = Vec::new();
            for step in steps {
                let held: i64 = holds.iter().sum();
                match step {
                    HoldStep::Hold(q) => {
                        let fits = q >= 1 && q <= on_hand - reserved - held;
                        match l.hold(q) {
                            Ok(next) => { prop_assert!(fits, "held {} on {:?}", q, l); holds.push(q); l = next; }
                            Err(_) => prop_assert!(!fits, "refused to hold {} on {:?}", q, l),
                        }
                    }
                    HoldStep::Commit(i) | HoldStep::Drop(i) if holds.is_empty() => {
                        let _ = i;
                        prop_assert!(l.drop_hold(1).is_err());
                        prop_assert!(l.commit_holds(1, 1).is_err());
                    }
                    HoldStep::Commit(i) => {
                        let q = holds.remove(i % holds.len());
                        let next = l.commit_holds(q, 1).expect("a hold commits");
                        reserved += q;
                        version += 1;
                        prop_assert_eq!(next.level.reserved, l.level.reserved + q);
                        prop_assert_eq!(next.version, l.version + 1);
                        prop_assert_eq!(next.available(), l.available());
                        l = next;
                    }
                    HoldStep::Drop(i) => {
                        let q = holds.remove(i % holds.len());
                        let next = l.drop_hold(q).expect("a hold drops");
                        prop_assert_eq!(next.available(), l.available() + q);
                        prop_assert_eq!((next.level, next.version), (l.level, l.version));
                        l = next;
                    }
                    HoldStep::Op(op) => {
                        let q = op.quantity();
                        let expected = match op {
                            StockOp::Reserve(_) if q >= 1 && q <= on_hand - reserved - held => Some((on_hand, reserved + q)),
                            StockOp::Release(_) if q >= 1 && q <= reserved => Some((on_hand, reserved - q)),
                            StockOp::CommitSale(_) if q >= 1 && q <= reserved => Some((on_hand - q, reserved - q)),
                            StockOp::SetOnHand(_) if q >= 0 && q >= reserved + held => Some((q, reserved)),
                            StockOp::Adjust(_) if q != 0 && on_hand + q >= reserved + held => Some((on_hand + q, reserved)),
                            _ => None,
                        };
                        match (l.decide(op), expected) {
                            (Ok(change), Some((h, r))) => {
                                prop_assert_eq!((change.after.level.on_hand, change.after.level.reserved), (h, r));
                                prop_assert_eq!(change.after.held, held);
                                l = change.after;
                                on_hand = h;
                                reserved = r;
                                version += 1;
                            }
                            (Err(_), None) => {}
                            (got, want) => prop_assert!(false, "{:?} on {:?}: got {:?}, the model says {:?}", op, l, got, want),
                        }
                    }
                }
                prop_assert_eq!(l.held, holds.iter().sum::<i64>());
                prop_assert!(l.available() >= 0, "{:?}", l);
                prop_assert!(l.level.reserved >= 0);
            }
            for q in holds.drain(..) {
                l = l.drop_hold(q).expect("a hold drops");
            }
            prop_assert_eq!(l, Ledger::new(on_hand, reserved, version));
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
