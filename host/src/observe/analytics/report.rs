//! Reports over the analytics store: a [`Query`] parsed from the admin
//! API's query parameters (time range, grouping or time series, filters),
//! run over the stored buckets into a [`Report`], written as JSON or CSV.
//!
//! A range without `interval` is read from the coarsest buckets that fit
//! inside it (days in the middle, hours and minutes at the ends): every
//! call is in all three resolutions, so the figures are the same as from
//! minute buckets alone. The range is widened to whole minutes; where its
//! ends are older than the minute (hour) retention, to whole hours (days):
//! the report says which range it covers. Percentiles come from merged
//! HDR histograms: exact to within one histogram bucket (1%).

use super::agg::{key_prefix, parse_key, Agg, Dim};
use super::{Res, Retention, TREE};
use crate::domain::time::Ts;
use crate::store::Store;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// The query parameters a report takes (the admin API adds `format`).
pub const PARAMS: &[&str] = &[
    "from", "to", "by", "interval", "api", "route", "method", "status", "consumer", "app", "plan",
    "product", "key", "sort", "limit",
];

/// Rows a report returns at most, and buckets a time series spans at most.
pub const MAX_ROWS: usize = 10_000;

/// Dimensions one report groups by at most.
pub const MAX_BY: usize = 3;

/// A query parameter that cannot be served: which, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam {
    pub field: String,
    pub message: String,
    /// Well-formed, but refused by a rule between parameters (`from` not
    /// before `to`, a series too long): the admin API's 422.
    pub unprocessable: bool,
}

fn bad(field: &str, message: impl Into<String>) -> BadParam {
    BadParam {
        field: field.to_string(),
        message: message.into(),
        unprocessable: false,
    }
}

fn refused(field: &str, message: impl Into<String>) -> BadParam {
    BadParam {
        unprocessable: true,
        ..bad(field, message)
    }
}

/// How rows are ordered (time series: always by time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Calls,
    Errors,
    Bytes,
    P99,
    Name,
}

impl Sort {
    fn parse(s: &str) -> Option<Sort> {
        Some(match s {
            "calls" => Sort::Calls,
            "errors" => Sort::Errors,
            "bytes" => Sort::Bytes,
            "p99" => Sort::P99,
            "name" => Sort::Name,
            _ => return None,
        })
    }
}

/// A filter on one dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// The value itself (empty: calls without one, e.g. anonymous).
    Is(String),
    /// Any value but this one (empty: calls with one).
    Not(String),
    /// A status class: `4` for `4xx`.
    Class(u16),
}

/// What a route asks when a parameter is absent.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub by: Vec<Dim>,
    pub sort: Sort,
    pub limit: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            by: Vec::new(),
            sort: Sort::Calls,
            limit: 1000,
        }
    }
}

/// A parsed report query.
#[derive(Debug, Clone)]
pub struct Query {
    /// The range covered, `[from, to)`, Unix ms, widened to whole buckets.
    pub from_ms: u64,
    pub to_ms: u64,
    pub by: Vec<Dim>,
    /// A time series of these buckets.
    pub interval: Option<Res>,
    pub filters: Vec<(Dim, Filter)>,
    pub sort: Sort,
    pub limit: usize,
}

