//! A template policy: greets callers who send a header and limits each of
//! them to `per-minute` calls, using the `counters` host service.
//!
//! ```toml
//! [[api.chain]]
//! plugin = "policy-template"
//! grants = ["counters"]
//! config = { header = "x-user", per-minute = 60 }
//! ```

use tollgate_policy_sdk::services::{counters, Algorithm};
use tollgate_policy_sdk::{
    export_policy, Call, ConfigError, Policy, PolicyInfo, RequestDecision, RequestEdits, Response,
};

/// The step's `config` table.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The header naming the caller.
    header: String,
    /// Calls per minute per caller.
    #[serde(default = "default_per_minute")]
    per_minute: u64,
}

fn default_per_minute() -> u64 {
    60
}

/// The policy: one value per request.
pub struct Template {
    header: String,
    per_minute: u64,
}

impl Policy for Template {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if !tollgate_policy_sdk::valid_header_name(&config.header) {
            return Err(ConfigError::at("header", "not a valid header name"));
        }
        if config.per_minute == 0 {
            return Err(ConfigError::at("per-minute", "must be at least 1"));
        }
        Ok(Template {
            header: config.header.to_ascii_lowercase(),
            per_minute: config.per_minute,
        })
    }

    fn info(&self) -> PolicyInfo {
        // No response phase: the gateway never calls one, and releases
        // the instance before the upstream call.
        PolicyInfo::request_only()
    }

    fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
        // One value asked of the gateway: only it is copied in.
        let Some(user) = call.header_str(&self.header) else {
            return RequestDecision::Respond(Response::json_error(
                400,
                "missing_user",
                "say who you are",
            ));
        };
        match counters::check_and_add(&user, self.per_minute, 60_000, Algorithm::SlidingWindow, 1) {
            Ok(d) if d.allowed => RequestDecision::Continue(
                RequestEdits::default().set_header("x-greeting", format!("hello {user}")),
            ),
            Ok(_) => {
                RequestDecision::Respond(Response::json_error(429, "slow_down", "too many calls"))
            }
            Err(e) => RequestDecision::Respond(Response::json_error(
                503,
                "counters_unavailable",
                &format!("{e:?}"),
            )),
        }
    }
}

export_policy!(Template);

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use tollgate_policy_sdk::services::harness;
    use tollgate_policy_sdk::{CallContext, RequestHead};

    fn request(user: Option<&str>) -> RequestHead {
        let mut r = RequestHead::default();
        if let Some(u) = user {
            r.headers
                .push(tollgate_policy_sdk::Header::new("x-user", u));
        }
        r
    }

    #[test]
    fn greets_then_limits() {
        harness::reset();
        harness::set_now_ms(1_000_000);
        let mut p: Template =
            tollgate_policy_sdk::parse_config(r#"{"header":"X-User","per-minute":2}"#).unwrap();
        let ctx = CallContext::default();
        for _ in 0..2 {
            assert!(matches!(
                p.on_request(&Call::native(&ctx, &request(Some("ann"))), None),
                RequestDecision::Continue(_)
            ));
        }
        assert!(matches!(
            p.on_request(&Call::native(&ctx, &request(Some("ann"))), None),
            RequestDecision::Respond(r) if r.status == 429
        ));
        assert!(matches!(
            p.on_request(&Call::native(&ctx, &request(None)), None),
            RequestDecision::Respond(r) if r.status == 400
        ));
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = tollgate_policy_sdk::parse_config::<Template>(r#"{"header":"x y"}"#)
            .err()
            .unwrap();
        assert_eq!(err.field.as_deref(), Some("header"));
        let err = tollgate_policy_sdk::parse_config::<Template>(r#"{"header":"x","per_minute":1}"#)
            .err()
            .unwrap();
        assert!(err.message.contains("unknown field"), "{}", err.message);
    }
}
