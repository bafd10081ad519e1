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

/// What the export describes.
pub struct Served<'a> {
    pub api: &'a str,
    pub spec: Option<&'a OpenApi>,
    /// Routes of the manifest besides the document's.
    pub routes: &'a [RouteView],
    /// Base URLs the API is reached at (`http://127.0.0.1:8080`).
    pub servers: &'a [String],
    pub credentials: Credentials,
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
    top.insert(
        "servers".into(),
        Value::Array(s.servers.iter().map(|u| json!({ "url": u })).collect()),
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
    top.insert("paths".into(), Value::Object(paths));
    add_security(top, &s.credentials);
    doc
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
}
