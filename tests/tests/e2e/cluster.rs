//! Cluster mode through the real binary: gateway processes sharing rate
//! limits and quotas through real `redis-server` processes (one server
//! with AOF, a three-master Redis Cluster made by the test, and a master
//! with a replica under a Sentinel), Redis killed mid-traffic and brought
//! back, and a Sentinel failover.

use futures_util::future::join_all;
use std::time::{Duration, Instant};
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::process::GatewayProcess as Node;
use tollgate_tests::redis::{
    Persistence, RedisCluster, RedisSentinel, RedisServer, SENTINEL_MASTER,
};
use tollgate_tests::Upstream;

const KEY: &str = "cluster-key-3d9a71c0";

/// The APIs every node serves: `/rl` (a rate limit of `limit` per hour by
/// client address) and `/q` (key-auth, then a monthly quota of `quota`).
fn manifest(upstream: &str, limit: u64, quota: u64) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "rl"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/rl"

[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = {{ limits = [{{ per = "hour", requests = {limit}, by = "ip" }}] }}

[[api]]
name = "q"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/q"

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]

[[api.chain]]
plugin = "quota"
grants = ["counters"]
config = {{ calls = {quota}, period = "month", by = "consumer" }}

[[consumer]]
id = "carol"
keys = [{{ id = "k-carol", sha256 = "{digest}" }}]
"#,
        digest = key_digest_hex(KEY),
    )
}

/// A node serving `manifest` with this `[cluster]` body.
async fn node(manifest: &str, cluster: &str) -> Node {
    Node::start(manifest, &format!("[cluster]\n{cluster}")).await
}

fn assert_no_panic(nodes: &[Node]) {
    for n in nodes {
        let log = n.log();
        assert!(!log.contains("panicked"), "a gateway panicked:\n{log}");
    }
}

/// `count` nodes: the first on its own (so that the others reuse the
/// plugins it compiled), then the rest side by side.
async fn start_nodes(count: usize, manifest: &str, cluster: &str) -> Vec<Node> {
    let mut nodes = vec![node(manifest, cluster).await];
    nodes.extend(join_all((1..count).map(|_| node(manifest, cluster))).await);
    nodes
}

/// `calls` calls to `/rl`, `concurrency` at a time, spread round-robin
/// over `nodes`. Returns (statuses, the slowest call).
async fn race(nodes: &[Node], calls: usize, concurrency: usize) -> (Vec<u16>, Duration) {
    let urls: Vec<String> = nodes.iter().map(|n| n.url("/rl/x")).collect();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..concurrency).map(|_| {
        let (urls, next) = (urls.clone(), next.clone());
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls {
                    return out;
                }
                let t = Instant::now();
                let r = c
                    .get(&urls[i % urls.len()])
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .unwrap();
                out.push((r.status().as_u16(), t.elapsed()));
            }
        })
    });
    let mut statuses = Vec::new();
    let mut slowest = Duration::ZERO;
    for w in join_all(workers).await {
        for (s, t) in w.unwrap() {
            statuses.push(s);
            slowest = slowest.max(t);
        }
    }
    (statuses, slowest)
}

/// The value of the series `name` (with its labels as printed) in a scrape.
fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{scrape}"))
        .trim()
        .parse()
        .unwrap()
}

