//! Per-step conditions: `when = "<CEL expression>"` in a policy manifest.
//!
//! A condition is compiled once, when the manifest loads ([`Condition::compile`]),
//! and evaluated for each call before its step runs ([`Condition::eval`]): `false`
//! skips the step.
//!
//! # What a condition can read
//!
//! | name | type |
//! |---|---|
//! | `request.method`, `request.path`, `request.host`, `request.route`, `request.api` | string |
//! | `request.client` | string (the client IP address) |
//! | `request.headers` | map(string, string): lower-case names, repeated values joined with `", "` |
//! | `request.query` | map(string, string): the first value of a repeated name |
//! | `request.captures` | map(string, string): path template captures |
//! | `caller.consumer`, `caller.app`, `caller.plan`, `caller.product` | string, `""` when unknown |
//! | `caller.authenticated` | bool: a consumer is known |
//! | `caller.groups` | list(string) |
//!
//! Functions: the CEL operators, `size`, `contains`, `startsWith`, `endsWith`,
//! `matches` (with a string literal pattern), `in`, `int`, `string`, `lowerAscii`,
//! `upperAscii`, and the macros `has`, `all`, `exists`, `exists_one`, `map` and
//! `filter`. Anything else is rejected when the condition compiles.
//!
//! # Checks at compile time
//!
//! cel 0.15 has no type checker, so this module walks the parsed expression
//! itself: every identifier, field and function must be known, and a small type
//! inference rejects obvious mistakes (a condition that is not a bool, a string
//! compared with an int, ...). Where a type cannot be inferred, the value is
//! checked when the condition runs.
//!
//! # Why evaluation is bounded
//!
//! A condition is at most [`MAX_SOURCE_BYTES`] long, has at most [`MAX_NODES`]
//! nodes after macro expansion and nests at most [`MAX_DEPTH`] levels, so the
//! interpreter's recursion is shallow. It has no loops but comprehensions, and
//! those may only iterate over what the host supplies (`request.headers`,
//! `request.query`, `request.captures`, `caller.groups`, whose sizes the host
//! bounds), over lists and maps written in the condition (which count towards
//! the node limit), or over the result of another comprehension (no larger than
//! its own input); they nest at most [`MAX_COMPREHENSION_NESTING`] deep. So one
//! evaluation visits at most about `MAX_NODES × N^2` nodes, `N` being the largest
//! host-supplied collection. Values only grow through `+` (at most doubling per
//! node) and `map`/`filter` (one element per element of their input). Patterns
//! of `matches` are compiled once, with a size limit, by the `regex` crate,
//! which matches in time linear in the input.
//!
//! The interpreter recurses once per level: at [`MAX_DEPTH`] levels it was
//! measured to need about 1.5 MiB of stack in a debug build and under 64 KiB in
//! a release build, so evaluate on threads with the usual 2 MiB stack.
//!
//! # Facts are fetched before evaluation
//!
//! The facts a condition mentions are found when it compiles, and only those
//! are asked of [`Facts`] for a call, all before evaluation starts (cel's
//! variable resolver must be `Send + Sync`, which `&dyn Facts` is not, so it
//! cannot call back into the host): `caller.plan == "x" || "p" in
//! caller.groups` calls [`Facts::groups`] even when the plan matches. When a
//! condition only looks keys of `request.headers`, `request.query` or
//! `request.captures` up by name, the map is built with those keys alone.
//!
//! # Parsing deep input
//!
//! The cel parser (ANTLR-generated) recurses deeply: a dozen nested brackets
//! overflow a 2 MiB stack in a debug build. So brackets are counted before
//! parsing (at most [`MAX_DEPTH`] deep), and parsing and checking run on a
//! thread of their own with a [`PARSE_STACK_BYTES`] stack, where the worst
//! input within these limits was measured to need under 8 MiB (debug build).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{
    operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SelectExpr,
    SourceInfo,
};
use cel::common::types::{CelBool, CelInt, CelList, CelMap, CelMapKey, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::parser::ParseErrors;
use cel::{Context, Env, ExecutionError, FunctionContext, Value};
use regex::Regex;

/// The longest condition accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4096;
/// The most nodes a condition may have, after its macros are expanded.
pub const MAX_NODES: usize = 256;
/// The deepest a condition may nest: its expression tree, and its brackets.
pub const MAX_DEPTH: usize = 32;
/// The most `matches` patterns in one condition.
pub const MAX_PATTERNS: usize = 8;
/// The longest `matches` pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 512;
/// The most memory a compiled `matches` pattern may take, in bytes.
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// The deepest comprehensions (`all`, `exists`, `map`, ...) may nest.
pub const MAX_COMPREHENSION_NESTING: usize = 2;
/// The stack of the thread a condition is parsed and checked on (address space
/// reserved; only what the parser touches is used).
pub const PARSE_STACK_BYTES: usize = 32 << 20;

/// How deep the cel parser's own `expr` rule may recurse: a backstop behind the
/// bracket count, which the parser reports as an error.
const PARSER_RECURSION_LIMIT: u16 = 64;
/// The function a `matches` call is rewritten to; `@` keeps it out of reach of
/// expressions, which cannot spell it.
const REGEX_FN: &str = "@matches";
/// The longest rendering of an expression quoted in an error message.
const MAX_QUOTE_CHARS: usize = 80;

/// The facts a condition reads, supplied lazily by the host for one call.
///
/// Only the facts a condition refers to are asked for: a condition that does
/// not mention `caller.groups` never calls [`Facts::groups`].
pub trait Facts {
    /// The request method, e.g. `"GET"`.
    fn method(&self) -> &str;
    /// The request path after normalisation, e.g. `"/pets/7"`.
    fn path(&self) -> &str;
    /// The `Host` without its port, lower-case; `""` if there is none.
    fn host(&self) -> &str;
    /// The name of the route the call matched.
    fn route(&self) -> &str;
    /// The name of the API the call belongs to.
    fn api(&self) -> &str;
    /// The client address.
    fn client(&self) -> std::net::IpAddr;
    /// The request headers, lower-case names, in order; a name may repeat.
    fn headers(&self) -> Vec<(String, String)>;
    /// The decoded query pairs, in order; a name may repeat.
    fn query(&self) -> Vec<(String, String)>;
    /// The path template captures: `{id}` matching `7` is `("id", "7")`.
    fn captures(&self) -> Vec<(String, String)>;
    /// The identified caller, if a step identified one so far.
    fn consumer(&self) -> Option<&str>;
    /// The caller's application, if known.
    fn app(&self) -> Option<&str>;
    /// The caller's plan, if known.
    fn plan(&self) -> Option<&str>;
    /// The caller's product, if known.
    fn product(&self) -> Option<&str>;
    /// The caller's groups; may need a lookup, so it is only called when the
    /// condition refers to `caller.groups`.
    fn groups(&self) -> Vec<String>;
}

/// A condition that failed to compile.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConditionError {
    /// Where in the source the problem is, in bytes, when known.
    pub offset: Option<usize>,
    /// What is wrong, and what to do about it.
    pub message: String,
}

impl ConditionError {
    fn new(offset: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            offset,
            message: message.into(),
        }
    }
}

/// A condition that failed while evaluating for one call.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// A compiled condition: parsed, checked, and ready to evaluate. Cheap to clone.
#[derive(Clone)]
pub struct Condition {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    expr: IdedExpr,
    needs: Needs,
    projection: Projection,
    patterns: usize,
    /// The environment and the `matches` patterns; each evaluation runs in a
    /// child scope of it that resolves the facts.
    root: Context<'static, 'static>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.inner.source)
            .field("needs", &self.inner.needs)
            .field("patterns", &self.inner.patterns)
            .finish_non_exhaustive()
    }
}

/// The environment every condition compiles and runs with: the CEL standard
/// library and the strings extension (for `lowerAscii` and `upperAscii`),
/// without optional syntax.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib().with_optional_support(false);
    // Cannot fail on a fresh environment; were it to, `lowerAscii` would fail
    // when evaluated, with an error.
    let _ = env.add_extension(cel::extensions::strings);
    Arc::new(env)
});

impl Condition {
    /// Parse, check and prepare `source`. Errors carry a byte offset into
    /// `source` when known.
    pub fn compile(source: &str) -> Result<Condition, ConditionError> {
        prescan(source)?;
        let prepared = prepare_on_large_stack(source)?;
        let mut root = Context::with_env(Arc::clone(&ENV));
        let patterns = prepared.regexes.len();
        if patterns > 0 {
            root.add_function(REGEX_FN, regex_function(prepared.regexes))
                .map_err(|e| ConditionError::new(None, format!("internal error: {e}")))?;
        }
        Ok(Condition {
            inner: Arc::new(Inner {
                source: source.to_owned(),
                expr: prepared.expr,
                needs: prepared.needs,
                projection: prepared.projection,
                patterns,
                root,
            }),
        })
    }

    /// Evaluate for one call. A condition's value must be a bool (checked at
    /// compile time where possible; at run time a non-bool is an error).
    pub fn eval(&self, facts: &dyn Facts) -> Result<bool, EvalError> {
        let bindings = Bindings::gather(self.inner.needs, &self.inner.projection, facts);
        catch_unwind(AssertUnwindSafe(|| self.run(&bindings))).unwrap_or_else(|_| {
            Err(EvalError(format!(
                "condition `{}` could not be evaluated: internal error in the CEL interpreter",
                quote(&self.inner.source)
            )))
        })
    }

    /// The source the condition was compiled from.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    fn run(&self, bindings: &Bindings<'_>) -> Result<bool, EvalError> {
        let root: &Context<'_, '_> = &self.inner.root;
        let mut ctx = root.new_inner_scope();
        ctx.set_variable_resolver(bindings);
        let value =
            Value::resolve_val(&self.inner.expr, &ctx).map_err(|e| self.execution_error(e))?;
        match value.downcast_ref::<CelBool>() {
            Some(b) => Ok(*b.inner()),
            None => Err(EvalError(format!(
                "condition `{}` evaluated to a value of type {}, not true or false: \
                 compare it, e.g. `x == \"value\"`",
                quote(&self.inner.source),
                value.get_type().name()
            ))),
        }
    }

    fn execution_error(&self, err: ExecutionError) -> EvalError {
        match err {
            ExecutionError::NoSuchKey(key) => EvalError(missing_key_message(
                &quote(&self.inner.source),
                &key,
                key_owner(&self.inner.expr, &key),
            )),
            other => EvalError(format!(
                "condition `{}` failed: {other}",
                quote(&self.inner.source)
            )),
        }
    }
}

fn missing_key_message(source: &str, key: &str, owner: Option<Fact>) -> String {
    let Some(owner) = owner else {
        return format!(
            "condition `{source}` failed: a map has no key \"{key}\"; test for it first, \
             e.g. `\"{key}\" in request.headers && ...`"
        );
    };
    let map = owner.name();
    let has = if is_identifier(key) {
        format!(" or `has({map}.{key})`")
    } else {
        String::new()
    };
    format!(
        "condition `{source}` failed: `{map}` has no key \"{key}\" on this call; \
         test for it first, with `\"{key}\" in {map} && ...`{has}"
    )
}

