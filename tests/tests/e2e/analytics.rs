//! The analytics store end to end, on the real binary: a known mix of calls
//! (three consumers with keys, anonymous 401s, unrouted 404s, upstream
//! 404s and 503s, a slow route) gives reports with exactly those counts and
//! latency percentiles within one histogram bucket (1%), as JSON and CSV,
//! to a reports-user; the figures survive a restart; a graceful stop
//! flushes what the writer holds; and a SIGKILL loses at most what came in
//! since the last flush (one `flush-interval`), nothing older.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_tests::admin::AdminClient;
use tollgate_tests::{free_port, gateway_command, tollgate_bin, ChildGuard, Upstream};

/// The slow route's upstream delay.
const SLOW_MS: u64 = 150;

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Setup {
    dir: tempfile::TempDir,
    public: u16,
    admin: u16,
    upstream: String,
}

impl Setup {
    /// Write the gateway file with this flush interval (the manifest and
    /// data directory stay the same across restarts).
    fn config(&self, flush: &str) -> PathBuf {
        let consumers: String = ["alice", "bob", "carol"]
            .iter()
            .map(|c| {
                format!(
                    "[[consumer]]\nid = \"{c}\"\napp = \"{c}-app\"\nplan = \"gold\"\nkeys = [{{ id = \"{c}-1\", sha256 = \"{}\" }}]\n\n",
                    sha256_hex(&format!("key-{c}"))
                )
            })
            .collect();
        let manifest = format!(
            r#"schema = 1

{consumers}
[[api]]
name = "shop"
upstream = {{ targets = ["{upstream}"], response-timeout = "10s" }}

[[api.route]]
name = "slow"
prefix = "/slow"

[[api.route]]
name = "status"
prefix = "/status"

[[api.route]]
name = "echo"
prefix = "/echo"

[[api.chain]]
name = "auth"
plugin = "key-auth"
grants = ["consumers"]
[api.chain.config]
header = "x-api-key"
"#,
            upstream = self.upstream
        );
        std::fs::write(self.dir.path().join("api.toml"), manifest).unwrap();
        let gw = format!(
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

[admin]
address = "127.0.0.1:{admin}"

[analytics]
flush-interval = "{flush}"
"#,
            public = self.public,
            admin = self.admin,
            plugins = tollgate_tests::plugin_dir().display().to_string(),
            cache = tollgate_tests::plugin_cache().display().to_string(),
        );
        let p = self.dir.path().join("tollgate.toml");
        std::fs::write(&p, gw).unwrap();
        p
    }
}

fn start(config: &Path) -> ChildGuard {
    ChildGuard(
        gateway_command(config)
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tollgate"),
    )
}

