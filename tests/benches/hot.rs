//! The hot pieces of the request path, in process: path normalisation,
//! routing in a table of 200 routes, and the standard 5-step chain (key-auth,
//! rate-limit, transform, cache, access-log: every step's `on-request`, then
//! `on-response` in reverse, each on a fresh instance, as the gateway runs
//! it) against the same chain with 0 steps and 1 noop step; and what the
//! metrics do with a finished call.
//!
//! Every case runs in each of several rounds, in an order that rotates; the
//! median µs per operation over the rounds is reported with min–max, and
//! ratios against the noop step within each round.
//!
//! Run: `cargo bench -p tollgate-tests --bench hot`
//! (prints a markdown table and rewrites its section of docs/performance.md).

mod common;

use common::{Machine, Summary};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::loader::Generation;
use tollgate::policy::host::{ServiceSettings, Services};
use tollgate::policy::{
    CallContext, EngineLimits, Header, RequestDecision, RequestHead, RequestScope, ResponseHead,
    Runtime,
};

const ROUNDS: usize = 9;
const BATCH: Duration = Duration::from_millis(100);
const KEY: &str = "bench-key-0123456789";

fn chain(kind: &str) -> &'static str {
    match kind {
        "noop" => "[[api.chain]]\nplugin = \"noop\"\n",
        "standard" => {
            r#"[[api.chain]]
name = "log"
plugin = "access-log"
grants = ["timing", "sink"]

[[api.chain]]
name = "auth"
plugin = "key-auth"
grants = ["consumers"]

[[api.chain]]
name = "throttle"
plugin = "rate-limit"
grants = ["counters"]
[api.chain.config]
limits = [{ per = "second", requests = 100000000, by = "consumer" }]

[[api.chain]]
name = "tag"
plugin = "transform"
[api.chain.config.request.headers]
set = { "x-api-version" = "1" }

[[api.chain]]
name = "cache"
plugin = "cache"
grants = ["cache"]
"#
        }
        _ => "",
    }
}

/// A generation with APIs `none`, `noop`, `standard` (one route each) and
/// 197 more APIs of template, prefix and host routes to route through.
fn generation(rt: &Runtime, dir: &Path) -> Generation {
    let mut m = String::from("schema = 1\n\n");
    m.push_str(&format!(
        "[[consumer]]\nid = \"alice\"\nkeys = [{{ id = \"k1\", sha256 = \"{}\" }}]\n\n",
        tollgate::policy::host::consumers::key_digest_hex(KEY)
    ));
    for (name, chain_kind) in [("none", ""), ("noop", "noop"), ("standard", "standard")] {
        m.push_str(&format!(
            "[[api]]\nname = \"{name}\"\nupstream = {{ targets = [\"http://127.0.0.1:9\"] }}\n\n[[api.route]]\npath = \"/{name}/pets/{{id}}\"\n\n{}\n",
            chain(chain_kind)
        ));
    }
    for i in 0..197 {
        m.push_str(&format!(
            "[[api]]\nname = \"api{i}\"\nupstream = {{ targets = [\"http://127.0.0.1:9\"] }}\n\n\
             [[api.route]]\npath = \"/v{i}/orders/{{order}}/items/{{item}}\"\nmethods = [\"GET\"]\n\n\
             [[api.route]]\nprefix = \"/v{i}/files\"\n\n\
             [[api.route]]\nhosts = [\"*.tenant{i}.example.com\"]\nprefix = \"/\"\n\n"
        ));
    }
    std::fs::write(dir.join("api.toml"), m).unwrap();
    std::fs::write(
        dir.join("tollgate.toml"),
        format!(
            "schema = 1\npolicies = [\"api.toml\"]\n\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n\n[plugins]\ndirs = [{:?}]\n\n[limits]\nstep-timeout = \"1s\"\n",
            common::plugin_dir().display().to_string()
        ),
    )
    .unwrap();
    let gw_path = dir.join("tollgate.toml");
    let gw = tollgate::loader::read_gateway_file(&gw_path).expect("gateway file");
    tollgate::loader::build(&gw_path, &gw, rt).unwrap_or_else(|e| panic!("{e}"))
}

fn request(api: &str) -> (CallContext, RequestHead) {
    let h = |n: &str, v: &str| Header {
        name: n.to_string(),
        value: v.as_bytes().to_vec(),
    };
    (
        CallContext {
            request_id: "5f0c8a4e-8a51-4c4e-9d4c-2f1f6b3c9e21".into(),
            client_addr: "192.0.2.7:51234".into(),
            api: api.into(),
            route: "r".into(),
            captures: vec![("id".into(), "42".into())],
            consumer: None,
            step: String::new(),
        },
        RequestHead {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "api.example.com".into(),
            path: format!("/{api}/pets/42"),
            query: Some("include=owner".into()),
            headers: vec![
                h("host", "api.example.com"),
                h("user-agent", "bench/1.0"),
                h("accept", "application/json"),
                h("x-api-key", KEY),
                h("cookie", "session=3b1f0e6c9a"),
            ],
        },
    )
}

