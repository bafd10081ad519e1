//! What a policy step costs per call, in process, on the policy runtime the
//! gateway uses (`tollgate::policy::Runtime`, pooling allocator, plugins built
//! from this tree):
//!
//! - fresh: `instantiate` (which runs `configure`) + `on_request`, then drop
//!   the instance: what the gateway does for every step of every request;
//! - reused: `on_request` on one instance kept across calls;
//! - warm: the gateway's `worker` isolation: `instantiate` (which takes the
//!   warm instance the worker's pool keeps) + `on_request` + `release`;
//! - instantiate: `instantiate` (with `configure`) and drop, no phase.
//!
//! Every case runs in each of several rounds, in an order that rotates from
//! round to round; each round times a batch of calls sized to take about
//! 80 ms. Reported: the median µs per call over the rounds with min–max, and
//! the ratio fresh ÷ reused taken within each round.
//!
//! Run: `cargo bench -p tollgate-tests --bench instances`
//! (prints a markdown table and rewrites its section of docs/performance.md).

mod common;

use common::{Machine, Summary};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::policy::host::{Grants, Services};
use tollgate::policy::reuse::MAX_MAX_USES;
use tollgate::policy::{
    CallContext, EngineLimits, Header, HeaderOp, Isolation, RequestDecision, RequestHead,
    RequestScope, Runtime, Step, StepInstance,
};

/// Rounds over all cases (odd, so the median is one of them).
const ROUNDS: usize = 11;
/// About how long one case runs in one round.
const BATCH: Duration = Duration::from_millis(80);
/// The transform step's configuration.
const TRANSFORM_CONFIG: &str = r#"{"request":{"headers":{"set":{"x-a":"1"}}}}"#;
/// The deadline given to the steps. The gateway uses 50 ms per phase; a
/// reused instance here runs thousands of calls under one deadline set at
/// `instantiate`, so the bench gives it an hour. The deadline's value does
/// not change the cost of a call.
const STEP_TIMEOUT: Duration = Duration::from_secs(3600);
const STEP_MEMORY: usize = 16 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Fresh,
    /// As `Fresh`, but instances are dropped in groups of [`IN_FLIGHT`], as
    /// when that many requests are in flight: the pool's slots rotate.
    FreshInFlight,
    Reused,
    /// A `worker`-isolation step: taken from and given back to the pool.
    Warm,
    Instantiate,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::Fresh,
        Mode::FreshInFlight,
        Mode::Reused,
        Mode::Warm,
        Mode::Instantiate,
    ];
}

/// Instances alive at once in the `FreshInFlight` case (the gateway bench
/// keeps 32 requests in flight).
const IN_FLIGHT: usize = 32;

