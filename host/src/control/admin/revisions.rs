//! Lifecycles and revisions through the admin API: each edit rewrites the
//! API's `[[api]]` table in its manifest (keeping the rest of the file)
//! and goes live through the same build-check-swap as a chain assignment.
//!
//! A revision is an `[[api.revision]]` table holding a copy of the API's
//! `upstream`, `[[api.route]]` and `[[api.chain]]`. Promoting revision `n`
//! swaps those keys between the API and the revision in one rewrite: the
//! API's definition becomes revision `current-revision`, `n` becomes
//! current, and `previous-revision` records the one it replaced, which is
//! what `rollback` promotes.

use super::chain::{chain_item, StepInput};
use super::error::AdminError;
use serde::Deserialize;
use toml_edit::{ArrayOfTables, InlineTable, Item, Table};

/// The keys a revision copies.
const DEFINITION: [&str; 4] = ["upstream", "openapi", "route", "chain"];

/// The body of `PUT /apis/{name}/lifecycle`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleInput {
    /// `active`, `deprecated` or `retired`.
    pub state: String,
    #[serde(default, deserialize_with = "super::model::present")]
    pub deprecated_at: Option<String>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub sunset: Option<String>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub successor: Option<String>,
}

/// The body of `POST /apis/{name}/revisions`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RevisionInput {
    #[serde(default, deserialize_with = "super::model::present")]
    pub description: Option<String>,
    /// The revision's chain; default: a copy of the API's.
    #[serde(default, deserialize_with = "super::model::present")]
    pub chain: Option<Vec<StepInput>>,
}

/// A date-time as a manifest writes it: RFC 3339 with an offset. A value
/// of the form the OpenAPI document gives that is no date (`2027-13-45`)
/// is `422`; any other is `400`.
fn datetime(field: &str, s: &str) -> Result<toml_edit::Datetime, AdminError> {
    let message = format!(
        "`{}` is not a date-time: RFC 3339 with an offset, e.g. 2027-01-01T00:00:00Z",
        super::error::truncate(s, 40)
    );
    if !rfc3339_form(s) {
        return Err(AdminError::invalid(field, message));
    }
    s.parse::<toml_edit::Datetime>()
        .ok()
        .filter(|d| d.date.is_some() && d.time.is_some() && d.offset.is_some())
        .ok_or_else(|| AdminError::unprocessable(field, message))
}

/// Whether `s` has the form of the document's `DateTime` pattern:
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1-9 digits, then `Z` or
/// `+HH:MM` / `-HH:MM`.
fn rfc3339_form(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0..4) && at(4, b'-') && digits(5..7) && at(7, b'-') && digits(8..10))
        || !(at(10, b'T') && digits(11..13) && at(13, b':') && digits(14..16))
        || !(at(16, b':') && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        let n = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return false;
        }
        i += 1 + n;
    }
    match b.get(i) {
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            digits(i + 1..i + 3) && at(i + 3, b':') && digits(i + 4..i + 6) && i + 6 == b.len()
        }
        _ => false,
    }
}

/// Now, as a manifest's date-time.
pub fn now() -> toml_edit::Datetime {
    crate::domain::time::Ts::now()
        .rfc3339()
        .parse()
        .expect("RFC 3339")
}

