//! Groups of consumers in the registry: the system groups `developers` and
//! `guests` (never stored: they always exist and their membership is
//! implicit) and custom groups (`group/ID`), with their members indexed
//! both ways (`idx/member-of-group/GROUP/CONSUMER`,
//! `idx/group-of-consumer/CONSUMER/GROUP`), so that a consumer's groups are
//! one prefix scan on the data path.

use super::{detail_of, idx, key, Actor, Page, Registry, Tx};
use crate::control::admin::error::{truncate, AdminError};
use crate::control::admin::model::{
    check_id, check_text, Consumer, Group, GroupCreate, GroupUpdate, Product, Ts, ANONYMOUS,
    DEVELOPERS, GUESTS, SYSTEM_GROUPS,
};

/// The most custom groups a consumer is a member of.
pub const MAX_GROUPS_PER_CONSUMER: usize = 100;

impl Registry {
    pub fn create_group(&self, actor: Actor, req: GroupCreate) -> Result<Group, AdminError> {
        check_id("id", &req.id)?;
        if SYSTEM_GROUPS.contains(&req.id.as_str()) {
            return Err(system_group(&req.id, "created"));
        }
        let name = req.name.unwrap_or_else(|| req.id.clone());
        check_text("name", &name, 200)?;
        check_text("description", &req.description, 4000)?;
        let _w = self.lock();
        if self.get::<Group>("group", &req.id)?.is_some() {
            return Err(AdminError::conflict(format!(
                "group `{}` exists already",
                req.id
            )));
        }
        let now = Ts::now();
        let g = Group {
            id: req.id,
            name,
            description: req.description,
            system: false,
            created_at: now,
            updated_at: now,
        };
        self.save(actor, "create", "group", "group", &g.id, &g, detail_of(&g))?;
        Ok(g)
    }

    pub fn update_group(
        &self,
        actor: Actor,
        id: &str,
        req: GroupUpdate,
    ) -> Result<Group, AdminError> {
        if SYSTEM_GROUPS.contains(&id) {
            return Err(system_group(id, "changed"));
        }
        let _w = self.lock();
        let mut g: Group = self.must("group", "group", id)?;
        let before = g.clone();
        if let Some(n) = req.name {
            check_text("name", &n, 200)?;
            g.name = n;
        }
        if let Some(d) = req.description {
            check_text("description", &d, 4000)?;
            g.description = d;
        }
        self.save_update(actor, id, &before, g, |g| g.updated_at = Ts::now())
    }

    /// Delete a custom group and its memberships; refused while a product
    /// is visible to it.
    pub fn delete_group(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        if SYSTEM_GROUPS.contains(&id) {
            return Err(system_group(id, "deleted"));
        }
        let _w = self.lock();
        let _: Group = self.must("group", "group", id)?;
        let products = self.list::<Product>("product", None, 10_000, |p| {
            p.visible_to.iter().any(|g| g == id)
        })?;
        if !products.items.is_empty() {
            let ids: Vec<_> = products.items.iter().map(|p| p.id.as_str()).collect();
            return Err(AdminError::conflict(format!(
                "group `{id}` is in the visible_to of products ({}): take it out of them first",
                ids.join(", ")
            )));
        }
        let mut tx = Tx::default();
        for consumer in self.children("member-of-group", id)? {
            tx.del(idx("member-of-group", id, &consumer));
            tx.del(idx("group-of-consumer", &consumer, id));
        }
        tx.del(key("group", id));
        self.commit(tx, actor, "delete", "group", id, serde_json::json!({}))
    }

    /// A group by id, a system group included.
    pub fn group(&self, id: &str) -> Result<Group, AdminError> {
        match Group::system(id) {
            Some(g) => Ok(g),
            None => self.must("group", "group", id),
        }
    }

    /// Whether group `id` exists (a system group always does).
    pub fn group_exists(&self, id: &str) -> Result<bool, AdminError> {
        Ok(SYSTEM_GROUPS.contains(&id) || self.get::<Group>("group", id)?.is_some())
    }

