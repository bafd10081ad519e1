//! One bucket's figures ([`Agg`]: sums and two HDR latency histograms) for
//! one combination of dimensions ([`Dims`]), and how both are kept in the
//! store: the key `resolution byte, bucket start (Unix ms, big-endian),
//! dimensions` and the value `counters, refusals, histograms (V2)`.

use super::Res;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// Significant digits of the latency histograms: a recorded value and the
/// value reported for it differ by less than 1% (one histogram bucket).
pub const SIGFIG: u8 = 2;

/// What a call is counted under. Empty strings stand for "none" (an
/// unrouted call has no API; an anonymous one no consumer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dims {
    pub api: String,
    pub route: String,
    pub method: String,
    pub status: u16,
    pub consumer: String,
    pub app: String,
    pub plan: String,
    pub product: String,
    pub key_id: String,
}

/// The dimensions a report may group or filter by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dim {
    Api,
    Route,
    Method,
    Status,
    Consumer,
    App,
    Plan,
    Product,
    Key,
}

impl Dim {
    pub const ALL: [Dim; 9] = [
        Dim::Api,
        Dim::Route,
        Dim::Method,
        Dim::Status,
        Dim::Consumer,
        Dim::App,
        Dim::Plan,
        Dim::Product,
        Dim::Key,
    ];

    /// The name in queries, JSON and CSV columns.
    pub fn name(self) -> &'static str {
        match self {
            Dim::Api => "api",
            Dim::Route => "route",
            Dim::Method => "method",
            Dim::Status => "status",
            Dim::Consumer => "consumer",
            Dim::App => "app",
            Dim::Plan => "plan",
            Dim::Product => "product",
            Dim::Key => "key",
        }
    }

    pub fn parse(s: &str) -> Option<Dim> {
        Dim::ALL.into_iter().find(|d| d.name() == s)
    }
}

impl Dims {
    /// The value of one dimension, as text.
    pub fn get(&self, d: Dim) -> String {
        match d {
            Dim::Api => self.api.clone(),
            Dim::Route => self.route.clone(),
            Dim::Method => self.method.clone(),
            Dim::Status => self.status.to_string(),
            Dim::Consumer => self.consumer.clone(),
            Dim::App => self.app.clone(),
            Dim::Plan => self.plan.clone(),
            Dim::Product => self.product.clone(),
            Dim::Key => self.key_id.clone(),
        }
    }

    fn strings(&self) -> [&str; 8] {
        [
            &self.api,
            &self.route,
            &self.method,
            &self.consumer,
            &self.app,
            &self.plan,
            &self.product,
            &self.key_id,
        ]
    }
}

/// The store key of `dims` in the bucket of `res` starting at `start_ms`.
pub fn key(res: Res, start_ms: u64, dims: &Dims) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.push(res.byte());
    k.extend_from_slice(&start_ms.to_be_bytes());
    k.extend_from_slice(&dims.status.to_be_bytes());
    for s in dims.strings() {
        // Dimensions are cut to 1 KiB when recorded (`clip`).
        k.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_be_bytes());
        k.extend_from_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
    }
    k
}

/// The first key of `res`'s buckets starting at `start_ms` (for ranges).
pub fn key_prefix(res: Res, start_ms: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(res.byte());
    k.extend_from_slice(&start_ms.to_be_bytes());
    k
}

