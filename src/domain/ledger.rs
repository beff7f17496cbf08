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
        let (on_hand_effect, reserved_delta) = self.effect_of(op)?;
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
    /// What `op` would do to this ledger — its effect on `on_hand` and on `reserved` — or why it
    /// is refused before any sum is taken (a quantity out of range, more than is available or
    /// reserved). [`Ledger::decide`] then checks the sums.
    fn effect_of(&self, op: StockOp) -> Result<(OnHandEffect, i64), LedgerError> {
        let reserved = self.level.reserved;
        let positive = |q: i64| {
            if q >= 1 {
                Ok(q)
            } else {
                Err(LedgerError::NonPositiveQuantity(q))
            }
        };
        Ok(match op {
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
        })
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
