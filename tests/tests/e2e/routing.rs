//! Routing by host, path prefix, path template and method.

use tollgate_tests::*;

fn manifest(up: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "pets"
upstream = {{ targets = ["{up}"] }}
[[api.route]]
name = "pet"
path = "/pets/{{id}}"
methods = ["GET"]
[[api.chain]]
plugin = "fixture-context"

[[api]]
name = "pets-write"
upstream = {{ targets = ["{up}/write"] }}
[[api.route]]
path = "/pets/{{id}}"
methods = ["PUT", "DELETE"]

[[api]]
name = "catalogue"
upstream = {{ targets = ["{up}"] }}
[[api.route]]
prefix = "/catalogue"

[[api]]
name = "admin-host"
upstream = {{ targets = ["{up}/admin"] }}
[[api.route]]
hosts = ["admin.example.com", "*.admin.example.org"]
prefix = "/"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_template_prefix_host_and_method() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&manifest(&up.url())).await;
    let c = client();

    // Template: the context policy answers and shows the capture.
    let r = c.get(gw.url("/pets/42")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["context"]["api"], "pets");
    assert_eq!(v["context"]["route"], "pet");
    assert_eq!(v["context"]["captures"][0][0], "id");
    assert_eq!(v["context"]["captures"][0][1], "42");

    // Same path, other method: another API.
    let r = c.put(gw.url("/pets/42")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().path_and_query, "/write/pets/42");

    // Method matched by no route: 405 with Allow.
    let r = c.post(gw.url("/pets/42")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "DELETE, GET, PUT");

    // Prefix matches whole segments only.
    let r = c.get(gw.url("/catalogue/a/b?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().path_and_query, "/catalogue/a/b?x=1");
    let r = c.get(gw.url("/catalogues")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_route");

    // Host routing beats hostless routes, wildcard hosts too.
    let r = c
        .get(gw.url("/pets/1"))
        .header("host", "admin.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().path_and_query, "/admin/pets/1");
    let r = c
        .get(gw.url("/x"))
        .header("host", "eu.admin.example.org:8443")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().path_and_query, "/admin/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_routing() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&manifest(&up.url())).await;
    // A raw client so the path reaches the gateway exactly as written.
    for (raw, expect) in [
        ("/catalogue/./a//b/../c", "/catalogue/a/c"),
        ("/x/../catalogue/%61", "/catalogue/a"),
        ("//catalogue", "/catalogue"),
    ] {
        let resp = raw_get(gw.addr, raw).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{raw}: {resp}");
        assert_eq!(up.last().path_and_query, expect, "{raw}");
    }
    // Climbing out of an API's prefix reaches another API, never a bypass.
    let resp = raw_get(gw.addr, "/catalogue/../pets/7").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_contains(&resp, "\"api\":\"pets\"");
    // Bad escapes are refused.
    let resp = raw_get(gw.addr, "/catalogue/%zz").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

/// Send a GET with an exact request target and return the whole response.
pub async fn raw_get(addr: std::net::SocketAddr, target: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
