//! Deadlines that measure the step, not the machine: a step's `timeout`
//! bounds the time its guest runs (a looping step still ends there), its
//! `wall-timeout` bounds the whole phase with its host calls, and waiting
//! (for the network, or for a core on a busy machine) is not running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::*;

const MS: Duration = Duration::from_millis(1);

/// The status and error code of a call, and how long it took.
async fn call(c: &reqwest::Client, url: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code, started.elapsed())
}

/// CPU time used so far by this process's threads named `name` (their
/// `/proc/self/task/*/schedstat`, in nanoseconds on a CPU).
fn threads_cpu(name: &str) -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(ns)
}

/// A runtime of `workers` threads named `name`.
fn runtime(name: &str, workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_looping_step_ends_after_its_timeout_of_cpu_time() {
    // The gateway on runtime threads of its own, so that their CPU time is
    // the step's (and the gateway's, a little).
    let gw_rt = runtime("gw-deadline", 2);
    let client_rt = runtime("client-deadline", 2);
    let up = client_rt.block_on(Upstream::start());
    let manifest = simple_manifest(
        &up.url(),
        "[[api.chain]]\nplugin = \"fixture-loop\"\ntimeout = \"200ms\"\nconfig = { phase = \"request\" }\n",
    );
    let gw = gw_rt.block_on(async {
        let gw = TestGateway::start(&manifest).await;
        gw.until_snapshotted().await;
        gw
    });
    let c = client();
    for path in ["/loop", "/loop2"] {
        let cpu = threads_cpu("gw-deadline");
        let (status, code, took) = client_rt.block_on(call(&c, &gw.url(path)));
        let cpu = threads_cpu("gw-deadline") - cpu;
        assert_eq!((status, code.as_str()), (503, "policy_timeout"), "{path}");
        eprintln!(
            "{path}: a looping step with a 200 ms timeout used {cpu:?} of CPU, {took:?} in all"
        );
        // It ran about its 200 ms (1 ms ticks, and a tick more for each
        // time it was descheduled, so less on a busy machine): not cut
        // short by something else, not run for long.
        assert!(
            cpu >= 100 * MS && cpu <= 600 * MS,
            "{path}: the looping step used {cpu:?} of CPU for a 200 ms timeout ({took:?} in all)"
        );
        // Ended by its running time, not by the wall-clock bound (5 s).
        assert!(took < Duration::from_secs(3), "{path} took {took:?}");
    }
    drop(gw);
    gw_rt.shutdown_timeout(Duration::from_secs(5));
    drop(up);
    client_rt.shutdown_timeout(Duration::from_secs(5));
}

/// A chain with one `fixture-slowcall` step calling `url_path` on the
/// upstream (with a timeout of its own of a minute) under `limits`.
fn slowcall(up: &Upstream, url_path: &str, limits: &str) -> String {
    simple_manifest(
        &up.url(),
        &format!(
            "[[api.chain]]\nplugin = \"fixture-slowcall\"\n{limits}\ngrants = [\"http:{addr}\"]\nconfig = {{ url = \"{url}{url_path}\", timeout-ms = 60000 }}\n",
            addr = up.addr,
            url = up.url(),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_in_a_host_call_is_not_running_time() {
    // A 300 ms outbound call under the default 50 ms timeout: the step
    // waited, it did not run, so the call goes through.
    let up = Upstream::start().await;
    let gw = TestGateway::start(&slowcall(&up, "/slow/300", "")).await;
    let (status, code, took) = call(&client(), &gw.url("/waits")).await;
    assert_eq!(status, 200, "{code} after {took:?}");
    assert!(took >= 300 * MS, "{took:?}");
    assert_eq!(up.last().header("x-slowcall"), Some("200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_stuck_in_a_slow_host_call_ends_at_its_wall_timeout() {
    let up = Upstream::start().await;
    // A hanging peer, a call timeout of a minute: the wall-clock bound ends
    // the step as a timeout (the plugin ignores errors, so answering it
    // "unavailable" would let the call through).
    let gw = TestGateway::start(&slowcall(&up, "/hang", "wall-timeout = \"400ms\"")).await;
    let (status, code, took) = call(&client(), &gw.url("/stuck")).await;
    assert_eq!((status, code.as_str()), (503, "policy_timeout"));
    assert!(
        took >= 400 * MS && took < 2000 * MS,
        "took {took:?} for a 400 ms wall-clock bound"
    );
    assert!(up.requests().iter().all(|r| r.path_and_query != "/stuck"));
    assert!(
        eventually(Duration::from_secs(2), || async {
            gw.gateway.runtime.instances_in_use() == 0
        })
        .await
    );
    // The gateway's default applies to steps without their own.
    let gw = TestGateway::builder(&slowcall(&up, "/hang", ""))
        .limits("step-wall-timeout = \"300ms\"")
        .start()
        .await;
    let (status, code, took) = call(&client(), &gw.url("/stuck")).await;
    assert_eq!((status, code.as_str()), (503, "policy_timeout"));
    assert!(
        took >= 300 * MS && took < 2000 * MS,
        "took {took:?} for a 300 ms wall-clock bound"
    );
}

// ---------------------------------------------------------------------------
// An oversubscribed machine.

/// Threads that keep every core busy, two per core, until dropped (or for
/// two minutes at most, should the test not get to drop them).
struct Burners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Burners {
    fn start(per_core: usize) -> Burners {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let until = Instant::now() + Duration::from_secs(120);
        let threads = (0..cores * per_core)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        for _ in 0..10_000 {
                            n = std::hint::black_box(n.wrapping_add(1));
                        }
                    }
                    n
                })
            })
            .collect();
        Burners { stop, threads }
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

const KEY: &str = "deadline-key-51c0ffee";

/// The standard chain (key-auth, rate-limit, quota, request-size-limit,
/// transform) at the default 50 ms deadline on `/std`, limits too high to
/// be reached; a looping step, also at the default deadline, on `/loop`.
fn standard_and_loop(up: &str) -> String {
    format!(
        r#"schema = 1

[[consumer]]
id = "alice"
plan = "gold"
keys = [{{ id = "k-alice", sha256 = "{digest}" }}]

[[api]]
name = "std"
upstream = {{ targets = ["{up}"] }}
[[api.route]]
prefix = "/std"
[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]
[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = {{ limits = [{{ per = "second", requests = 10000000, by = "consumer" }}] }}
[[api.chain]]
plugin = "quota"
grants = ["counters"]
config = {{ calls = 100000000, period = "month", by = "consumer" }}
[[api.chain]]
plugin = "request-size-limit"
config = {{ max-bytes = "1MiB" }}
[[api.chain]]
plugin = "transform"
config = {{ request = {{ headers = {{ set = {{ "x-api-version" = "1" }} }} }} }}

[[api]]
name = "loop"
upstream = {{ targets = ["{up}"] }}
[[api.route]]
prefix = "/loop"
[[api.chain]]
plugin = "fixture-loop"
config = {{ phase = "request" }}
"#,
        digest = key_digest_hex(KEY),
    )
}

/// Concurrent clients, and calls each, of the standard chain.
const CLIENTS: usize = 8;
const CALLS_EACH: usize = 400;

/// With two CPU burners per core (the machine oversubscribed twice), the
/// standard chain at its default 50 ms deadline answers every one of a few
/// thousand calls (no "policy step timed out"), while a looping step, at
/// the same deadline, still ends at it (before its 5 s wall-clock bound;
/// measured 0.4-1.1 s with the machine this busy). Before steps counted their running time, the time a cheap step
/// spent waiting for a core counted against its deadline.
///
/// Load on a shared machine: `scripts/test` runs it on its own after the
/// others (`--ignored --exact`).
#[test]
#[ignore = "oversubscribes the machine: scripts/test runs it alone"]
fn oversubscribed_twice_the_standard_chain_never_times_out() {
    let gw_rt = runtime("gw-oversub", 2);
    let client_rt = runtime("client-oversub", 2);
    let up = client_rt.block_on(Upstream::start());
    let gw = gw_rt.block_on(async {
        let gw = TestGateway::start(&standard_and_loop(&up.url())).await;
        gw.until_snapshotted().await;
        gw
    });
    let std_url = gw.url("/std/pets");
    let loop_url = gw.url("/loop/x");
    client_rt.block_on(async {
        // Warm up, unloaded: the chain works.
        let c = client();
        for _ in 0..20 {
            let r = c
                .get(&std_url)
                .header("x-api-key", KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    });
    let burners = Burners::start(2);
    let started = Instant::now();
    let (counts, loops) = client_rt.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (c, u) = (client(), std_url.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::with_capacity(CALLS_EACH);
                    for _ in 0..CALLS_EACH {
                        let r = c.get(&u).header("x-api-key", KEY).send().await.unwrap();
                        let status = r.status().as_u16();
                        let v: serde_json::Value = if status == 200 {
                            r.bytes().await.unwrap();
                            serde_json::Value::Null
                        } else {
                            r.json().await.unwrap_or_default()
                        };
                        seen.push(format!(
                            "{status} {}",
                            v["error"]["code"].as_str().unwrap_or("")
                        ));
                    }
                    seen
                })
            })
            .collect();
        // Meanwhile, a looping step at the same 50 ms deadline.
        let c = client();
        let mut loops = Vec::new();
        for _ in 0..5 {
            loops.push(call(&c, &loop_url).await);
        }
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for t in tasks {
            for s in t.await.unwrap() {
                *counts.entry(s).or_default() += 1;
            }
        }
        (counts, loops)
    });
    let took = started.elapsed();
    drop(burners);
    eprintln!(
        "oversubscribed x2: {} calls in {took:?}: {counts:?}; looping step: {loops:?}",
        CLIENTS * CALLS_EACH
    );
    for (status, code, took) in &loops {
        assert_eq!(
            (*status, code.as_str()),
            (503, "policy_timeout"),
            "the looping step"
        );
        assert!(
            *took < Duration::from_secs(4),
            "the looping step ended after {took:?}, not at its 50 ms of running"
        );
    }
    assert_eq!(
        counts.get("200 ").copied().unwrap_or(0),
        CLIENTS * CALLS_EACH,
        "not every call of the standard chain succeeded: {counts:?}"
    );
    drop(gw);
    gw_rt.shutdown_timeout(Duration::from_secs(5));
    drop(up);
    client_rt.shutdown_timeout(Duration::from_secs(5));
}
