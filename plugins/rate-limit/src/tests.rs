use super::*;
use tollgate_policy_sdk::services::harness;
use tollgate_policy_sdk::{header_str, parse_config, Consumer, Header, HeaderOp};

const T0: u64 = 1_700_000_000_000;

fn policy(json: &str) -> RateLimit {
    parse_config::<RateLimit>(json).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn error(json: &str) -> (Option<String>, String) {
    match parse_config::<RateLimit>(json) {
        Ok(p) => panic!("{json} was accepted: {p:?}"),
        Err(e) => (e.field, e.message),
    }
}

fn ctx(consumer: Option<(&str, Option<&str>)>, addr: &str) -> CallContext {
    CallContext {
        api: "pets".into(),
        step: "rate-limit".into(),
        client_addr: addr.into(),
        consumer: consumer.map(|(id, app)| Consumer {
            id: id.into(),
            app: app.map(String::from),
            ..Consumer::default()
        }),
        ..CallContext::default()
    }
}

fn alice() -> CallContext {
    ctx(Some(("alice", Some("shop"))), "192.0.2.1:4000")
}

fn head(headers: &[(&str, &[u8])]) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: "/".into(),
        headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
        ..RequestHead::default()
    }
}

/// A fresh instance per call, as in the gateway; `Ok(response headers)` or
/// `Err(refusal)`.
fn call(json: &str, c: &CallContext, req: &RequestHead) -> Result<Vec<HeaderOp>, Response> {
    let mut p = policy(json);
    match p.on_request(c, req, None) {
        RequestDecision::Respond(r) => Err(r),
        RequestDecision::Continue(e) => {
            assert_eq!(e, RequestEdits::default());
            match p.on_response(c, req, &ResponseHead::default(), None) {
                ResponseDecision::Continue(e) => Ok(e.headers),
                other => panic!("{other:?}"),
            }
        }
    }
}

fn start() {
    harness::reset();
    harness::set_now_ms(T0);
}

