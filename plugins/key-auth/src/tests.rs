use super::*;
use tollgate_policy_sdk::services::harness;
use tollgate_policy_sdk::{
    header_str, parse_config, CallContext, Consumer, Header, HeaderOp, Phases, RequestHead,
};

const KEY: &str = "s3cr3t-key-0001";

fn policy(json: &str) -> KeyAuth {
    parse_config::<KeyAuth>(json).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn error(json: &str) -> (Option<String>, String) {
    match parse_config::<KeyAuth>(json) {
        Ok(p) => panic!("{json} was accepted: {p:?}"),
        Err(e) => (e.field, e.message),
    }
}

fn setup() {
    harness::reset();
    harness::add_key(
        "pets",
        KEY,
        Consumer {
            id: "alice".into(),
            app: Some("shop".into()),
            key_id: Some("k1".into()),
            plan: Some("gold".into()),
            product: None,
        },
    );
}

fn ctx() -> CallContext {
    CallContext {
        api: "pets".into(),
        client_addr: "192.0.2.7:5000".into(),
        ..CallContext::default()
    }
}

/// Request fields as a test writes them.
type Headers<'a> = Vec<(&'a str, &'a [u8])>;

fn head(headers: &[(&str, &[u8])], query: Option<&str>) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        scheme: "https".into(),
        authority: "api.example.com".into(),
        path: "/pets".into(),
        query: query.map(String::from),
        headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
    }
}

fn run(p: &mut KeyAuth, req: &RequestHead) -> RequestDecision {
    p.on_request(&Call::native(&ctx(), req), None)
}

fn accepted(d: RequestDecision) -> RequestEdits {
    match d {
        RequestDecision::Continue(e) => e,
        RequestDecision::Respond(r) => panic!("refused: {r:?}"),
    }
}

fn refused(d: RequestDecision) -> Response {
    match d {
        RequestDecision::Respond(r) => r,
        RequestDecision::Continue(e) => panic!("accepted: {e:?}"),
    }
}

#[test]
fn defaults() {
    let p = policy("{}");
    assert_eq!(p.header, "x-api-key");
    assert_eq!(p.query, None);
    assert!(p.strip);
    assert!(p.forward);
    assert_eq!(p.challenge, "ApiKey realm=\"tollgate\"");
    assert_eq!(p.info(), PolicyInfo::request_only());
}

