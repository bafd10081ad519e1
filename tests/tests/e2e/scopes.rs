//! Policy scopes and conditions (docs/configuration.md, "Scopes" and
//! "Conditions"): the gateway's chain around every API's, a product's chain
//! right after the step that identified its caller, a route's steps around
//! its API's, `base` placing the enclosing chain, and `when` skipping a
//! step before any instance of it is taken.

use std::time::Duration;
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::*;

const GOLD_KEY: &str = "scopes-gold-key-5c1f";
const SILVER_KEY: &str = "scopes-silver-key-93aa";

/// Two consumers: `ann` subscribed through product `gold`, `bob` through
/// `silver`.
fn consumers() -> String {
    format!(
        r#"
[[consumer]]
id = "ann"
product = "gold"
keys = [{{ id = "ann-k", sha256 = "{}" }}]

[[consumer]]
id = "bob"
product = "silver"
keys = [{{ id = "bob-k", sha256 = "{}" }}]
"#,
        key_digest_hex(GOLD_KEY),
        key_digest_hex(SILVER_KEY)
    )
}

fn tag(name: &str, extra: &str) -> String {
    format!(
        "name = \"tag-{name}\"\nplugin = \"fixture-tag\"\nconfig = {{ name = \"{name}\" }}\n{extra}"
    )
}

/// An API `scoped` whose chain is `api_chain`, routes `/s/special`
/// (with `route_chain`) and `/s` (without), under the gateway chain
/// `tag-g` and product `gold`'s `tag-p`.
fn manifest(up: &str, api_chain: &str, route_chain: &str) -> String {
    format!(
        r#"schema = 1

[[chain]]
{gateway}

[[product]]
id = "gold"
[[product.chain]]
{product}

[[api]]
name = "scoped"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
name = "special"
prefix = "/s/special"
{route_chain}
[[api.route]]
name = "plain"
prefix = "/s"
{api_chain}
{consumers}"#,
        gateway = tag("g", ""),
        product = tag("p", ""),
        consumers = consumers()
    )
}

const KEY_AUTH: &str = "[[api.chain]]\nplugin = \"key-auth\"\ngrants = [\"consumers\"]\n";

