//! The gateway files under `examples/` load: `tollgate check` accepts each
//! (manifests, plugins, settings), so a change to the configuration cannot
//! leave an example behind.

use tollgate_tests::{root, tollgate_bin};

#[test]
fn every_example_gateway_file_passes_tollgate_check() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let file = entry.unwrap().path().join("tollgate.toml");
        if !file.exists() {
            continue;
        }
        let out = std::process::Command::new(tollgate_bin())
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tollgate check {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked.push(
            file.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string(),
        );
    }
    checked.sort();
    for must in ["demo", "grpc", "websocket"] {
        assert!(checked.iter().any(|c| c == must), "{checked:?}");
    }
}
