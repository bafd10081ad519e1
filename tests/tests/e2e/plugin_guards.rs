//! Guards around what a plugin can do to the host: a plugin built from a
//! drifted WIT is refused before it can be called, its log output is bounded
//! (and its panic message kept), and its kv namespace has a quota.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tollgate_tests::runner::PolicyRunner;
use tollgate_tests::*;

/// A gateway file and a manifest with one API whose chain is `chain`, in
/// `dir`, listening on `port`, with `limits` as the `[limits]` table.
fn gateway_files(dir: &Path, port: u16, upstream: &str, chain: &str, limits: &str) -> PathBuf {
    std::fs::write(dir.join("api.toml"), simple_manifest(upstream, chain)).unwrap();
    let gw = format!(
        r#"schema = 1
data-dir = "data"
policies = ["api.toml"]

[[listener]]
name = "public"
address = "127.0.0.1:{port}"

[plugins]
dirs = [{plugins:?}]
cache-dir = {cache:?}

[limits]
{limits}

[reload]
watch = false
"#,
        plugins = plugin_dir().display().to_string(),
        cache = tollgate_tests::plugin_cache().display().to_string(),
    );
    let p = dir.join("tollgate.toml");
    std::fs::write(&p, gw).unwrap();
    p
}

// ---------------------------------------------------------------------------
// Item: a plugin built from a drifted `tollgate:policy` WIT.

/// Each drifted fixture and what its refusal must name.
const DRIFTED: [(&str, &str); 4] = [
    // One field removed from `call-context`.
    ("fixture-drift-context", "`on-request`"),
    // A field's type changed (`response.status` u16 -> u32).
    ("fixture-drift-type", "`on-request`"),
    // A variant changed (`request-decision` gained a case).
    ("fixture-drift-variant", "`on-request`"),
    // A function missing.
    ("fixture-drift-missing", "no function `on-response`"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_built_from_a_drifted_wit_are_refused_at_load() {
    for (fixture, names) in DRIFTED {
        let err = match PolicyRunner::new(fixture, "{}", &[]) {
            Ok(_) => panic!("{fixture} loaded, though its exports do not match this host's WIT"),
            Err(e) => e,
        };
        assert_contains(
            &err,
            "was built against a different `tollgate:policy/policy@0.1.0` than this host",
        );
        assert_contains(&err, names);
    }
    // The well-built fixtures still load.
    assert!(PolicyRunner::new("noop", "{}", &[]).is_ok());
}

#[test]
fn tollgate_check_refuses_a_drifted_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_files(
        dir.path(),
        free_port(),
        "http://127.0.0.1:9",
        "[[api.chain]]\nplugin = \"fixture-drift-context\"\n",
        "",
    );
    let out = Command::new(tollgate_bin())
        .arg("check")
        .arg(&config)
        .env_remove("TOLLGATE_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check accepted it:\n{stderr}");
    assert_contains(&stderr, "plugin `fixture-drift-context`");
    assert_contains(
        &stderr,
        "was built against a different `tollgate:policy/policy@0.1.0` than this host",
    );
    // What differs, as wasmtime's type check says it: `call-context` has
    // one field less.
    assert_contains(
        &stderr,
        "`on-request` does not have the signature this host calls: expected record of 7 fields, found 6 fields",
    );
}

// ---------------------------------------------------------------------------
// Item: log floods, and the panic message kept.

/// The real binary on `config`, its standard error (the log) to `log`.
fn start_logged(config: &Path, log: &Path) -> ChildGuard {
    ChildGuard(
        gateway_command(config)
            .current_dir(config.parent().unwrap())
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("starting tollgate"),
    )
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Wait until the gateway answers on `port` (any status); returns how many
/// calls that took.
async fn wait_answering(port: u16, child: &mut ChildGuard, log: &Path) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    let c = client();
    let mut calls = 0;
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the gateway exited at start ({status}):\n{}", read(log));
        }
        calls += 1;
        if c.get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
            .is_ok()
        {
            return calls;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not answer:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The numbers `suppressed=N` of the log's records.
fn suppressed_counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("suppressed=")? + "suppressed=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_plugin_is_bounded_and_the_rest_counted() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = gateway_files(
        dir.path(),
        port,
        &up.url(),
        "[[api.chain]]\nplugin = \"fixture-logflood\"\nconfig = { lines = 500, size = 1000 }\n",
        "plugin-log-rate = 20\nplugin-log-line = \"200\"",
    );
    let log = dir.path().join("gateway.log");
    let mut child = start_logged(&config, &log);
    let started = Instant::now();
    let mut calls = wait_answering(port, &mut child, &log).await;
    let c = client();
    for _ in 0..5 {
        assert_eq!(
            c.get(gw_url(port, "/x")).send().await.unwrap().status(),
            200
        );
        calls += 1;
    }
    // A call in a later second reports what the last one dropped.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        c.get(gw_url(port, "/y")).send().await.unwrap().status(),
        200
    );
    calls += 1;
    let elapsed = started.elapsed().as_secs();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = read(&log);
    let flood: Vec<&str> = text.lines().filter(|l| l.contains(": flood ")).collect();
    // At most 20 lines per second of the run (each second's window, plus
    // the partial ones at both ends).
    assert!(
        !flood.is_empty() && flood.len() as u64 <= 20 * (elapsed + 2),
        "{} plugin lines in {elapsed}s:\n{}",
        flood.len(),
        &text[..text.len().min(4000)]
    );
    // Each cut to the line limit.
    for l in &flood {
        assert!(l.contains("...(truncated)"), "{l}");
        assert!(!l.contains(&"x".repeat(300)), "{l}");
    }
    // The rest are counted, in records that say so.
    let counts = suppressed_counts(&text);
    let reported: u64 = counts.iter().sum();
    assert_contains(&text, "plugin log: suppressed");
    assert!(reported > 0, "no suppressed count:\n{text}");
    assert!(
        flood.len() as u64 + reported <= 500 * calls,
        "{} written + {reported} suppressed > {} logged",
        flood.len(),
        500 * calls
    );
    // The whole log stays small: unbounded, this was 500 lines of 1 KB per
    // call (over 3 MB here).
    assert!(text.len() < 200_000, "{} bytes of log", text.len());
}

