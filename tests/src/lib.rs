//! Shared helpers for the end-to-end tests: a real gateway on loopback with
//! plugins built from this tree, a real recording upstream, and clients.

pub mod admin;
pub mod browser;
pub mod process;
pub mod raw;
pub mod redis;
pub mod runner;
pub mod tls_upstream;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate::app::{self as gateway, Gateway};

/// Where the test build put the compiled plugins and fixtures.
pub fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("TOLLGATE_PLUGIN_DIR"))
}

/// One `[plugins] cache-dir` for every gateway the tests start: each plugin
/// (and each configured snapshot) is compiled to native code once per test
/// run instead of once per gateway (seconds of CPU for a chain of several
/// steps). Gateways share it as operators' gateways on one machine may.
pub fn plugin_cache() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    target.join("tmp").join("tollgate-plugin-cache")
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("TOLLGATE_ROOT"))
}

/// The `tollgate` binary, built on first use (cargo is quick when it is
/// already up to date).
pub fn tollgate_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            // The whole workspace's binaries, not `-p tollgate`: cargo
            // picks dependency features from the packages it is asked to
            // build, and `-p tollgate` alone would build wasmtime, hyper
            // and a hundred more a second time with other features than
            // `cargo test --workspace` has just built them with (minutes).
            // tests/Cargo.toml keeps every test-only crate a normal
            // dependency so that the two selections agree.
            .args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(root())
            // The test's own CARGO_MANIFEST_DIR, CARGO_PKG_NAME, OUT_DIR ... would
            // make ring's build script (rerun-if-env-changed) dirty, and
            // with it everything over ring: minutes of rebuilding, twice
            // (here, then again for the next `cargo test`).
            .envs_remove_cargo_package_vars()
            .status()
            .expect("running cargo build for the tollgate binary");
        assert!(status.success(), "building the tollgate binary failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root().join("target"));
        target.join("debug").join("tollgate")
    })
    .clone()
}

/// Removing the variables cargo sets for the package under test.
trait RemoveCargoPackageVars {
    fn envs_remove_cargo_package_vars(&mut self) -> &mut Self;
}

impl RemoveCargoPackageVars for std::process::Command {
    fn envs_remove_cargo_package_vars(&mut self) -> &mut Self {
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || k.starts_with("CARGO_CRATE_")
                || k.starts_with("CARGO_CFG_")
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "OUT_DIR"
            {
                self.env_remove(&*k);
            }
        }
        self
    }
}

/// `cargo` in `dir` with nothing of the outer build leaking into it (for
/// building policy crates from a test).
pub fn guest_cargo(dir: &Path) -> std::process::Command {
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Run `cmd`, fail the test with its output unless it succeeds; its
/// standard output and error together.
pub fn run_ok(mut cmd: std::process::Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// A port on 127.0.0.1 that was free a moment ago (for gateways started as
/// separate processes, which must be told their port in advance).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// `tollgate run --config <config>` for the real binary: logs at `warn`,
/// standard input and output discarded; callers set standard error, the log
/// level and the rest before spawning.
pub fn gateway_command(config: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(tollgate_bin());
    c.args(["run", "--config"])
        .arg(config)
        .env("TOLLGATE_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    c
}

/// Kills a child process when dropped, so a failing test leaves nothing
/// running.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Assert that `haystack` contains `needle`, showing both when not.
#[track_caller]
pub fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected to find {needle:?} in:\n{haystack}"
    );
}

// ---------------------------------------------------------------------------
// Upstream

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A real HTTP upstream on loopback that records what it receives.
///
/// Paths with special behaviour:
/// - `/slow/{ms}`: waits that long before answering;
/// - `/hang`: never answers;
/// - `/status/{code}`: answers with that status;
/// - `/big/{bytes}`: answers with a body of that many `x`;
/// - anything else: 200 with a JSON echo, and response headers
///   `server: recording-upstream`, `x-upstream: yes`, a hop-by-hop
///   `connection: x-hop` + `x-hop: 1`, and `x-chain-response: upstream`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, seen.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the upstream saw no request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    };
    seen.lock().unwrap().push(rec.clone());
    let path = parts.uri.path();
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/hang" {
        std::future::pending::<()>().await;
    }
    let mut status = StatusCode::OK;
    if let Some(code) = path.strip_prefix("/status/") {
        status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::OK);
    }
    let body = if let Some(n) = path.strip_prefix("/big/") {
        Bytes::from(vec![b'x'; n.parse().unwrap_or(0)])
    } else {
        Bytes::from(
            serde_json::json!({
                "method": rec.method,
                "path": rec.path_and_query,
                "body": String::from_utf8_lossy(&rec.body),
            })
            .to_string(),
        )
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert("server", "recording-upstream".parse().unwrap());
    h.insert("x-upstream", "yes".parse().unwrap());
    h.insert("connection", "x-hop".parse().unwrap());
    h.insert("x-hop", "1".parse().unwrap());
    h.insert("x-chain-response", "upstream".parse().unwrap());
    h.insert("content-type", "application/json".parse().unwrap());
    Ok(resp)
}