    /// A page of groups in id order, the system groups among them.
    pub fn list_groups(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Group>, AdminError> {
        let stored = self.list::<Group>("group", after, limit, |_| true)?;
        let mut items = stored.items;
        // The system groups that fall in this page: after the cursor, and
        // before the next page's first stored group.
        let upper = stored.next.clone();
        for id in SYSTEM_GROUPS {
            let after_cursor = after.is_none_or(|a| id > a);
            let before_next = upper.as_deref().is_none_or(|n| id <= n);
            if after_cursor && before_next {
                items.extend(Group::system(id));
            }
        }
        items.sort_by(|a, b| a.id.cmp(&b.id));
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|g| g.id.clone())
        } else {
            stored.next
        };
        Ok(Page { items, next })
    }

    /// Make consumer `consumer` a member of custom group `group` (nothing
    /// changes when it is one already).
    pub fn add_member(&self, actor: Actor, group: &str, consumer: &str) -> Result<(), AdminError> {
        if SYSTEM_GROUPS.contains(&group) {
            return Err(implicit_membership(group));
        }
        let _w = self.lock();
        let _: Group = self.must("group", "group", group)?;
        let _: Consumer = self.require("consumer", consumer)?;
        let mine = self.children("group-of-consumer", consumer)?;
        if mine.iter().any(|g| g == group) {
            return Ok(());
        }
        if mine.len() >= MAX_GROUPS_PER_CONSUMER {
            return Err(AdminError::conflict(format!(
                "consumer `{consumer}` is a member of {MAX_GROUPS_PER_CONSUMER} groups already: remove it from one first"
            )));
        }
        let mut tx = Tx::default();
        tx.put_raw(idx("member-of-group", group, consumer), b"");
        tx.put_raw(idx("group-of-consumer", consumer, group), b"");
        let detail = serde_json::json!({ "consumer": consumer });
        self.commit(tx, actor, "add-member", "group", group, detail)
    }

    /// Take consumer `consumer` out of custom group `group` (404 when it is
    /// not a member).
    pub fn remove_member(
        &self,
        actor: Actor,
        group: &str,
        consumer: &str,
    ) -> Result<(), AdminError> {
        if SYSTEM_GROUPS.contains(&group) {
            return Err(implicit_membership(group));
        }
        let _w = self.lock();
        let _: Group = self.must("group", "group", group)?;
        if !self
            .children("group-of-consumer", consumer)?
            .iter()
            .any(|g| g == group)
        {
            return Err(AdminError::missing(format!(
                "consumer `{}` is not a member of group `{group}`",
                truncate(consumer, 80)
            )));
        }
        let mut tx = Tx::default();
        tx.del(idx("member-of-group", group, consumer));
        tx.del(idx("group-of-consumer", consumer, group));
        let detail = serde_json::json!({ "consumer": consumer });
        self.commit(tx, actor, "remove-member", "group", group, detail)
    }

    /// The members of custom group `group` (consumer ids, in order).
    pub fn members(&self, group: &str) -> Result<Vec<String>, AdminError> {
        if SYSTEM_GROUPS.contains(&group) {
            return Err(implicit_membership(group));
        }
        let _: Group = self.must("group", "group", group)?;
        self.children("member-of-group", group)
    }

    /// The groups of consumer `consumer`: `developers` and its custom
    /// groups when the registry knows it, `guests` for [`ANONYMOUS`], none
    /// otherwise. One prefix scan (and a read when it has no custom group).
    pub fn consumer_groups(&self, consumer: &str) -> Vec<String> {
        if consumer == ANONYMOUS {
            return vec![GUESTS.to_string()];
        }
        if consumer.is_empty() || consumer.len() > 64 {
            return Vec::new();
        }
        let custom = self
            .children("group-of-consumer", consumer)
            .unwrap_or_default();
        let known =
            !custom.is_empty() || matches!(self.get::<Consumer>("consumer", consumer), Ok(Some(_)));
        if !known {
            return Vec::new();
        }
        let mut out = vec![DEVELOPERS.to_string()];
        out.extend(custom);
        out
    }

    /// Forget the memberships of consumer `consumer` (it is being deleted).
    pub(super) fn delete_memberships_of(
        &self,
        tx: &mut Tx,
        consumer: &str,
    ) -> Result<(), AdminError> {
        for group in self.children("group-of-consumer", consumer)? {
            tx.del(idx("member-of-group", &group, consumer));
            tx.del(idx("group-of-consumer", consumer, &group));
        }
        Ok(())
    }

    /// Check a product's `visible_to`: existing groups, each once, at most
    /// 100.
    pub(super) fn check_visible_to(&self, groups: &[String]) -> Result<(), AdminError> {
        if groups.len() > 100 {
            return Err(AdminError::invalid("visible_to", "at most 100 groups"));
        }
        for (i, g) in groups.iter().enumerate() {
            let field = format!("visible_to[{i}]");
            check_id(&field, g)?;
            if !self.group_exists(g)? {
                return Err(AdminError::unprocessable(
                    field,
                    format!("group `{g}` does not exist (create it with POST /admin/v1/groups, or use developers or guests)"),
                ));
            }
            if groups[..i].contains(g) {
                return Err(AdminError::invalid(
                    field,
                    format!("group `{g}` is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

fn system_group(id: &str, verb: &str) -> AdminError {
    AdminError::conflict(format!(
        "`{id}` is a system group: it cannot be {verb} (the system groups are developers and guests)"
    ))
}

fn implicit_membership(id: &str) -> AdminError {
    let who = if id == DEVELOPERS {
        "every consumer is a member of it"
    } else {
        "its members are the callers and visitors without credentials"
    };
    AdminError::conflict(format!(
        "`{id}` is a system group whose membership is implicit: {who}"
    ))
}
