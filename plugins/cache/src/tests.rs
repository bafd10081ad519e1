use super::*;
use tollgate_policy_sdk::services::harness;
use tollgate_policy_sdk::{
    header_str, parse_config, CallContext, Consumer, HeaderOp, RequestHead, ResponseHead,
};

const T0: u64 = 1_700_000_000_000;

fn policy(json: &str) -> Cache {
    parse_config::<Cache>(json).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn error(json: &str) -> (Option<String>, String) {
    match parse_config::<Cache>(json) {
        Ok(p) => panic!("{json} was accepted: {p:?}"),
        Err(e) => (e.field, e.message),
    }
}

fn start() {
    harness::reset();
    harness::set_now_ms(T0);
}

fn ctx(consumer: Option<&str>) -> CallContext {
    CallContext {
        api: "pets".into(),
        step: "cache".into(),
        request_id: "r1".into(),
        client_addr: "192.0.2.1:4000".into(),
        consumer: consumer.map(|id| Consumer {
            id: id.into(),
            ..Consumer::default()
        }),
        ..CallContext::default()
    }
}

fn get(path_and_query: &str, headers: &[(&str, &str)]) -> RequestHead {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (path_and_query, None),
    };
    RequestHead {
        method: "GET".into(),
        scheme: "http".into(),
        authority: "api.example.com".into(),
        path: path.into(),
        query,
        headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
    }
}

/// What the upstream answers.
struct Up {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
}

fn up(status: u16, headers: &[(&'static str, &'static str)], body: &'static str) -> Up {
    Up {
        status,
        headers: headers.to_vec(),
        body,
    }
}

