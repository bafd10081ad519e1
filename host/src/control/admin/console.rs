//! The admin console: a page and its script and style, served on the admin
//! listener at `/console` (no token needed to load them; every call they
//! make goes to the admin API with the admin's bearer token, so a role sees
//! and does in the console exactly what the API lets it). Embedded in the
//! binary: nothing to build or install on the operator's side, no CDN. The
//! page is held to a strict Content-Security-Policy: scripts and styles
//! from this origin only, no inline code, no framing.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// The policy every console response carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is the console's.
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The console's answer to `method` on `path` (a path of the console).
pub fn serve(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let asset = match path {
        "/console" | "/console/" => Some((INDEX, "text/html; charset=utf-8")),
        "/console/console.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/console/console.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    };
    let (status, body, content_type) = match (method, asset) {
        (&Method::GET | &Method::HEAD, Some((body, ct))) => (StatusCode::OK, body, ct),
        (&Method::GET | &Method::HEAD, None) => (
            StatusCode::NOT_FOUND,
            "no such page\n",
            "text/plain; charset=utf-8",
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n",
            "text/plain; charset=utf-8",
        ),
    };
    let bytes = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(body.as_bytes())
    };
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_its_own_assets() {
        // No inline script or style, nothing from another origin: the CSP
        // would block it.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        for asset in ["/console/console.js", "/console/console.css"] {
            assert!(INDEX.contains(asset), "{asset}");
            assert_eq!(serve(&Method::GET, asset).status(), 200);
        }
        // The script writes text, never HTML.
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("outerHTML"));
        assert!(!SCRIPT.contains("eval(") && !SCRIPT.contains("new Function"));
        assert_eq!(serve(&Method::GET, "/console/x").status(), 404);
        assert_eq!(serve(&Method::POST, "/console").status(), 405);
        let r = serve(&Method::HEAD, "/console");
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    }
}
