//! WebSocket connections through the gateway (`[api.websocket]`).
//!
//! The handshake is a call like any other: routed, through the request
//! chain (authentication, rate limits, ...), sent upstream with its
//! `Upgrade` fields. When the upstream answers `101`, the response chain
//! runs on that answer and the client gets it; then both connections are
//! taken over from HTTP and this module relays messages between them:
//!
//! - frames are parsed on both sides (tungstenite): a message or frame over
//!   `max-message` closes the connection with 1009, a protocol violation
//!   with 1002, each to the side that caused it (the other side gets 1001);
//! - data messages (text, binary) are relayed as they are; pings are
//!   answered by the gateway on each side and not relayed (as in any
//!   proxy that parses frames, they keep each hop alive);
//! - a close from either side is passed to the other (its code and
//!   reason), and each side's close is answered, so both see a clean
//!   closing handshake;
//! - no frame either way for `idle-timeout`, or a connection older than
//!   `max-lifetime`: both sides get 1001 and a reason;
//! - extensions (`permessage-deflate`) are not negotiated: the gateway
//!   removes `Sec-WebSocket-Extensions` from the handshake it forwards, as
//!   it parses frames itself. Subprotocols pass through.
//!
//! Each connection is counted in `tollgate_websocket_*` (docs/metrics.md)
//! and, when it ends, logged with its duration and the bytes each way
//! (target `tollgate::websocket`, and a line in the access-log sink when
//! the gateway has one).

use crate::manifest::WebSocketSpec;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// How long a side has to answer the gateway's close before its
/// connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Whether a request asks to switch to WebSocket: HTTP/1.1 `GET` with
/// `Connection: upgrade` and `Upgrade: websocket` (RFC 6455 §4.1).
pub(crate) fn is_upgrade(parts: &http::request::Parts) -> bool {
    parts.method == http::Method::GET
        && parts.version == http::Version::HTTP_11
        && has_token(&parts.headers, header::CONNECTION, "upgrade")
        && has_token(&parts.headers, header::UPGRADE, "websocket")
}

/// Whether an upstream's answer switches to WebSocket.
pub(crate) fn is_switch(status: http::StatusCode, headers: &HeaderMap) -> bool {
    status == http::StatusCode::SWITCHING_PROTOCOLS
        && has_token(headers, header::UPGRADE, "websocket")
}

fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether `route` of an API with `spec` accepts upgrades.
pub(crate) fn allowed(spec: Option<&WebSocketSpec>, route: &str) -> bool {
    spec.is_some_and(|ws| ws.routes.is_empty() || ws.routes.iter().any(|r| r == route))
}

/// The two halves of a connection waiting to be relayed.
pub(crate) struct Tunnel {
    pub client: OnUpgrade,
    pub upstream: OnUpgrade,
    pub settings: WebSocketSpec,
    pub api: Arc<str>,
    pub request_id: String,
    /// The host services, when the API's chain writes to the access-log
    /// sink (a step granted `sink`): the connection's summary goes there.
    pub services: Option<Arc<crate::policy::host::Services>>,
}

/// Relay the connection on a task of its own, once hyper has handed both
/// sides over.
pub(crate) fn spawn(t: Tunnel) {
    tokio::spawn(relay(t));
}

/// What ended a connection, for the metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Client,
    Upstream,
    IdleTimeout,
    MaxLifetime,
    MessageTooBig,
    ProtocolError,
    UpgradeFailed,
}

impl By {
    fn label(self) -> &'static str {
        match self {
            By::Client => "client",
            By::Upstream => "upstream",
            By::IdleTimeout => "idle_timeout",
            By::MaxLifetime => "max_lifetime",
            By::MessageTooBig => "message_too_big",
            By::ProtocolError => "protocol_error",
            By::UpgradeFailed => "upgrade_failed",
        }
    }
}

/// How one direction stopped.
enum Ended {
    /// Its source sent a close frame.
    Closed(Option<CloseFrame>),
    /// Its source went away without one (or broke).
    Gone,
    /// Its source sent a message or frame over the limit.
    TooBig,
    /// Its source broke the protocol.
    Protocol,
    /// Writing to its destination failed: the destination went away.
    WriteFailed,
}

