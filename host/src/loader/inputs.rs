//! What a configuration build read: every file and folder listing, with
//! the bytes' digests, so a reload can tell whether anything changed.

use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What one file was when a build read (or looked for) it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileState {
    /// SHA-256 of the bytes, hex.
    Sha(String),
    /// Not there (a plugin looked for in a folder, a missing manifest).
    Missing,
    /// There but not read (unreadable, or failed to parse): any change may
    /// fix it, so it never counts as unchanged.
    Unread,
}

impl FileState {
    fn now(path: &Path) -> FileState {
        match std::fs::read(path) {
            Ok(bytes) => FileState::Sha(hex::encode(sha2::Sha256::digest(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::Missing,
            Err(_) => FileState::Unread,
        }
    }

    fn same(&self, other: &FileState) -> bool {
        match (self, other) {
            (FileState::Sha(a), FileState::Sha(b)) => a == b,
            (FileState::Missing, FileState::Missing) => true,
            _ => false,
        }
    }
}

/// The inputs of one configuration build: the gateway file, every manifest
/// and plugin file it read or looked for, and the `*.toml` files of each
/// policy folder. The watcher reacts only to changes of these, and a
/// reload is skipped when they are all byte-identical to the last build's.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    files: BTreeMap<PathBuf, FileState>,
    folders: BTreeMap<PathBuf, Vec<PathBuf>>,
}

impl Inputs {
    /// `path` was read and held `text`.
    pub fn record_text(&mut self, path: &Path, text: &str) {
        self.files.insert(
            path.to_path_buf(),
            FileState::Sha(hex::encode(sha2::Sha256::digest(text.as_bytes()))),
        );
    }

    /// `path` is about to be read (or was looked for): its bytes now. Taken
    /// before the build reads it, so a change in between is seen as a change.
    pub fn record_file(&mut self, path: &Path) {
        if !self.files.contains_key(path) {
            self.files.insert(path.to_path_buf(), FileState::now(path));
        }
    }

    /// `path` could not be read or parsed.
    pub fn record_unread(&mut self, path: &Path) {
        self.files.insert(path.to_path_buf(), FileState::Unread);
    }

    /// The policy folder `folder` listed these `*.toml` files.
    pub fn record_folder(&mut self, folder: &Path, files: Vec<PathBuf>) {
        self.folders.insert(folder.to_path_buf(), files);
    }

    /// Whether every input is still what the build saw. Nothing recorded
    /// counts as changed.
    pub fn unchanged(&self) -> bool {
        if self.files.is_empty() {
            return false;
        }
        self.files
            .iter()
            .all(|(p, was)| was.same(&FileState::now(p)))
            && self
                .folders
                .iter()
                .all(|(d, was)| toml_files(d).ok().as_ref() == Some(was))
    }

    /// Every file the build read (or looked for).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    /// Whether a change of `path` may change the configuration.
    pub fn relevant(&self, path: &Path) -> bool {
        self.files.contains_key(path)
            || (path.extension().is_some_and(|x| x == "toml")
                && path.parent().is_some_and(|d| self.folders.contains_key(d)))
    }

    /// The folders to watch: those of the files, and the policy folders.
    pub fn folders_to_watch(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .files
            .keys()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .chain(self.folders.keys().cloned())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

impl Inputs {
    /// Both sets of inputs, for watching.
    pub(crate) fn union(a: &Inputs, b: &Inputs) -> Inputs {
        let mut u = a.clone();
        for (p, f) in &b.files {
            u.files.entry(p.clone()).or_insert_with(|| f.clone());
        }
        for (d, l) in &b.folders {
            u.folders.entry(d.clone()).or_insert_with(|| l.clone());
        }
        u
    }
}

/// The `*.toml` files of a policy folder, sorted: what the build reads
/// there, and what a reload compares with.
pub(super) fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.extension().is_some_and(|x| x == "toml"))
        .collect();
    found.sort();
    Ok(found)
}
