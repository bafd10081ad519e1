//! The OpenAPI description of the admin API, served at
//! `GET /admin/v1/openapi.json` with `servers` naming the listener.

use super::request::Call;
use super::{ok, Reply};
use crate::control::admin::error::AdminError;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// The OpenAPI description (`docs/admin-openapi.json`).
pub const OPENAPI: &str = include_str!("../../../../../docs/admin-openapi.json");

/// `GET /admin/v1/openapi.json` (no token needed).
pub fn document(c: &Call) -> Reply {
    c.no_query()?;
    ok(openapi_doc(c.local, c.tls, c.host.as_deref())?)
}

/// The OpenAPI document with `servers` naming this listener: its scheme,
/// and its address (or, when it listens on every interface, the `Host` the
/// client used).
fn openapi_doc(local: SocketAddr, tls: bool, host: Option<&str>) -> Result<Value, AdminError> {
    let mut doc: Value = serde_json::from_str(OPENAPI)
        .map_err(|e| AdminError::unavailable(format!("the OpenAPI document: {e}")))?;
    let scheme = if tls { "https" } else { "http" };
    let authority = match host {
        Some(h)
            if local.ip().is_unspecified()
                && !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) =>
        {
            h.to_string()
        }
        _ => local.to_string(),
    };
    doc["servers"] = json!([{ "url": format!("{scheme}://{authority}") }]);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_name_the_listener() {
        let url = |local: &str, tls, host| {
            openapi_doc(local.parse().unwrap(), tls, host).unwrap()["servers"][0]["url"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            url("127.0.0.1:9", false, Some("evil")),
            "http://127.0.0.1:9"
        );
        assert_eq!(url("[::1]:9", true, None), "https://[::1]:9");
        // Every interface: the Host the client used, when it is one.
        assert_eq!(
            url("0.0.0.0:9", true, Some("admin.example.com:9")),
            "https://admin.example.com:9"
        );
        assert_eq!(url("0.0.0.0:9", false, Some("a/b")), "http://0.0.0.0:9");
        assert_eq!(url("[::]:9", false, None), "http://[::]:9");
    }
}
