//! The end of a call, for the observers ([`crate::observe`]): its
//! [`CallRecord`] is handed over when the response body has been sent
//! whole, or when hyper drops it (the client went away, or a body hyper
//! does not read: `HEAD`, 204, 304).
//!
//! The response body is wrapped to count its bytes; the record is built
//! from what the call's context already holds (nothing is cloned that the
//! call still needs), so the cost is one allocation and a few atomic adds.

use super::context::Ctx;
use crate::gateway::DataPlane;
use crate::observe::metrics::{ListenerCells, Metrics, RouteCells};
use crate::observe::{CallRecord, Observers};
use crate::policy::host::ResponseOrigin;
use crate::route::Route;
use crate::upstream::{BoxError, ProxyBody};
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// What the observers need from the start of a call.
pub(crate) struct Start {
    pub at_ms: u64,
    pub listener: Option<&'static ListenerCells>,
}

impl Start {
    pub fn now(listener: Option<&'static ListenerCells>) -> Start {
        Start {
            at_ms: crate::domain::time::Ts::now().0,
            listener,
        }
    }
}

/// Whether anyone looks at finished calls.
pub(crate) fn wanted(gateway: &DataPlane) -> bool {
    gateway.observe.wanted()
}

/// The record of a routed call, all but what its response body tells.
pub(crate) fn routed(
    cx: &mut Ctx<'_>,
    route: &Route,
    method: http::Method,
    start: Start,
) -> CallRecord {
    let cells: &'static RouteCells = route
        .cells
        .get_or_init(|| crate::observe::metrics::global().route_cells(&cx.api.name, &route.name));
    let (upstream_us, answered_by) = {
        let t = cx.timing();
        let answered_by = match &t.origin {
            Some(ResponseOrigin::Step(s)) => Some(s.clone()),
            _ => None,
        };
        let reached = matches!(t.origin, Some(ResponseOrigin::Upstream(_))) || t.upstream_us > 0;
        (reached.then_some(t.upstream_us), answered_by)
    };
    let consumer = cx.call.consumer.take();
    let (consumer, app, plan, product, key_id) = match consumer {
        Some(c) => (Some(c.id), c.app, c.plan, c.product, c.key_id),
        None => (None, None, None, None, None),
    };
    CallRecord {
        at_ms: start.at_ms,
        api: cells.api(),
        route: cells.route(),
        method,
        status: 0,
        scheme: scheme_of(&cx.head.scheme),
        consumer,
        app,
        plan,
        product,
        key_id,
        client: cx.peer.ip(),
        bytes_in: bytes_in(cx),
        bytes_out: 0,
        total_us: 0,
        upstream_us,
        cache: None,
        answered_by,
        aborted: false,
        cells: Some(cells),
        listener: start.listener,
    }
}

/// The record of a call no API took (refused before routing, 404, 405).
pub(crate) fn unrouted(
    method: http::Method,
    peer: std::net::SocketAddr,
    scheme: &'static str,
    start: Start,
) -> CallRecord {
    CallRecord {
        at_ms: start.at_ms,
        api: "",
        route: "",
        method,
        status: 0,
        scheme,
        consumer: None,
        app: None,
        plan: None,
        product: None,
        key_id: None,
        client: peer.ip(),
        bytes_in: 0,
        bytes_out: 0,
        total_us: 0,
        upstream_us: None,
        cache: None,
        answered_by: None,
        aborted: false,
        cells: None,
        listener: start.listener,
    }
}

/// The request body's length: as read, when a step read it and it is still
/// here; else as declared (a body streamed upstream is not counted).
fn bytes_in(cx: &Ctx<'_>) -> u64 {
    match &cx.body {
        crate::upstream::OutboundBody::Buffered(b) if !b.is_empty() => b.len() as u64,
        _ => cx.declared_len.unwrap_or(0),
    }
}

fn scheme_of(s: &str) -> &'static str {
    if s == "https" {
        "https"
    } else {
        "http"
    }
}

/// `resp` with a body that hands `rec` to the observers once sent.
pub(crate) fn watch(
    observe: &Arc<Observers>,
    mut rec: CallRecord,
    started: Instant,
    resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    rec.status = resp.status().as_u16();
    rec.cache = resp
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // A body hyper will not send counts as sent whole.
    let unsent = rec.method == http::Method::HEAD || matches!(rec.status, 204 | 304);
    let (parts, body) = resp.into_parts();
    let expected = if unsent {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let watched = Watched {
        inner: body,
        sent: 0,
        expected,
        pending: Some(Pending {
            to: To::of(observe),
            rec,
            started,
        }),
    };
    Response::from_parts(parts, watched.boxed())
}

struct Pending {
    to: To,
    rec: CallRecord,
    started: Instant,
}

/// Who gets the record. Metrics alone need no hold on the gateway's
/// observers (they are the process's): no reference count touched per
/// call, which the serving threads would otherwise pass back and forth.
enum To {
    Metrics(&'static Metrics),
    All(Arc<Observers>),
}

impl To {
    fn of(observe: &Arc<Observers>) -> To {
        if observe.metrics_on && observe.analytics.is_none() {
            To::Metrics(observe.metrics)
        } else {
            To::All(observe.clone())
        }
    }

    fn call_done(&self, rec: &CallRecord) {
        match self {
            To::Metrics(m) => m.call_done(rec),
            To::All(o) => o.call_done(rec),
        }
    }
}

/// A response body that counts what it sends and reports the call when it
/// ends or is dropped.
struct Watched {
    inner: ProxyBody,
    sent: u64,
    /// Its whole length when known at the start (`Some(0)` for a body
    /// hyper does not send).
    expected: Option<u64>,
    /// Inline, not boxed: the whole body is boxed once anyway.
    pending: Option<Pending>,
}

impl Watched {
    fn report(&mut self, ended: bool) {
        if let Some(p) = self.pending.take() {
            let Pending {
                to,
                mut rec,
                started,
            } = p;
            rec.bytes_out = self.sent;
            rec.total_us = started.elapsed().as_micros() as u64;
            rec.aborted = !ended && self.expected.is_none_or(|n| self.sent < n);
            to.call_done(&rec);
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.sent += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.report(true);
                }
            }
            Poll::Ready(None) => this.report(true),
            Poll::Ready(Some(Err(_))) => this.report(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.report(false);
    }
}