#[test]
fn config_errors_name_the_field() {
    assert_eq!(error(r#"{"headr":"x"}"#).0.as_deref(), Some("headr"));
    assert_eq!(error(r#"{"strip":"yes"}"#).0.as_deref(), Some("strip"));
    assert_eq!(
        error(r#"{"header":"x key"}"#),
        (
            Some("header".into()),
            "\"x key\" is not a valid header name".into()
        )
    );
    assert_eq!(error(r#"{"header":""}"#).0.as_deref(), Some("header"));
    assert_eq!(error(r#"{"header":"Host"}"#).0.as_deref(), Some("header"));
    assert_eq!(
        error(r#"{"header":"content-length"}"#).0.as_deref(),
        Some("header")
    );
    assert_eq!(
        error(r#"{"header":"X-Consumer-Key"}"#).0.as_deref(),
        Some("header")
    );
    assert_eq!(error(r#"{"query":""}"#).0.as_deref(), Some("query"));
    assert_eq!(error(r#"{"realm":"a\"b"}"#).0.as_deref(), Some("realm"));
    assert_eq!(error(r#"{"realm":"a\nb"}"#).0.as_deref(), Some("realm"));
    assert_eq!(error(r#"{"realm":""}"#).0.as_deref(), Some("realm"));
    assert_eq!(
        error(r#"{"forward-consumer-header":1}"#).0.as_deref(),
        Some("forward-consumer-header")
    );
    // Header names are case-insensitive.
    assert_eq!(policy(r#"{"header":"X-Key"}"#).header, "x-key");
}

#[test]
fn a_valid_key_sets_the_consumer_and_strips_the_credential() {
    setup();
    let mut p = policy("{}");
    let e = accepted(run(&mut p, &head(&[("x-api-key", KEY.as_bytes())], None)));
    let c = e.consumer.clone().unwrap();
    assert_eq!(c.id, "alice");
    assert_eq!(c.key_id.as_deref(), Some("k1"));
    assert_eq!(c.plan.as_deref(), Some("gold"));
    assert_eq!(
        e.headers,
        vec![
            HeaderOp::remove("x-consumer-id"),
            HeaderOp::remove("x-api-key"),
            HeaderOp::set("x-consumer-id", "alice"),
        ]
    );
    assert_eq!(e.query, None);
}

#[test]
fn keep_credential_and_no_forwarding_when_configured() {
    setup();
    let mut p = policy(r#"{"strip":false,"forward-consumer-header":false}"#);
    let e = accepted(run(&mut p, &head(&[("x-api-key", KEY.as_bytes())], None)));
    // The forged-header removal always happens.
    assert_eq!(e.headers, vec![HeaderOp::remove("x-consumer-id")]);
    assert_eq!(e.consumer.unwrap().id, "alice");
}

#[test]
fn missing_unknown_and_wrong_keys_look_the_same() {
    setup();
    let mut p = policy(r#"{"realm":"pets api"}"#);
    let missing = refused(run(&mut p, &head(&[], None)));
    let mut last_byte = KEY.as_bytes().to_vec();
    *last_byte.last_mut().unwrap() ^= 1;
    let cases: Vec<Vec<(&str, &[u8])>> = vec![
        vec![("x-api-key", b"nope")],
        vec![("x-api-key", &last_byte)],
        vec![("x-api-key", &KEY.as_bytes()[..KEY.len() - 1])],
        vec![("x-api-key", format!("{KEY}x").as_bytes().to_vec().leak())],
        vec![("x-api-key", KEY.to_uppercase().into_bytes().leak())],
        vec![("x-api-key", format!(" {KEY}").into_bytes().leak())],
        vec![("x-api-key", b"")],
        vec![("x-other", KEY.as_bytes())],
    ];
    assert_eq!(missing.status, 401);
    assert_eq!(
        header_str(&missing.headers, "www-authenticate"),
        Some("ApiKey realm=\"pets api\"")
    );
    assert_eq!(
        header_str(&missing.headers, "content-type"),
        Some("application/json")
    );
    assert_eq!(
        String::from_utf8(missing.body.clone()).unwrap(),
        r#"{"error":{"code":"unauthorized","message":"a valid API key is required"}}"#
    );
    for headers in cases {
        let r = refused(run(&mut p, &head(&headers, None)));
        assert_eq!(r, missing, "{headers:?}");
    }
}

#[test]
fn a_key_for_another_api_is_refused() {
    setup();
    let mut p = policy("{}");
    let req = head(&[("x-api-key", KEY.as_bytes())], None);
    let other = CallContext {
        api: "orders".into(),
        ..ctx()
    };
    assert_eq!(
        refused(p.on_request(&Call::native(&other, &req), None)).status,
        401
    );
}

#[test]
fn hostile_credentials_are_refused() {
    setup();
    let mut p = policy(r#"{"query":"api_key"}"#);
    let huge = "k".repeat(MAX_KEY_BYTES + 1);
    harness::add_key("pets", &huge, Consumer::default());
    let cases: Vec<(Headers, Option<&str>)> = vec![
        // The same valid key twice, or twice in different places: ambiguous.
        (
            vec![("x-api-key", KEY.as_bytes()), ("x-api-key", KEY.as_bytes())],
            None,
        ),
        (
            vec![("x-api-key", KEY.as_bytes()), ("x-api-key", b"other")],
            None,
        ),
        (vec![("x-api-key", KEY.as_bytes())], Some("api_key=other")),
        (
            vec![],
            Some("api_key=s3cr3t-key-0001&api_key=s3cr3t-key-0001"),
        ),
        // Not UTF-8.
        (vec![("x-api-key", b"s3cr3t-key-000\xff")], None),
        // Too long, even if the directory knew it.
        (vec![("x-api-key", huge.as_bytes())], None),
        // Empty query value.
        (vec![], Some("api_key=")),
        (vec![], Some("api_key")),
    ];
    for (headers, query) in cases {
        let r = refused(run(&mut p, &head(&headers, query)));
        assert_eq!(r.status, 401, "{headers:?} {query:?}");
    }
}

#[test]
fn a_key_in_the_query_is_accepted_and_removed() {
    setup();
    let mut p = policy(r#"{"query":"api_key"}"#);
    let e = accepted(run(
        &mut p,
        &head(&[], Some("a=1&api_key=s3cr3t-key-0001&b=%20x")),
    ));
    assert_eq!(e.consumer.unwrap().id, "alice");
    assert_eq!(e.query.as_deref(), Some("a=1&b=%20x"));
    // Encoded names and values are decoded before comparing.
    let e = accepted(run(&mut p, &head(&[], Some("api%5Fkey=s3cr3t%2Dkey-0001"))));
    assert_eq!(e.query.as_deref(), Some(""));
    // Not stripped when strip = false.
    let mut keep = policy(r#"{"query":"api_key","strip":false}"#);
    let e = accepted(run(&mut keep, &head(&[], Some("api_key=s3cr3t-key-0001"))));
    assert_eq!(e.query, None);
}

#[test]
fn forged_consumer_headers_are_removed() {
    setup();
    for forward in [true, false] {
        let mut p = policy(&format!(r#"{{"forward-consumer-header":{forward}}}"#));
        let req = head(
            &[
                ("x-consumer-id", b"admin"),
                ("x-consumer-plan", b"platinum"),
                ("X-Consumer-App", b"x"),
                ("x-consumer-plan", b"again"),
                ("x-api-key", KEY.as_bytes()),
            ],
            None,
        );
        let e = accepted(run(&mut p, &req));
        let removed: Vec<&HeaderOp> = e
            .headers
            .iter()
            .filter(|op| matches!(op, HeaderOp::Remove(_)))
            .collect();
        assert_eq!(
            removed,
            vec![
                &HeaderOp::remove("x-consumer-id"),
                &HeaderOp::remove("x-consumer-plan"),
                &HeaderOp::remove("x-consumer-app"),
                &HeaderOp::remove("x-api-key"),
            ]
        );
        let sets: Vec<&HeaderOp> = e
            .headers
            .iter()
            .filter(|op| matches!(op, HeaderOp::Set(_)))
            .collect();
        if forward {
            assert_eq!(sets, vec![&HeaderOp::set("x-consumer-id", "alice")]);
        } else {
            assert!(sets.is_empty());
        }
    }
}

#[test]
fn without_param_keeps_other_pieces() {
    assert_eq!(without_param("a=1&b=2", "c"), None);
    assert_eq!(
        without_param("a=1&c&b=2&c=3", "c").as_deref(),
        Some("a=1&b=2")
    );
    assert_eq!(without_param("c=1", "c").as_deref(), Some(""));
    assert_eq!(without_param("&&c=1&&a=%41", "c").as_deref(), Some("a=%41"));
    assert_eq!(
        without_param("my+key=1&x=2", "my key").as_deref(),
        Some("x=2")
    );
}

#[test]
fn every_configuration_is_request_only() {
    for json in [
        "{}",
        r#"{"query":"api_key"}"#,
        r#"{"strip":false,"forward-consumer-header":false}"#,
        r#"{"header":"x-key","query":"k","realm":"r"}"#,
    ] {
        let info = policy(json).info();
        assert_eq!(info.phases, Phases::REQUEST, "{json}");
        assert_eq!(info, PolicyInfo::request_only(), "{json}");
    }
}

#[test]
fn no_response_headers_are_attached() {
    setup();
    let mut p = policy(r#"{"query":"api_key"}"#);
    let e = accepted(run(&mut p, &head(&[("x-api-key", KEY.as_bytes())], None)));
    assert!(e.response_headers.is_empty());
    let e = accepted(run(&mut p, &head(&[], Some("api_key=s3cr3t-key-0001"))));
    assert!(e.response_headers.is_empty());
}

fn anonymous() -> Consumer {
    Consumer {
        id: "anonymous".into(),
        product: Some("open-pets".into()),
        ..Consumer::default()
    }
}

#[test]
fn no_key_on_an_api_open_to_anonymous_callers_goes_on_as_anonymous() {
    setup();
    harness::open_to_anonymous("pets", anonymous());
    let mut p = policy("{}");
    let forged: &[u8] = b"admin";
    let e = accepted(run(
        &mut p,
        &head(
            &[("x-consumer-id", forged), ("x-consumer-plan", forged)],
            None,
        ),
    ));
    assert_eq!(e.consumer, Some(anonymous()));
    assert!(e
        .headers
        .contains(&HeaderOp::set("x-consumer-id", "anonymous")));
    assert!(e.headers.contains(&HeaderOp::remove("x-consumer-plan")));
    // A key is still looked up, and a wrong or empty one is still refused:
    // only a call with no credential at all is anonymous.
    let e = accepted(run(&mut p, &head(&[("x-api-key", KEY.as_bytes())], None)));
    assert_eq!(e.consumer.unwrap().id, "alice");
    for bad in [&b"nope"[..], b""] {
        let r = refused(run(&mut p, &head(&[("x-api-key", bad)], None)));
        assert_eq!(r.status, 401);
    }
    // Another API is not open.
    let other = CallContext {
        api: "orders".into(),
        ..ctx()
    };
    let d = p.on_request(&Call::native(&other, &head(&[], None)), None);
    assert_eq!(refused(d).status, 401);
}
