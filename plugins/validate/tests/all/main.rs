//! `validate`, natively and as the compiled `.wasm` (tollgate-policy-test):
//! petstore-like 3.0 and 3.1 documents written inline, with the topics in
//! modules.
// The runner drives a native build and a gateway binary: not for wasm32
// (where `cargo clippy --target wasm32-wasip2 --all-targets` also looks).
#![cfg(not(target_arch = "wasm32"))]

mod bodies;
mod hostile;
mod params;
mod responses;
mod specs;

use serde_json::{json, Value};
use tollgate_policy_sdk::{CallContext, RequestDecision, Response};
use tollgate_policy_test::{Instance, Request, Runner};
pub use validate::Validate;

/// The runners for this crate.
pub fn runners() -> Vec<Runner<Validate>> {
    tollgate_policy_test::runners!(Validate)
}

/// The step configuration: `config`'s keys plus the `openapi` key the
/// gateway adds, over `spec` with every operation of it a route named by
/// its `operationId`.
pub fn config(spec: &Value, config: Value) -> String {
    let mut operations = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            operations.push(json!({
                "route": op["operationId"],
                "method": method.to_uppercase(),
                "path": path,
                "pointer": format!("/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1")),
            }));
        }
    }
    let mut c = config;
    c["openapi"] = json!({
        "version": spec["openapi"],
        "document": spec,
        "operations": operations,
    });
    c.to_string()
}

/// Configure `spec` with `extra` config keys; panics if refused.
pub fn configure(runner: &Runner<Validate>, spec: &Value, extra: Value) -> Instance<Validate> {
    runner
        .configure(&config(spec, extra))
        .unwrap_or_else(|e| panic!("{}: {e:?}", runner.label()))
}

/// A call of route `route` with `captures`.
pub fn ctx(runner: &Runner<Validate>, route: &str, captures: &[(&str, &str)]) -> CallContext {
    CallContext {
        route: route.into(),
        captures: captures
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..runner.context()
    }
}

/// A JSON request.
pub fn json_post(path: &str, body: &Value) -> (Request, Vec<u8>) {
    (
        Request::new("POST", path).header("content-type", "application/json"),
        body.to_string().into_bytes(),
    )
}

/// The problem of a refused call; panics if the call went on.
pub fn problem(runner: &Runner<Validate>, d: RequestDecision) -> (u16, Value) {
    match d {
        RequestDecision::Respond(r) => problem_of(runner, r),
        RequestDecision::Continue(_) => panic!("{}: the call went on", runner.label()),
    }
}

/// A problem response's status and body.
pub fn problem_of(runner: &Runner<Validate>, r: Response) -> (u16, Value) {
    assert_eq!(
        tollgate_policy_sdk::header_str(&r.headers, "content-type"),
        Some("application/problem+json"),
        "{}",
        runner.label()
    );
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["status"], r.status, "{}", runner.label());
    (r.status, body)
}

