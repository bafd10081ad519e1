//! APIs created, replaced and deleted through the admin API. As with
//! chains ([`super::chain`]), the manifest stays the source of truth: an
//! API is an `[[api]]` table written into a manifest (keeping the rest of
//! the file, comments included), and the edit goes live through the same
//! build-check-swap as a reload, so nothing that does not build is
//! written.

use super::chain::{
    api_index, api_tables, json_table, json_value, parse_manifest as parse, step_table, StepInput,
};
use super::error::AdminError;
use serde::Deserialize;
use serde_json::{Map, Value};
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table};

/// An API as the admin API takes it: the manifest's `[[api]]` keys in
/// snake_case (`connect_timeout` for `connect-timeout` ...).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiInput {
    /// Required on create; on replace, absent or the API's own name.
    #[serde(default, deserialize_with = "super::model::present")]
    pub name: Option<String>,
    /// Create only: the manifest to write the API into, relative to the
    /// gateway file's folder — a loaded manifest (the API is appended) or
    /// a new `*.toml` file in a policy folder the gateway file names.
    /// Default: `<folder>/<name>.toml` in the first policy folder, else the
    /// first manifest.
    #[serde(default, deserialize_with = "super::model::present")]
    pub manifest: Option<String>,
    /// `targets`, `connect_timeout`, `response_timeout`, `body_timeout`,
    /// `retries`, `preserve_host`, `breaker`, `ca_file`, `client_cert`,
    /// `client_key`, `tls_server_name`, `insecure_skip_verify`.
    pub upstream: Map<String, Value>,
    /// Each: `name`, `hosts`, `path` or `prefix`, `methods`.
    #[serde(default)]
    pub routes: Vec<Map<String, Value>>,
    /// An OpenAPI document (relative to the manifest): its operations
    /// become routes.
    #[serde(default, deserialize_with = "super::model::present")]
    pub openapi: Option<String>,
    /// The chain; on replace, absent keeps the current one.
    #[serde(default, deserialize_with = "super::model::present")]
    pub chain: Option<Vec<StepInput>>,
}

/// Most routes one API may be given through the admin API.
pub const MAX_ROUTES: usize = 1000;

/// `snake_case` keys of `o` (recursively) in the manifest's kebab-case.
fn kebab(o: &Map<String, Value>) -> Map<String, Value> {
    o.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Object(inner) => Value::Object(kebab(inner)),
                Value::Array(a) => Value::Array(
                    a.iter()
                        .map(|x| match x {
                            Value::Object(inner) => Value::Object(kebab(inner)),
                            x => x.clone(),
                        })
                        .collect(),
                ),
                v => v.clone(),
            };
            (k.replace('_', "-"), v)
        })
        .collect()
}

impl ApiInput {
    /// Checks that need no build: names, sizes, shapes.
    pub fn check(&self) -> Result<(), AdminError> {
        if let Some(n) = &self.name {
            crate::manifest::Name::try_from(n.clone())
                .map_err(|e| AdminError::invalid("name", e))?;
        }
        if self.routes.is_empty() && self.openapi.is_none() {
            return Err(AdminError::unprocessable(
                "routes",
                "an API needs at least one route, or `openapi` naming a document",
            ));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(AdminError::invalid(
                "routes",
                format!("at most {MAX_ROUTES} routes"),
            ));
        }
        if !matches!(self.upstream.get("targets"), Some(Value::Array(t)) if !t.is_empty()) {
            return Err(AdminError::invalid(
                "upstream.targets",
                "a list of at least one URL (http://host:port[/base-path])",
            ));
        }
        // The upstream's and the routes' keys, types and values as the
        // manifest takes them, before anything else (`If-Match` included):
        // 422 naming the field, as the build would.
        #[derive(Deserialize)]
        struct Upstream {
            #[allow(dead_code)]
            u: crate::manifest::UpstreamSpec,
        }
        #[derive(Deserialize)]
        struct Route {
            #[allow(dead_code)]
            r: crate::manifest::RouteSpec,
        }
        let up = json_value(&Value::Object(kebab(&self.upstream)), "upstream", 0)?;
        toml::from_str::<Upstream>(&format!("u = {up}"))
            .map_err(|e| AdminError::unprocessable("upstream", e.message().to_string()))?;
        for (i, r) in self.routes.iter().enumerate() {
            let field = format!("routes[{i}]");
            let v = json_value(&Value::Object(kebab(r)), &field, 0)?;
            toml::from_str::<Route>(&format!("r = {v}"))
                .map_err(|e| AdminError::unprocessable(field, e.message().to_string()))?;
        }
        if let Some(chain) = &self.chain {
            super::chain::check_steps(chain)?;
        }
        Ok(())
    }

