//! The developer portal in a real browser (headless Chromium over
//! WebDriver, `tollgate_tests::browser`): a consumer's whole story from
//! sign-up (approved by an administrator in the admin console) to a
//! refused call with a revoked key; password reset through the
//! file outbox; and each defence — CSRF, session fixation, open redirect,
//! XSS through every echoed field, clickjacking headers, brute force — with
//! axe-core run in every page. Set `TOLLGATE_PORTAL_SCREENSHOTS=1` to
//! rewrite the screenshots in docs/portal/.

use serde_json::{json, Value};
use std::time::Duration;
use tollgate_tests::admin::AdminClient;
use tollgate_tests::browser::{self, Browser};
use tollgate_tests::{client, TestGateway, Upstream};

const PASSWORD: &str = "a long enough password";

fn manifest(upstream: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "pets"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/pets"
methods = ["GET"]

[[api.chain]]
name = "auth"
plugin = "key-auth"
grants = ["consumers"]
"#
    )
}

struct Portal {
    _up: Upstream,
    gw: TestGateway,
    admin: AdminClient,
    base: String,
}

impl Portal {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The `.eml` files in the outbox.
    fn mail(&self) -> Vec<String> {
        let dir = self.gw.path().join("outbox");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

/// A gateway with the admin API and a moderated portal with a file outbox,
/// a published product `shop` over the API `pets` with a self-service plan
/// `basic`.
async fn start(extra: &str) -> Portal {
    assert!(
        browser::available(),
        "the portal's browser tests need {} and {} (scripts/test installs Debian's chromium and chromium-driver)",
        browser::CHROMIUM,
        browser::CHROMEDRIVER
    );
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .admin()
        .gateway_toml(&format!(
            "[portal]\naddress = \"127.0.0.1:0\"\nsignup = \"moderated\"\noutbox = \"outbox\"\n{extra}\n"
        ))
        .start()
        .await;
    let admin = gw.admin();
    admin
        .create(
            "/products",
            json!({"id": "shop", "name": "Pet shop", "description": "Pets by id.", "apis": ["pets"], "published": true, "visible_to": ["developers", "guests"]}),
        )
        .await;
    admin
        .create(
            "/plans",
            json!({"id": "basic", "product": "shop", "name": "Basic", "rate_limits": [{"requests": 100, "per": "second"}]}),
        )
        .await;
    let base = format!("http://{}", gw.portal_addr.expect("the portal listens"));
    Portal {
        _up: up,
        gw,
        admin,
        base,
    }
}

/// Wait (10 s at most) until the browser is at a URL containing `part`.
async fn at(b: &Browser, part: &str) {
    let reached = tollgate_tests::eventually(Duration::from_secs(10), || async {
        b.url().await.contains(part)
    })
    .await;
    if !reached {
        panic!(
            "not at {part} but at {}:\n{}",
            b.url().await,
            b.client.source().await.unwrap_or_default()
        );
    }
}

/// The axe-core violations of the page must be none serious or critical.
async fn accessible(b: &Browser, axe: &str, page: &str) {
    let v = b.axe(axe).await;
    assert!(v.is_empty(), "axe-core on {page}: {v:#?}");
}

async fn screenshot(b: &Browser, name: &str) {
    if std::env::var_os("TOLLGATE_PORTAL_SCREENSHOTS").is_some() {
        b.screenshot(&tollgate_tests::root().join("docs/portal").join(name))
            .await;
    }
}

async fn sign_up(b: &Browser, p: &Portal, name: &str, email: &str) {
    b.goto(&p.url("/signup")).await;
    b.fill("#name", name).await;
    b.fill("#email", email).await;
    b.fill("#password", PASSWORD).await;
    b.click("main form button[type=submit]").await;
    at(b, "/signin?done=signed-up").await;
}

async fn approve(p: &Portal, email: &str) {
    let (s, v) = p.admin.get("/accounts?state=pending").await;
    assert_eq!(s, 200, "{v}");
    let id = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["email"] == email)
        .unwrap_or_else(|| panic!("{email} is not pending: {v}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(v["items"][0].get("password_hash").is_none(), "{v}");
    let (s, v) = p
        .admin
        .post(&format!("/accounts/{id}/approve"), json!({}))
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("active")), "{v}");
}

/// An administrator signs in to the console (a browser of their own) and
/// approves the pending account of `email` on its accounts page.
async fn approve_in_console(p: &Portal, email: &str) {
    let (_, v) = p.admin.get("/accounts?state=pending").await;
    let id = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["email"] == email)
        .unwrap_or_else(|| panic!("{email} is not pending: {v}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let console = format!("http://{}/console", p.gw.admin_addr.unwrap());
    let b = Browser::start().await;
    b.console_sign_in(&console, &p.admin.token).await;
    b.press("a[href='#/accounts']").await;
    b.wait_text("main table", email).await;
    b.press(&format!("button[aria-label='Approve {id}']")).await;
    b.wait_text("#status", "Approve: done").await;
    b.close().await;
    let (_, a) = p.admin.get(&format!("/accounts/{id}")).await;
    assert_eq!(a["state"], "active", "{a}");
}

async fn sign_in(b: &Browser, p: &Portal, email: &str, password: &str, next: &str) {
    b.goto(&p.url(&format!("/signin{next}"))).await;
    b.fill("#email", email).await;
    b.fill("#password", password).await;
    b.click("main form button[type=submit]").await;
}

async fn call(p: &Portal, key: &str) -> u16 {
    client()
        .get(p.gw.url("/pets/1"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Send the app page's try-it form.
async fn try_it(b: &Browser, path: &str, credential: &str) {
    b.fill("#try-path", path).await;
    b.fill("#try-credential", credential).await;
    b.click("form[action$='/try#try'] button").await;
}

async fn secret(b: &Browser) -> String {
    b.eval("return document.getElementById('secret').value")
        .await
        .as_str()
        .expect("the new key is shown")
        .to_string()
}

#[tokio::test]
async fn a_consumer_signs_up_is_approved_subscribes_and_calls_with_a_key() {
    let p = start("[analytics]\nflush-interval = \"200ms\"").await;
    let axe = browser::axe_script();
    let b = Browser::start().await;
    b.goto(&p.url("/")).await;
    assert!(b.body_text().await.contains("Pet shop"));
    assert!(b.body_text().await.contains("GET /pets/…"));
    accessible(&b, &axe, "home").await;
    screenshot(&b, "products.png").await;
    b.goto(&p.url("/signup")).await;
    accessible(&b, &axe, "sign-up").await;
    sign_up(&b, &p, "Ann Example", "ann@example.com").await;
    accessible(&b, &axe, "sign-in").await;
    screenshot(&b, "signin.png").await;
    // Not yet approved.
    sign_in(&b, &p, "ann@example.com", PASSWORD, "").await;
    assert!(b.body_text().await.contains("awaits approval"));
    // An administrator approves the account in the admin console.
    approve_in_console(&p, "ann@example.com").await;
    sign_in(&b, &p, "ann@example.com", PASSWORD, "").await;
    assert!(b.url().await.ends_with("/apps"), "{}", b.url().await);
    accessible(&b, &axe, "apps").await;
    // An app, a subscription (self-service: active), a key shown once.
    b.fill("#name", "Pet finder").await;
    b.click("main form button[type=submit]").await;
    let app_url = b.url().await;
    assert!(app_url.contains("/apps/pet-finder-"), "{app_url}");
    accessible(&b, &axe, "app").await;
    b.click("form[action$='/subscriptions'] button").await;
    assert!(b.body_text().await.contains("Subscribed."));
    assert!(b.text("span.state").await.contains("active"));
    b.click("form[action$='/keys'] button").await;
    let key = secret(&b).await;
    assert!(key.starts_with("tg_"), "{key}");
    accessible(&b, &axe, "app with a new key").await;
    screenshot(&b, "app.png").await;
    assert_eq!(call(&p, &key).await, 200);
    // Try-it: the same call from the page, through the gateway.
    try_it(&b, "/pets/1", &key).await;
    assert_eq!(b.text("#tryit-status").await, "200");
    accessible(&b, &axe, "app with a try-it answer").await;
    screenshot(&b, "try-it.png").await;
    // The consumer's usage shows both calls (the analytics store flushes
    // every 200 ms here).
    let seen = tollgate_tests::eventually(std::time::Duration::from_secs(10), || async {
        b.goto(&p.url("/usage")).await;
        b.text("#usage-calls").await.parse::<u64>().unwrap_or(0) >= 2
    })
    .await;
    assert!(seen, "usage: {}", b.body_text().await);
    assert!(b.body_text().await.contains("pets"));
    accessible(&b, &axe, "usage").await;
    screenshot(&b, "usage.png").await;
    b.goto(&app_url).await;
    // Shown once: not on the page again.
    b.goto(&app_url).await;
    assert!(!b.client.source().await.unwrap().contains(&key));
    // Rotate: both work during the overlap; revoke both: refused.
    b.click("form[action$='/rotate'] button").await;
    let rotated = secret(&b).await;
    assert_ne!(rotated, key);
    assert_eq!(call(&p, &rotated).await, 200);
    assert_eq!(call(&p, &key).await, 200);
    for _ in 0..2 {
        b.goto(&app_url).await;
        b.click("form[action$='/revoke'] button").await;
        assert!(b.body_text().await.contains("The key is revoked"));
    }
    assert!(matches!(call(&p, &rotated).await, 401 | 403));
    assert!(matches!(call(&p, &key).await, 401 | 403));
    try_it(&b, "/pets/1", &rotated).await;
    assert_eq!(b.text("#tryit-status").await, "401");
    // Try-it reaches only the gateway: a URL or a host is not a path.
    try_it(&b, "//169.254.169.254/latest", &rotated).await;
    assert!(b.body_text().await.contains("The path must start with /"));
    // The audit log names the consumer as the actor.
    let (_, log) = p.admin.get("/audit?limit=500").await;
    let actors: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"] == "key")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(
        !actors.is_empty() && actors.iter().all(|a| a.starts_with("consumer:c-")),
        "{actors:?}"
    );
    // Sign out: the session is gone.
    b.click("form[action='/signout'] button").await;
    b.goto(&p.url("/apps")).await;
    assert!(
        b.url().await.contains("/signin?next=%2Fapps")
            || b.url().await.contains("/signin?next=/apps"),
        "{}",
        b.url().await
    );
    b.close().await;
}

#[tokio::test]
async fn password_reset_through_the_outbox_link() {
    let p = start("").await;
    let axe = browser::axe_script();
    let b = Browser::start().await;
    sign_up(&b, &p, "Bo", "bo@example.com").await;
    approve(&p, "bo@example.com").await;
    sign_in(&b, &p, "bo@example.com", PASSWORD, "").await;
    let old_session = b.cookie("tg_session").await.expect("signed in");
    b.goto(&p.url("/reset")).await;
    accessible(&b, &axe, "reset request").await;
    b.fill("#email", "BO@example.com").await;
    b.click("main form button[type=submit]").await;
    assert!(b.body_text().await.contains("on its way"));
    // An unknown email gets the same answer and no mail.
    b.goto(&p.url("/reset")).await;
    b.fill("#email", "nobody@example.com").await;
    b.click("main form button[type=submit]").await;
    assert!(b.body_text().await.contains("on its way"));
    let mail = p.mail();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert!(mail[0].contains("To: bo@example.com"), "{}", mail[0]);
    let link = mail[0]
        .lines()
        .find(|l| l.contains("/reset/confirm?token="))
        .expect("a reset link")
        .trim()
        .to_string();
    assert!(link.starts_with(&p.base), "{link}");
    b.goto(&link).await;
    accessible(&b, &axe, "reset").await;
    b.fill("#password", "a brand new password").await;
    b.click("main form button[type=submit]").await;
    assert!(b.body_text().await.contains("Your password was changed"));
    // The link works once; the old session ended; the new password works.
    b.goto(&link).await;
    assert!(b.body_text().await.contains("This link is not valid"));
    let r = client()
        .get(p.url("/apps"))
        .header("cookie", format!("tg_session={old_session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the old session ended");
    sign_in(&b, &p, "bo@example.com", PASSWORD, "").await;
    assert!(b.body_text().await.contains("Sign-in failed"));
    sign_in(&b, &p, "bo@example.com", "a brand new password", "").await;
    assert!(b.url().await.ends_with("/apps"));
    b.close().await;
}

#[tokio::test]
async fn fixation_open_redirect_and_clickjacking_are_refused() {
    let p = start("").await;
    let b = Browser::start().await;
    sign_up(&b, &p, "Cy", "cy@example.com").await;
    approve(&p, "cy@example.com").await;
    // Open redirects: each goes to /apps on the portal instead; and each
    // sign-in issues a new session id, ending the one the browser held.
    let mut seen: Vec<String> = Vec::new();
    for evil in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "/%2F%2Fevil.example",
    ] {
        sign_in(
            &b,
            &p,
            "cy@example.com",
            PASSWORD,
            &format!("?next={}", urlencode(evil)),
        )
        .await;
        assert_eq!(b.url().await, p.url("/apps"), "next={evil}");
        let session = b.cookie("tg_session").await.expect("a session");
        assert!(!seen.contains(&session), "a session id was reused");
        if let Some(before) = seen.last() {
            assert!(
                !signed_in_with(&p, before).await,
                "the old session lives on"
            );
        }
        assert!(signed_in_with(&p, &session).await);
        seen.push(session);
    }
    // A session id planted before sign-in is not promoted: the sign-in
    // answers with a new one, and the planted one stays nobody's.
    let planted = "A".repeat(43);
    let (csrf, token) = form_token(&p).await;
    let r = client()
        .post(p.url("/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("tg_csrf={csrf}; tg_session={planted}"))
        .body(format!(
            "csrf={token}&email=cy%40example.com&password={}",
            urlencode(PASSWORD)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let issued = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .ok()?
                .strip_prefix("tg_session=")
                .map(|v| v.split(';').next().unwrap().to_string())
        })
        .expect("a session cookie");
    assert_ne!(issued, planted);
    assert!(signed_in_with(&p, &issued).await);
    assert!(!signed_in_with(&p, &planted).await);
    // A same-site next is followed.
    sign_in(&b, &p, "cy@example.com", PASSWORD, "?next=%2F").await;
    assert_eq!(b.url().await, p.url("/"));
    // Clickjacking, CSP, sniffing, referrers: on every page.
    for path in ["/", "/signin", "/signup", "/reset", "/apps", "/nope"] {
        let r = client().get(p.url(path)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(
            h["content-security-policy"],
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
    }
    b.close().await;
}

/// Whether session cookie `value` is signed in (its /apps is not a
/// redirect to sign in).
async fn signed_in_with(p: &Portal, value: &str) -> bool {
    let r = client()
        .get(p.url("/apps"))
        .header("cookie", format!("tg_session={value}"))
        .send()
        .await
        .unwrap();
    r.status() == 200
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The CSRF token of the first form in `html`.
fn csrf_in(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a form with a CSRF token")
        .to_string()
}

/// Consumer `consumer` (not the signed-in one) with app `app` subscribed
/// to plan `basic`.
async fn someone_elses_app(p: &Portal, consumer: &str, app: &str) {
    p.admin.create("/consumers", json!({"id": consumer})).await;
    p.admin
        .create("/apps", json!({"id": app, "consumer": consumer}))
        .await;
    p.admin
        .create("/subscriptions", json!({"app": app, "plan": "basic"}))
        .await;
}

/// The pre-sign-in CSRF cookie and the token of the sign-in form.
async fn form_token(p: &Portal) -> (String, String) {
    let r = client().get(p.url("/signin")).send().await.unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .ok()?
                .strip_prefix("tg_csrf=")
                .map(|v| v.split(';').next().unwrap().to_string())
        })
        .expect("a CSRF cookie");
    (cookie, csrf_in(&r.text().await.unwrap()))
}

async fn post(
    p: &Portal,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut req = client()
        .post(p.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .body(body.to_string());
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

#[tokio::test]
async fn csrf_malformed_forms_other_consumers_apps_and_brute_force_are_refused() {
    let p = start(
        "lockout = { failures = 3, window = \"10m\", duration = \"10m\", client-failures = 1000 }",
    )
    .await;
    let b = Browser::start().await;
    sign_up(&b, &p, "Di", "di@example.com").await;
    approve(&p, "di@example.com").await;
    b.close().await;
    let (cookie, token) = form_token(&p).await;
    let jar = format!("tg_csrf={cookie}");
    let good = format!(
        "csrf={token}&email=di%40example.com&password={}&next=%2Fapps",
        urlencode(PASSWORD)
    );
    // Without a token, with a wrong one, without the cookie, from another
    // origin: 403, and no session.
    let no_token = format!("email=di%40example.com&password={}", urlencode(PASSWORD));
    let wrong = good.replace(&token, &"B".repeat(43));
    for (body, cookie, origin) in [
        (no_token.as_str(), jar.as_str(), None),
        (wrong.as_str(), jar.as_str(), None),
        (good.as_str(), "", None),
        (good.as_str(), jar.as_str(), Some("http://evil.example")),
        (good.as_str(), jar.as_str(), Some("null")),
    ] {
        let (s, text) = post(&p, "/signin", cookie, origin, body).await;
        assert_eq!(s, 403, "{body} {cookie} {origin:?}: {text}");
    }
    // Malformed forms: 400; too large: 413; not a form: 415.
    for bad in [
        format!("{good}&email=x%40y.io"),
        format!("{good}&admin=1"),
        good.replace("%40", "%zz"),
    ] {
        let (s, _) = post(&p, "/signin", &jar, None, &bad).await;
        assert_eq!(s, 400, "{bad}");
    }
    let (s, _) = post(
        &p,
        "/signin",
        &jar,
        None,
        &format!("{good}&x={}", "a".repeat(70_000)),
    )
    .await;
    assert_eq!(s, 413);
    let r = client()
        .post(p.url("/signin"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // The right form from this origin signs in.
    let r = client()
        .post(p.url("/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &jar)
        .header("origin", &p.base)
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .ok()?
                .strip_prefix("tg_session=")
                .map(|v| v.split(';').next().unwrap().to_string())
        })
        .expect("a session cookie");
    // Another consumer's app is not found, to look at or to take a key of.
    someone_elses_app(&p, "other", "other-app").await;
    let mine = format!("tg_session={session}");
    let page = client()
        .get(p.url("/apps"))
        .header("cookie", &mine)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_in(&page.text().await.unwrap());
    let r = client()
        .get(p.url("/apps/other-app"))
        .header("cookie", &mine)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (s, _) = post(
        &p,
        "/apps/other-app/keys",
        &mine,
        None,
        &format!("csrf={csrf}&plan=basic"),
    )
    .await;
    assert_eq!(s, 404);
    let (_, keys) = p.admin.get("/keys?app=other-app").await;
    assert_eq!(keys["items"], json!([]), "{keys}");
    // Brute force: three wrong passwords lock the account; then even the
    // right one fails, with the same text an unknown email gets.
    for i in 0..3 {
        let wrong = good.replace(&urlencode(PASSWORD), &format!("wrong-password-{i}"));
        let (s, text) = post(&p, "/signin", &jar, None, &wrong).await;
        assert_eq!(s, 401);
        assert!(text.contains("Sign-in failed"), "{text}");
    }
    let (s, locked) = post(&p, "/signin", &jar, None, &good).await;
    assert_eq!(s, 401, "locked out");
    let unknown = good.replace("di%40example.com", "nobody%40example.com");
    let (s2, nobody) = post(&p, "/signin", &jar, None, &unknown).await;
    assert_eq!(s2, 401);
    let msg = |t: &str| {
        t.split("role=\"alert\">")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(msg(&locked), msg(&nobody));
}

#[tokio::test]
async fn xss_through_every_echoed_field_is_shown_as_text() {
    let p = start("").await;
    let axe = browser::axe_script();
    let payloads = [
        "<script>window.__xss='script'</script>",
        "<img src=x onerror=\"window.__xss='img'\">",
        "\"><svg onload=\"window.__xss='svg'\">",
    ];
    let all = payloads.join(" ");
    // Descriptions and names set through the admin API.
    let (s, v) = p
        .admin
        .patch(
            "/products/shop",
            json!({"name": format!("Shop {}", payloads[0]), "description": all}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = p
        .admin
        .patch(
            "/plans/basic",
            json!({"name": format!("Basic {}", payloads[1]), "description": all}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let b = Browser::start().await;
    // The consumer's name and the app's name and description, typed in.
    sign_up(&b, &p, &format!("Eve {}", payloads[2]), "eve@example.com").await;
    approve(&p, "eve@example.com").await;
    sign_in(&b, &p, "eve@example.com", PASSWORD, "").await;
    b.fill("#name", &format!("App {}", payloads[0])).await;
    b.fill("#description", &all).await;
    b.click("main form button[type=submit]").await;
    let app_url = b.url().await;
    b.click("form[action$='/subscriptions'] button").await;
    for url in [p.url("/"), p.url("/apps"), app_url.clone()] {
        b.goto(&url).await;
        let ran = b.eval("return window.__xss || null").await;
        assert_eq!(ran, Value::Null, "a payload ran on {url}");
        let text = b.body_text().await;
        // What the server sent, byte for byte, with the browser's session.
        let session = b.cookie("tg_session").await.expect("signed in");
        let raw = client()
            .get(&url)
            .header("cookie", format!("tg_session={session}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for x in payloads {
            assert!(!raw.contains(x), "{url}: {x} is in the page unescaped");
            assert!(
                !raw.contains("<script") && !raw.contains("<svg") && !raw.contains("<img"),
                "{url}"
            );
        }
        assert!(
            text.contains("<script>window.__xss='script'</script>"),
            "{url}: the payload shows as text:\n{text}"
        );
        accessible(&b, &axe, &url).await;
    }
    let (s, v) = p.admin.get("/consumers?limit=10").await;
    assert_eq!(s, 200);
    assert!(v.to_string().contains("Eve"), "{v}");
    b.close().await;
}

#[tokio::test]
async fn under_tls_cookies_are_secure_with_the_host_prefix() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap();
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .file("portal-cert.pem", ck.cert.pem())
        .file("portal-key.pem", ck.key_pair.serialize_pem())
        .gateway_toml(
            "[portal]\naddress = \"127.0.0.1:0\"\ntls = { cert = \"portal-cert.pem\", key = \"portal-key.pem\" }\n",
        )
        .start()
        .await;
    let port = gw.portal_addr.unwrap().port();
    let c = reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c
        .get(format!("https://localhost:{port}/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("__Host-tg_csrf="), "{cookie}");
    for attr in ["; Path=/", "; HttpOnly", "; SameSite=Lax", "; Secure"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Domain="), "{cookie}");
}

#[tokio::test]
async fn a_slow_client_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .gateway_toml("[portal]\naddress = \"127.0.0.1:0\"\n")
        .start()
        .await;
    let addr = gw.portal_addr.unwrap();
    // Half a request head, then nothing: the portal closes the connection
    // after its header timeout (5 s), not never.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 15 s");
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    // A whole request on a new connection is answered.
    let r = client()
        .get(format!("http://{addr}/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `POST /oauth2/token` with HTTP Basic client authentication: the status
/// and the answer.
async fn token(p: &Portal, id: &str, secret: &str) -> (u16, Value) {
    use base64::Engine as _;
    // RFC 6749 §2.3.1: form-encoded, then base64 (the ids and secrets are
    // URL-safe already).
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let r = client()
        .post(p.gw.url("/oauth2/token"))
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn oauth_client_credentials_are_issued_rotated_and_revoked_from_the_portal() {
    let p = start("\n[oauth]\nissuer = \"https://auth.tollgate.test\"\n").await;
    let axe = browser::axe_script();
    let b = Browser::start().await;
    sign_up(&b, &p, "Olu", "olu@example.com").await;
    approve(&p, "olu@example.com").await;
    sign_in(&b, &p, "olu@example.com", PASSWORD, "").await;
    b.fill("#name", "Backend").await;
    b.click("main form button[type=submit]").await;
    let app_url = b.url().await;
    b.click("form[action$='/subscriptions'] button").await;
    // A client: its id and secret shown once, with the token endpoint.
    b.click("form[action$='/oauth-clients'] button").await;
    let read = |id: &'static str| {
        let b = &b;
        async move {
            b.eval(&format!("return document.getElementById('{id}').value"))
                .await
                .as_str()
                .unwrap_or_else(|| panic!("#{id} is shown"))
                .to_string()
        }
    };
    let (id, secret) = (read("client-id").await, read("client-secret").await);
    assert!(
        id.starts_with("oc_") && secret.starts_with("tgs_"),
        "{id} {secret}"
    );
    assert_eq!(
        b.text("#token-url").await,
        p.gw.url("/oauth2/token"),
        "the page names the gateway's token endpoint"
    );
    accessible(&b, &axe, "app with new OAuth client credentials").await;
    screenshot(&b, "oauth-client.png").await;
    let (s, t) = token(&p, &id, &secret).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer", "{t}");
    // Shown once.
    b.goto(&app_url).await;
    assert!(!b.client.source().await.unwrap().contains(&secret));
    assert!(b.body_text().await.contains(&id));
    // Rotate: a new secret; the old one works through the overlap.
    b.click("form[action$='/rotate'][action*='/oauth-clients/'] button")
        .await;
    let rotated = read("client-secret").await;
    assert_ne!(rotated, secret);
    assert_eq!(read("client-id").await, id, "the same client");
    assert_eq!(token(&p, &id, &rotated).await.0, 200);
    assert_eq!(token(&p, &id, &secret).await.0, 200);
    assert!(b
        .body_text()
        .await
        .contains("the previous secret works until"));
    // Another consumer's client is not found from this account.
    someone_elses_app(&p, "someone", "their-app").await;
    let theirs = p
        .admin
        .create(
            "/oauth-clients",
            json!({"app": "their-app", "plan": "basic"}),
        )
        .await;
    let their_id = theirs["client_id"].as_str().unwrap().to_string();
    let app_path = app_url.trim_start_matches(&p.base).to_string();
    let csrf = csrf_in(&b.client.source().await.unwrap());
    let cookie = format!("tg_session={}", b.cookie("tg_session").await.unwrap());
    let (s, _) = post(
        &p,
        &format!("{app_path}/oauth-clients/{their_id}/revoke"),
        &cookie,
        None,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(s, 404);
    let (_, c) = p.admin.get(&format!("/oauth-clients/{their_id}")).await;
    assert!(c["revoked_at"].is_null(), "{c}");
    // Revoke: no token with either secret.
    b.goto(&app_url).await;
    b.click("form[action$='/revoke'][action*='/oauth-clients/'] button")
        .await;
    assert!(b.body_text().await.contains("The OAuth client is revoked"));
    for s in [&rotated, &secret] {
        let (status, t) = token(&p, &id, s).await;
        assert_eq!(
            (status, t["error"].as_str()),
            (401, Some("invalid_client")),
            "{t}"
        );
    }
    // The audit log names the consumer.
    let (_, log) = p.admin.get("/audit?limit=500").await;
    let actions: Vec<(String, String)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"] == "oauth-client" && e["id"] == id.as_str())
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert!(
        actions.iter().all(|(_, a)| a.starts_with("consumer:c-")),
        "{actions:?}"
    );
    b.close().await;
}

#[tokio::test]
async fn one_client_guessing_many_accounts_is_locked_out() {
    // Per account the limit is high; per client address it is 4 failures.
    let p = start(
        "lockout = { failures = 100, window = \"10m\", duration = \"10m\", client-failures = 4 }",
    )
    .await;
    let b = Browser::start().await;
    sign_up(&b, &p, "Ed", "ed@example.com").await;
    approve(&p, "ed@example.com").await;
    // Four accounts guessed once each from this address: each fails.
    for i in 0..4 {
        sign_in(
            &b,
            &p,
            &format!("guess{i}@example.com"),
            "not the password",
            "",
        )
        .await;
        assert!(b.body_text().await.contains("Sign-in failed"), "guess {i}");
    }
    // Now even a real account with its right password is refused from
    // here, with the same words as any failure.
    sign_in(&b, &p, "ed@example.com", PASSWORD, "").await;
    assert!(b.body_text().await.contains("Sign-in failed"));
    assert!(b.cookie("tg_session").await.is_none(), "no session");
    // The reset form is no way around it either.
    b.goto(&p.url("/reset")).await;
    b.fill("#email", "ed@example.com").await;
    b.click("main form button[type=submit]").await;
    assert!(b.body_text().await.contains("Too many attempts"));
    assert!(p.mail().is_empty(), "no mail sent");
    b.close().await;
}

/// A real SMTP server: aiosmtpd (from PyPI, in .tollgate/venv) on
/// `127.0.0.1:port`, requiring STARTTLS with `cert` and `key`, storing
/// what it accepts in the Maildir `maildir`. Killed when dropped.
struct SmtpServer {
    child: std::process::Child,
}

impl SmtpServer {
    fn start(
        port: u16,
        cert: &std::path::Path,
        key: &std::path::Path,
        maildir: &std::path::Path,
    ) -> SmtpServer {
        let python = tollgate_tests::root().join(".tollgate/venv/bin/python");
        let child = std::process::Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .arg("--tlscert")
            .arg(cert)
            .arg("--tlskey")
            .arg(key)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd starts (scripts/schemathesis installs it into .tollgate/venv)");
        SmtpServer { child }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The messages in a Maildir's `new/`.
fn maildir(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("new"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn reset_mail_waits_in_the_outbox_until_the_smtp_server_takes_it_over_starttls() {
    let python = tollgate_tests::root().join(".tollgate/venv/bin/python");
    let has = std::process::Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has,
        "aiosmtpd is not installed in .tollgate/venv: run scripts/schemathesis"
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = tollgate_tests::tls_upstream::TestCa::new("mail test CA");
    let ca_path = ca.write(dir.path(), "mail-ca.pem");
    let (cert, key) = ca.server(&["127.0.0.1"]).write(dir.path(), "mail");
    let port = tollgate_tests::free_port();
    let p = start(&format!(
        "smtp = {{ host = \"127.0.0.1\", port = {port}, ca = \"{}\", timeout = \"5s\", from = \"Dev portal <portal@example.com>\" }}",
        ca_path.display()
    ))
    .await;
    let b = Browser::start().await;
    sign_up(&b, &p, "Sam", "sam@example.com").await;
    approve(&p, "sam@example.com").await;
    b.goto(&p.url("/reset")).await;
    b.fill("#email", "sam@example.com").await;
    b.click("main form button[type=submit]").await;
    assert!(b.body_text().await.contains("on its way"));
    // The server is not there yet: the message waits in the outbox.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(p.mail().len(), 1, "spooled while the server is down");
    let inbox = dir.path().join("maildir");
    let _smtp = SmtpServer::start(port, &cert, &key, &inbox);
    let delivered = tollgate_tests::eventually(Duration::from_secs(30), || async {
        maildir(&inbox).len() == 1 && p.mail().is_empty()
    })
    .await;
    assert!(
        delivered,
        "delivered: {:?}, waiting: {}",
        maildir(&inbox),
        p.mail().len()
    );
    let mail = maildir(&inbox).remove(0);
    assert!(
        mail.contains("From: Dev portal <portal@example.com>"),
        "{mail}"
    );
    assert!(mail.contains("X-MailFrom: portal@example.com"), "{mail}");
    assert!(mail.contains("X-RcptTo: sam@example.com"), "{mail}");
    // The link from the relayed mail works.
    let link = mail
        .lines()
        .find(|l| l.contains("/reset/confirm?token="))
        .expect("a reset link")
        .trim()
        .to_string();
    b.goto(&link).await;
    b.fill("#password", "a relayed new password").await;
    b.click("main form button[type=submit]").await;
    assert!(b.body_text().await.contains("Your password was changed"));
    sign_in(&b, &p, "sam@example.com", "a relayed new password", "").await;
    assert!(b.url().await.ends_with("/apps"), "{}", b.url().await);
    b.close().await;
}

#[tokio::test]
async fn the_products_page_shows_versions_and_their_lifecycle() {
    let up = Upstream::start().await;
    let u = up.url();
    let api = |name: &str, extra: &str| {
        format!(
            "\n[[api]]\nname = \"{name}\"\nupstream = {{ targets = [\"{u}\"] }}\n{extra}\n[[api.route]]\npath = \"/pets/{{id}}\"\n"
        )
    };
    let mut m = String::from(
        "schema = 1\n[[version-set]]\nname = \"pets\"\nscheme = \"header\"\nheader = \"api-version\"\ndefault = \"v2\"\n",
    );
    m += &api(
        "pets-v1",
        "version-set = \"pets\"\nversion = \"v1\"\nlifecycle = { state = \"deprecated\", deprecated-at = 2026-06-01T00:00:00Z, sunset = 2027-01-01T00:00:00Z, successor = \"pets-v2\" }",
    );
    m += &api("pets-v2", "version-set = \"pets\"\nversion = \"v2\"");
    let gw = TestGateway::builder(&m)
        .admin()
        .gateway_toml("[portal]\naddress = \"127.0.0.1:0\"\n")
        .start()
        .await;
    let admin = gw.admin();
    admin
        .create(
            "/products",
            json!({"id": "pets", "name": "Pets", "apis": ["pets-v1", "pets-v2"], "published": true, "visible_to": ["guests"]}),
        )
        .await;
    let base = format!("http://{}", gw.portal_addr.unwrap());
    let axe = browser::axe_script();
    let b = Browser::start().await;
    b.goto(&format!("{base}/")).await;
    let text = b.body_text().await;
    assert!(
        text.contains("version v1 of pets (by header api-version: v1)"),
        "{text}"
    );
    assert!(
        text.contains("deprecated, served until 2027-01-01T00:00:00Z: move to pets-v2"),
        "{text}"
    );
    assert!(text.contains("version v2 of pets"), "{text}");
    let v = b.axe(&axe).await;
    assert!(v.is_empty(), "axe-core: {v:#?}");
    // Retired through the admin API: the page says so.
    let (s, v) = admin
        .put(
            "/apis/pets-v1/lifecycle",
            json!({"state": "retired", "successor": "pets-v2"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let retired = tollgate_tests::eventually(Duration::from_secs(10), || async {
        b.goto(&format!("{base}/")).await;
        b.body_text()
            .await
            .contains("retired: no longer served; use pets-v2")
    })
    .await;
    assert!(retired, "{}", b.body_text().await);
    b.close().await;
}

#[tokio::test]
async fn a_consumer_sees_the_products_of_their_groups_and_regenerates_subscription_keys() {
    let p = start("").await;
    let axe = browser::axe_script();
    p.admin.create("/groups", json!({"id": "partners"})).await;
    p.admin
        .create(
            "/products",
            json!({"id": "deals", "name": "Partner deals", "apis": ["pets"], "published": true,
                   "access": "authenticated", "visible_to": ["partners"]}),
        )
        .await;
    p.admin
        .create(
            "/plans",
            json!({"id": "deal", "product": "deals", "name": "Deal"}),
        )
        .await;
    // A visitor (guests) sees the shop, not the partners' product.
    let b = Browser::start().await;
    b.goto(&p.url("/")).await;
    let text = b.body_text().await;
    assert!(
        text.contains("Pet shop") && !text.contains("Partner deals"),
        "{text}"
    );
    sign_up(&b, &p, "Pat Partner", "pat@example.com").await;
    approve(&p, "pat@example.com").await;
    sign_in(&b, &p, "pat@example.com", PASSWORD, "").await;
    at(&b, "/apps").await;
    b.goto(&p.url("/")).await;
    assert!(!b.body_text().await.contains("Partner deals"));
    // Once a member of `partners`, the product shows, marked open.
    let (_, accounts) = p.admin.get("/accounts").await;
    let consumer = accounts["items"][0]["consumer"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = p
        .admin
        .put(&format!("/groups/partners/members/{consumer}"), json!({}))
        .await;
    assert_eq!(s, 204, "{v}");
    b.goto(&p.url("/")).await;
    let text = b.body_text().await;
    assert!(text.contains("Partner deals"), "{text}");
    assert!(
        text.contains("with any of your keys, no subscription needed"),
        "{text}"
    );
    accessible(&b, &axe, "home with an open product").await;
    // An app subscribed to the shop's plan: its subscription keys are
    // regenerated from the page, one at a time.
    b.goto(&p.url("/apps")).await;
    b.fill("#name", "Deal finder").await;
    b.click("main form button[type=submit]").await;
    let app_url = b.url().await;
    b.eval("document.getElementById('plan').value = 'basic'; return null")
        .await;
    b.click("form[action$='/subscriptions'] button").await;
    assert!(b.body_text().await.contains("Subscribed."));
    b.click("form[action$='/keys/primary/regenerate'] button")
        .await;
    let primary = secret(&b).await;
    assert!(b.body_text().await.contains("primary subscription key"));
    accessible(&b, &axe, "app with a regenerated subscription key").await;
    assert_eq!(call(&p, &primary).await, 200);
    b.goto(&app_url).await;
    b.click("form[action$='/keys/secondary/regenerate'] button")
        .await;
    let secondary = secret(&b).await;
    assert_eq!(call(&p, &secondary).await, 200);
    assert_eq!(call(&p, &primary).await, 200);
    b.goto(&app_url).await;
    b.click("form[action$='/keys/primary/regenerate'] button")
        .await;
    let primary2 = secret(&b).await;
    assert_eq!(call(&p, &primary).await, 401);
    assert_eq!(call(&p, &primary2).await, 200);
    assert_eq!(call(&p, &secondary).await, 200);
    b.close().await;
}
