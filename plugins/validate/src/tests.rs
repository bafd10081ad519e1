//! Unit tests of what the runner cannot see: the report-only log lines.

use std::cell::RefCell;

thread_local! {
    /// Lines `report` logged on this thread.
    pub static LOGGED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

use crate::Validate;
use serde_json::json;
use tollgate_policy_sdk::{parse_config, Call, CallContext, Policy, RequestDecision, RequestHead};

fn config(mode: &str) -> String {
    json!({
        "mode": mode,
        "openapi": {
            "version": "3.1.0",
            "document": {"openapi": "3.1.0", "paths": {"/pets": {"get": {"parameters": [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 5}},
                {"name": "x-id", "in": "header", "required": true, "schema": {"type": "string"}}
            ]}}}},
            "operations": [{"route": "list", "method": "GET", "path": "/pets", "pointer": "/paths/~1pets/get"}]
        }
    })
    .to_string()
}

fn call(p: &mut Validate) -> RequestDecision {
    let ctx = CallContext {
        route: "list".into(),
        ..CallContext::default()
    };
    let req = RequestHead {
        method: "GET".into(),
        path: "/pets".into(),
        query: Some("limit=10%0a".into()),
        ..RequestHead::default()
    };
    p.on_request(&Call::native(&ctx, &req), None)
}

#[test]
fn report_only_logs_each_violation_on_one_line() {
    LOGGED.with(|l| l.borrow_mut().clear());
    let mut p: Validate = parse_config(&config("report-only")).unwrap();
    assert_eq!(call(&mut p), RequestDecision::default());
    let lines = LOGGED.with(|l| l.borrow().clone());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("validate: GET list request: query limit: "),
        "{lines:?}"
    );
    assert!(lines[0].ends_with("(type)"), "{lines:?}");
    assert!(!lines[0].contains('\n'));
    assert_eq!(
        lines[1],
        "validate: GET list request: header x-id: the header parameter \"x-id\" is required (required)"
    );
}

#[test]
fn enforce_logs_nothing() {
    LOGGED.with(|l| l.borrow_mut().clear());
    let mut p: Validate = parse_config(&config("enforce")).unwrap();
    assert!(matches!(call(&mut p), RequestDecision::Respond(r) if r.status == 400));
    assert!(LOGGED.with(|l| l.borrow().is_empty()));
}
