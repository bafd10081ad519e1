//! The command line of `tollgate admin <resource> <verb>`, and how each
//! command becomes one HTTP call ([`plan`]) and a way to show its answer.

use crate::body::{build_body, read_data};
use crate::chain;
use crate::error::Error;
use crate::render::{Kind, Show};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;

/// The client commands, one per resource of the admin API.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Admin users and their tokens (administrator only).
    #[command(subcommand)]
    Users(UserVerb),
    /// APIs (defined by the policy manifests) and their policy chains.
    #[command(subcommand)]
    Apis(ApiVerb),
    /// Policy chains at every scope (the gateway's, a product's, an API's, a
    /// route's), and what each route of an API runs.
    #[command(subcommand)]
    Chains(ScopeChainVerb),
    /// Version sets: APIs that are versions of one another.
    #[command(subcommand)]
    VersionSets(VersionSetVerb),
    /// Products: APIs offered together, published to the portal or not,
    /// visible to groups, protected or open.
    #[command(subcommand)]
    Products(Crud<ProductFilter>),
    /// Plans of a product: rate limits, quota, approval.
    #[command(subcommand)]
    Plans(Crud<PlanFilter>),
    /// Consumers: the people or organisations that own apps.
    #[command(subcommand)]
    Consumers(Crud<NoFilter>),
    /// Apps of a consumer.
    #[command(subcommand)]
    Apps(Crud<AppFilter>),
    /// Groups of consumers (products are visible to groups) and their members.
    #[command(subcommand)]
    Groups(GroupVerb),
    /// Subscriptions of apps to plans, and their approval.
    #[command(subcommand)]
    Subscriptions(SubscriptionVerb),
    /// API keys of an app for a plan.
    #[command(subcommand)]
    Keys(KeyVerb),
    /// OAuth clients of an app for a plan (client credentials; needs `[oauth]`).
    #[command(subcommand)]
    OauthClients(OAuthClientVerb),
    /// The keys that sign the gateway's OAuth access tokens.
    #[command(subcommand)]
    OauthKeys(OAuthKeyVerb),
    /// Consumers' developer-portal accounts: approve sign-ups, disable.
    #[command(subcommand)]
    Accounts(AccountVerb),
    /// The audit log of every change (administrator only).
    #[command(subcommand)]
    Audit(AuditVerb),
    /// Show the user and role of the token.
    Whoami,
    /// Print the admin API's OpenAPI description (JSON; needs no token).
    Openapi,
    /// Reports of the analytics store: calls, errors, latency, bytes.
    #[command(subcommand)]
    Analytics(Box<crate::analytics::AnalyticsVerb>),
}

/// Paging of a list.
#[derive(Args, Debug, Default)]
pub struct Page {
    /// Items per page (1-500; the API's default is 50).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub limit: Option<u16>,
    /// Start after this id (the `next` of the previous page).
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// Follow `next` and list every page.
    #[arg(long, conflicts_with = "after")]
    pub all: bool,
}

/// Query filters of a list.
pub trait Filter {
    /// `(name, value)` pairs for the query string.
    fn query(&self) -> Vec<(&'static str, String)>;
}

fn pairs(p: &[(&'static str, &Option<String>)]) -> Vec<(&'static str, String)> {
    p.iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v.clone())))
        .collect()
}

/// No filters.
#[derive(Args, Debug, Default)]
pub struct NoFilter {}

impl Filter for NoFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// Filters of `plans list`.
#[derive(Args, Debug, Default)]
pub struct PlanFilter {
    /// Only the plans of this product.
    #[arg(long)]
    pub product: Option<String>,
}

impl Filter for PlanFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        pairs(&[("product", &self.product)])
    }
}

/// Filters of `products list`.
#[derive(Args, Debug, Default)]
pub struct ProductFilter {
    /// Only the products visible to this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only the products visible to one of this consumer's groups.
    #[arg(long)]
    pub consumer: Option<String>,
    /// Only the products with this access.
    #[arg(long, value_parser = ["protected", "authenticated", "anonymous"])]
    pub access: Option<String>,
}

