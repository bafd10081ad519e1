//! Hostile documents and bodies: catastrophic patterns, depth bombs, huge
//! enums, deep schemas.

use super::*;
use std::time::{Duration, Instant};

fn with_schema(schema: Value) -> Value {
    json!({
      "openapi": "3.1.0",
      "info": {"title": "t", "version": "1"},
      "paths": {"/x": {"post": {"operationId": "post",
        "requestBody": {"content": {"application/json": {"schema": schema}}},
        "responses": {"200": {"description": "ok"}}}}}
    })
}

#[test]
fn a_catastrophic_pattern_is_checked_in_linear_time() {
    for runner in runners() {
        let spec = with_schema(
            json!({"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}),
        );
        let mut p = configure(&runner, &spec, json!({}));
        let hostile = format!("{}!", "a".repeat(30));
        let (req, body) = json_post("/x", &json!({"s": hostile}));
        let start = Instant::now();
        let (status, problem) = problem(
            &runner,
            p.on_request(&ctx(&runner, "post", &[]), &req.head(), Some(&body)),
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(status, 400);
        assert_eq!(
            first_error(&problem),
            ("body".into(), "/s".into(), "pattern".into())
        );
        let (req, body) = json_post("/x", &json!({"s": "a".repeat(30)}));
        passes(
            &runner,
            p.on_request(&ctx(&runner, "post", &[]), &req.head(), Some(&body)),
        );
    }
}

#[test]
fn a_depth_bomb_is_refused_before_parsing() {
    for runner in runners() {
        let mut p = configure(&runner, &with_schema(json!({})), json!({"max-depth": 8}));
        let c = ctx(&runner, "post", &[]);
        let req = Request::new("POST", "/x").header("content-type", "application/json");
        let bomb = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let (status, problem) = problem(
            &runner,
            p.on_request(&c, &req.clone().head(), Some(bomb.as_bytes())),
        );
        assert_eq!(status, 400);
        assert_eq!(first_error(&problem).2, "max-depth");
        let ok = format!("{}{}", "[".repeat(8), "]".repeat(8));
        passes(
            &runner,
            p.on_request(&c, &req.clone().head(), Some(ok.as_bytes())),
        );
        // Brackets inside strings do not count.
        passes(
            &runner,
            p.on_request(
                &c,
                &req.head(),
                Some(format!("[\"{}\"]", "[".repeat(100)).as_bytes()),
            ),
        );
    }
}

#[test]
fn configure_refuses_documents_beyond_the_limits() {
    let mut deep = json!({"type": "string"});
    for _ in 0..70 {
        deep = json!({"type": "array", "items": deep});
    }
    let enum_ = json!({"enum": (0..10_001).collect::<Vec<_>>()});
    let long_pattern = json!({"type": "string", "pattern": "a".repeat(1_001)});
    let refused_pattern = json!({"type": "string", "pattern": "(unclosed"});
    let huge_pattern = json!({"type": "string", "pattern": "a{1000}{1000}"});
    for runner in runners() {
        for (schema, words) in [
            (deep.clone(), "deeper than 64"),
            (enum_.clone(), "enum of 10001 values"),
            (long_pattern.clone(), "1001 bytes long"),
            (refused_pattern.clone(), "is refused"),
            (huge_pattern.clone(), "is refused"),
        ] {
            let e = runner
                .configure(&config(&with_schema(schema), json!({})))
                .err()
                .unwrap_or_else(|| panic!("{}: accepted ({words})", runner.label()));
            assert!(e.message.contains(words), "{}: {e:?}", runner.label());
            assert!(
                e.message
                    .contains("/paths/~1x/post/requestBody/content/application~1json/schema"),
                "{e:?}"
            );
        }
    }
}

#[test]
fn remote_refs_and_broken_pointers_are_refused_at_configure() {
    for runner in runners() {
        let spec = with_schema(json!({"$ref": "#/components/schemas/Nowhere"}));
        let e = runner
            .configure(&config(&spec, json!({})))
            .err()
            .expect("refused");
        assert!(e.message.contains("is refused"), "{e:?}");
        let spec = with_schema(json!({"$ref": "https://example.com/pet.json"}));
        assert!(
            runner.configure(&config(&spec, json!({}))).is_err(),
            "{}",
            runner.label()
        );
    }
}

#[test]
fn huge_values_are_not_echoed() {
    for runner in runners() {
        let mut p = configure(
            &runner,
            &with_schema(json!({"type": "object", "properties": {"s": {"type": "integer"}}})),
            json!({}),
        );
        let (req, body) = json_post("/x", &json!({"s": "x".repeat(100_000)}));
        let (_, problem) = problem(
            &runner,
            p.on_request(&ctx(&runner, "post", &[]), &req.head(), Some(&body)),
        );
        let m = problem["errors"][0]["message"].as_str().unwrap();
        assert!(m.len() <= 210, "{}", m.len());
        assert!(problem["detail"].as_str().unwrap().len() <= 210);
    }
}

#[test]
fn a_large_document_configures_within_the_step_s_deadline() {
    // 300 operations, 1,500 schema locations: compiled in one build (the
    // crate's meta-schema check once, not per location), within the test
    // host's 1s deadline on the .wasm side.
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for i in 0..300 {
        schemas.insert(
            format!("S{i}"),
            json!({"type": "object", "required": ["a"], "properties": {
            "a": {"type": "string", "format": "email"}, "b": {"type": "integer", "minimum": 0},
            "c": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}},
            "d": {"type": "string", "pattern": "^[a-z]{1,20}$"}}}),
        );
        paths.insert(format!("/p{i}/{{id}}"), json!({"post": {"operationId": format!("op{i}"),
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}},
                           {"name": "q", "in": "query", "schema": {"type": "string", "enum": ["a", "b"]}},
                           {"name": "x-h", "in": "header", "schema": {"type": "string"}}],
            "requestBody": {"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/S{i}")}}}},
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/S{i}")}}}}}}}));
    }
    schemas.insert("Tree".into(), json!({"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}}}}));
    let spec = json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths, "components": {"schemas": schemas}});
    for runner in runners() {
        let mut p = configure(&runner, &spec, json!({"responses": true}));
        let (req, body) = json_post("/p299/1", &json!({"a": "x@example.com", "d": "A"}));
        let (_, problem) = problem(
            &runner,
            p.on_request(
                &ctx(&runner, "op299", &[("id", "1")]),
                &req.head(),
                Some(&body),
            ),
        );
        assert_eq!(
            first_error(&problem),
            ("body".into(), "/d".into(), "pattern".into())
        );
    }
}
