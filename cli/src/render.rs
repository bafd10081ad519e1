//! What a client command prints: aligned tables for lists, `FIELD VALUE`
//! listings for single objects, secrets alone on stdout, or with `--json`
//! the API's answer as pretty JSON.
//!
//! Everything here is pure: [`render`] turns an answer into an [`Output`]
//! (text for stdout and stderr, in order) that the caller prints. The
//! column layout is `comfy-table`'s (borderless, two spaces apart); what
//! stays here is which columns each resource has and how values read.

use comfy_table::{presets, Table};
use serde_json::Value;

/// The admin API's resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Users,
    Apis,
    Products,
    Plans,
    Consumers,
    Apps,
    Subscriptions,
    Keys,
    OAuthClients,
    Accounts,
    Groups,
    Audit,
    Whoami,
}

impl Kind {
    /// The path segment under `/admin/v1`.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Apis => "apis",
            Kind::Products => "products",
            Kind::Plans => "plans",
            Kind::Consumers => "consumers",
            Kind::Apps => "apps",
            Kind::Subscriptions => "subscriptions",
            Kind::Keys => "keys",
            Kind::OAuthClients => "oauth-clients",
            Kind::Accounts => "accounts",
            Kind::Groups => "groups",
            Kind::Audit => "audit",
            Kind::Whoami => "whoami",
        }
    }

    /// One of them, for messages.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Users => "user",
            Kind::Apis => "api",
            Kind::Products => "product",
            Kind::Plans => "plan",
            Kind::Consumers => "consumer",
            Kind::Apps => "app",
            Kind::Subscriptions => "subscription",
            Kind::Keys => "key",
            Kind::OAuthClients => "OAuth client",
            Kind::Accounts => "account",
            Kind::Groups => "group",
            Kind::Audit => "audit record",
            Kind::Whoami => "user",
        }
    }

    /// Several of them, for messages.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Audit => "audit records",
            Kind::Apis => "APIs",
            Kind::OAuthClients => "OAuth clients",
            other => other.path(),
        }
    }

    /// The fields of one object in the order a `get` lists them (the order
    /// of docs/admin-api.md); fields not named here follow, sorted.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Users => &["id", "role", "created_at"],
            Kind::Apis => &["name", "manifest", "etag", "routes", "upstream", "chain"],
            Kind::Products => &[
                "id",
                "name",
                "description",
                "apis",
                "published",
                "access",
                "visible_to",
                "created_at",
                "updated_at",
            ],
            Kind::Plans => &[
                "id",
                "product",
                "name",
                "description",
                "rate_limits",
                "quota",
                "approval",
                "max_keys_per_app",
                "scopes",
                "created_at",
                "updated_at",
            ],
            Kind::Consumers => &["id", "name", "email", "created_at", "updated_at"],
            Kind::Apps => &[
                "id",
                "consumer",
                "name",
                "description",
                "created_at",
                "updated_at",
            ],
            Kind::Subscriptions => &[
                "id",
                "app",
                "plan",
                "product",
                "state",
                "keys",
                "created_at",
                "updated_at",
            ],
            Kind::Keys => &[
                "id",
                "subscription",
                "app",
                "plan",
                "name",
                "prefix",
                "created_at",
                "expires_at",
                "revoked_at",
                "rotated_to",
            ],
            Kind::OAuthClients => &[
                "id",
                "subscription",
                "app",
                "plan",
                "name",
                "created_at",
                "rotated_at",
                "previous_until",
                "revoked_at",
            ],
            Kind::Accounts => &[
                "id",
                "consumer",
                "email",
                "name",
                "state",
                "created_at",
                "updated_at",
            ],
            Kind::Groups => &[
                "id",
                "name",
                "description",
                "system",
                "created_at",
                "updated_at",
            ],
            Kind::Audit => &["seq", "at", "actor", "action", "resource", "id", "detail"],
            Kind::Whoami => &["id", "user", "role"],
        }
    }

    /// The columns of a list.
    fn columns(self) -> Vec<Column> {
        fn col(header: &'static str, cell: fn(&Value) -> String) -> Column {
            Column { header, cell }
        }
        match self {
            Kind::Users => vec![
                col("ID", |v| field(v, "id")),
                col("ROLE", |v| field(v, "role")),
                col("CREATED", |v| field(v, "created_at")),
            ],
            Kind::Apis => vec![
                col("NAME", |v| field(v, "name")),
                col("ROUTES", |v| count(v, "routes")),
                col("CHAIN", |v| plugins(v.get("chain"))),
            ],
            Kind::Products => vec![
                col("ID", |v| field(v, "id")),
                col("NAME", |v| field(v, "name")),
                col("APIS", |v| field(v, "apis")),
                col("PUBLISHED", |v| field(v, "published")),
                col("ACCESS", |v| field(v, "access")),
                col("VISIBLE TO", |v| field(v, "visible_to")),
            ],
            Kind::Plans => vec![
                col("ID", |v| field(v, "id")),
                col("PRODUCT", |v| field(v, "product")),
                col("NAME", |v| field(v, "name")),
                col("APPROVAL", |v| field(v, "approval")),
                col("LIMITS", |v| field(v, "rate_limits")),
                col("QUOTA", |v| field(v, "quota")),
            ],
            Kind::Consumers => vec![
                col("ID", |v| field(v, "id")),
                col("NAME", |v| field(v, "name")),
                col("EMAIL", |v| field(v, "email")),
            ],
            Kind::Apps => vec![
                col("ID", |v| field(v, "id")),
                col("CONSUMER", |v| field(v, "consumer")),
                col("NAME", |v| field(v, "name")),
            ],
            Kind::Subscriptions => vec![
                col("ID", |v| field(v, "id")),
                col("APP", |v| field(v, "app")),
                col("PLAN", |v| field(v, "plan")),
                col("PRODUCT", |v| field(v, "product")),
                col("STATE", |v| field(v, "state")),
            ],
            Kind::Keys => vec![
                col("ID", |v| field(v, "id")),
                col("APP", |v| field(v, "app")),
                col("PLAN", |v| field(v, "plan")),
                col("PREFIX", |v| field(v, "prefix")),
                col("EXPIRES", |v| field(v, "expires_at")),
                col("REVOKED", |v| field(v, "revoked_at")),
            ],
            Kind::OAuthClients => vec![
                col("CLIENT ID", |v| field(v, "id")),
                col("APP", |v| field(v, "app")),
                col("PLAN", |v| field(v, "plan")),
                col("NAME", |v| field(v, "name")),
                col("REVOKED", |v| field(v, "revoked_at")),
            ],
            Kind::Accounts => vec![
                col("ID", |v| field(v, "id")),
                col("CONSUMER", |v| field(v, "consumer")),
                col("EMAIL", |v| field(v, "email")),
                col("STATE", |v| field(v, "state")),
            ],
            Kind::Groups => vec![
                col("ID", |v| field(v, "id")),
                col("NAME", |v| field(v, "name")),
                col("SYSTEM", |v| field(v, "system")),
                col("DESCRIPTION", |v| field(v, "description")),
            ],
            Kind::Audit => vec![
                col("SEQ", |v| field(v, "seq")),
                col("AT", |v| field(v, "at")),
                col("ACTOR", |v| field(v, "actor")),
                col("ACTION", |v| field(v, "action")),
                col("RESOURCE", |v| field(v, "resource")),
                col("ID", |v| field(v, "id")),
            ],
            Kind::Whoami => vec![
                col("USER", |v| field(v, "user")),
                col("ROLE", |v| field(v, "role")),
            ],
        }
    }
}

