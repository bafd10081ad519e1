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
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            Other(toml::Value),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => Dur::try_from(s.as_str()).map_err(serde::de::Error::custom),
            Raw::Other(v) => Err(serde::de::Error::custom(format!(
                "`{v}` is not a duration: expected a string like \"50ms\" or \"10s\""
            ))),
        }
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
