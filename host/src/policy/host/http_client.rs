//! `tollgate:policy/http-client`: outbound HTTP(S) calls from a step, only
//! to the hosts its `http:HOST[:PORT]` grants name, within the step's
//! wall-clock bound (a call that bound cuts ends the step as a timeout).
//! Waiting for the answer is not the step's running time.

use crate::policy::bindings;
use crate::policy::bindings::service_types::ServiceError;
use crate::policy::{escape_log, is_framing_header, Header, StepState};
use bytes::Bytes;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wasmtime::Trap;

/// A response to an outbound call, as the guest gets it.
pub use crate::policy::bindings::http_client::IncomingResponse;

/// The `http-client` service's client.
pub type Client = hyper_util::client::legacy::Client<
    crate::net::tls_client::Connector,
    http_body_util::Full<Bytes>,
>;

/// Outbound calls answered from a table instead of the network: the policy
/// test host's counterpart of the SDK harness's `answer` and `http_calls`.
/// Grants are checked as for a real call; a URL without an answer fails as
/// unreachable.
#[derive(Debug, Default)]
pub struct Canned {
    state: std::sync::Mutex<CannedState>,
}

#[derive(Debug, Default)]
struct CannedState {
    answers: std::collections::HashMap<String, bindings::http_client::IncomingResponse>,
    calls: Vec<String>,
}

impl Canned {
    /// Answer calls to `url` with `response` from now on.
    pub fn set(&self, url: &str, response: bindings::http_client::IncomingResponse) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.answers.insert(url.to_string(), response);
    }

    /// The URLs called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.calls.clone()
    }

    fn answer(&self, url: &str) -> Result<bindings::http_client::IncomingResponse, ServiceError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.calls.push(url.to_string());
        s.answers
            .get(url)
            .cloned()
            .ok_or_else(|| ServiceError::Unavailable(format!("no answer for {}", escape_log(url))))
    }
}

/// A client for `http://` and `https://` (ALPN h2/http1.1), verified
/// against the system's roots and `outbound_ca` (the `[outbound] ca-file`).
pub fn client(outbound_ca: Option<PathBuf>) -> anyhow::Result<Client> {
    let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
    conn.set_connect_timeout(Some(Duration::from_secs(5)));
    let tls = crate::net::tls_client::ClientTls {
        trust: crate::net::tls_client::Trust::SystemAnd(outbound_ca),
        identity: None,
        server_name: None,
    };
    let conn = crate::net::tls_client::connector(&tls, conn, false, true)
        .map_err(|e| anyhow::anyhow!("outbound: {e}"))?;
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(conn),
    )
}

/// Largest body an outbound call may return.
const MAX_OUTBOUND_BODY: usize = 1 << 20;

impl bindings::http_client::Host for StepState {
    async fn send(
        &mut self,
        req: bindings::http_client::OutgoingRequest,
    ) -> wasmtime::Result<Result<bindings::http_client::IncomingResponse, ServiceError>> {
        // The call waits at most until the phase's wall-clock bound. If
        // that is what stopped it, the step has run out of time: it ends
        // as a timeout (a trap), never as an error the guest could ignore
        // and carry on past its bound with. The wait is not running time.
        let wall = self.deadline.wall();
        let left = self.deadline.wall_left(Instant::now());
        let cut_by_deadline = u64::from(req.timeout_ms) >= left.as_millis() as u64;
        // Other calls of the step may run meanwhile (see `gate`).
        let r = crate::policy::gate::lend(self.send_within(req, left)).await;
        self.deadline.host_waited();
        if cut_by_deadline && Instant::now() >= wall {
            if let Err(e) = &r {
                tracing::debug!(step = %self.step, "outbound call cut by the wall-clock bound: {e:?}");
            }
            return Err(Trap::Interrupt.into());
        }
        Ok(r)
    }
}

impl StepState {
    async fn send_within(
        &mut self,
        req: bindings::http_client::OutgoingRequest,
        left: Duration,
    ) -> Result<bindings::http_client::IncomingResponse, ServiceError> {
        use http_body_util::BodyExt;
        self.grant("http")?;
        let uri: http::Uri = req.url.parse().map_err(|_| {
            ServiceError::Invalid(format!("`{}` is not a URL", escape_log(&req.url)))
        })?;
        // The port the call goes to, written or implied: a grant
        // `http:HOST:443` covers `https://HOST/`.
        let port = match uri.scheme_str() {
            Some("http") => uri.port_u16().unwrap_or(80),
            Some("https") => uri.port_u16().unwrap_or(443),
            _ => {
                return Err(ServiceError::Invalid(
                    "only http:// and https:// URLs are supported for outbound calls".into(),
                ))
            }
        };
        let host = uri.host().unwrap_or_default().to_string();
        if !self.grants.allows_host(&host, Some(port)) {
            return Err(ServiceError::NotGranted(format!(
                "step `{}` was not granted `http:{host}`",
                self.step
            )));
        }
        if let Some(canned) = &self.services.canned {
            return canned.answer(&req.url);
        }
        let method = http::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| ServiceError::Invalid("bad method".into()))?;
        let mut builder = http::Request::builder().method(method).uri(uri);
        for h in &req.headers {
            if is_framing_header(&h.name) {
                continue;
            }
            builder = builder.header(h.name.as_str(), h.value.as_slice());
        }
        let body = http_body_util::Full::new(Bytes::from(req.body.unwrap_or_default()));
        let request = builder
            .body(body)
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let timeout = Duration::from_millis(u64::from(req.timeout_ms)).min(left);
        let fut = async {
            let resp = self.services.http.request(request).await.map_err(|e| {
                let why = match crate::net::tls_client::tls_failure(&e) {
                    Some(tls) => format!("TLS with {host}: {tls}"),
                    None => crate::net::error_chain(&e),
                };
                tracing::debug!(step = %self.step, "outbound call failed: {why}");
                ServiceError::Unavailable(why)
            })?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_OUTBOUND_BODY)
                .collect()
                .await
                .map_err(|e| ServiceError::Unavailable(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(bindings::http_client::IncomingResponse {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| Header {
                        name: n.as_str().to_string(),
                        value: v.as_bytes().to_vec(),
                    })
                    .collect(),
                body: body.to_vec(),
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ServiceError::Unavailable(format!(
                "no answer within {timeout:?}"
            ))),
        }
    }
}
