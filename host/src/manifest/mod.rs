//! TOML configuration: the gateway file and the policy manifests.
//!
//! Everything here is plain data with `deny_unknown_fields`; newtypes reject
//! nonsense (durations, sizes, names) while parsing, so a file that parses is
//! structurally sound. Semantic checks that need the plugins (each step's
//! config) happen in [`crate::loader`], which adds file, API and step to the
//! message.

mod canary;
pub mod errors;

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema version this build understands.
pub const SCHEMA: u32 = 1;

/// An error in a configuration file, with where it is and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML did not parse into the expected shape. `detail` is toml's
    /// own message, which carries the line, the column and a caret.
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    /// A value parsed but makes no sense (duplicate names, unknown plugin...).
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// Several errors in one file, each a [`ManifestError::Parse`]; shown
    /// one after the other, each after `error: ` as `tollgate check` does.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\nerror: "))]
    Several(Vec<ManifestError>),
}

impl ManifestError {
    /// Each error on its own (a [`ManifestError::Several`] split up).
    pub fn into_list(self) -> Vec<ManifestError> {
        match self {
            ManifestError::Several(list) => list,
            e => vec![e],
        }
    }
}

/// Parse a TOML document, mapping errors to [`ManifestError::Parse`]: every
/// error in the file, not only the first (see [`crate::manifest::errors`]).
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ManifestError> {
    crate::manifest::errors::collect(text).map_err(|errors| {
        let mut list: Vec<ManifestError> = errors
            .into_iter()
            .map(|detail| ManifestError::Parse {
                path: path.to_path_buf(),
                detail,
            })
            .collect();
        if list.len() == 1 {
            list.remove(0)
        } else {
            ManifestError::Several(list)
        }
    })
}

/// Read and parse a TOML file.
pub fn read_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<(T, String), ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value = parse_toml(path, &text)?;
    Ok((value, text))
}

/// 1-based line and column of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// Resolve `p` against the folder of the file that named it.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

// ---------------------------------------------------------------------------
// Newtypes

pub use crate::domain::units::{Dur, Size};
pub use canary::{CanarySpec, Percent, RollbackSpec};

/// Default `plugin-log-rate`: log lines per second a step may write.
pub const DEFAULT_LOG_RATE: u32 = 100;
/// Default `plugin-log-line`: bytes of one log line.
pub const DEFAULT_LOG_LINE: usize = 4096;

/// A name for an API, route, step or listener: 1 to 64 characters of
/// `a-z A-Z 0-9 - _ .`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!("name `{s}` must be 1 to 64 characters long"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "name `{s}` contains {c:?}: use only letters, digits, `-`, `_` and `.`"
            ));
        }
        Ok(Name(s))
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::try_from(s).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// The gateway file

/// The operator's file: listeners, TLS, data directory, limits, plugins and
/// which policy manifests to load.
///
/// ```toml
/// schema = 1
/// data-dir = "data"
/// policies = ["policies/demo.toml"]
///
/// [[listener]]
/// name = "public"
/// address = "127.0.0.1:8080"
///
/// [plugins]
/// dirs = ["plugins/target/wasm32-wasip2/release"]
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GatewayFile {
    /// Must be 1.
    pub schema: u32,
    /// Where the store and the compiled-plugin cache live; relative paths
    /// are relative to this file. Default: `data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Policy manifest files, or folders whose `*.toml` files are all loaded.
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    /// At least one listener.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerSpec>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub plugins: PluginSources,
    #[serde(default)]
    pub reload: ReloadSpec,
    #[serde(default)]
    pub cache: CacheSpec,
    #[serde(default)]
    pub access_log: AccessLogSpec,
    /// The admin API's listener; none without this section.
    pub admin: Option<AdminSpec>,
    #[serde(default)]
    pub outbound: OutboundSpec,
    /// `[metrics]`: what `GET /metrics` shows beyond the defaults.
    #[serde(default)]
    pub metrics: crate::observe::metrics::MetricsSpec,
    /// `[analytics]`: the per-minute analytics store; off without it.
    pub analytics: Option<crate::observe::analytics::AnalyticsSpec>,
    /// `[otel]`: OpenTelemetry traces; off without it.
    pub otel: Option<crate::observe::trace::OtelSpec>,
    /// `[oauth]`: the OAuth 2.0 authorization server (client credentials);
    /// off without it.
    pub oauth: Option<OAuthSpec>,
    /// `[portal]`: the developer portal's own listener; none without it.
    pub portal: Option<PortalSpec>,
    /// `[cluster]`: rate limits, quotas and the response cache shared with
    /// other gateways through Redis; each node on its own without it.
    pub cluster: Option<crate::cluster::ClusterSpec>,
}

/// `[oauth]`: the gateway issues access tokens to OAuth clients of its
/// apps (the client credentials grant, RFC 6749 §4.4) at `/oauth2/token`
/// on every public listener, signed by keys it keeps in its store and
/// publishes at `/.well-known/jwks.json` (docs/oauth.md).
///
/// ```toml
/// [oauth]
/// issuer = "https://api.example.com"  # the `iss` of its tokens; default: the scheme and host the client used
/// token-lifetime = "1h"               # 5s to 24h
/// audience = "https://api.example.com" # the `aud` of its tokens; none by default
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OAuthSpec {
    pub issuer: Option<String>,
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime: Dur,
    pub audience: Option<String>,
}

