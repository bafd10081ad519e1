use super::*;
use tollgate_policy_sdk::services::{harness, plans};
use tollgate_policy_sdk::CallContext;
use tollgate_policy_sdk::{
    header_str, parse_config, Consumer, Header, HeaderOp, Phases, RequestHead,
};

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

/// The request phase of `p` over this call.
fn request(p: &mut RateLimit, c: &CallContext, req: &RequestHead) -> RequestDecision {
    p.on_request(&Call::native(c, req), None)
}

/// The response headers a call that passed attaches (its request phase's
/// `response_headers`); every other edit must be empty.
fn response_headers(e: RequestEdits) -> Vec<HeaderOp> {
    let headers = e.response_headers.clone();
    assert_eq!(
        RequestEdits {
            response_headers: Vec::new(),
            ..e
        },
        RequestEdits::default()
    );
    headers
}

/// A fresh instance per call, as in the gateway; `Ok(response headers)` or
/// `Err(refusal)`. The step has no response phase: the headers come from
/// the request phase.
fn call(json: &str, c: &CallContext, req: &RequestHead) -> Result<Vec<HeaderOp>, Response> {
    let mut p = policy(json);
    assert_eq!(p.info().phases, Phases::REQUEST);
    match request(&mut p, c, req) {
        RequestDecision::Respond(r) => Err(r),
        RequestDecision::Continue(e) => Ok(response_headers(e)),
    }
}

