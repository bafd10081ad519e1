//! Calendar periods (day, week, month) in a fixed UTC offset.
//!
//! The calendar arithmetic is `jiff`'s (proleptic Gregorian, years -9999 to
//! 9999); this module only maps the step's settings onto it. Day numbers
//! (days since 1970-01-01) remain as helpers for the tests' expectations.

use jiff::civil::{Date, Time};
use jiff::tz::Offset;
use jiff::{SignedDuration, Timestamp};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// A period kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A calendar day, from local midnight.
    Day,
    /// Seven days, from local midnight of the configured first weekday.
    Week,
    /// A calendar month, from local midnight of its first day.
    Month,
}

/// A day of the week, Monday = 0 .. Sunday = 6.
pub type Weekday = u8;

/// The instants `period_bounds` works on are clamped to years -9998 ..=
/// 9998 (Unix ms of -9998-01-01T00:00Z and 9999-01-01T00:00Z), so that a
/// period and the next one, at any offset, stay inside `jiff`'s range.
const MIN_MS: i64 = -377_673_580_800_000;
const MAX_MS: i64 = 253_370_764_800_000;

/// The period containing the instant `now_ms` (Unix ms), in the fixed
/// offset `offset_ms` east of UTC, as Unix ms `[start, end)`.
pub fn period_bounds(
    now_ms: i64,
    offset_ms: i64,
    period: Period,
    week_starts: Weekday,
) -> (i64, i64) {
    bounds(now_ms.clamp(MIN_MS, MAX_MS), offset_ms, period, week_starts)
        .expect("parse_offset's offsets and clamped instants stay in jiff's range")
}

/// [`period_bounds`]; `None` where `jiff` reports a date out of its range
/// (its error is dropped unformatted: formatting it would pull `jiff`'s
/// error printing into the component).
fn bounds(now_ms: i64, offset_ms: i64, period: Period, week_starts: Weekday) -> Option<(i64, i64)> {
    let offset = Offset::from_seconds(i32::try_from(offset_ms / 1000).ok()?).ok()?;
    let today = offset
        .to_datetime(Timestamp::from_millisecond(now_ms).ok()?)
        .date();
    let (first, next) = match period {
        Period::Day => (today, today.tomorrow().ok()?),
        Period::Week => {
            let weekday = today.weekday().to_monday_zero_offset();
            let back = (i64::from(weekday) - i64::from(week_starts)).rem_euclid(7);
            let first = today
                .checked_sub(SignedDuration::from_hours(24 * back))
                .ok()?;
            (
                first,
                first.checked_add(SignedDuration::from_hours(24 * 7)).ok()?,
            )
        }
        Period::Month => (
            today.first_of_month(),
            today.last_of_month().tomorrow().ok()?,
        ),
    };
    let midnight = |d: Date| {
        let ts = offset.to_timestamp(d.to_datetime(Time::midnight())).ok()?;
        Some(ts.as_millisecond())
    };
    Some((midnight(first)?, midnight(next)?))
}

/// Parse a fixed offset: `UTC`, `Z`, or `+HH:MM` / `-HH:MM` (at most 14
/// hours either way). Returns milliseconds east of UTC.
///
/// Hand-written: `jiff`'s offset syntax also takes `+02`, `+0200` and
/// seconds, which this setting has always refused.
pub fn parse_offset(s: &str) -> Result<i64, String> {
    if s == "UTC" || s == "Z" {
        return Ok(0);
    }
    let bad = || {
        format!(
            "{s:?} is not a fixed UTC offset: write \"UTC\", or \"+HH:MM\" / \"-HH:MM\" such as \"+02:00\" or \"-05:30\" (IANA zone names are not supported)"
        )
    };
    let b = s.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return Err(bad());
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(bad()),
    };
    let digits = |x: &[u8]| -> Option<i64> {
        x.iter()
            .all(u8::is_ascii_digit)
            .then(|| x.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let (Some(h), Some(m)) = (digits(&b[1..3]), digits(&b[4..6])) else {
        return Err(bad());
    };
    if m >= 60 || h * 60 + m > 14 * 60 {
        return Err(format!(
            "{s:?}: an offset has minutes below 60 and is at most 14:00 either way"
        ));
    }
    Ok(sign * (h * 60 + m) * 60_000)
}

/// Parse a weekday name (`monday` .. `sunday`).
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    const NAMES: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    NAMES.iter().position(|n| *n == s).map(|i| i as Weekday)
}

/// Day number of `y-m-d` (`m` 1..=12, `d` 1..=31).
#[cfg(test)]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let date = Date::new(y as i16, m as i8, d as i8).expect("a valid date");
    let midnight = Offset::UTC.to_timestamp(date.to_datetime(Time::midnight()));
    midnight.expect("in range").as_second().div_euclid(86_400)
}

/// `(year, month, day)` of a day number.
#[cfg(test)]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let date = day(z);
    (
        i64::from(date.year()),
        date.month() as u32,
        date.day() as u32,
    )
}

/// The weekday of a day number.
#[cfg(test)]
pub fn weekday(days: i64) -> Weekday {
    day(days).weekday().to_monday_zero_offset() as Weekday
}

