//! CPU cost per request of the gateway, end to end, with real processes:
//! the release `tollgate` binary as `demo-upstream` and as `run` gateways,
//! and a load generator in this process on loopback.
//!
//! Variants, interleaved over several rounds (the order rotates):
//! - direct: the load goes straight to the demo upstream (the baseline);
//! - 0 steps: through a gateway whose API has no policy chain;
//! - 1 noop step: through a gateway whose API runs the `noop` policy, on a
//!   fresh instance per request (the only mode the gateway has).
//!
//! Two phases, each of several rounds: saturated (32 requests in flight, as
//! fast as the processes answer: throughput) and paced (the same request
//! rate for every variant: CPU per request at equal load, since CPU per
//! request rises in every process as the request rate falls).
//!
//! CPU is read from each process's own `/proc/<pid>/stat` (utime + stime,
//! in clock ticks) before and after a round's load, and divided by the
//! requests served. Reported per variant: median over the rounds with
//! min–max, and ratios taken within each round against the direct
//! upstream and against the gateway with 0 steps.
//!
//! Run: `cargo bench -p tollgate-tests --bench gateway`
//! (prints a markdown table and rewrites its section of docs/performance.md).

mod common;

use bytes::Bytes;
use common::{Machine, Summary};
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tollgate_tests::free_port;

/// Measured rounds (odd, so the median is one of them).
const ROUNDS: usize = 7;
/// Requests per variant and round in the saturated phase.
const REQUESTS: usize = 20_000;
/// Requests per variant in the warm-up round (not reported).
const WARMUP_REQUESTS: usize = 5_000;
/// The rate every variant gets in the paced phase (below what the slowest
/// variant sustains on a 2-core machine).
const PACED_RATE: f64 = 4000.0;
/// Requests per variant and round in the paced phase.
const PACED_REQUESTS: usize = 16_000;
/// Keep-alive connections the load generator keeps busy.
const CONNECTIONS: usize = 32;
/// How long the idle CPU of the processes is measured.
const IDLE: Duration = Duration::from_secs(3);
const PATH: &str = "/echo/x";

// ---------------------------------------------------------------------------
// Processes

/// Every process this bench started; all are killed (by PID) and reaped
/// when this is dropped, also when the bench panics.
#[derive(Default)]
struct Processes {
    children: Vec<(String, Child, PathBuf)>,
}

impl Processes {
    /// Start `bin args...` with its output in `log`.
    fn spawn(&mut self, name: &str, bin: &Path, args: &[&str], log: &Path) -> usize {
        let out = std::fs::File::create(log).expect("creating a log file");
        let err = out.try_clone().expect("cloning a log file");
        let child = Command::new(bin)
            .args(args)
            .env("TOLLGATE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", bin.display()));
        self.children
            .push((name.to_string(), child, log.to_path_buf()));
        self.children.len() - 1
    }

    fn pid(&self, i: usize) -> u32 {
        self.children[i].1.id()
    }

    /// Poll until the process accepts connections on `port`.
    fn wait_ready(&mut self, i: usize, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            let (name, child, log) = &mut self.children[i];
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{name} exited ({status}) before listening on {port}:\n{log}");
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&*log).unwrap_or_default();
                panic!("{name} did not listen on {port} within 120 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (name, child, _) in self.children.iter_mut().rev() {
            // `Child::kill` sends SIGKILL to this child's PID only.
            if let Err(e) = child.kill() {
                eprintln!("killing {name} (pid {}): {e}", child.id());
            }
            let _ = child.wait();
        }
    }
}

/// Clock ticks per second for `/proc/<pid>/stat`: 100 on Linux, checked
/// with `getconf CLK_TCK`.
fn clk_tck() -> f64 {
    const ASSUMED: u64 = 100;
    let got = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        });
    match got {
        Some(v) if v == ASSUMED => v as f64,
        Some(v) => {
            eprintln!("note: getconf CLK_TCK = {v}, not {ASSUMED}; using {v}");
            v as f64
        }
        None => {
            eprintln!("note: getconf CLK_TCK failed; assuming {ASSUMED}");
            ASSUMED as f64
        }
    }
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    // The command name (field 2) is in parentheses and may hold spaces;
    // fields are counted after its closing parenthesis, from field 3.
    let rest = &stat[stat.rfind(')').expect("malformed stat") + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> u64 { f[n - 3].parse().expect("a number in stat") };
    field(14) + field(15)
}