/// The host map a missing key was looked up in, if the expression looks `key`
/// up in one by name.
fn key_owner(expr: &IdedExpr, key: &str) -> Option<Fact> {
    match literal_lookup(expr) {
        Some((fact, k)) if k == key => Some(fact),
        _ => children(expr).into_iter().find_map(|c| key_owner(c, key)),
    }
}

/// `M.key`, `has(M.key)`, `M["key"]` or `"key" in M`, `M` a host map: the map
/// and the key.
fn literal_lookup(e: &IdedExpr) -> Option<(Fact, &str)> {
    let (map, key) = match &e.expr {
        Expr::Select(s) => (&*s.operand, s.field.as_str()),
        Expr::Call(c) if c.target.is_none() && c.args.len() == 2 => match c.func_name.as_str() {
            operators::INDEX => (&c.args[0], string_literal(&c.args[1])?),
            operators::IN => (&c.args[1], string_literal(&c.args[0])?),
            _ => return None,
        },
        _ => return None,
    };
    let fact = ident_fact(map)?;
    Projection::index(fact).map(|_| (fact, key))
}

fn string_literal(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

fn ident_fact(expr: &IdedExpr) -> Option<Fact> {
    match &expr.expr {
        Expr::Ident(name) => Fact::from_var(name),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Facts as variables

/// One fact a condition can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fact {
    Method,
    Path,
    Host,
    Route,
    Api,
    Client,
    Headers,
    Query,
    Captures,
    Consumer,
    App,
    Plan,
    Product,
    Authenticated,
    Groups,
}

const FACT_COUNT: usize = 15;

impl Fact {
    const ALL: [Fact; FACT_COUNT] = [
        Fact::Method,
        Fact::Path,
        Fact::Host,
        Fact::Route,
        Fact::Api,
        Fact::Client,
        Fact::Headers,
        Fact::Query,
        Fact::Captures,
        Fact::Consumer,
        Fact::App,
        Fact::Plan,
        Fact::Product,
        Fact::Authenticated,
        Fact::Groups,
    ];

    /// The name an expression uses, e.g. `request.method`.
    fn name(self) -> &'static str {
        match self {
            Fact::Method => "request.method",
            Fact::Path => "request.path",
            Fact::Host => "request.host",
            Fact::Route => "request.route",
            Fact::Api => "request.api",
            Fact::Client => "request.client",
            Fact::Headers => "request.headers",
            Fact::Query => "request.query",
            Fact::Captures => "request.captures",
            Fact::Consumer => "caller.consumer",
            Fact::App => "caller.app",
            Fact::Plan => "caller.plan",
            Fact::Product => "caller.product",
            Fact::Authenticated => "caller.authenticated",
            Fact::Groups => "caller.groups",
        }
    }

    /// The variable the compiled expression reads it from: `@` and its name,
    /// which no expression can spell.
    fn var(self) -> &'static str {
        match self {
            Fact::Method => "@request.method",
            Fact::Path => "@request.path",
            Fact::Host => "@request.host",
            Fact::Route => "@request.route",
            Fact::Api => "@request.api",
            Fact::Client => "@request.client",
            Fact::Headers => "@request.headers",
            Fact::Query => "@request.query",
            Fact::Captures => "@request.captures",
            Fact::Consumer => "@caller.consumer",
            Fact::App => "@caller.app",
            Fact::Plan => "@caller.plan",
            Fact::Product => "@caller.product",
            Fact::Authenticated => "@caller.authenticated",
            Fact::Groups => "@caller.groups",
        }
    }

    fn from_var(var: &str) -> Option<Fact> {
        Fact::ALL.into_iter().find(|f| f.var() == var)
    }

    fn lookup(root: &str, field: &str) -> Option<Fact> {
        Fact::ALL
            .into_iter()
            .find(|f| f.root() == root && f.field() == field)
    }

    fn root(self) -> &'static str {
        self.name().split('.').next().unwrap_or_default()
    }

    fn field(self) -> &'static str {
        self.name().split('.').nth(1).unwrap_or_default()
    }

    fn ty(self) -> Ty {
        match self {
            Fact::Headers | Fact::Query | Fact::Captures => {
                Ty::Map(Box::new(Ty::String), Box::new(Ty::String))
            }
            Fact::Groups => Ty::List(Box::new(Ty::String)),
            Fact::Authenticated => Ty::Bool,
            _ => Ty::String,
        }
    }

    fn is_collection(self) -> bool {
        matches!(
            self,
            Fact::Headers | Fact::Query | Fact::Captures | Fact::Groups
        )
    }

    fn fields_of(root: &str) -> Vec<&'static str> {
        Fact::ALL
            .into_iter()
            .filter(|f| f.root() == root)
            .map(Fact::field)
            .collect()
    }
}

/// The facts a condition refers to.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Needs(u16);

impl Needs {
    fn add(&mut self, fact: Fact) {
        self.0 |= 1 << fact as u16;
    }

    fn has(self, fact: Fact) -> bool {
        self.0 & (1 << fact as u16) != 0
    }
}

impl fmt::Debug for Needs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = Fact::ALL.into_iter().filter(|fact| self.has(*fact));
        f.debug_set().entries(names.map(Fact::name)).finish()
    }
}

/// Which keys of a host map a condition reads.
#[derive(Clone, Debug, PartialEq)]
enum Keys {
    /// Any: the condition iterates over the map, sizes it, or looks up a
    /// computed key.
    All,
    /// Only these, looked up by name.
    Only(Vec<String>),
}

impl Keys {
    fn add(&mut self, key: &str) {
        if let Keys::Only(keys) = self {
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_owned());
            }
        }
    }

    fn wants(&self, key: &str) -> bool {
        match self {
            Keys::All => true,
            Keys::Only(keys) => keys.iter().any(|k| k == key),
        }
    }
}

/// The keys a condition reads of `request.headers`, `request.query` and
/// `request.captures`. When it only ever looks keys up by name (`"k" in M`,
/// `M["k"]`, `M.k`, `has(M.k)`), each call's map is built with those keys
/// alone, which gives the same results for less work.
#[derive(Clone, Debug, PartialEq)]
struct Projection([Keys; 3]);

impl Projection {
    fn of(expr: &IdedExpr) -> Self {
        let mut projection = Projection([
            Keys::Only(Vec::new()),
            Keys::Only(Vec::new()),
            Keys::Only(Vec::new()),
        ]);
        projection.visit(expr);
        projection
    }

    fn index(fact: Fact) -> Option<usize> {
        match fact {
            Fact::Headers => Some(0),
            Fact::Query => Some(1),
            Fact::Captures => Some(2),
            _ => None,
        }
    }

    fn keys(&self, fact: Fact) -> &Keys {
        Projection::index(fact)
            .and_then(|i| self.0.get(i))
            .unwrap_or(&Keys::All)
    }

    fn keys_mut(&mut self, fact: Fact) -> Option<&mut Keys> {
        Projection::index(fact).and_then(|i| self.0.get_mut(i))
    }

    fn visit(&mut self, e: &IdedExpr) {
        if let Some((fact, key)) = literal_lookup(e) {
            if let Some(keys) = self.keys_mut(fact) {
                keys.add(key);
            }
            return;
        }
        if let Some(keys) = ident_fact(e).and_then(|fact| self.keys_mut(fact)) {
            *keys = Keys::All;
        }
        for child in children(e) {
            self.visit(child);
        }
    }
}

/// The value of one fact for one call.
enum Slot<'f> {
    Unused,
    Str(CelString<'f>),
    Bool(CelBool),
    Map(CelMap<'f>),
    List(CelList<'f>),
}

impl Slot<'_> {
    fn as_val(&self) -> Option<&dyn Val> {
        match self {
            Slot::Unused => None,
            Slot::Str(v) => Some(v),
            Slot::Bool(v) => Some(v),
            Slot::Map(v) => Some(v),
            Slot::List(v) => Some(v),
        }
    }
}

/// The facts of one call that the condition needs, gathered before it runs;
/// the interpreter looks the variables up here.
struct Bindings<'f> {
    slots: [Slot<'f>; FACT_COUNT],
}

impl<'f> Bindings<'f> {
    fn gather(needs: Needs, projection: &Projection, facts: &'f dyn Facts) -> Self {
        Bindings {
            slots: Fact::ALL.map(|fact| {
                if needs.has(fact) {
                    fetch(fact, projection.keys(fact), facts)
                } else {
                    Slot::Unused
                }
            }),
        }
    }
}

fn fetch<'f>(fact: Fact, keys: &Keys, facts: &'f dyn Facts) -> Slot<'f> {
    let text = |s: &'f str| Slot::Str(CelString::from(s));
    let known = |s: Option<&'f str>| text(s.unwrap_or_default());
    match fact {
        Fact::Method => text(facts.method()),
        Fact::Path => text(facts.path()),
        Fact::Host => text(facts.host()),
        Fact::Route => text(facts.route()),
        Fact::Api => text(facts.api()),
        Fact::Client => Slot::Str(CelString::from(facts.client().to_string())),
        Fact::Headers => Slot::Map(string_map(facts.headers(), keys, Repeat::Join)),
        Fact::Query => Slot::Map(string_map(facts.query(), keys, Repeat::First)),
        Fact::Captures => Slot::Map(string_map(facts.captures(), keys, Repeat::First)),
        Fact::Consumer => known(facts.consumer()),
        Fact::App => known(facts.app()),
        Fact::Plan => known(facts.plan()),
        Fact::Product => known(facts.product()),
        Fact::Authenticated => Slot::Bool(CelBool::from(facts.consumer().is_some())),
        Fact::Groups => Slot::List(string_list(facts.groups())),
    }
}

/// What a map keeps of a repeated name.
#[derive(Clone, Copy)]
enum Repeat {
    /// All values, joined with `", "`.
    Join,
    /// The first value.
    First,
}

fn string_map<'f>(pairs: Vec<(String, String)>, keys: &Keys, repeat: Repeat) -> CelMap<'f> {
    let mut map: HashMap<CelMapKey<'f>, Box<dyn Val + 'f>> = HashMap::new();
    for (name, value) in pairs {
        if !keys.wants(&name) {
            continue;
        }
        match map.entry(CelMapKey::from(name)) {
            Entry::Vacant(slot) => {
                slot.insert(Box::new(CelString::from(value)));
            }
            Entry::Occupied(mut slot) => {
                if let Repeat::Join = repeat {
                    let joined = match slot.get().downcast_ref::<CelString>() {
                        Some(old) => format!("{}, {value}", old.inner()),
                        None => value,
                    };
                    slot.insert(Box::new(CelString::from(joined)));
                }
            }
        }
    }
    CelMap::from(map)
}

fn string_list<'f>(items: Vec<String>) -> CelList<'f> {
    let items: Vec<Box<dyn Val + 'f>> = items
        .into_iter()
        .map(|s| Box::new(CelString::from(s)) as Box<dyn Val + 'f>)
        .collect();
    CelList::from(items)
}

impl VariableResolver for Bindings<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let fact = Fact::from_var(variable)?;
        self.slots
            .get(fact as usize)
            .and_then(Slot::as_val)
            .map(CowVal::Borrowed)
    }
}

