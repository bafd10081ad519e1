//! The phases in process, over real parts: a generation built by the
//! loader from a manifest on disk, a real policy runtime, and a real
//! upstream on loopback.

use super::normalise::{effective_authority, request_target_len};
use super::*;

fn parts(version: http::Version, target: &str, hosts: &[&str]) -> http::request::Parts {
    let mut b = Request::builder().version(version).uri(target);
    for h in hosts {
        b = b.header(header::HOST, *h);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn the_effective_authority_is_one_value() {
    use http::Version as V;
    let ok = |v, t, h: &[&str]| effective_authority(&parts(v, t, h)).unwrap();
    let refused = |v, t, h: &[&str]| {
        matches!(
            effective_authority(&parts(v, t, h)),
            Err(GatewayError::BadRequest(_))
        )
    };
    assert_eq!(ok(V::HTTP_11, "/x", &["a.example:8080"]), "a.example:8080");
    // Absolute form and HTTP/2 `:authority` win over Host.
    assert_eq!(
        ok(V::HTTP_11, "http://b.example/x", &["a.example"]),
        "b.example"
    );
    assert_eq!(
        ok(V::HTTP_2, "http://b.example/x", &["a.example"]),
        "b.example"
    );
    assert_eq!(ok(V::HTTP_2, "http://b.example/x", &[]), "b.example");
    assert_eq!(ok(V::HTTP_2, "/x", &["a.example"]), "a.example");
    assert_eq!(ok(V::HTTP_10, "/x", &[]), "");
    assert_eq!(ok(V::HTTP_11, "/x", &[""]), "");
    assert_eq!(ok(V::HTTP_11, "/x", &["[::1]:80"]), "[::1]:80");
    assert!(refused(V::HTTP_11, "/x", &[]));
    assert!(refused(V::HTTP_11, "http://b.example/x", &[]));
    assert!(refused(V::HTTP_11, "/x", &["a", "a"]));
    assert!(refused(V::HTTP_10, "/x", &["a", "b"]));
    assert!(refused(V::HTTP_2, "/x", &["a", "b"]));
    assert!(refused(V::HTTP_11, "/x", &["a b"]));
    assert!(refused(V::HTTP_11, "/x", &["u@a.example"]));
    assert!(refused(V::HTTP_11, "http://u@b.example/x", &["b.example"]));
}

#[test]
fn the_request_target_length_is_what_the_client_sent() {
    use http::Version as V;
    let len = |v, t| request_target_len(&parts(v, t, &[]));
    assert_eq!(len(V::HTTP_11, "/abc?q=1"), 8);
    assert_eq!(len(V::HTTP_11, "http://b.example/abc"), 20);
    assert_eq!(len(V::HTTP_2, "http://b.example/abc"), 4);
}

// -- normalise

fn head(target: &str, fields: &[(&str, &str)]) -> http::request::Parts {
    let mut b = Request::builder().uri(target);
    for (n, v) in fields {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// The response the exit makes of a failure: status, `Connection: close`
/// or not, and the JSON body's `error.code`.
fn exit(failure: Failure) -> (u16, bool, String) {
    let out = fail(failure, "rid", "api");
    let OutBody::Buffered(body) = &out.body else {
        panic!("an error response is buffered")
    };
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["error"]["request_id"], "rid");
    assert_eq!(json["error"]["status"], out.status);
    let code = json["error"]["code"].as_str().unwrap().to_string();
    let headers = out.headers.into_map();
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let close = headers
        .get(header::CONNECTION)
        .is_some_and(|v| v == "close");
    (out.status, close, code)
}

#[test]
fn normalise_refuses_what_it_cannot_trust_and_closes() {
    let limits = crate::manifest::Limits {
        max_request_target: crate::manifest::Size(16),
        ..Default::default()
    };
    let refused = |p: http::request::Parts| exit(normalise(&p, &limits).unwrap_err());
    let host = ("host", "a.example");
    assert_eq!(
        refused(head("/x", &[host, ("host", "b.example")])),
        (400, true, "bad_request".into())
    );
    assert_eq!(
        refused(head("/x", &[host, ("transfer-encoding", "gzip, chunked")])),
        (501, true, "not_implemented".into())
    );
    assert_eq!(
        refused(head(
            "/x",
            &[host, ("transfer-encoding", "chunked, chunked")]
        )),
        (400, true, "bad_request".into())
    );
    assert_eq!(
        refused(head("/0123456789abcdef", &[host])),
        (414, true, "uri_too_long".into())
    );
    assert_eq!(
        refused(head("/x", &[("host", "u@a.example")])),
        (400, true, "bad_request".into())
    );
    // A path that does not normalise is refused, but the head was sound:
    // the connection is kept.
    assert_eq!(
        refused(head("/a%2Fb", &[host])),
        (400, false, "bad_request".into())
    );
    // What passes: one authority, the path normalised once.
    let n = normalise(&head("/a/./b/../c", &[("host", "a.example:8080")]), &limits).unwrap();
    assert_eq!(
        (n.authority.as_str(), n.path.as_str()),
        ("a.example:8080", "/a/c")
    );
    assert_eq!(normalise::host_of("a.example:8080"), "a.example");
    assert_eq!(normalise::host_of("[::1]:80"), "::1");
}

// -- the failure exit

#[test]
fn the_failure_exit_maps_each_class_to_a_status_and_a_connection() {
    use crate::policy::PolicyError;
    use crate::upstream::UpstreamError;
    use std::time::Duration;
    let s = Duration::from_secs(1);
    let cases: Vec<(Failure, (u16, bool, &str))> = vec![
        // The client.
        (GatewayError::NoRoute.into(), (404, false, "no_route")),
        (
            GatewayError::PayloadTooLarge { limit: 1 }.into(),
            (413, false, "payload_too_large"),
        ),
        (
            Failure::unread(GatewayError::PayloadTooLarge { limit: 1 }),
            (413, true, "payload_too_large"),
        ),
        (
            GatewayError::RequestTimeout(s).into(),
            (408, true, "request_timeout"),
        ),
        // A policy.
        (
            PolicyError::Trap {
                step: "auth".into(),
                detail: "unreachable".into(),
            }
            .into(),
            (500, false, "policy_failed"),
        ),
        (
            PolicyError::Timeout {
                step: "auth".into(),
                limit: Default::default(),
                kind: crate::policy::TimeoutKind::Wall,
            }
            .into(),
            (503, false, "policy_timeout"),
        ),
        // The upstream.
        (
            UpstreamError::Connect("refused".into()).into(),
            (502, false, "upstream_unavailable"),
        ),
        (
            UpstreamError::Tls {
                target: http::uri::Authority::from_static("a:1"),
                detail: "unknown issuer".into(),
                before_request: true,
            }
            .into(),
            (502, false, "upstream_unavailable"),
        ),
        (
            UpstreamError::ConnectTimeout(s).into(),
            (504, false, "upstream_timeout"),
        ),
        (
            UpstreamError::ResponseTimeout(s).into(),
            (504, false, "upstream_timeout"),
        ),
        (
            UpstreamError::Closed("reset".into()).into(),
            (502, false, "upstream_invalid_response"),
        ),
        (
            UpstreamError::BadResponse("not HTTP".into()).into(),
            (502, false, "upstream_invalid_response"),
        ),
        (
            UpstreamError::BodyTooLarge { limit: 1 }.into(),
            (502, false, "upstream_body_too_large"),
        ),
        (
            UpstreamError::Open { retry_after: s }.into(),
            (503, false, "upstream_circuit_open"),
        ),
        // What the client did while the upstream call was under way is the
        // client's: a stalled body closes the connection.
        (
            UpstreamError::ClientBodyBroken.into(),
            (400, false, "bad_request"),
        ),
        (
            UpstreamError::ClientBodyStalled(s).into(),
            (408, true, "request_timeout"),
        ),
        // The gateway's own slip.
        (
            UpstreamError::Uri(http::Uri::builder().scheme("\0").build().unwrap_err()).into(),
            (500, false, "internal_error"),
        ),
    ];
    for (failure, (status, close, code)) in cases {
        let what = format!("{:?}", failure.error);
        assert_eq!(exit(failure), (status, close, code.to_string()), "{what}");
    }
}

// -- phases over a real generation and a real upstream

/// A loopback upstream that answers every request with what it received:
/// the method and target, then each field as `name: value`, one a line.
async fn echo_upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let mut seen = format!("{} {}\n", req.method(), req.uri());
                for (n, v) in req.headers() {
                    seen.push_str(&format!("{n}: {}\n", v.to_str().unwrap_or("?")));
                }
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(seen))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
            );
        }
    });
    addr
}