/// Assert the call went on.
pub fn passes(runner: &Runner<Validate>, d: RequestDecision) {
    if let RequestDecision::Respond(r) = d {
        panic!(
            "{}: refused with {}: {}",
            runner.label(),
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// The first error of a problem: (in, pointer, keyword).
pub fn first_error(body: &Value) -> (String, String, String) {
    let e = &body["errors"][0];
    (
        e["in"].as_str().unwrap_or_default().into(),
        e["pointer"].as_str().unwrap_or_default().into(),
        e["keyword"].as_str().unwrap_or_default().into(),
    )
}

/// A petstore in OpenAPI 3.0.
pub fn petstore_30() -> Value {
    json!({
      "openapi": "3.0.3",
      "info": {"title": "Petstore", "version": "1"},
      "paths": {
        "/pets": {
          "parameters": [{"name": "X-Trace", "in": "header",
                          "schema": {"type": "string", "pattern": "^[a-f0-9]{8}$"}}],
          "get": {
            "operationId": "listPets",
            "parameters": [
              {"$ref": "#/components/parameters/limit"},
              {"name": "tags", "in": "query", "schema": {"type": "array", "items": {"type": "string", "maxLength": 10}}},
              {"name": "ids", "in": "query", "explode": false, "schema": {"type": "array", "items": {"type": "integer"}}},
              {"name": "status", "in": "query", "schema": {"$ref": "#/components/schemas/Status"}},
              {"name": "verbose", "in": "query", "schema": {"type": "boolean"}}
            ],
            "responses": {
              "200": {"description": "pets", "content": {"application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}},
                "example": [{"id": 1, "name": "Rex", "tag": null}]}}},
              "default": {"$ref": "#/components/responses/Error"}
            }
          },
          "post": {
            "operationId": "createPet",
            "requestBody": {"required": true, "content": {
              "application/json": {
                "schema": {"$ref": "#/components/schemas/NewPet"},
                "examples": {
                  "cat": {"value": {"name": "Tom", "kind": {"meow": true}, "tag": null}},
                  "dog": {"value": {"name": "Rex", "tags": ["good"], "weight": 12.5, "code": "ABC",
                                    "kind": {"bark": "loud"}, "email": "rex@example.com", "born": "2020-02-29"}}
                }},
              "application/x-www-form-urlencoded": {"schema": {"type": "object"}}
            }},
            "responses": {
              "201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
              "default": {"$ref": "#/components/responses/Error"}
            }
          }
        },
        "/pets/{petId}": {
          "get": {
            "operationId": "showPetById",
            "parameters": [
              {"name": "petId", "in": "path", "required": true, "schema": {"type": "integer", "format": "int64", "minimum": 1}},
              {"name": "X-Request-Id", "in": "header", "required": true, "schema": {"type": "string", "format": "uuid"}}
            ],
            "responses": {
              "200": {"description": "a pet", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
              "4XX": {"$ref": "#/components/responses/Error"}
            }
          }
        }
      },
      "components": {
        "parameters": {
          "limit": {"name": "limit", "in": "query", "required": false,
                    "schema": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 100}}
        },
        "responses": {
          "Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        },
        "schemas": {
          "Status": {"type": "string", "enum": ["available", "pending", "sold"]},
          "Pet": {
            "type": "object", "required": ["id", "name"],
            "properties": {
              "id": {"type": "integer", "format": "int64"},
              "name": {"type": "string"},
              "tag": {"type": "string", "nullable": true},
              "status": {"$ref": "#/components/schemas/Status"}
            }
          },
          "NewPet": {
            "type": "object", "required": ["name"], "additionalProperties": false,
            "properties": {
              "name": {"type": "string", "minLength": 1, "maxLength": 20},
              "tag": {"type": "string", "nullable": true, "example": "x"},
              "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
              "weight": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 200},
              "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
              "email": {"type": "string", "format": "email"},
              "born": {"type": "string", "format": "date"},
              "status": {"$ref": "#/components/schemas/Status"},
              "kind": {"oneOf": [{"$ref": "#/components/schemas/Cat"}, {"$ref": "#/components/schemas/Dog"}]}
            }
          },
          "Cat": {"type": "object", "required": ["meow"], "properties": {"meow": {"type": "boolean"}}, "additionalProperties": false},
          "Dog": {"type": "object", "required": ["bark"], "properties": {"bark": {"type": "string"}}, "additionalProperties": false},
          "Error": {"type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "integer", "format": "int32"}, "message": {"type": "string"}}}
        }
      }
    })
}

/// A petstore in OpenAPI 3.1, with a recursive schema.
pub fn petstore_31() -> Value {
    json!({
      "openapi": "3.1.0",
      "info": {"title": "Petstore", "version": "1"},
      "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
      "paths": {
        "/pets": {
          "post": {
            "operationId": "createPet",
            "requestBody": {"required": true, "content": {
              "application/json": {
                "schema": {"$ref": "#/components/schemas/NewPet"},
                "example": {"name": "Tom", "tag": null, "age": 3}
              },
              "text/*": {}
            }},
            "responses": {"201": {"description": "created"}}
          }
        },
        "/trees": {
          "put": {
            "operationId": "putTree",
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Tree"},
              "examples": {"leaf": {"value": {"value": 1}},
                           "deep": {"value": {"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]}}}}}},
            "responses": {"204": {"description": "stored"}}
          }
        }
      },
      "components": {
        "schemas": {
          "NewPet": {
            "$schema": "https://spec.openapis.org/oas/3.1/dialect/base",
            "type": "object", "required": ["name"],
            "properties": {
              "name": {"type": "string", "minLength": 1},
              "tag": {"type": ["string", "null"]},
              "age": {"type": "integer", "exclusiveMinimum": 0, "maximum": 40},
              "owner": {"anyOf": [{"type": "string", "format": "email"}, {"type": "integer", "minimum": 1}]},
              "id": {"type": "string", "format": "uuid"}
            },
            "discriminator": {"propertyName": "name"},
            "xml": {"name": "pet"},
            "examples": [{"name": "Tom"}]
          },
          "Tree": {
            "type": "object", "required": ["value"],
            "properties": {
              "value": {"type": "integer"},
              "children": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}}
            },
            "additionalProperties": false
          }
        }
      }
    })
}
