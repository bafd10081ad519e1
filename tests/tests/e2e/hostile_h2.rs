//! Hostile HTTP/2 clients (cleartext, prior knowledge), frame by frame:
//! rapid reset, CONTINUATION floods, too many concurrent streams, and
//! flow-control abuse. The gateway runs in this test process, so its memory
//! is not measured on its own; what is checked: the abusive connection is
//! ended (GOAWAY or close) or contained within a time bound, what reaches
//! the upstream is bounded, and a well-behaved HTTP/2 client on another
//! connection keeps getting answers with bounded latency.

use std::time::{Duration, Instant};
use tollgate_tests::raw::h2::{self, H2Client};
use tollgate_tests::raw::{with_probe_on, Probe, RawUpstream};
use tollgate_tests::*;

const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;

async fn setup(limits: &str) -> (RawUpstream, TestGateway) {
    let up = RawUpstream::start().await;
    let gw = TestGateway::builder(&simple_manifest(&up.url(), ""))
        .limits(limits)
        .start()
        .await;
    (up, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off() {
    let (up, gw) = setup("").await;
    let addr = gw.addr;
    let authority = addr.to_string();
    let runs = with_probe_on(Probe::h2c(&gw), "rapid reset", async move {
        // Attack on fresh connections, one after the other, for 1.5s.
        let mut runs = Vec::new();
        let attack_started = Instant::now();
        while attack_started.elapsed() < Duration::from_millis(1500) {
            let mut c = H2Client::connect(addr, &[]).await;
            let started = Instant::now();
            let mut sent = 0u32;
            // Up to 20000 streams, each opened and cancelled at once, in
            // batches; stop when the server has had enough.
            'attack: for batch in 0..200u32 {
                let mut bytes = Vec::new();
                for i in 0..100u32 {
                    let id = 1 + 2 * (batch * 100 + i);
                    bytes.extend(h2::frame(
                        h2::HEADERS,
                        h2::END_HEADERS | h2::END_STREAM,
                        id,
                        &h2::get(&authority, "/rr"),
                    ));
                    bytes.extend(h2::rst(id, CANCEL));
                }
                if !c.send(&bytes).await {
                    break 'attack;
                }
                sent += 100;
                if c.goaway().is_some()
                    || c.is_closed()
                    || started.elapsed() > Duration::from_secs(8)
                {
                    break;
                }
            }
            assert!(c.wait_goaway_or_close(Duration::from_secs(5)).await);
            runs.push((sent, started.elapsed(), c.goaway()));
        }
        runs
    })
    .await;
    let reached = up.targets().iter().filter(|t| *t == "/rr").count();
    let streams: u32 = runs.iter().map(|r| r.0).sum();
    eprintln!(
        "rapid reset: {} connections, {streams} streams, {reached} reached the upstream; first: {:?}",
        runs.len(),
        runs[0]
    );
    for (sent, took, goaway) in &runs {
        assert!(goaway.is_some(), "no GOAWAY after {sent} reset streams");
        assert!(*sent < 20_000, "the server took all {sent} reset streams");
        assert!(*took < Duration::from_secs(10), "{took:?}");
    }
    assert!(
        (reached as u32) < streams / 10 + 100,
        "{reached} of {streams} cancelled calls reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_off() {
    let (up, gw) = setup("max-header-bytes = \"16KiB\"\n").await;
    let addr = gw.addr;
    let authority = addr.to_string();
    let runs = with_probe_on(Probe::h2c(&gw), "CONTINUATION flood", async move {
        // Flood on fresh connections, one after the other, for 1.5s.
        let mut runs = Vec::new();
        let attack_started = Instant::now();
        while attack_started.elapsed() < Duration::from_millis(1500) {
            let mut c = H2Client::connect(addr, &[]).await;
            let started = Instant::now();
            // HEADERS without END_HEADERS, then CONTINUATION frames that never
            // end the block: up to 64MiB of header block.
            let mut sent = 0usize;
            if c.send(&h2::frame(
                h2::HEADERS,
                0,
                1,
                &h2::get(&authority, "/flood"),
            ))
            .await
            {
                let block = h2::hpack(&[("x-flood", &"f".repeat(8000))]);
                let cont = h2::frame(h2::CONTINUATION, 0, 1, &block);
                while sent < 64 << 20 && started.elapsed() < Duration::from_secs(8) {
                    if !c.send(&cont).await {
                        break;
                    }
                    sent += cont.len();
                    if c.goaway().is_some() || c.is_closed() {
                        break;
                    }
                }
            }
            c.wait_goaway_or_close(Duration::from_secs(3)).await;
            runs.push((sent, started.elapsed(), c.goaway(), c.is_closed()));
        }
        runs
    })
    .await;
    eprintln!(
        "CONTINUATION flood: {} connections; first: {:?}",
        runs.len(),
        runs[0]
    );
    for (sent, took, goaway, closed) in runs {
        assert!(goaway.is_some() || closed, "the flood was never stopped");
        // What could be written is the limit (16KiB) plus socket buffers
        // (about 4MiB here), not 64MiB; with max-header-bytes = 16MiB it
        // is about 15MiB.
        assert!(sent < 8 << 20, "{sent} bytes of header block accepted");
        assert!(took < Duration::from_secs(8), "{took:?}");
    }
    assert!(up.requests().iter().all(|r| r.target() == "/probe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_are_refused() {
    let (up, gw) = setup("max-concurrent-streams = 10\n").await;
    let addr = gw.addr;
    let authority = addr.to_string();
    let frames = with_probe_on(Probe::h2c(&gw), "too many streams", async move {
        let mut c = H2Client::connect(addr, &[]).await;
        // 60 requests whose bodies never come: each stays open.
        let mut bytes = Vec::new();
        for i in 0..60u32 {
            bytes.extend(h2::frame(
                h2::HEADERS,
                h2::END_HEADERS,
                1 + 2 * i,
                &h2::hpack(&[
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":authority", &authority),
                    (":path", "/open"),
                ]),
            ));
        }
        assert!(c.send(&bytes).await);
        tokio::time::sleep(Duration::from_millis(800)).await;
        c.frames()
    })
    .await;
    let refused = frames
        .iter()
        .filter(|f| {
            f.kind == h2::RST_STREAM
                && f.payload.len() == 4
                && u32::from_be_bytes(f.payload[..4].try_into().unwrap()) == REFUSED_STREAM
        })
        .count();
    eprintln!("too many streams: {refused} of 60 refused");
    assert!(refused >= 50, "{refused} refused; frames {frames:?}");
    // The server announced its limit.
    let announced = frames
        .iter()
        .find(|f| f.kind == h2::SETTINGS && f.flags & h2::ACK == 0);
    let announced = announced.expect("server SETTINGS");
    let max_streams = announced
        .payload
        .chunks(6)
        .find(|c| u16::from_be_bytes([c[0], c[1]]) == 0x3)
        .map(|c| u32::from_be_bytes(c[2..6].try_into().unwrap()));
    assert_eq!(max_streams, Some(10));
    assert!(up.requests().iter().all(|r| r.target() == "/probe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_abuse_is_contained() {
    let (up, gw) = setup("").await;
    let addr = gw.addr;
    let authority = addr.to_string();
    let total: u64 = 64 << 20;
    let up_written = up.written.clone();
    with_probe_on(Probe::h2c(&gw), "flow-control abuse", async move {
        // A zero initial window: the server may not send a byte of body.
        let mut zero = H2Client::connect(addr, &[(0x4, 0)]).await;
        let mut bytes = Vec::new();
        for i in 0..4u32 {
            bytes.extend(h2::frame(
                h2::HEADERS,
                h2::END_HEADERS | h2::END_STREAM,
                1 + 2 * i,
                &h2::get(&authority, &format!("/big/{total}")),
            ));
        }
        assert!(zero.send(&bytes).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let data: usize = zero
            .frames()
            .iter()
            .filter(|f| f.kind == h2::DATA)
            .map(|f| f.len)
            .sum();
        assert_eq!(data, 0, "DATA sent into a zero window");
        let pushed = up_written.load(std::sync::atomic::Ordering::SeqCst);
        eprintln!("zero window: the upstream pushed {pushed} bytes for 4 streams");
        assert!(
            pushed < 4 * (16 << 20),
            "{pushed} bytes buffered for a zero window"
        );

        // WINDOW_UPDATE overflowing the connection window: GOAWAY
        // FLOW_CONTROL_ERROR.
        let mut c = H2Client::connect(addr, &[]).await;
        assert!(
            c.send(
                &[
                    h2::window_update(0, 0x7fff_ffff),
                    h2::window_update(0, 0x7fff_ffff)
                ]
                .concat()
            )
            .await
        );
        assert!(c.wait_goaway_or_close(Duration::from_secs(3)).await);
        assert_eq!(c.goaway(), Some(FLOW_CONTROL_ERROR), "{:?}", c.frames());

        // Overflowing a stream's window: that stream is reset.
        let mut c = H2Client::connect(addr, &[]).await;
        let mut b = h2::frame(
            h2::HEADERS,
            h2::END_HEADERS,
            1,
            &h2::hpack(&[
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", &authority),
                (":path", "/open"),
            ]),
        );
        b.extend(h2::window_update(1, 0x7fff_ffff));
        b.extend(h2::window_update(1, 0x7fff_ffff));
        assert!(c.send(&b).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reset = c.frames().iter().any(|f| {
            f.kind == h2::RST_STREAM
                && f.stream == 1
                && u32::from_be_bytes(f.payload[..4].try_into().unwrap()) == FLOW_CONTROL_ERROR
        });
        assert!(
            reset || c.goaway() == Some(FLOW_CONTROL_ERROR),
            "{:?}",
            c.frames()
        );

        // A zero increment is a protocol error.
        let mut c = H2Client::connect(addr, &[]).await;
        assert!(c.send(&h2::window_update(0, 0)).await);
        assert!(c.wait_goaway_or_close(Duration::from_secs(3)).await);
        assert_eq!(c.goaway(), Some(PROTOCOL_ERROR), "{:?}", c.frames());
        drop(zero);
    })
    .await;
}
