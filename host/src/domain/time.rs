//! Points in time and calendar periods, as both planes use them: the
//! admin API's timestamps, key expiries in manifests, plan quotas.
//!
//! The calendar arithmetic is `jiff`'s. The syntax stays TOML's offset
//! date-time (a manifest's `expires` is one): jiff's parser also takes
//! forms the admin API has always refused (`2027-01-01T00:00Z`, basic
//! `20270101T000000Z`, `[Europe/Paris]` annotations).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, Unix milliseconds; written as RFC 3339 in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ts(pub u64);

impl Ts {
    pub fn now() -> Ts {
        Ts(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64))
    }

    /// Parse RFC 3339 with any offset (`2027-01-01T00:00:00Z`); a time
    /// before 1970 is the epoch (it is in the past either way).
    pub fn parse(s: &str) -> Option<Ts> {
        let d: toml::value::Datetime = s.trim().parse().ok()?;
        if d.date.is_none() || d.time.is_none() || d.offset.is_none() {
            return None;
        }
        Some(Ts(datetime_ms(&d).unwrap_or(0)))
    }

    /// RFC 3339 in UTC, with milliseconds when there are any.
    pub fn rfc3339(self) -> String {
        // jiff's calendar ends with the year 9999, which a time parsed with
        // a negative offset on 9999-12-31 passes. The Gregorian calendar
        // repeats every 400 years, so the date is that of the time's place
        // in its 400-year cycle, with the cycles added to the year.
        let cycles = self.0 / MS_PER_400_YEARS;
        let within = (self.0 % MS_PER_400_YEARS) as i64;
        let t = EPOCH
            .checked_add(jiff::SignedDuration::from_millis(within))
            .expect("400 years after 1970 is within jiff's range");
        let y = i64::from(t.year()) + 400 * cycles as i64;
        let (m, d, h, mi, s) = (t.month(), t.day(), t.hour(), t.minute(), t.second());
        match t.millisecond() {
            0 => format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
            ms => format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z"),
        }
    }
}

/// The Unix epoch as a civil date-time in UTC.
const EPOCH: jiff::civil::DateTime = jiff::civil::DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

