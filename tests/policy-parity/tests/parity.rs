//! Each standard policy driven through `tollgate-policy-test` on both sides,
//! with the harness controls it uses; the two sides must give the same
//! decisions, sink lines and counts.

use std::fmt::Debug;
use tollgate_policy_sdk::services::outcome::ResponseOrigin;
use tollgate_policy_sdk::services::{plans, CallTiming, IncomingResponse};
use tollgate_policy_sdk::{Consumer, Header, Policy, ResponseHead};
use tollgate_policy_test::{Request, Runner};

const NOW: u64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z
const DAY_START: u64 = 1_699_920_000_000;

/// Both sides for the plugin crate `dir` (under plugins/) named `package`.
fn runners<P: Policy>(dir: &str, package: &str) -> Vec<Runner<P>> {
    let dir = format!("{}/../../plugins/{dir}", env!("CARGO_MANIFEST_DIR"));
    Runner::both(&dir, package)
}

/// The native side's answers must be the `.wasm` side's.
fn same<T: PartialEq + Debug>(what: &str, mut per_side: Vec<(&'static str, T)>) -> T {
    assert_eq!(per_side.len(), 2, "{what}: both sides ran");
    let (wasm_label, wasm) = per_side.pop().unwrap();
    let (native_label, native) = per_side.pop().unwrap();
    assert_eq!((native_label, wasm_label), ("native", "wasm"));
    assert_eq!(
        native, wasm,
        "{what}: native (left) and wasm (right) differ"
    );
    native
}

fn ann() -> Consumer {
    Consumer {
        id: "ann".into(),
        app: Some("shop".into()),
        key_id: Some("k1".into()),
        plan: Some("gold".into()),
        product: Some("pets".into()),
    }
}

#[test]
fn key_auth_finds_declared_keys() {
    let mut out = Vec::new();
    for r in runners::<key_auth::KeyAuth>("key-auth", "key-auth") {
        let r = r.with_grants(&["consumers"]);
        r.add_key("test", "secret-1", ann());
        let mut p = r.configure(r#"{"header": "x-api-key"}"#).unwrap();
        let ctx = r.context();
        let mut ds = Vec::new();
        for key in [Some("secret-1"), Some("wrong"), None] {
            let mut req = Request::get("/pets");
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            ds.push(p.on_request(&ctx, &req.head(), None));
        }
        let bad = r
            .configure(r#"{"header": "content-length"}"#)
            .err()
            .unwrap();
        out.push((r.label(), (ds, bad)));
    }
    let (ds, bad) = same("key-auth", out);
    assert!(
        matches!(&ds[0], tollgate_policy_sdk::RequestDecision::Continue(e)
        if e.consumer.as_ref().map(|c| c.id.as_str()) == Some("ann")),
        "{ds:?}"
    );
    assert!(matches!(&ds[1], tollgate_policy_sdk::RequestDecision::Respond(r) if r.status == 401));
    assert!(matches!(&ds[2], tollgate_policy_sdk::RequestDecision::Respond(r) if r.status == 401));
    assert_eq!(bad.field.as_deref(), Some("header"));
}

#[test]
fn quota_counts_per_day_at_a_fixed_clock() {
    let mut out = Vec::new();
    for r in runners::<quota::Quota>("quota", "quota") {
        let r = r.with_grants(&["counters"]);
        r.set_now_ms(NOW);
        let mut ctx = r.context();
        ctx.consumer = Some(ann());
        let mut p = r
            .configure(r#"{"calls": 2, "period": "day", "count": "all"}"#)
            .unwrap();
        let ds: Vec<_> = (0..3)
            .map(|_| p.on_request(&ctx, &Request::get("/").head(), None))
            .collect();
        let count = r.quota_count("quota/test/day/consumer/c=ann", DAY_START);
        // The plan's quota replaces the configured one when the consumer's
        // plan has one.
        r.set_plan(plans::PlanLimits {
            plan: "gold".into(),
            product: "pets".into(),
            rate_limits: Vec::new(),
            quota: Some(plans::Quota {
                calls: 5,
                period: plans::Period::Day,
            }),
        });
        let mut p = r
            .configure(r#"{"calls": 2, "period": "day", "count": "all"}"#)
            .unwrap();
        let with_plan: Vec<_> = (0..3)
            .map(|_| p.on_request(&ctx, &Request::get("/").head(), None))
            .collect();
        r.remove_plan("gold");
        out.push((r.label(), (ds, count, with_plan)));
    }
    let (ds, count, _) = same("quota", out);
    assert!(
        matches!(&ds[2], tollgate_policy_sdk::RequestDecision::Respond(r) if r.status == 403),
        "{ds:?}"
    );
    assert_eq!(count, 2);
}

#[test]
fn access_log_writes_the_same_line() {
    let mut out = Vec::new();
    for r in runners::<access_log::AccessLog>("access-log", "access-log") {
        let r = r.with_grants(&["timing", "sink"]);
        r.set_now_ms(NOW);
        r.set_origin(Some(ResponseOrigin::Upstream(201)));
        r.set_timing(CallTiming {
            total_us: 1500,
            upstream_us: 1000,
            steps: vec![("key-auth".into(), 20)],
        });
        let mut p = r.configure(r#"{"headers": ["user-agent"]}"#).unwrap();
        let req = Request::new("POST", "/pets?x=1")
            .header("user-agent", "curl")
            .head();
        let resp = ResponseHead {
            status: 201,
            headers: vec![Header::new("content-type", "application/json")],
        };
        let d = p.on_response(&r.context(), &req, &resp, None);
        out.push((r.label(), (d, r.sink_lines())));
    }
    let (_, lines) = same("access-log", out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["status"], 201, "{line}");
}

#[test]
fn outbound_calls_are_answered_and_recorded() {
    let url = "http://idp.example/status";
    let mut out = Vec::new();
    for r in runners::<fixture_slowcall::SlowCall>("fixtures/slowcall", "fixture-slowcall") {
        let r = r.with_grants(&["http:idp.example"]);
        let cfg = format!(r#"{{"url": "{url}", "timeout-ms": 1000}}"#);
        let mut p = r.configure(&cfg).unwrap();
        let unanswered = p.on_request(&r.context(), &Request::get("/").head(), None);
        r.answer(
            url,
            IncomingResponse {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
            },
        );
        let answered = p.on_request(&r.context(), &Request::get("/").head(), None);
        out.push((r.label(), (unanswered, answered, r.http_calls())));
    }
    let (unanswered, answered, calls) = same("http", out);
    let header = |d: &tollgate_policy_sdk::RequestDecision| match d {
        tollgate_policy_sdk::RequestDecision::Continue(e) => e
            .headers
            .iter()
            .map(|op| match op {
                tollgate_policy_sdk::HeaderOp::Set(h) => {
                    String::from_utf8_lossy(&h.value).into_owned()
                }
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    };
    assert!(header(&unanswered).contains("error"), "{unanswered:?}");
    assert!(header(&answered).contains("204"), "{answered:?}");
    assert_eq!(calls, vec![url.to_string(), url.to_string()]);
}
