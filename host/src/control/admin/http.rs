//! One admin request over HTTP: routed by the table ([`super::api`]), the
//! caller's bearer token checked against the route's family and role, the
//! JSON body read within `[admin] max-body`, the route's handler called,
//! and its answer or error written as JSON (`Allow` on a 405,
//! `WWW-Authenticate` on a 401, `Cache-Control: no-store` always).

use super::api::{self, may, Call, Route};
use super::error::{truncate, AdminError};
use super::model::User;
use super::registry::Registry;
use crate::control::ControlPlane;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;

/// What every request of one admin listener shares.
pub struct State {
    pub gateway: Arc<ControlPlane>,
    pub registry: Arc<Registry>,
    /// `[admin] max-body`, bytes.
    pub max_body: u64,
    /// The listener's address and whether it is TLS, for the OpenAPI
    /// document's `servers`.
    pub local: SocketAddr,
    pub tls: bool,
}

/// Answer one request.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if super::console::is_console(&path) {
        return super::console::serve(&method, &path);
    }
    let served = serve(&state, req).await;
    crate::observe::metrics::global().admin_call(
        &method,
        match &served {
            Ok((status, _)) => status.as_u16(),
            Err(e) => e.status.as_u16(),
        },
    );
    match served {
        Ok((status, body)) => {
            tracing::debug!(%peer, %method, %path, status = status.as_u16(), "admin");
            if status == StatusCode::NO_CONTENT {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = status;
                return r;
            }
            respond(status, body)
        }
        Err(e) => {
            tracing::info!(%peer, %method, %path, status = e.status.as_u16(), "admin: {e}");
            let mut r = error_response(&e);
            if e.status == StatusCode::METHOD_NOT_ALLOWED {
                if let Ok(v) = HeaderValue::from_str(&api::allowed(&path).join(", ")) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
            }
            r
        }
    }
}

/// Route, authenticate, read the body, and call the route's handler.
async fn serve(state: &Arc<State>, req: Request<Incoming>) -> api::Reply {
    let (route, params) = api::route(req.method(), req.uri().path())?;
    let user = authorize(state, route, req.headers()).await?;
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let host = header(header::HOST);
    let if_match = header(header::IF_MATCH).map(|v| v.trim().trim_matches('"').to_string());
    let accept = header(header::ACCEPT);
    let query = req.uri().query().map(str::to_string);
    let body = read_body(state, req).await?;
    let call = Call {
        gateway: state.gateway.clone(),
        registry: state.registry.clone(),
        user,
        params,
        query,
        body,
        host,
        if_match,
        accept,
        local: state.local,
        tls: state.tls,
    };
    api::serve(route, call).await
}

/// The caller of `route`, by its bearer token, if its role may call it
/// (`None` on public routes).
async fn authorize(
    state: &State,
    route: &Route,
    headers: &HeaderMap,
) -> Result<Option<User>, AdminError> {
    if route.family == api::Family::Public
        || (route.family == api::Family::Metrics && state.gateway.data.observe.metrics_public)
    {
        return Ok(None);
    }
    let token = bearer(headers)?;
    let reg = state.registry.clone();
    let user = api::blocking(move || reg.authenticate(&token))
        .await?
        .ok_or_else(|| AdminError::unauthorized("the admin token is not valid"))?;
    if !may(user.role, route.family, route.writes) {
        return Err(AdminError::forbidden(format!(
            "user `{}` ({}) may not {} {}",
            user.id,
            user.role.as_str(),
            if route.writes { "change" } else { "read" },
            route.path.strip_prefix("/admin/v1/").unwrap_or(route.path)
        )));
    }
    Ok(Some(user))
}

/// The token of the one `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Result<String, AdminError> {
    if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        return Err(AdminError::bad_request(
            "send one `Authorization` header, not several",
        ));
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .ok_or_else(|| {
            AdminError::unauthorized(
                "an admin token is required: `Authorization: Bearer <token>` (`tollgate admin init` creates the first)",
            )
        })
}

/// The body of a POST, PUT or PATCH: JSON, at most `max_body` bytes (other
/// methods: empty, unread).
async fn read_body(state: &State, req: Request<Incoming>) -> Result<Bytes, AdminError> {
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return Ok(Bytes::new());
    }
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" {
            return Err(AdminError::unsupported_media_type(format!(
                "bodies are JSON: send `Content-Type: application/json`, not `{}`",
                truncate(essence, 80)
            )));
        }
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > state.max_body {
            return Err(AdminError::too_large(state.max_body));
        }
    }
    match Limited::new(req.into_body(), state.max_body as usize)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(AdminError::too_large(state.max_body))
        }
        Err(e) => Err(AdminError::bad_request(format!("reading the body: {e}"))),
    }
}

fn respond(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    // A text reply ([`api::text`]): its body as is, with its type.
    let raw = body.get(api::RAW).and_then(|raw| {
        let ct = HeaderValue::from_str(raw.get("content_type")?.as_str()?).ok()?;
        Some((ct, raw.get("body")?.as_str()?.to_string()))
    });
    let (content_type, bytes) = match raw {
        Some((ct, text)) => (ct, Bytes::from(text)),
        None => (
            HeaderValue::from_static("application/json"),
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        ),
    };
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, content_type);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn error_response(e: &AdminError) -> Response<Full<Bytes>> {
    let mut r = respond(e.status, e.to_json());
    if e.status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bearer_token() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h).unwrap_err().status, 401);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  tga_x "),
        );
        assert_eq!(bearer(&h).unwrap(), "tga_x");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer tga_y"),
        );
        assert_eq!(bearer(&h).unwrap(), "tga_y");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        assert_eq!(bearer(&h).unwrap_err().status, 401);
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tga_z"),
        );
        assert_eq!(bearer(&h).unwrap_err().status, 400);
    }

    #[test]
    fn text_replies_are_written_as_they_are() {
        let (status, body) = api::text("text/csv; charset=utf-8", "a,b\r\n".into()).unwrap();
        let r = respond(status, body);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let body = futures_util::FutureExt::now_or_never(r.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"a,b\r\n");
    }

    #[test]
    fn errors_answer_json_and_a_challenge() {
        let r = error_response(&AdminError::unauthorized("no"));
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"tollgate-admin\""
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let r = error_response(&AdminError::forbidden("no"));
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
