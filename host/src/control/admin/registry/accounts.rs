//! Portal accounts in the registry: a consumer's sign-in, created with its
//! consumer in one batch at sign-up, found by its email regardless of case
//! (`acct-email/LOWERCASE`), its password an Argon2id hash. Beside them the
//! portal's sessions (`session/SHA256`) and password-reset links
//! (`reset/SHA256`), each stored only as the SHA-256 of its random secret,
//! with an expiry, and indexed under their account so that a disabled
//! account or a new password ends them all.
//!
//! Sessions are not audited (a sign-in is not a change of the registry);
//! sign-ups, approvals, disabling and password resets are.

use super::{detail_of, idx, key, new_id, random_bytes, sha256_hex, Actor, Registry, Tx};
use crate::control::admin::error::{truncate, AdminError};
use crate::control::admin::model::{
    check_email, check_text, Account, AccountState, App, Consumer, Key, Subscription, Ts,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The shortest password the portal accepts, in characters.
pub const MIN_PASSWORD: usize = 10;
/// The longest (Argon2 takes any length; the form's limit bounds the work).
pub const MAX_PASSWORD: usize = 256;

/// A sign-in session: its secret is the cookie's value, stored only as its
/// SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub account: String,
    /// The synchronizer token every form of this session carries.
    pub csrf: String,
    pub created_at: Ts,
    pub expires_at: Ts,
}

/// A one-time password-reset link's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reset {
    account: String,
    expires_at: Ts,
}

/// What a sign-up gives.
#[derive(Debug)]
pub struct SignUp {
    pub email: String,
    pub name: String,
    /// [`hash_password`]'s result.
    pub password_hash: String,
    /// `Active` on an open portal, `Pending` on a moderated one.
    pub state: AccountState,
}