impl LifecycleInput {
    /// The `lifecycle` inline table, checked field by field (the build
    /// checks the successor and the dates' order); `None` for a plain
    /// `active`. A deprecation without a date is dated `now`.
    pub fn to_toml(&self, now: toml_edit::Datetime) -> Result<Option<InlineTable>, AdminError> {
        let state = crate::manifest::LifecycleState::parse(&self.state).ok_or_else(|| {
            AdminError::invalid(
                "state",
                format!(
                    "`{}` is not a lifecycle state: `active`, `deprecated` or `retired`",
                    super::error::truncate(&self.state, 40)
                ),
            )
        })?;
        let mut t = InlineTable::new();
        t.insert("state", state.as_str().into());
        let deprecated_at = match &self.deprecated_at {
            Some(s) => Some(datetime("deprecated_at", s)?),
            None if state == crate::manifest::LifecycleState::Deprecated => Some(now),
            None => None,
        };
        if let Some(d) = deprecated_at {
            t.insert("deprecated-at", d.into());
        }
        if let Some(s) = &self.sunset {
            t.insert("sunset", datetime("sunset", s)?.into());
        }
        if let Some(s) = &self.successor {
            crate::manifest::Name::try_from(s.clone())
                .map_err(|e| AdminError::invalid("successor", e))?;
            t.insert("successor", s.as_str().into());
        }
        if state == crate::manifest::LifecycleState::Active && t.len() == 1 {
            return Ok(None);
        }
        Ok(Some(t))
    }
}

use super::chain::{api_table, parse_manifest as parse};

/// `text` with API `api`'s lifecycle set to `life` (removed for `None`).
pub fn set_lifecycle(
    text: &str,
    api: &str,
    life: Option<InlineTable>,
) -> Result<String, AdminError> {
    let mut doc = parse(text)?;
    let t = api_table(&mut doc, api)?;
    match life {
        Some(l) => {
            t.insert("lifecycle", toml_edit::value(l));
        }
        None => {
            t.remove("lifecycle");
        }
    }
    Ok(doc.to_string())
}

/// The API's current revision number.
fn current(t: &Table) -> i64 {
    t.get("current-revision")
        .and_then(Item::as_integer)
        .unwrap_or(1)
}

/// The API's revision tables (none when it has no `[[api.revision]]`).
fn revisions<'t>(t: &'t mut Table, api: &str) -> Result<Option<&'t mut ArrayOfTables>, AdminError> {
    match t.get_mut("revision") {
        None => Ok(None),
        Some(i) => i.as_array_of_tables_mut().map(Some).ok_or_else(|| {
            AdminError::conflict(format!(
                "API `{api}` does not write its revisions as [[api.revision]] tables: edit it by hand"
            ))
        }),
    }
}

fn number(t: &Table) -> Option<i64> {
    t.get("number").and_then(Item::as_integer)
}

/// A copy of `item` whose tables have no place in the file yet: written
/// after the table that now holds them (a table keeps its place in the
/// file where it came from otherwise).
fn fresh(item: &Item) -> Item {
    match item {
        Item::Table(t) => Item::Table(fresh_table(t)),
        Item::ArrayOfTables(a) => {
            let mut out = ArrayOfTables::new();
            for t in a.iter() {
                out.push(fresh_table(t));
            }
            Item::ArrayOfTables(out)
        }
        other => other.clone(),
    }
}

fn fresh_table(t: &Table) -> Table {
    let mut out = Table::new();
    out.set_implicit(t.is_implicit());
    *out.decor_mut() = t.decor().clone();
    for (k, v) in t.iter() {
        out.insert(k, fresh(v));
    }
    out
}

/// Put the API's revisions last among its keys, sorted by number, so
/// that they are written after its routes and chain.
fn settle(t: &mut Table, mut revs: Vec<Table>) {
    t.remove("revision");
    if revs.is_empty() {
        return;
    }
    revs.sort_by_key(|r| number(r).unwrap_or(0));
    let mut aot = ArrayOfTables::new();
    for r in &revs {
        aot.push(fresh_table(r));
    }
    t.insert("revision", Item::ArrayOfTables(aot));
}

/// Take the API's revision tables out.
fn take_revisions(t: &mut Table, api: &str) -> Result<Vec<Table>, AdminError> {
    Ok(revisions(t, api)?
        .map(|a| a.iter().cloned().collect())
        .unwrap_or_default())
}

fn not_a_revision(api: &str, n: u32) -> AdminError {
    AdminError::not_found("revision", &format!("{api}/{n}"))
}

