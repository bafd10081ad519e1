//! The HTTP side: base URL, token, one request per [`Call`] (several with
//! `--all`), and the mapping of failures to [`Error`]s.

use crate::cmd::Call;
use crate::error::{chain, Error};
use crate::render::next_of;
use reqwest::{header, Url};
use serde_json::{json, Value};
use std::time::Duration;

/// A client of one admin API.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// The base URL from `--url`: a bare `host:port` (as `[admin] address`
/// writes it) gets `http://`; a trailing `/` or `/admin/v1` is dropped.
pub fn base_url(s: &str) -> Result<Url, Error> {
    let s = s.trim();
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let mut url = Url::parse(&with_scheme)
        .map_err(|e| Error::Usage(format!("--url `{s}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Usage(format!(
            "--url `{s}`: expected an http:// or https:// URL"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Usage(format!(
            "--url `{s}`: give the base URL only, without `?` or `#`"
        )));
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/admin/v1").unwrap_or(path).to_string();
    url.set_path(&path);
    Ok(url)
}

impl Client {
    /// A client for `base` (see [`base_url`]), trusting the PEM certificates
    /// of `ca` in addition to the usual roots.
    pub fn new(base: &str, token: Option<String>, ca: Option<&[u8]>) -> Result<Client, Error> {
        let base = base_url(base)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Setting a chain builds and validates a whole configuration.
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("tollgate-admin-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Usage(format!("--cacert: {}", chain(&e))))?;
            if certs.is_empty() {
                return Err(Error::Usage(
                    "--cacert: no PEM certificate in the file".into(),
                ));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Usage(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(Client {
            http,
            base,
            token: token.filter(|t| !t.trim().is_empty()),
        })
    }

    /// The URL of a call (without the `after` of later pages).
    pub fn url(&self, call: &Call, after: Option<&str>) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .extend(["admin", "v1"])
            .extend(&call.path);
        let mut query: Vec<(&str, &str)> = call
            .query
            .iter()
            .filter(|(k, _)| after.is_none() || *k != "after")
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        if let Some(a) = after {
            query.push(("after", a));
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Make the call; with `all`, every page, answered as one
    /// `{"items": [...], "next": null}`. A `204` answers `null`.
    pub async fn send(&self, call: &Call) -> Result<Value, Error> {
        if !call.all {
            return self.once(call, None).await;
        }
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.once(call, after.as_deref()).await?;
            if let Some(a) = page.get("items").and_then(Value::as_array) {
                items.extend(a.iter().cloned());
            }
            match next_of(&page) {
                // A `next` that does not move on would loop forever.
                Some(n) if after.as_deref() != Some(n.as_str()) => after = Some(n),
                _ => break,
            }
        }
        Ok(json!({ "items": items, "next": null }))
    }

    async fn once(&self, call: &Call, after: Option<&str>) -> Result<Value, Error> {
        let url = self.url(call, after);
        let mut req = self.http.request(call.method.clone(), url.clone()).header(
            header::ACCEPT,
            if call.text {
                "text/csv"
            } else {
                "application/json"
            },
        );
        if call.auth {
            let token = self.token.as_deref().ok_or(Error::NoToken)?;
            req = req.bearer_auth(token);
        }
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        if let Some(etag) = &call.if_match {
            req = req.header(header::IF_MATCH, etag);
        }
        let transport = |e: reqwest::Error| {
            if e.is_connect() || (e.is_timeout() && !e.is_body()) {
                Error::Connect {
                    url: url.to_string(),
                    cause: innermost(&e),
                }
            } else {
                Error::Transport {
                    url: url.to_string(),
                    cause: cause(&e),
                }
            }
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(Error::Api {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        if call.text {
            return Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::NotJson {
            url: url.to_string(),
            status: status.as_u16(),
            detail: e.to_string(),
        })
    }
}

/// Why a connection failed: the innermost cause ("Connection refused (os
/// error 111)"), without reqwest's and hyper's wrappers.
fn innermost(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(inner) = last.source() {
        last = inner;
    }
    last.to_string()
}

/// Why a request failed after connecting: the whole chain, without
/// reqwest's "error sending request for url (...)" (the caller names the URL).
fn cause(e: &reqwest::Error) -> String {
    let full = chain(e);
    match full.split_once(": ") {
        Some((head, rest)) if head.starts_with("error sending request") => rest.to_string(),
        _ => full,
    }
}
