//! One admin call as the handlers see it ([`Call`]): who is calling, the
//! path parameters, the query string and the JSON body, with the checks
//! every route shares — query parameters by name, paging (`limit`,
//! `after`), list filters by caller-chosen or generated id, and bodies
//! decoded naming the field at fault.

use crate::control::admin::error::{truncate, AdminError};
use crate::control::admin::model::{check_id, User};
use crate::control::admin::Registry;
use crate::control::ControlPlane;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A query string's parameters, percent-decoded.
pub type Query = BTreeMap<String, String>;

/// The query parameters of every list call.
pub const PAGING: &[&str] = &["limit", "after"];

/// One admin call, routed and authenticated.
pub struct Call {
    pub gateway: Arc<ControlPlane>,
    pub registry: Arc<Registry>,
    /// The caller (`None` on public routes).
    pub user: Option<User>,
    /// The route template's parameters, in order.
    pub params: Vec<String>,
    /// The raw query string.
    pub query: Option<String>,
    /// The request body (empty but for POST, PUT and PATCH).
    pub body: Bytes,
    /// The `Host` header, for the OpenAPI document's `servers`.
    pub host: Option<String>,
    /// The `If-Match` header, quotes removed.
    pub if_match: Option<String>,
    /// The `Accept` header (reports answer CSV for `text/csv`).
    pub accept: Option<String>,
    /// The listener's address and whether it is TLS.
    pub local: SocketAddr,
    pub tls: bool,
}

impl Call {
    /// Who is making a change (empty on public routes, which change
    /// nothing).
    pub fn actor(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.id.as_str())
    }

    /// The route's one parameter (`{id}` or `{name}`).
    pub fn id(&self) -> &str {
        self.params.first().map_or("", String::as_str)
    }

    /// The query, taking only the parameters named in `allowed`.
    pub fn query(&self, allowed: &[&str]) -> Result<Query, AdminError> {
        query(self.query.as_deref(), allowed)
    }

    /// Refuse any query parameter (routes that take none).
    pub fn no_query(&self) -> Result<(), AdminError> {
        self.query(&[]).map(|_| ())
    }

    /// The JSON body, which must be there.
    pub fn body<T: DeserializeOwned>(&self) -> Result<T, AdminError> {
        decode_required(&self.body)
    }

    /// The JSON body, where an empty one is `{}`.
    pub fn optional_body<T: DeserializeOwned>(&self) -> Result<T, AdminError> {
        decode(&self.body)
    }
}

/// A body that must be empty or `{}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// The query string as pairs, percent-decoded; only `allowed` names.
pub fn query(raw: Option<&str>, allowed: &[&str]) -> Result<Query, AdminError> {
    let mut out = BTreeMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        let v = percent_decode(v)?;
        if !allowed.contains(&k.as_str()) {
            return Err(AdminError::invalid(
                k.clone(),
                format!(
                    "unknown query parameter `{}`; this route takes: {}",
                    truncate(&k, 40),
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(AdminError::invalid(k, "given twice"));
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, AdminError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| AdminError::bad_request("bad percent-encoding in the query"))?;
                out.push(h);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| AdminError::bad_request("the query is not UTF-8"))
}

/// `limit` and `after` of a list call (`after`: 1 to 200 characters).
pub fn paging(q: &Query) -> Result<(usize, Option<String>), AdminError> {
    let limit = match q.get("limit") {
        None => 50,
        Some(s) => Some(s)
            .filter(|s| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| AdminError::invalid("limit", "must be a number from 1 to 500"))?,
    };
    let after = q.get("after").cloned();
    if let Some(a) = &after {
        if a.is_empty() || a.chars().count() > 200 {
            return Err(AdminError::invalid(
                "after",
                "must be 1 to 200 characters: the `next` of the previous page",
            ));
        }
    }
    Ok((limit, after))
}

/// A list filter naming a resource by its caller-chosen id.
pub fn id_filter(q: &Query, name: &str) -> Result<Option<String>, AdminError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => check_id(name, v).map(|()| Some(v.clone())),
    }
}

