//! The Rust SDK for Tollgate policies.
//!
//! A Tollgate policy is a WebAssembly component (`wasm32-wasip2`) that exports
//! the `tollgate:policy/policy` interface of the WIT package
//! `tollgate:policy@0.2.0` (the gateway still loads policies built against
//! 0.1.0, the version of earlier SDKs). This crate hides the bindings: implement
//! [`Policy`] for a type, name that type in [`export_policy!`], and build the
//! crate as a `cdylib` for `wasm32-wasip2`.
//!
//! The gateway calls `configure` with the step's configuration (the
//! manifest's TOML table, converted to JSON) once at load and starts every
//! request's instance from the state it left; then [`Policy::on_request`]
//! and [`Policy::on_response`], on the same value, for the phases
//! [`PolicyInfo::phases`] names. A phase reads the call through [`Call`]:
//! each of its methods copies one value from the gateway, so a policy pays
//! only for what it reads. The configuration is deserialised into [`Policy::Config`] with serde;
//! a serde error becomes a [`ConfigError`] naming the dotted field path (for
//! example `request.headers.set.x-foo`), which the gateway reports with the
//! manifest file, API and step.
//!
//! # Example
//!
//! A policy that rejects requests without an API key header, configured as
//! `config = { header = "x-api-key" }` in a manifest:
//!
//! ```
//! use tollgate_policy_sdk::{
//!     export_policy, log, Call, CallContext, ConfigError, Policy, PolicyInfo,
//!     RequestDecision, RequestEdits, RequestHead, Response,
//! };
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config {
//!     header: String,
//! }
//!
//! pub struct RequireKey {
//!     header: String,
//! }
//!
//! impl Policy for RequireKey {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, ConfigError> {
//!         if !tollgate_policy_sdk::valid_header_name(&config.header) {
//!             return Err(ConfigError::at("header", "not a valid header name"));
//!         }
//!         Ok(RequireKey { header: config.header.to_ascii_lowercase() })
//!     }
//!
//!     fn info(&self) -> PolicyInfo {
//!         // No body access, and no response phase.
//!         PolicyInfo::request_only()
//!     }
//!
//!     fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
//!         if call.header(&self.header).is_none() {
//!             log::info(&format!("{}: no {} header", call.request_id(), self.header));
//!             return RequestDecision::Respond(Response::json_error(
//!                 401,
//!                 "missing_key",
//!                 "an API key is required",
//!             ));
//!         }
//!         RequestDecision::Continue(RequestEdits::default().remove_header(&self.header))
//!     }
//! }
//!
//! export_policy!(RequireKey);
//!
//! # fn main() {
//! // Phases are plain methods, so policies unit-test natively, over a call
//! // the test makes:
//! let mut policy: RequireKey =
//!     tollgate_policy_sdk::parse_config(r#"{"header":"X-Api-Key"}"#).unwrap();
//! let (ctx, req) = (CallContext::default(), RequestHead::default());
//! let decision = policy.on_request(&Call::native(&ctx, &req), None);
//! assert!(matches!(decision, RequestDecision::Respond(r) if r.status == 401));
//! # }
//! ```
//!
//! The `Cargo.toml` of a policy crate:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]   # cdylib: the component; rlib: native unit tests
//!
//! [dependencies]
//! tollgate-policy-sdk = { path = "../sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the component is
//! `target/wasm32-wasip2/release/<lib_name>.wasm`.
//!
//! # Host services
//!
//! [`log`] and [`clock`] call the gateway's WIT imports when compiled for
//! `wasm32`; on other targets (unit tests) they write to stderr and read the
//! operating system's clocks instead.

#![deny(missing_docs)]

use std::any::Any;
use std::cell::RefCell;

/// The bindings generated from `wit/policy.wit` (this crate's copy of the
/// gateway's `wit/`, checked equal by the gateway's tests). Policy authors should not
/// need these: the types are re-exported at the crate root under their
/// friendly names, and [`export_policy!`] does the exporting.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "tollgate:policy/policy-host@0.2.0",
        // The services are 0.1.0's, a package of their own to wit-bindgen.
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_policy_host",
        default_bindings_module: "::tollgate_policy_sdk::bindings",
        additional_derives: [Clone, PartialEq, Eq],
        // Off wasm32, the types a test sends to or gets from a policy are
        // serde types: `tollgate-policy-test` carries them to the gateway
        // that runs the `.wasm`.
        additional_type_attributes: {
            "tollgate:policy/types@0.1.0/header": [#[derive(Default)] #[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.1.0/request-head": [#[derive(Default)] #[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.1.0/response-head": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.1.0/consumer": [#[derive(Default)] #[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.1.0/call-context": [#[derive(Default)] #[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.1.0/header-op": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.2.0/request-edits": [#[derive(Default)] #[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.1.0/response-edits": [#[derive(Default)] #[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.1.0/response": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.2.0/request-decision": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.1.0/response-decision": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.1.0/body-access": [#[derive(Default)] #[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/types@0.1.0/config-error": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/http-client@0.1.0/incoming-response": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/timing@0.1.0/call-timing": [#[derive(Default)] #[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/outcome@0.1.0/response-origin": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/plans@0.1.0/plan-limits": [#[derive(Default)] #[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/plans@0.1.0/rate-limit": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/plans@0.1.0/quota": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
            "tollgate:policy/plans@0.1.0/period": [#[cfg_attr(not(target_arch = "wasm32"), derive(::serde::Serialize, ::serde::Deserialize))]],
        },
    });
}

