//! OAuth clients (`/admin/v1/oauth-clients`, filtered by `app` and
//! `subscription`): issued under a subscription like API keys, the secret
//! shown once, rotated with an overlap, revoked. And the keys that sign the
//! gateway's access tokens (`/admin/v1/oauth-keys`): listed (public parts
//! only) and rotated. Without `[oauth]` these answer 409: there is no
//! authorization server to issue tokens.

use super::crud::{view, Crud, Keep};
use super::request::{generated_filter, id_filter, Call, Empty, Query};
use super::{created, ok, Reply};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{KeyRotate, OAuthClient, OAuthClientCreate, OAuthClientUpdate};
use crate::control::oauth::OAuthServer;
use serde_json::{json, Value};
use std::sync::Arc;

fn server(c: &Call) -> Result<&Arc<OAuthServer>, AdminError> {
    c.gateway.oauth.as_ref().ok_or_else(|| {
        AdminError::conflict(
            "the gateway has no OAuth authorization server: add an `[oauth]` section to the gateway file",
        )
    })
}

impl Crud for OAuthClient {
    type Create = OAuthClientCreate;
    type Update = OAuthClientUpdate;
    const FILTERS: &'static [&'static str] = &["app", "subscription"];

    fn keep(q: &Query) -> Result<Keep<OAuthClient>, AdminError> {
        let app = id_filter(q, "app")?;
        let sub = generated_filter(q, "subscription", "sub_")?;
        Ok(Box::new(move |x| {
            app.as_ref().is_none_or(|a| &x.app == a)
                && sub.as_ref().is_none_or(|s| &x.subscription == s)
        }))
    }

    /// The new client and its secret.
    fn create(c: &Call, body: OAuthClientCreate) -> Result<Value, AdminError> {
        server(c)?;
        let (client, secret) = c.registry.create_oauth_client(c.actor(), body)?;
        Ok(json!({"client": view(&client), "client_id": client.id, "client_secret": secret}))
    }

    fn update(c: &Call, id: &str, body: OAuthClientUpdate) -> Result<OAuthClient, AdminError> {
        c.registry.update_oauth_client(c.actor(), id, body)
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_oauth_client(c.actor(), id)
    }
}

/// `POST /admin/v1/oauth-clients/{id}/rotate`: 201 with the new secret;
/// the old one stays valid through the overlap.
pub fn rotate(c: &Call) -> Reply {
    c.no_query()?;
    let body: KeyRotate = c.optional_body()?;
    let (client, secret) = c.registry.rotate_oauth_client(c.actor(), c.id(), body)?;
    created(json!({"client": view(&client), "client_id": client.id, "client_secret": secret}))
}

/// `POST /admin/v1/oauth-clients/{id}/revoke`: the client, and every token
/// it holds, refused from the next request.
pub fn revoke(c: &Call) -> Reply {
    c.no_query()?;
    let _: Empty = c.optional_body()?;
    ok(view(&c.registry.revoke_oauth_client(c.actor(), c.id())?))
}

/// `GET /admin/v1/oauth-keys`: the signing keys, newest first (public
/// parts and dates).
pub fn keys(c: &Call) -> Reply {
    c.no_query()?;
    ok(server(c)?.keys()?)
}

/// `POST /admin/v1/oauth-keys/rotate`: a new signing key signs from now
/// on; the previous ones stay published until their tokens have expired.
pub fn rotate_key(c: &Call) -> Reply {
    c.no_query()?;
    let _: Empty = c.optional_body()?;
    created(server(c)?.rotate_key(c.actor())?)
}
