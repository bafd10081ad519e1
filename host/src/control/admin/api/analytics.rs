//! Reports over the analytics store (`/admin/v1/analytics/...`), readable
//! by every role (reports-user and above): calls, errors, latency
//! percentiles and bytes over a time range, grouped or as a time series
//! (see [`crate::observe::analytics::report`]), as JSON or, with
//! `format=csv` or `Accept: text/csv`, as CSV.
//!
//! - `GET /admin/v1/analytics/report`: any grouping, filters, series.
//! - `GET /admin/v1/analytics/top-consumers`: consumers by calls (or
//!   `sort`), 10 unless `limit` says otherwise.
//! - `GET /admin/v1/analytics/consumers/{id}`: one consumer's own usage,
//!   by API unless `by` says otherwise (for the developer portal).

use super::request::Call;
use super::{ok, text, Reply};
use crate::control::admin::error::{truncate, AdminError};
use crate::observe::analytics::report::{Defaults, Filter, RunError, Sort, PARAMS};
use crate::observe::analytics::{Analytics, BadParam, Dim, Query};
use std::collections::BTreeMap;

/// `GET /admin/v1/analytics/report`.
pub fn report(c: &Call) -> Reply {
    let (params, csv) = params(c, &[])?;
    let a = analytics(c)?;
    let q = a.query(&params, &Defaults::default()).map_err(invalid)?;
    answer(a, &q, csv)
}

/// `GET /admin/v1/analytics/top-consumers`.
pub fn top_consumers(c: &Call) -> Reply {
    let (params, csv) = params(c, &["by", "interval"])?;
    let a = analytics(c)?;
    let defaults = Defaults {
        by: vec![Dim::Consumer],
        sort: Sort::Calls,
        limit: 10,
    };
    let mut q = a.query(&params, &defaults).map_err(invalid)?;
    // Identified calls only: anonymous calls are no consumer (a report
    // `by=consumer` shows them with an empty one).
    q.filters.push((Dim::Consumer, Filter::Not(String::new())));
    answer(a, &q, csv)
}

/// `GET /admin/v1/analytics/consumers/{id}`.
pub fn consumer(c: &Call) -> Reply {
    let id = c.id();
    if id.len() > 1024 {
        return Err(AdminError::invalid("id", "is longer than 1024 bytes"));
    }
    let (params, csv) = params(c, &["consumer"])?;
    let a = analytics(c)?;
    let defaults = Defaults {
        by: vec![Dim::Api],
        ..Defaults::default()
    };
    let mut q = a.query(&params, &defaults).map_err(invalid)?;
    q.filters.push((Dim::Consumer, Filter::Is(id.to_string())));
    let mut reply = answer(a, &q, csv)?;
    if !csv {
        reply.1["consumer"] = id.into();
    }
    Ok(reply)
}

/// The analytics store, or 404 when the gateway file has none.
fn analytics(c: &Call) -> Result<&Analytics, AdminError> {
    c.gateway.data.observe.analytics.as_ref().ok_or_else(|| {
        AdminError::no_route(
            "analytics is off: add an `[analytics]` section to the gateway file (docs/configuration.md)",
        )
    })
}

/// The report's parameters (all but `except`, and `format`), and whether
/// it is wanted as CSV (`format=csv`, or `Accept: text/csv` without a
/// `format`).
fn params(c: &Call, except: &[&str]) -> Result<(BTreeMap<String, String>, bool), AdminError> {
    let mut allowed: Vec<&str> = PARAMS
        .iter()
        .copied()
        .filter(|p| !except.contains(p))
        .collect();
    allowed.push("format");
    let mut q = c.query(&allowed)?;
    let csv = match q.remove("format").as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            return Err(AdminError::invalid(
                "format",
                format!("`{}` is not a format: json or csv", truncate(other, 40)),
            ))
        }
        None => c.accept.as_deref().is_some_and(|a| {
            a.split(',')
                .any(|t| t.split(';').next().unwrap_or("").trim() == "text/csv")
        }),
    };
    Ok((q, csv))
}

fn invalid(e: BadParam) -> AdminError {
    if e.unprocessable {
        AdminError::unprocessable(e.field, e.message)
    } else {
        AdminError::invalid(e.field, e.message)
    }
}

fn answer(a: &Analytics, q: &Query, csv: bool) -> Reply {
    let r = a.report(q).map_err(|e| match e {
        RunError::TooManyGroups(m) => AdminError::unprocessable("by", m),
        RunError::Store(e) => AdminError::unavailable(format!("the analytics store failed: {e:#}")),
    })?;
    if csv {
        text("text/csv; charset=utf-8", r.to_csv())
    } else {
        ok(r.to_json())
    }
}
