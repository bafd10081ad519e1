//! Slow and greedy clients: slowloris heads, slow bodies, readers that never
//! read, and more connections than the gateway allows. Each test measures a
//! well-behaved client's latency first (its own baseline, in the same run)
//! and again while the attack runs, and asserts it stays bounded.

use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tollgate_tests::raw::{self, p99, probe_bound as bound, with_probe, RawUpstream};
use tollgate_tests::*;

/// `/` streams to the upstream; `/buffered/` reads the body for a step;
/// `/probe` (the well-behaved client's) is an API of its own, so that what
/// an attack does to another API's upstream state is checked separately.
fn manifest(up: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "probe"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
prefix = "/probe"

[[api]]
name = "open"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
prefix = "/"

[[api]]
name = "buffered"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
prefix = "/buffered"
[[api.chain]]
plugin = "fixture-body"
"#
    )
}

const LIMITS: &str =
    "request-header-timeout = \"1s\"\nrequest-body-timeout = \"1s\"\nsend-timeout = \"1s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_off_by_the_header_timeout() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .limits(LIMITS)
        .start()
        .await;
    let addr = gw.addr;
    let closed = with_probe(&gw, "slowloris", async move {
        // 40 clients trickle a head one byte every 100ms: it would take
        // them ~6s to finish, the header timeout is 1s.
        let head =
            b"GET /slow HTTP/1.1\r\nhost: gw\r\nx-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..40 {
            tasks.spawn(async move {
                let started = Instant::now();
                let mut s = TcpStream::connect(addr).await.unwrap();
                for b in head.iter() {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if started.elapsed() > Duration::from_secs(6) {
                        break;
                    }
                }
                // Closed by then; wait for the EOF (bounded).
                raw::closed_within(&mut s, Duration::from_secs(1)).await;
                let ex = raw::read_until_close(&mut s, Duration::from_millis(10)).await;
                (started.elapsed(), ex.responses.len())
            });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.unwrap());
        }
        out
    })
    .await;
    for (took, _) in &closed {
        // Closed at the header timeout, not after the whole trickle.
        assert!(*took < Duration::from_millis(3500), "{closed:?}");
    }
    assert!(
        !up.targets().iter().any(|t| t == "/slow"),
        "{:?}",
        up.targets()
    );
}

