//! The document as a whole: every example is accepted, calls of other
//! routes pass, and configure refuses what it cannot use.

use super::*;

/// Every request example of the document (`example`, and each value of
/// `examples`) posted to its operation.
fn request_examples(spec: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let content = &op["requestBody"]["content"]["application/json"];
            let route = op["operationId"].as_str().unwrap_or_default().to_string();
            if let Some(e) = content.get("example") {
                out.push((route.clone(), method.to_uppercase(), e.clone()));
            }
            for e in content["examples"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                out.push((route.clone(), method.to_uppercase(), e["value"].clone()));
            }
            let _ = path;
        }
    }
    out
}

#[test]
fn every_example_of_both_documents_is_accepted() {
    for runner in runners() {
        for spec in [petstore_30(), petstore_31()] {
            let examples = request_examples(&spec);
            assert!(examples.len() >= 2, "{examples:?}");
            let mut p = configure(&runner, &spec, json!({}));
            for (route, method, body) in examples {
                let req = Request::new(&method, "/x").header("content-type", "application/json");
                let d = p.on_request(
                    &ctx(&runner, &route, &[]),
                    &req.head(),
                    Some(body.to_string().as_bytes()),
                );
                passes(&runner, d);
            }
        }
    }
}

#[test]
fn a_route_that_is_not_an_operation_passes_untouched() {
    for runner in runners() {
        let mut p = configure(&runner, &petstore_30(), json!({}));
        let req =
            Request::new("POST", "/admin?limit=nonsense").header("content-type", "text/plain");
        let d = p.on_request(&ctx(&runner, "admin", &[]), &req.head(), Some(b"{{{"));
        assert_eq!(d, RequestDecision::default(), "{}", runner.label());
        // The same route name with another method is not the operation.
        let d = p.on_request(
            &ctx(&runner, "listPets", &[]),
            &Request::new("DELETE", "/pets?limit=x").head(),
            None,
        );
        assert_eq!(d, RequestDecision::default(), "{}", runner.label());
    }
}

#[test]
fn without_the_openapi_key_configure_says_what_to_add() {
    for runner in runners() {
        let e = runner
            .configure(r#"{"mode":"enforce"}"#)
            .err()
            .expect("refused");
        assert!(
            e.message.contains("grants = [\"openapi\"]"),
            "{}: {e:?}",
            runner.label()
        );
        assert!(
            e.message.contains("openapi = "),
            "{}: {e:?}",
            runner.label()
        );
    }
}

#[test]
fn configuration_keys_are_checked() {
    for runner in runners() {
        let spec = petstore_30();
        for (extra, field) in [
            (json!({"mode": "loud"}), "mode"),
            (json!({"max-body": "2GiB"}), "max-body"),
            (json!({"max-depth": 0}), "max-depth"),
            (json!({"max-errors": 1000}), "max-errors"),
            (json!({"unknown-query": "maybe"}), "unknown-query"),
            (json!({"response": true}), "response"),
        ] {
            let e = runner
                .configure(&config(&spec, extra.clone()))
                .err()
                .unwrap_or_else(|| panic!("{extra} accepted"));
            assert_eq!(e.field.as_deref(), Some(field), "{}: {e:?}", runner.label());
        }
        let mut old = spec.clone();
        old["openapi"] = json!("2.0");
        let e = runner
            .configure(&config(&old, json!({})))
            .err()
            .expect("refused");
        assert!(e.message.contains("3.0.x or 3.1.x"), "{e:?}");
    }
}

#[test]
fn the_body_limit_is_what_max_body_says() {
    for runner in runners() {
        let p = configure(&runner, &petstore_30(), json!({"max-body": "64KiB"}));
        assert_eq!(p.info().body.request, Some(64 << 10), "{}", runner.label());
        assert_eq!(p.info().body.response, None);
        let p = configure(&runner, &petstore_30(), json!({"responses": true}));
        assert_eq!(p.info().body.response, Some(1 << 20), "{}", runner.label());
    }
}
