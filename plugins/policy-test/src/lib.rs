//! Run a Tollgate policy's tests twice: natively, against the SDK's
//! in-memory harness, and against the compiled `.wasm` in the gateway's own
//! runtime. One test body serves both.
//!
//! ```no_run
//! # use tollgate_policy_sdk::*;
//! # #[derive(serde::Deserialize)] struct Config {}
//! # struct MyPolicy;
//! # impl Policy for MyPolicy { type Config = Config;
//! #   fn new(_: Config) -> Result<Self, ConfigError> { Ok(MyPolicy) } }
//! use tollgate_policy_test::{runners, Request};
//!
//! #[test]
//! fn refuses_a_call_without_the_header() {
//!     for runner in runners!(MyPolicy) {
//!         let mut p = runner.configure(r#"{}"#).unwrap();
//!         let d = p.on_request(&runner.context(), &Request::get("/pets").head(), None);
//!         assert!(matches!(d, RequestDecision::Continue(_)), "{}", runner.label());
//!     }
//! }
//! ```
//!
//! [`runners!`] gives a native runner and a `.wasm` runner. The `.wasm`
//! runner builds the crate for `wasm32-wasip2` in release (once per test
//! process, as `cargo build` would), then starts `tollgate policy test-host`
//! with it: the gateway binary, running the component with the same runtime,
//! limits and host services a gateway uses, over a temporary store. The
//! binary is found in `TOLLGATE` (a path; `tollgate policy new` writes it
//! into the crate's `.cargo/config.toml`), else on `PATH`.
//!
//! `TOLLGATE_TEST_TARGETS=native` (or `wasm`) runs one side only, for
//! example while the gateway binary is not at hand.
//!
//! Differences a test can see between the two sides, by design:
//! - grants are checked only on the `.wasm` side (as a gateway does at
//!   load): give them with [`Runner::with_grants`];
//! - a phase that panics fails the test on both sides; [`Instance::try_on_request`]
//!   returns the failure instead, and on the `.wasm` side the instance is
//!   gone afterwards, as in a gateway;
//! - the native harness's `set_verifier` has no `.wasm` counterpart: the
//!   gateway's `crypto` service verifies real signatures.

#![forbid(unsafe_code)]
// A test tool: nothing of it exists in a guest build.
#![cfg(not(target_arch = "wasm32"))]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use tollgate_policy_sdk::services::outcome::ResponseOrigin;
use tollgate_policy_sdk::services::{harness, plans, CallTiming, IncomingResponse};
use tollgate_policy_sdk::{
    parse_config, BodyAccess, Call, CallContext, ConfigError, Consumer, Header, Phases, Policy,
    PolicyInfo, RequestDecision, RequestHead, ResponseDecision, ResponseHead,
};

