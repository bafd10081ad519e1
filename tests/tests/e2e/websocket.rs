//! WebSocket APIs (`[api.websocket]`) through the gateway: a real
//! WebSocket upstream (tokio-tungstenite's server, in this process) and
//! real clients; the handshake through key-auth and rate-limit chains,
//! echo both ways, the closes of either side, the idle and lifetime bounds,
//! messages over the limit, routes and APIs that do not allow upgrades, and
//! a thousand connections held at once by a gateway process.

use futures_util::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::process::GatewayProcess;
use tollgate_tests::TestGateway;

const KEY: &str = "ws-key-8f2c41d9";

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    /// The handshake requests' headers, lower-case names.
    handshakes: Vec<Vec<(String, String)>>,
    /// The close frames it received (`None`: a close without a code).
    closes: Vec<Option<(u16, String)>>,
}

/// A WebSocket echo server: it sends back every text and binary message;
/// on the text `close-me` it closes with 4000 "bye"; on `big` it sends a
/// 2 MiB binary message.
struct WsUpstream {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsUpstream {
    async fn start() -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let s2 = s.clone();
                    // tungstenite's callback type: its error is a response.
                    #[allow(clippy::result_large_err)]
                    let record = move |req: &Request, resp: Response| {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(n, v)| {
                                (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect();
                        s2.lock().unwrap().handshakes.push(headers);
                        Ok(resp)
                    };
                    let config = WebSocketConfig::default()
                        .read_buffer_size(4096)
                        .max_message_size(Some(8 << 20));
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(
                        stream,
                        record,
                        Some(config),
                    )
                    .await
                    else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        match m {
                            Message::Text(t) if t.as_str() == "close-me" => {
                                let frame = CloseFrame {
                                    code: CloseCode::Library(4000),
                                    reason: "bye".into(),
                                };
                                let _ = ws.close(Some(frame)).await;
                            }
                            Message::Text(t) if t.as_str() == "big" => {
                                let _ = ws.send(Message::binary(vec![7u8; 2 << 20])).await;
                            }
                            Message::Text(_) | Message::Binary(_) => {
                                if ws.send(m).await.is_err() {
                                    return;
                                }
                            }
                            Message::Close(f) => {
                                s.lock()
                                    .unwrap()
                                    .closes
                                    .push(f.map(|f| (u16::from(f.code), f.reason.to_string())));
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        WsUpstream { port, seen, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn closes(&self) -> Vec<Option<(u16, String)>> {
        self.seen.lock().unwrap().closes.clone()
    }
}

/// An API `api` (`/chat`, a WebSocket route, and `/plain`, a route
/// without upgrades) behind key-auth, with `[api.websocket]` set by
/// `websocket` (TOML lines) and more steps after key-auth. (Each test
/// names its API: the metrics of the in-process gateways are shared.)
fn manifest(api: &str, upstream: &str, websocket: &str, steps: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "{api}"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
name = "chat"
prefix = "/chat"

[[api.route]]
name = "plain"
prefix = "/plain"

[api.websocket]
routes = ["chat"]
{websocket}

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]

{steps}

[[consumer]]
id = "dora"
keys = [{{ id = "k-dora", sha256 = "{digest}" }}]
"#,
        digest = key_digest_hex(KEY),
    )
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open a WebSocket through the gateway at `url` (`ws://...`), with the
/// API key when `key`.
async fn connect(url: &str, key: bool) -> Result<Client, WsError> {
    let mut req = url.into_client_request().unwrap();
    if key {
        req.headers_mut().insert("x-api-key", KEY.parse().unwrap());
    }
    req.headers_mut().insert(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let config = WebSocketConfig::default().read_buffer_size(4096);
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(req, Some(config), false),
    )
    .await
    .expect("the handshake answers")
    .map(|(ws, _)| ws)
}

fn ws_url(gw: &TestGateway, path: &str) -> String {
    gw.url(path).replacen("http://", "ws://", 1)
}

/// The next message that is not a ping or pong, within 5 s.
async fn next(ws: &mut Client) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            _ => return None,
        }
    }
}

fn close_of(m: Option<Message>) -> (u16, String) {
    match m {
        Some(Message::Close(Some(f))) => (u16::from(f.code), f.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

fn status_of(e: WsError) -> u16 {
    match e {
        WsError::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP answer to the handshake, got {other}"),
    }
}

/// The value of the series `name` (with its labels as printed), 0 if absent.
fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn scrape(gw: &TestGateway) -> String {
    let admin = gw.admin_addr.expect("started with .admin()");
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Text and binary messages echo through key-auth; the client's close
/// reaches the upstream with its code and reason and is answered; the
/// handshake went upstream with the gateway's fields and without the
/// client's extensions; the connection is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_echo_through_key_auth_and_the_clients_close_reaches_the_upstream() {
    let up = WsUpstream::start().await;
    let gw = TestGateway::builder(&manifest("echo", &up.url(), "", ""))
        .admin()
        .gateway_toml("[metrics]\npublic = true")
        .start()
        .await;
    let mut ws = connect(&ws_url(&gw, "/chat/room"), true).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("hello")));
    let bytes = vec![0u8, 1, 2, 255];
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::binary(bytes)));
    // A large message within the default limit (1 MiB).
    let large = "x".repeat(512 << 10);
    ws.send(Message::text(large.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text(large)));
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    assert_eq!(close_of(next(&mut ws).await).0, 1000);
    assert!(
        tollgate_tests::eventually(Duration::from_secs(5), || async { !up.closes().is_empty() })
            .await
    );
    assert_eq!(up.closes(), vec![Some((1000, "done".to_string()))]);
    let handshake = up.seen.lock().unwrap().handshakes[0].clone();
    let get = |n: &str| {
        handshake
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("upgrade").as_deref(), Some("websocket"));
    assert!(get("x-request-id").is_some(), "{handshake:?}");
    assert_eq!(get("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(get("sec-websocket-extensions"), None, "{handshake:?}");
    let m = tollgate_tests::eventually(Duration::from_secs(5), || async {
        metric(
            &scrape(&gw).await,
            "tollgate_websocket_closed_total{api=\"echo\",by=\"client\"}",
        ) == 1.0
    })
    .await;
    assert!(m, "{}", scrape(&gw).await);
    let s = scrape(&gw).await;
    assert_eq!(
        metric(
            &s,
            "tollgate_websocket_messages_total{api=\"echo\",direction=\"to_upstream\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &s,
            "tollgate_websocket_bytes_total{api=\"echo\",direction=\"to_client\"}"
        ),
        (5 + 4 + (512 << 10)) as f64
    );
    assert_eq!(
        metric(&s, "tollgate_websocket_connections{api=\"echo\"}"),
        0.0
    );
}

/// The request chain runs on the handshake: no key is 401, a rate limit
/// on handshakes is 429, and neither reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_go_through_the_chain() {
    let up = WsUpstream::start().await;
    let limit = r#"[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = { limits = [{ per = "minute", requests = 2, by = "consumer" }] }"#;
    let gw = TestGateway::start(&manifest("chained", &up.url(), "", limit)).await;
    let url = ws_url(&gw, "/chat");
    assert_eq!(status_of(connect(&url, false).await.unwrap_err()), 401);
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(connect(&url, true).await.unwrap());
    }
    assert_eq!(status_of(connect(&url, true).await.unwrap_err()), 429);
    assert_eq!(up.seen.lock().unwrap().handshakes.len(), 2);
    // The two let through work.
    for ws in &mut open {
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(next(ws).await, Some(Message::text("still here")));
    }
}

/// Where upgrades are not allowed (another route of the API, or an API
/// without `[api.websocket]`), the handshake goes upstream as a plain
/// request, as before: no switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_apis_without_websocket_do_not_switch() {
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(&manifest("plainws", &up.url(), "", "")).await;
    let e = connect(&ws_url(&gw, "/plain"), true).await.unwrap_err();
    // The upstream, asked without `Upgrade`, does not switch.
    assert_ne!(status_of(e), 101);
    let seen = up.seen.lock().unwrap().handshakes.len();
    assert_eq!(seen, 0, "a plain request is no handshake");
    let without = manifest("plainws", &up.url(), "", "")
        .replace("[api.websocket]\nroutes = [\"chat\"]\n", "");
    let gw = TestGateway::start(&without).await;
    let e = connect(&ws_url(&gw, "/chat"), true).await.unwrap_err();
    assert_ne!(status_of(e), 101);
}

