//! `ip-filter`: allow or deny calls by the client's IP address.
//!
//! ```toml
//! [config]
//! allow = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]  # empty: everyone not denied
//! deny = ["10.66.0.0/16", "::1"]                        # deny wins over allow
//! status = 403                                          # the default
//! ```
//!
//! The address is the TCP peer the gateway saw (`client-addr`); headers such
//! as `X-Forwarded-For` are never consulted. See `README.md`.

#![forbid(unsafe_code)]

pub mod cidr;

use cidr::{client_ip, Cidr};
use serde::Deserialize;
use std::net::IpAddr;
use tollgate_policy_sdk::{
    export_policy, json_error, log, Call, ConfigError, Policy, PolicyInfo, RequestDecision,
    RequestEdits,
};

/// The step configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// If not empty, only addresses in one of these blocks may call.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Addresses in these blocks may not call, even if allowed.
    #[serde(default)]
    pub deny: Vec<String>,
    /// The status of the refusal (400 to 599; default 403).
    #[serde(default = "default_status")]
    pub status: u16,
}

fn default_status() -> u16 {
    403
}

/// The `ip-filter` policy.
#[derive(Debug)]
pub struct IpFilter {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    status: u16,
}

fn parse_list(field: &str, entries: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| Cidr::parse(e).map_err(|m| ConfigError::at(format!("{field}.{i}"), m)))
        .collect()
}

impl IpFilter {
    /// Whether `ip` may call: not in a `deny` block, and in an `allow` block
    /// if there are any.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }

    fn refuse(&self) -> RequestDecision {
        RequestDecision::Respond(json_error(
            self.status,
            "ip_not_allowed",
            "calls from this address are not allowed",
        ))
    }
}

impl Policy for IpFilter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if !(400..=599).contains(&config.status) {
            return Err(ConfigError::at(
                "status",
                format!(
                    "{} is not an error status: expected 400 to 599",
                    config.status
                ),
            ));
        }
        if config.allow.is_empty() && config.deny.is_empty() {
            return Err(ConfigError::new(
                "give `allow`, `deny` or both: with neither, the filter would let every address through",
            ));
        }
        Ok(IpFilter {
            allow: parse_list("allow", &config.allow)?,
            deny: parse_list("deny", &config.deny)?,
            status: config.status,
        })
    }

    fn info(&self) -> PolicyInfo {
        // No body and no response phase, whatever the configuration.
        PolicyInfo::request_only()
    }

    fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
        // The only thing this step reads.
        let client_addr = call.client_addr();
        match client_ip(&client_addr) {
            Some(ip) if self.permits(ip) => RequestDecision::Continue(RequestEdits::default()),
            Some(ip) => {
                log::debug(&format!("ip-filter: refused {ip}"));
                self.refuse()
            }
            None => {
                // Fail closed: an address we cannot read is not on any list.
                log::warn(&format!(
                    "ip-filter: unreadable client address {:?}; refused",
                    client_addr
                ));
                self.refuse()
            }
        }
    }
}

export_policy!(IpFilter);

#[cfg(test)]
mod tests;
