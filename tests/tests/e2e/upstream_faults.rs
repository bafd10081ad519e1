//! Upstream faults against real misbehaving upstreams: raw TCP servers on
//! loopback that refuse, reset, stall, hang or speak garbage. Each fault
//! must cost at most that call, within the configured timeouts; the
//! circuit breaker must keep calls away from a dead target (counted in
//! connections it accepts), probe it once after the cool-down, and answer
//! 503 at once when every target is out; retries only for idempotent calls
//! with a replayable body, and only when no response arrived.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_tests::*;

/// What a [`Raw`] upstream does with each request.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Answer 200 `ok` (keep-alive), after `delay`.
    Ok { delay: Duration },
    /// Read the request, then never answer.
    Hang,
    /// Read the request, then reset the connection (RST) without answering.
    Reset,
    /// Send a head with `Content-Length: 100` and 10 bytes of body, then
    /// close (FIN) or reset (RST).
    CutLength { rst: bool },
    /// Send a chunked head and one chunk, then close or reset.
    CutChunked { rst: bool },
    /// Send a head with `Content-Length: 100` and 10 bytes, then nothing.
    StallBody,
    /// Send these bytes instead of a response, and keep the connection.
    Garbage(&'static [u8]),
}

/// A raw TCP upstream on loopback. Counts the connections it accepts and
/// records the request line of each request it reads. Dropping it stops
/// the listener and every connection.
struct Raw {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    mode: Arc<Mutex<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Raw {
    async fn start(mode: Mode) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let mode = Arc::new(Mutex::new(mode));
        let (a, r, m) = (accepts.clone(), requests.clone(), mode.clone());
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the task drops them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        a.fetch_add(1, Ordering::SeqCst);
                        conns.spawn(serve(stream, r.clone(), m.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Raw {
            addr,
            accepts,
            requests,
            mode,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Request lines read so far.
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Read one whole request (strict framing, `raw::parse_message`) and return
/// its request line; what follows it stays in `buf`. `None` at EOF, on a
/// malformed request or after 5 s of silence.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((request, used)) = tollgate_tests::raw::parse_message(buf, true).ok()? {
            buf.drain(..used);
            return Some(request.start);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Close with a reset: no FIN, the peer reads ECONNRESET.
fn reset(s: TcpStream) {
    s.set_zero_linger().unwrap();
    drop(s);
}

async fn serve(mut s: TcpStream, requests: Arc<Mutex<Vec<String>>>, mode: Arc<Mutex<Mode>>) {
    let mut buf = Vec::new();
    while let Some(line) = read_request(&mut s, &mut buf).await {
        requests.lock().unwrap().push(line.clone());
        let m = *mode.lock().unwrap();
        match m {
            Mode::Ok { delay } => {
                tokio::time::sleep(delay).await;
                let r: &[u8] = if line.starts_with("HEAD ") {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                };
                if s.write_all(r).await.is_err() {
                    return;
                }
            }
            Mode::Hang => {
                // Until the gateway goes away.
                let _ = s.read(&mut [0u8; 1]).await;
                return;
            }
            Mode::Reset => return reset(s),
            Mode::CutLength { rst } => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                    .await;
                return cut(s, rst).await;
            }
            Mode::CutChunked { rst } => {
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
                    )
                    .await;
                return cut(s, rst).await;
            }
            Mode::StallBody => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                    .await;
                let _ = s.read(&mut [0u8; 1]).await;
                return;
            }
            Mode::Garbage(bytes) => {
                let _ = s.write_all(bytes).await;
                let _ = s.read(&mut [0u8; 1]).await;
                return;
            }
        }
    }
}

/// End a response early, after the gateway has surely read what was sent.
async fn cut(s: TcpStream, rst: bool) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    if rst {
        reset(s)
    } else {
        drop(s)
    }
}

/// One API with a prefix route `/` to these targets and these extra lines
/// in `[api.upstream]`.
fn manifest(targets: &[&str], upstream: &str) -> String {
    let targets = targets
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"schema = 1

[[api]]
name = "faults"

[api.upstream]
targets = [{targets}]
{upstream}

[[api.route]]
prefix = "/"
"#
    )
}

/// A port nothing listens on.
fn refused_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

