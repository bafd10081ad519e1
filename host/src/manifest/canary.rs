//! A step's canary: a second version of its plugin serving a share of the
//! calls, rolled back on its own failures (see `docs/configuration.md`,
//! "Canary and rollback", and [`crate::policy::canary`]).

use super::Dur;
use serde::{Deserialize, Deserializer};

/// A second version of a step's plugin for a share of the calls.
///
/// ```toml
/// [[api.chain]]
/// name = "limit"
/// plugin = "rate-limit"
/// config = { requests = 100, per = "1m" }
/// canary = { plugin = "rate-limit-v2", percent = 10, rollback = { failures = 5, min-calls = 20, window = "60s" } }
/// # canary.config: the canary's own configuration; default: the step's
/// ```
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CanarySpec {
    /// A plugin of `[plugins]` (it may be the step's own plugin, with
    /// another `config`).
    pub plugin: String,
    /// The share of consumers (or clients) the canary serves: 0 to 100,
    /// with at most two decimals (`10`, `2.5`, `"0.25%"`).
    pub percent: Percent,
    /// The canary's configuration, checked by its plugin; default: the
    /// step's `config`.
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// When the canary is switched off (the defaults without it).
    #[serde(default)]
    pub rollback: Option<RollbackSpec>,
}

/// When a canary is rolled back: over the last `window`, it served at least
/// `min-calls` calls and more than `failures` percent of them failed (a
/// trap, a timeout or any other step error of the canary, or a 5xx answer).
///
/// ```toml
/// rollback = { failures = 5, min-calls = 20, window = "60s" }   # the defaults
/// ```
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RollbackSpec {
    /// The failure rate, in percent, above which the canary is rolled back
    /// (default 5).
    pub failures: Option<Percent>,
    /// Calls the canary must have served within the window first (default
    /// 20, at least 1).
    pub min_calls: Option<u64>,
    /// The sliding window (default 60s, 1s to 1h).
    pub window: Option<Dur>,
}

/// A percentage, 0 to 100 with at most two decimals, kept in hundredths of
/// a percent (`10` is 1000). Written as a number (`10`, `2.5`) or a string
/// (`"2.5%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(pub u32);

impl Percent {
    /// 100%, in hundredths of a percent.
    pub const WHOLE: u32 = 10_000;

    /// As a number of percent (`10`, `2.5`): an integer when it is one.
    pub fn to_json(self) -> serde_json::Value {
        if self.0.is_multiple_of(100) {
            (self.0 / 100).into()
        } else {
            (f64::from(self.0) / 100.0).into()
        }
    }

    /// The same, as a TOML value.
    pub fn to_toml(self) -> toml_edit::Value {
        if self.0.is_multiple_of(100) {
            i64::from(self.0 / 100).into()
        } else {
            (f64::from(self.0) / 100.0).into()
        }
    }
}

impl TryFrom<f64> for Percent {
    type Error = String;
    fn try_from(p: f64) -> Result<Self, String> {
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("{p} is not a percentage: expected 0 to 100"));
        }
        let hundredths = (p * 100.0).round();
        if (hundredths - p * 100.0).abs() > 1e-6 {
            return Err(format!(
                "{p} has more than two decimals: write e.g. 2.5 or 0.25"
            ));
        }
        Ok(Percent(hundredths as u32))
    }
}

impl TryFrom<&str> for Percent {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        let n = s.trim().strip_suffix('%').unwrap_or(s).trim();
        let ok = !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == '.') && n.len() <= 8;
        match n.parse::<f64>() {
            Ok(p) if ok => Percent::try_from(p),
            _ => Err(format!(
                "`{s}` is not a percentage: expected e.g. 10, 2.5 or \"2.5%\""
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            I(i64),
            F(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::I(i) if (0..=100).contains(&i) => Ok(Percent(i as u32 * 100)),
            Raw::I(i) => Err(format!("{i} is not a percentage: expected 0 to 100")),
            Raw::F(f) => Percent::try_from(f),
            Raw::S(s) => Percent::try_from(s.as_str()),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        #[derive(Deserialize)]
        struct T {
            p: Percent,
        }
        let p = |s: &str| toml::from_str::<T>(&format!("p = {s}")).map(|t| t.p.0);
        assert_eq!(p("10").unwrap(), 1000);
        assert_eq!(p("2.5").unwrap(), 250);
        assert_eq!(p("\"0.25%\"").unwrap(), 25);
        assert_eq!(p("\"100%\"").unwrap(), 10_000);
        assert_eq!(p("0").unwrap(), 0);
        assert!(p("101").is_err());
        assert!(p("-1").is_err());
        assert!(p("0.125").is_err());
        assert!(p("\"ten\"").is_err());
        assert!(p("\"-5%\"").is_err());
        assert_eq!(Percent(250).to_json(), serde_json::json!(2.5));
        assert_eq!(Percent(1000).to_json(), serde_json::json!(10));
    }
}