mod call;
mod helpers;
pub mod query;
pub mod services;

pub use bindings::tollgate::policy0_1_0::types::{
    BodyAccess, CallContext, ConfigError, Consumer, Header, HeaderOp, RequestHead, Response,
    ResponseDecision, ResponseEdits, ResponseHead,
};
pub use bindings::tollgate::policy0_2_0::types::{
    Phases, PolicyInfo, RequestDecision, RequestEdits,
};
pub use call::Call;
pub use helpers::{
    header, header_str, header_values, json_error, valid_header_name, valid_header_value,
};

/// A policy: implement this, then name the type in [`export_policy!`].
///
/// Every phase has a default that does nothing, so a policy implements only
/// the phases it needs. A value lives for one request: the gateway calls
/// [`Policy::new`] (through `configure`), then the phases, then drops the
/// instance, so fields may carry state from the request phase to the
/// response phase of the same call, and nothing else.
pub trait Policy: Sized + 'static {
    /// The step's configuration, deserialised from the JSON the gateway
    /// passes (converted from the manifest's TOML). Use
    /// `#[serde(deny_unknown_fields)]` so that typos are rejected.
    type Config: serde::de::DeserializeOwned;

    /// Check the configuration beyond what serde checks, and build the policy.
    /// Errors should name the dotted field path ([`ConfigError::at`]).
    fn new(config: Self::Config) -> Result<Self, ConfigError>;

    /// What the policy needs from the gateway. The default: no body access,
    /// and both phases run. Leave out a phase the policy does not use
    /// (`phases: Phases::REQUEST`): the gateway then never calls it, and
    /// releases the step's instance before the upstream call.
    fn info(&self) -> PolicyInfo {
        PolicyInfo::default()
    }

    /// The request phase. Query `call` for what the policy reads (each
    /// method copies one value from the gateway). `body` is `Some` only if
    /// [`PolicyInfo::body`] asked for the request body. The default
    /// continues without edits.
    fn on_request(&mut self, call: &Call<'_>, body: Option<&[u8]>) -> RequestDecision {
        let _ = (call, body);
        RequestDecision::Continue(RequestEdits::default())
    }

    /// The response phase (reverse chain order). `call` reads the request
    /// as it went upstream and the response as it stands. The default
    /// continues without edits.
    fn on_response(&mut self, call: &Call<'_>, body: Option<&[u8]>) -> ResponseDecision {
        let _ = (call, body);
        ResponseDecision::Continue(ResponseEdits::default())
    }
}

