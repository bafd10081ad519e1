//! Path normalisation and routing: (host, path, method) to an API route.
//!
//! The path is normalised once, before routing, and the normalised path is
//! what the router, every policy and the upstream see, so no encoding trick
//! can reach a route by one spelling and bypass it by another.

use std::collections::HashMap;
use std::sync::Arc;

/// Why a request path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with `/`")]
    NotAbsolute,
    #[error("path contains an invalid percent-escape")]
    BadEscape,
    #[error("path contains a control character or NUL")]
    ControlChar,
    #[error("path is longer than {0} bytes")]
    TooLong(usize),
    #[error("path contains an encoded slash or backslash (`%2F`, `%5C`)")]
    EncodedSlash,
    #[error("path contains `;` (path parameters are not accepted)")]
    Parameter,
    #[error("path contains a character that must be percent-encoded")]
    InvalidChar,
    #[error("path contains percent-escapes that are not UTF-8")]
    InvalidUtf8,
}

/// Longest path accepted, in bytes.
pub const MAX_PATH: usize = 8192;

/// Normalise a request path (without query):
/// - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
///   decoded, all other escapes are kept with upper-case hex;
/// - empty segments (`//`) are dropped and `.`/`..` (also as `%2E`) are
///   resolved, never climbing above `/`;
/// - a trailing slash is kept;
/// - refused, because some upstream would read them differently from the
///   router: invalid escapes; NUL and control characters, raw or encoded;
///   encoded slashes and backslashes (`%2F`, `%5C`); `;` (path parameters,
///   which some servers strip before resolving `..`); any byte that is not
///   allowed raw in a path (backslash, `#`, `?`, space, non-ASCII, ...);
///   escapes that do not decode to UTF-8 (including overlong forms like
///   `%C0%AE`).
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_PATH {
        return Err(PathError::TooLong(MAX_PATH));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut segments: Vec<String> = Vec::new();
    // As in RFC 3986 remove_dot_segments, a path ending in `/`, `/.` or
    // `/..` keeps a trailing slash.
    let mut trailing = false;
    for seg in raw.split('/').skip(1) {
        let seg = normalize_segment(seg)?;
        trailing = matches!(seg.as_str(), "" | "." | "..");
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(seg),
        }
    }
    let mut out = String::with_capacity(raw.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Bytes allowed raw in a path segment (RFC 3986 `pchar` without `%`,
/// and without `;`, which is refused on its own).
fn raw_allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

fn normalize_segment(seg: &str) -> Result<String, PathError> {
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    // Escaped bytes >= 0x80 in a row, checked as UTF-8 when the run ends.
    let mut high: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (h, l) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&h), Some(&l)) => (hex(h), hex(l)),
                _ => return Err(PathError::BadEscape),
            };
            let v = match (h, l) {
                (Some(h), Some(l)) => h * 16 + l,
                _ => return Err(PathError::BadEscape),
            };
            i += 3;
            if v >= 0x80 {
                high.push(v);
                continue;
            }
            flush_high(&mut high, &mut out)?;
            if v < 0x20 || v == 0x7f {
                return Err(PathError::ControlChar);
            }
            if v == b'/' || v == b'\\' {
                return Err(PathError::EncodedSlash);
            }
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(v as char);
            } else {
                push_escape(&mut out, v);
            }
        } else {
            flush_high(&mut high, &mut out)?;
            if b < 0x20 || b == 0x7f {
                return Err(PathError::ControlChar);
            }
            if b == b';' {
                return Err(PathError::Parameter);
            }
            if !raw_allowed(b) {
                return Err(PathError::InvalidChar);
            }
            out.push(b as char);
            i += 1;
        }
    }
    flush_high(&mut high, &mut out)?;
    Ok(out)
}

/// End a run of escaped bytes >= 0x80: it must be UTF-8 (Rust refuses
/// overlong forms and surrogates) without C1 control characters; it stays
/// escaped (upper-case hex) in the output.
fn flush_high(high: &mut Vec<u8>, out: &mut String) -> Result<(), PathError> {
    if high.is_empty() {
        return Ok(());
    }
    let s = std::str::from_utf8(high).map_err(|_| PathError::InvalidUtf8)?;
    if s.chars().any(char::is_control) {
        return Err(PathError::ControlChar);
    }
    for &b in high.iter() {
        push_escape(out, b);
    }
    high.clear();
    Ok(())
}

