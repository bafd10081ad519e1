//! The `validate` and `mock-response` policies in a real gateway, on real
//! published OpenAPI documents (issue 18): every example a document gives
//! for a request passes, violations are refused with RFC 9457 problems
//! naming the JSON pointer and keyword, report-only lets calls through,
//! and mocked operations never reach the upstream.

use serde_json::{json, Value};
use tollgate_tests::*;

fn document(rel: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/openapi").join(rel)).unwrap()
}

/// A gateway serving document `rel` (as `spec.<ext>`) with `chain`.
async fn gateway(up: &Upstream, rel: &str, chain: &str) -> TestGateway {
    let ext = rel.rsplit('.').next().unwrap();
    let manifest = format!(
        "schema = 1\n[[api]]\nname = \"a\"\nopenapi = \"spec.{ext}\"\nupstream = {{ targets = [\"{}\"] }}\n{chain}",
        up.url()
    );
    TestGateway::builder(&manifest)
        .file(&format!("spec.{ext}"), document(rel))
        .start()
        .await
}

const VALIDATE: &str = "[[api.chain]]\nplugin = \"validate\"\ngrants = [\"openapi\"]\nmemory = \"64MiB\"\ntimeout = \"500ms\"\n";

async fn send(
    gw: &TestGateway,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, String, Value) {
    let mut r = client().request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        gw.url(path),
    );
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    (
        status,
        ct,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The first error of a problem: `(pointer, keyword)`.
fn first_error(problem: &Value) -> (String, String) {
    let e = &problem["errors"][0];
    (
        e["pointer"].as_str().unwrap_or_default().to_string(),
        e["keyword"].as_str().unwrap_or_default().to_string(),
    )
}

/// A call and what validate answers: method, path, body, status, the
/// first error's pointer and keyword.
type Case = (
    &'static str,
    &'static str,
    Option<Value>,
    u16,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn the_petstore_accepts_its_examples_and_refuses_violations_naming_pointer_and_keyword() {
    let up = Upstream::start().await;
    let gw = gateway(&up, "swagger-petstore/openapi.yaml", VALIDATE).await;
    let pet = json!({"id": 10, "name": "doggie", "category": {"id": 1, "name": "Dogs"},
                     "photoUrls": ["https://example.com/d.png"], "tags": [{"id": 1, "name": "good"}],
                     "status": "available"});
    let (s, _, v) = send(&gw, "POST", "/pet", Some(&pet)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(up.last().path_and_query, "/pet");
    let hits = up.requests().len();

    let cases: Vec<Case> = vec![
        // (method, path, body, status, pointer, keyword)
        (
            "POST",
            "/pet",
            Some(json!({"id": 10, "photoUrls": []})),
            400,
            "",
            "required",
        ),
        (
            "POST",
            "/pet",
            Some(json!({"name": 7, "photoUrls": []})),
            400,
            "/name",
            "type",
        ),
        (
            "POST",
            "/pet",
            Some(json!({"name": "d", "photoUrls": [], "status": "lost"})),
            400,
            "/status",
            "enum",
        ),
        (
            "POST",
            "/pet",
            Some(json!({"name": "d", "photoUrls": [], "id": "ten"})),
            400,
            "/id",
            "type",
        ),
        (
            "POST",
            "/pet",
            Some(json!({"name": "d", "photoUrls": [3]})),
            400,
            "/photoUrls/0",
            "type",
        ),
        (
            "GET",
            "/pet/findByStatus?status=lost",
            None,
            400,
            "",
            "enum",
        ),
        ("GET", "/pet/notanumber", None, 400, "", "type"),
    ];
    for (method, path, body, status, pointer, keyword) in cases {
        let (s, ct, v) = send(&gw, method, path, body.as_ref()).await;
        assert_eq!(s, status, "{method} {path}: {v}");
        assert_eq!(ct, "application/problem+json", "{method} {path}");
        assert_eq!(v["status"], json!(status), "{v}");
        let (p, k) = first_error(&v);
        assert_eq!(
            (p.as_str(), k.as_str()),
            (pointer, keyword),
            "{method} {path}: {v}"
        );
    }
    // Wrong content type: 415 naming what is accepted.
    let r = client()
        .post(gw.url("/pet"))
        .header("content-type", "text/csv")
        .body("a,b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let v: Value = r.json().await.unwrap();
    assert!(v.to_string().contains("application/json"), "{v}");
    // A body nested past max-depth is refused before it is parsed.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = client()
        .post(gw.url("/pet"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        up.requests().len(),
        hits,
        "no refused call reached the upstream"
    );
}

/// Every request example the documents give (a media type's `example` or
/// `examples`) passes validation.
#[tokio::test]
async fn every_request_example_of_the_documents_passes() {
    let up = Upstream::start().await;
    for rel in [
        "swagger-petstore/openapi.yaml",
        "oai/petstore-expanded.yaml",
        "box/openapi.json",
        "openai/openapi.yaml",
    ] {
        let gw = gateway(&up, rel, VALIDATE).await;
        let doc = tollgate::openapi::load(&root().join("tests/openapi").join(rel)).unwrap();
        let mut tried = 0;
        for op in doc.served() {
            let resolve = |v: &Value| -> Option<Value> {
                match v.get("$ref").and_then(Value::as_str) {
                    Some(r) => tollgate::openapi::resolve_chain(&doc.doc, r).ok().cloned(),
                    None => Some(v.clone()),
                }
            };
            let Some(body) = doc
                .doc
                .pointer(&format!("{}/requestBody", op.pointer))
                .and_then(resolve)
            else {
                continue;
            };
            let Some(content) = body.pointer("/content/application~1json") else {
                continue;
            };
            let mut examples: Vec<Value> = content.get("example").cloned().into_iter().collect();
            if let Some(ex) = content.get("examples").and_then(Value::as_object) {
                examples.extend(
                    ex.values()
                        .filter_map(|e| resolve(e)?.get("value").cloned()),
                );
            }
            // The body schema's own example; for the petstores, also one
            // built from its properties' examples (when every required one
            // has one). Not for the large documents: their schemas do not
            // always agree with their own parts (Box's `lock` requires a
            // property `type` it does not define), which validate rightly
            // refuses.
            let schema = content.get("schema");
            if let Some(e) = schema.and_then(|s| s.get("example")) {
                examples.push(e.clone());
            } else if rel.contains("petstore") {
                examples.extend(schema.and_then(|s| example_of(&doc.doc, s, 0)));
            }
            for ex in examples {
                let path = op.path.replace(['{', '}'], "");
                let (s, _, v) = send(&gw, &op.method, &path, Some(&ex)).await;
                // Parameters the sample path does not fill well may be
                // refused; the body must not be.
                let body_refused = v["errors"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["in"] == "body"));
                assert!(
                    !body_refused,
                    "{rel} {} {}: example refused: {v}",
                    op.method, op.path
                );
                assert_ne!(s, 415, "{rel} {} {}: {v}", op.method, op.path);
                tried += 1;
            }
        }
        eprintln!("{rel}: {tried} request examples passed");
    }
}

/// The example a schema gives, or one built from the examples (or first
/// enum values) of its parts; `None` when a required part has none.
fn example_of(doc: &Value, schema: &Value, depth: usize) -> Option<Value> {
    if depth > 12 {
        return None;
    }
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => tollgate::openapi::resolve_chain(doc, r).ok()?,
        None => schema,
    };
    if let Some(e) = schema.get("example") {
        return Some(e.clone());
    }
    if let Some(e) = schema
        .get("examples")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return Some(e.clone());
    }
    if let Some(e) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return Some(e.clone());
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        let mut out = serde_json::Map::new();
        for s in all {
            match example_of(doc, s, depth + 1)? {
                Value::Object(o) => out.extend(o),
                _ => return None,
            }
        }
        return Some(Value::Object(out));
    }
    for k in ["oneOf", "anyOf"] {
        if let Some(alts) = schema.get(k).and_then(Value::as_array) {
            return alts.iter().find_map(|s| example_of(doc, s, depth + 1));
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut out = serde_json::Map::new();
        for (name, p) in props {
            match example_of(doc, p, depth + 1) {
                Some(v) => {
                    out.insert(name.clone(), v);
                }
                None if required.contains(&name.as_str()) => return None,
                None => {}
            }
        }
        return Some(Value::Object(out));
    }
    if let Some(items) = schema.get("items") {
        return Some(Value::Array(
            example_of(doc, items, depth + 1).into_iter().collect(),
        ));
    }
    None
}

#[tokio::test]
async fn report_only_lets_a_violation_through() {
    let up = Upstream::start().await;
    let chain = format!("{VALIDATE}config = {{ mode = \"report-only\" }}\n");
    let gw = gateway(&up, "swagger-petstore/openapi.yaml", &chain).await;
    let (s, _, _) = send(&gw, "POST", "/pet", Some(&json!({"name": 7}))).await;
    assert_eq!(s, 200);
    assert_eq!(up.last().path_and_query, "/pet");
}

#[tokio::test]
async fn mocked_operations_answer_from_the_document_without_the_upstream() {
    let up = Upstream::start().await;
    let chain =
        "[[api.chain]]\nplugin = \"mock-response\"\ngrants = [\"openapi\"]\nmemory = \"32MiB\"\n";
    let gw = gateway(&up, "oai/api-with-examples.yaml", chain).await;
    let (s, ct, v) = send(&gw, "GET", "/", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(ct.starts_with("application/json"), "{ct}");
    assert!(v["versions"].is_array(), "the document's example: {v}");
    // Prefer: code=300 picks that response of the document.
    let r = client()
        .get(gw.url("/"))
        .header("prefer", "code=300")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 300);
    // The swagger petstore: a response generated from the schema.
    let gw2 = gateway(&up, "swagger-petstore/openapi.yaml", chain).await;
    let (s, _, v) = send(&gw2, "GET", "/pet/1", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["name"].is_string() && v["photoUrls"].is_array(), "{v}");
    assert!(
        up.requests().is_empty(),
        "a mocked call reached the upstream"
    );
}
