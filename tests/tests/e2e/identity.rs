//! Identity: what a client says about itself is never trusted, and its
//! secrets never reach a log.
//!
//! - Client-sent `X-Forwarded-*`, `Forwarded`, `X-Real-IP` and friends,
//!   URL overrides (`X-Original-URL`) and consumer headers (`x-consumer-*`)
//!   are gone before the first policy step, and the upstream gets the
//!   gateway's own `X-Forwarded-*` and the consumer the authentication step
//!   found, whatever the client sent.
//! - The real binary runs with debug logs and an access log; requests carry
//!   API keys (header and query), bearer JWTs, Basic credentials, cookies and
//!   admin tokens, valid and not; no secret appears anywhere in what it
//!   wrote. A plugin's log text with control characters comes out escaped.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::*;

const KEY: &str = "identity-key-5d0c7be2f1";
const WRONG_KEY: &str = "identity-wrong-key-90ac41";
const JWT_SECRET: &str = "identity jwt secret, at least 32 bytes long";

fn hs256(claims: &serde_json::Value, secret: &str) -> String {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(json!({ "alg": "HS256", "typ": "JWT" })
            .to_string()
            .as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = ring::hmac::sign(&k, input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

fn claims(sub: &str) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({ "sub": sub, "exp": now + 600, "iat": now })
}

fn consumer() -> String {
    format!(
        r#"
[[consumer]]
id = "ops"
plan = "gold"
keys = [{{ id = "k1", sha256 = "{}" }}]
"#,
        key_digest_hex(KEY)
    )
}

/// Three APIs on one upstream: `/keyed` (key-auth), `/jwt` (jwt with a
/// forwarded claim) and `/open` (no authentication). Each chain ends with
/// `fixture-observe` (`observe` is extra config for it).
fn manifest(up: &str, access_log: bool, observe: &str) -> String {
    let log_step = if access_log {
        r#"
[[api.chain]]
plugin = "access-log"
grants = ["timing", "sink"]
[api.chain.config]
include-query = true
headers = ["authorization", "cookie", "x-api-key", "proxy-authorization", "user-agent"]
response-headers = ["set-cookie", "content-type"]
"#
    } else {
        ""
    };
    format!(
        r#"schema = 1

[[api]]
name = "keyed"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
prefix = "/keyed"
{log_step}
[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]
config = {{ query = "api_key" }}
[[api.chain]]
plugin = "fixture-observe"
{observe}

[[api]]
name = "jwt"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
prefix = "/jwt"
{log_step}
[[api.chain]]
plugin = "jwt"
grants = ["crypto", "cache", "consumers", "http:localhost"]
[api.chain.config]
algorithms = ["HS256"]
secret = "{JWT_SECRET}"
cookie = "session"
query = "access_token"
forward-claims = {{ sub = "x-user-id" }}
[[api.chain]]
plugin = "fixture-observe"
{observe}

[[api]]
name = "open"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
prefix = "/open"
{log_step}
[[api.chain]]
plugin = "fixture-observe"
{observe}
{consumer}"#,
        consumer = consumer(),
    )
}

/// Forged identity fields, as a client would send them (several twice,
/// and in odd case).
const FORGED: &[(&str, &str)] = &[
    ("X-Forwarded-For", "6.6.6.6"),
    ("x-forwarded-for", "7.7.7.7, 8.8.8.8"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Server", "evil"),
    ("Forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-Client-IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("X-Cluster-Client-IP", "6.6.6.6"),
    ("X-Original-URL", "/admin-only"),
    ("X-Rewrite-URL", "/admin-only"),
    ("X-Consumer-Id", "root"),
    ("x-consumer-id", "admin"),
    ("X-Consumer-Plan", "platinum"),
    ("X-Consumer-App", "evil-app"),
    ("X-Consumer-Groups", "admins"),
];

/// Fields the gateway sets itself; everything else in `FORGED` must be gone.
const SET_BY_GATEWAY: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-consumer-id",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_a_policy_or_the_upstream() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&manifest(&up.url(), false, "")).await;
    let c = client();
    let forged = |rb: reqwest::RequestBuilder| {
        FORGED
            .iter()
            .fold(rb, |rb, (n, v)| rb.header(*n, *v))
            .header("host", "api.example.com")
    };
    let token = hs256(&claims("alice"), JWT_SECRET);
    for (path, auth) in [
        ("/keyed/x", Some(("x-api-key", KEY.to_string()))),
        // The jwt step forwards the `sub` claim as `x-user-id`: a forged
        // one must not survive it.
        ("/jwt/x", Some(("authorization", format!("Bearer {token}")))),
        ("/open/x", None),
    ] {
        let mut rb = forged(c.get(gw.url(path)));
        if let Some((n, v)) = &auth {
            rb = rb.header(*n, v);
        }
        if path == "/jwt/x" {
            rb = rb.header("X-User-Id", "root").header("x-user-id", "admin");
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let seen = up.last();
        assert_eq!(seen.path_and_query, path);
        // The policy step saw none of the forged fields.
        let policy_saw = seen.header("x-policy-headers").unwrap().to_string();
        for (n, _) in FORGED {
            let n = n.to_ascii_lowercase();
            // Authentication steps before it may have set their own.
            let set_by_auth = path == "/keyed/x" && n == "x-consumer-id";
            assert!(
                set_by_auth || !policy_saw.split(',').any(|h| h == n),
                "{path}: the policy saw a forged {n}: {policy_saw}"
            );
        }
        // The upstream: the gateway's own forwarding fields, once each.
        assert_eq!(
            seen.header_all("x-forwarded-for"),
            vec!["127.0.0.1"],
            "{path}"
        );
        assert_eq!(seen.header_all("x-forwarded-proto"), vec!["http"], "{path}");
        assert_eq!(
            seen.header_all("x-forwarded-host"),
            vec!["api.example.com"],
            "{path}"
        );
        for (n, _) in FORGED {
            let n = n.to_ascii_lowercase();
            if !SET_BY_GATEWAY.contains(&n.as_str()) {
                assert_eq!(seen.header(&n), None, "{path}: {n} passed through");
            }
        }
        // Consumer and claim fields: only what authentication found.
        let (consumer, user): (Vec<&str>, Vec<&str>) = match path {
            "/keyed/x" => (vec!["ops"], vec![]),
            "/jwt/x" => (vec![], vec!["alice"]),
            _ => (vec![], vec![]),
        };
        assert_eq!(seen.header_all("x-consumer-id"), consumer, "{path}");
        if path == "/jwt/x" {
            assert_eq!(seen.header_all("x-user-id"), user, "{path}");
        }
    }
}

// ---------------------------------------------------------------------------
// Secrets and logs

/// What a plugin logs: a forged log line, a terminal escape, a carriage
/// return and a bidi override.
const PLUGIN_LOG: &str =
    "plugin-says\n2030-01-01T00:00:00.000000Z ERROR forged: FAKE\x1b[31mRED\r\u{202e}evil";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let access_log = dir.path().join("access.log");
    let (public, admin) = (free_port(), free_port());
    let observe = format!("config = {{ log = {} }}", toml_string(PLUGIN_LOG));
    std::fs::write(
        dir.path().join("api.toml"),
        manifest(&up.url(), true, &observe),
    )
    .unwrap();
    let gw_file = dir.path().join("tollgate.toml");
    std::fs::write(
        &gw_file,
        format!(
            r#"schema = 1
data-dir = "data"
policies = ["api.toml"]

[[listener]]
name = "public"
address = "127.0.0.1:{public}"

[plugins]
dirs = [{plugins:?}]
cache-dir = {cache:?}

[reload]
watch = false

[access-log]
path = {access_log:?}

[admin]
address = "127.0.0.1:{admin}"
"#,
            plugins = plugin_dir().display().to_string(),
            cache = tollgate_tests::plugin_cache().display().to_string(),
            access_log = access_log.display().to_string(),
        ),
    )
    .unwrap();

    // The first administrator's token (printed by `admin init`, which is
    // not the gateway's log).
    let init = Command::new(tollgate_bin())
        .args(["admin", "init", "--config"])
        .arg(&gw_file)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let admin_token = String::from_utf8(init.stdout).unwrap().trim().to_string();
    assert!(admin_token.len() > 20, "{admin_token}");

    let stdout_path = dir.path().join("stdout.log");
    let stderr_path = dir.path().join("stderr.log");
    let mut child = ChildGuard(
        gateway_command(&gw_file)
            // Debug everywhere, trace for the gateway; not the wasm compiler's own
            // debug lines (megabytes of codegen timings, no request data).
            .env(
                "TOLLGATE_LOG",
                "debug,tollgate=trace,cranelift_codegen=info,wasmtime_internal_cranelift=info",
            )
            .env("NO_COLOR", "1")
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let c = client();
    let base = format!("http://127.0.0.1:{public}");
    let admin_base = format!("http://127.0.0.1:{admin}/admin/v1");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "the gateway exited: {status}\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        if let Ok(r) = c.get(format!("{base}/open/ready")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the gateway did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let token = hs256(&claims("alice"), JWT_SECRET);
    let bad_token = hs256(&claims("alice"), "not the secret, but 32 bytes or more!!");
    let basic_password = "basic-pass-w0rd-8c1e";
    let basic = STANDARD.encode(format!("bob:{basic_password}"));
    let cookie = "cookie-secret-4f9a2d71";
    let proxy_pass = "proxy-pass-63be0f";
    let proxy_basic = STANDARD.encode(format!("p:{proxy_pass}"));

    let mut secrets: Vec<String> = vec![
        KEY.into(),
        WRONG_KEY.into(),
        token.clone(),
        bad_token.clone(),
        JWT_SECRET.into(),
        basic.clone(),
        basic_password.into(),
        cookie.into(),
        proxy_basic.clone(),
        proxy_pass.into(),
        admin_token.clone(),
    ];
    // The signature parts alone must not appear either.
    secrets.push(token.rsplit('.').next().unwrap().to_string());
    secrets.push(bad_token.rsplit('.').next().unwrap().to_string());

    let mut statuses = Vec::new();
    let send = |rb: reqwest::RequestBuilder, want: u16| {
        let rb = rb
            .header("cookie", format!("session={cookie}; theme=dark"))
            .header("proxy-authorization", format!("Basic {proxy_basic}"));
        async move {
            let r = rb.send().await.unwrap();
            (r.status().as_u16(), want)
        }
    };
    // API keys: header and query, valid and not, and both at once.
    for (rb, want) in [
        (
            c.get(format!("{base}/keyed/a")).header("x-api-key", KEY),
            200,
        ),
        (c.get(format!("{base}/keyed/b?api_key={KEY}&x=1")), 200),
        (
            c.get(format!("{base}/keyed/c"))
                .header("x-api-key", WRONG_KEY),
            401,
        ),
        (c.get(format!("{base}/keyed/d?api_key={WRONG_KEY}")), 401),
        (
            c.get(format!("{base}/keyed/e?api_key={KEY}"))
                .header("x-api-key", KEY),
            401,
        ),
        // Bearer JWTs in the header, the query and the cookie.
        (c.get(format!("{base}/jwt/a")).bearer_auth(&token), 200),
        (c.get(format!("{base}/jwt/b")).bearer_auth(&bad_token), 401),
        (c.get(format!("{base}/jwt/c?access_token={token}&x=1")), 200),
        (c.get(format!("{base}/jwt/d?access_token={bad_token}")), 401),
        // Basic credentials and keys sent to an API that checks none.
        (
            c.get(format!("{base}/open/a"))
                .header("authorization", format!("Basic {basic}")),
            200,
        ),
        (
            c.get(format!("{base}/open/b?api_key={WRONG_KEY}&token={token}"))
                .header("x-api-key", WRONG_KEY)
                .bearer_auth(&bad_token),
            200,
        ),
    ] {
        statuses.push(send(rb, want).await);
    }
    // A JWT in the cookie only (its own request: the cookie header above
    // carries `session=<cookie>`).
    let r = c
        .get(format!("{base}/jwt/e"))
        .header("cookie", format!("session={token}"))
        .send()
        .await
        .unwrap();
    statuses.push((r.status().as_u16(), 200));
    // The admin API: the right token, a wrong one, a created user's token.
    let r = c
        .get(format!("{admin_base}/whoami"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    statuses.push((r.status().as_u16(), 200));
    let wrong_admin = format!("{}x", &admin_token[..admin_token.len() - 1]);
    secrets.push(wrong_admin.clone());
    let r = c
        .get(format!("{admin_base}/whoami"))
        .bearer_auth(&wrong_admin)
        .send()
        .await
        .unwrap();
    statuses.push((r.status().as_u16(), 401));
    let r = c
        .post(format!("{admin_base}/users"))
        .bearer_auth(&admin_token)
        .json(&json!({ "id": "ops", "role": "api-manager" }))
        .send()
        .await
        .unwrap();
    statuses.push((r.status().as_u16(), 201));
    let v: serde_json::Value = r.json().await.unwrap();
    let ops_token = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    secrets.push(ops_token.clone());
    let r = c
        .get(format!("{admin_base}/users"))
        .bearer_auth(&ops_token)
        .send()
        .await
        .unwrap();
    statuses.push((r.status().as_u16(), 403));
    let r = c
        .get(format!("{admin_base}/whoami"))
        .header("authorization", format!("Basic {basic}"))
        .send()
        .await
        .unwrap();
    statuses.push((r.status().as_u16(), 401));
    for (i, (got, want)) in statuses.iter().enumerate() {
        assert_eq!(got, want, "request {i}: {statuses:?}");
    }

    // Every request is in the access log once it is written (off the
    // request path), then stop the gateway so all output is flushed.
    let expect_lines = 12 + 1; // 12 data-path requests above + ready probes
    assert!(
        eventually(Duration::from_secs(10), || async {
            std::fs::read_to_string(&access_log)
                .map(|s| s.lines().count() >= expect_lines)
                .unwrap_or(false)
        })
        .await,
        "the access log has fewer lines than requests"
    );
    nix_term(&mut child);

    let out = std::fs::read_to_string(&stdout_path).unwrap();
    let err = std::fs::read_to_string(&stderr_path).unwrap();
    let acc = std::fs::read_to_string(&access_log).unwrap();
    // The captures are real: debug logs, plugin lines, redacted fields.
    assert_contains(&err, "DEBUG");
    assert_contains(&err, "plugin-says");
    assert_contains(&acc, "[redacted]");
    assert_contains(&acc, "\"path\":\"/keyed/b\"");
    for (name, text) in [("stdout", &out), ("stderr", &err), ("access log", &acc)] {
        for s in &secrets {
            if let Some(at) = text.find(s.as_str()) {
                let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let to = text[at..].find('\n').map_or(text.len(), |i| at + i);
                panic!("{name} holds the secret {s:?}:\n{}", &text[from..to]);
            }
        }
    }
    // The plugin's text is escaped: no raw escape, carriage return or bidi
    // override, and no line that starts with the forged timestamp.
    for (name, text) in [("stdout", &out), ("stderr", &err)] {
        for bad in ['\x1b', '\r', '\u{202e}'] {
            assert!(!text.contains(bad), "{name} holds {bad:?}:\n{text}");
        }
        assert!(
            !text.lines().any(|l| l.starts_with("2030-01-01")),
            "{name} holds a forged line:\n{text}"
        );
    }
    assert_contains(&err, "\\u{1b}[31mRED\\r\\u{202e}evil");
}

/// A TOML basic string holding `s`, control characters escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c as u32 > 0x7e => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Stop the gateway with SIGTERM (so it flushes its output), and kill it
/// if it has not exited within 10 s.
fn nix_term(child: &mut ChildGuard) {
    let pid = child.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.0.kill();
    let _ = child.0.wait();
}