/// The counter key of configured limit `i` for this call.
fn key_of(p: &RateLimit, i: usize, c: &CallContext, req: &RequestHead) -> String {
    p.key(i, &Facts::new(&Call::native(c, req)))
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
    assert_eq!(p.configured()[0].by, By::Consumer);
    let p = policy(
        r#"{"limits":[{"per":"second","requests":1,"by":"header:X-Tenant"},{"per":"day","requests":9,"by":"api"}],
            "algorithm":"token-bucket","status":503,"fail-open":true}"#,
    );
    assert_eq!(p.configured()[0].by, By::Header("x-tenant".into()));
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
    let key = |v: &[u8]| key_of(&p, 0, &alice(), &head(&[("x-tenant", v)]));
    let k = key(&huge);
    assert!(k.len() < 200, "{}", k.len());
    assert_ne!(key(b"a b"), key(b"a%20b"));
    assert_ne!(key(b"\xff"), key(b"\xfe"));
    assert_ne!(key(b"ip=192.0.2.1"), key_of(&p, 0, &alice(), &head(&[])));
    // Values with the key's separators cannot reach another dimension's key.
    assert!(key(b"x/0/60000/ip/ip=1").ends_with("/header:x-tenant/h=x/0/60000/ip/ip=1"));
    // Several fields: counted as one list, in order.
    let two = key_of(
        &p,
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
    let keys: Vec<String> = (0..2)
        .map(|i| key_of(&p, i, &alice(), &head(&[])))
        .collect();
    let left = |i: usize| {
        counters::check_and_add(
            &keys[i],
            p.configured()[i].requests,
            p.configured()[i].window_ms,
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
    let hour = key_of(&p, 1, &alice(), &head(&[]));
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

fn unavailable(_: &[counters::Limit], _: u64) -> Result<Vec<Decision>, ServiceError> {
    Err(ServiceError::Unavailable("store down".into()))
}

#[test]
fn service_errors_fail_closed_by_default_or_open() {
    start();
    let mut closed = policy(r#"{"limits":[{"per":"second","requests":1}]}"#);
    closed.counter = unavailable;
    match request(&mut closed, &alice(), &head(&[])) {
        RequestDecision::Respond(r) => {
            assert_eq!(r.status, 503);
            assert_eq!(header_str(&r.headers, "retry-after"), Some("1"));
        }
        other => panic!("{other:?}"),
    }
    let mut open = policy(r#"{"limits":[{"per":"second","requests":1}],"fail-open":true}"#);
    open.counter = unavailable;
    // No decision, so no headers on the response (no `response_headers`).
    assert_eq!(
        request(&mut open, &alice(), &head(&[])),
        RequestDecision::Continue(RequestEdits::default())
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

// ---- limits = "plan" ----

/// Define plan `id` with `(requests, window-ms)` rate limits.
fn set_plan(id: &str, limits: &[(u64, u64)]) {
    harness::set_plan(plans::PlanLimits {
        plan: id.into(),
        product: "shop".into(),
        rate_limits: limits
            .iter()
            .map(|&(requests, window_ms)| plans::RateLimit {
                requests,
                window_ms,
            })
            .collect(),
        quota: None,
    });
}

/// A caller with a consumer, an app and a plan.
fn on_plan(id: &str, app: Option<&str>, plan: Option<&str>) -> CallContext {
    let mut c = ctx(Some((id, app)), "192.0.2.1:4000");
    if let Some(consumer) = &mut c.consumer {
        consumer.plan = plan.map(String::from);
    }
    c
}

fn body(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn plan_config_and_errors() {
    let p = policy(r#"{"limits":"plan"}"#);
    assert_eq!(
        p.source,
        Source::Plan {
            by: By::Consumer,
            fallback: None
        }
    );
    assert_eq!(p.status, 429);
    let p = policy(
        r#"{"limits":"plan","by":"header:X-Tenant","algorithm":"token-bucket",
            "fallback":[{"per":"minute","requests":10,"by":"ip"}]}"#,
    );
    assert_eq!(
        p.source,
        Source::Plan {
            by: By::Header("x-tenant".into()),
            fallback: Some(vec![Limit {
                window_ms: 60_000,
                requests: 10,
                by: By::Ip
            }])
        }
    );
    assert_eq!(p.algorithm, Algorithm::TokenBucket);

    assert_eq!(
        error(r#"{"limits":"gold"}"#),
        (
            Some("limits".into()),
            "invalid value: string \"gold\", expected \"plan\" or an array of limits".into()
        )
    );
    assert_eq!(
        error(r#"{"limits":5}"#),
        (
            Some("limits".into()),
            "invalid type: integer `5`, expected \"plan\" or an array of limits".into()
        )
    );
    assert_eq!(
        error(r#"{"limits":{"per":"second","requests":1}}"#)
            .0
            .as_deref(),
        Some("limits")
    );
    assert_eq!(
        error(r#"{"limits":[{"per":"second","requests":1}],"by":"app"}"#),
        (
            Some("by".into()),
            "only with limits = \"plan\"; with a list of limits, give `by` in each limit".into()
        )
    );
    assert_eq!(
        error(
            r#"{"limits":[{"per":"second","requests":1}],"fallback":[{"per":"second","requests":1}]}"#
        ),
        (
            Some("fallback".into()),
            "only with limits = \"plan\" (the limits of callers without a plan)".into()
        )
    );
    assert_eq!(
        error(r#"{"limits":"plan","by":"user"}"#).0.as_deref(),
        Some("by")
    );
    assert_eq!(
        error(r#"{"limits":"plan","fallback":[]}"#),
        (Some("fallback".into()), "give at least one limit".into())
    );
    assert_eq!(
        error(r#"{"limits":"plan","fallback":[{"per":"second","requests":0}]}"#)
            .0
            .as_deref(),
        Some("fallback.0.requests")
    );
    assert_eq!(
        error(r#"{"limits":"plan","fallback":[{"per":"week","requests":1}]}"#)
            .0
            .as_deref(),
        Some("fallback.0.per")
    );
    assert_eq!(
        error(r#"{"limits":"plan","fallback":[{"per":"second","requests":1,"by":"user"}]}"#)
            .0
            .as_deref(),
        Some("fallback.0.by")
    );
    assert_eq!(
        error(
            r#"{"limits":"plan","fallback":[{"per":"second","requests":1},{"per":"second","requests":2}]}"#
        )
        .0
        .as_deref(),
        Some("fallback.1")
    );
    assert_eq!(
        error(r#"{"limits":"plan","fallback":{"per":"second","requests":1}}"#)
            .0
            .as_deref(),
        Some("fallback")
    );
    assert_eq!(
        error(r#"{"limits":"plan","status":200}"#).0.as_deref(),
        Some("status")
    );
    assert_eq!(
        error(r#"{"limits":"plan","plan":"gold"}"#).0.as_deref(),
        Some("plan")
    );
}

#[test]
fn plan_limits_apply_with_the_usual_headers() {
    start();
    set_plan("gold", &[(3, 60_000)]);
    let cfg = r#"{"limits":"plan"}"#;
    let alice = on_plan("alice", Some("shop"), Some("gold"));
    for left in [2, 1, 0] {
        assert_eq!(
            call(cfg, &alice, &head(&[])).unwrap(),
            vec![
                HeaderOp::set("ratelimit-limit", "3"),
                HeaderOp::set("ratelimit-remaining", left.to_string()),
                HeaderOp::set("ratelimit-reset", "60"),
            ]
        );
    }
    harness::set_now_ms(T0 + 1_500);
    let r = call(cfg, &alice, &head(&[])).unwrap_err();
    assert_eq!(r.status, 429);
    assert_eq!(header_str(&r.headers, "retry-after"), Some("59"));
    assert_eq!(header_str(&r.headers, "ratelimit-limit"), Some("3"));
    assert_eq!(header_str(&r.headers, "ratelimit-remaining"), Some("0"));
    assert_eq!(
        body(&r)["error"]["message"],
        "too many requests: the limit is 3 per minute; retry in 59 s"
    );
    // Per consumer (the default `by`): bob on the same plan has his own.
    assert!(call(cfg, &on_plan("bob", None, Some("gold")), &head(&[])).is_ok());
    // The configured status is used for plan limits too.
    let r = call(r#"{"limits":"plan","status":503}"#, &alice, &head(&[])).unwrap_err();
    assert_eq!(r.status, 503);
}

#[test]
fn several_plan_limits_combine_like_configured_ones() {
    start();
    // A minute limit and a second limit, plus a duplicate that must not
    // count each call twice.
    set_plan("gold", &[(5, 60_000), (2, 1_000), (5, 60_000)]);
    let cfg = r#"{"limits":"plan"}"#;
    let alice = on_plan("alice", None, Some("gold"));
    let h = call(cfg, &alice, &head(&[])).unwrap();
    assert_eq!(h[0], HeaderOp::set("ratelimit-limit", "2"));
    assert_eq!(h[1], HeaderOp::set("ratelimit-remaining", "1"));
    assert!(call(cfg, &alice, &head(&[])).is_ok());
    let r = call(cfg, &alice, &head(&[])).unwrap_err();
    assert_eq!(header_str(&r.headers, "ratelimit-limit"), Some("2"));
    assert_eq!(
        body(&r)["error"]["message"],
        "too many requests: the limit is 2 per second; retry in 1 s"
    );
    // The refused call spent nothing of the minute: 3 more pass.
    for t in [1_000, 1_001, 2_000] {
        harness::set_now_ms(T0 + t);
        assert!(call(cfg, &alice, &head(&[])).is_ok(), "{t}");
    }
    harness::set_now_ms(T0 + 2_001);
    let r = call(cfg, &alice, &head(&[])).unwrap_err();
    assert_eq!(header_str(&r.headers, "ratelimit-limit"), Some("5"));
}

#[test]
fn a_plan_change_applies_to_the_next_call() {
    start();
    let cfg = r#"{"limits":"plan"}"#;
    let alice = on_plan("alice", None, Some("gold"));
    set_plan("gold", &[(2, 60_000)]);
    assert!(call(cfg, &alice, &head(&[])).is_ok());
    assert!(call(cfg, &alice, &head(&[])).is_ok());
    assert!(call(cfg, &alice, &head(&[])).is_err());
    // Raised: the new limit at once (a fresh counter for the new limit).
    set_plan("gold", &[(5, 60_000)]);
    let h = call(cfg, &alice, &head(&[])).unwrap();
    assert_eq!(h[0], HeaderOp::set("ratelimit-limit", "5"));
    assert_eq!(h[1], HeaderOp::set("ratelimit-remaining", "4"));
    // Lowered (and a shorter window): exactly the new limit.
    set_plan("gold", &[(1, 1_000)]);
    assert!(call(cfg, &alice, &head(&[])).is_ok());
    let r = call(cfg, &alice, &head(&[])).unwrap_err();
    assert_eq!(header_str(&r.headers, "ratelimit-limit"), Some("1"));
    // Going back to an earlier limit finds its counter as it was.
    set_plan("gold", &[(2, 60_000)]);
    assert!(call(cfg, &alice, &head(&[])).is_err());
    // The consumer moved to another plan: that plan's limits.
    set_plan("silver", &[(1, 60_000)]);
    let alice = on_plan("alice", None, Some("silver"));
    assert!(call(cfg, &alice, &head(&[])).is_ok());
    let r = call(cfg, &alice, &head(&[])).unwrap_err();
    assert_eq!(header_str(&r.headers, "ratelimit-limit"), Some("1"));
}

#[test]
fn plans_never_share_counters() {
    start();
    // Equal limits on two plans.
    set_plan("gold", &[(1, 60_000)]);
    set_plan("silver", &[(1, 60_000)]);
    // One counter per plan for the whole API.
    let api = r#"{"limits":"plan","by":"api"}"#;
    assert!(call(api, &on_plan("a", None, Some("gold")), &head(&[])).is_ok());
    assert!(call(api, &on_plan("b", None, Some("gold")), &head(&[])).is_err());
    assert!(call(api, &on_plan("c", None, Some("silver")), &head(&[])).is_ok());
    // A consumer with apps on two plans is counted per plan.
    let consumer = r#"{"limits":"plan"}"#;
    assert!(call(consumer, &on_plan("d", Some("x"), Some("gold")), &head(&[])).is_ok());
    assert!(call(
        consumer,
        &on_plan("d", Some("y"), Some("silver")),
        &head(&[])
    )
    .is_ok());
    assert!(call(
        consumer,
        &on_plan("d", Some("y"), Some("silver")),
        &head(&[])
    )
    .is_err());
    // `by = "app"`: apps apart, on the plan's limits.
    let app = r#"{"limits":"plan","by":"app"}"#;
    assert!(call(app, &on_plan("e", Some("x"), Some("gold")), &head(&[])).is_ok());
    assert!(call(app, &on_plan("f", Some("x"), Some("gold")), &head(&[])).is_err());
    assert!(call(app, &on_plan("e", Some("z"), Some("gold")), &head(&[])).is_ok());
    // Plan counters never meet configured ones, even with the same limit.
    let fixed = r#"{"limits":[{"per":"minute","requests":1}]}"#;
    assert!(call(fixed, &on_plan("d", Some("x"), Some("gold")), &head(&[])).is_ok());
}

#[test]
fn plan_keys_name_the_plan_window_and_limit() {
    start();
    let p = policy(r#"{"limits":"plan"}"#);
    let keys = |plan: &str| {
        let (c, req) = (on_plan("alice", None, Some(plan)), head(&[]));
        match p.limits_for(&Facts::new(&Call::native(&c, &req))) {
            Applied::Limits { keys, .. } => keys,
            _ => panic!("no limits for {plan}"),
        }
    };
    set_plan("gold", &[(3, 60_000), (10, 1_000)]);
    assert_eq!(
        keys("gold"),
        vec![
            "rl/rate-limit/plan/p=gold/60000/3/consumer/c=alice",
            "rl/rate-limit/plan/p=gold/1000/10/consumer/c=alice",
        ]
    );
    // A plan id with a `/` (or anything unusual) is hashed, so it cannot
    // reach into the window or limit segments.
    set_plan("a/1", &[(3, 60_000)]);
    let k = &keys("a/1")[0];
    assert!(k.starts_with("rl/rate-limit/plan/p#"), "{k}");
    assert!(k.ends_with("/60000/3/consumer/c=alice"), "{k}");
    assert_eq!(k.matches('/').count(), 7, "{k}");
}

#[test]
fn no_plan_is_refused_with_403() {
    start();
    set_plan("gold", &[(100, 1_000)]);
    let cfg = r#"{"limits":"plan"}"#;
    for c in [
        ctx(None, "192.0.2.1:1"),
        on_plan("alice", None, None),
        on_plan("alice", None, Some("platinum")),
    ] {
        let r = call(cfg, &c, &head(&[])).unwrap_err();
        assert_eq!(r.status, 403);
        assert_eq!(body(&r)["error"]["code"], "no_plan");
        assert_eq!(
            body(&r)["error"]["message"],
            "no plan: this API's limits come from the caller's plan; call with a key subscribed to a plan"
        );
        // Not a rate limit: nothing to retry, no rate-limit headers.
        assert_eq!(header_str(&r.headers, "retry-after"), None);
        assert_eq!(header_str(&r.headers, "ratelimit-limit"), None);
    }
    // `status` is for rate-limited calls only.
    let r = call(
        r#"{"limits":"plan","status":503}"#,
        &ctx(None, "192.0.2.1:1"),
        &head(&[]),
    )
    .unwrap_err();
    assert_eq!(r.status, 403);
    // A plan deleted between two calls.
    let alice = on_plan("alice", None, Some("gold"));
    assert!(call(cfg, &alice, &head(&[])).is_ok());
    harness::remove_plan("gold");
    assert_eq!(call(cfg, &alice, &head(&[])).unwrap_err().status, 403);
}

#[test]
fn the_fallback_applies_to_callers_without_a_plan() {
    start();
    set_plan("gold", &[(3, 60_000)]);
    let cfg = r#"{"limits":"plan","fallback":[{"per":"minute","requests":1,"by":"ip"}]}"#;
    // No consumer: the fallback, by IP.
    let anon = ctx(None, "192.0.2.1:1");
    let h = call(cfg, &anon, &head(&[])).unwrap();
    assert_eq!(h[0], HeaderOp::set("ratelimit-limit", "1"));
    let r = call(cfg, &anon, &head(&[])).unwrap_err();
    assert_eq!(r.status, 429);
    assert_eq!(
        body(&r)["error"]["message"],
        "too many requests: the limit is 1 per minute; retry in 60 s"
    );
    // A consumer without a plan, or with an unknown one, from the same IP.
    assert!(call(cfg, &on_plan("bob", None, None), &head(&[])).is_err());
    assert!(call(cfg, &on_plan("bob", None, Some("platinum")), &head(&[])).is_err());
    assert!(call(cfg, &ctx(None, "192.0.2.2:1"), &head(&[])).is_ok());
    // A caller with a plan gets the plan's limits, not the fallback.
    let alice = on_plan("alice", None, Some("gold"));
    for _ in 0..3 {
        assert!(call(cfg, &alice, &head(&[])).is_ok());
    }
    let r = call(cfg, &alice, &head(&[])).unwrap_err();
    assert_eq!(header_str(&r.headers, "ratelimit-limit"), Some("3"));
}

#[test]
fn a_plan_without_rate_limits_is_unlimited() {
    start();
    set_plan("enterprise", &[]);
    let cfg = r#"{"limits":"plan","fallback":[{"per":"minute","requests":1}]}"#;
    let alice = on_plan("alice", None, Some("enterprise"));
    for _ in 0..100 {
        // Through, and no rate-limit headers: there is no limit to report.
        assert_eq!(call(cfg, &alice, &head(&[])), Ok(vec![]));
    }
}

#[test]
fn plan_limits_use_the_configured_algorithm_and_odd_windows() {
    start();
    set_plan("gold", &[(4, 1_000)]);
    let cfg = r#"{"limits":"plan","algorithm":"token-bucket"}"#;
    let alice = on_plan("alice", None, Some("gold"));
    for _ in 0..4 {
        assert!(call(cfg, &alice, &head(&[])).is_ok());
    }
    assert!(call(cfg, &alice, &head(&[])).is_err());
    harness::set_now_ms(T0 + 250);
    assert!(call(cfg, &alice, &head(&[])).is_ok());

    // Windows that are not a named unit are named in s or ms.
    set_plan("odd", &[(1, 1_500), (1, 90_000)]);
    let odd = on_plan("alice", None, Some("odd"));
    assert!(call(r#"{"limits":"plan"}"#, &odd, &head(&[])).is_ok());
    let r = call(r#"{"limits":"plan"}"#, &odd, &head(&[])).unwrap_err();
    // The 1.5 s limit goes first, unprobed; the 90 s one, probed empty,
    // refuses before anything is charged.
    assert_eq!(
        body(&r)["error"]["message"],
        "too many requests: the limit is 1 per 90 s; retry in 90 s"
    );
    assert_eq!(window_name(1_500), "1500 ms");
    assert_eq!(window_name(90_000), "90 s");
    assert_eq!(window_name(3_600_000), "hour");
}

#[test]
fn a_plan_limit_the_counters_cannot_keep_is_a_service_error() {
    start();
    // A window of 0 (or over a day) is refused by the counters service.
    set_plan("broken", &[(10, 0)]);
    let alice = on_plan("alice", None, Some("broken"));
    let r = call(r#"{"limits":"plan"}"#, &alice, &head(&[])).unwrap_err();
    assert_eq!(r.status, 503);
    assert_eq!(body(&r)["error"]["code"], "rate_limit_unavailable");
    assert_eq!(
        call(r#"{"limits":"plan","fail-open":true}"#, &alice, &head(&[])),
        Ok(vec![])
    );
}

#[test]
fn a_reused_policy_value_reports_only_its_own_call() {
    // One value serving call after call, as an instance does under the
    // gateway's `worker` isolation.
    start();
    set_plan("gold", &[(5, 60_000)]);
    set_plan("enterprise", &[]);
    let mut p = policy(r#"{"limits":"plan"}"#);
    let req = head(&[]);
    let mut both = |c: &CallContext| match request(&mut p, c, &req) {
        RequestDecision::Respond(r) => panic!("{r:?}"),
        RequestDecision::Continue(e) => response_headers(e),
    };
    assert!(!both(&on_plan("alice", None, Some("gold"))).is_empty());
    // An unlimited call next: no headers (not those of the call before).
    assert_eq!(both(&on_plan("bob", None, Some("enterprise"))), vec![]);
}

#[test]
fn every_configuration_declares_only_the_request_phase() {
    for json in [
        r#"{"limits":[{"per":"minute","requests":3}]}"#,
        r#"{"limits":[{"per":"second","requests":1}],"fail-open":true,"status":503}"#,
        r#"{"limits":[{"per":"hour","requests":9,"by":"header:x-t"}],"algorithm":"token-bucket"}"#,
        r#"{"limits":"plan"}"#,
        r#"{"limits":"plan","by":"app","fallback":[{"per":"minute","requests":10,"by":"ip"}]}"#,
    ] {
        assert_eq!(policy(json).info(), PolicyInfo::request_only(), "{json}");
    }
}

#[test]
fn the_headers_of_a_passed_call_are_response_headers_of_the_request_phase() {
    start();
    let mut p = policy(r#"{"limits":[{"per":"second","requests":2}]}"#);
    match request(&mut p, &alice(), &head(&[])) {
        RequestDecision::Continue(e) => {
            // Nothing changes the request; the headers are for the response.
            assert!(e.headers.is_empty());
            assert_eq!(
                e.response_headers,
                vec![
                    HeaderOp::set("ratelimit-limit", "2"),
                    HeaderOp::set("ratelimit-remaining", "1"),
                    HeaderOp::set("ratelimit-reset", "1"),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // The same value again: its own call's numbers only.
    let second = match request(&mut p, &alice(), &head(&[])) {
        RequestDecision::Continue(e) => response_headers(e),
        other => panic!("{other:?}"),
    };
    assert_eq!(second[1], HeaderOp::set("ratelimit-remaining", "0"));
    // A refusal carries its headers itself (the step's own answer gets no
    // response headers from it).
    match request(&mut p, &alice(), &head(&[])) {
        RequestDecision::Respond(r) => {
            assert_eq!(r.status, 429);
            assert_eq!(header_str(&r.headers, "ratelimit-limit"), Some("2"));
            assert_eq!(header_str(&r.headers, "ratelimit-remaining"), Some("0"));
            assert_eq!(header_str(&r.headers, "retry-after"), Some("1"));
        }
        other => panic!("{other:?}"),
    }
}