    /// The `[[api]]` table (with its `[[api.route]]` and `[[api.chain]]`
    /// tables); `keep_chain` is written when no chain was given.
    fn table(&self, name: &str, keep_chain: Option<Item>) -> Result<Table, AdminError> {
        let mut t = Table::new();
        t.insert("name", toml_edit::value(name));
        if let Some(o) = &self.openapi {
            t.insert("openapi", toml_edit::value(o.as_str()));
        }
        let up = json_value(&Value::Object(kebab(&self.upstream)), "upstream", 0)?;
        t.insert("upstream", Item::Value(up));
        if !self.routes.is_empty() {
            let mut aot = ArrayOfTables::new();
            for (i, r) in self.routes.iter().enumerate() {
                aot.push(json_table(&kebab(r), &format!("routes[{i}]"), 0)?);
            }
            t.insert("route", Item::ArrayOfTables(aot));
        }
        match &self.chain {
            Some(chain) if !chain.is_empty() => {
                let mut aot = ArrayOfTables::new();
                for s in chain {
                    aot.push(step_table(s)?);
                }
                t.insert("chain", Item::ArrayOfTables(aot));
            }
            Some(_) => {}
            None => {
                if let Some(c) = keep_chain {
                    t.insert("chain", c);
                }
            }
        }
        Ok(t)
    }
}

/// The manifest `text` with API `input` appended (a new file when `text`
/// is empty).
pub fn insert_api(text: &str, input: &ApiInput) -> Result<String, AdminError> {
    let name = input
        .name
        .as_deref()
        .ok_or_else(|| AdminError::invalid("name", "required"))?;
    let mut doc = parse(text)?;
    if doc.get("schema").is_none() {
        doc.insert(
            "schema",
            toml_edit::value(i64::from(crate::manifest::SCHEMA)),
        );
    }
    let table = input.table(name, None)?;
    match doc.get_mut("api") {
        None => {
            let mut aot = ArrayOfTables::new();
            aot.push(table);
            doc.insert("api", Item::ArrayOfTables(aot));
        }
        Some(item) => {
            match item.as_array_of_tables_mut() {
                Some(aot) => aot.push(table),
                None => return Err(AdminError::conflict(
                    "the manifest does not write its APIs as [[api]] tables: name another manifest",
                )),
            }
        }
    }
    Ok(doc.to_string())
}

/// The `[[api]]` tables of `doc` and the index of API `name` among them.
fn find<'a>(
    doc: &'a mut DocumentMut,
    name: &str,
) -> Result<(&'a mut ArrayOfTables, usize), AdminError> {
    let apis = api_tables(doc)?;
    let i = api_index(apis, name)?;
    Ok((apis, i))
}

/// The manifest `text` with API `name`'s definition replaced by `input`
/// (its chain kept when `input` has none, and every other key of the
/// API's table — `record` ... — kept).
pub fn replace_api(text: &str, name: &str, input: &ApiInput) -> Result<String, AdminError> {
    if input.name.as_deref().is_some_and(|n| n != name) {
        return Err(AdminError::unprocessable(
            "name",
            "an API is not renamed: create the new one and delete this one",
        ));
    }
    let mut doc = parse(text)?;
    let (apis, i) = find(&mut doc, name)?;
    let old = apis.get_mut(i).expect("found above");
    let keep_chain = old.get("chain").cloned();
    if keep_chain.as_ref().is_some_and(|c| !c.is_array_of_tables()) && input.chain.is_none() {
        return Err(AdminError::conflict(format!(
            "API `{name}` writes its chain inline: give `chain`, or edit it by hand"
        )));
    }
    let mut new = input.table(name, keep_chain)?;
    // Keys this input does not speak for stay as they were.
    for (k, v) in old.iter() {
        if !matches!(k, "name" | "openapi" | "upstream" | "route" | "chain") && !new.contains_key(k)
        {
            new.insert(k, v.clone());
        }
    }
    *new.decor_mut() = old.decor().clone();
    *old = new;
    Ok(doc.to_string())
}

