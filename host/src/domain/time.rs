//! Points in time and calendar periods, as both planes use them: the
//! admin API's timestamps, key expiries in manifests, plan quotas.

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
        let secs = (self.0 / 1000) as i64;
        let ms = self.0 % 1000;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Civil from days (proleptic Gregorian).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        if ms == 0 {
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
        } else {
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
        }
    }
}

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

/// Unix milliseconds of a TOML date-time with offset.
pub fn datetime_ms(d: &toml::value::Datetime) -> Option<u64> {
    let (date, time, offset) = (d.date?, d.time?, d.offset?);
    // Days since the epoch (civil-from-days inverse, proleptic Gregorian).
    let (y, m, dd) = (
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second);
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