/// hyper-util's protocol detection has no timeout: without
/// `client_io::ClientIo` around each accepted stream these connections
/// would stay open for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_preface_connections_are_closed() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .limits(LIMITS)
        .start()
        .await;
    let addr = gw.addr;
    with_probe(&gw, "silent connections", async move {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            tasks.spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                // Nothing at all, or the start of the HTTP/2 preface (which
                // keeps the gateway guessing the protocol).
                if i % 2 == 1 {
                    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
                }
                raw::closed_within(&mut s, Duration::from_secs(4)).await
            });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.unwrap());
        }
        assert!(
            out.iter().all(|c| c.is_some()),
            "connections still open after 4s: {out:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_within_their_timeouts() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .limits(LIMITS)
        .start()
        .await;
    let addr = gw.addr;
    let results = with_probe(&gw, "slow bodies", async move {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            // Half to a step that reads the body (request-body-timeout, 1s),
            // half streamed to the upstream (its response-timeout, 2s).
            let path = if i % 2 == 0 { "/buffered/x" } else { "/x" };
            tasks.spawn(async move {
                let started = Instant::now();
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(
                    format!("POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
                // One byte every 200ms: 20s for the whole body.
                let reader = async {
                    let mut s2 = s;
                    let mut status = None;
                    let deadline = Instant::now() + Duration::from_secs(6);
                    while Instant::now() < deadline {
                        if s2.write_all(b"a").await.is_err() {
                            break;
                        }
                        if let Some(r) =
                            raw::read_response(&mut s2, Duration::from_millis(200)).await
                        {
                            status = Some(r.status());
                            break;
                        }
                    }
                    let closed = raw::closed_within(&mut s2, Duration::from_secs(1)).await;
                    (status, closed.is_some())
                };
                let (status, closed) = reader.await;
                (path, status, closed, started.elapsed())
            });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.unwrap());
        }
        out
    })
    .await;
    for (path, status, closed, took) in &results {
        let ctx = format!("{results:?}");
        match *path {
            "/buffered/x" => {
                assert_eq!(*status, Some(408), "{ctx}");
                assert!(*took < Duration::from_millis(2500), "{ctx}");
            }
            _ => {
                // Still sending when the upstream's response timeout fires:
                // the client's timeout, not the upstream's.
                assert_eq!(*status, Some(408), "{ctx}");
                assert!(*took < Duration::from_millis(3500), "{ctx}");
            }
        }
        assert!(closed, "{ctx}");
    }
    // No slow body ever reached the upstream as a whole request.
    assert!(
        up.requests().iter().all(|r| r.target() == "/probe"),
        "{:?}",
        up.targets()
    );
    // Slow clients are not the upstream's failures: the APIs they called
    // still serve everyone else.
    for path in ["/x", "/buffered/x"] {
        let ex = raw::exchange(
            gw.addr,
            format!("GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(ex.statuses(), vec![200], "{path}: {ex:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_the_client_stops_sending_is_408_not_504() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .limits(LIMITS)
        .start()
        .await;
    // Six clients at once (more than the breaker's five failures in a
    // row): each sends its head and 10 of 100 declared bytes, then stalls.
    // The upstream waits for the rest until the API's response timeout
    // (2s).
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let addr = gw.addr;
        tasks.spawn(async move {
            let started = Instant::now();
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(
                b"POST /stalled HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\n\r\n0123456789",
            )
            .await
            .unwrap();
            let r = raw::read_response(&mut s, Duration::from_secs(5)).await;
            let closed = raw::closed_within(&mut s, Duration::from_secs(1)).await;
            (r, closed.is_some(), started.elapsed())
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (resp, closed, took) = r.unwrap();
        let ctx = format!("{resp:?} closed {closed} after {took:?}");
        let resp = resp.expect("a response");
        assert_eq!(resp.status(), 408, "{ctx}");
        assert_contains(&String::from_utf8_lossy(&resp.body), "request_timeout");
        assert!(took < Duration::from_millis(4000), "{ctx}");
        assert!(closed, "{ctx}");
    }
    assert!(
        !up.targets().iter().any(|t| t == "/stalled"),
        "{:?}",
        up.targets()
    );
    // Not the upstream's failures: its breaker stays closed.
    let ex = raw::exchange(
        gw.addr,
        b"GET /x HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(ex.statuses(), vec![200], "{ex:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_bounded() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .limits(LIMITS)
        .start()
        .await;
    let addr = gw.addr;
    let total: u64 = 256 << 20;
    let mut stalled = Vec::new();
    with_probe(&gw, "slow readers", async {
        for _ in 0..4 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET /big/{total} HTTP/1.1\r\nhost: gw\r\n\r\n").as_bytes())
                .await
                .unwrap();
            stalled.push(s);
        }
        // Let the pipes fill.
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    // What the upstream could push is bounded by socket and hyper buffers,
    // not by the response size: the gateway does not buffer for a client
    // that does not read.
    let pushed = up.written.load(std::sync::atomic::Ordering::SeqCst);
    let per_conn = pushed / 4;
    eprintln!("slow readers: the upstream pushed {pushed} bytes for 4 stalled clients");
    assert!(
        per_conn < 32 << 20,
        "{per_conn} bytes buffered per stalled client"
    );
    // And it stays there.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = up.written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(later - pushed < 8 << 20, "{pushed} -> {later}");
    drop(stalled);
}

/// `client_io::ClientIo` around each accepted stream ends a connection
/// whose writes make no progress for `send-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_disconnected_by_the_send_timeout() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .limits(LIMITS)
        .start()
        .await;
    let total: u64 = 256 << 20;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(format!("GET /big/{total} HTTP/1.1\r\nhost: gw\r\n\r\n").as_bytes())
            .await
            .unwrap();
        stalled.push(s);
    }
    // The pipes fill within a moment; the send timeout is 1s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The stalled connections were closed by the send timeout: what a
    // client finds when it finally reads is what was buffered, then EOF.
    for mut s in stalled {
        let mut got = 0u64;
        let mut chunk = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut closed = false;
        while Instant::now() < deadline {
            use tokio::io::AsyncReadExt;
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => got += n as u64,
                Err(_) => break,
            }
        }
        assert!(
            closed,
            "a stalled client's connection is still open ({got} bytes read)"
        );
        assert!(got < total / 4, "{got} of {total} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_wait_and_existing_ones_are_served() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .limits("request-header-timeout = \"5s\"\nmax-connections = 4\n")
        .start()
        .await;
    // Three clients hold a keep-alive connection each; with the probe's
    // that is the limit. The probe is a raw keep-alive connection too: a
    // pooling client may open a second connection when its first has not
    // gone back to the pool yet, and that one would wait for a slot.
    let mut probe = TcpStream::connect(gw.addr).await.unwrap();
    async fn call(s: &mut TcpStream, path: &str) -> Duration {
        let t = Instant::now();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: gw\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let r = raw::read_response(s, Duration::from_secs(4)).await;
        assert_eq!(r.map(|r| r.status()), Some(200), "{path}");
        t.elapsed()
    }
    let mut baseline = Vec::new();
    for _ in 0..33 {
        baseline.push(call(&mut probe, "/probe").await);
    }
    let baseline = p99(baseline.split_off(3));
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        call(&mut s, "/held").await;
        held.push(s);
    }
    // A fifth client waits (in the accept queue): no answer while the four
    // are busy...
    let mut extra = TcpStream::connect(gw.addr).await.unwrap();
    extra
        .write_all(b"GET /extra HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    // ... while the clients that are in keep being served quickly. (Idle,
    // the held connections would be closed by the header timeout, 5s:
    // keep them busy.)
    let started = Instant::now();
    let mut during = Vec::new();
    while started.elapsed() < Duration::from_millis(600) {
        during.push(call(&mut probe, "/probe").await);
        for s in &mut held {
            call(s, "/held").await;
        }
    }
    assert!(raw::read_response(&mut extra, Duration::from_millis(100))
        .await
        .is_none());
    assert!(!up.targets().contains(&"/extra".to_string()));
    let during = p99(during);
    assert!(during <= bound(baseline), "{baseline:?} -> {during:?}");
    // A slot frees up: the waiting client is served.
    drop(held.pop());
    let r = raw::read_response(&mut extra, Duration::from_secs(3)).await;
    assert_eq!(r.map(|r| r.status()), Some(200));
    // Idle clients holding every slot are closed by the header timeout, so
    // they cannot keep others out for long.
    let t = Instant::now();
    let mut late = TcpStream::connect(gw.addr).await.unwrap();
    late.write_all(b"GET /late HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    let r = raw::read_response(&mut late, Duration::from_secs(10)).await;
    assert_eq!(r.map(|r| r.status()), Some(200));
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}
