//! Stock updates from the warehouse and from admins: `{"on_hand"}` (a count: on hand becomes
//! exactly this) or `{"delta","reason"}` (units added or removed, and why). One validator for
//! `PUT /v1/inventory/{sku}`, `POST /v1/inventory/{sku}/adjustments` and the `inventory.updates`
//! queue, so the three doors cannot drift apart.

use serde::Deserialize;

use super::{clean_text, FieldErrors, StockOp};

/// The most units a SKU may have on hand, and the largest single adjustment.
pub const MAX_STOCK_UNITS: i64 = 1_000_000_000;
/// Longest reason stored with a change.
pub const MAX_REASON: usize = 200;

/// A stock update as sent; every field optional so each problem is reported on its own path.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct StockUpdateInput {
    pub on_hand: Option<i64>,
    pub delta: Option<i64>,
    pub reason: Option<String>,
}

/// Which forms a door accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateForm {
    /// `PUT /v1/inventory/{sku}`: a count.
    Count,
    /// `POST /v1/inventory/{sku}/adjustments`: a delta with its reason.
    Adjustment,
    /// The queue: either, exactly one of them.
    Either,
}

/// A valid stock update: the ledger operation and the reason recorded with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockUpdate {
    pub op: StockOp,
    pub reason: Option<String>,
}

impl StockUpdateInput {
    pub fn validate(&self, form: UpdateForm) -> Result<StockUpdate, FieldErrors> {
        let mut errors = FieldErrors::new();
        let reason = match self.reason.as_deref() {
            None => None,
            Some(raw) => match clean_text(raw, MAX_REASON) {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.add("reason", e);
                    None
                }
            },
        };
        let (on_hand, delta) = match form {
            UpdateForm::Count => {
                if self.on_hand.is_none() {
                    errors.add("on_hand", "is required");
                }
                (self.on_hand, None)
            }
            UpdateForm::Adjustment => {
                if self.delta.is_none() {
                    errors.add("delta", "is required");
                }
                (None, self.delta)
            }
            UpdateForm::Either => match (self.on_hand, self.delta) {
                (Some(_), Some(_)) | (None, None) => {
                    errors.add("on_hand", "give exactly one of on_hand and delta");
                    (None, None)
                }
                given => given,
            },
        };
        let op = match (on_hand, delta) {
            (Some(v), _) if !(0..=MAX_STOCK_UNITS).contains(&v) => {
                errors.add("on_hand", format!("must be from 0 to {MAX_STOCK_UNITS}"));
                None
            }
            (Some(v), _) => Some(StockOp::SetOnHand(v)),
            (None, Some(0)) => {
                errors.add("delta", "must not be zero");
                None
            }
            (None, Some(d)) if d.unsigned_abs() > MAX_STOCK_UNITS.unsigned_abs() => {
                errors.add(
                    "delta",
                    format!("must be from -{MAX_STOCK_UNITS} to {MAX_STOCK_UNITS}"),
                );
                None
            }
            (None, Some(d)) => {
                if self.reason.is_none() {
                    errors.add("reason", "is required with delta");
                }
                Some(StockOp::Adjust(d))
            }
            (None, None) => None,
        };
        match op {
            Some(op) if errors.is_empty() => Ok(StockUpdate { op, reason }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(on_hand: Option<i64>, delta: Option<i64>, reason: Option<&str>) -> StockUpdateInput {
        StockUpdateInput {
            on_hand,
            delta,
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn the_three_doors_share_the_rules() {
        let count = input(Some(40), None, None);
        assert_eq!(
            count.validate(UpdateForm::Count).unwrap().op,
            StockOp::SetOnHand(40)
        );
        assert_eq!(
            count.validate(UpdateForm::Either).unwrap().op,
            StockOp::SetOnHand(40)
        );
        assert!(count
            .validate(UpdateForm::Adjustment)
            .unwrap_err()
            .get("delta")
            .is_some());
        let delta = input(None, Some(-3), Some(" count "));
        let update = delta.validate(UpdateForm::Adjustment).unwrap();
        assert_eq!(update.op, StockOp::Adjust(-3));
        assert_eq!(update.reason.as_deref(), Some("count"));
        assert_eq!(delta.validate(UpdateForm::Either).unwrap(), update);
        for (bad, field) in [
            (input(Some(-1), None, None), "on_hand"),
            (input(Some(MAX_STOCK_UNITS + 1), None, None), "on_hand"),
            (input(Some(1), Some(1), Some("x")), "on_hand"),
            (input(None, None, None), "on_hand"),
            (input(None, Some(0), Some("x")), "delta"),
            (input(None, Some(i64::MIN), Some("x")), "delta"),
            (input(None, Some(5), None), "reason"),
            (input(None, Some(5), Some("truck\u{0}")), "reason"),
            (input(None, Some(5), Some("   ")), "reason"),
            (input(Some(1), None, Some("\u{1b}[31m")), "reason"),
        ] {
            let errors = bad.validate(UpdateForm::Either).unwrap_err();
            assert!(errors.get(field).is_some(), "{bad:?}: {errors:?}");
        }
    }
}