fn push_escape(out: &mut String, v: u8) {
    out.push('%');
    out.push(char::from(b"0123456789ABCDEF"[(v >> 4) as usize]));
    out.push(char::from(b"0123456789ABCDEF"[(v & 15) as usize]));
}

/// Check a capture's `name` in template `pattern`: letters, digits, `_`
/// and `-`, and not one of the earlier `names`.
fn capture_name(pattern: &str, name: &str, names: &[String]) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "path `{pattern}`: capture `{{{name}}}` must be a name of letters, digits, `_` or `-`"
        ));
    }
    if names.iter().any(|n| n == name) {
        return Err(format!(
            "path `{pattern}`: capture `{{{name}}}` appears twice"
        ));
    }
    Ok(())
}

/// A compiled path pattern.
#[derive(Debug, Clone)]
pub enum PathPattern {
    /// `/pets/{id}/toys`: literal segments and captures.
    Template(Vec<Segment>),
    /// `/pets`: this path and everything below it.
    Prefix(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Capture(String),
    /// `thumbnail.{ext}`, `{sid}.json`: a capture with literal text
    /// before or after it in the segment (at least one character for the
    /// capture).
    Affixed {
        prefix: String,
        name: String,
        suffix: String,
    },
}

impl PathPattern {
    /// Parse a `path` template.
    pub fn template(pattern: &str) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err(format!("path `{pattern}` must start with `/`"));
        }
        let mut segs = Vec::new();
        let mut names = Vec::<String>::new();
        for s in pattern.split('/').filter(|s| !s.is_empty()) {
            if let Some(name) = s
                .strip_prefix('{')
                .and_then(|i| i.strip_suffix('}'))
                .filter(|n| !n.contains(['{', '}']))
            {
                capture_name(pattern, name, &names)?;
                names.push(name.to_string());
                segs.push(Segment::Capture(name.to_string()));
            } else if s.contains('{') || s.contains('}') {
                let bad = || {
                    if s.contains('{') && !s.contains('}') {
                        return format!("path `{pattern}`: segment `{s}` has an unclosed `{{`");
                    }
                    format!(
                        "path `{pattern}`: segment `{s}`: a segment holds one capture, alone (`/{{id}}`) or with literal text around it (`/{{id}}.json`)"
                    )
                };
                let (prefix, rest) = s.split_once('{').ok_or_else(bad)?;
                let (name, suffix) = rest.split_once('}').ok_or_else(bad)?;
                if [prefix, name, suffix]
                    .iter()
                    .any(|t| t.contains(['{', '}']))
                {
                    return Err(bad());
                }
                capture_name(pattern, name, &names)?;
                for lit in [prefix, suffix].into_iter().filter(|l| !l.is_empty()) {
                    let norm = normalize_path(&format!("/{lit}"))
                        .map_err(|e| format!("path `{pattern}`: {e}"))?;
                    if norm != format!("/{lit}") {
                        return Err(format!(
                            "path `{pattern}`: `{lit}` is not in normal form (write `{}`)",
                            &norm[1..]
                        ));
                    }
                }
                names.push(name.to_string());
                segs.push(Segment::Affixed {
                    prefix: prefix.to_string(),
                    name: name.to_string(),
                    suffix: suffix.to_string(),
                });
            } else if matches!(s, "." | "..") {
                return Err(format!(
                    "path `{pattern}`: segment `{s}` is not allowed (`.` and `..` are resolved before routing)"
                ));
            } else {
                let norm = normalize_path(&format!("/{s}"))
                    .map_err(|e| format!("path `{pattern}`: {e}"))?;
                if norm != format!("/{s}") {
                    return Err(format!(
                        "path `{pattern}`: segment `{s}` is not in normal form (write `{}`)",
                        &norm[1..]
                    ));
                }
                segs.push(Segment::Literal(s.to_string()));
            }
        }
        Ok(PathPattern::Template(segs))
    }

    /// Parse a `prefix`.
    pub fn prefix(prefix: &str) -> Result<Self, String> {
        if !prefix.starts_with('/') {
            return Err(format!("prefix `{prefix}` must start with `/`"));
        }
        if prefix.contains('{') || prefix.contains('}') {
            return Err(format!(
                "prefix `{prefix}` cannot hold captures; use `path` for templates"
            ));
        }
        if prefix.split('/').any(|s| matches!(s, "." | "..")) {
            return Err(format!(
                "prefix `{prefix}`: segments `.` and `..` are not allowed (they are resolved before routing)"
            ));
        }
        let norm = normalize_path(prefix).map_err(|e| format!("prefix `{prefix}`: {e}"))?;
        Ok(PathPattern::Prefix(
            norm.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ))
    }

    /// Match a normalised path; on success the captures in template order.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let mut parts = path.split('/').filter(|s| !s.is_empty());
        match self {
            PathPattern::Template(segs) => {
                let mut caps = Vec::new();
                for seg in segs {
                    let part = parts.next()?;
                    match seg {
                        Segment::Literal(l) if l == part => {}
                        Segment::Literal(_) => return None,
                        Segment::Capture(name) => caps.push((name.clone(), part.to_string())),
                        Segment::Affixed {
                            prefix,
                            name,
                            suffix,
                        } => {
                            let middle = part
                                .strip_prefix(prefix.as_str())
                                .and_then(|p| p.strip_suffix(suffix.as_str()))
                                .filter(|m| !m.is_empty())?;
                            caps.push((name.clone(), middle.to_string()));
                        }
                    }
                }
                if parts.next().is_some() {
                    return None;
                }
                Some(caps)
            }
            PathPattern::Prefix(segs) => {
                for seg in segs {
                    if parts.next()? != seg {
                        return None;
                    }
                }
                Some(Vec::new())
            }
        }
    }

    /// The same pattern under one more leading literal segment (a path
    /// version's `/v1`).
    pub fn under(&self, segment: &str) -> PathPattern {
        match self {
            PathPattern::Template(segs) => {
                let mut s = vec![Segment::Literal(segment.to_string())];
                s.extend(segs.iter().cloned());
                PathPattern::Template(s)
            }
            PathPattern::Prefix(segs) => {
                let mut s = vec![segment.to_string()];
                s.extend(segs.iter().cloned());
                PathPattern::Prefix(s)
            }
        }
    }

    /// The pattern with its captures unnamed (`/pets/{}`): two routes with
    /// the same shape match the same paths.
    pub fn shape(&self) -> String {
        match self {
            PathPattern::Template(segs) => {
                let mut out = String::new();
                for s in segs {
                    out.push('/');
                    match s {
                        Segment::Literal(l) => out.push_str(l),
                        Segment::Capture(_) => out.push_str("{}"),
                        Segment::Affixed { prefix, suffix, .. } => {
                            out.push_str(prefix);
                            out.push_str("{}");
                            out.push_str(suffix);
                        }
                    }
                }
                if out.is_empty() {
                    out.push('/');
                }
                out
            }
            PathPattern::Prefix(segs) => format!("/{}/**", segs.join("/")),
        }
    }

    /// The first segment when it is a literal.
    pub fn first_literal(&self) -> Option<&str> {
        match self {
            PathPattern::Template(segs) => match segs.first() {
                Some(Segment::Literal(l)) => Some(l),
                _ => None,
            },
            PathPattern::Prefix(segs) => segs.first().map(String::as_str),
        }
    }

    /// Higher is more specific: templates beat prefixes, literals beat
    /// captures with literal text, which beat captures; longer beats
    /// shorter.
    fn specificity(&self) -> (u8, usize, usize) {
        match self {
            PathPattern::Template(segs) => {
                let lits: usize = segs
                    .iter()
                    .map(|s| match s {
                        Segment::Literal(_) => 2,
                        Segment::Affixed { .. } => 1,
                        Segment::Capture(_) => 0,
                    })
                    .sum();
                (1, lits, segs.len())
            }
            PathPattern::Prefix(segs) => (0, segs.len(), segs.len()),
        }
    }
}

