//! Record and replay: a gateway records the calls of an API with
//! `[api.record]` (credentials redacted, bounded in size, other APIs not),
//! and `tollgate policy replay` runs two versions of a policy over the
//! trace: none differ between identical ones, a planted difference is
//! reported (exit 1), bad lines are skipped with their line number, and a
//! file that is not a component is a usage error (exit 2).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::*;

const TENANT_KEY: &str = "tenant-secret-9f1";

/// `pets` records to `traces.jsonl` (its own `[api.record]` lines added
/// after `file`); `plain` records nothing. `pets` authenticates with
/// key-auth from `x-tenant-key` and sets `x-version: 1` on responses.
fn manifest(up: &str, file: &str, record: &str) -> String {
    format!(
        r#"schema = 1

[[consumer]]
id = "alice"
app = "shop"
plan = "gold"
keys = [{{ id = "k-alice", sha256 = "{digest}" }}]

[[api]]
name = "pets"
upstream = {{ targets = ["{up}"] }}
[api.record]
file = "{file}"
max-body = "1KiB"
redact-headers = ["x-session"]
{record}
[[api.route]]
prefix = "/pets"
[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]
config = {{ header = "x-tenant-key" }}
[[api.chain]]
plugin = "transform"
config = {{ response = {{ headers = {{ set = {{ "x-version" = "1" }} }} }} }}

[[api]]
name = "plain"
upstream = {{ targets = ["{up}"] }}
[[api.route]]
prefix = "/plain"
"#,
        digest = key_digest_hex(TENANT_KEY),
    )
}

/// The lines of `path` once it has `n` (at most 10 s).
async fn lines_once(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let ok = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(path).is_ok_and(|t| t.lines().count() >= n)
    })
    .await;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(ok, "{} never had {n} lines:\n{text}", path.display());
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The header `name` of a recorded request or response.
fn header<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    v["headers"]
        .as_array()?
        .iter()
        .find(|p| p[0] == name)
        .and_then(|p| p[1].as_str())
}