fn gw_url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_message_reaches_the_log_and_trap_warnings_are_rate_limited() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = gateway_files(
        dir.path(),
        port,
        &up.url(),
        // Never quarantined: the storm below must run it on every call.
        "[[api.chain]]\nplugin = \"fixture-panic\"\nquarantine = { failures = 100000 }\n",
        "",
    );
    let log = dir.path().join("gateway.log");
    let mut child = start_logged(&config, &log);
    let started = Instant::now();
    let mut calls = wait_answering(port, &mut child, &log).await;
    let c = client();
    let r = c.get(gw_url(port, "/panic")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    calls += 1;
    // The panic message, from the guest's standard error, is in the
    // failure's log line (escaped, on one line).
    assert!(
        eventually(Duration::from_secs(5), || async {
            read(&log).contains("fixture panic")
        })
        .await,
        "no panic message in the log:\n{}",
        read(&log)
    );
    let text = read(&log);
    let line = text.lines().find(|l| l.contains("fixture panic")).unwrap();
    assert_contains(line, "step `fixture-panic` trapped: wasm trap:");
    assert_contains(line, "the plugin wrote to stderr: ");
    assert_contains(line, "panicked at");
    // No backtrace of unnamed frames in the warning.
    assert!(!line.contains("<wasm function"), "{line}");

    // A storm of failing calls: warnings are rate-limited per step.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let r = c.get(gw_url(port, "/storm")).send().await.unwrap();
                    assert_eq!(r.status(), 500);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    calls += 200;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        c.get(gw_url(port, "/after")).send().await.unwrap().status(),
        500
    );
    calls += 1;
    let elapsed = started.elapsed().as_secs();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = read(&log);
    let warnings = text.lines().filter(|l| l.contains("trapped")).count() as u64;
    assert!(
        warnings <= 10 * (elapsed + 2) && warnings < calls,
        "{warnings} trap warnings for {calls} calls in {elapsed}s"
    );
    assert_contains(
        &text,
        "similar warnings about step `fixture-panic` suppressed",
    );
    let reported: u64 = suppressed_counts(&text).iter().sum();
    assert!(
        reported > 0 && warnings + reported <= calls,
        "{warnings} + {reported} vs {calls}"
    );
}

// ---------------------------------------------------------------------------
// Item: the kv namespace's quota.

fn kv_chain(grant: &str) -> String {
    // A generous deadline: every write is made durable before it returns.
    format!(
        "[[api.chain]]\nplugin = \"fixture-kvfill\"\ntimeout = \"10s\"\ngrants = [\"{grant}\"]\n"
    )
}