/// A host pattern: exact, `*.suffix`, or any.
#[derive(Debug, Clone)]
pub enum HostPattern {
    Exact(String),
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(h: &str) -> Result<Self, String> {
        let h = h.to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        if let Some(rest) = h.strip_prefix("*.") {
            if valid(rest) {
                return Ok(HostPattern::Wildcard(format!(".{rest}")));
            }
        } else if valid(&h) {
            return Ok(HostPattern::Exact(h));
        }
        Err(format!(
            "host `{h}` is not a host name (ports are not part of a host pattern)"
        ))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Index of the API in the configuration.
    pub api: usize,
    /// The route's name (its manifest name or its pattern).
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub path: PathPattern,
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    /// Declaration order, to break ties.
    pub order: usize,
    /// The version it serves, for a route of a version of a version set.
    pub version: Option<RouteVersion>,
    /// Which of its API's chains it runs ([`crate::loader::Chains`]; 0:
    /// the API's own, with the gateway's around it).
    pub chain: usize,
    /// Its metric cells, resolved on its first call.
    pub cells: std::sync::OnceLock<&'static crate::observe::metrics::RouteCells>,
}

/// The version a route serves.
#[derive(Debug, Clone)]
pub struct RouteVersion {
    /// Its version set, an index in the router's sets.
    pub set: usize,
    pub version: Arc<str>,
    /// Reached through its version segment (path scheme): the segment is
    /// removed from the path the API sees.
    pub strip: bool,
}

/// Where a call names the version of a version set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionFrom {
    /// The first path segment.
    Path,
    /// A request header (lower-case name).
    Header(String),
    /// A query parameter.
    Query(String),
}

