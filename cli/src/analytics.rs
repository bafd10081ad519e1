//! `tollgate admin analytics ...`: the reports of the analytics store
//! (`/admin/v1/analytics/...`) as tables, `--json` or `--csv`.
//!
//! ```sh
//! tollgate admin analytics report --from -7d --by api,status
//! tollgate admin analytics report --from -1h --interval minute --api pets
//! tollgate admin analytics top --from -30d --limit 5
//! tollgate admin analytics consumer alice --from 2027-01-01T00:00:00Z --csv > alice.csv
//! ```

use crate::cmd::Call;
use crate::render::Show;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

/// `analytics ...`
#[derive(Subcommand, Debug)]
pub enum AnalyticsVerb {
    /// Calls, errors, latency percentiles and bytes over a time range,
    /// grouped (`--by`) or as a time series (`--interval`).
    Report {
        #[command(flatten)]
        range: Range,
        /// Group by up to three of: api, route, method, status, consumer,
        /// app, plan, product, key (comma-separated).
        #[arg(long, value_name = "DIMS")]
        by: Option<String>,
        /// A time series of these buckets.
        #[arg(long, value_parser = ["minute", "hour", "day"])]
        interval: Option<String>,
        #[command(flatten)]
        filters: Filters,
        #[command(flatten)]
        rows: Rows,
    },
    /// The consumers with the most calls (10 unless --limit).
    Top {
        #[command(flatten)]
        range: Range,
        #[command(flatten)]
        filters: Filters,
        #[command(flatten)]
        rows: Rows,
    },
    /// One consumer's own usage, by API unless --by says otherwise.
    Consumer {
        /// The consumer's id.
        id: String,
        #[command(flatten)]
        range: Range,
        /// Group by up to three dimensions (default: api).
        #[arg(long, value_name = "DIMS")]
        by: Option<String>,
        /// A time series of these buckets.
        #[arg(long, value_parser = ["minute", "hour", "day"])]
        interval: Option<String>,
        #[command(flatten)]
        filters: Filters,
        #[command(flatten)]
        rows: Rows,
    },
}

/// The time range of a report.
#[derive(Args, Debug, Default)]
pub struct Range {
    /// Start: RFC 3339, Unix milliseconds, `now` or `-24h` (m, h, d before
    /// now). Default: 24 hours before --to.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub from: Option<String>,
    /// End (exclusive), in the forms of --from. Default: now.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub to: Option<String>,
}

/// Filters: only the calls with these values (an empty value: calls
/// without one).
#[derive(Args, Debug, Default)]
pub struct Filters {
    #[arg(long)]
    pub api: Option<String>,
    #[arg(long)]
    pub route: Option<String>,
    #[arg(long)]
    pub method: Option<String>,
    /// A status (404) or a class (4xx).
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub app: Option<String>,
    #[arg(long)]
    pub plan: Option<String>,
    #[arg(long)]
    pub product: Option<String>,
    /// A key id.
    #[arg(long)]
    pub key: Option<String>,
}

/// Order, count and format of the rows.
#[derive(Args, Debug, Default)]
pub struct Rows {
    /// Most calls, errors, bytes or highest p99 first, or by name.
    #[arg(long, value_parser = ["calls", "errors", "bytes", "p99", "name"])]
    pub sort: Option<String>,
    /// Rows at most (1-10000).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub limit: Option<u16>,
    /// Print the report as CSV (RFC 4180) instead of a table (or JSON).
    #[arg(long)]
    pub csv: bool,
}