/// Deserialise a configuration the way the gateway's `configure` call does,
/// and build the policy with [`Policy::new`].
///
/// Serde errors become a [`ConfigError`] whose `field` is the dotted path of
/// the offending value (`None` at the top level) and whose `message` is
/// serde's, without the JSON line and column (the JSON is generated by the
/// gateway, so its positions mean nothing to the person who wrote the TOML).
pub fn parse_config<P: Policy>(json: &str) -> Result<P, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let config: P::Config = match serde_path_to_error::deserialize(&mut de) {
        Ok(config) => config,
        Err(err) => {
            let field = err
                .path()
                .iter()
                .filter_map(|segment| match segment {
                    serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                    serde_path_to_error::Segment::Unknown => None,
                })
                .collect::<Vec<_>>()
                .join(".");
            return Err(ConfigError {
                field: (!field.is_empty()).then_some(field),
                message: json_message(err.inner()),
            });
        }
    };
    de.end()
        .map_err(|err| ConfigError::new(json_message(&err)))?;
    P::new(config)
}

/// serde_json's message without " at line L column C", except for syntax
/// errors, where the position is the point.
fn json_message(err: &serde_json::Error) -> String {
    let message = err.to_string();
    if err.line() == 0 || err.is_syntax() || err.is_eof() {
        return message;
    }
    let position = format!(" at line {} column {}", err.line(), err.column());
    match message.strip_suffix(&position) {
        Some(stripped) => stripped.to_string(),
        None => message,
    }
}

impl ConfigError {
    /// An error about one field, named by its dotted path (e.g.
    /// `request.headers.set`).
    pub fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An error about the configuration as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            field: None,
            message: message.into(),
        }
    }
}

impl Default for PolicyInfo {
    /// No body access; both phases run.
    fn default() -> Self {
        PolicyInfo {
            body: BodyAccess::default(),
            phases: Phases::REQUEST | Phases::RESPONSE,
        }
    }
}

impl PolicyInfo {
    /// No body access, the request phase only.
    pub fn request_only() -> Self {
        PolicyInfo {
            body: BodyAccess::default(),
            phases: Phases::REQUEST,
        }
    }

    /// No body access, the response phase only.
    pub fn response_only() -> Self {
        PolicyInfo {
            body: BodyAccess::default(),
            phases: Phases::RESPONSE,
        }
    }
}

impl Default for ResponseHead {
    /// `200` with no headers (handy in tests).
    fn default() -> Self {
        ResponseHead {
            status: 200,
            headers: Vec::new(),
        }
    }
}

impl Default for RequestDecision {
    /// Continue without edits.
    fn default() -> Self {
        RequestDecision::Continue(RequestEdits::default())
    }
}

impl Default for ResponseDecision {
    /// Continue without edits.
    fn default() -> Self {
        ResponseDecision::Continue(ResponseEdits::default())
    }
}

/// Structured logging into the gateway's log. The gateway tags each line with
/// the API, step and request id, escapes control characters and truncates
/// lines longer than the step's `log-line` (4 KiB by default); a step may
/// log `log-rate` lines per second (100 by default), the rest are dropped.
pub mod log {
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::tollgate::policy0_1_0::log as host;

    /// A log level.
    pub use crate::bindings::tollgate::policy0_1_0::log::Level;

    /// Write one log line at `level`.
    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        host::log(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("[{level:?}] {}", message.escape_debug());
    }

    /// Log at `trace` level.
    pub fn trace(message: &str) {
        log(Level::Trace, message)
    }
    /// Log at `debug` level.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// Log at `info` level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Log at `warn` level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Log at `error` level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Time, as the gateway sees it.
pub mod clock {
    /// Wall-clock time in milliseconds since the Unix epoch.
    pub fn now_ms() -> u64 {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::tollgate::policy0_1_0::clock::now_ms()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::services::native::now().unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            })
        }
    }

    /// A monotonic clock in nanoseconds, for measuring durations.
    pub fn monotonic_ns() -> u64 {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::tollgate::policy0_1_0::clock::monotonic_ns()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            START
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_nanos() as u64
        }
    }
}

