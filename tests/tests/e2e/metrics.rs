//! `GET /metrics` on the admin listener, scraped by a real Prometheus
//! (Debian's `prometheus`, started here on loopback with a scrape config
//! pointing at the gateway): after a known mix of calls, Prometheus's HTTP
//! API answers exactly the counts sent. Then the endpoint itself: a token
//! unless `[metrics] public`, the OpenMetrics text format, reloads and
//! admin calls counted, a bad request refused.
//!
//! The gateways of this file run in the test process, whose metrics are
//! one set (as in a gateway process): the APIs here have names of their
//! own, and counts shared with other tests (listeners, reloads) are
//! compared before and after.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::*;

const KEY: &str = "metrics-key-8b1e0c";

/// Two APIs: `{p}-open` (routes `ok` and `fail`, no steps) and
/// `{p}-keyed` (key-auth, then a transform).
fn manifest(up: &str, p: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "{p}-open"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
name = "ok"
prefix = "/mx/ok"
[[api.route]]
name = "fail"
prefix = "/status"

[[api]]
name = "{p}-keyed"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "2s" }}
[[api.route]]
name = "keyed"
prefix = "/mx/keyed"
[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]
[[api.chain]]
plugin = "transform"
config = {{ request = {{ headers = {{ set = {{ x-mx = "1" }} }} }} }}

[[consumer]]
id = "mx-consumer"
keys = [{{ id = "mx-k1", sha256 = "{digest}" }}]
"#,
        digest = key_digest_hex(KEY)
    )
}

/// One sample of the OpenMetrics text: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (
                k.to_string(),
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value {l:?}")),
            )
        })
        .collect()
}

