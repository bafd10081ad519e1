//! The proxy: forwarding headers, hop-by-hop fields, round-robin, and
//! upstream failures mapped to 502/504 with JSON bodies.

use std::time::{Duration, Instant};
use tollgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_by_the_gateway() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&simple_manifest(&up.url(), "")).await;
    let r = client()
        .get(gw.url("/a?q=1"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("host", "api.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.path_and_query, "/a?q=1");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("api.example.com"));
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-real-ip"), None);
    assert_eq!(seen.header("x-drop-me"), None);
    assert_eq!(seen.header("host"), Some(up.addr.to_string().as_str()));
    let rid = seen.header("x-request-id").unwrap().to_string();
    assert_eq!(r.headers()["x-request-id"], rid.as_str());
    // Hop-by-hop fields of the upstream's response are not forwarded.
    assert!(r.headers().get("x-hop").is_none());
    assert_eq!(r.headers()["x-upstream"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_targets() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let manifest = format!(
        r#"schema = 1
[[api]]
name = "rr"
upstream = {{ targets = ["{}", "{}"] }}
[[api.route]]
prefix = "/"
"#,
        a.url(),
        b.url()
    );
    let gw = TestGateway::start(&manifest).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
    assert_eq!(a.requests().len(), 5);
    assert_eq!(b.requests().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_is_502() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = TestGateway::start(&simple_manifest(&format!("http://127.0.0.1:{port}"), "")).await;
    let r = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unavailable");
    assert_eq!(v["error"]["status"], 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_upstream_is_504_within_the_timeout() {
    let up = Upstream::start().await;
    // simple_manifest sets response-timeout = "2s".
    let gw = TestGateway::start(&simple_manifest(&up.url(), "")).await;
    let started = Instant::now();
    let r = client().get(gw.url("/hang")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
    // The gateway still serves.
    assert_eq!(
        client().get(gw.url("/ok")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_statuses_pass_through() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&simple_manifest(&up.url(), "")).await;
    let r = client().get(gw.url("/status/503")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-upstream"], "yes");
}
