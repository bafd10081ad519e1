use super::*;
use tollgate_policy_sdk::{
    header_str, parse_config, CallContext, Phases, RequestHead, ResponseHead,
};

fn policy(json: &str) -> Cors {
    parse_config::<Cors>(json).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn error(json: &str) -> (Option<String>, String) {
    match parse_config::<Cors>(json) {
        Ok(p) => panic!("{json} was accepted: {p:?}"),
        Err(e) => (e.field, e.message),
    }
}

fn head(method: &str, headers: &[(&str, &str)]) -> RequestHead {
    RequestHead {
        method: method.into(),
        scheme: "https".into(),
        authority: "api.example.com".into(),
        path: "/pets".into(),
        query: None,
        headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
    }
}

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> RequestHead {
    let mut h = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    if let Some(v) = headers {
        h.push(("access-control-request-headers", v));
    }
    head("OPTIONS", &h)
}

/// Whether the step declares a response phase.
fn has_response_phase(p: &Cors) -> bool {
    p.info().phases & Phases::RESPONSE == Phases::RESPONSE
}

/// The preflight response (panics if the request went on).
fn answer(p: &mut Cors, req: &RequestHead) -> Response {
    let ctx = CallContext::default();
    let r = match p.on_request(&Call::native(&ctx, req), None) {
        RequestDecision::Respond(r) => r,
        RequestDecision::Continue(e) => panic!("the preflight went on: {e:?}"),
    };
    // The response phase, if any, leaves a preflight answer alone.
    if has_response_phase(p) {
        let resp = ResponseHead {
            status: r.status,
            headers: r.headers.clone(),
        };
        let after = p.on_response(&Call::native_response(&ctx, req, &resp), None);
        assert_eq!(after, ResponseDecision::default());
    }
    r
}

fn get(r: &Response, name: &str) -> Option<String> {
    header_str(&r.headers, name).map(String::from)
}

fn body(r: &Response) -> String {
    String::from_utf8(r.body.clone()).unwrap()
}

/// Apply header operations the way the gateway does.
fn apply(headers: &mut Vec<(String, String)>, ops: Vec<HeaderOp>) {
    for op in ops {
        match op {
            HeaderOp::Set(h) => {
                headers.retain(|(n, _)| *n != h.name);
                headers.push((h.name, String::from_utf8(h.value).unwrap()));
            }
            HeaderOp::Append(h) => headers.push((h.name, String::from_utf8(h.value).unwrap())),
            HeaderOp::Remove(n) => headers.retain(|(m, _)| *m != n),
        }
    }
}

/// The response headers an ordinary request attaches in the request phase
/// (panics if it answered, or edited the request).
fn request_phase(p: &mut Cors, req: &RequestHead) -> Vec<HeaderOp> {
    match p.on_request(&Call::native(&CallContext::default(), req), None) {
        RequestDecision::Continue(e) => {
            let response_headers = e.response_headers.clone();
            assert_eq!(
                e,
                RequestEdits {
                    response_headers: e.response_headers.clone(),
                    ..RequestEdits::default()
                },
                "the request was edited"
            );
            response_headers
        }
        RequestDecision::Respond(r) => panic!("answered an actual request: {r:?}"),
    }
}

/// Run an ordinary request and return the response headers the client
/// gets, starting from `upstream` headers: the request phase's response
/// headers, then the response phase's edits if the step declares one.
fn actual(p: &mut Cors, req: &RequestHead, upstream: &[(&str, &str)]) -> Vec<(String, String)> {
    let response_headers = request_phase(p, req);
    let mut headers: Vec<(String, String)> = upstream
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    apply(&mut headers, response_headers);
    if has_response_phase(p) {
        let resp = ResponseHead {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| Header::new(n, v.as_str()))
                .collect(),
        };
        let ctx = CallContext::default();
        let edits = match p.on_response(&Call::native_response(&ctx, req, &resp), None) {
            ResponseDecision::Continue(e) => e,
            ResponseDecision::Respond(r) => panic!("replaced the response: {r:?}"),
        };
        assert_eq!(edits.status, None);
        assert_eq!(edits.body, None);
        apply(&mut headers, edits.headers);
    }
    headers
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

const APP: &str = r#"{
    "allow-origins": ["https://app.example.com", "http://localhost:3000", "https://*.example.org"],
    "allow-methods": ["GET", "put", "PATCH", "DELETE"],
    "allow-headers": ["Content-Type", "X-Api-Key"],
    "expose-headers": ["X-Request-Id", "ETag"],
    "allow-credentials": true,
    "max-age": 600
}"#;