/// A native runner and a `.wasm` runner for policy `$p` of the calling
/// crate (see the crate docs); `TOLLGATE_TEST_TARGETS` may keep one.
#[macro_export]
macro_rules! runners {
    ($p:ty) => {
        $crate::Runner::<$p>::both(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_NAME"))
    };
}

/// Why a phase did not return a decision: the panic message natively, the
/// gateway's failure (trap with the panic message, timeout, memory cap,
/// invalid output) on the `.wasm` side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs policy `P` natively or from its `.wasm`; also the harness of the
/// host services for that side.
pub struct Runner<P> {
    side: Side,
    grants: Vec<String>,
    _p: PhantomData<fn() -> P>,
}

enum Side {
    Native,
    Wasm(Arc<Host>),
}

/// A configured policy: one value natively, one instance on the `.wasm`
/// side (state kept between phases and calls, as in the value).
pub struct Instance<P> {
    inner: Inner<P>,
}

enum Inner<P> {
    Native(P),
    Wasm {
        host: Arc<Host>,
        id: u64,
        info: PolicyInfo,
    },
}

impl<P: Policy> Runner<P> {
    /// The native side. The thread's harness starts empty.
    pub fn native() -> Self {
        harness::reset();
        Runner {
            side: Side::Native,
            grants: Vec::new(),
            _p: PhantomData,
        }
    }

    /// The `.wasm` side, running the component at `wasm` in a test host
    /// of its own.
    pub fn wasm(wasm: impl AsRef<Path>) -> Result<Self, String> {
        Ok(Runner {
            side: Side::Wasm(Arc::new(Host::start(wasm.as_ref())?)),
            grants: Vec::new(),
            _p: PhantomData,
        })
    }

    /// Both sides for the crate at `manifest_dir` named `package` (what
    /// [`runners!`] passes), or the one `TOLLGATE_TEST_TARGETS` names.
    /// Panics with the reason when the `.wasm` cannot be built or run.
    pub fn both(manifest_dir: &str, package: &str) -> Vec<Self> {
        let which = std::env::var("TOLLGATE_TEST_TARGETS").unwrap_or_default();
        let mut out = Vec::new();
        if which != "wasm" {
            out.push(Runner::native());
        }
        if which != "native" {
            let wasm = built_wasm(Path::new(manifest_dir), package)
                .unwrap_or_else(|e| panic!("building the .wasm: {e}"));
            out.push(Runner::wasm(wasm).unwrap_or_else(|e| panic!("{e}")));
        }
        out
    }

    /// Grants for every step this runner configures (`counters`, `kv`,
    /// `http:HOST`, ...), as in the step's manifest. Only the `.wasm`
    /// side checks them.
    pub fn with_grants<S: AsRef<str>>(mut self, grants: &[S]) -> Self {
        self.grants = grants.iter().map(|g| g.as_ref().to_string()).collect();
        self
    }

    /// `"native"` or `"wasm"`, for assertion messages.
    pub fn label(&self) -> &'static str {
        match self.side {
            Side::Native => "native",
            Side::Wasm(_) => "wasm",
        }
    }

    /// Whether this is the `.wasm` side.
    pub fn is_wasm(&self) -> bool {
        matches!(self.side, Side::Wasm(_))
    }

    /// A call context for API `test`, step `test`, from 127.0.0.1, with no
    /// consumer; change its fields as the test needs.
    pub fn context(&self) -> CallContext {
        CallContext {
            request_id: "test-1".into(),
            client_addr: "127.0.0.1:40000".into(),
            api: "test".into(),
            route: "/".into(),
            step: "test".into(),
            ..CallContext::default()
        }
    }

    /// Configure the policy with `config` (JSON), as a gateway does at
    /// load: the policy's own checks, and on the `.wasm` side the grants.
    /// A refusal by the policy is `Err`; a grant missing or a plugin
    /// failure panics with the gateway's message.
    pub fn configure(&self, config: &str) -> Result<Instance<P>, ConfigError> {
        match &self.side {
            Side::Native => parse_config::<P>(config).map(|p| Instance {
                inner: Inner::Native(p),
            }),
            Side::Wasm(host) => {
                let a = host.call(json!({
                    "op": "configure", "config": config, "grants": self.grants,
                }));
                if let Some(e) = a.get("config_error") {
                    return Err(ConfigError {
                        field: e["field"].as_str().map(String::from),
                        message: e["message"].as_str().unwrap_or_default().to_string(),
                    });
                }
                let ok = host.ok(a);
                Ok(Instance {
                    inner: Inner::Wasm {
                        host: host.clone(),
                        id: ok["id"].as_u64().expect("a step id"),
                        info: info_of(&ok["info"]),
                    },
                })
            }
        }
    }

    /// Fix the wall clock the policy and the services see.
    pub fn set_now_ms(&self, ms: u64) {
        self.harness(
            || harness::set_now_ms(ms),
            json!({"op": "set_now_ms", "ms": ms}),
        );
    }

    /// Declare an API key of `consumer` for `api`.
    pub fn add_key(&self, api: &str, key: &str, consumer: Consumer) {
        let cmd = json!({"op": "add_key", "api": api, "key": key, "consumer": to_json(&consumer)});
        self.harness(|| harness::add_key(api, key, consumer.clone()), cmd);
    }

    /// Declare a consumer (or application) by id for `api`.
    pub fn add_consumer(&self, api: &str, consumer: Consumer) {
        let cmd = json!({"op": "add_consumer", "api": api, "consumer": to_json(&consumer)});
        self.harness(|| harness::add_consumer(api, consumer.clone()), cmd);
    }

    /// Open `api` to calls without credentials, admitted as `consumer`
    /// (what `consumers::open_access` answers for it).
    pub fn open_to_anonymous(&self, api: &str, consumer: Consumer) {
        let cmd = json!({"op": "open_to_anonymous", "api": api, "consumer": to_json(&consumer)});
        self.harness(|| harness::open_to_anonymous(api, consumer.clone()), cmd);
    }

    /// Define a plan (replacing one with the same id).
    pub fn set_plan(&self, limits: plans::PlanLimits) {
        let cmd = json!({"op": "set_plan", "limits": to_json(&limits)});
        self.harness(|| harness::set_plan(limits.clone()), cmd);
    }

    /// Delete a plan.
    pub fn remove_plan(&self, plan: &str) {
        let cmd = json!({"op": "remove_plan", "plan": plan});
        self.harness(|| harness::remove_plan(plan), cmd);
    }

    /// Answer outbound calls to `url` with `response` (the step still
    /// needs its `http:HOST` grant on the `.wasm` side).
    pub fn answer(&self, url: &str, response: IncomingResponse) {
        let cmd = json!({"op": "answer", "url": url, "response": to_json(&response)});
        self.harness(|| harness::answer(url, response.clone()), cmd);
    }

    /// The URLs the policy called so far.
    pub fn http_calls(&self) -> Vec<String> {
        match &self.side {
            Side::Native => harness::http_calls(),
            Side::Wasm(h) => from_json(h.ok(h.call(json!({"op": "http_calls"})))),
        }
    }

    /// The lines the policy wrote to the sink so far.
    pub fn sink_lines(&self) -> Vec<String> {
        match &self.side {
            Side::Native => harness::sink_lines(),
            Side::Wasm(h) => from_json(h.ok(h.call(json!({"op": "sink_lines"})))),
        }
    }

    /// The count of a quota period (0 if nothing was counted).
    pub fn quota_count(&self, key: &str, start_ms: u64) -> u64 {
        match &self.side {
            Side::Native => harness::quota_count(key, start_ms),
            Side::Wasm(h) => {
                let cmd = json!({"op": "quota_count", "key": key, "start_ms": start_ms});
                from_json(h.ok(h.call(cmd)))
            }
        }
    }

    /// Who made the response, as the response phase sees it.
    pub fn set_origin(&self, origin: Option<ResponseOrigin>) {
        let cmd = json!({"op": "set_origin", "origin": to_json(&origin)});
        self.harness(|| harness::set_origin(origin.clone()), cmd);
    }

    /// The call's timing, as `services::timing` answers it.
    pub fn set_timing(&self, timing: CallTiming) {
        let cmd = json!({"op": "set_timing", "timing": to_json(&timing)});
        self.harness(|| harness::set_timing(timing.clone()), cmd);
    }

    fn harness(&self, native: impl FnOnce(), cmd: Value) {
        match &self.side {
            Side::Native => native(),
            Side::Wasm(h) => {
                h.ok(h.call(cmd));
            }
        }
    }
}

