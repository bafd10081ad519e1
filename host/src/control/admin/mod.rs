//! The control plane: admin users and roles, products and plans, consumers,
//! apps, subscriptions and keys in the embedded store ([`registry`], their
//! types in [`model`]), the admin REST API — its listener ([`listener`]),
//! one request over HTTP ([`http`]), and its route table and a handler
//! module per resource family ([`api`]) — and policy-chain assignment
//! written back to the manifests ([`chain`]). The reference is
//! `docs/admin-api.md`; the OpenAPI description is `docs/admin-openapi.json`.

pub mod api;
pub mod api_def;
pub mod chain;
pub mod console;
pub mod error;
pub mod http;
pub mod listener;
pub mod model;
pub mod registry;
pub mod revisions;
mod source;

pub use error::AdminError;
pub use registry::Registry;

use anyhow::Context as _;
use std::path::Path;

/// `tollgate admin init`: create the first administrator in the data
/// directory of the gateway file `config`, and return its token (shown
/// once; only its SHA-256 is stored). The gateway must be stopped: a running
/// gateway holds the store.
pub fn init(config: &Path, user: &str) -> anyhow::Result<String> {
    let registry = open_offline(config, "init")?;
    registry
        .init_admin(user)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `tollgate admin recover`: when every administrator token is lost, issue
/// a new token for administrator `user` (or create administrator `user`
/// when no user has that id), straight in the store of the stopped gateway
/// of `config`. Audited as `recover`. Returns the token and whether the
/// user was created.
pub fn recover(config: &Path, user: &str) -> anyhow::Result<(String, bool)> {
    let registry = open_offline(config, "recover")?;
    registry
        .recover_admin(user)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The registry in the data directory of gateway file `config`, opened by
/// this process (the gateway must be stopped: it holds the store's lock).
pub fn open_offline(config: &Path, command: &str) -> anyhow::Result<Registry> {
    let path = config
        .canonicalize()
        .with_context(|| format!("cannot open {}", config.display()))?;
    let gw = crate::loader::read_gateway_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let data_dir = crate::loader::resolve(base, &gw.data_dir);
    let store = crate::store::Store::open(&data_dir).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n(stop the gateway, run `tollgate admin {command}`, then start it again)"
        )
    })?;
    Ok(Registry::new(store))
}
