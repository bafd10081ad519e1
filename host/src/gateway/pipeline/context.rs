//! What one request carries through the phases after routing ([`Ctx`]),
//! and the response on its way back ([`Outgoing`]).

use crate::gateway::DataPlane;
use crate::loader::Api;
use crate::observe::trace::CallSpan;
use crate::policy::host::{CallTiming, ResponseOrigin};
use crate::policy::{
    CallContext, Header, HeaderOp, PolicyError, RequestHead, RequestScope, Step, StepInstance,
};
use crate::upstream::{OutboundBody, UpstreamBody};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::KeyValue;
use std::net::SocketAddr;
use std::sync::Mutex;

/// One request's state from routing to the response: what the steps see,
/// the request as it stands, the step instances whose response phase is
/// still to run, and the timings the `outcome` interface reports.
pub(crate) struct Ctx<'a> {
    pub gateway: &'a DataPlane,
    /// The API the request was routed to (in the generation it started on).
    pub api: &'a Api,
    /// What the steps see of the call: request id, client, API, route,
    /// captures, consumer, the step running.
    pub call: CallContext,
    /// The request as the steps see and edit it.
    pub head: RequestHead,
    /// The request's fields as they arrived (hop-by-hop and client identity
    /// removed) until a step runs; from then on `head.headers` holds them.
    pub headers: Option<HeaderMap>,
    /// The request body: streaming from the client unless a step asked to
    /// read it.
    pub body: OutboundBody,
    /// `Content-Length` as the client declared it.
    pub declared_len: Option<u64>,
    /// The request id, the generation's consumers and the timings, for the
    /// host services the steps call.
    pub scope: RequestScope,
    /// The route's chain: indexes of the API's steps, in order.
    pub chain: &'a [usize],
    /// One entry per step reached so far: what the response chain owes it.
    pub instances: Vec<Pending>,
    pub peer: SocketAddr,
    /// The call as recorded so far, when its API records it
    /// (`[api.record]`) and it is in the sample.
    pub record: Option<Box<super::recording::Capture>>,
    /// The call's server span, with `[otel]`; it ends when the context is
    /// dropped.
    pub trace: Option<CallSpan>,
    /// The client's side of a WebSocket handshake the route allows
    /// (`[api.websocket]`): taken over once the upstream switches.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Both sides of a switched connection, relayed once the client has
    /// the `101`.
    pub tunnel: Option<crate::gateway::websocket::Tunnel>,
}

impl Ctx<'_> {
    pub fn request_id(&self) -> &str {
        &self.call.request_id
    }

    /// Record who made the response as it stands, for `outcome`.
    pub fn set_origin(&self, origin: ResponseOrigin) {
        self.timing().origin = Some(origin);
    }

    pub fn timing(&self) -> std::sync::MutexGuard<'_, CallTiming> {
        lock(&self.scope.timing)
    }
}

/// The server span of a routed call, when the gateway traces (`[otel]`):
/// named `METHOD ROUTE`, child of the request's `traceparent` if valid.
pub(crate) fn call_span(
    gateway: &DataPlane,
    method: &http::Method,
    headers: &HeaderMap,
    api: &Api,
    route: &str,
    path: &str,
    request_id: &str,
) -> Option<CallSpan> {
    let tracer = gateway.observe.tracer.as_ref()?;
    let attrs = vec![
        KeyValue::new("http.request.method", method.as_str().to_string()),
        KeyValue::new("url.path", path.to_string()),
        KeyValue::new("http.route", route.to_string()),
        KeyValue::new("tollgate.api", api.name.to_string()),
        KeyValue::new("tollgate.request_id", request_id.to_string()),
    ];
    Some(tracer.call(headers, format!("{method} {route}"), attrs))
}

/// How a step phase ended, for its span: `(outcome, error)`.
pub(crate) fn step_failure(e: &PolicyError) -> (&'static str, Option<String>) {
    let outcome = match e {
        PolicyError::Trap { .. } | PolicyError::Memory { .. } => "trap",
        PolicyError::Timeout { .. } => "deadline",
        _ => "error",
    };
    (outcome, Some(e.to_string()))
}

