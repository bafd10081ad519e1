//! Origins as configured (`https://app.example.com`, `http://localhost:8080`,
//! `https://*.example.com`) and as browsers send them.
//!
//! An origin is `scheme://host[:port]`: no path, no trailing slash, no user
//! name, the port only when it is not the scheme's default. Browsers
//! serialise it in lower case, so configured origins are lower-cased and
//! request origins are compared byte for byte.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One configured origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// Exactly this serialised origin.
    Exact(String),
    /// `scheme://*.suffix[:port]`: any host with one or more labels in
    /// front of `suffix`, with exactly this scheme and port.
    Subdomains {
        /// Lower-case scheme.
        scheme: String,
        /// Lower-case domain without the leading dot, e.g. `example.com`.
        suffix: String,
        /// The explicit port, if any.
        port: Option<u16>,
    },
}

const SHAPE: &str = "expected scheme://host[:port], e.g. https://app.example.com";

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

fn valid_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// A DNS label as browsers serialise it: lower-case letters, digits and
/// hyphens, not starting or ending with a hyphen, 1 to 63 bytes.
fn valid_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn valid_domain(host: &str) -> bool {
    !host.is_empty() && host.len() <= 253 && host.split('.').all(valid_label)
}

/// A port as written: 1 to 5 digits, no leading zero, 1 to 65535.
fn parse_port(text: &str) -> Option<u16> {
    let ok = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    if ok {
        text.parse().ok()
    } else {
        None
    }
}

/// Split `host[:port]` (host possibly `[v6]`).
fn split_port(rest: &str) -> Option<(&str, Option<&str>)> {
    if rest.starts_with('[') {
        let end = rest.find(']')?;
        let (host, after) = rest.split_at(end + 1);
        match after {
            "" => Some((host, None)),
            _ => after.strip_prefix(':').map(|p| (host, Some(p))),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => Some((host, Some(port))),
            None => Some((rest, None)),
        }
    }
}

impl OriginRule {
    /// Parse a configured origin (not `*`, which the caller handles).
    pub fn parse(text: &str) -> Result<OriginRule, String> {
        if text.eq_ignore_ascii_case("null") {
            return Err(
                "the \"null\" origin is sent by sandboxed iframes, local files and \
                 some redirects, so allowing it would let any such page read responses; \
                 it cannot be allowed"
                    .into(),
            );
        }
        if !text.is_ascii() {
            return Err(format!(
                "{text:?} is not ASCII: write international domain names in their \
                 punycode (xn--) form, as browsers send them"
            ));
        }
        let lower = text.to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err(format!("{text:?} is not an origin: {SHAPE}"));
        };
        if !valid_scheme(scheme) {
            return Err(format!(
                "{text:?} does not start with a valid scheme: {SHAPE}"
            ));
        }
        if let Some(slash) = rest.find('/') {
            let message = if slash + 1 == rest.len() {
                "has a trailing slash"
            } else {
                "has a path"
            };
            return Err(format!(
                "{text:?} {message}: an origin is scheme://host[:port] and nothing more, \
                 e.g. {scheme}://{}",
                &rest[..slash]
            ));
        }
        if rest
            .bytes()
            .any(|b| b.is_ascii_control() || b" ?#@\\\"".contains(&b))
        {
            return Err(format!("{text:?} is not an origin: {SHAPE}"));
        }
        let Some((host, port_text)) = split_port(rest) else {
            return Err(format!("{text:?} is not an origin: {SHAPE}"));
        };
        let port = match port_text {
            None => None,
            Some(p) => match parse_port(p) {
                Some(port) if Some(port) == default_port(scheme) => {
                    return Err(format!(
                        "{text:?} names the default port {port}, which browsers never send: \
                         write {scheme}://{host}"
                    ))
                }
                Some(port) => Some(port),
                None => {
                    return Err(format!(
                        "{text:?} has an invalid port {p:?}: expected 1 to 65535"
                    ))
                }
            },
        };
        let port_suffix = port.map_or(String::new(), |p| format!(":{p}"));

        if let Some(suffix) = host.strip_prefix("*.") {
            if !valid_domain(suffix) {
                return Err(format!(
                    "{text:?} is not a valid pattern: after \"*.\" comes a domain name, \
                     as in https://*.example.com"
                ));
            }
            if !suffix.contains('.') && suffix != "localhost" {
                return Err(format!(
                    "{text:?} would allow every site under the top-level domain \
                     {suffix:?}; name a domain, as in {scheme}://*.example.{suffix}"
                ));
            }
            return Ok(OriginRule::Subdomains {
                scheme: scheme.to_string(),
                suffix: suffix.to_string(),
                port,
            });
        }
        if host.contains('*') {
            return Err(format!(
                "{text:?}: \"*\" may only stand for the leftmost labels of the host, \
                 as in https://*.example.com (or be the whole entry, \"*\")"
            ));
        }
        let host = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            match inner.parse::<Ipv6Addr>() {
                // Browsers serialise IPv6 hosts in their shortest form.
                Ok(addr) => format!("[{addr}]"),
                Err(_) => return Err(format!("{text:?} has an invalid IPv6 address")),
            }
        } else if host.parse::<Ipv4Addr>().is_ok() || valid_domain(host) {
            host.to_string()
        } else {
            return Err(format!("{text:?} has an invalid host: {SHAPE}"));
        };
        Ok(OriginRule::Exact(format!("{scheme}://{host}{port_suffix}")))
    }

    /// Whether a request's `Origin` value matches this rule.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Exact(exact) => origin == exact,
            OriginRule::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                let Some(rest) = origin
                    .strip_prefix(scheme.as_str())
                    .and_then(|r| r.strip_prefix("://"))
                else {
                    return false;
                };
                let (host, port_text) = match rest.split_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (rest, None),
                };
                let port_ok = match (port, port_text) {
                    (None, None) => true,
                    (Some(want), Some(got)) => parse_port(got) == Some(*want),
                    _ => false,
                };
                let Some(labels) = host
                    .strip_suffix(suffix.as_str())
                    .and_then(|h| h.strip_suffix('.'))
                else {
                    return false;
                };
                port_ok && valid_domain(labels)
            }
        }
    }
}
