//! One portal request: the head read and checked (a form body of
//! `[portal] max-body` at most, as `application/x-www-form-urlencoded`),
//! then routed on the blocking pool (the registry waits for the disk,
//! Argon2 for the CPU), and every answer given the same security headers.
//!
//! Defences, each tested (`tests/tests/e2e/portal.rs`):
//! - sessions: a random 256-bit id in an `HttpOnly`, `SameSite=Lax` cookie
//!   (`Secure` and `__Host-` under TLS), stored as its SHA-256 with an
//!   expiry; a new id at every sign-in;
//! - CSRF: every form carries a synchronizer token — the session's, or
//!   before sign-in a double-submit cookie's — checked on every POST, and
//!   a POST whose `Origin` (or `Referer`) is another site is refused;
//! - redirects after sign-in only to a same-site relative path;
//! - a strict CSP, `X-Frame-Options: DENY`, `nosniff`, referrers only to
//!   the portal itself;
//! - sign-in throttled per email and per client, with one generic error.

use super::form::{query_param, Form};
use super::Portal;
use crate::control::admin::model::{
    Account, AccountState, App, AppCreate, Approval, KeyCreate, KeyRotate, OAuthClient,
    OAuthClientCreate, Plan, Product, SubState, SubscriptionCreate, Ts, GUESTS,
};
use crate::control::admin::registry::{
    check_password, decoy_hash, hash_password, new_token, verify_password, Session, SignUp,
};
use crate::control::admin::AdminError;
use crate::manifest::Signup;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;

/// The overlap a key rotated from the portal keeps working for.
pub const ROTATION_OVERLAP_SECONDS: u64 = 3600;

/// The reference page's policy: RapiDoc's script from here, the document
/// fetched from here; styles inline too, which its components set (no
/// script runs from them). Nothing is framed or loaded from elsewhere.
const REFERENCE_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the generic sign-in failure says (the same for an unknown email, a
/// wrong password and a locked-out sign-in).
pub const SIGNIN_FAILED: &str = "Sign-in failed: the email or the password is wrong, or sign-in is paused after too many failures. Try again later.";

/// A request as the handlers see it.
struct Req {
    method: Method,
    path: String,
    query: Option<String>,
    cookies: Vec<(String, String)>,
    body: Bytes,
    peer: IpAddr,
}

impl Req {
    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer before its common headers.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    /// Borrowed for the embedded assets: served without a copy.
    body: std::borrow::Cow<'static, str>,
    location: Option<String>,
    cookies: Vec<String>,
    cache: &'static str,
    /// The page's Content-Security-Policy.
    csp: Csp,
}

/// Which Content-Security-Policy a page gets.
#[derive(Clone, Copy)]
enum Csp {
    /// [`CSP`]: no script at all.
    Strict,
    /// [`REFERENCE_CSP`]: the API reference's script.
    Reference,
}

impl Reply {
    fn html(status: StatusCode, body: impl Into<std::borrow::Cow<'static, str>>) -> Reply {
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body: body.into(),
            location: None,
            cookies: Vec::new(),
            cache: "no-store",
            csp: Csp::Strict,
        }
    }

    fn redirect(to: &str) -> Reply {
        Reply {
            location: Some(to.to_string()),
            ..Reply::html(StatusCode::SEE_OTHER, String::new())
        }
    }

    fn cookie(mut self, c: String) -> Reply {
        self.cookies.push(c);
        self
    }
}

/// A refusal: its status and what the page says.
struct Fail {
    status: StatusCode,
    message: String,
}

fn fail(status: StatusCode, message: impl Into<String>) -> Fail {
    Fail {
        status,
        message: message.into(),
    }
}

impl From<AdminError> for Fail {
    fn from(e: AdminError) -> Fail {
        let status = match e.status.as_u16() {
            503 => StatusCode::SERVICE_UNAVAILABLE,
            404 => StatusCode::NOT_FOUND,
            409 => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        fail(status, e.message)
    }
}

type Out = Result<Reply, Fail>;

/// Who is asking: a signed-in consumer's session, and the pre-sign-in
/// CSRF cookie when there is one.
#[derive(Clone)]
struct Who {
    session: Option<(String, Session, Account)>,
    anon: Option<String>,
}

impl Who {
    /// The token this page's forms carry.
    fn csrf(&self) -> String {
        match (&self.session, &self.anon) {
            (Some((_, s, _)), _) => s.csrf.clone(),
            (None, Some(a)) => a.clone(),
            (None, None) => String::new(),
        }
    }

    fn account(&self) -> Option<&Account> {
        self.session.as_ref().map(|(_, _, a)| a)
    }
}

/// Answer one request.
pub async fn handle(
    portal: Arc<Portal>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let reply = match read(&portal, req, peer.ip()).await {
        Ok(r) => {
            let p = portal.clone();
            match tokio::task::spawn_blocking(move || serve(&p, r)).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(f)) => portal.error_page(f),
                Err(e) => {
                    portal.error_page(fail(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")))
                }
            }
        }
        Err(f) => portal.error_page(f),
    };
    tracing::debug!(%peer, %method, %path, status = reply.status.as_u16(), "portal");
    portal.finish(reply)
}

/// The request's head checked and its form body read.
async fn read(portal: &Portal, req: Request<Incoming>, peer: IpAddr) -> Result<Req, Fail> {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let post = match method {
        Method::GET | Method::HEAD => false,
        Method::POST => true,
        _ => {
            return Err(fail(
                StatusCode::METHOD_NOT_ALLOWED,
                "Only GET and POST are served here.",
            ))
        }
    };
    let cookies = cookies(&parts.headers);
    if post {
        same_origin(portal, &parts.headers)?;
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/x-www-form-urlencoded" {
            return Err(fail(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Forms are sent as application/x-www-form-urlencoded.",
            ));
        }
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > portal.max_body) {
            return Err(too_large(portal.max_body));
        }
    }
    let body = if post {
        match Limited::new(body, portal.max_body as usize).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(too_large(portal.max_body))
            }
            Err(_) => return Err(fail(StatusCode::BAD_REQUEST, "The form could not be read.")),
        }
    } else {
        Bytes::new()
    };
    Ok(Req {
        method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        cookies,
        body,
        peer,
    })
}