/// One request through an API's chain, as `server::handle` runs it.
async fn run_chain(rt: &Runtime, g: &Generation, api: usize, scope: &RequestScope) {
    let a = &g.apis[api];
    let (mut ctx, mut req) = request(&a.name);
    let mut instances = Vec::with_capacity(a.steps.len());
    for step in &a.steps {
        ctx.step.clear();
        ctx.step.push_str(&step.name);
        if !step.has_request() {
            // As the gateway does: a response-only step is instantiated
            // for its response phase.
            instances.push((step, None));
            continue;
        }
        let mut inst = rt.instantiate(step, scope).await.expect("instantiate");
        match inst
            .on_request(step, &mut ctx, &mut req, None)
            .await
            .expect("on_request")
        {
            RequestDecision::Continue(edits) => {
                if edits.consumer.is_some() {
                    ctx.consumer = edits.consumer;
                }
            }
            RequestDecision::Respond(r) => panic!("step {} answered {}", step.name, r.status),
        }
        // As the gateway does: a step without a response phase is done.
        if step.has_response() {
            instances.push((step, Some(inst)));
        }
    }
    let mut resp = ResponseHead {
        status: 200,
        headers: vec![Header {
            name: "content-type".into(),
            value: b"application/json".to_vec(),
        }],
    };
    for (step, inst) in instances.iter_mut().rev() {
        let inst = match inst {
            Some(inst) => inst,
            None => inst.insert(rt.instantiate(step, scope).await.expect("instantiate")),
        };
        black_box(
            inst.on_response(step, &mut ctx, &mut req, &mut resp, None)
                .await
                .expect("on_response"),
        );
    }
}

struct Case {
    name: &'static str,
    ops: usize,
    us: Vec<f64>,
}