impl<P: Policy> Instance<P> {
    /// What the policy declared: body limits and phases.
    pub fn info(&self) -> PolicyInfo {
        match &self.inner {
            Inner::Native(p) => p.info(),
            Inner::Wasm { info, .. } => *info,
        }
    }

    /// The request phase; panics (failing the test) if it fails.
    pub fn on_request(
        &mut self,
        ctx: &CallContext,
        req: &RequestHead,
        body: Option<&[u8]>,
    ) -> RequestDecision {
        self.try_on_request(ctx, req, body)
            .unwrap_or_else(|f| panic!("on-request failed: {f}"))
    }

    /// The response phase; panics (failing the test) if it fails.
    pub fn on_response(
        &mut self,
        ctx: &CallContext,
        req: &RequestHead,
        resp: &ResponseHead,
        body: Option<&[u8]>,
    ) -> ResponseDecision {
        self.try_on_response(ctx, req, resp, body)
            .unwrap_or_else(|f| panic!("on-response failed: {f}"))
    }

    /// The request phase, or why it failed.
    pub fn try_on_request(
        &mut self,
        ctx: &CallContext,
        req: &RequestHead,
        body: Option<&[u8]>,
    ) -> Result<RequestDecision, Failure> {
        match &mut self.inner {
            Inner::Native(p) => caught(|| p.on_request(&Call::native(ctx, req), body)),
            Inner::Wasm { host, id, .. } => host.phase(json!({
                "op": "request", "id": id, "ctx": to_json(ctx), "req": to_json(req), "body": body,
            })),
        }
    }

