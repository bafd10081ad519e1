use super::*;
use serde_json::{json, Value};
use tollgate_policy_sdk::services::{harness, CallTiming};
use tollgate_policy_sdk::{
    parse_config, CallContext, Consumer, Header, Phases, RequestHead, ResponseHead,
};

const T0: u64 = 1_700_000_000_123;

fn policy(json: &str) -> AccessLog {
    parse_config::<AccessLog>(json).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn error(json: &str) -> (Option<String>, String) {
    match parse_config::<AccessLog>(json) {
        Ok(p) => panic!("{json} was accepted: {p:?}"),
        Err(e) => (e.field, e.message),
    }
}

fn ctx(consumer: bool) -> CallContext {
    CallContext {
        request_id: "req-1".into(),
        client_addr: "192.0.2.7:51234".into(),
        api: "pets".into(),
        route: "/pets/{id}".into(),
        step: "access-log".into(),
        consumer: consumer.then(|| Consumer {
            id: "alice".into(),
            app: Some("shop".into()),
            key_id: Some("k1".into()),
            plan: Some("gold".into()),
            product: None,
        }),
        ..CallContext::default()
    }
}

fn req(query: Option<&str>, headers: &[(&str, &[u8])]) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        scheme: "https".into(),
        authority: "api.example.com".into(),
        path: "/pets/7".into(),
        query: query.map(String::from),
        headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
    }
}

/// One call through a fresh instance; the line it wrote, parsed.
fn run(json: &str, c: &CallContext, r: &RequestHead, resp: &ResponseHead) -> Value {
    harness::reset();
    harness::set_now_ms(T0);
    harness::set_timing(CallTiming {
        total_us: 1500,
        upstream_us: 1200,
        steps: vec![("key-auth".into(), 40), ("cache".into(), 25)],
    });
    let mut p = policy(json);
    assert_eq!(p.info().body, Default::default());
    assert_eq!(p.info().phases, Phases::RESPONSE);
    assert!(harness::sink_lines().is_empty());
    assert_eq!(
        p.on_response(&Call::native_response(c, r, resp), Some(b"ignored")),
        ResponseDecision::default()
    );
    let lines = harness::sink_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(!lines[0].contains('\n'));
    serde_json::from_str(&lines[0]).unwrap_or_else(|e| panic!("{}: {e}", lines[0]))
}

fn resp(status: u16, headers: &[(&str, &[u8])]) -> ResponseHead {
    ResponseHead {
        status,
        headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
    }
}

