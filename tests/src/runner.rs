//! Run one policy's phases against its compiled `.wasm` in the real runtime,
//! without a gateway or network: the other half of the policy test harness
//! (the SDK's native harness runs the same phases as plain Rust).
//!
//! ```no_run
//! # async fn demo() {
//! use tollgate_tests::runner::PolicyRunner;
//! let p = PolicyRunner::new("transform", r#"{"request":{"headers":{"set":{"x-a":"1"}}}}"#, &[]).unwrap();
//! let d = p.on_request(&PolicyRunner::request("GET", "/x", &[])).await.unwrap();
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;
use tollgate::policy::host::{Capability, Grants, ServiceSettings, Services};
use tollgate::policy::{
    CallContext, EngineLimits, Header, PolicyError, RequestDecision, RequestHead, RequestScope,
    ResponseDecision, ResponseHead, Runtime, Step, StepConfigError,
};

/// A configured step of one plugin, in a runtime of its own.
pub struct PolicyRunner {
    runtime: Runtime,
    step: Step,
    pub scope: RequestScope,
    _dir: tempfile::TempDir,
}

impl PolicyRunner {
    /// Load `plugin` (a name in the built plugin folder) with a JSON config
    /// and grants, checking the config as the gateway does at load.
    pub fn new(plugin: &str, config_json: &str, grants: &[&str]) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let store = tollgate::store::Store::open(dir.path()).map_err(|e| e.to_string())?;
        let services = Services::new(ServiceSettings {
            store: Some(store),
            cache_bytes: 16 << 20,
            sink_path: Some(dir.path().join("sink.log")),
            outbound_ca: None,
        })
        .map_err(|e| e.to_string())?;
        let runtime = Runtime::new(
            EngineLimits { max_instances: 64 },
            Some(dir.path().join("cache")),
            Arc::new(services),
        )
        .map_err(|e| format!("{e:#}"))?;
        let path = crate::plugin_dir().join(format!("{}.wasm", plugin.replace('-', "_")));
        let loaded = runtime
            .load_plugin(plugin, &path)
            .map_err(|e| format!("{e:#}"))?;
        let mut g = Grants::default();
        for name in grants {
            g.list.push(Capability::parse(name)?);
        }
        let step = runtime
            .configure_step(
                "test",
                plugin,
                loaded,
                config_json.to_string(),
                Duration::from_millis(500),
                16 << 20,
                false,
                g,
            )
            .map_err(|e: StepConfigError| e.to_string())?;
        Ok(PolicyRunner {
            runtime,
            step,
            scope: RequestScope {
                request_id: "runner".into(),
                ..RequestScope::default()
            },
            _dir: dir,
        })
    }

    /// A request head with lower-case header names.
    pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.into(),
            scheme: "http".into(),
            authority: "localhost".into(),
            path: path.into(),
            query: None,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_ascii_lowercase(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    /// The context the step sees.
    pub fn context(&self) -> CallContext {
        CallContext {
            request_id: "runner".into(),
            client_addr: "127.0.0.1:40000".into(),
            api: "test".into(),
            route: "/".into(),
            captures: Vec::new(),
            consumer: None,
            step: self.step.name.to_string(),
        }
    }

    /// Run `on-request` on a fresh instance.
    pub async fn on_request(&self, req: &RequestHead) -> Result<RequestDecision, PolicyError> {
        let mut inst = self.runtime.instantiate(&self.step, &self.scope).await?;
        let (mut ctx, mut req) = (self.context(), req.clone());
        inst.on_request(&self.step, &mut ctx, &mut req, None).await
    }

    /// Run `on-request` then `on-response` on one fresh instance.
    pub async fn round_trip(
        &self,
        req: &RequestHead,
        resp: &ResponseHead,
    ) -> Result<(RequestDecision, ResponseDecision), PolicyError> {
        let mut inst = self.runtime.instantiate(&self.step, &self.scope).await?;
        let (mut ctx, mut req, mut resp) = (self.context(), req.clone(), resp.clone());
        let d1 = inst
            .on_request(&self.step, &mut ctx, &mut req, None)
            .await?;
        let d2 = inst
            .on_response(&self.step, &mut ctx, &mut req, &mut resp, None)
            .await?;
        Ok((d1, d2))
    }
}
