//! Money: integer cents, bounded, and arithmetic that says when a sum does not fit instead of
//! wrapping (a wrapped total would be a wrong charge, or a row the database refuses).

/// The highest price a catalog product may have: R$ 1 billion. With at most 50 lines of at most
/// 100 units, every order total of valid products fits in an `i64` many times over.
pub const MAX_PRICE_CENTS: i64 = 100_000_000_000;

/// The total of `(unit_price_cents, quantity)` lines, or `None` when a price or quantity is
/// negative or the sum does not fit.
pub fn total_cents(lines: impl IntoIterator<Item = (i64, i64)>) -> Option<i64> {
    lines.into_iter().try_fold(0i64, |sum, (price, quantity)| {
        if price < 0 || quantity < 0 {
            return None;
        }
        sum.checked_add(price.checked_mul(quantity)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn totals_that_do_not_fit_are_refused() {
        assert_eq!(total_cents([(1500, 2), (2500, 1)]), Some(5500));
        assert_eq!(total_cents([]), Some(0));
        assert_eq!(total_cents([(i64::MAX, 2)]), None);
        assert_eq!(total_cents([(i64::MAX, 1), (1, 1)]), None);
        assert_eq!(total_cents([(-1, 1)]), None);
        assert_eq!(
            total_cents([(MAX_PRICE_CENTS, 100); 50]),
            Some(MAX_PRICE_CENTS * 5_000)
        );
    }

    proptest! {
        /// The checked total equals the exact (128-bit) sum whenever that sum fits.
        #[test]
        fn the_total_is_exact_or_refused(lines in prop::collection::vec((0i64..=i64::MAX, 0i64..=1_000), 0..8)) {
            let exact: i128 = lines.iter().map(|(p, q)| i128::from(*p) * i128::from(*q)).sum();
            match total_cents(lines.iter().copied()) {
                Some(t) => prop_assert_eq!(i128::from(t), exact),
                None => prop_assert!(exact > i128::from(i64::MAX)),
            }
        }
    }
}
