//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and by
//! the corpus replay test (`tests/tests/fuzz_corpus.rs`), so the checked-in
//! corpora run as ordinary tests on stable. A crate of its own, outside the
//! shipped `tollgate` library, which it drives through its public API only
//! (`gateway::{headers_to_wit, wit_to_headers}` are public, doc-hidden, for
//! the `headers` and `wit_boundary` bodies).
//!
//! Each body takes the fuzzer's bytes, drives the real code (no copies of
//! it), and panics when a property breaks, not only when the code under
//! test panics. See docs/fuzzing.md for the properties and how to run them.

use arbitrary::{Arbitrary, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::path::{Path, PathBuf};
use tollgate::manifest::{self, GatewayFile, PolicyManifest};
use tollgate::policy::{self, Header, HeaderOp, Response};
use tollgate::route::{normalize_path, PathPattern, MAX_PATH};

// ---------------------------------------------------------------------------
// Paths

/// Bytes an unreserved percent-escape decodes to; the normaliser decodes
/// these, so none may remain escaped in its output.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_upper(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Everything a normalised path must be; `raw` is what it came from.
fn assert_normal(raw: &str, out: &str) {
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}: not absolute");
    assert!(
        out.len() <= raw.len().max(1),
        "{raw:?} -> {out:?}: normalising made the path longer"
    );
    // Idempotent: the router, the policies and the upstream all see `out`;
    // normalising it again (as a policy's `path` edit is) changes nothing.
    assert_eq!(
        normalize_path(out).as_deref(),
        Ok(out),
        "{raw:?} -> {out:?}: not idempotent"
    );
    let segments: Vec<&str> = out[1..].split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        // Only a trailing slash leaves an empty segment, and only at the end.
        assert!(
            !s.is_empty() || i == segments.len() - 1,
            "{raw:?} -> {out:?}: empty segment"
        );
        assert!(
            *s != "." && *s != "..",
            "{raw:?} -> {out:?}: dot-segment left"
        );
    }
    let b = out.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        assert!(
            c > 0x20 && c < 0x7f,
            "{raw:?} -> {out:?}: raw byte {c:#04x} (control, space or non-ASCII)"
        );
        assert!(
            !matches!(c, b'?' | b'#' | b'\\'),
            "{raw:?} -> {out:?}: raw `{}` in a path",
            c as char
        );
        if c == b'%' {
            let v = match (
                b.get(i + 1).copied().and_then(hex_upper),
                b.get(i + 2).copied().and_then(hex_upper),
            ) {
                (Some(h), Some(l)) => h * 16 + l,
                _ => panic!(
                    "{raw:?} -> {out:?}: escape at {i} is not `%` and two upper-case hex digits"
                ),
            };
            assert!(
                !unreserved(v),
                "{raw:?} -> {out:?}: unreserved `{}` left escaped",
                v as char
            );
            // No encoded separator: an upstream that decodes `%2F` or
            // `%5C` would see other segments than the router did.
            assert!(
                v != b'/' && v != b'\\',
                "{raw:?} -> {out:?}: encoded slash or backslash left in the path"
            );
            assert!(
                v >= 0x20 && v != 0x7f,
                "{raw:?} -> {out:?}: encoded control character"
            );
            i += 3;
        } else {
            i += 1;
        }
    }
    // What the upstream request line will carry: the same path, whole (no
    // `?` or `#` that would cut it short, nothing `http` refuses).
    let pq: http::uri::PathAndQuery = out
        .parse()
        .unwrap_or_else(|e| panic!("{raw:?} -> {out:?}: not a valid request path: {e}"));
    assert_eq!(
        pq.path(),
        out,
        "{raw:?}: the upstream would see another path"
    );
    assert_eq!(
        pq.query(),
        None,
        "{raw:?} -> {out:?}: part of it reads as a query"
    );
    // A route written as this path (in normal form) answers it, and a
    // prefix route at it answers it and what lies below it.
    if !out.contains(['{', '}']) {
        let tpl = PathPattern::template(out).unwrap_or_else(|e| {
            panic!("{raw:?} -> {out:?}: a normal path is not a valid route: {e}")
        });
        assert!(
            tpl.matches(out).is_some(),
            "{raw:?} -> {out:?}: its own route does not match it"
        );
        let prefix = PathPattern::prefix(out)
            .unwrap_or_else(|e| panic!("{raw:?} -> {out:?}: not a valid prefix: {e}"));
        assert!(prefix.matches(out).is_some());
        let below = format!("{}/x", out.trim_end_matches('/'));
        assert!(
            prefix.matches(&below).is_some(),
            "{raw:?} -> {out:?}: its prefix route does not match {below:?}"
        );
    }
}