#[test]
fn config_defaults_and_errors() {
    let p = policy(r#"{"limits":[{"per":"minute","requests":5}]}"#);
    assert_eq!(p.algorithm, Algorithm::SlidingWindow);
    assert_eq!(p.status, 429);
    assert!(!p.fail_open);
    assert_eq!(p.limits[0].by, By::Consumer);
    let p = policy(
        r#"{"limits":[{"per":"second","requests":1,"by":"header:X-Tenant"},{"per":"day","requests":9,"by":"api"}],
            "algorithm":"token-bucket","status":503,"fail-open":true}"#,
    );
    assert_eq!(p.limits[0].by, By::Header("x-tenant".into()));
    assert_eq!(p.algorithm, Algorithm::TokenBucket);

    assert_eq!(error("{}"), (None, "missing field `limits`".into()));
    assert_eq!(
        error(r#"{"limits":[]}"#),
        (Some("limits".into()), "give at least one limit".into())
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"week","requests":1}]}"#)
            .0
            .as_deref(),
        Some("limits.0.per")
    );
    assert_eq!(
        error(
            r#"{"limits":[{"per":"second","requests":1},{"per":"second","requests":0,"by":"ip"}]}"#
        )
        .0
        .as_deref(),
        Some("limits.1.requests")
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"second","requests":-1}]}"#)
            .0
            .as_deref(),
        Some("limits.0.requests")
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"second","requests":1,"by":"user"}]}"#),
        (
            Some("limits.0.by".into()),
            "unknown `by` \"user\": expected \"consumer\", \"app\", \"ip\", \"api\" or \"header:NAME\"".into()
        )
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"second","requests":1,"by":"header:x y"}]}"#),
        (
            Some("limits.0.by".into()),
            "\"x y\" is not a valid header name".into()
        )
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"second","requests":1,"by":"header:"}]}"#)
            .0
            .as_deref(),
        Some("limits.0.by")
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"second","requests":1,"burst":2}]}"#)
            .0
            .as_deref(),
        Some("limits.0.burst")
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"second","requests":1},{"per":"second","requests":5}]}"#)
            .0
            .as_deref(),
        Some("limits.1")
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"second","requests":1}],"status":200}"#)
            .0
            .as_deref(),
        Some("status")
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"second","requests":1}],"algorithm":"leaky"}"#)
            .0
            .as_deref(),
        Some("algorithm")
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"second","requests":1}],"fail_open":true}"#)
            .0
            .as_deref(),
        Some("fail_open")
    );
    let many: Vec<String> = (0..17)
        .map(|i| format!(r#"{{"per":"second","requests":1,"by":"header:x-{i}"}}"#))
        .collect();
    assert_eq!(
        error(&format!(r#"{{"limits":[{}]}}"#, many.join(",")))
            .0
            .as_deref(),
        Some("limits")
    );
}

#[test]
fn exactly_the_limit_passes_then_429_with_headers() {
    start();
    let cfg = r#"{"limits":[{"per":"minute","requests":3}]}"#;
    for left in [2, 1, 0] {
        let h = call(cfg, &alice(), &head(&[])).unwrap();
        assert_eq!(
            h,
            vec![
                HeaderOp::set("ratelimit-limit", "3"),
                HeaderOp::set("ratelimit-remaining", left.to_string()),
                HeaderOp::set("ratelimit-reset", "60"),
            ]
        );
    }
    harness::set_now_ms(T0 + 1_500);
    let r = call(cfg, &alice(), &head(&[])).unwrap_err();
    assert_eq!(r.status, 429);
    // 58.5 s until the oldest call leaves the window: rounded up.
    assert_eq!(header_str(&r.headers, "retry-after"), Some("59"));
    assert_eq!(header_str(&r.headers, "ratelimit-limit"), Some("3"));
    assert_eq!(header_str(&r.headers, "ratelimit-remaining"), Some("0"));
    assert!(header_str(&r.headers, "ratelimit-reset").is_some());
    assert_eq!(
        header_str(&r.headers, "content-type"),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // A minute later the window is free again.
    harness::set_now_ms(T0 + 60_000);
    assert!(call(cfg, &alice(), &head(&[])).is_ok());
}

#[test]
fn custom_status() {
    start();
    let cfg = r#"{"limits":[{"per":"second","requests":1}],"status":503}"#;
    assert!(call(cfg, &alice(), &head(&[])).is_ok());
    assert_eq!(call(cfg, &alice(), &head(&[])).unwrap_err().status, 503);
}

#[test]
fn consumers_are_counted_apart_and_anonymous_calls_by_ip() {
    start();
    let cfg = r#"{"limits":[{"per":"minute","requests":1}]}"#;
    let bob = ctx(Some(("bob", None)), "192.0.2.1:4001");
    assert!(call(cfg, &alice(), &head(&[])).is_ok());
    assert!(call(cfg, &alice(), &head(&[])).is_err());
    assert!(call(cfg, &bob, &head(&[])).is_ok());
    // No consumer: the client IP, whatever the port.
    let anon = ctx(None, "192.0.2.1:5000");
    assert!(call(cfg, &anon, &head(&[])).is_ok());
    assert!(call(cfg, &ctx(None, "192.0.2.1:5001"), &head(&[])).is_err());
    assert!(call(cfg, &ctx(None, "192.0.2.2:5001"), &head(&[])).is_ok());
    // A consumer whose id looks like an IP does not share the IP's counter.
    assert!(call(
        cfg,
        &ctx(Some(("192.0.2.9", None)), "192.0.2.9:1"),
        &head(&[])
    )
    .is_ok());
    assert!(call(cfg, &ctx(None, "192.0.2.9:2"), &head(&[])).is_ok());
    // IPv6.
    assert!(call(cfg, &ctx(None, "[2001:db8::1]:443"), &head(&[])).is_ok());
    assert!(call(cfg, &ctx(None, "[2001:db8::1]:444"), &head(&[])).is_err());
}

#[test]
fn by_app_ip_api_and_header() {
    start();
    let app = r#"{"limits":[{"per":"minute","requests":1,"by":"app"}]}"#;
    let alice2 = ctx(Some(("alice2", Some("shop"))), "192.0.2.3:1");
    assert!(call(app, &alice(), &head(&[])).is_ok());
    assert!(call(app, &alice2, &head(&[])).is_err(), "same app");
    // Without an app: the consumer id.
    assert!(call(app, &ctx(Some(("carol", None)), "192.0.2.3:1"), &head(&[])).is_ok());

    let ip = r#"{"limits":[{"per":"minute","requests":1,"by":"ip"}]}"#;
    assert!(call(ip, &alice(), &head(&[])).is_ok());
    assert!(call(ip, &ctx(Some(("bob", None)), "192.0.2.1:9"), &head(&[])).is_err());

    let api = r#"{"limits":[{"per":"minute","requests":2,"by":"api"}]}"#;
    assert!(call(api, &alice(), &head(&[])).is_ok());
    assert!(call(api, &ctx(None, "198.51.100.1:1"), &head(&[])).is_ok());
    assert!(call(api, &ctx(None, "198.51.100.2:1"), &head(&[])).is_err());

    let hdr = r#"{"limits":[{"per":"minute","requests":1,"by":"header:x-tenant"}]}"#;
    assert!(call(hdr, &alice(), &head(&[("x-tenant", b"t1")])).is_ok());
    assert!(call(hdr, &alice(), &head(&[("X-Tenant", b"t1")])).is_err());
    assert!(call(hdr, &alice(), &head(&[("x-tenant", b"t2")])).is_ok());
    // Missing: the client IP.
    assert!(call(hdr, &alice(), &head(&[])).is_ok());
    assert!(call(hdr, &alice(), &head(&[])).is_err());
}

#[test]
fn hostile_header_values_make_bounded_distinct_keys() {
    start();
    let p = policy(r#"{"limits":[{"per":"minute","requests":1,"by":"header:x-tenant"}]}"#);
    let huge = vec![b'a'; 60_000];
    let key = |v: &[u8]| p.key(0, &alice(), &head(&[("x-tenant", v)]));
    let k = key(&huge);
    assert!(k.len() < 200, "{}", k.len());
    assert_ne!(key(b"a b"), key(b"a%20b"));
    assert_ne!(key(b"\xff"), key(b"\xfe"));
    assert_ne!(key(b"ip=192.0.2.1"), p.key(0, &alice(), &head(&[])));
    // Values with the key's separators cannot reach another dimension's key.
    assert!(key(b"x/0/60000/ip/ip=1").ends_with("/header:x-tenant/h=x/0/60000/ip/ip=1"));
    // Several fields: counted as one list, in order.
    let two = p.key(
        0,
        &alice(),
        &head(&[("x-tenant", b"a"), ("x-tenant", b"b")]),
    );
    assert_eq!(two, key(b"a,b"));
    // And the long value is counted like any other.
    let cfg = r#"{"limits":[{"per":"minute","requests":1,"by":"header:x-tenant"}]}"#;
    assert!(call(cfg, &alice(), &head(&[("x-tenant", &huge)])).is_ok());
    assert!(call(cfg, &alice(), &head(&[("x-tenant", &huge)])).is_err());
}

#[test]
fn a_refused_call_spends_nothing_of_the_other_limits() {
    start();
    // Long limit first, short one second.
    let cfg = r#"{"limits":[{"per":"minute","requests":5},{"per":"second","requests":2}]}"#;
    let p = policy(cfg);
    let keys: Vec<String> = (0..2).map(|i| p.key(i, &alice(), &head(&[]))).collect();
    let left = |i: usize| {
        counters::check_and_add(
            &keys[i],
            p.limits[i].requests,
            p.limits[i].per.window_ms(),
            Algorithm::SlidingWindow,
            0,
        )
        .unwrap()
        .remaining
    };
    let h = call(cfg, &alice(), &head(&[])).unwrap();
    // The tightest limit is reported: 1 left of 2 per second.
    assert_eq!(h[0], HeaderOp::set("ratelimit-limit", "2"));
    assert_eq!(h[1], HeaderOp::set("ratelimit-remaining", "1"));
    assert!(call(cfg, &alice(), &head(&[])).is_ok());
    for _ in 0..5 {
        let r = call(cfg, &alice(), &head(&[])).unwrap_err();
        assert_eq!(header_str(&r.headers, "ratelimit-limit"), Some("2"));
        assert_eq!(header_str(&r.headers, "retry-after"), Some("1"));
    }
    assert_eq!(left(0), 3, "refused calls spent the minute's budget");
    harness::set_now_ms(T0 + 1_000);
    assert!(call(cfg, &alice(), &head(&[])).is_ok());
    assert!(call(cfg, &alice(), &head(&[])).is_ok());
    harness::set_now_ms(T0 + 2_000);
    assert!(call(cfg, &alice(), &head(&[])).is_ok());
    // Minute exhausted (5): refused by the first limit, the second untouched.
    let r = call(cfg, &alice(), &head(&[])).unwrap_err();
    assert_eq!(header_str(&r.headers, "ratelimit-limit"), Some("5"));
    assert_eq!(header_str(&r.headers, "retry-after"), Some("58"));
    assert_eq!(left(1), 1);
}

#[test]
fn the_first_limit_refusing_spends_nothing_either() {
    start();
    let cfg = r#"{"limits":[{"per":"second","requests":1},{"per":"hour","requests":100}]}"#;
    let p = policy(cfg);
    let hour = p.key(1, &alice(), &head(&[]));
    assert!(call(cfg, &alice(), &head(&[])).is_ok());
    for _ in 0..10 {
        assert!(call(cfg, &alice(), &head(&[])).is_err());
    }
    let d = counters::check_and_add(&hour, 100, 3_600_000, Algorithm::SlidingWindow, 0).unwrap();
    assert_eq!(d.remaining, 99);
}

#[test]
fn token_bucket_refills_evenly() {
    start();
    let cfg = r#"{"limits":[{"per":"second","requests":4}],"algorithm":"token-bucket"}"#;
    for _ in 0..4 {
        assert!(call(cfg, &alice(), &head(&[])).is_ok());
    }
    let r = call(cfg, &alice(), &head(&[])).unwrap_err();
    // One token every 250 ms: rounded up to a whole second.
    assert_eq!(header_str(&r.headers, "retry-after"), Some("1"));
    harness::set_now_ms(T0 + 250);
    assert!(call(cfg, &alice(), &head(&[])).is_ok());
    assert!(call(cfg, &alice(), &head(&[])).is_err());
}

fn unavailable(_: &str, _: u64, _: u64, _: Algorithm, _: u64) -> Result<Decision, ServiceError> {
    Err(ServiceError::Unavailable("store down".into()))
}

#[test]
fn service_errors_fail_closed_by_default_or_open() {
    start();
    let mut closed = policy(r#"{"limits":[{"per":"second","requests":1}]}"#);
    closed.counter = unavailable;
    match closed.on_request(&alice(), &head(&[]), None) {
        RequestDecision::Respond(r) => {
            assert_eq!(r.status, 503);
            assert_eq!(header_str(&r.headers, "retry-after"), Some("1"));
        }
        other => panic!("{other:?}"),
    }
    let mut open = policy(r#"{"limits":[{"per":"second","requests":1}],"fail-open":true}"#);
    open.counter = unavailable;
    assert_eq!(
        open.on_request(&alice(), &head(&[]), None),
        RequestDecision::Continue(RequestEdits::default())
    );
    // No decision, so no headers on the response.
    assert_eq!(
        open.on_response(&alice(), &head(&[]), &ResponseHead::default(), None),
        ResponseDecision::Continue(ResponseEdits::default())
    );
}

#[test]
fn client_ips() {
    assert_eq!(client_ip("192.0.2.7:51234"), "192.0.2.7");
    assert_eq!(client_ip("[2001:db8::1]:443"), "2001:db8::1");
    assert_eq!(client_ip("2001:db8::1"), "2001:db8::1");
    assert_eq!(client_ip("weird"), "weird");
    assert_eq!(secs(0), 0);
    assert_eq!(secs(1), 1);
    assert_eq!(secs(1000), 1);
    assert_eq!(secs(1001), 2);
}
