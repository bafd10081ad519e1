//! The admin API against its own OpenAPI document, by schemathesis: every
//! check, every phase (examples, coverage, fuzzing, stateful sequences
//! along the document's links), against a live gateway. Zero failures.
//!
//! schemathesis (pinned) lives in `.tollgate/venv`, installed by
//! `scripts/schemathesis` (which `scripts/test` runs). Without it the test
//! is skipped with a message, unless `CI` is set: then it fails.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tollgate::control::admin::model::{Role, UserCreate};
use tollgate_tests::{client, root, TestGateway, Upstream};

/// Two APIs, so the chain routes have something to read and assign.
fn manifest(upstream: &str) -> String {
    tollgate_tests::keyed_pets(upstream)
        + &format!(
            r#"
[[api]]
name = "orders"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/orders"
"#
        )
}

/// Every phase: examples, coverage, fuzzing, stateful.
const ALL: &str = "examples,coverage,fuzzing,stateful";

/// How long schemathesis may run before the test gives up on it.
const BOUND: Duration = Duration::from_secs(900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_disagreement_between_the_document_and_the_server() {
    let st = root().join(".tollgate/venv/bin/st");
    if !st.exists() {
        let ci = std::env::var("CI").unwrap_or_default();
        if !ci.is_empty() && ci != "false" && ci != "0" {
            panic!(
                "CI is set but schemathesis is not installed at {}: run scripts/schemathesis",
                st.display()
            );
        }
        eprintln!(
            "SKIPPED admin_openapi: schemathesis is not installed at {} (run scripts/schemathesis, or set CI=true to make this a failure)",
            st.display()
        );
        return;
    }
    let up = Upstream::start().await;
    // With the analytics store, so that its reports answer for real.
    let gw = TestGateway::builder(&manifest(&up.url()))
        .admin()
        .gateway_toml("[analytics]\nflush-interval = \"200ms\"\n")
        .start()
        .await;
    let _ = std::fs::remove_dir_all(root().join("target/schemathesis"));
    let admin = gw.admin();
    let url = format!("{}/admin/v1/openapi.json", admin.base);
    let started = Instant::now();
    // Everything but the calls that take the runner's own token away
    // (a new token, a demotion, a deletion of its user): schemathesis
    // reuses the ids it sees, `admin` among them.
    let own = [
        "--exclude-operation-id",
        "rotateUserToken",
        "--exclude-operation-id",
        "updateUser",
        "--exclude-operation-id",
        "deleteUser",
    ];
    schemathesis(&st, &url, &admin.token, ALL, &own).await;
    // Then the users (a demotion or deletion may end the token's use),
    // and last a new token for a user (which may be the runner's), each
    // with a fresh token.
    let admin = gw.admin();
    let users = [
        "--include-tag",
        "users",
        "--exclude-operation-id",
        "rotateUserToken",
    ];
    schemathesis(&st, &url, &admin.token, ALL, &users).await;
    // (No links lead from this operation alone: no stateful phase.) A new
    // administrator: the runs before may have demoted `admin`.
    let (_, token) = gw
        .gateway
        .registry
        .create_user(
            "test",
            UserCreate {
                id: "runner-3".into(),
                role: Role::Administrator,
            },
        )
        .unwrap();
    let only = ["--include-operation-id", "rotateUserToken"];
    schemathesis(&st, &url, &token, "examples,coverage,fuzzing", &only).await;
    eprintln!("schemathesis took {:?} in all", started.elapsed());
    drop(gw);
}

/// Run `st run` against `url` with every check and phase; panic with its
/// output unless it found nothing.
async fn schemathesis(st: &std::path::Path, url: &str, token: &str, phases: &str, extra: &[&str]) {
    // The run's events, kept for a look after a failure (target/ is ignored).
    let report = root().join("target/schemathesis");
    std::fs::create_dir_all(&report).unwrap();
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(st);
    cmd.arg("--config-file")
        .arg(root().join("tests/schemathesis.toml"))
        .arg("run")
        .arg(url)
        .args(["--checks", "all"])
        .args(["--phases", phases])
        .args(["--seed", "7"])
        // One worker: hypothesis's look at its filters' source is not thread-safe
        // (an occasional KeyError inside schemathesis with two).
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(extra)
        .args(["--report", "ndjson"])
        .arg("--report-dir")
        .arg(&report)
        .current_dir(&report)
        .kill_on_drop(true);
    let out = tokio::time::timeout(BOUND, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish in {BOUND:?}"))
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "schemathesis {extra:?}: {:?}, exit {:?}\n{stdout}",
        started.elapsed(),
        out.status.code(),
    );
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    // A run that tested nothing would also exit 0.
    assert!(
        stdout.contains("Tested:") && !stdout.contains("Tested: 0"),
        "schemathesis tested nothing:\n{stdout}"
    );
}

// ---------------------------------------------------------------------------
// Each disagreement schemathesis found, on its own.

async fn start() -> (Upstream, TestGateway, tollgate_tests::admin::AdminClient) {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .admin()
        .start()
        .await;
    let admin = gw.admin();
    (up, gw, admin)
}

fn doc() -> Value {
    serde_json::from_str(tollgate::control::admin::api::OPENAPI).unwrap()
}

#[tokio::test]
async fn a_405_names_the_allowed_methods_in_allow() {
    let (_up, _gw, admin) = start().await;
    for (method, path, allow) in [
        ("TRACE", "/keys/key_0123456789abcdef", "GET, PATCH, DELETE"),
        ("PUT", "/consumers", "GET, POST"),
        ("DELETE", "/apis/pets/chain", "GET, PUT"),
        ("POST", "/openapi.json", "GET"),
    ] {
        let r = client()
            .request(method.parse().unwrap(), admin.url(path))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(
            r.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn integers_may_be_written_with_a_zero_fraction() {
    let (_up, _gw, admin) = start().await;
    admin
        .create("/products", json!({"id": "shop", "apis": ["pets"]}))
        .await;
    let plan = admin
        .create(
            "/plans",
            json!({"id": "gold", "product": "shop", "max_keys_per_app": 5.0,
                   "rate_limits": [{"requests": 10.0, "per": "second"}],
                   "quota": {"calls": 1000.0, "period": "day"}}),
        )
        .await;
    assert_eq!(plan["max_keys_per_app"], json!(5), "{plan}");
    assert_eq!(plan["rate_limits"][0]["requests"], json!(10), "{plan}");
    assert_eq!(plan["quota"]["calls"], json!(1000), "{plan}");
    let (s, v) = admin
        .patch("/plans/gold", json!({"max_keys_per_app": 3.0}))
        .await;
    assert_eq!((s, &v["max_keys_per_app"]), (200, &json!(3)), "{v}");
    // A fraction, a negative and a number out of range are still refused,
    // naming the field.
    for (body, field) in [
        (json!({"max_keys_per_app": 2.5}), "max_keys_per_app"),
        (json!({"max_keys_per_app": -1.0}), "max_keys_per_app"),
        (json!({"max_keys_per_app": 5e12}), "max_keys_per_app"),
        (
            json!({"rate_limits": [{"requests": 0.5, "per": "second"}]}),
            "rate_limits[0].requests",
        ),
    ] {
        let (s, v) = admin.patch("/plans/gold", body.clone()).await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {v}"
        );
    }
    // The rotation overlap too (the key needs a subscription).
    admin.create("/consumers", json!({"id": "alice"})).await;
    admin
        .create("/apps", json!({"id": "app", "consumer": "alice"}))
        .await;
    admin
        .create("/subscriptions", json!({"app": "app", "plan": "gold"}))
        .await;
    let k = admin
        .create("/keys", json!({"app": "app", "plan": "gold"}))
        .await;
    let id = k["key"]["id"].as_str().unwrap();
    let (s, v) = admin
        .post(
            &format!("/keys/{id}/rotate"),
            json!({"overlap_seconds": 60.0}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn an_email_is_an_address_or_left_out() {
    let (_up, _gw, admin) = start().await;
    for email in ["", "nope", "a @b.io"] {
        let (s, v) = admin
            .post("/consumers", json!({"id": "bob", "email": email}))
            .await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (400, Some("email")),
            "{email:?}: {v}"
        );
    }
    // None: the field is left out of the answer, as the document says.
    let c = admin.create("/consumers", json!({"id": "bob"})).await;
    assert!(c.get("email").is_none(), "{c}");
    let (s, v) = admin.patch("/consumers/bob", json!({"email": ""})).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("email")),
        "{v}"
    );
    let (s, v) = admin
        .patch("/consumers/bob", json!({"email": "bob@example.com"}))
        .await;
    assert_eq!((s, &v["email"]), (200, &json!("bob@example.com")), "{v}");
    // null removes it.
    let (s, v) = admin.patch("/consumers/bob", json!({"email": null})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("email").is_none(), "{v}");
    let (_, v) = admin.get("/consumers/bob").await;
    assert!(v.get("email").is_none(), "{v}");
}

/// A string of `n` characters.
fn chars(n: u64) -> String {
    "x".repeat(n as usize)
}

#[tokio::test]
async fn length_and_range_limits_are_in_the_document_and_enforced() {
    let (_up, _gw, admin) = start().await;
    let d = doc();
    let s = &d["components"]["schemas"];
    let max_len = |schema: &str, field: &str| {
        s[schema]["properties"][field]["maxLength"]
            .as_u64()
            .unwrap_or_else(|| panic!("{schema}.{field} has no maxLength"))
    };
    // Text fields: the documented maximum passes, one more is refused.
    let name = max_len("ConsumerCreate", "name");
    assert_eq!(name, 200);
    admin
        .create("/consumers", json!({"id": "a", "name": chars(name)}))
        .await;
    let (st, v) = admin
        .post("/consumers", json!({"id": "b", "name": chars(name + 1)}))
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("name")),
        "{v}"
    );
    let desc = max_len("ProductCreate", "description");
    admin
        .create("/products", json!({"id": "p", "description": chars(desc)}))
        .await;
    let (st, v) = admin
        .patch("/products/p", json!({"description": chars(desc + 1)}))
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("description")),
        "{v}"
    );
    for schema in [
        "AppCreate",
        "AppUpdate",
        "PlanCreate",
        "PlanUpdate",
        "KeyCreate",
        "KeyUpdate",
        "ProductUpdate",
        "ConsumerUpdate",
    ] {
        assert!(max_len(schema, "name") == 200, "{schema}");
    }
    // Ranges.
    let range = |schema: &str, field: &str| {
        let f = &s[schema]["properties"][field];
        (
            f["minimum"].as_u64().unwrap(),
            f["maximum"].as_u64().unwrap(),
        )
    };
    let (lo, hi) = range("RateLimit", "requests");
    assert_eq!((lo, hi), (1, 1_000_000_000));
    for (n, ok) in [(lo - 1, false), (lo, true), (hi, true), (hi + 1, false)] {
        let body = json!({"id": format!("r{n}"), "product": "p", "rate_limits": [{"requests": n, "per": "second"}]});
        let (st, v) = admin.post("/plans", body).await;
        assert_eq!(st, if ok { 201 } else { 400 }, "requests {n}: {v}");
    }
    let (lo, hi) = range("Quota", "calls");
    assert_eq!((lo, hi), (1, 1_000_000_000_000));
    let (st, v) = admin
        .post(
            "/plans",
            json!({"id": "q", "product": "p", "quota": {"calls": hi + 1, "period": "day"}}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("quota.calls")),
        "{v}"
    );
    assert_eq!(range("PlanCreate", "max_keys_per_app"), (1, 100));
    assert_eq!(range("KeyRotate", "overlap_seconds"), (0, 2_592_000));
    assert_eq!(s["PlanCreate"]["properties"]["rate_limits"]["maxItems"], 8);
    let nine: Vec<Value> = (0..9)
        .map(|_| json!({"requests": 1, "per": "second"}))
        .collect();
    let (st, _) = admin
        .post(
            "/plans",
            json!({"id": "nine", "product": "p", "rate_limits": nine}),
        )
        .await;
    assert_eq!(st, 400);
    // Generated ids have their exact form in the document.
    assert_eq!(
        s["Key"]["properties"]["id"]["pattern"],
        "^key_[0-9a-f]{16}$"
    );
    assert_eq!(
        s["Subscription"]["properties"]["id"]["pattern"],
        "^sub_[0-9a-f]{16}$"
    );
}