/// The rate-limit scripts the nodes ran in Redis, and their total seconds.
async fn rate_scripts(nodes: &[Node]) -> (f64, f64) {
    let (mut calls, mut seconds) = (0.0, 0.0);
    for n in nodes {
        let m = n.metrics().await;
        calls += metric(
            &m,
            "tollgate_redis_duration_seconds_count{op=\"rate_limit\"}",
        );
        seconds += metric(&m, "tollgate_redis_duration_seconds_sum{op=\"rate_limit\"}");
    }
    (calls, seconds)
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// One call to `/q` with the key: `Some(remaining)` when allowed, `None`
/// when refused (403 `quota_exceeded`), panics on anything else.
async fn quota_call(node: &Node) -> Option<u64> {
    let r = reqwest::Client::new()
        .get(node.url("/q/x"))
        .header("x-api-key", KEY)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        200 => Some(
            r.headers()["x-quota-remaining"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap(),
        ),
        403 => None,
        s => panic!("quota call: {s}: {}", r.text().await.unwrap_or_default()),
    }
}

/// The limit is counted once for all nodes: of 600 calls racing over three
/// gateways, exactly `limit` pass (an hour's window; were the hour to turn
/// during the race, the sliding window would let one more through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_limit_under_a_600_call_race() {
    const LIMIT: usize = 100;
    let up = Upstream::start().await;
    let redis = RedisServer::start();
    let cluster = format!(
        "url = {:?}\ncommand-timeout = \"2s\"\nrate-limits = \"closed\"",
        redis.url()
    );
    let nodes = start_nodes(3, &manifest(&up.url(), LIMIT as u64, 10), &cluster).await;
    let started = Instant::now();
    let (statuses, _) = race(&nodes, 600, 48).await;
    let took = started.elapsed();
    let passed = count(&statuses, 200);
    assert_eq!(passed + count(&statuses, 429), 600, "{statuses:?}");
    assert!(
        (LIMIT..=LIMIT + 1).contains(&passed),
        "{passed} of 600 passed a limit of {LIMIT} across three gateways"
    );
    eprintln!("cluster race: {passed} of 600 passed (limit {LIMIT}) in {took:?}");
    // Each node checked its share in Redis, one script call per call.
    let (calls, sum) = rate_scripts(&nodes).await;
    assert_eq!(calls, 600.0);
    eprintln!(
        "cluster race: a rate-limit check in Redis took {:.0} µs on average (debug build, loaded machine)",
        sum / calls * 1e6
    );
    assert_no_panic(&nodes);
}

/// A quota is counted in Redis: it holds across nodes, and survives every
/// gateway and Redis itself being SIGKILLed (AOF, `appendfsync always`) and
/// the gateways coming back with empty data directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_survives_restart_of_every_gateway_and_of_redis() {
    let up = Upstream::start().await;
    let mut redis = RedisServer::start_with(Persistence::AofAlways);
    let cluster = format!("url = {:?}\ncommand-timeout = \"2s\"", redis.url());
    let mut nodes = start_nodes(3, &manifest(&up.url(), 1000, 10), &cluster).await;
    for i in 0..6 {
        assert_eq!(
            quota_call(&nodes[i % 3]).await,
            Some(9 - i as u64),
            "call {i}"
        );
    }
    for n in &mut nodes {
        n.kill();
    }
    redis.kill();
    redis.restart();
    for n in &mut nodes {
        n.restart_fresh().await;
    }
    for i in 6..10 {
        assert_eq!(
            quota_call(&nodes[i % 3]).await,
            Some(9 - i as u64),
            "call {i}"
        );
    }
    for n in &nodes {
        assert_eq!(quota_call(n).await, None, "the quota is used up");
    }
    assert_no_panic(&nodes);
}