fn default_token_lifetime() -> Dur {
    Dur(std::time::Duration::from_secs(3600))
}

impl OAuthSpec {
    /// What is wrong with it, each as one line.
    pub fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let secs = self.token_lifetime.0.as_secs();
        if !(5..=86_400).contains(&secs) || self.token_lifetime.0.subsec_nanos() != 0 {
            errs.push(format!(
                "oauth.token-lifetime = {:?} must be whole seconds from 5s to 24h",
                self.token_lifetime.0
            ));
        }
        let url = |field: &str, v: &str, errs: &mut Vec<String>| {
            let ok = (v.starts_with("https://") || v.starts_with("http://"))
                && v.len() <= 2048
                && !v.chars().any(|c| c.is_whitespace() || c.is_control())
                && !v.contains(['?', '#']);
            if !ok {
                errs.push(format!(
                    "oauth.{field} = {v:?} must be an http:// or https:// URL without query or fragment"
                ));
            }
        };
        if let Some(i) = &self.issuer {
            url("issuer", i, &mut errs);
        }
        if let Some(a) = &self.audience {
            if a.is_empty() || a.len() > 2048 || a.chars().any(|c| c.is_control()) {
                errs.push(
                    "oauth.audience must be 1 to 2048 characters without control characters".into(),
                );
            }
        }
        errs
    }
}

/// The policies' outbound HTTP client (`http-client`, e.g. the `jwt`
/// plugin's JWKS fetches). `https://` URLs are verified against the
/// system's roots and, with `ca-file`, the CA certificates of that PEM file
/// too (relative to the gateway file; read at start).
///
/// ```toml
/// [outbound]
/// ca-file = "certs/idp-ca.pem"
/// ```
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutboundSpec {
    pub ca_file: Option<PathBuf>,
}

/// The response cache shared by `cache` steps.
///
/// ```toml
/// [cache]
/// max-bytes = "64MiB"
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CacheSpec {
    pub max_bytes: Size,
}

impl Default for CacheSpec {
    fn default() -> Self {
        CacheSpec {
            max_bytes: Size(64 << 20),
        }
    }
}

/// Where the `sink` service (access logs) writes: a file, or standard
/// output when no path is given.
///
/// ```toml
/// [access-log]
/// path = "logs/access.log"
/// ```
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AccessLogSpec {
    pub path: Option<PathBuf>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// One listening socket.
///
/// ```toml
/// [[listener]]
/// name = "public-tls"
/// address = "0.0.0.0:8443"
/// tls = { cert = "certs/gw.pem", key = "certs/gw.key" }
/// ```
/// `[admin]`: the admin API's own listener (see docs/admin-api.md).
///
/// ```toml
/// [admin]
/// address = "127.0.0.1:8001"   # a non-loopback address needs `tls`
/// max-body = "1MiB"
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminSpec {
    #[serde(default = "default_admin_address")]
    pub address: String,
    #[serde(default = "default_admin_body")]
    pub max_body: Size,
    pub tls: Option<TlsSpec>,
}

fn default_admin_address() -> String {
    "127.0.0.1:8001".into()
}

fn default_admin_body() -> Size {
    Size(1 << 20)
}

/// `[portal]`: the developer portal on its own listener (docs/portal.md):
/// consumers sign up, sign in, create apps, subscribe to plans and manage
/// their keys.
///
/// ```toml
/// [portal]
/// address = "127.0.0.1:8002"    # a non-loopback address needs `tls` (or an https public-url)
/// signup = "moderated"          # "open" | "moderated" (default) | "closed"
/// public-url = "https://developer.example.com"  # links in mail; default from `address`
/// outbox = "outbox"             # each mail one .eml file in this folder; without it no password reset
/// smtp = { host = "mail.example.com", username = "portal", password-env = "TOLLGATE_SMTP_PASSWORD" }
///                               # relay the outbox to this SMTP server (docs/portal.md, "Mail")
/// session-lifetime = "8h"
/// reset-lifetime = "30m"        # how long a password-reset link works
/// max-body = "64KiB"
/// lockout = { failures = 5, window = "15m", duration = "15m", client-failures = 50 }
/// tls = { cert = "cert.pem", key = "key.pem" }
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PortalSpec {
    #[serde(default = "default_portal_address")]
    pub address: String,
    #[serde(default)]
    pub signup: Signup,
    pub public_url: Option<String>,
    pub outbox: Option<PathBuf>,
    pub smtp: Option<SmtpSpec>,
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime: Dur,
    #[serde(default = "default_reset_lifetime")]
    pub reset_lifetime: Dur,
    #[serde(default = "default_portal_body")]
    pub max_body: Size,
    #[serde(default)]
    pub lockout: LockoutSpec,
    pub tls: Option<TlsSpec>,
}

/// The SMTP server the portal's outbox is relayed to. Mail waits in the
/// outbox folder until the server accepted it.
///
/// ```toml
/// smtp = { host = "mail.example.com", port = 587, tls = "starttls", username = "portal",
///          password-env = "TOLLGATE_SMTP_PASSWORD", ca = "mail-ca.pem", timeout = "10s",
///          from = "Developer portal <portal@example.com>" }
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SmtpSpec {
    pub host: String,
    /// Default: 587 with STARTTLS, 465 with TLS, 25 without.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// The environment variable holding the password (never the file).
    pub password_env: Option<String>,
    /// PEM certificates trusted besides the system's (a private CA).
    pub ca: Option<PathBuf>,
    #[serde(default = "default_smtp_timeout")]
    pub timeout: Dur,
    /// The `From` of the portal's mail (and the envelope sender's address).
    pub from: Option<String>,
}

/// How the portal's SMTP connection is protected.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain connection upgraded by STARTTLS, which must succeed.
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", port 465).
    Tls,
    /// No encryption: only to a loopback address, without credentials.
    None,
}

