//! Recording the calls of an API with `[api.record]` (see
//! [`crate::record`]): the request is noted before the request chain, as
//! its first step sees it; the response as the client gets it, its body
//! copied (up to `max-body`) while it streams to the client, and the line
//! is handed to the recorder when hyper is done with the body. Nothing
//! here runs for an API without `[api.record]`, nor for a call refused
//! before routing.

use super::context::Ctx;
use crate::gateway::error::{Failure, GatewayError};
use crate::policy::Header;
use crate::record::{Recorder, TraceBody, TraceConsumer, TraceLine, TraceRequest, TraceResponse};
use crate::upstream::{BoxError, OutboundBody, ProxyBody};
use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A call being recorded: the line so far (its response still empty).
pub(crate) struct Capture {
    recorder: Arc<Recorder>,
    line: TraceLine,
}

/// Before the request chain: when the call's API records and the call is
/// in the sample, note the request. Its body is read first when its
/// length is known and at most `max-body` (and at most the limit of the
/// API's steps with body access), so the upstream then gets it buffered;
/// a longer one, or one of unknown length, streams on and is recorded as
/// its length only. Reading it can fail like a step's read.
pub(crate) async fn begin(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    let Some(recorder) = cx.api.record.clone() else {
        return Ok(());
    };
    if !recorder.sampled(cx.request_id()) {
        return Ok(());
    }
    let body = request_body(cx, recorder.max_body()).await?;
    let headers = match &cx.headers {
        Some(map) => map_pairs(map),
        None => wit_pairs(&cx.head.headers),
    };
    let head = &cx.head;
    let line = TraceLine {
        time: Recorder::now(),
        api: cx.api.name.to_string(),
        route: cx.call.route.clone(),
        request_id: cx.call.request_id.clone(),
        client: cx.call.client_addr.clone(),
        captures: cx.call.captures.clone(),
        request: TraceRequest {
            method: head.method.clone(),
            scheme: head.scheme.clone(),
            authority: head.authority.clone(),
            path: head.path.clone(),
            query: head.query.clone(),
            headers,
            body,
        },
        consumer: None,
        response: TraceResponse {
            status: 0,
            headers: Vec::new(),
            body: TraceBody::default(),
        },
    };
    cx.record = Some(Box::new(Capture { recorder, line }));
    Ok(())
}

/// The request body for the line, reading it when it may be.
async fn request_body(cx: &mut Ctx<'_>, max: usize) -> Result<TraceBody, Failure> {
    let stream = match &cx.body {
        OutboundBody::Buffered(b) if b.len() <= max => return Ok(TraceBody::whole(b)),
        OutboundBody::Buffered(b) => return Ok(TraceBody::truncated(Some(b.len() as u64))),
        OutboundBody::Stream(s) if s.is_end_stream() => return Ok(TraceBody::whole(b"")),
        // Not past the limit of a step with body access either: that step
        // refuses a longer body itself (413), unread.
        OutboundBody::Stream(_) => match cx.declared_len {
            Some(n) if n <= max.min(cx.api.request_body_limit.unwrap_or(usize::MAX)) as u64 => {
                let placeholder = OutboundBody::Buffered(Bytes::new());
                match std::mem::replace(&mut cx.body, placeholder) {
                    OutboundBody::Stream(s) => s,
                    OutboundBody::Buffered(_) => unreachable!("matched a stream above"),
                }
            }
            n => return Ok(TraceBody::truncated(n)),
        },
    };
    let timeout = cx.gateway.limits().request_body_timeout.0;
    match tokio::time::timeout(timeout, Limited::new(stream, max).collect()).await {
        Ok(Ok(c)) => {
            let bytes = c.to_bytes();
            let body = TraceBody::whole(&bytes);
            cx.body = OutboundBody::Buffered(bytes);
            Ok(body)
        }
        Err(_) => Err(GatewayError::RequestTimeout(timeout).into()),
        Ok(Err(e)) => {
            Err(GatewayError::BadRequest(format!("reading the request body: {e}")).into())
        }
    }
}

/// After `finish`: the response as the client gets it, its body copied
/// on its way; the line goes to the recorder when the body is done.
pub(crate) fn end(cx: &mut Ctx<'_>, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    let Some(capture) = cx.record.take() else {
        return resp;
    };
    let Capture { recorder, mut line } = *capture;
    line.consumer = cx.call.consumer.as_ref().map(|c| TraceConsumer {
        id: c.id.clone(),
        app: c.app.clone(),
        key_id: c.key_id.clone(),
        plan: c.plan.clone(),
        product: c.product.clone(),
    });
    line.response.status = resp.status().as_u16();
    line.response.headers = map_pairs(resp.headers());
    let max = recorder.max_body();
    resp.map(|inner| {
        Tap {
            inner,
            copy: Vec::new(),
            len: 0,
            max,
            ended: false,
            pending: Some((recorder, line)),
        }
        .boxed()
    })
}

/// A response body on its way to the client, copied up to `max` bytes;
/// when dropped (hyper is done with it) the line is submitted.
struct Tap {
    inner: ProxyBody,
    copy: Vec<u8>,
    len: u64,
    max: usize,
    ended: bool,
    pending: Option<(Arc<Recorder>, TraceLine)>,
}

impl Body for Tap {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.len += data.len() as u64;
                    if this.len <= this.max as u64 {
                        this.copy.extend_from_slice(data);
                    } else {
                        this.copy = Vec::new();
                    }
                }
            }
            Poll::Ready(None) => this.ended = true,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let Some((recorder, mut line)) = self.pending.take() else {
            return;
        };
        let complete = self.ended || self.inner.is_end_stream();
        let mut body = if self.len > self.max as u64 {
            TraceBody::truncated(Some(self.len))
        } else {
            TraceBody::whole(&self.copy)
        };
        body.incomplete = !complete;
        line.response.body = body;
        recorder.submit(line);
    }
}

fn map_pairs(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn wit_pairs(headers: &[Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                String::from_utf8_lossy(&h.value).into_owned(),
            )
        })
        .collect()
}
