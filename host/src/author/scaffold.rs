//! `tollgate policy new NAME`: a policy crate to start from, anywhere.
//!
//! The crate has a typed configuration, native and `.wasm` tests of one
//! body (`tollgate-policy-test`), a README, the release profile and guest
//! stack size policies need, and a gateway file with a manifest that serve
//! it in front of the demo upstream. The SDK and the test runner are named
//! by path: the checkout this binary was built from, unless `--sdk` says
//! otherwise.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What `policy new` needs to know.
#[derive(Debug, Clone)]
pub struct NewPolicy {
    /// The package name: lower case letters, digits and `-`.
    pub name: String,
    /// Where to create it (default: `./NAME`). Must not exist, or be empty.
    pub dir: PathBuf,
    /// The folder holding `sdk/` and `policy-test/` (the gateway
    /// checkout's `plugins/`).
    pub plugins: PathBuf,
    /// The gateway binary the tests and the sample run (written into
    /// `.cargo/config.toml` as `TOLLGATE`).
    pub tollgate: PathBuf,
}

/// Where the SDK is when nothing says otherwise: the checkout this binary
/// was built from, if it is still there.
pub fn default_plugins_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    p.join("sdk/Cargo.toml")
        .is_file()
        .then(|| p.canonicalize().unwrap_or(p))
}

/// Check a package name the way `policy new` accepts it.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        bail!(
            "`{name}` is not a policy name: use lower-case letters, digits and single `-` \
             (at most 64, starting with a letter), e.g. `require-tenant`"
        );
    }
    Ok(())
}

/// `require-tenant` → `RequireTenant`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A TOML basic string holding `p`.
fn toml_path(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

/// The files of the crate, relative paths and contents.
pub fn files(n: &NewPolicy) -> Vec<(&'static str, String)> {
    let ty = type_name(&n.name);
    let krate = n.name.replace('-', "_");
    let sdk = toml_path(&n.plugins.join("sdk"));
    let test = toml_path(&n.plugins.join("policy-test"));
    let bin = toml_path(&n.tollgate);
    let fill = |t: &str| {
        t.replace("{{name}}", &n.name)
            .replace("{{crate}}", &krate)
            .replace("{{Type}}", &ty)
            .replace("{{sdk}}", &sdk)
            .replace("{{test}}", &test)
            .replace("{{tollgate}}", &bin)
    };
    vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        (".cargo/config.toml", fill(CARGO_CONFIG)),
        (".gitignore", "/target\n".to_string()),
        ("src/lib.rs", fill(LIB_RS)),
        ("tests/policy.rs", fill(TESTS_RS)),
        ("README.md", fill(README)),
        ("gateway.toml", fill(GATEWAY_TOML)),
        ("api.toml", fill(API_TOML)),
    ]
}