/// Export a [`Policy`] implementation as the component's
/// `tollgate:policy/policy` interface. Use it once per crate, at the top
/// level:
///
/// ```
/// # use tollgate_policy_sdk::{ConfigError, Policy};
/// # #[derive(serde::Deserialize)]
/// # pub struct Config {}
/// pub struct MyPolicy;
///
/// impl Policy for MyPolicy {
///     type Config = Config;
///     fn new(_: Config) -> Result<Self, ConfigError> {
///         Ok(MyPolicy)
///     }
/// }
///
/// tollgate_policy_sdk::export_policy!(MyPolicy);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = {
            #[allow(dead_code)]
            struct __TollgatePolicyExport;

            impl $crate::__private::Guest for __TollgatePolicyExport {
                fn configure(
                    config: ::std::string::String,
                ) -> ::core::result::Result<$crate::PolicyInfo, $crate::ConfigError> {
                    $crate::__private::configure::<$policy>(&config)
                }

                fn on_request(
                    call: $crate::__private::CallArg<'_>,
                    body: ::core::option::Option<::std::vec::Vec<u8>>,
                ) -> $crate::RequestDecision {
                    $crate::__private::on_request::<$policy>(call, body)
                }

                fn on_response(
                    call: $crate::__private::CallArg<'_>,
                    body: ::core::option::Option<::std::vec::Vec<u8>>,
                ) -> $crate::ResponseDecision {
                    $crate::__private::on_response::<$policy>(call, body)
                }
            }

            // Native builds (unit tests) get the trait impl but not the
            // exported symbols, whose names native linkers reject.
            #[cfg(target_arch = "wasm32")]
            $crate::bindings::__export_policy_host!(
                __TollgatePolicyExport with_types_in $crate::bindings
            );
        };
    };
}