/// The same path spelled differently: unreserved characters percent-encoded
/// (with either case of hex digit) and slashes doubled. It must normalise
/// to the same result, or to the same refusal.
fn respell(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    // Bytes of an escape already there are copied as they are.
    let mut in_escape = 0;
    for (i, c) in raw.char_indices() {
        if c == '%' {
            in_escape = 2;
            out.push(c);
            continue;
        }
        if in_escape > 0 {
            in_escape -= 1;
            out.push(c);
            continue;
        }
        match c {
            '/' if i % 3 == 1 => out.push_str("//"),
            c if c.is_ascii() && unreserved(c as u8) && i % 2 == 0 => {
                if i % 4 == 0 {
                    out.push_str(&format!("%{:02X}", c as u8));
                } else {
                    out.push_str(&format!("%{:02x}", c as u8));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Target `path`: the bytes are a request path (without query).
///
/// Properties of `normalize_path`: it never panics; what it returns is
/// absolute, idempotent, free of dot-segments, empty segments (but a
/// trailing slash), control characters, raw `?`/`#`/`\`/space/non-ASCII,
/// escaped unreserved characters and encoded slashes; it is a valid request
/// path that `http` keeps whole; it is a valid route template and prefix
/// that match it; and another spelling of the same path normalises the same.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let result = normalize_path(raw);
    if let Ok(out) = &result {
        assert_normal(raw, out);
    }
    let other = respell(raw);
    if other.len() <= MAX_PATH {
        let again = normalize_path(&other);
        assert_eq!(
            again.is_ok(),
            result.is_ok(),
            "{raw:?} -> {result:?} but its respelling {other:?} -> {again:?}"
        );
        if let (Ok(a), Ok(b)) = (&result, &again) {
            assert_eq!(a, b, "{raw:?} and its respelling {other:?} differ");
        }
    }
    // What a policy's `path` edit goes through.
    match policy::check_path("fuzz", raw) {
        Ok(p) => assert_eq!(Ok(&p), result.as_ref()),
        Err(e) => assert!(result.is_err(), "{raw:?}: check_path refused: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Manifests

thread_local! {
    /// Where the gateway-file body writes its input: `read_gateway_file`
    /// reads a file, and that is the entry point worth fuzzing.
    static GW_FILE: PathBuf = std::env::temp_dir().join(format!(
        "tollgate-fuzz-{}-{:?}.toml",
        std::process::id(),
        std::thread::current().id()
    ))
    .to_string_lossy()
    .replace(['(', ')'], "")
    .into();
}

const MANIFEST_PATH: &str = "fuzz/policy.toml";

/// Target `manifest`: the bytes are TOML, read both as a policy manifest
/// and as a gateway file.
///
/// Properties: parsing and the checks that need no plugin never panic;
/// every error names the file; spans map to lines and columns inside the
/// text; a route that compiles matches the paths it describes; a step's
/// `config` converts to JSON that reads back the same; an accepted gateway
/// file holds only values inside the documented limits.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    policy_manifest(text);
    gateway_file(text);
}

fn policy_manifest(text: &str) {
    let path = Path::new(MANIFEST_PATH);
    let m: PolicyManifest = match manifest::parse_toml(path, text) {
        Ok(m) => m,
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(MANIFEST_PATH),
                "error without the file: {msg}"
            );
            return;
        }
    };
    let lines = text.split('\n').count();
    let at = |offset: usize| {
        let (l, c) = manifest::line_col(text, offset);
        assert!(l >= 1 && l <= lines && c >= 1, "span {offset} -> {l}:{c}");
    };
    for c in &m.consumers {
        at(c.span().start);
        if let Some(exp) = c.get_ref().keys.iter().find_map(|k| k.expires.as_ref()) {
            let _ = tollgate::loader::datetime_ms(exp);
        }
    }
    for api in &m.apis {
        at(api.span().start);
        let api = api.get_ref();
        for r in &api.routes {
            at(r.span().start);
            let r = r.get_ref();
            if let Some(p) = &r.path {
                if let Ok(tpl) = PathPattern::template(p) {
                    route_matches_itself(p, &tpl);
                }
            }
            if let Some(p) = &r.prefix {
                if let Ok(pre) = PathPattern::prefix(p) {
                    let n = normalize_path(p).expect("a valid prefix normalises");
                    assert!(pre.matches(&n).is_some(), "prefix {p:?} misses {n:?}");
                    let below = format!("{}/below", n.trim_end_matches('/'));
                    assert!(
                        pre.matches(&below).is_some(),
                        "prefix {p:?} misses {below:?}"
                    );
                }
            }
            for h in &r.hosts {
                if let Ok(tollgate::route::HostPattern::Exact(e)) =
                    tollgate::route::HostPattern::parse(h)
                {
                    assert_eq!(e, e.to_ascii_lowercase());
                }
            }
        }
        for s in &api.chain {
            at(s.span().start);
            let s = s.get_ref();
            for g in &s.grants {
                let _ = tollgate::policy::host::Capability::parse(g);
            }
            if let Some(config) = &s.config {
                let json = manifest::toml_to_json(&toml::Value::Table(config.clone()));
                assert!(json.is_object());
                let text = json.to_string();
                let back: serde_json::Value =
                    serde_json::from_str(&text).expect("step config JSON reads back");
                assert_eq!(back, json, "step config changed through JSON");
            }
        }
    }
}

/// A template matches a path made from it by filling every capture.
fn route_matches_itself(pattern: &str, tpl: &PathPattern) {
    let filled: String = pattern
        .split('/')
        .map(|s| match (s.find('{'), s.rfind('}')) {
            // `{id}`, `{sid}.json`, `thumbnail.{ext}`: the capture becomes `v`.
            (Some(open), Some(close)) if open < close => {
                format!("{}v{}", &s[..open], &s[close + 1..])
            }
            _ => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/");
    let Ok(n) = normalize_path(&filled) else {
        panic!("template {pattern:?}: its path {filled:?} does not normalise");
    };
    assert!(
        tpl.matches(&n).is_some(),
        "template {pattern:?} does not match {n:?}"
    );
}

fn gateway_file(text: &str) {
    // Cheap first: only texts that parse as a gateway file go to disk.
    let path = Path::new("fuzz/gateway.toml");
    if manifest::parse_toml::<GatewayFile>(path, text).is_err() {
        return;
    }
    GW_FILE.with(|file| {
        std::fs::write(file, text).expect("writing the fuzz input");
        let result = tollgate::loader::read_gateway_file(file);
        let _ = std::fs::remove_file(file);
        let name = file.display().to_string();
        match result {
            Err(errs) => {
                assert!(!errs.0.is_empty(), "refused without a reason");
                for e in &errs.0 {
                    assert!(e.starts_with(&name), "error without the file: {e}");
                }
            }
            Ok(gw) => accepted_gateway(&gw),
        }
    });
}

fn accepted_gateway(gw: &GatewayFile) {
    use tollgate::policy::engine::MAX_STEP_MEMORY;
    assert_eq!(gw.schema, manifest::SCHEMA);
    assert!(!gw.listeners.is_empty());
    let mut names = std::collections::HashSet::new();
    for l in &gw.listeners {
        assert!(names.insert(l.name.as_str()), "listener name twice");
        assert!(l.address.parse::<std::net::SocketAddr>().is_ok());
    }
    if let Some(a) = &gw.admin {
        let addr: std::net::SocketAddr = a.address.parse().expect("admin address");
        assert!(addr.ip().is_loopback() || a.tls.is_some());
        assert!((1024..=64 << 20).contains(&a.max_body.0));
    }
    let l = &gw.limits;
    assert!(((1 << 20)..=MAX_STEP_MEMORY).contains(&l.step_memory.0));
    assert!(!l.step_timeout.0.is_zero() && l.step_timeout.0 <= tollgate::loader::MAX_STEP_TIMEOUT);
    assert!((1024..=16 << 20).contains(&l.max_header_bytes.0));
    assert!((256..=64 << 10).contains(&l.max_request_target.0));
    assert!(l.max_headers > 0 && l.max_connections > 0 && l.max_concurrent_streams > 0);
    assert!(!l.request_header_timeout.0.is_zero());
    assert!((1..=100_000).contains(&l.max_instances));
}

// ---------------------------------------------------------------------------
// Headers

/// Header names worth hitting often: framing, hop-by-hop, forwarding,
/// identity.
const NAMES: [&str; 20] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authenticate",
    "host",
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "x-forwarded-host",
    "authorization",
    "cookie",
    "x-consumer-id",
    "Content-Length",
    "TE",
    "x-a",
];

/// A header name: one of `NAMES` or anything.
#[derive(Debug, Clone)]
pub struct Name(pub String);

impl<'a> Arbitrary<'a> for Name {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Name(if u.ratio(3, 4)? {
            (*u.choose(&NAMES)?).to_string()
        } else {
            String::arbitrary(u)?
        }))
    }
}

/// A header value: a short ASCII one, a list of names (for `Connection`),
/// or any bytes.
#[derive(Debug, Clone)]
pub struct Value(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Value {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Value(match u.int_in_range(0..=2)? {
            0 => b"1".to_vec(),
            1 => {
                let n = u.int_in_range(1..=3)?;
                let mut v = Vec::new();
                for i in 0..n {
                    if i > 0 {
                        v.extend_from_slice(b", ");
                    }
                    v.extend_from_slice(Name::arbitrary(u)?.0.as_bytes());
                }
                v
            }
            _ => Vec::<u8>::arbitrary(u)?,
        }))
    }
}

/// A header operation, as a plugin returns it.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    Set(Name, Value),
    Append(Name, Value),
    Remove(Name),
}

impl Op {
    fn to_wit(&self) -> HeaderOp {
        match self {
            Op::Set(n, v) => HeaderOp::Set(Header {
                name: n.0.clone(),
                value: v.0.clone(),
            }),
            Op::Append(n, v) => HeaderOp::Append(Header {
                name: n.0.clone(),
                value: v.0.clone(),
            }),
            Op::Remove(n) => HeaderOp::Remove(n.0.clone()),
        }
    }
}

/// Input of the `headers` target.
#[derive(Debug, Arbitrary)]
pub struct HeadersInput {
    /// What a client sent; only fields `http` accepts reach the gateway.
    pub client: Vec<(Name, Value)>,
    /// What a step returned.
    pub ops: Vec<Op>,
    pub client_ip: std::net::IpAddr,
    pub https: bool,
    pub host: Option<String>,
}

/// The framing fields, listed here on their own (not taken from the code
/// under test), so a field dropped from the host's list is caught.
fn is_framing(name: &str) -> bool {
    matches!(
        name,
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

fn valid_op_header(name: &str, value: &[u8]) -> bool {
    HeaderName::from_bytes(name.as_bytes()).is_ok_and(|n| n.as_str() == name)
        && !is_framing(name)
        && HeaderValue::from_bytes(value).is_ok()
}

/// What `apply_header_ops` must do, written plainly: the result, or `None`
/// when a step's output must be refused.
fn model_ops(mut headers: Vec<(String, Vec<u8>)>, ops: &[Op]) -> Option<Vec<(String, Vec<u8>)>> {
    if ops.len() > policy::MAX_HEADERS_OUT {
        return None;
    }
    for op in ops {
        match op {
            Op::Set(n, v) => {
                if !valid_op_header(&n.0, &v.0) {
                    return None;
                }
                headers.retain(|(x, _)| *x != n.0);
                headers.push((n.0.clone(), v.0.clone()));
            }
            Op::Append(n, v) => {
                if !valid_op_header(&n.0, &v.0) {
                    return None;
                }
                headers.push((n.0.clone(), v.0.clone()));
            }
            Op::Remove(n) => {
                let lower = n.0.to_ascii_lowercase();
                if is_framing(&lower) {
                    return None;
                }
                headers.retain(|(x, _)| *x != lower);
            }
        }
    }
    (headers.len() <= policy::MAX_HEADERS_OUT).then_some(headers)
}

fn pairs(h: &[Header]) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

fn framing_of(h: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    h.iter().filter(|(n, _)| is_framing(n)).cloned().collect()
}

/// Target `headers`: a client's header fields go through the WIT
/// conversion, a step's header operations and the upstream rules.
///
/// Properties: `apply_header_ops` does exactly what the model says (same
/// result, refuses exactly the invalid operations); after it, framing
/// fields are the client's, untouched; every field left converts back to
/// a `HeaderMap` (none is silently dropped); after `strip_hop_by_hop` no
/// hop-by-hop field and no field the `Connection` header named is left;
/// after `set_forwarded` the forwarding fields are the gateway's only.
pub fn headers(data: &[u8]) {
    let Ok(input) = HeadersInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    // The client's fields, as hyper hands them over.
    let mut map = HeaderMap::new();
    for (n, v) in &input.client {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.0.as_bytes()),
            HeaderValue::from_bytes(&v.0),
        ) {
            map.append(n, v);
        }
    }
    let mut wit = tollgate::gateway::headers_to_wit(&map);
    assert_eq!(wit.len(), map.len());
    let before = pairs(&wit);
    let expected = model_ops(before.clone(), &input.ops);
    let ops: Vec<HeaderOp> = input.ops.iter().map(Op::to_wit).collect();
    let result = policy::apply_header_ops("fuzz", &mut wit, ops);
    match (&result, &expected) {
        (Ok(()), Some(model)) => assert_eq!(&pairs(&wit), model, "ops applied differently"),
        (Err(e), None) => {
            let msg = e.to_string();
            assert!(
                !msg.contains(['\r', '\n']),
                "error text with CR/LF: {msg:?}"
            );
            return;
        }
        (Ok(()), None) => panic!("invalid header operations were accepted: {:?}", input.ops),
        (Err(e), Some(_)) => panic!("valid header operations were refused: {e}"),
    }
    assert_eq!(
        framing_of(&pairs(&wit)),
        framing_of(&before),
        "a step changed a framing field"
    );
    let n = wit.len();
    let mut out = tollgate::gateway::wit_to_headers(&wit);
    assert_eq!(out.len(), n, "a header was dropped converting back");
    // Towards the upstream.
    let named: Vec<String> = out
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    tollgate::upstream::strip_hop_by_hop(&mut out);
    for h in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
    ] {
        assert!(!out.contains_key(h), "hop-by-hop `{h}` survived");
    }
    for t in &named {
        if HeaderName::from_bytes(t.as_bytes()).is_ok() {
            assert!(
                !out.contains_key(t.as_str()),
                "`{t}` named by Connection survived"
            );
        }
    }
    let ip = input.client_ip.to_string();
    let scheme = if input.https { "https" } else { "http" };
    tollgate::upstream::set_forwarded(&mut out, &ip, scheme, input.host.as_deref());
    let all = |n: &str| -> Vec<&[u8]> { out.get_all(n).iter().map(|v| v.as_bytes()).collect() };
    assert_eq!(all("x-forwarded-for"), vec![ip.as_bytes()]);
    assert_eq!(all("x-forwarded-proto"), vec![scheme.as_bytes()]);
    assert!(all("forwarded").is_empty() && all("x-real-ip").is_empty());
    assert!(all("x-forwarded-port").is_empty());
    let host_ok = input
        .host
        .as_deref()
        .filter(|h| HeaderValue::from_str(h).is_ok());
    match host_ok {
        Some(h) => assert_eq!(all("x-forwarded-host"), vec![h.as_bytes()]),
        None => assert!(all("x-forwarded-host").is_empty()),
    }
}

