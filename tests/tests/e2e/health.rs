//! `GET /healthz` and `GET /readyz` on the admin listener, without a token:
//! alive at once; ready only once every configured snapshot is settled
//! (never before the steps are snapshotted), and at once when snapshots are
//! off; a bad request is refused like any admin call.

use std::time::{Duration, Instant};
use tollgate::control::plane::ReloadOutcome;
use tollgate_tests::*;

const CHAIN: &str = "[[api.chain]]\nplugin = \"transform\"\n\
                     config = { request = { headers = { set = { x-a = \"1\" } } } }\n\
                     [[api.chain]]\nplugin = \"noop\"\n";

async fn get(c: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let r = c.get(url).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_the_snapshots_are_settled() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&simple_manifest(&up.url(), CHAIN))
        .admin()
        .start()
        .await;
    let base = format!("http://{}", gw.admin_addr.unwrap());
    let c = client();
    let (s, v) = get(&c, &format!("{base}/healthz")).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("alive")), "{v}");
    let started = Instant::now();
    let mut saw_building = false;
    loop {
        let (s, v) = get(&c, &format!("{base}/readyz")).await;
        if s == 200 {
            assert_eq!(v["status"], "ready", "{v}");
            // Ready implies every step serves from its snapshot.
            assert!(gw.gateway.current().snapshotted(), "{v}");
            assert_eq!(v["checks"]["snapshots"]["building"], 0, "{v}");
            assert_eq!(v["checks"]["store"]["ok"], true, "{v}");
            assert_eq!(v["checks"]["configuration"]["apis"], 1, "{v}");
            break;
        }
        assert_eq!(s, 503, "{v}");
        assert_eq!(v["status"], "not ready", "{v}");
        assert!(
            v["checks"]["snapshots"]["building"].as_u64().unwrap() > 0,
            "{v}"
        );
        saw_building = true;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never ready: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not asserted (it depends on how fast the snapshots build), but shown.
    eprintln!("saw the not-ready state first: {saw_building}");
    // A reload that changes a step: its new snapshot is settled again
    // before the gateway reports ready.
    gw.write_manifest(&simple_manifest(
        &up.url(),
        &CHAIN.replace("x-a = \"1\"", "x-a = \"2\""),
    ));
    assert!(matches!(gw.gateway.reload().await, ReloadOutcome::Applied));
    let started = Instant::now();
    loop {
        let (s, v) = get(&c, &format!("{base}/readyz")).await;
        if s == 200 {
            assert!(gw.gateway.current().snapshotted(), "{v}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never ready: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Probes are GETs without a query, like every admin call.
    let r = c.post(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = c
        .get(format!("{base}/readyz?verbose=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_snapshots_ready_at_once() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&simple_manifest(&up.url(), CHAIN))
        .admin()
        .snapshots(false)
        .start()
        .await;
    let c = client();
    let (s, v) = get(&c, &format!("http://{}/readyz", gw.admin_addr.unwrap())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["checks"]["snapshots"]["building"], 0, "{v}");
}