/// Redis killed mid-traffic: the node set to fail open counts on its own,
/// the one set to fail closed refuses; quotas (closed by default) refuse;
/// no call waits past the bound, the breaker stops calling a dead Redis,
/// and both recover when Redis returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_traffic_fails_open_or_closed_and_recovers() {
    let up = Upstream::start().await;
    let mut redis = RedisServer::start();
    let common = format!(
        "url = {:?}\ncommand-timeout = \"50ms\"\nconnect-timeout = \"200ms\"\nbreaker-failures = 3\nbreaker-cool-down = \"300ms\"",
        redis.url()
    );
    let manifest = manifest(&up.url(), 1000, 1000);
    let open = node(&manifest, &format!("{common}\nrate-limits = \"open\"")).await;
    let closed = node(&manifest, &format!("{common}\nrate-limits = \"closed\"")).await;
    let nodes = [open, closed];
    let (s, _) = race(&nodes, 20, 4).await;
    assert_eq!(count(&s, 200), 20);
    assert!(quota_call(&nodes[0]).await.is_some());

    redis.kill();
    // Through the outage: bounded calls, open passes, closed refuses.
    let bound = Duration::from_millis(750);
    for round in 0..20 {
        let t = Instant::now();
        let r = reqwest::get(nodes[0].url("/rl/x")).await.unwrap();
        assert_eq!(r.status(), 200, "open node, round {round}");
        let r = reqwest::get(nodes[1].url("/rl/x")).await.unwrap();
        assert_eq!(r.status(), 503, "closed node, round {round}");
        let r = reqwest::Client::new()
            .get(nodes[0].url("/q/x"))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "quota, round {round}");
        let took = t.elapsed();
        assert!(
            took < bound * 3,
            "three calls took {took:?} in round {round}"
        );
    }
    let (s, slowest) = race(&nodes, 200, 16).await;
    assert_eq!(count(&s, 200), 100, "the open node's half");
    assert_eq!(count(&s, 503), 100, "the closed node's half");
    assert!(slowest < bound, "a call waited {slowest:?} on a dead Redis");
    for n in &nodes {
        let m = n.metrics().await;
        assert!(
            metric(&m, "tollgate_redis_breaker_trips_total") >= 1.0,
            "{m}"
        );
        assert_eq!(metric(&m, "tollgate_redis_breaker_open"), 1.0, "{m}");
        assert!(m.contains("kind=\"breaker_open\""), "{m}");
    }
    let m = nodes[0].metrics().await;
    assert!(
        m.contains("tollgate_redis_fallbacks_total{kind=\"rate_limit_local\"}"),
        "{m}"
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::get(nodes[1].url("/rl/x")).await.unwrap().status();
        let q = reqwest::Client::new()
            .get(nodes[0].url("/q/x"))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap()
            .status();
        if r == 200 && q == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: rate {r}, quota {q}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &nodes {
        assert_eq!(
            metric(&n.metrics().await, "tollgate_redis_breaker_open"),
            0.0
        );
    }
    assert_no_panic(&nodes);
}

