//! The store under faults, through the real binary: SIGKILL during durable
//! quota updates (no acknowledged call uncounted, nothing counted that was
//! not sent, the store reopens), a data directory another gateway holds,
//! and a full data directory (a small tmpfs) at start and at run time.
//! `TOLLGATE_CRASH_TRIALS` sets the number of kills (default 5).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::{free_port, gateway_command, ChildGuard, Upstream};

const KEY: &str = "crash-key-5be1d07a";
/// Never reached: every call is allowed, and the count is what is checked.
const CALLS: u64 = 1_000_000_000;

/// A gateway file in `dir` with its data in `data_dir`, serving `/q` (key-auth
/// then a durable quota) and `/kv` (the kv fixture, which writes on every
/// call) on `port`.
fn gateway_file(dir: &Path, data_dir: &Path, port: u16, upstream: &str) -> PathBuf {
    let manifest = format!(
        r#"schema = 1

[[api]]
name = "q"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/q"

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]

[[api.chain]]
plugin = "quota"
grants = ["counters"]
config = {{ calls = {CALLS}, period = "month", by = "consumer" }}

[[api]]
name = "kv"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/kv"

[[api.chain]]
plugin = "fixture-kv"
grants = ["kv", "counters"]

[[consumer]]
id = "carol"
keys = [{{ id = "k-carol", sha256 = "{digest}" }}]
"#,
        digest = key_digest_hex(KEY),
    );
    std::fs::write(dir.join("api.toml"), manifest).unwrap();
    let gw = format!(
        r#"schema = 1
data-dir = {data:?}
policies = ["api.toml"]

[[listener]]
name = "public"
address = "127.0.0.1:{port}"

[plugins]
dirs = [{plugins:?}]
cache-dir = {cache:?}

[reload]
watch = false
"#,
        data = data_dir.display().to_string(),
        plugins = tollgate_tests::plugin_dir().display().to_string(),
        cache = tollgate_tests::plugin_cache().display().to_string(),
    );
    let p = dir.join(format!("tollgate-{port}.toml"));
    std::fs::write(&p, gw).unwrap();
    p
}

