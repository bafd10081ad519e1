//! Path, query and header parameters.

use super::*;

const UUID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

/// The first error of a refused GET, as (in, name, pointer, keyword).
fn param_error(
    route: &str,
    path: &str,
    captures: &[(&str, &str)],
    headers: &[(&str, &str)],
    extra: Value,
) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), extra.clone());
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let (status, problem) = problem(
            &runner,
            p.on_request(&ctx(&runner, route, captures), &req.head(), None),
        );
        assert_eq!(status, 400, "{}: {problem}", runner.label());
        let e = &problem["errors"][0];
        let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        out.push((s("in"), s("name"), s("pointer"), s("keyword")));
    }
    out.dedup();
    assert_eq!(out.len(), 1, "native and wasm disagree: {out:?}");
    out
}

fn t(a: &str, b: &str, c: &str, d: &str) -> Vec<(String, String, String, String)> {
    vec![(a.into(), b.into(), c.into(), d.into())]
}

#[test]
fn good_parameters_pass() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({"unknown-query": "refuse"}));
        let req = Request::get("/pets?limit=10&tags=a&tags=b&ids=1,2,3&status=sold&verbose=true")
            .header("x-trace", "0123abcd");
        passes(
            &runner,
            p.on_request(&ctx(&runner, "listPets", &[]), &req.head(), None),
        );
        let req = Request::get("/pets/7").header("X-Request-Id", UUID).head();
        passes(
            &runner,
            p.on_request(&ctx(&runner, "showPetById", &[("petId", "7")]), &req, None),
        );
        // A percent-encoded capture is decoded before it is checked.
        passes(
            &runner,
            p.on_request(
                &ctx(&runner, "showPetById", &[("petId", "%31%32")]),
                &req,
                None,
            ),
        );
    }
}

#[test]
fn query_parameters_are_coerced_and_checked() {
    assert_eq!(
        param_error("listPets", "/pets?limit=500", &[], &[], json!({})),
        t("query", "limit", "", "maximum")
    );
    assert_eq!(
        param_error("listPets", "/pets?limit=ten", &[], &[], json!({})),
        t("query", "limit", "", "type")
    );
    assert_eq!(
        param_error("listPets", "/pets?limit=99999999999", &[], &[], json!({})),
        t("query", "limit", "", "maximum")
    );
    assert_eq!(
        param_error("listPets", "/pets?status=lost", &[], &[], json!({})),
        t("query", "status", "", "enum")
    );
    assert_eq!(
        param_error("listPets", "/pets?verbose=yes", &[], &[], json!({})),
        t("query", "verbose", "", "type")
    );
    // Repeated keys (explode) and comma-separated values (explode false).
    assert_eq!(
        param_error(
            "listPets",
            "/pets?tags=a&tags=waytoolongtag",
            &[],
            &[],
            json!({})
        ),
        t("query", "tags", "/1", "maxLength")
    );
    assert_eq!(
        param_error("listPets", "/pets?ids=1,x,3", &[], &[], json!({})),
        t("query", "ids", "/1", "type")
    );
    assert_eq!(
        param_error(
            "listPets",
            "/pets?debug=1",
            &[],
            &[],
            json!({"unknown-query": "refuse"})
        ),
        t("query", "debug", "", "unknown")
    );
}

#[test]
fn path_and_header_parameters_are_checked() {
    let h = [("x-request-id", UUID)];
    assert_eq!(
        param_error(
            "showPetById",
            "/pets/abc",
            &[("petId", "abc")],
            &h,
            json!({})
        ),
        t("path", "petId", "", "type")
    );
    assert_eq!(
        param_error("showPetById", "/pets/0", &[("petId", "0")], &h, json!({})),
        t("path", "petId", "", "minimum")
    );
    assert_eq!(
        param_error(
            "showPetById",
            "/pets/1",
            &[("petId", "1")],
            &[("x-request-id", "nope")],
            json!({})
        ),
        t("header", "x-request-id", "", "format")
    );
    // Path-level parameters apply to the operation.
    assert_eq!(
        param_error("listPets", "/pets", &[], &[("X-Trace", "XYZ")], json!({})),
        t("header", "x-trace", "", "pattern")
    );
}

#[test]
fn a_missing_required_parameter_is_named() {
    assert_eq!(
        param_error("showPetById", "/pets/1", &[("petId", "1")], &[], json!({})),
        t("header", "x-request-id", "", "required")
    );
    assert_eq!(
        param_error(
            "showPetById",
            "/pets/1",
            &[],
            &[("x-request-id", UUID)],
            json!({})
        ),
        t("path", "petId", "", "required")
    );
}

#[test]
fn operation_parameters_override_path_level_ones() {
    let mut spec = petstore_30();
    spec["paths"]["/pets"]["get"]["parameters"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "X-Trace", "in": "header", "schema": {"type": "string"}}));
    for runner in runners() {
        let mut p = configure(&runner, &spec, json!({}));
        let req = Request::get("/pets").header("x-trace", "not hex at all");
        passes(
            &runner,
            p.on_request(&ctx(&runner, "listPets", &[]), &req.head(), None),
        );
    }
}