/// Build the release binary and return its path.
fn build_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building: cargo build --release -p tollgate --bin tollgate");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "tollgate", "--bin", "tollgate"])
        .current_dir(common::root())
        .status()
        .expect("running cargo build");
    assert!(
        status.success(),
        "building the release tollgate binary failed"
    );
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| common::root().join("target"));
    let bin = target.join("release").join("tollgate");
    assert!(bin.exists(), "no binary at {}", bin.display());
    bin
}

/// The demo's standard chain without the cache step (every call reaches the
/// upstream): access-log, key-auth, rate-limit, quota (durable), transform.
const STANDARD_CHAIN: &str = r#"
[[api.chain]]
plugin = "access-log"
grants = ["timing", "sink"]

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]

[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = { limits = [{ per = "second", requests = 1000000, by = "consumer" }] }

[[api.chain]]
plugin = "quota"
grants = ["counters"]
config = { calls = 1000000000, period = "month" }

[[api.chain]]
plugin = "transform"
config = { request = { headers = { set = { "x-api-version" = "1" } } }, response = { headers = { set = { "x-served-by" = "tollgate" } } } }
"#;

/// Write a gateway file (and its API manifest) into `dir`.
fn gateway_files(dir: &Path, port: u16, upstream_port: u16, chain: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let manifest = format!(
        r#"schema = 1

[[api]]
name = "bench"
upstream = {{ targets = ["http://127.0.0.1:{upstream_port}"] }}

[[api.route]]
name = "all"
prefix = "/"
{chain}

[[consumer]]
id = "bench"
app = "bench-app"
plan = "gold"
keys = [{{ id = "k", sha256 = "{digest}" }}]
"#,
        digest = tollgate::policy::host::consumers::key_digest_hex("bench-key-0123456789"),
    );
    std::fs::write(dir.join("api.toml"), manifest).unwrap();
    let gw = format!(
        r#"schema = 1
data-dir = "data"
policies = ["api.toml"]

[[listener]]
name = "bench"
address = "127.0.0.1:{port}"

[plugins]
dirs = [{plugins:?}]

[reload]
watch = false

[access-log]
path = "access.log"
"#,
        plugins = common::plugin_dir().display().to_string(),
    );
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, gw).unwrap();
    path
}

// ---------------------------------------------------------------------------
// Load

fn request(authority: &str) -> Request<Empty<Bytes>> {
    Request::get(PATH)
        .header(header::HOST, authority)
        .header(header::USER_AGENT, "tollgate-bench/1")
        .header(header::ACCEPT, "application/json")
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .header(header::ACCEPT_LANGUAGE, "en-GB,en;q=0.7")
        .header("x-client-id", "bench-client-42")
        // The standard-chain variant authenticates with this key.
        .header("x-api-key", "bench-key-0123456789")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Empty::new())
        .unwrap()
}

/// Send `total` GET requests over `connections` keep-alive HTTP/1.1
/// connections to `port`, each connection sending its next request when
/// the previous response is read (`rate` `None`: as fast as the servers
/// answer), or also no sooner than its share of `rate` requests/s allows
/// (`Some`: the connections' send times are staggered over the period, and
/// a connection that falls behind catches up). Responses other than 200
/// are counted (and the first one kept) rather than ending the bench, so
/// that a gateway failing under load shows in the report.
async fn load(port: u16, connections: usize, total: usize, rate: Option<f64>) -> Outcome {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let authority = addr.to_string();
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(addr).await.expect("connecting");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        senders.push(sender);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for (i, mut sender) in senders.into_iter().enumerate() {
        let next = next.clone();
        let authority = authority.clone();
        let mut pace = rate.map(|r| {
            let period = Duration::from_secs_f64(connections as f64 / r);
            let first = tokio::time::Instant::from_std(start)
                + period.mul_f64(i as f64 / connections as f64);
            let mut iv = tokio::time::interval_at(first, period);
            iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
            iv
        });
        tasks.push(tokio::spawn(async move {
            let mut failed = 0usize;
            let mut first: Option<String> = None;
            loop {
                if let Some(iv) = &mut pace {
                    iv.tick().await;
                }
                if next.fetch_add(1, Ordering::Relaxed) >= total {
                    break;
                }
                sender.ready().await.expect("connection closed");
                let resp = sender
                    .send_request(request(&authority))
                    .await
                    .expect("sending a request");
                let status = resp.status();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .expect("reading a response")
                    .to_bytes();
                if status != 200 {
                    failed += 1;
                    first.get_or_insert_with(|| {
                        format!("{status}: {}", String::from_utf8_lossy(&body))
                    });
                }
                std::hint::black_box(body);
            }
            (failed, first)
        }));
    }
    let mut out = Outcome {
        wall: Duration::ZERO,
        failed: 0,
        first_failure: None,
    };
    for t in tasks {
        let (failed, first) = t.await.expect("a load task failed");
        out.failed += failed;
        if out.first_failure.is_none() {
            out.first_failure = first;
        }
    }
    out.wall = start.elapsed();
    out
}

