//! The OpenAPI document of an API as the gateway serves it
//! (`GET /admin/v1/apis/{name}/openapi`): its own document when the
//! manifest names one, else one written from its routes; either way with
//! the gateway's listeners as `servers`, the manifest's other routes added,
//! and the credentials its chain asks for as security schemes.

use super::{escape, OpenApi, METHODS};
use serde_json::{json, Map, Value};

/// One route of the API, as the manifest gives it.
#[derive(Debug, Clone, Default)]
pub struct RouteView {
    pub name: Option<String>,
    pub path: Option<String>,
    pub prefix: Option<String>,
    /// Upper case; empty: any method.
    pub methods: Vec<String>,
}

/// How callers authenticate, from the chain's steps.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `key-auth`: the header and the query parameter the key is read from.
    pub api_key_header: Option<String>,
    pub api_key_query: Option<String>,
    /// `jwt`: a bearer token.
    pub bearer_jwt: bool,
}

/// Which version of a version set the API is, and how calls name it.
#[derive(Debug, Clone)]
pub struct VersionView {
    pub set: String,
    pub version: String,
    /// `path`, `header` or `query`.
    pub scheme: &'static str,
    /// The header or query parameter (for `header` and `query`).
    pub name: Option<String>,
    /// Whether calls that name no version reach this one.
    pub default: bool,
}

/// What the export describes.
pub struct Served<'a> {
    pub api: &'a str,
    pub spec: Option<&'a OpenApi>,
    /// Routes of the manifest besides the document's.
    pub routes: &'a [RouteView],
    /// Base URLs the API is reached at (`http://127.0.0.1:8080`).
    pub servers: &'a [String],
    pub credentials: Credentials,
    pub version: Option<VersionView>,
    /// Deprecated (or retired): every operation is marked `deprecated`,
    /// and this goes under `info.x-tollgate-lifecycle`.
    pub lifecycle: Option<Value>,
}

/// The document.
pub fn document(s: &Served<'_>) -> Value {
    let mut doc = match s.spec {
        Some(spec) => spec.doc.clone(),
        None => json!({
            "openapi": "3.1.0",
            "info": {
                "title": s.api,
                "version": "1",
                "description": format!("API `{}` as the gateway routes it (no OpenAPI document was given in its manifest).", s.api),
            },
            "paths": {},
        }),
    };
    let Some(top) = doc.as_object_mut() else {
        return doc;
    };
    // A path version is the first segment: part of the server's URL.
    let prefix = match &s.version {
        Some(v) if v.scheme == "path" => format!("/{}", v.version),
        _ => String::new(),
    };
    top.insert(
        "servers".into(),
        Value::Array(
            s.servers
                .iter()
                .map(|u| json!({ "url": format!("{u}{prefix}") }))
                .collect(),
        ),
    );
    top.insert("x-tollgate-api".into(), json!(s.api));
    let paths = top
        .entry("paths")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut paths = paths;
    for r in s.routes {
        add_route(&mut paths, r);
    }
    if let Some(v) = &s.version {
        mark_version(&mut paths, v);
        top.insert(
            "x-tollgate-version".into(),
            json!({"set": v.set, "version": v.version, "scheme": v.scheme, "name": v.name, "default": v.default}),
        );
    }
    if let Some(l) = &s.lifecycle {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for m in METHODS {
                if let Some(op) = item.get_mut(m).and_then(Value::as_object_mut) {
                    op.insert("deprecated".into(), json!(true));
                }
            }
        }
        if let Some(info) = top.get_mut("info").and_then(Value::as_object_mut) {
            info.insert("x-tollgate-lifecycle".into(), l.clone());
        }
    }
    top.insert("paths".into(), Value::Object(paths));
    add_security(top, &s.credentials);
    doc
}

/// A header or query version: a parameter of every path item naming it.
fn mark_version(paths: &mut Map<String, Value>, v: &VersionView) {
    let (Some(name), "header" | "query") = (&v.name, v.scheme) else {
        return;
    };
    let param = json!({
        "name": name,
        "in": v.scheme,
        "required": !v.default,
        "description": format!("The version of `{}`: `{}` for this one.", v.set, v.version),
        "schema": {"type": "string", "enum": [v.version]},
    });
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        let params = item.entry("parameters").or_insert_with(|| json!([]));
        if let Some(a) = params.as_array_mut() {
            a.push(param.clone());
        }
    }
}

/// Add a manifest route that the document does not describe.
fn add_route(paths: &mut Map<String, Value>, r: &RouteView) {
    let (path, prefix) = match (&r.path, &r.prefix) {
        (Some(p), _) => (p.clone(), false),
        (None, Some(p)) => (p.clone(), true),
        (None, None) => return,
    };
    let item = paths
        .entry(path.clone())
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(item) = item else { return };
    if prefix {
        item.insert("x-tollgate-prefix".into(), json!(true));
        item.insert(
            "description".into(),
            json!(format!(
                "This path and every path below it (`{}/...`).",
                path.trim_end_matches('/')
            )),
        );
    }
    let params: Vec<Value> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|n| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let methods: Vec<String> = if r.methods.is_empty() {
        METHODS
            .iter()
            .filter(|m| **m != "trace")
            .map(|m| m.to_string())
            .collect()
    } else {
        r.methods.iter().map(|m| m.to_ascii_lowercase()).collect()
    };
    let many = methods.len() > 1;
    for m in methods {
        if item.contains_key(&m) || !METHODS.contains(&m.as_str()) {
            continue;
        }
        let mut op = json!({
            "responses": {"default": {"description": "The upstream's response."}},
        });
        if let Some(n) = &r.name {
            op["operationId"] = json!(if many { format!("{n}-{m}") } else { n.clone() });
        }
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        item.insert(m, op);
    }
}

