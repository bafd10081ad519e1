use super::calendar::{days_from_civil, DAY_MS};
use super::*;
use tollgate_policy_sdk::services::outcome::ResponseOrigin;
use tollgate_policy_sdk::services::{harness, plans};
use tollgate_policy_sdk::CallContext;
use tollgate_policy_sdk::{
    header_str, parse_config, Consumer, HeaderOp, Phases, RequestHead, ResponseHead,
};

fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> u64 {
    (days_from_civil(y, mo, d) * DAY_MS + (h * 60 + mi) * 60_000) as u64
}

fn policy(json: &str) -> Quota {
    parse_config::<Quota>(json).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn error(json: &str) -> (Option<String>, String) {
    match parse_config::<Quota>(json) {
        Ok(p) => panic!("{json} was accepted: {p:?}"),
        Err(e) => (e.field, e.message),
    }
}

fn ctx(id: &str, app: Option<&str>, plan: Option<&str>) -> CallContext {
    CallContext {
        api: "pets".into(),
        step: "quota".into(),
        client_addr: "192.0.2.1:1".into(),
        consumer: Some(Consumer {
            id: id.into(),
            app: app.map(String::from),
            plan: plan.map(String::from),
            ..Consumer::default()
        }),
        ..CallContext::default()
    }
}

fn alice() -> CallContext {
    ctx("alice", Some("shop"), Some("gold"))
}

/// The request phase of `p` over this call.
fn request(p: &mut Quota, c: &CallContext) -> RequestDecision {
    p.on_request(&Call::native(c, &RequestHead::default()), None)
}

/// The response phase of `p` over this call (a `200` as it stands).
fn response(p: &mut Quota, c: &CallContext) -> ResponseDecision {
    let (req, resp) = (RequestHead::default(), ResponseHead::default());
    p.on_response(&Call::native_response(c, &req, &resp), None)
}

/// The phases of one call on `p`, as the gateway runs them: the request
/// phase, then the response headers it attached, then the response phase
/// if `p` declares one. `Ok(the response header operations, in the order
/// the gateway applies them)` or `Err(refusal)`.
fn call_on(p: &mut Quota, c: &CallContext) -> Result<Vec<HeaderOp>, Response> {
    let phases = p.info().phases;
    assert_eq!(phases & Phases::REQUEST, Phases::REQUEST);
    let mut ops = match request(p, c) {
        RequestDecision::Respond(r) => return Err(r),
        RequestDecision::Continue(e) => {
            let ops = e.response_headers.clone();
            // Nothing else is edited.
            assert_eq!(
                RequestEdits {
                    response_headers: Vec::new(),
                    ..e
                },
                RequestEdits::default()
            );
            ops
        }
    };
    if phases & Phases::RESPONSE == Phases::RESPONSE {
        match response(p, c) {
            ResponseDecision::Continue(e) => {
                assert_eq!(
                    ResponseEdits {
                        headers: Vec::new(),
                        ..e.clone()
                    },
                    ResponseEdits::default()
                );
                ops.extend(e.headers);
            }
            other => panic!("{other:?}"),
        }
    }
    Ok(ops)
}

/// A fresh instance per call: `Ok(response headers)` or `Err(refusal)`.
fn call(json: &str, c: &CallContext) -> Result<Vec<HeaderOp>, Response> {
    call_on(&mut policy(json), c)
}

#[test]
fn config_defaults_and_errors() {
    let p = policy(r#"{"calls":5,"period":"day"}"#);
    assert_eq!(
        (p.by, p.offset_ms, p.week_starts, p.status),
        (By::Consumer, 0, 0, 403)
    );
    assert!(!p.fail_open);
    assert_eq!(p.count, Count::UpstreamBelow500);
    for (text, count) in [
        ("all", Count::All),
        ("upstream", Count::Upstream),
        ("upstream-below-500", Count::UpstreamBelow500),
        ("upstream-below-400", Count::UpstreamBelow400),
    ] {
        let p = policy(&format!(r#"{{"calls":5,"period":"day","count":"{text}"}}"#));
        assert_eq!(p.count, count, "{text}");
    }
    let (field, message) = error(r#"{"calls":5,"period":"day","count":"served"}"#);
    assert_eq!(field.as_deref(), Some("count"));
    assert!(message.contains("upstream-below-500"), "{message}");
    let p = policy(
        r#"{"calls":5,"period":"week","by":"plan","time-zone":"-05:30","week-starts":"sunday","status":429,"fail-open":true}"#,
    );
    assert_eq!(
        (p.by, p.offset_ms, p.week_starts),
        (By::Plan, -19_800_000, 6)
    );

    assert_eq!(
        error(r#"{"period":"day"}"#),
        (
            Some("calls".into()),
            "missing: give `calls` and `period`, or `limits = \"plan\"` to take them from the caller's plan".into()
        )
    );
    assert_eq!(error(r#"{"calls":5}"#).0.as_deref(), Some("period"));
    assert_eq!(
        error(r#"{"calls":0,"period":"day"}"#),
        (Some("calls".into()), "must be at least 1".into())
    );
    assert_eq!(
        error(r#"{"calls":-1,"period":"day"}"#).0.as_deref(),
        Some("calls")
    );
    assert_eq!(
        error(r#"{"calls":1,"period":"year"}"#).0.as_deref(),
        Some("period")
    );
    assert_eq!(
        error(r#"{"calls":1,"period":"day","by":"ip"}"#)
            .0
            .as_deref(),
        Some("by")
    );
    let (field, message) = error(r#"{"calls":1,"period":"day","time-zone":"Europe/Paris"}"#);
    assert_eq!(field.as_deref(), Some("time-zone"));
    assert!(
        message.contains("IANA zone names are not supported"),
        "{message}"
    );
    assert_eq!(
        error(r#"{"calls":1,"period":"day","time-zone":"+15:00"}"#)
            .0
            .as_deref(),
        Some("time-zone")
    );
    assert_eq!(
        error(r#"{"calls":1,"period":"week","week-starts":"Mon"}"#),
        (
            Some("week-starts".into()),
            "\"Mon\" is not a day: expected \"monday\" .. \"sunday\"".into()
        )
    );
    assert_eq!(
        error(r#"{"calls":1,"period":"day","status":302}"#)
            .0
            .as_deref(),
        Some("status")
    );
    assert_eq!(
        error(r#"{"calls":1,"period":"day","timezone":"UTC"}"#)
            .0
            .as_deref(),
        Some("timezone")
    );
}

#[test]
fn counts_to_the_quota_then_refuses_until_the_period_ends() {
    harness::reset();
    // 2024-02-29 18:00 UTC; the day quota in +02:00 ends at 22:00 UTC.
    harness::set_now_ms(at(2024, 2, 29, 18, 0));
    let cfg = r#"{"calls":2,"period":"day","time-zone":"+02:00"}"#;
    assert_eq!(
        call(cfg, &alice()).unwrap(),
        vec![
            HeaderOp::set("x-quota-limit", "2"),
            HeaderOp::set("x-quota-remaining", "1"),
            HeaderOp::set("x-quota-reset", "14400"),
        ]
    );
    harness::set_now_ms(at(2024, 2, 29, 18, 0) + 1);
    let h = call(cfg, &alice()).unwrap();
    assert_eq!(h[1], HeaderOp::set("x-quota-remaining", "0"));
    // 14399.999 s: rounded up.
    assert_eq!(h[2], HeaderOp::set("x-quota-reset", "14400"));
    let r = call(cfg, &alice()).unwrap_err();
    assert_eq!(r.status, 403);
    assert_eq!(header_str(&r.headers, "retry-after"), Some("14400"));
    assert_eq!(header_str(&r.headers, "x-quota-remaining"), Some("0"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    // Others are not affected.
    assert!(call(cfg, &ctx("bob", None, None)).is_ok());
    // Just before local midnight: still refused; at it: a new day.
    harness::set_now_ms(at(2024, 2, 29, 21, 59));
    let r = call(cfg, &alice()).unwrap_err();
    assert_eq!(header_str(&r.headers, "retry-after"), Some("60"));
    harness::set_now_ms(at(2024, 2, 29, 22, 0));
    assert!(call(cfg, &alice()).is_ok());
}

#[test]
fn months_roll_over_at_the_year_boundary() {
    harness::reset();
    let cfg = r#"{"calls":1,"period":"month","status":429}"#;
    harness::set_now_ms(at(2023, 12, 31, 23, 59));
    assert!(call(cfg, &alice()).is_ok());
    let r = call(cfg, &alice()).unwrap_err();
    assert_eq!(r.status, 429);
    assert_eq!(header_str(&r.headers, "retry-after"), Some("60"));
    harness::set_now_ms(at(2024, 1, 1, 0, 0));
    assert!(call(cfg, &alice()).is_ok());
}

#[test]
fn weeks_start_on_the_configured_day() {
    harness::reset();
    let cfg = r#"{"calls":1,"period":"week","week-starts":"sunday"}"#;
    // Saturday 2024-03-09 then Sunday 2024-03-10.
    harness::set_now_ms(at(2024, 3, 9, 12, 0));
    assert!(call(cfg, &alice()).is_ok());
    assert!(call(cfg, &alice()).is_err());
    harness::set_now_ms(at(2024, 3, 10, 0, 0));
    assert!(call(cfg, &alice()).is_ok());
    // With Monday weeks, Saturday and Sunday are in the same week.
    harness::reset();
    let cfg = r#"{"calls":1,"period":"week"}"#;
    harness::set_now_ms(at(2024, 3, 9, 12, 0));
    assert!(call(cfg, &alice()).is_ok());
    harness::set_now_ms(at(2024, 3, 10, 23, 59));
    assert!(call(cfg, &alice()).is_err());
}

#[test]
fn app_and_plan_share_and_separate() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 5, 5, 5));
    let plan = r#"{"calls":2,"period":"day","by":"plan"}"#;
    assert!(call(plan, &ctx("a", None, Some("gold"))).is_ok());
    assert!(call(plan, &ctx("b", None, Some("gold"))).is_ok());
    assert!(call(plan, &ctx("c", None, Some("gold"))).is_err());
    assert!(call(plan, &ctx("c", None, Some("silver"))).is_ok());
    // No plan: refused with the configured status.
    let r = call(plan, &ctx("d", None, None)).unwrap_err();
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("quota_no_subject"));

    let app = r#"{"calls":1,"period":"day","by":"app"}"#;
    assert!(call(app, &ctx("a", Some("shop"), None)).is_ok());
    assert!(call(app, &ctx("b", Some("shop"), None)).is_err());
    // Without an app, the consumer is its own app (and not an app called "a").
    assert!(call(app, &ctx("a", None, None)).is_ok());
    assert!(call(app, &ctx("a", None, None)).is_err());
}

#[test]
fn no_consumer_is_refused() {
    harness::reset();
    let r = call(r#"{"calls":5,"period":"day"}"#, &CallContext::default()).unwrap_err();
    assert_eq!(r.status, 403);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "quota_no_subject");
}

#[test]
fn hostile_ids_make_bounded_distinct_keys() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 5, 5, 5));
    let cfg = r#"{"calls":1,"period":"day"}"#;
    let long = "x".repeat(5000);
    assert!(call(cfg, &ctx(&long, None, None)).is_ok());
    assert!(call(cfg, &ctx(&long, None, None)).is_err());
    assert!(call(cfg, &ctx("a b", None, None)).is_ok());
    assert!(call(cfg, &ctx("a\u{0}b", None, None)).is_ok());
    let p = policy(cfg);
    let subject = |c: CallContext| p.subject(c.consumer.as_ref());
    assert!(subject(ctx(&long, None, None)).unwrap().len() < 80);
    assert_ne!(
        subject(ctx("a b", None, None)),
        subject(ctx("a+b", None, None))
    );
}

fn unavailable(_: &str, _: u64, _: u64, _: u64, _: u64) -> Result<Decision, ServiceError> {
    Err(ServiceError::Unavailable("store down".into()))
}

#[test]
fn service_errors_fail_closed_by_default_or_open() {
    harness::reset();
    let mut closed = policy(r#"{"calls":1,"period":"day"}"#);
    closed.counter = unavailable;
    match request(&mut closed, &alice()) {
        RequestDecision::Respond(r) => assert_eq!(r.status, 503),
        other => panic!("{other:?}"),
    }
    let mut open = policy(r#"{"calls":1,"period":"day","fail-open":true}"#);
    open.counter = unavailable;
    assert_eq!(
        request(&mut open, &alice()),
        RequestDecision::Continue(RequestEdits::default())
    );
    assert_eq!(
        response(&mut open, &alice()),
        ResponseDecision::Continue(ResponseEdits::default())
    );
    // The same with count = "all" (no response phase): no response headers.
    let mut open = policy(r#"{"calls":1,"period":"day","fail-open":true,"count":"all"}"#);
    open.counter = unavailable;
    assert_eq!(
        request(&mut open, &alice()),
        RequestDecision::Continue(RequestEdits::default())
    );
}

#[test]
fn bounds_contain_now() {
    let p = policy(r#"{"calls":1,"period":"month","time-zone":"+14:00"}"#);
    for now in [0u64, 1, 1_700_000_000_000, at(2038, 1, 19, 3, 14)] {
        let (s, e) = p.bounds(Period::Month, now);
        assert!(s <= now && now < e, "{now}: {s}..{e}");
    }
}

// ---- limits = "plan" ----

/// Define plan `id` with a quota of `calls` per `period`, or none.
fn set_plan(id: &str, quota: Option<(u64, plans::Period)>) {
    harness::set_plan(plans::PlanLimits {
        plan: id.into(),
        product: "shop".into(),
        rate_limits: vec![plans::RateLimit {
            requests: 1,
            window_ms: 1_000,
        }],
        quota: quota.map(|(calls, period)| plans::Quota { calls, period }),
    });
}

fn body(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn plan_config_and_errors() {
    let p = policy(r#"{"limits":"plan"}"#);
    assert_eq!(p.source, Source::Plan { fallback: None });
    assert_eq!((p.by, p.status), (By::Consumer, 403));
    let p = policy(
        r#"{"limits":"plan","by":"app","time-zone":"+02:00","fallback":{"calls":100,"period":"month"}}"#,
    );
    assert_eq!(
        p.source,
        Source::Plan {
            fallback: Some(Allowance {
                calls: 100,
                period: Period::Month
            })
        }
    );
    assert_eq!((p.by, p.offset_ms), (By::App, 7_200_000));
    // `by = "plan"` is fine without a fallback.
    policy(r#"{"limits":"plan","by":"plan"}"#);

    assert_eq!(
        error(r#"{"limits":"gold"}"#),
        (
            Some("limits".into()),
            "unknown variant `gold`, expected `plan`".into()
        )
    );
    assert_eq!(error(r#"{"limits":["plan"]}"#).0.as_deref(), Some("limits"));
    let both = "not with limits = \"plan\", which takes calls and period from the caller's plan: \
                give either `calls` and `period`, or `limits = \"plan\"`";
    assert_eq!(
        error(r#"{"limits":"plan","calls":5,"period":"day"}"#),
        (Some("calls".into()), both.into())
    );
    assert_eq!(
        error(r#"{"limits":"plan","calls":5}"#),
        (Some("calls".into()), both.into())
    );
    assert_eq!(
        error(r#"{"limits":"plan","period":"day"}"#),
        (Some("period".into()), both.into())
    );
    assert_eq!(
        error(r#"{"calls":5,"period":"day","fallback":{"calls":1,"period":"day"}}"#),
        (
            Some("fallback".into()),
            "only with limits = \"plan\" (the quota of consumers without a plan)".into()
        )
    );
    assert_eq!(
        error(r#"{"limits":"plan","fallback":{"calls":0,"period":"day"}}"#),
        (Some("fallback.calls".into()), "must be at least 1".into())
    );
    assert_eq!(
        error(r#"{"limits":"plan","fallback":{"calls":1,"period":"year"}}"#)
            .0
            .as_deref(),
        Some("fallback.period")
    );
    assert_eq!(
        error(r#"{"limits":"plan","fallback":{"calls":1}}"#),
        (Some("fallback".into()), "missing field `period`".into())
    );
    assert_eq!(
        error(r#"{"limits":"plan","fallback":{"calls":1,"period":"day","by":"ip"}}"#)
            .0
            .as_deref(),
        Some("fallback.by")
    );
    assert_eq!(
        error(r#"{"limits":"plan","fallback":100}"#).0.as_deref(),
        Some("fallback")
    );
    assert_eq!(
        error(r#"{"limits":"plan","by":"plan","fallback":{"calls":1,"period":"day"}}"#)
            .0
            .as_deref(),
        Some("fallback")
    );
    assert_eq!(
        error(r#"{"limits":"plan","status":200}"#).0.as_deref(),
        Some("status")
    );
}

#[test]
fn the_plan_quota_applies_in_utc_or_the_time_zone() {
    harness::reset();
    set_plan("gold", Some((2, plans::Period::Day)));
    harness::set_now_ms(at(2024, 2, 29, 18, 0));
    let cfg = r#"{"limits":"plan"}"#;
    assert_eq!(
        call(cfg, &alice()).unwrap(),
        vec![
            HeaderOp::set("x-quota-limit", "2"),
            HeaderOp::set("x-quota-remaining", "1"),
            HeaderOp::set("x-quota-reset", "21600"),
        ]
    );
    assert!(call(cfg, &alice()).is_ok());
    let r = call(cfg, &alice()).unwrap_err();
    assert_eq!(r.status, 403);
    assert_eq!(header_str(&r.headers, "retry-after"), Some("21600"));
    assert_eq!(header_str(&r.headers, "x-quota-remaining"), Some("0"));
    assert_eq!(body(&r)["error"]["code"], "quota_exceeded");
    assert_eq!(
        body(&r)["error"]["message"],
        "the quota of 2 calls per day is used up; it renews in 21600 s"
    );
    // Per consumer: bob on the same plan has his own.
    assert!(call(cfg, &ctx("bob", None, Some("gold"))).is_ok());
    // A UTC day.
    harness::set_now_ms(at(2024, 3, 1, 0, 0));
    assert!(call(cfg, &alice()).is_ok());
    // With a time zone, its days (and weeks and months).
    let tz = r#"{"limits":"plan","time-zone":"+02:00","status":429}"#;
    harness::set_now_ms(at(2024, 3, 1, 21, 0));
    assert!(call(tz, &alice()).is_ok());
    assert!(call(tz, &alice()).is_ok());
    let r = call(tz, &alice()).unwrap_err();
    assert_eq!(r.status, 429);
    assert_eq!(header_str(&r.headers, "retry-after"), Some("3600"));
}

#[test]
fn a_plan_change_applies_to_the_next_call() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 5, 5, 5));
    let cfg = r#"{"limits":"plan"}"#;
    set_plan("gold", Some((2, plans::Period::Day)));
    assert!(call(cfg, &alice()).is_ok());
    assert!(call(cfg, &alice()).is_ok());
    assert!(call(cfg, &alice()).is_err());
    // Raised: the count is kept, the new number applies at once.
    set_plan("gold", Some((5, plans::Period::Day)));
    let h = call(cfg, &alice()).unwrap();
    assert_eq!(h[0], HeaderOp::set("x-quota-limit", "5"));
    assert_eq!(h[1], HeaderOp::set("x-quota-remaining", "2"));
    // Lowered below the count: refused at once.
    set_plan("gold", Some((3, plans::Period::Day)));
    let r = call(cfg, &alice()).unwrap_err();
    assert_eq!(header_str(&r.headers, "x-quota-limit"), Some("3"));
    // Another period: a count of its own.
    set_plan("gold", Some((3, plans::Period::Month)));
    let h = call(cfg, &alice()).unwrap();
    assert_eq!(h[1], HeaderOp::set("x-quota-remaining", "2"));
    // No quota any more: unlimited.
    set_plan("gold", None);
    assert_eq!(call(cfg, &alice()), Ok(vec![]));
    // The consumer moved to another plan: that plan's quota and count.
    set_plan("silver", Some((1, plans::Period::Day)));
    let moved = ctx("alice", Some("shop"), Some("silver"));
    assert!(call(cfg, &moved).is_ok());
    assert!(call(cfg, &moved).is_err());
}

#[test]
fn plans_never_share_a_count() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 5, 5, 5));
    set_plan("gold", Some((1, plans::Period::Day)));
    set_plan("silver", Some((1, plans::Period::Day)));
    // A consumer with apps on two plans (equal quotas): counted per plan.
    let cfg = r#"{"limits":"plan"}"#;
    assert!(call(cfg, &ctx("d", Some("x"), Some("gold"))).is_ok());
    assert!(call(cfg, &ctx("d", Some("y"), Some("silver"))).is_ok());
    assert!(call(cfg, &ctx("d", Some("y"), Some("silver"))).is_err());
    // `by = "plan"`: everyone on a plan shares its quota.
    let plan = r#"{"limits":"plan","by":"plan"}"#;
    assert!(call(plan, &ctx("a", None, Some("gold"))).is_ok());
    assert!(call(plan, &ctx("b", None, Some("gold"))).is_err());
    assert!(call(plan, &ctx("b", None, Some("silver"))).is_ok());
    // A configured quota of the same size never meets the plan's count.
    let fixed = r#"{"calls":1,"period":"day"}"#;
    assert!(call(fixed, &ctx("d", Some("x"), Some("gold"))).is_ok());
}

thread_local! {
    static KEYS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn recording(
    key: &str,
    limit: u64,
    start: u64,
    end: u64,
    cost: u64,
) -> Result<Decision, ServiceError> {
    KEYS.with(|k| k.borrow_mut().push(key.to_string()));
    counters::quota_check_and_add(key, limit, start, end, cost)
}

/// The counter key one call uses.
fn key_of(json: &str, c: &CallContext) -> String {
    let mut p = policy(json);
    p.counter = recording;
    KEYS.with(|k| k.borrow_mut().clear());
    request(&mut p, c);
    let keys = KEYS.with(|k| k.borrow().clone());
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].clone()
}

#[test]
fn plan_keys_name_the_plan_and_period_not_the_calls() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 5, 5, 5));
    set_plan("gold", Some((10, plans::Period::Week)));
    let cfg = r#"{"limits":"plan"}"#;
    assert_eq!(
        key_of(cfg, &alice()),
        "quota/quota/plan/p=gold/week/consumer/c=alice"
    );
    assert_eq!(
        key_of(r#"{"limits":"plan","by":"app"}"#, &alice()),
        "quota/quota/plan/p=gold/week/app/a=shop"
    );
    set_plan("gold", Some((20, plans::Period::Week)));
    assert_eq!(
        key_of(cfg, &alice()),
        "quota/quota/plan/p=gold/week/consumer/c=alice"
    );
    // Configured quotas (and the fallback) keep their keys.
    assert_eq!(
        key_of(r#"{"calls":1,"period":"week"}"#, &alice()),
        "quota/quota/week/consumer/c=alice"
    );
    assert_eq!(
        key_of(
            r#"{"limits":"plan","fallback":{"calls":1,"period":"day"}}"#,
            &ctx("bob", None, None)
        ),
        "quota/quota/day/consumer/c=bob"
    );
    // A plan id with a `/` is hashed: it cannot reach the later segments.
    set_plan("a/week", Some((10, plans::Period::Day)));
    let k = key_of(cfg, &ctx("alice", None, Some("a/week")));
    assert!(k.starts_with("quota/quota/plan/p#"), "{k}");
    assert!(k.ends_with("/day/consumer/c=alice"), "{k}");
    assert_eq!(k.matches('/').count(), 6, "{k}");
}

#[test]
fn no_plan_is_refused_with_the_configured_status() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 5, 5, 5));
    set_plan("gold", Some((100, plans::Period::Month)));
    let cfg = r#"{"limits":"plan"}"#;
    for c in [
        CallContext::default(),
        ctx("alice", None, None),
        ctx("alice", None, Some("platinum")),
    ] {
        let r = call(cfg, &c).unwrap_err();
        assert_eq!(r.status, 403);
        assert_eq!(body(&r)["error"]["code"], "no_plan");
        assert_eq!(
            body(&r)["error"]["message"],
            "no plan: this API's quota comes from the caller's plan; call with a key subscribed to a plan"
        );
        assert_eq!(header_str(&r.headers, "retry-after"), None);
        assert_eq!(header_str(&r.headers, "x-quota-limit"), None);
    }
    let r = call(
        r#"{"limits":"plan","status":402}"#,
        &ctx("alice", None, None),
    )
    .unwrap_err();
    assert_eq!(r.status, 402);
    // A plan deleted between two calls.
    assert!(call(cfg, &alice_on("gold")).is_ok());
    harness::remove_plan("gold");
    assert_eq!(call(cfg, &alice_on("gold")).unwrap_err().status, 403);
}

fn alice_on(plan: &str) -> CallContext {
    ctx("alice", Some("shop"), Some(plan))
}

#[test]
fn the_fallback_applies_to_consumers_without_a_plan() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 5, 5, 5));
    set_plan("gold", Some((3, plans::Period::Day)));
    let cfg = r#"{"limits":"plan","fallback":{"calls":1,"period":"month"}}"#;
    let h = call(cfg, &ctx("bob", None, None)).unwrap();
    assert_eq!(h[0], HeaderOp::set("x-quota-limit", "1"));
    let r = call(cfg, &ctx("bob", None, None)).unwrap_err();
    assert_eq!(
        body(&r)["error"]["message"],
        "the quota of 1 calls per month is used up; it renews in 2314500 s"
    );
    // An unknown plan: the fallback too, counted per consumer as usual.
    assert!(call(cfg, &ctx("bob", None, Some("platinum"))).is_err());
    assert!(call(cfg, &ctx("carol", None, Some("platinum"))).is_ok());
    // No consumer at all: a quota cannot count anonymous calls.
    let r = call(cfg, &CallContext::default()).unwrap_err();
    assert_eq!(body(&r)["error"]["code"], "quota_no_subject");
    // A caller with a plan gets the plan's quota, not the fallback.
    for _ in 0..3 {
        assert!(call(cfg, &alice()).is_ok());
    }
    let r = call(cfg, &alice()).unwrap_err();
    assert_eq!(header_str(&r.headers, "x-quota-limit"), Some("3"));
}

#[test]
fn a_plan_without_a_quota_is_unlimited() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 5, 5, 5));
    set_plan("enterprise", None);
    let cfg = r#"{"limits":"plan","fallback":{"calls":1,"period":"day"}}"#;
    for _ in 0..100 {
        // Through, and no quota headers: there is no quota to report.
        assert_eq!(call(cfg, &alice_on("enterprise")), Ok(vec![]));
    }
}

/// One call that passed the quota and ended with a response from `origin`:
/// the headers of its response phase.
fn call_ending(json: &str, c: &CallContext, origin: Option<ResponseOrigin>) -> Vec<HeaderOp> {
    harness::set_origin(origin);
    let headers = call(json, c).unwrap_or_else(|r| panic!("refused: {r:?}"));
    harness::set_origin(None);
    headers
}

#[test]
fn only_calls_that_count_keep_their_unit() {
    let now = at(2024, 5, 10, 12, 0);
    let (start, _) = policy(r#"{"calls":1,"period":"day"}"#).bounds(Period::Day, now);
    let key = "quota/quota/day/consumer/c=alice";
    let upstream = ResponseOrigin::Upstream;
    let gateway = ResponseOrigin::Gateway;
    let step = || ResponseOrigin::Step("rate-limit".into());
    // (count, origin, whether the call keeps its unit)
    let cases = [
        ("all", Some(gateway(503)), true),
        ("all", Some(step()), true),
        ("all", Some(upstream(500)), true),
        ("upstream", Some(upstream(503)), true),
        ("upstream", Some(upstream(200)), true),
        ("upstream", Some(gateway(502)), false),
        ("upstream", Some(step()), false),
        ("upstream-below-500", Some(upstream(200)), true),
        ("upstream-below-500", Some(upstream(404)), true),
        ("upstream-below-500", Some(upstream(499)), true),
        ("upstream-below-500", Some(upstream(500)), false),
        ("upstream-below-500", Some(gateway(503)), false),
        ("upstream-below-500", Some(gateway(200)), false),
        ("upstream-below-500", Some(step()), false),
        ("upstream-below-400", Some(upstream(399)), true),
        ("upstream-below-400", Some(upstream(400)), false),
        ("upstream-below-400", Some(gateway(504)), false),
        // No origin known: the call counts.
        ("upstream-below-500", None, true),
    ];
    for (count, origin, keeps) in cases {
        harness::reset();
        harness::set_now_ms(now);
        let cfg = format!(r#"{{"calls":3,"period":"day","count":"{count}"}}"#);
        let what = format!("count {count}, origin {origin:?}");
        let h = call_ending(&cfg, &alice(), origin.clone());
        let used = u64::from(keeps);
        assert_eq!(harness::quota_count(key, start), used, "{what}");
        // The headers say what is left after the refund.
        assert_eq!(
            h[1],
            HeaderOp::set("x-quota-remaining", (3 - used).to_string().as_str()),
            "{what}"
        );
        // Units given back are there for later calls: three more pass.
        for _ in 0..3 - used {
            call_ending(&cfg, &alice(), Some(upstream(200)));
        }
        assert!(call(&cfg, &alice()).is_err(), "{what}");
    }
}

#[test]
fn calls_that_do_not_count_never_free_more_than_they_took() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 10, 12, 0));
    let cfg = r#"{"calls":2,"period":"day"}"#;
    // Many failed calls in a row do not build up credit.
    for _ in 0..10 {
        call_ending(cfg, &alice(), Some(ResponseOrigin::Gateway(503)));
    }
    call_ending(cfg, &alice(), Some(ResponseOrigin::Upstream(200)));
    call_ending(cfg, &alice(), Some(ResponseOrigin::Upstream(201)));
    assert_eq!(call(cfg, &alice()).unwrap_err().status, 403);
}

#[test]
fn a_reused_policy_value_reports_and_refunds_only_its_own_call() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 5, 5, 5));
    set_plan("gold", Some((3, plans::Period::Day)));
    set_plan("enterprise", None);
    let mut p = policy(r#"{"limits":"plan"}"#);
    let counted = call_on(&mut p, &alice_on("gold")).unwrap();
    assert!(!counted.is_empty());
    // An unlimited call after it: no quota headers, and (ending with a
    // gateway error, which does not count) no refund of the call before.
    harness::set_origin(Some(ResponseOrigin::Gateway(503)));
    let bob = ctx("bob", Some("shop"), Some("enterprise"));
    assert_eq!(call_on(&mut p, &bob), Ok(vec![]));
    harness::set_origin(None);
    let again = call_on(&mut p, &alice_on("gold")).unwrap();
    assert!(
        again.contains(&HeaderOp::set("x-quota-remaining", "1")),
        "{again:?}"
    );
}

#[test]
fn the_response_phase_is_declared_only_when_units_may_be_given_back() {
    for (extra, response) in [
        ("", true),
        (r#","count":"upstream""#, true),
        (r#","count":"upstream-below-500""#, true),
        (r#","count":"upstream-below-400""#, true),
        (r#","count":"all""#, false),
    ] {
        for base in [
            r#""calls":5,"period":"day""#,
            r#""limits":"plan""#,
            r#""limits":"plan","fallback":{"calls":1,"period":"week"}"#,
        ] {
            let json = format!("{{{base}{extra}}}");
            let info = policy(&json).info();
            let want = if response {
                Phases::REQUEST | Phases::RESPONSE
            } else {
                Phases::REQUEST
            };
            assert_eq!(info.phases, want, "{json}");
            assert_eq!(info.body, Default::default(), "{json}");
        }
    }
}

#[test]
fn with_count_all_the_request_phase_attaches_the_headers() {
    harness::reset();
    harness::set_now_ms(at(2024, 5, 10, 12, 0));
    let mut all = policy(r#"{"calls":3,"period":"day","count":"all"}"#);
    let mut refunding = policy(r#"{"calls":3,"period":"day","count":"upstream"}"#);
    match request(&mut all, &alice()) {
        RequestDecision::Continue(e) => {
            assert!(e.headers.is_empty());
            assert_eq!(
                e.response_headers,
                vec![
                    HeaderOp::set("x-quota-limit", "3"),
                    HeaderOp::set("x-quota-remaining", "2"),
                    HeaderOp::set("x-quota-reset", "43200"),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // A refunding count attaches nothing in the request phase: all three
    // headers come from the response phase, after the refund, in the same
    // order as before.
    harness::set_origin(Some(ResponseOrigin::Gateway(503)));
    assert_eq!(
        request(&mut refunding, &alice()),
        RequestDecision::Continue(RequestEdits::default())
    );
    match response(&mut refunding, &alice()) {
        ResponseDecision::Continue(e) => assert_eq!(
            e.headers,
            vec![
                HeaderOp::set("x-quota-limit", "3"),
                HeaderOp::set("x-quota-remaining", "2"),
                HeaderOp::set("x-quota-reset", "43200"),
            ]
        ),
        other => panic!("{other:?}"),
    }
    harness::set_origin(None);
    // The same headers, whichever phase carries them, for either count (a
    // call that counts, each on a fresh count).
    let mut seen = Vec::new();
    for p in [&mut all, &mut refunding] {
        harness::reset();
        harness::set_now_ms(at(2024, 5, 10, 12, 0));
        seen.push(call_on(p, &alice()).unwrap());
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0][1], HeaderOp::set("x-quota-remaining", "2"));
}