/// The manifest `text` without API `name`.
pub fn remove_api(text: &str, name: &str) -> Result<String, AdminError> {
    let mut doc = parse(text)?;
    let (apis, i) = find(&mut doc, name)?;
    apis.remove(i);
    if apis.is_empty() {
        doc.remove("api");
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::PolicyManifest;
    use serde_json::json;

    fn input(v: Value) -> ApiInput {
        serde_json::from_value(v).unwrap()
    }

    const FILE: &str = "# our APIs\nschema = 1\n\n[[api]]\nname = \"a\"\nupstream = { targets = [\"http://127.0.0.1:1\"] }\n[api.record]\nfile = \"a.jsonl\"\n[[api.route]]\nprefix = \"/a\"\n[[api.chain]]\nplugin = \"transform\"\n\n# keep me\n[[api]]\nname = \"b\"\nupstream = { targets = [\"http://127.0.0.1:2\"] }\n[[api.route]]\nprefix = \"/b\"\n";

    #[test]
    fn insert_replace_remove() {
        let new = input(json!({
            "name": "c",
            "upstream": {"targets": ["http://127.0.0.1:3"], "connect_timeout": "1s", "breaker": {"count_5xx": true}},
            "routes": [{"name": "one", "path": "/c/{id}", "methods": ["GET"]}],
            "chain": [{"plugin": "cors", "config": {"origins": ["*"]}}],
        }));
        new.check().unwrap();
        let text = insert_api(FILE, &new).unwrap();
        assert!(
            text.starts_with("# our APIs\n") && text.contains("# keep me"),
            "{text}"
        );
        let m: PolicyManifest = toml::from_str(&text).unwrap();
        let c = m.apis[2].get_ref();
        assert_eq!(
            c.upstream.connect_timeout.0,
            std::time::Duration::from_secs(1)
        );
        assert!(c.upstream.breaker.count_5xx);
        assert_eq!(c.routes[0].get_ref().path.as_deref(), Some("/c/{id}"));
        assert_eq!(c.chain[0].get_ref().plugin, "cors");

        // Replace a: new routes and upstream, chain and record kept.
        let r = input(
            json!({"upstream": {"targets": ["http://127.0.0.1:9"]}, "routes": [{"prefix": "/a2"}]}),
        );
        let text = replace_api(&text, "a", &r).unwrap();
        let m: PolicyManifest = toml::from_str(&text).unwrap();
        let a = m.apis[0].get_ref();
        assert_eq!(a.upstream.targets, ["http://127.0.0.1:9"]);
        assert_eq!(a.routes[0].get_ref().prefix.as_deref(), Some("/a2"));
        assert_eq!(a.chain[0].get_ref().plugin, "transform");
        assert!(a.record.is_some());
        assert!(text.contains("# keep me"));

        let text = remove_api(&text, "b").unwrap();
        let m: PolicyManifest = toml::from_str(&text).unwrap();
        assert_eq!(m.apis.len(), 2);
        let text = remove_api(&remove_api(&text, "a").unwrap(), "c").unwrap();
        let m: PolicyManifest = toml::from_str(&text).unwrap();
        assert!(m.apis.is_empty());

        // A new file.
        let text = insert_api("", &new).unwrap();
        let m: PolicyManifest = toml::from_str(&text).unwrap();
        assert_eq!((m.schema, m.apis.len()), (1, 1));
    }

    #[test]
    fn bad_input_is_refused_naming_the_field() {
        let bad = |v: Value| input(v).check().unwrap_err().to_string();
        assert!(
            bad(json!({"name": "a b", "upstream": {"targets": ["http://x"]}, "routes": [{}]}))
                .contains("name")
        );
        assert!(
            bad(json!({"name": "a", "upstream": {"targets": []}, "routes": [{}]}))
                .contains("upstream.targets")
        );
        assert!(
            bad(json!({"name": "a", "upstream": {"targets": ["http://x"]}})).contains("routes")
        );
        assert!(serde_json::from_value::<ApiInput>(
            json!({"name": "a", "upstream": {}, "nope": 1})
        )
        .is_err());
        let r = input(
            json!({"name": "z", "upstream": {"targets": ["http://x"]}, "routes": [{"prefix": "/"}]}),
        );
        assert!(replace_api(FILE, "a", &r)
            .unwrap_err()
            .to_string()
            .contains("renamed"));
        assert!(replace_api(
            FILE,
            "nope",
            &input(json!({"upstream": {"targets": ["http://x"]}, "routes": [{"prefix": "/"}]}))
        )
        .unwrap_err()
        .to_string()
        .contains("not an [[api]] table"));
        let up = |u: Value| bad(json!({"name": "a", "upstream": u, "routes": [{"prefix": "/"}]}));
        assert!(up(json!({"targets": ["http://x"], "tls_server_name": 7})).contains("upstream"));
        assert!(up(json!({"targets": ["http://x"], "retries": "two"})).contains("upstream"));
        assert!(up(json!({"targets": ["http://x"], "nope": 1})).contains("nope"));
        assert!(up(json!({"targets": ["http://x"], "connect_timeout": "10"})).contains("upstream"));
        let route = bad(
            json!({"name": "a", "upstream": {"targets": ["http://x"]}, "routes": [{"prefix": 7}]}),
        );
        assert!(route.contains("routes[0]"), "{route}");
        let deep = (0..40).fold(json!(1), |v, _| json!({ "x": v }));
        assert!(insert_api(FILE, &input(json!({"name": "d", "upstream": {"targets": ["http://x"], "breaker": deep}, "routes": [{"prefix": "/"}]}))).is_err());
    }
}
