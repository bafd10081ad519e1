//! `tollgate import openapi`: a policy manifest for an OpenAPI document —
//! one route per operation (its path template and method, named by its
//! `operationId`), the upstream from `--upstream` or the document's first
//! server — or, with `--reference`, a manifest that names the document so
//! that the gateway reads the routes from it at every load.

use super::OpenApi;
use serde_json::Value;
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table};

/// What to write.
#[derive(Debug, Default)]
pub struct ImportOptions {
    /// The API's name.
    pub api: String,
    /// The upstream URL; default: the document's first server.
    pub upstream: Option<String>,
    /// Name the document (this path, as the manifest should say it)
    /// instead of writing its routes.
    pub reference: Option<String>,
    /// Add a `validate` step (needs `reference`).
    pub validate: bool,
    /// Add a `mock-response` step (needs `reference`).
    pub mock: bool,
}

/// The first server's URL with its variables' defaults filled in.
pub fn first_server(doc: &Value) -> Option<String> {
    let server = doc.pointer("/servers/0")?;
    let mut url = server.get("url")?.as_str()?.to_string();
    if let Some(vars) = server.get("variables").and_then(Value::as_object) {
        for (k, v) in vars {
            if let Some(d) = v.get("default").and_then(Value::as_str) {
                url = url.replace(&format!("{{{k}}}"), d);
            }
        }
    }
    Some(url)
}

/// What the import leaves out: each operation served by another's route
/// (the router cannot tell them apart), as a line for the operator.
pub fn notes(spec: &OpenApi) -> Vec<String> {
    spec.operations
        .iter()
        .filter_map(|op| {
            let by = op.shadowed_by.as_ref()?;
            Some(format!(
                "{} {} ({}) is served by route `{by}`: the router cannot tell the two apart",
                op.method, op.path, op.pointer
            ))
        })
        .collect()
}