fn ok(body: &'static str) -> Up {
    up(
        200,
        &[
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("x-upstream", "yes"),
        ],
        body,
    )
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Out {
    /// Answered from the cache.
    Hit(Response),
    /// Went upstream: the request edits and the response edits.
    Upstream(RequestEdits, ResponseEdits),
}

impl Out {
    fn hit(self) -> Response {
        match self {
            Out::Hit(r) => r,
            other => panic!("expected a hit: {other:?}"),
        }
    }
    fn x_cache(&self) -> String {
        match self {
            Out::Hit(r) => header_str(&r.headers, X_CACHE).unwrap().to_string(),
            Out::Upstream(_, e) => {
                let sets: Vec<_> = e
                    .headers
                    .iter()
                    .filter_map(|op| match op {
                        HeaderOp::Set(h) if h.name == X_CACHE => {
                            Some(String::from_utf8(h.value.clone()).unwrap())
                        }
                        _ => None,
                    })
                    .collect();
                assert_eq!(sets.len(), 1, "{e:?}");
                sets[0].clone()
            }
        }
    }
}

/// One call through a fresh instance, as in the gateway.
fn call(json: &str, c: &CallContext, req: &RequestHead, upstream: &Up) -> Out {
    let mut p = policy(json);
    match p.on_request(&Call::native(c, req), None) {
        RequestDecision::Respond(r) => {
            // The gateway runs the responding step's response phase too.
            let head = ResponseHead {
                status: r.status,
                headers: r.headers.clone(),
            };
            assert_eq!(
                p.on_response(&Call::native_response(c, req, &head), Some(&r.body)),
                ResponseDecision::default()
            );
            Out::Hit(r)
        }
        RequestDecision::Continue(edits) => {
            assert!(
                edits.headers.contains(&HeaderOp::remove(X_CACHE)),
                "{edits:?}"
            );
            let head = ResponseHead {
                status: upstream.status,
                headers: upstream
                    .headers
                    .iter()
                    .map(|(n, v)| Header::new(*n, *v))
                    .collect(),
            };
            match p.on_response(
                &Call::native_response(c, req, &head),
                Some(upstream.body.as_bytes()),
            ) {
                ResponseDecision::Continue(e) => Out::Upstream(edits, e),
                other => panic!("{other:?}"),
            }
        }
    }
}

const DEFAULT: &str = "{}";

#[test]
fn config_defaults_and_errors() {
    let p = policy(DEFAULT);
    assert_eq!(p.ttl_ms, 60_000);
    assert_eq!(p.key_query, KeyQuery::All);
    assert_eq!(p.statuses, vec![200, 203, 204, 300, 301, 404, 410]);
    assert!(!p.cache_authorized && !p.honour_client_no_cache);
    assert_eq!(
        p.info(),
        PolicyInfo {
            body: BodyAccess {
                request: None,
                response: Some(1 << 20)
            },
            phases: Phases::REQUEST | Phases::RESPONSE
        }
    );
    let p = policy(
        r#"{"ttl":5,"key-query":["sort","page","page"],"vary-headers":["Accept-Language"],
            "statuses":[200],"max-bytes":10,"cache-authorized":true,"honour-client-no-cache":true}"#,
    );
    assert_eq!(
        p.key_query,
        KeyQuery::Only(vec!["page".into(), "sort".into()])
    );
    assert_eq!(p.vary_headers, vec!["accept-language".to_string()]);
    assert_eq!(p.info().body.response, Some(10));
    assert_eq!(policy(r#"{"key-query":"*"}"#).key_query, KeyQuery::All);
    assert_eq!(
        policy(r#"{"key-query":[]}"#).key_query,
        KeyQuery::Only(vec![])
    );

    assert_eq!(error(r#"{"ttl":0}"#).0.as_deref(), Some("ttl"));
    assert_eq!(error(r#"{"ttl":86401}"#).0.as_deref(), Some("ttl"));
    assert_eq!(error(r#"{"ttl":-1}"#).0.as_deref(), Some("ttl"));
    assert_eq!(error(r#"{"ttl":"1s"}"#).0.as_deref(), Some("ttl"));
    let (field, message) = error(r#"{"key-query":"page"}"#);
    assert_eq!(field.as_deref(), Some("key-query"));
    assert!(message.contains("\"*\" or a list"), "{message}");
    assert_eq!(
        error(r#"{"key-query":["a",""]}"#).0.as_deref(),
        Some("key-query.1")
    );
    assert_eq!(
        error(r#"{"key-query":["a",7]}"#).0.as_deref(),
        Some("key-query.1")
    );
    assert_eq!(
        error(r#"{"vary-headers":["ok","x y"]}"#),
        (
            Some("vary-headers.1".into()),
            "\"x y\" is not a valid header name".into()
        )
    );
    assert_eq!(error(r#"{"statuses":[]}"#).0.as_deref(), Some("statuses"));
    assert_eq!(
        error(r#"{"statuses":[200,206]}"#).0.as_deref(),
        Some("statuses.1")
    );
    assert_eq!(
        error(r#"{"statuses":[304]}"#).0.as_deref(),
        Some("statuses.0")
    );
    assert_eq!(
        error(r#"{"statuses":[100]}"#).0.as_deref(),
        Some("statuses.0")
    );
    assert_eq!(error(r#"{"max-bytes":0}"#).0.as_deref(), Some("max-bytes"));
    assert_eq!(
        error(r#"{"max-bytes":67108865}"#).0.as_deref(),
        Some("max-bytes")
    );
    // Typos and snake_case are unknown fields, named.
    let (field, message) = error(r#"{"ttl":5,"cache_authorized":true}"#);
    assert_eq!(field.as_deref(), Some("cache_authorized"));
    assert!(message.contains("unknown field"), "{message}");
    assert_eq!(error(r#"{"tll":5}"#).0.as_deref(), Some("tll"));
}

#[test]
fn miss_then_hit_with_age_and_clean_headers() {
    start();
    let req = get("/pets", &[]);
    let first = call(
        DEFAULT,
        &ctx(None),
        &req,
        &up(
            200,
            &[
                ("content-type", "text/plain"),
                ("content-length", "5"),
                ("connection", "close"),
                ("keep-alive", "timeout=5"),
                ("transfer-encoding", "chunked"),
                ("x-request-id", "old"),
                ("x-cache", "HIT"),
                ("age", "3"),
                ("x-tollgate-cache-meta", "0;99999"),
            ],
            "hello",
        ),
    );
    // The upstream's own x-cache is replaced.
    assert_eq!(first.x_cache(), "MISS");

    harness::set_now_ms(T0 + 5_500);
    let hit = call(DEFAULT, &ctx(None), &req, &ok("other")).hit();
    assert_eq!(hit.status, 200);
    assert_eq!(hit.body, b"hello");
    assert_eq!(header_str(&hit.headers, "x-cache"), Some("HIT"));
    // The upstream said it was 3 s old, then 5.5 s in the cache.
    assert_eq!(header_str(&hit.headers, "age"), Some("8"));
    let names: Vec<&str> = hit.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, vec!["content-type", "age", "x-cache"]);
    assert_eq!(hit.headers.iter().filter(|h| h.name == "age").count(), 1);
}

#[test]
fn ttl_is_the_smaller_of_config_and_upstream_max_age() {
    start();
    let cfg = r#"{"ttl":10}"#;
    let req = get("/a", &[]);
    call(
        cfg,
        &ctx(None),
        &req,
        &up(200, &[("cache-control", "public, max-age=2")], "a"),
    );
    harness::set_now_ms(T0 + 1_999);
    call(cfg, &ctx(None), &req, &ok("x")).hit();
    harness::set_now_ms(T0 + 2_000);
    assert_eq!(call(cfg, &ctx(None), &req, &ok("b")).x_cache(), "MISS");

    // s-maxage wins over max-age for a shared cache; Age is subtracted.
    start();
    call(
        cfg,
        &ctx(None),
        &req,
        &up(
            200,
            &[("cache-control", "max-age=1, s-maxage=\"5\""), ("age", "2")],
            "a",
        ),
    );
    harness::set_now_ms(T0 + 2_900);
    call(cfg, &ctx(None), &req, &ok("x")).hit();
    harness::set_now_ms(T0 + 3_000);
    assert_eq!(call(cfg, &ctx(None), &req, &ok("b")).x_cache(), "MISS");

    // A longer max-age does not extend the configured ttl.
    start();
    call(
        cfg,
        &ctx(None),
        &req,
        &up(200, &[("cache-control", "max-age=3600")], "a"),
    );
    harness::set_now_ms(T0 + 10_000);
    assert_eq!(call(cfg, &ctx(None), &req, &ok("b")).x_cache(), "MISS");

    // max-age=0, an invalid max-age, or an age beyond it: never stored.
    for cc in ["max-age=0", "max-age=abc", "max-age=-5"] {
        start();
        call(
            cfg,
            &ctx(None),
            &req,
            &up(200, &[("cache-control", cc)], "a"),
        );
        assert_eq!(
            call(cfg, &ctx(None), &req, &ok("b")).x_cache(),
            "MISS",
            "{cc}"
        );
    }
    start();
    call(
        cfg,
        &ctx(None),
        &req,
        &up(200, &[("cache-control", "max-age=5"), ("age", "9")], "a"),
    );
    assert_eq!(call(cfg, &ctx(None), &req, &ok("b")).x_cache(), "MISS");
}

#[test]
fn responses_that_must_not_be_stored() {
    let forbidden: &[&[(&str, &str)]] = &[
        &[("cache-control", "no-store")],
        &[("cache-control", "public, max-age=60, NO-STORE")],
        &[("cache-control", "private")],
        &[("cache-control", "private=\"x-user\", max-age=60")],
        &[("cache-control", "no-cache")],
        &[
            ("cache-control", "max-age=60"),
            ("cache-control", "private"),
        ],
        &[("set-cookie", "session=abc; HttpOnly")],
        &[("vary", "*")],
        &[("vary", "accept-encoding, *")],
        &[("vary", "bad header")],
    ];
    for headers in forbidden {
        start();
        let req = get("/a", &[]);
        let first = call(DEFAULT, &ctx(None), &req, &up(200, headers, "secret"));
        assert_eq!(first.x_cache(), "MISS");
        let second = call(DEFAULT, &ctx(None), &req, &ok("fresh"));
        assert_eq!(second.x_cache(), "MISS", "{headers:?} was stored");
    }
    // Non-UTF-8 Cache-Control: assume the worst.
    start();
    let mut p = policy(DEFAULT);
    let req = get("/a", &[]);
    p.on_request(&Call::native(&ctx(None), &req), None);
    let head = ResponseHead {
        status: 200,
        headers: vec![Header::new("cache-control", vec![0xff, b'x'])],
    };
    p.on_response(&Call::native_response(&ctx(None), &req, &head), Some(b"x"));
    assert_eq!(call(DEFAULT, &ctx(None), &req, &ok("b")).x_cache(), "MISS");
}

#[test]
fn only_configured_statuses_are_stored() {
    for (cfg, status, stored) in [
        (DEFAULT, 200, true),
        (DEFAULT, 404, true),
        (DEFAULT, 410, true),
        (DEFAULT, 204, true),
        (DEFAULT, 500, false),
        (DEFAULT, 502, false),
        (DEFAULT, 201, false),
        (DEFAULT, 302, false),
        (r#"{"statuses":[200]}"#, 404, false),
        (r#"{"statuses":[200, 500]}"#, 500, true),
    ] {
        start();
        let req = get("/s", &[]);
        call(cfg, &ctx(None), &req, &up(status, &[], "x"));
        let second = call(cfg, &ctx(None), &req, &ok("y"));
        match second {
            Out::Hit(r) => {
                assert!(stored, "{cfg} {status} was stored");
                assert_eq!(r.status, status);
            }
            _ => assert!(!stored, "{cfg} {status} was not stored"),
        }
    }
}

#[test]
fn only_get_and_head_and_they_do_not_mix() {
    start();
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get"] {
        let mut req = get("/m", &[]);
        req.method = method.into();
        assert_eq!(
            call(DEFAULT, &ctx(None), &req, &ok("a")).x_cache(),
            "BYPASS"
        );
        assert_eq!(
            call(DEFAULT, &ctx(None), &req, &ok("a")).x_cache(),
            "BYPASS"
        );
    }
    let mut head = get("/m", &[]);
    head.method = "HEAD".into();
    call(DEFAULT, &ctx(None), &head, &up(200, &[], ""));
    assert_eq!(call(DEFAULT, &ctx(None), &head, &ok("")).hit().body, b"");
    // A HEAD entry (no body) never answers a GET.
    let get_req = get("/m", &[]);
    assert_eq!(
        call(DEFAULT, &ctx(None), &get_req, &ok("full")).x_cache(),
        "MISS"
    );
    assert_eq!(
        call(DEFAULT, &ctx(None), &get_req, &ok("x")).hit().body,
        b"full"
    );
}

#[test]
fn key_query_list_sorted_and_others_ignored() {
    start();
    let cfg = r#"{"key-query":["page","sort"]}"#;
    call(
        cfg,
        &ctx(None),
        &get("/l?page=1&sort=name&utm=a", &[]),
        &ok("one"),
    );
    for q in [
        "/l?sort=name&page=1",
        "/l?utm=zzz&sort=name&page=1&other",
        "/l?page=%31&sort=n%61me",
    ] {
        assert_eq!(
            call(cfg, &ctx(None), &get(q, &[]), &ok("x")).hit().body,
            b"one",
            "{q}"
        );
    }
    for q in [
        "/l?page=2&sort=name",
        "/l?page=1",
        "/l?page=1&sort=name&page=2",
        "/l?page=1&sort=",
        "/l",
    ] {
        assert_eq!(
            call(cfg, &ctx(None), &get(q, &[]), &ok("x")).x_cache(),
            "MISS",
            "{q}"
        );
    }
    // An empty list: the query is ignored entirely.
    start();
    let cfg = r#"{"key-query":[]}"#;
    call(cfg, &ctx(None), &get("/l?a=1", &[]), &ok("one"));
    call(cfg, &ctx(None), &get("/l?b=2", &[]), &ok("x")).hit();
}

#[test]
fn key_query_all_normalises_order() {
    start();
    call(DEFAULT, &ctx(None), &get("/l?b=2&a=1&a=3", &[]), &ok("one"));
    call(DEFAULT, &ctx(None), &get("/l?a=1&b=2&a=3", &[]), &ok("x")).hit();
    call(DEFAULT, &ctx(None), &get("/l?a=1&a=3&&b=2", &[]), &ok("x")).hit();
    for q in [
        "/l?a=3&a=1&b=2",
        "/l?a=1&b=2",
        "/l?a=1&b=2&a=3&c",
        "/l?a=1&b=2&a=3&a=3",
    ] {
        assert_eq!(
            call(DEFAULT, &ctx(None), &get(q, &[]), &ok("x")).x_cache(),
            "MISS",
            "{q}"
        );
    }
}

#[test]
fn key_covers_path_host_and_step() {
    start();
    call(DEFAULT, &ctx(None), &get("/p", &[]), &ok("one"));
    assert_eq!(
        call(DEFAULT, &ctx(None), &get("/p/", &[]), &ok("x")).x_cache(),
        "MISS"
    );
    assert_eq!(
        call(DEFAULT, &ctx(None), &get("/P", &[]), &ok("x")).x_cache(),
        "MISS"
    );
    let mut other_host = get("/p", &[]);
    other_host.authority = "other.example.com".into();
    assert_eq!(
        call(DEFAULT, &ctx(None), &other_host, &ok("x")).x_cache(),
        "MISS"
    );
    let mut upper_host = get("/p", &[]);
    upper_host.authority = "API.example.com".into();
    call(DEFAULT, &ctx(None), &upper_host, &ok("x")).hit();
    let mut c = ctx(None);
    c.step = "cache-2".into();
    assert_eq!(
        call(DEFAULT, &c, &get("/p", &[]), &ok("x")).x_cache(),
        "MISS"
    );
}

#[test]
fn hostile_keys_do_not_collide_and_stay_short() {
    start();
    // Length prefixes: moving bytes between parts gives another key.
    call(DEFAULT, &ctx(None), &get("/a?b=c", &[]), &ok("one"));
    for q in ["/a?b%3Dc", "/a?bc", "/a?b=c&", "/a%3Fb=c"] {
        let out = call(DEFAULT, &ctx(None), &get(q, &[]), &ok("x"));
        if q == "/a?b=c&" {
            // Empty pieces are no parameter at all.
            out.hit();
        } else {
            assert_eq!(out.x_cache(), "MISS", "{q}");
        }
    }
    let cfg = r#"{"vary-headers":["x-a","x-b"]}"#;
    call(cfg, &ctx(None), &get("/v", &[("x-a", "1,2")]), &ok("one"));
    for h in [
        vec![("x-a", "1"), ("x-a", "2")],
        vec![("x-a", "1,2"), ("x-b", "")],
        vec![("x-a", "1"), ("x-b", "2")],
        vec![],
    ] {
        assert_eq!(
            call(cfg, &ctx(None), &get("/v", &h), &ok("x")).x_cache(),
            "MISS",
            "{h:?}"
        );
    }
    // Huge inputs: the key the host sees is always 72 characters.
    let long = "x".repeat(100_000);
    let mut p = policy(cfg);
    let req = RequestHead {
        query: Some(format!("{long}={long}")),
        path: format!("/{long}"),
        headers: vec![Header::new("x-a", long.clone())],
        ..get("/", &[])
    };
    let m = p.material(&Call::native(&ctx(None), &req), &req.method, None);
    assert_eq!(key(&m).len(), 72);
    assert!(matches!(
        p.on_request(&Call::native(&ctx(None), &req), None),
        RequestDecision::Continue(_)
    ));
}

#[test]
fn client_x_cache_is_removed_and_never_trusted() {
    start();
    let req = get("/x", &[("x-cache", "HIT")]);
    let Out::Upstream(edits, resp) = call(DEFAULT, &ctx(None), &req, &ok("a")) else {
        panic!()
    };
    assert_eq!(edits.headers, vec![HeaderOp::remove("x-cache")]);
    assert!(resp.headers.contains(&HeaderOp::set("x-cache", "MISS")));
    let mut post = get("/x", &[("x-cache", "HIT")]);
    post.method = "POST".into();
    let mut p = policy(DEFAULT);
    match p.on_request(&Call::native(&ctx(None), &post), None) {
        RequestDecision::Continue(e) => assert_eq!(e.headers, vec![HeaderOp::remove("x-cache")]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn configured_vary_headers_are_part_of_the_key() {
    start();
    let cfg = r#"{"vary-headers":["Accept-Language"]}"#;
    call(
        cfg,
        &ctx(None),
        &get("/v", &[("accept-language", "fr")]),
        &ok("bonjour"),
    );
    call(
        cfg,
        &ctx(None),
        &get("/v", &[("accept-language", "de")]),
        &ok("hallo"),
    );
    assert_eq!(
        call(
            cfg,
            &ctx(None),
            &get("/v", &[("Accept-Language", "fr")]),
            &ok("x")
        )
        .hit()
        .body,
        b"bonjour"
    );
    assert_eq!(
        call(
            cfg,
            &ctx(None),
            &get("/v", &[("accept-language", "de")]),
            &ok("x")
        )
        .hit()
        .body,
        b"hallo"
    );
    assert_eq!(
        call(cfg, &ctx(None), &get("/v", &[]), &ok("x")).x_cache(),
        "MISS"
    );
}

#[test]
fn upstream_vary_adds_headers_to_the_key() {
    start();
    let vary = |body: &'static str| up(200, &[("vary", "Accept-Encoding, X-Tenant")], body);
    let gz = [("accept-encoding", "gzip"), ("x-tenant", "a")];
    let br = [("accept-encoding", "br"), ("x-tenant", "a")];
    assert_eq!(
        call(DEFAULT, &ctx(None), &get("/u", &gz), &vary("gz")).x_cache(),
        "MISS"
    );
    assert_eq!(
        call(DEFAULT, &ctx(None), &get("/u", &br), &vary("br")).x_cache(),
        "MISS"
    );
    assert_eq!(
        call(DEFAULT, &ctx(None), &get("/u", &gz), &ok("x"))
            .hit()
            .body,
        b"gz"
    );
    let r = call(DEFAULT, &ctx(None), &get("/u", &br), &ok("x")).hit();
    assert_eq!(r.body, b"br");
    assert_eq!(
        header_str(&r.headers, "vary"),
        Some("Accept-Encoding, X-Tenant")
    );
    let error = up(500, &[], "error");
    assert_eq!(
        call(
            DEFAULT,
            &ctx(None),
            &get("/u", &[("accept-encoding", "gzip")]),
            &error
        )
        .x_cache(),
        "MISS"
    );
    // The marker itself is never served.
    assert_eq!(
        call(DEFAULT, &ctx(None), &get("/u", &[]), &error).x_cache(),
        "MISS"
    );
    // A later response without Vary replaces the marker: the upstream says
    // the resource no longer varies.
    call(DEFAULT, &ctx(None), &get("/u", &[]), &ok("plain"));
    assert_eq!(
        call(DEFAULT, &ctx(None), &get("/u", &gz), &ok("x"))
            .hit()
            .body,
        b"plain"
    );
}

#[test]
fn authorised_requests_bypass_by_default() {
    start();
    for headers in [
        vec![("authorization", "Bearer secret-token")],
        vec![("cookie", "session=abc")],
        vec![("proxy-authorization", "Basic eDp5")],
    ] {
        let req = get("/me", &headers);
        assert_eq!(
            call(DEFAULT, &ctx(None), &req, &ok("mine")).x_cache(),
            "BYPASS"
        );
        assert_eq!(
            call(DEFAULT, &ctx(None), &req, &ok("mine")).x_cache(),
            "BYPASS"
        );
        // Nor was anything stored for anonymous callers.
        assert_eq!(
            call(DEFAULT, &ctx(None), &get("/me", &[]), &ok("x")).x_cache(),
            "MISS"
        );
        harness::reset();
    }
    // A consumer set by an earlier step (its credential already stripped)
    // counts as authorised too.
    let req = get("/me", &[]);
    assert_eq!(
        call(DEFAULT, &ctx(Some("alice")), &req, &ok("alice")).x_cache(),
        "BYPASS"
    );
    assert_eq!(call(DEFAULT, &ctx(None), &req, &ok("x")).x_cache(), "MISS");
}

#[test]
fn cache_authorized_keys_by_consumer() {
    start();
    let cfg = r#"{"cache-authorized":true}"#;
    let req = get("/me", &[("authorization", "Bearer t")]);
    let alice = ctx(Some("alice"));
    let bob = ctx(Some("bob"));
    assert_eq!(call(cfg, &alice, &req, &ok("alice")).x_cache(), "MISS");
    assert_eq!(call(cfg, &bob, &req, &ok("bob")).x_cache(), "MISS");
    assert_eq!(call(cfg, &alice, &req, &ok("x")).hit().body, b"alice");
    assert_eq!(call(cfg, &bob, &req, &ok("x")).hit().body, b"bob");
    // A consumer id that looks like a separator trick is still its own key.
    let tricky = ctx(Some("alice\u{0}"));
    assert_eq!(call(cfg, &tricky, &req, &ok("t")).x_cache(), "MISS");
    // Anonymous callers never get a consumer's response.
    assert_eq!(
        call(cfg, &ctx(None), &get("/me", &[]), &ok("anon")).x_cache(),
        "MISS"
    );
    assert_eq!(
        call(cfg, &ctx(None), &get("/me", &[]), &ok("x")).hit().body,
        b"anon"
    );
    assert_eq!(call(cfg, &alice, &req, &ok("x")).hit().body, b"alice");
    // Credentials but no consumer: nothing to key by, so no caching.
    let r = get("/me", &[("cookie", "s=1")]);
    assert_eq!(call(cfg, &ctx(None), &r, &ok("who")).x_cache(), "BYPASS");
    assert_eq!(call(cfg, &ctx(None), &r, &ok("who")).x_cache(), "BYPASS");
    // A response that sets a cookie is still never stored.
    let r = get("/login", &[]);
    call(cfg, &alice, &r, &up(200, &[("set-cookie", "s=2")], "hi"));
    assert_eq!(call(cfg, &alice, &r, &ok("x")).x_cache(), "MISS");
}

#[test]
fn client_no_cache_is_ignored_unless_honoured() {
    start();
    let req = get("/n", &[]);
    call(DEFAULT, &ctx(None), &req, &ok("old"));
    for h in [("cache-control", "no-cache"), ("pragma", "no-cache")] {
        let r = get("/n", &[h]);
        assert_eq!(call(DEFAULT, &ctx(None), &r, &ok("x")).hit().body, b"old");
    }
    let cfg = r#"{"honour-client-no-cache":true}"#;
    call(cfg, &ctx(None), &req, &ok("old"));
    let r = get("/n", &[("cache-control", "max-age=0, no-cache")]);
    assert_eq!(call(cfg, &ctx(None), &r, &ok("new")).x_cache(), "MISS");
    // The fresh response replaced the entry.
    assert_eq!(call(cfg, &ctx(None), &req, &ok("x")).hit().body, b"new");
    let r = get("/n", &[("pragma", "no-cache")]);
    assert_eq!(call(cfg, &ctx(None), &r, &ok("newer")).x_cache(), "MISS");
    // Pragma is ignored when Cache-Control is present.
    let r = get(
        "/n",
        &[("pragma", "no-cache"), ("cache-control", "max-stale")],
    );
    assert_eq!(call(cfg, &ctx(None), &r, &ok("x")).hit().body, b"newer");
}

#[test]
fn missing_or_oversized_bodies_are_not_stored() {
    start();
    let cfg = r#"{"max-bytes":4}"#;
    let req = get("/b", &[]);
    let mut p = policy(cfg);
    p.on_request(&Call::native(&ctx(None), &req), None);
    p.on_response(
        &Call::native_response(&ctx(None), &req, &ResponseHead::default()),
        None,
    );
    let mut p = policy(cfg);
    p.on_request(&Call::native(&ctx(None), &req), None);
    p.on_response(
        &Call::native_response(&ctx(None), &req, &ResponseHead::default()),
        Some(b"12345"),
    );
    assert_eq!(call(cfg, &ctx(None), &req, &ok("1234")).x_cache(), "MISS");
    assert_eq!(call(cfg, &ctx(None), &req, &ok("x")).hit().body, b"1234");
}

#[test]
fn response_phase_without_request_phase_does_nothing() {
    start();
    let mut p = policy(DEFAULT);
    assert_eq!(
        p.on_response(
            &Call::native_response(&ctx(None), &get("/", &[]), &ResponseHead::default()),
            Some(b"x")
        ),
        ResponseDecision::default()
    );
}

#[test]
fn cache_control_parsing() {
    let cc = |v: &[&str]| CacheControl::parse(v.iter().map(|v| v.as_bytes()));
    assert_eq!(
        cc(&["public, max-age=60", "s-maxage=30"]),
        CacheControl {
            max_age: Some(60),
            s_maxage: Some(30),
            ..CacheControl::default()
        }
    );
    // Duplicates: the smaller wins.
    assert_eq!(cc(&["max-age=60, max-age=5"]).max_age, Some(5));
    assert!(cc(&["Private"]).private);
    assert!(cc(&["no-cache=\"set-cookie\""]).no_cache);
    assert_eq!(cc(&["max-age=99999999999999999999999"]).max_age, Some(0));
}

#[test]
fn both_phases_for_every_configuration() {
    for cfg in [DEFAULT, r#"{"max-bytes":10,"cache-authorized":true}"#] {
        let p = policy(cfg);
        assert_eq!(p.info().phases, Phases::REQUEST | Phases::RESPONSE, "{cfg}");
        assert_eq!(p.info().body.request, None, "{cfg}");
    }
}

#[test]
fn upstream_vary_keys_by_the_request_as_this_step_saw_it() {
    // A later step changed the header the response varies by: the entry is
    // stored under the client's value, the one a lookup reads.
    start();
    let c = ctx(None);
    let client = get("/v", &[("accept-language", "fr")]);
    let upstream = get("/v", &[("accept-language", "en")]);
    let mut p = policy(DEFAULT);
    assert!(matches!(
        p.on_request(&Call::native(&c, &client), None),
        RequestDecision::Continue(_)
    ));
    let head = ResponseHead {
        status: 200,
        headers: vec![Header::new("vary", "accept-language")],
    };
    p.on_response(&Call::native_response(&c, &upstream, &head), Some(b"fr"));
    assert_eq!(call(DEFAULT, &c, &client, &ok("x")).hit().body, b"fr");
    assert_eq!(call(DEFAULT, &c, &upstream, &ok("x")).x_cache(), "MISS");
}

#[test]
fn nothing_carries_over_to_the_next_request() {
    // Worker isolation: one instance, a miss whose response phase never
    // ran, then a POST: no state of the first reaches the second.
    start();
    let c = ctx(None);
    let mut p = policy(DEFAULT);
    p.on_request(&Call::native(&c, &get("/n", &[])), None);
    let mut post = get("/n", &[]);
    post.method = "POST".into();
    p.on_request(&Call::native(&c, &post), None);
    let head = ResponseHead::default();
    match p.on_response(&Call::native_response(&c, &post, &head), Some(b"x")) {
        ResponseDecision::Continue(e) => {
            assert_eq!(e.headers, vec![HeaderOp::set(X_CACHE, "BYPASS")])
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        call(DEFAULT, &c, &get("/n", &[]), &ok("y")).x_cache(),
        "MISS"
    );
}