// ---------------------------------------------------------------------------
// Gateway

/// How to start a test gateway.
pub struct GatewayBuilder {
    manifest: String,
    limits: String,
    tls: Option<(String, String)>,
    watch: bool,
    data_dir: Option<PathBuf>,
    plugin_cache: Option<PathBuf>,
    access_log: Option<PathBuf>,
    admin: bool,
    snapshots: bool,
    reset: bool,
    plugin_paths: Vec<(String, PathBuf)>,
    extra: String,
    /// Policy folders (created empty, relative to the gateway's folder)
    /// named after `api.toml`.
    folders: Vec<String>,
    /// Files written into the gateway's folder before it starts.
    files: Vec<(String, Vec<u8>)>,
}

impl GatewayBuilder {
    /// Name an (empty) policy folder `name` after `api.toml`.
    pub fn policy_folder(mut self, name: &str) -> Self {
        self.folders.push(name.to_string());
        self
    }

    /// Write `bytes` to `name` in the gateway's folder before it starts
    /// (an OpenAPI document the manifest names ...).
    pub fn file(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.to_string(), bytes.into()));
        self
    }

    /// `[plugins] snapshots` (on unless this says otherwise, as in the
    /// gateway itself).
    pub fn snapshots(mut self, on: bool) -> Self {
        self.snapshots = on;
        self
    }
    /// `[plugins] reset`: the in-guest reset for `request` isolation (on
    /// unless this says otherwise, as in the gateway itself).
    pub fn reset(mut self, on: bool) -> Self {
        self.reset = on;
        self
    }
    /// `[plugins] paths`: load the plugin `name` from this file (besides
    /// the plugins built from this tree).
    pub fn plugin_path(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.plugin_paths.push((name.to_string(), path.into()));
        self
    }
    /// Serve the admin API on a loopback port of its own.
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }
    /// Keep the store (and the compiled-plugin cache) in this directory
    /// instead of a fresh one, e.g. to restart a gateway on the same data.
    /// Only one gateway at a time can hold a data directory.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(path.into());
        self
    }
    /// `[plugins] cache-dir`: this folder instead of the one every test
    /// gateway shares ([`plugin_cache`]).
    pub fn plugin_cache(mut self, path: impl Into<PathBuf>) -> Self {
        self.plugin_cache = Some(path.into());
        self
    }
    /// Extra lines for the `[limits]` table.
    pub fn limits(mut self, toml: &str) -> Self {
        self.limits = toml.to_string();
        self
    }
    /// Serve TLS with this PEM certificate and key.
    pub fn tls(mut self, cert_pem: String, key_pem: String) -> Self {
        self.tls = Some((cert_pem, key_pem));
        self
    }
    /// Extra TOML appended to the gateway file (e.g. an `[outbound]` table).
    pub fn gateway_toml(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }
    /// Reload on file change.
    pub fn watch(mut self, on: bool) -> Self {
        self.watch = on;
        self
    }
    /// Write the `sink` service's lines (access logs) to this file
    /// (`[access-log] path`) instead of standard output.
    pub fn access_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.access_log = Some(path.into());
        self
    }

    pub async fn start(self) -> TestGateway {
        TestGateway::start_with(self).await
    }
}