/// Support for [`export_policy!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use crate::bindings::exports::tollgate::policy0_2_0::policy::Guest;

    /// How the bindings pass the call handle to an export.
    pub type CallArg<'a> = &'a crate::bindings::tollgate::policy0_2_0::calls::Call;

    thread_local! {
        // The configured policy of this instance. Wasm components are
        // single-threaded, and `configure` runs before the phases.
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn configure<P: Policy>(json: &str) -> Result<PolicyInfo, ConfigError> {
        let policy = parse_config::<P>(json)?;
        let info = policy.info();
        INSTANCE.with(|cell| *cell.borrow_mut() = Some(Box::new(policy)));
        Ok(info)
    }

    #[cfg(target_arch = "wasm32")]
    fn wrap<'a>(call: &CallArg<'a>) -> Call<'a> {
        Call::host(call)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn wrap<'a>(_: &CallArg<'a>) -> Call<'a> {
        unreachable!("the gateway's call handle exists only in wasm32 builds")
    }

    fn with_instance<P: Policy, R>(phase: &str, f: impl FnOnce(&mut P) -> R) -> R {
        INSTANCE.with(|cell| {
            let mut slot = cell.borrow_mut();
            let policy = slot
                .as_mut()
                .and_then(|p| p.downcast_mut::<P>())
                .unwrap_or_else(|| {
                    panic!("tollgate policy: `{phase}` was called before a successful `configure`")
                });
            f(policy)
        })
    }

    pub fn on_request<P: Policy>(call: CallArg<'_>, body: Option<Vec<u8>>) -> RequestDecision {
        run_request::<P>(&wrap(&call), body.as_deref())
    }

    pub fn on_response<P: Policy>(call: CallArg<'_>, body: Option<Vec<u8>>) -> ResponseDecision {
        run_response::<P>(&wrap(&call), body.as_deref())
    }

    /// The request phase of the configured instance.
    pub fn run_request<P: Policy>(call: &Call<'_>, body: Option<&[u8]>) -> RequestDecision {
        with_instance::<P, _>("on-request", |p| p.on_request(call, body))
    }

    /// The response phase of the configured instance.
    pub fn run_response<P: Policy>(call: &Call<'_>, body: Option<&[u8]>) -> ResponseDecision {
        with_instance::<P, _>("on-response", |p| p.on_response(call, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        items: Vec<Item>,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        name: String,
    }

    struct Echo {
        first: String,
        requests: u32,
    }

    impl Policy for Echo {
        type Config = Config;

        fn new(config: Config) -> Result<Self, ConfigError> {
            match config.items.first() {
                Some(item) => Ok(Echo {
                    first: item.name.clone(),
                    requests: 0,
                }),
                None => Err(ConfigError::at("items", "must not be empty")),
            }
        }

        fn on_request(&mut self, _: &Call<'_>, _: Option<&[u8]>) -> RequestDecision {
            self.requests += 1;
            RequestDecision::Continue(
                RequestEdits::default()
                    .set_header("x-first", self.first.as_str())
                    .set_header("x-requests", self.requests.to_string()),
            )
        }
    }

    fn config_error(json: &str) -> ConfigError {
        match parse_config::<Echo>(json) {
            Ok(_) => panic!("{json} was accepted"),
            Err(e) => e,
        }
    }

    /// Natively as on the gateway: every limit counted, or none.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn check_all_and_add_counts_on_every_limit_or_none() {
        use crate::services::{counters, harness, Algorithm};
        harness::set_now_ms(1_700_000_000_000);
        let limit = |key: &str, limit, algorithm| counters::Limit {
            key: key.into(),
            limit,
            window_ms: 60_000,
            algorithm,
        };
        let batch = [
            limit("tight", 1, Algorithm::SlidingWindow),
            limit("loose", 5, Algorithm::TokenBucket),
        ];
        let d = counters::check_all_and_add(&batch, 1).unwrap();
        assert!(d.iter().all(|d| d.allowed));
        assert_eq!(d[1].remaining, 4);
        let d = counters::check_all_and_add(&batch, 1).unwrap();
        assert!(!d[0].allowed && d[1].allowed);
        // The refused call did not use up the loose limit.
        let d = counters::check_all_and_add(&batch[1..], 1).unwrap();
        assert_eq!(d[0].remaining, 3);
        let many: Vec<_> = (0..33)
            .map(|i| limit(&i.to_string(), 1, Algorithm::SlidingWindow))
            .collect();
        assert!(counters::check_all_and_add(&many, 1).is_err());
    }

    #[test]
    fn config_errors_have_dotted_paths() {
        assert_eq!(
            config_error(r#"{"items":[{"name":"a"},{"name":7}]}"#),
            ConfigError::at(
                "items.1.name",
                "invalid type: integer `7`, expected a string"
            )
        );
        assert_eq!(
            config_error(r#"{"items":[{"nam":"a"}]}"#).field.as_deref(),
            Some("items.0.nam")
        );
        assert_eq!(
            config_error(r#"{}"#),
            ConfigError::new("missing field `items`")
        );
        assert_eq!(
            config_error(r#"{"items":[]}"#),
            ConfigError::at("items", "must not be empty")
        );
        // Syntax errors keep their position.
        assert_eq!(
            config_error(r#"{"items":[]} x"#),
            ConfigError::new("trailing characters at line 1 column 14")
        );
    }

    #[test]
    fn dispatch_uses_the_configured_instance() {
        let (ctx, req, resp) = (
            CallContext::default(),
            RequestHead::default(),
            ResponseHead::default(),
        );
        let info = __private::configure::<Echo>(r#"{"items":[{"name":"a"}]}"#).unwrap();
        assert_eq!(info, PolicyInfo::default());
        for n in 1..=2 {
            let decision = __private::run_request::<Echo>(&Call::native(&ctx, &req), None);
            assert_eq!(
                decision,
                RequestDecision::Continue(RequestEdits {
                    headers: vec![
                        HeaderOp::set("x-first", "a"),
                        HeaderOp::set("x-requests", n.to_string()),
                    ],
                    ..RequestEdits::default()
                })
            );
        }
        // A new configure replaces the instance.
        __private::configure::<Echo>(r#"{"items":[{"name":"b"}]}"#).unwrap();
        let decision = __private::run_request::<Echo>(&Call::native(&ctx, &req), None);
        assert!(matches!(decision, RequestDecision::Continue(e)
            if e.headers == vec![HeaderOp::set("x-first", "b"), HeaderOp::set("x-requests", "1")]));
        assert_eq!(
            __private::run_response::<Echo>(&Call::native_response(&ctx, &req, &resp), None),
            ResponseDecision::default()
        );
    }

    #[test]
    #[should_panic(expected = "`on-request` was called before a successful `configure`")]
    fn phases_before_configure_panic() {
        let (ctx, req) = (CallContext::default(), RequestHead::default());
        __private::run_request::<Echo>(&Call::native(&ctx, &req), None);
    }

    #[test]
    fn a_native_call_answers_from_what_the_test_made() {
        let ctx = CallContext {
            request_id: "r1".into(),
            api: "pets".into(),
            captures: vec![("id".into(), "7".into())],
            consumer: Some(Consumer {
                id: "alice".into(),
                ..Consumer::default()
            }),
            ..CallContext::default()
        };
        let req = RequestHead {
            method: "GET".into(),
            path: "/pets/7".into(),
            query: Some("a=1".into()),
            headers: vec![
                Header::new("x-a", "1"),
                Header::new("x-b", "2"),
                Header::new("x-a", "3"),
            ],
            ..RequestHead::default()
        };
        let resp = ResponseHead {
            status: 201,
            headers: vec![Header::new("vary", "a"), Header::new("vary", "b")],
        };
        let call = Call::native(&ctx, &req);
        assert_eq!(call.request_id(), "r1");
        assert_eq!(call.api(), "pets");
        assert_eq!(call.capture("id").as_deref(), Some("7"));
        assert_eq!(call.capture("nope"), None);
        assert_eq!(call.consumer().unwrap().id, "alice");
        assert_eq!(
            (call.method(), call.path()),
            ("GET".into(), "/pets/7".into())
        );
        assert_eq!(call.query().as_deref(), Some("a=1"));
        assert_eq!(call.header("X-A"), Some(b"1".to_vec()));
        assert_eq!(call.header_str("x-b").as_deref(), Some("2"));
        assert_eq!(
            call.header_values("x-a"),
            vec![b"1".to_vec(), b"3".to_vec()]
        );
        assert_eq!(call.head(), req);
        // No response in the request phase.
        assert_eq!(call.status(), None);
        assert_eq!(call.response_header("vary"), None);
        assert!(call.response_headers().is_empty());
        let call = Call::native_response(&ctx, &req, &resp);
        assert_eq!(call.status(), Some(201));
        assert_eq!(call.response_header("Vary"), Some(b"a".to_vec()));
        assert_eq!(
            call.response_header_values("vary"),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(call.response_headers().len(), 2);
    }

    #[test]
    fn response_headers_from_the_request_phase_are_kept_apart() {
        let e = RequestEdits::default()
            .set_header("x-up", "1")
            .set_response_header("x-down", "2")
            .append_response_header("x-down", "3")
            .remove_response_header("server");
        assert_eq!(e.headers, vec![HeaderOp::set("x-up", "1")]);
        assert_eq!(
            e.response_headers,
            vec![
                HeaderOp::set("x-down", "2"),
                HeaderOp::append("x-down", "3"),
                HeaderOp::remove("server"),
            ]
        );
        assert_eq!(PolicyInfo::request_only().phases, Phases::REQUEST);
        assert_eq!(PolicyInfo::response_only().phases, Phases::RESPONSE);
        assert_eq!(
            PolicyInfo::default().phases,
            Phases::REQUEST | Phases::RESPONSE
        );
    }

    #[test]
    fn host_service_fallbacks() {
        log::info("native fallback: line1\nline2\x1b[31m");
        assert!(clock::now_ms() > 1_600_000_000_000);
        let a = clock::monotonic_ns();
        assert!(clock::monotonic_ns() >= a);
    }

    // The harness exists only off wasm32.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn native_plans_are_set_replaced_and_removed() {
        use services::{harness, plans};
        harness::reset();
        assert_eq!(plans::limits("gold"), None);
        let gold = plans::PlanLimits {
            plan: "gold".into(),
            product: "shop".into(),
            rate_limits: vec![plans::RateLimit {
                requests: 10,
                window_ms: 1_000,
            }],
            quota: Some(plans::Quota {
                calls: 1_000,
                period: plans::Period::Month,
            }),
        };
        harness::set_plan(gold.clone());
        assert_eq!(plans::limits("gold"), Some(gold.clone()));
        assert_eq!(plans::limits("silver"), None);
        let unlimited = plans::PlanLimits {
            plan: "gold".into(),
            ..plans::PlanLimits::default()
        };
        harness::set_plan(unlimited.clone());
        assert_eq!(plans::limits("gold"), Some(unlimited));
        harness::remove_plan("gold");
        assert_eq!(plans::limits("gold"), None);
        harness::set_plan(gold);
        harness::reset();
        assert_eq!(plans::limits("gold"), None);
    }
}