// ---------------------------------------------------------------------------
// `matches`

type NativeFunction = Box<
    dyn for<'c, 'k> Fn(&mut FunctionContext<'c, 'k>) -> Result<CowVal<'c, 'k>, ExecutionError>
        + Send
        + Sync,
>;

/// `@matches(text, i)`: whether pattern `i`, compiled when the condition was,
/// matches `text` anywhere, as CEL's `matches` does.
fn regex_function(regexes: Vec<Regex>) -> NativeFunction {
    Box::new(move |ftx: &mut FunctionContext<'_, '_>| {
        let text = ftx.args.first().and_then(|v| v.downcast_ref::<CelString>());
        let index = ftx.args.get(1).and_then(|v| v.downcast_ref::<CelInt>());
        let regex = index.and_then(|i| {
            usize::try_from(*i.inner())
                .ok()
                .and_then(|i| regexes.get(i))
        });
        match (text, regex) {
            (Some(text), Some(regex)) => {
                Ok(CowVal::owned(CelBool::from(regex.is_match(text.inner()))))
            }
            (None, _) => Err(ExecutionError::function_error(
                "matches",
                "it applies to a string; convert the value with string(...) first",
            )),
            (_, None) => Err(ExecutionError::function_error(
                "matches",
                "internal error: unknown pattern",
            )),
        }
    })
}

fn compile_pattern(pattern: &str, offset: Option<usize>) -> Result<Regex, ConditionError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(ConditionError::new(
            offset,
            format!(
                "the pattern of matches() is {} bytes long; the limit is {MAX_PATTERN_BYTES}: shorten it",
                pattern.len()
            ),
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => ConditionError::new(
                offset,
                format!(
                    "the pattern of matches() is too complex: compiled, it exceeds {limit} bytes; \
                     simplify it (large counted repetitions such as `a{{1000}}` are the usual cause)"
                ),
            ),
            other => ConditionError::new(
                offset,
                format!("the pattern of matches() is not a valid regular expression: {other}"),
            ),
        })
}

// ---------------------------------------------------------------------------
// Before parsing

/// Rejects what is too long or nests too deeply to hand to the parser, and the
/// empty condition.
fn prescan(source: &str) -> Result<(), ConditionError> {
    if source.len() > MAX_SOURCE_BYTES {
        let boundary = (0..=MAX_SOURCE_BYTES)
            .rev()
            .find(|i| source.is_char_boundary(*i));
        return Err(ConditionError::new(
            boundary,
            format!(
                "the condition is {} bytes long; the limit is {MAX_SOURCE_BYTES}: simplify it, \
                 or split it across steps",
                source.len()
            ),
        ));
    }
    if source.trim().is_empty() {
        return Err(ConditionError::new(
            Some(0),
            "the condition is empty: write a CEL expression such as `request.method == \"GET\"`, \
             or remove `when`",
        ));
    }
    match too_deep_bracket(source) {
        Some(offset) => Err(ConditionError::new(
            Some(offset),
            format!("brackets nest more than {MAX_DEPTH} deep here: flatten the condition"),
        )),
        None => Ok(()),
    }
}

/// The offset of the first bracket nested deeper than [`MAX_DEPTH`], outside
/// string literals.
fn too_deep_bracket(source: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(i);
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' | b'\'' => {
                i = skip_string(bytes, i);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index just past the string literal whose opening quote is at `start`
/// (or the end of input if it is not closed). A raw string (`r"..."`) has no
/// escapes.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let raw = start > 0 && matches!(bytes[start - 1], b'r' | b'R');
    let triple = bytes.get(start..start + 3) == Some(&[quote, quote, quote][..]);
    let close_len = if triple { 3 } else { 1 };
    let mut i = start + close_len;
    while i < bytes.len() {
        if bytes[i] == b'\\' && !raw {
            i += 2;
            continue;
        }
        if bytes[i] == quote && (!triple || bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]))
        {
            return i + close_len;
        }
        if !triple && bytes[i] == b'\n' {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

// ---------------------------------------------------------------------------
// Parsing

/// A checked expression, rewritten to read the facts' variables, and the
/// patterns of its `matches` calls.
struct Prepared {
    expr: IdedExpr,
    needs: Needs,
    projection: Projection,
    regexes: Vec<Regex>,
}

/// Runs [`prepare`] on a thread with a large stack: the cel parser recurses
/// deeply, and a deep tree is also dropped there if it is rejected.
fn prepare_on_large_stack(source: &str) -> Result<Prepared, ConditionError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("condition-compile".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(scope, || prepare(source))
            .map_err(|e| {
                ConditionError::new(None, format!("cannot start the condition compiler: {e}"))
            })?;
        handle.join().unwrap_or_else(|_| {
            Err(ConditionError::new(
                None,
                "the CEL parser failed on this condition (internal error): simplify it",
            ))
        })
    })
}

fn prepare(source: &str) -> Result<Prepared, ConditionError> {
    let parser = ENV.parser().max_recursion_depth(PARSER_RECURSION_LIMIT);
    let (mut expr, info) = parser
        .parse_with_source_info(source)
        .map_err(|e| parse_error(source, &e))?;
    check_size(&expr, source, &info)?;
    let mut checker = Checker::new(source, &info);
    let ty = checker.check(&mut expr)?;
    if !ty.may_be_bool() {
        return Err(ConditionError::new(
            checker.offset(expr.id),
            format!(
                "a condition must be true or false; `{}` is {}: compare it, e.g. `request.method == \"GET\"`",
                quote(source.trim()),
                ty.describe()
            ),
        ));
    }
    Ok(Prepared {
        projection: Projection::of(&expr),
        expr,
        needs: checker.needs,
        regexes: checker.regexes,
    })
}

fn parse_error(source: &str, errors: &ParseErrors) -> ConditionError {
    let Some(first) = errors.errors.first() else {
        return ConditionError::new(None, "the condition cannot be parsed");
    };
    let offset = line_column_offset(source, first.pos.0, first.pos.1);
    let msg = first
        .msg
        .strip_prefix("Syntax error: ")
        .unwrap_or(&first.msg);
    let message = if msg.contains("Recursion limit") {
        format!("the condition nests too deeply (more than {MAX_DEPTH} levels): flatten it")
    } else if first.msg.starts_with("Syntax error: ") {
        format!("syntax error: {msg}; check the brackets, quotes and operators around here")
    } else {
        format!("syntax error: {msg}")
    };
    ConditionError::new(offset, message)
}

/// The byte offset of a 1-based line and (character) column, as the parser
/// reports them.
fn line_column_offset(source: &str, line: isize, column: isize) -> Option<usize> {
    let line = usize::try_from(line).ok()?.checked_sub(1)?;
    let column = usize::try_from(column).ok()?.checked_sub(1)?;
    let mut start = 0;
    for (n, text) in source.split_inclusive('\n').enumerate() {
        if n == line {
            let within = text
                .char_indices()
                .nth(column)
                .map_or(text.len(), |(i, _)| i);
            return Some(start + within);
        }
        start += text.len();
    }
    Some(source.len())
}

// ---------------------------------------------------------------------------
// Size limits

/// Checks the node count and depth without recursing: the tree may be as deep
/// as the source is long.
fn check_size(expr: &IdedExpr, source: &str, info: &SourceInfo) -> Result<(), ConditionError> {
    let offset = |e: &IdedExpr| node_offset(info, source, e.id);
    let mut stack = vec![(expr, 1usize)];
    let mut nodes = 0usize;
    while let Some((e, depth)) = stack.pop() {
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(ConditionError::new(
                offset(e),
                format!(
                    "the condition is too large: more than {MAX_NODES} operations and values \
                     (macros count with their expansion); simplify it, or split it across steps"
                ),
            ));
        }
        if depth > MAX_DEPTH {
            return Err(ConditionError::new(
                offset(e),
                format!(
                    "the condition nests more than {MAX_DEPTH} levels deep here: flatten it, \
                     e.g. split a long chain of operators with brackets"
                ),
            ));
        }
        stack.extend(children(e).into_iter().map(|c| (c, depth + 1)));
    }
    Ok(())
}

fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Call(c) => c.target.iter().map(|t| &**t).chain(&c.args).collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m
            .entries
            .iter()
            .flat_map(|entry| match &entry.expr {
                EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
                EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect(),
        Expr::Select(s) => vec![&*s.operand],
        Expr::Struct(s) => s
            .entries
            .iter()
            .flat_map(|entry| match &entry.expr {
                EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
                EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect(),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn node_offset(info: &SourceInfo, source: &str, id: u64) -> Option<usize> {
    let (start, _) = info.offset_for(id)?;
    let start = usize::try_from(start).ok()?;
    (start <= source.len()).then_some(start)
}

// ---------------------------------------------------------------------------
// Types

/// The type inferred for an expression; `Dyn` when unknown.
#[derive(Clone, Debug, PartialEq)]
enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    Dyn,
}

impl Ty {
    fn describe(&self) -> String {
        match self {
            Ty::Bool => "a bool".into(),
            Ty::Int => "an int".into(),
            Ty::Uint => "a uint".into(),
            Ty::Double => "a double".into(),
            Ty::String => "a string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Null => "null".into(),
            Ty::List(e) if **e == Ty::String => "a list of strings".into(),
            Ty::List(_) => "a list".into(),
            Ty::Map(..) => "a map".into(),
            Ty::Dyn => "a value of unknown type".into(),
        }
    }

    fn may_be_bool(&self) -> bool {
        matches!(self, Ty::Bool | Ty::Dyn)
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }

    /// Whether values of the two types can ever be equal.
    fn comparable(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::Dyn, _) | (_, Ty::Dyn) => true,
            (a, b) if a.is_numeric() && b.is_numeric() => true,
            (Ty::List(a), Ty::List(b)) => a.comparable(b),
            (Ty::Map(..), Ty::Map(..)) => true,
            (a, b) => a == b,
        }
    }

    /// Whether `<` and friends apply to the two types.
    fn ordered(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::Dyn, t) | (t, Ty::Dyn) => {
                t.is_numeric() || matches!(t, Ty::String | Ty::Bytes | Ty::Bool | Ty::Dyn)
            }
            (a, b) if a.is_numeric() && b.is_numeric() => true,
            (a, b) => a == b && matches!(a, Ty::String | Ty::Bytes | Ty::Bool),
        }
    }

    /// The type of an element when iterating: a list's element, a map's key.
    fn element(&self) -> Option<Ty> {
        match self {
            Ty::List(e) => Some((**e).clone()),
            Ty::Map(k, _) => Some((**k).clone()),
            Ty::Dyn => Some(Ty::Dyn),
            _ => None,
        }
    }
}

