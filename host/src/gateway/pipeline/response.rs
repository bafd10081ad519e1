//! The response chain: the response phase of the steps that ran, in
//! reverse order, over the response as it stands (the upstream's, a
//! step's, or an error).

use super::context::{step_failure, Ctx, Fields, OutBody, Outgoing, Pending};
use crate::gateway::error::Failure;
use crate::observe::metrics::StepOutcome;
use crate::policy::canary::{Fault, Served, Version};
use crate::policy::host::ResponseOrigin;
use crate::policy::{
    self, PolicyError, ResponseDecision, ResponseEdits, ResponseHead, StepInstance,
};
use crate::upstream::UpstreamError;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use opentelemetry::KeyValue;

/// Run the response phase of every step that has one and was reached,
/// last first, after the response headers its request phase attached. A
/// step that fails replaces the response with its error (the steps before
/// it still see that), unless it fails open.
pub(crate) async fn response_chain(cx: &mut Ctx<'_>, mut out: Outgoing) -> Outgoing {
    let mut pending = std::mem::take(&mut cx.instances);
    if let Some(limit) = body_limit(cx, &pending) {
        if let Err(failure) = buffer_body(limit, &mut out).await {
            out = cx.fail(failure);
        }
    }
    let api = cx.api;
    let owed_steps: Vec<usize> = pending.iter().map(|p| p.step).collect();
    // The steps with a canary this call reached: counted once it is over.
    let mut served: Vec<(usize, Served)> = pending
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.served.map(|s| (i, s)))
        .collect();
    for (i, owed) in pending.iter_mut().enumerate().rev() {
        let mut owed = std::mem::take(owed);
        let base = &api.steps[owed.step];
        let step = base.version(owed.served.map_or(Version::Stable, |s| s.version));
        let headers = std::mem::take(&mut owed.headers);
        if !headers.is_empty() {
            // Checked when the request phase returned.
            if let Err(e) = policy::apply_header_ops(&step.name, out.headers.wit(), headers) {
                out = cx.fail(e.into());
            }
        }
        if !owed.runs(step) {
            continue;
        }
        let span = cx
            .trace
            .as_ref()
            .map(|t| t.step(step.chain_name(), "response"));
        let status_before = out.status;
        // Done with the instance: back to its worker's pool (worker
        // isolation) unless the phase failed, which discards it.
        let run = async {
            let mut inst = match owed.inst {
                Some(inst) => inst,
                None => cx.gateway.runtime.instantiate(step, &cx.scope).await?,
            };
            run_response_step(cx, step, &mut inst, &mut out)
                .await
                .map(|()| inst)
        };
        let started = std::time::Instant::now();
        let result = policy::gate::guarded(step, false, run).await;
        step.cells().response.ran(
            started.elapsed().as_micros() as u64,
            match &result {
                Ok(_) if out.status != status_before => StepOutcome::Respond(out.status),
                Ok(_) => StepOutcome::Continue,
                Err(e) => StepOutcome::Failed(e.kind()),
            },
        );
        if let Some(mut span) = span {
            match &result {
                Ok(_) if out.status != status_before => span.end("respond", Some(out.status), None),
                Ok(_) => span.end("continue", None, None),
                Err(e) => {
                    if step.fail_open && !matches!(e, PolicyError::BadOutput { .. }) {
                        span.set(KeyValue::new("tollgate.fail_open", true));
                    }
                    let (outcome, error) = step_failure(e);
                    span.end(outcome, None, error);
                }
            }
        }
        let e = match result {
            Ok(inst) => {
                cx.gateway.runtime.release(step, inst).await;
                continue;
            }
            Err(e) => e,
        };
        if let Some((_, s)) = served.iter_mut().find(|(j, _)| *j == i) {
            s.fault = s.fault.or(Some(Fault::of(&e)));
        }
        if step.fail_open && !matches!(e, PolicyError::BadOutput { .. }) {
            step.cells().response.skipped();
            policy::guard::warn_failure(&e, cx.request_id(), &api.name, "; skipped (fail-open)");
            continue;
        }
        out = cx.fail(e.into());
    }
    for (i, s) in served.drain(..) {
        let base = &api.steps[owed_steps[i]];
        if let Some(c) = &base.canary {
            c.settle(base, s, out.status);
        }
    }
    cx.trace_answered(out.status);
    out
}