/// What one direction relayed.
#[derive(Default)]
struct Relayed {
    messages: u64,
    bytes: u64,
}

type Ws = WebSocketStream<TokioIo<Upgraded>>;

async fn relay(t: Tunnel) {
    let metrics = crate::observe::metrics::global();
    let started = Instant::now();
    let (client, upstream) = match tokio::try_join!(t.client, t.upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(api = %t.api, request_id = %t.request_id, "websocket: upgrade failed: {e}");
            metrics.websocket_closed(&t.api, By::UpgradeFailed.label());
            return;
        }
    };
    metrics.websocket_open(&t.api, true);
    let max = t.settings.max_message.0 as usize;
    let config = WebSocketConfig::default()
        // Small buffers: a connection mostly waits, and a thousand of them
        // should not hold 128 KiB each (the default).
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(max.saturating_mul(2).max(1 << 16))
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let client = Ws::from_raw_socket(TokioIo::new(client), Role::Server, Some(config)).await;
    let upstream = Ws::from_raw_socket(TokioIo::new(upstream), Role::Client, Some(config)).await;
    let (mut to_client, mut from_client) = client.split();
    let (mut to_upstream, mut from_upstream) = upstream.split();
    let last = Activity::new();
    let (mut up, mut down) = (Relayed::default(), Relayed::default());
    let lifetime = tokio::time::sleep(t.settings.max_lifetime.0);
    let idle = t.settings.idle_timeout.0;
    let ended = tokio::select! {
        e = pump(&mut from_client, &mut to_upstream, &last, &mut up) => Side::Client(e),
        e = pump(&mut from_upstream, &mut to_client, &last, &mut down) => Side::Upstream(e),
        () = idle_for(&last, idle) => Side::Idle,
        () = lifetime => Side::Lifetime,
    };
    let by = match ended {
        Side::Client(e) => {
            let (by, to_src, to_dst) = consequences(e, By::Client, "client");
            finish(
                &mut to_client,
                &mut from_client,
                to_src,
                &mut to_upstream,
                &mut from_upstream,
                to_dst,
            )
            .await;
            by
        }
        Side::Upstream(e) => {
            let (by, to_src, to_dst) = consequences(e, By::Upstream, "upstream");
            finish(
                &mut to_upstream,
                &mut from_upstream,
                to_src,
                &mut to_client,
                &mut from_client,
                to_dst,
            )
            .await;
            by
        }
        Side::Idle | Side::Lifetime => {
            let (by, reason) = if matches!(ended, Side::Idle) {
                (By::IdleTimeout, "idle timeout")
            } else {
                (By::MaxLifetime, "maximum connection lifetime")
            };
            let frame = Some(CloseFrame {
                code: CloseCode::Away,
                reason: reason.into(),
            });
            finish(
                &mut to_client,
                &mut from_client,
                Some(frame.clone()),
                &mut to_upstream,
                &mut from_upstream,
                Some(frame),
            )
            .await;
            by
        }
    };
    metrics.websocket_open(&t.api, false);
    metrics.websocket_closed(&t.api, by.label());
    metrics.websocket_relayed(&t.api, "to_upstream", up.messages, up.bytes);
    metrics.websocket_relayed(&t.api, "to_client", down.messages, down.bytes);
    let duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        target: "tollgate::websocket",
        api = %t.api,
        request_id = %t.request_id,
        duration_ms,
        to_upstream_bytes = up.bytes,
        to_client_bytes = down.bytes,
        ended_by = by.label(),
        "websocket connection ended"
    );
    if let Some(services) = &t.services {
        let line = serde_json::json!({
            "type": "websocket",
            "request_id": t.request_id,
            "api": &*t.api,
            "duration_ms": duration_ms,
            "to_upstream": { "messages": up.messages, "bytes": up.bytes },
            "to_client": { "messages": down.messages, "bytes": down.bytes },
            "ended_by": by.label(),
        });
        services.sink.write_line(&line.to_string());
    }
}