// ---------------------------------------------------------------------------
// The WIT boundary

/// A response a step made (`respond`).
#[derive(Debug, Arbitrary)]
pub struct WitResponse {
    pub status: u16,
    pub headers: Vec<(Name, Value)>,
    pub body: Vec<u8>,
}

/// What a step can hand back across the WIT boundary.
#[derive(Debug, Arbitrary)]
pub enum WitInput {
    Respond(WitResponse),
    /// A request `continue` with a path and query edit.
    Edits {
        path: String,
        query: Option<String>,
        base_path: bool,
    },
    /// A log line.
    Log(String),
    /// Many header operations at once.
    ManyOps {
        op: Op,
        count: u16,
    },
}

const MAX_LOG_OUT: usize = 4096 + 16 + "...(truncated)".len();

/// Target `wit_boundary`: structured values a plugin returns.
///
/// Properties: `check_response` accepts exactly a status of 200 to 599 with
/// at most [`policy::MAX_HEADERS_OUT`] valid, lower-case, non-framing
/// fields, and what it accepts becomes an `http` response with every field;
/// a path and query that `check_path` and `check_query` accept build the
/// upstream URI without error and arrive there unchanged; log text comes
/// out without control or bidi characters and bounded; more operations than
/// the limit are refused.
pub fn wit_boundary(data: &[u8]) {
    let Ok(input) = WitInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input {
        WitInput::Respond(r) => {
            let resp = Response {
                status: r.status,
                headers: r
                    .headers
                    .iter()
                    .map(|(n, v)| Header {
                        name: n.0.clone(),
                        value: v.0.clone(),
                    })
                    .collect(),
                body: r.body,
            };
            let valid = (200..=599).contains(&resp.status)
                && resp.headers.len() <= policy::MAX_HEADERS_OUT
                && resp
                    .headers
                    .iter()
                    .all(|h| valid_op_header(&h.name, &h.value));
            match policy::check_response("fuzz", &resp) {
                Ok(()) => {
                    assert!(valid, "an invalid response was accepted: {resp:?}");
                    let status = http::StatusCode::from_u16(resp.status).expect("status");
                    let n = resp.headers.len();
                    let map = tollgate::gateway::wit_to_headers(&resp.headers);
                    assert_eq!(map.len(), n, "a field was dropped");
                    let built = http::Response::builder().status(status).body(());
                    assert!(built.is_ok());
                }
                Err(e) => assert!(!valid, "a valid response was refused: {e}"),
            }
        }
        WitInput::Edits {
            path,
            query,
            base_path,
        } => {
            let Ok(p) = policy::check_path("fuzz", &path) else {
                return;
            };
            let q_ok = query
                .as_deref()
                .map(|q| policy::check_query("fuzz", q).is_ok());
            if let Some(q) = &query {
                // What a query may carry raw (RFC 3986 and `http`'s own
                // table): anything else must be refused.
                let bad = q
                    .bytes()
                    .any(|b| !matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E));
                assert_eq!(q_ok, Some(!bad), "check_query on {q:?}");
            }
            if q_ok == Some(false) {
                return;
            }
            // As the gateway builds the upstream URI.
            let base = if base_path { "/base" } else { "" };
            let mut pq = format!("{base}{p}");
            let query = query.filter(|q| !q.is_empty());
            if let Some(q) = &query {
                pq.push('?');
                pq.push_str(q);
            }
            let uri = http::Uri::builder()
                .scheme("http")
                .authority("upstream.test:8080")
                .path_and_query(pq.as_str())
                .build()
                .unwrap_or_else(|e| panic!("accepted edits build no URI from {pq:?}: {e}"));
            assert_eq!(
                uri.path(),
                format!("{base}{p}"),
                "the upstream sees another path"
            );
            assert_eq!(
                uri.query(),
                query.as_deref(),
                "the upstream sees another query"
            );
        }
        WitInput::Log(text) => {
            let out = policy::escape_log(&text);
            assert!(out.len() <= MAX_LOG_OUT, "log line of {} bytes", out.len());
            for c in out.chars() {
                assert!(
                    !c.is_control()
                        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'),
                    "{c:?} reached the log"
                );
            }
        }
        WitInput::ManyOps { op, count } => {
            let count = usize::from(count % 2048);
            let ops = vec![op.to_wit(); count];
            let mut hs = Vec::new();
            let r = policy::apply_header_ops("fuzz", &mut hs, ops);
            if count > policy::MAX_HEADERS_OUT {
                assert!(r.is_err(), "{count} operations were accepted");
            }
            assert!(hs.len() <= policy::MAX_HEADERS_OUT || r.is_err());
        }
    }
}