/// A request as the gateway would hand it to a step: 10 headers, a query,
/// a route capture.
fn request() -> (CallContext, RequestHead) {
    let h = |n: &str, v: &str| Header {
        name: n.to_string(),
        value: v.as_bytes().to_vec(),
    };
    let ctx = CallContext {
        request_id: "5f0c8a4e-8a51-4c4e-9d4c-2f1f6b3c9e21".into(),
        client_addr: "192.0.2.7:51234".into(),
        api: "pets".into(),
        route: "get-pet".into(),
        captures: vec![("id".into(), "42".into())],
        consumer: None,
        step: "bench".into(),
    };
    let req = RequestHead {
        method: "GET".into(),
        scheme: "https".into(),
        authority: "api.example.com".into(),
        path: "/pets/42".into(),
        query: Some("include=owner&v=2".into()),
        headers: vec![
            h("host", "api.example.com"),
            h(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ),
            h("accept", "application/json, text/plain;q=0.9, */*;q=0.8"),
            h("accept-encoding", "gzip, deflate, br"),
            h("accept-language", "en-GB,en;q=0.7"),
            h(
                "authorization",
                "Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhcHAtNDIifQ.c2ln",
            ),
            h("x-forwarded-for", "198.51.100.23"),
            h(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            h("cookie", "session=3b1f0e6c9a; theme=dark"),
            h("cache-control", "no-cache"),
        ],
    };
    (ctx, req)
}

struct Plugin {
    name: &'static str,
    step: Step,
    /// The same step under `worker` isolation (the `warm` case).
    worker: Step,
    /// The instance the `reused` case calls again and again.
    reused: StepInstance,
}

struct Case {
    plugin: usize,
    mode: Mode,
    /// Calls per round.
    calls: usize,
    /// µs per call, one value per round.
    us: Vec<f64>,
}

async fn run_batch(
    rt: &Runtime,
    p: &mut Plugin,
    mode: Mode,
    calls: usize,
    scope: &RequestScope,
    ctx: &mut CallContext,
    req: &mut RequestHead,
) -> Duration {
    let start = Instant::now();
    match mode {
        Mode::Fresh => {
            for _ in 0..calls {
                let mut inst = rt.instantiate(&p.step, scope).await.expect("instantiate");
                let d = inst
                    .on_request(&p.step, &mut *ctx, &mut *req, None)
                    .await
                    .expect("on_request");
                black_box(d);
                drop(inst);
            }
        }
        Mode::FreshInFlight => {
            let mut alive = Vec::with_capacity(IN_FLIGHT);
            for _ in 0..calls {
                let mut inst = rt.instantiate(&p.step, scope).await.expect("instantiate");
                let d = inst
                    .on_request(&p.step, &mut *ctx, &mut *req, None)
                    .await
                    .expect("on_request");
                black_box(d);
                alive.push(inst);
                if alive.len() == IN_FLIGHT {
                    alive.clear();
                }
            }
            alive.clear();
        }
        Mode::Reused => {
            for _ in 0..calls {
                let d = p
                    .reused
                    .on_request(&p.step, &mut *ctx, &mut *req, None)
                    .await
                    .expect("on_request");
                black_box(d);
            }
        }
        Mode::Warm => {
            for _ in 0..calls {
                let mut inst = rt.instantiate(&p.worker, scope).await.expect("instantiate");
                let d = inst
                    .on_request(&p.worker, &mut *ctx, &mut *req, None)
                    .await
                    .expect("on_request");
                black_box(d);
                rt.release(&p.worker, inst).await;
            }
        }
        Mode::Instantiate => {
            for _ in 0..calls {
                let inst = rt.instantiate(&p.step, scope).await.expect("instantiate");
                black_box(&inst);
                drop(inst);
            }
        }
    }
    start.elapsed()
}

fn load(
    scope: &RequestScope,
    ex: &tokio::runtime::Runtime,
    rt: &Runtime,
    name: &'static str,
    config: &str,
) -> Plugin {
    let path = common::plugin_dir().join(format!("{name}.wasm"));
    let plugin = rt
        .load_plugin(name, &path)
        .unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));
    let step = rt
        .configure_step(
            "pets",
            name,
            Arc::clone(&plugin),
            config.to_string(),
            STEP_TIMEOUT,
            STEP_MEMORY,
            false,
            Grants::default(),
        )
        .unwrap_or_else(|e| panic!("configuring {name}: {e}"));
    let reused = ex
        .block_on(rt.instantiate(&step, scope))
        .unwrap_or_else(|e| panic!("instantiating {name}: {e}"));
    let worker =
        step.clone()
            .with_isolation(Isolation::Worker, MAX_MAX_USES, Duration::from_secs(3600));
    Plugin {
        name,
        step,
        worker,
        reused,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags are ignored.
    let machine = Machine::detect();
    println!("instances: per-call cost of fresh vs reused policy instances");
    // The plugins here use no host service: the services of
    // `tollgate check` (no store, output discarded) will do.
    let rt = Runtime::new(
        EngineLimits { max_instances: 64 },
        None,
        Arc::new(Services::for_check()),
    )
    .expect("policy runtime");
    // The policy API is async (wasmtime's async support): every batch runs
    // as one future on a single-threaded tokio runtime. `configure_step`
    // runs outside it (it blocks on its own).
    let (mut ctx, mut req) = request();
    let scope = RequestScope {
        request_id: ctx.request_id.clone(),
        ..RequestScope::default()
    };
    let ex = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut plugins = vec![
        load(&scope, &ex, &rt, "noop", "{}"),
        load(&scope, &ex, &rt, "transform", TRANSFORM_CONFIG),
    ];

    // Check that the steps do what the bench says they do.
    for p in &mut plugins {
        let d = ex
            .block_on(p.reused.on_request(&p.step, &mut ctx, &mut req, None))
            .expect("on_request");
        let RequestDecision::Continue(edits) = d else {
            panic!("{} did not continue", p.name);
        };
        match p.name {
            "noop" => assert!(edits.headers.is_empty(), "noop edited headers"),
            _ => assert!(
                matches!(&edits.headers[..], [HeaderOp::Set(h)] if h.name == "x-a" && h.value == b"1"),
                "transform did not set x-a: {:?}",
                edits.headers
            ),
        }
    }

    // Warm up every case and size its batch to about BATCH.
    let mut cases = Vec::new();
    for (pi, plugin) in plugins.iter_mut().enumerate() {
        for mode in Mode::ALL {
            ex.block_on(run_batch(
                &rt, plugin, mode, 200, &scope, &mut ctx, &mut req,
            ));
            let probe = 500;
            let t = ex.block_on(run_batch(
                &rt, plugin, mode, probe, &scope, &mut ctx, &mut req,
            ));
            let per_call = t.as_secs_f64() / probe as f64;
            let calls = ((BATCH.as_secs_f64() / per_call) as usize).clamp(200, 2_000_000);
            cases.push(Case {
                plugin: pi,
                mode,
                calls,
                us: Vec::with_capacity(ROUNDS),
            });
        }
    }

    let started = Instant::now();
    for round in 0..ROUNDS {
        let n = cases.len();
        for k in 0..n {
            // Rotate the order so no case always runs first or last.
            let i = (k + round) % n;
            let c = &cases[i];
            let t = ex.block_on(run_batch(
                &rt,
                &mut plugins[c.plugin],
                c.mode,
                c.calls,
                &scope,
                &mut ctx,
                &mut req,
            ));
            let us = t.as_secs_f64() * 1e6 / c.calls as f64;
            cases[i].us.push(us);
        }
        eprint!(".");
    }
    eprintln!(
        " {ROUNDS} rounds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Only the reused instances and the warm ones (one per worker step, on
    // this one thread) are still alive: fresh ones were dropped.
    assert_eq!(rt.idle_instances(), plugins.len());
    assert_eq!(rt.live_instances(), 2 * plugins.len());
    let counts = rt.reuse_counts();
    assert_eq!(counts.discarded, 0, "{counts:?}");

    let find = |pi: usize, mode: Mode| {
        cases
            .iter()
            .find(|c| c.plugin == pi && c.mode == mode)
            .expect("case")
    };
    let mut table = String::new();
    table.push_str(&format!(
        "| plugin | fresh: instantiate + configure + on-request, µs/call | \
         fresh, {IN_FLIGHT} alive at once, µs/call | reused: on-request, µs/call | \
         fresh ÷ reused | fresh ({IN_FLIGHT} alive) ÷ reused | \
         instantiate + configure alone, µs | fresh − instantiate, µs | \
         warm (worker isolation): take + on-request + release, µs/call | fresh ÷ warm |\n\
         |---|---|---|---|---|---|---|---|---|---|\n"
    ));
    for (pi, p) in plugins.iter().enumerate() {
        let fresh = find(pi, Mode::Fresh);
        let in_flight = find(pi, Mode::FreshInFlight);
        let reused = find(pi, Mode::Reused);
        let inst = find(pi, Mode::Instantiate);
        let ratio: Vec<f64> = (0..ROUNDS).map(|r| fresh.us[r] / reused.us[r]).collect();
        let ratio_in_flight: Vec<f64> = (0..ROUNDS)
            .map(|r| in_flight.us[r] / reused.us[r])
            .collect();
        let rest: Vec<f64> = (0..ROUNDS).map(|r| fresh.us[r] - inst.us[r]).collect();
        let warm = find(pi, Mode::Warm);
        let ratio_warm: Vec<f64> = (0..ROUNDS).map(|r| fresh.us[r] / warm.us[r]).collect();
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            p.name,
            Summary::of(&fresh.us).fmt(1),
            Summary::of(&in_flight.us).fmt(1),
            Summary::of(&reused.us).fmt(2),
            Summary::of(&ratio).fmt_ratio(),
            Summary::of(&ratio_in_flight).fmt_ratio(),
            Summary::of(&inst.us).fmt(1),
            Summary::of(&rest).fmt(1),
            Summary::of(&warm.us).fmt(2),
            Summary::of(&ratio_warm).fmt_ratio(),
        ));
    }
    let calls: Vec<String> = cases
        .iter()
        .map(|c| format!("{} {:?} {}", plugins[c.plugin].name, c.mode, c.calls))
        .collect();

    let mut body = String::new();
    body.push_str("## Policy instances: fresh vs reused (`instances`)\n\n");
    body.push_str(&machine.markdown("cargo bench -p tollgate-tests --bench instances"));
    body.push_str(&format!(
        "- {ROUNDS} interleaved rounds; per round and case one batch of calls \
         (about {} ms); figures are the median over the rounds (min–max); \
         ratios are taken within each round. Wall time, one thread.\n\
         - `{IN_FLIGHT} alive at once`: as fresh, but the instances are dropped in groups \
         of {IN_FLIGHT}, as when {IN_FLIGHT} requests are in flight in the gateway: the \
         pool's slots rotate instead of one slot being reused while hot in cache.\n\
         - calls per batch: {}\n\
         - runtime as the gateway builds it (pooling allocator, epoch deadlines), \
         step memory cap 16 MiB; request: `GET /pets/42?include=owner&v=2` with 10 headers \
         and a route capture; transform config `{TRANSFORM_CONFIG}`.\n\n",
        BATCH.as_millis(),
        calls.join(", "),
    ));
    body.push_str(&table);
    body.push_str(
        "\n`fresh − instantiate` is what `on-request` costs as the first call on a new \
         instance (its memory pages are touched for the first time), against the \
         `reused` column for a warm one.\n\n",
    );
    println!();
    print!("{body}");
    common::write_doc_section("instances", &body);
}