fn main() {
    let machine = Machine::detect();
    println!("hot: normalisation, routing and chains in process");
    let dir = tempfile::tempdir().unwrap();
    let services = Arc::new(
        Services::new(ServiceSettings {
            store: None,
            cache_bytes: 64 << 20,
            sink_path: Some("/dev/null".into()),
            outbound_ca: None,
        })
        .expect("services"),
    );
    let rt =
        Runtime::new(EngineLimits { max_instances: 64 }, None, services.clone()).expect("runtime");
    let g = generation(&rt, dir.path());
    // The same chains served from configured snapshots, as `tollgate run`
    // serves them (the cases marked "snapshotted").
    let rt_snap = Arc::new(
        Runtime::new(EngineLimits { max_instances: 64 }, None, services).expect("runtime"),
    );
    rt_snap.enable_snapshots().expect("snapshots");
    let g_snap = generation(&rt_snap, dir.path());
    let waited = Instant::now();
    while !g_snap.snapshotted() {
        assert!(waited.elapsed() < Duration::from_secs(300), "no snapshots");
        std::thread::sleep(Duration::from_millis(20));
    }
    let idx = |n: &str| g.apis.iter().position(|a| &*a.name == n).unwrap();
    let (none, noop, standard) = (idx("none"), idx("noop"), idx("standard"));
    let scope = RequestScope {
        request_id: "bench".into(),
        consumers: g.consumers.clone(),
        ..RequestScope::default()
    };
    let ex = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let paths = [
        "/standard/pets/42",
        "/v150/orders/77/items/3",
        "/v3/files/a/b/c.txt",
        "/nowhere/at/all",
    ];
    let raw = [
        "/v1/orders/1/items/2",
        "/a/./b/../c//d%7e/%41/x",
        "/pets/%41%42%43?x",
    ];
    // A routed call as the pipeline hands it to the metrics when its
    // response body has been sent.
    let finished = tollgate::observe::CallRecord {
        at_ms: 0,
        api: "bench",
        route: "r",
        method: http::Method::GET,
        status: 200,
        scheme: "http",
        consumer: None,
        app: None,
        plan: None,
        product: None,
        key_id: None,
        client: std::net::IpAddr::from([127, 0, 0, 1]),
        bytes_in: 0,
        bytes_out: 36,
        total_us: 0,
        upstream_us: Some(300),
        cache: None,
        answered_by: None,
        aborted: false,
        cells: Some(tollgate::observe::metrics::global().route_cells("bench", "r")),
        listener: Some(tollgate::observe::metrics::global().listener_cells("public")),
    };
    let run = |name: &str, n: usize| -> Duration {
        let t = Instant::now();
        match name {
            "normalise a path" => {
                for i in 0..n {
                    let _ = black_box(tollgate::route::normalize_path(black_box(raw[i % 3])));
                }
            }
            "route in 200 APIs" => {
                for i in 0..n {
                    black_box(g.router.route("api.example.com", paths[i % 4], "GET"));
                }
            }
            "route by host wildcard" => {
                for i in 0..n {
                    black_box(
                        g.router
                            .route("x.tenant150.example.com", paths[i % 4], "GET"),
                    );
                }
            }
            "count a finished call (metrics)" => {
                let m = tollgate::observe::metrics::global();
                for i in 0..n {
                    let mut rec = finished.clone();
                    rec.total_us = (i % 2000) as u64;
                    m.call_done(black_box(&rec));
                }
            }
            chain => {
                let (rt, g, api) = match chain {
                    "chain: 0 steps" => (&rt, &g, none),
                    "chain: 1 noop step" => (&rt, &g, noop),
                    "chain: standard 5 steps" => (&rt, &g, standard),
                    "chain: 1 noop step, snapshotted" => (&*rt_snap, &g_snap, noop),
                    "chain: standard 5 steps, snapshotted" => (&*rt_snap, &g_snap, standard),
                    _ => unreachable!(),
                };
                ex.block_on(async {
                    for _ in 0..n {
                        run_chain(rt, g, api, &scope).await;
                    }
                })
            }
        }
        t.elapsed()
    };
    let names = [
        "normalise a path",
        "route in 200 APIs",
        "route by host wildcard",
        "chain: 0 steps",
        "chain: 1 noop step",
        "chain: standard 5 steps",
        "chain: 1 noop step, snapshotted",
        "chain: standard 5 steps, snapshotted",
        "count a finished call (metrics)",
    ];
    // `HOT_ONLY=standard` runs only the cases whose name contains it (for
    // profiling one case with perf); the docs are then left alone.
    let only = std::env::var("HOT_ONLY").ok();
    let mut cases: Vec<Case> = names
        .iter()
        .filter(|n| only.as_deref().is_none_or(|o| n.contains(o)))
        .map(|&name| {
            run(name, 100);
            let probe = 200;
            let per = run(name, probe).as_secs_f64() / probe as f64;
            Case {
                name,
                ops: ((BATCH.as_secs_f64() / per.max(1e-9)) as usize).clamp(100, 5_000_000),
                us: Vec::new(),
            }
        })
        .collect();
    let rounds = std::env::var("HOT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    for round in 0..rounds {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let t = run(cases[i].name, cases[i].ops);
            let us = t.as_secs_f64() * 1e6 / cases[i].ops as f64;
            cases[i].us.push(us);
        }
        eprint!(".");
    }
    eprintln!();
    if only.is_some() {
        for c in &cases {
            println!("{}: {} µs", c.name, Summary::of(&c.us).fmt(3));
        }
        return;
    }
    let noop_us = cases[4].us.clone();
    let mut table = String::from(
        "| operation | µs per operation | ÷ 1 noop step (same round) |\n|---|---|---|\n",
    );
    for c in &cases {
        let ratio: Vec<f64> = c.us.iter().zip(&noop_us).map(|(a, b)| a / b).collect();
        table.push_str(&format!(
            "| {} | {} | {} |\n",
            c.name,
            Summary::of(&c.us).fmt(3),
            Summary::of(&ratio).fmt_ratio()
        ));
    }
    let mut body = String::from("## Hot pieces in process (`hot`)\n\n");
    body.push_str(&machine.markdown("cargo bench -p tollgate-tests --bench hot"));
    body.push_str(&format!(
        "- {ROUNDS} interleaved rounds of about {} ms per case; median (min–max). One thread, \
         no network: what the gateway spends on these pieces of a request, without hyper, \
         the upstream or the kernel.\n\
         - chains: every step's `on-request` then `on-response` in reverse (for the steps \
         with a response phase), each step on a fresh instance, as `server::handle` runs \
         them: configured per call, or (\"snapshotted\") instantiated from the step's \
         configured snapshot, as `tollgate run` serves once the snapshot is built; the standard \
         chain is access-log, key-auth (manifest consumer), rate-limit (in-memory counter), \
         transform (one header), cache (a miss: nothing stored for an authorised call).\n\n",
        BATCH.as_millis()
    ));
    body.push_str(&table);
    body.push('\n');
    println!();
    print!("{body}");
    common::write_doc_section("hot", &body);
}