/// The upstream's close reaches the client with its code and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_close_reaches_the_client() {
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(&manifest("upclose", &up.url(), "", "")).await;
    let mut ws = connect(&ws_url(&gw, "/chat"), true).await.unwrap();
    ws.send(Message::text("close-me")).await.unwrap();
    assert_eq!(close_of(next(&mut ws).await), (4000, "bye".to_string()));
    assert_eq!(next(&mut ws).await, None);
}

/// No frame for `idle-timeout`: both sides get 1001 "idle timeout";
/// traffic keeps a connection open past it; `max-lifetime` ends even a
/// busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_lifetime_bounds_close_both_sides() {
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(&manifest(
        "bounds",
        &up.url(),
        "idle-timeout = \"400ms\"\nmax-lifetime = \"2s\"",
        "",
    ))
    .await;
    let mut idle = connect(&ws_url(&gw, "/chat"), true).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        close_of(next(&mut idle).await),
        (1001, "idle timeout".to_string())
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(
        tollgate_tests::eventually(Duration::from_secs(5), || async {
            up.closes()
                .contains(&Some((1001, "idle timeout".to_string())))
        })
        .await
    );
    // A busy connection outlives the idle bound, not the lifetime.
    let mut busy = connect(&ws_url(&gw, "/chat"), true).await.unwrap();
    let started = Instant::now();
    let ended = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if busy.send(Message::text("tick")).await.is_err() {
            break None;
        }
        match next(&mut busy).await {
            Some(Message::Text(_)) => continue,
            other => break other,
        }
    };
    let lived = started.elapsed();
    assert_eq!(
        close_of(ended),
        (1001, "maximum connection lifetime".to_string())
    );
    assert!(
        lived >= Duration::from_millis(1900) && lived < Duration::from_secs(5),
        "{lived:?}"
    );
}