fn too_large(limit: u64) -> Fail {
    fail(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The form is larger than {limit} bytes."),
    )
}

/// The request's cookies (name, value), from every `Cookie` header.
fn cookies(h: &HeaderMap) -> Vec<(String, String)> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Refuse a POST another site's page sent: its `Origin` (else its
/// `Referer`) must be this portal's (its public URL's, or the `Host` it
/// was sent to), and `Sec-Fetch-Site` must not say `cross-site`.
fn same_origin(portal: &Portal, h: &HeaderMap) -> Result<(), Fail> {
    let refuse = || {
        fail(
            StatusCode::FORBIDDEN,
            "This form was sent from another site: refused.",
        )
    };
    let get = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok());
    if get(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return Err(refuse());
    }
    let from = match (get(header::ORIGIN), get(header::REFERER)) {
        (Some(o), _) => o.to_string(),
        (None, Some(r)) => origin_of(r).ok_or_else(refuse)?,
        (None, None) => return Ok(()),
    };
    let host = get(header::HOST).unwrap_or("");
    let ours = from == portal.public_origin
        || from.split_once("://").is_some_and(|(scheme, auth)| {
            matches!(scheme, "http" | "https") && !host.is_empty() && auth == host
        });
    if ours {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// `scheme://authority` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let auth = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{auth}"))
}

/// Where to go after signing in: `next` when it is a path on this site
/// (one leading `/`, no backslash, no scheme, no control character),
/// else the apps page.
pub fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.len() <= 512
        && !next.chars().any(|c| c.is_control() || c.is_whitespace())
        && !next.to_ascii_lowercase().contains("%5c")
        && !next[1..].starts_with("%2f")
        && !next[1..].starts_with("%2F");
    if ok {
        next.to_string()
    } else {
        "/apps".to_string()
    }
}

