//! `tollgate policy test-host PLUGIN.wasm`: the real runtime behind
//! `tollgate-policy-test`, the test runner that runs an author's tests
//! against the compiled component.
//!
//! The runner starts this process and talks to it over standard input and
//! output, one JSON object per line each way: a command, then its answer.
//! The commands mirror the SDK's native harness: configure a step (its
//! configuration checked by the plugin, its grants checked against the
//! plugin's imports, as a gateway does at load), run a phase on an
//! instance, and set or read the in-memory host services (the clock,
//! consumers and keys, plans, outbound answers, the sink, quotas, timing
//! and the response origin). Every answer is `{"ok": ...}`, or
//! `{"config_error": {...}}` for a refused configuration, `{"failure":
//! "..."}` for a phase that trapped, timed out or returned something
//! invalid, and `{"error": "..."}` for a malformed command.
//!
//! The services are those of a gateway (counters, cache, kv and quotas in a
//! temporary sled store), with three differences a test needs: the wall
//! clock can be fixed, consumers and plans come from the commands, and
//! outbound calls are answered from a table instead of the network.

use super::wire;
use crate::domain::consumer::{ConsumerInfo, ConsumerSource, PlanLimits};
use crate::domain::time::Ts;
use crate::policy::host::clock::fix_now_ms;
use crate::policy::host::http_client::Canned;
use crate::policy::host::{Capability, Grants, ResponseOrigin, ServiceSettings, Services};
use crate::policy::{
    EngineLimits, Plugin, PolicyError, RequestScope, Runtime, Step, StepConfigError, StepInstance,
};
use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Longest command line read (a request with its body): 32 MiB.
pub const MAX_LINE: usize = 32 << 20;

/// A phase's running-time bound when the test does not set one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The API every step belongs to (the host keeps counters, quotas and kv
/// per API).
const API: &str = "test";

/// Steps (and their instances) a test may hold at once.
const MAX_STEPS: usize = 4096;

/// One command of the protocol.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    /// Check `config` (JSON) with the plugin and make a step of it.
    Configure {
        config: String,
        #[serde(default)]
        grants: Vec<String>,
        /// Running-time bound of each phase, in milliseconds.
        timeout_ms: Option<u64>,
        /// Memory cap of the instance, in bytes.
        memory: Option<usize>,
    },
    /// Run `on-request` on step `id`'s instance (made on first use).
    Request {
        id: u64,
        ctx: wire::CallContext,
        req: wire::RequestHead,
        body: Option<Vec<u8>>,
    },
    /// Run `on-response` on step `id`'s instance (made on first use).
    Response {
        id: u64,
        ctx: wire::CallContext,
        req: wire::RequestHead,
        resp: wire::ResponseHead,
        body: Option<Vec<u8>>,
    },
    /// Forget step `id` and its instance.
    Drop {
        id: u64,
    },
    SetNowMs {
        ms: u64,
    },
    AddKey {
        api: String,
        key: String,
        consumer: wire::Consumer,
    },
    AddConsumer {
        api: String,
        consumer: wire::Consumer,
    },
    /// Open `api` to calls without credentials, admitted as `consumer`.
    OpenToAnonymous {
        api: String,
        consumer: wire::Consumer,
    },
    SetPlan {
        limits: wire::PlanLimits,
    },
    RemovePlan {
        plan: String,
    },
    Answer {
        url: String,
        response: wire::IncomingResponse,
    },
    HttpCalls,
    SinkLines,
    QuotaCount {
        key: String,
        start_ms: u64,
    },
    SetOrigin {
        origin: Option<wire::ResponseOrigin>,
    },
    SetTiming {
        timing: wire::CallTiming,
    },
}

/// Consumers, keys and plans the test declared.
#[derive(Debug, Default)]
struct Declared {
    /// (api, key) → consumer.
    keys: HashMap<(String, String), ConsumerInfo>,
    /// (api, id) → consumer.
    consumers: HashMap<(String, String), ConsumerInfo>,
    /// api → who a call without credentials is.
    open: HashMap<String, ConsumerInfo>,
    plans: HashMap<String, PlanLimits>,
}

#[derive(Debug, Default)]
struct TestConsumers(RwLock<Declared>);