/// Over-admission while Redis is gone, measured: with `rate-limits =
/// "open"` each node admits its `local-share` of the limit on its own
/// (`ceil(limit × share / 100)`: 11 of 30 at 34%), so three nodes pass
/// exactly 33 of 300 calls, 10% over the limit; when Redis is back, the
/// count goes on from what Redis had (the local counts are not merged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_admission_while_redis_is_gone_is_the_local_shares() {
    const LIMIT: usize = 30;
    let up = Upstream::start().await;
    let mut redis = RedisServer::start();
    let cluster = format!(
        "url = {:?}\ncommand-timeout = \"50ms\"\nconnect-timeout = \"200ms\"\n\
         rate-limits = \"open\"\nlocal-share = 34\nbreaker-failures = 2\n\
         breaker-cool-down = \"300ms\"",
        redis.url()
    );
    let nodes = start_nodes(3, &manifest(&up.url(), LIMIT as u64, 10), &cluster).await;
    let hour = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 3600
    };
    let (statuses, _) = race(&nodes, 15, 6).await;
    assert_eq!(count(&statuses, 200), 15, "{statuses:?}");

    redis.kill();
    let started = hour();
    let (statuses, _) = race(&nodes, 300, 24).await;
    let passed = count(&statuses, 200);
    assert_eq!(passed + count(&statuses, 429), 300, "{statuses:?}");
    let share = (LIMIT * 34).div_ceil(100);
    assert!(passed <= 3 * share, "{passed} passed while Redis was gone");
    if hour() == started {
        // (Were the hour to turn during the race, the windows would weigh
        // what came before it: fewer pass, never more.)
        assert_eq!(passed, 3 * share, "each node its share");
    }
    eprintln!(
        "cluster over-admission: {passed} of 300 passed a limit of {LIMIT} over three nodes \
         while Redis was gone ({:.0}% of the limit), local-share 34%",
        passed as f64 * 100.0 / LIMIT as f64
    );

    redis.restart();
    // Each node goes back to Redis after its breaker's probe (quota calls
    // probe here, so as not to count on the limit) ...
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in &nodes {
        while metric(&n.metrics().await, "tollgate_redis_breaker_open") != 0.0 {
            let _ = reqwest::Client::new()
                .get(n.url("/q/probe"))
                .header("x-api-key", KEY)
                .send()
                .await;
            assert!(Instant::now() < deadline, "not back on Redis");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // ... where the count is exact again: this Redis came back empty (no
    // persistence), so the whole limit, and not one call more.
    let (statuses, _) = race(&nodes, 90, 12).await;
    let again = count(&statuses, 200);
    assert!(
        (LIMIT..=LIMIT + 1).contains(&again),
        "{again} of 90 passed after Redis came back"
    );
    assert_no_panic(&nodes);
}

/// `[cluster] cache = ["shared"]`: the API named there keeps its response
/// cache in Redis, so a response cached through one node is a hit on the
/// other; the other API's cache stays in each node's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_shared_for_the_apis_named_and_per_node_for_the_rest() {
    let up = Upstream::start().await;
    let redis = RedisServer::start();
    let api = |name: &str| {
        format!(
            r#"[[api]]
name = "{name}"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/{name}"

[[api.chain]]
plugin = "cache"
grants = ["cache"]
config = {{ ttl = 60 }}
"#,
            upstream = up.url()
        )
    };
    let manifest = format!("schema = 1\n\n{}\n{}", api("shared"), api("local"));
    let cluster = format!(
        "url = {:?}\ncommand-timeout = \"2s\"\ncache = [\"shared\"]",
        redis.url()
    );
    let nodes = start_nodes(2, &manifest, &cluster).await;
    // As behind a load balancer: one host name for every node (the cache
    // key has the host in it).
    let x_cache = |n: usize, path: &str| {
        let url = nodes[n].url(path);
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .header("host", "api.example")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-cache"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(x_cache(0, "/shared/a").await, "MISS");
    assert_eq!(
        x_cache(1, "/shared/a").await,
        "HIT",
        "cached through the other node"
    );
    assert_eq!(x_cache(0, "/local/a").await, "MISS");
    assert_eq!(x_cache(1, "/local/a").await, "MISS", "each node its own");
    assert_eq!(x_cache(0, "/local/a").await, "HIT");
    assert_eq!(up.requests().len(), 3);
    // One entry in Redis: the shared API's.
    let keys = redis.cmd(&["DBSIZE"]);
    assert_eq!(keys.trim(), ":1", "{keys}");
    assert_no_panic(&nodes);
}

/// A three-master Redis Cluster made by the test serves the same limit
/// and quota: the script's one key routes to its slot's master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_master_redis_cluster_runs_the_same_limit() {
    const LIMIT: usize = 50;
    let up = Upstream::start().await;
    let redis = RedisCluster::start();
    let cluster = format!(
        "nodes = {:?}\ncommand-timeout = \"2s\"\nrate-limits = \"closed\"",
        redis.urls()
    );
    let nodes = start_nodes(3, &manifest(&up.url(), LIMIT as u64, 5), &cluster).await;
    let (statuses, _) = race(&nodes, 300, 24).await;
    let passed = count(&statuses, 200);
    assert_eq!(passed + count(&statuses, 429), 300, "{statuses:?}");
    assert!(
        (LIMIT..=LIMIT + 1).contains(&passed),
        "{passed} of 300 passed a limit of {LIMIT}"
    );
    eprintln!("redis cluster race: {passed} of 300 passed (limit {LIMIT})");
    for i in 0..5 {
        assert_eq!(quota_call(&nodes[i % 3]).await, Some(4 - i as u64));
    }
    assert_eq!(quota_call(&nodes[2]).await, None);
    // The keys are spread over the masters by their hash tags: the limit's
    // and the quota's keys are each on one of them.
    let keys: usize = redis
        .nodes
        .iter()
        .map(|n| {
            n.cmd(&["DBSIZE"])
                .trim_start_matches(':')
                .trim()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(keys, 2);
    assert_no_panic(&nodes);
}

/// `/rl` with four limits in one step, by client address: a second, a
/// minute and a day that the test does not reach, and `hour` per hour.
fn four_limits(upstream: &str, hour: u64) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "rl"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/rl"

[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
[api.chain.config]
limits = [
  {{ per = "second", requests = 1000, by = "ip" }},
  {{ per = "minute", requests = 1000, by = "ip" }},
  {{ per = "hour", requests = {hour}, by = "ip" }},
  {{ per = "day", requests = 1000, by = "ip" }},
]
"#
    )
}

/// The keys of a Redis server (its answer to `KEYS *`).
fn keys(redis: &RedisServer) -> Vec<String> {
    redis
        .cmd(&["KEYS", "*"])
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_string)
        .collect()
}