    /// The response phase, or why it failed.
    pub fn try_on_response(
        &mut self,
        ctx: &CallContext,
        req: &RequestHead,
        resp: &ResponseHead,
        body: Option<&[u8]>,
    ) -> Result<ResponseDecision, Failure> {
        match &mut self.inner {
            Inner::Native(p) => {
                caught(|| p.on_response(&Call::native_response(ctx, req, resp), body))
            }
            Inner::Wasm { host, id, .. } => host.phase(json!({
                "op": "response", "id": id, "ctx": to_json(ctx), "req": to_json(req),
                "resp": to_json(resp), "body": body,
            })),
        }
    }
}

impl<P> Drop for Instance<P> {
    fn drop(&mut self) {
        if let Inner::Wasm { host, id, .. } = &self.inner {
            host.forget(*id);
        }
    }
}

/// A request head to build: `Request::get("/pets").header("x-api-key",
/// "k").head()`.
#[derive(Debug, Clone, Default)]
pub struct Request(RequestHead);

impl Request {
    /// A request with `method` for `path_and_query` (the query after `?`).
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (path_and_query, None),
        };
        Request(RequestHead {
            method: method.into(),
            scheme: "http".into(),
            authority: "localhost".into(),
            path: path.into(),
            query,
            headers: Vec::new(),
        })
    }
    /// A GET.
    pub fn get(path_and_query: &str) -> Self {
        Request::new("GET", path_and_query)
    }
    /// Add a header (its name lower-cased, as the gateway passes them).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.0.headers.push(Header {
            name: name.to_ascii_lowercase(),
            value: value.as_ref().to_vec(),
        });
        self
    }
    /// The head.
    pub fn head(self) -> RequestHead {
        self.0
    }
}

fn caught<T>(f: impl FnOnce() -> T) -> Result<T, Failure> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into());
        Failure(format!("panicked: {msg}"))
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("the SDK's types serialise")
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        panic!("the test host answered {v} where the runner expected otherwise: {e}")
    })
}

fn info_of(v: &Value) -> PolicyInfo {
    let limit = |x: &Value| x.as_u64().map(|n| n as u32);
    let mut phases = Phases::empty();
    for p in v["phases"].as_array().into_iter().flatten() {
        match p.as_str() {
            Some("request") => phases = phases | Phases::REQUEST,
            Some("response") => phases = phases | Phases::RESPONSE,
            _ => {}
        }
    }
    PolicyInfo {
        body: BodyAccess {
            request: limit(&v["body"]["request"]),
            response: limit(&v["body"]["response"]),
        },
        phases,
    }
}

/// A `tollgate policy test-host` process and its pipes.
struct Host {
    conn: Mutex<Conn>,
    stderr: PathBuf,
    _dir: TempDir,
}

struct Conn {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    dead: bool,
}