impl ConsumerSource for TestConsumers {
    fn lookup_key(&self, api: &str, key: &str, _now: Ts) -> Option<ConsumerInfo> {
        let d = self.0.read().unwrap_or_else(|p| p.into_inner());
        d.keys.get(&(api.to_string(), key.to_string())).cloned()
    }
    fn lookup_consumer(&self, api: &str, id: &str) -> Option<ConsumerInfo> {
        let d = self.0.read().unwrap_or_else(|p| p.into_inner());
        d.consumers.get(&(api.to_string(), id.to_string())).cloned()
    }
    fn plan_limits(&self, id: &str) -> Option<PlanLimits> {
        let d = self.0.read().unwrap_or_else(|p| p.into_inner());
        d.plans.get(id).cloned()
    }
    fn open_access(&self, api: &str) -> Option<ConsumerInfo> {
        let d = self.0.read().unwrap_or_else(|p| p.into_inner());
        d.open.get(api).cloned()
    }
}

/// A configured step and, once a phase ran, its instance.
struct Held {
    step: Step,
    /// What the instance sees of its call: the declared consumers and
    /// plans, and the timing and origin set by the test (brought up to date
    /// before each phase).
    scope: RequestScope,
    instance: Option<StepInstance>,
    /// Set when a phase failed: the instance is gone, and so is the state
    /// the policy kept in it.
    failed: Option<String>,
}

/// The process's state between commands.
struct TestHost {
    runtime: Runtime,
    plugin: Arc<Plugin>,
    services: Arc<Services>,
    canned: Arc<Canned>,
    declared: Arc<TestConsumers>,
    sink_path: PathBuf,
    steps: HashMap<u64, Held>,
    next_id: u64,
    origin: Option<ResponseOrigin>,
    timing: wire::CallTiming,
    _dir: tempfile::TempDir,
}

impl TestHost {
    fn new(plugin: &Path, cache_dir: Option<PathBuf>) -> Result<TestHost> {
        let dir = tempfile::tempdir().context("a temporary directory")?;
        let store = crate::store::Store::open(dir.path())?;
        let sink_path = dir.path().join("sink.log");
        let canned = Arc::new(Canned::default());
        let mut services = Services::new(ServiceSettings {
            store: Some(store),
            cache_bytes: 16 << 20,
            sink_path: Some(sink_path.clone()),
            outbound_ca: None,
        })?;
        services.canned = Some(canned.clone());
        let services = Arc::new(services);
        let runtime = Runtime::new(
            EngineLimits { max_instances: 256 },
            cache_dir,
            services.clone(),
        )?;
        let name = plugin
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin")
            .replace('_', "-");
        let plugin = runtime.load_plugin(&name, plugin)?;
        Ok(TestHost {
            runtime,
            plugin,
            services,
            canned,
            declared: Default::default(),
            sink_path,
            steps: HashMap::new(),
            next_id: 1,
            origin: None,
            timing: wire::CallTiming::default(),
            _dir: dir,
        })
    }

