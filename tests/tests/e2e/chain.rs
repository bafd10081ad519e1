//! Policy chains: order of both phases, the transform plugin on both
//! phases, consumers and context passed along, body access.

use tollgate_tests::*;

fn tags(up: &str, names: &[&str]) -> String {
    let chain: String = names
        .iter()
        .map(|n| {
            format!(
                "[[api.chain]]\nname = \"tag-{n}\"\nplugin = \"fixture-tag\"\nconfig = {{ name = \"{n}\" }}\n\n"
            )
        })
        .collect();
    simple_manifest(up, &chain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_chain_in_order_response_chain_in_reverse() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&tags(&up.url(), &["a", "b", "c"])).await;
    let r = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header_all("x-chain"), vec!["a", "b", "c"]);
    let resp: Vec<&str> = r
        .headers()
        .get_all("x-chain-response")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(resp, vec!["upstream", "c", "b", "a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_responds_stops_the_chain_and_skips_the_upstream() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
name = "tag-a"
plugin = "fixture-tag"
config = { name = "a" }

[[api.chain]]
plugin = "fixture-auth"
config = { header = "x-user" }

[[api.chain]]
name = "tag-b"
plugin = "fixture-tag"
config = { name = "b" }

[[api.chain]]
plugin = "fixture-context"
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let c = client();
    // Refused by the auth step: the upstream sees nothing; the response
    // chain still runs for the step before it.
    let r = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-chain-response"], "a");
    assert!(up.requests().is_empty());
    // Authenticated: the later step sees the consumer.
    let r = c
        .get(gw.url("/x"))
        .header("x-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["context"]["consumer"]["id"], "alice");
    assert_eq!(v["context"]["consumer"]["app"], "app-1");
    assert_eq!(v["context"]["step"], "fixture-context");
    assert_eq!(v["request"]["scheme"], "http");
    // Steps see the edits of earlier ones.
    let seen: Vec<String> = v["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "x-chain")
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, vec!["a", "b"]);
    let rid = v["context"]["request-id"].as_str().unwrap();
    assert_eq!(rid.len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_edits_both_phases() {
    let up = Upstream::start().await;
    let manifest = format!(
        r#"schema = 1

[[api]]
name = "pets"
upstream = {{ targets = ["{up}"] }}

[[api.route]]
path = "/v1/pet/{{id}}"

[[api.chain]]
plugin = "transform"
[api.chain.config.request]
path = "/pets/{{id}}"
[api.chain.config.request.headers]
set = {{ "x-api-version" = "2" }}
append = {{ "x-via" = "tollgate" }}
remove = ["x-internal"]
rename = {{ "x-old" = "x-new" }}
[api.chain.config.request.query]
set = {{ "v" = "2" }}
remove = ["debug"]
[api.chain.config.response.headers]
set = {{ "x-served-by" = "tollgate" }}
remove = ["server"]
rename = {{ "x-upstream" = "x-origin" }}
"#,
        up = up.url()
    );
    let gw = TestGateway::start(&manifest).await;
    let r = client()
        .get(gw.url("/v1/pet/7?debug=1&a=b&v=1"))
        .header("x-internal", "secret")
        .header("x-old", "o")
        .header("x-via", "client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.path_and_query, "/pets/7?a=b&v=2");
    assert_eq!(seen.header("x-api-version"), Some("2"));
    assert_eq!(seen.header_all("x-via"), vec!["client", "tollgate"]);
    assert_eq!(seen.header("x-internal"), None);
    assert_eq!(seen.header("x-old"), None);
    assert_eq!(seen.header("x-new"), Some("o"));
    assert_eq!(r.headers()["x-served-by"], "tollgate");
    assert!(r.headers().get("server").is_none());
    assert!(r.headers().get("x-upstream").is_none());
    assert_eq!(r.headers()["x-origin"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_access_only_for_steps_that_ask() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "fixture-body"
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let c = client();
    let r = c.post(gw.url("/echo")).body("hello").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body, "HELLO");
    let len: usize = r.headers()["x-body-len"].to_str().unwrap().parse().unwrap();
    let body = r.bytes().await.unwrap();
    // The response body was handed to the step and replaced by its reverse.
    assert_eq!(body.len(), len);
    assert!(body.starts_with(b"}"));
    // Over the step's limit (1024 bytes): 413, and the upstream never sees it.
    let before = up.requests().len();
    let r = c
        .post(gw.url("/echo"))
        .body(vec![b'a'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(up.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_through_when_no_step_asks() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "noop"
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let big = vec![b'z'; 3 << 20];
    let r = client()
        .post(gw.url("/echo"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body.len(), big.len());
    let r = client().get(gw.url("/big/5000000")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 5_000_000);
}

fn response_tags(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("x-chain-response")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// `tollgate:policy@0.2.0`: response headers a request phase attaches are
/// applied where the step's response phase would run — after later steps'
/// response phases, before earlier ones' — on whatever made the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_phase_response_headers_apply_where_the_response_phase_would() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
name = "tag-a"
plugin = "fixture-tag"
config = { name = "a" }

[[api.chain]]
name = "early-b"
plugin = "fixture-early"
config = { name = "b" }

[[api.chain]]
name = "tag-c"
plugin = "fixture-tag"
config = { name = "c" }

[[api.chain]]
plugin = "fixture-auth"
config = { header = "x-user" }
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let c = client();
    let r = c
        .get(gw.url("/x"))
        .header("x-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header_all("x-chain"), vec!["a", "b", "c"]);
    assert_eq!(response_tags(&r), vec!["upstream", "c", "b", "a"]);
    // A later step answers: the early step's header is still applied.
    let r = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(response_tags(&r), vec!["c", "b", "a"]);
    // The upstream is down: applied on the gateway's error too.
    let down = TestGateway::start(&simple_manifest("http://127.0.0.1:9", chain)).await;
    let r = c
        .get(down.url("/x"))
        .header("x-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(response_tags(&r), vec!["c", "b", "a"]);
}

/// Response headers from a request phase obey the same rules as any
/// header operation: a framing header fails the step, in its request
/// phase, and the upstream is not called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framing_response_header_from_a_request_phase_fails_the_step() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "fixture-early"
config = { name = "b", bad = true }
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let r = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "policy_invalid_output", "{v}");
    assert!(up.requests().is_empty());
}

/// A plugin built against `tollgate:policy@0.1.0` (before the call became
/// a resource) still loads, beside 0.2.0 plugins, and sees the call as
/// 0.1.0 plugins always did: the whole request head and context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_0_plugin_runs_beside_0_2_0_plugins() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "fixture-auth"
config = { header = "x-user" }

[[api.chain]]
name = "tag-a"
plugin = "fixture-tag"
config = { name = "a" }

[[api.chain]]
plugin = "fixture-v010"

[[api.chain]]
name = "early-b"
plugin = "fixture-early"
config = { name = "b" }
"#;
    for isolation in ["request", "worker"] {
        let chain = chain.replace(
            "plugin = \"fixture-v010\"",
            &format!("plugin = \"fixture-v010\"\nisolation = \"{isolation}\""),
        );
        let gw = TestGateway::start(&simple_manifest(&up.url(), &chain)).await;
        for _ in 0..3 {
            let r = client()
                .get(gw.url("/pets/1"))
                .header("x-user", "alice")
                .header("x-one", "1")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-v010-status"], "200");
            assert_eq!(response_tags(&r), vec!["upstream", "b", "a"]);
            let seen = up.last();
            assert_eq!(seen.header("x-v010-seen"), Some("GET /pets/1 alice"));
            // It saw every request field, the earlier step's among them.
            let n: usize = seen.header("x-v010-headers").unwrap().parse().unwrap();
            assert!(n >= 3, "{n}");
            assert_eq!(seen.header_all("x-chain"), vec!["a", "b"]);
        }
    }
}