/// A list filter naming a resource by its generated id (`sub_` and 16 hex
/// digits).
pub fn generated_filter(q: &Query, name: &str, prefix: &str) -> Result<Option<String>, AdminError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) if is_generated_id(v, prefix) => Ok(Some(v.clone())),
        Some(v) => Err(AdminError::invalid(
            name,
            format!(
                "`{}` is not a {name} id: `{prefix}` and 16 hex digits",
                truncate(v, 80)
            ),
        )),
    }
}

/// `prefix` and 16 lowercase hex digits, as the registry generates ids.
pub fn is_generated_id(v: &str, prefix: &str) -> bool {
    v.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 16
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Decode a JSON body that must be there (an empty body is refused).
pub fn decode_required<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AdminError::bad_request(
            "this call needs a JSON body (`{}` for none of the optional fields)",
        ));
    }
    decode(body)
}

/// Decode a JSON body into `T`, naming the field at fault; an empty body
/// is `{}`.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut *de);
    match result {
        Ok(v) => match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(AdminError::bad_request(format!(
                "the body is not valid JSON: {e}"
            ))),
        },
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.to_string();
            // serde_json appends " at line L column C"; keep it, it helps.
            if inner.is_syntax() || inner.is_eof() {
                Err(AdminError::bad_request(format!(
                    "the body is not valid JSON: {msg}"
                )))
            } else if path == "." || path.is_empty() {
                Err(AdminError::bad_request(msg))
            } else {
                Err(AdminError::invalid(path, msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let q = query(
            Some("limit=5&after=a%2Fb&product=x+y"),
            &["limit", "after", "product"],
        )
        .unwrap();
        assert_eq!(q["after"], "a/b");
        assert_eq!(q["product"], "x y");
        assert!(query(Some("bogus=1"), &["limit"]).is_err());
        assert!(query(Some("limit=1&limit=2"), &["limit"]).is_err());
        assert!(query(Some("limit=%zz"), &["limit"]).is_err());
        assert!(paging(&query(Some("limit=0"), &["limit"]).unwrap()).is_err());
        assert!(paging(&query(Some("limit=501"), &["limit"]).unwrap()).is_err());
        assert!(paging(&query(Some("limit=%2B5"), &["limit"]).unwrap()).is_err());
        assert!(paging(&query(Some("after="), &["after"]).unwrap()).is_err());
        let long = format!("after={}", "a".repeat(201));
        assert!(paging(&query(Some(&long), &["after"]).unwrap()).is_err());
        assert!(is_generated_id("sub_0123456789abcdef", "sub_"));
        assert!(!is_generated_id("sub_0123456789ABCDEF", "sub_"));
        assert!(!is_generated_id("key_0123456789abcdef", "sub_"));
    }

    #[test]
    fn filters_check_their_ids() {
        let q = query(
            Some("app=shop&subscription=sub_0123456789abcdef"),
            &["app", "subscription"],
        )
        .unwrap();
        assert_eq!(id_filter(&q, "app").unwrap().as_deref(), Some("shop"));
        assert_eq!(id_filter(&q, "plan").unwrap(), None);
        assert!(generated_filter(&q, "subscription", "sub_")
            .unwrap()
            .is_some());
        let bad = query(
            Some("app=Shop&subscription=sub_1"),
            &["app", "subscription"],
        )
        .unwrap();
        assert_eq!(
            id_filter(&bad, "app").unwrap_err().field.as_deref(),
            Some("app")
        );
        let e = generated_filter(&bad, "subscription", "sub_").unwrap_err();
        assert!(e.message.contains("is not a subscription id"), "{e}");
    }

    #[test]
    fn bodies_name_the_field_at_fault() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct B {
            #[allow(dead_code)]
            n: u32,
        }
        assert!(decode_required::<B>(b" ")
            .unwrap_err()
            .message
            .contains("needs a JSON body"));
        assert!(decode::<Empty>(b"").is_ok());
        assert_eq!(
            decode::<B>(br#"{"n": "x"}"#).unwrap_err().field.as_deref(),
            Some("n")
        );
        assert!(decode::<B>(b"{")
            .unwrap_err()
            .message
            .starts_with("the body is not valid JSON"));
        assert!(decode::<B>(br#"{"n": 1} x"#).is_err());
    }
}