    async fn handle(&mut self, cmd: Command) -> Value {
        match cmd {
            Command::Configure {
                config,
                grants,
                timeout_ms,
                memory,
            } => self.configure(config, &grants, timeout_ms, memory),
            Command::Request { id, ctx, req, body } => {
                let Some(held) = self.steps.get_mut(&id) else {
                    return no_step(id);
                };
                fill_timing(&held.scope, &self.timing, &self.origin);
                let (mut ctx, mut req) = (ctx.into(), req.into());
                let r = match ensure_instance(&self.runtime, held).await {
                    Ok(()) => {
                        let Held { step, instance, .. } = &mut *held;
                        let inst = instance.as_mut().expect("made above");
                        inst.on_request(step, &mut ctx, &mut req, body.as_deref())
                            .await
                            .map(|d| json!({ "ok": wire::request_decision(d) }))
                    }
                    Err(e) => Err(e),
                };
                outcome(held, r)
            }
            Command::Response {
                id,
                ctx,
                req,
                resp,
                body,
            } => {
                let Some(held) = self.steps.get_mut(&id) else {
                    return no_step(id);
                };
                fill_timing(&held.scope, &self.timing, &self.origin);
                let (mut ctx, mut req, mut resp) = (ctx.into(), req.into(), resp.into());
                let r = match ensure_instance(&self.runtime, held).await {
                    Ok(()) => {
                        let Held { step, instance, .. } = &mut *held;
                        let inst = instance.as_mut().expect("made above");
                        inst.on_response(step, &mut ctx, &mut req, &mut resp, body.as_deref())
                            .await
                            .map(|d| json!({ "ok": wire::response_decision(d) }))
                    }
                    Err(e) => Err(e),
                };
                outcome(held, r)
            }
            Command::Drop { id } => {
                self.steps.remove(&id);
                json!({ "ok": null })
            }
            Command::SetNowMs { ms } => {
                fix_now_ms(ms);
                json!({ "ok": null })
            }
            Command::AddKey { api, key, consumer } => {
                let mut d = self.declared.0.write().unwrap_or_else(|p| p.into_inner());
                let info = ConsumerInfo::from(consumer);
                d.consumers
                    .insert((api.clone(), info.id.clone()), info.clone());
                d.keys.insert((api, key), info);
                json!({ "ok": null })
            }
            Command::AddConsumer { api, consumer } => {
                let mut d = self.declared.0.write().unwrap_or_else(|p| p.into_inner());
                let info = ConsumerInfo::from(consumer);
                d.consumers.insert((api, info.id.clone()), info);
                json!({ "ok": null })
            }
            Command::OpenToAnonymous { api, consumer } => {
                let mut d = self.declared.0.write().unwrap_or_else(|p| p.into_inner());
                d.open.insert(api, ConsumerInfo::from(consumer));
                json!({ "ok": null })
            }
            Command::SetPlan { limits } => {
                let limits = PlanLimits::from(limits);
                let mut d = self.declared.0.write().unwrap_or_else(|p| p.into_inner());
                d.plans.insert(limits.plan.clone(), limits);
                json!({ "ok": null })
            }
            Command::RemovePlan { plan } => {
                let mut d = self.declared.0.write().unwrap_or_else(|p| p.into_inner());
                d.plans.remove(&plan);
                json!({ "ok": null })
            }
            Command::Answer { url, response } => {
                self.canned.set(&url, response.into());
                json!({ "ok": null })
            }
            Command::HttpCalls => json!({ "ok": self.canned.calls() }),
            Command::SinkLines => {
                self.services.sink.flush();
                let text = std::fs::read_to_string(&self.sink_path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                json!({ "ok": lines })
            }
            Command::QuotaCount { key, start_ms } => {
                // The key as the policy wrote it, in its API's namespace.
                let k = format!("{API}\0{key}\0{start_ms}");
                match self
                    .services
                    .store
                    .as_ref()
                    .map(|s| s.quota_get(k.as_bytes()))
                {
                    Some(Ok(n)) => json!({ "ok": n }),
                    Some(Err(e)) => json!({ "error": format!("reading the quota: {e:#}") }),
                    None => json!({ "ok": 0 }),
                }
            }
            Command::SetOrigin { origin } => {
                self.origin = origin.map(Into::into);
                json!({ "ok": null })
            }
            Command::SetTiming { timing } => {
                self.timing = timing;
                json!({ "ok": null })
            }
        }
    }

    fn configure(
        &mut self,
        config: String,
        grants: &[String],
        timeout_ms: Option<u64>,
        memory: Option<usize>,
    ) -> Value {
        if self.steps.len() >= MAX_STEPS {
            return json!({ "error": format!("more than {MAX_STEPS} steps held: drop some") });
        }
        let mut g = Grants::default();
        for name in grants {
            match Capability::parse(name) {
                Ok(c) => g.list.push(c),
                Err(e) => return json!({ "error": format!("grant `{name}`: {e}") }),
            }
        }
        let timeout = timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let step = self.runtime.configure_step(
            API,
            &self.plugin.name,
            self.plugin.clone(),
            config,
            timeout,
            memory.unwrap_or(16 << 20),
            false,
            g,
        );
        match step {
            Ok(step) => {
                let id = self.next_id;
                self.next_id += 1;
                let info = wire::policy_info(&step.info);
                self.steps.insert(
                    id,
                    Held {
                        step,
                        scope: RequestScope {
                            request_id: format!("test-{id}"),
                            consumers: self.declared.clone(),
                            timing: Default::default(),
                        },
                        instance: None,
                        failed: None,
                    },
                );
                json!({ "ok": { "id": id, "info": info } })
            }
            Err(StepConfigError::Rejected { field, message }) => {
                json!({ "config_error": { "field": field, "message": message } })
            }
            Err(e) => json!({ "error": e.to_string() }),
        }
    }
}

fn no_step(id: u64) -> Value {
    json!({ "error": format!("no step {id} (dropped, or never configured)") })
}

/// What `timing.now` and `outcome.origin` answer in the next phase of
/// `scope`'s instance.
fn fill_timing(scope: &RequestScope, timing: &wire::CallTiming, origin: &Option<ResponseOrigin>) {
    let mut t = scope.timing.lock().unwrap_or_else(|p| p.into_inner());
    t.fixed_total_us = Some(timing.total_us);
    t.upstream_us = timing.upstream_us;
    t.steps = timing.steps.clone();
    t.origin = origin.clone();
}

/// Make step `held`'s instance on first use.
async fn ensure_instance(runtime: &Runtime, held: &mut Held) -> Result<(), PolicyError> {
    if let Some(why) = &held.failed {
        return Err(PolicyError::BadOutput {
            step: held.step.name.to_string(),
            detail: format!("the instance failed earlier and is gone: {why}"),
        });
    }
    if held.instance.is_none() {
        held.instance = Some(runtime.instantiate(&held.step, &held.scope).await?);
    }
    Ok(())
}

/// The answer to a phase; a failure discards the instance, as in a gateway.
fn outcome(held: &mut Held, r: Result<Value, PolicyError>) -> Value {
    match r {
        Ok(v) => v,
        Err(e) => {
            let why = e.to_string();
            held.instance = None;
            held.failed.get_or_insert(why.clone());
            json!({ "failure": why })
        }
    }
}

/// Serve the protocol on standard input and output until input ends.
pub fn serve(plugin: &Path, cache_dir: Option<PathBuf>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut host = TestHost::new(plugin, cache_dir)
            .with_context(|| format!("loading {}", plugin.display()))?;
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut out = std::io::stdout().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = read_line(&mut input, &mut line)?;
            if n == 0 {
                return Ok(());
            }
            let answer = match std::str::from_utf8(&line)
                .map_err(|e| e.to_string())
                .and_then(|s| serde_json::from_str::<Command>(s).map_err(|e| e.to_string()))
            {
                _ if line.len() > MAX_LINE => {
                    json!({ "error": format!("command longer than {MAX_LINE} bytes") })
                }
                Ok(cmd) => host.handle(cmd).await,
                Err(e) => json!({ "error": format!("malformed command: {e}") }),
            };
            serde_json::to_writer(&mut out, &answer)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
    })
}

