//! Replays the checked-in fuzz corpora (`fuzz/corpus/<target>/`) through
//! the same target bodies cargo-fuzz runs (the `tollgate-fuzz-targets`
//! crate in host/fuzz-targets, and `fuzz/shared/jwt.rs`), on stable, as ordinary tests: a seed that makes a
//! body panic or break one of its properties fails here. See
//! docs/fuzzing.md.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/shared/jwt.rs"]
mod jwt_body;

/// Every file of one target's corpus, sorted.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Run `body` on every seed of `target`; fail naming each seed that broke.
fn replay(target: &str, body: fn(&[u8])) {
    let files = corpus(target);
    assert!(
        !files.is_empty(),
        "fuzz/corpus/{target} is empty: the replay would prove nothing"
    );
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).expect("reading a seed");
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} `{target}` seeds broke a property (reproduce one with \
         `cargo +nightly fuzz run {target} <file>` in fuzz/):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    eprintln!("fuzz corpus `{target}`: {} seeds replayed", files.len());
}

#[test]
fn manifest_corpus() {
    replay("manifest", tollgate_fuzz_targets::manifest);
}

#[test]
fn path_corpus() {
    replay("path", tollgate_fuzz_targets::path);
}

#[test]
fn headers_corpus() {
    replay("headers", tollgate_fuzz_targets::headers);
}

#[test]
fn wit_boundary_corpus() {
    replay("wit_boundary", tollgate_fuzz_targets::wit_boundary);
}

#[test]
fn jwt_corpus() {
    replay("jwt", jwt_body::run);
}