/// What each limit of [`four_limits`] counted, by window name (`minute`,
/// `day`): a sliding window's previous plus current count, a day's count.
fn counted(servers: &[&RedisServer]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for r in servers {
        for k in keys(r) {
            let number = |reply: String| -> u64 {
                reply.lines().nth(1).map_or(0, |n| n.parse().unwrap_or(0))
            };
            if k.ends_with(":sw") {
                let w = number(r.cmd(&["HGET", &k, "w"]));
                let n = number(r.cmd(&["HGET", &k, "p"])) + number(r.cmd(&["HGET", &k, "c"]));
                let name = match w {
                    1000 => "second",
                    60_000 => "minute",
                    3_600_000 => "hour",
                    _ => "?",
                };
                out.push((name.to_string(), n));
            } else if k.contains(":q:") {
                out.push(("day".to_string(), number(r.cmd(&["GET", &k]))));
            }
        }
    }
    out.sort();
    out
}

/// The four limits of one step are one script, one round trip per call,
/// on one Redis server: of 300 calls racing over three gateways exactly
/// the hour's limit pass, and the other limits counted exactly those (a
/// call the hour refused used up none of them; the day is a durable count
/// in Redis, checked in the same script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_of_a_step_are_one_round_trip_and_count_all_or_nothing() {
    const LIMIT: u64 = 40;
    let up = Upstream::start().await;
    let redis = RedisServer::start();
    let cluster = format!(
        "url = {:?}\ncommand-timeout = \"2s\"\nrate-limits = \"closed\"",
        redis.url()
    );
    let nodes = start_nodes(3, &four_limits(&up.url(), LIMIT), &cluster).await;
    let (statuses, _) = race(&nodes, 300, 24).await;
    let passed = count(&statuses, 200) as u64;
    assert_eq!(passed + count(&statuses, 429) as u64, 300, "{statuses:?}");
    assert!(
        (LIMIT..=LIMIT + 1).contains(&passed),
        "{passed} of 300 passed a limit of {LIMIT}"
    );
    let (calls, _) = rate_scripts(&nodes).await;
    assert_eq!(calls, 300.0, "one Redis call per call, for four limits");
    let counts = counted(&[&redis]);
    eprintln!("four limits, one Redis server: {passed} of 300 passed; counted {counts:?}");
    // The second's window may have turned during the race: the earlier
    // second's count is then gone from its key. The others hold it all.
    for (name, n) in &counts {
        if name != "second" {
            assert_eq!(
                *n, passed,
                "{name} counted {n}, {passed} passed: {counts:?}"
            );
        }
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert_no_panic(&nodes);
}