/// Read one line (without its newline) into `buf`, keeping at most
/// `MAX_LINE + 1` bytes of it; the number of bytes consumed (0 at the end).
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<usize> {
    let mut consumed = 0;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let keep = take.min((MAX_LINE + 1).saturating_sub(buf.len()));
        buf.extend_from_slice(&chunk[..keep]);
        input.consume(take);
        consumed += take;
        if done {
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            return Ok(consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_whole_and_bounded() {
        let mut big = vec![b'a'; MAX_LINE + 10];
        big.push(b'\n');
        big.extend_from_slice(b"{}\n");
        let mut input = std::io::BufReader::new(&big[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), MAX_LINE + 11);
        assert_eq!(buf.len(), MAX_LINE + 1, "kept one byte past the limit");
        buf.clear();
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), 3);
        assert_eq!(buf, b"{}");
        buf.clear();
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), 0);
    }

    #[test]
    fn commands_are_checked() {
        let bad = [
            r#"{"op":"configure"}"#,
            r#"{"op":"launch"}"#,
            r#"{"op":"drop","id":1,"extra":2}"#,
            r#"{"op":"request","id":1,"ctx":{},"req":{}}"#,
        ];
        for b in bad {
            assert!(serde_json::from_str::<Command>(b).is_err(), "{b}");
        }
        let ok = r#"{"op":"set_now_ms","ms":5}"#;
        assert!(matches!(
            serde_json::from_str::<Command>(ok),
            Ok(Command::SetNowMs { ms: 5 })
        ));
    }
}