/// The bucket start and dimensions of a store key (`None`: not one of
/// ours).
pub fn parse_key(k: &[u8]) -> Option<(Res, u64, Dims)> {
    let res = Res::from_byte(*k.first()?)?;
    let start = u64::from_be_bytes(k.get(1..9)?.try_into().ok()?);
    let status = u16::from_be_bytes(k.get(9..11)?.try_into().ok()?);
    let mut at = 11;
    let mut next = || -> Option<String> {
        let n = u16::from_be_bytes(k.get(at..at + 2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(k.get(at + 2..at + 2 + n)?).ok()?;
        at += 2 + n;
        Some(s.to_string())
    };
    let dims = Dims {
        api: next()?,
        route: next()?,
        method: next()?,
        status,
        consumer: next()?,
        app: next()?,
        plan: next()?,
        product: next()?,
        key_id: next()?,
    };
    Some((res, start, dims))
}

/// One bucket's figures for one combination of dimensions.
#[derive(Debug, Clone)]
pub struct Agg {
    pub calls: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cache_hits: u64,
    /// Calls whose client went away before the whole response was sent.
    pub aborted: u64,
    /// Calls answered by a step instead of the upstream (refusals, cache
    /// hits), by step name.
    pub answered_by: BTreeMap<String, u64>,
    /// Arrival to the last byte sent, µs.
    pub total: Histogram<u64>,
    /// Waiting on the upstream, µs (calls that reached it).
    pub upstream: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new(SIGFIG).expect("2 significant digits are valid")
}

impl Default for Agg {
    fn default() -> Self {
        Agg {
            calls: 0,
            errors_4xx: 0,
            errors_5xx: 0,
            bytes_in: 0,
            bytes_out: 0,
            cache_hits: 0,
            aborted: 0,
            answered_by: BTreeMap::new(),
            total: histogram(),
            upstream: histogram(),
        }
    }
}

/// What one call adds to its bucket.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub total_us: u64,
    pub upstream_us: Option<u64>,
    pub cache_hit: bool,
    pub aborted: bool,
    pub answered_by: Option<std::sync::Arc<str>>,
}

impl Agg {
    /// Count one call.
    pub fn add(&mut self, s: &Sample) {
        self.calls += 1;
        match s.status {
            400..=499 => self.errors_4xx += 1,
            500..=599 => self.errors_5xx += 1,
            _ => {}
        }
        self.bytes_in = self.bytes_in.saturating_add(s.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(s.bytes_out);
        self.cache_hits += u64::from(s.cache_hit);
        self.aborted += u64::from(s.aborted);
        if let Some(step) = &s.answered_by {
            match self.answered_by.get_mut(&**step) {
                Some(n) => *n += 1,
                None => {
                    self.answered_by.insert(step.to_string(), 1);
                }
            }
        }
        // Auto-resizing histograms take any u64 (`saturating_record` is
        // for fixed ranges); a failure would be an impossible value.
        let _ = self.total.record(s.total_us);
        if let Some(u) = s.upstream_us {
            let _ = self.upstream.record(u);
        }
    }

    /// Add `other`'s figures to these.
    pub fn merge(&mut self, other: &Agg) {
        self.calls += other.calls;
        self.errors_4xx += other.errors_4xx;
        self.errors_5xx += other.errors_5xx;
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.cache_hits += other.cache_hits;
        self.aborted += other.aborted;
        for (k, n) in &other.answered_by {
            *self.answered_by.entry(k.clone()).or_default() += n;
        }
        let _ = self.total.add(&other.total);
        let _ = self.upstream.add(&other.upstream);
    }

    /// The stored form: a version byte, LEB128 counters, the refusals, and
    /// both histograms in hdrhistogram's V2 format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        for n in [
            self.calls,
            self.errors_4xx,
            self.errors_5xx,
            self.bytes_in,
            self.bytes_out,
            self.cache_hits,
            self.aborted,
        ] {
            put_varint(&mut out, n);
        }
        put_varint(&mut out, self.answered_by.len() as u64);
        for (k, n) in &self.answered_by {
            put_varint(&mut out, k.len() as u64);
            out.extend_from_slice(k.as_bytes());
            put_varint(&mut out, *n);
        }
        for h in [&self.total, &self.upstream] {
            let mut buf = Vec::new();
            if !h.is_empty() {
                // Writing to a Vec cannot fail; an empty histogram is 0 bytes.
                let _ = V2Serializer::new().serialize(h, &mut buf);
            }
            put_varint(&mut out, buf.len() as u64);
            out.extend_from_slice(&buf);
        }
        out
    }

    /// The figures of a stored value, or why not.
    pub fn decode(v: &[u8]) -> Result<Agg, String> {
        let mut r = Reader { v, at: 0 };
        if r.byte()? != VERSION {
            return Err("unknown analytics record version".into());
        }
        let mut a = Agg {
            calls: r.varint()?,
            errors_4xx: r.varint()?,
            errors_5xx: r.varint()?,
            bytes_in: r.varint()?,
            bytes_out: r.varint()?,
            cache_hits: r.varint()?,
            aborted: r.varint()?,
            ..Agg::default()
        };
        let n = r.varint()?;
        for _ in 0..n {
            let len = r.varint()? as usize;
            let k = std::str::from_utf8(r.take(len)?)
                .map_err(|_| "a step name is not UTF-8".to_string())?
                .to_string();
            a.answered_by.insert(k, r.varint()?);
        }
        for h in [&mut a.total, &mut a.upstream] {
            let len = r.varint()? as usize;
            let bytes = r.take(len)?;
            if len > 0 {
                let mut d: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut &bytes[..])
                    .map_err(|e| format!("a latency histogram: {e:?}"))?;
                d.auto(true);
                *h = d;
            }
        }
        Ok(a)
    }
}

const VERSION: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

struct Reader<'a> {
    v: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .v
            .get(self.at..self.at.saturating_add(n))
            .ok_or("an analytics record is cut short")?;
        self.at += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("an analytics counter is too long".into())
    }
}
