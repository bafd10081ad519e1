//! Builds every plugin and test fixture in `plugins/` for wasm32-wasip2, so
//! the end-to-end tests always run the guests built from the sources in
//! this tree (never committed `.wasm` files).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let plugins = root.join("plugins");
    let target_dir = plugins.join("target");
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    // The guests' link flags (their stack size).
    println!(
        "cargo:rerun-if-changed={}",
        root.join(".cargo").join("config.toml").display()
    );
    for sub in ["Cargo.toml", "Cargo.lock", "sdk", "transform", "fixtures"] {
        println!("cargo:rerun-if-changed={}", plugins.join(sub).display());
    }
    // Rerun for any plugin crate added later.
    println!("cargo:rerun-if-changed={}", plugins.display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg("wasm32-wasip2")
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir);
    // Do not leak the outer build's settings into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for the plugins");
    if !status.success() {
        panic!(
            "building the plugins failed; is the pinned toolchain's wasm32-wasip2 target \
             installed? (bash scripts/setup installs it)"
        );
    }
    let out = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=TOLLGATE_PLUGIN_DIR={}", out.display());
    println!("cargo:rustc-env=TOLLGATE_ROOT={}", root.display());
}