/// Constant-time comparison of two tokens.
fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty()
        && a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn is_token(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---------------------------------------------------------------------------
// Routing

fn serve(p: &Portal, req: Req) -> Out {
    let who = p.who(&req)?;
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let get = matches!(req.method, Method::GET | Method::HEAD);
    match (get, segs.as_slice()) {
        (true, ["static", "portal.css"]) => Ok(Reply {
            content_type: "text/css; charset=utf-8",
            cache: "public, max-age=3600",
            ..Reply::html(StatusCode::OK, super::pages::CSS)
        }),
        (true, ["static", "rapidoc-min.js"]) => Ok(Reply {
            content_type: "text/javascript; charset=utf-8",
            cache: "public, max-age=86400",
            ..Reply::html(StatusCode::OK, super::pages::RAPIDOC)
        }),
        (true, ["apis", name, "reference"]) => p.reference(who, name),
        (true, ["apis", name, "openapi.json"]) => p.api_document(&who, name),
        (true, [""]) => p.home(who),
        (true, ["signin"]) => p.signin_page(&req, who, StatusCode::OK, None, ""),
        (false, ["signin"]) => p.signin(&req, who),
        (true, ["signup"]) => p.signup_page(who, StatusCode::OK, None, "", ""),
        (false, ["signup"]) => p.signup(&req, who),
        (false, ["signout"]) => p.signout(&req, who),
        (true, ["reset"]) => p.reset_page(who),
        (false, ["reset"]) => p.reset_request(&req, who),
        (true, ["reset", "confirm"]) => p.reset_confirm_page(&req, who),
        (false, ["reset", "confirm"]) => p.reset_confirm(&req, who),
        (true, ["apps"]) => p.apps(&req, who),
        (true, ["usage"]) => p.usage(&req, who),
        (false, ["apps"]) => p.create_app(&req, who),
        (true, ["apps", id]) => p.app(&req, who, id, None),
        (false, ["apps", id, "subscriptions"]) => p.subscribe(&req, who, id),
        (false, ["apps", id, "keys"]) => p.create_key(&req, who, id),
        (false, ["apps", id, "try"]) => p.try_it(&req, who, id),
        (false, ["apps", id, "oauth-clients"]) => p.create_client(&req, who, id),
        (false, ["apps", id, "oauth-clients", c, action @ ("rotate" | "revoke")]) => {
            p.client_action(&req, who, id, c, action)
        }
        (false, ["apps", id, "keys", key, action @ ("rotate" | "revoke")]) => {
            p.key_action(&req, who, id, key, action)
        }
        (false, ["apps", id, "subscriptions", sub, "keys", slot, "regenerate"]) => {
            p.regenerate_sub_key(&req, who, id, sub, slot)
        }
        _ => Err(fail(StatusCode::NOT_FOUND, "There is no such page.")),
    }
}

impl Portal {
    fn cookie_name(&self, base: &str) -> String {
        if self.secure {
            format!("__Host-{base}")
        } else {
            base.to_string()
        }
    }

    fn set_cookie(&self, base: &str, value: &str, max_age: u64) -> String {
        format!(
            "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
            self.cookie_name(base),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The session of the request's cookie, if live.
    fn who(&self, req: &Req) -> Result<Who, Fail> {
        let session = match req.cookie(&self.cookie_name(SESSION)) {
            Some(secret) if is_token(secret) => self
                .registry
                .session(secret)?
                .map(|(s, a)| (secret.to_string(), s, a)),
            _ => None,
        };
        let anon = req
            .cookie(&self.cookie_name(CSRF))
            .filter(|t| is_token(t))
            .map(str::to_string);
        Ok(Who { session, anon })
    }

    /// Parse the form and check its token: the session's, or — on the
    /// pages before sign-in (`anonymous`) — the pre-sign-in cookie's too.
    fn form(&self, req: &Req, who: &Who, fields: &[&str], anonymous: bool) -> Result<Form, Fail> {
        let mut allowed = vec!["csrf"];
        allowed.extend_from_slice(fields);
        let form =
            Form::parse(&req.body, &allowed).map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
        let sent = form.get("csrf");
        let by_session = who
            .session
            .as_ref()
            .is_some_and(|(_, s, _)| same_token(sent, &s.csrf));
        let by_cookie = anonymous && who.anon.as_deref().is_some_and(|a| same_token(sent, a));
        if by_session || by_cookie {
            Ok(form)
        } else {
            Err(fail(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this portal (its CSRF token does not match). Reload the page and try again.",
            ))
        }
    }

    /// The signed-in account, or a redirect to sign in.
    fn signed_in<'a>(
        &self,
        req: &Req,
        who: &'a Who,
    ) -> Result<&'a (String, Session, Account), Reply> {
        who.session.as_ref().ok_or_else(|| {
            let next = match &req.query {
                Some(q) if req.method == Method::GET => format!("{}?{q}", req.path),
                _ => req.path.clone(),
            };
            let next: String = safe_next(&next);
            Reply::redirect(&format!("/signin?next={}", encode(&next)))
        })
    }

    /// Render a page: the layout's context (who is signed in, the forms'
    /// token, whether sign-up is open) and `extra`.
    fn page(&self, name: &str, title: &str, who: &Who, status: StatusCode, extra: Value) -> Out {
        let mut ctx = json!({
            "title": title,
            "csrf": who.csrf(),
            "account": who.account().map(|a| json!({"name": a.name, "email": a.email})),
            "signup_open": self.signup != Signup::Closed,
            "reset_available": self.outbox.is_some(),
        });
        if let (Some(o), Some(e)) = (ctx.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        let body = self
            .pages
            .render(name, ctx)
            .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        Ok(Reply::html(status, body))
    }

    /// A page with a form before sign-in: sets the pre-sign-in CSRF cookie
    /// when there is none.
    fn anon_page(
        &self,
        name: &str,
        title: &str,
        mut who: Who,
        status: StatusCode,
        extra: Value,
    ) -> Out {
        let fresh = if who.session.is_none() && who.anon.is_none() {
            let t = new_token();
            who.anon = Some(t.clone());
            Some(t)
        } else {
            None
        };
        let mut r = self.page(name, title, &who, status, extra)?;
        if let Some(t) = fresh {
            r = r.cookie(self.set_cookie(CSRF, &t, 86_400));
        }
        Ok(r)
    }

    fn error_page(&self, f: Fail) -> Reply {
        let who = Who {
            session: None,
            anon: None,
        };
        let title = f.status.canonical_reason().unwrap_or("Error").to_string();
        match self.page(
            "message.html",
            &title,
            &who,
            f.status,
            json!({"error": f.message, "link": "/", "link_text": "Back to the portal"}),
        ) {
            Ok(r) => r,
            Err(e) => Reply {
                content_type: "text/plain; charset=utf-8",
                ..Reply::html(f.status, e.message)
            },
        }
    }

    /// The common headers.
    fn finish(&self, r: Reply) -> Response<Full<Bytes>> {
        let body = match r.body {
            std::borrow::Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
            std::borrow::Cow::Owned(s) => Bytes::from(s),
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = r.status;
        let h = resp.headers_mut();
        let st = HeaderValue::from_static;
        h.insert(header::CONTENT_TYPE, st(r.content_type));
        h.insert(header::CACHE_CONTROL, st(r.cache));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            st(match r.csp {
                Csp::Strict => CSP,
                Csp::Reference => REFERENCE_CSP,
            }),
        );
        h.insert(header::X_FRAME_OPTIONS, st("DENY"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, st("nosniff"));
        h.insert(header::REFERRER_POLICY, st("same-origin"));
        h.insert(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            st("same-origin"),
        );
        if self.tls {
            h.insert(header::STRICT_TRANSPORT_SECURITY, st("max-age=31536000"));
        }
        if let Some(l) = r.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            h.insert(header::LOCATION, l);
        }
        for c in r.cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                h.append(header::SET_COOKIE, v);
            }
        }
        resp
    }

    // -----------------------------------------------------------------------
    // Products

    /// The groups whose products the viewer sees: a signed-in consumer's,
    /// or `guests` for a visitor.
    fn viewer_groups(&self, who: &Who) -> Vec<String> {
        match who.account() {
            Some(a) => self.registry.consumer_groups(&a.consumer),
            None => vec![GUESTS.to_string()],
        }
    }

    /// The published products visible to one of `groups`.
    fn catalogue(&self, groups: &[String]) -> Result<Vec<Product>, Fail> {
        Ok(self
            .registry
            .list::<Product>("product", None, 500, |p| {
                p.published && crate::control::admin::api::products::visible(p, groups)
            })?
            .items)
    }

    fn home(&self, who: Who) -> Out {
        let g = self.control.current();
        let products = self.catalogue(&self.viewer_groups(&who))?;
        let mut out = Vec::new();
        for p in products {
            let plans = self.plans_of(&p.id)?;
            let apis: Vec<Value> = p
                .apis
                .iter()
                .map(|name| {
                    let api = g.apis.iter().find(|a| *a.name == **name);
                    let routes: Vec<String> = api
                        .map(|a| {
                            a.spec
                                .routes
                                .iter()
                                .map(|r| {
                                    let r = r.get_ref();
                                    let methods = if r.methods.is_empty() {
                                        "ANY".to_string()
                                    } else {
                                        r.methods.join(", ")
                                    };
                                    let at = match (&r.path, &r.prefix) {
                                        (Some(path), _) => path.clone(),
                                        (None, Some(prefix)) => format!("{prefix}/…"),
                                        (None, None) => "/".into(),
                                    };
                                    format!("{methods} {at}")
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    // Its version and how a call names it; its lifecycle.
                    let version = api.and_then(|a| a.version.as_ref()).map(|v| {
                        use crate::route::VersionFrom;
                        let how = match &v.from {
                            VersionFrom::Path => format!("path /{}/…", v.version),
                            VersionFrom::Header(h) => format!("header {h}: {}", v.version),
                            VersionFrom::Query(q) => format!("query ?{q}={}", v.version),
                        };
                        json!({"set": &*v.set, "version": &*v.version, "how": how})
                    });
                    let lifecycle = crate::control::admin::api::versions::lifecycle_view(
                        api.and_then(|a| a.spec.lifecycle.as_ref()),
                    );
                    json!({"name": name, "routes": routes, "version": version, "lifecycle": lifecycle})
                })
                .collect();
            out.push(json!({
                "id": p.id, "name": p.name, "description": p.description,
                "access": p.access.as_str(), "open": p.access.is_open(),
                "apis": apis, "plans": plans.iter().map(plan_view).collect::<Vec<_>>(),
            }));
        }
        self.page(
            "home.html",
            "Products",
            &who,
            StatusCode::OK,
            json!({"products": out}),
        )
    }

    // -----------------------------------------------------------------------
    // API reference

    /// Whether `name` is an API of a published product visible to the
    /// viewer (only those have a reference in the portal).
    fn published_api(&self, who: &Who, name: &str) -> Result<bool, Fail> {
        let groups = self.viewer_groups(who);
        Ok(!self
            .registry
            .list::<Product>("product", None, 500, |p| {
                p.published
                    && p.apis.iter().any(|a| a == name)
                    && crate::control::admin::api::products::visible(p, &groups)
            })?
            .items
            .is_empty())
    }

    /// `GET /apis/{name}/reference`: the API's reference, rendered in the
    /// page by RapiDoc (embedded, served from here) from
    /// `/apis/{name}/openapi.json`.
    fn reference(&self, who: Who, name: &str) -> Out {
        if !self.published_api(&who, name)?
            || !self.control.current().apis.iter().any(|a| *a.name == *name)
        {
            return Err(fail(StatusCode::NOT_FOUND, "There is no such API."));
        }
        let mut r = self.page(
            "reference.html",
            &format!("{name} reference"),
            &who,
            StatusCode::OK,
            json!({"api": name}),
        )?;
        r.csp = Csp::Reference;
        Ok(r)
    }

    /// `GET /apis/{name}/openapi.json`: the API as the gateway serves it
    /// (as the admin API exports it), for the reference and for clients
    /// who may see a product of it.
    fn api_document(&self, who: &Who, name: &str) -> Out {
        let g = self.control.current();
        let api = g
            .apis
            .iter()
            .find(|a| *a.name == *name)
            .filter(|_| self.published_api(who, name).unwrap_or(false))
            .ok_or_else(|| fail(StatusCode::NOT_FOUND, "There is no such API."))?;
        let doc =
            crate::control::admin::api::served_document(&g, api, &self.control.server_urls(None));
        Ok(Reply {
            content_type: "application/json",
            ..Reply::html(StatusCode::OK, doc.to_string())
        })
    }

    fn plans_of(&self, product: &str) -> Result<Vec<Plan>, Fail> {
        Ok(self
            .registry
            .list::<Plan>("plan", None, 1000, |x| x.product == product)?
            .items)
    }

    // -----------------------------------------------------------------------
    // Sign-in, sign-up, sign-out

    fn signin_page(
        &self,
        req: &Req,
        who: Who,
        status: StatusCode,
        error: Option<&str>,
        email: &str,
    ) -> Out {
        let next = safe_next(&query_param(req.query.as_deref(), "next").unwrap_or_default());
        let notice = match query_param(req.query.as_deref(), "done").as_deref() {
            Some("signed-up") => Some("Thank you for signing up. If your account needs approval, you can sign in once an administrator has approved it."),
            Some("reset") => Some("Your password was changed. Sign in with the new one."),
            Some("signed-out") => Some("You are signed out."),
            _ => None,
        };
        self.anon_page(
            "signin.html",
            "Sign in",
            who,
            status,
            json!({"next": next, "error": error, "email": email, "notice": notice}),
        )
    }

    fn signin(&self, req: &Req, who: Who) -> Out {
        let form = self.form(req, &who, &["email", "password", "next"], true)?;
        let (email, password) = (form.get("email").trim(), form.get("password"));
        let again = |status, msg: &str| {
            let r = Req {
                query: Some(format!("next={}", encode(form.get("next")))),
                method: Method::GET,
                path: "/signin".into(),
                cookies: Vec::new(),
                body: Bytes::new(),
                peer: req.peer,
            };
            self.signin_page(&r, who.clone(), status, Some(msg), email)
        };
        if self.throttle.locked(email, req.peer) {
            return again(StatusCode::UNAUTHORIZED, SIGNIN_FAILED);
        }
        let account = self.registry.account_by_email(email)?;
        let hash = account
            .as_ref()
            .map_or(decoy_hash(), |a| a.password_hash.as_str());
        let ok = verify_password(hash, password) && account.is_some();
        let Some(account) = account.filter(|_| ok) else {
            self.throttle.failed(email, req.peer);
            return again(StatusCode::UNAUTHORIZED, SIGNIN_FAILED);
        };
        match account.state {
            AccountState::Active => {}
            AccountState::Pending => {
                return again(
                    StatusCode::FORBIDDEN,
                    "Your account awaits approval by an administrator.",
                )
            }
            AccountState::Disabled => {
                return again(StatusCode::FORBIDDEN, "This account is disabled.")
            }
        }
        // A new session id at every sign-in: whatever id the browser held
        // before (planted or not) is ended, never promoted.
        if let Some((old, _, _)) = &who.session {
            self.registry.end_session(old)?;
        }
        let (secret, _) = self.registry.create_session(&account.id, self.session_ms)?;
        Ok(Reply::redirect(&safe_next(form.get("next")))
            .cookie(self.set_cookie(SESSION, &secret, self.session_ms / 1000))
            .cookie(self.set_cookie(CSRF, "", 0)))
    }

    fn signup_page(
        &self,
        who: Who,
        status: StatusCode,
        error: Option<&str>,
        name: &str,
        email: &str,
    ) -> Out {
        if self.signup == Signup::Closed {
            return Err(fail(
                StatusCode::NOT_FOUND,
                "Sign-up is closed on this portal.",
            ));
        }
        self.anon_page(
            "signup.html",
            "Sign up",
            who,
            status,
            json!({
                "error": error, "name": name, "email": email,
                "moderated": self.signup == Signup::Moderated,
                "min_password": crate::control::admin::registry::MIN_PASSWORD,
            }),
        )
    }

    fn signup(&self, req: &Req, who: Who) -> Out {
        if self.signup == Signup::Closed {
            return Err(fail(
                StatusCode::NOT_FOUND,
                "Sign-up is closed on this portal.",
            ));
        }
        let form = self.form(req, &who, &["name", "email", "password"], true)?;
        let (name, email) = (form.get("name").trim(), form.get("email").trim());
        let checked = crate::control::admin::model::check_email(email)
            .and_then(|()| check_password(form.get("password")))
            .and_then(|()| crate::control::admin::model::check_text("name", name, 200))
            .and_then(|()| {
                if name.is_empty() {
                    Err(AdminError::invalid("name", "a name is required"))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = checked {
            let msg = e.to_string();
            return self.signup_page(who, StatusCode::BAD_REQUEST, Some(&msg), name, email);
        }
        let hash = hash_password(form.get("password"))?;
        let state = match self.signup {
            Signup::Open => AccountState::Active,
            _ => AccountState::Pending,
        };
        match self.registry.sign_up(
            "portal",
            SignUp {
                email: email.to_string(),
                name: name.to_string(),
                password_hash: hash,
                state,
            },
        ) {
            Ok(_) => {}
            // An email in use: the same answer as a sign-up (so that the
            // form does not tell who has an account); the owner is told.
            Err(e) if e.status == StatusCode::CONFLICT => {
                self.mail(
                    email,
                    "Someone tried to sign up with your email",
                    &format!(
                        "Someone (perhaps you) tried to create a developer-portal account with this email, which has one already.\n\nTo sign in: {}/signin\nForgot your password? {}/reset\n",
                        self.public_url, self.public_url
                    ),
                );
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Reply::redirect("/signin?done=signed-up"))
    }

    fn signout(&self, req: &Req, who: Who) -> Out {
        let _ = self.form(req, &who, &[], false)?;
        if let Some((secret, _, _)) = &who.session {
            self.registry.end_session(secret)?;
        }
        Ok(Reply::redirect("/signin?done=signed-out").cookie(self.set_cookie(SESSION, "", 0)))
    }

    // -----------------------------------------------------------------------
    // Password reset

    fn reset_page(&self, who: Who) -> Out {
        if self.outbox.is_none() {
            return Err(fail(
                StatusCode::NOT_FOUND,
                "Password reset is not available on this portal: ask an administrator.",
            ));
        }
        self.anon_page(
            "reset_request.html",
            "Reset your password",
            who,
            StatusCode::OK,
            json!({}),
        )
    }

    fn reset_request(&self, req: &Req, who: Who) -> Out {
        if self.outbox.is_none() {
            return Err(fail(
                StatusCode::NOT_FOUND,
                "Password reset is not available on this portal.",
            ));
        }
        let form = self.form(req, &who, &["email"], true)?;
        let email = form.get("email").trim();
        // Requests count against the client as failed sign-ins do: the
        // reset form is no way around the throttle, nor a way to flood an
        // inbox (nor, counted per client only, a way to lock others out).
        if self.throttle.client_locked(req.peer) {
            return Err(fail(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts: try again later.",
            ));
        }
        self.throttle.client_failed(req.peer);
        if let Some(a) = self
            .registry
            .account_by_email(email)?
            .filter(|a| a.state == AccountState::Active)
        {
            let token = self.registry.create_reset(&a.id, self.reset_ms)?;
            self.mail(
                &a.email,
                "Reset your developer-portal password",
                &format!(
                    "To choose a new password, open this link within {} minutes. It works once.\n\n{}/reset/confirm?token={token}\n\nIf you did not ask for this, ignore this message.\n",
                    self.reset_ms / 60_000,
                    self.public_url
                ),
            );
        }
        self.page(
            "message.html",
            "Check your email",
            &who,
            StatusCode::OK,
            json!({"message": "If an account has this email, a link to reset its password is on its way."}),
        )
    }

    fn reset_confirm_page(&self, req: &Req, who: Who) -> Out {
        let token = query_param(req.query.as_deref(), "token").unwrap_or_default();
        let valid = self.registry.reset_valid(&token)?;
        self.anon_page(
            "reset.html",
            "Choose a new password",
            who,
            if valid { StatusCode::OK } else { StatusCode::NOT_FOUND },
            json!({"valid": valid, "token": token, "min_password": crate::control::admin::registry::MIN_PASSWORD}),
        )
    }

    fn reset_confirm(&self, req: &Req, who: Who) -> Out {
        let form = self.form(req, &who, &["token", "password"], true)?;
        if let Err(e) = check_password(form.get("password")) {
            return Err(fail(StatusCode::BAD_REQUEST, e.to_string()));
        }
        if !self.registry.reset_valid(form.get("token"))? {
            return Err(fail(StatusCode::NOT_FOUND, "This link is not valid: it was used already, has expired, or a newer one was sent."));
        }
        let hash = hash_password(form.get("password"))?;
        self.registry.use_reset(form.get("token"), hash)?;
        Ok(Reply::redirect("/signin?done=reset").cookie(self.set_cookie(SESSION, "", 0)))
    }

    /// Send a message through the outbox (logged when it fails: the page's
    /// answer must not depend on it).
    fn mail(&self, to: &str, subject: &str, body: &str) {
        let Some(o) = &self.outbox else { return };
        if let Err(e) = o.send(&self.mail_from, to, subject, body) {
            tracing::warn!("portal outbox: {e}");
        }
    }

    // -----------------------------------------------------------------------
    // Apps, subscriptions, keys

    fn apps(&self, req: &Req, who: Who) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let apps = self.registry.apps_of_consumer(&account.consumer)?;
        self.page(
            "apps.html",
            "My apps",
            &who,
            StatusCode::OK,
            json!({"apps": apps}),
        )
    }

    fn create_app(&self, req: &Req, who: Who) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let form = self.form(req, &who, &["name", "description"], false)?;
        let name = form.get("name").trim();
        if name.is_empty() {
            return Err(fail(StatusCode::BAD_REQUEST, "An app needs a name."));
        }
        let app = self.registry.create_app(
            &actor(account),
            AppCreate {
                id: app_id(name),
                consumer: account.consumer.clone(),
                name: Some(name.to_string()),
                description: form.get("description").replace("\r\n", "\n"),
            },
        )?;
        Ok(Reply::redirect(&format!("/apps/{}", app.id)))
    }

    /// The consumer's own app `id` (someone else's is not found).
    fn own_app(&self, account: &Account, id: &str) -> Result<App, Fail> {
        let gone = || fail(StatusCode::NOT_FOUND, "There is no such app.");
        if crate::control::admin::model::check_id("app", id).is_err() {
            return Err(gone());
        }
        match self.registry.get_resource::<App>("app", "app", id) {
            Ok(a) if a.consumer == account.consumer => Ok(a),
            Ok(_) => Err(gone()),
            Err(e) if e.status == StatusCode::NOT_FOUND => Err(gone()),
            Err(e) => Err(e.into()),
        }
    }

    fn app(&self, req: &Req, who: Who, id: &str, secret: Option<(String, String)>) -> Out {
        self.app_with(req, who, id, secret, Value::Null)
    }

    /// The app page, with `extra` in its context (a try-it answer).
    fn app_with(
        &self,
        req: &Req,
        who: Who,
        id: &str,
        secret: Option<(String, String)>,
        extra: Value,
    ) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let app = self.own_app(account, id)?;
        let now = Ts::now();
        let mut subs = Vec::new();
        let mut taken = Vec::new();
        for s in self.registry.subscriptions_of(&app.id)? {
            let plan: Option<Plan> = self.registry.plan(&s.plan);
            let product: Option<Product> = self
                .registry
                .get_resource("product", "product", &s.product)
                .ok();
            if s.state != SubState::Rejected {
                taken.push(s.plan.clone());
            }
            let keys: Vec<Value> = self
                .registry
                .keys_of_subscription(&s.id)?
                .into_iter()
                .map(|k| {
                    let live = k.live(now);
                    let status = match (k.revoked_at, live, &k.rotated_to, k.expires_at) {
                        (Some(_), _, _, _) => "revoked".to_string(),
                        (None, false, _, _) => "expired".to_string(),
                        (None, true, Some(_), Some(e)) => format!("rotated: works until {}", e.rfc3339()),
                        (None, true, _, Some(e)) => format!("live until {}", e.rfc3339()),
                        (None, true, _, None) => "live".to_string(),
                    };
                    json!({"id": k.id, "prefix": k.prefix, "live": live, "rotated": k.rotated_to.is_some(), "status": status})
                })
                .collect();
            let clients: Vec<Value> = if self.control.oauth.is_some() {
                self.registry
                    .oauth_clients_of_subscription(&s.id)?
                    .into_iter()
                    .map(|c| {
                        let live = c.revoked_at.is_none();
                        let status = match (c.revoked_at, c.previous_until) {
                            (Some(_), _) => "revoked".to_string(),
                            (None, Some(u)) if u > now => {
                                format!("rotated: the previous secret works until {}", u.rfc3339())
                            }
                            (None, _) => "live".to_string(),
                        };
                        json!({"id": c.id, "name": c.name, "live": live, "status": status})
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let sub_keys: Vec<Value> = [
                ("primary", &s.keys.primary),
                ("secondary", &s.keys.secondary),
            ]
            .into_iter()
            .map(|(slot, k)| json!({"slot": slot, "prefix": k.as_ref().map(|k| k.prefix.clone())}))
            .collect();
            subs.push(json!({
                "id": s.id, "plan": s.plan, "state": s.state.as_str(),
                "sub_keys": sub_keys,
                "clients": clients,
                "plan_name": plan.as_ref().map_or(s.plan.clone(), |p| p.name.clone()),
                "product_name": product.as_ref().map_or(s.product.clone(), |p| p.name.clone()),
                "keys": keys,
                "can_issue": matches!(s.state, SubState::Active | SubState::Pending),
            }));
        }
        let mut plans = Vec::new();
        for product in self.catalogue(&self.viewer_groups(&who))? {
            for plan in self.plans_of(&product.id)? {
                if !taken.contains(&plan.id) {
                    plans.push(json!({
                        "id": plan.id, "name": plan.name, "product_name": product.name,
                        "approval": approval(plan.approval),
                    }));
                }
            }
        }
        let notice = match query_param(req.query.as_deref(), "done").as_deref() {
            Some("subscribed") => Some("Subscribed."),
            Some("pending") => {
                Some("Subscribed: the plan is moderated, so the subscription awaits approval.")
            }
            Some("revoked") => Some("The key is revoked: it no longer works."),
            Some("client-revoked") => Some(
                "The OAuth client is revoked: it gets no token, and the tokens it holds no longer work.",
            ),
            _ => None,
        };
        let (secret, secret_plan) = secret.unzip();
        let token_url = self.control.oauth.as_ref().and_then(|_| {
            let urls = self.control.server_urls(None);
            urls.iter()
                .find(|u| u.starts_with("https://"))
                .or(urls.first())
                .map(|u| format!("{u}{}", crate::domain::oauth::TOKEN_PATH))
        });
        let mut ctx = json!({
            "app": app, "subscriptions": subs, "plans": plans, "notice": notice,
            "secret": secret, "secret_plan": secret_plan,
            "oauth": self.control.oauth.is_some(), "token_url": token_url,
        });
        if let (Some(o), Some(e)) = (ctx.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        let mut r = self.page(
            "app.html",
            &format!("App: {}", app.name),
            &who,
            StatusCode::OK,
            ctx,
        )?;
        r.cache = "no-store";
        Ok(r)
    }

    fn subscribe(&self, req: &Req, who: Who, id: &str) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let form = self.form(req, &who, &["plan"], false)?;
        let app = self.own_app(account, id)?;
        // Only the plans of published products visible to the consumer's
        // groups are offered.
        let groups = self.viewer_groups(&who);
        let plan = self
            .registry
            .plan(form.get("plan"))
            .filter(|p| {
                self.registry
                    .get_resource::<Product>("product", "product", &p.product)
                    .is_ok_and(|x| {
                        x.published && crate::control::admin::api::products::visible(&x, &groups)
                    })
            })
            .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "There is no such plan."))?;
        let (s, _) = self.registry.create_subscription(
            &actor(account),
            SubscriptionCreate {
                app: app.id.clone(),
                plan: plan.id,
            },
        )?;
        let done = if s.state == SubState::Active {
            "subscribed"
        } else {
            "pending"
        };
        Ok(Reply::redirect(&format!("/apps/{}?done={done}", app.id)))
    }

    fn create_key(&self, req: &Req, who: Who, id: &str) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let form = self.form(req, &who, &["plan"], false)?;
        let app = self.own_app(account, id)?;
        let (_, secret) = self.registry.create_key(
            &actor(account),
            KeyCreate {
                app: app.id.clone(),
                plan: form.get("plan").to_string(),
                name: String::new(),
                expires_at: None,
            },
        )?;
        let plan = form.get("plan").to_string();
        self.app(req, who.clone(), &app.id, Some((secret, plan)))
    }

    /// `GET /usage`: the signed-in consumer's own calls over the last 24
    /// hours, from the analytics store: calls per hour as a chart (SVG made
    /// here: no script), and calls, errors and latency by API.
    fn usage(&self, req: &Req, who: Who) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let Some(analytics) = self.control.data.observe.analytics.as_ref() else {
            return self.page(
                "usage.html",
                "Usage",
                &who,
                StatusCode::OK,
                json!({"off": true}),
            );
        };
        use crate::observe::analytics::report::{Defaults, Filter};
        use crate::observe::analytics::Dim;
        let run = |params: &[(&str, &str)], by: Vec<Dim>| -> Result<Value, Fail> {
            let params = params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let defaults = Defaults {
                by,
                ..Defaults::default()
            };
            let mut q = analytics
                .query(&params, &defaults)
                .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e.message))?;
            q.filters
                .push((Dim::Consumer, Filter::Is(account.consumer.clone())));
            let r = analytics.report(&q).map_err(|_| {
                fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Usage cannot be read right now; try again.",
                )
            })?;
            Ok(r.to_json())
        };
        let series = run(&[("from", "-24h"), ("interval", "hour")], Vec::new())?;
        let by_api = run(&[("from", "-24h")], vec![Dim::Api])?;
        let rows = series["rows"].as_array().cloned().unwrap_or_default();
        let max = rows
            .iter()
            .filter_map(|r| r["calls"].as_u64())
            .max()
            .unwrap_or(0)
            .max(1);
        // A bar of 18 px per hour (25: the current one too) in a 600 x 190
        // chart, from the oldest hour.
        let bars: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let calls = r["calls"].as_u64().unwrap_or(0);
                let errors = r["errors"].as_u64().unwrap_or(0);
                let h = calls * 150 / max;
                let eh = errors * 150 / max;
                let time = r["time"].as_str().unwrap_or("");
                json!({
                    "x": 40 + i * 21, "y": 160 - h, "h": h, "ey": 160 - eh, "eh": eh,
                    "calls": calls, "errors": errors, "hour": time.get(11..16).unwrap_or(""),
                    "label": i % 4 == 0,
                })
            })
            .collect();
        let ms = |v: &Value| v.as_u64().map(|us| format!("{:.1}", us as f64 / 1000.0));
        let apis: Vec<Value> = by_api["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                json!({
                    "api": r["api"], "calls": r["calls"], "errors": r["errors"],
                    "p50": ms(&r["latency_us"]["p50"]), "p95": ms(&r["latency_us"]["p95"]),
                    "p99": ms(&r["latency_us"]["p99"]),
                })
            })
            .collect();
        self.page(
            "usage.html",
            "Usage",
            &who,
            StatusCode::OK,
            json!({
                "bars": bars, "max": max, "apis": apis,
                "total_calls": series["totals"]["calls"], "total_errors": series["totals"]["errors"],
            }),
        )
    }

    /// `POST /apps/{id}/try`: call the API through the gateway with the
    /// credential the consumer pastes (a key shown once is theirs to keep),
    /// from the portal's side — only to the gateway's own public listener,
    /// with a bounded time and answer — and show the answer on the app page.
    fn try_it(&self, req: &Req, who: Who, id: &str) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let form = self.form(
            req,
            &who,
            &["method", "path", "header", "credential", "body"],
            false,
        )?;
        let app = self.own_app(account, id)?;
        let call = match super::tryit::Call::check(
            form.get("method"),
            form.get("path"),
            form.get("header"),
            form.get("credential"),
            form.get("body"),
        ) {
            Ok(c) => c,
            Err(e) => {
                // Said on the app page, beside the form.
                let mut r = self.app_with(
                    req,
                    who.clone(),
                    &app.id,
                    None,
                    json!({"tryit": {"error": e}, "tried": {"method": "GET", "path": "", "header": "x-api-key"}}),
                )?;
                r.status = StatusCode::BAD_REQUEST;
                return Ok(r);
            }
        };
        let base = self
            .control
            .server_urls(None)
            .into_iter()
            .find(|u| u.starts_with("http://"))
            .ok_or_else(|| {
                fail(
                    StatusCode::CONFLICT,
                    "Try-it needs a plain-HTTP listener of the gateway to call.",
                )
            })?;
        let answer = tokio::runtime::Handle::current().block_on(call.send(&base));
        let shown = json!({
            "method": call.method, "path": call.path, "header": call.header,
        });
        self.app_with(
            req,
            who.clone(),
            &app.id,
            None,
            json!({"tryit": answer, "tried": shown}),
        )
    }

    /// `POST /apps/{id}/oauth-clients`: a new OAuth client of the app's
    /// subscription to `plan`; its secret shown once.
    fn create_client(&self, req: &Req, who: Who, id: &str) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let form = self.form(req, &who, &["plan"], false)?;
        let app = self.own_app(account, id)?;
        if self.control.oauth.is_none() {
            return Err(fail(
                StatusCode::NOT_FOUND,
                "This gateway does not issue OAuth client credentials.",
            ));
        }
        let (c, secret) = self.registry.create_oauth_client(
            &actor(account),
            OAuthClientCreate {
                app: app.id.clone(),
                plan: form.get("plan").to_string(),
                name: String::new(),
            },
        )?;
        self.client_shown(req, who, &app.id, &c, secret)
    }

    /// The app page with a client's new secret (shown once).
    fn client_shown(&self, req: &Req, who: Who, app: &str, c: &OAuthClient, secret: String) -> Out {
        self.app_with(
            req,
            who,
            app,
            None,
            json!({"client_secret": secret, "client_id": c.id, "client_plan": c.plan}),
        )
    }

    /// `POST /apps/{id}/oauth-clients/{client}/rotate|revoke`.
    fn client_action(&self, req: &Req, who: Who, id: &str, client: &str, action: &str) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let _ = self.form(req, &who, &[], false)?;
        let app = self.own_app(account, id)?;
        let gone = || fail(StatusCode::NOT_FOUND, "There is no such OAuth client.");
        if crate::control::admin::model::check_id("oauth-client", client).is_err() {
            return Err(gone());
        }
        let c =
            match self
                .registry
                .get_resource::<OAuthClient>("oauth-client", "OAuth client", client)
            {
                Ok(c) if c.app == app.id => c,
                _ => return Err(gone()),
            };
        if action == "revoke" {
            self.registry.revoke_oauth_client(&actor(account), &c.id)?;
            return Ok(Reply::redirect(&format!(
                "/apps/{}?done=client-revoked",
                app.id
            )));
        }
        let (c, secret) = self.registry.rotate_oauth_client(
            &actor(account),
            &c.id,
            KeyRotate {
                overlap_seconds: ROTATION_OVERLAP_SECONDS,
            },
        )?;
        self.client_shown(req, who, &app.id, &c, secret)
    }

    fn key_action(&self, req: &Req, who: Who, id: &str, key: &str, action: &str) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let _ = self.form(req, &who, &[], false)?;
        let app = self.own_app(account, id)?;
        let k = match self
            .registry
            .get_resource::<crate::control::admin::model::Key>("key", "key", key)
        {
            Ok(k) if k.app == app.id => k,
            _ => return Err(fail(StatusCode::NOT_FOUND, "There is no such key.")),
        };
        if action == "revoke" {
            self.registry.revoke_key(&actor(account), &k.id)?;
            return Ok(Reply::redirect(&format!("/apps/{}?done=revoked", app.id)));
        }
        let (_, secret) = self.registry.rotate_key(
            &actor(account),
            &k.id,
            KeyRotate {
                overlap_seconds: ROTATION_OVERLAP_SECONDS,
            },
        )?;
        self.app(req, who.clone(), &app.id, Some((secret, k.plan)))
    }

    /// `POST /apps/{id}/subscriptions/{sub}/keys/{primary|secondary}/regenerate`:
    /// a new secret for one of the subscription's own keys, shown once;
    /// the old one stops working, the other key keeps working.
    fn regenerate_sub_key(&self, req: &Req, who: Who, id: &str, sub: &str, slot: &str) -> Out {
        let (_, _, account) = match self.signed_in(req, &who) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let _ = self.form(req, &who, &[], false)?;
        let app = self.own_app(account, id)?;
        let slot = crate::control::admin::model::Slot::parse(slot)
            .map_err(|_| fail(StatusCode::NOT_FOUND, "There is no such key."))?;
        let s = match self
            .registry
            .get_resource::<crate::control::admin::model::Subscription>("sub", "subscription", sub)
        {
            Ok(s) if s.app == app.id => s,
            _ => {
                return Err(fail(
                    StatusCode::NOT_FOUND,
                    "There is no such subscription.",
                ))
            }
        };
        let (_, secret) = self
            .registry
            .regenerate_sub_key(&actor(account), &s.id, slot)?;
        let label = format!("{} ({} subscription key)", s.plan, slot.as_str());
        self.app(req, who.clone(), &app.id, Some((secret, label)))
    }
}

