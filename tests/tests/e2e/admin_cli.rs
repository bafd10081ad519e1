//! The `tollgate admin` CLI (the real binary) against a real gateway's
//! admin API: the story from product to a working key, tables and `--json`,
//! revocation, chain assignment from a TOML file, and errors.

use serde_json::Value;
use std::process::Command;
use tollgate_tests::{client, tollgate_bin, TestGateway, Upstream};

struct Cli {
    url: String,
    token: String,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    /// Run `tollgate admin ARGS` (blocking: run it off the runtime).
    async fn run(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(tollgate_bin());
        cmd.arg("admin")
            .args(args)
            .env("TOLLGATE_ADMIN_URL", &self.url)
            .env("TOLLGATE_ADMIN_TOKEN", &self.token);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> Out {
        let out = self.run(args).await;
        assert!(
            out.ok,
            "tollgate admin {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a).await;
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }
}

fn manifest(upstream: &str) -> String {
    tollgate_tests::keyed_pets(upstream)
        + r#"
[[api.chain]]
name = "throttle"
plugin = "rate-limit"
grants = ["counters"]
[api.chain.config]
limits = "plan"
"#
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_the_whole_story() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .admin()
        .start()
        .await;
    let admin = gw.admin();
    let cli = Cli {
        url: admin.base.clone(),
        token: admin.token.clone(),
    };
    cli.ok(&[
        "products",
        "create",
        "id=shop",
        "apis:=[\"pets\"]",
        "published:=true",
    ])
    .await;
    cli.ok(&[
        "plans",
        "create",
        "id=gold",
        "product=shop",
        r#"rate_limits:=[{"requests":2,"per":"minute"}]"#,
    ])
    .await;
    cli.ok(&["consumers", "create", "id=alice", "email=alice@example.com"])
        .await;
    cli.ok(&["apps", "create", "id=alice-app", "consumer=alice"])
        .await;
    cli.ok(&["subscriptions", "create", "app=alice-app", "plan=gold"])
        .await;
    // The secret alone on standard output; the note on standard error.
    let out = cli
        .ok(&["keys", "create", "app=alice-app", "plan=gold"])
        .await;
    let secret = out.stdout.trim().to_string();
    assert!(secret.starts_with("tg_"), "{}", out.stdout);
    assert!(out.stderr.contains("only"), "{}", out.stderr);
    // The key works, limited by the plan.
    let call = |key: String| {
        client()
            .get(gw.url("/pets/1"))
            .header("x-api-key", key)
            .send()
    };
    assert_eq!(call(secret.clone()).await.unwrap().status(), 200);
    assert_eq!(call(secret.clone()).await.unwrap().status(), 200);
    assert_eq!(call(secret.clone()).await.unwrap().status(), 429);
    // Human tables and JSON.
    let table = cli.ok(&["products", "list"]).await.stdout;
    let header = table.lines().next().unwrap();
    for col in ["ID", "NAME", "APIS", "PUBLISHED"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains("shop"), "{table}");
    let keys = cli.json(&["keys", "list", "--app", "alice-app"]).await;
    let key_id = keys["items"][0]["id"].as_str().unwrap().to_string();
    assert!(!serde_json::to_string(&keys).unwrap().contains(&secret));
    let plan = cli.json(&["plans", "get", "gold"]).await;
    assert_eq!(plan["rate_limits"][0]["requests"], 2);
    // Raising the limit takes effect on the next call.
    cli.ok(&[
        "plans",
        "update",
        "gold",
        r#"rate_limits:=[{"requests":100,"per":"minute"}]"#,
    ])
    .await;
    assert_eq!(call(secret.clone()).await.unwrap().status(), 200);
    // Revocation through the CLI.
    cli.ok(&["keys", "revoke", &key_id]).await;
    assert_eq!(call(secret.clone()).await.unwrap().status(), 401);
    // A chain from a TOML file.
    let chain = gw.path().join("chain.toml");
    std::fs::write(
        &chain,
        r#"[[chain]]
name = "auth"
plugin = "key-auth"
grants = ["consumers"]

[[chain]]
name = "tag"
plugin = "transform"
[chain.config.request.headers]
set = { "x-from-cli" = "yes" }
"#,
    )
    .unwrap();
    cli.ok(&[
        "apis",
        "chain",
        "set",
        "pets",
        "--file",
        chain.to_str().unwrap(),
    ])
    .await;
    let shown = cli.ok(&["apis", "chain", "get", "pets"]).await.stdout;
    assert!(shown.contains("transform"), "{shown}");
    let (_, k) = admin
        .post(
            "/keys",
            serde_json::json!({"app": "alice-app", "plan": "gold"}),
        )
        .await;
    let fresh = k["secret"].as_str().unwrap().to_string();
    assert_eq!(call(fresh).await.unwrap().status(), 200);
    assert_eq!(up.last().header("x-from-cli"), Some("yes"));
    // The audit log lists what happened.
    let audit = cli.ok(&["audit", "list", "--all"]).await.stdout;
    assert!(audit.contains("assign-chain"), "{audit}");
    // Errors: the field named, exit status 1, nothing on standard output.
    let bad = cli
        .run(&[
            "plans",
            "create",
            "id=bad",
            "product=shop",
            "max_keys_per_app:=0",
        ])
        .await;
    assert!(!bad.ok);
    assert!(bad.stderr.contains("max_keys_per_app"), "{}", bad.stderr);
    assert!(bad.stdout.is_empty());
    let bad = cli.run(&["consumers", "create", "id:={broken"]).await;
    assert!(!bad.ok, "malformed JSON is refused before sending");
    let forbidden = Cli {
        url: cli.url.clone(),
        token: "tga_wrong".into(),
    }
    .run(&["consumers", "list"])
    .await;
    assert!(!forbidden.ok);
    assert!(
        forbidden.stderr.contains("not valid"),
        "{}",
        forbidden.stderr
    );
    let down = Cli {
        url: "http://127.0.0.1:1".into(),
        token: "x".into(),
    }
    .run(&["consumers", "list"])
    .await;
    assert!(!down.ok);
    assert!(down.stderr.contains("127.0.0.1:1"), "{}", down.stderr);
}

/// Run `tollgate admin recover --config CONFIG --user USER` (blocking).
fn recover(config: &std::path::Path, user: &str) -> Out {
    let out = Command::new(tollgate_bin())
        .args(["admin", "recover", "--config"])
        .arg(config)
        .args(["--user", user])
        .output()
        .unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn on_own_runtime(f: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(f);
}

/// Every administrator token lost: `tollgate admin recover` (offline)
/// issues a new one, refuses while a gateway holds the store, and the
/// audit log says it was a recovery.
#[test]
fn recover_issues_a_new_token_offline() {
    let keep = tempfile::tempdir().unwrap();
    let data = keep.path().join("data");
    let config = keep.path().join("tollgate.toml");
    let (d, c) = (data.clone(), config.clone());
    let lost = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let lost2 = lost.clone();
    on_own_runtime(async move {
        let up = Upstream::start().await;
        let gw = TestGateway::builder(&manifest(&up.url()))
            .admin()
            .data_dir(&d)
            .start()
            .await;
        *lost2.lock().unwrap() = gw.admin().token;
        // The gateway file, kept past the test gateway's own directory.
        for f in ["tollgate.toml", "api.toml"] {
            std::fs::copy(gw.path().join(f), c.with_file_name(f)).unwrap();
        }
        let c2 = c.clone();
        let out = tokio::task::spawn_blocking(move || recover(&c2, "admin"))
            .await
            .unwrap();
        assert!(!out.ok, "recover ran while the gateway holds the store");
        tollgate_tests::assert_contains(
            &out.stderr,
            "another tollgate process is using this data directory",
        );
        tollgate_tests::assert_contains(&out.stderr, "stop the gateway");
    });
    // The gateway lets go of the store once its tasks are gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let out = recover(&config, "admin");
        if out.ok || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    tollgate_tests::assert_contains(&out.stderr, "Administrator recovered");
    let token = out.stdout.trim().to_string();
    assert!(token.starts_with("tga_"), "{token}");
    // A user of another name that does not exist: created.
    let created = recover(&config, "rescue");
    assert!(created.ok, "{}", created.stderr);
    tollgate_tests::assert_contains(&created.stderr, "Administrator created");
    let bad = recover(&config, "Not An Id");
    assert!(!bad.ok);
    tollgate_tests::assert_contains(&bad.stderr, "not a valid id");
    let lost = lost.lock().unwrap().clone();
    on_own_runtime(async move {
        let up = Upstream::start().await;
        let gw = TestGateway::builder(&manifest(&up.url()))
            .admin()
            .data_dir(&data)
            .start()
            .await;
        let base = format!("http://{}", gw.admin_addr.unwrap());
        let admin = tollgate_tests::admin::AdminClient::new(base, token);
        let (status, me) = admin.get("/whoami").await;
        assert_eq!((status, me["user"].as_str()), (200, Some("admin")));
        assert_eq!(admin.with_token(&lost).get("/whoami").await.0, 401);
        let (_, log) = admin.get("/audit?limit=500").await;
        let rec: Vec<&Value> = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "recover")
            .collect();
        assert_eq!(rec.len(), 2, "{log}");
        assert_eq!(rec[0]["actor"], "recover");
        assert_eq!(rec[0]["id"], "admin");
        assert_eq!(rec[1]["id"], "rescue");
        // It may not delete itself; another administrator may.
        let (status, e) = admin.call("DELETE", "/users/admin", None).await;
        assert_eq!(status, 409, "{e}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apis_are_created_exported_and_deleted_from_the_cli() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .admin()
        .start()
        .await;
    let admin = gw.admin();
    let cli = Cli {
        url: admin.base.clone(),
        token: admin.token.clone(),
    };
    let upstream = format!(r#"upstream:={{"targets":["{}"]}}"#, up.url());
    let created = cli
        .json(&[
            "apis",
            "create",
            "name=orders",
            &upstream,
            r#"routes:=[{"name":"one","path":"/orders/{id}","methods":["GET"]}]"#,
        ])
        .await;
    assert_eq!(created["name"], "orders");
    let r = client().get(gw.url("/orders/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc = cli.json(&["apis", "openapi", "orders"]).await;
    assert_eq!(doc["paths"]["/orders/{id}"]["get"]["operationId"], "one");
    // A stale etag is refused, and nothing changes.
    let stale = cli
        .run(&["apis", "delete", "orders", "--if-match", "0000"])
        .await;
    assert!(
        !stale.ok && stale.stderr.contains("If-Match does not match"),
        "{}",
        stale.stderr
    );
    cli.ok(&["apis", "delete", "orders"]).await;
    let r = client().get(gw.url("/orders/1")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