/// The manifest's text.
pub fn manifest(spec: &OpenApi, o: &ImportOptions) -> Result<String, String> {
    crate::manifest::Name::try_from(o.api.clone()).map_err(|e| format!("--api: {e}"))?;
    if (o.validate || o.mock) && o.reference.is_none() {
        return Err(
            "--validate and --mock need --reference: their steps read the document at load".into(),
        );
    }
    let upstream = match &o.upstream {
        Some(u) => u.clone(),
        None => match first_server(&spec.doc) {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => u,
            Some(u) => {
                return Err(format!(
                    "the document's first server `{u}` is not an absolute http(s) URL: give --upstream URL"
                ))
            }
            None => return Err("the document names no server: give --upstream URL".into()),
        },
    };
    if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
        return Err(format!(
            "--upstream `{upstream}` must be an http:// or https:// URL"
        ));
    }
    let mut d = DocumentMut::new();
    let title = spec.title().unwrap_or("untitled");
    d.decor_mut().set_prefix(format!(
        "# Imported by `tollgate import openapi` from {} (OpenAPI {}, \"{}\").\n",
        spec.file.display(),
        spec.version,
        title.replace(['\n', '\r'], " ")
    ));
    d["schema"] = value(1);
    let mut api = Table::new();
    api["name"] = value(o.api.as_str());
    if let Some(r) = &o.reference {
        api["openapi"] = value(r.as_str());
    }
    let mut up = InlineTable::new();
    let mut targets = Array::new();
    targets.push(upstream.as_str());
    up.insert("targets", targets.into());
    api["upstream"] = value(up);
    if o.reference.is_none() {
        let mut routes = ArrayOfTables::new();
        for op in &spec.operations {
            if op.shadowed_by.is_some() {
                continue;
            }
            let mut t = Table::new();
            t["name"] = value(op.route.as_str());
            t["path"] = value(op.path.as_str());
            let mut m = Array::new();
            m.push(op.method.as_str());
            t["methods"] = value(m);
            if !op.tags.is_empty() {
                t.decor_mut().set_suffix(format!(
                    "\n# tags: {}",
                    op.tags.join(", ").replace(['\n', '\r'], " ")
                ));
            }
            routes.push(t);
        }
        api["route"] = Item::ArrayOfTables(routes);
    }
    let mut chain = ArrayOfTables::new();
    for (on, name, plugin) in [
        (o.validate, "validate", "validate"),
        (o.mock, "mock", "mock-response"),
    ] {
        if on {
            let mut t = Table::new();
            t["name"] = value(name);
            t["plugin"] = value(plugin);
            let mut g = Array::new();
            g.push("openapi");
            t["grants"] = value(g);
            chain.push(t);
        }
    }
    if !chain.is_empty() {
        api["chain"] = Item::ArrayOfTables(chain);
    }
    let mut apis = ArrayOfTables::new();
    apis.push(api);
    d["api"] = Item::ArrayOfTables(apis);
    Ok(d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::PolicyManifest;

    fn spec(text: &str) -> OpenApi {
        super::super::from_text(std::path::Path::new("pets.yaml"), text).unwrap()
    }

    const PETS: &str = "openapi: 3.0.3\ninfo: {title: Pets, version: '1'}\nservers:\n  - url: 'http://{host}:9090/v1'\n    variables: {host: {default: localhost}}\npaths:\n  /pets:\n    get: {operationId: listPets, tags: [pets]}\n    post: {operationId: createPets}\n  /pets/{petId}:\n    get: {operationId: showPetById}\n";

    #[test]
    fn routes_per_operation_and_the_first_server() {
        let text = manifest(
            &spec(PETS),
            &ImportOptions {
                api: "pets".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let m: PolicyManifest = toml::from_str(&text).unwrap();
        let api = m.apis[0].get_ref();
        assert_eq!(api.upstream.targets, ["http://localhost:9090/v1"]);
        let routes: Vec<(String, String, Vec<String>)> = api
            .routes
            .iter()
            .map(|r| {
                let r = r.get_ref();
                (
                    r.name.clone().unwrap().to_string(),
                    r.path.clone().unwrap(),
                    r.methods.clone(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("listPets".into(), "/pets".into(), vec!["GET".into()]),
                ("createPets".into(), "/pets".into(), vec!["POST".into()]),
                (
                    "showPetById".into(),
                    "/pets/{petId}".into(),
                    vec!["GET".into()]
                ),
            ]
        );
        assert!(text.contains("# tags: pets"), "{text}");
    }

    #[test]
    fn reference_mode_names_the_document() {
        let text = manifest(
            &spec(PETS),
            &ImportOptions {
                api: "pets".into(),
                upstream: Some("http://127.0.0.1:1".into()),
                reference: Some("specs/pets.yaml".into()),
                validate: true,
                mock: false,
            },
        )
        .unwrap();
        let m: PolicyManifest = toml::from_str(&text).unwrap();
        let api = m.apis[0].get_ref();
        assert_eq!(
            api.openapi.as_deref(),
            Some(std::path::Path::new("specs/pets.yaml"))
        );
        assert!(api.routes.is_empty());
        assert_eq!(api.chain[0].get_ref().grants, ["openapi"]);
    }

    #[test]
    fn bad_options_are_refused() {
        let s = spec(PETS);
        let bad = |o: ImportOptions| manifest(&s, &o).unwrap_err();
        assert!(bad(ImportOptions {
            api: "a b".into(),
            ..Default::default()
        })
        .contains("--api"));
        assert!(bad(ImportOptions {
            api: "a".into(),
            validate: true,
            ..Default::default()
        })
        .contains("--reference"));
        assert!(bad(ImportOptions {
            api: "a".into(),
            upstream: Some("ftp://x".into()),
            ..Default::default()
        })
        .contains("http://"));
        let relative = spec("openapi: 3.1.0\ninfo: {title: t, version: '1'}\nservers: [{url: /api/v3}]\npaths: {}\n");
        assert!(manifest(
            &relative,
            &ImportOptions {
                api: "a".into(),
                ..Default::default()
            }
        )
        .unwrap_err()
        .contains("--upstream"));
    }
}