// ---------------------------------------------------------------------------
// Faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_is_502_without_waiting() {
    let gw = TestGateway::start(&manifest(
        &[&refused_url()],
        r#"connect-timeout = "2s"
response-timeout = "5s""#,
    ))
    .await;
    let started = Instant::now();
    let r = client().get(gw.url("/x")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 502);
    assert_eq!(error_code(r).await, "upstream_unavailable");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_that_never_completes_is_504_within_the_connect_timeout() {
    // A listener whose accept queue is full and never drained: Linux drops
    // further SYNs, so a connect neither succeeds nor is refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    // The queue is full when a plain connect no longer completes.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr))
            .await
            .is_err(),
        "could not fill the accept queue"
    );
    let gw = TestGateway::start(&manifest(
        &[&format!("http://{addr}")],
        r#"connect-timeout = "400ms"
response-timeout = "5s"
retries = 0"#,
    ))
    .await;
    let started = Instant::now();
    let r = client().get(gw.url("/x")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    assert_eq!(error_code(r).await, "upstream_timeout");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    drop(fillers);
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_before_the_response_head_is_502() {
    let up = Raw::start(Mode::Reset).await;
    let gw = TestGateway::start(&manifest(&[&up.url()], "retries = 0")).await;
    let r = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(error_code(r).await, "upstream_invalid_response");
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_off_mid_body_never_looks_complete() {
    let up = Raw::start(Mode::Reset).await;
    let gw = TestGateway::start(&manifest(&[&up.url()], "")).await;
    let h1 = client();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for mode in [
        Mode::CutLength { rst: false },
        Mode::CutLength { rst: true },
        Mode::CutChunked { rst: false },
        Mode::CutChunked { rst: true },
    ] {
        up.set(mode);
        for (proto, c) in [("http/1.1", &h1), ("h2", &h2)] {
            let r = c.get(gw.url("/cut")).send().await.unwrap();
            // The head was on its way before the body broke ...
            assert_eq!(r.status(), 200, "{mode:?} {proto}");
            // ... but the body must not end as if it were whole.
            let body = r.bytes().await;
            assert!(
                body.is_err(),
                "{mode:?} over {proto}: a cut-off body read as complete: {body:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_off_after_the_body_timeout() {
    let up = Raw::start(Mode::StallBody).await;
    let gw = TestGateway::start(&manifest(
        &[&up.url()],
        r#"response-timeout = "5s"
body-timeout = "500ms""#,
    ))
    .await;
    let started = Instant::now();
    let r = client().get(gw.url("/stall")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await;
    let took = started.elapsed();
    assert!(body.is_err(), "a stalled body read as complete: {body:?}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_within_the_response_timeout_is_200_and_beyond_is_504() {
    let up = Raw::start(Mode::Ok {
        delay: Duration::from_millis(300),
    })
    .await;
    let gw = TestGateway::start(&manifest(&[&up.url()], r#"response-timeout = "1s""#)).await;
    let c = client();
    let r = c.get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");

    up.set(Mode::Ok {
        delay: Duration::from_millis(2500),
    });
    let started = Instant::now();
    let r = c.get(gw.url("/slower")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    assert_eq!(error_code(r).await, "upstream_timeout");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(2000),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_is_504_within_the_response_timeout_and_not_retried() {
    let up = Raw::start(Mode::Hang).await;
    let gw = TestGateway::start(&manifest(&[&up.url()], r#"response-timeout = "800ms""#)).await;
    let started = Instant::now();
    let r = client().get(gw.url("/hang")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    assert_eq!(error_code(r).await, "upstream_timeout");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(1800),
        "{took:?}"
    );
    // The upstream got the request: a timeout is not a reason to send it twice.
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_http_is_502_and_not_retried() {
    let up = Raw::start(Mode::Garbage(b"")).await;
    let gw = TestGateway::start(&manifest(&[&up.url()], r#"response-timeout = "2s""#)).await;
    let c = client();
    let payloads: [&'static [u8]; 4] = [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xff\xfe\x00\x00\r\n\r\n",
        b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
    ];
    for (i, g) in payloads.into_iter().enumerate() {
        up.set(Mode::Garbage(g));
        let started = Instant::now();
        let r = c.get(gw.url("/g")).send().await.unwrap();
        assert_eq!(r.status(), 502, "payload {i}");
        assert_eq!(error_code(r).await, "upstream_invalid_response");
        assert!(started.elapsed() < Duration::from_secs(1));
        // Something answered: the GET is not sent again.
        assert_eq!(up.requests().len(), i + 1, "payload {i}");
    }
}

// ---------------------------------------------------------------------------
// The circuit breaker

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_keeps_calls_away_from_a_dead_target() {
    let dead = Raw::start(Mode::Reset).await;
    let good = Raw::start(Mode::Ok {
        delay: Duration::ZERO,
    })
    .await;
    let gw = TestGateway::start(&manifest(
        &[&dead.url(), &good.url()],
        r#"retries = 0
breaker = { failures = 3, cool-down = "1m" }"#,
    ))
    .await;
    let c = client();
    let mut failed = 0;
    for _ in 0..30 {
        let s = c.get(gw.url("/")).send().await.unwrap().status();
        if s != 200 {
            assert_eq!(s, 502);
            failed += 1;
        }
    }
    // Round-robin sends every other call to the dead target until its
    // breaker opens after three failures; then it gets no connection at all.
    assert_eq!(failed, 3);
    assert_eq!(dead.accepts(), 3);
    assert_eq!(good.requests().len(), 27);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_lets_one_probe_through_and_recovers() {
    let up = Raw::start(Mode::Reset).await;
    let gw = TestGateway::start(&manifest(
        &[&up.url()],
        r#"retries = 0
breaker = { failures = 2, cool-down = "600ms" }"#,
    ))
    .await;
    let c = client();
    for _ in 0..2 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 502);
    }
    assert_eq!(up.accepts(), 2);
    // Open: answered at once, the target sees nothing.
    let r = c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error_code(r).await, "upstream_circuit_open");
    assert_eq!(up.accepts(), 2);

    // After the cool-down one probe goes through; it fails: open again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 502);
    assert_eq!(up.accepts(), 3);
    assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 503);
    assert_eq!(up.accepts(), 3);

    // The target recovers (and is slow, so the probe is still in flight
    // while the other calls arrive): exactly one call reaches it.
    up.set(Mode::Ok {
        delay: Duration::from_millis(400),
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let probe = {
        let c = c.clone();
        let url = gw.url("/probe");
        tokio::spawn(async move { c.get(url).send().await.unwrap().status() })
    };
    // Let the probe be picked first.
    assert!(
        eventually(Duration::from_secs(2), || async { up.accepts() == 4 }).await,
        "the probe did not reach the target"
    );
    let others = futures_util::future::join_all(
        (0..4).map(|_| async { c.get(gw.url("/other")).send().await.unwrap().status() }),
    )
    .await;
    assert_eq!(probe.await.unwrap(), 200);
    assert!(others.iter().all(|s| *s == 503), "{others:?}");
    let lines = up.requests();
    assert_eq!(
        lines.iter().filter(|l| l.contains("/probe")).count(),
        1,
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("/other")), "{lines:?}");

    // Closed again: calls flow.
    up.set(Mode::Ok {
        delay: Duration::ZERO,
    });
    for _ in 0..3 {
        assert_eq!(c.get(gw.url("/after")).send().await.unwrap().status(), 200);
    }
    assert_eq!(
        up.requests()
            .iter()
            .filter(|l| l.contains("/after"))
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_target_is_out_the_answer_is_503_at_once() {
    let a = Raw::start(Mode::Hang).await;
    let b = Raw::start(Mode::Hang).await;
    let gw = TestGateway::start(&manifest(
        &[&a.url(), &b.url()],
        r#"response-timeout = "1s"
breaker = { failures = 2, cool-down = "30s" }"#,
    ))
    .await;
    let c = client();
    // Two timeouts per target, concurrently (round-robin spreads them).
    let started = Instant::now();
    let first = futures_util::future::join_all(
        (0..4).map(|_| async { c.get(gw.url("/")).send().await.unwrap().status() }),
    )
    .await;
    assert!(first.iter().all(|s| *s == 504), "{first:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(a.requests().len() + b.requests().len(), 4);

    // Now both are out: no waiting for another timeout.
    for _ in 0..5 {
        let started = Instant::now();
        let r = c.get(gw.url("/")).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(r.status(), 503);
        assert!(took < Duration::from_millis(250), "{took:?}");
        let retry_after: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((28..=30).contains(&retry_after), "{retry_after}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "upstream_circuit_open");
        assert_eq!(v["error"]["status"], 503);
    }
    assert_eq!(a.accepts() + b.accepts(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_body_that_breaks_off_or_stalls_does_not_count_against_the_target() {
    use tollgate::upstream::breaker::State;
    let up = Raw::start(Mode::Ok {
        delay: Duration::ZERO,
    })
    .await;
    let gw = TestGateway::start(&manifest(
        &[&up.url()],
        r#"response-timeout = "500ms"
breaker = { failures = 2, cool-down = "1m" }"#,
    ))
    .await;
    let partial = "POST /upload HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\n\r\n0123456789";
    // Three clients that promise 100 bytes, send 10 and hang up ...
    for _ in 0..3 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(partial.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    }
    // ... and three that stall past the response timeout (concurrently).
    let stalled = futures_util::future::join_all((0..3).map(|_| async {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(partial.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut head))
            .await
            .expect("no answer within 3 s")
            .unwrap();
        String::from_utf8_lossy(&head).into_owned()
    }))
    .await;
    // The client's timeout (408), not the upstream's (504).
    assert!(stalled.iter().all(|h| h == "HTTP/1.1 408"), "{stalled:?}");
    // Broken or slow clients are not the target's failures.
    let gen = gw.gateway.current();
    assert_eq!(
        gen.apis[0].upstream.breaker(0).state(),
        State::Closed { failures: 0 }
    );
    let r = client().get(gw.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

// ---------------------------------------------------------------------------
// Retries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_to_a_target_that_resets_is_not_retried() {
    let resetter = Raw::start(Mode::Reset).await;
    let good = Raw::start(Mode::Ok {
        delay: Duration::ZERO,
    })
    .await;
    let c = client();
    // With a body, and without one (which a GET could replay): POST and
    // PATCH are never sent twice, even with the default of one retry.
    for (method, path, body) in [
        ("POST", "/orders", "{\"buy\":1}"),
        ("POST", "/orders/1/cancel", ""),
        ("PATCH", "/orders/2", ""),
    ] {
        // A fresh gateway's round-robin starts with the first target.
        let gw = TestGateway::start(&manifest(&[&resetter.url(), &good.url()], "")).await;
        let r = c
            .request(method.parse().unwrap(), gw.url(path))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{method} {path}");
        assert_eq!(
            resetter.requests().last().unwrap(),
            &format!("{method} {path} HTTP/1.1")
        );
        assert!(good.requests().is_empty(), "{:?}", good.requests());
    }
    assert_eq!(resetter.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_is_retried_on_the_healthy_target() {
    let resetter = Raw::start(Mode::Reset).await;
    let good = Raw::start(Mode::Ok {
        delay: Duration::ZERO,
    })
    .await;
    let c = client();
    // A fresh gateway's round-robin starts with the first target.
    for (method, path) in [("GET", "/a"), ("DELETE", "/b"), ("HEAD", "/c")] {
        let gw = TestGateway::start(&manifest(&[&resetter.url(), &good.url()], "")).await;
        let r = c
            .request(method.parse().unwrap(), gw.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        let line = format!("{method} {path} HTTP/1.1");
        assert_eq!(resetter.requests().last(), Some(&line));
        assert_eq!(good.requests().last(), Some(&line));
    }
    assert_eq!(resetter.requests().len(), 3);
    assert_eq!(good.requests().len(), 3);

    // A PUT whose body streamed from the client cannot be sent again.
    let gw = TestGateway::start(&manifest(&[&resetter.url(), &good.url()], "")).await;
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"part1")),
        Ok(bytes::Bytes::from_static(b"part2")),
    ]));
    let r = c.put(gw.url("/e")).body(body).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(resetter.requests().last().unwrap(), "PUT /e HTTP/1.1");
    assert_eq!(good.requests().len(), 3);

    // A refused connection is retried too.
    let gw = TestGateway::start(&manifest(&[&refused_url(), &good.url()], "")).await;
    assert_eq!(c.get(gw.url("/f")).send().await.unwrap().status(), 200);
    assert_eq!(good.requests().last().unwrap(), "GET /f HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_and_go_to_other_targets() {
    let ups = [
        Raw::start(Mode::Reset).await,
        Raw::start(Mode::Reset).await,
        Raw::start(Mode::Reset).await,
        Raw::start(Mode::Reset).await,
    ];
    let urls: Vec<String> = ups.iter().map(Raw::url).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    for (retries, want) in [("", 2), ("retries = 2", 3)] {
        let gw = TestGateway::start(&manifest(&urls, retries)).await;
        let before: Vec<usize> = ups.iter().map(|u| u.requests().len()).collect();
        let r = client().get(gw.url("/x")).send().await.unwrap();
        assert_eq!(r.status(), 502);
        let got: Vec<usize> = ups
            .iter()
            .zip(&before)
            .map(|(u, b)| u.requests().len() - b)
            .collect();
        assert_eq!(got.iter().sum::<usize>(), want, "{retries:?}: {got:?}");
        // Each attempt went to a different target.
        assert!(got.iter().all(|n| *n <= 1), "{retries:?}: {got:?}");
    }
}
