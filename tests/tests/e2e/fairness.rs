//! Fairness between connections on one worker: a client that keeps
//! requests coming on its connection (pipelined, or sent again the moment
//! each answer arrives) and gets answers without any I/O wait (no route,
//! a refused key, a quarantined step) does not hold the worker until its
//! connection runs dry. hyper serves up to 16 pipelined requests of a
//! connection per turn; the gateway also yields before each request, so
//! another connection's request waits for about one of the flood's, not
//! sixteen (with eight flooding clients, up to 128 of theirs: issue 15,
//! section 5, where the abuse measurement shows the effect). This test
//! guards the part that a test thread can observe without racing the
//! worker: the other connection is not left until the flood's backlog is
//! done (measured here: 2 of the flood's requests before it, steady under
//! CPU load; the whole backlog of 600 without the yield). The other answer is read on the worker's own
//! thread, so what the flood got by then is counted before the worker can
//! serve more of it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;
use tollgate_tests::*;

/// How many requests the flooding connection pipelines.
const FLOOD: usize = 600;

/// The `HTTP/1.1 404` answers in `bytes`.
fn answers(bytes: &[u8]) -> usize {
    String::from_utf8_lossy(bytes)
        .matches("HTTP/1.1 404")
        .count()
}

/// One HTTP/1.1 response with a `content-length` body, read from `s` on
/// the runtime.
async fn read_response_async(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    buf.extend_from_slice(&body);
    buf
}

#[test]
fn a_pipelining_client_does_not_starve_another_connection() {
    // One worker: the gateway serves on this current-thread runtime, driven
    // by a thread of its own while the clients use plain sockets here.
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let up = rt.block_on(Upstream::start());
    let manifest = format!(
        "schema = 1\n[[api]]\nname = \"a\"\nupstream = {{ targets = [\"{}\"] }}\n[[api.route]]\nprefix = \"/api\"\n",
        up.url()
    );
    let gw = rt.block_on(TestGateway::start(&manifest));
    // The worker runs while a thread drives it.
    let drive = |rt: &Arc<tokio::runtime::Runtime>| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = rt.clone();
        let t = std::thread::spawn(move || rt.block_on(async { stopped.await.ok() }));
        move || {
            stop.send(()).unwrap();
            t.join().unwrap();
        }
    };

    // Both connections accepted and waiting for a request.
    let halt = drive(&rt);
    let mut flood = TcpStream::connect(gw.addr).unwrap();
    let mut other = TcpStream::connect(gw.addr).unwrap();
    for s in [&flood, &other] {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    halt();
    // With the worker stopped: the flood's requests, then the other one.
    // Both answered by the gateway itself (404: no route), without waiting
    // for anything.
    let mut burst = String::new();
    for i in 0..FLOOD {
        let close = if i + 1 == FLOOD {
            "connection: close\r\n"
        } else {
            ""
        };
        burst.push_str(&format!("GET /nowhere HTTP/1.1\r\nhost: t\r\n{close}\r\n"));
    }
    flood.write_all(burst.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    other
        .write_all(b"GET /nowhere HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // The reader of the other answer runs on the worker's own thread (this
    // thread drives the runtime): when its answer is whole, it counts what
    // the gateway had written to the flood's connection before the worker
    // can serve another request — no race with the worker.
    flood.set_nonblocking(true).unwrap();
    let (answer, before) = rt.block_on(async {
        let mut other = tokio::net::TcpStream::from_std({
            other.set_nonblocking(true).unwrap();
            other
        })
        .unwrap();
        let answer = read_response_async(&mut other).await;
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 1 << 20];
        while let Ok(n @ 1..) = flood.read(&mut chunk) {
            got.extend_from_slice(&chunk[..n]);
        }
        (answer, got)
    });
    assert!(
        answer.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let mut got = before;
    let before = answers(&got);
    let halt = drive(&rt);
    flood.set_nonblocking(false).unwrap();
    flood.read_to_end(&mut got).unwrap();
    assert_eq!(answers(&got), FLOOD, "every flood request answered");
    eprintln!("the other request was answered after {before} of the flood's {FLOOD}");
    // Not starved: answered long before the flood's backlog is done. The
    // reader wakes on the worker's next poll of its events, which may come
    // after a batch of the flood's requests (tokio polls events every 61
    // tasks at most), hence the margin.
    assert!(
        before < FLOOD / 4,
        "{before} of the flood's {FLOOD} requests were answered before the other connection's one"
    );

    halt();
    let _rt = rt.enter();
    drop(gw);
    drop(up);
}