struct Column {
    header: &'static str,
    cell: fn(&Value) -> String,
}

/// How to present an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Show {
    /// `{"items": [...], "next"}` as a table.
    List(Kind),
    /// One object as a `FIELD VALUE` listing.
    Object(Kind),
    /// `{"<object>": {...}, "<secret>": "..."}`: the object on stderr, the
    /// secret alone on stdout, and a note that it is shown only once.
    Secret {
        kind: Kind,
        object: &'static str,
        secret: &'static str,
    },
    /// A new subscription with the secrets of its primary and secondary
    /// keys (`"secrets"`): the subscription on stderr, the secrets alone on
    /// stdout, one a line (`primary SECRET`, `secondary SECRET`).
    SubscriptionCreated,
    /// A `204`: say what was deleted.
    Deleted { kind: Kind, id: String },
    /// A `204` of a change that is not a deletion: say what was done.
    Done(String),
    /// `{"etag", "chain"}` of an API.
    Chain { of: String },
    /// `{"etag", "chain", "generation"}` after a chain was set.
    ChainSet { of: String },
    /// `{"routes": [{"route", "chain"}], "products": {...}}`: each route's
    /// steps in order, with their scopes.
    Effective { api: String },
    /// Pretty JSON whatever the flags (the OpenAPI document).
    Raw,
    /// Text as it came (a CSV report), whatever the flags.
    Text,
    /// An analytics report as a table, its range and totals on stderr.
    Report { consumer: Option<String> },
}

