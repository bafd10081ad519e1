//! `ws-load URL CONNECTIONS SECONDS [HEADER:VALUE]...`: open CONNECTIONS
//! WebSockets to URL (with the given handshake headers), then on each, for
//! SECONDS, send a 64-byte text message and wait for its echo, one after
//! the other. Prints one line of JSON: messages echoed, the rate, and the
//! round trip's p50 and p99 in microseconds. A connection that fails or
//! gets something else than its echo is an error (exit status 1).

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: ws-load URL CONNECTIONS SECONDS [HEADER:VALUE]...");
        std::process::exit(2);
    }
    let url = args[0].clone();
    let conns: usize = args[1].parse().expect("CONNECTIONS: a number");
    let secs: f64 = args[2].parse().expect("SECONDS: a number");
    let headers: Vec<(String, String)> = args[3..]
        .iter()
        .map(|h| {
            let (n, v) = h.split_once(':').expect("HEADER:VALUE");
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let mut sockets = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut req = url.as_str().into_client_request().expect("a ws:// URL");
        for (n, v) in &headers {
            req.headers_mut()
                .insert(http_name(n), v.parse().expect("a header value"));
        }
        let config = WebSocketConfig::default().read_buffer_size(4096);
        match tokio_tungstenite::connect_async_with_config(req, Some(config), true).await {
            Ok((ws, _)) => sockets.push(ws),
            Err(e) => {
                eprintln!("connection {i}: {e}");
                std::process::exit(1);
            }
        }
    }
    let payload = "x".repeat(64);
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks = sockets.into_iter().map(|mut ws| {
        let payload = payload.clone();
        async move {
            let mut times = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                ws.send(Message::text(payload.as_str()))
                    .await
                    .map_err(|e| e.to_string())?;
                match ws.next().await {
                    Some(Ok(Message::Text(t2))) if t2.as_str() == payload => {}
                    other => return Err(format!("expected the echo, got {other:?}")),
                }
                times.push(t.elapsed().as_micros() as u64);
            }
            let _ = ws.close(None).await;
            Ok::<_, String>(times)
        }
    });
    let mut all = Vec::new();
    for r in futures_util::future::join_all(tasks).await {
        match r {
            Ok(t) => all.extend(t),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            0
        } else {
            all[((all.len() - 1) as f64 * p).round() as usize]
        }
    };
    println!(
        "{{\"messages\": {}, \"rate\": {:.1}, \"p50_us\": {}, \"p99_us\": {}}}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

fn http_name(n: &str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    n.parse().expect("a header name")
}