/// The address in a mailbox (`Name <a@b.c>` or `a@b.c`): one `@` with text
/// on both sides, no space, angle bracket or control character.
pub fn mail_address(mailbox: &str) -> Option<&str> {
    let a = match (mailbox.rfind('<'), mailbox.ends_with('>')) {
        (Some(i), true) => &mailbox[i + 1..mailbox.len() - 1],
        (None, false) => mailbox.trim(),
        _ => return None,
    };
    let (local, domain) = a.split_once('@')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 254
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>@,;\"".contains(c))
    };
    (ok(local) && ok(domain)).then_some(a)
}

fn default_smtp_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// Who may create a portal account.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Signup {
    /// Anyone; the account is active at once.
    Open,
    /// Anyone; the account waits for an administrator's approval.
    #[default]
    Moderated,
    /// No sign-up page: accounts come from the admin side.
    Closed,
}

/// Sign-in throttling: `failures` wrong passwords for one account within
/// `window` lock it for `duration`; `client-failures` from one client
/// address within `window` lock that address out for `duration`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LockoutSpec {
    pub failures: u32,
    pub window: Dur,
    pub duration: Dur,
    pub client_failures: u32,
}

impl Default for LockoutSpec {
    fn default() -> Self {
        LockoutSpec {
            failures: 5,
            window: Dur(Duration::from_secs(15 * 60)),
            duration: Dur(Duration::from_secs(15 * 60)),
            client_failures: 50,
        }
    }
}

fn default_portal_address() -> String {
    "127.0.0.1:8002".into()
}

fn default_session_lifetime() -> Dur {
    Dur(Duration::from_secs(8 * 3600))
}

fn default_reset_lifetime() -> Dur {
    Dur(Duration::from_secs(30 * 60))
}

