//! Version sets (path, header and query schemes, defaults, unknown
//! versions), lifecycle headers and retirement, and revisions served at
//! their own address, promoted and rolled back through the admin API.

use serde_json::{json, Value};
use std::time::Duration;
use tollgate_tests::*;

/// `[[api]]` `name` with `extra` keys, one route and an optional chain.
fn api(name: &str, up: &str, extra: &str, route: &str, chain: &str) -> String {
    format!(
        "\n[[api]]\nname = \"{name}\"\nupstream = {{ targets = [\"{up}\"], retries = 0 }}\n{extra}\n[[api.route]]\n{route}\n{chain}\n"
    )
}

fn tag(name: &str) -> String {
    format!("[[api.chain]]\nplugin = \"fixture-tag\"\nconfig = {{ name = \"{name}\" }}\n")
}

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "{status}"
    );
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_versions_route_under_their_segment_which_the_upstream_does_not_see() {
    let up = Upstream::start().await;
    let u = up.url();
    let mut m = String::from(
        "schema = 1\n[[version-set]]\nname = \"pets\"\nscheme = \"path\"\ndefault = \"v2\"\n\n[[version-set]]\nname = \"stores\"\nscheme = \"path\"\n",
    );
    m += &api(
        "pets-v1",
        &u,
        "version-set = \"pets\"\nversion = \"v1\"",
        "path = \"/pets/{id}\"",
        "",
    );
    m += &api(
        "pets-v2",
        &u,
        "version-set = \"pets\"\nversion = \"v2\"",
        "path = \"/pets/{id}\"",
        &tag("v2"),
    );
    m += &api(
        "stores-v1",
        &u,
        "version-set = \"stores\"\nversion = \"v1.0\"",
        "prefix = \"/stores\"",
        "",
    );
    m += &api("other", &u, "", "prefix = \"/other\"", "");
    let gw = TestGateway::start(&m).await;
    let c = client();

    let r = c.get(gw.url("/v1/pets/1?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.path_and_query, "/pets/1?x=1", "the segment is removed");
    assert_eq!(seen.header("x-chain"), None, "v1 has no step");

    c.get(gw.url("/v2/pets/2")).send().await.unwrap();
    assert_eq!(up.last().path_and_query, "/pets/2");
    assert_eq!(up.last().header("x-chain"), Some("v2"));
    // The default version without a segment.
    let r = c.get(gw.url("/pets/3")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().path_and_query, "/pets/3");
    assert_eq!(up.last().header("x-chain"), Some("v2"));
    c.get(gw.url("/v1.0/stores/a/b")).send().await.unwrap();
    assert_eq!(up.last().path_and_query, "/stores/a/b");
    c.get(gw.url("/other/x")).send().await.unwrap();
    assert_eq!(up.last().path_and_query, "/other/x");
    let before = up.requests().len();

    // A version the set does not have: 404 naming its versions.
    let (s, v) = problem(c.get(gw.url("/v9/pets/1")).send().await.unwrap()).await;
    assert_eq!(s, 404);
    assert_eq!(v["code"], "unknown_version");
    assert_eq!(v["status"], 404);
    assert_eq!(v["version_set"], "pets");
    assert_eq!(v["versions"], json!(["v1", "v2"]));
    assert_eq!(
        v["detail"],
        "version `v9` is not a version of `pets`; its versions: v1, v2"
    );
    // No version and no default.
    let (s, v) = problem(c.get(gw.url("/stores/a")).send().await.unwrap()).await;
    assert_eq!(s, 404);
    assert_eq!(
        v["detail"],
        "the call names no version of `stores`; its versions: v1.0"
    );
    // Only the version segment: no route of v1 is `/`.
    let r = c.get(gw.url("/v1")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "no_route");
    let r = c.get(gw.url("/v1/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        up.requests().len(),
        before,
        "no refused call reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_query_versions_share_paths_and_pick_by_what_the_call_names() {
    let up = Upstream::start().await;
    let u = up.url();
    let mut m = String::from(
        "schema = 1\n[[version-set]]\nname = \"h\"\nscheme = \"header\"\nheader = \"X-Api-Version\"\ndefault = \"v1\"\n\n[[version-set]]\nname = \"q\"\nscheme = \"query\"\n",
    );
    m += &api(
        "h-v1",
        &u,
        "version-set = \"h\"\nversion = \"v1\"",
        "path = \"/h/{id}\"",
        "",
    );
    m += &api(
        "h-v2",
        &u,
        "version-set = \"h\"\nversion = \"v2\"",
        "path = \"/h/{id}\"",
        &tag("h2"),
    );
    m += &api(
        "q-v1",
        &u,
        "version-set = \"q\"\nversion = \"v1\"",
        "prefix = \"/q\"",
        &tag("q1"),
    );
    m += &api(
        "q-v2",
        &u,
        "version-set = \"q\"\nversion = \"v2\"",
        "prefix = \"/q\"",
        &tag("q2"),
    );
    let gw = TestGateway::start(&m).await;
    let c = client();

    let r = c.get(gw.url("/h/1")).send().await.unwrap();
    assert_eq!(up.last().header("x-chain"), None, "the default, v1");
    assert_eq!(
        r.headers()["vary"],
        "x-api-version",
        "caches keep versions apart"
    );
    c.get(gw.url("/h/1"))
        .header("x-api-version", "v2")
        .send()
        .await
        .unwrap();
    assert_eq!(up.last().header("x-chain"), Some("h2"));
    assert_eq!(up.last().path_and_query, "/h/1");
    let before = up.requests().len();
    let (s, v) = problem(
        c.get(gw.url("/h/1"))
            .header("x-api-version", "v3")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        v["detail"],
        "version `v3` is not a version of `h`; its versions: v1, v2"
    );
    // Hostile: a 10 KB version is refused, and not echoed.
    let r = c
        .get(gw.url("/h/1"))
        .header("x-api-version", "v".repeat(10 * 1024))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.len() < 600, "{} bytes", text.len());
    assert!(
        text.contains("the version named is not a version of `h`"),
        "{text}"
    );
    assert_eq!(up.requests().len(), before);

    // The query parameter stays for the upstream.
    c.get(gw.url("/q/a?z=1&api-version=v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(up.last().path_and_query, "/q/a?z=1&api-version=v2");
    assert_eq!(up.last().header("x-chain"), Some("q2"));
    c.get(gw.url("/q/a?api-version=v1")).send().await.unwrap();
    assert_eq!(up.last().header("x-chain"), Some("q1"));
    let (s, v) = problem(c.get(gw.url("/q/a")).send().await.unwrap()).await;
    assert_eq!(s, 404);
    assert_eq!(v["versions"], json!(["v1", "v2"]));
    let (s, _) = problem(c.get(gw.url("/q/a?api-version=V2")).send().await.unwrap()).await;
    assert_eq!(s, 404, "versions are compared as written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_versions_say_so_on_every_response_and_retired_ones_answer_410() {
    let up = Upstream::start().await;
    let u = up.url();
    let deprecated = "lifecycle = { state = \"deprecated\", deprecated-at = 2026-06-01T00:00:00Z, sunset = 2027-01-01T00:00:00Z, successor = \"pets-v2\" }";
    let mut m = String::from(
        "schema = 1\n[[version-set]]\nname = \"pets\"\nscheme = \"path\"\n\n[[version-set]]\nname = \"h\"\nscheme = \"header\"\ndefault = \"v2\"\n\n[[version-set]]\nname = \"q\"\nscheme = \"query\"\n",
    );
    m += &api("pets-v0", &u, "version-set = \"pets\"\nversion = \"v0\"\nlifecycle = { state = \"retired\", successor = \"pets-v2\" }", "path = \"/pets/{id}\"", &tag("v0"));
    m += &api(
        "pets-v1",
        &u,
        &format!("version-set = \"pets\"\nversion = \"v1\"\n{deprecated}"),
        "path = \"/pets/{id}\"",
        "",
    );
    m += &api(
        "pets-v2",
        &u,
        "version-set = \"pets\"\nversion = \"v2\"",
        "path = \"/pets/{id}\"",
        "",
    );
    // A deprecated version whose upstream is down: a gateway-made 502.
    m += &api("h-v1", "http://127.0.0.1:1", "version-set = \"h\"\nversion = \"v1\"\nlifecycle = { state = \"deprecated\", deprecated-at = 2026-06-01T00:00:00Z, successor = \"h-v2\" }", "path = \"/h/{id}\"", "");
    m += &api(
        "h-v2",
        &u,
        "version-set = \"h\"\nversion = \"v2\"",
        "path = \"/h/{id}\"",
        "",
    );
    m += &api("q-v1", &u, "version-set = \"q\"\nversion = \"v1\"\nlifecycle = { state = \"deprecated\", deprecated-at = 2030-01-01T00:00:00Z, successor = \"q-v2\" }", "prefix = \"/q\"", "");
    m += &api(
        "q-v2",
        &u,
        "version-set = \"q\"\nversion = \"v2\"",
        "prefix = \"/q\"",
        "",
    );
    let gw = TestGateway::start(&m).await;
    let c = client();

    let r = c.get(gw.url("/v1/pets/1?a=b")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["deprecation"], "@1780272000");
    assert_eq!(h["sunset"], "Fri, 01 Jan 2027 00:00:00 GMT");
    assert_eq!(h["link"], "</v2/pets/1?a=b>; rel=\"successor-version\"");
    assert_eq!(up.last().path_and_query, "/pets/1?a=b");
    // The successor itself says nothing.
    let r = c.get(gw.url("/v2/pets/1")).send().await.unwrap();
    assert!(r.headers().get("deprecation").is_none());
    assert!(r.headers().get("link").is_none());

    // A gateway-made answer of a deprecated version says it too.
    let r = c
        .get(gw.url("/h/1"))
        .header("api-version", "v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["deprecation"], "@1780272000");
    assert!(r.headers().get("sunset").is_none(), "no sunset given");
    assert_eq!(r.headers()["link"], "</h/1>; rel=\"successor-version\"");
    // Query scheme: the successor's URL names it in the parameter; a
    // deprecation date in the future is announced as given.
    let r = c
        .get(gw.url("/q/x?a=1&api-version=v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["deprecation"], "@1893456000");
    assert_eq!(
        r.headers()["link"],
        "</q/x?a=1&api-version=v2>; rel=\"successor-version\""
    );

    // Retired: 410, the successor named, no step and no upstream call.
    let before = up.requests().len();
    let r = c.get(gw.url("/v0/pets/7?a=b")).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(
        r.headers()["link"],
        "</v2/pets/7?a=b>; rel=\"successor-version\""
    );
    assert!(r.headers().get("x-chain-response").is_none(), "no step ran");
    let (_, v) = problem(r).await;
    assert_eq!(v["code"], "api_retired");
    assert_eq!(v["successor"], "pets-v2");
    assert_eq!(v["successor_url"], "/v2/pets/7?a=b");
    assert_eq!(v["detail"], "api `pets-v0` is retired: use `pets-v2`");
    let r = c.post(gw.url("/v0/pets/7")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(
        up.requests().len(),
        before,
        "the upstream saw no retired call"
    );
}

/// The `x-chain-response` values: the upstream's, then each step's.
fn responded(r: &reqwest::Response) -> Vec<&str> {
    r.headers()
        .get_all("x-chain-response")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// `method path` on the admin API with `If-Match: etag`.
async fn with_etag(
    admin: &admin::AdminClient,
    method: &str,
    path: &str,
    etag: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), admin.url(path))
        .bearer_auth(&admin.token)
        .header("if-match", etag);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    let text = r.text().await.unwrap();
    (s, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_edits_through_the_admin_api_are_checked_guarded_and_served() {
    let up = Upstream::start().await;
    let u = up.url();
    let mut m = String::from(
        "schema = 1\n[[version-set]]\nname = \"pets\"\nscheme = \"path\"\n\n[[version-set]]\nname = \"other\"\nscheme = \"header\"\n",
    );
    m += &api(
        "pets-v1",
        &u,
        "version-set = \"pets\"\nversion = \"v1\"",
        "path = \"/pets/{id}\"",
        "",
    );
    m += &api(
        "pets-v2",
        &u,
        "version-set = \"pets\"\nversion = \"v2\"",
        "path = \"/pets/{id}\"",
        "",
    );
    m += &api(
        "x-v1",
        &u,
        "version-set = \"other\"\nversion = \"v1\"",
        "path = \"/x\"",
        "",
    );
    let gw = TestGateway::builder(&m).admin().start().await;
    let admin = gw.admin();
    let c = client();

    let (s, v) = admin.get("/version-sets").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"][0]["name"], "pets");
    assert_eq!(v["items"][0]["scheme"], "path");
    assert_eq!(v["items"][1]["header"], "api-version");
    assert_eq!(v["items"][0]["versions"][0]["api"], "pets-v1");
    assert_eq!(
        v["items"][0]["versions"][0]["lifecycle"],
        json!({"state": "active"})
    );
    let (s, _) = admin.get("/version-sets/nope").await;
    assert_eq!(s, 404);
    let (_, chain) = admin.get("/apis/pets-v1/chain").await;
    let etag = chain["etag"].as_str().unwrap().to_string();
    let audits = admin.audit_len().await;

    let deprecate = json!({"state": "deprecated", "deprecated_at": "2026-06-01T00:00:00Z",
        "sunset": "2027-01-01T00:00:00Z", "successor": "pets-v2"});
    let (s, v) = with_etag(
        &admin,
        "PUT",
        "/apis/pets-v1/lifecycle",
        "stale",
        Some(deprecate.clone()),
    )
    .await;
    assert_eq!(s, 412, "{v}");
    // Bad input: the field, or the build's own message.
    let (s, v) = admin
        .put("/apis/pets-v1/lifecycle", json!({"state": "gone"}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("state")),
        "{v}"
    );
    let (s, v) = admin
        .put(
            "/apis/pets-v1/lifecycle",
            json!({"state": "deprecated", "sunset": "tomorrow"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("sunset")),
        "{v}"
    );
    let (s, v) = admin
        .put(
            "/apis/pets-v1/lifecycle",
            json!({"state": "retired", "successor": "x-v1"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_contains(
        v["error"]["message"].as_str().unwrap(),
        "api `pets-v1`: lifecycle: successor `x-v1` is not a version of the same version-set",
    );
    let (s, v) = admin
        .put("/apis/pets-v1/lifecycle", json!({"state": "deprecated", "deprecated_at": "2027-06-01T00:00:00Z", "sunset": "2027-01-01T00:00:00Z"}))
        .await;
    assert_eq!(s, 422, "{v}");
    assert_contains(
        v["error"]["message"].as_str().unwrap(),
        "sunset is before deprecated-at",
    );
    assert_eq!(
        admin.audit_len().await,
        audits,
        "refused edits are not audited"
    );

    let (s, v) = with_etag(
        &admin,
        "PUT",
        "/apis/pets-v1/lifecycle",
        &etag,
        Some(deprecate),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["lifecycle"]["state"], "deprecated");
    assert_eq!(v["lifecycle"]["successor"], "pets-v2");
    let r = c.get(gw.url("/v1/pets/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["deprecation"], "@1780272000");
    assert_eq!(r.headers()["sunset"], "Fri, 01 Jan 2027 00:00:00 GMT");
    let text = std::fs::read_to_string(gw.path().join("api.toml")).unwrap();
    assert_contains(
        &text,
        "lifecycle = { state = \"deprecated\", deprecated-at = 2026-06-01T00:00:00Z",
    );

    // Retire it; a deprecation date is kept only if given.
    let (s, v) = admin
        .put(
            "/apis/pets-v1/lifecycle",
            json!({"state": "retired", "successor": "pets-v2"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let before = up.requests().len();
    let r = c.get(gw.url("/v1/pets/1")).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(up.requests().len(), before);
    let (_, v) = admin.get("/version-sets/pets").await;
    assert_eq!(
        v["versions"][0]["lifecycle"],
        json!({"state": "retired", "successor": "pets-v2"})
    );
    // A deprecation without a date is dated now.
    let (s, v) = admin
        .put("/apis/pets-v1/lifecycle", json!({"state": "deprecated"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let r = c.get(gw.url("/v1/pets/1")).send().await.unwrap();
    let secs: u64 = r.headers()["deprecation"].to_str().unwrap()[1..]
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(secs) < 120, "{secs} vs {now}");
    assert_eq!(admin.audit_len().await, audits + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_is_served_at_its_address_then_promoted_atomically_and_rolled_back() {
    let (one, two) = (Upstream::start().await, Upstream::start().await);
    let m = format!(
        r#"schema = 1

[[api]]
name = "pets"
upstream = {{ targets = ["{}"] }}

[[api.route]]
prefix = "/pets"

[[api.route]]
prefix = "/slow"

{}
[[api.revision]]
number = 2
description = "the new upstream"
upstream = {{ targets = ["{}"] }}

[[api.revision.route]]
prefix = "/pets"

[[api.revision.route]]
prefix = "/slow"

[[api.revision.chain]]
plugin = "fixture-tag"
config = {{ name = "two" }}
"#,
        one.url(),
        tag("one"),
        two.url()
    );
    let gw = TestGateway::builder(&m).admin().start().await;
    let admin = gw.admin();
    let c = client();

    // The current definition, and revision 2 at its own address.
    c.get(gw.url("/pets/1")).send().await.unwrap();
    assert_eq!(one.last().header("x-chain"), Some("one"));
    let r = c
        .get(gw.url("/.rev/pets/2/pets/1?q=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(responded(&r), ["upstream", "two"]);
    assert_eq!(
        two.last().path_and_query,
        "/pets/1?q=1",
        "the address is removed"
    );
    assert_eq!(two.last().header("x-chain"), Some("two"));
    for p in [
        "/.rev/pets/3/pets/1",
        "/.rev/pets/2/nothing",
        "/.rev/pets/x/pets",
        "/.rev/nope/2/pets",
        "/.rev/pets",
        "/.rev",
    ] {
        let r = c.get(gw.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{p}");
    }
    assert_eq!(two.requests().len(), 1, "only the revision's call");

    let (s, v) = admin.get("/apis/pets/revisions").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["current"].clone(), v["previous"].clone()),
        (json!(1), Value::Null)
    );
    assert_eq!(v["items"][1]["address"], "/.rev/pets/2");
    assert_eq!(v["items"][1]["description"], "the new upstream");
    let etag = v["etag"].as_str().unwrap().to_string();

    // A call in flight on the current definition while revision 2 is made current.
    let slow = tokio::spawn({
        let c = c.clone();
        let url = gw.url("/slow/800");
        async move { c.get(url).send().await.unwrap() }
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            one.requests()
                .iter()
                .any(|r| r.path_and_query.starts_with("/slow"))
        })
        .await
    );
    let (s, v) = with_etag(
        &admin,
        "POST",
        "/apis/pets/revisions/2/promote",
        "stale",
        None,
    )
    .await;
    assert_eq!(s, 412, "{v}");
    let (s, v) = with_etag(
        &admin,
        "POST",
        "/apis/pets/revisions/2/promote",
        &etag,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["current"].clone(), v["previous"].clone()),
        (json!(2), json!(1))
    );
    c.get(gw.url("/pets/2")).send().await.unwrap();
    assert_eq!(two.last().path_and_query, "/pets/2");
    assert_eq!(two.last().header("x-chain"), Some("two"));
    let r = slow.await.unwrap();
    assert_eq!(r.status(), 200, "the call in flight finished");
    assert_eq!(responded(&r), ["upstream", "one"], "on the old definition");
    assert!(two
        .requests()
        .iter()
        .all(|r| !r.path_and_query.starts_with("/slow")));
    // The old definition is revision 1 now, at its own address.
    c.get(gw.url("/.rev/pets/1/pets/3")).send().await.unwrap();
    assert_eq!(one.last().path_and_query, "/pets/3");
    let text = std::fs::read_to_string(gw.path().join("api.toml")).unwrap();
    assert_contains(&text, "current-revision = 2");
    assert_contains(&text, "previous-revision = 1");

    // Rollback, twice.
    let (s, v) = admin.post("/apis/pets/rollback", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["current"].clone(), v["previous"].clone()),
        (json!(1), json!(2))
    );
    c.get(gw.url("/pets/4")).send().await.unwrap();
    assert_eq!(one.last().path_and_query, "/pets/4");
    assert_eq!(one.last().header("x-chain"), Some("one"));
    let (s, _) = admin.post("/apis/pets/rollback", json!({})).await;
    assert_eq!(s, 200);
    c.get(gw.url("/pets/5")).send().await.unwrap();
    assert_eq!(two.last().path_and_query, "/pets/5");
    let (s, _) = admin.post("/apis/pets/rollback", json!({})).await;
    assert_eq!(s, 200);

    // A new revision copies the current definition, with its own chain.
    let (s, v) = admin
        .post("/apis/pets/revisions", json!({"description": "three", "chain": [{"plugin": "fixture-tag", "config": {"name": "three"}}]}))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["number"], 3);
    assert_eq!(v["address"], "/.rev/pets/3");
    c.get(gw.url("/.rev/pets/3/pets/6")).send().await.unwrap();
    assert_eq!(one.last().path_and_query, "/pets/6");
    assert_eq!(one.last().header("x-chain"), Some("three"));
    let (s, v) = admin
        .put(
            "/apis/pets/revisions/3/chain",
            json!({"chain": [{"plugin": "no-such-plugin"}]}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_contains(v["error"]["message"].as_str().unwrap(), "no-such-plugin");
    let (s, v) = admin
        .put(
            "/apis/pets/revisions/3/chain",
            json!({"chain": [{"plugin": "fixture-tag", "config": {"name": "3b"}}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    c.get(gw.url("/.rev/pets/3/pets/7")).send().await.unwrap();
    assert_eq!(one.last().header("x-chain"), Some("3b"));
    let (s, v) = admin.get("/apis/pets/revisions/3").await;
    assert_eq!(
        (s, v["chain"][0]["config"]["name"].clone()),
        (200, json!("3b"))
    );
    let (s, _) = admin.delete("/apis/pets/revisions/3").await;
    assert_eq!(s, 200);
    let r = c.get(gw.url("/.rev/pets/3/pets/7")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (s, _) = admin.delete("/apis/pets/revisions/3").await;
    assert_eq!(s, 404);
    let (s, _) = admin.get("/apis/pets/revisions/0").await;
    assert_eq!(s, 404);
}

/// `tollgate admin ARGS` against `admin` (the real binary): its stdout, or
/// a panic with its output.
async fn cli(admin: &admin::AdminClient, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(tollgate_bin());
    cmd.arg("admin")
        .args(args)
        .env("TOLLGATE_ADMIN_URL", &admin.base)
        .env("TOLLGATE_ADMIN_TOKEN", &admin.token);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?}:\n{stdout}\n{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_lifecycles_and_creates_promotes_and_rolls_back_revisions() {
    let up = Upstream::start().await;
    let u = up.url();
    let mut m = String::from("schema = 1\n[[version-set]]\nname = \"pets\"\nscheme = \"path\"\n");
    m += &api(
        "pets-v1",
        &u,
        "version-set = \"pets\"\nversion = \"v1\"",
        "prefix = \"/pets\"",
        &tag("one"),
    );
    m += &api(
        "pets-v2",
        &u,
        "version-set = \"pets\"\nversion = \"v2\"",
        "prefix = \"/pets\"",
        "",
    );
    let gw = TestGateway::builder(&m).admin().start().await;
    let admin = gw.admin();
    let c = client();

    let sets: Value = serde_json::from_str(&cli(&admin, &["version-sets", "list"]).await).unwrap();
    assert_eq!(sets["items"][0]["versions"][1]["api"], "pets-v2");
    cli(
        &admin,
        &[
            "apis",
            "lifecycle",
            "pets-v1",
            "--state",
            "deprecated",
            "--deprecated-at",
            "2026-06-01T00:00:00Z",
            "--sunset",
            "2027-01-01T00:00:00Z",
            "--successor",
            "pets-v2",
        ],
    )
    .await;
    let r = c.get(gw.url("/v1/pets/1")).send().await.unwrap();
    assert_eq!(r.headers()["deprecation"], "@1780272000");
    assert_eq!(
        r.headers()["link"],
        "</v2/pets/1>; rel=\"successor-version\""
    );

    // A revision with another chain, from a TOML file.
    let file = gw.path().join("two.toml");
    std::fs::write(
        &file,
        "[[chain]]\nplugin = \"fixture-tag\"\nconfig = { name = \"two\" }\n",
    )
    .unwrap();
    let made: Value = serde_json::from_str(
        &cli(
            &admin,
            &[
                "apis",
                "revisions",
                "create",
                "pets-v1",
                "--description",
                "two",
                "--file",
                file.to_str().unwrap(),
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(made["number"], 2);
    c.get(gw.url("/.rev/pets-v1/2/pets/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(up.last().header("x-chain"), Some("two"));
    let list: Value =
        serde_json::from_str(&cli(&admin, &["apis", "revisions", "list", "pets-v1"]).await)
            .unwrap();
    let etag = list["etag"].as_str().unwrap().to_string();
    cli(
        &admin,
        &[
            "apis",
            "revisions",
            "promote",
            "pets-v1",
            "2",
            "--if-match",
            &etag,
        ],
    )
    .await;
    c.get(gw.url("/v1/pets/1")).send().await.unwrap();
    assert_eq!(up.last().header("x-chain"), Some("two"));
    cli(&admin, &["apis", "revisions", "rollback", "pets-v1"]).await;
    c.get(gw.url("/v1/pets/1")).send().await.unwrap();
    assert_eq!(up.last().header("x-chain"), Some("one"));
    // A stale etag fails the command.
    let mut cmd = std::process::Command::new(tollgate_bin());
    cmd.args([
        "admin",
        "apis",
        "revisions",
        "promote",
        "pets-v1",
        "2",
        "--if-match",
        &etag,
    ])
    .env("TOLLGATE_ADMIN_URL", &admin.base)
    .env("TOLLGATE_ADMIN_TOKEN", &admin.token);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert_contains(
        &String::from_utf8_lossy(&out.stderr),
        "If-Match does not match",
    );
}
