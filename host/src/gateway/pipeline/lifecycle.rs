//! What a deprecated or retired API's calls are told (see
//! docs/configuration.md, "Versions, lifecycle and revisions"):
//!
//! - deprecated: every response, the upstream's or the gateway's, gets
//!   `Deprecation: @<unix seconds>` (RFC 9745), `Sunset: <IMF-fixdate>`
//!   (RFC 8594) when a sunset is set, and `Link: <url>;
//!   rel="successor-version"` when a successor is named;
//! - retired: the call is answered 410 (`application/problem+json`,
//!   naming the successor, with the same `Link`); no step and no upstream
//!   runs.
//!
//! The successor's URL is the same call's on the successor version: under
//! the path scheme the version segment is replaced, under the query scheme
//! the parameter, under the header scheme the URL is the same (the client
//! changes the header).

use super::context::{Fields, Outgoing};
use crate::gateway::error::GatewayError;
use crate::loader::{Api, Lifecycle};
use crate::manifest::LifecycleState;
use crate::policy::Header;
use crate::route::{Route, VersionFrom};
use http::{HeaderName, HeaderValue};

/// What a routed call of a deprecated or retired API is told.
pub(crate) struct Notice {
    /// Headers every response gets.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Retired: the call is answered 410.
    retired: bool,
    /// The successor's name and the call's URL on it.
    successor: Option<(String, String)>,
}

/// The notice for a call of `api` through `route`, at `path` (normalised,
/// with its version segment) and `query`: its lifecycle's headers, and
/// for a version chosen by a header, `Vary` naming that header (a cache
/// downstream must not answer one version with another's response).
/// `None` for an active API that is no header version.
pub(crate) fn notice(api: &Api, route: &Route, path: &str, query: Option<&str>) -> Option<Notice> {
    let vary = match api.version.as_ref().map(|v| &v.from) {
        Some(VersionFrom::Header(h)) => HeaderValue::from_str(h).ok(),
        _ => None,
    };
    let mut notice = lifecycle_notice(api, route, path, query);
    if let Some(v) = vary {
        notice
            .get_or_insert_with(|| Notice {
                headers: Vec::new(),
                retired: false,
                successor: None,
            })
            .headers
            .push((http::header::VARY, v));
    }
    notice
}

/// The lifecycle part of [`notice`].
fn lifecycle_notice(api: &Api, route: &Route, path: &str, query: Option<&str>) -> Option<Notice> {
    let life: &Lifecycle = api.lifecycle.as_deref()?;
    let successor = life.successor.as_ref().map(|s| {
        let url = successor_url(api, route, path, query, &s.version);
        (s.api.to_string(), url)
    });
    let link = successor.as_ref().and_then(|(_, url)| {
        HeaderValue::from_str(&format!("<{url}>; rel=\"successor-version\"")).ok()
    });
    match life.state {
        LifecycleState::Active => None,
        LifecycleState::Retired => Some(Notice {
            headers: Vec::new(),
            retired: true,
            successor,
        }),
        LifecycleState::Deprecated => {
            let mut headers = Vec::new();
            if let Some(at) = life.deprecated_at {
                headers.push((
                    HeaderName::from_static("deprecation"),
                    HeaderValue::from_str(&format!("@{at}")).expect("digits"),
                ));
            }
            if let Some(v) = life.sunset.and_then(imf_fixdate) {
                headers.push((HeaderName::from_static("sunset"), v));
            }
            if let Some(l) = link {
                headers.push((http::header::LINK, l));
            }
            Some(Notice {
                headers,
                retired: false,
                successor,
            })
        }
    }
}

impl Notice {
    /// For a retired API (`api`), the failure its calls get.
    pub fn gone(&self, api: &str) -> Option<GatewayError> {
        self.retired.then(|| GatewayError::Retired {
            api: api.to_string(),
            successor: self.successor.clone(),
        })
    }

    /// Add the notice's headers to a response: `Deprecation` and `Sunset`
    /// replace any the response had, `Link` and `Vary` are added beside its
    /// own.
    pub fn apply(&self, out: &mut Outgoing) {
        for (name, value) in &self.headers {
            let replace = name != http::header::LINK && name != http::header::VARY;
            match &mut out.headers {
                Fields::Map(m) => {
                    if replace {
                        m.insert(name.clone(), value.clone());
                    } else {
                        m.append(name.clone(), value.clone());
                    }
                }
                Fields::Wit(v) => {
                    if replace {
                        v.retain(|h| !h.name.eq_ignore_ascii_case(name.as_str()));
                    }
                    v.push(Header {
                        name: name.as_str().to_string(),
                        value: value.as_bytes().to_vec(),
                    });
                }
            }
        }
    }
}

/// Unix seconds as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn imf_fixdate(secs: i64) -> Option<HeaderValue> {
    let t = jiff::Timestamp::from_second(secs).ok()?;
    HeaderValue::from_str(&t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()).ok()
}

/// The same call's URL (path and query) on version `to` of the API's set.
fn successor_url(api: &Api, route: &Route, path: &str, query: Option<&str>, to: &str) -> String {
    let with_query = |p: String| match query {
        Some(q) if !q.is_empty() => format!("{p}?{q}"),
        _ => p,
    };
    match api.version.as_ref().map(|v| &v.from) {
        Some(VersionFrom::Path) => {
            let stripped = route.version.as_ref().is_some_and(|v| v.strip);
            let rest = if stripped {
                let first = path
                    .strip_prefix('/')
                    .and_then(|p| p.split('/').next())
                    .unwrap_or("");
                &path[1 + first.len()..]
            } else if path == "/" {
                ""
            } else {
                path
            };
            with_query(format!("/{to}{rest}"))
        }
        Some(VersionFrom::Query(name)) => {
            let mut pairs: Vec<String> = Vec::new();
            let mut replaced = false;
            for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                let key = pair.split('=').next().unwrap_or("");
                if key == name && !replaced {
                    pairs.push(format!("{name}={to}"));
                    replaced = true;
                } else if key != name {
                    pairs.push(pair.to_string());
                }
            }
            if !replaced {
                pairs.push(format!("{name}={to}"));
            }
            format!("{path}?{}", pairs.join("&"))
        }
        Some(VersionFrom::Header(_)) | None => with_query(path.to_string()),
    }
}

/// The version a call names in a query parameter: the first `name=value`
/// pair's value, as sent.
pub(crate) fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(
            imf_fixdate(1_798_761_600).unwrap(),
            "Fri, 01 Jan 2027 00:00:00 GMT"
        );
        assert_eq!(imf_fixdate(0).unwrap(), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn query_values() {
        assert_eq!(
            query_value(Some("a=1&api-version=v2&b"), "api-version"),
            Some("v2")
        );
        assert_eq!(query_value(Some("api-version"), "api-version"), Some(""));
        assert_eq!(query_value(Some("x=api-version"), "api-version"), None);
        assert_eq!(query_value(None, "api-version"), None);
    }
}