fn default_portal_body() -> Size {
    Size(64 << 10)
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ListenerSpec {
    pub name: Name,
    /// `IP:port`; port 0 picks a free port (logged at start).
    pub address: String,
    pub tls: Option<TlsSpec>,
}

/// PEM certificate chain and private key; ALPN offers h2 and http/1.1.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Limits on clients and on policy steps. Every field has a default.
///
/// ```toml
/// [limits]
/// max-header-bytes = "64KiB"
/// max-request-target = "8KiB"
/// request-header-timeout = "10s"
/// request-body-timeout = "60s"
/// send-timeout = "30s"
/// step-timeout = "50ms"
/// step-memory = "16MiB"
/// step-isolation = "request"   # or "worker" (docs/configuration.md)
/// step-max-uses = 10000        # worker isolation: uses of one instance
/// step-idle = "60s"            # worker isolation: idle time before discard
/// step-wall-timeout = "5s"     # default: the larger of 5s and step-timeout
/// step-concurrency = 1         # default: serving workers - 1, at least 1
/// step-queue-timeout = "50ms"  # default: the step's timeout
/// step-quarantine = { failures = 5, window = "10s", cool-down = "5s", max-cool-down = "1m" }
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Largest request head (HTTP/1 line and headers, HTTP/2 header list).
    pub max_header_bytes: Size,
    /// Longest request-target (HTTP/1 request line's target, HTTP/2
    /// `:path`); longer is 414.
    pub max_request_target: Size,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// A client must send its whole request head within this time.
    pub request_header_timeout: Dur,
    /// A client must send a request body the gateway reads (for a step with
    /// body access, or to drain a refused one) within this time after its
    /// head; else 408 and the connection is closed.
    pub request_body_timeout: Dur,
    /// A write to a client that makes no progress for this long (the client
    /// stopped reading) ends the connection.
    pub send_timeout: Dur,
    /// Most simultaneous client connections per listener.
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Default running-time deadline for one policy phase (configure +
    /// phase): time the guest itself runs, not time spent waiting for a
    /// core or in host calls.
    pub step_timeout: Dur,
    /// Default memory cap for one policy instance.
    pub step_memory: Size,
    /// Most policy instances alive at once (across all requests); a request
    /// that finds none free gets 503.
    pub max_instances: u32,
    /// Default for each step: log lines its plugin may write per second
    /// (all its instances together); the rest are dropped and counted.
    pub plugin_log_rate: u32,
    /// Default for each step: longest plugin log line; longer ones are cut.
    pub plugin_log_line: Size,
    /// Default for each step: whether a request gets a fresh instance
    /// (`request`) or a warm one kept by its worker thread (`worker`).
    pub step_isolation: Isolation,
    /// Default for each step under `worker` isolation: how many requests
    /// one instance serves before it is discarded.
    pub step_max_uses: u64,
    /// Default for each step under `worker` isolation: how long an unused
    /// instance is kept.
    pub step_idle: Dur,
    /// Default for each step: wall-clock bound of one policy phase, host
    /// calls included (1ms-300s, at least `step-timeout`). Unset: the
    /// larger of 5s and the step's `timeout`.
    pub step_wall_timeout: Option<Dur>,
    /// Default for each step: calls of it that may run at once (others
    /// wait); unset: one fewer than the serving workers, at least 1.
    pub step_concurrency: Option<usize>,
    /// Default for each step: how long a call waits for one of those
    /// places before 503 `policy_busy`; unset: the step's timeout.
    pub step_queue_timeout: Option<Dur>,
    /// Default for each step: when a failing step is quarantined.
    pub step_quarantine: QuarantineSpec,
}

/// When a step that keeps failing is quarantined: `failures` failures
/// (traps, deadlines, memory, invalid output) within `window`, in at least
/// half of its calls there; then it is not run for `cool-down` (doubling
/// per repeated trip up to `max-cool-down`) and a probe call decides.
///
/// ```toml
/// step-quarantine = { failures = 5, window = "10s", cool-down = "5s", max-cool-down = "1m" }
/// ```
///
/// Per step, the keys given override the `[limits]` ones.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuarantineSpec {
    pub failures: Option<u32>,
    pub window: Option<Dur>,
    pub cool_down: Option<Dur>,
    pub max_cool_down: Option<Dur>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: Size(64 << 10),
            max_request_target: Size(8 << 10),
            max_headers: 100,
            request_header_timeout: Dur(Duration::from_secs(10)),
            request_body_timeout: Dur(Duration::from_secs(60)),
            send_timeout: Dur(Duration::from_secs(30)),
            max_connections: 10_000,
            max_concurrent_streams: 100,
            step_timeout: Dur(Duration::from_millis(50)),
            step_memory: Size(16 << 20),
            max_instances: 1000,
            plugin_log_rate: DEFAULT_LOG_RATE,
            plugin_log_line: Size(DEFAULT_LOG_LINE as u64),
            step_wall_timeout: None,
            step_isolation: Isolation::Request,
            step_max_uses: 10_000,
            step_idle: Dur(Duration::from_secs(60)),
            step_concurrency: None,
            step_queue_timeout: None,
            step_quarantine: QuarantineSpec::default(),
        }
    }
}

/// What a step's guest state may outlive (`isolation = "request"` or
/// `"worker"`): see the "Isolation levels" section of
/// docs/configuration.md.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A fresh instance per request: nothing survives the request.
    #[default]
    Request,
    /// A warm instance per worker thread, reused across requests.
    Worker,
}

impl Isolation {
    /// The manifest's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Request => "request",
            Isolation::Worker => "worker",
        }
    }
}

/// Where plugins come from: a name in a chain resolves to an explicit path
/// in `paths`, else to `<dir>/<name>.wasm` (with `-` read as `_`) in the
/// first of `dirs` that has it.
///
/// ```toml
/// [plugins]
/// dirs = ["plugins"]
/// paths = { my-auth = "/opt/policies/my_auth.wasm" }
/// snapshots = true        # the default
/// reset = true            # the default
/// cache-dir = "/var/cache/tollgate"   # default: <data-dir>/plugin-cache
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginSources {
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    #[serde(default)]
    pub paths: std::collections::BTreeMap<String, PathBuf>,
    /// Build a configured snapshot of every step in the background, so that
    /// requests instantiate a plugin with its `configure` already run
    /// instead of configuring a fresh instance each time (see
    /// docs/performance.md). `false`: every request configures its own.
    #[serde(default = "yes")]
    pub snapshots: bool,
    /// Give each step's snapshot an in-guest reset, so that `request`
    /// isolation reuses an instance after putting it back into the
    /// snapshot's state instead of instantiating a fresh one per request
    /// (docs/performance.md). `false`: a fresh instance per request.
    #[serde(default = "yes")]
    pub reset: bool,
    /// Where plugins compiled to native code (and their configured
    /// snapshots) are kept between starts: `<data-dir>/plugin-cache` unless
    /// set. Files are named by the hash of their Wasm and of the engine's
    /// settings and written whole (temporary file, then rename), so
    /// gateways on one machine may share a folder.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl Default for PluginSources {
    fn default() -> Self {
        PluginSources {
            dirs: Vec::new(),
            paths: Default::default(),
            snapshots: true,
            reset: true,
            cache_dir: None,
        }
    }
}