// --- origins -------------------------------------------------------------------

#[test]
fn origin_rules_parse_and_normalise() {
    let exact = |s: &str| OriginRule::Exact(s.into());
    assert_eq!(
        OriginRule::parse("https://App.Example.COM"),
        Ok(exact("https://app.example.com"))
    );
    assert_eq!(
        OriginRule::parse("http://localhost:3000"),
        Ok(exact("http://localhost:3000"))
    );
    assert_eq!(
        OriginRule::parse("http://127.0.0.1:8080"),
        Ok(exact("http://127.0.0.1:8080"))
    );
    assert_eq!(
        OriginRule::parse("http://[0:0::1]:8080"),
        Ok(exact("http://[::1]:8080"))
    );
    assert_eq!(
        OriginRule::parse("https://xn--bcher-kva.example"),
        Ok(exact("https://xn--bcher-kva.example"))
    );
    assert_eq!(
        OriginRule::parse("chrome-extension://abcdef"),
        Ok(exact("chrome-extension://abcdef"))
    );
    assert_eq!(
        OriginRule::parse("https://*.Example.com:8443"),
        Ok(OriginRule::Subdomains {
            scheme: "https".into(),
            suffix: "example.com".into(),
            port: Some(8443)
        })
    );
    assert!(OriginRule::parse("http://*.localhost").is_ok());
}

#[test]
fn bad_origins_are_rejected_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("null", "the \"null\" origin"),
        ("NULL", "the \"null\" origin"),
        ("example.com", "is not an origin"),
        ("https//example.com", "is not an origin"),
        ("", "is not an origin"),
        ("https://example.com/", "has a trailing slash"),
        ("https://example.com/api", "has a path"),
        ("https://example.com?x", "is not an origin"),
        ("https://example.com#x", "is not an origin"),
        ("https://user@example.com", "is not an origin"),
        ("https://exa mple.com", "is not an origin"),
        ("https://example.com\n", "is not an origin"),
        ("https://", "has an invalid host"),
        ("https://:8080", "has an invalid host"),
        ("https://example.com:443", "names the default port 443"),
        ("http://example.com:80", "names the default port 80"),
        ("https://example.com:0", "has an invalid port"),
        ("https://example.com:65536", "has an invalid port"),
        ("https://example.com:08080", "has an invalid port"),
        ("https://example.com:", "has an invalid port"),
        ("https://example.com:8080:1", "has an invalid port"),
        ("https://[::1", "is not an origin"),
        ("https://[zz::1]", "has an invalid IPv6 address"),
        ("https://bücher.example", "punycode"),
        ("https://exa_mple.com", "has an invalid host"),
        ("https://-example.com", "has an invalid host"),
        ("https://example..com", "has an invalid host"),
        ("1https://example.com", "does not start with a valid scheme"),
        ("*://example.com", "does not start with a valid scheme"),
        ("https://*", "may only stand for the leftmost labels"),
        (
            "https://a*.example.com",
            "may only stand for the leftmost labels",
        ),
        (
            "https://*example.com",
            "may only stand for the leftmost labels",
        ),
        (
            "https://example.*",
            "may only stand for the leftmost labels",
        ),
        ("https://*.*.example.com", "is not a valid pattern"),
        ("https://*.", "is not a valid pattern"),
        (
            "https://*.com",
            "would allow every site under the top-level domain \"com\"",
        ),
        ("https://example.com:*", "has an invalid port"),
    ];
    for (text, part) in cases {
        match OriginRule::parse(text) {
            Ok(rule) => panic!("{text:?} was accepted as {rule:?}"),
            Err(message) => assert!(message.contains(part), "{text:?}: {message}"),
        }
    }
}

#[test]
fn exact_origins_match_byte_for_byte() {
    let rule = OriginRule::parse("https://app.example.com").unwrap();
    assert!(rule.matches("https://app.example.com"));
    for other in [
        "https://app.example.com/",
        "https://app.example.com:443",
        "http://app.example.com",
        "https://APP.example.com",
        "https://app.example.com.evil.com",
        "https://evilapp.example.com",
        "https://app.example.co",
        " https://app.example.com",
        "null",
        "",
    ] {
        assert!(!rule.matches(other), "{other:?}");
    }
}