/// Create the crate; the files written.
pub fn create(n: &NewPolicy) -> Result<Vec<PathBuf>> {
    check_name(&n.name)?;
    if !n.plugins.join("sdk/Cargo.toml").is_file() {
        bail!(
            "no SDK at {}: pass --sdk with the gateway checkout's plugins/ folder",
            n.plugins.join("sdk").display()
        );
    }
    if !n.plugins.join("policy-test/Cargo.toml").is_file() {
        bail!(
            "no test runner at {}: pass --sdk with the gateway checkout's plugins/ folder",
            n.plugins.join("policy-test").display()
        );
    }
    if n.dir.exists() {
        let empty = std::fs::read_dir(&n.dir)
            .with_context(|| format!("reading {}", n.dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!("{} exists and is not empty", n.dir.display());
        }
    }
    let mut written = Vec::new();
    for (rel, text) in files(n) {
        let p = n.dir.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        written.push(p);
    }
    Ok(written)
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# The component (cdylib) and a Rust library for the native tests (rlib).
crate-type = ["cdylib", "rlib"]

[dependencies]
tollgate-policy-sdk = { path = {{sdk}} }
serde = { version = "1", features = ["derive"] }

[dev-dependencies]
# Runs tests/policy.rs natively and against the built .wasm.
tollgate-policy-test = { path = {{test}} }

# Its own workspace, so it builds on its own wherever it lives.
[workspace]

# Small, fast components: what the gateway loads.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#;

const CARGO_CONFIG: &str = r#"# A 128 KiB guest stack instead of Rust's 1 MiB: the gateway resets a
# policy's instance after each request by rewriting its memory, so a smaller
# memory is a cheaper request. A stack overflow traps (the step fails); it
# never corrupts other memory.
[target.wasm32-wasip2]
rustflags = ["-C", "link-arg=-zstack-size=131072"]

[env]
# The gateway binary the .wasm tests run the policy in.
TOLLGATE = {{tollgate}}
"#;

const LIB_RS: &str = r#"//! `{{name}}`: refuses calls without a tenant header, passes the tenant
//! upstream in a header of its own, and limits each tenant to `per-minute`
//! calls with the gateway's `counters` service.
//!
//! ```toml
//! [[api.chain]]
//! plugin = "{{name}}"
//! grants = ["counters"]
//! config = { header = "x-tenant", per-minute = 60 }
//! ```

use tollgate_policy_sdk::services::{counters, Algorithm};
use tollgate_policy_sdk::{
    export_policy, valid_header_name, Call, ConfigError, Policy, PolicyInfo, RequestDecision,
    RequestEdits, Response,
};

/// The step's `config` table; unknown fields are refused at load.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The header naming the tenant.
    pub header: String,
    /// Calls per minute per tenant.
    #[serde(default = "default_per_minute")]
    pub per_minute: u64,
}

fn default_per_minute() -> u64 {
    60
}

/// The policy: the gateway makes one value per request.
pub struct {{Type}} {
    header: String,
    per_minute: u64,
}

impl Policy for {{Type}} {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if !valid_header_name(&config.header) {
            return Err(ConfigError::at("header", "not a valid header name"));
        }
        if config.per_minute == 0 {
            return Err(ConfigError::at("per-minute", "must be at least 1"));
        }
        Ok({{Type}} {
            header: config.header.to_ascii_lowercase(),
            per_minute: config.per_minute,
        })
    }

    fn info(&self) -> PolicyInfo {
        // No response phase: the gateway releases the instance before the
        // upstream call.
        PolicyInfo::request_only()
    }

    fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
        let Some(tenant) = call.header_str(&self.header) else {
            return RequestDecision::Respond(Response::json_error(
                400,
                "missing_tenant",
                &format!("send the `{}` header", self.header),
            ));
        };
        let key = format!("tenant:{tenant}");
        match counters::check_and_add(&key, self.per_minute, 60_000, Algorithm::SlidingWindow, 1) {
            Ok(d) if d.allowed => RequestDecision::Continue(
                RequestEdits::default().set_header("x-tenant-checked", tenant),
            ),
            Ok(_) => RequestDecision::Respond(Response::json_error(
                429,
                "tenant_limit",
                "too many calls for this tenant",
            )),
            Err(e) => RequestDecision::Respond(Response::json_error(
                503,
                "counters_unavailable",
                &format!("{e:?}"),
            )),
        }
    }
}

export_policy!({{Type}});
"#;

const TESTS_RS: &str = r##"//! Each test runs twice: natively (fast, with the SDK's in-memory services)
//! and against the built .wasm in the gateway's own runtime
//! (`tollgate policy test-host`). `TOLLGATE_TEST_TARGETS=native cargo test`
//! runs the native side only.

use tollgate_policy_sdk::{RequestDecision, Response};
use tollgate_policy_test::{runners, Request};
use {{crate}}::{{Type}};

fn status(d: &RequestDecision) -> Option<u16> {
    match d {
        RequestDecision::Respond(Response { status, .. }) => Some(*status),
        RequestDecision::Continue(_) => None,
    }
}

