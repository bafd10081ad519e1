//! A small upstream for the demo and the benchmarks: it answers every call
//! with a JSON echo of what it received (method, path, query, headers, body
//! size), and `/pets/{id}` with a pet.

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
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
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
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
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