fn literal_type(literal: &LiteralValue) -> Ty {
    match literal {
        LiteralValue::Boolean(_) => Ty::Bool,
        LiteralValue::Bytes(_) => Ty::Bytes,
        LiteralValue::Double(_) => Ty::Double,
        LiteralValue::Int(_) => Ty::Int,
        LiteralValue::Null => Ty::Null,
        LiteralValue::String(_) => Ty::String,
        LiteralValue::UInt(_) => Ty::Uint,
    }
}

// ---------------------------------------------------------------------------
// The checker

const ROOTS: [&str; 2] = ["request", "caller"];
const FUNCTIONS: &str = "size, contains, startsWith, endsWith, matches, int, string, \
    lowerAscii, upperAscii, and the macros has, all, exists, exists_one, map and filter";
const FUNCTION_NAMES: [&str; 15] = [
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "string",
    "lowerAscii",
    "upperAscii",
    "has",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
];
const MACROS: [&str; 7] = [
    "has",
    "all",
    "exists",
    "exists_one",
    "existsOne",
    "map",
    "filter",
];

/// Walks a parsed expression once: checks names, functions and types, and
/// rewrites fact selections into variables and `matches` calls into calls of
/// their compiled pattern. Recursion is bounded by [`check_size`], run first.
struct Checker<'s> {
    source: &'s str,
    info: &'s SourceInfo,
    scope: Vec<(String, Ty)>,
    nesting: usize,
    needs: Needs,
    regexes: Vec<Regex>,
}

type Checked = Result<Ty, ConditionError>;

impl<'s> Checker<'s> {
    fn new(source: &'s str, info: &'s SourceInfo) -> Self {
        Checker {
            source,
            info,
            scope: Vec::new(),
            nesting: 0,
            needs: Needs::default(),
            regexes: Vec::new(),
        }
    }

    fn offset(&self, id: u64) -> Option<usize> {
        node_offset(self.info, self.source, id)
    }

    fn error(&self, id: u64, message: impl Into<String>) -> ConditionError {
        ConditionError::new(self.offset(id), message)
    }

    fn check(&mut self, e: &mut IdedExpr) -> Checked {
        let id = e.id;
        match &mut e.expr {
            Expr::Literal(literal) => Ok(literal_type(literal)),
            Expr::Ident(name) => self.ident(id, name),
            Expr::Select(select) => match self.fact_select(id, select)? {
                Some(fact) => {
                    // placed where `request` or `caller` is written
                    e.id = select.operand.id;
                    e.expr = Expr::Ident(fact.var().to_owned());
                    Ok(fact.ty())
                }
                None => self.select(id, select),
            },
            Expr::Call(call) => {
                let (ty, rewritten) = self.call(id, call)?;
                if let Some(rewritten) = rewritten {
                    e.expr = rewritten;
                }
                Ok(ty)
            }
            Expr::List(list) => {
                let mut element = None;
                for item in &mut list.elements {
                    let ty = self.check(item)?;
                    element = Some(unify(element, ty));
                }
                Ok(Ty::List(Box::new(element.unwrap_or(Ty::Dyn))))
            }
            Expr::Map(map) => self.map_literal(id, &mut map.entries),
            Expr::Comprehension(c) => self.comprehension(id, c),
            Expr::Struct(_) => Err(self.error(
                id,
                "message construction (`Name{field: value}`) is not supported in conditions; \
                 use a map literal such as {\"field\": value}",
            )),
            Expr::Unspecified => Err(self.error(id, "incomplete expression")),
        }
    }

