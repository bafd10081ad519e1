//! The developer portal's API reference in a real browser: RapiDoc
//! (embedded in the binary, served by the portal) renders the API's OpenAPI
//! document as the gateway serves it; markup in the document's
//! descriptions runs no script (the page's CSP allows only the portal's own
//! script); an API of no published product has no reference; axe-core finds
//! no serious or critical violation.

use serde_json::{json, Value};
use std::time::Duration;
use tollgate_tests::browser::{self, Browser};
use tollgate_tests::*;

const DOC: &str = r#"openapi: 3.1.0
info:
  title: Pets
  version: "1.0"
  description: 'Pets by id. <img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
paths:
  /pets/{id}:
    get:
      operationId: getPet
      summary: Find a pet by its id
      description: '<a href="javascript:window.__xss=3">click</a> <svg onload="window.__xss=4"></svg>'
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
      responses:
        "200": {description: The pet}
"#;

/// A document without markup, for axe-core (markup in a document is the
/// document's, and may break accessibility as it likes).
const CLEAN: &str = r#"openapi: 3.1.0
info: {title: Store, version: "1.0", description: Orders of the pet store.}
paths:
  /orders/{id}:
    get:
      operationId: getOrder
      summary: Find an order by its id
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
      responses:
        "200": {description: The order}
"#;

fn manifest(upstream: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "pets"
openapi = "pets.yaml"
upstream = {{ targets = ["{upstream}"] }}

[[api]]
name = "store"
openapi = "store.yaml"
upstream = {{ targets = ["{upstream}"] }}

[[api]]
name = "hidden"
upstream = {{ targets = ["{upstream}"] }}
[[api.route]]
prefix = "/hidden"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_renders_the_served_document_and_runs_no_script_from_it() {
    assert!(
        browser::available(),
        "the portal's browser tests need {} (scripts/test installs it)",
        browser::CHROMEDRIVER
    );
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .file("pets.yaml", DOC)
        .file("store.yaml", CLEAN)
        .admin()
        .gateway_toml("[portal]\naddress = \"127.0.0.1:0\"\n")
        .start()
        .await;
    let admin = gw.admin();
    admin
        .create(
            "/products",
            json!({"id": "shop", "apis": ["pets", "store"], "published": true, "visible_to": ["guests"]}),
        )
        .await;
    admin
        .create(
            "/products",
            json!({"id": "secret", "apis": ["hidden"], "published": false}),
        )
        .await;
    let base = format!("http://{}", gw.portal_addr.unwrap());

    // The document, as the gateway serves it, for published APIs only.
    let doc: Value = client()
        .get(format!("{base}/apis/pets/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["paths"]["/pets/{id}"]["get"]["operationId"], "getPet");
    for path in [
        "/apis/hidden/openapi.json",
        "/apis/hidden/reference",
        "/apis/nope/reference",
    ] {
        let r = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = client()
        .get(format!("{base}/apis/pets/reference"))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("script-src 'self' 'unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let js = client()
        .get(format!("{base}/static/rapidoc-min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    // In the browser: the home page links the reference, which renders the
    // operation from the document.
    let b = Browser::start().await;
    b.goto(&format!("{base}/")).await;
    b.click("a[href='/apis/pets/reference']").await;
    let text = "return (() => { const d = document.getElementById('reference'); \
                return d && d.shadowRoot ? d.shadowRoot.textContent : '' })()";
    let rendered = eventually(Duration::from_secs(20), || async {
        b.eval(text)
            .await
            .as_str()
            .is_some_and(|t| t.contains("Find a pet by its id"))
    })
    .await;
    assert!(
        rendered,
        "RapiDoc did not render the operation: {}",
        b.eval(text).await
    );
    let ran = b
        .eval("return window.__xss === undefined ? null : window.__xss")
        .await;
    assert_eq!(ran, Value::Null, "markup from the document ran script");
    b.goto(&format!("{base}/apis/store/reference")).await;
    let rendered = eventually(Duration::from_secs(20), || async {
        b.eval(text)
            .await
            .as_str()
            .is_some_and(|t| t.contains("Find an order by its id"))
    })
    .await;
    assert!(
        rendered,
        "RapiDoc did not render the store: {}",
        b.eval(text).await
    );
    let v = b.axe(&browser::axe_script()).await;
    assert!(v.is_empty(), "axe-core on the reference: {v:#?}");
    if std::env::var_os("TOLLGATE_PORTAL_SCREENSHOTS").is_some() {
        b.screenshot(&root().join("docs/portal/reference.png"))
            .await;
    }
    b.close().await;
}
