//! The ledger's tests: its rules one by one, and property tests against reference models.
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