/// 32 random bytes, base64url: a session id, a CSRF token, a reset token.
pub fn new_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Check a new password's length (and that it is text).
pub fn check_password(pw: &str) -> Result<(), AdminError> {
    let n = pw.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(AdminError::invalid(
            "password",
            format!("a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    Ok(())
}

/// The Argon2id hash (default parameters: 19 MiB, 2 passes) of `pw`, as a
/// PHC string. Slow on purpose: call it off the async workers.
pub fn hash_password(pw: &str) -> Result<String, AdminError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| AdminError::unavailable(format!("salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AdminError::unavailable(format!("hashing a password: {e}")))
}

/// Whether `pw` matches `hash` ([`hash_password`]'s). Slow on purpose.
pub fn verify_password(hash: &str, pw: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(pw.as_bytes(), &parsed)
        .is_ok()
}

/// A hash of no password, to verify against when an email has no account
/// (so that an unknown email costs the same time as a wrong password).
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&new_token()).unwrap_or_default())
}

fn email_key(email: &str) -> Vec<u8> {
    key("acct-email", &email.to_lowercase())
}

impl Registry {
    /// Create a consumer and its account in one batch. The email must be
    /// free (regardless of case): 409 when it is not.
    pub fn sign_up(&self, actor: Actor, req: SignUp) -> Result<Account, AdminError> {
        check_email(&req.email)?;
        let name = req.name.trim().to_string();
        if name.is_empty() {
            return Err(AdminError::invalid("name", "a name is required"));
        }
        check_text("name", &name, 200)?;
        if req.state == AccountState::Disabled || req.password_hash.is_empty() {
            return Err(AdminError::invalid(
                "state",
                "a new account is pending or active, with a password",
            ));
        }
        let _w = self.lock();
        if self
            .store
            .get(super::TREE, &email_key(&req.email))
            .map_err(AdminError::store)?
            .is_some()
        {
            return Err(AdminError::conflict(format!(
                "an account with email `{}` exists already",
                truncate(&req.email, 80)
            )));
        }
        let now = Ts::now();
        let consumer = Consumer {
            id: new_id("c-"),
            name: name.clone(),
            email: req.email.clone(),
            created_at: now,
            updated_at: now,
        };
        let a = Account {
            id: new_id("acct_"),
            consumer: consumer.id.clone(),
            email: req.email,
            name,
            state: req.state,
            created_at: now,
            updated_at: now,
            password_hash: req.password_hash,
        };
        let mut tx = Tx::default();
        tx.put("consumer", &consumer.id, &consumer);
        tx.put("account", &a.id, &a);
        tx.put_raw(email_key(&a.email), a.id.as_bytes());
        tx.put_raw(idx("account-of-consumer", &a.consumer, &a.id), b"");
        self.commit(tx, actor, "sign-up", "account", &a.id, detail_of(&a))?;
        Ok(a)
    }

    /// The account with this email (any case), if there is one.
    pub fn account_by_email(&self, email: &str) -> Result<Option<Account>, AdminError> {
        if email.is_empty() || email.len() > 254 {
            return Ok(None);
        }
        let Some(id) = self
            .store
            .get(super::TREE, &email_key(email))
            .map_err(AdminError::store)?
        else {
            return Ok(None);
        };
        self.get("account", &String::from_utf8_lossy(&id))
    }

    pub fn account(&self, id: &str) -> Result<Account, AdminError> {
        self.must("account", "account", id)
    }

    /// Approve a pending account (an active one: unchanged).
    pub fn approve_account(&self, actor: Actor, id: &str) -> Result<Account, AdminError> {
        let _w = self.lock();
        let mut a: Account = self.must("account", "account", id)?;
        match a.state {
            AccountState::Active => return Ok(a),
            AccountState::Disabled => {
                return Err(AdminError::conflict(format!(
                    "account `{id}` is disabled: enable it instead"
                )))
            }
            AccountState::Pending => {}
        }
        a.state = AccountState::Active;
        a.updated_at = Ts::now();
        self.save(
            actor,
            "approve",
            "account",
            "account",
            id,
            &a,
            detail_of(&a),
        )?;
        Ok(a)
    }

    /// Disable an account (or enable a disabled one: `active`), ending its
    /// sessions and reset links.
    pub fn set_account_enabled(
        &self,
        actor: Actor,
        id: &str,
        enabled: bool,
    ) -> Result<Account, AdminError> {
        let _w = self.lock();
        let mut a: Account = self.must("account", "account", id)?;
        let to = if enabled {
            if a.state == AccountState::Pending {
                return Err(AdminError::conflict(format!(
                    "account `{id}` is pending: approve it instead"
                )));
            }
            AccountState::Active
        } else {
            AccountState::Disabled
        };
        if a.state == to {
            return Ok(a);
        }
        a.state = to;
        a.updated_at = Ts::now();
        let mut tx = Tx::default();
        tx.put("account", id, &a);
        if !enabled {
            self.end_all(&mut tx, id)?;
        }
        let action = if enabled { "enable" } else { "disable" };
        self.commit(tx, actor, action, "account", id, detail_of(&a))?;
        Ok(a)
    }

    /// In `tx`: delete the account of `consumer` (the consumer is being
    /// deleted), its email's index entry, sessions and reset links.
    pub(super) fn delete_account_of(&self, tx: &mut Tx, consumer: &str) -> Result<(), AdminError> {
        for id in self.children("account-of-consumer", consumer)? {
            if let Some(a) = self.get::<Account>("account", &id)? {
                tx.del(email_key(&a.email));
            }
            self.end_all(tx, &id)?;
            tx.del(key("account", &id));
            tx.del(idx("account-of-consumer", consumer, &id));
        }
        Ok(())
    }

    /// Delete every session and reset link of `account` in `tx`.
    fn end_all(&self, tx: &mut Tx, account: &str) -> Result<(), AdminError> {
        for (index, kind) in [
            ("session-of-account", "session"),
            ("reset-of-account", "reset"),
        ] {
            for h in self.children(index, account)? {
                tx.del(key(kind, &h));
                tx.del(idx(index, account, &h));
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // The portal's reads: a consumer's apps, an app's subscriptions, a
    // subscription's keys (by the indexes the other families keep).

    pub fn apps_of_consumer(&self, consumer: &str) -> Result<Vec<App>, AdminError> {
        let mut out = Vec::new();
        for id in self.children("app-of-consumer", consumer)? {
            if let Some(a) = self.get::<App>("app", &id)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    pub fn subscriptions_of(&self, app: &str) -> Result<Vec<Subscription>, AdminError> {
        self.subscriptions_of_app(app)
    }

    pub fn keys_of_subscription(&self, sub: &str) -> Result<Vec<Key>, AdminError> {
        let mut out = Vec::new();
        for id in self.children("key-of-sub", sub)? {
            if let Some(k) = self.get::<Key>("key", &id)? {
                out.push(k);
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------
    // Sessions

    /// A new session for `account` lasting `lifetime_ms`: its secret (the
    /// cookie's value) and the session. Expired sessions of the account
    /// are swept in the same batch.
    pub fn create_session(
        &self,
        account: &str,
        lifetime_ms: u64,
    ) -> Result<(String, Session), AdminError> {
        let _w = self.lock();
        let now = Ts::now();
        let secret = new_token();
        let s = Session {
            account: account.to_string(),
            csrf: new_token(),
            created_at: now,
            expires_at: Ts(now.0 + lifetime_ms),
        };
        let h = sha256_hex(&secret);
        let mut tx = Tx::default();
        for old in self.children("session-of-account", account)? {
            let live = self
                .get::<Session>("session", &old)?
                .is_some_and(|o| o.expires_at > now);
            if !live {
                tx.del(key("session", &old));
                tx.del(idx("session-of-account", account, &old));
            }
        }
        tx.put("session", &h, &s);
        tx.put_raw(idx("session-of-account", account, &h), b"");
        self.apply(tx.ops)?;
        Ok((secret, s))
    }

    /// The live session of this secret and its active account.
    pub fn session(&self, secret: &str) -> Result<Option<(Session, Account)>, AdminError> {
        if secret.is_empty() || secret.len() > 128 {
            return Ok(None);
        }
        let Some(s) = self.get::<Session>("session", &sha256_hex(secret))? else {
            return Ok(None);
        };
        if s.expires_at <= Ts::now() {
            return Ok(None);
        }
        let Some(a) = self.get::<Account>("account", &s.account)? else {
            return Ok(None);
        };
        Ok((a.state == AccountState::Active).then_some((s, a)))
    }

    /// End the session of this secret (sign-out).
    pub fn end_session(&self, secret: &str) -> Result<(), AdminError> {
        let _w = self.lock();
        let h = sha256_hex(secret);
        let Some(s) = self.get::<Session>("session", &h)? else {
            return Ok(());
        };
        let mut tx = Tx::default();
        tx.del(key("session", &h));
        tx.del(idx("session-of-account", &s.account, &h));
        self.apply(tx.ops)
    }

    // -----------------------------------------------------------------------
    // Password resets

    /// A one-time reset token for `account`, valid `lifetime_ms`; earlier
    /// tokens of the account stop working.
    pub fn create_reset(&self, account: &str, lifetime_ms: u64) -> Result<String, AdminError> {
        let _w = self.lock();
        let token = new_token();
        let h = sha256_hex(&token);
        let mut tx = Tx::default();
        for old in self.children("reset-of-account", account)? {
            tx.del(key("reset", &old));
            tx.del(idx("reset-of-account", account, &old));
        }
        let r = Reset {
            account: account.to_string(),
            expires_at: Ts(Ts::now().0 + lifetime_ms),
        };
        tx.put("reset", &h, &r);
        tx.put_raw(idx("reset-of-account", account, &h), b"");
        self.apply(tx.ops)?;
        Ok(token)
    }

    /// Whether `token` is a live reset token (for showing the form).
    pub fn reset_valid(&self, token: &str) -> Result<bool, AdminError> {
        if token.is_empty() || token.len() > 128 {
            return Ok(false);
        }
        Ok(self
            .get::<Reset>("reset", &sha256_hex(token))?
            .is_some_and(|r| r.expires_at > Ts::now()))
    }

    /// Use a reset token: set the password to `new_hash`, and end the
    /// token, every other one and every session of the account, in one
    /// batch. 404 when the token is unknown, used or expired.
    pub fn use_reset(&self, token: &str, new_hash: String) -> Result<Account, AdminError> {
        let gone = || AdminError::not_found("reset link", "(this link)");
        if token.is_empty() || token.len() > 128 {
            return Err(gone());
        }
        let _w = self.lock();
        let h = sha256_hex(token);
        let r: Reset = self.get("reset", &h)?.ok_or_else(gone)?;
        if r.expires_at <= Ts::now() {
            return Err(gone());
        }
        let mut a: Account = self.must("account", "account", &r.account)?;
        a.password_hash = new_hash;
        a.updated_at = Ts::now();
        let mut tx = Tx::default();
        self.end_all(&mut tx, &a.id)?;
        tx.put("account", &a.id, &a);
        let actor = a.consumer.clone();
        self.commit(
            tx,
            &actor,
            "reset-password",
            "account",
            &a.id,
            serde_json::json!({}),
        )?;
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn reg() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, Registry::new(store))
    }

    fn sign_up(r: &Registry, email: &str, state: AccountState) -> Result<Account, AdminError> {
        r.sign_up(
            "portal",
            SignUp {
                email: email.into(),
                name: "Ann".into(),
                password_hash: hash_password("correct horse battery").unwrap(),
                state,
            },
        )
    }

    #[test]
    fn sign_up_creates_a_consumer_and_an_account_with_a_unique_email() {
        let (_d, r) = reg();
        let a = sign_up(&r, "Ann@Example.com", AccountState::Pending).unwrap();
        let c: Consumer = r.get_resource("consumer", "consumer", &a.consumer).unwrap();
        assert_eq!(
            (c.name.as_str(), c.email.as_str()),
            ("Ann", "Ann@Example.com")
        );
        let e = sign_up(&r, "ann@EXAMPLE.com", AccountState::Active).unwrap_err();
        assert_eq!(e.status, 409);
        assert_eq!(
            r.account_by_email("ANN@example.com").unwrap().unwrap().id,
            a.id
        );
        assert!(verify_password(&a.password_hash, "correct horse battery"));
        assert!(!verify_password(&a.password_hash, "correct horse batterY"));
        assert!(!verify_password(decoy_hash(), ""));
        // A pending account has no session; approved, it has.
        let (secret, _) = r.create_session(&a.id, 60_000).unwrap();
        assert!(r.session(&secret).unwrap().is_none());
        r.approve_account("admin", &a.id).unwrap();
        assert!(r.session(&secret).unwrap().is_some());
        // The audit log never holds the hash.
        let log = serde_json::to_string(&r.audit_page(None, 10).unwrap().items).unwrap();
        assert!(!log.contains("argon2"), "{log}");
        assert!(log.contains("sign-up") && log.contains("approve"));
    }

    #[test]
    fn sessions_expire_end_and_die_with_a_disabled_account() {
        let (_d, r) = reg();
        let a = sign_up(&r, "b@example.com", AccountState::Active).unwrap();
        let (s1, _) = r.create_session(&a.id, 60_000).unwrap();
        let (s2, _) = r.create_session(&a.id, 60_000).unwrap();
        assert_ne!(s1, s2);
        r.end_session(&s1).unwrap();
        assert!(r.session(&s1).unwrap().is_none());
        assert!(r.session(&s2).unwrap().is_some());
        let (s3, _) = r.create_session(&a.id, 1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(r.session(&s3).unwrap().is_none());
        r.set_account_enabled("admin", &a.id, false).unwrap();
        assert!(r.session(&s2).unwrap().is_none());
        r.set_account_enabled("admin", &a.id, true).unwrap();
        assert!(r.session(&s2).unwrap().is_none(), "ended, not suspended");
    }

    #[test]
    fn a_reset_link_works_once_and_ends_the_sessions() {
        let (_d, r) = reg();
        let a = sign_up(&r, "c@example.com", AccountState::Active).unwrap();
        let (s, _) = r.create_session(&a.id, 60_000).unwrap();
        let old = r.create_reset(&a.id, 60_000).unwrap();
        let t = r.create_reset(&a.id, 60_000).unwrap();
        assert!(!r.reset_valid(&old).unwrap(), "a newer link replaces it");
        assert!(r.reset_valid(&t).unwrap());
        let a2 = r
            .use_reset(&t, hash_password("new password 1").unwrap())
            .unwrap();
        assert!(verify_password(&a2.password_hash, "new password 1"));
        assert!(r.session(&s).unwrap().is_none());
        assert_eq!(
            r.use_reset(&t, hash_password("again again").unwrap())
                .unwrap_err()
                .status,
            404
        );
        let expired = r.create_reset(&a.id, 1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(
            r.use_reset(&expired, String::new()).unwrap_err().status,
            404
        );
    }
}