async fn wait_ready(admin: &AdminClient, child: &mut ChildGuard) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the gateway exited at start: {status}");
        }
        let r = reqwest::Client::new()
            .get(format!("{}/readyz", admin.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "the gateway did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, and wait for the exit (a graceful stop flushes analytics).
fn terminate(child: &mut ChildGuard) {
    let pid = child.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.0.try_wait() {
            assert!(status.success(), "the gateway stopped with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the gateway did not stop within 20 s of SIGTERM");
}

fn sigkill(child: &mut ChildGuard) {
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

fn admin_init(config: &Path) -> String {
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
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Send `n` GETs of `path` with `key` (if any); each call's client-side
/// time, µs.
async fn send(
    c: &reqwest::Client,
    public: u16,
    path: &str,
    key: Option<&str>,
    n: usize,
    status: u16,
) -> Vec<u64> {
    let mut took = Vec::new();
    for _ in 0..n {
        let mut req = c.get(format!("http://127.0.0.1:{public}{path}"));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let t = Instant::now();
        let r = req.send().await.unwrap();
        let s = r.status().as_u16();
        let _ = r.bytes().await.unwrap();
        took.push(t.elapsed().as_micros() as u64);
        assert_eq!(s, status, "GET {path}");
    }
    took
}

/// The calls the store holds over the last hour.
async fn calls(admin: &AdminClient) -> u64 {
    let (s, v) = admin.get("/analytics/report?from=-1h").await;
    assert_eq!(s, 200, "{v}");
    v["totals"]["calls"].as_u64().unwrap()
}

/// Wait until the store holds `n` calls (flushes are periodic).
async fn wait_calls(admin: &AdminClient, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = calls(admin).await;
        if got == n {
            return;
        }
        assert!(got < n, "{got} calls stored, only {n} sent");
        assert!(Instant::now() < deadline, "{got} calls stored, {n} sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rows of a report, by their `by` value.
fn rows_by(v: &Value, field: &str) -> std::collections::BTreeMap<String, Value> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[field].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// `value` is `want` or above it by less than one histogram bucket (1%).
#[track_caller]
fn within_bucket(value: &Value, low: u64, high: u64) {
    let v = value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"));
    assert!(
        v >= low && v <= high + high / 100 + 1,
        "{v} µs is not within [{low}, {high}] and one bucket"
    );
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_count_exactly_survive_restarts_and_lose_at_most_a_flush_interval() {
    let up = Upstream::start().await;
    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
        public: free_port(),
        admin: free_port(),
        upstream: up.url(),
    };
    let config = s.config("300ms");
    let root = AdminClient::new(format!("http://127.0.0.1:{}", s.admin), admin_init(&config));
    let mut gw = start(&config);
    wait_ready(&root, &mut gw).await;
    let (st, v) = root
        .post(
            "/users",
            serde_json::json!({"id": "analyst", "role": "reports-user"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let admin = root.with_token(v["token"].as_str().unwrap());
    let c = tollgate_tests::client();
    let p = s.public;

    // The mix: 60 calls.
    send(&c, p, "/echo/a", Some("key-alice"), 20, 200).await;
    let mut slow = send(
        &c,
        p,
        &format!("/slow/{SLOW_MS}"),
        Some("key-alice"),
        10,
        200,
    )
    .await;
    send(&c, p, "/status/503", Some("key-alice"), 5, 503).await;
    send(&c, p, "/echo/b", Some("key-bob"), 7, 200).await;
    send(&c, p, "/status/404", Some("key-bob"), 3, 404).await;
    send(&c, p, "/echo/c", Some("key-carol"), 4, 200).await;
    send(&c, p, "/echo/x", None, 6, 401).await;
    send(&c, p, "/nowhere", Some("key-alice"), 5, 404).await;
    wait_calls(&admin, 60).await;

    // By consumer: exact counts, errors by class, refusals by step.
    let (st, v) = admin.get("/analytics/report?from=-1h&by=consumer").await;
    assert_eq!(st, 200, "{v}");
    let t = &v["totals"];
    assert_eq!(
        (
            &t["calls"],
            &t["errors_4xx"],
            &t["errors_5xx"],
            &t["errors"]
        ),
        (&60.into(), &14.into(), &5.into(), &19.into()),
        "{v}"
    );
    let by = rows_by(&v, "consumer");
    assert_eq!(by["alice"]["calls"], 35, "{v}");
    assert_eq!(by["alice"]["errors_5xx"], 5, "{v}");
    assert_eq!(by["bob"]["calls"], 10, "{v}");
    assert_eq!(by["bob"]["errors_4xx"], 3, "{v}");
    assert_eq!(by["carol"]["calls"], 4, "{v}");
    // Anonymous: the 401s (answered by the `auth` step) and the unrouted
    // 404s (no API, so no step identified anyone).
    assert_eq!(by[""]["calls"], 11, "{v}");
    assert_eq!(by[""]["answered_by"]["auth"], 6, "{v}");
    assert_eq!(v["rows"][0]["consumer"], "alice", "most calls first: {v}");

    // By status and by API.
    let (_, v) = admin.get("/analytics/report?from=-1h&by=status").await;
    let by = rows_by(&v, "status");
    let counts: Vec<(&str, u64)> = ["200", "401", "404", "503"]
        .iter()
        .map(|k| (*k, by[*k]["calls"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        counts,
        [("200", 41), ("401", 6), ("404", 8), ("503", 5)],
        "{v}"
    );
    let (_, v) = admin.get("/analytics/report?from=-1h&by=api").await;
    let by = rows_by(&v, "api");
    assert_eq!(
        (&by["shop"]["calls"], &by[""]["calls"]),
        (&55.into(), &5.into())
    );

    // The slow route: p50 and p99 of the total and of the upstream's time
    // are at least the upstream's delay, and at most what the client saw,
    // within one histogram bucket.
    slow.sort_unstable();
    let (_, v) = admin
        .get("/analytics/report?from=-1h&by=route&route=slow")
        .await;
    let row = &v["rows"][0];
    assert_eq!(
        (&row["route"], &row["calls"]),
        (&"slow".into(), &10.into()),
        "{v}"
    );
    let floor = SLOW_MS * 1000;
    within_bucket(&row["latency_us"]["p50"], floor, percentile(&slow, 0.5));
    within_bucket(&row["latency_us"]["p99"], floor, percentile(&slow, 0.99));
    within_bucket(
        &row["upstream_latency_us"]["p50"],
        floor,
        percentile(&slow, 0.5),
    );
    within_bucket(
        &row["upstream_latency_us"]["p99"],
        floor,
        percentile(&slow, 0.99),
    );
    // The fast routes are faster than the slow one.
    let (_, v) = admin.get("/analytics/report?from=-1h&route=echo").await;
    assert!(
        v["totals"]["latency_us"]["p99"].as_u64().unwrap() < floor,
        "{v}"
    );

    // Top consumers, one consumer's own usage, a time series, CSV.
    let (_, v) = admin.get("/analytics/top-consumers?from=-1h&limit=2").await;
    let top: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["consumer"].as_str().unwrap())
        .collect();
    // Anonymous calls (11) are no consumer: bob (10) is second.
    assert_eq!(top, ["alice", "bob"], "{v}");
    assert_eq!(v["truncated"], 1, "{v}");
    assert_eq!(v["totals"]["calls"], 49, "identified calls only: {v}");
    let (_, v) = admin.get("/analytics/consumers/bob?from=-1h").await;
    assert_eq!(v["consumer"], "bob");
    assert_eq!(rows_by(&v, "api")["shop"]["calls"], 10, "{v}");
    let (_, v) = admin
        .get("/analytics/report?from=-1h&interval=minute")
        .await;
    // A row per minute of the range (widened to whole minutes), empty
    // ones too.
    let n = v["rows"].as_array().unwrap().len();
    assert!(n == 60 || n == 61, "{n} rows");
    let sum: u64 = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 60);
    let csv = c
        .get(admin.url("/analytics/report?from=-1h&by=consumer&sort=name"))
        .bearer_auth(&admin.token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("consumer,calls,errors,errors_4xx,errors_5xx,"),
        "{csv}"
    );
    assert!(lines[1].starts_with(",11,11,11,0,"), "{csv}");
    assert!(lines[2].starts_with("alice,35,5,0,5,"), "{csv}");

    // The CLI: a table, and CSV.
    let cli = |args: &[&str]| {
        let out = Command::new(tollgate_bin())
            .args([
                "admin",
                "--url",
                &admin.base,
                "--token",
                &admin.token,
                "analytics",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (table, notes) = cli(&["report", "--from", "-1h", "--by", "consumer"]);
    assert!(table.starts_with("CONSUMER  CALLS"), "{table}");
    assert!(
        table.lines().nth(1).unwrap().starts_with("alice     35"),
        "{table}"
    );
    assert!(
        notes.contains(": 60 calls, 19 errors (4xx 14, 5xx 5)"),
        "{notes}"
    );
    let (csv, _) = cli(&["top", "--from", "-1h", "--csv", "--limit", "1"]);
    assert!(
        csv.starts_with("consumer,calls,") && csv.contains("\r\nalice,35,"),
        "{csv}"
    );

    // Bad input: 400 in the admin API's error format.
    for (q, field) in [
        ("from=yesterday", "from"),
        ("by=colour", "by"),
        ("format=xml", "format"),
        ("limit=0", "limit"),
        ("status=2x", "status"),
        ("bogus=1", "bogus"),
    ] {
        let (st, v) = admin.get(&format!("/analytics/report?{q}")).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert_eq!(v["error"]["field"], field, "{q}: {v}");
    }
    let (st, _) = admin.get("/analytics/top-consumers?by=api").await;
    assert_eq!(st, 400);
    // Well-formed, but refused by a rule between parameters: 422.
    for (q, field) in [
        ("interval=minute&from=-60d", "interval"),
        ("from=-1h&to=-2h", "from"),
    ] {
        let (st, v) = admin.get(&format!("/analytics/report?{q}")).await;
        assert_eq!(st, 422, "{q}: {v}");
        assert_eq!(v["error"]["field"], field, "{q}: {v}");
    }

    // A graceful stop and a restart keep every figure.
    terminate(&mut gw);
    let config = s.config("5m");
    let mut gw = start(&config);
    wait_ready(&admin, &mut gw).await;
    assert_eq!(calls(&admin).await, 60);
    // With a 5-minute flush interval, only the stop's own flush can store
    // these before the next start.
    send(&c, p, "/echo/a", Some("key-alice"), 10, 200).await;
    terminate(&mut gw);
    let mut gw = start(&config);
    wait_ready(&admin, &mut gw).await;
    assert_eq!(calls(&admin).await, 70);

    // SIGKILL: what came in since the last flush is lost (here: all of
    // it, the interval being 5 minutes) ...
    send(&c, p, "/echo/a", Some("key-alice"), 10, 200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigkill(&mut gw);
    let config = s.config("200ms");
    let mut gw = start(&config);
    wait_ready(&admin, &mut gw).await;
    assert_eq!(calls(&admin).await, 70);
    // ... and nothing older than one flush interval: calls a few intervals
    // before the kill are all there, those just before it may not be.
    send(&c, p, "/echo/a", Some("key-alice"), 10, 200).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    send(&c, p, "/echo/a", Some("key-alice"), 5, 200).await;
    sigkill(&mut gw);
    let mut gw = start(&config);
    wait_ready(&admin, &mut gw).await;
    let n = calls(&admin).await;
    assert!(
        (80..=85).contains(&n),
        "{n} calls kept; 80 were flushed before the kill"
    );
    eprintln!("SIGKILL lost {} of the 5 calls of its last 200 ms", 85 - n);
    terminate(&mut gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_analytics_reports_say_so() {
    let up = Upstream::start().await;
    let gw = tollgate_tests::TestGateway::builder(&tollgate_tests::simple_manifest(&up.url(), ""))
        .admin()
        .start()
        .await;
    let admin = gw.admin();
    let (st, v) = admin.get("/analytics/report").await;
    assert_eq!(st, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[analytics]"),
        "{v}"
    );
}