/// Security schemes for the chain's credentials, when the document does
/// not already require some.
fn add_security(top: &mut Map<String, Value>, c: &Credentials) {
    if top.contains_key("security") {
        return;
    }
    let mut schemes = Map::new();
    if let Some(h) = &c.api_key_header {
        schemes.insert(
            "tollgate-key-header".into(),
            json!({"type": "apiKey", "in": "header", "name": h}),
        );
    }
    if let Some(q) = &c.api_key_query {
        schemes.insert(
            "tollgate-key-query".into(),
            json!({"type": "apiKey", "in": "query", "name": q}),
        );
    }
    if c.bearer_jwt {
        schemes.insert(
            "tollgate-jwt".into(),
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}),
        );
    }
    if schemes.is_empty() {
        return;
    }
    // Any one of them is enough.
    let security: Vec<Value> = schemes.keys().map(|k| json!({ k: [] })).collect();
    let components = top.entry("components").or_insert_with(|| json!({}));
    if let Some(c) = components.as_object_mut() {
        let existing = c.entry("securitySchemes").or_insert_with(|| json!({}));
        if let Some(e) = existing.as_object_mut() {
            e.extend(schemes);
        }
    }
    top.insert("security".into(), Value::Array(security));
}

/// The operations of a document as `(METHOD, path)` pairs, sorted: what
/// a round trip must keep.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (p, item) in paths {
            for m in METHODS {
                if item.get(m).is_some() {
                    out.push((m.to_ascii_uppercase(), p.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

/// The pointer of the path item `path` (for messages).
pub fn path_pointer(path: &str) -> String {
    format!("/paths/{}", escape(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_become_paths_and_keys_a_security_scheme() {
        let routes = [
            RouteView {
                name: Some("get-pet".into()),
                path: Some("/pets/{id}".into()),
                prefix: None,
                methods: vec!["GET".into(), "HEAD".into()],
            },
            RouteView {
                name: None,
                path: None,
                prefix: Some("/echo".into()),
                methods: vec![],
            },
        ];
        let d = document(&Served {
            api: "pets",
            spec: None,
            routes: &routes,
            servers: &["http://127.0.0.1:8080".into()],
            credentials: Credentials {
                api_key_header: Some("x-api-key".into()),
                ..Default::default()
            },
            version: None,
            lifecycle: None,
        });
        assert_eq!(d["openapi"], "3.1.0");
        assert_eq!(d["servers"][0]["url"], "http://127.0.0.1:8080");
        assert_eq!(
            d["paths"]["/pets/{id}"]["get"]["operationId"],
            "get-pet-get"
        );
        assert_eq!(
            d["paths"]["/pets/{id}"]["get"]["parameters"][0]["name"],
            "id"
        );
        assert_eq!(d["paths"]["/echo"]["x-tollgate-prefix"], true);
        assert!(d["paths"]["/echo"]["delete"].is_object());
        assert_eq!(
            d["components"]["securitySchemes"]["tollgate-key-header"]["name"],
            "x-api-key"
        );
        assert_eq!(d["security"][0]["tollgate-key-header"], json!([]));
        assert_eq!(operations(&d).len(), 2 + 7);
    }

    #[test]
    fn versions_and_deprecation_show_in_the_document() {
        let routes = [RouteView {
            name: Some("r".into()),
            path: Some("/pets".into()),
            prefix: None,
            methods: vec!["GET".into()],
        }];
        let served = |scheme, lifecycle| {
            document(&Served {
                api: "pets-v2",
                spec: None,
                routes: &routes,
                servers: &["http://gw:8080".into()],
                credentials: Credentials::default(),
                version: Some(VersionView {
                    set: "pets".into(),
                    version: "v2".into(),
                    scheme,
                    name: (scheme != "path").then(|| "api-version".into()),
                    default: false,
                }),
                lifecycle,
            })
        };
        let d = served("path", None);
        assert_eq!(d["servers"][0]["url"], "http://gw:8080/v2");
        assert!(d["paths"]["/pets"].get("parameters").is_none());
        let d = served("header", Some(json!({"state": "deprecated"})));
        assert_eq!(d["servers"][0]["url"], "http://gw:8080");
        assert_eq!(d["paths"]["/pets"]["parameters"][0]["in"], "header");
        assert_eq!(d["paths"]["/pets"]["parameters"][0]["required"], true);
        assert_eq!(d["paths"]["/pets"]["get"]["deprecated"], true);
        assert_eq!(d["info"]["x-tollgate-lifecycle"]["state"], "deprecated");
        assert_eq!(d["x-tollgate-version"]["version"], "v2");
    }
}
