//! The windows limits are counted in, and where their counts live in the shared store.
//!
//! Both planes compute the same windows from the same clock arithmetic (UTC, unix seconds, no
//! time-zone database): proxies count in them, the control plane reads them back for
//! `GET /api/v1/keys/{id}/usage`.

use std::fmt::Write as _;

use crate::Period;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    Requests,
    Tokens,
    /// Micro-dollars.
    Cost,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::Cost => "cost",
        }
    }
}

/// A window: the rolling minute (counted in whole UTC minutes, the previous one weighted by
/// how much of it still lies within the last 60 s), or a calendar period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    Minute,
    Period(Period),
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Period(period) => period.as_str(),
        }
    }

    /// The window holding `unix_secs`: its start and its end (the next one's start).
    pub fn bounds(self, unix_secs: i64) -> (i64, i64) {
        const HOUR: i64 = 3600;
        const DAY: i64 = 86_400;
        let floor = |unit: i64| unix_secs.div_euclid(unit) * unit;
        match self {
            Self::Minute => (floor(60), floor(60) + 60),
            Self::Period(Period::Hour) => (floor(HOUR), floor(HOUR) + HOUR),
            Self::Period(Period::Day) => (floor(DAY), floor(DAY) + DAY),
            Self::Period(Period::Week) => {
                // 1970-01-01 was a Thursday; ISO weeks start on Monday.
                let days = unix_secs.div_euclid(DAY);
                let monday = days - (days + 3).rem_euclid(7);
                (monday * DAY, (monday + 7) * DAY)
            }
            Self::Period(Period::Month) => {
                let (year, month, _) = civil_from_days(unix_secs.div_euclid(DAY));
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                (
                    days_from_civil(year, month, 1) * DAY,
                    days_from_civil(next_year, next_month, 1) * DAY,
                )
            }
        }
    }
}

/// Where the shared count of one limit's window lives. The `{…}` hash tag puts all of one
/// client key's counters in one Redis Cluster slot.
pub fn counter_key(
    client_key: &str,
    pool: Option<&str>,
    metric: Metric,
    window: Window,
    window_start: i64,
) -> String {
    let mut key = String::with_capacity(64);
    let _ = write!(key, "{{sluice:{client_key}}}:");
    match pool {
        Some(pool) => {
            let _ = write!(key, "pool:{pool}:");
        }
        None => key.push_str("key:"),
    }
    let _ = write!(
        key,
        "{}:{}:{window_start}",
        metric.as_str(),
        window.as_str()
    );
    key
}

/// Howard Hinnant's `civil_from_days`: (year, month 1–12, day 1–31) of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse: days since 1970-01-01 of a civil date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-12-03T05:45:33Z, a Thursday.
    const NOW: i64 = 1_796_276_733;

    #[test]
    fn calendar_windows_in_utc() {
        assert_eq!(Window::Minute.bounds(NOW), (1_796_276_700, 1_796_276_760));
        assert_eq!(
            Window::Period(Period::Hour).bounds(NOW),
            (1_796_274_000, 1_796_277_600)
        );
        // 2026-12-03T00:00Z to 2026-12-04T00:00Z.
        assert_eq!(
            Window::Period(Period::Day).bounds(NOW),
            (1_796_256_000, 1_796_342_400)
        );
        // Monday 2026-11-30 to Monday 2026-12-07.
        assert_eq!(
            Window::Period(Period::Week).bounds(NOW),
            (1_795_996_800, 1_796_601_600)
        );
        // 2026-12-01 to 2027-01-01: the year rolls over.
        assert_eq!(
            Window::Period(Period::Month).bounds(NOW),
            (1_796_083_200, 1_798_761_600)
        );
        // February of a leap year has 29 days.
        let feb_2028 = days_from_civil(2028, 2, 10) * 86_400;
        let (start, end) = Window::Period(Period::Month).bounds(feb_2028);
        assert_eq!((end - start) / 86_400, 29);
    }

    #[test]
    fn counter_keys_share_a_slot_per_client_key() {
        assert_eq!(
            counter_key("team-a", None, Metric::Requests, Window::Minute, 60),
            "{sluice:team-a}:key:requests:minute:60"
        );
        assert_eq!(
            counter_key(
                "team-a",
                Some("gpt-4o"),
                Metric::Cost,
                Window::Period(Period::Month),
                0
            ),
            "{sluice:team-a}:pool:gpt-4o:cost:month:0"
        );
    }

    proptest! {
        #[test]
        fn every_instant_lies_in_exactly_one_window(
            secs in -2_000_000_000i64..8_000_000_000,
            window in prop_oneof![
                Just(Window::Minute),
                Just(Window::Period(Period::Hour)),
                Just(Window::Period(Period::Day)),
                Just(Window::Period(Period::Week)),
                Just(Window::Period(Period::Month)),
            ],
        ) {
            let (start, end) = window.bounds(secs);
            prop_assert!(start <= secs && secs < end);
            // Windows tile time: the next one starts where this one ends.
            prop_assert_eq!(window.bounds(end).0, end);
            prop_assert_eq!(window.bounds(start - 1).1, start);
            if let Window::Period(Period::Month) = window {
                let days = (end - start) / 86_400;
                prop_assert!((28..=31).contains(&days));
                let (_, _, day) = civil_from_days(start / 86_400);
                prop_assert_eq!(day, 1);
            }
            if let Window::Period(Period::Week) = window {
                // A Monday: four days after a Thursday epoch, modulo a week.
                prop_assert_eq!((start / 86_400 + 3).rem_euclid(7), 0);
            }
        }

        #[test]
        fn civil_dates_round_trip(days in -1_000_000i64..1_000_000) {
            let (year, month, day) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(year, month, day), days);
        }
    }
}
