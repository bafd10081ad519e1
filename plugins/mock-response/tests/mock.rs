//! `mock-response`, natively and as the compiled `.wasm`
//! (tollgate-policy-test), over petstores written inline.
// The runner drives a native build and a gateway binary: not for wasm32
// (where `cargo clippy --target wasm32-wasip2 --all-targets` also looks).
#![cfg(not(target_arch = "wasm32"))]

use mock_response::MockResponse;
use serde_json::{json, Value};
use tollgate_policy_sdk::{CallContext, RequestDecision, Response};
use tollgate_policy_test::{Instance, Request, Runner};

fn runners() -> Vec<Runner<MockResponse>> {
    tollgate_policy_test::runners!(MockResponse)
}

/// `extra` plus the `openapi` key the gateway adds: every operation of
/// `spec` a route named by its `operationId`.
fn config(spec: &Value, extra: Value) -> String {
    let mut operations = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.push(json!({
                "route": op["operationId"], "method": method.to_uppercase(), "path": path,
                "pointer": format!("/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1")),
            }));
        }
    }
    let mut c = extra;
    c["openapi"] = json!({"version": spec["openapi"], "document": spec, "operations": operations});
    c.to_string()
}

fn configure(runner: &Runner<MockResponse>, spec: &Value, extra: Value) -> Instance<MockResponse> {
    runner
        .configure(&config(spec, extra))
        .unwrap_or_else(|e| panic!("{}: {e:?}", runner.label()))
}

fn ctx(runner: &Runner<MockResponse>, route: &str) -> CallContext {
    CallContext {
        route: route.into(),
        ..runner.context()
    }
}

/// The answer to `method` of `route`, with `prefer` as a `Prefer` field.
fn answer(
    runner: &Runner<MockResponse>,
    p: &mut Instance<MockResponse>,
    route: &str,
    method: &str,
    prefer: Option<&str>,
) -> Response {
    let mut req = Request::new(method, "/any");
    if let Some(prefer) = prefer {
        req = req.header("prefer", prefer);
    }
    match p.on_request(&ctx(runner, route), &req.head(), None) {
        RequestDecision::Respond(r) => r,
        RequestDecision::Continue(_) => panic!("{}: {route} went on", runner.label()),
    }
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    tollgate_policy_sdk::header_str(&r.headers, name)
}

fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)))
}

fn petstore_30() -> Value {
    json!({
      "openapi": "3.0.3",
      "info": {"title": "Petstore", "version": "1"},
      "paths": {
        "/pets": {
          "get": {"operationId": "listPets", "responses": {
            "200": {"description": "pets",
              "headers": {
                "X-Rate-Limit": {"schema": {"type": "integer"}, "example": 100},
                "X-Next": {"schema": {"type": "string"}},
                "X-Trace": {"$ref": "#/components/headers/Trace"}
              },
              "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}},
                                               "example": [{"id": 1, "name": "Rex"}]}}},
            "default": {"$ref": "#/components/responses/Error"}}},
          "post": {"operationId": "createPet", "responses": {
            "201": {"description": "created", "content": {"application/json": {
              "schema": {"$ref": "#/components/schemas/Pet"},
              "examples": {"cat": {"value": {"id": 2, "name": "Tom"}},
                           "dog": {"$ref": "#/components/examples/Dog"}}}}},
            "400": {"$ref": "#/components/responses/Error"}}}
        },
        "/pets/{petId}": {
          "get": {"operationId": "showPetById", "responses": {
            "200": {"description": "a pet", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
            "404": {"description": "none", "content": {"application/json": {"example": {"code": 404, "message": "no such pet"}}}},
            "5XX": {"$ref": "#/components/responses/Error"}}},
          "delete": {"operationId": "deletePet", "responses": {"204": {"description": "gone"}}}
        },
        "/greeting": {
          "get": {"operationId": "greet", "responses": {"2XX": {"description": "hi", "content": {
            "text/plain": {"example": "hello"},
            "application/xml": {"example": "<greeting>hello</greeting>"}}}}}
        }
      },
      "components": {
        "headers": {"Trace": {"schema": {"type": "string", "example": "abc"}}},
        "examples": {"Dog": {"summary": "a dog", "value": {"id": 3, "name": "Rex", "tag": "good"}}},
        "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        "schemas": {
          "Pet": {"type": "object", "required": ["id", "name", "born"], "properties": {
            "id": {"type": "integer", "format": "int64", "minimum": 1},
            "name": {"type": "string"},
            "born": {"type": "string", "format": "date"},
            "status": {"type": "string", "enum": ["available", "sold"]},
            "tag": {"type": "string", "nullable": true}}},
          "Error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "integer", "format": "int32", "example": 500}, "message": {"type": "string"}}}
        }
      }
    })
}

