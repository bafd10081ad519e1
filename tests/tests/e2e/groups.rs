//! Groups of consumers, open products and subscription keys, against a
//! real gateway over HTTP: group CRUD and the system groups' protection;
//! products visible to groups (the admin API's listing for a consumer, the
//! portal's catalogue for a visitor); a protected product refusing a key
//! without a subscription where an open one admits it; a call without any
//! key through key-auth on a product open to anonymous callers; a
//! subscription's primary and secondary keys, regenerated one at a time and
//! stopped by suspension; hostile input.

use serde_json::{json, Value};
use tollgate_tests::admin::AdminClient;
use tollgate_tests::{client, TestGateway, Upstream};

/// APIs `pets` (prefix `/pets`) and `weather` (prefix `/weather`), both
/// behind key-auth.
fn manifest(upstream: &str) -> String {
    let api = |name: &str| {
        format!(
            r#"
[[api]]
name = "{name}"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/{name}"

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]
"#
        )
    };
    format!("schema = 1\n{}{}", api("pets"), api("weather"))
}

/// A gateway with the admin API and a portal.
async fn start() -> (Upstream, TestGateway, AdminClient) {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .admin()
        .gateway_toml("[portal]\naddress = \"127.0.0.1:0\"\n")
        .start()
        .await;
    let admin = gw.admin();
    (up, gw, admin)
}

/// Product `shop` (API pets, protected), plan `gold`, consumer `alice` with
/// app `alice-app` subscribed to it; the subscription as created (with its
/// keys' secrets).
async fn subscribed(admin: &AdminClient) -> Value {
    admin
        .create(
            "/products",
            json!({"id": "shop", "apis": ["pets"], "published": true}),
        )
        .await;
    admin
        .create("/plans", json!({"id": "gold", "product": "shop"}))
        .await;
    admin.create("/consumers", json!({"id": "alice"})).await;
    admin
        .create("/apps", json!({"id": "alice-app", "consumer": "alice"}))
        .await;
    admin
        .create(
            "/subscriptions",
            json!({"app": "alice-app", "plan": "gold"}),
        )
        .await
}

async fn call(gw: &TestGateway, path: &str, key: Option<&str>) -> u16 {
    let mut req = client().get(gw.url(path));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await.unwrap().status().as_u16()
}