/// How configuration changes are picked up (SIGHUP always works).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ReloadSpec {
    /// Watch the gateway file, the manifests and the plugin files.
    pub watch: bool,
    /// Wait this long after the last change before reloading.
    pub debounce: Dur,
}

impl Default for ReloadSpec {
    fn default() -> Self {
        ReloadSpec {
            watch: true,
            debounce: Dur(Duration::from_millis(200)),
        }
    }
}

// ---------------------------------------------------------------------------
// Policy manifests

/// A policy manifest: one or more APIs with their routes, upstream and chain.
///
/// ```toml
/// schema = 1
///
/// [[api]]
/// name = "pets"
/// upstream = { targets = ["http://127.0.0.1:9090"] }
///
/// [[api.route]]
/// path = "/pets/{id}"
/// methods = ["GET"]
///
/// [[api.chain]]
/// plugin = "transform"
/// config = { request = { headers = { set = { "x-api" = "pets" } } } }
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyManifest {
    pub schema: u32,
    #[serde(default, rename = "api")]
    pub apis: Vec<toml::Spanned<ApiSpec>>,
    /// Version sets: APIs that are versions of one another.
    #[serde(default, rename = "version-set")]
    pub version_sets: Vec<toml::Spanned<VersionSetSpec>>,
    /// Consumers and their keys (the admin API adds more at run time).
    #[serde(default, rename = "consumer")]
    pub consumers: Vec<toml::Spanned<ConsumerSpec>>,
    /// The gateway's chain: steps of every API, around each API's own
    /// chain (where an API's `base` step says; first by default). At most
    /// one manifest of a configuration declares it.
    #[serde(default, rename = "chain")]
    pub chain: Vec<toml::Spanned<StepSpec>>,
    /// Chains of products: steps of the calls whose caller is subscribed
    /// through the product, run once a step has identified the caller.
    #[serde(default, rename = "product")]
    pub products: Vec<toml::Spanned<ProductChainSpec>>,
}

/// `[[product]]`: the chain of a product's calls.
///
/// ```toml
/// [[product]]
/// id = "gold"
/// [[product.chain]]
/// plugin = "rate-limit"
/// grants = ["counters", "consumers"]
/// config = { limits = [{ requests = 100, per = "minute" }] }
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProductChainSpec {
    /// The product's id, as the admin API and the caller's subscription
    /// name it.
    pub id: Name,
    #[serde(default, rename = "chain")]
    pub chain: Vec<toml::Spanned<StepSpec>>,
}

/// A consumer declared in a manifest, with its keys stored as SHA-256
/// digests (`tollgate hash-key KEY` prints one).
///
/// ```toml
/// [[consumer]]
/// id = "alice"
/// app = "alice-shop"
/// plan = "gold"
/// apis = ["pets"]            # empty or absent: every API
/// keys = [{ id = "k1", sha256 = "9f86d081884c7d65..." }]
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsumerSpec {
    pub id: Name,
    pub app: Option<Name>,
    pub plan: Option<Name>,
    pub product: Option<Name>,
    #[serde(default)]
    pub apis: Vec<Name>,
    #[serde(default)]
    pub keys: Vec<KeySpec>,
    /// Groups the consumer is a member of besides `developers` (which
    /// every consumer is), e.g. `groups = ["partners"]`.
    #[serde(default)]
    pub groups: Vec<Name>,
}

/// One API key of a consumer.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeySpec {
    pub id: Name,
    /// SHA-256 of the key, 64 hex digits.
    pub sha256: String,
    /// When the key stops working (RFC 3339 date-time).
    pub expires: Option<toml::value::Datetime>,
}

/// One API.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiSpec {
    pub name: Name,
    pub upstream: UpstreamSpec,
    /// An OpenAPI 3.0 or 3.1 document (YAML or JSON, relative to the
    /// manifest): the API gets a route per operation from it, and steps
    /// granted `openapi` get the document.
    #[serde(default)]
    pub openapi: Option<PathBuf>,
    /// At least one route (or a document's operations).
    #[serde(default, rename = "route")]
    pub routes: Vec<toml::Spanned<RouteSpec>>,
    /// The request chain, in order; the response chain runs in reverse.
    #[serde(default, rename = "chain")]
    pub chain: Vec<toml::Spanned<StepSpec>>,
    /// Record the API's calls (request and response, credentials
    /// redacted) to a file, for `tollgate policy replay`. Off without it.
    #[serde(default)]
    pub record: Option<RecordSpec>,
    /// The version set this API is a version of (`[[version-set]]`).
    pub version_set: Option<Name>,
    /// Its version in that set.
    pub version: Option<Version>,
    /// Deprecated or retired; active without it.
    pub lifecycle: Option<LifecycleSpec>,
    /// The number of the revision the API's own keys are (default 1).
    pub current_revision: Option<u32>,
    /// What that revision is about.
    pub current_description: Option<String>,
    /// The revision that was current before the last promotion: what
    /// `rollback` makes current again.
    pub previous_revision: Option<u32>,
    /// Staged revisions, each served at `/.rev/{api}/{number}/...`.
    #[serde(default, rename = "revision")]
    pub revisions: Vec<toml::Spanned<RevisionSpec>>,
    /// WebSocket upgrades, allowed with it (`[api.websocket]`); without
    /// it an `Upgrade` request goes upstream as a plain request.
    #[serde(default)]
    pub websocket: Option<WebSocketSpec>,
}

