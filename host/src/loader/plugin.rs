//! The last level: a step's plugin — where its file is (`[plugins.paths]`,
//! else `<name>.wasm` in `[plugins] dirs`), then compiled through the
//! runtime. Every file looked for is recorded, so a plugin that appears
//! later reloads the configuration.

use super::step::StepSite;
use super::{resolve, Build};
use crate::manifest::{GatewayFile, StepSpec};
use crate::policy::Plugin;
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl Build<'_> {
    /// The step's plugin, compiled; `None` when it has an error (then
    /// reported).
    pub(super) fn plugin(&mut self, site: &StepSite, spec: &StepSpec) -> Option<Arc<Plugin>> {
        self.plugin_named(site, &spec.plugin, "plugin")
    }

    /// The plugin `name`, named at the step's key `key` (`plugin`, or
    /// `canary.plugin`).
    pub(super) fn plugin_named(
        &mut self,
        site: &StepSite,
        name: &str,
        key: &str,
    ) -> Option<Arc<Plugin>> {
        // The files that would take its place (or supply it, when it is
        // missing) if they appeared.
        if !self.gw.plugins.paths.contains_key(name) {
            for p in plugin_candidates(self.base, self.gw, name) {
                self.inputs.record_file(&p);
            }
        }
        let path = match find_plugin(self.base, self.gw, name) {
            Ok(p) => p,
            Err(e) => {
                self.errs.push(format!("{}: {e}", site.at(key)));
                return None;
            }
        };
        self.inputs.record_file(&path);
        self.watched.push(path.clone());
        match self.runtime.load_plugin(name, &path) {
            Ok(p) => Some(p),
            Err(e) => {
                self.errs.push(format!("{}: {e:#}", site.header()));
                None
            }
        }
    }
}

/// Where the plugin called `name` lives, or why it cannot be found.
pub fn find_plugin(base: &Path, gw: &GatewayFile, name: &str) -> Result<PathBuf, String> {
    if let Some(p) = gw.plugins.paths.get(name) {
        return Ok(resolve(base, p));
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        let hint = name
            .strip_suffix(".wasm")
            .map(|n| format!("write `{}`, or ", n.replace('_', "-")))
            .unwrap_or_default();
        return Err(format!(
            "plugin name `{name}` may contain only letters, digits, `-` and `_`: {hint}map it in [plugins.paths]"
        ));
    }
    let file = format!("{}.wasm", name.replace('-', "_"));
    plugin_candidates(base, gw, name)
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "plugin `{name}` not found: no [plugins.paths] entry `{name}` and no `{file}` in {}",
                describe_dirs(base, gw)
            )
        })
}

/// `<dir>/<name>.wasm` (with `-` read as `_`) in each of `[plugins] dirs`,
/// in order.
fn plugin_candidates(base: &Path, gw: &GatewayFile, name: &str) -> Vec<PathBuf> {
    let file = format!("{}.wasm", name.replace('-', "_"));
    gw.plugins
        .dirs
        .iter()
        .map(|d| resolve(base, d).join(&file))
        .collect()
}

/// The plugin folders, for a message that none has the plugin.
fn describe_dirs(base: &Path, gw: &GatewayFile) -> String {
    if gw.plugins.dirs.is_empty() {
        return "[plugins] dirs (none configured)".into();
    }
    gw.plugins
        .dirs
        .iter()
        .map(|d| resolve(base, d).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(plugins: &str) -> GatewayFile {
        toml::from_str(&format!(
            "schema = 1\n[[listener]]\nname = \"main\"\naddress = \"127.0.0.1:8080\"\n{plugins}"
        ))
        .unwrap()
    }

    #[test]
    fn a_mapped_plugin_is_its_path_resolved_against_the_gateway_file() {
        let gw = gateway("[plugins.paths]\nauth = \"build/auth.wasm\"\nabs = \"/opt/abs.wasm\"\n");
        let base = Path::new("/etc/tollgate");
        assert_eq!(
            find_plugin(base, &gw, "auth"),
            Ok(PathBuf::from("/etc/tollgate/build/auth.wasm"))
        );
        assert_eq!(
            find_plugin(base, &gw, "abs"),
            Ok(PathBuf::from("/opt/abs.wasm"))
        );
    }

    #[test]
    fn a_named_plugin_is_the_first_dir_that_has_it_with_dashes_read_as_underscores() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["one", "two"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("two").join("rate_limit.wasm"), "").unwrap();
        let gw = gateway("[plugins]\ndirs = [\"one\", \"two\"]\n");
        assert_eq!(
            plugin_candidates(d, &gw, "rate-limit"),
            vec![d.join("one/rate_limit.wasm"), d.join("two/rate_limit.wasm")]
        );
        assert_eq!(
            find_plugin(d, &gw, "rate-limit"),
            Ok(d.join("two").join("rate_limit.wasm"))
        );
        std::fs::write(d.join("one").join("rate_limit.wasm"), "").unwrap();
        assert_eq!(
            find_plugin(d, &gw, "rate-limit"),
            Ok(d.join("one").join("rate_limit.wasm"))
        );
        assert_eq!(
            find_plugin(d, &gw, "nope"),
            Err(format!(
                "plugin `nope` not found: no [plugins.paths] entry `nope` and no `nope.wasm` in {}, {}",
                d.join("one").display(),
                d.join("two").display()
            ))
        );
    }

    #[test]
    fn a_plugin_name_is_letters_digits_dashes_and_underscores() {
        let gw = gateway("");
        assert_eq!(
            find_plugin(Path::new("."), &gw, "x"),
            Err("plugin `x` not found: no [plugins.paths] entry `x` and no `x.wasm` in [plugins] dirs (none configured)".into())
        );
        assert_eq!(
            find_plugin(Path::new("."), &gw, "rate_limit.wasm"),
            Err("plugin name `rate_limit.wasm` may contain only letters, digits, `-` and `_`: write `rate-limit`, or map it in [plugins.paths]".into())
        );
        for bad in ["", "../x", "a b", "é"] {
            let e = find_plugin(Path::new("."), &gw, bad).unwrap_err();
            assert!(e.ends_with(": map it in [plugins.paths]"), "{bad:?}: {e}");
        }
    }
}
