//! The policy SDK stands on its own: its WIT is the gateway's, it packages
//! as a crate by itself (its WIT inside it, no workspace inheritance), and a
//! policy crate outside this tree that depends on it builds, and is served.

use std::path::{Path, PathBuf};
use tollgate_tests::*;

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_sdk_s_wit_is_the_gateway_s() {
    let (gateway, sdk) = (root().join("wit"), root().join("plugins/sdk/wit"));
    assert_eq!(files(&gateway), files(&sdk), "the same files");
    for f in files(&gateway) {
        assert!(
            std::fs::read(gateway.join(&f)).unwrap() == std::fs::read(sdk.join(&f)).unwrap(),
            "plugins/sdk/wit/{} differs from wit/{}: copy it over",
            f.display(),
            f.display()
        );
    }
}

/// `cargo package` builds the packaged crate on its own, from the files it
/// would publish: it fails if the SDK reads anything outside itself.
#[test]
fn the_sdk_packages_and_builds_on_its_own() {
    let target = root().join("plugins/target/package");
    let mut cmd = guest_cargo(&root().join("plugins/sdk"));
    cmd.args(["package", "--allow-dirty", "--offline", "--target-dir"])
        .arg(&target);
    run_ok(cmd, "cargo package of the SDK");
    let listed = {
        let mut cmd = guest_cargo(&root().join("plugins/sdk"));
        cmd.args(["package", "--list", "--allow-dirty", "--offline"]);
        run_ok(cmd, "cargo package --list")
    };
    for f in [
        "wit/policy.wit",
        "wit/deps/policy-0.1.0/policy.wit",
        "README.md",
    ] {
        assert!(
            listed.lines().any(|l| l == f),
            "{f} not packaged:\n{listed}"
        );
    }
}

/// The template, copied to a folder outside this tree with the SDK named
/// by its absolute path, builds for wasm32-wasip2, and a gateway serves
/// the result: its greeting header reaches the upstream and its limit
/// answers 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_crate_outside_the_tree_builds_and_is_served() {
    let outside = tempfile::tempdir().unwrap();
    let crate_dir = outside.path().join("my-policy");
    let template = root().join("examples/policy-template");
    for f in files(&template) {
        if f.starts_with("target") {
            continue;
        }
        let to = crate_dir.join(&f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(template.join(&f), to).unwrap();
    }
    let manifest = crate_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let sdk = root().join("plugins/sdk");
    let text = text
        .replace(
            "\"../../plugins/sdk\"",
            &format!("{:?}", sdk.display().to_string()),
        )
        .replace("name = \"policy-template\"", "name = \"my-policy\"");
    assert!(text.contains(&sdk.display().to_string()), "{text}");
    std::fs::write(&manifest, text).unwrap();

    let target = root().join("plugins/target/outside");
    let mut cmd = guest_cargo(&crate_dir);
    cmd.args([
        "build",
        "--release",
        "--offline",
        "--target",
        "wasm32-wasip2",
        "--target-dir",
    ])
    .arg(&target);
    run_ok(cmd, "building the policy crate outside the tree");
    let wasm = target.join("wasm32-wasip2/release/my_policy.wasm");
    assert!(wasm.is_file(), "no {}", wasm.display());

    let up = Upstream::start().await;
    let chain = "[[api.chain]]\nplugin = \"my-policy\"\ngrants = [\"counters\"]\n\
                 config = { header = \"x-user\", per-minute = 2 }\n";
    let gw = TestGateway::builder(&simple_manifest(&up.url(), chain))
        .plugin_path("my-policy", &wasm)
        .start()
        .await;
    let c = client();
    for want in [200, 200, 429] {
        let r = c
            .get(gw.url("/x"))
            .header("x-user", "ada")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
        if want == 200 {
            assert_eq!(up.last().header("x-greeting"), Some("hello ada"));
        }
    }
    let r = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 400);
}
