//! Time, passed in: production reads the system clock, tests move a clock of their own (a card
//! valid on the last day of its month, a same-day cut-off, a delivery date).

use chrono::{DateTime, Datelike, FixedOffset, NaiveDateTime, Utc};

/// Where the time comes from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Local time where the warehouses work: Brazil (São Paulo), UTC−3, no daylight saving since
/// 2019.
pub fn local(at: DateTime<Utc>) -> NaiveDateTime {
    match FixedOffset::west_opt(3 * 3600) {
        Some(offset) => at.with_timezone(&offset).naive_local(),
        None => at.naive_utc(),
    }
}

/// `(year, month)` in local time: what card expiry is judged against.
pub fn year_month(at: DateTime<Utc>) -> (i32, u32) {
    let l = local(at);
    (l.year(), l.month())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_month_turns_at_local_midnight() {
        // 02:30 UTC on 1 December is still 30 November in São Paulo.
        let at = DateTime::parse_from_rfc3339("2026-12-01T02:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(year_month(at), (2026, 11));
        let later = DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(year_month(later), (2026, 12));
    }
}