#[test]
fn patterns_match_subdomains_only() {
    let rule = OriginRule::parse("https://*.example.com").unwrap();
    for ok in [
        "https://a.example.com",
        "https://a.b.example.com",
        "https://x-1.example.com",
    ] {
        assert!(rule.matches(ok), "{ok:?}");
    }
    for bad in [
        "https://example.com",
        "https://.example.com",
        "https://a..example.com",
        "http://a.example.com",
        "https://a.example.com:8443",
        "https://a.example.com.evil.com",
        "https://evilexample.com",
        "https://evil-example.com",
        "https://evil.com#.example.com",
        "https://evil.com/.example.com",
        "https://evil.com?.example.com",
        "https://user@a.example.com",
        "https://A.example.com",
        "https://-a.example.com",
        "https://a_b.example.com",
        "https://a.example.com/",
        "https://[::1].example.com",
        "null",
        "https://",
    ] {
        assert!(!rule.matches(bad), "{bad:?}");
    }
    let with_port = OriginRule::parse("https://*.example.com:8443").unwrap();
    assert!(with_port.matches("https://a.example.com:8443"));
    assert!(!with_port.matches("https://a.example.com"));
    assert!(!with_port.matches("https://a.example.com:08443"));
    assert!(!with_port.matches("https://a.example.com:8444"));
}

// --- configuration ----------------------------------------------------------------

#[test]
fn config_errors_name_the_field() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        (r#"{}"#, None, "missing field `allow-origins`"),
        (
            r#"{"allow-origins":[]}"#,
            Some("allow-origins"),
            "list at least one origin",
        ),
        (
            r#"{"allow-origins":["*"],"allow-credentials":true}"#,
            Some("allow-origins"),
            "\"*\" cannot be combined with allow-credentials = true",
        ),
        (
            r#"{"allow-origins":["https://a.example","*"]}"#,
            Some("allow-origins.0"),
            "\"*\" must be the only entry",
        ),
        (
            r#"{"allow-origins":["https://a.example","https://b.example/"]}"#,
            Some("allow-origins.1"),
            "\"https://b.example/\" has a trailing slash",
        ),
        (
            r#"{"allow-origins":["null"]}"#,
            Some("allow-origins.0"),
            "the \"null\" origin",
        ),
        (
            r#"{"allow-origins":"*"}"#,
            Some("allow-origins"),
            "invalid type: string \"*\", expected a sequence",
        ),
        (
            r#"{"allow-origins":["*"],"allow-methods":["GET","P UT"]}"#,
            Some("allow-methods.1"),
            "\"P UT\" is not a valid method",
        ),
        (
            r#"{"allow-origins":["*"],"allow-methods":["*","GET"]}"#,
            Some("allow-methods.1"),
            "\"*\" must be the only entry",
        ),
        (
            r#"{"allow-origins":["*"],"allow-headers":["x-ok","x:bad"]}"#,
            Some("allow-headers.1"),
            "\"x:bad\" is not a valid header name",
        ),
        (
            r#"{"allow-origins":["*"],"allow-headers":[""]}"#,
            Some("allow-headers.0"),
            "\"\" is not a valid header name",
        ),
        (
            r#"{"allow-origins":["*"],"expose-headers":["x-a\r\nx-b"]}"#,
            Some("expose-headers.0"),
            "is not a valid header name",
        ),
        (
            r#"{"allow-origins":["https://a.example"],"allow-credentials":true,"expose-headers":["*"]}"#,
            Some("expose-headers"),
            "\"*\" is taken literally when credentials are allowed",
        ),
        (
            r#"{"allow-origins":["*"],"max-age":86401}"#,
            Some("max-age"),
            "86401 is too long: at most 86400 seconds",
        ),
        (
            r#"{"allow-origins":["*"],"max-age":-1}"#,
            Some("max-age"),
            "invalid value: integer `-1`, expected u32",
        ),
        (
            r#"{"allow-origins":["*"],"allow-credentials":"yes"}"#,
            Some("allow-credentials"),
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            r#"{"allow-origins":["*"],"allow_methods":["GET"]}"#,
            Some("allow_methods"),
            "unknown field `allow_methods`",
        ),
        (
            r#"{"allow-origins":["*"],"allow-origin":["*"]}"#,
            Some("allow-origin"),
            "unknown field `allow-origin`",
        ),
    ];
    for (json, field, part) in cases {
        let (f, message) = error(json);
        assert_eq!(f.as_deref(), *field, "{json}: {message}");
        assert!(message.contains(part), "{json}: {message}");
    }
}