#[tokio::test]
async fn patch_and_create_without_a_body_are_refused() {
    let (_up, _gw, admin) = start().await;
    admin.create("/consumers", json!({"id": "c"})).await;
    for (method, path) in [
        ("PATCH", "/consumers/c"),
        ("POST", "/consumers"),
        ("PUT", "/apis/pets/chain"),
    ] {
        let (s, v) = admin
            .raw(method, path, "application/json", Vec::new())
            .await;
        assert_eq!(s, 400, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("needs a JSON body"),
            "{v}"
        );
    }
    // `{}` is a body: an update of nothing.
    let (s, v) = admin.patch("/consumers/c", json!({})).await;
    assert_eq!(s, 200, "{v}");
    // `null` is not a value for a field that is not nullable.
    let (s, v) = admin.patch("/consumers/c", json!({"name": null})).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("name")),
        "{v}"
    );
}

#[tokio::test]
async fn list_filters_are_checked() {
    let (_up, _gw, admin) = start().await;
    for (path, field) in [
        ("/apps?consumer=", "consumer"),
        ("/apps?consumer=Not%20An%20Id", "consumer"),
        ("/plans?product=-x", "product"),
        ("/subscriptions?plan=%C2%84", "plan"),
        ("/subscriptions?app=A", "app"),
        ("/keys?subscription=null", "subscription"),
        ("/keys?subscription=sub_0123", "subscription"),
        ("/keys?app=x%20y", "app"),
        ("/consumers?after=", "after"),
        ("/audit?after=%2B5", "after"),
        ("/consumers?limit=%2B5", "limit"),
    ] {
        let (s, v) = admin.get(path).await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (400, Some(field)),
            "{path}: {v}"
        );
    }
    // Well-formed filters that match nothing are an empty page.
    for path in [
        "/apps?consumer=nobody",
        "/keys?subscription=sub_0123456789abcdef",
        "/subscriptions?plan=p&app=a&state=active",
    ] {
        let (s, v) = admin.get(path).await;
        assert_eq!((s, &v["items"]), (200, &json!([])), "{path}: {v}");
    }
}

