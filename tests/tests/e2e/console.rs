//! The admin console (`/console` on the admin listener) in a real browser:
//! headless Chromium over WebDriver (tests/src/browser.rs). An administrator
//! signs in with their token and works through the approval queue and the
//! keys; each role sees and can do exactly what the admin API lets it;
//! echoed names cannot run script; the page cannot be framed; axe-core
//! finds no serious or critical violation.

use serde_json::{json, Value};
use std::time::Duration;
use tollgate_tests::admin::AdminClient;
use tollgate_tests::browser::{self, Browser};
use tollgate_tests::*;

fn manifest(upstream: &str) -> String {
    tollgate_tests::keyed_pets(upstream)
}

struct Console {
    _up: Upstream,
    gw: TestGateway,
    admin: AdminClient,
    axe: String,
}

impl Console {
    fn url(&self, hash: &str) -> String {
        format!("http://{}/console{hash}", self.gw.admin_addr.unwrap())
    }
}

/// A gateway with the admin API and the analytics store; `None` (the test
/// is skipped, saying so) without Chromium unless CI is set.
async fn start() -> Option<Console> {
    if !browser::available() {
        let ci = std::env::var("CI").unwrap_or_default();
        assert!(
            ci.is_empty() || ci == "false" || ci == "0",
            "CI is set but Chromium or chromedriver is missing: scripts/test installs them"
        );
        eprintln!(
            "SKIPPED console: no {} (scripts/test installs it)",
            browser::CHROMEDRIVER
        );
        return None;
    }
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .admin()
        .gateway_toml("[analytics]\nflush-interval = \"200ms\"\n")
        .start()
        .await;
    let admin = gw.admin();
    Some(Console {
        _up: up,
        gw,
        admin,
        axe: browser::axe_script(),
    })
}

/// With `TOLLGATE_CONSOLE_SCREENSHOTS` set, a PNG of the page into
/// docs/console/ (the README links them).
async fn screenshot(b: &Browser, name: &str) {
    if std::env::var_os("TOLLGATE_CONSOLE_SCREENSHOTS").is_some() {
        b.screenshot(&root().join("docs/console").join(name)).await;
    }
}

/// Sign in with `token`; wait for the dashboard.
async fn sign_in(b: &Browser, c: &Console, token: &str) {
    b.console_sign_in(&c.url(""), token).await;
}

/// Open a section and wait for its heading.
async fn open(b: &Browser, c: &Console, hash: &str, heading: &str) {
    b.goto(&c.url(hash)).await;
    b.wait_text("main h1", heading).await;
}

async fn nav(b: &Browser) -> Vec<String> {
    let v = b
        .eval("return [...document.querySelectorAll('#nav a')].map(a => a.textContent)")
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

async fn count(b: &Browser, css: &str) -> u64 {
    b.eval(&format!("return document.querySelectorAll({css:?}).length"))
        .await
        .as_u64()
        .unwrap()
}

/// Fill the create form's fields and submit it.
async fn create(b: &Browser, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        b.fill(&format!("#f-{name}"), value).await;
    }
    b.press("form.card button[type=submit]").await;
}

