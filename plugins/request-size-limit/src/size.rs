//! Sizes as written in a configuration: an integer number of bytes, or a
//! string such as `"512KiB"`, `"1.5 MB"` or `"100"`.
//!
//! Hand-written: `bytesize` 2's `FromStr` takes fractions through `f64` and
//! truncates (`"1.5 B"` is 1 byte), saturates instead of refusing, also
//! accepts `K`, `T`, `P`, `E`, and answers with generic messages; this
//! parser is exact and says what is wrong.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// A size in bytes that the gateway can buffer (at most `u32::MAX`, because
/// the WIT `body-access` limit is a `u32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u32);

/// Units, matched without regard to case: decimal (powers of 1000) and
/// binary (powers of 1024).
const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
];

const EXPECTED: &str = "expected a number of bytes or a string such as \"512KiB\" or \"1MiB\"";

fn too_large(text: &str) -> String {
    format!(
        "{text:?} is more than the largest limit, {} bytes (4 GiB - 1)",
        u32::MAX
    )
}

/// Parse a size string. Errors are messages for a person.
pub fn parse_size(text: &str) -> Result<u32, String> {
    let trimmed = text.trim_matches(' ');
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let unit = unit.trim_start_matches(' ');
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    let digits_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(whole)
        || fraction.is_some_and(|f| !digits_ok(f))
        || !unit.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return Err(format!("{text:?} is not a size: {EXPECTED}"));
    }
    let Some(&(_, multiplier)) = UNITS.iter().find(|(u, _)| u.eq_ignore_ascii_case(unit)) else {
        return Err(format!(
            "unknown unit {unit:?} in {text:?}: expected B, KB, MB, GB (powers of 1000) \
             or KiB, MiB, GiB (powers of 1024)"
        ));
    };
    let whole = whole.trim_start_matches('0');
    if whole.len() > 20 {
        return Err(too_large(text));
    }
    // At most 20 digits (< 2^67) times at most 2^30: fits in a u128.
    let mut bytes = whole.parse::<u128>().unwrap_or(0) * u128::from(multiplier);
    if let Some(fraction) = fraction {
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > 9 {
            return Err(format!("{text:?} is not a whole number of bytes"));
        }
        let scale = 10u128.pow(fraction.len() as u32);
        let part = fraction.parse::<u128>().unwrap_or(0) * u128::from(multiplier);
        if part % scale != 0 {
            return Err(format!("{text:?} is not a whole number of bytes"));
        }
        bytes += part / scale;
    }
    u32::try_from(bytes).map_err(|_| too_large(text))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of bytes or a string such as \"1MiB\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                u32::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(too_large(&v.to_string())))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("{v} is negative: {EXPECTED}"))),
                }
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Size, E> {
                Err(E::custom(format!(
                    "{v} is not a whole number of bytes: {EXPECTED}"
                )))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}