/// Milliseconds in 400 Gregorian years (146,097 days), after which the
/// calendar repeats.
const MS_PER_400_YEARS: u64 = 146_097 * 86_400 * 1000;

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        let s = String::deserialize(d)?;
        Ts::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{s}` is not an RFC 3339 date-time with offset, e.g. 2027-01-01T00:00:00Z"
            ))
        })
    }
}

/// Unix milliseconds of a TOML date-time with offset; `None` without a
/// date, time or offset, or before 1970.
pub fn datetime_ms(d: &toml::value::Datetime) -> Option<u64> {
    let (date, time, offset) = (d.date?, d.time?, d.offset?);
    // TOML accepts a leap second (`23:59:60`), which jiff refuses: it is
    // the second after `:59`. (TOML has already checked every field's
    // range and the day against the month.)
    let civil = jiff::civil::DateTime::new(
        i16::try_from(date.year).ok()?,
        date.month as i8,
        date.day as i8,
        time.hour as i8,
        time.minute as i8,
        time.second.min(59) as i8,
        0,
    )
    .ok()?;
    let secs = civil.duration_since(EPOCH).as_secs() + i64::from(time.second == 60);
    let off = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes) * 60,
    };
    let ms = (secs - off) * 1000 + i64::from(time.nanosecond / 1_000_000);
    u64::try_from(ms).ok()
}

/// A quota period: a calendar day, week or month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Period {
    Day,
    Week,
    Month,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Option<u64> {
        Ts::parse(s).map(|t| t.0)
    }

    #[test]
    fn parses_rfc3339_with_any_offset_to_unix_milliseconds() {
        assert_eq!(ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(ms("2027-01-01T00:00:00Z"), Some(1_798_761_600_000));
        assert_eq!(ms("2027-01-01T02:00:00+02:00"), Some(1_798_761_600_000));
        assert_eq!(ms("2026-12-31T18:30:00-05:30"), Some(1_798_761_600_000));
        assert_eq!(ms(" 2027-01-01T00:00:00.250Z\n"), Some(1_798_761_600_250));
        // Below a millisecond is cut.
        assert_eq!(ms("2027-01-01T00:00:00.999999Z"), Some(1_798_761_600_999));
        // TOML's other spellings of the same instant.
        assert_eq!(ms("2027-01-01 00:00:00z"), Some(1_798_761_600_000));
    }

    #[test]
    fn leap_years_and_leap_seconds() {
        assert_eq!(ms("2024-02-29T12:00:00Z"), Some(1_709_208_000_000));
        assert_eq!(
            ms("2000-02-29T00:00:00Z").map(|m| m + 86_400_000),
            ms("2000-03-01T00:00:00Z")
        );
        assert_eq!(ms("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        for no_such_day in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
        ] {
            assert_eq!(ms(no_such_day), None, "{no_such_day}");
        }
        // A leap second is the second after `:59`.
        assert_eq!(ms("2016-12-31T23:59:60Z"), ms("2017-01-01T00:00:00Z"));
    }

    #[test]
    fn before_1970_is_the_epoch_and_not_a_key_expiry() {
        assert_eq!(Ts::parse("0343-03-31T21:03:02Z"), Some(Ts(0)));
        assert_eq!(Ts::parse("1969-12-31T23:59:59.9995Z"), Some(Ts(0)));
        // In UTC this is 1970-01-01T00:30:00Z.
        assert_eq!(ms("1969-12-31T23:30:00-01:00"), Some(1_800_000));
        let d: toml::value::Datetime = "1969-12-31T23:59:59.9995Z".parse().unwrap();
        assert_eq!(datetime_ms(&d), None);
        let d: toml::value::Datetime = "1970-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(datetime_ms(&d), Some(0));
    }

    #[test]
    fn refuses_anything_but_a_full_date_time_with_offset() {
        for bad in [
            "",
            "tomorrow",
            "2027-01-01",
            "00:00:00",
            "2027-01-01T00:00:00",
            "2027-13-01T00:00:00Z",
            "2027-01-32T00:00:00Z",
            "2027-01-01T24:00:00Z",
            "2027-01-01T00:00Z",
            "2027-01-01T00:00:00+2",
            "20270101T000000Z",
            "2027-01-01T00:00:00Z[Europe/Paris]",
        ] {
            assert_eq!(Ts::parse(bad), None, "{bad:?}");
        }
        for local in ["2027-01-01", "2027-01-01T00:00:00", "00:00:00"] {
            let d: toml::value::Datetime = local.parse().unwrap();
            assert_eq!(datetime_ms(&d), None, "{local}");
        }
    }

    #[test]
    fn writes_utc_with_milliseconds_only_when_there_are_any() {
        assert_eq!(Ts(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Ts(1_798_761_600_000).rfc3339(), "2027-01-01T00:00:00Z");
        assert_eq!(Ts(1_798_761_600_250).rfc3339(), "2027-01-01T00:00:00.250Z");
        assert_eq!(Ts(1_798_761_600_007).rfc3339(), "2027-01-01T00:00:00.007Z");
        assert_eq!(Ts(1_709_208_000_000).rfc3339(), "2024-02-29T12:00:00Z");
        assert_eq!(
            Ts::parse("2027-01-01T02:00:00+02:00").unwrap().rfc3339(),
            "2027-01-01T00:00:00Z"
        );
    }

    #[test]
    fn round_trips_across_the_400_year_cycle_and_past_9999() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.999Z",
            "2369-12-31T23:59:59.999Z",
            "2370-01-01T00:00:00Z",
            "2400-02-29T00:00:00.001Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert_eq!(Ts::parse(s).unwrap().rfc3339(), s);
        }
        assert_eq!(ms("2370-01-01T00:00:00Z"), Some(12_622_780_800_000));
        assert_eq!(ms("9999-12-31T00:00:00Z"), Some(253_402_214_400_000));
        // A negative offset on the last day of 9999 is in the year 10000 (UTC).
        let t = Ts::parse("9999-12-31T20:00:00-04:00").unwrap();
        assert_eq!(t.0, 253_402_214_400_000 + 86_400_000);
        assert_eq!(t.rfc3339(), "10000-01-01T00:00:00Z");
        // Any u64 has a date.
        assert!(Ts(u64::MAX).rfc3339().ends_with(".615Z"));
    }

    #[test]
    fn serde_writes_and_reads_rfc3339() {
        let json = serde_json::to_string(&Ts(1_798_761_600_250)).unwrap();
        assert_eq!(json, "\"2027-01-01T00:00:00.250Z\"");
        assert_eq!(
            serde_json::from_str::<Ts>(&json).unwrap(),
            Ts(1_798_761_600_250)
        );
        let err = serde_json::from_str::<Ts>("\"soon\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`soon` is not an RFC 3339 date-time with offset"),
            "{err}"
        );
    }
}