/// What one run of [`load`] saw.
struct Outcome {
    /// From the first request to the last response.
    wall: Duration,
    /// Responses other than 200.
    failed: usize,
    first_failure: Option<String>,
}

// ---------------------------------------------------------------------------
// Measurement

/// A process under test: where the load goes, and the gateway's PID if it
/// is one (for direct, the load goes to the upstream).
struct Variant {
    name: &'static str,
    port: u16,
    proxy_pid: Option<String>,
}

/// One variant's figures in one phase: one value per round.
#[derive(Default)]
struct Series {
    rps: Vec<f64>,
    proxy_us: Vec<f64>,
    upstream_us: Vec<f64>,
    client_us: Vec<f64>,
    /// Responses other than 200, over all rounds.
    failed: usize,
    first_failure: Option<String>,
}

struct Sample {
    rps: f64,
    proxy_us: f64,
    upstream_us: f64,
    client_us: f64,
    outcome: Outcome,
}

/// Offer one batch of load to `v` and read every process's CPU around it.
fn measure(
    rt: &tokio::runtime::Runtime,
    v: &Variant,
    upstream_pid: &str,
    ticks_per_s: f64,
    requests: usize,
    rate: Option<f64>,
) -> Sample {
    let proxy0 = v.proxy_pid.as_deref().map(cpu_ticks);
    let up0 = cpu_ticks(upstream_pid);
    let me0 = cpu_ticks("self");
    let outcome = rt.block_on(load(v.port, CONNECTIONS, requests, rate));
    // Let the servers finish with the closed connections.
    std::thread::sleep(Duration::from_millis(50));
    let me1 = cpu_ticks("self");
    let up1 = cpu_ticks(upstream_pid);
    let proxy1 = v.proxy_pid.as_deref().map(cpu_ticks);
    let us_per_req = |ticks: u64| ticks as f64 / ticks_per_s * 1e6 / requests as f64;
    Sample {
        rps: requests as f64 / outcome.wall.as_secs_f64(),
        proxy_us: match (proxy0, proxy1) {
            (Some(a), Some(b)) => us_per_req(b - a),
            _ => f64::NAN,
        },
        upstream_us: us_per_req(up1 - up0),
        client_us: us_per_req(me1 - me0),
        outcome,
    }
}

/// Run every variant once per round, the order rotating from round to round.
fn run_phase(
    rt: &tokio::runtime::Runtime,
    variants: &[Variant],
    upstream_pid: &str,
    ticks_per_s: f64,
    requests: usize,
    rate: Option<f64>,
) -> Vec<Series> {
    let mut series: Vec<Series> = variants.iter().map(|_| Series::default()).collect();
    let n = variants.len();
    for round in 0..ROUNDS {
        let mut line = format!("round {}:", round + 1);
        for k in 0..n {
            let i = (k + round) % n;
            let v = &variants[i];
            let s = measure(rt, v, upstream_pid, ticks_per_s, requests, rate);
            line.push_str(&format!("  {}: {:.0} req/s,", v.name, s.rps));
            if v.proxy_pid.is_some() {
                line.push_str(&format!(" gateway {:.1} µs,", s.proxy_us));
            }
            line.push_str(&format!(" upstream {:.1} µs;", s.upstream_us));
            if s.outcome.failed > 0 {
                line.push_str(&format!(" {} non-200!", s.outcome.failed));
            }
            let out = &mut series[i];
            out.rps.push(s.rps);
            out.proxy_us.push(s.proxy_us);
            out.upstream_us.push(s.upstream_us);
            out.client_us.push(s.client_us);
            out.failed += s.outcome.failed;
            if out.first_failure.is_none() {
                out.first_failure = s.outcome.first_failure;
            }
        }
        println!("{line}");
    }
    series
}