/// The binary, its standard error to `log`.
fn start(config: &Path, log: &Path) -> ChildGuard {
    ChildGuard(
        gateway_command(config)
            .env("RUST_BACKTRACE", "1")
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("starting tollgate"),
    )
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Wait until the gateway answers (a call without a key: 401 from key-auth,
/// counting nothing).
async fn wait_ready(port: u16, child: &mut ChildGuard, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let c = reqwest::Client::new();
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the gateway exited at start ({status}):\n{}", read(log));
        }
        let r = c
            .get(format!("http://127.0.0.1:{port}/q"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 401) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not come up:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One counted call: `Some(count after it)` if it was allowed.
async fn quota_call(c: &reqwest::Client, port: u16) -> Option<u64> {
    let r = c
        .get(format!("http://127.0.0.1:{port}/q/x"))
        .header("x-api-key", KEY)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let left: u64 = r
        .headers()
        .get("x-quota-remaining")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(CALLS - left)
}

fn assert_no_panic(log: &str) {
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(
            !log.contains(bad),
            "`{bad}` in the gateway's output:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_quota_calls_survive_sigkill() {
    let trials: usize = std::env::var("TOLLGATE_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = gateway_file(dir.path(), &dir.path().join("data"), port, &up.url());
    let log = dir.path().join("stderr.log");
    // Calls sent (counted before sending) and calls acknowledged allowed.
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut child = start(&config, &log);
    wait_ready(port, &mut child, &log).await;
    let started = Instant::now();
    for trial in 0..trials {
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (sent, acked) = (sent.clone(), acked.clone());
                tokio::spawn(async move {
                    let c = reqwest::Client::new();
                    loop {
                        sent.fetch_add(1, Ordering::SeqCst);
                        match quota_call(&c, port).await {
                            Some(_) => acked.fetch_add(1, Ordering::SeqCst),
                            None => return,
                        };
                    }
                })
            })
            .collect();
        // Kill at a different moment each trial.
        let delay = 100 + (trial as u64 * 97) % 400;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        for w in writers {
            w.await.unwrap();
        }
        // The store reopens; the count holds every acknowledged call and
        // no call that was never sent.
        let before = read(&log);
        child = start(&config, &log);
        wait_ready(port, &mut child, &log).await;
        let c = reqwest::Client::new();
        sent.fetch_add(1, Ordering::SeqCst);
        let count = quota_call(&c, port)
            .await
            .unwrap_or_else(|| panic!("trial {trial}: no count after restart:\n{}", read(&log)));
        acked.fetch_add(1, Ordering::SeqCst);
        let (s, a) = (sent.load(Ordering::SeqCst), acked.load(Ordering::SeqCst));
        assert!(
            a <= count && count <= s,
            "trial {trial}: {a} acknowledged, {s} sent, but {count} counted"
        );
        assert!(
            a > trial as u64 + 1,
            "trial {trial}: nothing was acknowledged"
        );
        assert_no_panic(&before);
        eprintln!("trial {trial}: {a} acknowledged, {count} counted, {s} sent");
    }
    assert_no_panic(&read(&log));
    eprintln!(
        "{trials} SIGKILL trials during quota updates in {:?}: {} calls acknowledged, none uncounted",
        started.elapsed(),
        acked.load(Ordering::SeqCst)
    );
}

/// Wait for the child to exit, at most `within`.
fn exit_status(child: &mut ChildGuard, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.0.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_data_directory_is_a_clear_error_at_start() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let first = gateway_file(dir.path(), &data, port, &up.url());
    let log1 = dir.path().join("first.log");
    let mut a = start(&first, &log1);
    wait_ready(port, &mut a, &log1).await;
    // A second gateway on the same data directory (another port).
    let second = gateway_file(dir.path(), &data, free_port(), &up.url());
    let log2 = dir.path().join("second.log");
    let mut b = start(&second, &log2);
    let status = exit_status(&mut b, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the second gateway kept running:\n{}", read(&log2)));
    let err = read(&log2);
    assert!(!status.success(), "{err}");
    assert_eq!(status.code(), Some(1), "{err}");
    tollgate_tests::assert_contains(&err, &format!("data directory {}", data.display()));
    tollgate_tests::assert_contains(
        &err,
        "another tollgate process is using this data directory",
    );
    assert_no_panic(&err);
    // The first one never noticed.
    assert!(quota_call(&reqwest::Client::new(), port).await.is_some());
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `Err(reason)` if this machine does not let the test mount one.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill the file system: write `filler` until no byte more fits.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).and_then(|_| f.flush()).is_ok() {}
        }
        let _ = f.sync_all();
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_directory_is_a_clear_error_at_start() {
    let fs = match Tmpfs::mount("1m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED a_full_data_directory_is_a_clear_error_at_start: {why}");
            return;
        }
    };
    fs.fill();
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = fs.path().join("data");
    let config = gateway_file(dir.path(), &data, free_port(), &up.url());
    let log = dir.path().join("stderr.log");
    let mut child = start(&config, &log);
    let status = exit_status(&mut child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the gateway started on a full disk:\n{}", read(&log)));
    let err = read(&log);
    assert_eq!(status.code(), Some(1), "{err}");
    tollgate_tests::assert_contains(&err, &format!("data directory {}", data.display()));
    tollgate_tests::assert_contains(&err, "No space left on device");
    assert_no_panic(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_filling_up_at_run_time_fails_calls_not_the_gateway() {
    let fs = match Tmpfs::mount("24m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED a_data_directory_filling_up_at_run_time_fails_calls_not_the_gateway: {why}");
            return;
        }
    };
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = gateway_file(dir.path(), &fs.path().join("data"), port, &up.url());
    let log = dir.path().join("stderr.log");
    let mut child = start(&config, &log);
    wait_ready(port, &mut child, &log).await;
    let c = reqwest::Client::new();
    let kv = |c: reqwest::Client, i: usize| async move {
        c.get(format!("http://127.0.0.1:{port}/kv"))
            .header("x-user", format!("u{i}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    let mut acked = 0;
    for i in 0..5 {
        assert!(quota_call(&c, port).await.is_some(), "{}", read(&log));
        acked += 1;
        assert_eq!(kv(c.clone(), i).await.unwrap(), 200);
    }
    let mut sent = acked;
    // The disk fills up under the gateway.
    let filler = fs.fill();
    let (mut refused, mut kv_refused) = (0, 0);
    for i in 0..40 {
        sent += 1;
        match quota_call(&c, port).await {
            Some(_) => acked += 1,
            None => refused += 1,
        }
        // Any answer but a dropped connection: an error response or, if the
        // write still fit, a success.
        match kv(c.clone(), 100 + i).await {
            Ok(200) => {}
            Ok(s) if s >= 500 => kv_refused += 1,
            other => panic!(
                "a kv write on a full disk answered {other:?}:\n{}",
                read(&log)
            ),
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the gateway died:\n{}",
            read(&log)
        );
    }
    eprintln!("full disk: {refused} of 40 quota calls and {kv_refused} of 40 kv writes refused");
    assert!(
        refused > 0 && kv_refused > 0,
        "the disk never looked full:\n{}",
        read(&log)
    );
    // Space again; the gateway is killed and restarted on the same data:
    // every call acknowledged as allowed is counted, none more than sent.
    std::fs::remove_file(filler).unwrap();
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let run_log = read(&log);
    assert_no_panic(&run_log);
    let log2 = dir.path().join("stderr2.log");
    let mut child = start(&config, &log2);
    wait_ready(port, &mut child, &log2).await;
    sent += 1;
    let count = quota_call(&c, port).await.expect("a count after restart");
    acked += 1;
    assert!(
        acked <= count && count <= sent,
        "{acked} acknowledged, {sent} sent, but {count} counted"
    );
    assert_no_panic(&read(&log2));
}
