//! Delivery scheduling, pure: a lead time in business days per method (weekends skipped), a
//! same-day cut-off, a daily capacity per method and date (a full day rolls to the next business
//! day), a carrier and a tracking code.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Weekday};
use serde::{Deserialize, Serialize};

use super::checkout::DeliveryMethod;

/// The rules of one delivery method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodRules {
    /// Business days after the order day (0 = the same day).
    pub lead_days: u32,
    /// Orders after this local time count as placed the next business day.
    pub cutoff: NaiveTime,
    pub window: (NaiveTime, NaiveTime),
    pub carrier: &'static str,
    pub tracking_prefix: &'static str,
    pub daily_capacity: u32,
}

fn time(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
}

/// The default rules of each method.
pub fn rules(method: DeliveryMethod) -> MethodRules {
    match method {
        DeliveryMethod::Standard => MethodRules {
            lead_days: 5,
            cutoff: time(18, 0),
            window: (time(8, 0), time(18, 0)),
            carrier: "Correios PAC",
            tracking_prefix: "PC",
            daily_capacity: 200_000,
        },
        DeliveryMethod::Express => MethodRules {
            lead_days: 2,
            cutoff: time(15, 0),
            window: (time(8, 0), time(18, 0)),
            carrier: "Correios SEDEX",
            tracking_prefix: "SX",
            daily_capacity: 50_000,
        },
        DeliveryMethod::SameDay => MethodRules {
            lead_days: 0,
            cutoff: time(12, 0),
            window: (time(14, 0), time(22, 0)),
            carrier: "Loggi",
            tracking_prefix: "LG",
            daily_capacity: 20_000,
        },
        DeliveryMethod::Pickup => MethodRules {
            lead_days: 1,
            cutoff: time(20, 0),
            window: (time(10, 0), time(20, 0)),
            carrier: "Store pickup",
            tracking_prefix: "PK",
            daily_capacity: 50_000,
        },
    }
}

/// A booked delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliverySlot {
    pub scheduled_for: NaiveDate,
    pub window: Window,
    pub carrier: String,
    pub tracking_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Window {
    pub from: String,
    pub to: String,
}

fn is_business_day(d: NaiveDate) -> bool {
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

fn next_business_day(mut d: NaiveDate) -> NaiveDate {
    loop {
        d += Duration::days(1);
        if is_business_day(d) {
            return d;
        }
    }
}

/// The first date a new order could be delivered, before capacity.
pub fn earliest_date(rules: &MethodRules, now_local: NaiveDateTime) -> NaiveDate {
    let mut day = now_local.date();
    // Placed on a weekend or after the cut-off: it counts from the next business day.
    if !is_business_day(day) || now_local.time() > rules.cutoff {
        day = next_business_day(day);
    }
    for _ in 0..rules.lead_days {
        day = next_business_day(day);
    }
    day
}

/// The first date from `earliest_date` whose capacity is not used up; `try_book(date)` books a
/// place on that date and says whether there was one. Gives up after a year.
pub fn schedule(
    method: DeliveryMethod,
    rules: &MethodRules,
    now_local: NaiveDateTime,
    order_key: &str,
    mut try_book: impl FnMut(NaiveDate) -> bool,
) -> Option<DeliverySlot> {
    let mut day = earliest_date(rules, now_local);
    for _ in 0..260 {
        if try_book(day) {
            return Some(DeliverySlot {
                scheduled_for: day,
                window: Window {
                    from: rules.window.0.format("%H:%M").to_string(),
                    to: rules.window.1.format("%H:%M").to_string(),
                },
                carrier: rules.carrier.to_owned(),
                tracking_code: tracking_code(rules.tracking_prefix, method, order_key),
            });
        }
        day = next_business_day(day);
    }
    None
}

/// A carrier-style tracking code (`SX123456789BR`), derived from the order so it is stable.
pub fn tracking_code(prefix: &str, method: DeliveryMethod, order_key: &str) -> String {
    // Stable across runs and machines.
    let h = super::fnv1a(order_key.bytes().chain(method.as_str().bytes()));
    format!("{prefix}{:09}BR", h % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn lead_times_skip_weekends() {
        // 2026-11-27 is a Friday.
        let fri_morning = at(2026, 11, 27, 9, 0);
        assert_eq!(
            earliest_date(&rules(DeliveryMethod::Express), fri_morning),
            date(2026, 12, 1)
        );
        assert_eq!(
            earliest_date(&rules(DeliveryMethod::Standard), fri_morning),
            date(2026, 12, 4)
        );
        assert_eq!(
            earliest_date(&rules(DeliveryMethod::Pickup), fri_morning),
            date(2026, 11, 30)
        );
        // Saturday counts from Monday.
        let saturday = at(2026, 11, 28, 9, 0);
        assert_eq!(
            earliest_date(&rules(DeliveryMethod::SameDay), saturday),
            date(2026, 11, 30)
        );
    }

    #[test]
    fn same_day_has_a_cut_off() {
        let wed_morning = at(2026, 11, 25, 11, 59);
        let wed_afternoon = at(2026, 11, 25, 12, 1);
        let r = rules(DeliveryMethod::SameDay);
        assert_eq!(earliest_date(&r, wed_morning), date(2026, 11, 25));
        assert_eq!(earliest_date(&r, wed_afternoon), date(2026, 11, 26));
        let fri_afternoon = at(2026, 11, 27, 13, 0);
        assert_eq!(earliest_date(&r, fri_afternoon), date(2026, 11, 30));
    }

    #[test]
    fn a_full_day_rolls_to_the_next_business_day() {
        let mut r = rules(DeliveryMethod::Express);
        r.daily_capacity = 2;
        let mut booked: HashMap<NaiveDate, u32> = HashMap::new();
        let mut book = |d: NaiveDate| {
            let n = booked.entry(d).or_default();
            if *n < r.daily_capacity {
                *n += 1;
                true
            } else {
                false
            }
        };
        let now = at(2026, 11, 26, 9, 0); // Thursday → Monday 30th
        let dates: Vec<NaiveDate> = (0..5)
            .map(|i| {
                schedule(
                    DeliveryMethod::Express,
                    &r,
                    now,
                    &format!("o{i}"),
                    &mut book,
                )
                .unwrap()
                .scheduled_for
            })
            .collect();
        assert_eq!(
            dates,
            [
                date(2026, 11, 30),
                date(2026, 11, 30),
                date(2026, 12, 1),
                date(2026, 12, 1),
                date(2026, 12, 2)
            ]
        );
    }

    #[test]
    fn slots_carry_carrier_window_and_stable_tracking() {
        let r = rules(DeliveryMethod::Express);
        let slot = schedule(
            DeliveryMethod::Express,
            &r,
            at(2026, 11, 26, 9, 0),
            "order-1",
            |_| true,
        )
        .unwrap();
        assert_eq!(slot.carrier, "Correios SEDEX");
        assert_eq!(
            slot.window,
            Window {
                from: "08:00".into(),
                to: "18:00".into()
            }
        );
        assert!(slot.tracking_code.starts_with("SX") && slot.tracking_code.ends_with("BR"));
        assert_eq!(slot.tracking_code.len(), 13);
        assert_eq!(
            slot.tracking_code,
            tracking_code("SX", DeliveryMethod::Express, "order-1")
        );
        assert_ne!(
            slot.tracking_code,
            tracking_code("SX", DeliveryMethod::Express, "order-2")
        );
    }
}