#[test]
fn the_media_type_s_example_is_the_answer() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({}));
        let r = answer(&runner, &mut p, "listPets", "GET", None);
        assert_eq!(r.status, 200, "{}", runner.label());
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(json_of(&r), json!([{"id": 1, "name": "Rex"}]));
        // Headers declared with an example (or a schema example) are sent.
        assert_eq!(header(&r, "x-rate-limit"), Some("100"));
        assert_eq!(header(&r, "x-trace"), Some("abc"));
        assert_eq!(header(&r, "x-next"), None);
    }
}

#[test]
fn examples_are_chosen_by_config_then_by_prefer() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({}));
        let r = answer(&runner, &mut p, "createPet", "POST", None);
        assert_eq!(
            (r.status, json_of(&r)),
            (201, json!({"id": 2, "name": "Tom"})),
            "{}",
            runner.label()
        );
        let r = answer(&runner, &mut p, "createPet", "POST", Some("example=dog"));
        assert_eq!(json_of(&r), json!({"id": 3, "name": "Rex", "tag": "good"}));
        let r = answer(&runner, &mut p, "createPet", "POST", Some("example=fish"));
        assert_eq!(json_of(&r)["name"], "Tom");

        let mut p = configure(&runner, &petstore_30(), json!({"example": "dog"}));
        let r = answer(&runner, &mut p, "createPet", "POST", None);
        assert_eq!(json_of(&r)["name"], "Rex", "{}", runner.label());
        let r = answer(&runner, &mut p, "createPet", "POST", Some("example=cat"));
        assert_eq!(json_of(&r)["name"], "Tom", "{}", runner.label());
    }
}

#[test]
fn without_examples_a_value_is_generated_from_the_schema() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({}));
        let r = answer(&runner, &mut p, "showPetById", "GET", None);
        assert_eq!(r.status, 200);
        assert_eq!(
            json_of(&r),
            json!({"id": 1, "name": "string", "born": "2024-01-01"}),
            "{}",
            runner.label()
        );
        // A schema's own example is used for its part.
        let r = answer(&runner, &mut p, "createPet", "POST", Some("code=400"));
        assert_eq!(
            (r.status, json_of(&r)),
            (400, json!({"code": 500, "message": "string"}))
        );
    }
}

#[test]
fn prefer_code_picks_a_declared_response() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({}));
        let r = answer(&runner, &mut p, "showPetById", "GET", Some("code=404"));
        assert_eq!(
            (r.status, json_of(&r)["message"].clone()),
            (404, json!("no such pet")),
            "{}",
            runner.label()
        );
        // 503 is covered by 5XX.
        let r = answer(&runner, &mut p, "showPetById", "GET", Some("code=503"));
        assert_eq!((r.status, json_of(&r)["code"].clone()), (503, json!(500)));
        // A code the operation does not have: the usual answer.
        let r = answer(&runner, &mut p, "showPetById", "GET", Some("code=418"));
        assert_eq!(r.status, 200);
    }
}

#[test]
fn status_and_content_type_config() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({"status": 404}));
        let r = answer(&runner, &mut p, "showPetById", "GET", None);
        assert_eq!(r.status, 404, "{}", runner.label());
        // An operation without a 404 answers as usual.
        assert_eq!(answer(&runner, &mut p, "listPets", "GET", None).status, 200);

        let mut p = configure(
            &runner,
            &petstore_30(),
            json!({"content-type": "application/xml"}),
        );
        let r = answer(&runner, &mut p, "greet", "GET", None);
        assert_eq!(
            header(&r, "content-type"),
            Some("application/xml"),
            "{}",
            runner.label()
        );
        assert_eq!(r.body, b"<greeting>hello</greeting>");

        let e = runner
            .configure(&config(&petstore_30(), json!({"status": 418})))
            .err()
            .expect("refused");
        assert_eq!(e.field.as_deref(), Some("status"), "{e:?}");
        let e = runner
            .configure(&config(&petstore_30(), json!({"status": 99})))
            .err()
            .expect("refused");
        assert_eq!(e.field.as_deref(), Some("status"), "{e:?}");
    }
}