impl Query {
    /// Parse `params` (already restricted to the route's names) at
    /// `now_ms`, against the store's retention.
    pub fn parse(
        params: &BTreeMap<String, String>,
        defaults: &Defaults,
        retention: &Retention,
        now_ms: u64,
    ) -> Result<Query, BadParam> {
        let p = |k: &str| params.get(k).map(String::as_str);
        let to = match p("to") {
            Some(s) => time("to", s, now_ms)?,
            None => now_ms,
        };
        let from = match p("from") {
            Some(s) => time("from", s, now_ms)?,
            None => to.saturating_sub(86_400_000),
        };
        if from >= to {
            return Err(refused("from", "must be before `to`"));
        }
        if to - from > 3660 * 86_400_000 {
            return Err(refused("from", "a report spans at most 3660 days"));
        }
        let interval = match p("interval") {
            None => None,
            Some(s) => Some(
                Res::parse(s).ok_or_else(|| bad("interval", "must be one of minute, hour, day"))?,
            ),
        };
        let by = match p("by") {
            None => defaults.by.clone(),
            Some(s) => dims(s)?,
        };
        let mut filters = Vec::new();
        for d in Dim::ALL {
            let Some(v) = p(d.name()) else { continue };
            if v.len() > super::MAX_DIM {
                return Err(bad(d.name(), "is longer than 1024 bytes"));
            }
            let f = match d {
                Dim::Status => status_filter(v)?,
                Dim::Method => Filter::Is(v.to_ascii_uppercase()),
                _ => Filter::Is(v.to_string()),
            };
            filters.push((d, f));
        }
        let sort = match p("sort") {
            None => defaults.sort,
            Some(s) => Sort::parse(s)
                .ok_or_else(|| bad("sort", "must be one of calls, errors, bytes, p99, name"))?,
        };
        let limit = match p("limit") {
            // A series is whole unless cut on purpose.
            None if interval.is_some() => MAX_ROWS,
            None => defaults.limit,
            Some(s) => Some(s)
                .filter(|s| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|n| (1..=MAX_ROWS).contains(n))
                .ok_or_else(|| bad("limit", "must be a number from 1 to 10000"))?,
        };
        let (from_ms, to_ms) = match interval {
            Some(r) => (r.floor(from), r.ceil(to)),
            None => {
                let res = |t: u64| {
                    let age = now_ms.saturating_sub(t);
                    if age <= retention.minute.0.as_millis() as u64 {
                        Res::Minute
                    } else if age <= retention.hour.0.as_millis() as u64 {
                        Res::Hour
                    } else {
                        Res::Day
                    }
                };
                (res(from).floor(from), res(to).ceil(to))
            }
        };
        if let Some(r) = interval {
            let n = (to_ms - from_ms) / r.ms();
            if n > MAX_ROWS as u64 {
                return Err(refused(
                    "interval",
                    format!(
                        "a series of {n} {}s is too long (at most {MAX_ROWS}): use a coarser interval or a shorter range",
                        r.name()
                    ),
                ));
            }
        }
        Ok(Query {
            from_ms,
            to_ms,
            by,
            interval,
            filters,
            sort,
            limit,
        })
    }

    /// The buckets to read: `(resolution, from, to)`, together exactly the
    /// range.
    pub fn parts(&self) -> Vec<(Res, u64, u64)> {
        let mut out = Vec::new();
        match self.interval {
            Some(r) => out.push((r, self.from_ms, self.to_ms)),
            None => plan(
                self.from_ms,
                self.to_ms,
                &[Res::Day, Res::Hour, Res::Minute],
                &mut out,
            ),
        }
        out
    }

    fn matches(&self, d: &super::Dims) -> bool {
        self.filters.iter().all(|(dim, f)| match f {
            Filter::Class(c) => d.status / 100 == *c,
            Filter::Is(v) => d.get(*dim) == *v,
            Filter::Not(v) => d.get(*dim) != *v,
        })
    }
}

/// Split `[from, to)` into the coarsest buckets of `levels` (coarse to
/// fine) that fit.
fn plan(from: u64, to: u64, levels: &[Res], out: &mut Vec<(Res, u64, u64)>) {
    let Some((&res, finer)) = levels.split_first() else {
        return;
    };
    if from >= to {
        return;
    }
    let (a, b) = (res.ceil(from), res.floor(to));
    if a < b {
        plan(from, a, finer, out);
        out.push((res, a, b));
        plan(b, to, finer, out);
    } else {
        plan(from, to, finer, out);
    }
}

