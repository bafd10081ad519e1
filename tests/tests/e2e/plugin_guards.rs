//! Guards around what a plugin can do to the host: a plugin built from a
//! drifted WIT is refused before it can be called, its log output is bounded
//! (and its panic message kept), and its kv namespace has a quota.

use std::path::{Path, PathBuf};
use std::process::Command;
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

[limits]
{limits}

[reload]
watch = false
"#,
        plugins = plugin_dir().display().to_string(),
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