/// A message over `max-message` closes its sender's side with 1009 and
/// the other side with 1001, whichever side sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_closes_with_1009() {
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(&manifest("toobig", &up.url(), "max-message = \"1KiB\"", "")).await;
    let mut ws = connect(&ws_url(&gw, "/chat"), true).await.unwrap();
    ws.send(Message::text("a".repeat(1024))).await.unwrap();
    assert!(matches!(next(&mut ws).await, Some(Message::Text(_))));
    ws.send(Message::text("a".repeat(2048))).await.unwrap();
    assert_eq!(close_of(next(&mut ws).await).0, 1009);
    assert!(
        tollgate_tests::eventually(Duration::from_secs(5), || async {
            up.closes().iter().any(|c| matches!(c, Some((1001, _))))
        })
        .await
    );
    // The upstream sending too much: it gets 1009, the client 1001.
    let mut ws = connect(&ws_url(&gw, "/chat"), true).await.unwrap();
    ws.send(Message::text("big")).await.unwrap();
    assert_eq!(close_of(next(&mut ws).await).0, 1001);
    assert!(
        tollgate_tests::eventually(Duration::from_secs(5), || async {
            up.closes().iter().any(|c| matches!(c, Some((1009, _))))
        })
        .await
    );
}

/// Hostile clients: a handshake that is not one (no key, bad version)
/// gets the upstream's refusal, garbage after the switch (an unmasked
/// frame) closes with 1002, and a client that vanishes without a close
/// has the upstream told 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_clients_end_cleanly_for_the_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = WsUpstream::start().await;
    let gw = TestGateway::start(&manifest("broken", &up.url(), "", "")).await;
    let before = up.closes().len();
    let handshake = format!(
        "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         x-api-key: {KEY}\r\n\r\n"
    );
    // An unmasked frame from a client is a protocol error.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(handshake.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    // A close frame (0x88) with code 1002.
    assert!(n >= 4 && buf[0] == 0x88, "{:?}", &buf[..n]);
    assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 1002);
    // A client that vanishes: the upstream is told 1001 (as for the one
    // that broke the protocol).
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(handshake.as_bytes()).await.unwrap();
    let _ = s.read(&mut buf).await.unwrap();
    drop(s);
    assert!(
        tollgate_tests::eventually(Duration::from_secs(5), || async {
            up.closes()[before..]
                .iter()
                .filter(|c| matches!(c, Some((1001, _))))
                .count()
                >= 2
        })
        .await,
        "{:?}",
        up.closes()
    );
    // A bad version: the upstream's refusal passes through.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        handshake
            .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 99")
            .as_bytes(),
    )
    .await
    .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(!head.starts_with("HTTP/1.1 101"), "{head}");
}

/// A thousand WebSocket connections held open at once through a gateway
/// process: every one echoes, and the gateway's memory per connection
/// stays bounded (reported; the bound is generous, the figure is the
/// point).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_are_held_with_bounded_memory() {
    const N: usize = 1000;
    let up = WsUpstream::start().await;
    let gw = GatewayProcess::start(&manifest("thousand", &up.url(), "", ""), "").await;
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    let pid = gw.pid().unwrap();
    let url = gw.url("/chat").replacen("http://", "ws://", 1);
    // Warm: one connection through, so the first call's one-time costs
    // are not counted per connection.
    let mut warm = connect(&url, true).await.unwrap();
    warm.send(Message::text("warm")).await.unwrap();
    assert!(next(&mut warm).await.is_some());
    let before = rss(pid);
    let mut open = Vec::with_capacity(N);
    for chunk in 0..N / 50 {
        let batch = futures_util::future::join_all((0..50).map(|_| connect(&url, true))).await;
        for (i, ws) in batch.into_iter().enumerate() {
            let ws = ws.unwrap_or_else(|e| panic!("connection {}: {e}", chunk * 50 + i));
            open.push(ws);
        }
    }
    for (i, ws) in open.iter_mut().enumerate() {
        ws.send(Message::text(format!("{i}"))).await.unwrap();
    }
    for (i, ws) in open.iter_mut().enumerate() {
        assert_eq!(next(ws).await, Some(Message::text(format!("{i}"))));
    }
    let after = rss(pid);
    let per = after.saturating_sub(before) / N as u64;
    eprintln!(
        "websocket: {N} connections held; gateway RSS {} -> {} KiB, {} KiB per connection",
        before / 1024,
        after / 1024,
        per / 1024
    );
    assert!(per < 256 << 10, "{per} bytes per connection");
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "tollgate_websocket_connections{api=\"thousand\"}"),
        (N + 1) as f64
    );
    drop(open);
    assert!(
        tollgate_tests::eventually(Duration::from_secs(20), || async {
            metric(
                &gw.metrics().await,
                "tollgate_websocket_connections{api=\"thousand\"}",
            ) == 1.0
        })
        .await,
        "{}",
        gw.metrics().await
    );
}