/// A real gateway, in this process, on a loopback port.
pub struct TestGateway {
    pub dir: tempfile::TempDir,
    pub gateway: Arc<Gateway>,
    pub addr: SocketAddr,
    pub tls: bool,
    /// The admin API's address, with [`GatewayBuilder::admin`].
    pub admin_addr: Option<SocketAddr>,
    /// The developer portal's address, with a `[portal]` section.
    pub portal_addr: Option<SocketAddr>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl TestGateway {
    /// A gateway serving this policy manifest (its text; `{upstream}` is
    /// replaced by nothing — format the URL in yourself).
    pub fn builder(manifest: &str) -> GatewayBuilder {
        GatewayBuilder {
            manifest: manifest.to_string(),
            limits: String::new(),
            tls: None,
            watch: false,
            data_dir: None,
            plugin_cache: None,
            access_log: None,
            admin: false,
            snapshots: true,
            reset: true,
            plugin_paths: Vec::new(),
            extra: String::new(),
            folders: Vec::new(),
            files: Vec::new(),
        }
    }

    pub async fn start(manifest: &str) -> TestGateway {
        Self::builder(manifest).start().await
    }

    async fn start_with(b: GatewayBuilder) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api.toml"), &b.manifest).unwrap();
        for f in &b.folders {
            std::fs::create_dir_all(dir.path().join(f)).unwrap();
        }
        for (name, bytes) in &b.files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        let policies = std::iter::once("api.toml".to_string())
            .chain(b.folders.iter().cloned())
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let tls = match &b.tls {
            Some((cert, key)) => {
                std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
                std::fs::write(dir.path().join("key.pem"), key).unwrap();
                "tls = { cert = \"cert.pem\", key = \"key.pem\" }"
            }
            None => "",
        };
        let gw = format!(
            r#"schema = 1
data-dir = {data_dir:?}
policies = [{policies}]

[[listener]]
name = "test"
address = "127.0.0.1:0"
{tls}

[plugins]
dirs = [{plugins:?}]
cache-dir = {cache:?}
snapshots = {snapshots}
reset = {reset}
paths = {{ {paths} }}

[limits]
{limits}

[reload]
watch = {watch}
debounce = "50ms"
"#,
            plugins = plugin_dir().display().to_string(),
            cache = b
                .plugin_cache
                .clone()
                .unwrap_or_else(plugin_cache)
                .display()
                .to_string(),
            limits = b.limits,
            watch = b.watch,
            snapshots = b.snapshots,
            reset = b.reset,
            paths = b
                .plugin_paths
                .iter()
                .map(|(n, p)| format!("{n:?} = {:?}", p.display().to_string()))
                .collect::<Vec<_>>()
                .join(", "),
            data_dir = b
                .data_dir
                .as_ref()
                .map_or_else(|| "data".to_string(), |p| p.display().to_string()),
        );
        let gw = match &b.access_log {
            Some(p) => format!("{gw}\n[access-log]\npath = {:?}\n", p.display().to_string()),
            None => gw,
        };
        let gw = if b.admin {
            format!("{gw}\n[admin]\naddress = \"127.0.0.1:0\"\n")
        } else {
            gw
        };
        let gw = format!("{gw}\n{}\n", b.extra);
        let gw_path = dir.path().join("tollgate.toml");
        std::fs::write(&gw_path, gw).unwrap();
        let p = gw_path.clone();
        let (gateway, file) = tokio::task::spawn_blocking(move || Gateway::load(&p))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("gateway failed to start: {e:#}"));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (bound, _tasks) = gateway::serve(gateway.clone(), &file, rx).await.unwrap();
        gateway.spawn_reloaders(b.watch, Duration::from_millis(50));
        TestGateway {
            dir,
            gateway,
            addr: bound[0].addr,
            tls: b.tls.is_some(),
            admin_addr: bound.iter().find(|b| b.name == "admin").map(|b| b.addr),
            portal_addr: bound.iter().find(|b| b.name == "portal").map(|b| b.addr),
            shutdown: tx,
        }
    }

    /// Wait until every step of every API is served from its configured
    /// snapshot (built in the background after a load; see
    /// `host/src/policy/snapshot.rs`), at most two minutes.
    pub async fn until_snapshotted(&self) {
        let started = std::time::Instant::now();
        loop {
            if self.gateway.current().snapshotted() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "steps not snapshotted after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Replace the policy manifest on disk (for reload tests).
    pub fn write_manifest(&self, text: &str) {
        let p = self.dir.path().join("api.toml");
        let tmp = self.dir.path().join("api.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, p).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An admin API client with a fresh administrator's token (the first
    /// call creates the `admin` user, as `tollgate admin init` would).
    pub fn admin(&self) -> admin::AdminClient {
        let addr = self.admin_addr.expect("start the gateway with .admin()");
        let reg = self.gateway.registry.clone();
        let token = match reg.init_admin("admin") {
            Ok(t) => t,
            Err(_) => {
                reg.rotate_user_token("test", "admin")
                    .expect("the admin user exists")
                    .1
            }
        };
        admin::AdminClient::new(format!("http://{addr}"), token)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A plain HTTP/1.1 client that keeps no connection pool between tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Poll `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A manifest with the API `pets` (prefix `/pets`, to `upstream`) behind
/// `key-auth` with the registry's consumers: the start of many tests'
/// manifests, which append their own steps and APIs.
pub fn keyed_pets(upstream: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "pets"
upstream = {{ targets = ["{upstream}"] }}

[[api.route]]
prefix = "/pets"

[[api.chain]]
name = "auth"
plugin = "key-auth"
grants = ["consumers"]
"#
    )
}

/// An API manifest with one prefix route `/` to `upstream` and the given
/// chain (TOML `[[api.chain]]` entries).
pub fn simple_manifest(upstream: &str, chain: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "test"
upstream = {{ targets = ["{upstream}"], connect-timeout = "500ms", response-timeout = "2s" }}

[[api.route]]
prefix = "/"

{chain}
"#
    )
}
