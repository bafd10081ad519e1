//! OAuth in the registry: clients (issued under a subscription, like API
//! keys; the secret held as a SHA-256 digest, rotated with an overlap,
//! revoked), the access tokens issued to them (`oauth-token/JTI`, with an
//! expiry index `idx/oauth-exp/EXPIRY/JTI` that lets each issue sweep a few
//! expired records), and the keys that sign them (`oauth-key/KID`).
//!
//! The protocol (forms, JWTs, the endpoints' answers) is in
//! `control::oauth`; this file only keeps and checks what is stored.

use super::{detail_of, idx, key, new_id, new_secret, sha256_hex, Actor, Registry, Tx};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{
    check_text, App, IssuedToken, KeyRotate, OAuthClient, OAuthClientCreate, OAuthClientUpdate,
    Plan, SigningKey, SubState, Subscription, Ts, MAX_OVERLAP_SECONDS,
};
use crate::policy::host::consumers::ConsumerInfo;

/// The prefix of every access token's `jti`.
pub const TOKEN_ID_PREFIX: &str = "at_";

/// Expired token records removed by one issue, at most.
const SWEEP: usize = 16;

/// Why a client could not get a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRefusal {
    /// No such client, a wrong secret, or a revoked client: all read alike.
    Credentials,
    /// The client is fine but its subscription is not active.
    Inactive(SubState),
}

impl Registry {
    fn live_clients(&self, sub: &str) -> Result<usize, AdminError> {
        Ok(self
            .oauth_clients_of_subscription(sub)?
            .iter()
            .filter(|c| c.revoked_at.is_none())
            .count())
    }