/// A version set as the router sees it.
#[derive(Debug, Clone)]
pub struct VersionSetInfo {
    pub name: String,
    pub from: VersionFrom,
    pub default: Option<Arc<str>>,
    /// Its versions, sorted.
    pub versions: Vec<Arc<str>>,
    /// Path scheme: its versions' patterns without the version segment,
    /// to tell a call to an unknown version from one to no API.
    pub shapes: Vec<PathPattern>,
}

/// The path without its first segment (`/v1/pets` is `/pets`, `/v1` is `/`).
pub fn strip_first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    match rest.find('/') {
        Some(i) => &rest[i..],
        None => "/",
    }
}

/// What routing found.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    Found {
        route: &'a Route,
        captures: Vec<(String, String)>,
    },
    /// The path is a version set's, but the call names none of its
    /// versions (`given`: what it named, if anything) and the set has no
    /// default.
    UnknownVersion {
        set: &'a VersionSetInfo,
        given: Option<String>,
    },
    /// A route matched host and path but not the method.
    MethodNotAllowed {
        allow: Vec<String>,
    },
    NotFound,
}

/// All routes, sorted most specific first.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
    /// First path segment to candidate routes; routes whose first segment
    /// is a capture or that are the root prefix go in `any_first`.
    by_first: HashMap<String, Vec<usize>>,
    any_first: Vec<usize>,
    /// The version sets the routes' `version`s point into.
    sets: Vec<VersionSetInfo>,
}

impl Router {
    /// A router over `routes` whose versioned routes point into `sets`.
    pub fn with_versions(routes: Vec<Route>, sets: Vec<VersionSetInfo>) -> Self {
        Router {
            sets,
            ..Router::new(routes)
        }
    }

