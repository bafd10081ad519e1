//! Try-it: a call to an API through the gateway, made by the portal for a
//! signed-in consumer with the credential they paste, and its answer shown
//! on their app's page. The portal calls only its own gateway's public
//! listener (the path is a path, never a URL), with a deadline and a cap on
//! the answer it reads, so the form cannot reach anything else or hold the
//! portal.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};
use std::time::Duration;

/// The most of an answer's body shown.
pub const MAX_ANSWER: usize = 64 * 1024;
/// How long the gateway may take.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// The largest body sent.
pub const MAX_BODY: usize = 16 * 1024;

/// A checked try-it call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub header: String,
    credential: String,
    body: String,
}

impl Call {
    /// The form's fields, checked: a method of a few, an absolute path
    /// (with a query) without a scheme or authority, a header name and a
    /// value without line breaks.
    pub fn check(
        method: &str,
        path: &str,
        header: &str,
        credential: &str,
        body: &str,
    ) -> Result<Call, String> {
        let method = method.trim().to_ascii_uppercase();
        if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            return Err("The method must be GET, HEAD, POST, PUT, PATCH or DELETE.".into());
        }
        let path = path.trim();
        let bad_path = !path.starts_with('/')
            || path.starts_with("//")
            || path.len() > 2048
            || path
                .bytes()
                .any(|b| b <= b' ' || b == 0x7f || b == b'#' || b == b'\\');
        if bad_path {
            return Err(
                "The path must start with / (for example /pets/1?full=true), without spaces, a fragment or a host."
                    .into(),
            );
        }
        let header = header.trim().to_ascii_lowercase();
        let header = if header.is_empty() {
            "x-api-key".to_string()
        } else {
            header
        };
        if HeaderName::from_bytes(header.as_bytes()).is_err() || header.len() > 64 {
            return Err("The credential's header is not a header name.".into());
        }
        if [
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "upgrade",
        ]
        .contains(&header.as_str())
        {
            return Err("The credential cannot go in that header.".into());
        }
        let credential = credential.trim();
        if credential.len() > 8192 || HeaderValue::from_str(credential).is_err() {
            return Err("The credential must be one line of text.".into());
        }
        if body.len() > MAX_BODY {
            return Err(format!("The body may be at most {MAX_BODY} bytes."));
        }
        Ok(Call {
            method,
            path: path.to_string(),
            header,
            credential: credential.to_string(),
            body: body.to_string(),
        })
    }

    /// Send it to the gateway at `base` (`http://host:port`): the answer as
    /// the page shows it (`status`, `headers`, `body`, `truncated`), or
    /// `error`.
    pub async fn send(&self, base: &str) -> Value {
        match tokio::time::timeout(DEADLINE, self.exchange(base)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => json!({ "error": e }),
            Err(_) => {
                json!({ "error": format!("The gateway did not answer within {DEADLINE:?}.") })
            }
        }
    }

    async fn exchange(&self, base: &str) -> Result<Value, String> {
        let authority = base
            .strip_prefix("http://")
            .ok_or("try-it calls plain-HTTP listeners only")?;
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("Could not reach the gateway: {e}"))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("Could not talk to the gateway: {e}"))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(Method::from_bytes(self.method.as_bytes()).map_err(|e| e.to_string())?)
            .uri(&self.path)
            .header(http::header::HOST, authority)
            .header(http::header::USER_AGENT, "tollgate-portal-try-it");
        if !self.credential.is_empty() {
            req = req.header(self.header.as_str(), self.credential.as_str());
        }
        if !self.body.is_empty() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(self.body.clone())))
            .map_err(|e| format!("The request is not valid: {e}"))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("The gateway's answer could not be read: {e}"))?;
        let status = resp.status().as_u16();
        let headers: Vec<String> = resp
            .headers()
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let (body, truncated) = read_capped(resp.into_body()).await;
        Ok(json!({
            "status": status,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "truncated": truncated,
        }))
    }
}

/// At most [`MAX_ANSWER`] bytes of a body, and whether there was more.
async fn read_capped(body: hyper::body::Incoming) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut body = Limited::new(body, usize::MAX);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            let room = MAX_ANSWER - out.len();
            if data.len() > room {
                out.extend_from_slice(&data[..room]);
                return (out, true);
            }
            out.extend_from_slice(data);
        }
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_the_gateway_and_clean_headers() {
        let ok = Call::check("get", "/pets/1?x=1", "", "tg_key", "").unwrap();
        assert_eq!(
            (ok.method.as_str(), ok.header.as_str()),
            ("GET", "x-api-key")
        );
        for path in [
            "http://evil.example/",
            "//evil.example/x",
            "pets",
            "/a b",
            "/a\r\nHost: x",
            "/x#frag",
            "/\\\\evil",
            "",
        ] {
            assert!(Call::check("GET", path, "", "", "").is_err(), "{path:?}");
        }
        assert!(Call::check("TRACE", "/", "", "", "").is_err());
        assert!(Call::check("CONNECT", "/", "", "", "").is_err());
        for header in ["bad header", "host", "Content-Length", "x:y"] {
            assert!(
                Call::check("GET", "/", header, "k", "").is_err(),
                "{header}"
            );
        }
        assert!(Call::check("GET", "/", "authorization", "Bearer a\r\nx: y", "").is_err());
        assert!(Call::check("POST", "/", "", "", &"x".repeat(MAX_BODY + 1)).is_err());
        let bearer = Call::check("GET", "/", "Authorization", "Bearer eyJ", "").unwrap();
        assert_eq!(bearer.header, "authorization");
    }
}
