//! The second level: the policy manifests a gateway file names — list the
//! folders, read (or take the admin API's edited text), parse, check the
//! schema, then hand each file's consumers and APIs to the next level.

use super::{inputs::toml_files, resolve, Build, ConfigErrors, Inputs};
use crate::manifest::{self, line_col, GatewayFile, ManifestError, PolicyManifest, SCHEMA};
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The manifest files a gateway file names (folders expand to their
/// `*.toml` files, sorted).
pub fn manifest_files(base: &Path, gw: &GatewayFile) -> Result<Vec<PathBuf>, ConfigErrors> {
    let mut files = Vec::new();
    let mut errs = Vec::new();
    for p in &gw.policies {
        let p = resolve(base, p);
        if p.is_dir() {
            match toml_files(&p) {
                Ok(found) => files.extend(found),
                Err(e) => errs.push(format!("{}: cannot read folder: {e}", p.display())),
            }
        } else {
            files.push(p);
        }
    }
    if errs.is_empty() {
        Ok(files)
    } else {
        Err(ConfigErrors(errs))
    }
}

/// Whether `file` is a `*.toml` file directly in a policy folder the
/// gateway file names.
pub fn in_policy_folder(base: &Path, gw: &GatewayFile, file: &Path) -> bool {
    file.extension().is_some_and(|e| e == "toml")
        && gw.policies.iter().any(|p| {
            let p = resolve(base, p);
            p.is_dir() && file.parent() == Some(p.as_path())
        })
}

/// Record in `inputs` the manifests each policy folder held (of `files`,
/// as [`manifest_files`] listed them): a file added or removed there is a
/// change.
pub(super) fn record_folders(
    base: &Path,
    gw: &GatewayFile,
    files: &[PathBuf],
    inputs: &mut Inputs,
) {
    for p in &gw.policies {
        let p = resolve(base, p);
        if p.is_dir() {
            let listed = files
                .iter()
                .filter(|f| f.parent() == Some(p.as_path()))
                .cloned()
                .collect();
            inputs.record_folder(&p, listed);
        }
    }
}

/// A manifest being built: where it is, its text and its syntax tree (for
/// where each error is).
pub(super) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    /// The file's syntax tree, for where a key of a step is.
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Source<'a> {
        Source {
            path,
            text,
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    /// `path:line:column` of a byte offset.
    pub fn at(&self, offset: usize) -> String {
        let (l, c) = line_col(self.text, offset);
        format!("{}:{l}:{c}", self.path.display())
    }

    /// The table of step `step` of the file's API `api`.
    #[cfg(test)]
    pub fn step_item(&self, api: usize, step: usize) -> Option<&toml_edit::Item> {
        self.chain_step_item(ChainAt::Api(api, None), step)
    }

    /// The table of step `step` of the chain at `place` in this file.
    pub fn chain_step_item(&self, place: ChainAt, step: usize) -> Option<&toml_edit::Item> {
        let doc = self.doc.as_ref()?.as_item();
        let owner = |api: usize, revision: Option<usize>| {
            let api = doc.get("api")?.get(api)?;
            match revision {
                Some(r) => api.get("revision")?.get(r),
                None => Some(api),
            }
        };
        let chain = match place {
            ChainAt::Gateway => doc.get("chain")?,
            ChainAt::Product(p) => doc.get("product")?.get(p)?.get("chain")?,
            ChainAt::Api(api, revision) => owner(api, revision)?.get("chain")?,
            ChainAt::Route(api, revision, route) => owner(api, revision)?
                .get("route")?
                .get(route)?
                .get("chain")?,
        };
        chain.get(step)
    }
}

/// Where a chain is written in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChainAt {
    /// `[[chain]]`.
    Gateway,
    /// `[[product.chain]]` of the file's `n`-th product.
    Product(usize),
    /// `[[api.chain]]` of the file's `n`-th API, or of its revision.
    Api(usize, Option<usize>),
    /// `[[api.route.chain]]` of a route of an API (or of its revision).
    Route(usize, Option<usize>, usize),
}

