//! The shared control plane of a cluster (docs/cluster.md, "The control
//! plane") with a real `redis-server`: one control node (the only writer)
//! and data nodes that apply its changes from Redis to their own stores.
//! A revoked key, a suspended subscription and a plan change reach every
//! data node within a second; a data node serves its last state while
//! Redis is gone, starts from it, and catches up (from the snapshot) when
//! Redis comes back empty.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tollgate_tests::admin::AdminClient;
use tollgate_tests::process::GatewayProcess as Process;
use tollgate_tests::redis::RedisServer;
use tollgate_tests::{client, TestGateway, Upstream};

fn manifest(upstream: &str) -> String {
    tollgate_tests::keyed_pets(upstream)
}

fn cluster(redis: &RedisServer, role: &str, node: &str) -> String {
    format!(
        "[cluster]\nurl = \"{}\"\nrole = \"{role}\"\nnode = \"{node}\"\ncommand-timeout = \"200ms\"\n",
        redis.url()
    )
}

async fn node(up: &Upstream, redis: &RedisServer, role: &str, name: &str) -> TestGateway {
    TestGateway::builder(&manifest(&up.url()))
        .admin()
        .gateway_toml(&cluster(redis, role, name))
        .start()
        .await
}

/// A data node as a process of its own (the real binary), restartable on
/// its folder and data directory.
async fn data_process(up: &Upstream, redis: &RedisServer, name: &str) -> Process {
    Process::start(&manifest(&up.url()), &cluster(redis, "data", name)).await
}

/// Something that serves `/pets`.
trait Node {
    fn url(&self, path: &str) -> String;
}

impl Node for TestGateway {
    fn url(&self, path: &str) -> String {
        TestGateway::url(self, path)
    }
}

impl Node for Process {
    fn url(&self, path: &str) -> String {
        Process::url(self, path)
    }
}