/// `[api.websocket]`: the API's routes (or those named) accept WebSocket
/// upgrades. The request chain runs on the handshake like on any call;
/// once the upstream answers `101`, the gateway relays the messages both
/// ways until either side closes or a bound below is reached.
///
/// ```toml
/// [api.websocket]
/// routes = ["chat"]          # default: every route of the API
/// idle-timeout = "60s"       # no frame either way for this long: closed (1001)
/// max-lifetime = "1h"        # the longest a connection lasts (closed 1001)
/// max-message = "1MiB"       # a larger message or frame closes it (1009)
/// ```
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebSocketSpec {
    /// Route names (a route's `name`, or its path or prefix without one);
    /// empty: every route.
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default = "default_ws_idle")]
    pub idle_timeout: Dur,
    #[serde(default = "default_ws_lifetime")]
    pub max_lifetime: Dur,
    #[serde(default = "default_ws_message")]
    pub max_message: Size,
}

impl Default for WebSocketSpec {
    fn default() -> Self {
        WebSocketSpec {
            routes: Vec::new(),
            idle_timeout: default_ws_idle(),
            max_lifetime: default_ws_lifetime(),
            max_message: default_ws_message(),
        }
    }
}

/// The largest `max-message`: beyond it one connection could hold memory
/// for thousands.
pub const MAX_WS_MESSAGE: u64 = 64 << 20;

fn default_ws_idle() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_ws_lifetime() -> Dur {
    Dur(Duration::from_secs(3600))
}
fn default_ws_message() -> Size {
    Size(1 << 20)
}

/// `[[version-set]]`: APIs that are versions of one another, and how a
/// call names its version.
///
/// ```toml
/// [[version-set]]
/// name = "pets"
/// scheme = "path"          # "path" | "header" | "query"
/// header = "api-version"   # scheme = "header" (the default name)
/// query = "api-version"    # scheme = "query" (the default name)
/// default = "v1"           # calls naming no version; without it: 404
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VersionSetSpec {
    pub name: Name,
    pub scheme: VersionScheme,
    pub header: Option<String>,
    pub query: Option<String>,
    pub default: Option<Version>,
}

/// Where a call names its version.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VersionScheme {
    /// The first path segment: `/v1/pets/1`.
    Path,
    /// A request header (`api-version: v1`).
    Header,
    /// A query parameter (`?api-version=v1`).
    Query,
}

impl VersionScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionScheme::Path => "path",
            VersionScheme::Header => "header",
            VersionScheme::Query => "query",
        }
    }
}

/// The default header and query parameter naming a version.
pub const DEFAULT_VERSION_KEY: &str = "api-version";

/// A version of a version set: 1 to 32 characters of `A-Z a-z 0-9 . _ -`,
/// not starting with `.` (it can be a path segment).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(String);

impl Version {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Version {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 32 {
            return Err(format!(
                "version `{}` must be 1 to 32 characters long",
                s.chars().take(40).collect::<String>()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "version `{s}` contains {c:?}: use only letters, digits, `-`, `_` and `.`"
            ));
        }
        if s.starts_with('.') {
            return Err(format!("version `{s}` must not start with `.`"));
        }
        Ok(Version(s))
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::try_from(s).map_err(serde::de::Error::custom)
    }
}

/// `lifecycle`: an API's place in its life.
///
/// ```toml
/// lifecycle = { state = "deprecated", deprecated-at = 2026-06-01T00:00:00Z, sunset = 2027-01-01T00:00:00Z, successor = "pets-v2" }
/// ```
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LifecycleSpec {
    #[serde(default)]
    pub state: LifecycleState,
    /// When it was (or will be) deprecated; required when deprecated.
    pub deprecated_at: Option<toml::value::Datetime>,
    /// When it stops being served (announced; not enforced).
    pub sunset: Option<toml::value::Datetime>,
    /// The API of the same version set that replaces it.
    pub successor: Option<Name>,
}

/// `active` (the default), `deprecated` or `retired`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LifecycleState {
    #[default]
    Active,
    Deprecated,
    Retired,
}