#[tokio::test]
async fn servers_names_the_listener_that_answered() {
    let (_up, gw, admin) = start().await;
    let (s, v) = admin.with_token("").get("/openapi.json").await;
    assert_eq!(s, 200);
    let addr = gw.admin_addr.unwrap();
    assert_ne!(addr.port(), 8001);
    assert_eq!(v["servers"], json!([{"url": format!("http://{addr}")}]));
}

#[tokio::test]
async fn a_patch_that_changes_nothing_writes_nothing() {
    let (_up, _gw, admin) = start().await;
    let c = admin
        .create(
            "/consumers",
            json!({"id": "c", "name": "C", "email": "c@example.com"}),
        )
        .await;
    admin.create("/products", json!({"id": "p"})).await;
    admin
        .create("/plans", json!({"id": "g", "product": "p"}))
        .await;
    admin
        .create(
            "/apps",
            json!({"id": "a", "consumer": "c", "description": "d"}),
        )
        .await;
    admin
        .create("/subscriptions", json!({"app": "a", "plan": "g"}))
        .await;
    let k = admin
        .create("/keys", json!({"app": "a", "plan": "g", "name": "k"}))
        .await;
    let key = format!("/keys/{}", k["key"]["id"].as_str().unwrap());
    // A moment, so a new updated_at would differ.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = admin.audit_len().await;
    for (path, body) in [
        (
            "/consumers/c",
            json!({"name": "C", "email": "c@example.com"}),
        ),
        ("/consumers/c", json!({})),
        (
            "/products/p",
            json!({"name": "p", "published": false, "apis": []}),
        ),
        (
            "/plans/g",
            json!({"max_keys_per_app": 2, "quota": null, "approval": "self-service"}),
        ),
        ("/apps/a", json!({"description": "d"})),
        (key.as_str(), json!({"name": "k", "expires_at": null})),
        ("/users/admin", json!({"role": "administrator"})),
    ] {
        let (_, old) = admin.get(path).await;
        let (s, v) = admin.patch(path, body.clone()).await;
        assert_eq!(s, 200, "{path} {body}: {v}");
        assert_eq!(
            v, old,
            "{path} {body}: the answer is the resource as it was"
        );
        assert_eq!(admin.get(path).await.1, old, "{path} {body}");
    }
    assert_eq!(
        admin.audit_len().await,
        before,
        "no audit entry for no change"
    );
    // A change is written, with its new updated_at and an audit entry.
    let (s, v) = admin.patch("/consumers/c", json!({"name": "New"})).await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["updated_at"], c["updated_at"], "{v}");
    assert_eq!(admin.audit_len().await, before + 1);
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let (_up, _gw, admin) = start().await;
    let good = format!("Bearer {}", admin.token);
    for pair in [
        [good.as_str(), "Bearer nope"],
        ["Bearer nope", good.as_str()],
        [good.as_str(), good.as_str()],
    ] {
        let mut headers = reqwest::header::HeaderMap::new();
        for h in pair {
            headers.append("authorization", h.parse().unwrap());
        }
        let r = client()
            .get(admin.url("/whoami"))
            .headers(headers)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{pair:?}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("one `Authorization` header"),
            "{v}"
        );
    }
    // One is fine.
    assert_eq!(admin.get("/whoami").await.0, 200);
}