/// The status of `GET /pets/1` with `key` on `gw`.
async fn call(gw: &dyn Node, key: &str) -> u16 {
    client()
        .get(gw.url("/pets/1"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Wait (at most `within`) until every node answers `key` with a status
/// `ok` accepts; how long it took.
async fn until_all(
    nodes: &[&dyn Node],
    key: &str,
    within: Duration,
    ok: impl Fn(u16) -> bool,
) -> Duration {
    let t = Instant::now();
    loop {
        let mut all = true;
        for n in nodes {
            if !ok(call(*n, key).await) {
                all = false;
            }
        }
        if all {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "not every node got there within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Product `shop` over `pets`, plan `basic`, consumer `alice`, app `web`
/// subscribed; a key of it: `(key, its id, subscription)`.
async fn seed(admin: &AdminClient) -> (String, String, String) {
    admin
        .create(
            "/products",
            json!({"id": "shop", "apis": ["pets"], "published": true}),
        )
        .await;
    admin
        .create(
            "/plans",
            json!({"id": "basic", "product": "shop", "rate_limits": [{"requests": 100, "per": "second"}]}),
        )
        .await;
    admin.create("/consumers", json!({"id": "alice"})).await;
    admin
        .create("/apps", json!({"id": "web", "consumer": "alice"}))
        .await;
    let sub = admin
        .create("/subscriptions", json!({"app": "web", "plan": "basic"}))
        .await;
    let (key, id) = new_key(admin).await;
    (key, id, sub["id"].as_str().unwrap().to_string())
}

/// A new key of `web` for `basic`: the secret and the key's id.
async fn new_key(admin: &AdminClient) -> (String, String) {
    let k = admin
        .create("/keys", json!({"app": "web", "plan": "basic"}))
        .await;
    (
        k["secret"].as_str().unwrap().to_string(),
        k["key"]["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_suspension_and_plan_changes_reach_every_data_node_within_a_second() {
    let up = Upstream::start().await;
    let redis = RedisServer::start();
    let cp = node(&up, &redis, "control", "cp").await;
    let admin = cp.admin();
    let (key, key_id, sub) = seed(&admin).await;
    let dp1 = node(&up, &redis, "data", "dp-1").await;
    let dp2 = node(&up, &redis, "data", "dp-2").await;
    // The data nodes joined after the changes: they load them (the
    // snapshot, then the log) and serve the key.
    until_all(&[&dp1, &dp2], &key, Duration::from_secs(10), |s| s == 200).await;
    assert_eq!(call(&cp, &key).await, 200);

    // Revoked on the control node: refused everywhere within a second.
    let (s, v) = admin
        .post(&format!("/keys/{key_id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let took = until_all(&[&dp1, &dp2], &key, Duration::from_secs(1), |s| {
        s == 401 || s == 403
    })
    .await;
    eprintln!("cluster control: a revocation reached both data nodes in {took:?}");

    // A suspended subscription: its new key refused everywhere.
    let (key2, _) = new_key(&admin).await;
    until_all(&[&dp1, &dp2], &key2, Duration::from_secs(1), |s| s == 200).await;
    let (s, v) = admin
        .patch(
            &format!("/subscriptions/{sub}"),
            json!({"state": "suspended"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let took = until_all(&[&dp1, &dp2], &key2, Duration::from_secs(1), |s| {
        s == 401 || s == 403
    })
    .await;
    eprintln!("cluster control: a suspension reached both data nodes in {took:?}");

    // A plan change: read back from a data node's own admin API (the
    // control node's token works there: admin users are replicated too).
    let dp_admin = AdminClient::new(
        format!("http://{}", dp1.admin_addr.unwrap()),
        admin.token.clone(),
    );
    let (s, v) = admin
        .patch(
            "/plans/basic",
            json!({"rate_limits": [{"requests": 7, "per": "minute"}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let t = Instant::now();
    loop {
        let (_, p) = dp_admin.get("/plans/basic").await;
        if p["rate_limits"][0]["requests"] == 7 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "plan change not on dp-1: {p}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A chain edit on the control node: every data node serves the new
    // chain (the configuration bundle, written there and reloaded): the
    // upstream sees the header the new step sets.
    let (s, v) = admin
        .put(
            "/apis/pets/chain",
            json!({"chain": [
                {"name": "auth", "plugin": "key-auth", "grants": ["consumers"]},
                {"name": "tag", "plugin": "transform",
                 "config": {"request": {"headers": {"set": {"x-chain": "edited"}}}}}
            ]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin
        .patch(&format!("/subscriptions/{sub}"), json!({"state": "active"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (key4, _) = new_key(&admin).await;
    let t = Instant::now();
    for dp in [&dp1, &dp2] {
        let dp: &TestGateway = dp;
        loop {
            let s = call(dp, &key4).await;
            if s == 200 && up.last().header("x-chain") == Some("edited") {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                let (_, nodes) = admin.get("/nodes").await;
                let on_cp = call(&cp, &key4).await;
                panic!(
                    "the chain edit did not reach {} (status {s}; on the control node {on_cp}, upstream saw {:?}): {nodes}\n{}",
                    dp.url(""),
                    up.last().headers,
                    std::fs::read_to_string(dp.path().join("api.toml")).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "cluster control: a chain edit served by both data nodes in {:?}",
        t.elapsed()
    );
    let manifest_there = std::fs::read_to_string(dp1.path().join("api.toml")).unwrap();
    assert!(manifest_there.contains("x-chain"), "{manifest_there}");

    // A data node's admin API reads only.
    let (s, v) = dp_admin.post("/consumers", json!({"id": "mallory"})).await;
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains("data node"), "{v}");

    // Every node listed, in step, none stale.
    let t = Instant::now();
    let nodes = loop {
        let (s, v) = admin.get("/nodes").await;
        assert_eq!(s, 200, "{v}");
        let items = v["items"].as_array().unwrap().clone();
        let seqs: Vec<u64> = items.iter().map(|n| n["seq"].as_u64().unwrap()).collect();
        if items.len() == 3 && seqs.iter().all(|s| *s == seqs[0] && *s > 0) {
            break v;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let names: Vec<&str> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cp", "dp-1", "dp-2"], "{nodes}");
    for n in nodes["items"].as_array().unwrap() {
        assert_eq!(n["stale"], false, "{n}");
        assert_eq!(n["connected"], true, "{n}");
        assert!(n["problem"].is_null(), "{n}");
    }
    assert_eq!(nodes["items"][0]["role"], "control");
    assert_eq!(nodes["items"][1]["role"], "data");
    assert_eq!(nodes["redis"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_node_serves_and_restarts_from_its_last_state_while_redis_is_gone() {
    let up = Upstream::start().await;
    let mut redis = RedisServer::start();
    let cp = node(&up, &redis, "control", "cp").await;
    let admin = cp.admin();
    let (key, key_id, _) = seed(&admin).await;
    let t = Instant::now();
    let mut dp = data_process(&up, &redis, "dp-1").await;
    eprintln!(
        "cluster control: a data node process started in {:?}",
        t.elapsed()
    );
    until_all(&[&dp], &key, Duration::from_secs(10), |s| s == 200).await;

    // Redis gone: the data node serves what it applied, and says so.
    redis.kill();
    for _ in 0..5 {
        assert_eq!(call(&dp, &key).await, 200);
    }
    let dp_admin = dp.admin(&admin.token);
    let t = Instant::now();
    let me = loop {
        let (s, v) = dp_admin.get("/nodes").await;
        assert_eq!(s, 200, "{v}");
        if v["redis"] == false && v["items"][0]["connected"] == false {
            break v;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        me["items"][0]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("serving the last state applied")),
        "{me}"
    );

    // Restarted while Redis is down: it starts from its own store.
    let t = Instant::now();
    dp.restart().await;
    eprintln!("cluster control: restarted in {:?}", t.elapsed());
    assert_eq!(call(&dp, &key).await, 200, "served from the last state");

    // The control node changes on meanwhile; Redis comes back empty (no
    // persistence): the control node publishes a snapshot, and the data
    // node loads it.
    let (s, v) = admin
        .post(&format!("/keys/{key_id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (key2, _) = new_key(&admin).await;
    assert_eq!(call(&dp, &key).await, 200, "not yet known there");
    redis.restart();
    let t = Instant::now();
    until_all(&[&dp], &key, Duration::from_secs(15), |s| {
        s == 401 || s == 403
    })
    .await;
    eprintln!(
        "cluster control: in step again {:?} after Redis came back",
        t.elapsed()
    );
    until_all(&[&dp], &key2, Duration::from_secs(5), |s| s == 200).await;
    // And in step again from there: the next change arrives by the log.
    let (key3, _) = new_key(&admin).await;
    until_all(&[&dp], &key3, Duration::from_secs(1), |s| s == 200).await;
    // The node list reads Redis through the data path's own connection,
    // which reconnects on its own schedule (after its circuit breaker's
    // cool-down, backing off to 2 s while Redis was gone): it reports Redis
    // again within that, not necessarily at the instant the log caught up.
    let dp_admin = dp.admin(&admin.token);
    let t = Instant::now();
    loop {
        let (_, v): (u16, Value) = dp_admin.get("/nodes").await;
        if v["redis"] == true {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