impl Filter for ProductFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        pairs(&[
            ("group", &self.group),
            ("consumer", &self.consumer),
            ("access", &self.access),
        ])
    }
}

/// Filters of `apps list`.
#[derive(Args, Debug, Default)]
pub struct AppFilter {
    /// Only the apps of this consumer.
    #[arg(long)]
    pub consumer: Option<String>,
}

impl Filter for AppFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        pairs(&[("consumer", &self.consumer)])
    }
}

/// Filters of `subscriptions list`.
#[derive(Args, Debug, Default)]
pub struct SubscriptionFilter {
    /// Only the subscriptions of this app.
    #[arg(long)]
    pub app: Option<String>,
    /// Only the subscriptions to this plan.
    #[arg(long)]
    pub plan: Option<String>,
    /// Only subscriptions in this state.
    #[arg(long, value_parser = ["pending", "active", "suspended", "rejected"])]
    pub state: Option<String>,
}

impl Filter for SubscriptionFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        pairs(&[
            ("app", &self.app),
            ("plan", &self.plan),
            ("state", &self.state),
        ])
    }
}

/// Filters of `keys list`.
#[derive(Args, Debug, Default)]
pub struct KeyFilter {
    /// Only the keys of this app.
    #[arg(long)]
    pub app: Option<String>,
    /// Only the keys of this subscription.
    #[arg(long, value_name = "ID")]
    pub subscription: Option<String>,
}

impl Filter for KeyFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        pairs(&[("app", &self.app), ("subscription", &self.subscription)])
    }
}

/// The fields of a create or update.
#[derive(Args, Debug, Default)]
pub struct Fields {
    /// `FIELD=VALUE` sets a string; `FIELD:=JSON` sets a number, `true`/`false`,
    /// `null`, a list or an object (quote it for the shell:
    /// `rate_limits:='[{"requests":10,"per":"second"}]'`).
    #[arg(value_name = "FIELD=VALUE | FIELD:=JSON")]
    pub fields: Vec<String>,
    /// The body as a JSON object, or `@FILE` to read it from a file (`@-`:
    /// standard input). FIELD arguments are set on top of it.
    #[arg(long, value_name = "JSON | @FILE")]
    pub data: Option<String>,
}

impl Fields {
    fn body(&self) -> Result<Value, Error> {
        let data = self.data.as_deref().map(read_data).transpose()?;
        build_body(data, &self.fields)
    }
}