    /// The OAuth clients of a subscription, revoked ones included.
    pub fn oauth_clients_of_subscription(&self, sub: &str) -> Result<Vec<OAuthClient>, AdminError> {
        let mut out = Vec::new();
        for id in self.children("oauth-client-of-sub", sub)? {
            if let Some(c) = self.get::<OAuthClient>("oauth-client", &id)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// A new client of `req.app` under its subscription to `req.plan`, and
    /// its secret (shown once). At most the plan's `max_keys_per_app` live
    /// clients per subscription.
    pub fn create_oauth_client(
        &self,
        actor: Actor,
        req: OAuthClientCreate,
    ) -> Result<(OAuthClient, String), AdminError> {
        check_text("name", &req.name, 200)?;
        let _w = self.lock();
        let _: App = self.require("app", &req.app)?;
        let plan: Plan = self.require("plan", &req.plan)?;
        let sub = self.subscription_for(&req.app, &req.plan)?;
        let live = self.live_clients(&sub.id)?;
        if live >= plan.max_keys_per_app as usize {
            return Err(AdminError::conflict(format!(
                "app `{}` already has {live} live OAuth client(s) for plan `{}`, which allows {}: revoke one first",
                req.app, req.plan, plan.max_keys_per_app
            )));
        }
        let secret = new_secret("tgs_");
        let c = OAuthClient {
            id: new_id("oc_"),
            subscription: sub.id.clone(),
            app: sub.app.clone(),
            plan: sub.plan.clone(),
            name: req.name,
            created_at: Ts::now(),
            revoked_at: None,
            rotated_at: None,
            previous_until: None,
            sha256: sha256_hex(&secret),
            previous_sha256: String::new(),
        };
        let mut tx = Tx::default();
        tx.put("oauth-client", &c.id, &c);
        tx.put_raw(idx("oauth-client-of-sub", &sub.id, &c.id), b"");
        self.commit(tx, actor, "create", "oauth-client", &c.id, detail_of(&c))?;
        Ok((c, secret))
    }

    pub fn update_oauth_client(
        &self,
        actor: Actor,
        id: &str,
        req: OAuthClientUpdate,
    ) -> Result<OAuthClient, AdminError> {
        let _w = self.lock();
        let mut c: OAuthClient = self.must("oauth-client", "OAuth client", id)?;
        let before = c.clone();
        if let Some(n) = req.name {
            check_text("name", &n, 200)?;
            c.name = n;
        }
        self.save_update(actor, id, &before, c, |_| {})
    }

    /// A new secret for the client; the current one stays valid for
    /// `overlap_seconds`. A rotation during an overlap ends that overlap.
    pub fn rotate_oauth_client(
        &self,
        actor: Actor,
        id: &str,
        req: KeyRotate,
    ) -> Result<(OAuthClient, String), AdminError> {
        if req.overlap_seconds > MAX_OVERLAP_SECONDS {
            return Err(AdminError::invalid(
                "overlap_seconds",
                format!("at most {MAX_OVERLAP_SECONDS} (30 days)"),
            ));
        }
        let _w = self.lock();
        let mut c: OAuthClient = self.must("oauth-client", "OAuth client", id)?;
        if c.revoked_at.is_some() {
            return Err(AdminError::conflict(format!(
                "OAuth client `{id}` is revoked: create a new client instead"
            )));
        }
        let now = Ts::now();
        let secret = new_secret("tgs_");
        c.previous_sha256 = std::mem::replace(&mut c.sha256, sha256_hex(&secret));
        c.previous_until =
            (req.overlap_seconds > 0).then(|| Ts(now.0 + req.overlap_seconds * 1000));
        c.rotated_at = Some(now);
        let detail = serde_json::json!({"overlap_seconds": req.overlap_seconds});
        self.save(
            actor,
            "rotate",
            "oauth-client",
            "oauth-client",
            id,
            &c,
            detail,
        )?;
        Ok((c, secret))
    }

    /// Revoke the client: no new token, and every token it holds is
    /// refused from the next request.
    pub fn revoke_oauth_client(&self, actor: Actor, id: &str) -> Result<OAuthClient, AdminError> {
        let _w = self.lock();
        let mut c: OAuthClient = self.must("oauth-client", "OAuth client", id)?;
        if c.revoked_at.is_some() {
            return Ok(c);
        }
        c.revoked_at = Some(Ts::now());
        let detail = serde_json::json!({});
        self.save(
            actor,
            "revoke",
            "oauth-client",
            "oauth-client",
            id,
            &c,
            detail,
        )?;
        Ok(c)
    }

    pub fn delete_oauth_client(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        let _w = self.lock();
        let c: OAuthClient = self.must("oauth-client", "OAuth client", id)?;
        let mut tx = Tx::default();
        tx.del(key("oauth-client", id));
        tx.del(idx("oauth-client-of-sub", &c.subscription, id));
        self.commit(
            tx,
            actor,
            "delete",
            "oauth-client",
            id,
            serde_json::json!({}),
        )
    }

    /// The clients of a subscription, to delete with it.
    pub(super) fn delete_clients_of(&self, tx: &mut Tx, sub: &str) -> Result<(), AdminError> {
        for c in self.children("oauth-client-of-sub", sub)? {
            tx.del(key("oauth-client", &c));
            tx.del(idx("oauth-client-of-sub", sub, &c));
        }
        Ok(())
    }

    /// The client `id` if `secret` is its secret (or its previous one,
    /// within the rotation's overlap), it is not revoked and its
    /// subscription is active; with its plan.
    pub fn authenticate_oauth_client(
        &self,
        id: &str,
        secret: &str,
        now: Ts,
    ) -> Result<(OAuthClient, Plan), ClientRefusal> {
        if id.is_empty() || id.len() > 64 || secret.is_empty() || secret.len() > 512 {
            return Err(ClientRefusal::Credentials);
        }
        // The digest is computed whether or not the client exists, so an
        // unknown client and a wrong secret take the same path.
        let digest = sha256_hex(secret);
        let c: OAuthClient = self
            .get("oauth-client", id)
            .ok()
            .flatten()
            .ok_or(ClientRefusal::Credentials)?;
        let current = c.sha256 == digest;
        let previous = !c.previous_sha256.is_empty()
            && c.previous_sha256 == digest
            && c.previous_until.is_some_and(|u| u > now);
        if !(current || previous) || c.revoked_at.is_some() {
            return Err(ClientRefusal::Credentials);
        }
        let sub: Subscription = self
            .get("sub", &c.subscription)
            .ok()
            .flatten()
            .ok_or(ClientRefusal::Credentials)?;
        if sub.state != SubState::Active {
            return Err(ClientRefusal::Inactive(sub.state));
        }
        let plan: Plan = self
            .get("plan", &sub.plan)
            .ok()
            .flatten()
            .ok_or(ClientRefusal::Credentials)?;
        Ok((c, plan))
    }

    /// Record an issued token durably (before it is handed out), and sweep
    /// a few expired records in the same batch.
    pub fn record_token(&self, t: &IssuedToken) -> Result<(), AdminError> {
        let mut tx = Tx::default();
        tx.put("oauth-token", &t.jti, t);
        tx.put_raw(idx("oauth-exp", &expiry_key(t.expires_at), &t.jti), b"");
        let now = Ts::now();
        for (k, _) in self
            .store
            .scan(super::TREE, b"idx/oauth-exp/", None, SWEEP)
            .map_err(AdminError::store)?
        {
            let text = String::from_utf8_lossy(&k[b"idx/oauth-exp/".len()..]).into_owned();
            let Some((exp, jti)) = text.split_once('/') else {
                continue;
            };
            if exp >= expiry_key(now).as_str() {
                break;
            }
            tx.del(k.clone());
            tx.del(key("oauth-token", jti));
        }
        self.apply(tx.ops)
    }

    /// The issued token `jti`, if it is recorded (expired ones may be
    /// swept at any time).
    pub fn issued_token(&self, jti: &str) -> Option<IssuedToken> {
        if !jti.starts_with(TOKEN_ID_PREFIX) || jti.len() > 64 {
            return None;
        }
        self.get("oauth-token", jti).ok()?
    }

    /// Mark token `jti` revoked (RFC 7009), audited with `actor`; `false`
    /// when there is no such live token.
    pub fn revoke_token(&self, actor: Actor, jti: &str) -> Result<bool, AdminError> {
        let _w = self.lock();
        let Some(mut t) = self.issued_token(jti) else {
            return Ok(false);
        };
        if t.revoked {
            return Ok(true);
        }
        t.revoked = true;
        let detail = serde_json::json!({"client": t.client});
        self.save(
            actor,
            "revoke",
            "oauth-token",
            "oauth-token",
            jti,
            &t,
            detail,
        )?;
        Ok(true)
    }

    /// Whether the token is live at `now`: recorded, not revoked, not
    /// expired, its client not revoked.
    pub fn token_live(&self, t: &IssuedToken, now: Ts) -> bool {
        !t.revoked
            && t.expires_at > now
            && self
                .get::<OAuthClient>("oauth-client", &t.client)
                .ok()
                .flatten()
                .is_some_and(|c| c.revoked_at.is_none())
    }

    /// The caller behind a live access token, if its subscription is active
    /// and its product covers `api` (the data path's lookup by `jti`).
    pub(super) fn token_caller(&self, api: &str, t: IssuedToken) -> Option<ConsumerInfo> {
        if !self.token_live(&t, Ts::now()) {
            return None;
        }
        let sub: Subscription = self.get("sub", &t.subscription).ok()??;
        self.caller(api, &sub, Some(t.client))
    }

    // -----------------------------------------------------------------------
    // Signing keys

    /// Every stored signing key, oldest first.
    pub fn signing_keys(&self) -> Result<Vec<SigningKey>, AdminError> {
        let mut keys: Vec<SigningKey> = self
            .store
            .scan(super::TREE, b"oauth-key/", None, 1000)
            .map_err(AdminError::store)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        Ok(keys)
    }

    /// Make `new` the signing key: the current ones are retired now (still
    /// published), and retired keys that retired before `drop_before` are
    /// deleted (no live token can carry them).
    pub fn add_signing_key(
        &self,
        actor: Actor,
        new: &SigningKey,
        drop_before: Ts,
    ) -> Result<(), AdminError> {
        let _w = self.lock();
        let now = Ts::now();
        let mut tx = Tx::default();
        let mut dropped = Vec::new();
        for mut k in self.signing_keys()? {
            match k.retired_at {
                Some(at) if at < drop_before => {
                    tx.del(key("oauth-key", &k.kid));
                    dropped.push(k.kid);
                }
                Some(_) => {}
                None => {
                    k.retired_at = Some(now);
                    tx.put("oauth-key", &k.kid, &k);
                }
            }
        }
        tx.put("oauth-key", &new.kid, new);
        let detail = serde_json::json!({"alg": new.alg, "dropped": dropped});
        self.commit(tx, actor, "rotate", "oauth-key", &new.kid, detail)
    }
}

/// An expiry as a sortable index segment.
fn expiry_key(t: Ts) -> String {
    format!("{:016x}", t.0)
}
