//! `responses = true`: status, content type and JSON body of responses.

use super::*;
use tollgate_policy_sdk::{Header, ResponseDecision, ResponseHead};

fn json_response(status: u16) -> ResponseHead {
    ResponseHead {
        status,
        headers: vec![Header::new("content-type", "application/json")],
    }
}

#[test]
fn responses_are_checked_when_asked() {
    for runner in runners() {
        let spec = petstore_30();
        let mut p = configure(&runner, &spec, json!({"responses": true}));
        let c = ctx(&runner, "listPets", &[]);
        let req = Request::get("/pets").head();
        // The document's own example is accepted.
        let example = spec["paths"]["/pets"]["get"]["responses"]["200"]["content"]
            ["application/json"]["example"]
            .to_string();
        let d = p.on_response(&c, &req, &json_response(200), Some(example.as_bytes()));
        assert_eq!(d, ResponseDecision::default(), "{}", runner.label());
        // `default` covers the other statuses.
        let d = p.on_response(
            &c,
            &req,
            &json_response(503),
            Some(br#"{"code":503,"message":"down"}"#),
        );
        assert_eq!(d, ResponseDecision::default(), "{}", runner.label());

        let d = p.on_response(
            &c,
            &req,
            &json_response(200),
            Some(br#"[{"id":"one","name":"Rex"}]"#),
        );
        let ResponseDecision::Respond(r) = d else {
            panic!("{}: passed", runner.label())
        };
        let (status, problem) = problem_of(&runner, r);
        assert_eq!(status, 502);
        assert_eq!(
            problem["type"],
            "https://tollgate.dev/problems/response-validation"
        );
        assert_eq!(
            first_error(&problem),
            ("body".into(), "/0/id".into(), "type".into())
        );

        let mut text = json_response(200);
        text.headers = vec![Header::new("content-type", "text/html")];
        let ResponseDecision::Respond(r) = p.on_response(&c, &req, &text, Some(b"<p>")) else {
            panic!()
        };
        assert_eq!(first_error(&problem_of(&runner, r).1).2, "content-type");

        // showPetById: 4XX declared, 500 not, and no default.
        let c = ctx(&runner, "showPetById", &[("petId", "1")]);
        let d = p.on_response(
            &c,
            &req,
            &json_response(404),
            Some(br#"{"code":404,"message":"no"}"#),
        );
        assert_eq!(d, ResponseDecision::default(), "{}", runner.label());
        let ResponseDecision::Respond(r) =
            p.on_response(&c, &req, &json_response(500), Some(b"{}"))
        else {
            panic!()
        };
        assert_eq!(
            first_error(&problem_of(&runner, r).1),
            ("status".into(), "".into(), "status".into())
        );
    }
}

#[test]
fn report_only_passes_bad_responses_on() {
    for runner in runners() {
        let mut p = configure(
            &runner,
            &petstore_30(),
            json!({"responses": true, "mode": "report-only"}),
        );
        let c = ctx(&runner, "listPets", &[]);
        let d = p.on_response(
            &c,
            &Request::get("/pets").head(),
            &json_response(200),
            Some(b"{}"),
        );
        assert_eq!(d, ResponseDecision::default(), "{}", runner.label());
    }
}

#[test]
fn without_responses_the_response_phase_is_not_asked_for() {
    for runner in runners() {
        let p = configure(&runner, &petstore_30(), json!({}));
        assert_eq!(
            p.info().phases,
            tollgate_policy_sdk::Phases::REQUEST,
            "{}",
            runner.label()
        );
    }
}
