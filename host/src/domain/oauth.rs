//! The gateway's OAuth 2.0 authorization server as the data plane sees it:
//! a few fixed paths on the public listeners (token, revocation,
//! introspection, the JWKS and the server's metadata) answered before
//! routing. The control plane implements [`AuthorizationServer`] over its
//! registry (`control::oauth`); the composition root hands it to the data
//! plane, which never knows how clients, tokens and keys are kept.

/// The token endpoint (RFC 6749 §3.2): the client credentials grant.
pub const TOKEN_PATH: &str = "/oauth2/token";
/// Token revocation (RFC 7009).
pub const REVOKE_PATH: &str = "/oauth2/revoke";
/// Token introspection (RFC 7662).
pub const INTROSPECT_PATH: &str = "/oauth2/introspect";
/// The public keys that sign access tokens (RFC 7517).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The server's metadata (RFC 8414).
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// Every path the authorization server answers.
pub const PATHS: [&str; 5] = [
    TOKEN_PATH,
    REVOKE_PATH,
    INTROSPECT_PATH,
    JWKS_PATH,
    METADATA_PATH,
];

/// The largest form body the endpoints read (a client credentials request
/// is a few hundred bytes).
pub const MAX_FORM_BODY: usize = 16 * 1024;

/// One call to an endpoint: what the server needs of the request, the body
/// already read (at most [`MAX_FORM_BODY`] bytes).
#[derive(Debug)]
pub struct OAuthCall<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `Authorization`, if sent once.
    pub authorization: Option<&'a str>,
    /// `Content-Type`, if sent once.
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// The issuer as the client reached it (`scheme://host`), used when
    /// `[oauth] issuer` is not set.
    pub origin: &'a str,
}

/// An endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthAnswer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The authorization server. `answer` may block on the store (an issued
/// token is recorded durably before it is returned): call it off the
/// event loop.
pub trait AuthorizationServer: Send + Sync + std::fmt::Debug {
    fn answer(&self, call: OAuthCall<'_>) -> OAuthAnswer;
}

/// Whether `path` is one of the server's endpoints.
pub fn is_endpoint(path: &str) -> bool {
    PATHS.contains(&path)
}

/// An RFC 6749 §3.3 scope token of at most 64 characters: printable ASCII
/// without space, `"` and `\`.
pub fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_tokens() {
        for ok in ["pets:read", "a", "x/y.z-1_~!#[]", &"s".repeat(64)] {
            assert!(valid_scope(ok), "{ok}");
        }
        for bad in ["", "a b", "a\"b", "a\\b", "é", "a\tb", &"s".repeat(65)] {
            assert!(!valid_scope(bad), "{bad:?}");
        }
    }

    #[test]
    fn endpoints() {
        assert!(is_endpoint("/oauth2/token"));
        assert!(!is_endpoint("/oauth2/token/"));
        assert!(!is_endpoint("/oauth2"));
    }
}
