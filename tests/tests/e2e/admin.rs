//! The admin API against a real gateway: the whole story from the first
//! administrator to a consumer calling an API with a key issued through the
//! API and limited by its plan; roles; key rotation and revocation; chain
//! assignment; hostile input.

use serde_json::{json, Value};
use std::time::Duration;
use tollgate::manifest::{PolicyManifest, StepSpec};
use tollgate_tests::admin::AdminClient;
use tollgate_tests::{client, simple_manifest, TestGateway, Upstream};

/// An API `pets` (prefix `/pets`) with key-auth and plan-based limits, and
/// an API `orders` (prefix `/orders`) with key-auth only.
fn manifest(upstream: &str) -> String {
    tollgate_tests::keyed_pets(upstream)
        + &format!(
            r#"
[[api.chain]]
name = "throttle"
plugin = "rate-limit"
grants = ["counters"]
[api.chain.config]
limits = "plan"

[[api.chain]]
name = "quota"
plugin = "quota"
grants = ["counters"]
[api.chain.config]
limits = "plan"

[[api]]
name = "orders"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/orders"

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]
"#
        )
}

async fn start() -> (Upstream, TestGateway, AdminClient) {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .admin()
        .start()
        .await;
    let admin = gw.admin();
    (up, gw, admin)
}