/// On a three-master Redis Cluster the four limits' keys hash to several
/// slots (several masters): a check of each slot's keys, then the count.
/// Still never more than the limit passes; a call that raced another
/// between the two round trips may be counted by limits in other slots
/// though the hour refused it, at most one per call in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_the_limits_of_a_step_never_admit_more() {
    const LIMIT: u64 = 40;
    const CONCURRENCY: usize = 24;
    let up = Upstream::start().await;
    let redis = RedisCluster::start();
    let cluster = format!(
        "nodes = {:?}\ncommand-timeout = \"2s\"\nrate-limits = \"closed\"",
        redis.urls()
    );
    let nodes = start_nodes(3, &four_limits(&up.url(), LIMIT), &cluster).await;
    let (statuses, _) = race(&nodes, 300, CONCURRENCY).await;
    let passed = count(&statuses, 200) as u64;
    assert_eq!(passed + count(&statuses, 429) as u64, 300, "{statuses:?}");
    assert!(
        (LIMIT..=LIMIT + 1).contains(&passed),
        "{passed} of 300 passed a limit of {LIMIT}"
    );
    // The keys were in several slots: each call ran a script per slot.
    let (scripts, _) = rate_scripts(&nodes).await;
    assert!(scripts >= 600.0, "{scripts} scripts for 300 calls");
    let counts = counted(&redis.nodes.iter().collect::<Vec<_>>());
    eprintln!(
        "four limits, Redis Cluster: {passed} of 300 passed, {scripts} scripts; counted {counts:?}"
    );
    assert_eq!(counts.len(), 4, "{counts:?}");
    for (name, n) in &counts {
        if name == "hour" {
            assert_eq!(*n, passed, "{counts:?}");
        } else if name != "second" {
            assert!(
                (passed..=passed + CONCURRENCY as u64).contains(n),
                "{name} counted {n}, {passed} passed: {counts:?}"
            );
        }
    }
    assert_no_panic(&nodes);
}

/// Redis Sentinel: the master is SIGKILLed and the Sentinel promotes its
/// replica. Every call the gateways answered before the kill was counted
/// on the replica too (the test waits until it has every write: what
/// replication had not yet carried over when a master dies is lost, see
/// docs/cluster.md), so the quota goes on from exactly there on the new
/// master; in between, quota calls are refused (quotas fail closed), none
/// waits past the bound, and none that was served goes uncounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_no_replicated_quota_count() {
    const QUOTA: u64 = 1000;
    let up = Upstream::start().await;
    let mut set = RedisSentinel::start();
    let cluster = format!(
        "sentinel = {{ master = {SENTINEL_MASTER:?}, addresses = [{:?}] }}\n\
         command-timeout = \"200ms\"\nconnect-timeout = \"300ms\"\n\
         breaker-failures = 2\nbreaker-cool-down = \"200ms\"",
        set.sentinel_url()
    );
    let nodes = start_nodes(2, &manifest(&up.url(), 1000, QUOTA), &cluster).await;
    let mut served = 0u64;
    for i in 0..40 {
        assert_eq!(quota_call(&nodes[i % 2]).await, Some(QUOTA - 1 - served));
        served += 1;
    }
    set.wait_replicated();

    let old = set.master.port;
    set.master.kill();
    let killed = Instant::now();
    // Calls through the failover: refused (503) until a node reaches the
    // new master, then counted there; each one bounded.
    let (mut refused, mut slowest, mut i) = (0u64, Duration::ZERO, 0usize);
    let mut in_step = [false, false];
    while !in_step.iter().all(|s| *s) {
        let n = i % 2;
        i += 1;
        let t = Instant::now();
        let r = reqwest::Client::new()
            .get(nodes[n].url("/q/x"))
            .header("x-api-key", KEY)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        slowest = slowest.max(t.elapsed());
        match r.status().as_u16() {
            200 => {
                let remaining: u64 = r.headers()["x-quota-remaining"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                served += 1;
                assert_eq!(
                    remaining,
                    QUOTA - served,
                    "counted on from the replica's count"
                );
                in_step[n] = true;
            }
            503 => refused += 1,
            s => panic!("quota call during the failover: {s}"),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no failover within 30 s:\n{}",
            set.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = killed.elapsed();
    assert_ne!(
        set.master_port(),
        Some(old),
        "the Sentinel names a new master"
    );
    assert_eq!(set.master_port(), Some(set.replica.port));
    eprintln!(
        "sentinel failover: both gateways counting on the new master {took:?} after the kill; \
         {refused} calls refused meanwhile; the slowest call {slowest:?}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a call waited {slowest:?} during the failover"
    );
    // Both nodes on the new master, which holds every served call.
    for i in 0..10 {
        assert_eq!(quota_call(&nodes[i % 2]).await, Some(QUOTA - 1 - served));
        served += 1;
    }
    assert_no_panic(&nodes);
}
