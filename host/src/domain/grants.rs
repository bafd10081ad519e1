//! What a policy step may use: the grants written in a manifest
//! (`grants = ["counters", "kv:max-keys=100", "http:auth.example.com"]`).

use crate::domain::units::Size;

/// A capability a step may be granted. `log` and `clock` are always there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Counters,
    Cache,
    /// The kv store, with its namespace's limits (`kv` for the defaults,
    /// `kv:max-bytes=10MiB,max-keys=10000,max-value=64KiB` to set them).
    Kv(KvLimits),
    Consumers,
    Crypto,
    Timing,
    Sink,
    /// Outbound HTTP to one host (and port, if given).
    Http(String),
    /// The API's OpenAPI document, given to the step's `configure` under
    /// its config's `openapi` key (no import: the host adds it).
    OpenApi,
}

impl Capability {
    /// Parse a grant from a manifest.
    pub fn parse(s: &str) -> Result<Capability, String> {
        Ok(match s {
            "counters" => Capability::Counters,
            "cache" => Capability::Cache,
            "kv" => Capability::Kv(KvLimits::default()),
            "consumers" => Capability::Consumers,
            "crypto" => Capability::Crypto,
            "timing" => Capability::Timing,
            "sink" => Capability::Sink,
            "openapi" => Capability::OpenApi,
            other if other.starts_with("kv:") => Capability::Kv(KvLimits::parse(&other[3..])?),
            other => match other.strip_prefix("http:") {
                Some(host)
                    if !host.is_empty()
                        && host.chars().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')
                        }) =>
                {
                    Capability::Http(host.to_ascii_lowercase())
                }
                _ => {
                    return Err(format!(
                        "unknown grant `{other}`: expected one of counters, cache, kv (or kv:max-bytes=SIZE,max-keys=N,max-value=SIZE), consumers, crypto, timing, sink, openapi, http:HOST[:PORT]"
                    ))
                }
            },
        })
    }

    /// The grant a WIT interface import needs, if any.
    pub fn for_import(name: &str) -> Option<&'static str> {
        let iface = name.strip_prefix("tollgate:policy/")?;
        let iface = iface.split('@').next().unwrap_or(iface);
        Some(match iface {
            "counters" | "limits" => "counters",
            "cache" => "cache",
            "kv" => "kv",
            "consumers" | "access" => "consumers",
            "crypto" => "crypto",
            "timing" => "timing",
            "sink" => "sink",
            "http-client" => "http",
            _ => return None,
        })
    }
}

/// What one step was granted.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub list: Vec<Capability>,
}

impl Grants {
    pub fn has(&self, c: &Capability) -> bool {
        self.list.contains(c)
    }
    pub fn has_named(&self, name: &str) -> bool {
        match name {
            "http" => self.list.iter().any(|c| matches!(c, Capability::Http(_))),
            "kv" => self.kv_limits().is_some(),
            n => Capability::parse(n).is_ok_and(|c| self.has(&c)),
        }
    }
    /// The limits of the kv grant, if kv was granted (the last one given).
    pub fn kv_limits(&self) -> Option<KvLimits> {
        self.list.iter().rev().find_map(|c| match c {
            Capability::Kv(l) => Some(*l),
            _ => None,
        })
    }

    /// Whether `host` (and `port`) may be called.
    pub fn allows_host(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        self.list.iter().any(|c| match c {
            Capability::Http(h) => *h == host || port.is_some_and(|p| *h == format!("{host}:{p}")),
            _ => false,
        })
    }
}

/// The limits of a kv namespace, given with the step's `kv` grant. A
/// write that would take the namespace past one is refused with
/// `service-error.invalid`. The namespace is the plugin's: steps of one
/// plugin share it, and each write is checked against the limits of the
/// step that makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Bytes of keys and values together.
    pub max_bytes: u64,
    /// Number of keys.
    pub max_keys: u64,
    /// Bytes of one value.
    pub max_value: u64,
}

/// Largest `max-value`: the WIT's own limit.
pub const KV_MAX_VALUE: u64 = 1 << 20;
/// Largest `max-bytes`.
pub const KV_MAX_BYTES: u64 = 1 << 30;
/// Largest `max-keys`.
pub const KV_MAX_KEYS: u64 = 10_000_000;

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            max_bytes: 10 << 20,
            max_keys: 10_000,
            max_value: 64 << 10,
        }
    }
}

impl KvLimits {
    /// Parse `max-bytes=10MiB,max-keys=10000,max-value=64KiB` (any of
    /// them; the others keep their defaults).
    pub fn parse(s: &str) -> Result<KvLimits, String> {
        let mut l = KvLimits::default();
        let size = |name: &str, v: &str| {
            Size::try_from(v)
                .map(|s| s.0)
                .map_err(|e| format!("grant `kv:{s}`: {name}: {e}"))
        };
        for part in s.split(',') {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                format!("grant `kv:{s}`: expected NAME=VALUE, found `{part}` (names: max-bytes, max-keys, max-value)")
            })?;
            let (name, value) = (name.trim(), value.trim());
            match name {
                "max-bytes" => l.max_bytes = size(name, value)?,
                "max-value" => l.max_value = size(name, value)?,
                "max-keys" => {
                    l.max_keys = value.parse().map_err(|_| {
                        format!("grant `kv:{s}`: max-keys = `{value}` is not a whole number")
                    })?
                }
                other => {
                    return Err(format!(
                        "grant `kv:{s}`: unknown limit `{other}` (expected max-bytes, max-keys, max-value)"
                    ))
                }
            }
        }
        if !(1..=KV_MAX_VALUE).contains(&l.max_value) {
            return Err(format!(
                "grant `kv:{s}`: max-value = {} bytes must be between 1 byte and 1MiB",
                l.max_value
            ));
        }
        if !(1..=KV_MAX_KEYS).contains(&l.max_keys) {
            return Err(format!(
                "grant `kv:{s}`: max-keys = {} must be between 1 and {KV_MAX_KEYS}",
                l.max_keys
            ));
        }
        if l.max_bytes < l.max_value || l.max_bytes > KV_MAX_BYTES {
            return Err(format!(
                "grant `kv:{s}`: max-bytes = {} bytes must be at least max-value ({} bytes) and at most 1GiB",
                l.max_bytes, l.max_value
            ));
        }
        Ok(l)
    }
}