/// Which stream a part of the output goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Text to print, in order. Each part ends with a newline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub parts: Vec<(Stream, String)>,
}

impl Output {
    fn out(&mut self, text: impl Into<String>) {
        self.push(Stream::Stdout, text.into());
    }
    fn err(&mut self, text: impl Into<String>) {
        self.push(Stream::Stderr, text.into());
    }
    fn push(&mut self, stream: Stream, mut text: String) {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        self.parts.push((stream, text));
    }

    /// All the stdout text (for tests).
    #[cfg(test)]
    pub fn stdout(&self) -> String {
        self.of(Stream::Stdout)
    }
    /// All the stderr text (for tests).
    #[cfg(test)]
    pub fn stderr(&self) -> String {
        self.of(Stream::Stderr)
    }
    #[cfg(test)]
    fn of(&self, s: Stream) -> String {
        self.parts
            .iter()
            .filter(|(st, _)| *st == s)
            .map(|(_, t)| t.as_str())
            .collect()
    }
}

/// Present `answer` as `show` says; `json` is `--json`.
pub fn render(show: &Show, answer: &Value, json: bool) -> Output {
    let mut o = Output::default();
    if *show == Show::Text {
        o.out(answer.as_str().unwrap_or_default());
        return o;
    }
    if json || *show == Show::Raw {
        // A 204 has no body: nothing to print.
        if !answer.is_null() {
            o.out(pretty(answer));
        }
        return o;
    }
    match show {
        Show::List(kind) => {
            let items = answer
                .get("items")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if items.is_empty() {
                o.err(format!("no {}", kind.plural()));
            } else {
                o.out(table(&kind.columns(), items));
            }
            if let Some(next) = next_of(answer) {
                o.err(format!(
                    "more {} follow: --after {next} for the next page, or --all",
                    kind.plural()
                ));
            }
        }
        Show::Object(kind) => o.out(listing(*kind, answer)),
        Show::Secret {
            kind,
            object,
            secret,
        } => {
            if let Some(obj) = answer.get(*object) {
                o.err(listing(*kind, obj));
            }
            let value = answer
                .get(*secret)
                .and_then(Value::as_str)
                .unwrap_or_default();
            o.err(format!(
                "The {secret} below is shown only this once (only its SHA-256 is stored): keep it now."
            ));
            if *kind == Kind::Users {
                o.err("Its user passes it as --token or TOLLGATE_ADMIN_TOKEN.");
            }
            o.out(value);
        }
        Show::SubscriptionCreated => {
            let mut sub = answer.clone();
            let secrets = sub
                .as_object_mut()
                .and_then(|m| m.remove("secrets"))
                .unwrap_or_default();
            o.err(listing(Kind::Subscriptions, &sub));
            o.err("The subscription's keys below are shown only this once (only their SHA-256 is stored): keep them now.");
            for slot in ["primary", "secondary"] {
                if let Some(secret) = secrets.get(slot).and_then(Value::as_str) {
                    o.out(format!("{slot} {secret}"));
                }
            }
        }
        Show::Deleted { kind, id } => o.out(format!("deleted {} `{id}`", kind.singular())),
        Show::Done(what) => o.out(what.as_str()),
        Show::Chain { of } => {
            o.out(format!("etag: {}", field(answer, "etag")));
            let steps = answer
                .get("chain")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if steps.is_empty() {
                o.err(format!("{of} has an empty chain"));
            } else {
                o.out(chain_table(steps));
            }
        }
        Show::Effective { api } => {
            let steps = |v: &Value| -> String {
                let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
                if list.is_empty() {
                    return "no step".into();
                }
                list.iter()
                    .map(effective_step)
                    .collect::<Vec<_>>()
                    .join(" -> ")
            };
            let routes = answer.get("routes").and_then(Value::as_array);
            for r in routes.map(Vec::as_slice).unwrap_or_default() {
                o.out(format!(
                    "route `{}`: {}",
                    field(r, "route"),
                    steps(&r["chain"])
                ));
            }
            if let Some(products) = answer.get("products").and_then(Value::as_object) {
                for (p, chain) in products {
                    o.out(format!(
                        "product `{p}`, once the caller is identified: {}",
                        steps(chain)
                    ));
                }
            }
            if routes.is_none_or(Vec::is_empty) {
                o.err(format!("api `{api}` has no route"));
            }
        }
        Show::ChainSet { of } => {
            let steps = answer
                .get("chain")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            o.out(format!(
                "chain of {of} set: {steps} step(s), generation {}, etag {}",
                field(answer, "generation"),
                field(answer, "etag")
            ));
        }
        Show::Report { consumer } => {
            let (rows, notes) = crate::analytics::table(answer);
            if let Some(c) = consumer {
                o.err(format!("consumer `{c}`"));
            }
            if rows.len() > 1 {
                o.out(align(&rows));
            } else {
                o.err("no calls in this range");
            }
            for n in notes {
                o.err(n);
            }
        }
        Show::Raw | Show::Text => unreachable!("handled above"),
    }
    o
}