/// The call an analytics command makes.
pub fn plan(verb: &AnalyticsVerb) -> Call {
    let (path, range, by, interval, filters, rows, consumer) = match verb {
        AnalyticsVerb::Report {
            range,
            by,
            interval,
            filters,
            rows,
        } => (
            vec!["analytics".to_string(), "report".into()],
            range,
            by,
            interval,
            filters,
            rows,
            None,
        ),
        AnalyticsVerb::Top {
            range,
            filters,
            rows,
        } => (
            vec!["analytics".to_string(), "top-consumers".into()],
            range,
            &None,
            &None,
            filters,
            rows,
            None,
        ),
        AnalyticsVerb::Consumer {
            id,
            range,
            by,
            interval,
            filters,
            rows,
        } => (
            vec!["analytics".to_string(), "consumers".into(), id.clone()],
            range,
            by,
            interval,
            filters,
            rows,
            Some(id.clone()),
        ),
    };
    let f = filters;
    let mut query: Vec<(&'static str, String)> = [
        ("from", &range.from),
        ("to", &range.to),
        ("by", by),
        ("interval", interval),
        ("api", &f.api),
        ("route", &f.route),
        ("method", &f.method),
        ("status", &f.status),
        ("app", &f.app),
        ("plan", &f.plan),
        ("product", &f.product),
        ("key", &f.key),
        ("sort", &rows.sort),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone())))
    .collect();
    if let Some(l) = rows.limit {
        query.push(("limit", l.to_string()));
    }
    if rows.csv {
        query.push(("format", "csv".into()));
    }
    Call {
        method: Method::GET,
        path,
        query,
        body: None,
        if_match: None,
        auth: true,
        all: false,
        text: rows.csv,
        show: if rows.csv {
            Show::Text
        } else {
            Show::Report { consumer }
        },
    }
}

/// A report as a table: its time and group columns, then the figures
/// (latencies in ms); the range and totals after it, on stderr.
pub fn table(answer: &Value) -> (Vec<Vec<String>>, Vec<String>) {
    let by: Vec<&str> = answer["by"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let series = answer["interval"].is_string();
    let mut head: Vec<String> = Vec::new();
    if series {
        head.push("TIME".into());
    }
    head.extend(by.iter().map(|d| d.to_uppercase()));
    head.extend(
        [
            "CALLS",
            "ERRORS",
            "4XX",
            "5XX",
            "P50 MS",
            "P95 MS",
            "P99 MS",
            "UPSTREAM P99 MS",
            "BYTES IN",
            "BYTES OUT",
        ]
        .map(String::from),
    );
    let mut rows = vec![head];
    for r in answer["rows"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let mut row = Vec::new();
        if series {
            row.push(text(&r["time"]));
        }
        for d in &by {
            row.push(match r[*d].as_str() {
                Some("") | None => "-".into(),
                Some(s) => s.to_string(),
            });
        }
        row.extend(figures(r));
        rows.push(row);
    }
    let t = &answer["totals"];
    let mut notes = vec![format!(
        "{} to {}: {}, {} (4xx {}, 5xx {}), p50 {} ms, p99 {} ms",
        text(&answer["from"]),
        text(&answer["to"]),
        counted(&t["calls"], "call"),
        counted(&t["errors"], "error"),
        text(&t["errors_4xx"]),
        text(&t["errors_5xx"]),
        ms(&t["latency_us"]["p50"]),
        ms(&t["latency_us"]["p99"]),
    )];
    if let Some(n) = answer["truncated"].as_u64().filter(|n| *n > 0) {
        notes.push(format!("{n} more row(s) not shown: --limit for more"));
    }
    (rows, notes)
}

/// `1 call`, `3 calls`.
fn counted(n: &Value, what: &str) -> String {
    let n = text(n);
    if n == "1" {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn figures(r: &Value) -> Vec<String> {
    vec![
        text(&r["calls"]),
        text(&r["errors"]),
        text(&r["errors_4xx"]),
        text(&r["errors_5xx"]),
        ms(&r["latency_us"]["p50"]),
        ms(&r["latency_us"]["p95"]),
        ms(&r["latency_us"]["p99"]),
        ms(&r["upstream_latency_us"]["p99"]),
        text(&r["bytes_in"]),
        text(&r["bytes_out"]),
    ]
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// µs as ms with one decimal; `-` without calls.
fn ms(v: &Value) -> String {
    match v.as_u64() {
        Some(us) => format!("{:.1}", us as f64 / 1000.0),
        None => "-".into(),
    }
}
