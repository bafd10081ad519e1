//! The control plane's resources: as stored (JSON in the store) and as
//! written by callers (create and update bodies, which refuse unknown
//! fields). Secrets are never part of a resource: keys and tokens are held
//! as SHA-256 digests in fields the views leave out.

use super::error::{truncate, AdminError};
pub use crate::domain::consumer::{ANONYMOUS, DEVELOPERS, GUESTS};
pub use crate::domain::time::{Period, Ts};
use serde::{Deserialize, Deserializer, Serialize};

/// A resource family the registry stores: its store prefix (`sub` for
/// `sub/ID`) and its name in messages ("subscription `x` does not exist").
pub trait Resource: Serialize + serde::de::DeserializeOwned + Send + 'static {
    const KIND: &'static str;
    const NAME: &'static str;
}

macro_rules! resource {
    ($($t:ty => $kind:literal, $name:literal;)*) => {
        $(impl Resource for $t {
            const KIND: &'static str = $kind;
            const NAME: &'static str = $name;
        })*
    };
}

resource! {
    User => "user", "user";
    Product => "product", "product";
    Plan => "plan", "plan";
    Consumer => "consumer", "consumer";
    App => "app", "app";
    Subscription => "sub", "subscription";
    Key => "key", "key";
    OAuthClient => "oauth-client", "OAuth client";
    Account => "account", "account";
    Group => "group", "group";
}

// ---------------------------------------------------------------------------
// Time

/// For update bodies: absent (`None`), `null` (`Some(None)`) or a value.
pub fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// For optional fields that may be absent but not `null` (with
/// `#[serde(default)]`): `null` is refused as the wrong type.
pub fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A whole number as JSON may write it: `5` or `5.0` (JSON Schema, and so
/// the OpenAPI document, counts both as integers); `5.5`, negatives and
/// numbers out of `T`'s range are refused.
pub fn whole<'de, T: TryFrom<u64>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &"a number from 0"))
        }
        fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<u64, E> {
            // 2^64 is the first float beyond u64.
            if x.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&x) {
                Ok(x as u64)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(x), &self))
            }
        }
    }
    let n = d.deserialize_any(V)?;
    T::try_from(n).map_err(|_| {
        serde::de::Error::invalid_value(serde::de::Unexpected::Unsigned(n), &"a smaller number")
    })
}

/// [`whole`] for an optional field that may be absent but not `null`.
pub fn some_whole<'de, T: TryFrom<u64>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    whole(d).map(Some)
}

// ---------------------------------------------------------------------------
// Ids

/// Check a caller-chosen id.
pub fn check_id(field: &str, id: &str) -> Result<(), AdminError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(AdminError::invalid(
            field,
            format!(
                "`{}` is not a valid id: 1-64 characters of a-z, 0-9, `-`, `_`, `.`, starting with a letter or digit",
                truncate(id, 80)
            ),
        ))
    }
}

/// Check a free text field.
pub fn check_text(field: &str, s: &str, max: usize) -> Result<(), AdminError> {
    if s.chars().count() > max {
        return Err(AdminError::invalid(
            field,
            format!("at most {max} characters"),
        ));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(AdminError::invalid(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Admin users

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Administrator,
    ApiManager,
    CommunityManager,
    ReportsUser,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::ApiManager => "api-manager",
            Role::CommunityManager => "community-manager",
            Role::ReportsUser => "reports-user",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub role: Role,
    pub created_at: Ts,
    /// SHA-256 of the bearer token, hex. Never shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub id: String,
    pub role: Role,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[serde(default, deserialize_with = "present")]
    pub role: Option<Role>,
}

// ---------------------------------------------------------------------------
// Products and plans

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    pub apis: Vec<String>,
    pub published: bool,
    /// Who may call the product's APIs without a subscription to it
    /// (records written before there was a choice are `protected`).
    #[serde(default)]
    pub access: Access,
    /// The groups whose members see the product in the portal's catalogue
    /// (records written before there were groups: `developers`).
    #[serde(default = "default_visible_to")]
    pub visible_to: Vec<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// Who may call a product's APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Callers need a subscription to one of the product's plans (and a key
    /// issued under it).
    #[default]
    Protected,
    /// Open to any consumer with a valid key (of any subscription), without
    /// a subscription to this product.
    Authenticated,
    /// Open to calls without any credential, too (as consumer
    /// [`ANONYMOUS`]), and to any consumer with a valid key.
    Anonymous,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Protected => "protected",
            Access::Authenticated => "authenticated",
            Access::Anonymous => "anonymous",
        }
    }

    /// Whether a call needs no subscription to the product.
    pub fn is_open(self) -> bool {
        self != Access::Protected
    }
}