#[test]
fn config_defaults_and_errors() {
    let p = policy("{}");
    assert!(!p.include_query);
    assert!(p.headers.is_empty() && p.response_headers.is_empty());
    assert_eq!(p.redact_headers, ALWAYS_REDACTED_HEADERS);
    let p = policy(
        r#"{"include-query":true,"redact-query":["Session"],"headers":["User-Agent","user-agent"],
            "response-headers":["content-type"],"redact-headers":["X-Secret"]}"#,
    );
    assert_eq!(p.headers, vec!["user-agent".to_string()]);
    assert!(p.redact_query.contains(&"session".to_string()));
    assert!(p.redact_headers.contains(&"x-secret".to_string()));

    assert_eq!(
        error(r#"{"headers":["ok","bad name"]}"#),
        (
            Some("headers.1".into()),
            "\"bad name\" is not a valid header name".into()
        )
    );
    assert_eq!(
        error(r#"{"response-headers":[""]}"#).0.as_deref(),
        Some("response-headers.0")
    );
    assert_eq!(
        error(r#"{"redact-headers":["a:b"]}"#).0.as_deref(),
        Some("redact-headers.0")
    );
    assert_eq!(
        error(r#"{"redact-query":["ok",""]}"#).0.as_deref(),
        Some("redact-query.1")
    );
    assert_eq!(
        error(r#"{"include-query":"yes"}"#).0.as_deref(),
        Some("include-query")
    );
    let (field, message) = error(r#"{"include_query":true}"#);
    assert_eq!(field.as_deref(), Some("include_query"));
    assert!(message.contains("unknown field"), "{message}");
    let many: Vec<String> = (0..33).map(|i| format!("\"x-{i}\"")).collect();
    assert_eq!(
        error(&format!(r#"{{"headers":[{}]}}"#, many.join(",")))
            .0
            .as_deref(),
        Some("headers")
    );
}

#[test]
fn a_full_line() {
    let line = run(
        r#"{"headers":["user-agent","x-missing"],"response-headers":["content-type"]}"#,
        &ctx(true),
        &req(Some("a=1&token=t0p"), &[("user-agent", b"curl/8.0")]),
        &resp(200, &[("content-type", b"application/json")]),
    );
    assert_eq!(
        line,
        json!({
            "time": "2023-11-14T22:13:20.123Z",
            "request_id": "req-1",
            "api": "pets",
            "route": "/pets/{id}",
            "method": "GET",
            "path": "/pets/7",
            "client": "192.0.2.7:51234",
            "consumer": "alice",
            "app": "shop",
            "plan": "gold",
            "status": 200,
            "total_us": 1500,
            "upstream_us": 1200,
            "steps": [{"step": "key-auth", "us": 40}, {"step": "cache", "us": 25}],
            "request_headers": {"user-agent": "curl/8.0"},
            "response_headers": {"content-type": "application/json"},
        })
    );
}

#[test]
fn minimal_line_without_consumer_or_headers() {
    let line = run("{}", &ctx(false), &req(Some("a=1"), &[]), &resp(404, &[]));
    let obj = line.as_object().unwrap();
    for absent in [
        "query",
        "consumer",
        "app",
        "plan",
        "request_headers",
        "response_headers",
    ] {
        assert!(!obj.contains_key(absent), "{absent} in {line}");
    }
    assert_eq!(line["status"], 404);
}

#[test]
fn credentials_are_always_redacted() {
    let cfg = r#"{"include-query":true,"redact-query":["session"],
        "headers":["authorization","cookie","x-api-key","proxy-authorization","x-secret","user-agent"],
        "response-headers":["set-cookie","x-secret"],"redact-headers":["X-Secret"]}"#;
    let secrets = [
        "Bearer eyJhbGciOi.SECRET1",
        "session=SECRET2",
        "SECRET3",
        "Basic U0VDUkVUNA==",
        "SECRET5",
        "sid=SECRET6",
    ];
    let line = run(
        cfg,
        &ctx(true),
        &req(
            Some("page=2&api_key=SECRET7&API%5FKEY=SECRET8&Token=SECRET9&session=SECRET10&access_token&x=%41"),
            &[
                ("authorization", secrets[0].as_bytes()),
                ("cookie", secrets[1].as_bytes()),
                ("cookie", b"other=SECRET11"),
                ("x-api-key", secrets[2].as_bytes()),
                ("proxy-authorization", secrets[3].as_bytes()),
                ("x-secret", secrets[4].as_bytes()),
            ],
        ),
        &resp(200, &[("set-cookie", secrets[5].as_bytes()), ("x-secret", b"SECRET12")]),
    );
    let text = line.to_string();
    assert!(!text.contains("SECRET"), "{text}");
    assert_eq!(
        line["query"],
        "page=2&api_key=[redacted]&API%5FKEY=[redacted]&Token=[redacted]&session=[redacted]&access_token&x=%41"
    );
    for h in [
        "authorization",
        "cookie",
        "x-api-key",
        "proxy-authorization",
        "x-secret",
    ] {
        assert_eq!(line["request_headers"][h], REDACTED, "{h}");
    }
    // Absent headers are left out, not shown as redacted.
    assert!(line["request_headers"].get("user-agent").is_none());
    assert_eq!(line["response_headers"]["set-cookie"], REDACTED);
    assert_eq!(line["response_headers"]["x-secret"], REDACTED);
}

#[test]
fn query_is_left_out_unless_asked_for() {
    let line = run(
        "{}",
        &ctx(false),
        &req(Some("token=SECRET"), &[]),
        &resp(200, &[]),
    );
    assert!(line.get("query").is_none());
    assert!(!line.to_string().contains("SECRET"));
    let line = run(
        r#"{"include-query":true}"#,
        &ctx(false),
        &req(None, &[]),
        &resp(200, &[]),
    );
    assert!(line.get("query").is_none());
}

#[test]
fn hostile_values_are_escaped_and_bounded() {
    let long = "é".repeat(5000);
    let mut r = req(
        Some(&format!("q={long}")),
        &[
            ("user-agent", b"evil\"}\n{\"status\":999,\"x\":\"\x1b[31m"),
            ("x-bin", &[0xff, 0xfe, b'"', 0]),
            ("x-long", long.as_bytes()),
            ("x-multi", b"a"),
            ("x-multi", b"b"),
        ],
    );
    r.path = format!("/{long}");
    r.method = "G\"ET".into();
    let mut c = ctx(false);
    c.request_id = "id\n\"injected\":1".into();
    let line = run(
        r#"{"include-query":true,"headers":["user-agent","x-bin","x-long","x-multi"]}"#,
        &c,
        &r,
        &resp(200, &[]),
    );
    assert_eq!(line["status"], 200);
    assert_eq!(line["method"], "G\"ET");
    assert_eq!(line["request_id"], "id\n\"injected\":1");
    assert_eq!(
        line["request_headers"]["user-agent"],
        "evil\"}\n{\"status\":999,\"x\":\"\x1b[31m"
    );
    assert_eq!(line["request_headers"]["x-bin"], "\u{fffd}\u{fffd}\"\u{0}");
    assert_eq!(line["request_headers"]["x-multi"], "a, b");
    for field in [
        &line["path"],
        &line["query"],
        &line["request_headers"]["x-long"],
    ] {
        let s = field.as_str().unwrap();
        assert!(s.len() <= MAX_FIELD, "{}", s.len());
        assert!(s.ends_with("..."));
    }
}

#[test]
fn without_the_timing_grant_steps_are_empty() {
    // The host returns no steps to a step without `timing`; the line still
    // has the field.
    harness::reset();
    let mut p = policy("{}");
    let (c, r, s) = (ctx(false), req(None, &[]), resp(502, &[]));
    p.on_response(&Call::native_response(&c, &r, &s), None);
    let line: Value = serde_json::from_str(&harness::sink_lines()[0]).unwrap();
    assert_eq!(line["steps"], json!([]));
    assert_eq!(line["status"], 502);
}

#[test]
fn rfc3339() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    assert_eq!(rfc3339_ms(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(253_402_300_799_000), "9999-12-31T23:59:59.000Z");
}

#[test]
fn response_phase_only_for_every_configuration() {
    for cfg in [
        "{}",
        r#"{"include-query":true,"headers":["user-agent"],"response-headers":["content-type"]}"#,
    ] {
        assert_eq!(policy(cfg).info(), PolicyInfo::response_only(), "{cfg}");
    }
}

#[test]
fn repeated_response_fields_are_joined() {
    let line = run(
        r#"{"response-headers":["vary","x-missing"]}"#,
        &ctx(false),
        &req(None, &[]),
        &resp(200, &[("vary", b"accept"), ("Vary", b"origin")]),
    );
    assert_eq!(line["response_headers"], json!({"vary": "accept, origin"}));
}
