//! A small upstream for the demo and the benchmarks: it answers every call
//! with a JSON echo of what it received (method, path, query, headers, body
//! size), `/pets/{id}` with a pet, a WebSocket handshake to `/ws...` with a
//! WebSocket that echoes every message, `/events?n=N&every=MS` with N
//! Server-Sent Events, one every MS milliseconds (default 3 and 200), and
//! any gRPC call (content type `application/grpc`, over HTTP/2) with its
//! own request messages back and `grpc-status: 0` in the trailers: a unary
//! echo for any service and method.

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Serve the demo upstream on `addr` until the process ends. Returns the
/// bound address through `on_bound`.
pub async fn serve(addr: SocketAddr, on_bound: impl FnOnce(SocketAddr)) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("demo upstream: cannot bind {addr}"))?;
    on_bound(listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

type DemoBody = BoxBody<Bytes, std::convert::Infallible>;

async fn answer(
    mut req: Request<Incoming>,
) -> Result<Response<DemoBody>, std::convert::Infallible> {
    if req.uri().path().starts_with("/ws") {
        if let Some(resp) = websocket(&mut req) {
            return Ok(resp);
        }
    }
    if req.uri().path() == "/events" {
        return Ok(events(req.uri().query().unwrap_or("")));
    }
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return Ok(grpc_echo(req).await);
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path();
    let (status, json) = if let Some(id) = path.strip_prefix("/pets/").filter(|s| !s.contains('/'))
    {
        match id.parse::<u32>() {
            Ok(n) => (
                StatusCode::OK,
                serde_json::json!({ "id": n, "name": format!("pet-{n}"), "kind": if n % 2 == 0 { "cat" } else { "dog" } }),
            ),
            Err(_) => (
                StatusCode::NOT_FOUND,
                serde_json::json!({ "error": "no such pet" }),
            ),
        }
    } else {
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        (
            StatusCode::OK,
            serde_json::json!({
                "method": parts.method.as_str(),
                "path": path,
                "query": parts.uri.query(),
                "headers": headers,
                "body_bytes": body.len(),
            }),
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// A WebSocket handshake: the `101`, and an echo of every message on the
/// switched connection. `None` when the request is not a handshake.
fn websocket(req: &mut Request<Incoming>) -> Option<Response<DemoBody>> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let key = req.headers().get("sec-websocket-key")?;
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    let accept = derive_accept_key(key.as_bytes());
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(io) = on.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(io),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(m)) = ws.next().await {
            if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).expect("base64"),
    );
    Some(resp)
}

/// `n` Server-Sent Events, one every `every` ms (the first at once).
fn events(query: &str) -> Response<DemoBody> {
    let param = |name: &str, default: u64| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let (n, every) = (param("n", 3).min(10_000), param("every", 200).min(60_000));
    let stream = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(every)).await;
        }
        let event = format!("id: {i}\ndata: {{\"event\":{i}}}\n\n");
        Some((Ok(Frame::data(Bytes::from(event))), i + 1))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A gRPC call answered with the messages it sent (framed as they came)
/// and `grpc-status: 0`.
async fn grpc_echo(req: Request<Incoming>) -> Response<DemoBody> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = futures_util::stream::iter([Ok(Frame::data(body)), Ok(Frame::trailers(trailers))]);
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}