/// With an access log in the chain, the handshake is logged like any call
/// (status 101) and, when the connection ends, a line with its duration,
/// the messages and bytes each way and what ended it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_gets_the_handshake_and_the_connections_summary() {
    let up = WsUpstream::start().await;
    let log_step = r#"[[api.chain]]
plugin = "access-log"
grants = ["timing", "sink"]"#;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = TestGateway::builder(&manifest("logged", &up.url(), "", log_step))
        .access_log(&log)
        .start()
        .await;
    let mut ws = connect(&ws_url(&gw, "/chat"), true).await.unwrap();
    for m in ["one", "three"] {
        ws.send(Message::text(m)).await.unwrap();
        assert_eq!(next(&mut ws).await, Some(Message::text(m)));
    }
    ws.close(None).await.unwrap();
    assert!(matches!(next(&mut ws).await, Some(Message::Close(_))));
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert!(
        tollgate_tests::eventually(Duration::from_secs(5), || async { lines().len() >= 2 }).await,
        "{:?}",
        lines()
    );
    let lines = lines();
    assert_eq!(lines[0]["status"], 101, "{lines:?}");
    let summary = &lines[1];
    assert_eq!(summary["type"], "websocket");
    assert_eq!(summary["api"], "logged");
    assert_eq!(summary["ended_by"], "client");
    assert_eq!(summary["to_upstream"]["messages"], 2);
    assert_eq!(summary["to_upstream"]["bytes"], 8);
    assert_eq!(summary["to_client"]["bytes"], 8);
    assert!(summary["duration_ms"].as_u64().is_some());
    assert_eq!(summary["request_id"], lines[0]["request_id"]);
}

/// The demo upstream (`tollgate demo-upstream`, used by the demo and the
/// benchmark) echoes WebSocket messages on `/ws`, through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_upstream_echoes_on_ws() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(tollgate::demo::serve(
        "127.0.0.1:0".parse().unwrap(),
        move |a| {
            let _ = tx.send(a);
        },
    ));
    let up = format!("http://{}", rx.await.unwrap());
    let m = manifest("demo", &up, "", "").replace("prefix = \"/chat\"", "prefix = \"/ws\"");
    let gw = TestGateway::start(&m).await;
    let mut ws = connect(&ws_url(&gw, "/ws"), true).await.unwrap();
    ws.send(Message::text("ping?")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("ping?")));
    ws.send(Message::binary(vec![1u8; 70_000])).await.unwrap();
    assert_eq!(
        next(&mut ws).await,
        Some(Message::binary(vec![1u8; 70_000]))
    );
    ws.close(None).await.unwrap();
}

/// A `wss://` upstream: the API's `https://` target is not offered h2 by
/// ALPN (it would pick it: it offers h2 too), so the connection is
/// HTTP/1.1, and the handshake and the messages pass over TLS, verified
/// against the test CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_upstream_is_reached_over_http1() {
    use tollgate_tests::tls_upstream::{acceptor, serve_tls, TestCa};
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("tollgate test CA");
    let ca_file = ca.write(certs.path(), "ca.pem");
    let tls = acceptor(&ca.server(&["upstream.test"]), &["h2", "http/1.1"]);
    let (port, alpn, task) = serve_tls(tls, |stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(m)) = ws.next().await {
            if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                return;
            }
        }
    })
    .await;
    let m = manifest("wss", &format!("https://127.0.0.1:{port}"), "", "").replace(
        "upstream = { targets = [\"https://",
        &format!(
            "upstream = {{ ca-file = {:?}, tls-server-name = \"upstream.test\", targets = [\"https://",
            ca_file.display().to_string()
        ),
    );
    let gw = TestGateway::start(&m).await;
    let mut ws = connect(&ws_url(&gw, "/chat"), true).await.unwrap();
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("over tls")));
    ws.close(None).await.unwrap();
    // No protocol negotiated: HTTP/1.1.
    assert_eq!(alpn.lock().unwrap().as_slice(), [""]);
    task.abort();
}
