//! Durability of the admin API: the real binary is killed with SIGKILL while
//! admin writes are in flight, restarted, and every write it had
//! acknowledged must be there. `TOLLGATE_CRASH_TRIALS` sets the number of
//! kills (default 5).

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_tests::admin::AdminClient;
use tollgate_tests::{free_port, gateway_command, tollgate_bin, ChildGuard};

fn gateway_file(dir: &std::path::Path, admin_port: u16) -> std::path::PathBuf {
    gateway_file_with(dir, admin_port, free_port(), "http://127.0.0.1:9")
}

fn gateway_file_with(
    dir: &std::path::Path,
    admin_port: u16,
    public_port: u16,
    upstream: &str,
) -> std::path::PathBuf {
    let manifest = format!(
        r#"schema = 1

[[api]]
name = "pets"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/pets"
"#
    );
    std::fs::write(dir.join("api.toml"), manifest).unwrap();
    let gw = format!(
        r#"schema = 1
data-dir = "data"
policies = ["api.toml"]

[[listener]]
name = "public"
address = "127.0.0.1:{public_port}"

[plugins]
dirs = [{plugins:?}]
cache-dir = {cache:?}

[reload]
watch = false

[admin]
address = "127.0.0.1:{admin_port}"
"#,
        plugins = tollgate_tests::plugin_dir().display().to_string(),
        cache = tollgate_tests::plugin_cache().display().to_string(),
    );
    let p = dir.join("tollgate.toml");
    std::fs::write(&p, gw).unwrap();
    p
}

fn start(config: &std::path::Path) -> ChildGuard {
    ChildGuard(
        gateway_command(config)
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tollgate"),
    )
}

async fn wait_ready(admin: &AdminClient, child: &mut ChildGuard) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the gateway exited at start: {status}");
        }
        let r = reqwest::Client::new()
            .get(admin.url("/whoami"))
            .bearer_auth(&admin.token)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "the admin API did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn list_all(admin: &AdminClient, what: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/{what}?limit=500&after={a}"),
            None => format!("/{what}?limit=500"),
        };
        let (s, v) = admin.get(&path).await;
        assert_eq!(s, 200, "{v}");
        for item in v["items"].as_array().unwrap() {
            out.insert(item["id"].as_str().unwrap().to_string());
        }
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return out,
        }
    }
}

fn admin_init(config: &std::path::Path) -> String {
    let out = Command::new(tollgate_bin())
        .args(["admin", "init", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("tga_"), "{token}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_assigned_through_the_api_survives_a_restart() {
    let up = tollgate_tests::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (admin_port, public_port) = (free_port(), free_port());
    let config = gateway_file_with(dir.path(), admin_port, public_port, &up.url());
    let admin = AdminClient::new(
        format!("http://127.0.0.1:{admin_port}"),
        admin_init(&config),
    );
    // A second init is refused: it never replaces an administrator.
    let out = Command::new(tollgate_bin())
        .args(["admin", "init", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));
    let mut child = start(&config);
    wait_ready(&admin, &mut child).await;
    let chain = json!({"chain": [{"name": "tag", "plugin": "transform",
        "config": {"request": {"headers": {"set": {"x-assigned": "yes"}}}}}]});
    let (s, v) = admin.put("/apis/pets/chain", chain.clone()).await;
    assert_eq!(s, 200, "{v}");
    let url = format!("http://127.0.0.1:{public_port}/pets/1");
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-assigned"), Some("yes"));
    // Killed without warning, restarted: the chain is still there.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let mut child = start(&config);
    wait_ready(&admin, &mut child).await;
    let (_, got) = admin.get("/apis/pets/chain").await;
    assert_eq!(got["chain"], chain["chain"]);
    let before = up.requests().len();
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), before + 1);
    assert_eq!(up.last().header("x-assigned"), Some("yes"));
    // `tollgate check` agrees with the file the API wrote.
    let out = Command::new(tollgate_bin())
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_admin_writes_survive_sigkill() {
    let trials: usize = std::env::var("TOLLGATE_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let config = gateway_file(dir.path(), admin_port);
    // The first administrator, through the CLI, with the gateway stopped.
    let token = admin_init(&config);
    let admin = AdminClient::new(format!("http://127.0.0.1:{admin_port}"), token);

    let consumers_acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let apps_acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut child = start(&config);
    wait_ready(&admin, &mut child).await;
    let mut total_acked = 0;
    for trial in 0..trials {
        // Writers: a consumer, then an app of it (two entries and an index).
        let mut writers = Vec::new();
        for w in 0..4 {
            let admin = admin.clone();
            let (c_acked, a_acked) = (consumers_acked.clone(), apps_acked.clone());
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("t{trial}-w{w}-{i}");
                    let r = reqwest::Client::new()
                        .post(admin.url("/consumers"))
                        .bearer_auth(&admin.token)
                        .json(&json!({"id": id}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 201 => {
                            c_acked.lock().unwrap().insert(id.clone());
                        }
                        _ => return,
                    }
                    let app = format!("{id}-app");
                    let r = reqwest::Client::new()
                        .post(admin.url("/apps"))
                        .bearer_auth(&admin.token)
                        .json(&json!({"id": app, "consumer": id}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 201 => {
                            a_acked.lock().unwrap().insert(app);
                        }
                        _ => return,
                    }
                }
            }));
        }
        // Kill at a different moment each trial.
        let delay = 150 + (trial as u64 * 97) % 400;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        for w in writers {
            w.await.unwrap();
        }
        // Restart on the same data and check every acknowledged write.
        child = start(&config);
        wait_ready(&admin, &mut child).await;
        let consumers = list_all(&admin, "consumers").await;
        let apps = list_all(&admin, "apps").await;
        let c_acked = consumers_acked.lock().unwrap().clone();
        let a_acked = apps_acked.lock().unwrap().clone();
        let lost: Vec<_> = c_acked.difference(&consumers).collect();
        assert!(
            lost.is_empty(),
            "trial {trial}: acknowledged consumers lost: {lost:?}"
        );
        let lost: Vec<_> = a_acked.difference(&apps).collect();
        assert!(
            lost.is_empty(),
            "trial {trial}: acknowledged apps lost: {lost:?}"
        );
        // Every app of this trial has its consumer (a batch is atomic).
        for app in apps.iter().filter(|a| a.starts_with(&format!("t{trial}-"))) {
            let (s, v): (u16, Value) = admin.get(&format!("/apps/{app}")).await;
            assert_eq!(s, 200);
            assert!(consumers.contains(v["consumer"].as_str().unwrap()));
        }
        total_acked = c_acked.len() + a_acked.len();
        assert!(
            !c_acked.is_empty(),
            "trial {trial}: no write was acknowledged"
        );
    }
    // The audit log holds one entry per write that happened, in order.
    let (_, audit) = admin.get("/audit?limit=1").await;
    assert_eq!(audit["items"][0]["seq"], 1);
    eprintln!("{trials} SIGKILL trials, {total_acked} acknowledged writes, none lost");
}