impl Build<'_> {
    /// Read and check manifest `file` (`edited`: its text as the admin API
    /// would write it, instead of what is on disk): its errors otherwise.
    pub(super) fn manifest(
        &mut self,
        file: &Path,
        edited: Option<&String>,
    ) -> Result<(PathBuf, PolicyManifest, Arc<str>), Vec<String>> {
        let (m, text) = self
            .read_manifest(file, edited)
            .map_err(|e| ConfigErrors::from(e).0)?;
        self.sources.insert(
            file.to_path_buf(),
            hex::encode(sha2::Sha256::digest(text.as_bytes())),
        );
        if m.schema != SCHEMA {
            return Err(vec![format!(
                "{}: schema {} is not supported (this build reads schema {SCHEMA})",
                file.display(),
                m.schema
            )]);
        }
        Ok((file.to_path_buf(), m, text.into()))
    }

    /// Build what a manifest declares: consumers, version sets, APIs.
    pub(super) fn declarations(&mut self, file: &Path, m: &PolicyManifest, text: &str) {
        let src = Source::new(file, text);
        self.consumers(&src, &m.consumers);
        self.version_sets(&src, &m.version_sets);
        for (index_in_file, api) in m.apis.iter().enumerate() {
            self.api(&src, index_in_file, api);
        }
    }

    /// Parse `file` (or its edited text), recording what was read.
    fn read_manifest(
        &mut self,
        file: &Path,
        edited: Option<&String>,
    ) -> Result<(PolicyManifest, String), ManifestError> {
        let read = match edited {
            Some(text) => manifest::parse_toml(file, text).map(|m| (m, text.clone())),
            None => manifest::read_toml(file),
        };
        match &read {
            Ok((_, text)) => self.inputs.record_text(file, text),
            Err(_) => self.inputs.record_unread(file),
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(policies: &[&str]) -> GatewayFile {
        let list = policies
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        toml::from_str(&format!(
            "schema = 1\npolicies = [{list}]\n[[listener]]\nname = \"main\"\naddress = \"127.0.0.1:8080\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn folders_expand_to_their_toml_files_sorted_and_paths_resolve_against_the_gateway_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("apis")).unwrap();
        for f in ["b.toml", "a.toml", "notes.txt", "c.toml.bak"] {
            std::fs::write(d.join("apis").join(f), "").unwrap();
        }
        let elsewhere = tempfile::tempdir().unwrap();
        let absolute = elsewhere.path().join("abs.toml");
        let gw = gateway(&["single.toml", "apis", absolute.to_str().unwrap()]);
        let files = manifest_files(d, &gw).unwrap();
        assert_eq!(
            files,
            vec![
                d.join("single.toml"),
                d.join("apis").join("a.toml"),
                d.join("apis").join("b.toml"),
                absolute.clone(),
            ]
        );

        let mut inputs = Inputs::default();
        record_folders(d, &gw, &files, &mut inputs);
        assert!(inputs.relevant(&d.join("apis").join("new.toml")));
        assert!(!inputs.relevant(&d.join("apis").join("notes.txt")));
        assert!(
            !inputs.relevant(&d.join("other.toml")),
            "not a policy folder"
        );
        assert!(inputs.folders_to_watch().contains(&d.join("apis")));
    }

    #[test]
    fn error_places_are_file_line_column() {
        let text = "schema = 1\n[[api]]\nname = \"a\"\n";
        let src = Source::new(Path::new("/x/a.toml"), text);
        assert_eq!(src.at(0), "/x/a.toml:1:1");
        assert_eq!(src.at(text.find("name").unwrap()), "/x/a.toml:3:1");
        assert!(src.step_item(0, 0).is_none(), "the API has no chain");
        let text =
            "[[api]]\nname = \"a\"\n[[api.chain]]\nplugin = \"p\"\n[[api.chain]]\nplugin = \"q\"\n";
        let src = Source::new(Path::new("a.toml"), text);
        let item = src.step_item(0, 1).unwrap();
        assert_eq!(item.get("plugin").and_then(|p| p.as_str()), Some("q"));
        assert!(src.step_item(0, 2).is_none() && src.step_item(1, 0).is_none());
        let broken = Source::new(Path::new("b.toml"), "[[api]");
        assert!(broken.step_item(0, 0).is_none());
    }
}