async fn call(c: &Console, key: &str) -> u16 {
    client()
        .get(c.gw.url("/pets/1"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_approves_a_subscription_and_manages_its_key() {
    let Some(c) = start().await else { return };
    let b = Browser::start().await;
    b.goto(&c.url("")).await;
    let v = b.axe(&c.axe).await;
    assert!(v.is_empty(), "axe-core on the sign-in page: {v:#?}");
    // A wrong token: refused, still signed out.
    b.fill("#token", "tga_not-a-token").await;
    b.press("main form button[type=submit]").await;
    b.wait_text("#status", "Sign-in").await;
    assert_eq!(count(&b, "#nav a").await, 0);

    sign_in(&b, &c, &c.admin.token).await;
    assert!(nav(&b).await.contains(&"Audit log".to_string()));
    b.wait_text("main", "Calls by API").await;

    // Products, plans, consumers, apps through the console's forms.
    open(&b, &c, "#/products", "Products").await;
    create(&b, &[("id", "shop"), ("apis", "pets")]).await;
    b.wait_text("#status", "Created").await;
    b.wait_text("main table", "shop").await;
    let v = b.axe(&c.axe).await;
    assert!(v.is_empty(), "axe-core on the products page: {v:#?}");
    open(&b, &c, "#/plans", "Plans").await;
    b.eval("document.getElementById('f-approval').value = 'moderated'; return null")
        .await;
    create(&b, &[("id", "gold"), ("product", "shop")]).await;
    b.wait_text("main table", "moderated").await;
    c.admin.create("/consumers", json!({"id": "alice"})).await;
    c.admin
        .create("/apps", json!({"id": "web", "consumer": "alice"}))
        .await;

    // A subscription to a moderated plan waits for approval.
    open(&b, &c, "#/subscriptions", "Subscriptions").await;
    create(&b, &[("app", "web"), ("plan", "gold")]).await;
    b.wait_text("main table", "pending").await;
    let v = b.axe(&c.axe).await;
    assert!(v.is_empty(), "axe-core on the subscriptions page: {v:#?}");
    screenshot(&b, "subscriptions.png").await;
    b.press("button[aria-label^='Approve sub_']").await;
    b.wait_text("main table", "active").await;
    let (_, subs) = c.admin.get("/subscriptions?app=web").await;
    assert_eq!(subs["items"][0]["state"], "active");

    // A key: its secret shown once, working at the gateway, then revoked.
    open(&b, &c, "#/keys", "API keys").await;
    create(&b, &[("app", "web"), ("plan", "gold")]).await;
    b.wait_text("[data-secret]", "tg_").await;
    screenshot(&b, "keys.png").await;
    let key = b.text("[data-secret]").await;
    assert_eq!(call(&c, &key).await, 200);
    b.press("button[aria-label^='Revoke key_']").await;
    b.wait_text("#status", "Revoke: done").await;
    assert_eq!(call(&c, &key).await, 401);

    // The subscription's own primary key, regenerated here: shown once,
    // working at the gateway.
    open(&b, &c, "#/subscriptions", "Subscriptions").await;
    b.press("button[aria-label^='Regenerate primary key sub_']")
        .await;
    b.wait_text("[data-secret]", "tg_").await;
    let primary = b.text("[data-secret]").await;
    assert_eq!(call(&c, &primary).await, 200);
    let v = b.axe(&c.axe).await;
    assert!(v.is_empty(), "axe-core on a regenerated key: {v:#?}");

    // Groups: the system ones listed, a custom one created here.
    open(&b, &c, "#/groups", "Groups").await;
    b.wait_text("main table", "developers").await;
    create(&b, &[("id", "partners")]).await;
    b.wait_text("main table", "partners").await;

    // The audit log shows what the console did, as the administrator.
    open(&b, &c, "#/audit", "Audit log").await;
    b.wait_text("main table", "approve").await;
    open(&b, &c, "", "Dashboard").await;
    b.wait_text("main", "Calls by API").await;
    let called = eventually(Duration::from_secs(10), || async {
        b.goto(&c.url("")).await;
        b.wait_text("main", "Calls by API").await;
        count(&b, "svg.chart rect").await > 0
    })
    .await;
    assert!(
        called,
        "the dashboard shows no call: {}",
        b.body_text().await
    );
    screenshot(&b, "dashboard.png").await;
    open(&b, &c, "#/audit", "Audit log").await;
    b.wait_text("main table", "approve").await;
    let text = b.text("main table").await;
    for action in ["create", "approve", "revoke"] {
        assert!(text.contains(action), "{action}: {text}");
    }
    // Signing out forgets the token.
    b.press("#signout").await;
    b.wait_text("main", "Sign in").await;
    let kept = b
        .eval("return sessionStorage.getItem('tollgate-admin-token')")
        .await;
    assert_eq!(kept, Value::Null);
    b.close().await;
}

/// A moderated sign-up waits in the console's queue; the administrator
/// approves it there, and disables it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_approves_a_portal_sign_up_in_the_console() {
    let Some(c) = start().await else { return };
    use tollgate::control::admin::registry::{hash_password, SignUp};
    let account =
        c.gw.gateway
            .registry
            .sign_up(
                "portal",
                SignUp {
                    email: "dana@example.com".into(),
                    name: "Dana".into(),
                    password_hash: hash_password("a long enough password").unwrap(),
                    state: tollgate::control::admin::model::AccountState::Pending,
                },
            )
            .unwrap();
    let b = Browser::start().await;
    sign_in(&b, &c, &c.admin.token).await;
    b.wait_text("main", "1 portal account(s)").await;
    b.press("a[href='#/accounts']").await;
    b.wait_text("main table", "dana@example.com").await;
    let v = b.axe(&c.axe).await;
    assert!(v.is_empty(), "axe-core on the accounts page: {v:#?}");
    b.press(&format!("button[aria-label='Approve {}']", account.id))
        .await;
    b.wait_text("#status", "Approve: done").await;
    let (_, a) = c.admin.get(&format!("/accounts/{}", account.id)).await;
    assert_eq!(a["state"], "active", "{a}");
    b.press(&format!("button[aria-label='Disable {}']", account.id))
        .await;
    b.wait_text("#status", "Disable: done").await;
    let (_, a) = c.admin.get(&format!("/accounts/{}", account.id)).await;
    assert_eq!(a["state"], "disabled", "{a}");
    // Accounts are not deleted from the console (there is no such call).
    assert_eq!(count(&b, "button[aria-label^='Delete acct_']").await, 0);
    b.close().await;
}

/// What each role is offered: the sections it may read, the forms and
/// buttons of the changes it may make, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_sees_and_can_do_exactly_what_it_may() {
    let Some(c) = start().await else { return };
    c.admin
        .create("/products", json!({"id": "shop", "apis": ["pets"]}))
        .await;
    c.admin
        .create(
            "/plans",
            json!({"id": "gold", "product": "shop", "approval": "moderated"}),
        )
        .await;
    c.admin.create("/consumers", json!({"id": "alice"})).await;
    c.admin
        .create("/apps", json!({"id": "web", "consumer": "alice"}))
        .await;
    c.admin
        .create("/subscriptions", json!({"app": "web", "plan": "gold"}))
        .await;
    let b = Browser::start().await;
    // (role, may write products, may write subscriptions, may edit chains)
    for (role, products, subs, chains) in [
        ("administrator", true, true, true),
        ("api-manager", true, false, true),
        ("community-manager", false, true, false),
        ("reports-user", false, false, false),
    ] {
        let (s, u) = c
            .admin
            .post("/users", json!({"id": format!("u-{role}"), "role": role}))
            .await;
        assert_eq!(s, 201, "{u}");
        sign_in(&b, &c, u["token"].as_str().unwrap()).await;
        let sections = nav(&b).await;
        let admin_only = role == "administrator";
        for s in ["Admin users", "Audit log"] {
            assert_eq!(
                sections.contains(&s.to_string()),
                admin_only,
                "{role}: {sections:?}"
            );
        }
        for s in [
            "Products",
            "Plans",
            "Consumers",
            "Subscriptions",
            "API keys",
            "APIs",
        ] {
            assert!(sections.contains(&s.to_string()), "{role}: {sections:?}");
        }
        open(&b, &c, "#/products", "Products").await;
        b.wait_text("main table", "shop").await;
        assert_eq!(
            count(&b, "form.card").await > 0,
            products,
            "{role}: products form"
        );
        assert_eq!(
            count(&b, "main table button").await > 0,
            products,
            "{role}: product buttons"
        );
        open(&b, &c, "#/subscriptions", "Subscriptions").await;
        b.wait_text("main table", "pending").await;
        assert_eq!(
            count(&b, "button[aria-label^='Approve']").await > 0,
            subs,
            "{role}: approve"
        );
        open(&b, &c, "#/apis/pets", "API pets").await;
        b.wait_text("main", "Policy chain").await;
        assert_eq!(
            count(&b, "textarea#f-chain").await > 0,
            chains,
            "{role}: chain editor"
        );
        // An admin-only page by its address: refused in the page too.
        b.goto(&c.url("#/users")).await;
        if !admin_only {
            b.wait_text("main", "may not see it").await;
        } else {
            b.wait_text("main h1", "Admin users").await;
        }
        b.press("#signout").await;
        b.wait_text("main", "Sign in").await;
    }
    b.close().await;
}

/// Names set through the API with markup are shown as text, never run; the
/// console cannot be framed and allows no inline script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_fields_cannot_run_script_and_the_page_cannot_be_framed() {
    let Some(c) = start().await else { return };
    let payloads = [
        "<img src=x onerror=\"window.__xss=1\">",
        "\"><script>window.__xss=2</script>",
        "javascript:window.__xss=3",
    ];
    for (i, p) in payloads.iter().enumerate() {
        let (s, v) = c
            .admin
            .post("/consumers", json!({"id": format!("c{i}"), "name": p}))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    c.admin
        .create(
            "/products",
            json!({"id": "p", "name": payloads[1], "description": payloads[0]}),
        )
        .await;
    let b = Browser::start().await;
    sign_in(&b, &c, &c.admin.token).await;
    open(&b, &c, "#/consumers", "Consumers").await;
    b.wait_text("main table", "window.__xss=1").await;
    open(&b, &c, "#/products", "Products").await;
    b.wait_text("main table", "<script>").await;
    let ran = b
        .eval("return window.__xss === undefined ? null : window.__xss")
        .await;
    assert_eq!(ran, Value::Null, "a payload ran");
    assert_eq!(count(&b, "main img, main table script").await, 0);
    // The page's headers: a strict CSP, no framing, no sniffing.
    let r = client().get(c.url("")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // A page that frames the console gets nothing: Chromium refuses it.
    let inside = b
        .client
        .execute_async(
            &format!(
                "const done = arguments[arguments.length - 1];
                 const f = document.createElement('iframe');
                 f.onload = () => {{ try {{ done(f.contentDocument.body.innerText) }} catch (e) {{ done('blocked') }} }};
                 setTimeout(() => done('no load'), 5000);
                 f.src = {:?}; document.body.append(f);",
                c.url("")
            ),
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(
        inside.as_str().is_some_and(|t| !t.contains("Sign in")),
        "the console rendered inside a frame: {inside}"
    );
    // Anything but GET and HEAD is refused.
    let r = client().post(c.url("")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    b.close().await;
}