impl LifecycleState {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Active => "active",
            LifecycleState::Deprecated => "deprecated",
            LifecycleState::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<LifecycleState> {
        [
            LifecycleState::Active,
            LifecycleState::Deprecated,
            LifecycleState::Retired,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// `[[api.revision]]`: a staged copy of the API's upstream, routes and
/// chain, served at `/.rev/{api}/{number}/...` until it is made current.
///
/// ```toml
/// [[api.revision]]
/// number = 2
/// description = "new auth"
/// created = 2026-12-01T10:00:00Z
/// upstream = { targets = ["http://10.0.0.7:8080"] }
/// [[api.revision.route]]
/// path = "/pets/{id}"
/// [[api.revision.chain]]
/// plugin = "key-auth"
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RevisionSpec {
    pub number: u32,
    pub description: Option<String>,
    pub created: Option<toml::value::Datetime>,
    pub upstream: UpstreamSpec,
    /// An OpenAPI document whose operations are routes of the revision
    /// (as the API's `openapi`).
    #[serde(default)]
    pub openapi: Option<PathBuf>,
    #[serde(default, rename = "route")]
    pub routes: Vec<toml::Spanned<RouteSpec>>,
    #[serde(default, rename = "chain")]
    pub chain: Vec<toml::Spanned<StepSpec>>,
}

/// `[api.record]`: write the API's calls, sanitised, one JSON object per
/// line (see docs/configuration.md, "Record and replay").
///
/// ```toml
/// [api.record]
/// file = "traces/pets.jsonl"      # relative to the manifest; appended to
/// max-bytes = "16MiB"             # the file's size at which recording stops
/// max-body = "64KiB"              # longer bodies: length only
/// sample = 1.0                    # fraction of the calls recorded
/// redact-headers = ["x-session"]  # besides authorization, cookie, x-api-key, ...
/// redact-query = ["token"]        # besides api_key, apikey, access_token
/// ```
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RecordSpec {
    pub file: PathBuf,
    #[serde(default = "default_record_max_bytes")]
    pub max_bytes: Size,
    #[serde(default = "default_record_max_body")]
    pub max_body: Size,
    #[serde(default = "default_record_sample")]
    pub sample: f64,
    #[serde(default)]
    pub redact_headers: Vec<String>,
    #[serde(default)]
    pub redact_query: Vec<String>,
}

fn default_record_max_bytes() -> Size {
    Size(16 << 20)
}

fn default_record_max_body() -> Size {
    Size(64 << 10)
}

fn default_record_sample() -> f64 {
    1.0
}

/// Where an API's calls go, how long to wait for them, when to retry, and
/// when to stop sending calls to a failing target.
///
/// ```toml
/// [api.upstream]
/// targets = ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]
/// connect-timeout = "2s"
/// response-timeout = "30s"
/// body-timeout = "30s"
/// retries = 1
/// preserve-host = false
/// breaker = { failures = 5, cool-down = "10s", count-5xx = false }
/// ```
///
/// Over TLS (every target `https://`; the TLS fields are refused on
/// `http://` targets):
///
/// ```toml
/// [api.upstream]
/// targets = ["https://10.0.0.5:8443"]
/// ca-file = "certs/internal-ca.pem"      # default: the system's roots
/// tls-server-name = "pets.internal"      # default: each target's host
/// client-cert = "certs/gateway.pem"      # mTLS: with client-key
/// client-key = "certs/gateway.key"
/// insecure-skip-verify = false           # true: no certificate check (warned)
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpstreamSpec {
    /// `http://host:port[/base-path]` or `https://...`, all with the same
    /// scheme; several are used round-robin.
    pub targets: Vec<String>,
    /// Time to establish the TCP connection. Default 2s.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Time from sending the request to receiving the response head.
    /// Default 30s.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Dur,
    /// Longest wait for the next piece of the response body once the head
    /// has arrived; exceeded, the response is cut off. Default 30s.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Dur,
    /// Extra attempts for an idempotent call (GET, HEAD, OPTIONS, PUT,
    /// DELETE) with no streamed body, when the connection failed before any
    /// response; each goes to another target when there is one. Default 1.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Send the client's `Host` upstream instead of the target's.
    #[serde(default)]
    pub preserve_host: bool,
    /// The circuit breaker each target has.
    #[serde(default)]
    pub breaker: BreakerSpec,
    /// PEM CA certificates that the targets' certificates must chain to,
    /// instead of the system's roots (relative to the manifest).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented when a target asks for one (mTLS).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The private key of `client-cert` (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The name sent as SNI and checked against the certificate, instead of
    /// each target's host (e.g. targets given by IP address).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Accept any certificate. Only for tests: anyone on the path can then
    /// impersonate the upstream. Logged as a warning at every load.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// How `http://` targets are spoken to: `http1` (the default) or `h2c`
    /// (HTTP/2 without TLS, with prior knowledge: gRPC upstreams).
    /// `https://` targets speak HTTP/2 when they offer it (ALPN), else
    /// HTTP/1.1.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

/// `[api.upstream] protocol`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2c,
}

/// A target's circuit breaker (passive health check).
///
/// ```toml
/// [api.upstream.breaker]
/// failures = 5        # failures in a row that take a target out; 0 = never
/// cool-down = "10s"   # how long it stays out before one probe call
/// count-5xx = false   # whether 5xx answers count as failures
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct BreakerSpec {
    pub failures: u32,
    pub cool_down: Dur,
    pub count_5xx: bool,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            failures: 5,
            cool_down: Dur(Duration::from_secs(10)),
            count_5xx: false,
        }
    }
}

fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_response_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_body_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_retries() -> u32 {
    1
}

/// Which calls belong to an API. Give exactly one of `path` (exact or a
/// template such as `/pets/{id}`) and `prefix` (matches whole segments:
/// `/pets` matches `/pets` and `/pets/1` but not `/petshop`).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouteSpec {
    pub name: Option<Name>,
    /// Host names (without port) this route answers; empty means any.
    /// `*.example.com` matches one or more leading labels.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub path: Option<String>,
    pub prefix: Option<String>,
    /// Allowed methods; empty means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The route's own steps, around the API's chain (where a `base` step
    /// says; after it by default).
    #[serde(default)]
    pub chain: Vec<toml::Spanned<StepSpec>>,
}