    /// Every route, most specific first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The version sets.
    pub fn sets(&self) -> &[VersionSetInfo] {
        &self.sets
    }

    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| {
            let ah = !a.hosts.is_empty();
            let bh = !b.hosts.is_empty();
            bh.cmp(&ah)
                .then(b.path.specificity().cmp(&a.path.specificity()))
                .then(a.order.cmp(&b.order))
        });
        let mut by_first: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_first = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let first = match &r.path {
                PathPattern::Template(segs) => match segs.first() {
                    Some(Segment::Literal(l)) => Some(l.clone()),
                    _ => None,
                },
                PathPattern::Prefix(segs) => segs.first().cloned(),
            };
            match first {
                Some(f) => by_first.entry(f).or_default().push(i),
                None => any_first.push(i),
            }
        }
        Router {
            routes,
            by_first,
            any_first,
            sets: Vec::new(),
        }
    }

    /// Route a request that names no version by header or query.
    pub fn route(&self, host: &str, path: &str, method: &str) -> RouteMatch<'_> {
        self.route_versioned(host, path, method, &|_| None)
    }

    /// Route a request. `host` is the request's host without port, any
    /// case; `version_of` reads the version a call names in a header or a
    /// query parameter.
    ///
    /// Precedence: the most specific route wins, versioned or not (a path
    /// version's segment is one more literal). A header or query version
    /// set's route whose path matches answers for the set: with a version
    /// the set does not have (and no default), the call is refused as
    /// [`RouteMatch::UnknownVersion`] rather than tried on less specific
    /// routes.
    pub fn route_versioned<'r>(
        &self,
        host: &str,
        path: &str,
        method: &str,
        version_of: &dyn Fn(&VersionFrom) -> Option<&'r str>,
    ) -> RouteMatch<'_> {
        let host = host.to_ascii_lowercase();
        let first = path.split('/').find(|s| !s.is_empty()).unwrap_or("");
        let mut candidates: Vec<usize> = self.by_first.get(first).cloned().unwrap_or_default();
        candidates.extend_from_slice(&self.any_first);
        candidates.sort_unstable();
        let mut allow: Vec<String> = Vec::new();
        for i in candidates {
            let r = &self.routes[i];
            if !r.hosts.is_empty() && !r.hosts.iter().any(|h| h.matches(&host)) {
                continue;
            }
            let Some(captures) = r.path.matches(path) else {
                continue;
            };
            if let Some(v) = &r.version {
                let set = &self.sets[v.set];
                if set.from != VersionFrom::Path {
                    let given = version_of(&set.from).filter(|g| !g.is_empty());
                    match given.or(set.default.as_deref()) {
                        Some(w) if set.versions.iter().any(|x| &**x == w) => {
                            if w != &*v.version {
                                continue;
                            }
                        }
                        _ => {
                            return RouteMatch::UnknownVersion {
                                set,
                                given: given.map(str::to_string),
                            }
                        }
                    }
                }
            }
            if !r.methods.is_empty() && !r.methods.iter().any(|m| m == method) {
                for m in &r.methods {
                    if !allow.contains(m) {
                        allow.push(m.clone());
                    }
                }
                continue;
            }
            return RouteMatch::Found { route: r, captures };
        }
        if allow.is_empty() {
            // A path version set's path under a version it does not have,
            // or without a version (and the set has no default).
            let rest = strip_first_segment(path);
            for set in self.sets.iter().filter(|s| s.from == VersionFrom::Path) {
                if set.shapes.iter().any(|p| p.matches(rest).is_some()) && rest != path {
                    let first = path.split('/').find(|s| !s.is_empty()).unwrap_or("");
                    return RouteMatch::UnknownVersion {
                        set,
                        given: Some(first.to_string()),
                    };
                }
                if set.default.is_none() && set.shapes.iter().any(|p| p.matches(path).is_some()) {
                    return RouteMatch::UnknownVersion { set, given: None };
                }
            }
            RouteMatch::NotFound
        } else {
            allow.sort();
            RouteMatch::MethodNotAllowed { allow }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let n = |p| normalize_path(p).unwrap();
        assert_eq!(n("/"), "/");
        assert_eq!(n("//a///b"), "/a/b");
        assert_eq!(n("/a/./b/../c"), "/a/c");
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/a/%2e%2E/b"), "/b");
        assert_eq!(n("/%41%62c"), "/Abc");
        assert_eq!(n("/caf%c3%a9/%7e%2a"), "/caf%C3%A9/~%2A");
        assert_eq!(n("/a:b@c!$&'()*+,="), "/a:b@c!$&'()*+,=");
        assert_eq!(n("/a/"), "/a/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%00"), Err(PathError::ControlChar));
        assert_eq!(normalize_path("a"), Err(PathError::NotAbsolute));
        let refused = |p: &str, e: PathError| assert_eq!(normalize_path(p), Err(e), "{p}");
        refused("/a%2fb", PathError::EncodedSlash);
        refused("/public/..%2Fadmin", PathError::EncodedSlash);
        refused("/a%5cb", PathError::EncodedSlash);
        refused("/a\\..\\b", PathError::InvalidChar);
        refused("/public/..;/admin", PathError::Parameter);
        refused("/admin;x=1", PathError::Parameter);
        refused("/a#b", PathError::InvalidChar);
        refused("/a?b", PathError::InvalidChar);
        refused("/a b", PathError::InvalidChar);
        refused("/caf\u{e9}", PathError::InvalidChar);
        refused("/a\u{7f}", PathError::ControlChar);
        refused("/a%0a", PathError::ControlChar);
        refused("/a%7F", PathError::ControlChar);
        refused("/a%c2%85", PathError::ControlChar);
        refused("/%c0%ae%c0%ae/admin", PathError::InvalidUtf8);
        refused("/%c0%af", PathError::InvalidUtf8);
        refused("/%e0%80%ae", PathError::InvalidUtf8);
        refused("/%ff", PathError::InvalidUtf8);
        refused("/%c3", PathError::InvalidUtf8);
        refused("/%c3/%a9", PathError::InvalidUtf8);
        refused("/%ed%a0%80", PathError::InvalidUtf8);
        assert!(normalize_path(&format!("/{}", "a".repeat(MAX_PATH))).is_err());
    }

    fn route(
        api: usize,
        hosts: &[&str],
        pat: PathPattern,
        methods: &[&str],
        order: usize,
    ) -> Route {
        Route {
            api,
            name: format!("r{order}"),
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            path: pat,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            order,
            version: None,
            chain: 0,
            cells: Default::default(),
        }
    }

    #[test]
    fn captures_with_literal_text_around_them() {
        let p = PathPattern::template("/files/{id}/thumbnail.{ext}").unwrap();
        assert_eq!(
            p.matches("/files/7/thumbnail.png"),
            Some(vec![
                ("id".into(), "7".into()),
                ("ext".into(), "png".into())
            ])
        );
        assert_eq!(p.matches("/files/7/thumbnail."), None);
        assert_eq!(p.matches("/files/7/other.png"), None);
        let j = PathPattern::template("/Calls/{Sid}.json").unwrap();
        assert_eq!(
            j.matches("/Calls/CA1.json"),
            Some(vec![("Sid".into(), "CA1".into())])
        );
        assert_eq!(j.matches("/Calls/.json"), None);
        assert!(PathPattern::template("/a/{x}.{y}").is_err());
        assert!(PathPattern::template("/a/{x}}").is_err());
        assert!(PathPattern::template("/a/b{x}/{x}").is_err());
        assert!(PathPattern::template("/a/%7e{x}").is_err());
        // A literal beats text around a capture, which beats a capture.
        let r = Router::new(vec![
            route(0, &[], PathPattern::template("/c/{sid}").unwrap(), &[], 0),
            route(
                1,
                &[],
                PathPattern::template("/c/{sid}.json").unwrap(),
                &[],
                1,
            ),
            route(
                2,
                &[],
                PathPattern::template("/c/list.json").unwrap(),
                &[],
                2,
            ),
        ]);
        let api = |p| match r.route("h", p, "GET") {
            RouteMatch::Found { route, .. } => route.api,
            _ => 99,
        };
        assert_eq!(
            (api("/c/list.json"), api("/c/x.json"), api("/c/x")),
            (2, 1, 0)
        );
    }

    #[test]
    fn routing() {
        let r = Router::new(vec![
            route(0, &[], PathPattern::prefix("/pets").unwrap(), &[], 0),
            route(
                1,
                &[],
                PathPattern::template("/pets/{id}").unwrap(),
                &["GET"],
                1,
            ),
            route(
                2,
                &[],
                PathPattern::template("/pets/mine").unwrap(),
                &["GET"],
                2,
            ),
            route(
                3,
                &["api.example.com"],
                PathPattern::prefix("/").unwrap(),
                &[],
                3,
            ),
            route(
                4,
                &["*.example.org"],
                PathPattern::prefix("/pets").unwrap(),
                &[],
                4,
            ),
        ]);
        let api = |m: RouteMatch| match m {
            RouteMatch::Found { route, captures } => (route.api, captures),
            other => panic!("{other:?}"),
        };
        assert_eq!(api(r.route("x", "/pets/7", "GET")).0, 1);
        assert_eq!(
            api(r.route("x", "/pets/7", "GET")).1,
            vec![("id".to_string(), "7".to_string())]
        );
        assert_eq!(api(r.route("x", "/pets/mine", "GET")).0, 2);
        assert_eq!(api(r.route("x", "/pets/7", "POST")).0, 0);
        assert_eq!(api(r.route("x", "/pets", "GET")).0, 0);
        assert!(matches!(
            r.route("x", "/petshop", "GET"),
            RouteMatch::NotFound
        ));
        assert_eq!(api(r.route("API.example.com", "/pets/7", "GET")).0, 3);
        assert_eq!(api(r.route("a.b.example.org", "/pets/7", "GET")).0, 4);
        assert_eq!(api(r.route("example.org", "/pets/7", "GET")).0, 1);
    }

    #[test]
    fn method_not_allowed() {
        let r = Router::new(vec![route(
            0,
            &[],
            PathPattern::template("/a").unwrap(),
            &["GET", "HEAD"],
            0,
        )]);
        match r.route("h", "/a", "DELETE") {
            RouteMatch::MethodNotAllowed { allow } => assert_eq!(allow, vec!["GET", "HEAD"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_patterns() {
        assert!(PathPattern::template("pets").is_err());
        assert!(PathPattern::template("/pets/{id").is_err());
        assert!(PathPattern::template("/pets/x{id").is_err());
        assert!(PathPattern::template("/pets/x{}").is_err());
        assert!(PathPattern::template("/{a}/{a}").is_err());
        assert!(PathPattern::template("/a/../b").is_err());
        assert!(PathPattern::prefix("/{x}").is_err());
        assert!(HostPattern::parse("a.com:80").is_err());
        assert!(HostPattern::parse("*.").is_err());
    }
}
