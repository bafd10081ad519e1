//! The JSON shapes of the policy test protocol ([`super::test_host`]).
//!
//! They are the serde forms of the SDK's types (which derive serde off
//! wasm32): records as objects with the WIT field names in snake case,
//! variants as `{"Variant": value}`, byte lists as arrays of numbers. The
//! host's own types are wasmtime's bindings of the same WIT, converted here
//! field by field.

use crate::domain::consumer::{self, ConsumerInfo};
use crate::domain::time::Period;
use crate::policy::host::http_client as wit_http;
use crate::policy::host::ResponseOrigin as HostOrigin;
use crate::policy::{
    self, BodyAccess, Phases, PolicyInfo, RequestDecision as HostRequestDecision,
    ResponseDecision as HostResponseDecision,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestHead {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    pub id: String,
    pub app: Option<String>,
    pub key_id: Option<String>,
    pub plan: Option<String>,
    pub product: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallContext {
    pub request_id: String,
    pub client_addr: String,
    pub api: String,
    pub route: String,
    pub captures: Vec<(String, String)>,
    pub consumer: Option<Consumer>,
    pub step: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingResponse {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum PlanPeriod {
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRateLimit {
    pub requests: u64,
    pub window_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanQuota {
    pub calls: u64,
    pub period: PlanPeriod,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    pub plan: String,
    pub product: String,
    pub rate_limits: Vec<PlanRateLimit>,
    pub quota: Option<PlanQuota>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ResponseOrigin {
    Upstream(u16),
    Step(String),
    Gateway(u16),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallTiming {
    pub total_us: u64,
    pub upstream_us: u64,
    pub steps: Vec<(String, u64)>,
}

impl From<Header> for policy::Header {
    fn from(h: Header) -> Self {
        policy::Header {
            name: h.name,
            value: h.value,
        }
    }
}

fn headers_in(h: Vec<Header>) -> Vec<policy::Header> {
    h.into_iter().map(Into::into).collect()
}

impl From<RequestHead> for policy::RequestHead {
    fn from(r: RequestHead) -> Self {
        policy::RequestHead {
            method: r.method,
            scheme: r.scheme,
            authority: r.authority,
            path: r.path,
            query: r.query,
            headers: headers_in(r.headers),
        }
    }
}

impl From<ResponseHead> for policy::ResponseHead {
    fn from(r: ResponseHead) -> Self {
        policy::ResponseHead {
            status: r.status,
            headers: headers_in(r.headers),
        }
    }
}

impl From<Consumer> for policy::Consumer {
    fn from(c: Consumer) -> Self {
        policy::Consumer {
            id: c.id,
            app: c.app,
            key_id: c.key_id,
            plan: c.plan,
            product: c.product,
        }
    }
}

impl From<Consumer> for ConsumerInfo {
    fn from(c: Consumer) -> Self {
        ConsumerInfo {
            id: c.id,
            app: c.app,
            key_id: c.key_id,
            plan: c.plan,
            product: c.product,
        }
    }
}

impl From<CallContext> for policy::CallContext {
    fn from(c: CallContext) -> Self {
        policy::CallContext {
            request_id: c.request_id,
            client_addr: c.client_addr,
            api: c.api,
            route: c.route,
            captures: c.captures,
            consumer: c.consumer.map(Into::into),
            step: c.step,
        }
    }
}

impl From<IncomingResponse> for wit_http::IncomingResponse {
    fn from(r: IncomingResponse) -> Self {
        wit_http::IncomingResponse {
            status: r.status,
            headers: headers_in(r.headers),
            body: r.body,
        }
    }
}

impl From<PlanLimits> for consumer::PlanLimits {
    fn from(p: PlanLimits) -> Self {
        consumer::PlanLimits {
            plan: p.plan,
            product: p.product,
            rate_limits: p
                .rate_limits
                .into_iter()
                .map(|l| consumer::RateLimit {
                    requests: l.requests,
                    window_ms: l.window_ms,
                })
                .collect(),
            quota: p.quota.map(|q| consumer::Quota {
                calls: q.calls,
                period: match q.period {
                    PlanPeriod::Day => Period::Day,
                    PlanPeriod::Week => Period::Week,
                    PlanPeriod::Month => Period::Month,
                },
            }),
        }
    }
}

impl From<ResponseOrigin> for HostOrigin {
    fn from(o: ResponseOrigin) -> Self {
        match o {
            ResponseOrigin::Upstream(s) => HostOrigin::Upstream(s),
            ResponseOrigin::Step(name) => HostOrigin::Step(name.into()),
            ResponseOrigin::Gateway(s) => HostOrigin::Gateway(s),
        }
    }
}

fn header_out(h: &policy::Header) -> Value {
    json!({ "name": h.name, "value": h.value })
}

fn headers_out(h: &[policy::Header]) -> Value {
    Value::Array(h.iter().map(header_out).collect())
}

fn ops_out(ops: &[policy::HeaderOp]) -> Value {
    Value::Array(
        ops.iter()
            .map(|op| match op {
                policy::HeaderOp::Set(h) => json!({ "Set": header_out(h) }),
                policy::HeaderOp::Append(h) => json!({ "Append": header_out(h) }),
                policy::HeaderOp::Remove(n) => json!({ "Remove": n }),
            })
            .collect(),
    )
}

fn consumer_out(c: &policy::Consumer) -> Value {
    json!({
        "id": c.id, "app": c.app, "key_id": c.key_id,
        "plan": c.plan, "product": c.product,
    })
}

fn response_out(r: &policy::Response) -> Value {
    json!({ "status": r.status, "headers": headers_out(&r.headers), "body": r.body })
}

/// A request decision in the SDK's serde form.
pub fn request_decision(d: HostRequestDecision) -> Value {
    match d {
        HostRequestDecision::Continue(e) => json!({ "Continue": {
            "headers": ops_out(&e.headers),
            "response_headers": ops_out(&e.response_headers),
            "path": e.path,
            "query": e.query,
            "body": e.body,
            "consumer": e.consumer.as_ref().map(consumer_out),
        }}),
        HostRequestDecision::Respond(r) => json!({ "Respond": response_out(&r) }),
    }
}

/// A response decision in the SDK's serde form.
pub fn response_decision(d: HostResponseDecision) -> Value {
    match d {
        HostResponseDecision::Continue(e) => json!({ "Continue": {
            "status": e.status,
            "headers": ops_out(&e.headers),
            "body": e.body,
        }}),
        HostResponseDecision::Respond(r) => json!({ "Respond": response_out(&r) }),
    }
}

/// What a step declared: its body limits and phases (the phases as the
/// names of the flags set, since the SDK's flags type has no serde form).
pub fn policy_info(info: &PolicyInfo) -> Value {
    let BodyAccess { request, response } = info.body;
    let mut phases = Vec::new();
    if info.phases.contains(Phases::REQUEST) {
        phases.push("request");
    }
    if info.phases.contains(Phases::RESPONSE) {
        phases.push("response");
    }
    json!({ "body": { "request": request, "response": response }, "phases": phases })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_take_the_sdk_s_form() {
        let d = HostRequestDecision::Continue(policy::RequestEdits {
            headers: vec![
                policy::HeaderOp::Set(policy::Header {
                    name: "x-a".into(),
                    value: b"1".to_vec(),
                }),
                policy::HeaderOp::Remove("x-b".into()),
            ],
            response_headers: Vec::new(),
            path: Some("/p".into()),
            query: None,
            body: None,
            consumer: None,
        });
        assert_eq!(
            request_decision(d),
            json!({ "Continue": {
                "headers": [{ "Set": { "name": "x-a", "value": [49] } }, { "Remove": "x-b" }],
                "response_headers": [], "path": "/p", "query": null, "body": null,
                "consumer": null,
            }})
        );
        let r = HostResponseDecision::Respond(policy::Response {
            status: 403,
            headers: Vec::new(),
            body: b"no".to_vec(),
        });
        assert_eq!(
            response_decision(r),
            json!({ "Respond": { "status": 403, "headers": [], "body": [110, 111] } })
        );
    }

    #[test]
    fn inputs_refuse_unknown_fields_and_wrong_types() {
        assert!(serde_json::from_str::<Header>(r#"{"name":"a","value":[300]}"#).is_err());
        assert!(serde_json::from_str::<Header>(r#"{"name":"a","value":[],"x":1}"#).is_err());
        let ctx: CallContext = serde_json::from_str(
            r#"{"request_id":"r","client_addr":"a","api":"x","route":"/","captures":[["id","7"]],"consumer":null,"step":"s"}"#,
        )
        .unwrap();
        assert_eq!(ctx.captures, vec![("id".to_string(), "7".to_string())]);
    }
}