/// One step of a chain.
///
/// ```toml
/// [[api.chain]]
/// name = "versioning"       # default: the plugin name
/// plugin = "transform"
/// fail-open = false         # on trap/timeout: skip the step instead of failing the call
/// timeout = "20ms"          # running time; default: limits.step-timeout
/// memory = "8MiB"           # default: limits.step-memory
/// log-rate = 100            # default: limits.plugin-log-rate
/// log-line = "4KiB"         # default: limits.plugin-log-line
/// isolation = "worker"      # default: limits.step-isolation ("request")
/// max-uses = 10000          # worker: default limits.step-max-uses
/// idle = "60s"              # worker: default limits.step-idle
/// wall-timeout = "2s"       # wall-clock bound, host calls included;
///                           # default: limits.step-wall-timeout
/// concurrency = 2           # default: limits.step-concurrency
/// queue-timeout = "20ms"    # default: limits.step-queue-timeout
/// quarantine = { failures = 3 }  # over limits.step-quarantine
/// canary = { plugin = "transform-v2", percent = 10 }  # see CanarySpec
/// when = 'request.method == "POST"'  # run only where true (CEL)
/// [api.chain.config]        # the plugin's own typed configuration
/// ```
#[derive(Debug, Deserialize, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StepSpec {
    pub name: Option<Name>,
    /// The plugin the step runs; empty only in a `base` step.
    #[serde(default)]
    pub plugin: String,
    /// `base = true`: not a step but where the enclosing scope's chain
    /// runs (the gateway's in an API's chain, the API's in a route's).
    #[serde(default)]
    pub base: bool,
    /// A condition (CEL) over the request and the caller: the step runs
    /// only for calls where it is true, and costs nothing otherwise.
    pub when: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    pub timeout: Option<Dur>,
    pub memory: Option<Size>,
    /// Log lines per second the step's plugin may write.
    pub log_rate: Option<u32>,
    /// Longest log line the step's plugin may write.
    pub log_line: Option<Size>,
    /// Host services this step may use: `counters`, `cache`, `kv`,
    /// `consumers`, `crypto`, `timing`, `sink`, `http:HOST[:PORT]`.
    #[serde(default)]
    pub grants: Vec<String>,
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// `request` (a fresh instance per request) or `worker` (a warm
    /// instance per worker thread, reused).
    pub isolation: Option<Isolation>,
    /// Under `worker`: requests one instance serves before it is discarded.
    pub max_uses: Option<u64>,
    /// Under `worker`: how long an unused instance is kept.
    pub idle: Option<Dur>,
    /// Wall-clock bound of one phase, host calls included.
    pub wall_timeout: Option<Dur>,
    /// Calls of this step that may run at once.
    pub concurrency: Option<usize>,
    /// How long a call waits for a place among them.
    pub queue_timeout: Option<Dur>,
    /// When this step is quarantined (over `limits.step-quarantine`).
    pub quarantine: Option<QuarantineSpec>,
    /// A second version of the plugin for a share of the calls, rolled
    /// back on its failures.
    pub canary: Option<CanarySpec>,
}

/// Convert a TOML table to JSON for a plugin's `configure`.
pub fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            Dur::try_from("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(Dur::try_from("2m").unwrap().0, Duration::from_secs(120));
        assert!(Dur::try_from("10").unwrap_err().contains("no unit"));
        assert!(Dur::try_from("10d")
            .unwrap_err()
            .contains("unknown unit `d`"));
        assert!(Dur::try_from("ms").is_err());
        assert!(Dur::try_from("99999999999999999999s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(Size::try_from("16MiB").unwrap().0, 16 << 20);
        assert_eq!(Size::try_from("512").unwrap().0, 512);
        assert!(Size::try_from("1TiB").is_err());
        assert!(Size::try_from("99999999999GiB").is_err());
    }

    #[test]
    fn names() {
        assert!(Name::try_from("pets-v2.1_x".to_string()).is_ok());
        assert!(Name::try_from(String::new()).is_err());
        assert!(Name::try_from("a b".to_string()).is_err());
        assert!(Name::try_from("x".repeat(65)).is_err());
    }

    #[test]
    fn line_and_column() {
        let t = "a\nbc\ndef";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 2));
        assert_eq!(line_col(t, 5), (3, 1));
        assert_eq!(line_col(t, 999), (3, 4));
    }
}