/// `text` with a new revision of API `api`: a copy of its current
/// definition (with `chain` instead of its chain, when given). Returns the
/// text and the new revision's number.
pub fn add_revision(
    text: &str,
    api: &str,
    input: &RevisionInput,
    created: toml_edit::Datetime,
) -> Result<(String, u32), AdminError> {
    let mut doc = parse(text)?;
    let t = api_table(&mut doc, api)?;
    let mut revs = take_revisions(t, api)?;
    let highest = revs
        .iter()
        .filter_map(number)
        .chain([current(t)])
        .max()
        .unwrap_or(1);
    let n = u32::try_from(highest + 1)
        .map_err(|_| AdminError::conflict("no revision number is left"))?;
    let mut r = Table::new();
    r.insert("number", toml_edit::value(i64::from(n)));
    if let Some(d) = &input.description {
        r.insert("description", toml_edit::value(d.as_str()));
    }
    r.insert("created", toml_edit::value(created));
    for key in DEFINITION {
        let item = match (key, &input.chain) {
            ("chain", Some(chain)) => chain_item(chain)?,
            _ => t.get(key).map(fresh),
        };
        if let Some(item) = item {
            r.insert(key, item);
        }
    }
    revs.push(r);
    settle(t, revs);
    Ok((doc.to_string(), n))
}

/// `text` without revision `n` of API `api` (nor a `previous-revision`
/// naming it).
pub fn delete_revision(text: &str, api: &str, n: u32) -> Result<String, AdminError> {
    let mut doc = parse(text)?;
    let t = api_table(&mut doc, api)?;
    let mut revs = take_revisions(t, api)?;
    let before = revs.len();
    revs.retain(|r| number(r) != Some(i64::from(n)));
    if revs.len() == before {
        return Err(not_a_revision(api, n));
    }
    if t.get("previous-revision").and_then(Item::as_integer) == Some(i64::from(n)) {
        t.remove("previous-revision");
    }
    settle(t, revs);
    Ok(doc.to_string())
}

/// `text` with revision `n`'s chain replaced by `chain`.
pub fn set_revision_chain(
    text: &str,
    api: &str,
    n: u32,
    chain: &[StepInput],
) -> Result<String, AdminError> {
    let mut doc = parse(text)?;
    let t = api_table(&mut doc, api)?;
    let mut revs = take_revisions(t, api)?;
    let r = revs
        .iter_mut()
        .find(|r| number(r) == Some(i64::from(n)))
        .ok_or_else(|| not_a_revision(api, n))?;
    if let Some(existing) = r.get("chain") {
        if !existing.is_array_of_tables() {
            return Err(AdminError::conflict(format!(
                "revision {n} of API `{api}` writes its chain inline, not as [[api.revision.chain]] tables: edit it by hand"
            )));
        }
    }
    match chain_item(chain)? {
        Some(item) => {
            r.insert("chain", item);
        }
        None => {
            r.remove("chain");
        }
    }
    settle(t, revs);
    Ok(doc.to_string())
}

/// `text` with revision `n` of API `api` made current: the API's
/// definition becomes a revision (its `current-revision` number, its
/// `current-description`), `n`'s becomes the API's, and
/// `previous-revision` names the one replaced.
pub fn promote(text: &str, api: &str, n: u32) -> Result<String, AdminError> {
    let mut doc = parse(text)?;
    let t = api_table(&mut doc, api)?;
    let mut revs = take_revisions(t, api)?;
    let at = revs
        .iter()
        .position(|r| number(r) == Some(i64::from(n)))
        .ok_or_else(|| not_a_revision(api, n))?;
    let promoted = revs.remove(at);
    let was = current(t);
    let mut old = Table::new();
    old.insert("number", toml_edit::value(was));
    if let Some(d) = t.remove("current-description") {
        old.insert("description", d);
    }
    if let Some(c) = t.remove("current-created") {
        old.insert("created", c);
    }
    for key in DEFINITION {
        if let Some(item) = t.remove(key) {
            old.insert(key, fresh(&item));
        }
    }
    for key in DEFINITION {
        if let Some(item) = promoted.get(key) {
            t.insert(key, fresh(item));
        }
    }
    t.insert("current-revision", toml_edit::value(i64::from(n)));
    if let Some(d) = promoted.get("description") {
        t.insert("current-description", d.clone());
    }
    t.insert("previous-revision", toml_edit::value(was));
    revs.push(old);
    settle(t, revs);
    Ok(doc.to_string())
}