/// The markdown table of one phase, and lines under it. Variant 0 is
/// direct, variant 1 the gateway with 0 steps.
fn report(variants: &[Variant], series: &[Series], requests: usize) -> String {
    let direct = &series[0];
    let zero = &series[1];
    let per_round = |f: &dyn Fn(usize) -> f64| -> Summary {
        Summary::of(&(0..ROUNDS).map(f).collect::<Vec<_>>())
    };
    let mut out = String::from(
        "| variant | requests/s | requests/s ÷ direct | gateway CPU µs/req | \
         upstream CPU µs/req | gateway ÷ direct upstream | \
         (gateway + upstream) ÷ direct upstream | gateway ÷ 0 steps | \
         load generator CPU µs/req | non-200 responses |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (v, s) in variants.iter().zip(series) {
        let is_direct = v.proxy_pid.is_none();
        let gateway = |text: String| if is_direct { "—".to_string() } else { text };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} of {} |\n",
            v.name,
            Summary::of(&s.rps).fmt(0),
            per_round(&|r| s.rps[r] / direct.rps[r]).fmt_ratio(),
            gateway(Summary::of(&s.proxy_us).fmt(1)),
            Summary::of(&s.upstream_us).fmt(1),
            gateway(per_round(&|r| s.proxy_us[r] / direct.upstream_us[r]).fmt_ratio()),
            per_round(&|r| {
                let own = if is_direct { 0.0 } else { s.proxy_us[r] };
                (own + s.upstream_us[r]) / direct.upstream_us[r]
            })
            .fmt_ratio(),
            gateway(per_round(&|r| s.proxy_us[r] / zero.proxy_us[r]).fmt_ratio()),
            Summary::of(&s.client_us).fmt(1),
            s.failed,
            requests * ROUNDS,
        ));
    }
    out.push('\n');
    for (v, s) in variants.iter().zip(series).skip(2) {
        out.push_str(&format!(
            "- {}: the gateway spends +{} µs CPU per request over 0 steps \
             (the upstream +{} µs over its direct figure)\n",
            v.name,
            per_round(&|r| s.proxy_us[r] - zero.proxy_us[r]).fmt(1),
            per_round(&|r| s.upstream_us[r] - direct.upstream_us[r]).fmt(1),
        ));
    }
    for (v, s) in variants.iter().zip(series) {
        if let Some(f) = &s.first_failure {
            out.push_str(&format!(
                "- **{}: {} responses other than 200**; the first: `{}`\n",
                v.name,
                s.failed,
                f.replace('`', "'")
            ));
        }
    }
    out.push('\n');
    out
}