    fn ident(&self, id: u64, name: &str) -> Checked {
        if let Some((_, ty)) = self.scope.iter().rev().find(|(n, _)| n == name) {
            return Ok(ty.clone());
        }
        if ROOTS.contains(&name) {
            return Err(self.error(
                id,
                format!(
                    "`{name}` cannot be used on its own: read one of its fields ({})",
                    Fact::fields_of(name).join(", ")
                ),
            ));
        }
        let mut known: Vec<&str> = ROOTS.to_vec();
        known.extend(
            self.scope
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| !n.starts_with('@')),
        );
        Err(self.error(
            id,
            format!(
                "unknown identifier `{name}`{}: a condition can read {}",
                suggestion(name, &known),
                known
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    /// `request.x` or `caller.x`: the fact, or an error for an unknown field or
    /// a presence test. `None` for other selections.
    fn fact_select(
        &mut self,
        id: u64,
        select: &SelectExpr,
    ) -> Result<Option<Fact>, ConditionError> {
        let Expr::Ident(root) = &select.operand.expr else {
            return Ok(None);
        };
        if !ROOTS.contains(&root.as_str()) || self.scope.iter().any(|(n, _)| n == root) {
            return Ok(None);
        }
        let Some(fact) = Fact::lookup(root, &select.field) else {
            let fields = Fact::fields_of(root);
            return Err(ConditionError::new(
                self.field_offset(id, &select.field),
                format!(
                    "unknown field `{root}.{}`{}: {root} has {}",
                    select.field,
                    suggestion(&select.field, &fields),
                    fields.join(", ")
                ),
            ));
        };
        if select.test {
            return Err(self.error(
                id,
                format!(
                    "`{}` is always present, so has() does not apply to it; has() tests for a key, \
                     e.g. has(request.headers.authorization){}",
                    fact.name(),
                    if fact.ty() == Ty::String && fact.root() == "caller" {
                        format!(" (`{}` is \"\" when unknown)", fact.name())
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        self.needs.add(fact);
        Ok(Some(fact))
    }

    fn field_offset(&self, id: u64, field: &str) -> Option<usize> {
        let dot = self.offset(id)?;
        let found = self.source.get(dot..)?.find(field)?;
        Some(dot + found)
    }

    fn select(&mut self, id: u64, select: &mut SelectExpr) -> Checked {
        let operand = self.check(&mut select.operand)?;
        let value = match &operand {
            Ty::Map(key, value) if key.comparable(&Ty::String) => (**value).clone(),
            Ty::Dyn => Ty::Dyn,
            other => {
                return Err(ConditionError::new(
                    self.field_offset(id, &select.field),
                    format!(
                        "`{}` is {}, which has no field `{}`",
                        render(&select.operand),
                        other.describe(),
                        select.field
                    ),
                ))
            }
        };
        Ok(if select.test { Ty::Bool } else { value })
    }

    fn map_literal(&mut self, id: u64, entries: &mut [cel::common::ast::IdedEntryExpr]) -> Checked {
        let (mut key_ty, mut value_ty) = (None, None);
        for entry in entries {
            let EntryExpr::MapEntry(entry) = &mut entry.expr else {
                return Err(self.error(id, "unexpected field in a map literal"));
            };
            let k = self.check(&mut entry.key)?;
            if !matches!(k, Ty::String | Ty::Int | Ty::Uint | Ty::Bool | Ty::Dyn) {
                return Err(self.error(
                    entry.key.id,
                    format!(
                        "a map key must be a string, int, uint or bool, not {}",
                        k.describe()
                    ),
                ));
            }
            let v = self.check(&mut entry.value)?;
            key_ty = Some(unify(key_ty, k));
            value_ty = Some(unify(value_ty, v));
        }
        Ok(Ty::Map(
            Box::new(key_ty.unwrap_or(Ty::Dyn)),
            Box::new(value_ty.unwrap_or(Ty::Dyn)),
        ))
    }

    fn comprehension(&mut self, id: u64, c: &mut ComprehensionExpr) -> Checked {
        if self.nesting >= MAX_COMPREHENSION_NESTING {
            return Err(self.error(
                id,
                format!(
                    "macros (all, exists, exists_one, map, filter) nest at most \
                     {MAX_COMPREHENSION_NESTING} deep: simplify the condition"
                ),
            ));
        }
        let range = self.check(&mut c.iter_range)?;
        self.check_range(&c.iter_range, &range)?;
        let element = range.element().ok_or_else(|| {
            self.error(
                c.iter_range.id,
                format!(
                    "`{}` is {}; macros iterate over a list or a map",
                    render(&c.iter_range),
                    range.describe()
                ),
            )
        })?;
        for var in std::iter::once(&c.iter_var).chain(c.iter_var2.iter()) {
            if ROOTS.contains(&var.as_str()) {
                return Err(self.error(
                    id,
                    format!("`{var}` is reserved; name the macro's variable something else"),
                ));
            }
        }
        let accu = self.check(&mut c.accu_init)?;
        let depth = self.scope.len();
        self.scope.push((c.iter_var.clone(), element));
        if let Some(var) = &c.iter_var2 {
            self.scope.push((var.clone(), Ty::Dyn));
        }
        self.scope.push((c.accu_var.clone(), accu));
        self.nesting += 1;
        let result = self.comprehension_body(c);
        self.nesting -= 1;
        self.scope.truncate(depth);
        result
    }

    fn comprehension_body(&mut self, c: &mut ComprehensionExpr) -> Checked {
        self.check(&mut c.loop_cond)?;
        self.check(&mut c.loop_step)?;
        self.check(&mut c.result)
    }

    /// Comprehensions iterate only over what bounds them: host collections,
    /// literals, and other comprehensions' results.
    fn check_range(&self, range: &IdedExpr, ty: &Ty) -> Result<(), ConditionError> {
        let bounded = match &range.expr {
            Expr::Ident(name) => Fact::from_var(name).is_some_and(Fact::is_collection),
            Expr::List(_) | Expr::Map(_) | Expr::Comprehension(_) => true,
            _ => false,
        };
        if bounded {
            return Ok(());
        }
        Err(self.error(
            range.id,
            format!(
                "macros (all, exists, exists_one, map, filter) may only iterate over \
                 request.headers, request.query, request.captures, caller.groups, a list or map \
                 written in the condition, or another macro's result; `{}` is {}",
                render(range),
                ty.describe()
            ),
        ))
    }

    /// Checks a call; returns its type, and the expression to replace it with
    /// if it is rewritten.
    fn call(&mut self, id: u64, call: &mut CallExpr) -> Result<(Ty, Option<Expr>), ConditionError> {
        let name = call.func_name.as_str();
        if name == "matches" {
            return self.matches(id, call).map(|e| (Ty::Bool, Some(e)));
        }
        let ty = match name {
            operators::LOGICAL_AND | operators::LOGICAL_OR | operators::LOGICAL_NOT => {
                self.logical(id, call)?
            }
            operators::NOT_STRICTLY_FALSE => {
                self.args(call)?;
                Ty::Bool
            }
            operators::CONDITIONAL => self.conditional(id, call)?,
            operators::EQUALS | operators::NOT_EQUALS => self.equality(id, call)?,
            operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS => self.ordering(id, call)?,
            operators::ADD => self.add(id, call)?,
            operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO
            | operators::NEGATE => self.arithmetic(id, call)?,
            operators::INDEX => self.index(id, call)?,
            operators::IN => self.membership(id, call)?,
            "size" => self.size(id, call)?,
            "contains" | "startsWith" | "endsWith" => self.string_test(id, call)?,
            "lowerAscii" | "upperAscii" => self.string_case(id, call)?,
            "int" | "string" => self.conversion(id, call)?,
            _ => return Err(self.unknown_function(id, call)),
        };
        Ok((ty, None))
    }

    fn args(&mut self, call: &mut CallExpr) -> Result<Vec<Ty>, ConditionError> {
        let mut types = Vec::with_capacity(call.args.len() + 1);
        if let Some(target) = &mut call.target {
            types.push(self.check(target)?);
        }
        for arg in &mut call.args {
            types.push(self.check(arg)?);
        }
        Ok(types)
    }

    /// The checked operands of an operator or global function taking `n`.
    fn global(
        &mut self,
        id: u64,
        call: &mut CallExpr,
        n: usize,
    ) -> Result<Vec<Ty>, ConditionError> {
        if call.target.is_some() || call.args.len() != n {
            return Err(self.arity_error(id, call));
        }
        self.args(call)
    }

    /// The checked receiver and arguments of a member function taking `n`.
    fn member(
        &mut self,
        id: u64,
        call: &mut CallExpr,
        n: usize,
    ) -> Result<Vec<Ty>, ConditionError> {
        if call.target.is_none() || call.args.len() != n {
            return Err(self.arity_error(id, call));
        }
        self.args(call)
    }

    fn arity_error(&self, id: u64, call: &CallExpr) -> ConditionError {
        let usage = match call.func_name.as_str() {
            "size" => "size(x) or x.size()",
            "contains" => "s.contains(\"text\")",
            "startsWith" => "s.startsWith(\"text\")",
            "endsWith" => "s.endsWith(\"text\")",
            "lowerAscii" => "s.lowerAscii()",
            "upperAscii" => "s.upperAscii()",
            "int" => "int(x)",
            "string" => "string(x)",
            "matches" => "s.matches(\"pattern\")",
            _ => "the operator with its operands",
        };
        ConditionError::new(
            self.name_offset(id, &call.func_name),
            format!("wrong use of `{}`: write {usage}", call.func_name),
        )
    }

    /// Where a function's name starts, given its call's node.
    fn name_offset(&self, id: u64, name: &str) -> Option<usize> {
        let at = self.offset(id)?;
        let before = self.source.get(..at)?.trim_end();
        match before.strip_suffix(name) {
            Some(rest) => Some(rest.len()),
            None => Some(at),
        }
    }

    fn unknown_function(&self, id: u64, call: &CallExpr) -> ConditionError {
        let name = call.func_name.as_str();
        let offset = self.name_offset(id, name);
        if MACROS.contains(&name) {
            let usage = if name == "has" {
                "has(request.headers.name)".to_owned()
            } else {
                format!("request.headers.{name}(k, k.startsWith(\"x-\"))")
            };
            return ConditionError::new(
                offset,
                format!("wrong use of the macro `{name}`: write e.g. {usage}"),
            );
        }
        let hint = match name {
            "in" | "@in" => String::new(),
            _ if name.contains('.') || name.starts_with('_') => String::new(),
            _ => suggestion(name, &FUNCTION_NAMES),
        };
        ConditionError::new(
            offset,
            format!("unknown function `{name}`{hint}: conditions may call {FUNCTIONS}"),
        )
    }

    fn logical(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let n = if call.func_name == operators::LOGICAL_NOT {
            1
        } else {
            2
        };
        let types = self.global(id, call, n)?;
        for (ty, arg) in types.iter().zip(&call.args) {
            if !ty.may_be_bool() {
                return Err(self.not_bool(arg, ty));
            }
        }
        Ok(Ty::Bool)
    }

    fn not_bool(&self, arg: &IdedExpr, ty: &Ty) -> ConditionError {
        self.error(
            arg.id,
            format!(
                "`{}` is {}, but true or false is needed here: compare it, e.g. `... == \"value\"`",
                render(arg),
                ty.describe()
            ),
        )
    }

    fn conditional(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let types = self.global(id, call, 3)?;
        if !types[0].may_be_bool() {
            return Err(self.not_bool(&call.args[0], &types[0]));
        }
        Ok(unify(Some(types[1].clone()), types[2].clone()))
    }

    fn equality(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let types = self.global(id, call, 2)?;
        if !types[0].comparable(&types[1]) {
            return Err(self.error(
                id,
                format!(
                    "`{}` is {} and `{}` is {}: they are never equal; compare values of the same type \
                     (convert with int(...) or string(...))",
                    render(&call.args[0]),
                    types[0].describe(),
                    render(&call.args[1]),
                    types[1].describe()
                ),
            ));
        }
        Ok(Ty::Bool)
    }

    fn ordering(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let types = self.global(id, call, 2)?;
        if !types[0].ordered(&types[1]) {
            return Err(self.error(
                id,
                format!(
                    "cannot order {} and {} (`{}` and `{}`): compare numbers with numbers, \
                     strings with strings",
                    types[0].describe(),
                    types[1].describe(),
                    render(&call.args[0]),
                    render(&call.args[1])
                ),
            ));
        }
        Ok(Ty::Bool)
    }

    fn add(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let types = self.global(id, call, 2)?;
        let ty = match (&types[0], &types[1]) {
            (Ty::List(a), Ty::List(b)) => {
                Ty::List(Box::new(unify(Some((**a).clone()), (**b).clone())))
            }
            (Ty::Dyn, t) | (t, Ty::Dyn) if addable(t) => Ty::Dyn,
            (a, b) if a == b && addable(a) => a.clone(),
            (a, b) => return Err(self.operand_error(id, call, "+", a, b)),
        };
        Ok(ty)
    }

    fn arithmetic(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let op = match call.func_name.as_str() {
            operators::SUBSTRACT => "-",
            operators::MULTIPLY => "*",
            operators::DIVIDE => "/",
            operators::MODULO => "%",
            _ => "-",
        };
        if call.func_name == operators::NEGATE {
            let types = self.global(id, call, 1)?;
            return match &types[0] {
                t @ (Ty::Int | Ty::Double | Ty::Dyn) => Ok(t.clone()),
                t => Err(self.error(id, format!("cannot negate {}", t.describe()))),
            };
        }
        let types = self.global(id, call, 2)?;
        let numeric = |t: &Ty| match op {
            "%" => matches!(t, Ty::Int | Ty::Uint | Ty::Dyn),
            _ => t.is_numeric() || *t == Ty::Dyn,
        };
        match (&types[0], &types[1]) {
            (Ty::Dyn, t) | (t, Ty::Dyn) if numeric(t) => Ok(Ty::Dyn),
            (a, b) if a == b && numeric(a) => Ok(a.clone()),
            (a, b) => Err(self.operand_error(id, call, op, a, b)),
        }
    }

    fn operand_error(&self, id: u64, call: &CallExpr, op: &str, a: &Ty, b: &Ty) -> ConditionError {
        self.error(
            id,
            format!(
                "`{op}` does not apply to {} and {} (`{}` and `{}`): both sides need the same type \
                 (convert with int(...) or string(...))",
                a.describe(),
                b.describe(),
                render(&call.args[0]),
                render(&call.args[1])
            ),
        )
    }

    fn index(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let types = self.global(id, call, 2)?;
        match (&types[0], &types[1]) {
            (Ty::List(e), Ty::Int | Ty::Uint | Ty::Dyn) => Ok((**e).clone()),
            (Ty::Map(k, v), key) if k.comparable(key) => Ok((**v).clone()),
            (Ty::Dyn, _) => Ok(Ty::Dyn),
            (container, key) => Err(self.error(
                id,
                format!(
                    "cannot index {} with {} (`{}[{}]`): index a list with an int, a map with a key \
                     of its type",
                    container.describe(),
                    key.describe(),
                    render(&call.args[0]),
                    render(&call.args[1])
                ),
            )),
        }
    }

    fn membership(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let types = self.global(id, call, 2)?;
        let ok = match &types[1] {
            Ty::List(e) => e.comparable(&types[0]),
            Ty::Map(k, _) => k.comparable(&types[0]),
            Ty::Dyn => true,
            _ => false,
        };
        if ok {
            return Ok(Ty::Bool);
        }
        let (left, right) = (render(&call.args[0]), render(&call.args[1]));
        let message = match &types[1] {
            Ty::List(_) | Ty::Map(..) => format!(
                "`{left} in {right}` never holds: `{right}` is {} and `{left}` is {}",
                types[1].describe(),
                types[0].describe()
            ),
            Ty::String => format!(
                "`in` needs a list or a map on its right, but `{right}` is a string; \
                 to look for text in a string, write `{right}.contains({left})`"
            ),
            other => format!(
                "`in` needs a list or a map on its right, but `{right}` is {}",
                other.describe()
            ),
        };
        Err(self.error(id, message))
    }

    fn size(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let n = if call.target.is_some() { 0 } else { 1 };
        let types = self.args_exact(id, call, n)?;
        match &types[0] {
            Ty::String | Ty::Bytes | Ty::List(_) | Ty::Map(..) | Ty::Dyn => Ok(Ty::Int),
            other => Err(self.error(
                id,
                format!(
                    "size() applies to strings, bytes, lists and maps, not {}",
                    other.describe()
                ),
            )),
        }
    }

    fn args_exact(
        &mut self,
        id: u64,
        call: &mut CallExpr,
        n: usize,
    ) -> Result<Vec<Ty>, ConditionError> {
        if call.args.len() != n {
            return Err(self.arity_error(id, call));
        }
        self.args(call)
    }

    fn string_test(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let types = self.member(id, call, 1)?;
        self.require_strings(call, &types)?;
        Ok(Ty::Bool)
    }

    fn string_case(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let types = self.member(id, call, 0)?;
        self.require_strings(call, &types)?;
        Ok(Ty::String)
    }

    fn require_strings(&self, call: &CallExpr, types: &[Ty]) -> Result<(), ConditionError> {
        let operands = call.target.iter().map(|t| &**t).chain(&call.args);
        for (ty, operand) in types.iter().zip(operands) {
            if !matches!(ty, Ty::String | Ty::Dyn) {
                let hint = if matches!(ty, Ty::List(_)) && call.func_name == "contains" {
                    "; to test a list, write `\"item\" in list`"
                } else {
                    "; convert it with string(...)"
                };
                return Err(self.error(
                    operand.id,
                    format!(
                        "{}() applies to strings; `{}` is {}{hint}",
                        call.func_name,
                        render(operand),
                        ty.describe()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn conversion(&mut self, id: u64, call: &mut CallExpr) -> Checked {
        let types = self.global(id, call, 1)?;
        let to_int = call.func_name == "int";
        let ok = match &types[0] {
            Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Dyn => true,
            Ty::Bool | Ty::Bytes => !to_int,
            _ => false,
        };
        if !ok {
            return Err(self.error(
                id,
                format!(
                    "{}() cannot convert {}",
                    call.func_name,
                    types[0].describe()
                ),
            ));
        }
        Ok(if to_int { Ty::Int } else { Ty::String })
    }

    /// `s.matches("p")` or `matches(s, "p")`: compiles the pattern now and
    /// rewrites the call to `@matches(s, <index of the pattern>)`.
    fn matches(&mut self, id: u64, call: &mut CallExpr) -> Result<Expr, ConditionError> {
        let (mut text, pattern) = match (call.target.take(), call.args.len()) {
            (Some(target), 1) => (*target, call.args.remove(0)),
            (None, 2) => {
                let pattern = call.args.remove(1);
                (call.args.remove(0), pattern)
            }
            (target, _) => {
                call.target = target;
                return Err(self.arity_error(id, call));
            }
        };
        let ty = self.check(&mut text)?;
        if !matches!(ty, Ty::String | Ty::Dyn) {
            return Err(self.error(
                id,
                format!(
                    "matches() applies to strings; `{}` is {}",
                    render(&text),
                    ty.describe()
                ),
            ));
        }
        let Expr::Literal(LiteralValue::String(literal)) = &pattern.expr else {
            return Err(self.error(
                pattern.id,
                "the pattern of matches() must be a string literal, e.g. s.matches(\"^/v[0-9]+/\"), \
                 so that it is checked when the policy loads",
            ));
        };
        if self.regexes.len() >= MAX_PATTERNS {
            return Err(self.error(
                pattern.id,
                format!(
                    "a condition may use at most {MAX_PATTERNS} matches() patterns: combine them"
                ),
            ));
        }
        let regex = compile_pattern(literal.inner(), self.offset(pattern.id))?;
        let index = i64::try_from(self.regexes.len()).unwrap_or(i64::MAX);
        self.regexes.push(regex);
        let index = IdedExpr {
            id: pattern.id,
            expr: Expr::Literal(LiteralValue::Int(CelInt::from(index))),
        };
        Ok(Expr::Call(CallExpr {
            func_name: REGEX_FN.to_owned(),
            target: None,
            args: vec![text, index],
        }))
    }
}

fn addable(ty: &Ty) -> bool {
    ty.is_numeric() || matches!(ty, Ty::String | Ty::Bytes | Ty::List(_) | Ty::Dyn)
}

/// The type of a value that is of type `a` or `b`.
fn unify(a: Option<Ty>, b: Ty) -> Ty {
    match a {
        None => b,
        Some(a) if a == b => a,
        Some(_) => Ty::Dyn,
    }
}

/// ` (did you mean `x`?)` for the closest candidate within two edits.
fn suggestion(name: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map_or(String::new(), |(_, c)| format!(" (did you mean `{c}`?)"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---------------------------------------------------------------------------
// Rendering expressions in messages

/// `text`, shortened for a message.
fn quote(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTE_CHARS {
        return text.to_owned();
    }
    let short: String = text.chars().take(MAX_QUOTE_CHARS).collect();
    format!("{short}…")
}

/// An expression written back as CEL, shortened, for a message.
fn render(e: &IdedExpr) -> String {
    quote(&render_full(e))
}

fn render_full(e: &IdedExpr) -> String {
    match &e.expr {
        Expr::Ident(name) => match Fact::from_var(name) {
            Some(fact) => fact.name().to_owned(),
            None => name.clone(),
        },
        Expr::Literal(l) => render_literal(l),
        Expr::Select(s) if s.test => format!("has({}.{})", render_full(&s.operand), s.field),
        Expr::Select(s) => format!("{}.{}", render_full(&s.operand), s.field),
        Expr::Call(c) => render_call(c),
        Expr::List(l) => format!(
            "[{}]",
            l.elements
                .iter()
                .map(render_full)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Expr::Map(_) => "{...}".to_owned(),
        Expr::Comprehension(c) => {
            let name = match &c.accu_init.expr {
                Expr::Literal(LiteralValue::Boolean(b)) if *b.inner() => "all",
                Expr::Literal(LiteralValue::Boolean(_)) => "exists",
                Expr::Literal(LiteralValue::Int(_)) => "exists_one",
                _ => "map",
            };
            format!("{}.{name}({}, ...)", render_full(&c.iter_range), c.iter_var)
        }
        Expr::Struct(s) => format!("{}{{...}}", s.type_name),
        Expr::Unspecified => "?".to_owned(),
    }
}

fn render_literal(l: &LiteralValue) -> String {
    match l {
        LiteralValue::Boolean(b) => b.inner().to_string(),
        LiteralValue::Bytes(_) => "b\"...\"".to_owned(),
        LiteralValue::Double(d) => format!("{:?}", d.inner()),
        LiteralValue::Int(i) => i.inner().to_string(),
        LiteralValue::Null => "null".to_owned(),
        LiteralValue::String(s) => format!("{:?}", s.inner()),
        LiteralValue::UInt(u) => format!("{}u", u.inner()),
    }
}

fn render_call(c: &CallExpr) -> String {
    let args: Vec<String> = c.args.iter().map(render_full).collect();
    let infix = match c.func_name.as_str() {
        operators::LOGICAL_AND => Some("&&"),
        operators::LOGICAL_OR => Some("||"),
        operators::EQUALS => Some("=="),
        operators::NOT_EQUALS => Some("!="),
        operators::LESS => Some("<"),
        operators::LESS_EQUALS => Some("<="),
        operators::GREATER => Some(">"),
        operators::GREATER_EQUALS => Some(">="),
        operators::ADD => Some("+"),
        operators::SUBSTRACT => Some("-"),
        operators::MULTIPLY => Some("*"),
        operators::DIVIDE => Some("/"),
        operators::MODULO => Some("%"),
        operators::IN => Some("in"),
        _ => None,
    };
    match (infix, args.as_slice()) {
        (Some(op), [a, b]) => format!("{a} {op} {b}"),
        _ => match (c.func_name.as_str(), args.as_slice()) {
            (operators::LOGICAL_NOT, [a]) => format!("!{a}"),
            (operators::NEGATE, [a]) => format!("-{a}"),
            (operators::INDEX, [a, b]) => format!("{a}[{b}]"),
            (operators::CONDITIONAL, [a, b, d]) => format!("{a} ? {b} : {d}"),
            (name, _) => {
                let name = if name == REGEX_FN { "matches" } else { name };
                match &c.target {
                    Some(t) => format!("{}.{name}({})", render_full(t), args.join(", ")),
                    None => format!("{name}({})", args.join(", ")),
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// Facts for tests; `strict` makes `headers()` and `groups()` panic.
    #[derive(Clone)]
    struct TestFacts {
        method: String,
        path: String,
        host: String,
        headers: Vec<(String, String)>,
        query: Vec<(String, String)>,
        captures: Vec<(String, String)>,
        consumer: Option<String>,
        plan: Option<String>,
        product: Option<String>,
        groups: Vec<String>,
        strict: bool,
    }

    impl Default for TestFacts {
        fn default() -> Self {
            let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
            TestFacts {
                method: "GET".into(),
                path: "/pets/7".into(),
                host: "api.example.com".into(),
                headers: vec![
                    pair("x-debug", "1"),
                    pair("accept", "text/html"),
                    pair("accept", "application/json"),
                    pair("x-trace", "abc"),
                ],
                query: vec![pair("page", "2"), pair("page", "3"), pair("q", "café")],
                captures: vec![pair("id", "7")],
                consumer: Some("alice".into()),
                plan: None,
                product: Some("gold".into()),
                groups: vec!["staff".into(), "partners".into()],
                strict: false,
            }
        }
    }

    impl Facts for TestFacts {
        fn method(&self) -> &str {
            &self.method
        }
        fn path(&self) -> &str {
            &self.path
        }
        fn host(&self) -> &str {
            &self.host
        }
        fn route(&self) -> &str {
            "get-pet"
        }
        fn api(&self) -> &str {
            "petstore"
        }
        fn client(&self) -> IpAddr {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))
        }
        fn headers(&self) -> Vec<(String, String)> {
            assert!(!self.strict, "headers() called");
            self.headers.clone()
        }
        fn query(&self) -> Vec<(String, String)> {
            self.query.clone()
        }
        fn captures(&self) -> Vec<(String, String)> {
            self.captures.clone()
        }
        fn consumer(&self) -> Option<&str> {
            self.consumer.as_deref()
        }
        fn app(&self) -> Option<&str> {
            Some("mobile")
        }
        fn plan(&self) -> Option<&str> {
            self.plan.as_deref()
        }
        fn product(&self) -> Option<&str> {
            self.product.as_deref()
        }
        fn groups(&self) -> Vec<String> {
            assert!(!self.strict, "groups() called");
            self.groups.clone()
        }
    }

    fn eval_with(source: &str, facts: &TestFacts) -> Result<bool, EvalError> {
        Condition::compile(source)
            .unwrap_or_else(|e| panic!("`{source}` should compile: {e}"))
            .eval(facts)
    }

    fn eval(source: &str) -> bool {
        eval_with(source, &TestFacts::default())
            .unwrap_or_else(|e| panic!("`{source}` should evaluate: {e}"))
    }

    fn compile_error(source: &str) -> ConditionError {
        match Condition::compile(source) {
            Ok(c) => panic!("`{source}` should not compile, got {c:?}"),
            Err(e) => e,
        }
    }

    fn assert_both(true_source: &str, false_source: &str) {
        assert!(eval(true_source), "`{true_source}` should be true");
        assert!(!eval(false_source), "`{false_source}` should be false");
    }

    #[test]
    fn condition_is_send_sync_clone_debug() {
        fn check<T: Send + Sync + Clone + fmt::Debug>() {}
        check::<Condition>();
        let c = Condition::compile("request.method == \"GET\"").unwrap();
        assert_eq!(c.clone().source(), "request.method == \"GET\"");
        assert!(format!("{c:?}").contains("request.method"));
    }

    #[test]
    fn request_scalars() {
        assert_both("request.method == \"GET\"", "request.method == \"POST\"");
        assert_both(
            "request.path.startsWith(\"/pets/\")",
            "request.path == \"/pets\"",
        );
        assert_both(
            "request.host.endsWith(\".example.com\")",
            "request.host == \"\"",
        );
        assert_both(
            "request.route == \"get-pet\"",
            "request.route != \"get-pet\"",
        );
        assert_both(
            "request.api == \"petstore\"",
            "request.api.contains(\"users\")",
        );
        assert_both(
            "request.client == \"10.0.0.7\"",
            "request.client.startsWith(\"192.\")",
        );
    }

    #[test]
    fn request_maps() {
        assert_both(
            "request.headers[\"x-debug\"] == \"1\"",
            "\"x-missing\" in request.headers",
        );
        assert_both(
            "request.headers.accept == \"text/html, application/json\"",
            "request.headers.accept == \"text/html\"",
        );
        assert_both("request.query.page == \"2\"", "request.query.page == \"3\"");
        assert_both(
            "request.captures.id == \"7\"",
            "int(request.captures.id) > 7",
        );
        assert_both("size(request.query) == 2", "size(request.captures) == 0");
    }

    #[test]
    fn caller_fields() {
        assert_both("caller.consumer == \"alice\"", "caller.consumer == \"bob\"");
        assert_both("caller.app == \"mobile\"", "caller.app == \"\"");
        assert_both("caller.plan == \"\"", "caller.plan == \"gold\"");
        assert_both("caller.product == \"gold\"", "caller.product == \"silver\"");
        assert_both("caller.authenticated", "!caller.authenticated");
        let anonymous = TestFacts {
            consumer: None,
            ..TestFacts::default()
        };
        assert_eq!(
            eval_with("caller.authenticated", &anonymous).ok(),
            Some(false)
        );
        assert_eq!(
            eval_with("caller.consumer == \"\"", &anonymous).ok(),
            Some(true)
        );
    }

    #[test]
    fn groups() {
        assert_both(
            "caller.groups.exists(g, g == \"partners\")",
            "caller.groups.exists(g, g == \"admins\")",
        );
        assert_both(
            "\"partners\" in caller.groups",
            "\"admins\" in caller.groups",
        );
        assert_both(
            "size(caller.groups) == 2",
            "caller.groups[0] == \"partners\"",
        );
    }

    #[test]
    fn comprehensions_over_headers() {
        assert_both(
            "request.headers.exists(k, k.startsWith(\"x-\"))",
            "request.headers.exists(k, k.startsWith(\"y-\"))",
        );
        assert_both(
            "request.headers.all(k, k.lowerAscii() == k)",
            "request.headers.all(k, k.startsWith(\"x-\"))",
        );
        assert_both(
            "request.headers.exists_one(k, k == \"accept\")",
            "request.headers.exists_one(k, k.startsWith(\"x-\"))",
        );
        assert_both(
            "size(request.headers.filter(k, k.startsWith(\"x-\"))) == 2",
            "request.headers.map(k, k.upperAscii()).exists(k, k == \"accept\")",
        );
        assert_both(
            "request.headers.exists(k, caller.groups.exists(g, g == \"staff\"))",
            "[1, 2, 3].exists(n, n > 3)",
        );
    }

    #[test]
    fn has_on_headers() {
        let mut facts = TestFacts::default();
        facts
            .headers
            .push(("authorization".into(), "Bearer x".into()));
        assert_eq!(
            eval_with("has(request.headers.authorization)", &facts).ok(),
            Some(true)
        );
        assert!(!eval("has(request.headers.authorization)"));
    }

    #[test]
    fn maps_are_cut_down_to_the_keys_looked_up() {
        let projection = |source: &str| {
            let c = Condition::compile(source).unwrap();
            (0..3)
                .map(|i| c.inner.projection.0[i].clone())
                .collect::<Vec<_>>()
        };
        let only = |keys: &[&str]| Keys::Only(keys.iter().map(|k| k.to_string()).collect());
        assert_eq!(
            projection("\"x-debug\" in request.headers && request.query.page == \"2\""),
            [only(&["x-debug"]), only(&["page"]), only(&[])]
        );
        assert_eq!(
            projection("has(request.headers.a) && request.headers[\"b\"] == request.captures.id")
                [0],
            only(&["a", "b"])
        );
        for whole in [
            "request.headers.exists(k, k == \"a\")",
            "size(request.headers) > 1 && has(request.headers.a)",
            "request.headers[request.path] == \"a\"",
            "request.path in request.headers",
        ] {
            assert_eq!(projection(whole)[0], Keys::All, "{whole}");
        }
        // same results as with the whole map
        assert!(eval("has(request.headers.accept) && request.headers.accept == \"text/html, application/json\""));
        assert!(!eval(
            "\"x-debug\" in request.headers && \"x-other\" in request.headers"
        ));
    }

    #[test]
    fn matches_uses_compiled_patterns() {
        assert_both(
            "request.path.matches(\"^/pets/[0-9]+$\")",
            "matches(request.path, \"^/users/\")",
        );
        assert_both(
            "request.headers.exists(k, k.matches(\"^x-t\"))",
            "request.method.matches(\"(?i)^post$\")",
        );
    }

    #[test]
    fn scalars_and_conversions() {
        assert_both("string(1) + \"x\" == \"1x\"", "int(\"12\") < 10");
        assert_both(
            "request.method.lowerAscii() == \"get\"",
            "request.path.upperAscii() == request.path",
        );
        assert_both(
            "request.method == \"GET\" ? true : false",
            "1u == 2u || 1.5 > 2.0",
        );
    }

    #[test]
    fn unicode_and_nul() {
        let mut facts = TestFacts {
            path: "/café/ü/🦀".into(),
            ..TestFacts::default()
        };
        facts.headers.push(("x-name".into(), "Zoë\u{0}".into()));
        assert_eq!(
            eval_with("request.path == \"/café/ü/🦀\"", &facts).ok(),
            Some(true)
        );
        assert_eq!(
            eval_with("size(request.path) == 9", &facts).ok(),
            Some(true)
        );
        assert_eq!(
            eval_with("request.headers[\"x-name\"] == \"Zoë\\x00\"", &facts).ok(),
            Some(true)
        );
        assert_eq!(
            eval_with("request.query.q.contains(\"é\")", &facts).ok(),
            Some(true)
        );
        // a raw NUL in the source is a syntax error, not a panic
        let e = compile_error("request.path == \"a\" \u{0}");
        assert_eq!(e.offset, Some(20));
        // unicode before an error: the offset counts bytes
        let e = compile_error("\"é\" == reqest.path");
        assert_eq!(e.offset, Some(8), "{e}");
        let e = compile_error("\"éé\" == (");
        assert_eq!(e.offset, Some(11), "{e}");
    }

    #[test]
    fn unknown_identifier() {
        let e = compile_error("request.method == \"GET\" && reqest.path == \"/\"");
        assert_eq!(e.offset, Some(27));
        assert!(e.message.contains("unknown identifier `reqest`"), "{e}");
        assert!(e.message.contains("did you mean `request`"), "{e}");
        let e = compile_error("request.headers.exists(k, j == \"a\")");
        assert_eq!(e.offset, Some(26));
        assert!(e.message.contains("`k`"), "{e}");
    }

    #[test]
    fn unknown_field() {
        let e = compile_error("request.heders[\"a\"] == \"b\"");
        assert_eq!(e.offset, Some(8));
        assert!(
            e.message.starts_with("unknown field `request.heders` (did you mean `headers`?): request has method, path, host, route, api, client, headers, query, captures"),
            "{e}"
        );
        let e = compile_error("caller.plan == \"\" || caller.tier == \"gold\"");
        assert_eq!(e.offset, Some(28));
        assert!(
            e.message
                .contains("caller has consumer, app, plan, product, authenticated, groups"),
            "{e}"
        );
    }

    #[test]
    fn unknown_function() {
        let e = compile_error("request.path.split(\"/\").size() > 2");
        assert_eq!(e.offset, Some(13));
        assert!(e.message.starts_with("unknown function `split`"), "{e}");
        let e = compile_error("request.method == \"GET\" && lower(request.path) == \"/\"");
        assert_eq!(e.offset, Some(27));
        let e = compile_error("timestamp(\"2024-01-01T00:00:00Z\") == 1");
        assert_eq!(e.offset, Some(0));
        let e = compile_error("request.headers.exists(k)");
        assert!(e.message.contains("macro `exists`"), "{e}");
        compile_error("size(request.path, 1) == 1");
        compile_error("request.path.contains()");
        compile_error("dyn(request.path) == \"\"");
    }

    #[test]
    fn non_bool_results_rejected_at_compile_time() {
        let e = compile_error("request.path");
        assert_eq!(
            e.message,
            "a condition must be true or false; `request.path` is a string: compare it, e.g. `request.method == \"GET\"`"
        );
        assert_eq!(e.offset, Some(0));
        compile_error("size(caller.groups)");
        compile_error("request.headers");
        compile_error("\"x\" + request.path");
        let e = compile_error("request.path.startsWith(\"/a\") && request.path");
        assert!(e.message.contains("`request.path` is a string"), "{e}");
        let e = compile_error("request.headers.exists(k, k)");
        assert!(e.message.contains("`k` is a string"), "{e}");
    }

    #[test]
    fn type_mismatches_rejected() {
        let e = compile_error("request.path == 1");
        assert!(e.message.contains("never equal"), "{e}");
        assert_eq!(e.offset, Some(13));
        compile_error("request.captures.id > 7");
        compile_error("\"a\" in request.path");
        compile_error("1 in request.headers");
        compile_error("caller.groups.contains(\"x\")");
        compile_error("caller.groups[\"x\"] == \"y\"");
        compile_error("request.path.size() + 1.0 > 2.0");
        compile_error("caller.consumer == null");
        compile_error("request.path.foo == \"x\"");
    }

    #[test]
    fn namespaces_and_presence() {
        let e = compile_error("request == \"x\"");
        assert!(e.message.contains("cannot be used on its own"), "{e}");
        let e = compile_error("has(request.method)");
        assert!(e.message.contains("always present"), "{e}");
        let e = compile_error("has(caller.consumer)");
        assert!(e.message.contains("\"\" when unknown"), "{e}");
        let e = compile_error("request.headers.exists(request, request == \"a\")");
        assert!(e.message.contains("reserved"), "{e}");
    }

    #[test]
    fn comprehension_ranges_and_nesting() {
        let e = compile_error("request.path.exists(c, c == \"a\")");
        assert!(e.message.contains("may only iterate"), "{e}");
        let e = compile_error(
            "request.headers.exists(a, request.query.exists(b, caller.groups.exists(c, a == c)))",
        );
        assert!(e.message.contains("nest at most 2"), "{e}");
        assert!(eval("request.headers.map(k, k).exists(k, k == \"accept\")"));
    }

    #[test]
    fn missing_key_is_an_eval_error() {
        let e = eval_with(
            "request.headers[\"x-user\"] == \"a\"",
            &TestFacts::default(),
        )
        .expect_err("missing key");
        assert!(
            e.0.contains("`request.headers` has no key \"x-user\""),
            "{e}"
        );
        assert!(e.0.contains("\"x-user\" in request.headers"), "{e}");
        let e = eval_with("request.query.limit == \"5\"", &TestFacts::default())
            .expect_err("missing key");
        assert!(e.0.contains("has(request.query.limit)"), "{e}");
        // the guard works
        assert!(!eval(
            "\"x-user\" in request.headers && request.headers[\"x-user\"] == \"a\""
        ));
    }

    #[test]
    fn runtime_type_and_arithmetic_errors() {
        let e =
            eval_with("request.headers.map(k, k)[0]", &TestFacts::default()).expect_err("non-bool");
        assert!(e.0.contains("not true or false"), "{e}");
        eval_with("1 / (size(request.path) - 7) == 1", &TestFacts::default())
            .expect_err("division by zero");
        eval_with("int(request.path) == 1", &TestFacts::default()).expect_err("bad int");
    }

    #[test]
    fn unreferenced_facts_are_not_called() {
        let strict = TestFacts {
            strict: true,
            ..TestFacts::default()
        };
        let c = Condition::compile("request.method == \"GET\" && caller.plan == \"\"").unwrap();
        assert_eq!(c.eval(&strict).ok(), Some(true));
        let c = Condition::compile("\"id\" in request.captures && caller.authenticated").unwrap();
        assert_eq!(c.eval(&strict).ok(), Some(true));
        // and a referenced one is
        let c = Condition::compile("\"staff\" in caller.groups").unwrap();
        assert!(catch_unwind(AssertUnwindSafe(|| c.eval(&strict))).is_err());
    }

    #[test]
    fn malformed_input() {
        let e = compile_error("");
        assert!(e.message.contains("empty"), "{e}");
        compile_error("  \n\t ");
        let e = compile_error("(request.method == \"GET\"");
        assert_eq!(e.offset, Some(24), "{e}");
        let e = compile_error("request.method == \"GET\")");
        assert_eq!(e.offset, Some(23), "{e}");
        let e = compile_error("request.method ==\n  == \"GET\"");
        assert_eq!(e.offset, Some(20), "{e}");
        for source in [
            "\"unterminated",
            "'''",
            "r'",
            "b'\\u1234' == b''",
            "{",
            "}",
            "a.",
            ".",
            "1..2",
            "9999999999999999999999 == 1",
            "@result",
            "request.`method` == \"\"",
            "request.?method == \"\"",
            "{?\"a\": 1}",
            "[?1]",
            "type(1) == int",
            "has(a)",
            "has(request)",
            "[].exists(x)",
            "request.headers.exists(1, true)",
            "google.protobuf.Int64Value{value: 1} == 1",
            ".request.method == \"GET\"",
            "request.method == \"\\q\"",
            "\u{feff}request.method == \"GET\"",
            "true ? : false",
            ")))(((",
        ] {
            assert!(
                Condition::compile(source).is_err(),
                "`{source}` should not compile"
            );
        }
    }

    /// A small random generator of expressions.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.next(items.len())]
        }

        fn expr(&mut self, depth: usize) -> String {
            const ATOMS: [&str; 18] = [
                "request.method",
                "request.path",
                "request.headers",
                "request.headers[\"x-debug\"]",
                "request.query.page",
                "caller.groups",
                "caller.authenticated",
                "caller.plan",
                "\"x\"",
                "1",
                "2u",
                "1.5",
                "true",
                "null",
                "b\"a\"",
                "[1, \"a\"]",
                "{\"a\": 1}",
                "k",
            ];
            const BINARY: [&str; 15] = [
                "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "&&", "||", "in", "==",
            ];
            if depth == 0 {
                return self.pick(&ATOMS).to_owned();
            }
            let (a, b) = (self.expr(depth - 1), self.expr(depth - 1));
            match self.next(12) {
                0 => format!("!{a}"),
                1 => format!("-{a}"),
                2..=4 => format!("({a} {} {b})", self.pick(&BINARY)),
                5 => format!("size({a})"),
                6 => format!(
                    "{a}.{}({b})",
                    self.pick(&["contains", "startsWith", "endsWith"])
                ),
                7 => format!("{}({a})", self.pick(&["int", "string"])),
                8 => format!("{a}.matches(\"^[a-z]+\")"),
                9 => format!("{a}[{b}]"),
                10 => format!("({a} ? {b} : {})", self.expr(depth - 1)),
                _ => format!(
                    "{}.{}(k, {b})",
                    self.pick(&["caller.groups", "request.headers", "[1, 2]", "request.path"]),
                    self.pick(&["exists", "all", "exists_one", "map", "filter"])
                ),
            }
        }
    }

    /// Random expressions, well-formed or not: compiling and evaluating them
    /// never panics, and what compiles to a bool evaluates without surprises.
    #[test]
    fn random_expressions_never_panic() {
        let facts = TestFacts::default();
        let mut gen = Gen(0x2545_f491_4f6c_dd1d);
        let (mut compiled, mut evaluated) = (0, 0);
        for i in 0..1000 {
            let source = gen.expr(1 + i % 3);
            match Condition::compile(&source) {
                Ok(c) => {
                    compiled += 1;
                    match c.eval(&facts) {
                        Ok(_) => evaluated += 1,
                        Err(e) => assert!(!e.0.contains("internal error"), "`{source}`: {e}"),
                    }
                }
                Err(e) => assert!(!e.message.contains("internal error"), "`{source}`: {e}"),
            }
            // and the same, cut short
            let cut: String = source.chars().take(source.chars().count() / 2).collect();
            if let Err(e) = Condition::compile(&cut) {
                assert!(!e.message.contains("internal error"), "`{cut}`: {e}");
            }
        }
        assert!(compiled > 20 && evaluated > 10, "{compiled} {evaluated}");
    }

    #[test]
    fn size_limits() {
        let long = format!("request.path == \"{}\"", "a".repeat(MAX_SOURCE_BYTES));
        let e = compile_error(&long[..MAX_SOURCE_BYTES + 1]);
        assert!(e.message.contains("4097 bytes"), "{e}");
        let at_limit = format!("request.path == \"{}\"", "a".repeat(MAX_SOURCE_BYTES - 18));
        assert_eq!(at_limit.len(), MAX_SOURCE_BYTES);
        assert!(!eval(&at_limit));

        // the offset of an over-long source is on a character boundary
        let e = compile_error(&format!("\"{}\"", "é".repeat(2_100)));
        assert_eq!(e.offset, Some(MAX_SOURCE_BYTES - 1));

        // a 300-term `||` chain exceeds the node limit
        let short: String = ["true"; 300].join(" || ");
        assert!(short.len() < MAX_SOURCE_BYTES);
        let e2 = compile_error(&["caller.authenticated"; 150].join("||"));
        assert!(e2.message.contains("more than 256"), "{e2}");
        assert!(compile_error(&short).message.contains("more than 256"));
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflow() {
        let parens = |n: usize| {
            format!(
                "{}request.method == \"GET\"{}",
                "(".repeat(n),
                ")".repeat(n)
            )
        };
        // 10,000 parens: too long
        let e = compile_error(&parens(10_000));
        assert!(e.message.contains("limit is 4096"), "{e}");
        // 2,000 parens fit in 4096 bytes: caught by the bracket count, before parsing
        let e = compile_error(&parens(2_000));
        assert_eq!(e.offset, Some(MAX_DEPTH), "{e}");
        let e = compile_error(&format!("{}1{}", "[".repeat(2_000), "]".repeat(2_000)));
        assert_eq!(e.offset, Some(MAX_DEPTH));
        // brackets in strings do not count
        assert!(!eval(&format!("request.path == \"{}\"", "(".repeat(100))));
        // the deepest accepted brackets parse (on the compiler's own stack)
        assert!(eval(&parens(MAX_DEPTH)));
        let lists = format!("size({}1{}) == 1", "[".repeat(29), "]".repeat(29));
        assert!(eval(&lists));
        // long operator chains nest without brackets: rejected by the depth limit
        let e = compile_error(&format!("{}1 == 2001", "1 + ".repeat(1_000)));
        assert!(e.message.contains("nests more than 32"), "{e}");
        let e = compile_error(&format!("request{} == \"\"", ".a".repeat(1_900)));
        assert!(e.message.contains("nests more than 32"), "{e}");
        let e = compile_error(&format!("{}true", "true ? true : ".repeat(250)));
        assert!(
            e.message.contains("too deeply") || e.message.contains("more than"),
            "{e}"
        );
        let e = compile_error(&format!("{}1 == 41", "1 + ".repeat(40)));
        assert!(e.message.contains("nests more than 32"), "{e}");
        // and a condition at the depth limit evaluates on a 2 MiB stack, tokio's default
        // (a debug build needs about 1.5 MiB for it; see the module docs)
        let deep = format!("{}1 == 31", "1 + ".repeat(30));
        let c = Condition::compile(&deep).unwrap();
        let result = std::thread::Builder::new()
            .stack_size(2048 << 10)
            .spawn(move || c.eval(&TestFacts::default()).ok())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result, Some(true));
    }

    #[test]
    fn regex_limits() {
        let e = compile_error("request.path.matches(\"(unclosed\")");
        assert!(e.message.contains("not a valid regular expression"), "{e}");
        assert_eq!(e.offset, Some(21));
        let e = compile_error("request.path.matches(\"(a{1000}){1000}\")");
        assert!(e.message.contains("too complex"), "{e}");
        let e = compile_error(&format!("request.path.matches(\"{}\")", "a".repeat(513)));
        assert!(e.message.contains("513 bytes"), "{e}");
        let e = compile_error("request.path.matches(request.host)");
        assert!(e.message.contains("string literal"), "{e}");
        let nine = ["request.path.matches(\"a\")"; 9].join(" || ");
        let e = compile_error(&nine);
        assert!(e.message.contains("at most 8"), "{e}");
        assert!(!eval(&["request.path.matches(\"^z\")"; 8].join(" || ")));
        assert!(eval("request.path.matches(\"\\\\w+\")"));
    }

    /// Eval timings: `cargo test --release -- --ignored --nocapture bench`.
    #[test]
    #[ignore]
    fn bench_eval() {
        use std::time::Instant;
        let mut facts = TestFacts::default();
        for i in 0..6 {
            facts
                .headers
                .push((format!("x-h{i}"), format!("value {i}")));
        }
        let time = |label: &str, f: &mut dyn FnMut() -> bool| {
            let runs = 200_000;
            for _ in 0..1_000 {
                std::hint::black_box(f());
            }
            let start = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(f());
            }
            let per = start.elapsed().as_nanos() / runs;
            println!("{label}: {per} ns/eval");
        };
        for (source, expected) in [
            (
                "request.method == \"GET\" && \"x-debug\" in request.headers",
                true,
            ),
            ("caller.product == \"gold\"", false),
        ] {
            let condition = Condition::compile(source).unwrap();
            let check = TestFacts {
                product: Some("silver".into()),
                ..facts.clone()
            };
            let check = &check;
            assert_eq!(condition.eval(check).ok(), Some(expected));
            time(&format!("Condition::eval `{source}`"), &mut || {
                condition.eval(check).unwrap_or(false)
            });
            time("  of which facts.headers() alone", &mut || {
                !check.headers().is_empty()
            });
            time("  of which facts.headers() + map build", &mut || {
                !string_map(check.headers(), &Keys::All, Repeat::Join).is_empty()
            });
            // Naive: a fresh default Context (it builds the standard library) per call,
            // with `request` and `caller` as maps of every fact.
            let program = cel::Program::compile(source).unwrap();
            let naive = |facts: &TestFacts, env: Option<&Arc<Env>>| {
                let mut ctx = match env {
                    Some(env) => Context::with_env(Arc::clone(env)),
                    None => Context::default(),
                };
                let mut request: HashMap<String, Value> = HashMap::new();
                request.insert("method".into(), facts.method.clone().into());
                request.insert("path".into(), facts.path.clone().into());
                let headers: HashMap<String, String> = facts.headers().into_iter().collect();
                request.insert("headers".into(), headers.into());
                let mut caller: HashMap<String, Value> = HashMap::new();
                caller.insert("product".into(), "silver".to_string().into());
                ctx.add_variable_from_value("request", request);
                ctx.add_variable_from_value("caller", caller);
                program.execute(&ctx).ok() == Some(Value::Bool(true))
            };
            time("  naive, Context::default() per call", &mut || {
                naive(check, None)
            });
            time("  naive, shared Env, maps per call", &mut || {
                naive(check, Some(&ENV))
            });
        }
    }
}
