//! The request chain: each step's request phase in order, reading the
//! request body first for a step that asked for it.

use super::context::{headers_to_wit, lock, step_failure, Ctx, Fields, Outgoing, Pending};
use crate::gateway::error::{Failure, GatewayError};
use crate::gateway::DataPlane;
use crate::observe::metrics::StepOutcome;
use crate::observe::trace::ChildSpan;
use crate::policy::canary::{self, Fault, Served, Version};
use crate::policy::condition::Facts;
use crate::policy::{self, CallContext, PolicyError, RequestDecision, RequestHead, StepInstance};
use crate::upstream::OutboundBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use opentelemetry::KeyValue;
use std::sync::Arc;

/// Largest refused request body the gateway still reads (and discards) so
/// the client can read the 413.
const DRAIN_MAX: u64 = 1 << 20;

/// How the request chain ended, when no step failed.
pub(crate) enum Chain {
    /// Every step let the request through: on to the upstream.
    Through,
    /// A step answered instead of the upstream.
    Answered { step: Arc<str>, out: Outgoing },
}

/// Run each step's request phase in order, until one answers or fails: the
/// route's chain, and right after the step that identified the caller,
/// the chain of the caller's product. A step that fails open is skipped
/// (with a warning); a step whose `when` is false is skipped before any
/// instance is taken. A step without a request phase is only noted for the
/// response chain.
pub(crate) async fn request_chain(cx: &mut Ctx<'_>) -> Result<Chain, Failure> {
    let api = cx.api;
    let mut product_due = true;
    for &i in cx.chain {
        if let Some(answered) = request_step(cx, i).await? {
            return Ok(answered);
        }
        if product_due && cx.call.consumer.is_some() {
            product_due = false;
            let product = cx.call.consumer.as_ref().and_then(|c| c.product.clone());
            let steps = product.and_then(|p| api.chains.of_product(&p));
            for &j in steps.unwrap_or_default() {
                if let Some(answered) = request_step(cx, j).await? {
                    return Ok(answered);
                }
            }
        }
    }
    Ok(Chain::Through)
}

/// The request phase of the API's step `i`: `Some` when the step
/// answered.
async fn request_step(cx: &mut Ctx<'_>, i: usize) -> Result<Option<Chain>, Failure> {
    let api = cx.api;
    let base = &api.steps[i];
    if let Some(when) = &base.when {
        match when.eval(&CallFacts(cx)) {
            Ok(true) => {}
            Ok(false) => {
                base.cells().not_applicable();
                cx.instances.push(Pending::skipped(i));
                return Ok(None);
            }
            Err(e) => {
                // Never a silent skip: the call fails as when a step
                // misbehaves, counted as the step's bad output.
                cx.instances.push(Pending::skipped(i));
                let e = PolicyError::BadOutput {
                    step: base.name.to_string(),
                    detail: format!("its condition (`when`) could not be evaluated: {e}"),
                };
                let cells = base.cells();
                let phase = if base.has_request() {
                    &cells.request
                } else {
                    &cells.response
                };
                phase.ran(0, StepOutcome::Failed(e.kind()));
                return Err(e.into());
            }
        }
    }
    // A step with a canary: the version serving this call (both its
    // phases), by the call's sticky key.
    let served = base.canary.as_ref().map(|c| Served {
        version: c.choose(&base.name, &sticky_key(cx)),
        fault: None,
    });
    let step = base.version(served.map_or(Version::Stable, |s| s.version));
    let owed = |p: Pending, e: Option<&PolicyError>| Pending {
        step: i,
        served: served.map(|s| Served {
            fault: e.map(Fault::of),
            ..s
        }),
        ..p
    };
    if !step.has_request() && !step.has_response() {
        cx.instances.push(owed(Pending::nothing(), None));
        return Ok(None);
    }
    // The request's fields stay hyper's map unless a step with a phase
    // is reached (a response phase reads them too).
    if let Some(map) = cx.headers.take() {
        cx.head.headers = headers_to_wit(&map);
    }
    if !step.has_request() {
        // Its response phase is owed: `Pending::runs`.
        cx.instances.push(owed(Pending::nothing(), None));
        return Ok(None);
    }
    cx.call.step.clear();
    cx.call.step.push_str(step.chain_name());
    if step.info.body.request.is_some() {
        if let Err(failure) = read_body(cx).await {
            cx.instances.push(owed(Pending::nothing(), None));
            return Err(failure);
        }
    }
    let span = cx
        .trace
        .as_ref()
        .map(|t| t.step(step.chain_name(), "request"));
    let started = std::time::Instant::now();
    let run = run_request_step(
        cx.gateway,
        step,
        &mut cx.call,
        &mut cx.head,
        &mut cx.body,
        &cx.scope,
    );
    let result = policy::gate::guarded(step, true, run).await;
    let took_us = started.elapsed().as_micros() as u64;
    lock(&cx.scope.timing)
        .steps
        .push((step.name.to_string(), took_us));
    step.cells().request.ran(
        took_us,
        match &result {
            Ok((_, StepResult::Continue { .. })) => StepOutcome::Continue,
            Ok((_, StepResult::Respond(out))) => StepOutcome::Respond(out.status),
            Err(e) => StepOutcome::Failed(e.kind()),
        },
    );
    if let Some(span) = span {
        end_step_span(span, &result, step.fail_open);
    }
    match result {
        Ok((inst, StepResult::Continue { consumer, headers })) => {
            // A step without a response phase is done: its instance
            // goes back to the pool now, not after the upstream call
            // (fewer slots in use at once, and the slot is reused
            // while its pages are still in cache).
            let inst = if step.has_response() {
                Some(inst)
            } else {
                cx.gateway.runtime.release(step, inst).await;
                None
            };
            cx.instances.push(owed(
                Pending {
                    inst,
                    headers,
                    ..Pending::nothing()
                },
                None,
            ));
            if consumer.is_some() {
                cx.call.consumer = consumer;
            }
            Ok(None)
        }
        Ok((inst, StepResult::Respond(out))) => {
            // As the contract says: the response chain runs for the
            // steps before this one, not for the one that answered.
            cx.gateway.runtime.release(step, inst).await;
            cx.instances.push(owed(Pending::nothing(), None));
            Ok(Some(Chain::Answered {
                step: step.name.clone(),
                out,
            }))
        }
        Err(e) if step.fail_open && !matches!(e, PolicyError::BadOutput { .. }) => {
            step.cells().request.skipped();
            policy::guard::warn_failure(&e, cx.request_id(), &api.name, "; skipped (fail-open)");
            cx.instances.push(owed(Pending::nothing(), Some(&e)));
            Ok(None)
        }
        Err(e) => {
            cx.instances.push(owed(Pending::nothing(), Some(&e)));
            Err(e.into())
        }
    }
}