/// Product `shop` (API pets), plan `plan` with these limits, consumer
/// `alice`, app `alice-app`, an active subscription and a key; the secret.
async fn issue_key(admin: &AdminClient, plan: Value) -> (Value, String) {
    admin
        .create(
            "/products",
            json!({"id": "shop", "apis": ["pets"], "published": true}),
        )
        .await;
    let mut plan = plan;
    plan["id"] = "plan".into();
    plan["product"] = "shop".into();
    admin.create("/plans", plan).await;
    admin
        .create(
            "/consumers",
            json!({"id": "alice", "email": "alice@example.com"}),
        )
        .await;
    admin
        .create("/apps", json!({"id": "alice-app", "consumer": "alice"}))
        .await;
    let sub = admin
        .create(
            "/subscriptions",
            json!({"app": "alice-app", "plan": "plan"}),
        )
        .await;
    let moderated = plan_is_moderated(admin).await;
    assert_eq!(sub["state"], if moderated { "pending" } else { "active" });
    let k = admin
        .create("/keys", json!({"app": "alice-app", "plan": "plan"}))
        .await;
    let secret = k["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("tg_"));
    assert!(k["key"].get("sha256").is_none(), "{k}");
    (k["key"].clone(), secret)
}

async fn plan_is_moderated(admin: &AdminClient) -> bool {
    admin.get("/plans/plan").await.1["approval"] == "moderated"
}

async fn call(gw: &TestGateway, path: &str, key: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn from_init_to_a_call_limited_by_its_plan() {
    let (up, gw, admin) = start().await;
    let (s, who) = admin.get("/whoami").await;
    assert_eq!((s, &who["role"]), (200, &json!("administrator")));
    let (_, secret) = issue_key(
        &admin,
        json!({"rate_limits": [{"requests": 3, "per": "minute"}], "quota": {"calls": 100, "period": "day"}}),
    )
    .await;
    // The key works on the product's API, with the plan's rate limit.
    for i in 0..3 {
        let r = call(&gw, "/pets/1", &secret).await;
        assert_eq!(r.status(), 200, "call {i}");
    }
    let r = call(&gw, "/pets/1", &secret).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(up.requests().len(), 3);
    assert_eq!(up.last().header("x-consumer-id"), Some("alice"));
    // Not on an API outside the product.
    assert_eq!(call(&gw, "/orders/1", &secret).await.status(), 401);
    // A plan change is effective on the next call: a quota of 4 calls a day
    // (3 already counted by the quota step? no: refused calls were stopped
    // by the rate limit before the quota step).
    let (s, v) = admin
        .patch(
            "/plans/plan",
            json!({"rate_limits": [], "quota": {"calls": 4, "period": "day"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(call(&gw, "/pets/1", &secret).await.status(), 200);
    let r = call(&gw, "/pets/1", &secret).await;
    assert_eq!(r.status(), 403, "the quota of 4 is used up");
    assert_eq!(up.requests().len(), 4);
    // A wrong key is refused like no key.
    assert_eq!(call(&gw, "/pets/1", "tg_nope").await.status(), 401);
}

#[tokio::test]
async fn moderated_plans_suspension_rotation_and_revocation_apply_on_the_next_request() {
    let (_up, gw, admin) = start().await;
    let (key, secret) = issue_key(
        &admin,
        json!({"approval": "moderated", "max_keys_per_app": 2}),
    )
    .await;
    // Pending until approved.
    let (_, subs) = admin.get("/subscriptions?app=alice-app").await;
    let sub = subs["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(subs["items"][0]["state"], "pending");
    assert_eq!(call(&gw, "/pets/1", &secret).await.status(), 401);
    let (s, v) = admin
        .patch(&format!("/subscriptions/{sub}"), json!({"state": "active"}))
        .await;
    assert_eq!((s, &v["state"]), (200, &json!("active")));
    assert_eq!(call(&gw, "/pets/1", &secret).await.status(), 200);
    // Suspended, resumed.
    admin
        .patch(
            &format!("/subscriptions/{sub}"),
            json!({"state": "suspended"}),
        )
        .await;
    assert_eq!(call(&gw, "/pets/1", &secret).await.status(), 401);
    let (s, v) = admin
        .patch(
            &format!("/subscriptions/{sub}"),
            json!({"state": "pending"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    admin
        .patch(&format!("/subscriptions/{sub}"), json!({"state": "active"}))
        .await;
    assert_eq!(call(&gw, "/pets/1", &secret).await.status(), 200);
    // Rotation with an overlap: both keys work.
    let id = key["id"].as_str().unwrap();
    let (s, rotated) = admin
        .post(
            &format!("/keys/{id}/rotate"),
            json!({"overlap_seconds": 3600}),
        )
        .await;
    assert_eq!(s, 201, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    let new_id = rotated["key"]["id"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, "/pets/1", &secret).await.status(), 200);
    assert_eq!(call(&gw, "/pets/1", &new_secret).await.status(), 200);
    // Ending the overlap now (expiry in the past is refused; revoke instead).
    let (s, v) = admin.post(&format!("/keys/{id}/revoke"), json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["revoked_at"].is_string());
    assert_eq!(call(&gw, "/pets/1", &secret).await.status(), 401);
    assert_eq!(call(&gw, "/pets/1", &new_secret).await.status(), 200);
    // Rotation without overlap stops the old key at once.
    let (_, r2) = admin
        .post(&format!("/keys/{new_id}/rotate"), json!({}))
        .await;
    let newest = r2["secret"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, "/pets/1", &new_secret).await.status(), 401);
    assert_eq!(call(&gw, "/pets/1", &newest).await.status(), 200);
    // Deleting the key.
    let newest_id = r2["key"]["id"].as_str().unwrap();
    let (s, _) = admin.delete(&format!("/keys/{newest_id}")).await;
    assert_eq!(s, 204);
    assert_eq!(call(&gw, "/pets/1", &newest).await.status(), 401);
    // An expiring key.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let expires = format_rfc3339(soon);
    let (s, k) = admin
        .post(
            "/keys",
            json!({"app": "alice-app", "plan": "plan", "expires_at": expires}),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let short = k["secret"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, "/pets/1", &short).await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    assert_eq!(call(&gw, "/pets/1", &short).await.status(), 401);
}

fn format_rfc3339(unix_secs: u64) -> String {
    tollgate::control::admin::model::Ts(unix_secs * 1000).rfc3339()
}

#[tokio::test]
async fn max_keys_per_app_and_dependencies() {
    let (_up, _gw, admin) = start().await;
    issue_key(&admin, json!({"max_keys_per_app": 1})).await;
    let (s, v) = admin
        .post("/keys", json!({"app": "alice-app", "plan": "plan"}))
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("allows 1"),
        "{v}"
    );
    for (path, what) in [
        ("/products/shop", "plans"),
        ("/plans/plan", "subscription"),
        ("/consumers/alice", "apps"),
        ("/apps/alice-app", "subscriptions"),
    ] {
        let (s, v) = admin.delete(path).await;
        assert_eq!(s, 409, "{path}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(what),
            "{v}"
        );
    }
    let (s, v) = admin
        .post("/products", json!({"id": "x", "apis": ["no-such-api"]}))
        .await;
    // As the document says, but no such API: 422.
    assert_eq!((s, &v["error"]["field"]), (422, &json!("apis[0]")), "{v}");
    // Pages through a listing.
    for i in 0..5 {
        admin
            .create("/consumers", json!({"id": format!("c{i}")}))
            .await;
    }
    let (_, p1) = admin.get("/consumers?limit=4").await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 4);
    let next = p1["next"].as_str().unwrap();
    let (_, p2) = admin.get(&format!("/consumers?limit=4&after={next}")).await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 2);
    assert!(p2["next"].is_null());
}

/// One read and one write per resource family.
fn family_calls() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    vec![
        ("users", "GET", "/users", Value::Null),
        (
            "users",
            "POST",
            "/users",
            json!({"id": "new-user", "role": "reports-user"}),
        ),
        ("audit", "GET", "/audit", Value::Null),
        ("apis", "GET", "/apis", Value::Null),
        (
            "apis",
            "PUT",
            "/apis/orders/chain",
            json!({"chain": [{"plugin": "key-auth", "grants": ["consumers"]}]}),
        ),
        ("products", "GET", "/products", Value::Null),
        (
            "products",
            "POST",
            "/products",
            json!({"id": "new-product"}),
        ),
        ("plans", "GET", "/plans", Value::Null),
        (
            "plans",
            "POST",
            "/plans",
            json!({"id": "new-plan", "product": "shop"}),
        ),
        ("consumers", "GET", "/consumers", Value::Null),
        (
            "consumers",
            "POST",
            "/consumers",
            json!({"id": "new-consumer"}),
        ),
        ("apps", "GET", "/apps", Value::Null),
        (
            "apps",
            "POST",
            "/apps",
            json!({"id": "new-app", "consumer": "alice"}),
        ),
        ("subscriptions", "GET", "/subscriptions", Value::Null),
        (
            "subscriptions",
            "POST",
            "/subscriptions",
            json!({"app": "alice-app", "plan": "plan2"}),
        ),
        ("keys", "GET", "/keys", Value::Null),
        (
            "keys",
            "POST",
            "/keys",
            json!({"app": "alice-app", "plan": "plan"}),
        ),
    ]
}

fn role_may(role: &str, family: &str, write: bool) -> bool {
    match role {
        "administrator" => true,
        _ if family == "users" || family == "audit" => false,
        _ if !write => true,
        "api-manager" => ["apis", "products", "plans"].contains(&family),
        "community-manager" => ["consumers", "apps", "subscriptions", "keys"].contains(&family),
        _ => false,
    }
}

#[tokio::test]
async fn every_role_against_every_resource_family() {
    let (_up, _gw, admin) = start().await;
    issue_key(&admin, json!({})).await;
    admin
        .create("/plans", json!({"id": "plan2", "product": "shop"}))
        .await;
    let mut tokens = Vec::new();
    for role in [
        "api-manager",
        "community-manager",
        "reports-user",
        "administrator",
    ] {
        let (s, v) = admin
            .post("/users", json!({"id": format!("u-{role}"), "role": role}))
            .await;
        assert_eq!(s, 201, "{v}");
        assert!(v["user"].get("token_sha256").is_none());
        tokens.push((role, v["token"].as_str().unwrap().to_string()));
    }
    let mut checked = 0;
    for (role, token) in &tokens {
        let as_role = admin.with_token(token);
        let (_, who) = as_role.get("/whoami").await;
        assert_eq!(who["role"], *role);
        for (family, method, path, body) in family_calls() {
            let write = method != "GET";
            let before = admin.audit_len().await;
            let (s, v) = as_role
                .call(method, path, (!body.is_null()).then(|| body.clone()))
                .await;
            let allowed = role_may(role, family, write);
            if allowed {
                assert_ne!(s, 403, "{role} {method} {path}: {v}");
                assert!(s < 300, "{role} {method} {path}: {s} {v}");
                // Undo creations so the next role can try the same.
                if method == "POST" {
                    undo(&admin, family, &v).await;
                }
            } else {
                assert_eq!(s, 403, "{role} {method} {path}: {v}");
                assert_eq!(v["error"]["code"], "forbidden");
                // A denied call changes nothing.
                assert_eq!(admin.audit_len().await, before, "{role} {method} {path}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * family_calls().len());
    // No token, a bad token.
    let anon = admin.with_token("");
    let (s, _) = anon.get("/products").await;
    assert_eq!(s, 401);
    let (s, v) = admin.with_token("tga_forged").get("/products").await;
    assert_eq!((s, &v["error"]["code"]), (401, &json!("unauthorized")));
    // A deleted user's token stops working.
    let (_, token) = &tokens[2];
    admin.delete("/users/u-reports-user").await;
    assert_eq!(admin.with_token(token).get("/products").await.0, 401);
}

async fn undo(admin: &AdminClient, family: &str, created: &Value) {
    let path = match family {
        "users" => format!("/users/{}", created["user"]["id"].as_str().unwrap()),
        "keys" => format!("/keys/{}", created["key"]["id"].as_str().unwrap()),
        "subscriptions" => format!("/subscriptions/{}", created["id"].as_str().unwrap()),
        f => format!("/{f}/{}", created["id"].as_str().unwrap()),
    };
    let (s, v) = admin.delete(&path).await;
    assert_eq!(s, 204, "undo {path}: {v}");
}

#[tokio::test]
async fn hostile_input_is_refused_and_changes_nothing() {
    let (_up, gw, admin) = start().await;
    issue_key(&admin, json!({})).await;
    let before = admin.audit_len().await;
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/consumers", b"{not json".to_vec(), 400, "not valid JSON"),
        ("POST", "/consumers", b"{\"id\": \"x\"} trailing".to_vec(), 400, "not valid JSON"),
        ("POST", "/consumers", b"[1,2]".to_vec(), 400, "invalid type"),
        ("POST", "/consumers", br#"{"id": "x", "admin": true}"#.to_vec(), 400, "unknown field `admin`"),
        ("POST", "/consumers", br#"{"id": 7}"#.to_vec(), 400, "invalid type"),
        ("POST", "/consumers", br#"{"id": "Not Valid"}"#.to_vec(), 400, "not a valid id"),
        ("POST", "/consumers", br#"{"id": "x", "email": "nope"}"#.to_vec(), 400, "not an email"),
        ("POST", "/consumers", br#"{"id": "x", "name": "\u001b[31mred"}"#.to_vec(), 400, "control characters"),
        ("POST", "/plans", br#"{"id": "p", "product": "shop", "rate_limits": [{"requests": "ten", "per": "second"}]}"#.to_vec(), 400, "invalid type"),
        ("POST", "/plans", br#"{"id": "p", "product": "shop", "rate_limits": [{"requests": 10, "per": "fortnight"}]}"#.to_vec(), 400, "unknown variant"),
        ("POST", "/plans", br#"{"id": "p", "product": "shop", "rate_limits": [{"requests": 0, "per": "second"}]}"#.to_vec(), 400, "between 1"),
        ("POST", "/plans", br#"{"id": "p", "product": "shop", "max_keys_per_app": -1}"#.to_vec(), 400, "invalid value"),
        ("POST", "/keys", br#"{"app": "alice-app", "plan": "plan", "expires_at": "yesterday"}"#.to_vec(), 400, "RFC 3339"),
        ("POST", "/keys", br#"{"app": "alice-app", "plan": "plan", "expires_at": "2001-01-01T00:00:00Z"}"#.to_vec(), 422, "in the future"),
        ("PATCH", "/subscriptions/sub_x", br#"{"state": "gone"}"#.to_vec(), 400, "unknown variant"),
        ("POST", "/keys/key_x/rotate", br#"{"overlap_seconds": 99999999}"#.to_vec(), 400, "at most 2592000"),
        ("POST", "/keys/key_x/rotate", br#"{}"#.to_vec(), 404, "does not exist"),
        ("PUT", "/apis/pets/chain", br#"{"chain": [{"plugin": "no-such-plugin"}]}"#.to_vec(), 422, "no-such-plugin"),
        ("PUT", "/apis/pets/chain", br#"{"chain": [{"plugin": "rate-limit", "grants": ["counters"], "config": {"limits": "gold"}}]}"#.to_vec(), 422, "limits"),
        ("PUT", "/apis/pets/chain", br#"{"chain": [{"plugin": "key-auth"}]}"#.to_vec(), 422, "grants"),
        ("PUT", "/apis/pets/chain", br#"{"chain": [{"plugin": "noop", "config": {"a": null}}]}"#.to_vec(), 400, "null"),
        ("PUT", "/apis/pets/chain", br#"{"chain": "all of them"}"#.to_vec(), 400, "invalid type"),
    ];
    for (method, path, body, status, needle) in cases {
        let (s, v) = admin
            .raw(method, path, "application/json", body.clone())
            .await;
        assert_eq!(
            s,
            status,
            "{method} {path} {}: {v}",
            String::from_utf8_lossy(&body)
        );
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{method} {path}: expected {needle:?} in {v}"
        );
    }
    // Field names for wrong types.
    let (_, v) = admin
        .raw("POST", "/plans", "application/json", br#"{"id": "p", "product": "shop", "rate_limits": [{"requests": "ten", "per": "second"}]}"#.to_vec())
        .await;
    assert_eq!(v["error"]["field"], "rate_limits[0].requests", "{v}");
    // Wrong content type, huge bodies (with and without a length).
    let (s, _) = admin
        .raw("POST", "/consumers", "text/plain", b"{}".to_vec())
        .await;
    assert_eq!(s, 415);
    let huge = format!(r#"{{"id": "x", "name": "{}"}}"#, "a".repeat(2 << 20));
    let (s, v) = admin
        .raw("POST", "/consumers", "application/json", huge.into_bytes())
        .await;
    assert_eq!(s, 413, "{v}");
    let stream = futures_util::stream::iter(
        (0..40).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 64 * 1024]))),
    );
    let r = client()
        .post(admin.url("/consumers"))
        .bearer_auth(&admin.token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // Unknown routes, methods and query parameters.
    assert_eq!(admin.get("/nothing").await.0, 404);
    assert_eq!(admin.call("PUT", "/consumers", None).await.0, 405);
    let (s, v) = admin.get("/consumers?sort=name").await;
    assert_eq!((s, &v["error"]["field"]), (400, &json!("sort")));
    assert_eq!(admin.get("/consumers?limit=100000").await.0, 400);
    // Nothing changed: no audit entry, no new consumer, the chain as it was.
    assert_eq!(admin.audit_len().await, before);
    let (_, list) = admin.get("/consumers").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, chain) = admin.get("/apis/pets/chain").await;
    assert_eq!(chain["chain"].as_array().unwrap().len(), 3);
    let text = std::fs::read_to_string(gw.path().join("api.toml")).unwrap();
    assert_eq!(text, manifest(&_up.url()));
}

#[tokio::test]
async fn a_chain_assigned_through_the_api_is_live_and_written_to_the_manifest() {
    let (up, gw, admin) = start().await;
    let (_, secret) = issue_key(&admin, json!({})).await;
    let (s, before) = admin.get("/apis/orders/chain").await;
    assert_eq!(s, 200);
    let etag = before["etag"].as_str().unwrap().to_string();
    let chain = json!({"chain": [
        {"name": "auth", "plugin": "key-auth", "grants": ["consumers"]},
        {"name": "tag", "plugin": "transform", "timeout": "50ms",
         "config": {"request": {"headers": {"set": {"x-assigned": "yes"}}}}}
    ]});
    // A stale etag is refused.
    let r = client()
        .put(admin.url("/apis/orders/chain"))
        .bearer_auth(&admin.token)
        .header("if-match", "\"0000\"")
        .json(&chain)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = client()
        .put(admin.url("/apis/orders/chain"))
        .bearer_auth(&admin.token)
        .header("if-match", format!("\"{etag}\""))
        .json(&chain)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["chain"], chain["chain"]);
    assert_ne!(v["etag"], json!(etag));
    // Live: the orders API now tags the request (after a product covers it).
    admin
        .patch("/products/shop", json!({"apis": ["pets", "orders"]}))
        .await;
    let r = call(&gw, "/orders/1", &secret).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-assigned"), Some("yes"));
    // Written to the manifest, the rest of it untouched.
    let text = std::fs::read_to_string(gw.path().join("api.toml")).unwrap();
    assert!(text.contains("x-assigned"), "{text}");
    assert!(text.contains("limits = \"plan\""), "{text}");
    let (_, pets) = admin.get("/apis/pets").await;
    assert_eq!(pets["chain"].as_array().unwrap().len(), 3);
    // The audit log says who did it.
    let (_, audit) = admin.get("/audit?limit=500").await;
    let last = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["action"] == "assign-chain")
        .expect("an audit entry for the assignment")
        .clone();
    assert_eq!(last["resource"], "api");
    assert_eq!(last["actor"], "admin");
    assert_eq!(last["id"], "orders");
    // A manifest edited on disk and not reloaded is never overwritten.
    std::fs::write(gw.path().join("api.toml"), format!("{text}\n# hand edit\n")).unwrap();
    let (s, v) = admin.put("/apis/orders/chain", json!({"chain": []})).await;
    assert_eq!(s, 409, "{v}");
    assert!(std::fs::read_to_string(gw.path().join("api.toml"))
        .unwrap()
        .ends_with("# hand edit\n"));
}

/// The steps of the one API of the manifest `text`.
fn manifest_steps(text: &str) -> Vec<StepSpec> {
    let m: PolicyManifest =
        tollgate::manifest::parse_toml(std::path::Path::new("api.toml"), text).unwrap();
    let api = m.apis[0].get_ref();
    api.chain.iter().map(|s| s.get_ref().clone()).collect()
}

/// The state fixture's count on each of `n` calls (see isolation.rs).
async fn state_counts(gw: &TestGateway, up: &Upstream, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = client().get(gw.url("/state")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let count = up.last().header("x-state-count").unwrap().parse().unwrap();
        out.push(count);
    }
    out
}

/// Every step key of the manifest through the admin API: a PUT writes
/// them, a GET shows them, the gateway serves with them, an out-of-range
/// one changes nothing, and a GET-edit-PUT of one step keeps the others'.
/// On the test's one thread: one worker, so one pool of warm instances.
#[tokio::test]
async fn every_step_key_goes_through_the_chain_api() {
    let up = Upstream::start().await;
    let chain = r#"[[api.chain]]
plugin = "fixture-state"
timeout = "5s"

[[api.chain]]
name = "tag"
plugin = "transform"
isolation = "worker"
log-rate = 50
quarantine = { failures = 3 }
[api.chain.config]
request = { headers = { set = { "x-tag" = "yes" } } }
"#;
    let gw = TestGateway::builder(&simple_manifest(&up.url(), chain))
        .admin()
        .start()
        .await;
    let admin = gw.admin();
    let (s, before) = admin.get("/apis/test/chain").await;
    assert_eq!(s, 200, "{before}");
    // What the manifest says is shown.
    assert_eq!(before["chain"][1]["isolation"], "worker", "{before}");
    assert_eq!(before["chain"][1]["log_rate"], 50, "{before}");
    assert_eq!(before["chain"][1]["quarantine"], json!({"failures": 3}));
    let tag = before["chain"][1].clone();
    let state = json!({
        "name": "state", "plugin": "fixture-state", "timeout": "5s",
        "isolation": "worker", "max_uses": 2, "idle": "30s", "wall_timeout": "6s",
        "concurrency": 3, "queue_timeout": "40ms", "log_rate": 9, "log_line": "2KiB",
        "quarantine": {"failures": 7, "window": "20s", "cool_down": "2s", "max_cool_down": "30s"}
    });
    let (s, v) = admin
        .put("/apis/test/chain", json!({"chain": [state, tag]}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["chain"], json!([state, tag]), "{v}");
    let (_, got) = admin.get("/apis/test/chain").await;
    assert_eq!(got["chain"], json!([state, tag]), "{got}");
    // The manifest file has them, in its own names.
    let text = std::fs::read_to_string(gw.path().join("api.toml")).unwrap();
    for line in [
        "isolation = \"worker\"",
        "max-uses = 2",
        "idle = \"30s\"",
        "wall-timeout = \"6s\"",
        "concurrency = 3",
        "queue-timeout = \"40ms\"",
        "log-rate = 9",
        "log-line = \"2KiB\"",
        "quarantine = { failures = 7, window = \"20s\", cool-down = \"2s\", max-cool-down = \"30s\" }",
    ] {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    let written = manifest_steps(&text);
    assert_eq!(written[0].max_uses, Some(2));
    assert_eq!(written[1].log_rate, Some(50));
    // The gateway serves with them.
    let g = gw.gateway.current();
    let step = &g.apis[0].steps[0];
    assert_eq!(step.isolation(), tollgate::policy::reuse::Isolation::Worker);
    assert_eq!(step.wall_timeout, Duration::from_secs(6));
    let gate = &step.gate.limits;
    assert_eq!(gate.concurrency, 3);
    assert_eq!(gate.queue_timeout, Duration::from_millis(40));
    let q = &gate.quarantine;
    assert_eq!(q.failures, 7);
    assert_eq!(
        (q.window, q.cool_down, q.max_cool_down),
        (
            Duration::from_secs(20),
            Duration::from_secs(2),
            Duration::from_secs(30)
        )
    );
    let log = step.log_limits();
    assert_eq!((log.lines_per_sec, log.line_bytes), (9, 2048));
    let tag_step = &g.apis[0].steps[1];
    assert_eq!(tag_step.log_limits().lines_per_sec, 50);
    assert_eq!(tag_step.gate.limits.quarantine.failures, 3);
    drop(g);
    // Worker isolation with max_uses = 2: one instance serves two calls.
    gw.until_snapshotted().await;
    assert_eq!(state_counts(&gw, &up, 5).await, vec![1, 2, 1, 2, 1]);
    assert_eq!(up.last().header("x-tag"), Some("yes"));

    // Out of range: refused by the build, nothing written or swapped.
    for (key, value, says) in [
        (
            "concurrency",
            json!(0),
            "concurrency = 0 must be between 1 and 100000",
        ),
        ("max_uses", json!(0), "max-uses = 0 must be between 1 and"),
        (
            "wall_timeout",
            json!("1s"),
            "must be at least the step's timeout",
        ),
        ("log_rate", json!(0), "log-rate = 0 must be between 1 and"),
        (
            "quarantine",
            json!({"cool_down": "1m", "max_cool_down": "2s"}),
            "quarantine.max-cool-down",
        ),
    ] {
        let mut bad = state.clone();
        bad[key] = value;
        let (s, v) = admin
            .put("/apis/test/chain", json!({"chain": [bad, tag]}))
            .await;
        assert_eq!(s, 422, "{key}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{key}: {message}");
        assert_eq!(
            std::fs::read_to_string(gw.path().join("api.toml")).unwrap(),
            text
        );
    }
    // Malformed: refused naming the field, nothing written.
    let mut bad = state.clone();
    bad["isolation"] = "process".into();
    let (s, v) = admin
        .put("/apis/test/chain", json!({"chain": [tag, bad]}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("chain[1].isolation")),
        "{v}"
    );
    assert_eq!(
        std::fs::read_to_string(gw.path().join("api.toml")).unwrap(),
        text
    );
    let (_, still) = admin.get("/apis/test/chain").await;
    assert_eq!(still["chain"], got["chain"]);

    // GET, change one step, PUT: the other step keeps every key.
    let (_, mut read) = admin.get("/apis/test/chain").await;
    read["chain"][1]["timeout"] = "30ms".into();
    let (s, v) = admin
        .put("/apis/test/chain", json!({"chain": read["chain"]}))
        .await;
    assert_eq!(s, 200, "{v}");
    let after = manifest_steps(&std::fs::read_to_string(gw.path().join("api.toml")).unwrap());
    assert_eq!(after[0], written[0]);
    let mut want = written[1].clone();
    want.timeout = Some(tollgate::manifest::Dur(Duration::from_millis(30)));
    assert_eq!(after[1], want);
    let step = &gw.gateway.current().apis[0].steps[0];
    assert_eq!(step.isolation(), tollgate::policy::reuse::Isolation::Worker);
    assert_eq!(step.gate.limits.concurrency, 3);
}

#[tokio::test]
async fn the_openapi_document_and_the_live_routes_agree() {
    let (_up, _gw, admin) = start().await;
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(tollgate_tests::root().join("docs/admin-openapi.json")).unwrap(),
    )
    .unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: std::collections::BTreeSet<(String, String)> =
        tollgate::control::admin::api::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
    assert_eq!(
        documented, served,
        "docs/admin-openapi.json and ROUTES differ"
    );
    // The served document is the file, with `servers` naming the listener.
    let (s, mut live) = admin.with_token("").get("/openapi.json").await;
    assert_eq!(s, 200);
    assert_eq!(live["servers"], json!([{"url": admin.base}]));
    live["servers"] = doc["servers"].clone();
    assert_eq!(live, doc);
    // Every route answers from its handler on the live server: never the
    // router's "no route" or 405, whatever the resource.
    for (method, path) in &served {
        let concrete = path.replace("{id}", "nope").replace("{name}", "nope");
        let Some(concrete) = concrete.strip_prefix("/admin/v1") else {
            // The probes (`/healthz`, `/readyz`) and the metrics sit outside
            // the API's prefix (the metrics with a token).
            let root = admin.base.trim_end_matches("/admin/v1");
            let r = client()
                .get(format!("{root}{concrete}"))
                .bearer_auth(&admin.token)
                .send()
                .await
                .unwrap();
            assert!(matches!(r.status().as_u16(), 200 | 503), "{method} {path}");
            continue;
        };
        let body = matches!(method.as_str(), "POST" | "PUT" | "PATCH").then(|| json!({}));
        let (s, v) = admin.call(method, concrete, body).await;
        assert_ne!(s, 405, "{method} {path}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(!msg.contains("no admin API route"), "{method} {path}: {v}");
        assert!(!msg.contains("no handler"), "{method} {path}: {v}");
    }
}

#[tokio::test]
async fn jwt_resolves_apps_issued_through_the_api() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    const SECRET: &str = "admin e2e secret for HS256, 32 bytes or more";
    let up = Upstream::start().await;
    let chain = format!(
        r#"
[[api.chain]]
plugin = "jwt"
grants = ["crypto", "cache", "consumers", "http:localhost"]
[api.chain.config]
algorithms = ["HS256"]
secret = "{SECRET}"
consumer-claim = "client_id"
"#
    );
    let manifest = tollgate_tests::simple_manifest(&up.url(), &chain)
        .replace("name = \"test\"", "name = \"pets\"");
    let gw = TestGateway::builder(&manifest).admin().start().await;
    let admin = gw.admin();
    issue_key(&admin, json!({})).await;
    let token = |client_id: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let c =
            URL_SAFE_NO_PAD.encode(json!({"client_id": client_id, "exp": now + 600}).to_string());
        let input = format!("{h}.{c}");
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let s = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&k, input.as_bytes()).as_ref());
        format!("{input}.{s}")
    };
    let get = |t: String| client().get(gw.url("/pets")).bearer_auth(t).send();
    // The app's active subscription covers the API: the caller is its consumer.
    let r = get(token("alice-app")).await.unwrap();
    assert_eq!(r.status(), 200);
    // An app nobody issued, and the same app once suspended.
    assert_eq!(get(token("mallory-app")).await.unwrap().status(), 401);
    let (_, subs) = admin.get("/subscriptions?app=alice-app").await;
    let sub = subs["items"][0]["id"].as_str().unwrap().to_string();
    admin
        .patch(
            &format!("/subscriptions/{sub}"),
            json!({"state": "suspended"}),
        )
        .await;
    assert_eq!(get(token("alice-app")).await.unwrap().status(), 401);
    assert_eq!(up.requests().len(), 1);
}