/// The `next` of a list answer, as text (audit pages by number).
pub fn next_of(answer: &Value) -> Option<String> {
    match answer.get("next")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Pretty JSON.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Aligned columns, two spaces apart, no trailing blanks.
fn table(columns: &[Column], items: &[Value]) -> String {
    let headers: Vec<String> = columns.iter().map(|c| c.header.to_string()).collect();
    let mut rows = vec![headers];
    rows.extend(
        items
            .iter()
            .map(|item| columns.iter().map(|c| (c.cell)(item)).collect()),
    );
    align(&rows)
}

/// Rows in columns as wide as their widest cell (in display width), two
/// spaces apart, no borders, no trailing blanks, one line per row.
fn align(rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    // One line per row, whatever the value holds.
    table.add_rows(
        rows.iter()
            .map(|row| row.iter().map(|cell| cell.replace(['\n', '\r', '\t'], " "))),
    );
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt() + "\n"
}

/// `FIELD  VALUE` lines: the resource's fields in their documented order,
/// then any others, sorted.
fn listing(kind: Kind, obj: &Value) -> String {
    let Some(map) = obj.as_object() else {
        return pretty(obj);
    };
    let known = kind.fields();
    let mut keys: Vec<&str> = known
        .iter()
        .copied()
        .filter(|k| map.contains_key(*k))
        .collect();
    let mut rest: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    rest.sort_unstable();
    keys.extend(rest);
    let rows: Vec<Vec<String>> = keys
        .into_iter()
        .map(|k| vec![k.to_string(), format_field(k, &map[k])])
        .collect();
    align(&rows)
}

/// One step of an effective chain: its name, its scope unless the API's,
/// its condition.
fn effective_step(s: &Value) -> String {
    let mut out = field(s, "step");
    let scope = &s["scope"];
    match scope["kind"].as_str() {
        Some("gateway") => out.push_str(" [gateway]"),
        Some("route") => out.push_str(&format!(" [route `{}`]", field(scope, "route"))),
        _ => {}
    }
    if let Some(w) = s.get("when").and_then(Value::as_str) {
        out.push_str(&format!(" (when {w})"));
    }
    out
}

fn chain_table(steps: &[Value]) -> String {
    let mut rows = vec![[
        "STEP",
        "NAME",
        "PLUGIN",
        "FAIL_OPEN",
        "TIMEOUT",
        "MEMORY",
        "GRANTS",
        "CONFIG",
    ]
    .map(String::from)
    .to_vec()];
    let when = steps.iter().any(|s| s.get("when").is_some());
    if when {
        rows[0].push("WHEN".into());
    }
    for (i, s) in steps.iter().enumerate() {
        let base = s.get("base").and_then(Value::as_bool) == Some(true);
        let name = s
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| s.get("plugin").and_then(Value::as_str))
            .unwrap_or(if base {
                "(base: the enclosing chain)"
            } else {
                "-"
            });
        let mut row = vec![
            (i + 1).to_string(),
            name.to_string(),
            field(s, "plugin"),
            s.get("fail_open").map_or("no".into(), format_value),
            field(s, "timeout"),
            field(s, "memory"),
            field(s, "grants"),
            s.get("config").map_or("-".into(), |c| match c {
                Value::Object(m) if m.is_empty() => "-".into(),
                Value::Null => "-".into(),
                c => c.to_string(),
            }),
        ];
        if when {
            row.push(field(s, "when"));
        }
        rows.push(row);
    }
    align(&rows)
}

