//! The upstream side: pooled keep-alive connections, round-robin over
//! targets, timeouts, and the header rules of a well-behaved proxy
//! (hop-by-hop fields removed per RFC 9110 §7.6.1, `X-Forwarded-*` set by
//! the gateway and never trusted from clients).

use crate::error::GatewayError;
use crate::manifest::UpstreamSpec;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The error type of bodies passing through the gateway.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A body passing through the gateway.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// One upstream target.
#[derive(Debug, Clone)]
pub struct Target {
    pub authority: http::uri::Authority,
    /// Prepended to the request path (no trailing slash; empty for none).
    pub base_path: String,
}

/// An API's upstream: its targets and its connection pool.
pub struct Upstream {
    pub targets: Vec<Target>,
    next: AtomicUsize,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub preserve_host: bool,
    client: Client<HttpConnector, ProxyBody>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("targets", &self.targets)
            .finish()
    }
}

impl Upstream {
    pub fn new(spec: &UpstreamSpec) -> Result<Self, String> {
        if spec.targets.is_empty() {
            return Err("`targets` must name at least one `http://host:port`".into());
        }
        let mut targets = Vec::new();
        for t in &spec.targets {
            let uri: Uri = t
                .parse()
                .map_err(|_| format!("target `{t}` is not a URL like http://host:port"))?;
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") => {
                    return Err(format!(
                        "target `{t}`: https upstreams are not supported yet; use http"
                    ))
                }
                _ => return Err(format!("target `{t}` must start with http://")),
            }
            let authority = uri
                .authority()
                .cloned()
                .ok_or_else(|| format!("target `{t}` has no host"))?;
            if uri.query().is_some() {
                return Err(format!("target `{t}` cannot have a query"));
            }
            let base_path = uri.path().trim_end_matches('/').to_string();
            targets.push(Target {
                authority,
                base_path,
            });
        }
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(spec.connect_timeout.0));
        conn.set_nodelay(true);
        conn.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(conn);
        Ok(Upstream {
            targets,
            next: AtomicUsize::new(0),
            connect_timeout: spec.connect_timeout.0,
            response_timeout: spec.response_timeout.0,
            preserve_host: spec.preserve_host,
            client,
        })
    }

    /// The next target, round-robin.
    pub fn pick(&self) -> &Target {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.targets[i % self.targets.len()]
    }

    /// Send a request (whose URI is already the upstream's) and wait for
    /// the response head within the response timeout.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, GatewayError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(GatewayError::UpstreamTimeout(self.response_timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                let text = error_chain(&e);
                if e.is_connect() {
                    if text.contains("timed out") || text.contains("timeout") {
                        Err(GatewayError::UpstreamTimeout(self.connect_timeout))
                    } else {
                        Err(GatewayError::UpstreamConnect(text))
                    }
                } else {
                    Err(GatewayError::UpstreamProtocol(text))
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The hop-by-hop fields a proxy never forwards.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

/// Remove hop-by-hop fields, including those a `Connection` field names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// Fields that claim who the client is or which URL it asked for. A client
/// can send any of them, so the gateway never passes them on as sent: it
/// removes them on arrival, before the request chain, and sets the
/// `X-Forwarded-*` fields itself when it calls the upstream.
const CLIENT_IDENTITY: [&str; 15] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    // Path overrides some frameworks (IIS, Symfony, Zend) honour instead
    // of the request line: a route bypass if passed through.
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
];

/// Remove what a client may not claim: the fields in [`CLIENT_IDENTITY`]
/// and every `x-consumer-*` field (only an authentication step sets those,
/// after this runs).
pub fn strip_client_identity(h: &mut HeaderMap) {
    for n in CLIENT_IDENTITY {
        h.remove(n);
    }
    let consumer: Vec<HeaderName> = h
        .keys()
        .filter(|n| n.as_str().starts_with("x-consumer-"))
        .cloned()
        .collect();
    for n in consumer {
        h.remove(n);
    }
}

/// Set the forwarding fields from what the gateway itself saw, replacing
/// any set before (client-sent ones are already gone, see
/// [`strip_client_identity`]; other fields a policy step set are kept).
pub fn set_forwarded(h: &mut HeaderMap, client_ip: &str, scheme: &str, host: Option<&str>) {
    h.remove("forwarded");
    h.remove("x-forwarded-for");
    h.remove("x-forwarded-proto");
    h.remove("x-forwarded-host");
    h.remove("x-forwarded-port");
    h.remove("x-real-ip");
    if let Ok(v) = HeaderValue::from_str(client_ip) {
        h.insert("x-forwarded-for", v);
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
    );
    if let Some(v) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        h.insert("x-forwarded-host", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn forwarded_not_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        set_forwarded(&mut h, "127.0.0.1", "https", Some("api.example.com"));
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn targets() {
        let spec = |t: &str| UpstreamSpec {
            targets: vec![t.to_string()],
            connect_timeout: crate::manifest::Dur(Duration::from_secs(1)),
            response_timeout: crate::manifest::Dur(Duration::from_secs(1)),
            preserve_host: false,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(
                Upstream::new(&spec("http://a:1/base/")).unwrap().targets[0].base_path,
                "/base"
            );
            assert!(Upstream::new(&spec("https://a:1"))
                .unwrap_err()
                .contains("https"));
            assert!(Upstream::new(&spec("ftp://a")).is_err());
            assert!(Upstream::new(&spec("http://a:1/?q")).is_err());
        });
    }
}