const SESSION: &str = "tg_session";
const CSRF: &str = "tg_csrf";

/// The audit log's actor for a consumer's own change.
fn actor(a: &Account) -> String {
    format!("consumer:{}", a.consumer)
}

/// A new app's id: its name's letters and digits, and 8 random hex digits.
fn app_id(name: &str) -> String {
    let mut slug: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    slug = slug.trim_matches('-').chars().take(40).collect();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    let slug = slug.trim_matches('-');
    let tail = &new_token_hex()[..8];
    if slug.is_empty() {
        format!("app-{tail}")
    } else {
        format!("{slug}-{tail}")
    }
}

fn new_token_hex() -> String {
    hex::encode(new_token().as_bytes())
}

fn approval(a: Approval) -> &'static str {
    match a {
        Approval::SelfService => "self-service",
        Approval::Moderated => "needs approval",
    }
}

fn plan_view(p: &Plan) -> Value {
    let mut limits: Vec<String> = p
        .rate_limits
        .iter()
        .map(|l| {
            format!(
                "{} per {}",
                l.requests,
                serde_json::to_value(l.per)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )
        })
        .collect();
    if let Some(q) = &p.quota {
        limits.push(format!(
            "{} calls per {}",
            q.calls,
            serde_json::to_value(q.period)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ));
    }
    json!({
        "id": p.id, "name": p.name, "description": p.description,
        "limits": if limits.is_empty() { "no limits".to_string() } else { limits.join(", ") },
        "approval": approval(p.approval),
    })
}

/// Percent-encode a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_this_site() {
        for good in ["/apps", "/apps/x?done=1", "/"] {
            assert_eq!(safe_next(good), good);
        }
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "https://evil.com",
            "evil.com",
            "/%2Fevil.com",
            "/%5cevil.com",
            "/ /evil",
            "",
            "javascript:alert(1)",
            "/\tevil",
        ] {
            assert_eq!(safe_next(bad), "/apps", "{bad}");
        }
    }

    #[test]
    fn app_ids_are_ids() {
        for name in ["My App", "<script>", "ünïcode", "---"] {
            let id = app_id(name);
            crate::control::admin::model::check_id("id", &id).unwrap();
        }
        assert!(app_id("My App").starts_with("my-app-"));
        assert_eq!(
            origin_of("https://a.b:1/x?y").as_deref(),
            Some("https://a.b:1")
        );
        assert_eq!(encode("/a b?c"), "/a%20b%3Fc");
    }
}
