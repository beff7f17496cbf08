//! The order flow as pure functions (issue 19, item 1): where an order goes next, given where it
//! is and what the last step found out. No I/O, no clock: the checkout consumer
//! (`orders/pipeline.rs`) carries out each step and feeds back what it learned, the way the
//! engine carries out the ledger's operations (`ledger.rs`).
//!
//! ```text
//!  received ─Reserve─▶ all held ─PayAndDecide─▶ approved ─▶ scheduled
//!     │                                └──────declined ─▶ failed ─Release─▶ settled
//!     └─short─▶ rejected ─Release (what it kept)─▶ settled
//!  reserved (a slow gateway made it visible) ─PayAndDecide─▶ …
//!  decided and settled ─Announce─▶ Done (acknowledged)
//! ```
//!
//! Every step is idempotent where it acts (a reservation is keyed by the order, a transition
//! moves only from the status it expects), so after a crash the next delivery asks [`next`]
//! again from the recorded position and resumes; the property test below drives random crashes
//! through it against a reference model.

use super::order::{OrderStatus, Origin, RejectionReason};

/// What the consumer knows of an order between two steps: what is recorded, and whether this
/// attempt itself knows which lines the order holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub status: OrderStatus,
    /// Every reservation of the order is released (or it never held any).
    pub settled: bool,
    /// This attempt reserved the lines itself (a fresh order), so it knows what is held without
    /// asking the stock records.
    pub holds_known: bool,
    /// This attempt has announced the decision (its events confirmed). Never recorded: every
    /// delivery announces again (at least once; `message_id`s are stable).
    pub announced: bool,
}

/// The next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reserve every line at its SKU's actor (idempotent per order and line).
    Reserve,
    /// Authorize the payment, outside every actor, and decide: scheduled or failed.
    PayAndDecide,
    /// Release the lines this attempt holds, then record the order settled.
    ReleaseHeld,
    /// Release what the stock records say the order holds, then record it settled.
    ReleaseRecorded,
    /// Decided and settled: publish the decision's events and wait for their confirms.
    Announce,
    /// Decided, settled and announced: acknowledge the delivery.
    Done,
}

/// Where an order goes from `p`.
pub fn next(p: Position) -> Step {
    match p.status {
        OrderStatus::Received => Step::Reserve,
        OrderStatus::Reserved => Step::PayAndDecide,
        status if status.releases_stock() && !p.settled => {
            if p.holds_known {
                Step::ReleaseHeld
            } else {
                Step::ReleaseRecorded
            }
        }
        _ if !p.announced => Step::Announce,
        _ => Step::Done,
    }
}

/// Where the payment's answer takes an order that holds every line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPayment {
    /// Approved: a delivery slot is booked and the order scheduled.
    Schedule,
    /// Declined: failed with this reason, its lines still held (released next, then settled).
    Fail { reason: RejectionReason },
}

/// Where the gateway's answer takes a paid-for order.
pub fn after_payment(approved: bool) -> AfterPayment {
    if approved {
        AfterPayment::Schedule
    } else {
        AfterPayment::Fail {
            reason: RejectionReason::PaymentDeclined,
        }
    }
}

/// What a reservation of every line found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    All,
    /// Some lines are short; `kept_any` when others were reserved anyway (to release after).
    Short {
        kept_any: bool,
    },
}

/// Where a reservation takes an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReservation {
    /// Everything held: on to the payment (`reserved` is recorded with the decision).
    Pay,
    /// Short: rejected with this reason, the decision recorded before anything is released;
    /// `settled` when nothing is held that this attempt would have to release.
    Reject {
        reason: RejectionReason,
        settled: bool,
    },
}

