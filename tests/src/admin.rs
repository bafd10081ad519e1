//! A small client for the admin API in tests: every call returns the status
//! and the JSON body (`null` when there is none).

use serde_json::Value;

#[derive(Clone)]
pub struct AdminClient {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: String, token: String) -> AdminClient {
        AdminClient {
            base,
            token,
            http: crate::client(),
        }
    }

    /// The same server with another token.
    pub fn with_token(&self, token: &str) -> AdminClient {
        AdminClient {
            token: token.to_string(),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/admin/v1{path}", self.base)
    }

    /// Send `method path` with an optional JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the admin API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, json)
    }

    /// Send raw bytes with a content type.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let resp = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the admin API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PATCH", path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None).await
    }

    /// `POST` that must answer `201`; the body.
    #[track_caller]
    pub fn create(&self, path: &str, body: Value) -> impl std::future::Future<Output = Value> + '_ {
        let path = path.to_string();
        async move {
            let (s, v) = self.post(&path, body).await;
            assert_eq!(s, 201, "POST {path}: {v}");
            v
        }
    }

    /// How many entries the audit log has (needs an administrator).
    pub async fn audit_len(&self) -> usize {
        let mut n = 0;
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/audit?limit=500&after={a}"),
                None => "/audit?limit=500".to_string(),
            };
            let (s, v) = self.get(&path).await;
            assert_eq!(s, 200, "{v}");
            n += v["items"].as_array().unwrap().len();
            match v["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return n,
            }
        }
    }
}