fn replay(args: &[&str]) -> Output {
    std::process::Command::new(tollgate_bin())
        .args(["policy", "replay"])
        .args(args)
        .output()
        .expect("running tollgate policy replay")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wasm(name: &str) -> String {
    plugin_dir()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_calls_replay_alike_and_a_planted_difference_is_reported() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&manifest(&up.url(), "traces.jsonl", "")).await;
    let c = client();
    let r = c
        .get(gw.url("/pets/1?color=red&api_key=query-secret"))
        .header("authorization", "Bearer top-secret")
        .header("x-api-key", "api-secret")
        .header("x-tenant-key", TENANT_KEY)
        .header("x-session", "session-secret")
        .header("cookie", "sid=cookie-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-version"], "1");
    let r = c
        .post(gw.url("/pets"))
        .header("x-tenant-key", TENANT_KEY)
        .header("content-type", "application/json")
        .body(r#"{"name":"rex"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(gw.url("/plain/1"))
        .header("authorization", "Bearer plain-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A refused call is recorded too (routed to `pets`).
    let r = c.get(gw.url("/pets/2")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(gw.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let traces = gw.dir.path().join("traces.jsonl");
    let lines = lines_once(&traces, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = std::fs::read_to_string(&traces).unwrap();
    assert_eq!(all.lines().count(), 3, "{all}");
    for secret in [
        "top-secret",
        "api-secret",
        TENANT_KEY,
        "session-secret",
        "cookie-secret",
        "plain-secret",
        "nowhere",
    ] {
        assert!(!all.contains(secret), "`{secret}` in the trace:\n{all}");
    }
    // Bodies are recorded as they are: the echo upstream's body repeats
    // the query, and only there is the query's key in clear.
    for l in &lines {
        assert!(!l["request"].to_string().contains("query-secret"), "{l}");
    }
    let get = &lines[0];
    assert_eq!(get["api"], "pets");
    assert_eq!(get["request"]["method"], "GET");
    assert_eq!(get["request"]["path"], "/pets/1");
    assert_eq!(get["request"]["query"], "color=red&api_key=%5Bredacted%5D");
    for h in [
        "authorization",
        "x-api-key",
        "x-tenant-key",
        "x-session",
        "cookie",
    ] {
        assert_eq!(header(&get["request"], h), Some("[redacted]"), "{h}: {get}");
    }
    assert_eq!(get["consumer"]["id"], "alice");
    assert_eq!(get["consumer"]["app"], "shop");
    assert_eq!(get["response"]["status"], 200);
    assert_eq!(header(&get["response"], "x-version"), Some("1"));
    assert!(get["response"]["body"]["text"]
        .as_str()
        .unwrap()
        .contains("/pets/1"));
    let post = &lines[1];
    assert_eq!(post["request"]["body"]["text"], r#"{"name":"rex"}"#);
    assert_eq!(post["request"]["body"]["len"], 14);
    let refused = &lines[2];
    assert_eq!(refused["response"]["status"], 401);
    assert!(refused["consumer"].is_null());
    // Nothing else was written next to it.
    let jsonl: Vec<_> = std::fs::read_dir(gw.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(jsonl.len(), 1);

    // Replay: transform with the recorded config, and with another one.
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.toml");
    std::fs::write(&v1, "[response.headers]\nset = { \"x-version\" = \"1\" }\n").unwrap();
    let v2 = dir.path().join("v2.json");
    std::fs::write(&v2, r#"{"response":{"headers":{"set":{"x-version":"2"}}}}"#).unwrap();
    let traces_s = traces.display().to_string();
    let (v1s, v2s) = (v1.display().to_string(), v2.display().to_string());
    let transform = wasm("transform");

    let same = replay(&[
        "--policy",
        &transform,
        "--against",
        &transform,
        "--config",
        &v1s,
        &traces_s,
    ]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}{}",
        text(&same.stdout),
        text(&same.stderr)
    );
    assert_eq!(text(&same.stdout), "3 calls, 0 differ\n");

    let differ = replay(&[
        "--policy",
        &transform,
        "--against",
        &transform,
        "--config",
        &v2s,
        "--against-config",
        &v1s,
        &traces_s,
    ]);
    let out = text(&differ.stdout);
    assert_eq!(
        differ.status.code(),
        Some(1),
        "{out}{}",
        text(&differ.stderr)
    );
    assert_contains(
        &out,
        "traces.jsonl:1: GET /pets/1?color=red&api_key=%5Bredacted%5D\n",
    );
    assert_contains(
        &out,
        "  response header edits (request phase): old [set x-version: 1], new [set x-version: 2]\n",
    );
    assert_contains(&out, "traces.jsonl:2: POST /pets\n");
    assert_contains(&out, "3 calls, 3 differ\n");

    let json = replay(&[
        "--policy",
        &transform,
        "--against",
        &transform,
        "--config",
        &v2s,
        "--against-config",
        &v1s,
        "--format",
        "json",
        "--max-diffs",
        "1",
        &traces_s,
    ]);
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["calls"], 3);
    assert_eq!(v["differ"], 3);
    assert_eq!(v["differences"].as_array().unwrap().len(), 1);
    assert_eq!(v["differences"][0]["line"], 1);
    assert_eq!(
        v["differences"][0]["differences"][0]["new"],
        "[set x-version: 2]"
    );

    // A different plugin that traps: a difference, not a crash.
    let trap = replay(&[
        "--policy",
        &wasm("fixture_panic"),
        "--against",
        &transform,
        &traces_s,
    ]);
    let out = text(&trap.stdout);
    assert_eq!(trap.status.code(), Some(1), "{out}{}", text(&trap.stderr));
    assert_contains(
        &out,
        "  request phase failed: old no such phase, new failed: step `replay` trapped",
    );
    assert_contains(&out, "3 calls, 3 differ\n");

    // Bad lines are skipped with their number.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{all}not json\n\n{{\"api\":\"pets\"}}\n")).unwrap();
    let r = replay(&[
        "--policy",
        &transform,
        "--against",
        &transform,
        "--config",
        &v1s,
        &bad.display().to_string(),
    ]);
    let out = text(&r.stdout);
    assert_eq!(r.status.code(), Some(0), "{out}{}", text(&r.stderr));
    assert_contains(&out, "bad.jsonl:4: skipped: not a trace line: ");
    assert_contains(
        &out,
        "bad.jsonl:6: skipped: not a trace line: missing field",
    );
    assert_contains(&out, "3 calls, 0 differ, 2 lines skipped\n");

    // Nothing readable, or not a component: usage errors.
    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "garbage\n").unwrap();
    let r = replay(&[
        "--policy",
        &transform,
        "--against",
        &transform,
        &garbage.display().to_string(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert_contains(&text(&r.stderr), "no call in the traces could be read");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let r = replay(&[
        "--policy",
        &core.display().to_string(),
        "--against",
        &transform,
        &traces_s,
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert_contains(&text(&r.stderr), "not a component");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_stops_recording_and_calls_go_on() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&manifest(&up.url(), "small.jsonl", "max-bytes = \"3KiB\"")).await;
    let c = client();
    for _ in 0..12 {
        let r = c
            .get(gw.url("/pets/1"))
            .header("x-tenant-key", TENANT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let path = gw.dir.path().join("small.jsonl");
    lines_once(&path, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let n = text.lines().count();
    assert!((1..12).contains(&n), "{n} lines");
    assert!(text.len() <= 3 << 10, "{} bytes", text.len());
    assert!(text.ends_with('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_recording_to_the_new_file() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url(), "first.jsonl", ""))
        .watch(true)
        .start()
        .await;
    let c = client();
    let call = || async {
        let r = c
            .get(gw.url("/pets/1"))
            .header("x-tenant-key", TENANT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    call().await;
    let first: PathBuf = gw.dir.path().join("first.jsonl");
    lines_once(&first, 1).await;
    gw.write_manifest(&manifest(&up.url(), "second.jsonl", "sample = 1.0"));
    let second = gw.dir.path().join("second.jsonl");
    let moved = eventually(Duration::from_secs(10), || async {
        call().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        second.exists()
    })
    .await;
    assert!(moved, "no line in second.jsonl after the reload");
    lines_once(&second, 1).await;
    let before = std::fs::read_to_string(&first).unwrap().lines().count();
    call().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        std::fs::read_to_string(&first).unwrap().lines().count(),
        before,
        "the old file is no longer written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_max_body_are_recorded_as_their_length() {
    let up = Upstream::start().await;
    let m = format!(
        r#"schema = 1

[[api]]
name = "files"
upstream = {{ targets = ["{}"] }}
[api.record]
file = "files.jsonl"
max-body = "1KiB"
[[api.route]]
prefix = "/"
[[api.chain]]
plugin = "transform"
[api.chain.config.request.body]
max-bytes = "64"
json.set = {{ "/seen" = true }}
"#,
        up.url()
    );
    let gw = TestGateway::start(&m).await;
    let c = client();
    // A streamed response longer than max-body reaches the client whole.
    let r = c.get(gw.url("/big/100000")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 100_000);
    // A request body past the step's limit is still refused by the step
    // (recording reads at most that much).
    let r = c
        .post(gw.url("/upload"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"pad":"{}"}}"#, "x".repeat(200)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = c
        .post(gw.url("/upload"))
        .header("content-type", "application/json")
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body, r#"{"a":1,"seen":true}"#.as_bytes());
    let lines = lines_once(&gw.dir.path().join("files.jsonl"), 3).await;
    assert_eq!(
        lines[0]["response"]["body"],
        serde_json::json!({"len": 100000, "truncated": true})
    );
    assert_eq!(lines[1]["response"]["status"], 413);
    assert_eq!(
        lines[1]["request"]["body"],
        serde_json::json!({"len": 210, "truncated": true})
    );
    assert_eq!(lines[2]["request"]["body"]["text"], r#"{"a":1}"#);
    assert!(lines[2]["response"]["body"]["text"]
        .as_str()
        .unwrap()
        .contains("seen"));
}

/// `tollgate record` with these arguments against `gw`'s gateway file.
fn record_cmd(gw: &TestGateway, args: &[&str]) -> Output {
    std::process::Command::new(tollgate_bin())
        .arg("record")
        .arg("--config")
        .arg(gw.path().join("tollgate.toml"))
        .args(args)
        .output()
        .unwrap()
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_record_turns_an_api_s_recording_on_and_off() {
    let up = Upstream::start().await;
    let manifest = format!(
        "# the operator's comment stays\n{}",
        simple_manifest(&up.url(), "")
    );
    let gw = TestGateway::builder(&manifest).watch(true).start().await;
    let api_toml = gw.path().join("api.toml");
    let trace = gw.path().join("test.trace.jsonl");
    let c = client();

    // Bad input: nothing written.
    let before = std::fs::read_to_string(&api_toml).unwrap();
    for (args, why) in [
        (&["--api", "nope"][..], "no api `nope`"),
        (&["--api", "test", "--sample", "2"][..], "sample"),
        (
            &["--api", "test", "--max-bytes", "12 parsecs"][..],
            "max-bytes",
        ),
        (&["--api", "test", "--off"][..], "not recording"),
    ] {
        let out = record_cmd(&gw, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(why), "{args:?}: {err}");
        assert_eq!(std::fs::read_to_string(&api_toml).unwrap(), before);
    }

    // On: the manifest gains [api.record], keeps its comment, and the
    // running gateway records after its reload.
    let out = record_cmd(&gw, &["--api", "test", "--max-bytes", "1MiB"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("test.trace.jsonl"));
    let text = std::fs::read_to_string(&api_toml).unwrap();
    assert!(text.starts_with("# the operator's comment stays"), "{text}");
    assert!(text.contains("max-bytes = \"1MiB\""), "{text}");
    let started = std::time::Instant::now();
    while lines_in(&trace) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing recorded"
        );
        let r = c.get(gw.url("/a?x=1")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Off: the table goes, and calls after the reload are not recorded.
    let out = record_cmd(&gw, &["--api", "test", "--off"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!std::fs::read_to_string(&api_toml)
        .unwrap()
        .contains("[api.record]"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recorded = lines_in(&trace);
    for _ in 0..5 {
        let r = c.get(gw.url("/b")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lines_in(&trace), recorded);
}