/// The revision `rollback` makes current: the API's `previous-revision`.
pub fn previous(text: &str, api: &str) -> Result<u32, AdminError> {
    let mut doc = parse(text)?;
    let t = api_table(&mut doc, api)?;
    t.get("previous-revision")
        .and_then(Item::as_integer)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            AdminError::conflict(format!(
                "API `{api}` has no previous revision to roll back to (no promotion since its revisions were created, or that revision was deleted)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::PolicyManifest;

    const TEXT: &str = r#"# Pets.
schema = 1

[[api]]
name = "pets"
upstream = { targets = ["http://127.0.0.1:9/one"] }  # keep me

[[api.route]]
path = "/pets/{id}"

[[api.chain]]
plugin = "noop"
[api.chain.config]
a = 1

[[api]]
name = "orders"
upstream = { targets = ["http://127.0.0.1:9"] }

[[api.route]]
prefix = "/orders"
"#;

    fn manifest(text: &str) -> PolicyManifest {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn targets(text: &str) -> (u32, Vec<(u32, String)>) {
        let m = manifest(text);
        let a = m.apis[0].get_ref();
        (
            a.current_revision.unwrap_or(1),
            std::iter::once((
                a.current_revision.unwrap_or(1),
                a.upstream.targets[0].clone(),
            ))
            .chain(
                a.revisions
                    .iter()
                    .map(|r| (r.get_ref().number, r.get_ref().upstream.targets[0].clone())),
            )
            .collect(),
        )
    }

    #[test]
    fn create_promote_rollback_and_delete() {
        let when: toml_edit::Datetime = "2026-12-01T10:00:00Z".parse().unwrap();
        let (text, n) = add_revision(TEXT, "pets", &RevisionInput::default(), when).unwrap();
        assert_eq!(n, 2);
        assert!(
            text.contains("# keep me") && text.contains("# Pets."),
            "{text}"
        );
        let m = manifest(&text);
        let pets = m.apis[0].get_ref();
        let rev = pets.revisions[0].get_ref();
        assert_eq!(rev.number, 2);
        assert_eq!(rev.chain.len(), 1);
        assert_eq!(rev.routes[0].get_ref().path.as_deref(), Some("/pets/{id}"));
        assert_eq!(m.apis[1].get_ref().routes.len(), 1, "orders untouched");
        // Change the revision's upstream by hand, then promote it.
        let text = text.replacen(
            "[[api.revision]]\nnumber = 2",
            "[[api.revision]]\nnumber = 2\ndescription = \"two\"",
            1,
        );
        let staged = text.replace(
            "created = 2026-12-01T10:00:00Z\nupstream = { targets = [\"http://127.0.0.1:9/one\"] }",
            "created = 2026-12-01T10:00:00Z\nupstream = { targets = [\"http://127.0.0.1:9/two\"] }",
        );
        assert_ne!(staged, text, "{text}");
        let promoted = promote(&staged, "pets", 2).unwrap();
        assert_eq!(
            targets(&promoted),
            (
                2,
                vec![
                    (2, "http://127.0.0.1:9/two".into()),
                    (1, "http://127.0.0.1:9/one".into())
                ]
            ),
            "{promoted}"
        );
        let m = manifest(&promoted);
        let pets = m.apis[0].get_ref();
        assert_eq!(pets.previous_revision, Some(1));
        assert_eq!(pets.current_description.as_deref(), Some("two"));
        assert_eq!(pets.revisions[0].get_ref().chain.len(), 1, "{promoted}");
        assert_eq!(m.apis[1].get_ref().name.as_str(), "orders");
        // Rollback promotes the previous one; twice goes back.
        assert_eq!(previous(&promoted, "pets").unwrap(), 1);
        let back = promote(&promoted, "pets", 1).unwrap();
        assert_eq!(targets(&back).0, 1);
        assert_eq!(manifest(&back).apis[0].get_ref().previous_revision, Some(2));
        let again = promote(&back, "pets", 2).unwrap();
        assert_eq!(targets(&again), targets(&promoted), "{again}");
        // Delete.
        let gone = delete_revision(&back, "pets", 2).unwrap();
        let m = manifest(&gone);
        assert!(m.apis[0].get_ref().revisions.is_empty());
        assert_eq!(m.apis[0].get_ref().previous_revision, None);
        assert_eq!(delete_revision(&gone, "pets", 2).unwrap_err().status, 404);
        assert_eq!(promote(&gone, "pets", 9).unwrap_err().status, 404);
        assert_eq!(previous(&gone, "pets").unwrap_err().status, 409);
    }

    #[test]
    fn replacing_an_api_keeps_its_versions_lifecycle_and_revisions() {
        let when: toml_edit::Datetime = "2026-12-01T10:00:00Z".parse().unwrap();
        let (text, _) = add_revision(TEXT, "pets", &RevisionInput::default(), when).unwrap();
        let text = text.replacen(
            "name = \"pets\"",
            "name = \"pets\"\nlifecycle = { state = \"retired\" }",
            1,
        );
        let input: super::super::api_def::ApiInput = serde_json::from_value(serde_json::json!({
            "upstream": {"targets": ["http://127.0.0.1:9/new"]},
            "routes": [{"prefix": "/pets"}],
        }))
        .unwrap();
        let out = super::super::api_def::replace_api(&text, "pets", &input).unwrap();
        let m = manifest(&out);
        let pets = m.apis[0].get_ref();
        assert_eq!(pets.upstream.targets[0], "http://127.0.0.1:9/new", "{out}");
        assert!(pets.lifecycle.is_some(), "{out}");
        let rev = pets.revisions[0].get_ref();
        assert_eq!(rev.number, 2);
        assert_eq!(rev.upstream.targets[0], "http://127.0.0.1:9/one", "{out}");
        assert_eq!(rev.routes.len(), 1, "{out}");
        assert_eq!(m.apis[1].get_ref().name.as_str(), "orders", "{out}");
        assert_eq!(m.apis[1].get_ref().routes.len(), 1, "{out}");
    }

    #[test]
    fn lifecycles() {
        let now: toml_edit::Datetime = "2026-12-01T10:00:00Z".parse().unwrap();
        let life = |v: serde_json::Value| {
            serde_json::from_value::<LifecycleInput>(v)
                .unwrap()
                .to_toml(now)
        };
        let t = life(serde_json::json!({"state": "deprecated", "successor": "orders"})).unwrap();
        let text = set_lifecycle(TEXT, "pets", t).unwrap();
        let l = manifest(&text).apis[0].get_ref().lifecycle.clone().unwrap();
        assert_eq!(l.deprecated_at.unwrap().to_string(), "2026-12-01T10:00:00Z");
        assert_eq!(l.successor.unwrap().as_str(), "orders");
        let text = set_lifecycle(
            &text,
            "pets",
            life(serde_json::json!({"state": "active"})).unwrap(),
        )
        .unwrap();
        assert!(manifest(&text).apis[0].get_ref().lifecycle.is_none());
        for (v, field) in [
            (serde_json::json!({"state": "gone"}), "state"),
            (
                serde_json::json!({"state": "retired", "sunset": "soon"}),
                "sunset",
            ),
            (
                serde_json::json!({"state": "deprecated", "deprecated_at": "2026-01-01"}),
                "deprecated_at",
            ),
            (
                serde_json::json!({"state": "retired", "successor": "a b"}),
                "successor",
            ),
        ] {
            let e = life(v.clone()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{v}: {e}");
        }
    }
}
