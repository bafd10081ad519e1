//! The admin listener under connection floods (docs/admin-api.md,
//! "Connections"): a thousand idle connections do not lock an administrator
//! out; when a client's slots are all busy its next connection is answered
//! 503 with `Retry-After` while other clients still get through; a silent
//! connection is closed after the header timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tollgate_tests::raw::{closed_within, read_until_close};
use tollgate_tests::{simple_manifest, TestGateway, Upstream};

async fn start() -> (Upstream, TestGateway, String, SocketAddr) {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&simple_manifest(&up.url(), ""))
        .admin()
        .start()
        .await;
    let token = gw.admin().token;
    let addr = gw.admin_addr.unwrap();
    (up, gw, token, addr)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A connection to `addr` from the loopback address `from`.
async fn connect_from(addr: SocketAddr, from: IpAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(Duration::from_secs(2), s.connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// `GET /admin/v1/whoami` on a new connection from `from`: the status, or
/// why there was none.
async fn whoami(addr: SocketAddr, token: &str, from: IpAddr) -> Result<u16, String> {
    let c = reqwest::Client::builder()
        .local_address(from)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    c.get(format!("http://{addr}/admin/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn an_administrator_gets_through_1000_idle_connections() {
    let (_up, _gw, token, addr) = start().await;
    let mut held = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = connect_from(addr, ip("127.0.0.1")).await {
            held.push(s);
        }
    }
    assert!(
        held.len() >= 950,
        "only {} of 1000 connections opened",
        held.len()
    );
    // From the same address as the flood, and from another one.
    for from in [
        "127.0.0.1",
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.1",
        "127.0.0.3",
    ] {
        let started = Instant::now();
        let r = whoami(addr, &token, ip(from)).await;
        assert_eq!(
            r,
            Ok(200),
            "an administrator from {from} while {} idle connections are held",
            held.len()
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }
    drop(held);
}

#[tokio::test]
async fn busy_slots_are_refused_with_503_and_other_clients_get_through() {
    let (_up, _gw, token, addr) = start().await;
    // 32 requests in progress from 127.0.0.1 (the per-client cap): heads
    // sent, bodies not.
    let head = format!(
        "POST /admin/v1/consumers HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    let mut busy = Vec::new();
    for _ in 0..32 {
        let mut s = connect_from(addr, ip("127.0.0.1")).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        busy.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The next connection from 127.0.0.1: refused, saying so.
    let mut s = connect_from(addr, ip("127.0.0.1")).await.unwrap();
    s.write_all(
        format!(
            "GET /admin/v1/whoami HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let ex = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(ex.closed, "the refused connection is closed");
    let r = ex
        .responses
        .first()
        .expect("a refused connection gets an answer");
    assert_eq!(r.status(), 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("all busy"),
        "{body}"
    );
    // Another client is not held up by this one.
    assert_eq!(whoami(addr, &token, ip("127.0.0.2")).await, Ok(200));
    // Once the slow requests end, 127.0.0.1 gets through again.
    drop(busy);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match whoami(addr, &token, ip("127.0.0.1")).await {
            Ok(200) => break,
            r => assert!(Instant::now() < deadline, "still refused: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let (_up, _gw, _token, addr) = start().await;
    let mut s = connect_from(addr, ip("127.0.0.1")).await.unwrap();
    let took = closed_within(&mut s, Duration::from_secs(9))
        .await
        .expect("closed within 9 s");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "closed after {took:?}, expected about 5 s"
    );
}
