//! `tollgate policy build` and `tollgate policy watch`: build a policy
//! crate's release `.wasm` for `wasm32-wasip2` (adding the target with
//! rustup when it is missing), and rebuild it on every change.
//!
//! A gateway that serves the `.wasm` (`[plugins] paths` or `dirs`) watches
//! the file and reloads when a build replaces it; a build that fails leaves
//! the last good file in place, so the gateway keeps serving it.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// The Rust target policies are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The crate's folder (its `Cargo.toml`).
    pub dir: PathBuf,
    /// Keep the function names (the `name` section): a trap's log line then
    /// names the guest functions it went through. Larger `.wasm`.
    pub names: bool,
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    pub wasm: PathBuf,
    pub bytes: u64,
}

/// Add the target with rustup if the crate's toolchain lacks it. Without
/// rustup, cargo's own error says what is missing.
pub fn ensure_target(dir: &Path) -> Result<()> {
    let Ok(out) = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    if !out.status.success()
        || String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == TARGET)
    {
        return Ok(());
    }
    eprintln!("adding the {TARGET} target (rustup target add {TARGET})");
    let status = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "add", TARGET])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("rustup target add {TARGET} failed ({status})");
    }
    Ok(())
}

/// Build the crate at `o.dir` in release for [`TARGET`]; cargo's
/// diagnostics go to standard error.
pub fn build(o: &BuildOptions) -> Result<Built> {
    let manifest = o.dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{}: no Cargo.toml (pass --dir with the policy crate's folder)",
            o.dir.display()
        );
    }
    let dir = o
        .dir
        .canonicalize()
        .with_context(|| format!("{}", o.dir.display()))?;
    let manifest = dir.join("Cargo.toml");
    ensure_target(&dir)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&dir)
        .args(["build", "--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(&manifest)
        .stderr(Stdio::inherit());
    if o.names {
        // Keep the name section (symbols), drop only debug info.
        cmd.env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    }
    let out = cmd.output().context("running cargo")?;
    if !out.status.success() {
        bail!("cargo build failed ({})", out.status);
    }
    let wasm = artifact(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        anyhow::anyhow!(
            "cargo built no .wasm: is the crate a `cdylib` (crate-type = [\"cdylib\", \"rlib\"])?"
        )
    })?;
    let bytes = std::fs::metadata(&wasm)
        .with_context(|| format!("{}", wasm.display()))?
        .len();
    Ok(Built { wasm, bytes })
}

/// The `.wasm` cargo reported among its artifacts (the last one).
fn artifact(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
}

/// The newest modification time among the crate's sources: `Cargo.toml`,
/// `.cargo/config.toml`, `build.rs`, and every file under `src/` and `wit/`.
pub fn sources_changed_at(dir: &Path) -> Option<SystemTime> {
    fn walk(p: &Path, newest: &mut Option<SystemTime>, depth: usize) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            if depth > 16 {
                return;
            }
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), newest, depth + 1);
                }
            }
        } else if let Ok(m) = meta.modified() {
            *newest = (*newest).max(Some(m));
        }
    }
    let mut newest = None;
    for rel in ["Cargo.toml", ".cargo/config.toml", "build.rs", "src", "wit"] {
        walk(&dir.join(rel), &mut newest, 0);
    }
    newest
}

/// Build, then rebuild whenever the sources change (polled every `every`),
/// reporting each build on standard error, until `stop` says so.
pub fn watch(o: &BuildOptions, every: Duration, stop: impl Fn() -> bool) -> Result<()> {
    let mut seen = None;
    while !stop() {
        let now = sources_changed_at(&o.dir);
        if now != seen {
            seen = now;
            let started = std::time::Instant::now();
            match build(o) {
                Ok(b) => eprintln!(
                    "built {} ({} bytes) in {:.1}s; watching for changes",
                    b.wasm.display(),
                    b.bytes,
                    started.elapsed().as_secs_f64()
                ),
                Err(e) => eprintln!("{e:#}; the last good .wasm stays; watching for changes"),
            }
        }
        std::thread::sleep(every);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wasm_is_found_among_cargo_s_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"name":"serde"},"filenames":["/t/libserde.rlib"]}
not json
{"reason":"compiler-artifact","target":{"name":"p"},"filenames":["/t/p.wasm","/t/libp.rlib"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(artifact(msgs), Some(PathBuf::from("/t/p.wasm")));
        assert_eq!(artifact("{}"), None);
    }

    #[test]
    fn changes_under_src_are_seen() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("src/a")).unwrap();
        std::fs::write(d.path().join("Cargo.toml"), "").unwrap();
        let before = sources_changed_at(d.path()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(d.path().join("src/a/b.rs"), "").unwrap();
        assert!(sources_changed_at(d.path()).unwrap() > before);
        assert_eq!(sources_changed_at(&d.path().join("nowhere")), None);
    }
}