/// The largest response body a step that will run asks to read, if any.
fn body_limit(cx: &Ctx<'_>, pending: &[Pending]) -> Option<usize> {
    pending
        .iter()
        .map(|p| (&cx.api.steps[p.step], p))
        .map(|(s, p)| {
            (
                s.version(p.served.map_or(Version::Stable, |s| s.version)),
                p,
            )
        })
        .filter(|(s, p)| p.runs(s))
        .filter_map(|(s, _)| s.info.body.response.map(|n| n as usize))
        .max()
}

/// Read a streaming response body whole, up to `limit` (when a step that
/// will run asks for it; else it streams).
async fn buffer_body(limit: usize, out: &mut Outgoing) -> Result<(), Failure> {
    if let OutBody::Buffered(_) = out.body {
        return Ok(());
    }
    let OutBody::Stream(body) = std::mem::replace(&mut out.body, OutBody::Buffered(Bytes::new()))
    else {
        unreachable!("a buffered body returned above")
    };
    match Limited::new(body, limit).collect().await {
        Ok(c) => {
            out.body = OutBody::Buffered(c.to_bytes());
            Ok(())
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(UpstreamError::BodyTooLarge { limit }.into())
        }
        Err(e) => Err(UpstreamError::BadResponse(format!("reading the response body: {e}")).into()),
    }
}

/// One step's response phase, its edits (or its answer) applied to `out`.
async fn run_response_step(
    cx: &mut Ctx<'_>,
    step: &policy::Step,
    inst: &mut StepInstance,
    out: &mut Outgoing,
) -> Result<(), PolicyError> {
    cx.call.step.clear();
    cx.call.step.push_str(step.chain_name());
    let wants_body = step.info.body.response.is_some();
    let mut resp_head = ResponseHead {
        status: out.status,
        headers: std::mem::take(out.headers.wit()),
    };
    let body_view: Option<&[u8]> = match (&out.body, wants_body) {
        (OutBody::Buffered(b), true) => Some(b),
        _ => None,
    };
    let result = inst
        .on_response(step, &mut cx.call, &mut cx.head, &mut resp_head, body_view)
        .await;
    out.headers = Fields::Wit(resp_head.headers);
    match result? {
        ResponseDecision::Continue(edits) => apply_edits(step, edits, wants_body, out),
        ResponseDecision::Respond(resp) => {
            policy::check_response(&step.name, &resp)?;
            *out = Outgoing::buffered(
                resp.status,
                Fields::Wit(resp.headers),
                Bytes::from(resp.body),
            );
            cx.set_origin(ResponseOrigin::Step(step.name.clone()));
            Ok(())
        }
    }
}

/// A response step's edits: fields, status (200 to 599), body (only when
/// the step asked for body access).
fn apply_edits(
    step: &policy::Step,
    edits: ResponseEdits,
    wants_body: bool,
    out: &mut Outgoing,
) -> Result<(), PolicyError> {
    policy::apply_header_ops(&step.name, out.headers.wit(), edits.headers)?;
    if let Some(s) = edits.status {
        if !(200..=599).contains(&s) {
            return Err(PolicyError::BadOutput {
                step: step.name.to_string(),
                detail: format!("status {s} (must be 200 to 599)"),
            });
        }
        out.status = s;
    }
    if let Some(b) = edits.body {
        if !wants_body {
            return Err(PolicyError::BadOutput {
                step: step.name.to_string(),
                detail: "returned a response body without asking for body access".into(),
            });
        }
        out.body = OutBody::Buffered(Bytes::from(b));
    }
    Ok(())
}
