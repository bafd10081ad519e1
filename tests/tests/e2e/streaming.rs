//! Streaming responses pass through without buffering when no step asks
//! for the response body: Server-Sent Events from the demo upstream (a
//! real HTTP server, `tollgate::demo`) reach the client one by one, the
//! first long before the upstream has finished, through a key-auth and
//! rate-limit chain, over HTTP/1.1 and HTTP/2.

use std::time::{Duration, Instant};
use tollgate_tests::TestGateway;

/// The demo upstream on a loopback port of this process.
async fn demo_upstream() -> String {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(tollgate::demo::serve(
        "127.0.0.1:0".parse().unwrap(),
        move |a| {
            let _ = tx.send(a);
        },
    ));
    format!("http://{}", rx.await.unwrap())
}

fn chain() -> &'static str {
    r#"[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = { limits = [{ per = "minute", requests = 100, by = "ip" }] }

[[api.chain]]
plugin = "cors"
config = { allow-origins = ["https://app.example"] }
"#
}

/// Read the events of one response as they come: (the arrival time of
/// each event after the request was sent, the whole text).
async fn events(mut r: reqwest::Response, sent: Instant) -> (Vec<Duration>, String) {
    let mut at = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        let s = String::from_utf8(chunk.to_vec()).unwrap();
        for _ in 0..s.matches("\n\n").count() {
            at.push(sent.elapsed());
        }
        text.push_str(&s);
    }
    (at, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_one_by_one_before_the_upstream_finishes() {
    let up = demo_upstream().await;
    let gw = TestGateway::start(&tollgate_tests::simple_manifest(&up, chain())).await;
    for http2 in [false, true] {
        let client = if http2 {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap()
        } else {
            reqwest::Client::builder().http1_only().build().unwrap()
        };
        let sent = Instant::now();
        let r = client
            .get(gw.url("/events?n=4&every=600"))
            .header("origin", "https://app.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        // The chain's headers are on the streamed response.
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        assert!(r.headers().contains_key("ratelimit-remaining"));
        let (at, text) = events(r, sent).await;
        assert_eq!(at.len(), 4, "{text}");
        assert!(text.contains("data: {\"event\":3}"), "{text}");
        eprintln!("events (http2: {http2}) arrived at {at:?}");
        // The upstream takes 1.8 s: the first event is there long before.
        assert!(at[0] < Duration::from_millis(900), "{at:?}");
        assert!(at[3] >= Duration::from_millis(1700), "{at:?}");
        assert!(at[1] >= at[0] + Duration::from_millis(400), "{at:?}");
    }
}
