//! `tollgate record`: turn the recording of one API's calls on or off by
//! editing its `[api.record]` table in the manifest that defines it.
//!
//! Like an edit through the admin API, the new manifest text is checked by
//! a full build of the configuration before anything is written, then
//! written atomically; the rest of the file (comments, order, other keys of
//! the table such as `redact-headers`) is kept. A running gateway picks the
//! change up like any manifest edit (it watches the file; SIGHUP works
//! too).

use crate::loader;
use crate::policy::host::Services;
use crate::policy::{EngineLimits, Runtime};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What to do to the API's `[api.record]`.
#[derive(Debug, Clone, Default)]
pub struct RecordEdit {
    /// The API, by name.
    pub api: String,
    /// Remove the table: stop recording.
    pub off: bool,
    /// The trace file (relative to the manifest's folder). Default: the
    /// table's current one, else `<api>.trace.jsonl`.
    pub file: Option<PathBuf>,
    /// `max-bytes`, `max-body` (sizes as in manifests: `16MiB`) and
    /// `sample`; unset ones keep their current value or default.
    pub max_bytes: Option<String>,
    pub max_body: Option<String>,
    pub sample: Option<f64>,
}

/// What the edit did, for the operator.
#[derive(Debug, Clone)]
pub struct Edited {
    /// The manifest written.
    pub manifest: PathBuf,
    /// The trace file, resolved (none when recording was turned off).
    pub trace: Option<PathBuf>,
}

/// Apply `edit` to the configuration of the gateway file at `gw_path`.
/// Nothing is written unless the whole configuration still builds.
pub fn apply(gw_path: &Path, edit: &RecordEdit) -> Result<Edited, String> {
    let gw_path = gw_path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", gw_path.display()))?;
    let gw = loader::read_gateway_file(&gw_path).map_err(|e| e.to_string())?;
    let base = gw_path.parent().unwrap_or(Path::new("."));
    let files = loader::manifest_files(base, &gw).map_err(|e| e.to_string())?;
    let mut found = None;
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let Ok(doc) = text.parse::<toml_edit::DocumentMut>() else {
            // A manifest that does not parse fails the build below, with
            // its own error.
            continue;
        };
        if api_index(&doc, &edit.api).is_some() {
            if found.is_some() {
                return Err(format!(
                    "api `{}` is defined in more than one manifest",
                    edit.api
                ));
            }
            found = Some((file.clone(), doc));
        }
    }
    let Some((manifest, mut doc)) = found else {
        return Err(format!(
            "no api `{}` in the manifests of {}",
            edit.api,
            gw_path.display()
        ));
    };
    let i = api_index(&doc, &edit.api).expect("found above");
    let api = doc["api"]
        .as_array_of_tables_mut()
        .and_then(|a| a.get_mut(i))
        .expect("found above");
    let trace = if edit.off {
        if api.remove("record").is_none() {
            return Err(format!("api `{}` is not recording", edit.api));
        }
        None
    } else {
        let record = api
            .entry("record")
            .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()));
        let Some(t) = record.as_table_like_mut() else {
            return Err(format!("api `{}`: `record` is not a table", edit.api));
        };
        let file = match (&edit.file, t.get("file").and_then(|f| f.as_str())) {
            (Some(f), _) => f.display().to_string(),
            (None, Some(f)) => f.to_string(),
            (None, None) => format!("{}.trace.jsonl", edit.api),
        };
        t.insert("file", toml_edit::value(file.clone()));
        if let Some(v) = &edit.max_bytes {
            t.insert("max-bytes", toml_edit::value(v.clone()));
        }
        if let Some(v) = &edit.max_body {
            t.insert("max-body", toml_edit::value(v.clone()));
        }
        if let Some(v) = edit.sample {
            t.insert("sample", toml_edit::value(v));
        }
        let folder = manifest.parent().unwrap_or(Path::new("."));
        Some(loader::resolve(folder, Path::new(&file)))
    };
    let text = doc.to_string();
    // The whole configuration, with the new text, must build.
    let runtime = Runtime::new(
        EngineLimits { max_instances: 64 },
        None,
        Arc::new(Services::for_check()),
    )
    .map_err(|e| format!("{e:#}"))?;
    let overrides = BTreeMap::from([(manifest.clone(), text.clone())]);
    loader::build_with(&gw_path, &gw, &runtime, &overrides).map_err(|e| e.to_string())?;
    super::plane::write_atomically(&manifest, text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", manifest.display()))?;
    Ok(Edited { manifest, trace })
}

/// Which `[[api]]` of `doc` is named `name`.
fn api_index(doc: &toml_edit::DocumentMut, name: &str) -> Option<usize> {
    doc.get("api")?
        .as_array_of_tables()?
        .iter()
        .position(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_found_by_name() {
        let doc: toml_edit::DocumentMut = "[[api]]\nname = \"a\"\n[[api]]\nname = \"b\"\n"
            .parse()
            .unwrap();
        assert_eq!(api_index(&doc, "b"), Some(1));
        assert_eq!(api_index(&doc, "c"), None);
        let none: toml_edit::DocumentMut = "schema = 1\n".parse().unwrap();
        assert_eq!(api_index(&none, "a"), None);
    }
}
