//! Durations and sizes as written in configuration files (`250ms`, `64KiB`).
//!
//! Hand-written on purpose (about 60 lines): `humantime` also accepts
//! `1h 30m` and fractional forms the manifests refuse, and `bytesize` reads
//! `KB` as 1,000 bytes where Tollgate's files have always read it as 1,024;
//! either crate would change what a valid file means.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A duration written as a number and a unit: `250ms`, `10s`, `2m`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl TryFrom<&str> for Dur {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
            format!("`{s}` has no unit: expected e.g. `250ms`, `10s`, `2m`, `1h`")
        })?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("`{s}` is not a duration: expected e.g. `250ms`, `10s`, `2m`, `1h`")
        })?;
        let d = match unit {
            "us" => Duration::from_micros(n),
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => {
                return Err(format!(
                    "`{s}` has unknown unit `{unit}`: expected one of us, ms, s, m, h"
                ))
            }
        };
        Ok(Dur(d))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "a duration", "\"50ms\" or \"10s\"")
    }
}

/// A value written as a string and read with its `TryFrom<&str>`; any
/// other TOML value is refused as not being `what` (e.g. "a duration"),
/// with `example` of what is expected.
pub fn from_text<'de, D, T>(d: D, what: &str, example: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: for<'a> TryFrom<&'a str, Error = String>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        Other(toml::Value),
    }
    match Raw::deserialize(d)? {
        Raw::S(s) => T::try_from(s.as_str()).map_err(serde::de::Error::custom),
        Raw::Other(v) => Err(serde::de::Error::custom(format!(
            "`{v}` is not {what}: expected a string like {example}"
        ))),
    }
}

/// A size in bytes written as a number and a unit: `512B`, `64KiB`, `16MiB`, `1GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl TryFrom<&str> for Size {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size: expected e.g. `64KiB`, `16MiB`"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "KB" | "K" => 1 << 10,
            "MiB" | "MB" | "M" => 1 << 20,
            "GiB" | "GB" | "G" => 1 << 30,
            other => {
                return Err(format!(
                    "`{s}` has unknown unit `{other}`: expected one of B, KiB, MiB, GiB"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Size)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => Size::try_from(s.as_str()).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Result<Duration, String> {
        Dur::try_from(s).map(|d| d.0)
    }

    fn size(s: &str) -> Result<u64, String> {
        Size::try_from(s).map(|s| s.0)
    }

    #[test]
    fn durations_are_a_whole_number_and_one_unit() {
        assert_eq!(dur("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(dur("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(dur(" 10s "), Ok(Duration::from_secs(10)));
        assert_eq!(dur("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(dur("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(dur("0s"), Ok(Duration::ZERO));
        // Saturates rather than overflowing.
        assert_eq!(
            dur("18446744073709551615h"),
            Ok(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn durations_refuse_what_humantime_would_take() {
        assert_eq!(
            dur("10"),
            Err("`10` has no unit: expected e.g. `250ms`, `10s`, `2m`, `1h`".into())
        );
        assert_eq!(
            dur("1.5s"),
            Err("`1.5s` has unknown unit `.5s`: expected one of us, ms, s, m, h".into())
        );
        assert_eq!(
            dur("ms"),
            Err("`ms` is not a duration: expected e.g. `250ms`, `10s`, `2m`, `1h`".into())
        );
        for bad in ["1h 30m", "1 s", "10sec", "1d", "-1s", "10S"] {
            assert!(dur(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_read_kb_as_1024_bytes() {
        assert_eq!(size("512"), Ok(512));
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("64KiB"), Ok(64 << 10));
        assert_eq!(size("64KB"), Ok(64 << 10));
        assert_eq!(size("64K"), Ok(64 << 10));
        assert_eq!(size("16 MiB"), Ok(16 << 20));
        assert_eq!(size("16M"), Ok(16 << 20));
        assert_eq!(size("1GB"), Ok(1 << 30));
    }

    #[test]
    fn sizes_refuse_unknown_units_and_overflow() {
        assert_eq!(
            size("1TiB"),
            Err("`1TiB` has unknown unit `TiB`: expected one of B, KiB, MiB, GiB".into())
        );
        assert_eq!(
            size("KiB"),
            Err("`KiB` is not a size: expected e.g. `64KiB`, `16MiB`".into())
        );
        assert_eq!(
            size("18446744073709551615KiB"),
            Err("`18446744073709551615KiB` is too large".into())
        );
        for bad in ["1.5MiB", "-1", "1kb", "1 mib"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn toml_values_deserialize_with_the_same_rules() {
        #[derive(Deserialize)]
        struct T {
            d: Dur,
            s: Size,
        }
        let t: T = toml::from_str("d = \"50ms\"\ns = 4096").unwrap();
        assert_eq!((t.d.0, t.s.0), (Duration::from_millis(50), 4096));
        let t: T = toml::from_str("d = \"1h\"\ns = \"2KiB\"").unwrap();
        assert_eq!((t.d.0, t.s.0), (Duration::from_secs(3600), 2048));
        let err = toml::from_str::<T>("d = 50\ns = 1")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("`50` is not a duration: expected a string like \"50ms\""),
            "{err}"
        );
        let err = toml::from_str::<T>("d = \"5x\"\ns = 1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`5x` has unknown unit `x`"), "{err}");
        let err = toml::from_str::<T>("d = \"5s\"\ns = \"5XB\"")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`5XB` has unknown unit `XB`"), "{err}");
    }
}