fn default_visible_to() -> Vec<String> {
    vec![DEVELOPERS.to_string()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductCreate {
    pub id: String,
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub apis: Vec<String>,
    #[serde(default)]
    pub published: bool,
    #[serde(default)]
    pub access: Access,
    #[serde(default = "default_visible_to")]
    pub visible_to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductUpdate {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub apis: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub published: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub access: Option<Access>,
    #[serde(default, deserialize_with = "present")]
    pub visible_to: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------
// Groups

/// The system groups: they always exist, cannot be created, changed or
/// deleted, and their membership is implicit.
pub const SYSTEM_GROUPS: [&str; 2] = [DEVELOPERS, GUESTS];

/// A group of consumers, which products are made visible to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: String,
    /// `developers` and `guests`: built in.
    pub system: bool,
    pub created_at: Ts,
    pub updated_at: Ts,
}

impl Group {
    /// A system group as the API shows it (never stored).
    pub fn system(id: &str) -> Option<Group> {
        let description = match id {
            DEVELOPERS => "Every consumer (implicit membership).",
            GUESTS => "Callers without credentials and visitors who are not signed in.",
            _ => return None,
        };
        let mut name = id.to_string();
        name[..1].make_ascii_uppercase();
        Some(Group {
            id: id.to_string(),
            name,
            description: description.to_string(),
            system: true,
            created_at: Ts(0),
            updated_at: Ts(0),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCreate {
    pub id: String,
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupUpdate {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Per {
    Second,
    Minute,
    Hour,
    Day,
}

impl Per {
    pub fn window_ms(self) -> u64 {
        match self {
            Per::Second => 1_000,
            Per::Minute => 60_000,
            Per::Hour => 3_600_000,
            Per::Day => 86_400_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(deserialize_with = "whole")]
    pub requests: u64,
    pub per: Per,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[serde(deserialize_with = "whole")]
    pub calls: u64,
    pub period: Period,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Approval {
    #[default]
    SelfService,
    Moderated,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub product: String,
    pub name: String,
    pub description: String,
    pub rate_limits: Vec<RateLimit>,
    pub quota: Option<Quota>,
    pub approval: Approval,
    pub max_keys_per_app: u32,
    /// The OAuth scopes a client under this plan may ask for (and gets
    /// when it asks for none).
    #[serde(default)]
    pub scopes: Vec<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

fn default_max_keys() -> u32 {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCreate {
    pub id: String,
    pub product: String,
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    #[serde(default)]
    pub quota: Option<Quota>,
    #[serde(default)]
    pub approval: Approval,
    #[serde(default = "default_max_keys", deserialize_with = "whole")]
    pub max_keys_per_app: u32,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanUpdate {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub rate_limits: Option<Vec<RateLimit>>,
    #[serde(default, deserialize_with = "double_option")]
    pub quota: Option<Option<Quota>>,
    #[serde(default, deserialize_with = "present")]
    pub approval: Option<Approval>,
    #[serde(default, deserialize_with = "some_whole")]
    pub max_keys_per_app: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    pub scopes: Option<Vec<String>>,
}

/// The most scopes a plan has.
pub const MAX_SCOPES: usize = 32;

/// Check a plan's OAuth scopes: RFC 6749 §3.3 scope tokens (printable
/// ASCII but space, `"` and `\`), at most 64 characters each, no
/// duplicates, at most [`MAX_SCOPES`].
pub fn check_scopes(scopes: &[String]) -> Result<(), AdminError> {
    if scopes.len() > MAX_SCOPES {
        return Err(AdminError::invalid(
            "scopes",
            format!("at most {MAX_SCOPES} scopes"),
        ));
    }
    for (i, s) in scopes.iter().enumerate() {
        if !crate::domain::oauth::valid_scope(s) {
            return Err(AdminError::invalid(
                "scopes",
                format!(
                    "`{}` is not a scope: 1-64 printable ASCII characters without spaces, `\"` or `\\`",
                    truncate(s, 80)
                ),
            ));
        }
        if scopes[..i].contains(s) {
            return Err(AdminError::invalid(
                "scopes",
                format!("`{s}` appears twice"),
            ));
        }
    }
    Ok(())
}

/// Check a plan's limits.
pub fn check_plan_limits(
    rate_limits: &[RateLimit],
    quota: Option<&Quota>,
    max_keys: u32,
) -> Result<(), AdminError> {
    if rate_limits.len() > 8 {
        return Err(AdminError::invalid("rate_limits", "at most 8 rate limits"));
    }
    for (i, l) in rate_limits.iter().enumerate() {
        if l.requests == 0 || l.requests > 1_000_000_000 {
            return Err(AdminError::invalid(
                format!("rate_limits[{i}].requests"),
                "must be between 1 and 1000000000",
            ));
        }
    }
    if let Some(q) = quota {
        if q.calls == 0 || q.calls > 1_000_000_000_000 {
            return Err(AdminError::invalid(
                "quota.calls",
                "must be between 1 and 1000000000000",
            ));
        }
    }
    if !(1..=100).contains(&max_keys) {
        return Err(AdminError::invalid(
            "max_keys_per_app",
            "must be between 1 and 100",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Consumers and apps

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Consumer {
    pub id: String,
    pub name: String,
    /// Empty: none (then left out of the JSON).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerCreate {
    pub id: String,
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerUpdate {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    /// `null` removes the email address.
    #[serde(default, deserialize_with = "double_option")]
    pub email: Option<Option<String>>,
}

/// Check an email address (when one is given it is not empty: leave the
/// field out, or `null` in an update, for none).
pub fn check_email(email: &str) -> Result<(), AdminError> {
    check_text("email", email, 254)?;
    let ok = email.split_once('@').is_some_and(|(l, d)| {
        !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
    }) && !email.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(AdminError::invalid(
            "email",
            format!("`{}` is not an email address", truncate(email, 80)),
        ))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    pub consumer: String,
    pub name: String,
    pub description: String,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCreate {
    pub id: String,
    pub consumer: String,
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppUpdate {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
}

// ---------------------------------------------------------------------------
// Subscriptions and keys

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubState {
    Pending,
    Active,
    Rejected,
    Suspended,
}

impl SubState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubState::Pending => "pending",
            SubState::Active => "active",
            SubState::Rejected => "rejected",
            SubState::Suspended => "suspended",
        }
    }

    /// Whether `self -> to` is an allowed move.
    pub fn can_move(self, to: SubState) -> bool {
        use SubState::*;
        matches!(
            (self, to),
            (Pending, Active) | (Pending, Rejected) | (Active, Suspended) | (Suspended, Active)
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub app: String,
    pub plan: String,
    pub product: String,
    pub state: SubState,
    /// The subscription's own keys (records written before there were
    /// any have none: their apps' keys still work).
    #[serde(default)]
    pub keys: SubKeys,
    /// SHA-256 of the primary key, hex. Never shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub primary_sha256: String,
    /// SHA-256 of the secondary key, hex. Never shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secondary_sha256: String,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// What is shown of a subscription's primary and secondary keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubKeys {
    pub primary: Option<SubKey>,
    pub secondary: Option<SubKey>,
}

/// One of a subscription's keys: its first characters and when it was
/// issued (the secret is shown once, its digest kept hidden).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubKey {
    pub prefix: String,
    pub created_at: Ts,
}

/// Which of a subscription's two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Primary,
    Secondary,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Primary => "primary",
            Slot::Secondary => "secondary",
        }
    }

    /// `primary` or `secondary`, or a 400 naming both.
    pub fn parse(s: &str) -> Result<Slot, AdminError> {
        match s {
            "primary" => Ok(Slot::Primary),
            "secondary" => Ok(Slot::Secondary),
            _ => Err(AdminError::invalid(
                "key",
                format!(
                    "`{}` is not a subscription key: expected primary or secondary",
                    truncate(s, 40)
                ),
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionCreate {
    pub app: String,
    pub plan: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionUpdate {
    pub state: SubState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Key {
    pub id: String,
    pub subscription: String,
    pub app: String,
    pub plan: String,
    pub name: String,
    pub prefix: String,
    pub created_at: Ts,
    pub expires_at: Option<Ts>,
    pub revoked_at: Option<Ts>,
    pub rotated_to: Option<String>,
    /// SHA-256 of the secret, hex. Never shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
}

impl Key {
    /// Not revoked and not expired at `now`.
    pub fn live(&self, now: Ts) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCreate {
    pub app: String,
    pub plan: String,
    #[serde(default)]
    pub name: String,
    pub expires_at: Option<Ts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub expires_at: Option<Option<Ts>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyRotate {
    #[serde(default, deserialize_with = "whole")]
    pub overlap_seconds: u64,
}

/// The longest rotation overlap: 30 days.
pub const MAX_OVERLAP_SECONDS: u64 = 30 * 86_400;

// ---------------------------------------------------------------------------
// OAuth clients and the tokens issued to them

/// An OAuth 2.0 client of an app under one of its subscriptions (the
/// client credentials grant): its id is the `client_id`, its secret is
/// held as a SHA-256 digest. A rotation keeps the previous secret valid
/// through an overlap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthClient {
    pub id: String,
    pub subscription: String,
    pub app: String,
    pub plan: String,
    pub name: String,
    pub created_at: Ts,
    pub revoked_at: Option<Ts>,
    /// When the secret was last rotated.
    pub rotated_at: Option<Ts>,
    /// Until when the secret before the last rotation is still accepted.
    pub previous_until: Option<Ts>,
    /// SHA-256 of the secret, hex. Never shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// SHA-256 of the previous secret, hex. Never shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous_sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientCreate {
    pub app: String,
    pub plan: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientUpdate {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
}

/// An access token the gateway issued, by its `jti`: what introspection
/// and the data path's lookup read, and what revocation marks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedToken {
    pub jti: String,
    pub client: String,
    pub subscription: String,
    /// Space-separated, as in the token.
    pub scope: String,
    pub issued_at: Ts,
    pub expires_at: Ts,
    pub revoked: bool,
}

/// A key that signs access tokens. The private key never leaves the
/// registry and the authorization server; views show the public part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// `ES256`.
    pub alg: String,
    /// The PKCS#8 document, base64url.
    pub pkcs8: String,
    /// The public point's coordinates, base64url (the JWK's `x`, `y`).
    pub x: String,
    pub y: String,
    pub created_at: Ts,
    /// When a newer key took over signing; the key is still published
    /// until the tokens it signed have expired.
    pub retired_at: Option<Ts>,
}

// ---------------------------------------------------------------------------
// Portal accounts

/// Where a consumer's portal account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountState {
    /// Signed up on a moderated portal: waits for an administrator.
    Pending,
    Active,
    /// May not sign in; its sessions end.
    Disabled,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Pending => "pending",
            AccountState::Active => "active",
            AccountState::Disabled => "disabled",
        }
    }
}

/// A consumer's sign-in to the developer portal: one per consumer, created
/// with it at sign-up; the email is unique regardless of case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub consumer: String,
    pub email: String,
    pub name: String,
    pub state: AccountState,
    pub created_at: Ts,
    pub updated_at: Ts,
    /// The Argon2id hash (PHC string) of the password. Never shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password_hash: String,
}

// ---------------------------------------------------------------------------
// Audit

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: Ts,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub id: String,
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_roundtrip() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2026-11-23T10:00:00Z",
            "2000-02-29T23:59:59.123Z",
            "2100-03-01T00:00:00Z",
        ] {
            assert_eq!(Ts::parse(s).unwrap().rfc3339(), s);
        }
        assert_eq!(
            Ts::parse("2027-01-01T02:00:00+02:00").unwrap().rfc3339(),
            "2027-01-01T00:00:00Z"
        );
        assert!(Ts::parse("2027-01-01").is_none());
        assert_eq!(Ts::parse("0343-03-31T21:03:02Z"), Some(Ts(0)));
        assert!(Ts::parse("tomorrow").is_none());
    }

    #[test]
    fn ids_and_text() {
        assert!(check_id("id", "gold-1.a_b").is_ok());
        for bad in ["", "Gold", "-x", "a b", &"x".repeat(65), "é"] {
            assert!(check_id("id", bad).is_err(), "{bad}");
        }
        assert!(check_text("name", "ok\tline", 10).is_ok());
        assert!(check_text("name", "bad\u{1b}[31m", 100).is_err());
        assert!(check_email("a@b.io").is_ok());
        assert!(check_email("nope").is_err());
        assert!(check_email("a @b.io").is_err());
        assert!(check_email("").is_err());
    }

    #[test]
    fn whole_numbers_and_present_fields() {
        let q: Quota = serde_json::from_str(r#"{"calls": 5.0, "period": "day"}"#).unwrap();
        assert_eq!(q.calls, 5);
        for bad in ["5.5", "-1", "-1.0", "1e20", "\"5\""] {
            let text = format!(r#"{{"calls": {bad}, "period": "day"}}"#);
            assert!(serde_json::from_str::<Quota>(&text).is_err(), "{bad}");
        }
        let u: PlanUpdate = serde_json::from_str(r#"{"max_keys_per_app": 7.0}"#).unwrap();
        assert_eq!(u.max_keys_per_app, Some(7));
        assert!(serde_json::from_str::<PlanUpdate>(r#"{"max_keys_per_app": 5e9}"#).is_err());
        assert!(serde_json::from_str::<PlanUpdate>(r#"{"max_keys_per_app": null}"#).is_err());
        assert!(serde_json::from_str::<PlanUpdate>(r#"{"name": null}"#).is_err());
        let u: PlanUpdate = serde_json::from_str(r#"{"quota": null}"#).unwrap();
        assert_eq!(u.quota, Some(None));
        let c: ConsumerUpdate = serde_json::from_str(r#"{"email": null}"#).unwrap();
        assert_eq!(c.email, Some(None));
    }

    #[test]
    fn subscription_moves() {
        use SubState::*;
        assert!(Pending.can_move(Active));
        assert!(Suspended.can_move(Active));
        assert!(!Rejected.can_move(Active));
        assert!(!Active.can_move(Pending));
    }
}