/// One field of an object, formatted for a cell.
fn field(v: &Value, name: &str) -> String {
    v.get(name)
        .map_or_else(|| "-".into(), |x| format_field(name, x))
}

/// The number of elements of an array field.
fn count(v: &Value, name: &str) -> String {
    v.get(name)
        .and_then(Value::as_array)
        .map_or_else(|| "-".into(), |a| a.len().to_string())
}

/// The plugins of a chain, in order: `access-log > key-auth > cache`.
fn plugins(chain: Option<&Value>) -> String {
    let names: Vec<&str> = chain
        .and_then(Value::as_array)
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| s.get("plugin").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(" > ")
    }
}

/// Fields with a shape of their own get a compact rendering; everything
/// else goes through [`format_value`].
fn format_field(name: &str, v: &Value) -> String {
    let special = match name {
        // [{"requests": 100, "per": "second"}] -> 100/second
        "rate_limits" => v.as_array().and_then(|limits| {
            limits
                .iter()
                .map(|l| {
                    Some(format!(
                        "{}/{}",
                        l.get("requests")?,
                        l.get("per")?.as_str()?
                    ))
                })
                .collect::<Option<Vec<_>>>()
                .map(|parts| parts.join(", "))
        }),
        // {"calls": 1000000, "period": "month"} -> 1000000/month
        "quota" => (|| {
            Some(format!(
                "{}/{}",
                v.get("calls")?,
                v.get("period")?.as_str()?
            ))
        })(),
        // Steps as `name (plugin)`, or the plugin when the name is the same.
        "chain" => v.as_array().map(|steps| {
            steps
                .iter()
                .map(|s| {
                    let plugin = s.get("plugin").and_then(Value::as_str).unwrap_or("?");
                    match s.get("name").and_then(Value::as_str) {
                        Some(n) if n != plugin => format!("{n} ({plugin})"),
                        _ => plugin.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join(" > ")
        }),
        "routes" => v
            .as_array()
            .map(|routes| routes.iter().map(route).collect::<Vec<_>>().join("; ")),
        "upstream" => v.get("targets").map(format_value),
        _ => None,
    };
    match special {
        Some(s) if !s.is_empty() => s,
        _ => format_value(v),
    }
}

/// `get-pet: /pets/{id} [GET, HEAD]`, `/echo/... (prefix)`, with hosts when any.
fn route(r: &Value) -> String {
    let mut s = String::new();
    if let Some(name) = r.get("name").and_then(Value::as_str) {
        s.push_str(name);
        s.push_str(": ");
    }
    match (
        r.get("path").and_then(Value::as_str),
        r.get("prefix").and_then(Value::as_str),
    ) {
        (Some(path), _) => s.push_str(path),
        (None, Some(prefix)) => {
            s.push_str(prefix);
            s.push_str(" (prefix)");
        }
        (None, None) => s.push('-'),
    }
    for (key, label) in [("methods", ""), ("hosts", "hosts ")] {
        if let Some(list) = r
            .get(key)
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        {
            s.push_str(&format!(
                " [{label}{}]",
                format_value(&Value::Array(list.clone()))
            ));
        }
    }
    s
}

/// A value for a cell: `-` for null and empty, `yes`/`no`, lists of plain
/// values joined with `, `, anything else as compact JSON.
pub fn format_value(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) if a.iter().all(|x| !x.is_array() && !x.is_object()) => {
            a.iter().map(format_value).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn product_table() {
        let answer = json!({"items": [
            {"id": "shop", "name": "Shop", "description": "", "apis": ["pets", "orders"], "published": true,
             "access": "authenticated", "visible_to": ["developers", "partners"],
             "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"},
            {"id": "internal-tools", "name": "Tools", "apis": [], "published": false,
             "access": "protected", "visible_to": []},
        ], "next": null});
        let o = render(&Show::List(Kind::Products), &answer, false);
        assert_eq!(
            o.stdout(),
            "ID              NAME   APIS          PUBLISHED  ACCESS         VISIBLE TO\n\
             shop            Shop   pets, orders  yes        authenticated  developers, partners\n\
             internal-tools  Tools  -             no         protected      -\n"
        );
        assert_eq!(o.stderr(), "");
    }

    #[test]
    fn key_table_and_next_page_hint() {
        let answer = json!({"items": [
            {"id": "key_1", "subscription": "sub_1", "app": "web", "plan": "gold", "name": "ci",
             "prefix": "tg_Ab3d", "created_at": "2026-01-01T00:00:00Z",
             "expires_at": "2026-12-31T00:00:00Z", "revoked_at": null, "rotated_to": null},
        ], "next": "key_1"});
        let o = render(&Show::List(Kind::Keys), &answer, false);
        assert_eq!(
            o.stdout(),
            "ID     APP  PLAN  PREFIX   EXPIRES               REVOKED\n\
             key_1  web  gold  tg_Ab3d  2026-12-31T00:00:00Z  -\n"
        );
        assert_eq!(
            o.stderr(),
            "more keys follow: --after key_1 for the next page, or --all\n"
        );
        // Audit pages by sequence number.
        let audit = json!({"items": [], "next": 42});
        let o = render(&Show::List(Kind::Audit), &audit, false);
        assert_eq!(o.stdout(), "");
        assert_eq!(
            o.stderr(),
            "no audit records\nmore audit records follow: --after 42 for the next page, or --all\n"
        );
    }

    #[test]
    fn plan_table_formats_limits() {
        let answer = json!({"items": [
            {"id": "gold", "product": "shop", "name": "Gold", "approval": "moderated",
             "rate_limits": [{"requests": 100, "per": "second"}, {"requests": 5000, "per": "hour"}],
             "quota": {"calls": 1000000, "period": "month"}},
            {"id": "free", "product": "shop", "name": "Free", "approval": "self-service",
             "rate_limits": [], "quota": null},
        ], "next": null});
        let expected = [
            format!(
                "ID    PRODUCT  NAME  APPROVAL      LIMITS{}QUOTA",
                " ".repeat(17)
            ),
            "gold  shop     Gold  moderated     100/second, 5000/hour  1000000/month".to_string(),
            format!("free  shop     Free  self-service  -{}-", " ".repeat(22)),
        ];
        assert_eq!(
            render(&Show::List(Kind::Plans), &answer, false).stdout(),
            expected.join("\n") + "\n"
        );
    }

    #[test]
    fn api_table() {
        let answer = json!({"items": [{
            "name": "pets", "manifest": "policies/demo.toml", "etag": "\"e1\"",
            "routes": [{"name": "get-pet", "path": "/pets/{id}", "methods": ["GET", "HEAD"], "hosts": []},
                       {"name": "echo", "prefix": "/echo", "methods": [], "hosts": []}],
            "upstream": {"targets": ["http://127.0.0.1:9090"]},
            "chain": [{"name": "log", "plugin": "access-log"}, {"plugin": "key-auth"}]}], "next": null});
        assert_eq!(
            render(&Show::List(Kind::Apis), &answer, false).stdout(),
            "NAME  ROUTES  CHAIN\npets  2       access-log > key-auth\n"
        );
        let o = render(&Show::Object(Kind::Apis), &answer["items"][0], false);
        assert_eq!(
            o.stdout(),
            "name      pets\n\
             manifest  policies/demo.toml\n\
             etag      \"e1\"\n\
             routes    get-pet: /pets/{id} [GET, HEAD]; echo: /echo (prefix)\n\
             upstream  http://127.0.0.1:9090\n\
             chain     log (access-log) > key-auth\n"
        );
    }

    #[test]
    fn get_listing_in_documented_order() {
        let plan = json!({"updated_at": "2026-01-02T00:00:00Z", "id": "gold", "zeta": {"a": 1},
            "product": "shop", "name": "Gold", "description": "",
            "rate_limits": [{"requests": 100, "per": "second"}],
            "quota": {"calls": 1000000, "period": "month"}, "approval": "self-service",
            "max_keys_per_app": 2, "created_at": "2026-01-01T00:00:00Z"});
        assert_eq!(
            render(&Show::Object(Kind::Plans), &plan, false).stdout(),
            "id                gold\n\
             product           shop\n\
             name              Gold\n\
             description       -\n\
             rate_limits       100/second\n\
             quota             1000000/month\n\
             approval          self-service\n\
             max_keys_per_app  2\n\
             created_at        2026-01-01T00:00:00Z\n\
             updated_at        2026-01-02T00:00:00Z\n\
             zeta              {\"a\":1}\n"
        );
    }

    #[test]
    fn secrets_alone_on_stdout() {
        let answer = json!({"key": {"id": "key_9", "app": "web", "plan": "gold", "prefix": "tg_Zz9x"},
                            "secret": "tg_Zz9xSECRET"});
        let show = Show::Secret {
            kind: Kind::Keys,
            object: "key",
            secret: "secret",
        };
        let o = render(&show, &answer, false);
        assert_eq!(o.stdout(), "tg_Zz9xSECRET\n");
        assert!(o.stderr().starts_with("id      key_9\n"), "{}", o.stderr());
        assert!(o.stderr().contains("shown only this once"));
        // The note comes before the secret.
        assert_eq!(o.parts.last().unwrap().0, Stream::Stdout);
        // --json: the whole answer, pretty, on stdout.
        let o = render(&show, &answer, true);
        assert_eq!(o.stdout(), format!("{}\n", pretty(&answer)));
        assert_eq!(o.stderr(), "");
    }

    #[test]
    fn user_token_note() {
        let answer = json!({"user": {"id": "ops", "role": "api-manager", "created_at": "2026-01-01T00:00:00Z"},
                            "token": "tga_abc"});
        let show = Show::Secret {
            kind: Kind::Users,
            object: "user",
            secret: "token",
        };
        let o = render(&show, &answer, false);
        assert_eq!(o.stdout(), "tga_abc\n");
        assert!(o
            .stderr()
            .contains("The token below is shown only this once"));
        assert!(o.stderr().contains("TOLLGATE_ADMIN_TOKEN"));
    }

    #[test]
    fn deleted_and_raw() {
        let show = Show::Deleted {
            kind: Kind::Products,
            id: "shop".into(),
        };
        assert_eq!(
            render(&show, &Value::Null, false).stdout(),
            "deleted product `shop`\n"
        );
        assert_eq!(render(&show, &Value::Null, true), Output::default());
        let doc = json!({"openapi": "3.1.0"});
        assert_eq!(
            render(&Show::Raw, &doc, false).stdout(),
            "{\n  \"openapi\": \"3.1.0\"\n}\n"
        );
    }

    #[test]
    fn chain_views() {
        let answer = json!({"etag": "\"abc\"", "chain": [
            {"name": "auth", "plugin": "key-auth", "fail_open": false, "grants": ["consumers"],
             "config": {"header": "x-api-key"}},
            {"plugin": "cache", "timeout": "20ms", "memory": "8MiB", "fail_open": true},
        ]});
        let o = render(
            &Show::Chain {
                of: "api `pets`".into(),
            },
            &answer,
            false,
        );
        assert_eq!(
            o.stdout(),
            "etag: \"abc\"\n\
             STEP  NAME   PLUGIN    FAIL_OPEN  TIMEOUT  MEMORY  GRANTS     CONFIG\n\
             1     auth   key-auth  no         -        -       consumers  {\"header\":\"x-api-key\"}\n\
             2     cache  cache     yes        20ms     8MiB    -          -\n"
        );
        let set = json!({"etag": "\"def\"", "chain": [{"plugin": "cache"}], "generation": 7});
        assert_eq!(
            render(
                &Show::ChainSet {
                    of: "api `pets`".into()
                },
                &set,
                false
            )
            .stdout(),
            "chain of api `pets` set: 1 step(s), generation 7, etag \"def\"\n"
        );
    }

    #[test]
    fn values() {
        assert_eq!(format_value(&json!(null)), "-");
        assert_eq!(format_value(&json!("")), "-");
        assert_eq!(format_value(&json!(["a", 1, true])), "a, 1, yes");
        assert_eq!(format_value(&json!([{"a": 1}])), "[{\"a\":1}]");
        assert_eq!(format_value(&json!({})), "{}");
        // A cell never spans lines.
        let rows = vec![vec!["a\nb".to_string(), "c".to_string()]];
        assert_eq!(align(&rows), "a b  c\n");
    }

    #[test]
    fn cells_keep_their_spaces_and_align_by_display_width() {
        let rows = vec![
            vec![" a ".to_string(), String::new(), "x".to_string()],
            vec!["日本".to_string(), "é".to_string(), "y\tz".to_string()],
        ];
        // "日本" is two characters but four columns wide on a terminal.
        assert_eq!(align(&rows), " a       x\n日本  é  y z\n");
        assert_eq!(align(&[]), "");
    }
}
