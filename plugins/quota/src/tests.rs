use super::calendar::{days_from_civil, DAY_MS};
use super::*;
use tollgate_policy_sdk::services::harness;
use tollgate_policy_sdk::{header_str, parse_config, Consumer, HeaderOp};

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

/// A fresh instance per call: `Ok(response headers)` or `Err(refusal)`.
fn call(json: &str, c: &CallContext) -> Result<Vec<HeaderOp>, Response> {
    let mut p = policy(json);
    let req = RequestHead::default();
    match p.on_request(c, &req, None) {
        RequestDecision::Respond(r) => Err(r),
        RequestDecision::Continue(e) => {
            assert_eq!(e, RequestEdits::default());
            match p.on_response(c, &req, &ResponseHead::default(), None) {
                ResponseDecision::Continue(e) => Ok(e.headers),
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn config_defaults_and_errors() {
    let p = policy(r#"{"calls":5,"period":"day"}"#);
    assert_eq!(
        (p.by, p.offset_ms, p.week_starts, p.status),
        (By::Consumer, 0, 0, 403)
    );
    assert!(!p.fail_open);
    let p = policy(
        r#"{"calls":5,"period":"week","by":"plan","time-zone":"-05:30","week-starts":"sunday","status":429,"fail-open":true}"#,
    );
    assert_eq!(
        (p.by, p.offset_ms, p.week_starts),
        (By::Plan, -19_800_000, 6)
    );

    assert_eq!(
        error(r#"{"period":"day"}"#),
        (None, "missing field `calls`".into())
    );
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
    assert!(p.subject(&ctx(&long, None, None)).unwrap().len() < 80);
    assert_ne!(
        p.subject(&ctx("a b", None, None)),
        p.subject(&ctx("a+b", None, None))
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
    match closed.on_request(&alice(), &RequestHead::default(), None) {
        RequestDecision::Respond(r) => assert_eq!(r.status, 503),
        other => panic!("{other:?}"),
    }
    let mut open = policy(r#"{"calls":1,"period":"day","fail-open":true}"#);
    open.counter = unavailable;
    assert_eq!(
        open.on_request(&alice(), &RequestHead::default(), None),
        RequestDecision::Continue(RequestEdits::default())
    );
    assert_eq!(
        open.on_response(
            &alice(),
            &RequestHead::default(),
            &ResponseHead::default(),
            None
        ),
        ResponseDecision::Continue(ResponseEdits::default())
    );
}

#[test]
fn bounds_contain_now() {
    let p = policy(r#"{"calls":1,"period":"month","time-zone":"+14:00"}"#);
    for now in [0u64, 1, 1_700_000_000_000, at(2038, 1, 19, 3, 14)] {
        let (s, e) = p.bounds(now);
        assert!(s <= now && now < e, "{now}: {s}..{e}");
    }
}