impl Host {
    fn start(wasm: &Path) -> Result<Host, String> {
        let bin = tollgate_binary()?;
        if !wasm.is_file() {
            return Err(format!("{}: no such file", wasm.display()));
        }
        let dir = TempDir::new()?;
        let stderr = dir.0.join("test-host.log");
        let log = std::fs::File::create(&stderr).map_err(|e| e.to_string())?;
        let cache = wasm
            .parent()
            .map(|d| d.join("tollgate-test-cache"))
            .unwrap_or_else(|| dir.0.join("cache"));
        let mut child = Command::new(&bin)
            .args(["policy", "test-host"])
            .arg(wasm)
            .arg("--cache-dir")
            .arg(&cache)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let input = child.stdin.take().expect("piped");
        let output = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Host {
            conn: Mutex::new(Conn {
                child,
                input,
                output,
                dead: false,
            }),
            stderr,
            _dir: dir,
        })
    }

    /// Send `cmd`, wait for its answer. Panics with the host's log if the
    /// host is gone.
    fn call(&self, cmd: Value) -> Value {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if c.dead {
            panic!("the test host is gone: {}", self.log_tail());
        }
        let mut line = serde_json::to_vec(&cmd).expect("JSON");
        line.push(b'\n');
        let mut answer = String::new();
        let ok = c
            .input
            .write_all(&line)
            .and_then(|_| c.input.flush())
            .is_ok()
            && c.output
                .read_line(&mut answer)
                .map(|n| n > 0)
                .unwrap_or(false);
        if !ok {
            c.dead = true;
            let status = c.child.wait().map(|s| s.to_string()).unwrap_or_default();
            drop(c);
            panic!("the test host stopped ({status}): {}", self.log_tail());
        }
        serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("the test host answered {answer:?}: {e}"))
    }

    /// The `ok` of an answer; panics with the host's error otherwise.
    fn ok(&self, mut answer: Value) -> Value {
        match answer.get_mut("ok") {
            Some(v) => v.take(),
            None => panic!("the test host refused: {answer}"),
        }
    }

    fn phase<T: serde::de::DeserializeOwned>(&self, cmd: Value) -> Result<T, Failure> {
        let mut a = self.call(cmd);
        if let Some(f) = a.get("failure") {
            return Err(Failure(f.as_str().unwrap_or_default().to_string()));
        }
        Ok(from_json(self.ok(a.take())))
    }

    fn forget(&self, id: u64) {
        let c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if c.dead {
            return;
        }
        drop(c);
        self.call(json!({"op": "drop", "id": id}));
    }

    /// The end of what the host wrote to its standard error.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        format!("its log ends with:\n{}", &text[start..])
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let c = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("tollgate-policy-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The gateway binary: `TOLLGATE`, else `tollgate` on `PATH`.
fn tollgate_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TOLLGATE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("TOLLGATE={}: no such file", p.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("tollgate"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "the gateway binary was not found: set TOLLGATE to its path (tollgate policy new \
             writes it into .cargo/config.toml), put `tollgate` on PATH, or run the native side \
             only with TOLLGATE_TEST_TARGETS=native"
                .to_string()
        })
}

/// Build the crate at `dir` for wasm32-wasip2 in release, once per process
/// and crate; the path of its `.wasm`.
fn built_wasm(dir: &Path, package: &str) -> Result<PathBuf, String> {
    /// Per crate folder: the build's outcome.
    type Builds = Vec<(PathBuf, Result<PathBuf, String>)>;
    static BUILT: OnceLock<Mutex<Builds>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, r)) = built.iter().find(|(d, _)| d == dir) {
        return r.clone();
    }
    let r = cargo_build(dir, package);
    built.push((dir.to_path_buf(), r.clone()));
    r
}

/// Add the wasm32-wasip2 target with rustup when the crate's toolchain
/// lacks it (as `tollgate policy build` does). Without rustup, cargo's own
/// error says what is missing.
fn ensure_target(dir: &Path) -> Result<(), String> {
    let Ok(out) = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || installed.lines().any(|l| l == "wasm32-wasip2") {
        return Ok(());
    }
    eprintln!("adding the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
    let status = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .map_err(|e| format!("running rustup: {e}"))?;
    if !status.success() {
        return Err(format!("rustup target add wasm32-wasip2 failed ({status})"));
    }
    Ok(())
}

fn cargo_build(dir: &Path, package: &str) -> Result<PathBuf, String> {
    ensure_target(dir)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--package",
            package,
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --release --target wasm32-wasip2 failed ({}); is the target installed \
             (rustup target add wasm32-wasip2)?",
            out.status
        ));
    }
    let wanted = package.replace('-', "_");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == wanted.as_str())
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
        })
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| {
            format!(
                "cargo built no {wanted}.wasm: is the crate a `cdylib` (crate-type = [\"cdylib\", \"rlib\"])?"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_split_the_query() {
        let r = Request::get("/a?b=1").header("X-Key", "v").head();
        assert_eq!(r.path, "/a");
        assert_eq!(r.query.as_deref(), Some("b=1"));
        assert_eq!(r.headers[0].name, "x-key");
    }

    #[test]
    fn info_reads_the_host_s_form() {
        let i = info_of(&json!({"body": {"request": 10, "response": null}, "phases": ["request"]}));
        assert_eq!(i.body.request, Some(10));
        assert_eq!(i.body.response, None);
        assert_eq!(i.phases, Phases::REQUEST);
    }

    #[test]
    fn a_missing_binary_is_explained() {
        // Not on PATH under this name, and TOLLGATE pointing nowhere.
        std::env::set_var("TOLLGATE", "/nonexistent/tollgate");
        let e = tollgate_binary().unwrap_err();
        std::env::remove_var("TOLLGATE");
        assert!(e.contains("no such file"), "{e}");
    }
}