impl Ctx<'_> {
    /// The call is answered: the status the client gets and who called, on
    /// the server span.
    pub fn trace_answered(&self, status: u16) {
        if let Some(t) = &self.trace {
            t.status(status);
            if let Some(c) = &self.call.consumer {
                t.set(KeyValue::new("tollgate.consumer", c.id.clone()));
            }
        }
    }
}

pub(crate) fn lock(timing: &Mutex<CallTiming>) -> std::sync::MutexGuard<'_, CallTiming> {
    timing.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the response chain owes a step the request chain reached.
#[derive(Default)]
pub(crate) struct Pending {
    /// The step, by its index in the API's steps.
    pub step: usize,
    /// Its condition was false: neither phase runs.
    pub skipped: bool,
    /// The instance its request phase ran on, when its response phase is
    /// still to run on it.
    pub inst: Option<StepInstance>,
    /// Header operations its request phase attached to the response
    /// (checked), applied before its response phase would run.
    pub headers: Vec<HeaderOp>,
    /// For a step with a canary: the version serving the call, and how it
    /// failed (see [`crate::policy::canary`]).
    pub served: Option<crate::policy::canary::Served>,
}

impl Pending {
    /// No instance and no headers: the step failed or answered, or has no
    /// request phase.
    pub fn nothing() -> Pending {
        Pending::default()
    }

    /// Step `step`, whose condition was false.
    pub fn skipped(step: usize) -> Pending {
        Pending {
            step,
            skipped: true,
            ..Pending::default()
        }
    }

    /// Whether `step`'s response phase runs: on the instance its request
    /// phase ran on, or, for a step without a request phase (reached, so
    /// owed its response phase), on one taken then.
    pub fn runs(&self, step: &Step) -> bool {
        !self.skipped && (self.inst.is_some() || (!step.has_request() && step.has_response()))
    }
}

/// A response on its way back through the chain.
pub(crate) struct Outgoing {
    pub status: u16,
    pub headers: Fields,
    pub body: OutBody,
}

impl Outgoing {
    /// A response a step made (or the gateway, from its parts).
    pub fn buffered(status: u16, headers: Fields, body: Bytes) -> Outgoing {
        Outgoing {
            status,
            headers,
            body: OutBody::Buffered(body),
        }
    }
}

pub(crate) enum OutBody {
    Stream(UpstreamBody),
    Buffered(Bytes),
}

/// Header fields on their way through the gateway: hyper's map as they
/// arrived, turned into the WIT list only when a step is called, and into
/// a map again at the end. With no steps nothing is converted.
pub(crate) enum Fields {
    Map(HeaderMap),
    Wit(Vec<Header>),
}

impl Fields {
    /// The fields as a step sees them (converted the first time).
    pub fn wit(&mut self) -> &mut Vec<Header> {
        if let Fields::Map(m) = self {
            *self = Fields::Wit(headers_to_wit(m));
        }
        match self {
            Fields::Wit(v) => v,
            Fields::Map(_) => unreachable!("converted above"),
        }
    }

    pub fn into_map(self) -> HeaderMap {
        match self {
            Fields::Map(m) => m,
            Fields::Wit(v) => wit_to_headers(&v),
        }
    }
}

#[doc(hidden)]
pub fn headers_to_wit(h: &HeaderMap) -> Vec<Header> {
    h.iter()
        .map(|(n, v)| Header {
            name: n.as_str().to_string(),
            value: v.as_bytes().to_vec(),
        })
        .collect()
}

#[doc(hidden)]
pub fn wit_to_headers(hs: &[Header]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(hs.len());
    for h in hs {
        // Names and values were checked when a step set them, and the
        // others came from hyper; anything odd is dropped, never forwarded.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(&h.value),
        ) {
            map.append(n, v);
        }
    }
    map
}