#[test]
fn passes_the_tenant_on_then_limits_it() {
    for runner in runners!({{Type}}) {
        let runner = runner.with_grants(&["counters"]);
        let mut p = runner
            .configure(r#"{"header": "X-Tenant", "per-minute": 2}"#)
            .unwrap();
        let ctx = runner.context();
        let call = Request::get("/orders").header("x-tenant", "acme").head();
        for _ in 0..2 {
            let d = p.on_request(&ctx, &call, None);
            let RequestDecision::Continue(edits) = d else {
                panic!("{}: refused: {d:?}", runner.label());
            };
            assert_eq!(edits.headers.len(), 1, "{}", runner.label());
        }
        let third = p.on_request(&ctx, &call, None);
        assert_eq!(status(&third), Some(429), "{}", runner.label());
    }
}

#[test]
fn a_call_without_the_header_is_refused() {
    for runner in runners!({{Type}}) {
        let runner = runner.with_grants(&["counters"]);
        let mut p = runner.configure(r#"{"header": "x-tenant"}"#).unwrap();
        let d = p.on_request(&runner.context(), &Request::get("/").head(), None);
        assert_eq!(status(&d), Some(400), "{}", runner.label());
    }
}

#[test]
fn bad_configurations_name_the_field() {
    for runner in runners!({{Type}}) {
        let runner = runner.with_grants(&["counters"]);
        let e = runner.configure(r#"{"header": "x y"}"#).err().unwrap();
        assert_eq!(e.field.as_deref(), Some("header"), "{}", runner.label());
        let e = runner.configure(r#"{"header": "x", "per-minute": 0}"#).err().unwrap();
        assert_eq!(e.field.as_deref(), Some("per-minute"), "{}", runner.label());
        let e = runner.configure(r#"{"header": "x", "typo": 1}"#).err().unwrap();
        assert!(e.message.contains("unknown field"), "{}: {}", runner.label(), e.message);
    }
}
"##;

const README: &str = r#"# {{name}}

A Tollgate policy. `src/lib.rs` is the policy; `tests/policy.rs` tests it
natively and against the built `.wasm` in the gateway's runtime.

    cargo test                    # both sides (builds the .wasm first)
    tollgate policy build         # target/wasm32-wasip2/release/{{crate}}.wasm
    tollgate policy watch         # rebuild on every change
    tollgate run -c gateway.toml  # serve it: http://127.0.0.1:8080/

`gateway.toml` serves `api.toml`, which puts the policy in front of the
demo upstream (`tollgate demo-upstream`, on 127.0.0.1:9090):

    tollgate demo-upstream &
    tollgate run -c gateway.toml &
    curl -i -H 'x-tenant: acme' http://127.0.0.1:8080/hello

The gateway watches the `.wasm`: `tollgate policy watch` in another
terminal, and every successful build is served within a second. A build
that fails leaves the last good `.wasm` in place.

Configuration errors, grants, logs and limits: see the gateway's
`docs/writing-a-policy.md` and `docs/configuration.md`.
"#;

const GATEWAY_TOML: &str = r#"# Serve this policy in front of the demo upstream:
#   tollgate demo-upstream &
#   tollgate run -c gateway.toml
schema = 1
data-dir = "target/tollgate-data"
policies = ["api.toml"]

[[listener]]
name = "public"
address = "127.0.0.1:8080"

[plugins]
paths = { {{name}} = "target/wasm32-wasip2/release/{{crate}}.wasm" }
"#;

const API_TOML: &str = r#"schema = 1

[[api]]
name = "hello"
upstream = { targets = ["http://127.0.0.1:9090"] }

[[api.route]]
prefix = "/"

[[api.chain]]
plugin = "{{name}}"
grants = ["counters"]
config = { header = "x-tenant", per-minute = 60 }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["a", "require-tenant", "p2"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "A",
            "2p",
            "a_b",
            "a--b",
            "a-",
            "a b",
            &"a".repeat(65),
            "../x",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(type_name("require-tenant"), "RequireTenant");
    }

    #[test]
    fn paths_with_quotes_stay_toml() {
        let n = NewPolicy {
            name: "p".into(),
            dir: "p".into(),
            plugins: PathBuf::from("/a \"b\"/plugins"),
            tollgate: PathBuf::from("/bin/tollgate"),
        };
        let cargo = &files(&n)[0].1;
        let t: toml::Table = cargo.parse().unwrap();
        assert_eq!(
            t["dependencies"]["tollgate-policy-sdk"]["path"].as_str(),
            Some("/a \"b\"/plugins/sdk")
        );
        for (rel, text) in files(&n) {
            if rel.ends_with(".toml") {
                text.parse::<toml::Table>()
                    .unwrap_or_else(|e| panic!("{rel}: {e}"));
            }
        }
    }

    #[test]
    fn an_existing_folder_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        let n = NewPolicy {
            name: "p".into(),
            dir: dir.path().to_path_buf(),
            plugins: default_plugins_dir().unwrap(),
            tollgate: PathBuf::from("/bin/tollgate"),
        };
        let e = create(&n).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
    }
}
