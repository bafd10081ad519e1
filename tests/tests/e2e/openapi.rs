//! OpenAPI documents (issue 18): real published documents served from a
//! manifest that names them, every operation reaching the upstream and
//! none lost on export; `tollgate import openapi` round trips; APIs
//! created, replaced and deleted through the admin API.

use serde_json::{json, Value};
use std::path::PathBuf;
use tollgate::openapi::export::operations;
use tollgate_tests::*;

/// Real documents carried under `tests/openapi/` (see its README for
/// their sources and licences): small and large, 3.0 and 3.1, YAML and
/// JSON.
const DOCUMENTS: [&str; 5] = [
    "oai/petstore.yaml",
    "oai/petstore-expanded.yaml",
    "swagger-petstore/openapi.yaml",
    "box/openapi.json",
    "openai/openapi.yaml",
];

fn document(rel: &str) -> PathBuf {
    root().join("tests/openapi").join(rel)
}

/// A concrete path for a router template: each capture filled in.
fn sample(template: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in template.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("v1");
            }
            '}' => inside = false,
            _ if inside => {}
            c => out.push(c),
        }
    }
    out
}

/// The gateway's address as the export names it.
fn server(gw: &TestGateway) -> String {
    format!("http://{}", gw.addr)
}

#[tokio::test]
async fn every_operation_of_real_documents_is_served_and_none_is_lost_on_export() {
    let up = Upstream::start().await;
    for rel in DOCUMENTS {
        let file = document(rel);
        let ext = file.extension().unwrap().to_str().unwrap().to_string();
        let name = format!("spec.{ext}");
        let manifest = format!(
            "schema = 1\n[[api]]\nname = \"a\"\nopenapi = \"{name}\"\nupstream = {{ targets = [\"{}\"] }}\n",
            up.url()
        );
        let gw = TestGateway::builder(&manifest)
            .admin()
            .file(&name, std::fs::read(&file).unwrap())
            .start()
            .await;
        let doc = tollgate::openapi::load(&file).unwrap();
        let mut served = 0;
        for op in doc.served() {
            let path = sample(&op.path);
            let method = reqwest::Method::from_bytes(op.method.as_bytes()).unwrap();
            let r = client()
                .request(method, gw.url(&path))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                200,
                "{} {path} ({rel}, {})",
                op.method,
                op.pointer
            );
            let last = up.last();
            assert_eq!(
                (last.method.as_str(), last.path_and_query.as_str()),
                (op.method.as_str(), path.as_str()),
                "{rel}"
            );
            served += 1;
        }
        assert!(served > 0, "{rel}");
        // A path no operation has is not routed.
        let r = client()
            .get(gw.url("/no/such/operation/anywhere"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{rel}");
        // Exported: the document as served, no operation lost, the
        // gateway as its server.
        let (s, exported) = gw.admin().get("/apis/a/openapi").await;
        assert_eq!(s, 200, "{exported}");
        let original: Value = serde_json::to_value(&doc.doc).unwrap();
        assert_eq!(operations(&exported), operations(&original), "{rel}");
        assert_eq!(
            exported["servers"],
            json!([{ "url": server(&gw) }]),
            "{rel}"
        );
        assert_eq!(exported["info"], original["info"], "{rel}");
        eprintln!(
            "{rel}: {served} operations served, {} exported",
            operations(&exported).len()
        );
    }
}

/// `tollgate import openapi` writes a manifest whose routes serve every
/// operation; exported from those routes, the operations come back with
/// their ids.
#[tokio::test]
async fn import_serve_export_round_trip() {
    let up = Upstream::start().await;
    for rel in ["swagger-petstore/openapi.yaml", "box/openapi.json"] {
        let file = document(rel);
        let out = tempfile::tempdir().unwrap();
        let manifest = out.path().join("api.toml");
        let mut cmd = std::process::Command::new(tollgate_bin());
        cmd.args(["import", "openapi"])
            .arg(&file)
            .args(["--api", "imported", "--upstream", &up.url(), "-o"])
            .arg(&manifest);
        run_ok(cmd, "tollgate import openapi");
        let text = std::fs::read_to_string(&manifest).unwrap();
        // Not overwritten by a second import.
        let again = std::process::Command::new(tollgate_bin())
            .args(["import", "openapi"])
            .arg(&file)
            .args(["--api", "x", "--upstream", "http://127.0.0.1:1", "-o"])
            .arg(&manifest)
            .output()
            .unwrap();
        assert!(!again.status.success());
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), text);

        let gw = TestGateway::builder(&text).admin().start().await;
        let doc = tollgate::openapi::load(&file).unwrap();
        for op in doc.served() {
            let path = sample(&op.path);
            let method = reqwest::Method::from_bytes(op.method.as_bytes()).unwrap();
            let r = client()
                .request(method, gw.url(&path))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{} {path} ({rel})", op.method);
        }
        let (s, exported) = gw.admin().get("/apis/imported/openapi").await;
        assert_eq!(s, 200);
        let want: Vec<(String, String)> = {
            let mut v: Vec<(String, String)> = doc
                .served()
                .map(|o| (o.method.clone(), o.path.clone()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(operations(&exported), want, "{rel}");
        for op in doc.served() {
            let got = &exported["paths"][&op.path][op.method.to_ascii_lowercase()]["operationId"];
            assert_eq!(got, &json!(op.route), "{rel}: {} {}", op.method, op.path);
        }
    }
}

#[tokio::test]
async fn apis_are_created_replaced_and_deleted_through_the_admin_api() {
    let up = Upstream::start().await;
    let manifest = format!(
        "# hand-written\nschema = 1\n[[api]]\nname = \"first\"\nupstream = {{ targets = [\"{}\"] }}\n[[api.route]]\nprefix = \"/first\"\n",
        up.url()
    );
    let pets = std::fs::read(document("oai/petstore.yaml")).unwrap();
    let gw = TestGateway::builder(&manifest)
        .admin()
        .policy_folder("apis")
        .file("apis/specs/petstore.yaml", pets)
        .start()
        .await;
    let admin = gw.admin();

    // Into the policy folder (the default): a new manifest.
    let (s, v) = admin
        .post(
            "/apis",
            json!({
                "name": "orders",
                "upstream": {"targets": [up.url()], "connect_timeout": "1s"},
                "routes": [{"name": "one", "path": "/orders/{id}", "methods": ["GET"]}],
                "chain": [{"plugin": "transform", "config": {"request": {"headers": {"set": {"x-made": "admin"}}}}}],
            }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(
        v["manifest"]
            .as_str()
            .unwrap()
            .ends_with("apis/orders.toml"),
        "{v}"
    );
    let r = client().get(gw.url("/orders/7")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-made"), Some("admin"));

    // From an OpenAPI document, appended to a loaded manifest.
    let (s, v) = admin
        .post(
            "/apis",
            json!({
                "name": "pets",
                "manifest": "apis/orders.toml",
                "openapi": "specs/petstore.yaml",
                "upstream": {"targets": [up.url()]},
            }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let r = client().get(gw.url("/pets/12")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, doc) = admin.get("/apis/pets/openapi").await;
    assert_eq!(doc["info"]["title"], "Swagger Petstore");
    let text = std::fs::read_to_string(gw.path().join("apis/orders.toml")).unwrap();
    assert!(
        text.contains("name = \"orders\"") && text.contains("openapi = \"specs/petstore.yaml\""),
        "{text}"
    );

    // Refused: a name taken, a path out of the folders, a configuration
    // that does not build (nothing written), bad input.
    let (s, _) = admin
        .post("/apis", json!({"name": "pets", "upstream": {"targets": [up.url()]}, "routes": [{"prefix": "/x"}]}))
        .await;
    assert_eq!(s, 409);
    let (s, v) = admin
        .post("/apis", json!({"name": "x", "manifest": "../evil.toml", "upstream": {"targets": [up.url()]}, "routes": [{"prefix": "/x"}]}))
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = admin
        .post("/apis", json!({"name": "x", "upstream": {"targets": ["ftp://nope"]}, "routes": [{"prefix": "/x"}]}))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("ftp://nope"), "{v}");
    assert!(!gw.path().join("apis/x.toml").exists());
    let (s, v) = admin
        .post("/apis", json!({"name": "x", "openapi": "specs/missing.yaml", "upstream": {"targets": [up.url()]}}))
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = admin
        .post(
            "/apis",
            json!({"name": "x", "upstream": {"targets": [up.url()]}}),
        )
        .await;
    assert_eq!(s, 422);

    // Replace, guarded by If-Match; the chain kept.
    let (_, first) = admin.get("/apis/first").await;
    let etag = first["etag"].as_str().unwrap().to_string();
    let body = json!({"upstream": {"targets": [up.url()]}, "routes": [{"prefix": "/renamed"}]});
    let r = client()
        .put(admin.url("/apis/first"))
        .bearer_auth(&admin.token)
        .header("if-match", "\"stale\"")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = client()
        .put(admin.url("/apis/first"))
        .bearer_auth(&admin.token)
        .header("if-match", format!("\"{etag}\""))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        client()
            .get(gw.url("/first"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client()
            .get(gw.url("/renamed/a"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let text = std::fs::read_to_string(gw.path().join("api.toml")).unwrap();
    assert!(text.starts_with("# hand-written\n"), "{text}");

    // Delete.
    let (s, _) = admin.delete("/apis/orders").await;
    assert_eq!(s, 204);
    assert_eq!(
        client()
            .get(gw.url("/orders/7"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let (s, _) = admin.get("/apis/orders").await;
    assert_eq!(s, 404);
    assert_eq!(
        client().get(gw.url("/pets")).send().await.unwrap().status(),
        200
    );

    // Audited.
    let (_, audit) = admin.get("/audit?limit=500").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"] == "api")
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["create-api", "replace-api", "delete-api"] {
        assert!(actions.contains(&a), "{actions:?}");
    }
}

#[tokio::test]
async fn a_changed_document_reloads_and_a_broken_one_keeps_the_old_configuration() {
    let up = Upstream::start().await;
    let manifest = format!(
        "schema = 1\n[[api]]\nname = \"a\"\nopenapi = \"spec.yaml\"\nupstream = {{ targets = [\"{}\"] }}\n",
        up.url()
    );
    let v1 = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /one:\n    get: {}\n";
    let gw = TestGateway::builder(&manifest)
        .watch(true)
        .file("spec.yaml", v1)
        .start()
        .await;
    assert_eq!(
        client().get(gw.url("/one")).send().await.unwrap().status(),
        200
    );
    // Let the watcher arm itself.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let spec = gw.path().join("spec.yaml");
    // Replaced whole (a new file renamed over it), as editors save.
    let write = |text: String| {
        let tmp = gw.path().join("spec.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &spec).unwrap();
    };
    write(format!("{v1}  /two:\n    post: {{}}\n"));
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            client().post(gw.url("/two")).send().await.unwrap().status() == 200
        })
        .await
    );
    // Broken: a remote reference. The old configuration keeps serving.
    write(format!(
        "{v1}  /three:\n    $ref: 'https://example.com/item.yaml'\n"
    ));
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        client().post(gw.url("/two")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        client()
            .get(gw.url("/three"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// Hostile documents are refused at load with a message, in bounded time
/// and memory.
#[test]
fn hostile_documents_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let head = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\n";
    let mut laughs = format!("{head}x-l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..12 {
        let p = i - 1;
        laughs.push_str(&format!(
            "x-l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
        ));
    }
    let mut many = format!("{head}paths:\n");
    for i in 0..10_000 {
        many.push_str(&format!("  /p{i}:\n    get: {{}}\n"));
    }
    let cases: Vec<(&str, String, &str)> = vec![
        ("laughs.yaml", laughs, "more than"),
        ("many.yaml", many, "more than 5000 operations"),
        (
            "deep.json",
            format!("{{\"openapi\": \"3.1.0\", \"x\": {}{}}}", "[".repeat(50_000), "]".repeat(50_000)),
            "invalid JSON",
        ),
        (
            "loop.yaml",
            format!("{head}components:\n  schemas:\n    A: {{$ref: '#/components/schemas/B'}}\n    B: {{$ref: '#/components/schemas/A'}}\n"),
            "loop of references",
        ),
        ("big.yaml", format!("{head}x: '{}'\n", "a".repeat(17 << 20)), "at most 16 MiB"),
        ("swagger.yaml", "swagger: '2.0'\n".into(), "Swagger 2.0"),
        ("binary.yaml", "\u{0}\u{1}\u{2}".into(), "invalid YAML"),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, &text).unwrap();
        let started = std::time::Instant::now();
        let errs = tollgate::openapi::load(&p).unwrap_err().join("\n");
        assert!(errs.contains(want), "{name}: {errs}");
        assert!(errs.starts_with(&p.display().to_string()), "{name}: {errs}");
        eprintln!("{name}: refused in {:?}", started.elapsed());
    }
}