/// A data plane over a generation the loader built from a manifest with
/// no steps: `/echo` (GET and POST) to a real upstream, `/down` to a port
/// nothing listens on.
struct Plane {
    _dir: tempfile::TempDir,
    data: Arc<DataPlane>,
}

async fn plane() -> Plane {
    let up = echo_upstream().await;
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        r#"schema = 1

[[api]]
name = "echo"
upstream = {{ targets = ["http://{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
prefix = "/echo"
methods = ["GET", "POST"]

[[api]]
name = "down"
upstream = {{ targets = ["http://{down}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
prefix = "/down"
"#
    );
    std::fs::write(dir.path().join("api.toml"), manifest).unwrap();
    let gw_path = dir.path().join("tollgate.toml");
    std::fs::write(
        &gw_path,
        "schema = 1\npolicies = [\"api.toml\"]\n\n[[listener]]\nname = \"t\"\naddress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let gw = crate::loader::read_gateway_file(&gw_path).unwrap();
    let runtime = Arc::new(
        crate::policy::Runtime::new(
            crate::policy::EngineLimits { max_instances: 4 },
            None,
            Arc::new(crate::policy::host::Services::for_check()),
        )
        .unwrap(),
    );
    let gen = crate::loader::build(&gw_path, &gw, &runtime).unwrap();
    assert!(gen.apis.iter().all(|a| a.steps.is_empty()));
    let data = Arc::new(DataPlane::new(
        runtime,
        gen,
        gw.limits.clone(),
        dir.path().to_path_buf(),
    ));
    Plane { _dir: dir, data }
}

const PEER: &str = "192.0.2.7:40000";

/// Serve one in-memory HTTP/1.1 connection with `serve` (given the request
/// hyper parsed), send `req` on it, and return the response, body read.
async fn over_a_connection<S, F>(serve: S, req: Request<Full<Bytes>>) -> Response<Bytes>
where
    S: Fn(Request<Incoming>) -> F + Send + 'static,
    F: std::future::Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let (client, server) = tokio::io::duplex(64 << 10);
    let svc = hyper::service::service_fn(move |req| {
        let f = serve(req);
        async move { Ok::<_, std::convert::Infallible>(f.await) }
    });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc),
    );
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (parts, body) = sender.send_request(req).await.unwrap().into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn request(target: &str, fields: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder().uri(target);
    for (n, v) in fields {
        b = b.header(*n, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// The phases one by one, as `handle` runs them, over a 0-step chain: the
/// request goes through, the upstream answers, the origin is recorded, and
/// the upstream sees the gateway's forwarding fields, not the client's.
#[tokio::test]
async fn a_zero_step_call_goes_through_each_phase_to_the_upstream() {
    let plane = plane().await;
    let data = plane.data.clone();
    let serve = move |req: Request<Incoming>| {
        let data = data.clone();
        async move {
            let gateway = &*data;
            let arrival = Arrival::new(PEER.parse().unwrap(), "http");
            let timing = arrival.timing.clone();
            let gen = gateway.current();
            let (parts, body) = req.into_parts();
            let n = normalise(&parts, gateway.limits()).unwrap();
            let Ok(routed) = route(&gen, &parts, n) else {
                panic!("routed")
            };
            assert_eq!(&*routed.api.name, "echo");
            let mut cx = enter(gateway, &gen, routed, arrival, parts, body);
            // Hop-by-hop fields and what a client may not claim are gone
            // before any step could see them.
            let fields = cx.headers.as_ref().unwrap();
            assert!(!fields.contains_key("x-secret") && !fields.contains_key("x-forwarded-for"));
            assert!(matches!(
                request::request_chain(&mut cx).await,
                Ok(request::Chain::Through)
            ));
            assert!(cx.instances.is_empty());
            let out = forward::upstream(&mut cx)
                .await
                .unwrap_or_else(|f| panic!("{f:?}"));
            assert_eq!(out.status, 200);
            assert!(matches!(out.body, OutBody::Stream(_)));
            assert_eq!(
                context::lock(&timing).origin,
                Some(ResponseOrigin::Upstream(200))
            );
            let out = response::response_chain(&mut cx, out).await;
            finish(out, cx.request_id())
        }
    };
    let req = request(
        "/echo/a?q=1",
        &[
            ("host", "api.example"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("x-forwarded-for", "6.6.6.6"),
        ],
    );
    let resp = over_a_connection(serve, req).await;
    assert_eq!(resp.status(), 200);
    let seen = std::str::from_utf8(resp.body()).unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(rid.len(), 32);
    assert!(seen.starts_with("GET /echo/a?q=1\n"), "{seen}");
    for line in [
        "x-forwarded-for: 192.0.2.7\n",
        "x-forwarded-proto: http\n",
        "x-forwarded-host: api.example\n",
        &format!("x-request-id: {rid}\n"),
    ] {
        assert!(seen.contains(line), "{line:?} not in\n{seen}");
    }
    assert!(
        !seen.contains("x-secret") && !seen.contains("6.6.6.6"),
        "{seen}"
    );
}

/// `handle` as the listener calls it: every failure, early or late, comes
/// back as the exit made it.
#[tokio::test]
async fn handle_answers_failures_through_the_exit() {
    let plane = plane().await;
    let call = |req| {
        let data = plane.data.clone();
        over_a_connection(
            move |r| {
                let data = data.clone();
                async move { handle(&data, r, PEER.parse().unwrap(), "http").await }
            },
            req,
        )
    };
    let json = |r: &Response<Bytes>| -> serde_json::Value {
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        serde_json::from_slice(r.body()).unwrap()
    };
    // Route: no route is a 404, a route without the method a 405.
    let r = call(request("/nowhere", &[("host", "a.example")])).await;
    assert_eq!(r.status(), 404);
    assert_eq!(json(&r)["error"]["code"], "no_route");
    assert_eq!(
        json(&r)["error"]["request_id"],
        r.headers()["x-request-id"].to_str().unwrap()
    );
    let mut req = request("/echo", &[("host", "a.example")]);
    *req.method_mut() = http::Method::DELETE;
    let r = call(req).await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()[header::ALLOW], "GET, POST");
    assert!(!r.headers().contains_key(header::CONNECTION));
    // Normalise: two Host fields, and the connection closes.
    let r = call(request(
        "/echo",
        &[("host", "a.example"), ("host", "b.example")],
    ))
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()[header::CONNECTION], "close");
    // The upstream: nothing listens, a 502 that keeps the connection.
    let r = call(request("/down", &[("host", "a.example")])).await;
    assert_eq!(r.status(), 502);
    assert_eq!(json(&r)["error"]["code"], "upstream_unavailable");
    assert_eq!(json(&r)["error"]["message"], "upstream unavailable");
    assert!(!r.headers().contains_key(header::CONNECTION));
    // And a call that works.
    let r = call(request("/echo", &[("host", "a.example")])).await;
    assert_eq!(r.status(), 200);
}
