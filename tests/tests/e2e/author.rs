//! A policy author's loop outside the gateway tree: `tollgate policy new`
//! makes a crate whose tests pass natively and against the built `.wasm`
//! (through `tollgate policy test-host`), `tollgate policy build` builds it,
//! its sample gateway file checks, a gateway serves it, and `tollgate policy
//! watch` rebuilds it so that the running gateway serves the change. And the
//! test host holds against malformed and hostile input.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_tests::*;

/// The crate's target folder: shared between runs (a symlink), so the
/// dependencies compile once.
fn shared_target(crate_dir: &Path) {
    let shared = root().join("plugins/target/author");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, crate_dir.join("target")).unwrap();
}

fn tollgate(args: &[&str]) -> Command {
    let mut c = Command::new(tollgate_bin());
    c.args(args);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_policy_is_tested_on_both_sides_built_served_and_rebuilt() {
    let outside = tempfile::tempdir().unwrap();
    let dir = outside.path().join("tenant-check");
    let d = dir.to_str().unwrap();
    let out = run_ok(
        tollgate(&["policy", "new", "tenant-check", "--dir", d]),
        "policy new",
    );
    assert!(out.contains("created"), "{out}");
    for f in [
        "Cargo.toml",
        ".cargo/config.toml",
        "src/lib.rs",
        "tests/policy.rs",
        "README.md",
        "gateway.toml",
        "api.toml",
    ] {
        assert!(dir.join(f).is_file(), "no {f}");
    }
    // Not twice into the same folder.
    let again = tollgate(&["policy", "new", "tenant-check", "--dir", d])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    shared_target(&dir);

    // Its tests, both sides: the .wasm side builds the component and runs
    // it in `tollgate policy test-host`.
    let mut test = guest_cargo(&dir);
    test.args(["test", "--offline"]);
    let out = run_ok(test, "cargo test in the new crate");
    assert!(out.contains("test result: ok. 3 passed"), "{out}");
    // The .wasm side really runs: without the gateway binary the same
    // tests fail, saying why.
    let mut test = guest_cargo(&dir);
    test.args(["test", "--offline"])
        .env("TOLLGATE", "/nonexistent/tollgate");
    let failed = test.output().unwrap();
    let text = String::from_utf8_lossy(&failed.stdout);
    assert!(!failed.status.success(), "{text}");
    assert!(text.contains("TOLLGATE=/nonexistent/tollgate"), "{text}");

    // The release .wasm, and the sample gateway file.
    let out = run_ok(tollgate(&["policy", "build", "--dir", d]), "policy build");
    let wasm = PathBuf::from(out.lines().next().unwrap().trim());
    assert!(
        wasm.ends_with("wasm32-wasip2/release/tenant_check.wasm"),
        "{out}"
    );
    assert!(wasm.is_file());
    let mut check = tollgate(&["check", "gateway.toml"]);
    check.current_dir(&dir);
    run_ok(check, "tollgate check gateway.toml");

    // Served, from the sample manifest with the test's upstream.
    let up = Upstream::start().await;
    let api = std::fs::read_to_string(dir.join("api.toml"))
        .unwrap()
        .replace("http://127.0.0.1:9090", &up.url());
    let gw = TestGateway::builder(&api)
        .plugin_path("tenant-check", &wasm)
        .watch(true)
        .start()
        .await;
    let c = client();
    let r = c
        .get(gw.url("/orders"))
        .header("x-tenant", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-tenant-checked"), Some("acme"));
    let r = c.get(gw.url("/orders")).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // `policy watch`: an edit is rebuilt, and the running gateway serves it.
    let mut watch = tollgate(&["policy", "watch", "--dir", d]);
    watch.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut watch = ChildGuard(watch.spawn().unwrap());
    let log = BufReader::new(watch.0.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in log.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Its first build (cargo's own lines come first).
    loop {
        let line = rx.recv_timeout(Duration::from_secs(300)).unwrap();
        if line.starts_with("built ") {
            break;
        }
    }
    let lib = dir.join("src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, src.replace("x-tenant-checked", "x-tenant-seen")).unwrap();
    let started = Instant::now();
    loop {
        let r = c
            .get(gw.url("/orders"))
            .header("x-tenant", "acme")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        if up.last().header("x-tenant-seen") == Some("acme") {
            break;
        }
        let seen: Vec<String> = rx.try_iter().collect();
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the edit was not served: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A build that fails keeps the last good .wasm served.
    std::fs::write(&lib, "this is not rust").unwrap();
    let failed = loop {
        let line = rx.recv_timeout(Duration::from_secs(300)).unwrap();
        if line.contains("the last good .wasm stays") {
            break line;
        }
    };
    assert!(failed.contains("cargo build failed"), "{failed}");
    let r = c
        .get(gw.url("/orders"))
        .header("x-tenant", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-tenant-seen"), Some("acme"));
}

/// The test host behind `tollgate-policy-test`, driven line by line.
struct TestHost {
    child: ChildGuard,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

impl TestHost {
    fn start(wasm: &Path) -> TestHost {
        let mut c = tollgate(&["policy", "test-host"]);
        c.arg(wasm)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = ChildGuard(c.spawn().unwrap());
        let input = child.0.stdin.take().unwrap();
        let output = BufReader::new(child.0.stdout.take().unwrap());
        TestHost {
            child,
            input,
            output,
        }
    }

    fn send_raw(&mut self, line: &[u8]) -> serde_json::Value {
        self.input.write_all(line).unwrap();
        self.input.write_all(b"\n").unwrap();
        self.input.flush().unwrap();
        let mut answer = String::new();
        self.output.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
    }

    fn send(&mut self, v: serde_json::Value) -> serde_json::Value {
        self.send_raw(v.to_string().as_bytes())
    }
}

fn ctx() -> serde_json::Value {
    serde_json::json!({
        "request_id": "r", "client_addr": "127.0.0.1:1", "api": "test", "route": "/",
        "captures": [], "consumer": null, "step": "test",
    })
}

fn req(headers: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "method": "GET", "scheme": "http", "authority": "a", "path": "/", "query": null,
        "headers": headers,
    })
}

#[test]
fn the_test_host_refuses_bad_commands_and_survives_a_panicking_policy() {
    let mut h = TestHost::start(&plugin_dir().join("fixture_panic.wasm"));
    // Malformed and hostile commands: each answered with an error, and the
    // host keeps serving.
    for bad in [
        &b"not json"[..],
        br#"{"op":"launch"}"#,
        br#"{"op":"request","id":1}"#,
        br#"{"op":"drop","id":1,"extra":true}"#,
        b"\xff\xfe",
        br#"{"op":"configure","config":"{}","grants":["rootkit"]}"#,
    ] {
        let a = h.send_raw(bad);
        assert!(
            a["error"].is_string(),
            "{}: {a}",
            String::from_utf8_lossy(bad)
        );
    }
    let huge = vec![b'x'; (32 << 20) + 100];
    let a = h.send_raw(&huge);
    assert!(a["error"].as_str().unwrap().contains("longer than"), "{a}");
    let a = h.send(serde_json::json!({"op": "request", "id": 99, "ctx": ctx(), "req": req(serde_json::json!([]))}));
    assert!(a["error"].as_str().unwrap().contains("no step 99"), "{a}");
    // A configuration the plugin refuses is a config error, not a crash.
    let a = h.send(serde_json::json!({"op": "configure", "config": "{\"nope\":1}"}));
    assert!(
        a["config_error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{a}"
    );

    // The panic reaches the test with its message and location.
    let a =
        h.send(serde_json::json!({"op": "configure", "config": "{\"unless-header\":\"x-ok\"}"}));
    let id = a["ok"]["id"].as_u64().unwrap();
    let ok = h.send(serde_json::json!({
        "op": "request", "id": id, "ctx": ctx(),
        "req": req(serde_json::json!([{"name": "x-ok", "value": [49]}])),
    }));
    assert!(ok["ok"]["Continue"].is_object(), "{ok}");
    let a = h.send(serde_json::json!({"op": "request", "id": id, "ctx": ctx(), "req": req(serde_json::json!([]))}));
    let failure = a["failure"].as_str().unwrap();
    assert!(failure.contains("fixture panic"), "{failure}");
    assert!(failure.contains("panicked at"), "{failure}");
    // The instance is gone afterwards, as in a gateway; a new step works.
    let a = h.send(serde_json::json!({"op": "request", "id": id, "ctx": ctx(), "req": req(serde_json::json!([]))}));
    assert!(
        a["failure"].as_str().unwrap().contains("failed earlier"),
        "{a}"
    );
    let a = h.send(serde_json::json!({"op": "configure", "config": "{}"}));
    assert!(a["ok"]["id"].as_u64().unwrap() > id, "{a}");

    // End of input: the host exits cleanly.
    let TestHost {
        mut child, input, ..
    } = h;
    drop(input);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn the_test_host_refuses_what_is_not_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.wasm");
    std::fs::write(&fake, b"MZ not wasm").unwrap();
    let out = tollgate(&["policy", "test-host"])
        .arg(&fake)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not WebAssembly"), "{err}");
}

#[test]
fn policy_new_refuses_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["Bad", "../escape", "a_b", ""] {
        let out = tollgate(&["policy", "new", bad])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a policy name"), "{bad}: {err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn policy_build_explains_a_folder_without_a_crate() {
    let dir = tempfile::tempdir().unwrap();
    let out = tollgate(&["policy", "build", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Cargo.toml"));
}

#[test]
fn a_plugin_built_with_names_fails_naming_its_function() {
    // The panic fixture built by `tollgate policy build --names`, in a
    // target folder of its own (the shared fixture stays stripped).
    let target = root().join("plugins/target/names");
    let mut build = tollgate(&["policy", "build", "--names", "--dir"]);
    build
        .arg(root().join("plugins/fixtures/panic"))
        .env("CARGO_TARGET_DIR", &target);
    let out = run_ok(build, "policy build --names");
    let named = PathBuf::from(out.lines().next().unwrap().trim());
    let failure = |wasm: &Path| {
        let mut h = TestHost::start(wasm);
        let a = h.send(serde_json::json!({"op": "configure", "config": "{}"}));
        let id = a["ok"]["id"].as_u64().unwrap();
        let a = h.send(serde_json::json!({"op": "request", "id": id, "ctx": ctx(), "req": req(serde_json::json!([]))}));
        a["failure"].as_str().unwrap().to_string()
    };
    let with = failure(&named);
    assert!(
        with.contains("at <fixture_panic::Panic as tollgate_policy_sdk::Policy>::on_request"),
        "{with}"
    );
    assert!(
        with.contains("panicked at fixtures/panic/src/lib.rs"),
        "{with}"
    );
    let without = failure(&plugin_dir().join("fixture_panic.wasm"));
    assert!(!without.contains(" at <"), "{without}");
    assert!(
        without.contains("panicked at fixtures/panic/src/lib.rs"),
        "{without}"
    );
}

#[test]
fn the_runner_gives_the_same_answers_on_both_sides() {
    // tests/policy-parity drives key-auth, quota, access-log and an
    // outbound-call fixture through every harness control, natively and
    // from their .wasm, and compares decisions, sink lines and counts.
    let mut test = guest_cargo(&root().join("tests/policy-parity"));
    test.args(["test", "--offline", "--target-dir"])
        .arg(root().join("plugins/target/parity"))
        .env("TOLLGATE", tollgate_bin());
    let out = run_ok(test, "the parity tests");
    assert!(out.contains("test result: ok. 4 passed"), "{out}");
}