/// Where a reservation takes an order. `fresh`: the order was created by this attempt (a
/// redelivery cannot know from here what an earlier attempt kept, so it never records the
/// order settled before looking).
pub fn after_reservation(origin: Origin, fresh: bool, found: Reserved) -> AfterReservation {
    match found {
        Reserved::All => AfterReservation::Pay,
        Reserved::Short { kept_any } => AfterReservation::Reject {
            reason: match origin {
                // The storefront promised availability at intake: it is a conflict.
                Origin::Http => RejectionReason::StockConflict,
                Origin::Queue => RejectionReason::OutOfStock,
            },
            settled: fresh && !kept_any,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A simulated world for one order: the stock records (which lines the order holds), what
    /// is recorded of the order, and what the gateway answers. Crashes lose what the attempt
    /// held in memory; what was recorded stays.
    #[derive(Debug, Clone)]
    struct World {
        lines: usize,
        /// Lines that are short (out of stock) for this order.
        short: BTreeSet<usize>,
        decline: bool,
        /// Recorded: the order's status and `settled`; the stock records' holds.
        status: OrderStatus,
        settled: bool,
        holds: BTreeSet<usize>,
        /// Effects counted for the invariants.
        payments: u32,
        paid_without_every_line: bool,
        released_in_wrong_status: bool,
        /// Every announcement: the status announced and whether stock was still held then.
        announced: Vec<(OrderStatus, bool)>,
    }

    impl World {
        fn new(lines: usize, short: BTreeSet<usize>, decline: bool) -> World {
            World {
                lines,
                short,
                decline,
                status: OrderStatus::Received,
                settled: false,
                holds: BTreeSet::new(),
                payments: 0,
                paid_without_every_line: false,
                released_in_wrong_status: false,
                announced: Vec::new(),
            }
        }

        /// One attempt (a delivery): steps until done or until it crashes after `crash_after`
        /// steps. Returns whether it reached `Done`.
        fn attempt(&mut self, fresh: bool, crash_after: usize) -> bool {
            let mut held: Option<BTreeSet<usize>> = None;
            let mut announced = false;
            for _ in 0..crash_after {
                let step = next(Position {
                    status: self.status,
                    settled: self.settled,
                    holds_known: held.is_some(),
                    announced,
                });
                match step {
                    Step::Reserve => {
                        // Idempotent per line: what is held stays held; what is short stays so.
                        for l in 0..self.lines {
                            if !self.short.contains(&l) {
                                self.holds.insert(l);
                            }
                        }
                        let kept: BTreeSet<usize> = self.holds.clone();
                        let found = if self.short.is_empty() {
                            Reserved::All
                        } else {
                            Reserved::Short {
                                kept_any: !kept.is_empty(),
                            }
                        };
                        match after_reservation(Origin::Queue, fresh, found) {
                            AfterReservation::Pay => {
                                held = fresh.then(|| kept.clone());
                                self.pay();
                            }
                            AfterReservation::Reject { settled, .. } => {
                                held = fresh.then_some(kept);
                                self.status = OrderStatus::Rejected;
                                self.settled = settled;
                            }
                        }
                    }
                    Step::PayAndDecide => self.pay(),
                    Step::ReleaseHeld | Step::ReleaseRecorded => {
                        if !self.status.releases_stock() {
                            self.released_in_wrong_status = true;
                        }
                        let lines = match (step, held.take()) {
                            (Step::ReleaseHeld, Some(lines)) => lines,
                            _ => self.holds.clone(),
                        };
                        for l in lines {
                            self.holds.remove(&l);
                        }
                        self.settled = true;
                    }
                    Step::Announce => {
                        let holding =
                            !self.holds.is_empty() && self.status != OrderStatus::Scheduled;
                        self.announced.push((self.status, holding));
                        announced = true;
                    }
                    Step::Done => return announced,
                }
            }
            false
        }

        fn pay(&mut self) {
            self.payments += 1;
            if self.holds.len() != self.lines {
                self.paid_without_every_line = true;
            }
            // The gateway's answer decides (the consumer's `pay_and_decide`).
            self.status = match after_payment(!self.decline) {
                AfterPayment::Schedule => OrderStatus::Scheduled,
                AfterPayment::Fail { .. } => OrderStatus::Failed,
            };
        }
    }

    /// The reference model: what the order must end as, whatever crashed on the way.
    fn reference(short: &BTreeSet<usize>, decline: bool) -> OrderStatus {
        if !short.is_empty() {
            OrderStatus::Rejected
        } else if decline {
            OrderStatus::Failed
        } else {
            OrderStatus::Scheduled
        }
    }

    proptest! {
        /// Random orders (1–5 lines, some short), gateway answers and crash points: every
        /// delivery sequence ends decided as the reference model says, holding exactly its
        /// lines when scheduled and nothing otherwise, settled, never paid without every line
        /// held, never released outside a releasing status; and a redelivery of a decided
        /// order does nothing but announce it.
        #[test]
        fn every_crash_sequence_ends_as_the_reference_model_says(
            lines in 1usize..6,
            short_mask in 0u8..32,
            decline in any::<bool>(),
            crashes in prop::collection::vec(0usize..4, 0..6),
        ) {
            let short: BTreeSet<usize> = (0..lines).filter(|l| short_mask & (1 << l) != 0).collect();
            let mut w = World::new(lines, short.clone(), decline);
            let mut fresh = true;
            for crash_after in crashes {
                if w.attempt(fresh, crash_after) {
                    break;
                }
                fresh = false; // the order exists now: a redelivery finds it
            }
            // The last delivery runs to the end, within a bounded number of steps.
            let done = w.attempt(fresh, 8) || w.attempt(false, 8);
            prop_assert!(done, "no decision: {w:?}");
            let want = reference(&short, decline);
            prop_assert_eq!(w.status, want, "{:?}", w);
            prop_assert!(!w.paid_without_every_line, "{:?}", w);
            prop_assert!(!w.released_in_wrong_status, "{:?}", w);
            if want == OrderStatus::Scheduled {
                prop_assert_eq!(w.holds.len(), lines);
            } else {
                prop_assert!(w.holds.is_empty(), "stock still held: {:?}", w);
                prop_assert!(w.settled);
            }
            if !short.is_empty() {
                prop_assert_eq!(w.payments, 0, "a short order is never paid");
            }
            // Announced only once decided and with nothing held that is to go back; the last
            // delivery announced the final decision before it was done.
            prop_assert!(
                w.announced.iter().all(|(s, holding)| s.is_decided() && !holding),
                "{:?}", w
            );
            prop_assert_eq!(w.announced.last().map(|(s, _)| *s), Some(want));
            // Idempotent: once decided, another delivery changes nothing but announces again.
            let before = (w.status, w.settled, w.holds.clone(), w.payments);
            let announcements = w.announced.len();
            prop_assert!(w.attempt(false, 8));
            prop_assert_eq!((w.status, w.settled, w.holds.clone(), w.payments), before);
            prop_assert_eq!(w.announced.len(), announcements + 1);
        }
    }

    #[test]
    fn the_steps_from_each_position() {
        let at = |status, settled, holds_known| {
            next(Position {
                status,
                settled,
                holds_known,
                announced: true,
            })
        };
        assert_eq!(at(OrderStatus::Received, false, false), Step::Reserve);
        assert_eq!(at(OrderStatus::Reserved, false, true), Step::PayAndDecide);
        assert_eq!(at(OrderStatus::Failed, false, true), Step::ReleaseHeld);
        assert_eq!(
            at(OrderStatus::Rejected, false, false),
            Step::ReleaseRecorded
        );
        assert_eq!(
            at(OrderStatus::Cancelled, false, false),
            Step::ReleaseRecorded
        );
        assert_eq!(at(OrderStatus::Rejected, true, true), Step::Done);
        assert_eq!(at(OrderStatus::Scheduled, false, true), Step::Done);
        // Decided and settled: announced before it is done, by every delivery.
        let unannounced = |status, settled| {
            next(Position {
                status,
                settled,
                holds_known: false,
                announced: false,
            })
        };
        assert_eq!(unannounced(OrderStatus::Scheduled, true), Step::Announce);
        assert_eq!(unannounced(OrderStatus::Rejected, true), Step::Announce);
        assert_eq!(
            unannounced(OrderStatus::Failed, false),
            Step::ReleaseRecorded
        );
        assert_eq!(unannounced(OrderStatus::Received, false), Step::Reserve);
        assert_eq!(after_payment(true), AfterPayment::Schedule);
        assert_eq!(
            after_payment(false),
            AfterPayment::Fail {
                reason: RejectionReason::PaymentDeclined
            }
        );
    }

    #[test]
    fn a_short_order_is_rejected_by_its_origin_and_settled_only_when_known_empty() {
        let reject = |origin, fresh, kept_any| {
            after_reservation(origin, fresh, Reserved::Short { kept_any })
        };
        assert_eq!(
            reject(Origin::Http, true, false),
            AfterReservation::Reject {
                reason: RejectionReason::StockConflict,
                settled: true
            }
        );
        assert_eq!(
            reject(Origin::Queue, true, true),
            AfterReservation::Reject {
                reason: RejectionReason::OutOfStock,
                settled: false
            }
        );
        // A redelivery does not know what an earlier attempt kept: it looks before settling.
        assert_eq!(
            reject(Origin::Queue, false, false),
            AfterReservation::Reject {
                reason: RejectionReason::OutOfStock,
                settled: false
            }
        );
        assert_eq!(
            after_reservation(Origin::Http, false, Reserved::All),
            AfterReservation::Pay
        );
    }
}
