//! The developer portal: web pages on their own listener (`[portal]`) where
//! consumers sign up, sign in, browse the published products with their
//! plans and APIs, create apps, subscribe them to plans and manage their
//! API keys — through the same registry functions as the admin API, so the
//! same rules hold, with the consumer recorded as the actor.
//!
//! Server-rendered HTML ([`pages`]: minijinja templates embedded in the
//! binary, auto-escaped), no JavaScript, one stylesheet served here.
//! [`listener`] accepts connections with caps and timeouts, [`http`] serves
//! one request (sessions, CSRF, the pages), [`form`] reads forms strictly,
//! [`throttle`] locks out repeated sign-in failures, [`outbox`] writes mail
//! to a folder. The reference is docs/portal.md.

pub mod demo;
pub mod form;
pub mod http;
pub mod listener;
pub mod outbox;
pub mod pages;
pub mod throttle;
pub mod tryit;

use crate::control::admin::Registry;
use crate::control::ControlPlane;
use crate::manifest::{PortalSpec, Signup};
use std::path::Path;
use std::sync::Arc;

/// What every portal request shares.
pub struct Portal {
    pub control: Arc<ControlPlane>,
    pub registry: Arc<Registry>,
    pub pages: pages::Pages,
    pub throttle: throttle::Throttle,
    pub outbox: Option<outbox::Outbox>,
    pub signup: Signup,
    pub session_ms: u64,
    pub reset_ms: u64,
    pub max_body: u64,
    /// The listener serves TLS.
    pub tls: bool,
    /// Cookies are `Secure` with the `__Host-` prefix: under TLS, or behind
    /// an https `public-url`.
    pub secure: bool,
    /// Links in mail start with this (no trailing slash).
    pub public_url: String,
    /// `scheme://host[:port]` of `public_url`, for the Origin check.
    pub public_origin: String,
    /// The `From` of the portal's mail.
    pub mail_from: String,
}

impl Portal {
    /// The portal of `spec`, its outbox relative to `base`, listening on
    /// `local` (the default public URL's address).
    pub fn new(
        control: Arc<ControlPlane>,
        spec: &PortalSpec,
        base: &Path,
        local: std::net::SocketAddr,
        tls: bool,
    ) -> anyhow::Result<Portal> {
        let public_url = spec
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{}://{local}", if tls { "https" } else { "http" }))
            .trim_end_matches('/')
            .to_string();
        let public_origin = {
            let (scheme, rest) = public_url
                .split_once("://")
                .unwrap_or(("http", &public_url));
            format!("{scheme}://{}", rest.split('/').next().unwrap_or(""))
        };
        let host = public_origin
            .split_once("://")
            .map(|(_, h)| h.split(':').next().unwrap_or(h).to_string())
            .unwrap_or_default();
        let outbox = match &spec.outbox {
            Some(dir) => Some(outbox::Outbox::open(&crate::loader::resolve(base, dir))?),
            None => None,
        };
        Ok(Portal {
            registry: control.registry.clone(),
            control,
            pages: pages::Pages::new(),
            throttle: throttle::Throttle::new(&spec.lockout),
            outbox,
            signup: spec.signup,
            session_ms: spec.session_lifetime.0.as_millis() as u64,
            reset_ms: spec.reset_lifetime.0.as_millis() as u64,
            max_body: spec.max_body.0,
            tls,
            secure: tls || public_url.starts_with("https://"),
            mail_from: spec
                .smtp
                .as_ref()
                .and_then(|m| m.from.clone())
                .unwrap_or_else(|| format!("Tollgate developer portal <portal@{host}>")),
            public_url,
            public_origin,
        })
    }
}