/// List, get, create, update and delete.
#[derive(Subcommand, Debug)]
pub enum Crud<F: Args + Filter> {
    /// List them, in id order (a page at a time unless --all).
    List {
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        filter: F,
    },
    /// Show one.
    Get {
        /// Its id.
        id: String,
    },
    /// Create one from FIELD=VALUE and FIELD:=JSON arguments (the fields are
    /// in docs/admin-api.md).
    Create(Fields),
    /// Change the given fields of one (the id cannot change).
    Update {
        /// Its id.
        id: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Delete one.
    Delete {
        /// Its id.
        id: String,
    },
}

/// `users ...`
#[derive(Subcommand, Debug)]
pub enum UserVerb {
    #[command(flatten)]
    Crud(Crud<NoFilter>),
    /// Issue a new token for a user; the old one stops working at once.
    Token {
        /// Its id.
        id: String,
    },
}

/// `apis ...`
#[derive(Subcommand, Debug)]
pub enum ApiVerb {
    /// List the APIs of the serving configuration.
    List {
        #[command(flatten)]
        page: Page,
    },
    /// Show one API: routes, upstream, chain.
    Get {
        /// The API's name.
        name: String,
    },
    /// Show or replace an API's policy chain.
    #[command(subcommand)]
    Chain(ChainVerb),
    /// Create an API (written into a manifest; fields in docs/admin-api.md):
    /// `apis create name=orders upstream:='{"targets":["http://10.0.0.5:8080"]}'
    /// routes:='[{"prefix":"/orders"}]'`, or `--data @api.json`.
    Create(Fields),
    /// Replace an API's upstream, routes and document (and chain, if given).
    Replace {
        /// The API's name.
        name: String,
        #[command(flatten)]
        fields: Fields,
        /// Refuse (412) unless the manifest still has this etag.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// Delete an API from its manifest.
    Delete {
        /// The API's name.
        name: String,
        /// Refuse (412) unless the manifest still has this etag.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// Print the API's OpenAPI document as the gateway serves it.
    Openapi {
        /// The API's name.
        name: String,
    },
    /// Set an API's lifecycle: active, deprecated (its calls get
    /// `Deprecation`, `Sunset` and `Link` headers) or retired (410).
    Lifecycle {
        /// The API's name.
        name: String,
        /// `active`, `deprecated` or `retired`.
        #[arg(long)]
        state: String,
        /// When it was deprecated (RFC 3339); default for `deprecated`: now.
        #[arg(long, value_name = "TIME")]
        deprecated_at: Option<String>,
        /// When it stops being served (RFC 3339), announced in `Sunset`.
        #[arg(long, value_name = "TIME")]
        sunset: Option<String>,
        /// The API of the same version set that replaces it.
        #[arg(long, value_name = "API")]
        successor: Option<String>,
        /// Refuse (412) unless the manifest still has this etag.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// An API's revisions: staged copies served at `/.rev/{api}/{n}/...`.
    #[command(subcommand)]
    Revisions(RevisionVerb),
}

/// `apis revisions ...`
#[derive(Subcommand, Debug)]
pub enum RevisionVerb {
    /// List the current revision and the staged ones.
    List {
        /// The API's name.
        name: String,
    },
    /// Show one revision.
    Get {
        /// The API's name.
        name: String,
        /// The revision's number.
        number: u32,
    },
    /// Stage a new revision: a copy of the current definition.
    Create {
        /// The API's name.
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Its chain instead of a copy of the current one (as `chain set --file`).
        #[arg(long, short, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Refuse (412) unless the manifest still has this etag.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// Replace a staged revision's chain (as `chain set`).
    Chain {
        /// The API's name.
        name: String,
        /// The revision's number.
        number: u32,
        #[arg(long, short)]
        file: PathBuf,
        /// Refuse (412) unless the manifest still has this etag.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// Make a revision current (the current one becomes a revision).
    Promote {
        /// The API's name.
        name: String,
        /// The revision's number.
        number: u32,
        /// Refuse (412) unless the manifest still has this etag.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// Make the revision current before the last promotion current again.
    Rollback {
        /// The API's name.
        name: String,
        /// Refuse (412) unless the manifest still has this etag.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// Delete a staged revision.
    Delete {
        /// The API's name.
        name: String,
        /// The revision's number.
        number: u32,
        /// Refuse (412) unless the manifest still has this etag.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
}

/// `version-sets ...`
#[derive(Subcommand, Debug)]
pub enum VersionSetVerb {
    /// List the version sets with their versions.
    List,
    /// Show one version set.
    Get {
        /// The set's name.
        name: String,
    },
}

/// `apis chain ...`
#[derive(Subcommand, Debug)]
pub enum ChainVerb {
    /// Show the chain and its etag.
    Get {
        /// The API's name.
        name: String,
    },
    /// Replace the chain: validated like `tollgate check`, written to the
    /// API's manifest file and swapped in like a hot reload.
    Set {
        /// The API's name.
        name: String,
        /// The steps: JSON (`{"chain": [...]}` or a list of steps) or TOML
        /// (`[[chain]]` or `[[api.chain]]` tables, as in a manifest); `-`
        /// reads standard input.
        #[arg(long, short)]
        file: PathBuf,
        /// Refuse (412) unless the chain still has this etag (from `chain get`).
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
}

/// `chains ...`: a chain at any scope.
#[derive(Subcommand, Debug)]
pub enum ScopeChainVerb {
    /// Show the chain of a scope and its etag.
    Get {
        #[command(flatten)]
        scope: ChainScope,
    },
    /// Replace the chain of a scope: the whole configuration is built with
    /// it first (as `tollgate check`), then its manifest is rewritten and
    /// the configuration swapped in like a hot reload.
    Set {
        #[command(flatten)]
        scope: ChainScope,
        /// The steps: JSON (`{"chain": [...]}` or a list of steps) or TOML
        /// (`[[chain]]` tables, as in a manifest); `-` reads standard input.
        #[arg(long, short)]
        file: PathBuf,
        /// Refuse (412) unless the chain still has this etag (from `get`).
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// What each route of an API runs: the scopes composed, in order.
    Effective {
        /// The API's name.
        name: String,
    },
}

/// Which chain: `--gateway`, `--product ID`, `--api NAME` or `--api NAME
/// --route ROUTE`.
#[derive(Args, Debug)]
pub struct ChainScope {
    /// The gateway's chain: every API's.
    #[arg(long, conflicts_with_all = ["product", "api"])]
    gateway: bool,
    /// A product's chain: its callers', once a step identified them.
    #[arg(long, value_name = "ID", conflicts_with = "api")]
    product: Option<String>,
    /// An API's chain (with `--route`, one of its routes' own steps).
    #[arg(long, value_name = "NAME")]
    api: Option<String>,
    /// A route of the API (its `name`): the route's own steps.
    #[arg(long, value_name = "ROUTE", requires = "api")]
    route: Option<String>,
}

impl ChainScope {
    /// The path of the chain, and how to name it.
    fn target(&self) -> Result<(Vec<String>, String), Error> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        match (self.gateway, &self.product, &self.api, &self.route) {
            (true, None, None, None) => Ok((s(&["chain"]), "the gateway".into())),
            (false, Some(p), None, None) => {
                Ok((s(&["products", p, "chain"]), format!("product `{p}`")))
            }
            (false, None, Some(a), None) => Ok((s(&["apis", a, "chain"]), format!("api `{a}`"))),
            (false, None, Some(a), Some(r)) => Ok((
                s(&["apis", a, "routes", r, "chain"]),
                format!("api `{a}`, route `{r}`"),
            )),
            _ => Err(Error::Usage(
                "name the chain: --gateway, --product ID, --api NAME or --api NAME --route ROUTE"
                    .into(),
            )),
        }
    }
}

/// `subscriptions ...`
#[derive(Subcommand, Debug)]
pub enum SubscriptionVerb {
    #[command(flatten)]
    Crud(Crud<SubscriptionFilter>),
    /// Approve a pending subscription (state `active`).
    Approve {
        /// Its id.
        id: String,
    },
    /// Reject a pending subscription.
    Reject {
        /// Its id.
        id: String,
    },
    /// Suspend an active subscription: its keys stop working.
    Suspend {
        /// Its id.
        id: String,
    },
    /// Resume a suspended subscription (state `active`).
    Resume {
        /// Its id.
        id: String,
    },
    /// A new secret for the subscription's primary or secondary key: the
    /// old one stops at once, the other key keeps working.
    RegenerateKey {
        /// Its id.
        id: String,
        /// Which key.
        #[arg(value_parser = ["primary", "secondary"])]
        key: String,
    },
}

/// `groups ...`
#[derive(Subcommand, Debug)]
pub enum GroupVerb {
    #[command(flatten)]
    Crud(Crud<NoFilter>),
    /// The members of a custom group.
    Members {
        /// The group's id.
        id: String,
    },
    /// Make a consumer a member of a custom group.
    AddMember {
        /// The group's id.
        group: String,
        /// The consumer's id.
        consumer: String,
    },
    /// Take a consumer out of a custom group.
    RemoveMember {
        /// The group's id.
        group: String,
        /// The consumer's id.
        consumer: String,
    },
}

/// `keys ...`
#[derive(Subcommand, Debug)]
pub enum KeyVerb {
    #[command(flatten)]
    Crud(Crud<KeyFilter>),
    /// Issue a new key for the same subscription; the old one stops after the overlap.
    Rotate {
        /// The key's id.
        id: String,
        /// Seconds the old key keeps working (0-2592000; default 0).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(0..=2_592_000))]
        overlap: Option<u32>,
    },
    /// Stop a key at once.
    Revoke {
        /// Its id.
        id: String,
    },
}

/// `oauth-clients ...`
#[derive(Subcommand, Debug)]
pub enum OAuthClientVerb {
    #[command(flatten)]
    Crud(Crud<KeyFilter>),
    /// A new secret; the old one keeps working for the overlap.
    Rotate {
        /// The client's id (its client_id).
        id: String,
        /// Seconds the old secret keeps working (0-2592000; default 0).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(0..=2_592_000))]
        overlap: Option<u32>,
    },
    /// Stop a client and every token it holds at once.
    Revoke {
        /// Its id.
        id: String,
    },
}

/// `accounts ...`
#[derive(Subcommand, Debug)]
pub enum AccountVerb {
    /// List portal accounts.
    List {
        #[command(flatten)]
        page: Page,
        /// Only accounts in this state (`pending`: sign-ups awaiting approval).
        #[arg(long, value_parser = ["pending", "active", "disabled"])]
        state: Option<String>,
    },
    /// Show one account.
    Get {
        /// Its id (`acct_...`).
        id: String,
    },
    /// Approve a pending account: it may sign in.
    Approve {
        /// Its id.
        id: String,
    },
    /// Disable an account: its sessions end and it may not sign in.
    Disable {
        /// Its id.
        id: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// Its id.
        id: String,
    },
}

/// `oauth-keys ...`
#[derive(Subcommand, Debug)]
pub enum OAuthKeyVerb {
    /// The signing keys, newest first (public parts only).
    List,
    /// Sign with a new key from now on (administrator only); the old ones
    /// stay published until their tokens have expired.
    Rotate,
}

/// `audit ...`
#[derive(Subcommand, Debug)]
pub enum AuditVerb {
    /// List the audit log, oldest first (`--after` takes a sequence number).
    List {
        #[command(flatten)]
        page: Page,
    },
}

/// One HTTP call to the admin API and how to show its answer.
#[derive(Debug, PartialEq)]
pub struct Call {
    pub method: Method,
    /// Path segments after `/admin/v1`.
    pub path: Vec<String>,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
    pub if_match: Option<String>,
    /// Whether the call needs the token (all but the OpenAPI document).
    pub auth: bool,
    /// Follow `next` until the last page.
    pub all: bool,
    /// The answer is text (CSV), not JSON.
    pub text: bool,
    pub show: Show,
}

impl Call {
    fn new(method: Method, path: &[&str], show: Show) -> Call {
        Call {
            method,
            path: path.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
            if_match: None,
            auth: true,
            all: false,
            text: false,
            show,
        }
    }

    fn body(mut self, body: Value) -> Call {
        self.body = Some(body);
        self
    }
}

/// `call` with `If-Match: etag`, if given.
fn guarded(mut call: Call, etag: &Option<String>) -> Call {
    call.if_match = etag.clone();
    call
}

/// The call of an `apis revisions` command.
fn revisions(v: &RevisionVerb) -> Result<Call, Error> {
    let n = |n: &u32| n.to_string();
    Ok(match v {
        RevisionVerb::List { name } => {
            Call::new(Method::GET, &["apis", name, "revisions"], Show::Raw)
        }
        RevisionVerb::Get { name, number } => Call::new(
            Method::GET,
            &["apis", name, "revisions", &n(number)],
            Show::Raw,
        ),
        RevisionVerb::Create {
            name,
            description,
            file,
            if_match,
        } => {
            let mut body = json!({});
            if let Some(d) = description {
                body["description"] = d.as_str().into();
            }
            if let Some(f) = file {
                body["chain"] = chain::read(f, name)?["chain"].take();
            }
            let call = Call::new(Method::POST, &["apis", name, "revisions"], Show::Raw).body(body);
            guarded(call, if_match)
        }
        RevisionVerb::Chain {
            name,
            number,
            file,
            if_match,
        } => {
            let body = chain::read(file, name)?;
            let call = Call::new(
                Method::PUT,
                &["apis", name, "revisions", &n(number), "chain"],
                Show::ChainSet {
                    of: format!("api `{name}`"),
                },
            )
            .body(body);
            guarded(call, if_match)
        }
        RevisionVerb::Promote {
            name,
            number,
            if_match,
        } => guarded(
            Call::new(
                Method::POST,
                &["apis", name, "revisions", &n(number), "promote"],
                Show::Raw,
            ),
            if_match,
        ),
        RevisionVerb::Rollback { name, if_match } => guarded(
            Call::new(Method::POST, &["apis", name, "rollback"], Show::Raw),
            if_match,
        ),
        RevisionVerb::Delete {
            name,
            number,
            if_match,
        } => guarded(
            Call::new(
                Method::DELETE,
                &["apis", name, "revisions", &n(number)],
                Show::Raw,
            ),
            if_match,
        ),
    })
}

/// The call a command makes. Reads `--data @file` and chain files.
pub fn plan(command: &Command) -> Result<Call, Error> {
    match command {
        Command::Users(UserVerb::Crud(v)) => crud(Kind::Users, v),
        Command::Users(UserVerb::Token { id }) => Ok(Call::new(
            Method::POST,
            &["users", id, "token"],
            secret(Kind::Users),
        )),
        Command::Apis(ApiVerb::List { page }) => Ok(list(Kind::Apis, page, Vec::new())),
        Command::Apis(ApiVerb::Get { name }) => Ok(Call::new(
            Method::GET,
            &["apis", name],
            Show::Object(Kind::Apis),
        )),
        Command::Apis(ApiVerb::Chain(ChainVerb::Get { name })) => Ok(Call::new(
            Method::GET,
            &["apis", name, "chain"],
            Show::Chain {
                of: format!("api `{name}`"),
            },
        )),
        Command::Apis(ApiVerb::Chain(ChainVerb::Set {
            name,
            file,
            if_match,
        })) => {
            let body = chain::read(file, name)?;
            let mut call = Call::new(
                Method::PUT,
                &["apis", name, "chain"],
                Show::ChainSet {
                    of: format!("api `{name}`"),
                },
            )
            .body(body);
            call.if_match = if_match.clone();
            Ok(call)
        }
        Command::Chains(ScopeChainVerb::Get { scope }) => {
            let (path, of) = scope.target()?;
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            Ok(Call::new(Method::GET, &path, Show::Chain { of }))
        }
        Command::Chains(ScopeChainVerb::Set {
            scope,
            file,
            if_match,
        }) => {
            let (path, of) = scope.target()?;
            let body = chain::read(file, scope.api.as_deref().unwrap_or(""))?;
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let mut call = Call::new(Method::PUT, &path, Show::ChainSet { of }).body(body);
            call.if_match = if_match.clone();
            Ok(call)
        }
        Command::Chains(ScopeChainVerb::Effective { name }) => Ok(Call::new(
            Method::GET,
            &["apis", name, "effective-chains"],
            Show::Effective { api: name.clone() },
        )),
        Command::Apis(ApiVerb::Create(fields)) => {
            Ok(Call::new(Method::POST, &["apis"], Show::Object(Kind::Apis)).body(fields.body()?))
        }
        Command::Apis(ApiVerb::Replace {
            name,
            fields,
            if_match,
        }) => {
            let call = Call::new(Method::PUT, &["apis", name], Show::Object(Kind::Apis))
                .body(fields.body()?);
            Ok(guarded(call, if_match))
        }
        Command::Apis(ApiVerb::Delete { name, if_match }) => {
            let call = Call::new(Method::DELETE, &["apis", name], Show::Raw);
            Ok(guarded(call, if_match))
        }
        Command::Apis(ApiVerb::Openapi { name }) => Ok(Call::new(
            Method::GET,
            &["apis", name, "openapi"],
            Show::Raw,
        )),
        Command::Apis(ApiVerb::Lifecycle {
            name,
            state,
            deprecated_at,
            sunset,
            successor,
            if_match,
        }) => {
            let mut body = json!({ "state": state });
            for (k, v) in [
                ("deprecated_at", deprecated_at),
                ("sunset", sunset),
                ("successor", successor),
            ] {
                if let Some(v) = v {
                    body[k] = v.as_str().into();
                }
            }
            let call = Call::new(Method::PUT, &["apis", name, "lifecycle"], Show::Raw).body(body);
            Ok(guarded(call, if_match))
        }
        Command::Apis(ApiVerb::Revisions(v)) => revisions(v),
        Command::VersionSets(VersionSetVerb::List) => {
            Ok(Call::new(Method::GET, &["version-sets"], Show::Raw))
        }
        Command::VersionSets(VersionSetVerb::Get { name }) => {
            Ok(Call::new(Method::GET, &["version-sets", name], Show::Raw))
        }
        Command::Products(v) => crud(Kind::Products, v),
        Command::Plans(v) => crud(Kind::Plans, v),
        Command::Consumers(v) => crud(Kind::Consumers, v),
        Command::Apps(v) => crud(Kind::Apps, v),
        Command::Groups(v) => Ok(groups(v)?),
        Command::Subscriptions(SubscriptionVerb::Crud(Crud::Create(fields))) => {
            Ok(
                Call::new(Method::POST, &["subscriptions"], Show::SubscriptionCreated)
                    .body(fields.body()?),
            )
        }
        Command::Subscriptions(SubscriptionVerb::RegenerateKey { id, key }) => Ok(Call::new(
            Method::POST,
            &["subscriptions", id, "keys", key, "regenerate"],
            Show::Secret {
                kind: Kind::Subscriptions,
                object: "subscription",
                secret: "secret",
            },
        )
        .body(json!({}))),
        Command::Subscriptions(SubscriptionVerb::Crud(v)) => crud(Kind::Subscriptions, v),
        Command::Subscriptions(
            SubscriptionVerb::Approve { id } | SubscriptionVerb::Resume { id },
        ) => Ok(move_to(id, "active")),
        Command::Subscriptions(SubscriptionVerb::Reject { id }) => Ok(move_to(id, "rejected")),
        Command::Subscriptions(SubscriptionVerb::Suspend { id }) => Ok(move_to(id, "suspended")),
        Command::Keys(KeyVerb::Crud(Crud::Create(fields))) => {
            Ok(Call::new(Method::POST, &["keys"], secret(Kind::Keys)).body(fields.body()?))
        }
        Command::Keys(KeyVerb::Crud(v)) => crud(Kind::Keys, v),
        Command::Keys(KeyVerb::Rotate { id, overlap }) => {
            let body = match overlap {
                Some(s) => json!({ "overlap_seconds": s }),
                None => json!({}),
            };
            Ok(Call::new(Method::POST, &["keys", id, "rotate"], secret(Kind::Keys)).body(body))
        }
        Command::Keys(KeyVerb::Revoke { id }) => Ok(Call::new(
            Method::POST,
            &["keys", id, "revoke"],
            Show::Object(Kind::Keys),
        )),
        Command::OauthClients(OAuthClientVerb::Crud(Crud::Create(fields))) => {
            Ok(
                Call::new(Method::POST, &["oauth-clients"], secret(Kind::OAuthClients))
                    .body(fields.body()?),
            )
        }
        Command::OauthClients(OAuthClientVerb::Crud(v)) => crud(Kind::OAuthClients, v),
        Command::OauthClients(OAuthClientVerb::Rotate { id, overlap }) => {
            let body = match overlap {
                Some(s) => json!({ "overlap_seconds": s }),
                None => json!({}),
            };
            Ok(Call::new(
                Method::POST,
                &["oauth-clients", id, "rotate"],
                secret(Kind::OAuthClients),
            )
            .body(body))
        }
        Command::OauthClients(OAuthClientVerb::Revoke { id }) => Ok(Call::new(
            Method::POST,
            &["oauth-clients", id, "revoke"],
            Show::Object(Kind::OAuthClients),
        )),
        Command::OauthKeys(OAuthKeyVerb::List) => {
            Ok(Call::new(Method::GET, &["oauth-keys"], Show::Raw))
        }
        Command::OauthKeys(OAuthKeyVerb::Rotate) => Ok(Call::new(
            Method::POST,
            &["oauth-keys", "rotate"],
            Show::Raw,
        )),
        Command::Accounts(AccountVerb::List { page, state }) => {
            Ok(list(Kind::Accounts, page, pairs(&[("state", state)])))
        }
        Command::Accounts(AccountVerb::Get { id }) => Ok(Call::new(
            Method::GET,
            &["accounts", id],
            Show::Object(Kind::Accounts),
        )),
        Command::Accounts(
            AccountVerb::Approve { id } | AccountVerb::Disable { id } | AccountVerb::Enable { id },
        ) => {
            let action = match command {
                Command::Accounts(AccountVerb::Approve { .. }) => "approve",
                Command::Accounts(AccountVerb::Disable { .. }) => "disable",
                _ => "enable",
            };
            Ok(Call::new(
                Method::POST,
                &["accounts", id, action],
                Show::Object(Kind::Accounts),
            ))
        }
        Command::Audit(AuditVerb::List { page }) => Ok(list(Kind::Audit, page, Vec::new())),
        Command::Whoami => Ok(Call::new(
            Method::GET,
            &["whoami"],
            Show::Object(Kind::Whoami),
        )),
        Command::Openapi => {
            let mut call = Call::new(Method::GET, &["openapi.json"], Show::Raw);
            call.auth = false;
            Ok(call)
        }
        Command::Analytics(verb) => Ok(crate::analytics::plan(verb)),
    }
}

fn secret(kind: Kind) -> Show {
    match kind {
        Kind::Users => Show::Secret {
            kind,
            object: "user",
            secret: "token",
        },
        Kind::OAuthClients => Show::Secret {
            kind,
            object: "client",
            secret: "client_secret",
        },
        _ => Show::Secret {
            kind,
            object: "key",
            secret: "secret",
        },
    }
}

/// `groups ...`: the generic verbs, and membership.
fn groups(verb: &GroupVerb) -> Result<Call, Error> {
    Ok(match verb {
        GroupVerb::Crud(v) => crud(Kind::Groups, v)?,
        GroupVerb::Members { id } => Call::new(Method::GET, &["groups", id, "members"], Show::Raw),
        GroupVerb::AddMember { group, consumer } => Call::new(
            Method::PUT,
            &["groups", group, "members", consumer],
            Show::Done(format!("`{consumer}` is a member of group `{group}`")),
        ),
        GroupVerb::RemoveMember { group, consumer } => Call::new(
            Method::DELETE,
            &["groups", group, "members", consumer],
            Show::Done(format!(
                "`{consumer}` is no longer a member of group `{group}`"
            )),
        ),
    })
}

fn move_to(id: &str, state: &str) -> Call {
    Call::new(
        Method::PATCH,
        &["subscriptions", id],
        Show::Object(Kind::Subscriptions),
    )
    .body(json!({ "state": state }))
}

fn list(kind: Kind, page: &Page, mut query: Vec<(&'static str, String)>) -> Call {
    if let Some(limit) = page.limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(after) = &page.after {
        query.push(("after", after.clone()));
    }
    let mut call = Call::new(Method::GET, &[kind.path()], Show::List(kind));
    call.query = query;
    call.all = page.all;
    call
}

fn crud<F: Args + Filter>(kind: Kind, verb: &Crud<F>) -> Result<Call, Error> {
    let p = kind.path();
    Ok(match verb {
        Crud::List { page, filter } => list(kind, page, filter.query()),
        Crud::Get { id } => Call::new(Method::GET, &[p, id], Show::Object(kind)),
        Crud::Create(fields) => {
            let show = if kind == Kind::Users {
                secret(kind)
            } else {
                Show::Object(kind)
            };
            Call::new(Method::POST, &[p], show).body(fields.body()?)
        }
        Crud::Update { id, fields } => {
            let body = fields.body()?;
            if body.as_object().is_some_and(|m| m.is_empty()) {
                return Err(Error::Usage(format!(
                    "nothing to update: give FIELD=VALUE or FIELD:=JSON arguments after `{id}`, or --data"
                )));
            }
            Call::new(Method::PATCH, &[p, id], Show::Object(kind)).body(body)
        }
        Crud::Delete { id } => Call::new(
            Method::DELETE,
            &[p, id],
            Show::Deleted {
                kind,
                id: id.clone(),
            },
        ),
    })
}
