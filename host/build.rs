//! Embeds the developer portal's API reference UI (RapiDoc, pinned in
//! scripts/vendor-ui): fetched into `.tollgate/vendor/` by scripts/setup, or
//! here when it is missing, and named to the crate as `TOLLGATE_RAPIDOC`
//! (`include_bytes!` in `portal::reference`).

use std::path::Path;
use std::process::Command;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest)
        .parent()
        .expect("host/ is in the workspace");
    let script = root.join("scripts/vendor-ui");
    let text = std::fs::read_to_string(&script).expect("scripts/vendor-ui");
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("VERSION="))
        .expect("scripts/vendor-ui sets VERSION")
        .trim();
    let dir = root.join(format!(".tollgate/vendor/rapidoc-{version}"));
    let file = dir.join("rapidoc-min.js");
    if !file.exists() {
        let ok = Command::new("bash")
            .arg(&script)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && file.exists(),
            "{} is missing and scripts/vendor-ui could not fetch it: run `bash scripts/setup` (it needs Node.js and npm, and the npm registry)",
            file.display()
        );
    }
    println!("cargo:rustc-env=TOLLGATE_RAPIDOC={}", file.display());
    println!("cargo:rustc-env=TOLLGATE_RAPIDOC_VERSION={version}");
    println!("cargo:rerun-if-changed={}", file.display());
    println!("cargo:rerun-if-changed={}", script.display());
}
