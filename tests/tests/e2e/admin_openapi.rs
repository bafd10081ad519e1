//! The admin API against its own OpenAPI document, by schemathesis: every
//! check, every phase (examples, coverage, fuzzing, stateful sequences
//! along the document's links), against a live gateway. Zero failures.
//!
//! schemathesis (pinned) lives in `.tollgate/venv`, installed by
//! `scripts/schemathesis` (which `scripts/test` runs). Without it the test
//! is skipped with a message, unless `CI` is set: then it fails.

use std::time::{Duration, Instant};
use tollgate_tests::{root, TestGateway, Upstream};

/// Two APIs, so the chain routes have something to read and assign.
fn manifest(upstream: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "pets"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/pets"

[[api.chain]]
name = "auth"
plugin = "key-auth"
grants = ["consumers"]

[[api]]
name = "orders"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/orders"
"#
    )
}

/// How long schemathesis may run before the test gives up on it.
const BOUND: Duration = Duration::from_secs(900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_disagreement_between_the_document_and_the_server() {
    let st = root().join(".tollgate/venv/bin/st");
    if !st.exists() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but schemathesis is not installed at {}: run scripts/schemathesis",
                st.display()
            );
        }
        eprintln!(
            "SKIPPED admin_openapi: schemathesis is not installed at {} (run scripts/schemathesis, or set CI=true to make this a failure)",
            st.display()
        );
        return;
    }
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .admin()
        .start()
        .await;
    let _ = std::fs::remove_dir_all(root().join("target/schemathesis"));
    let admin = gw.admin();
    let url = format!("{}/admin/v1/openapi.json", admin.base);
    let started = Instant::now();
    // Everything but the calls that take the runner's own token away
    // (a new token, a demotion, a deletion of its user): schemathesis
    // reuses the ids it sees, `admin` among them.
    let own = [
        "--exclude-operation-id",
        "rotateUserToken",
        "--exclude-operation-id",
        "updateUser",
        "--exclude-operation-id",
        "deleteUser",
    ];
    schemathesis(&st, &url, &admin.token, &own).await;
    // Then the users (a demotion or deletion may end the token's use),
    // and last a new token for a user (which may be the runner's), each
    // with a fresh token.
    let admin = gw.admin();
    let users = [
        "--include-tag",
        "users",
        "--exclude-operation-id",
        "rotateUserToken",
    ];
    schemathesis(&st, &url, &admin.token, &users).await;
    let admin = gw.admin();
    let token = ["--include-operation-id", "rotateUserToken"];
    schemathesis(&st, &url, &admin.token, &token).await;
    eprintln!("schemathesis took {:?} in all", started.elapsed());
    drop(gw);
}

/// Run `st run` against `url` with every check and phase; panic with its
/// output unless it found nothing.
async fn schemathesis(st: &std::path::Path, url: &str, token: &str, extra: &[&str]) {
    // The run's events, kept for a look after a failure (target/ is ignored).
    let report = root().join("target/schemathesis");
    std::fs::create_dir_all(&report).unwrap();
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(st);
    cmd.arg("--config-file")
        .arg(root().join("tests/schemathesis.toml"))
        .arg("run")
        .arg(url)
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", "25"])
        .args(["--seed", "13"])
        // One worker: hypothesis's look at its filters' source is not thread-safe
        // (an occasional KeyError inside schemathesis with two).
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(extra)
        .args(["--report", "ndjson"])
        .arg("--report-dir")
        .arg(&report)
        .current_dir(&report)
        .kill_on_drop(true);
    let out = tokio::time::timeout(BOUND, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish in {BOUND:?}"))
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "schemathesis {extra:?}: {:?}, exit {:?}\n{}",
        started.elapsed(),
        out.status.code(),
        stdout.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    // A run that tested nothing would also exit 0.
    assert!(
        stdout.contains("Tested:") && !stdout.contains("Tested: 0"),
        "schemathesis tested nothing:\n{stdout}"
    );
}