/// What a step's condition reads of a call: the request as the steps
/// before it left it, and the caller they identified.
struct CallFacts<'c, 'a>(&'c Ctx<'a>);

impl CallFacts<'_, '_> {
    fn consumer_field(&self, f: impl Fn(&policy::Consumer) -> Option<&String>) -> Option<&str> {
        self.0
            .call
            .consumer
            .as_ref()
            .and_then(f)
            .map(String::as_str)
    }
}

impl Facts for CallFacts<'_, '_> {
    fn method(&self) -> &str {
        &self.0.head.method
    }
    fn path(&self) -> &str {
        &self.0.head.path
    }
    fn host(&self) -> &str {
        let a = self.0.head.authority.as_str();
        // `[v6]:port`, `name:port`, or either without a port.
        match a.rfind(':') {
            Some(i) if !a[i..].contains(']') => &a[..i],
            _ => a,
        }
    }
    fn route(&self) -> &str {
        &self.0.call.route
    }
    fn api(&self) -> &str {
        &self.0.call.api
    }
    fn client(&self) -> std::net::IpAddr {
        self.0.peer.ip()
    }
    fn headers(&self) -> Vec<(String, String)> {
        let lossy = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        match &self.0.headers {
            Some(map) => map
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), lossy(v.as_bytes())))
                .collect(),
            None => self
                .0
                .head
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), lossy(&h.value)))
                .collect(),
        }
    }
    fn query(&self) -> Vec<(String, String)> {
        let q = self.0.head.query.as_deref().unwrap_or("");
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
    fn captures(&self) -> Vec<(String, String)> {
        self.0.call.captures.clone()
    }
    fn consumer(&self) -> Option<&str> {
        self.0.call.consumer.as_ref().map(|c| c.id.as_str())
    }
    fn app(&self) -> Option<&str> {
        self.consumer_field(|c| c.app.as_ref())
    }
    fn plan(&self) -> Option<&str> {
        self.consumer_field(|c| c.plan.as_ref())
    }
    fn product(&self) -> Option<&str> {
        self.consumer_field(|c| c.product.as_ref())
    }
    fn groups(&self) -> Vec<String> {
        match self.consumer() {
            Some(id) => self.0.scope.consumers.groups(id),
            None => Vec::new(),
        }
    }
}