fn main() {
    let machine = Machine::detect();
    println!("gateway: CPU per request, direct vs through the gateway");
    let ticks_per_s = clk_tck();
    let bin = build_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    // Declared after `dir`, so the processes die before their files go.
    let mut procs = Processes::default();

    let up_port = free_port();
    let up = procs.spawn(
        "demo-upstream",
        &bin,
        &["demo-upstream", "--listen", &format!("127.0.0.1:{up_port}")],
        &dir.path().join("upstream.log"),
    );
    let up_pid = procs.pid(up).to_string();

    let mut variants = vec![Variant {
        name: "direct",
        port: up_port,
        proxy_pid: None,
    }];
    let mut gateways = Vec::new();
    for (name, chain) in [
        ("0 steps", ""),
        (
            "1 noop step",
            "\n[[api.chain]]\nname = \"noop\"\nplugin = \"noop\"\n",
        ),
        ("standard chain", STANDARD_CHAIN),
    ] {
        let port = free_port();
        let sub = dir.path().join(name.replace(' ', "-"));
        let file = gateway_files(&sub, port, up_port, chain);
        let i = procs.spawn(
            name,
            &bin,
            &["run", "--config", file.to_str().unwrap()],
            &sub.join("gateway.log"),
        );
        gateways.push((port, i));
        variants.push(Variant {
            name,
            port,
            proxy_pid: Some(procs.pid(i).to_string()),
        });
    }
    procs.wait_ready(up, up_port);
    for &(port, i) in &gateways {
        procs.wait_ready(i, port);
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    // Idle cost: every process, no load.
    let idle_pids: Vec<(String, &str)> = variants
        .iter()
        .map(|v| match &v.proxy_pid {
            None => ("demo-upstream".to_string(), up_pid.as_str()),
            Some(p) => (format!("gateway with {}", v.name), p.as_str()),
        })
        .collect();
    let before: Vec<u64> = idle_pids.iter().map(|(_, p)| cpu_ticks(p)).collect();
    std::thread::sleep(IDLE);
    let idle: Vec<String> = idle_pids
        .iter()
        .zip(before)
        .map(|((name, pid), b)| {
            let ms_per_s = (cpu_ticks(pid) - b) as f64 / ticks_per_s * 1e3 / IDLE.as_secs_f64();
            format!("{name} {ms_per_s:.1} ms/s")
        })
        .collect();
    println!("idle CPU: {}", idle.join(", "));

    // Warm-up: connections, pools, caches, the plugin's first instances.
    for v in &variants {
        measure(&rt, v, &up_pid, ticks_per_s, WARMUP_REQUESTS, None);
    }

    let started = Instant::now();
    println!("saturated: {CONNECTIONS} requests in flight, {REQUESTS} per variant and round");
    let saturated = run_phase(&rt, &variants, &up_pid, ticks_per_s, REQUESTS, None);
    println!("paced: {PACED_RATE} requests/s, {PACED_REQUESTS} per variant and round");
    let paced = run_phase(
        &rt,
        &variants,
        &up_pid,
        ticks_per_s,
        PACED_REQUESTS,
        Some(PACED_RATE),
    );
    let elapsed = started.elapsed();

    let mut body = String::new();
    body.push_str("## Gateway CPU per request (`gateway`)\n\n");
    body.push_str(&machine.markdown("cargo bench -p tollgate-tests --bench gateway"));
    body.push_str(&format!(
        "- processes: the release `tollgate` binary as `demo-upstream` and as two `run` \
         gateways (`TOLLGATE_LOG=warn`, file watch off, default limits), all started once \
         and kept for the whole run; the load generator runs in the bench process (one \
         tokio thread, hyper HTTP/1.1 client).\n\
         - load: `GET {PATH}` with 8 request headers over {CONNECTIONS} keep-alive \
         connections, one request in flight per connection, in {ROUNDS} rounds after a \
         warm-up of {WARMUP_REQUESTS} requests per variant; in each round every variant \
         gets its batch, in an order that rotates from round to round ({:.0} s of load \
         in all).\n\
         - CPU: utime + stime from `/proc/<pid>/stat` ({ticks_per_s} ticks/s) of each \
         process over a batch, ÷ requests served. Figures are medians over the rounds \
         (min–max); ratios are taken within each round, then summarised.\n\
         - idle CPU with no load (over {} s): {}. This is included in the figures below \
         (at {PACED_RATE} requests/s, 10 ms/s of idle CPU is 2.5 µs per request).\n\n",
        elapsed.as_secs_f64(),
        IDLE.as_secs(),
        idle.join(", "),
    ));
    body.push_str(&format!(
        "### Saturated: {CONNECTIONS} requests in flight, {REQUESTS} per variant and round\n\n\
         As fast as the processes answer. All processes share the 2 cores, so \
         requests/s is for the whole machine, load generator included. CPU per request \
         rises in every process as throughput falls (fewer requests per wake-up and \
         system call; see the load generator's column), so compare CPU figures at equal \
         load in the paced table.\n\n"
    ));
    body.push_str(&report(&variants, &saturated, REQUESTS));
    body.push_str(&format!(
        "### Paced: {PACED_RATE} requests/s for every variant, {PACED_REQUESTS} per variant and round\n\n\
         The same offered load for all variants (below what the slowest sustains here), \
         so CPU per request compares the work done per request.\n\n"
    ));
    body.push_str(&report(&variants, &paced, PACED_REQUESTS));
    println!();
    print!("{body}");
    common::write_doc_section("gateway", &body);
    drop(procs);
}