#[test]
fn phases_per_configuration_and_no_body() {
    // Listed origins: the response phase adds `Vary: Origin`.
    let p = policy(APP);
    assert_eq!(p.info().phases, Phases::REQUEST | Phases::RESPONSE);
    assert_eq!(p.info().body, Default::default());
    // Any origin: nothing varies, the request phase does it all.
    let p = policy(r#"{"allow-origins":["*"]}"#);
    assert_eq!(p.info().phases, Phases::REQUEST);
    assert_eq!(p.info().body, Default::default());
}

// --- preflights -------------------------------------------------------------------

#[test]
fn allowed_preflight_is_204_with_every_header() {
    let mut p = policy(APP);
    let r = answer(
        &mut p,
        &preflight(
            "https://app.example.com",
            "PUT",
            Some("content-type, X-API-KEY"),
        ),
    );
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(
        get(&r, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        get(&r, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        get(&r, "access-control-allow-methods").as_deref(),
        Some("GET, PUT, PATCH, DELETE")
    );
    assert_eq!(
        get(&r, "access-control-allow-headers").as_deref(),
        Some("content-type, x-api-key")
    );
    assert_eq!(get(&r, "access-control-max-age").as_deref(), Some("600"));
    assert_eq!(
        get(&r, "vary").as_deref(),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );
    assert_eq!(get(&r, "access-control-expose-headers"), None);
}

#[test]
fn preflight_method_matching() {
    let mut p = policy(APP);
    // Case-insensitive; the method as sent is added when not listed byte
    // for byte (browsers compare case-sensitively).
    let r = answer(&mut p, &preflight("https://app.example.com", "patch", None));
    assert_eq!(r.status, 204);
    assert_eq!(
        get(&r, "access-control-allow-methods").as_deref(),
        Some("GET, PUT, PATCH, DELETE, patch")
    );
    // Safelisted methods always pass.
    let r = answer(&mut p, &preflight("https://app.example.com", "POST", None));
    assert_eq!(r.status, 204);
    for (method, message) in [
        ("OPTIONS", "the method \"OPTIONS\" is not allowed"),
        ("PURGE", "the method \"PURGE\" is not allowed"),
        (
            "",
            "Access-Control-Request-Method must be exactly one method name",
        ),
        (
            "GET, PUT",
            "Access-Control-Request-Method must be exactly one method name",
        ),
        (
            "G\u{e9}T",
            "Access-Control-Request-Method must be exactly one method name",
        ),
    ] {
        let r = answer(&mut p, &preflight("https://app.example.com", method, None));
        assert_eq!(r.status, 403, "{method:?}");
        assert_eq!(
            body(&r),
            format!(
                r#"{{"error":{{"code":"cors_forbidden","message":"{}"}}}}"#,
                message.replace('"', "\\\"")
            ),
        );
        assert_eq!(get(&r, "access-control-allow-origin"), None);
    }
    // Two method headers.
    let mut req = preflight("https://app.example.com", "PUT", None);
    req.headers
        .push(Header::new("access-control-request-method", "PUT"));
    assert_eq!(answer(&mut p, &req).status, 403);
}

#[test]
fn preflight_header_matching() {
    let mut p = policy(APP);
    let ok = |p: &mut Cors, h: &str| {
        answer(p, &preflight("https://app.example.com", "PUT", Some(h))).status
    };
    assert_eq!(ok(&mut p, "Content-Type"), 204);
    assert_eq!(ok(&mut p, " content-type ,\tx-api-key, "), 204);
    assert_eq!(ok(&mut p, ""), 204);
    assert_eq!(ok(&mut p, ",,"), 204);
    assert_eq!(ok(&mut p, "content-type, x-other"), 403);
    assert_eq!(ok(&mut p, "authorization"), 403);
    assert_eq!(ok(&mut p, "content type"), 403);
    assert_eq!(ok(&mut p, "x-api-key\u{0}"), 403);
    let r = answer(
        &mut p,
        &preflight("https://app.example.com", "PUT", Some("x-evil")),
    );
    assert_eq!(
        body(&r),
        r#"{"error":{"code":"cors_forbidden","message":"the header \"x-evil\" is not allowed"}}"#
    );
    // Several request-headers fields count together.
    let mut req = preflight("https://app.example.com", "PUT", Some("content-type"));
    req.headers
        .push(Header::new("access-control-request-headers", "x-nope"));
    assert_eq!(answer(&mut p, &req).status, 403);
    // Non-UTF-8.
    let mut req = preflight("https://app.example.com", "PUT", None);
    req.headers.push(Header {
        name: "access-control-request-headers".into(),
        value: vec![0xff, 0xfe],
    });
    assert_eq!(answer(&mut p, &req).status, 403);
}

#[test]
fn preflight_origin_matching() {
    let mut p = policy(APP);
    for origin in [
        "https://app.example.com",
        "http://localhost:3000",
        "https://a.example.org",
        "https://deep.sub.example.org",
    ] {
        let r = answer(&mut p, &preflight(origin, "PUT", None));
        assert_eq!(r.status, 204, "{origin}");
        assert_eq!(
            get(&r, "access-control-allow-origin").as_deref(),
            Some(origin)
        );
    }
    for origin in [
        "https://evil.com",
        "null",
        "https://app.example.com/",
        "http://app.example.com",
        "https://app.example.com:443",
        "http://localhost:3001",
        "https://example.org",
        "https://app.example.com.evil.com",
        "",
    ] {
        let r = answer(&mut p, &preflight(origin, "PUT", None));
        assert_eq!(r.status, 403, "{origin}");
        assert_eq!(get(&r, "access-control-allow-origin"), None);
        assert_eq!(get(&r, "content-type").as_deref(), Some("application/json"));
    }
    // A long hostile origin is cut in the message.
    let long = format!("https://{}.com", "a".repeat(10_000));
    let r = answer(&mut p, &preflight(&long, "PUT", None));
    assert_eq!(r.status, 403);
    assert!(r.body.len() < 300);
    // Two Origin headers.
    let mut req = preflight("https://app.example.com", "PUT", None);
    req.headers
        .push(Header::new("origin", "https://app.example.com"));
    assert_eq!(answer(&mut p, &req).status, 403);
}

#[test]
fn wildcards_without_credentials() {
    let mut p = policy(
        r#"{"allow-origins":["*"],"allow-methods":["*"],"allow-headers":["*"],"expose-headers":["*"]}"#,
    );
    let r = answer(
        &mut p,
        &preflight(
            "https://anyone.example",
            "PURGE",
            Some("X-Custom, authorization"),
        ),
    );
    assert_eq!(r.status, 204);
    assert_eq!(get(&r, "access-control-allow-origin").as_deref(), Some("*"));
    assert_eq!(get(&r, "access-control-allow-credentials"), None);
    assert_eq!(
        get(&r, "access-control-allow-methods").as_deref(),
        Some("PURGE")
    );
    assert_eq!(
        get(&r, "access-control-allow-headers").as_deref(),
        Some("x-custom, authorization")
    );
    assert_eq!(get(&r, "access-control-max-age"), None);
    // The null origin gets `*`, which never carries credentials.
    let r = answer(&mut p, &preflight("null", "GET", None));
    assert_eq!(r.status, 204);
    assert_eq!(get(&r, "access-control-allow-origin").as_deref(), Some("*"));

    let h = actual(
        &mut p,
        &head("GET", &[("origin", "https://x.example")]),
        &[],
    );
    assert_eq!(find(&h, "access-control-allow-origin"), vec!["*"]);
    assert_eq!(find(&h, "access-control-expose-headers"), vec!["*"]);
    assert_eq!(find(&h, "vary"), Vec::<&str>::new(), "`*` does not vary");
    assert_eq!(
        find(&h, "access-control-allow-credentials"),
        Vec::<&str>::new()
    );
}

#[test]
fn wildcard_methods_and_headers_are_echoed_with_credentials() {
    let mut p = policy(
        r#"{"allow-origins":["https://app.example.com"],"allow-methods":["*"],"allow-headers":["*"],"allow-credentials":true}"#,
    );
    let r = answer(
        &mut p,
        &preflight("https://app.example.com", "DELETE", Some("x-a")),
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        get(&r, "access-control-allow-methods").as_deref(),
        Some("DELETE")
    );
    assert_eq!(
        get(&r, "access-control-allow-headers").as_deref(),
        Some("x-a")
    );
    assert_eq!(
        get(&r, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
}

#[test]
fn options_without_a_request_method_is_not_a_preflight() {
    let mut p = policy(APP);
    let h = actual(
        &mut p,
        &head("OPTIONS", &[("origin", "https://app.example.com")]),
        &[],
    );
    assert_eq!(
        find(&h, "access-control-allow-origin"),
        vec!["https://app.example.com"]
    );
    // And a non-OPTIONS request with the preflight headers is not one.
    let h = actual(
        &mut p,
        &head(
            "PUT",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
            ],
        ),
        &[],
    );
    assert_eq!(find(&h, "access-control-allow-methods"), Vec::<&str>::new());
}

// --- actual requests ---------------------------------------------------------------

#[test]
fn allowed_origin_gets_the_headers() {
    let mut p = policy(APP);
    let h = actual(
        &mut p,
        &head("GET", &[("origin", "https://a.example.org")]),
        &[("content-type", "application/json")],
    );
    assert_eq!(
        find(&h, "access-control-allow-origin"),
        vec!["https://a.example.org"]
    );
    assert_eq!(find(&h, "access-control-allow-credentials"), vec!["true"]);
    assert_eq!(
        find(&h, "access-control-expose-headers"),
        vec!["x-request-id, etag"]
    );
    assert_eq!(find(&h, "vary"), vec!["Origin"]);
    assert_eq!(find(&h, "access-control-allow-methods"), Vec::<&str>::new());
    assert_eq!(find(&h, "content-type"), vec!["application/json"]);
}

#[test]
fn disallowed_or_missing_origin_gets_no_cors_headers_but_vary() {
    let mut p = policy(APP);
    let upstream = [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", "x-secret"),
        ("x-upstream", "yes"),
    ];
    for req in [
        head("GET", &[("origin", "https://evil.com")]),
        head("GET", &[("origin", "null")]),
        head("GET", &[]),
        head(
            "GET",
            &[
                ("origin", "https://app.example.com"),
                ("origin", "https://app.example.com"),
            ],
        ),
    ] {
        let h = actual(&mut p, &req, &upstream);
        for name in CORS_RESPONSE_HEADERS {
            assert_eq!(find(&h, name), Vec::<&str>::new(), "{name} for {req:?}");
        }
        assert_eq!(find(&h, "vary"), vec!["Origin"]);
        assert_eq!(find(&h, "x-upstream"), vec!["yes"]);
    }
    // Non-UTF-8 origin.
    let mut req = head("GET", &[]);
    req.headers.push(Header {
        name: "origin".into(),
        value: b"https://app.example.com\xff".to_vec(),
    });
    let h = actual(&mut p, &req, &[]);
    assert_eq!(find(&h, "access-control-allow-origin"), Vec::<&str>::new());
}

#[test]
fn upstream_cors_headers_are_replaced_and_vary_is_kept() {
    let mut p = policy(APP);
    let h = actual(
        &mut p,
        &head("GET", &[("origin", "https://app.example.com")]),
        &[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "GET"),
            ("vary", "Accept-Encoding"),
        ],
    );
    assert_eq!(
        find(&h, "access-control-allow-origin"),
        vec!["https://app.example.com"]
    );
    assert_eq!(find(&h, "access-control-allow-methods"), Vec::<&str>::new());
    assert_eq!(find(&h, "vary"), vec!["Accept-Encoding", "Origin"]);
    // Vary already covering Origin (or `*`) is left alone.
    for vary in ["accept, ORIGIN", "*"] {
        let h = actual(
            &mut p,
            &head("GET", &[("origin", "https://app.example.com")]),
            &[("vary", vary)],
        );
        assert_eq!(find(&h, "vary"), vec![vary]);
    }
}

#[test]
fn no_expose_headers_when_none_configured() {
    let mut p = policy(r#"{"allow-origins":["https://app.example.com"]}"#);
    let h = actual(
        &mut p,
        &head("POST", &[("origin", "https://app.example.com")]),
        &[],
    );
    assert_eq!(
        find(&h, "access-control-allow-origin"),
        vec!["https://app.example.com"]
    );
    assert_eq!(
        find(&h, "access-control-expose-headers"),
        Vec::<&str>::new()
    );
    assert_eq!(
        find(&h, "access-control-allow-credentials"),
        Vec::<&str>::new()
    );
    // Default methods: only the safelisted ones pass a preflight.
    let r = answer(&mut p, &preflight("https://app.example.com", "GET", None));
    assert_eq!(r.status, 204);
    assert_eq!(
        get(&r, "access-control-allow-methods").as_deref(),
        Some("GET")
    );
    assert_eq!(get(&r, "access-control-allow-headers"), None);
    let r = answer(&mut p, &preflight("https://app.example.com", "PUT", None));
    assert_eq!(r.status, 403);
    let r = answer(
        &mut p,
        &preflight("https://app.example.com", "POST", Some("content-type")),
    );
    assert_eq!(r.status, 403);
}

// --- phases ------------------------------------------------------------------------

#[test]
fn the_request_phase_attaches_the_cors_response_headers() {
    let mut p = policy(APP);
    let ops = request_phase(
        &mut p,
        &head("GET", &[("origin", "https://app.example.com")]),
    );
    assert_eq!(
        ops,
        vec![
            HeaderOp::remove("access-control-allow-methods"),
            HeaderOp::remove("access-control-allow-headers"),
            HeaderOp::remove("access-control-max-age"),
            HeaderOp::set("access-control-allow-origin", "https://app.example.com"),
            HeaderOp::set("access-control-allow-credentials", "true"),
            HeaderOp::set("access-control-expose-headers", "x-request-id, etag"),
        ]
    );
    // A disallowed origin: only removals.
    let ops = request_phase(&mut p, &head("GET", &[("origin", "https://evil.com")]));
    assert_eq!(
        ops,
        CORS_RESPONSE_HEADERS
            .iter()
            .map(|n| HeaderOp::remove(*n))
            .collect::<Vec<_>>()
    );
    // The response phase only sees to `Vary`, whatever the response holds.
    let ctx = CallContext::default();
    let req = head("GET", &[("origin", "https://app.example.com")]);
    request_phase(&mut p, &req);
    let resp = ResponseHead {
        status: 401,
        headers: vec![
            Header::new("access-control-allow-origin", "*"),
            Header::new("vary", "accept-encoding"),
            Header::new("vary", "origin"),
        ],
    };
    assert_eq!(
        p.on_response(&Call::native_response(&ctx, &req, &resp), None),
        ResponseDecision::default(),
        "a later Vary field covering Origin counts"
    );
    let resp = ResponseHead::default();
    assert_eq!(
        p.on_response(&Call::native_response(&ctx, &req, &resp), None),
        ResponseDecision::Continue(ResponseEdits::default().append_header("vary", "Origin"))
    );
}

#[test]
fn any_origin_needs_no_response_phase() {
    let mut p = policy(r#"{"allow-origins":["*"],"expose-headers":["etag"]}"#);
    assert!(!has_response_phase(&p));
    let h = actual(
        &mut p,
        &head("GET", &[("origin", "https://x.example")]),
        &[
            ("access-control-allow-origin", "https://upstream.example"),
            ("access-control-allow-credentials", "true"),
            ("access-control-max-age", "5"),
            ("vary", "Accept-Encoding"),
        ],
    );
    assert_eq!(
        h,
        vec![
            ("vary".to_string(), "Accept-Encoding".to_string()),
            ("access-control-allow-origin".to_string(), "*".to_string()),
            (
                "access-control-expose-headers".to_string(),
                "etag".to_string()
            ),
        ]
    );
    // Without an origin: the upstream's CORS headers still go, nothing is
    // added.
    let h = actual(
        &mut p,
        &head("GET", &[]),
        &[("access-control-allow-origin", "*"), ("x-upstream", "yes")],
    );
    assert_eq!(h, vec![("x-upstream".to_string(), "yes".to_string())]);
}

#[test]
fn a_reused_instance_keeps_nothing_from_a_preflight() {
    // Under worker isolation one instance serves request after request.
    let mut p = policy(APP);
    let r = answer(&mut p, &preflight("https://app.example.com", "PUT", None));
    assert_eq!(r.status, 204);
    let h = actual(&mut p, &head("GET", &[]), &[]);
    assert_eq!(h, vec![("vary".to_string(), "Origin".to_string())]);
}