/// A document as written (a `json!` value would sort its keys): the
/// first media type and the first example are the first as written.
const GREETING: &str = r#"{
  "openapi": "3.1.0",
  "info": {"title": "t", "version": "1"},
  "paths": {"/greeting": {"get": {"operationId": "greet", "responses": {"2XX": {"description": "hi",
    "content": {
      "text/plain": {"examples": {"zebra": {"value": "hello"}, "ant": {"value": "hi"}}},
      "application/xml": {"example": "<greeting>hello</greeting>"}}}}}}}
}"#;

#[test]
fn first_means_first_as_written() {
    let operations = r#"[{"route": "greet", "method": "GET", "path": "/greeting", "pointer": "/paths/~1greeting/get"}]"#;
    let config = format!(
        r#"{{"openapi": {{"version": "3.1.0", "document": {GREETING}, "operations": {operations}}}}}"#
    );
    for runner in runners() {
        let mut p = runner.configure(&config).unwrap();
        // `2XX` answers 200; a text example is sent as it is.
        let r = answer(&runner, &mut p, "greet", "GET", None);
        assert_eq!(
            (r.status, header(&r, "content-type")),
            (200, Some("text/plain")),
            "{}",
            runner.label()
        );
        assert_eq!(r.body, b"hello");
        let r = answer(&runner, &mut p, "greet", "GET", Some("example=ant"));
        assert_eq!(r.body, b"hi");
    }
}

#[test]
fn a_response_without_content_has_an_empty_body() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({}));
        let r = answer(&runner, &mut p, "deletePet", "DELETE", None);
        assert_eq!((r.status, r.body.len()), (204, 0), "{}", runner.label());
        assert_eq!(header(&r, "content-type"), None);
    }
}

#[test]
fn calls_of_other_routes_pass() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({}));
        let d = p.on_request(&ctx(&runner, "admin"), &Request::get("/admin").head(), None);
        assert_eq!(d, RequestDecision::default(), "{}", runner.label());
        let d = p.on_request(
            &ctx(&runner, "listPets"),
            &Request::new("PATCH", "/pets").head(),
            None,
        );
        assert_eq!(d, RequestDecision::default(), "{}", runner.label());
    }
}

#[test]
fn configure_refuses_what_it_cannot_mock() {
    for runner in runners() {
        let e = runner.configure("{}").err().expect("refused");
        assert!(
            e.message.contains("grants = [\"openapi\"]"),
            "{}: {e:?}",
            runner.label()
        );
        let mut spec = petstore_30();
        spec["components"]["examples"]["Dog"] =
            json!({"externalValue": "https://example.com/dog.json"});
        let e = runner
            .configure(&config(&spec, json!({})))
            .err()
            .expect("refused");
        assert!(e.message.contains("externalValue"), "{e:?}");
        assert!(e.message.contains("/components/examples/Dog"), "{e:?}");
        let e = runner
            .configure(&config(&petstore_30(), json!({"colour": "red"})))
            .err()
            .expect("refused");
        assert_eq!(e.field.as_deref(), Some("colour"));
    }
}

#[test]
fn a_3_1_schema_s_examples_are_used() {
    let spec = json!({
      "openapi": "3.1.0",
      "info": {"title": "t", "version": "1"},
      "paths": {"/pets": {"get": {"operationId": "listPets", "responses": {"default": {"description": "pets",
        "content": {"application/json": {"schema": {"type": "array", "examples": [[{"id": 9}]]}},
                    "application/xml": {"schema": {"type": "string"}}}}}}}}
    });
    for runner in runners() {
        let mut p = configure(&runner, &spec, json!({}));
        let r = answer(&runner, &mut p, "listPets", "GET", None);
        assert_eq!(
            (r.status, json_of(&r)),
            (200, json!([{"id": 9}])),
            "{}",
            runner.label()
        );
    }
}
