use super::*;
use tollgate_policy_sdk::{parse_config, CallContext, RequestHead, Response, ResponseHead};

fn policy(json: &str) -> Transform {
    parse_config::<Transform>(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn error(json: &str) -> (Option<String>, String) {
    match parse_config::<Transform>(json) {
        Ok(p) => panic!("{json} was accepted: {p:?}"),
        Err(e) => (e.field, e.message),
    }
}

fn assert_error(json: &str, field: Option<&str>, message: &str) {
    assert_eq!(
        error(json),
        (field.map(String::from), message.to_string()),
        "{json}"
    );
}

fn head(headers: &[(&str, &[u8])], query: Option<&str>) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        scheme: "https".into(),
        authority: "api.example.com".into(),
        path: "/pets/1".into(),
        query: query.map(String::from),
        headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
    }
}

fn ctx(captures: &[(&str, &str)]) -> CallContext {
    CallContext {
        captures: captures
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..CallContext::default()
    }
}

fn request(p: &mut Transform, ctx: &CallContext, req: &RequestHead) -> RequestEdits {
    match p.on_request(&Call::native(ctx, req), None) {
        RequestDecision::Continue(edits) => edits,
        RequestDecision::Respond(r) => panic!("unexpected response {r:?}"),
    }
}

fn query_after(config_query: &str, query: Option<&str>) -> Option<String> {
    let mut p = policy(&format!(r#"{{"request":{{"query":{config_query}}}}}"#));
    request(&mut p, &ctx(&[]), &head(&[], query)).query
}

// --- configuration ---------------------------------------------------------

#[test]
fn empty_config_does_nothing() {
    let mut p = policy("{}");
    assert_eq!(
        p.info(),
        PolicyInfo {
            body: Default::default(),
            phases: Phases::empty()
        }
    );
    let edits = request(&mut p, &ctx(&[]), &head(&[("x-a", b"1")], Some("a=1")));
    assert_eq!(edits, RequestEdits::default());
    let (c, req, resp) = (ctx(&[]), head(&[], None), ResponseHead::default());
    let resp = p.on_response(&Call::native_response(&c, &req, &resp), None);
    assert_eq!(resp, ResponseDecision::Continue(ResponseEdits::default()));
}

#[test]
fn empty_sections_are_accepted() {
    let p = policy(
        r#"{"request":{"headers":{},"query":{}},"response":{"headers":{"set":{},"remove":[]}}}"#,
    );
    assert_eq!(p.info().phases, Phases::empty());
    assert!(p.query.is_none());
}

#[test]
fn response_ops_without_rename_go_with_the_request() {
    // Nothing to read from the response: the request phase hands the
    // operation to the gateway, and there is no response phase.
    let mut p = policy(r#"{"response":{"headers":{"remove":["server"]}}}"#);
    assert_eq!(p.info().phases, Phases::REQUEST);
    assert_eq!(p.info().body, Default::default());
    let edits = request(&mut p, &ctx(&[]), &head(&[("server", b"x")], None));
    assert_eq!(
        edits,
        RequestEdits {
            response_headers: vec![HeaderOp::remove("server")],
            ..RequestEdits::default()
        }
    );
}

#[test]
fn serde_errors_name_the_field() {
    assert_error(
        r#"{"request":{"headers":{"set":{"x-foo":3}}}}"#,
        Some("request.headers.set.x-foo"),
        "invalid type: integer `3`, expected a string",
    );
    assert_error(
        r#"{"request":{"headers":{"remove":["a",false]}}}"#,
        Some("request.headers.remove.1"),
        "invalid type: boolean `false`, expected a string",
    );
    assert_error(
        r#"{"request":{"headers":{"set":["x"]}}}"#,
        Some("request.headers.set"),
        "invalid type: sequence, expected a table of strings",
    );
    assert_error(
        r#"{"request":{"path":1}}"#,
        Some("request.path"),
        "invalid type: integer `1`, expected a string",
    );
    assert_error(
        r#""nope""#,
        None,
        "invalid type: string \"nope\", expected struct Config",
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let (field, message) = error(r#"{"request":{"header":{}}}"#);
    assert_eq!(field.as_deref(), Some("request.header"));
    assert!(
        message.starts_with("unknown field `header`, expected one of `headers`, `query`, `path`"),
        "{message}"
    );
    let (field, message) = error(r#"{"response":{"headers":{"sett":{}}}}"#);
    assert_eq!(field.as_deref(), Some("response.headers.sett"));
    assert!(message.starts_with("unknown field `sett`"), "{message}");
    let (field, _) = error(r#"{"response":{"path":"/x"}}"#);
    assert_eq!(field.as_deref(), Some("response.path"));
    let (field, _) = error(r#"{"extra":1}"#);
    assert_eq!(field.as_deref(), Some("extra"));
}

#[test]
fn header_names_and_values_are_validated() {
    assert_error(
        r#"{"request":{"headers":{"set":{"x foo":"1"}}}}"#,
        Some("request.headers.set"),
        r#""x foo" is not a valid header name"#,
    );
    assert_error(
        r#"{"request":{"headers":{"append":{"":"1"}}}}"#,
        Some("request.headers.append"),
        r#""" is not a valid header name"#,
    );
    assert_error(
        r#"{"response":{"headers":{"set":{"x-a":"1\r\nx-b: 2"}}}}"#,
        Some("response.headers.set.x-a"),
        "a header value must not contain CR, LF or NUL",
    );
    assert_error(
        r#"{"request":{"headers":{"append":{"X-A":"a\u0000"}}}}"#,
        Some("request.headers.append.X-A"),
        "a header value must not contain CR, LF or NUL",
    );
    assert_error(
        r#"{"request":{"headers":{"remove":["x-ok","x:bad"]}}}"#,
        Some("request.headers.remove.1"),
        r#""x:bad" is not a valid header name"#,
    );
    assert_error(
        r#"{"request":{"headers":{"rename":{"x(old)":"x-new"}}}}"#,
        Some("request.headers.rename"),
        r#""x(old)" is not a valid header name"#,
    );
    assert_error(
        r#"{"response":{"headers":{"rename":{"x-old":"x new"}}}}"#,
        Some("response.headers.rename.x-old"),
        r#""x new" is not a valid header name"#,
    );
    assert_error(
        r#"{"request":{"headers":{"set":{"X-Dup":"1","x-dup":"2"}}}}"#,
        Some("request.headers.set"),
        r#""x-dup" is given more than once (header names are case-insensitive)"#,
    );
}

#[test]
fn query_keys_must_not_be_empty() {
    assert_error(
        r#"{"request":{"query":{"set":{"":"1"}}}}"#,
        Some("request.query.set"),
        "query keys must not be empty",
    );
    assert_error(
        r#"{"request":{"query":{"remove":["a",""]}}}"#,
        Some("request.query.remove.1"),
        "query keys must not be empty",
    );
}

#[test]
fn path_templates_are_validated() {
    let cases = [
        ("v2/pets", r#"the path must start with "/""#),
        ("", r#"the path must start with "/""#),
        (
            "/pets/{id",
            r#"unclosed "{" at byte 6 (write "{{" for a literal brace)"#,
        ),
        (
            "/pets/id}",
            r#"unmatched "}" at byte 8 (write "}}" for a literal brace)"#,
        ),
        (
            "/pets/{}",
            r#""{}" is not a valid capture: a name is a letter or "_" followed by letters, digits, "_" or "-""#,
        ),
        (
            "/pets/{1d}",
            r#""{1d}" is not a valid capture: a name is a letter or "_" followed by letters, digits, "_" or "-""#,
        ),
        (
            "/pets/{a b}",
            r#""{a b}" is not a valid capture: a name is a letter or "_" followed by letters, digits, "_" or "-""#,
        ),
        (
            "/pets/{a{b}}",
            r#""{a{b}" is not a valid capture: a name is a letter or "_" followed by letters, digits, "_" or "-""#,
        ),
        (
            "/pets?x=1",
            "the path must not contain '?'; the query is edited with request.query",
        ),
        (
            "/pets#top",
            "the path must not contain '#'; the query is edited with request.query",
        ),
        ("/pets\n", "the path must not contain control characters"),
    ];
    for (template, message) in cases {
        let json = serde_json::json!({ "request": { "path": template } }).to_string();
        assert_error(&json, Some("request.path"), message);
    }
}

// --- headers ---------------------------------------------------------------

#[test]
fn header_ops_run_rename_remove_set_append() {
    let mut p = policy(
        r#"{"request":{"headers":{
            "append":{"X-Via":"tollgate"},
            "set":{"x-api-version":"2"},
            "remove":["X-Internal"],
            "rename":{"x-old":"X-New"}
        }}}"#,
    );
    let req = head(
        &[
            ("x-old", b"o1"),
            ("x-keep", b"k"),
            ("x-old", b"o2"),
            ("x-internal", b"secret"),
            ("x-api-version", b"1"),
        ],
        None,
    );
    let edits = request(&mut p, &ctx(&[]), &req);
    assert_eq!(
        edits.headers,
        vec![
            HeaderOp::remove("x-old"),
            HeaderOp::append("x-new", "o1"),
            HeaderOp::append("x-new", "o2"),
            HeaderOp::remove("x-internal"),
            HeaderOp::set("x-api-version", "2"),
            HeaderOp::append("x-via", "tollgate"),
        ]
    );
    assert_eq!(edits.path, None);
    assert_eq!(edits.query, None);
    assert_eq!(edits.body, None);
    assert_eq!(edits.consumer, None);
}

#[test]
fn rename_of_an_absent_header_does_nothing() {
    let mut p = policy(r#"{"request":{"headers":{"rename":{"x-old":"x-new"}}}}"#);
    let edits = request(&mut p, &ctx(&[]), &head(&[("x-new", b"n")], None));
    assert_eq!(edits.headers, vec![]);
}

#[test]
fn renames_are_simultaneous() {
    let mut p = policy(r#"{"request":{"headers":{"rename":{"x-a":"x-b","x-b":"x-a"}}}}"#);
    let edits = request(
        &mut p,
        &ctx(&[]),
        &head(&[("x-a", b"1"), ("X-B", b"2")], None),
    );
    assert_eq!(
        edits.headers,
        vec![
            HeaderOp::remove("x-a"),
            HeaderOp::remove("x-b"),
            HeaderOp::append("x-b", "1"),
            HeaderOp::append("x-a", "2"),
        ]
    );
}

#[test]
fn response_header_ops() {
    let mut p = policy(
        r#"{"response":{"headers":{"set":{"Cache-Control":"no-store"},"remove":["server"],
            "append":{"x-a":"1"},"rename":{"x-upstream":"x-origin"}}}}"#,
    );
    // The request phase leaves the request alone.
    assert_eq!(
        request(&mut p, &ctx(&[]), &head(&[("server", b"x")], None)),
        RequestEdits::default()
    );
    let resp = ResponseHead {
        status: 201,
        headers: vec![Header::new("x-upstream", "u"), Header::new("server", "s")],
    };
    let (c, req) = (ctx(&[]), head(&[], None));
    let decision = p.on_response(&Call::native_response(&c, &req, &resp), None);
    assert_eq!(
        decision,
        ResponseDecision::Continue(ResponseEdits {
            status: None,
            headers: vec![
                HeaderOp::remove("x-upstream"),
                HeaderOp::append("x-origin", "u"),
                HeaderOp::remove("server"),
                HeaderOp::set("cache-control", "no-store"),
                HeaderOp::append("x-a", "1"),
            ],
            body: None,
        })
    );
}

#[test]
fn hostile_headers_pass_through_untouched() {
    let mut p = policy(r#"{"request":{"headers":{"rename":{"x-big":"x-moved"}}}}"#);
    let big = vec![b'a'; 8 << 20];
    let not_utf8: &[u8] = b"\xff\xfe\x80 raw";
    let mut req = head(&[("x-big", &big), ("x-big", not_utf8)], None);
    req.headers
        .extend((0..10_000).map(|i| Header::new(format!("x-h{i}"), vec![0xffu8; 3])));
    let edits = request(&mut p, &ctx(&[]), &req);
    assert_eq!(
        edits.headers,
        vec![
            HeaderOp::remove("x-big"),
            HeaderOp::append("x-moved", big.clone()),
            HeaderOp::append("x-moved", not_utf8),
        ]
    );
}

// --- query -----------------------------------------------------------------

#[test]
fn query_remove_drops_every_occurrence_and_keeps_order() {
    assert_eq!(
        query_after(
            r#"{"remove":["debug"]}"#,
            Some("a=1&debug=1&b=2&debug&c=3&debug=x")
        ),
        Some("a=1&b=2&c=3".into())
    );
}

#[test]
fn query_set_replaces_every_occurrence_with_one() {
    assert_eq!(
        query_after(r#"{"set":{"v":"2"}}"#, Some("v=1&a=1&v=3&b")),
        Some("v=2&a=1&b".into())
    );
    assert_eq!(
        query_after(r#"{"set":{"v":"2","w":""}}"#, Some("a=1")),
        Some("a=1&v=2&w=".into())
    );
    assert_eq!(
        query_after(r#"{"set":{"v":"2"}}"#, None),
        Some("v=2".into())
    );
}

#[test]
fn query_removed_entirely() {
    assert_eq!(
        query_after(r#"{"remove":["a"]}"#, Some("a=1&a=2")),
        Some(String::new())
    );
    assert_eq!(query_after(r#"{"remove":["a"]}"#, None), None);
    assert_eq!(
        query_after(r#"{"remove":["a"]}"#, Some("")),
        Some(String::new())
    );
}

#[test]
fn query_untouched_parameters_keep_their_encoding() {
    assert_eq!(
        query_after(
            r#"{"remove":["x"]}"#,
            Some("q=a+b&r=a%20b&e=&flag&&s=%zz&t=%2B&x=1")
        ),
        Some("q=a+b&r=a%20b&e=&flag&s=%zz&t=%2B".into())
    );
}

#[test]
fn query_keys_match_decoded() {
    // `+` and `%20` both decode to a space; `%2B` is a literal plus.
    assert_eq!(
        query_after(
            r#"{"remove":["my key"]}"#,
            Some("my+key=1&my%20key=2&my%2Bkey=3")
        ),
        Some("my%2Bkey=3".into())
    );
    assert_eq!(
        query_after(r#"{"remove":["a+b"]}"#, Some("a+b=1&a%2Bb=2")),
        Some("a+b=1".into())
    );
}

#[test]
fn query_set_encodes() {
    assert_eq!(
        query_after(
            r#"{"set":{"q":"a b+c&d=e#f","k y":"ü/:@"}}"#,
            Some("k+y=old")
        ),
        Some("k%20y=%C3%BC/:@&q=a%20b%2Bc%26d%3De%23f".into())
    );
}

#[test]
fn query_remove_then_set_of_the_same_key() {
    assert_eq!(
        query_after(r#"{"set":{"a":"new"},"remove":["a"]}"#, Some("a=1&b=2")),
        Some("b=2&a=new".into())
    );
}

#[test]
fn huge_query() {
    let query: String = (0..50_000).map(|i| format!("k{i}=v&")).collect();
    let out = query_after(r#"{"remove":["k1"]}"#, Some(&query)).unwrap();
    assert_eq!(out.len(), query.len() - "k1=v&".len() - 1);
}

// --- path ------------------------------------------------------------------

fn path_after(template: &str, captures: &[(&str, &str)]) -> RequestDecision {
    let json = serde_json::json!({ "request": { "path": template } }).to_string();
    let (c, req) = (ctx(captures), head(&[], Some("a=1")));
    policy(&json).on_request(&Call::native(&c, &req), None)
}

fn rewritten(template: &str, captures: &[(&str, &str)]) -> String {
    match path_after(template, captures) {
        RequestDecision::Continue(edits) => {
            assert_eq!(edits.query, None);
            edits.path.unwrap()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn path_rewrite_fills_captures() {
    assert_eq!(rewritten("/v2/pets/{id}", &[("id", "42")]), "/v2/pets/42");
    assert_eq!(
        rewritten(
            "/owners/{owner}/pets/{id}.json",
            &[("id", "7"), ("owner", "ann")]
        ),
        "/owners/ann/pets/7.json"
    );
    assert_eq!(rewritten("/static", &[]), "/static");
    assert_eq!(rewritten("/", &[]), "/");
    assert_eq!(rewritten("/{_x-y}", &[("_x-y", "v")]), "/v");
}

#[test]
fn path_rewrite_encodes_captures() {
    assert_eq!(
        rewritten("/files/{name}", &[("name", "a/b?c#d e%")]),
        "/files/a%2Fb%3Fc%23d%20e%25"
    );
    assert_eq!(
        rewritten("/files/{name}", &[("name", "caf%C3%A9 ü")]),
        "/files/caf%C3%A9%20%C3%BC"
    );
}

#[test]
fn path_literal_braces_and_text() {
    assert_eq!(rewritten("/a/{{x}}/b", &[]), "/a/%7Bx%7D/b");
    assert_eq!(rewritten("/a b/%2F/ü", &[]), "/a%20b/%2F/%C3%BC");
    assert_eq!(rewritten("/{{{id}}}", &[("id", "1")]), "/%7B1%7D");
}

#[test]
fn path_rewrite_with_missing_capture_responds_500() {
    let RequestDecision::Respond(resp) = path_after("/v2/pets/{id}", &[("pet", "1")]) else {
        panic!("expected a response");
    };
    assert_eq!(
        resp,
        Response::json_error(
            500,
            "transform_missing_capture",
            r#"the path rewrite needs the route capture "id", which this route does not provide"#
        )
    );
}

// --- phases ----------------------------------------------------------------

#[test]
fn phases_follow_the_configuration() {
    let none = Phases::empty();
    let req = Phases::REQUEST;
    let resp = Phases::RESPONSE;
    for (config, phases) in [
        ("{}", none),
        (r#"{"response":{"headers":{"set":{}}}}"#, none),
        (r#"{"request":{"headers":{"set":{"x-a":"1"}}}}"#, req),
        (r#"{"request":{"query":{"remove":["a"]}}}"#, req),
        (r#"{"request":{"path":"/x"}}"#, req),
        (r#"{"request":{"body":{}}}"#, req),
        (r#"{"response":{"headers":{"set":{"x-a":"1"}}}}"#, req),
        (r#"{"response":{"headers":{"append":{"x-a":"1"}}}}"#, req),
        (r#"{"response":{"headers":{"remove":["x-a"]}}}"#, req),
        (r#"{"response":{"headers":{"rename":{"x-a":"x-b"}}}}"#, resp),
        (r#"{"response":{"body":{}}}"#, resp),
        (
            r#"{"response":{"headers":{"set":{"x-a":"1"}},"body":{}}}"#,
            resp,
        ),
        (
            r#"{"request":{"path":"/x"},"response":{"headers":{"remove":["x-a"]}}}"#,
            req,
        ),
        (
            r#"{"request":{"path":"/x"},"response":{"headers":{"rename":{"x-a":"x-b"}}}}"#,
            req | resp,
        ),
    ] {
        assert_eq!(policy(config).info().phases, phases, "{config}");
    }
}

#[test]
fn fixed_response_header_ops_come_from_the_request_phase_in_order() {
    // The same operations, values and names (lower-cased) as the response
    // phase made before, in the same order: remove, set, append.
    let mut p = policy(
        r#"{"request":{"headers":{"set":{"x-r":"1"}}},
            "response":{"headers":{"append":{"X-A":"1","x-b":"2"},"set":{"Cache-Control":"no-store"},
            "remove":["Server","x-powered-by"]}}}"#,
    );
    let edits = request(&mut p, &ctx(&[]), &head(&[("server", b"x")], None));
    assert_eq!(edits.headers, vec![HeaderOp::set("x-r", "1")]);
    assert_eq!(
        edits.response_headers,
        vec![
            HeaderOp::remove("server"),
            HeaderOp::remove("x-powered-by"),
            HeaderOp::set("cache-control", "no-store"),
            HeaderOp::append("x-a", "1"),
            HeaderOp::append("x-b", "2"),
        ]
    );
    // Every request gets them again (worker isolation: nothing is kept).
    assert_eq!(request(&mut p, &ctx(&[]), &head(&[], None)), edits);
}

#[test]
fn an_answering_request_phase_attaches_no_response_headers() {
    // As before, when the step answers its own response phase did not run.
    let json = r#"{"request":{"path":"/v2/{id}"},"response":{"headers":{"set":{"x-a":"1"}}}}"#;
    let (c, req) = (ctx(&[]), head(&[], None));
    let decision = policy(json).on_request(&Call::native(&c, &req), None);
    assert!(matches!(decision, RequestDecision::Respond(r) if r.status == 500));
}

#[test]
fn with_a_response_phase_every_response_op_stays_there() {
    let mut p = policy(r#"{"response":{"headers":{"set":{"x-a":"1"},"rename":{"x-u":"x-v"}}}}"#);
    assert_eq!(
        request(&mut p, &ctx(&[]), &head(&[], None)),
        RequestEdits::default()
    );
    let (c, req) = (ctx(&[]), head(&[], None));
    let resp = ResponseHead {
        status: 200,
        headers: vec![
            Header::new("x-u", "1"),
            Header::new("x-other", "o"),
            Header::new("X-U", "2"),
        ],
    };
    assert_eq!(
        p.on_response(&Call::native_response(&c, &req, &resp), None),
        ResponseDecision::Continue(ResponseEdits {
            headers: vec![
                HeaderOp::remove("x-u"),
                HeaderOp::append("x-v", "1"),
                HeaderOp::append("x-v", "2"),
                HeaderOp::set("x-a", "1"),
            ],
            ..ResponseEdits::default()
        })
    );
}
