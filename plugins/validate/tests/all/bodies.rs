//! JSON bodies against their schemas, and content types.

use super::*;

fn refused(spec: &Value, route: &str, body: Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for runner in runners() {
        let mut p = configure(&runner, spec, json!({}));
        let (req, bytes) = json_post("/pets", &body);
        // putTree is a PUT.
        let req = if route == "putTree" {
            Request::new("PUT", "/trees").header("content-type", "application/json")
        } else {
            req
        };
        let d = p.on_request(&ctx(&runner, route, &[]), &req.head(), Some(&bytes));
        if d == RequestDecision::default() {
            panic!("{}: {body} passed", runner.label());
        }
        let (status, problem) = problem(&runner, d);
        assert_eq!(status, 400, "{}: {problem}", runner.label());
        assert_eq!(
            problem["type"],
            "https://tollgate.dev/problems/request-validation"
        );
        assert!(problem["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty() && !d.contains('\n')));
        let e = first_error(&problem);
        if let Some(prev) = out.last() {
            assert_eq!(prev, &e, "native and wasm disagree");
        }
        out.push(e);
    }
    out
}

fn body_error(spec: &Value, route: &str, body: Value, pointer: &str, keyword: &str) {
    for (in_, p, k) in refused(spec, route, body.clone()) {
        assert_eq!(
            (in_.as_str(), p.as_str(), k.as_str()),
            ("body", pointer, keyword),
            "{body}"
        );
    }
}

#[test]
fn violations_name_the_pointer_and_the_keyword_30() {
    let s = petstore_30();
    body_error(&s, "createPet", json!({"name": 7}), "/name", "type");
    body_error(&s, "createPet", json!({"tag": "x"}), "", "required");
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "status": "lost"}),
        "/status",
        "enum",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "email": "not an address"}),
        "/email",
        "format",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "born": "2021-02-29"}),
        "/born",
        "format",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "code": "abc"}),
        "/code",
        "pattern",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "colour": "red"}),
        "",
        "additionalProperties",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "kind": {"meow": true, "bark": "x"}}),
        "/kind",
        "oneOf",
    );
    body_error(&s, "createPet", json!({"name": ""}), "/name", "minLength");
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "weight": 0}),
        "/weight",
        "exclusiveMinimum",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "weight": 201}),
        "/weight",
        "maximum",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "tags": ["a", 2]}),
        "/tags/1",
        "type",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "tags": ["a", "b", "c", "d"]}),
        "/tags",
        "maxItems",
    );
    // nullable: true admits null; its absence does not.
    body_error(&s, "createPet", json!({"name": null}), "/name", "type");
    body_error(&s, "createPet", json!([1]), "", "type");
}

#[test]
fn violations_name_the_pointer_and_the_keyword_31() {
    let s = petstore_31();
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "age": 0}),
        "/age",
        "exclusiveMinimum",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "owner": "nobody"}),
        "/owner",
        "anyOf",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "id": "x"}),
        "/id",
        "format",
    );
    body_error(
        &s,
        "createPet",
        json!({"name": "a", "tag": 1}),
        "/tag",
        "type",
    );
    body_error(
        &s,
        "putTree",
        json!({"value": 1, "children": [{"value": 2, "children": [{"value": "3"}]}]}),
        "/children/0/children/0/value",
        "type",
    );
    body_error(
        &s,
        "putTree",
        json!({"value": 1, "children": [{}]}),
        "/children/0",
        "required",
    );
}

#[test]
fn every_error_is_listed_up_to_max_errors() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({"max-errors": 2}));
        let (req, bytes) = json_post(
            "/pets",
            &json!({"name": 1, "tag": 2, "code": 3, "weight": "x"}),
        );
        let d = p.on_request(&ctx(&runner, "createPet", &[]), &req.head(), Some(&bytes));
        let (_, problem) = problem(&runner, d);
        assert_eq!(problem["errors"].as_array().unwrap().len(), 2, "{problem}");
    }
}

#[test]
fn the_content_type_must_be_one_the_operation_accepts() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({}));
        let c = ctx(&runner, "createPet", &[]);
        for ct in [Some("text/plain"), None] {
            let mut req = Request::new("POST", "/pets");
            if let Some(ct) = ct {
                req = req.header("content-type", ct);
            }
            let d = p.on_request(&c, &req.head(), Some(b"{\"name\":\"a\"}"));
            let (status, problem) = problem(&runner, d);
            assert_eq!(status, 415, "{}: {problem}", runner.label());
            assert_eq!(
                first_error(&problem),
                ("header".into(), "".into(), "content-type".into())
            );
            assert_eq!(
                problem["accepted"],
                json!(["application/json", "application/x-www-form-urlencoded"])
            );
        }
        // Parameters are ignored, names compare case-insensitively.
        let req =
            Request::new("POST", "/pets").header("content-type", "Application/JSON; charset=utf-8");
        passes(
            &runner,
            p.on_request(&c, &req.head(), Some(b"{\"name\":\"a\"}")),
        );
        // A non-JSON media type: the content type only.
        let req = Request::new("POST", "/pets")
            .header("content-type", "application/x-www-form-urlencoded");
        passes(&runner, p.on_request(&c, &req.head(), Some(b"name=a")));
        // 3.1: `text/*` takes any text, unchecked.
        let mut p = configure(&runner, &petstore_31(), json!({}));
        let req = Request::new("POST", "/pets").header("content-type", "text/csv");
        passes(&runner, p.on_request(&c, &req.head(), Some(b"a,b")));
    }
}

#[test]
fn a_required_body_must_be_sent_and_be_json() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({}));
        let c = ctx(&runner, "createPet", &[]);
        let req = Request::new("POST", "/pets").header("content-type", "application/json");
        for body in [None, Some(&b""[..])] {
            let (status, problem) = problem(&runner, p.on_request(&c, &req.clone().head(), body));
            assert_eq!(status, 400);
            assert_eq!(
                first_error(&problem),
                ("body".into(), "".into(), "required".into())
            );
        }
        let (_, problem) = problem(
            &runner,
            p.on_request(&c, &req.clone().head(), Some(b"{\"name\":")),
        );
        assert_eq!(first_error(&problem).2, "json");
        // An optional body may be left out (3.1 putTree).
        let mut p = configure(&runner, &petstore_31(), json!({}));
        passes(
            &runner,
            p.on_request(
                &ctx(&runner, "putTree", &[]),
                &Request::new("PUT", "/trees").head(),
                None,
            ),
        );
    }
}

#[test]
fn report_only_lets_the_call_go_on() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({"mode": "report-only"}));
        let (req, bytes) = json_post("/pets", &json!({"name": 7}));
        passes(
            &runner,
            p.on_request(&ctx(&runner, "createPet", &[]), &req.head(), Some(&bytes)),
        );
        let req = Request::new("POST", "/pets").header("content-type", "text/plain");
        passes(
            &runner,
            p.on_request(&ctx(&runner, "createPet", &[]), &req.head(), Some(b"x")),
        );
        let d = p.on_request(
            &ctx(&runner, "listPets", &[]),
            &Request::get("/pets?limit=0").head(),
            None,
        );
        passes(&runner, d);
    }
}