/// End a request phase's span with what the phase decided.
fn end_step_span(
    mut span: ChildSpan,
    result: &Result<(StepInstance, StepResult), PolicyError>,
    fail_open: bool,
) {
    match result {
        Ok((_, StepResult::Continue { .. })) => span.end("continue", None, None),
        Ok((_, StepResult::Respond(out))) => span.end("respond", Some(out.status), None),
        Err(e) => {
            if fail_open && !matches!(e, PolicyError::BadOutput { .. }) {
                span.set(KeyValue::new("tollgate.fail_open", true));
            }
            let (outcome, error) = step_failure(e);
            span.end(outcome, None, error);
        }
    }
}

/// The key a call's canary choice sticks to: its consumer once a step
/// identified one, else its client's address.
fn sticky_key(cx: &Ctx<'_>) -> String {
    let consumer = cx.call.consumer.as_ref().map(|c| c.id.as_str());
    canary::sticky_key(consumer, cx.peer.ip())
}

/// Read the request body (once, before the first step that asks for it),
/// up to the largest limit any step asked for: steps before it
/// (authentication, IP filters) can refuse the call without the gateway
/// reading the body.
async fn read_body(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    if let OutboundBody::Buffered(_) = cx.body {
        return Ok(());
    }
    let placeholder = OutboundBody::Buffered(Bytes::new());
    let OutboundBody::Stream(stream) = std::mem::replace(&mut cx.body, placeholder) else {
        unreachable!("a buffered body returned above")
    };
    let limit = cx.api.request_body_limit.unwrap_or(0);
    let timeout = cx.gateway.limits().request_body_timeout.0;
    if let Some(n) = cx.declared_len.filter(|n| *n > limit as u64) {
        // Refused unread. A small body is drained first, so the client
        // (still sending) reads the 413 rather than a reset; a large one is
        // not read at all (it stays with the call until its end).
        if n <= DRAIN_MAX {
            let drain = Limited::new(stream, DRAIN_MAX as usize).collect();
            let _ = tokio::time::timeout(timeout, drain).await;
        } else {
            cx.body = OutboundBody::Stream(stream);
        }
        return Err(Failure::unread(GatewayError::PayloadTooLarge { limit }));
    }
    match tokio::time::timeout(timeout, Limited::new(stream, limit).collect()).await {
        Ok(Ok(c)) => {
            cx.body = OutboundBody::Buffered(c.to_bytes());
            Ok(())
        }
        Err(_) => Err(GatewayError::RequestTimeout(timeout).into()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::PayloadTooLarge { limit }.into())
        }
        Ok(Err(e)) => {
            Err(GatewayError::BadRequest(format!("reading the request body: {e}")).into())
        }
    }
}

/// What a step's request phase decided.
pub(crate) enum StepResult {
    /// Go on, as this consumer when the step identified one, with these
    /// (checked) operations for the response.
    Continue {
        consumer: Option<policy::Consumer>,
        headers: Vec<policy::HeaderOp>,
    },
    Respond(Outgoing),
}

/// One step's request phase, its edits applied to `head` and `body`.
async fn run_request_step(
    gateway: &DataPlane,
    step: &policy::Step,
    ctx: &mut CallContext,
    head: &mut RequestHead,
    body: &mut OutboundBody,
    scope: &policy::RequestScope,
) -> Result<(StepInstance, StepResult), PolicyError> {
    let mut inst = gateway.runtime.instantiate(step, scope).await?;
    let wants_body = step.info.body.request.is_some();
    let body_view: Option<&[u8]> = match (&*body, wants_body) {
        (OutboundBody::Buffered(b), true) => Some(b),
        _ => None,
    };
    let decision = inst.on_request(step, ctx, head, body_view).await?;
    match decision {
        RequestDecision::Continue(edits) => {
            policy::apply_header_ops(&step.name, &mut head.headers, edits.headers)?;
            policy::check_header_ops(&step.name, &edits.response_headers)?;
            if let Some(p) = edits.path {
                head.path = policy::check_path(&step.name, &p)?;
            }
            if let Some(q) = edits.query {
                policy::check_query(&step.name, &q)?;
                head.query = if q.is_empty() { None } else { Some(q) };
            }
            if let Some(b) = edits.body {
                if !wants_body {
                    return Err(PolicyError::BadOutput {
                        step: step.name.to_string(),
                        detail: "returned a request body without asking for body access".into(),
                    });
                }
                *body = OutboundBody::Buffered(Bytes::from(b));
            }
            Ok((
                inst,
                StepResult::Continue {
                    consumer: edits.consumer,
                    headers: edits.response_headers,
                },
            ))
        }
        RequestDecision::Respond(resp) => {
            policy::check_response(&step.name, &resp)?;
            let out = Outgoing::buffered(
                resp.status,
                Fields::Wit(resp.headers),
                Bytes::from(resp.body),
            );
            Ok((inst, StepResult::Respond(out)))
        }
    }
}