/// What the upstream saw of the request chain, and the response chain's
/// order as the client got it.
async fn orders(
    gw: &TestGateway,
    up: &Upstream,
    path: &str,
    key: &str,
) -> (Vec<String>, Vec<String>) {
    let r = client()
        .get(gw.url(path))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let response = r
        .headers()
        .get_all("x-chain-response")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let request = up
        .last()
        .header_all("x-chain")
        .into_iter()
        .map(str::to_string)
        .collect();
    (request, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_compose_from_the_gateway_in_and_products_follow_the_caller() {
    let up = Upstream::start().await;
    // The API: key-auth, then the gateway's chain (`base`), then tag-a;
    // the route: its own tag-r, then the API's.
    let api_chain = format!(
        "{KEY_AUTH}\n[[api.chain]]\nbase = true\n\n[[api.chain]]\n{}",
        tag("a", "")
    );
    let route_chain = format!(
        "[[api.route.chain]]\n{}\n[[api.route.chain]]\nbase = true\n",
        tag("r", "")
    );
    let gw = TestGateway::start(&manifest(&up.url(), &api_chain, &route_chain)).await;

    // A gold caller: the product's step right after key-auth identified
    // the caller, before the gateway's (which the API placed after it).
    let (req, resp) = orders(&gw, &up, "/s/x", GOLD_KEY).await;
    assert_eq!(req, ["p", "g", "a"]);
    assert_eq!(resp, ["upstream", "a", "g", "p"]);
    // The route with steps of its own: before the API's (its `base` last).
    let (req, resp) = orders(&gw, &up, "/s/special/1", GOLD_KEY).await;
    assert_eq!(req, ["r", "p", "g", "a"]);
    assert_eq!(resp, ["upstream", "a", "g", "p", "r"]);
    // A silver caller: no chain for silver.
    let (req, _) = orders(&gw, &up, "/s/x", SILVER_KEY).await;
    assert_eq!(req, ["g", "a"]);
    // No key: key-auth answers; the steps before it (none here) ran.
    let r = client().get(gw.url("/s/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_base_the_enclosing_chain_runs_first() {
    let up = Upstream::start().await;
    let api_chain = format!("{KEY_AUTH}\n[[api.chain]]\n{}", tag("a", ""));
    let route_chain = format!("[[api.route.chain]]\n{}", tag("r", ""));
    let gw = TestGateway::start(&manifest(&up.url(), &api_chain, &route_chain)).await;
    let (req, resp) = orders(&gw, &up, "/s/special/1", GOLD_KEY).await;
    // gateway, key-auth (the product's step right after it), tag-a, route.
    assert_eq!(req, ["g", "p", "a", "r"]);
    assert_eq!(resp, ["upstream", "r", "a", "p", "g"]);
    // Without a key, the gateway's step still ran: it is first.
    let r = client().get(gw.url("/s/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-chain-response"], "g");
}

/// The issue's example, with the real policies: an access log for every
/// API (the gateway's), a rate limit for product `gold`'s callers, the
/// API's key-auth and a route's transform.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_log_a_product_limit_an_api_key_auth_and_a_route_transform() {
    let up = Upstream::start().await;
    let text = format!(
        r#"schema = 1

[[chain]]
plugin = "access-log"
grants = ["timing", "sink"]

[[product]]
id = "gold"
[[product.chain]]
name = "gold-limit"
plugin = "rate-limit"
grants = ["counters"]
config = {{ limits = [{{ per = "minute", requests = 2, by = "consumer" }}] }}

[[api]]
name = "shop"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
name = "orders"
prefix = "/orders"
[[api.route.chain]]
plugin = "transform"
config = {{ request = {{ headers = {{ set = {{ x-route = "orders" }} }} }} }}
[[api.route]]
name = "other"
prefix = "/other"
{KEY_AUTH}
{consumers}"#,
        up = up.url(),
        consumers = consumers()
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = TestGateway::builder(&text).access_log(&log).start().await;
    let c = client();
    let get = |path: &str, key: Option<&str>| {
        let mut r = c.get(gw.url(path));
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        r.send()
    };
    // Gold: two calls a minute, on any route of the API.
    assert_eq!(
        get("/orders/1", Some(GOLD_KEY)).await.unwrap().status(),
        200
    );
    assert_eq!(up.last().header("x-route"), Some("orders"));
    assert_eq!(get("/other", Some(GOLD_KEY)).await.unwrap().status(), 200);
    assert_eq!(
        up.last().header("x-route"),
        None,
        "the route's step is its own"
    );
    assert_eq!(
        get("/orders/2", Some(GOLD_KEY)).await.unwrap().status(),
        429
    );
    // Silver: no product chain, no limit.
    for _ in 0..4 {
        assert_eq!(
            get("/orders/3", Some(SILVER_KEY)).await.unwrap().status(),
            200
        );
    }
    // No key: refused by key-auth, and logged (the gateway's step is first).
    assert_eq!(get("/orders/4", None).await.unwrap().status(), 401);
    let lines = wait_for_lines(&log, 8).await;
    let statuses: Vec<u64> = lines
        .iter()
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 429, 200, 200, 200, 200, 401],
        "{lines:?}"
    );
}

/// The access log's JSON lines, once there are `n`.
async fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one sample of the gateway's `/metrics`, 0 when absent.
async fn metric(gw: &TestGateway, sample: &str) -> f64 {
    let admin = gw.admin();
    let text = client()
        .get(format!("http://{}/metrics", gw.admin_addr.unwrap()))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_condition_skips_the_step_without_taking_an_instance() {
    let up = Upstream::start().await;
    let chain = format!(
        "[[api.chain]]\n{}\n[[api.chain]]\n{}",
        tag("post", "when = 'request.method == \"POST\"'\n"),
        tag("all", "")
    );
    let text =
        simple_manifest(&up.url(), &chain).replace("name = \"test\"", "name = \"conditions\"");
    let gw = TestGateway::builder(&text).admin().start().await;
    let c = client();
    for _ in 0..5 {
        let r = c.get(gw.url("/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(up.last().header_all("x-chain"), ["all"]);
        // Neither phase ran.
        let resp: Vec<&str> = r
            .headers()
            .get_all("x-chain-response")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(resp, ["upstream", "all"]);
    }
    for _ in 0..2 {
        let r = c.post(gw.url("/x")).body("b").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(up.last().header_all("x-chain"), ["post", "all"]);
    }
    let skips = r#"tollgate_step_condition_skips_total{api="conditions",step="tag-post"}"#;
    assert_eq!(metric(&gw, skips).await, 5.0);
    let calls = r#"tollgate_step_calls_total{api="conditions",step="tag-post",phase="request"}"#;
    assert_eq!(metric(&gw, calls).await, 2.0);
    // Every call that ran a step got one instance of it; the skipped
    // calls got none.
    assert_eq!(instances(&gw, "tag-post").await, 2.0);
    assert_eq!(instances(&gw, "tag-all").await, 7.0);
}

/// Instances the calls of step `step` of API `conditions` got.
async fn instances(gw: &TestGateway, step: &str) -> f64 {
    let mut n = 0.0;
    for source in ["fresh", "reset", "warm"] {
        n += metric(
            gw,
            &format!(r#"tollgate_step_instances_total{{api="conditions",step="{step}",source="{source}"}}"#),
        )
        .await;
    }
    n
}

/// `PUT` `body` at `path` with `If-Match: etag`; the status and body.
async fn put_if(
    admin: &admin::AdminClient,
    path: &str,
    etag: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = client()
        .put(admin.url(path))
        .bearer_auth(&admin.token)
        .header("if-match", format!("\"{etag}\""))
        .json(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reads_and_writes_chains_at_every_scope() {
    use serde_json::json;
    let up = Upstream::start().await;
    let text = format!(
        r#"schema = 1

[[api]]
name = "scoped"
upstream = {{ targets = ["{}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
name = "special"
prefix = "/s/special"
[[api.route]]
name = "plain"
prefix = "/s"
{KEY_AUTH}
{}"#,
        up.url(),
        consumers()
    );
    let gw = TestGateway::builder(&text).admin().start().await;
    let admin = gw.admin();
    let tag_step = |n: &str| json!({"name": format!("tag-{n}"), "plugin": "fixture-tag", "config": {"name": n}});

    // Nothing at the gateway's scope yet.
    let (s, v) = admin.get("/chain").await;
    assert_eq!((s, v["chain"].clone()), (200, json!([])), "{v}");
    let etag = v["etag"].as_str().unwrap().to_string();
    // A stale etag is refused, then the gateway's chain is written.
    let body = json!({"chain": [tag_step("g")]});
    let (s, _) = put_if(&admin, "/chain", "0000", &body).await;
    assert_eq!(s, 412);
    let (s, v) = put_if(&admin, "/chain", &etag, &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["chain"], body["chain"]);
    // A product's (here one only the manifests know) and a route's.
    let (s, v) = admin
        .put("/products/gold/chain", json!({"chain": [tag_step("p")]}))
        .await;
    assert_eq!(
        s, 404,
        "no product gold in the registry nor a manifest: {v}"
    );
    admin
        .create("/products", json!({"id": "gold", "apis": ["scoped"]}))
        .await;
    let (s, v) = admin
        .put("/products/gold/chain", json!({"chain": [tag_step("p")]}))
        .await;
    assert_eq!(s, 200, "{v}");
    let route = json!({"chain": [tag_step("r"), {"base": true}]});
    let (s, v) = admin
        .put("/apis/scoped/routes/special/chain", route.clone())
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["chain"], route["chain"]);
    let (s, _) = admin
        .put("/apis/scoped/routes/nope/chain", route.clone())
        .await;
    assert_eq!(s, 404);

    // Live, in the composed order.
    let (req, _) = orders(&gw, &up, "/s/special/1", GOLD_KEY).await;
    assert_eq!(req, ["r", "g", "p"]);
    let (req, _) = orders(&gw, &up, "/s/1", SILVER_KEY).await;
    assert_eq!(req, ["g"]);
    // As the effective chains say.
    let (s, v) = admin.get("/apis/scoped/effective-chains").await;
    assert_eq!(s, 200, "{v}");
    let names = |chain: &serde_json::Value| -> Vec<String> {
        chain
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(v["routes"][0]["route"], "special");
    assert_eq!(
        names(&v["routes"][0]["chain"]),
        ["tag-r", "tag-g", "key-auth"]
    );
    assert_eq!(
        v["routes"][0]["chain"][0]["scope"],
        json!({"kind": "route", "route": "special"})
    );
    assert_eq!(
        v["routes"][0]["chain"][1]["scope"],
        json!({"kind": "gateway"})
    );
    assert_eq!(names(&v["routes"][1]["chain"]), ["tag-g", "key-auth"]);
    assert_eq!(names(&v["products"]["gold"]), ["tag-p"]);

    // A chain that does not build is refused and nothing is written.
    let before = std::fs::read_to_string(gw.path().join("api.toml")).unwrap();
    let bad = json!({"chain": [{"plugin": "no-such-plugin"}]});
    let (s, v) = admin.put("/chain", bad).await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("no-such-plugin"), "{v}");
    let when = json!({"chain": [{"plugin": "fixture-tag", "when": "request.nope == 1", "config": {"name": "x"}}]});
    let (s, v) = admin.put("/chain", when).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v.to_string().contains("unknown field `request.nope`"),
        "{v}"
    );
    let base = json!({"chain": [{"base": true}]});
    let (s, v) = admin.put("/chain", base).await;
    assert_eq!(s, 422, "the gateway's chain has no base: {v}");
    assert_eq!(
        std::fs::read_to_string(gw.path().join("api.toml")).unwrap(),
        before
    );
    // Written to the manifest as a person would.
    assert!(
        before.contains("[[chain]]") && before.contains("[[product.chain]]"),
        "{before}"
    );
    assert!(
        before.contains("[[api.route.chain]]\nbase = true"),
        "{before}"
    );
    // Emptied: the tables go.
    let (s, _) = admin
        .put("/products/gold/chain", json!({"chain": []}))
        .await;
    assert_eq!(s, 200);
    let after = std::fs::read_to_string(gw.path().join("api.toml")).unwrap();
    assert!(!after.contains("[[product]]"), "{after}");
    // Audited.
    let (_, audit) = admin.get("/audit?limit=500").await;
    let kinds: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "assign-chain")
        .map(|e| {
            (
                e["resource"].as_str().unwrap().to_string(),
                e["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("gateway", "gateway"),
        ("product", "gold"),
        ("api", "scoped/special"),
    ] {
        assert!(
            kinds.contains(&(want.0.to_string(), want.1.to_string())),
            "{kinds:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_that_cannot_be_evaluated_fails_the_call_never_skips() {
    let up = Upstream::start().await;
    let chain = format!(
        "[[api.chain]]\n{}\n[[api.chain]]\n{}",
        tag("debug", "when = 'request.headers[\"x-debug\"] == \"1\"'\n"),
        tag(
            "caller",
            "when = '!caller.authenticated && request.query[\"v\"] == \"2\"'\n"
        ),
    );
    let text =
        simple_manifest(&up.url(), &chain).replace("name = \"test\"", "name = \"cond-errors\"");
    let gw = TestGateway::start(&text).await;
    let c = client();
    // true, then false: the step runs, then is skipped.
    let r = c
        .get(gw.url("/x?v=2"))
        .header("x-debug", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header_all("x-chain"), ["debug", "caller"]);
    let r = c
        .get(gw.url("/x?v=2"))
        .header("x-debug", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header_all("x-chain"), ["caller"]);
    let seen = up.requests().len();
    // No such header: the expression reads a key the map does not have.
    let r = c.get(gw.url("/x?v=2")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let body = r.text().await.unwrap();
    assert!(body.contains("tag-debug"), "{body}");
    assert_eq!(up.requests().len(), seen, "the call stopped at the gateway");
    // The second step's query key: the same.
    let r = c
        .get(gw.url("/x"))
        .header("x-debug", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_on_the_callers_groups() {
    let up = Upstream::start().await;
    let chain = format!(
        "{KEY_AUTH}\n[[api.chain]]\n{}",
        tag("partners", "when = '\"partners\" in caller.groups'\n")
    );
    let text = format!(
        "{}\n[[consumer]]\nid = \"pat\"\ngroups = [\"partners\"]\nkeys = [{{ id = \"pat-k\", sha256 = \"{}\" }}]\n",
        simple_manifest(&up.url(), &chain).replace("name = \"test\"", "name = \"cond-groups\""),
        key_digest_hex("scopes-partner-key-77d0")
    ) + &consumers();
    let gw = TestGateway::start(&text).await;
    let c = client();
    let r = c
        .get(gw.url("/x"))
        .header("x-api-key", "scopes-partner-key-77d0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header_all("x-chain"), ["partners"]);
    // A consumer in no custom group (only `developers`): skipped.
    let r = c
        .get(gw.url("/x"))
        .header("x-api-key", GOLD_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(up.last().header_all("x-chain").is_empty());
}