/// A real Prometheus scraping `target` every 500 ms with `token`, stopped
/// (by its PID) when dropped.
struct Prometheus {
    _child: ChildGuard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str, token: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), token).unwrap();
        let config = format!(
            r#"global:
  scrape_interval: 500ms
  scrape_timeout: 400ms
scrape_configs:
  - job_name: tollgate
    metrics_path: /metrics
    authorization:
      credentials_file: {token}
    static_configs:
      - targets: ["{target}"]
"#,
            token = dir.path().join("token").display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("Debian's prometheus (scripts/test installs it)");
        Prometheus {
            _child: ChildGuard(child),
            port,
            _dir: dir,
        }
    }

    /// The value of an instant query with one series, if it has one.
    async fn value(&self, c: &reqwest::Client, query: &str) -> Option<f64> {
        let r = c
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Wait until every query answers its expected value (Prometheus's next
    /// scrapes), at most a minute; panics with what it answered otherwise.
    async fn expect(&self, c: &reqwest::Client, expected: &[(&str, f64)]) {
        let started = Instant::now();
        loop {
            let mut got = Vec::new();
            for (q, _) in expected {
                got.push(self.value(c, q).await);
            }
            if expected
                .iter()
                .zip(&got)
                .all(|((_, want), got)| *got == Some(*want))
            {
                return;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
                panic!("Prometheus answered {got:?} for {expected:?}\n{tail}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn send(c: &reqwest::Client, method: &str, url: &str, key: Option<&str>, n: usize) -> u16 {
    let mut status = 0;
    for _ in 0..n {
        let mut r = c.request(method.parse().unwrap(), url);
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        status = r.send().await.unwrap().status().as_u16();
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_exact_counts() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url(), "mx"))
        .admin()
        .start()
        .await;
    let admin = gw.admin();
    let prom = Prometheus::start(&gw.admin_addr.unwrap().to_string(), &admin.token);
    let c = client();
    // The known mix.
    assert_eq!(send(&c, "GET", &gw.url("/mx/ok/a"), None, 7).await, 200);
    assert_eq!(send(&c, "POST", &gw.url("/mx/ok/b"), None, 4).await, 200);
    assert_eq!(send(&c, "GET", &gw.url("/status/503"), None, 3).await, 503);
    assert_eq!(send(&c, "GET", &gw.url("/mx/keyed/x"), None, 5).await, 401);
    assert_eq!(
        send(&c, "GET", &gw.url("/mx/keyed/x"), Some(KEY), 2).await,
        200
    );
    let q = |api: &str, route: &str, method: &str, status: &str| {
        format!(
            r#"tollgate_requests_total{{api="{api}",route="{route}",method="{method}",status="{status}"}}"#
        )
    };
    let step = |step: &str, outcome: &str| {
        format!(
            r#"tollgate_step_outcomes_total{{api="mx-keyed",step="{step}",phase="request",outcome="{outcome}"}}"#
        )
    };
    let expected = vec![
        (q("mx-open", "ok", "GET", "2xx"), 7.0),
        (q("mx-open", "ok", "POST", "2xx"), 4.0),
        (q("mx-open", "fail", "GET", "5xx"), 3.0),
        (q("mx-keyed", "keyed", "GET", "4xx"), 5.0),
        (q("mx-keyed", "keyed", "GET", "2xx"), 2.0),
        (step("key-auth", "respond_4xx"), 5.0),
        (step("key-auth", "continue"), 2.0),
        (step("transform", "continue"), 2.0),
        (
            r#"sum(tollgate_request_duration_seconds_count{api="mx-open"})"#.to_string(),
            14.0,
        ),
        (
            r#"tollgate_upstream_duration_seconds_count{api="mx-keyed",route="keyed"}"#.to_string(),
            2.0,
        ),
        (
            r#"tollgate_step_calls_total{api="mx-keyed",step="key-auth",phase="request"}"#
                .to_string(),
            7.0,
        ),
        // Every call got an instance of each step it reached.
        (
            r#"sum(tollgate_step_instances_total{api="mx-keyed",step="key-auth"})"#.to_string(),
            7.0,
        ),
        (
            r#"sum(tollgate_step_instances_total{api="mx-keyed",step="transform"})"#.to_string(),
            2.0,
        ),
        (
            r#"tollgate_step_memory_high_water_bytes{api="mx-keyed",step="key-auth"} > bool 0"#
                .to_string(),
            1.0,
        ),
    ];
    let refs: Vec<(&str, f64)> = expected.iter().map(|(q, v)| (q.as_str(), *v)).collect();
    prom.expect(&c, &refs).await;
    // A phase a step does not have has no series (key-auth: request only).
    let none = r#"tollgate_step_calls_total{api="mx-keyed",step="key-auth",phase="response"}"#;
    assert_eq!(prom.value(&c, none).await, None, "{none}");
    // More calls: the counters follow exactly.
    assert_eq!(send(&c, "GET", &gw.url("/mx/ok/a"), None, 5).await, 200);
    assert_eq!(send(&c, "GET", &gw.url("/mx/keyed/x"), None, 1).await, 401);
    prom.expect(
        &c,
        &[
            (&q("mx-open", "ok", "GET", "2xx"), 12.0),
            (&q("mx-keyed", "keyed", "GET", "4xx"), 6.0),
            (&step("key-auth", "respond_4xx"), 6.0),
        ],
    )
    .await;
}

async fn scrape(c: &reqwest::Client, base: &str, token: Option<&str>) -> (u16, String, String) {
    let mut r = c.get(format!("{base}/metrics"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_needs_a_token_and_speaks_openmetrics() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url(), "my"))
        .admin()
        .start()
        .await;
    let admin = gw.admin();
    let base = format!("http://{}", gw.admin_addr.unwrap());
    let c = client();
    // No token, a bad token: refused (the default is not public).
    assert_eq!(scrape(&c, &base, None).await.0, 401);
    assert_eq!(scrape(&c, &base, Some("not-a-token")).await.0, 401);
    let (s, ct, before) = scrape(&c, &base, Some(&admin.token)).await;
    assert_eq!(s, 200, "{before}");
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(before.ends_with("# EOF\n"), "{before}");
    let before = samples(&before);
    // A reload and a refused reload are counted.
    let reloads = |m: &HashMap<String, f64>, r: &str| {
        m.get(&format!("tollgate_reloads_total{{result=\"{r}\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    assert!(matches!(
        gw.gateway.reload().await,
        tollgate::control::plane::ReloadOutcome::Applied
    ));
    gw.write_manifest("schema = 1\n[[api]]\nname = \"broken\"\n");
    assert!(matches!(
        gw.gateway.reload().await,
        tollgate::control::plane::ReloadOutcome::Rejected(_)
    ));
    assert_eq!(send(&c, "GET", &gw.url("/mx/ok/z"), None, 3).await, 200);
    let (_, _, after) = scrape(&c, &base, Some(&admin.token)).await;
    let after = samples(&after);
    assert!(reloads(&after, "ok") > reloads(&before, "ok"));
    assert!(reloads(&after, "rejected") > reloads(&before, "rejected"));
    // The listener's count grew by at least the calls sent (other tests'
    // listeners are named `test` too).
    let listener = "tollgate_listener_requests_total{listener=\"test\",status=\"2xx\"}";
    assert!(after[listener] >= before.get(listener).copied().unwrap_or(0.0) + 3.0);
    // Admin calls are counted, /metrics included.
    let admin_gets = "tollgate_admin_requests_total{method=\"GET\",status=\"2xx\"}";
    assert!(after[admin_gets] >= 1.0);
    // Every histogram's +Inf bucket is its count.
    for (k, v) in &after {
        if k.contains("_seconds_bucket") && k.contains("le=\"+Inf\"") {
            let count = k.replace("_bucket", "_count").replace("le=\"+Inf\",", "");
            assert_eq!(after.get(&count), Some(v), "{k}");
        }
    }
    // The upstream pool opened a connection and holds it (keep-alive).
    let opened = "tollgate_upstream_connections_opened_total{api=\"my-open\"}";
    assert!(
        after.get(opened).is_some_and(|n| *n >= 1.0),
        "{opened}: {:?}",
        after
            .keys()
            .filter(|k| k.contains("upstream"))
            .collect::<Vec<_>>()
    );
    let open = "tollgate_upstream_connections{api=\"my-open\"}";
    assert!(after[open] >= 1.0 && after[open] <= after[opened], "{open}");
    // The instance gauges are there.
    assert!(after.contains_key("tollgate_policy_instances{kind=\"live\"}"));
    // A query is refused like on any admin call.
    let r = c
        .get(format!("{base}/metrics?x=1"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_metrics_need_no_token() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&simple_manifest(&up.url(), ""))
        .admin()
        .gateway_toml("[metrics]\npublic = true\n")
        .start()
        .await;
    let base = format!("http://{}", gw.admin_addr.unwrap());
    let (s, _, text) = scrape(&client(), &base, None).await;
    assert_eq!(s, 200);
    assert!(text.contains("tollgate_config_generation "), "{text}");
    // `public` belongs to the gateway that says it: another one starting
    // in the same process without it (as the tests do, concurrently) keeps
    // its token and does not take this one's away.
    let private = TestGateway::builder(&simple_manifest(&up.url(), ""))
        .admin()
        .start()
        .await;
    let other = format!("http://{}", private.admin_addr.unwrap());
    assert_eq!(scrape(&client(), &other, None).await.0, 401);
    assert_eq!(scrape(&client(), &base, None).await.0, 200);
}

/// A `[metrics]` section that asks for nonsense is refused with the reason.
#[test]
fn bad_metrics_sections_are_refused() {
    for (section, says) in [
        (
            "[metrics]\nmax-consumers = 0\n",
            "max-consumers must be 1 to",
        ),
        (
            "[metrics]\nmax-consumers = 10000000\n",
            "max-consumers must be 1 to",
        ),
        ("[metrics]\nenabled = \"yes\"\n", "enabled"),
        ("[metrics]\nlabels = true\n", "unknown field `labels`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tollgate.toml");
        std::fs::write(
            &p,
            format!("schema = 1\n[[listener]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n{section}"),
        )
        .unwrap();
        let e = tollgate::loader::read_gateway_file(Path::new(&p))
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{section}: {e}");
    }
}

/// Every metric the gateway shows is in docs/metrics.md, and the Grafana
/// dashboard in examples/ queries only metrics that exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_documented_and_the_dashboard_uses_real_ones() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url(), "mdoc"))
        .admin()
        .gateway_toml("[metrics]\npublic = true\n")
        .start()
        .await;
    let c = client();
    send(&c, "GET", &gw.url("/mx/keyed/x"), Some(KEY), 2).await;
    send(&c, "GET", &gw.url("/status/502"), None, 1).await;
    let base = format!("http://{}", gw.admin_addr.unwrap());
    let (status, _, text) = scrape(&c, &base, None).await;
    assert_eq!(status, 200, "{text}");
    let doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let mut shown = Vec::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is not in docs/metrics.md"
            );
            shown.push(name);
        }
    }
    assert!(shown.len() >= 15, "{shown:?}");
    // Names documented: every `tollgate_...` in the reference's tables.
    let documented: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("| `tollgate_"))
        .map(|l| l[3..].split('`').next().unwrap().to_string())
        .collect();
    let dash =
        std::fs::read_to_string(root().join("examples/prometheus/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash).unwrap();
    let mut queried = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("tollgate_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    documented.iter().any(|d| d == base),
                    "the dashboard queries {name}, which is not a documented metric"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 12);
}