/// Which side's direction ended the relay, or which bound did.
enum Side {
    Client(Ended),
    Upstream(Ended),
    Idle,
    Lifetime,
}

/// For a direction that ended with `e` (its source is `who`): what ended
/// the connection, the close the source gets (`None`: it needs none, or
/// cannot take one) and the close its destination gets.
#[allow(clippy::type_complexity)]
fn consequences(
    e: Ended,
    who: By,
    name: &'static str,
) -> (By, Option<Option<CloseFrame>>, Option<Option<CloseFrame>>) {
    let away = |reason: String| {
        Some(Some(CloseFrame {
            code: CloseCode::Away,
            reason: reason.into(),
        }))
    };
    let to = |code: CloseCode, reason: &'static str| {
        Some(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    match e {
        // Passed on as sent; the source's close is answered by tungstenite.
        Ended::Closed(frame) => (who, None, Some(frame)),
        Ended::Gone => (who, None, away(format!("the {name} went away"))),
        Ended::TooBig => (
            By::MessageTooBig,
            to(CloseCode::Size, "message too big"),
            away(format!("the {name} sent a message too big")),
        ),
        Ended::Protocol => (
            By::ProtocolError,
            to(CloseCode::Protocol, "protocol error"),
            away(format!("the {name} broke the protocol")),
        ),
        // The destination is gone: it is the other side that ended it.
        Ended::WriteFailed => {
            let other = if who == By::Client {
                By::Upstream
            } else {
                By::Client
            };
            (other, away("the other side went away".into()), None)
        }
    }
}

/// Send each side its close (if it gets one), then wait a moment for the
/// answers, so both see a closing handshake.
async fn finish(
    a_tx: &mut SplitSink<Ws, Message>,
    a_rx: &mut SplitStream<Ws>,
    a_close: Option<Option<CloseFrame>>,
    b_tx: &mut SplitSink<Ws, Message>,
    b_rx: &mut SplitStream<Ws>,
    b_close: Option<Option<CloseFrame>>,
) {
    tokio::join!(close(a_tx, a_rx, a_close), close(b_tx, b_rx, b_close));
}

/// One side's end: its close (if it gets one), what is queued for it (the
/// answer to a close it sent), then its own close and end, for a moment.
async fn close(
    tx: &mut SplitSink<Ws, Message>,
    rx: &mut SplitStream<Ws>,
    c: Option<Option<CloseFrame>>,
) {
    if let Some(frame) = c {
        let _ = tx.send(Message::Close(frame)).await;
    }
    let _ = tx.flush().await;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = rx.next().await {}
    })
    .await;
    let _ = tx.close().await;
}

/// Relay data messages from `src` to `dst` until something ends it.
async fn pump(
    src: &mut SplitStream<Ws>,
    dst: &mut SplitSink<Ws, Message>,
    last: &Activity,
    relayed: &mut Relayed,
) -> Ended {
    loop {
        let msg = match src.next().await {
            None => return Ended::Gone,
            Some(Ok(m)) => m,
            Some(Err(e)) => return classify(&e),
        };
        last.touch();
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                relayed.messages += 1;
                relayed.bytes += msg.len() as u64;
                if dst.send(msg).await.is_err() {
                    return Ended::WriteFailed;
                }
            }
            // Answered hop by hop (tungstenite replies to pings itself).
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => return Ended::Closed(frame),
        }
    }
}

fn classify(e: &WsError) -> Ended {
    match e {
        WsError::Capacity(_) => Ended::TooBig,
        WsError::Protocol(_) | WsError::Utf8(_) => Ended::Protocol,
        _ => Ended::Gone,
    }
}

/// When a frame last passed either way.
struct Activity {
    epoch: Instant,
    /// Nanoseconds after `epoch`.
    at: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.at.store(now, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.at.load(Ordering::Relaxed))
    }
}

/// Resolves once no frame has passed for `idle` since `last`.
async fn idle_for(last: &Activity, idle: Duration) {
    loop {
        let deadline = last.last() + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}