/// Whether `y` is a leap year.
#[cfg(test)]
pub fn is_leap(y: i64) -> bool {
    Date::new(y as i16, 1, 1)
        .expect("a valid year")
        .in_leap_year()
}

/// Days in month `m` of year `y`.
#[cfg(test)]
pub fn days_in_month(y: i64, m: u32) -> u32 {
    let first = Date::new(y as i16, m as i8, 1).expect("a valid month");
    first.days_in_month() as u32
}

/// The date of a day number.
#[cfg(test)]
fn day(z: i64) -> Date {
    let ts = Timestamp::from_second(z * 86_400).expect("in range");
    Offset::UTC.to_datetime(ts).date()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date-time.
    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * DAY_MS + (h * 60 + mi) * 60_000
    }

    #[test]
    fn civil_round_trips_over_a_long_span() {
        // Every day from 1600 to 2500, against a naive day-by-day walk.
        let (mut y, mut m, mut d) = (1600i64, 1u32, 1u32);
        let start = days_from_civil(1600, 1, 1);
        assert_eq!(start, -135_140);
        for z in start..days_from_civil(2500, 1, 1) {
            assert_eq!(civil_from_days(z), (y, m, d), "day {z}");
            assert_eq!(days_from_civil(y, m, d), z);
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(weekday(0), 3); // Thursday
        assert_eq!(weekday(days_from_civil(2024, 2, 29)), 3); // Thursday
        assert_eq!(weekday(days_from_civil(2023, 1, 1)), 6); // Sunday
        assert_eq!(weekday(-1), 2); // 1969-12-31, Wednesday
        assert!(is_leap(2000) && is_leap(2024) && !is_leap(1900) && !is_leap(2100));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2023, 4), 30);
        assert_eq!(days_in_month(2023, 12), 31);
        // 1_700_000_000_000 is 2023-11-14T22:13:20Z.
        assert_eq!(at(2023, 11, 14, 22, 13) + 20_000, 1_700_000_000_000);
    }

    #[test]
    fn days() {
        let now = at(2024, 3, 10, 23, 30);
        assert_eq!(
            period_bounds(now, 0, Period::Day, 0),
            (at(2024, 3, 10, 0, 0), at(2024, 3, 11, 0, 0))
        );
        // At +02:00 it is already the 11th (local midnight is 22:00 UTC).
        let plus2 = 2 * 3_600_000;
        assert_eq!(
            period_bounds(now, plus2, Period::Day, 0),
            (at(2024, 3, 10, 22, 0), at(2024, 3, 11, 22, 0))
        );
        // At -05:30 the day started at 05:30 UTC.
        let minus = -(5 * 60 + 30) * 60_000;
        assert_eq!(
            period_bounds(now, minus, Period::Day, 0),
            (at(2024, 3, 10, 5, 30), at(2024, 3, 11, 5, 30))
        );
        // Exactly at midnight: the new day.
        let midnight = at(2024, 3, 11, 0, 0);
        assert_eq!(period_bounds(midnight, 0, Period::Day, 0).0, midnight);
        assert_eq!(period_bounds(midnight - 1, 0, Period::Day, 0).1, midnight);
    }

    #[test]
    fn weeks() {
        // 2024-03-10 is a Sunday.
        let sunday = at(2024, 3, 10, 12, 0);
        assert_eq!(weekday(days_from_civil(2024, 3, 10)), 6);
        assert_eq!(
            period_bounds(sunday, 0, Period::Week, 0),
            (at(2024, 3, 4, 0, 0), at(2024, 3, 11, 0, 0))
        );
        // Weeks starting on Sunday: that Sunday starts one.
        assert_eq!(
            period_bounds(sunday, 0, Period::Week, 6),
            (at(2024, 3, 10, 0, 0), at(2024, 3, 17, 0, 0))
        );
        // Across a year boundary: Monday 2024-12-30 .. Monday 2025-01-06.
        let ny = at(2025, 1, 1, 9, 0);
        assert_eq!(
            period_bounds(ny, 0, Period::Week, 0),
            (at(2024, 12, 30, 0, 0), at(2025, 1, 6, 0, 0))
        );
        // The offset moves the local weekday: Sunday 23:00 UTC is Monday at +02:00.
        let late = at(2024, 3, 10, 23, 0);
        assert_eq!(
            period_bounds(late, 2 * 3_600_000, Period::Week, 0),
            (at(2024, 3, 10, 22, 0), at(2024, 3, 17, 22, 0))
        );
        // Every start day, every day of a fortnight: the period holds now,
        // lasts 7 days and starts on the right weekday at local midnight.
        for start in 0..7u8 {
            for off in [
                -12 * 3_600_000,
                0,
                5 * 3_600_000 + 45 * 60_000,
                14 * 3_600_000,
            ] {
                for h in (0..14 * 24).step_by(5) {
                    let now = at(2024, 2, 20, 0, 0) + h * 3_600_000;
                    let (s, e) = period_bounds(now, off, Period::Week, start);
                    assert!(s <= now && now < e);
                    assert_eq!(e - s, 7 * DAY_MS);
                    assert_eq!((s + off).rem_euclid(DAY_MS), 0);
                    assert_eq!(weekday((s + off).div_euclid(DAY_MS)), start);
                }
            }
        }
    }

    #[test]
    fn months() {
        let cases = [
            // (now, start, end)
            (
                at(2024, 2, 15, 0, 0),
                at(2024, 2, 1, 0, 0),
                at(2024, 3, 1, 0, 0),
            ),
            (
                at(2023, 2, 28, 23, 59),
                at(2023, 2, 1, 0, 0),
                at(2023, 3, 1, 0, 0),
            ),
            (
                at(2024, 2, 29, 23, 59),
                at(2024, 2, 1, 0, 0),
                at(2024, 3, 1, 0, 0),
            ),
            (
                at(2100, 2, 28, 12, 0),
                at(2100, 2, 1, 0, 0),
                at(2100, 3, 1, 0, 0),
            ),
            (
                at(2000, 2, 29, 12, 0),
                at(2000, 2, 1, 0, 0),
                at(2000, 3, 1, 0, 0),
            ),
            (
                at(2023, 12, 31, 23, 59),
                at(2023, 12, 1, 0, 0),
                at(2024, 1, 1, 0, 0),
            ),
            (
                at(2024, 1, 1, 0, 0),
                at(2024, 1, 1, 0, 0),
                at(2024, 2, 1, 0, 0),
            ),
            (
                at(2024, 4, 30, 8, 0),
                at(2024, 4, 1, 0, 0),
                at(2024, 5, 1, 0, 0),
            ),
            (
                at(2024, 7, 31, 8, 0),
                at(2024, 7, 1, 0, 0),
                at(2024, 8, 1, 0, 0),
            ),
        ];
        for (now, s, e) in cases {
            assert_eq!(period_bounds(now, 0, Period::Month, 0), (s, e));
        }
        // New Year's Eve 23:30 UTC is already January at +01:00.
        let eve = at(2023, 12, 31, 23, 30);
        assert_eq!(
            period_bounds(eve, 3_600_000, Period::Month, 0),
            (at(2023, 12, 31, 23, 0), at(2024, 1, 31, 23, 0))
        );
        // And still December at -05:30 on Jan 1st, 03:00 UTC.
        let ny = at(2024, 1, 1, 3, 0);
        let off = -(5 * 60 + 30) * 60_000;
        assert_eq!(
            period_bounds(ny, off, Period::Month, 0),
            (at(2023, 12, 1, 5, 30), at(2024, 1, 1, 5, 30))
        );
        // Every month from 1999 to 2031: starts on the 1st, lasts its length.
        for y in 1999..2032 {
            for m in 1..=12 {
                let now = at(y, m, days_in_month(y, m), 23, 59);
                let (s, e) = period_bounds(now, 0, Period::Month, 0);
                assert_eq!(civil_from_days(s / DAY_MS), (y, m, 1));
                assert_eq!((e - s) / DAY_MS, i64::from(days_in_month(y, m)));
            }
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("UTC"), Ok(0));
        assert_eq!(parse_offset("Z"), Ok(0));
        assert_eq!(parse_offset("+00:00"), Ok(0));
        assert_eq!(parse_offset("-00:00"), Ok(0));
        assert_eq!(parse_offset("+02:00"), Ok(7_200_000));
        assert_eq!(parse_offset("-05:30"), Ok(-19_800_000));
        assert_eq!(parse_offset("+05:45"), Ok(20_700_000));
        assert_eq!(parse_offset("+14:00"), Ok(50_400_000));
        assert_eq!(parse_offset("-12:00"), Ok(-43_200_000));
        for bad in [
            "",
            "utc",
            "+2",
            "+02",
            "+0200",
            "02:00",
            "+02:60",
            "+14:01",
            "-15:00",
            "+2:00",
            "+02:0a",
            "Europe/Paris",
            "+02:00 ",
            "+٠٢:00",
        ] {
            assert!(parse_offset(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clamp_limits_are_the_dates_they_name() {
        assert_eq!(at(-9998, 1, 1, 0, 0), MIN_MS);
        assert_eq!(at(9999, 1, 1, 0, 0), MAX_MS);
        // Instants beyond them still get a period (the nearest one in
        // range), at the widest offsets, rather than a failure.
        for off in [-14 * 3_600_000, 0, 14 * 3_600_000] {
            for period in [Period::Day, Period::Week, Period::Month] {
                let (s, e) = period_bounds(i64::MAX, off, period, 6);
                assert!(s < e && e > MAX_MS, "{period:?} at {off}");
                let (s, e) = period_bounds(i64::MIN, off, period, 6);
                assert!(s < e && s <= MIN_MS, "{period:?} at {off}");
            }
        }
    }

    #[test]
    fn weekdays() {
        assert_eq!(parse_weekday("monday"), Some(0));
        assert_eq!(parse_weekday("sunday"), Some(6));
        assert_eq!(parse_weekday("Mon"), None);
    }
}