/// One call to the kvfill fixture: `(written, error)`.
async fn fill(gw: &TestGateway, headers: &[(&str, &str)]) -> (u64, String) {
    let mut req = client().get(gw.url("/fill"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let mut lines = body.lines();
    let written = lines
        .next()
        .and_then(|l| l.strip_prefix("written="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {body:?}"));
    let error = lines
        .next()
        .map(|l| l.trim_start_matches("error=").to_string())
        .unwrap_or_default();
    (written, error)
}

/// Run `f` on a runtime of its own, so that a gateway started in it is gone
/// (its store closed) when this returns.
fn on_own_runtime(f: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(f);
    drop(rt);
}

const SMALL_KV: &str = "kv:max-keys=5,max-bytes=4KiB,max-value=1KiB";

#[test]
fn kv_limits_from_the_grant_refuse_writes_and_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let d = data_dir.clone();
    on_own_runtime(async move {
        let up = Upstream::start().await;
        let gw = TestGateway::builder(&simple_manifest(&up.url(), &kv_chain(SMALL_KV)))
            .data_dir(&d)
            .start()
            .await;
        // Keys: five of ten pass, the sixth is refused with a clear error.
        let (n, err) = fill(&gw, &[("x-count", "10"), ("x-size", "100")]).await;
        assert_eq!(n, 5, "{err}");
        assert_contains(&err, "Invalid(");
        assert_contains(&err, "kv namespace of plugin `fixture-kvfill` is full");
        assert_contains(&err, "its limit (max-keys) is 5");
        // A value over max-value.
        let (n, err) = fill(&gw, &[("x-prefix", "k"), ("x-size", "1025")]).await;
        assert_eq!(n, 0);
        assert_contains(&err, "value of 1025 bytes is over the limit of 1024 bytes");
        // Overwriting keys that exist adds none; bytes: 5 x 102 now, and
        // 1002 for each key rewritten with 1000 bytes: the fourth would
        // make 4110 > 4096.
        let (n, err) = fill(&gw, &[("x-count", "5"), ("x-size", "1000")]).await;
        assert_eq!(n, 3, "{err}");
        assert_contains(&err, "over its limit (max-bytes) of 4096");
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while tollgate::store::Store::open(&data_dir).is_err() {
        assert!(
            Instant::now() < deadline,
            "the first gateway still holds the store"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = data_dir.clone();
    on_own_runtime(async move {
        let up = Upstream::start().await;
        let gw = TestGateway::builder(&simple_manifest(&up.url(), &kv_chain(SMALL_KV)))
            .data_dir(&d)
            .start()
            .await;
        // The usage survived the restart with the data.
        let (n, err) = fill(&gw, &[("x-prefix", "z")]).await;
        assert_eq!(n, 0);
        assert_contains(&err, "its limit (max-keys) is 5");
        // A delete makes room.
        let (n, err) = fill(&gw, &[("x-prefix", "z"), ("x-delete", "k4")]).await;
        assert_eq!((n, err.as_str()), (1, ""));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_limits_hold_under_concurrent_writers() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&simple_manifest(&up.url(), &kv_chain(SMALL_KV))).await;
    let gw = std::sync::Arc::new(gw);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let prefix = format!("r{i}-");
                fill(&gw, &[("x-prefix", prefix.as_str())]).await.0
            })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap();
    }
    assert_eq!(written, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_has_default_limits() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&simple_manifest(&up.url(), &kv_chain("kv"))).await;
    let (n, err) = fill(&gw, &[("x-size", "65536")]).await;
    assert_eq!((n, err.as_str()), (1, ""));
    let (n, err) = fill(&gw, &[("x-size", "65537")]).await;
    assert_eq!(n, 0);
    assert_contains(
        &err,
        "value of 65537 bytes is over the limit of 65536 bytes",
    );
}

#[test]
fn tollgate_check_refuses_nonsense_kv_limits() {
    for (grant, says) in [
        (
            "kv:max-keys=0",
            "max-keys = 0 must be between 1 and 10000000",
        ),
        (
            "kv:max-value=2MiB",
            "max-value = 2097152 bytes must be between 1 byte and 1MiB",
        ),
        (
            "kv:max-bytes=1KiB,max-value=2KiB",
            "must be at least max-value",
        ),
        ("kv:max-files=3", "unknown limit `max-files`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = gateway_files(
            dir.path(),
            free_port(),
            "http://127.0.0.1:9",
            &kv_chain(grant),
            "",
        );
        let out = Command::new(tollgate_bin())
            .arg("check")
            .arg(&config)
            .env_remove("TOLLGATE_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{grant} accepted:\n{stderr}");
        assert_contains(&stderr, says);
    }
}

#[test]
fn tollgate_check_refuses_nonsense_log_limits() {
    for (chain_extra, limits, says) in [
        (
            "",
            "plugin-log-rate = 0",
            "limits.plugin-log-rate = 0 must be between 1 and 100000 lines per second",
        ),
        (
            "log-line = \"10\"\n",
            "",
            "log-line = 10 bytes must be between 80 bytes and 64KiB",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = gateway_files(
            dir.path(),
            free_port(),
            "http://127.0.0.1:9",
            &format!("[[api.chain]]\nplugin = \"noop\"\n{chain_extra}"),
            limits,
        );
        let out = Command::new(tollgate_bin())
            .arg("check")
            .arg(&config)
            .env_remove("TOLLGATE_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{stderr}");
        assert_contains(&stderr, says);
    }
}