/// A time: RFC 3339, Unix milliseconds, `now`, or `-24h` (`m`, `h`, `d`)
/// before now.
fn time(field: &str, s: &str, now_ms: u64) -> Result<u64, BadParam> {
    let err = || {
        bad(
            field,
            "is not a time: RFC 3339 (2027-01-01T00:00:00Z), Unix milliseconds, `now`, or `-24h` (m, h, d)",
        )
    };
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(rel) = s.strip_prefix('-') {
        let (n, unit) = rel.split_at(rel.len().saturating_sub(1));
        if n.is_empty() || n.len() > 6 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let n: u64 = n.parse().map_err(|_| err())?;
        let ms = match unit {
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        return Ok(now_ms.saturating_sub(n * ms));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Some(s)
            .filter(|s| s.len() <= 15)
            .and_then(|s| s.parse().ok())
            .ok_or_else(err);
    }
    if s.len() > 100 {
        return Err(err());
    }
    Ts::parse(s).map(|t| t.0).ok_or_else(err)
}

fn dims(s: &str) -> Result<Vec<Dim>, BadParam> {
    let mut out = Vec::new();
    for name in s.split(',').filter(|n| !n.is_empty()) {
        let d = Dim::parse(name).ok_or_else(|| {
            bad(
                "by",
                format!(
                    "`{}` is not a dimension: one or more (comma-separated) of api, route, method, status, consumer, app, plan, product, key",
                    super::clip(name).chars().take(40).collect::<String>()
                ),
            )
        })?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    if out.len() > MAX_BY {
        return Err(bad("by", format!("groups by at most {MAX_BY} dimensions")));
    }
    Ok(out)
}

fn status_filter(v: &str) -> Result<Filter, BadParam> {
    let b = v.as_bytes();
    let err = || bad("status", "must be a status (404) or a class (4xx)");
    match b {
        [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Ok(Filter::Class(u16::from(c - b'0'))),
        [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => Ok(Filter::Is(v.to_string())),
        _ => Err(err()),
    }
}

/// Latency percentiles of a set of calls, µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pct {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

fn pct(h: &hdrhistogram::Histogram<u64>) -> Option<Pct> {
    (!h.is_empty()).then(|| Pct {
        p50: h.value_at_quantile(0.50),
        p95: h.value_at_quantile(0.95),
        p99: h.value_at_quantile(0.99),
        max: h.max(),
        mean: h.mean(),
    })
}

/// One row of a report: its bucket (time series), its group's values (in
/// the order of `by`), and its figures.
#[derive(Debug, Clone)]
pub struct Row {
    pub time_ms: Option<u64>,
    pub group: Vec<String>,
    pub agg: Agg,
}

impl Row {
    pub fn latency(&self) -> Option<Pct> {
        pct(&self.agg.total)
    }

    pub fn upstream(&self) -> Option<Pct> {
        pct(&self.agg.upstream)
    }

    pub fn errors(&self) -> u64 {
        self.agg.errors_4xx + self.agg.errors_5xx
    }
}

/// A report: the range it covers, its rows, and the totals of every call
/// it matched (rows cut at `limit` or not).
#[derive(Debug, Clone)]
pub struct Report {
    pub from_ms: u64,
    pub to_ms: u64,
    pub by: Vec<Dim>,
    pub interval: Option<Res>,
    pub rows: Vec<Row>,
    pub totals: Row,
    /// Rows left out past `limit`.
    pub truncated: usize,
}

/// Groups a report may rank at most (a report by consumer over many
/// consumers): their counters take ~100 bytes each. More is refused.
pub const MAX_GROUPS: usize = 200_000;

/// Groups a report ranked by p99 may have at most: ranking needs each
/// group's histogram (a few KiB).
pub const MAX_P99_GROUPS: usize = 5_000;

/// Why a report was not made.
#[derive(Debug)]
pub enum RunError {
    /// More groups than a report ranks (the admin API's 422).
    TooManyGroups(String),
    /// The store failed.
    Store(anyhow::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::TooManyGroups(m) => f.write_str(m),
            RunError::Store(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        RunError::Store(e)
    }
}

type GroupKey = (Option<u64>, Vec<String>);

/// What ranks a group: its counters (and, to rank by p99, its latency).
#[derive(Default)]
struct Rank {
    calls: u64,
    errors: u64,
    bytes: u64,
    latency: Option<hdrhistogram::Histogram<u64>>,
}

/// Visit every stored bucket `q` reads that matches its filters: its
/// group and figures.
fn scan(store: &Store, q: &Query, mut f: impl FnMut(GroupKey, &Agg)) -> anyhow::Result<()> {
    let mut unreadable = 0usize;
    for (res, a, b) in q.parts() {
        store.range_each(TREE, &key_prefix(res, a), &key_prefix(res, b), |k, v| {
            let Some((_, start, dims)) = parse_key(k) else {
                return true;
            };
            if !q.matches(&dims) {
                return true;
            }
            match Agg::decode(v) {
                Ok(agg) => {
                    let group = q.by.iter().map(|d| dims.get(*d)).collect();
                    f((q.interval.map(|_| start), group), &agg);
                }
                Err(_) => unreadable += 1,
            }
            true
        })?;
    }
    if unreadable > 0 {
        tracing::warn!("analytics: {unreadable} stored bucket(s) unreadable, left out of a report");
    }
    Ok(())
}

/// Run `q` over the store in two passes, so that memory stays bounded
/// whatever the store holds: the first ranks the groups by their counters
/// (at most [`MAX_GROUPS`]) and sums the totals; the second gathers the
/// whole figures (histograms, refusals) of the `limit` groups kept.
pub fn run(store: &Store, q: &Query) -> Result<Report, RunError> {
    let p99 = q.sort == Sort::P99 && q.interval.is_none();
    let cap = if p99 { MAX_P99_GROUPS } else { MAX_GROUPS };
    let mut totals = Agg::default();
    let mut ranks: HashMap<GroupKey, Rank> = HashMap::new();
    let mut over = false;
    // A series without groups has a row for every bucket, empty or not.
    if let (Some(r), true) = (q.interval, q.by.is_empty()) {
        let mut t = q.from_ms;
        while t < q.to_ms {
            ranks.entry((Some(t), Vec::new())).or_default();
            t += r.ms();
        }
    }
    scan(store, q, |key, agg| {
        totals.merge(agg);
        if !ranks.contains_key(&key) && ranks.len() >= cap {
            over = true;
            return;
        }
        let rank = ranks.entry(key).or_default();
        rank.calls += agg.calls;
        rank.errors += agg.errors_4xx + agg.errors_5xx;
        rank.bytes = rank
            .bytes
            .saturating_add(agg.bytes_in.saturating_add(agg.bytes_out));
        if p99 {
            let _ = rank
                .latency
                .get_or_insert_with(|| Agg::default().total)
                .add(&agg.total);
        }
    })?;
    if over {
        return Err(RunError::TooManyGroups(format!(
            "the report has more than {cap} groups{}: narrow it with filters, fewer `by` dimensions or a shorter range",
            if p99 { " to rank by p99" } else { "" }
        )));
    }
    let mut keys: Vec<(GroupKey, Rank)> = ranks.into_iter().collect();
    if q.interval.is_some() || q.sort == Sort::Name {
        keys.sort_by(|a, b| a.0.cmp(&b.0));
    } else {
        let score = |r: &Rank| -> u64 {
            match q.sort {
                Sort::Calls | Sort::Name => r.calls,
                Sort::Errors => r.errors,
                Sort::Bytes => r.bytes,
                Sort::P99 => r.latency.as_ref().map_or(0, |h| h.value_at_quantile(0.99)),
            }
        };
        keys.sort_by(|a, b| {
            score(&b.1)
                .cmp(&score(&a.1))
                .then_with(|| a.0 .1.cmp(&b.0 .1))
        });
    }
    let truncated = keys.len().saturating_sub(q.limit);
    keys.truncate(q.limit);
    let order: Vec<GroupKey> = keys.into_iter().map(|(k, _)| k).collect();
    let mut kept: HashMap<GroupKey, Agg> =
        order.iter().map(|k| (k.clone(), Agg::default())).collect();
    scan(store, q, |key, agg| {
        if let Some(a) = kept.get_mut(&key) {
            a.merge(agg);
        }
    })?;
    let rows = order
        .into_iter()
        .map(|key| {
            let agg = kept.remove(&key).unwrap_or_default();
            Row {
                time_ms: key.0,
                group: key.1,
                agg,
            }
        })
        .collect();
    Ok(Report {
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        by: q.by.clone(),
        interval: q.interval,
        rows,
        totals: Row {
            time_ms: None,
            group: Vec::new(),
            agg: totals,
        },
        truncated,
    })
}

fn pct_json(p: Option<Pct>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => json!({
            "p50": p.p50, "p95": p.p95, "p99": p.p99, "max": p.max,
            "mean": (p.mean * 10.0).round() / 10.0,
        }),
    }
}

/// The figures of a row, as JSON fields (after its time and group).
fn stats_json(r: &Row, out: &mut Map<String, Value>) {
    let a = &r.agg;
    out.insert("calls".into(), a.calls.into());
    out.insert("errors".into(), r.errors().into());
    out.insert("errors_4xx".into(), a.errors_4xx.into());
    out.insert("errors_5xx".into(), a.errors_5xx.into());
    out.insert("bytes_in".into(), a.bytes_in.into());
    out.insert("bytes_out".into(), a.bytes_out.into());
    out.insert("cache_hits".into(), a.cache_hits.into());
    out.insert("aborted".into(), a.aborted.into());
    out.insert("latency_us".into(), pct_json(r.latency()));
    out.insert("upstream_latency_us".into(), pct_json(r.upstream()));
    out.insert("answered_by".into(), json!(a.answered_by));
}

/// The CSV columns after the time and group columns.
const CSV_STATS: &[&str] = &[
    "calls",
    "errors",
    "errors_4xx",
    "errors_5xx",
    "bytes_in",
    "bytes_out",
    "cache_hits",
    "aborted",
    "latency_p50_us",
    "latency_p95_us",
    "latency_p99_us",
    "latency_max_us",
    "upstream_p50_us",
    "upstream_p95_us",
    "upstream_p99_us",
];

impl Report {
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut m = Map::new();
                if let Some(t) = r.time_ms {
                    m.insert("time".into(), Ts(t).rfc3339().into());
                }
                for (d, v) in self.by.iter().zip(&r.group) {
                    m.insert(d.name().into(), v.clone().into());
                }
                stats_json(r, &mut m);
                Value::Object(m)
            })
            .collect();
        let mut totals = Map::new();
        stats_json(&self.totals, &mut totals);
        json!({
            "from": Ts(self.from_ms).rfc3339(),
            "to": Ts(self.to_ms).rfc3339(),
            "interval": self.interval.map(Res::name),
            "by": self.by.iter().map(|d| d.name()).collect::<Vec<_>>(),
            "totals": totals,
            "rows": rows,
            "truncated": self.truncated,
        })
    }

    /// RFC 4180 CSV with a header line; latencies in µs, empty without
    /// calls.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let mut head: Vec<&str> = Vec::new();
        if self.interval.is_some() {
            head.push("time");
        }
        head.extend(self.by.iter().map(|d| d.name()));
        head.extend(CSV_STATS);
        out.push_str(&head.join(","));
        out.push_str("\r\n");
        for r in &self.rows {
            let mut cells: Vec<String> = Vec::new();
            if let Some(t) = r.time_ms {
                cells.push(Ts(t).rfc3339());
            }
            cells.extend(r.group.iter().map(|v| csv_cell(v)));
            let a = &r.agg;
            cells.extend(
                [
                    a.calls,
                    r.errors(),
                    a.errors_4xx,
                    a.errors_5xx,
                    a.bytes_in,
                    a.bytes_out,
                    a.cache_hits,
                    a.aborted,
                ]
                .map(|n| n.to_string()),
            );
            let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
            let (l, u) = (r.latency(), r.upstream());
            cells.extend([
                opt(l.map(|p| p.p50)),
                opt(l.map(|p| p.p95)),
                opt(l.map(|p| p.p99)),
                opt(l.map(|p| p.max)),
                opt(u.map(|p| p.p50)),
                opt(u.map(|p| p.p95)),
                opt(u.map(|p| p.p99)),
            ]);
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

/// A CSV cell: quoted when it holds a comma, quote or line break; a
/// leading `=`, `+`, `-` or `@` (a spreadsheet formula) is quoted behind
/// a `'`.
fn csv_cell(v: &str) -> String {
    let formula = v.starts_with(['=', '+', '-', '@']);
    if formula || v.contains([',', '"', '\r', '\n']) {
        let v = if formula { format!("'{v}") } else { v.into() };
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}