fn ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn groups_are_managed_and_the_system_groups_are_protected() {
    let (_up, _gw, admin) = start().await;
    let (s, page) = admin.get("/groups").await;
    assert_eq!((s, ids(&page)), (200, vec!["developers", "guests"]));
    assert_eq!(page["items"][0]["system"], true);
    let g = admin
        .create(
            "/groups",
            json!({"id": "partners", "name": "Partners", "description": "Resellers."}),
        )
        .await;
    assert_eq!(
        (g["system"].clone(), g["name"].clone()),
        (json!(false), json!("Partners"))
    );
    admin.create("/groups", json!({"id": "beta"})).await;
    let (_, page) = admin.get("/groups?limit=2").await;
    assert_eq!(ids(&page), ["beta", "developers"]);
    let (_, page2) = admin
        .get(&format!(
            "/groups?limit=2&after={}",
            page["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ids(&page2), ["guests", "partners"]);
    let (s, g) = admin
        .patch("/groups/partners", json!({"name": "Our partners"}))
        .await;
    assert_eq!((s, &g["name"]), (200, &json!("Our partners")));
    // The system groups cannot be created, changed, deleted or joined.
    for (method, path, body) in [
        ("POST", "/groups", Some(json!({"id": "developers"}))),
        ("PATCH", "/groups/guests", Some(json!({"name": "x"}))),
        ("DELETE", "/groups/developers", None),
        ("PUT", "/groups/developers/members/alice", None),
    ] {
        let (s, v) = admin.call(method, path, body).await;
        assert_eq!(s, 409, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("system group"),
            "{v}"
        );
    }
    let (s, g) = admin.get("/groups/developers").await;
    assert_eq!((s, &g["system"]), (200, &json!(true)));
    // Members.
    admin.create("/consumers", json!({"id": "alice"})).await;
    let (s, v) = admin.put("/groups/partners/members/alice", json!({})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = admin.put("/groups/partners/members/alice", json!({})).await;
    assert_eq!(s, 204, "{v}");
    let (_, m) = admin.get("/groups/partners/members").await;
    assert_eq!(m["members"], json!(["alice"]));
    let (s, _) = admin
        .put("/groups/partners/members/nobody", json!({}))
        .await;
    assert_eq!(s, 422);
    let (s, _) = admin.put("/groups/ghosts/members/alice", json!({})).await;
    assert_eq!(s, 404);
    assert_eq!(admin.delete("/groups/partners/members/alice").await.0, 204);
    assert_eq!(admin.delete("/groups/partners/members/alice").await.0, 404);
    // Deleted, audited.
    assert_eq!(admin.delete("/groups/beta").await.0, 204);
    assert_eq!(admin.get("/groups/beta").await.0, 404);
    let (_, log) = admin.get("/audit?limit=500").await;
    let actions: Vec<(&str, &str)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"] == "group")
        .map(|e| (e["action"].as_str().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("create", "partners"),
            ("create", "beta"),
            ("update", "partners"),
            ("add-member", "partners"),
            ("remove-member", "partners"),
            ("delete", "beta"),
        ]
    );
}

#[tokio::test]
async fn products_are_visible_to_groups() {
    let (_up, gw, admin) = start().await;
    admin.create("/groups", json!({"id": "partners"})).await;
    admin.create("/consumers", json!({"id": "alice"})).await;
    admin.create("/consumers", json!({"id": "bob"})).await;
    admin.put("/groups/partners/members/bob", json!({})).await;
    let product = |id: &str, visible_to: Value| json!({"id": id, "name": format!("Product {id}"), "apis": ["pets"], "published": true, "visible_to": visible_to});
    let everyone = admin
        .create(
            "/products",
            json!({"id": "everyone", "apis": ["pets"], "published": true}),
        )
        .await;
    assert_eq!(everyone["visible_to"], json!(["developers"]));
    assert_eq!(everyone["access"], "protected");
    admin
        .create("/products", product("partner-only", json!(["partners"])))
        .await;
    admin
        .create(
            "/products",
            product("public", json!(["guests", "developers"])),
        )
        .await;
    let (_, alice) = admin.get("/products?consumer=alice").await;
    assert_eq!(ids(&alice), ["everyone", "public"]);
    let (_, bob) = admin.get("/products?consumer=bob").await;
    assert_eq!(ids(&bob), ["everyone", "partner-only", "public"]);
    let (_, guests) = admin.get("/products?group=guests").await;
    assert_eq!(ids(&guests), ["public"]);
    let (s, v) = admin.get("/products?consumer=nobody").await;
    assert_eq!(s, 422, "{v}");
    // A group a product is visible to is not deleted.
    let (s, v) = admin.delete("/groups/partners").await;
    assert_eq!(s, 409);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("partner-only"),
        "{v}"
    );
    // The portal's catalogue for a visitor: the products visible to guests.
    let portal = format!("http://{}/", gw.portal_addr.unwrap());
    let page = client()
        .get(&portal)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Product public"), "{page}");
    assert!(!page.contains("Product partner-only"), "{page}");
    assert!(!page.contains("everyone"), "{page}");
    // An API of a product visible to developers only has no public
    // reference document; once visible to guests it has.
    admin
        .create(
            "/products",
            json!({"id": "forecast", "apis": ["weather"], "published": true}),
        )
        .await;
    let doc = format!("{portal}apis/weather/openapi.json");
    let status = |url: String| async move { client().get(url).send().await.unwrap().status() };
    assert_eq!(status(doc.clone()).await, 404);
    admin
        .patch("/products/forecast", json!({"visible_to": ["guests"]}))
        .await;
    assert_eq!(status(doc.clone()).await, 200);
    // Opened to anonymous callers: the catalogue says so.
    admin
        .patch("/products/public", json!({"access": "anonymous"}))
        .await;
    let page = client()
        .get(&portal)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("call its APIs without a key"), "{page}");
}

#[tokio::test]
async fn open_products_admit_callers_without_a_subscription() {
    let (up, gw, admin) = start().await;
    let sub = subscribed(&admin).await;
    let key = sub["secrets"]["primary"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, "/pets/1", Some(&key)).await, 200);
    // `weather` is in a protected product alice is not subscribed to.
    let forecast = json!({"id": "forecast", "apis": ["weather"], "published": true});
    admin.create("/products", forecast).await;
    assert_eq!(call(&gw, "/weather/today", Some(&key)).await, 401);
    assert_eq!(call(&gw, "/weather/today", None).await, 401);
    // Open to authenticated callers: her key works, no key still does not.
    let (s, p) = admin
        .patch("/products/forecast", json!({"access": "authenticated"}))
        .await;
    assert_eq!((s, &p["access"]), (200, &json!("authenticated")));
    assert_eq!(call(&gw, "/weather/today", Some(&key)).await, 200);
    assert_eq!(up.last().header("x-consumer-id"), Some("alice"));
    assert_eq!(call(&gw, "/weather/today", None).await, 401);
    assert_eq!(call(&gw, "/weather/today", Some("tg_nope")).await, 401);
    // Open to anonymous callers: no key at all is admitted, as `anonymous`
    // (a forged consumer header does not survive); a wrong key is not.
    admin
        .patch("/products/forecast", json!({"access": "anonymous"}))
        .await;
    let r = client()
        .get(gw.url("/weather/today"))
        .header("x-consumer-id", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-consumer-id"), Some("anonymous"));
    assert_eq!(call(&gw, "/weather/today", Some("tg_nope")).await, 401);
    assert_eq!(call(&gw, "/weather/today", Some(&key)).await, 200);
    // `pets` stays protected.
    assert_eq!(call(&gw, "/pets/1", None).await, 401);
    // Unpublished: closed again.
    admin
        .patch("/products/forecast", json!({"published": false}))
        .await;
    assert_eq!(call(&gw, "/weather/today", None).await, 401);
    assert_eq!(call(&gw, "/weather/today", Some(&key)).await, 401);
}

#[tokio::test]
async fn subscription_keys_work_and_regenerate_independently() {
    let (_up, gw, admin) = start().await;
    let sub = subscribed(&admin).await;
    let id = sub["id"].as_str().unwrap();
    let primary = sub["secrets"]["primary"].as_str().unwrap().to_string();
    let secondary = sub["secrets"]["secondary"].as_str().unwrap().to_string();
    assert_ne!(primary, secondary);
    // Shown: prefixes, never the secrets or their digests.
    let (_, shown) = admin.get(&format!("/subscriptions/{id}")).await;
    let text = shown.to_string();
    assert!(primary.starts_with(shown["keys"]["primary"]["prefix"].as_str().unwrap()));
    assert!(
        !text.contains(&primary) && !text.contains("sha256"),
        "{text}"
    );
    assert!(shown.get("secrets").is_none());
    assert_eq!(call(&gw, "/pets/1", Some(&primary)).await, 200);
    assert_eq!(call(&gw, "/pets/1", Some(&secondary)).await, 200);
    assert_eq!(call(&gw, "/weather/1", Some(&primary)).await, 401);
    // Regenerate the primary: the old one stops, the secondary works.
    let regen = |slot: &str| format!("/subscriptions/{id}/keys/{slot}/regenerate");
    let (s, v) = admin.post(&regen("primary"), json!({})).await;
    assert_eq!((s, &v["key"]), (200, &json!("primary")), "{v}");
    let primary2 = v["secret"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, "/pets/1", Some(&primary)).await, 401);
    assert_eq!(call(&gw, "/pets/1", Some(&primary2)).await, 200);
    assert_eq!(call(&gw, "/pets/1", Some(&secondary)).await, 200);
    // And the secondary: the new primary keeps working.
    let (_, v) = admin.post(&regen("secondary"), json!({})).await;
    let secondary2 = v["secret"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, "/pets/1", Some(&secondary)).await, 401);
    assert_eq!(call(&gw, "/pets/1", Some(&secondary2)).await, 200);
    assert_eq!(call(&gw, "/pets/1", Some(&primary2)).await, 200);
    let (s, v) = admin.post(&regen("tertiary"), json!({})).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("primary or secondary"),
        "{v}"
    );
    // Suspension stops both; resuming brings both back.
    let path = format!("/subscriptions/{id}");
    admin.patch(&path, json!({"state": "suspended"})).await;
    assert_eq!(call(&gw, "/pets/1", Some(&primary2)).await, 401);
    assert_eq!(call(&gw, "/pets/1", Some(&secondary2)).await, 401);
    admin.patch(&path, json!({"state": "active"})).await;
    assert_eq!(call(&gw, "/pets/1", Some(&primary2)).await, 200);
    // App keys still work beside them.
    let k = admin
        .create("/keys", json!({"app": "alice-app", "plan": "gold"}))
        .await;
    assert_eq!(
        call(&gw, "/pets/1", Some(k["secret"].as_str().unwrap())).await,
        200
    );
    // The audit log says which key was regenerated, never a secret.
    let (_, log) = admin.get("/audit?limit=500").await;
    let text = log.to_string();
    assert!(!text.contains(&primary2) && !text.contains("sha256"));
    assert!(log["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "regenerate" && e["detail"]["key"] == "secondary"));
}

#[tokio::test]
async fn hostile_input_is_refused_with_clear_messages() {
    let (_up, _gw, admin) = start().await;
    let long = "x".repeat(65);
    let bad_name = "n".repeat(201);
    let cases = [
        (
            "POST",
            "/groups".to_string(),
            json!({"id": "Bad Id"}),
            400,
            "not a valid id",
        ),
        (
            "POST",
            "/groups".to_string(),
            json!({"id": long}),
            400,
            "not a valid id",
        ),
        (
            "POST",
            "/groups".to_string(),
            json!({"id": "ok", "name": bad_name}),
            400,
            "at most 200",
        ),
        (
            "POST",
            "/groups".to_string(),
            json!({"id": "ok", "system": true}),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/products".to_string(),
            json!({"id": "p", "visible_to": ["ghosts"]}),
            422,
            "group `ghosts` does not exist",
        ),
        (
            "POST",
            "/products".to_string(),
            json!({"id": "p", "visible_to": ["guests", "guests"]}),
            400,
            "listed twice",
        ),
        (
            "POST",
            "/products".to_string(),
            json!({"id": "p", "access": "everyone"}),
            400,
            "expected one of `protected`, `authenticated`, `anonymous`",
        ),
        (
            "POST",
            "/consumers".to_string(),
            json!({"id": "anonymous"}),
            422,
            "reserved",
        ),
        (
            "PUT",
            "/groups/Bad%20Id/members/alice".to_string(),
            json!({}),
            404,
            "does not exist",
        ),
        (
            "GET",
            "/products?consumer=Bad%20Id".to_string(),
            Value::Null,
            400,
            "not a valid id",
        ),
        (
            "GET",
            "/products?access=open".to_string(),
            Value::Null,
            400,
            "protected, authenticated or anonymous",
        ),
        (
            "POST",
            "/subscriptions/sub_0000000000000000/keys/primary/regenerate".to_string(),
            json!({}),
            404,
            "does not exist",
        ),
    ];
    for (method, path, body, status, says) in cases {
        let body = (!body.is_null()).then_some(body);
        let (s, v) = admin.call(method, &path, body).await;
        assert_eq!(s, status, "{method} {path}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{method} {path}: {v}");
    }
    // Nothing was created.
    let (_, page) = admin.get("/groups").await;
    assert_eq!(ids(&page), ["developers", "guests"]);
    assert_eq!(admin.get("/products/p").await.0, 404);
}
