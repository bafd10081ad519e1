//! Admin users in the registry: created with a bearer token (only its SHA-256
//! is stored, indexed as `token/DIGEST`), rotated, authenticated; the last
//! administrator is never demoted or deleted, nor an administrator by itself.

use super::{key, new_secret, sha256_hex, Actor, Registry, Tx, TREE};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{check_id, Role, Ts, User, UserCreate, UserUpdate};

impl Registry {
    /// The user a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<Option<User>, AdminError> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        let digest = sha256_hex(token);
        let Some(id) = self
            .store
            .get(TREE, &key("token", &digest))
            .map_err(AdminError::store)?
        else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        let user: Option<User> = self.get("user", &id)?;
        // The index and the user must agree (a rotated token is gone from both).
        Ok(user.filter(|u| u.token_sha256 == digest))
    }

    fn administrators(&self) -> Result<usize, AdminError> {
        Ok(self
            .list::<User>("user", None, 10_000, |u| u.role == Role::Administrator)?
            .items
            .len())
    }

    /// Create the first administrator; refused if any administrator exists.
    pub fn init_admin(&self, id: &str) -> Result<String, AdminError> {
        check_id("id", id)?;
        let _w = self.lock();
        if self.administrators()? > 0 {
            return Err(AdminError::conflict(
                "an administrator exists already: `admin init` never replaces one; use an administrator's token to create users",
            ));
        }
        if self.get::<User>("user", id)?.is_some() {
            return Err(AdminError::conflict(format!("user `{id}` exists already")));
        }
        self.put_user_with_token(
            "init",
            "create",
            User {
                id: id.to_string(),
                role: Role::Administrator,
                created_at: Ts::now(),
                token_sha256: String::new(),
            },
            None,
            serde_json::json!({"id": id, "role": "administrator"}),
        )
    }

    /// `tollgate admin recover` (offline, the gateway stopped): a new token
    /// for administrator `id`, or a new administrator `id` when no user has
    /// that id. The old token stops working. Audited as `recover` by actor
    /// `recover`. A user of another role is refused (its role is not changed
    /// behind the administrators' backs); the message names the
    /// administrators. Returns the token and whether the user was created.
    pub fn recover_admin(&self, id: &str) -> Result<(String, bool), AdminError> {
        check_id("user", id)?;
        let _w = self.lock();
        match self.get::<User>("user", id)? {
            Some(user) if user.role == Role::Administrator => {
                let old = user.token_sha256.clone();
                let token = self.put_user_with_token(
                    "recover",
                    "recover",
                    user,
                    Some(&old),
                    serde_json::json!({"offline": true, "created": false}),
                )?;
                Ok((token, false))
            }
            Some(user) => {
                let admins: Vec<String> = self
                    .list::<User>("user", None, 10_000, |u| u.role == Role::Administrator)?
                    .items
                    .into_iter()
                    .map(|u| u.id)
                    .collect();
                Err(AdminError::conflict(format!(
                    "user `{id}` is a {}, not an administrator: recover an administrator ({}) or name a new user to create one",
                    user.role.as_str(),
                    if admins.is_empty() { "there are none".to_string() } else { admins.join(", ") }
                )))
            }
            None => {
                let token = self.put_user_with_token(
                    "recover",
                    "recover",
                    User {
                        id: id.to_string(),
                        role: Role::Administrator,
                        created_at: Ts::now(),
                        token_sha256: String::new(),
                    },
                    None,
                    serde_json::json!({"offline": true, "created": true, "role": "administrator"}),
                )?;
                Ok((token, true))
            }
        }
    }

    fn put_user_with_token(
        &self,
        actor: Actor,
        action: &str,
        mut user: User,
        old_digest: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<String, AdminError> {
        let token = new_secret("tga_");
        let digest = sha256_hex(&token);
        user.token_sha256 = digest.clone();
        let mut tx = Tx::default();
        if let Some(old) = old_digest {
            tx.del(key("token", old));
        }
        tx.put_raw(key("token", &digest), user.id.as_bytes());
        tx.put("user", &user.id, &user);
        self.commit(tx, actor, action, "user", &user.id, detail)?;
        Ok(token)
    }

    pub fn create_user(&self, actor: Actor, req: UserCreate) -> Result<(User, String), AdminError> {
        check_id("id", &req.id)?;
        let _w = self.lock();
        if self.get::<User>("user", &req.id)?.is_some() {
            return Err(AdminError::conflict(format!(
                "user `{}` exists already",
                req.id
            )));
        }
        let user = User {
            id: req.id.clone(),
            role: req.role,
            created_at: Ts::now(),
            token_sha256: String::new(),
        };
        let detail = serde_json::json!({"id": req.id, "role": req.role.as_str()});
        let token = self.put_user_with_token(actor, "create", user, None, detail)?;
        let user = self.must("user", "user", &req.id)?;
        Ok((user, token))
    }

    pub fn update_user(&self, actor: Actor, id: &str, req: UserUpdate) -> Result<User, AdminError> {
        let _w = self.lock();
        let mut user: User = self.must("user", "user", id)?;
        if req.role.is_none_or(|r| r == user.role) {
            return Ok(user);
        }
        if let Some(role) = req.role {
            if user.role == Role::Administrator && role != Role::Administrator && actor == id {
                return Err(AdminError::conflict(format!(
                    "`{id}` is your own account: an administrator cannot demote itself; another administrator must do it"
                )));
            }
            if user.role == Role::Administrator
                && role != Role::Administrator
                && self.administrators()? <= 1
            {
                return Err(AdminError::conflict(
                    "this is the last administrator: create another before changing its role",
                ));
            }
            user.role = role;
        }
        let mut tx = Tx::default();
        tx.put("user", id, &user);
        let detail = serde_json::json!({"role": user.role.as_str()});
        self.commit(tx, actor, "update", "user", id, detail)?;
        Ok(user)
    }

    pub fn rotate_user_token(&self, actor: Actor, id: &str) -> Result<(User, String), AdminError> {
        let _w = self.lock();
        let user: User = self.must("user", "user", id)?;
        let old = user.token_sha256.clone();
        let token =
            self.put_user_with_token(actor, "token", user, Some(&old), serde_json::json!({}))?;
        Ok((self.must("user", "user", id)?, token))
    }

    pub fn delete_user(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        let _w = self.lock();
        let user: User = self.must("user", "user", id)?;
        if actor == id {
            return Err(AdminError::conflict(format!(
                "`{id}` is your own account: a user cannot delete itself; another administrator must do it"
            )));
        }
        if user.role == Role::Administrator && self.administrators()? <= 1 {
            return Err(AdminError::conflict(
                "this is the last administrator: create another before deleting it",
            ));
        }
        let mut tx = Tx::default();
        tx.del(key("token", &user.token_sha256));
        tx.del(key("user", id));
        self.commit(tx, actor, "delete", "user", id, serde_json::json!({}))
    }
}
