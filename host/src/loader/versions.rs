//! Version sets, versions and lifecycles. An API may name a set another
//! file declares, and a successor declared after it, so this level runs
//! once every manifest has been read: it checks what the APIs declared,
//! turns their routes into versioned ones (a path version's routes under
//! its segment) and refuses routes that would answer the same calls for
//! two owners.

use super::manifests::Source;
use super::{datetime_ms, Build};
use crate::manifest::{
    LifecycleSpec, LifecycleState, Name, Version, VersionScheme, VersionSetSpec,
    DEFAULT_VERSION_KEY,
};
use crate::route::{Route, RouteVersion, VersionFrom, VersionSetInfo};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use toml::Spanned;

/// A `[[version-set]]` as declared, and where.
pub(super) struct DeclaredSet {
    at: String,
    spec: VersionSetSpec,
}

/// What a built API declared about versions, kept until every manifest
/// has been read.
pub(super) struct Declared {
    /// Its index among the built APIs.
    pub api: usize,
    pub at: String,
    pub set: Option<Name>,
    pub version: Option<Version>,
    pub lifecycle: Option<LifecycleSpec>,
}

/// An API's version, as the gateway serves it.
#[derive(Debug, Clone)]
pub struct ApiVersion {
    pub set: Arc<str>,
    pub version: Arc<str>,
    pub from: VersionFrom,
}

/// A deprecated or retired API: what its calls are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub state: LifecycleState,
    /// Unix seconds (`Deprecation: @<secs>`).
    pub deprecated_at: Option<i64>,
    /// Unix seconds (`Sunset: <IMF-fixdate>`).
    pub sunset: Option<i64>,
    pub successor: Option<Successor>,
}

/// The API that replaces a deprecated or retired one, in the same set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Successor {
    pub api: Arc<str>,
    pub version: Arc<str>,
}

/// Unix seconds of a full TOML date-time with offset.
pub(super) fn unix_secs(d: &toml::value::Datetime) -> Option<i64> {
    if d.date.is_none() || d.time.is_none() || d.offset.is_none() {
        return None;
    }
    // `datetime_ms` has no time before 1970: such a date is refused.
    datetime_ms(d).map(|ms| (ms / 1000) as i64)
}

impl Build<'_> {
    /// Note the file's version sets.
    pub(super) fn version_sets(&mut self, src: &Source, sets: &[Spanned<VersionSetSpec>]) {
        for s in sets {
            self.declared_sets.push(DeclaredSet {
                at: src.at(s.span().start),
                spec: s.get_ref().clone(),
            });
        }
    }

    /// Check the version sets and what the APIs declared, make the routes
    /// of versions versioned, and refuse ambiguous routes; the sets as the
    /// router sees them.
    pub(super) fn versions(&mut self) -> Vec<VersionSetInfo> {
        let errors_before = self.errs.len();
        let sets = self.check_sets();
        let mut infos: Vec<VersionSetInfo> = sets
            .iter()
            .map(|(_, s, from)| VersionSetInfo {
                name: s.spec.name.to_string(),
                from: from.clone(),
                default: None,
                versions: Vec::new(),
                shapes: Vec::new(),
            })
            .collect();
        let index: HashMap<&str, usize> = sets
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| (name.as_str(), i))
            .collect();
        // Each API's set and version; each set's versions.
        let declared = std::mem::take(&mut self.declared);
        let mut of_api: BTreeMap<usize, (usize, Version)> = BTreeMap::new();
        let mut by_version: Vec<BTreeMap<Version, (usize, String)>> =
            vec![BTreeMap::new(); sets.len()];
        for d in &declared {
            let name = self.apis[d.api].name.clone();
            match (&d.set, &d.version) {
                (None, None) => {}
                (Some(s), None) => self.errs.push(format!(
                    "{}: api `{name}` is in version-set `{s}` but has no `version`: add one, e.g. version = \"v1\"",
                    d.at
                )),
                (None, Some(v)) => self.errs.push(format!(
                    "{}: api `{name}` has version `{v}` but no `version-set`: name the [[version-set]] it belongs to",
                    d.at
                )),
                (Some(s), Some(v)) => match index.get(s.as_str()) {
                    None => self.errs.push(format!(
                        "{}: api `{name}`: version-set `{s}` is not defined ({})",
                        d.at,
                        defined(sets.iter().map(|(n, _, _)| n.as_str()))
                    )),
                    Some(&i) => match by_version[i].get(v) {
                        Some((other, at)) => self.errs.push(format!(
                            "{}: api `{name}`: version `{v}` of version-set `{s}` is already api `{}` ({at})",
                            d.at, self.apis[*other].name
                        )),
                        None => {
                            by_version[i].insert(v.clone(), (d.api, d.at.clone()));
                            of_api.insert(d.api, (i, v.clone()));
                        }
                    },
                },
            }
        }
        // Lifecycles.
        for d in &declared {
            if let Some(l) = &d.lifecycle {
                if let Some(life) = self.lifecycle(d, l, &of_api) {
                    self.apis[d.api].lifecycle = Some(Arc::new(life));
                }
            }
        }
        self.defaults(&sets, &by_version, &mut infos);
        for (i, versions) in by_version.iter().enumerate() {
            infos[i].versions = versions.keys().map(|v| v.as_str().into()).collect();
        }
        for (&api, (set, v)) in &of_api {
            self.apis[api].version = Some(ApiVersion {
                set: infos[*set].name.as_str().into(),
                version: v.as_str().into(),
                from: infos[*set].from.clone(),
            });
        }
        self.version_routes(&of_api, &mut infos);
        // Routes are compared only when every version is what it says (an
        // API refused as a duplicate version would be reported twice).
        if self.errs.len() == errors_before {
            self.ambiguous_routes(&infos);
        }
        infos
    }

    /// Each set's default: one of its versions, not a retired one.
    fn defaults(
        &mut self,
        sets: &[(String, DeclaredSet, VersionFrom)],
        by_version: &[BTreeMap<Version, (usize, String)>],
        infos: &mut [VersionSetInfo],
    ) {
        for (i, (_, set, _)) in sets.iter().enumerate() {
            let Some(default) = &set.spec.default else {
                continue;
            };
            match by_version[i].get(default) {
                None => self.errs.push(format!(
                    "{}: version-set `{}`: default `{default}` is not one of its versions ({})",
                    set.at,
                    set.spec.name,
                    defined(by_version[i].keys().map(Version::as_str))
                )),
                Some((api, _)) => {
                    if self.declared_state(*api) == Some(LifecycleState::Retired) {
                        self.errs.push(format!(
                            "{}: version-set `{}`: default `{default}` is retired: make another version the default",
                            set.at, set.spec.name
                        ));
                    }
                    infos[i].default = Some(default.as_str().into());
                }
            }
        }
    }

    /// The declared sets by name (each once), with where they are and
    /// where a call names its version.
    fn check_sets(&mut self) -> Vec<(String, DeclaredSet, VersionFrom)> {
        let declared = std::mem::take(&mut self.declared_sets);
        let mut out: Vec<(String, DeclaredSet, VersionFrom)> = Vec::new();
        for d in declared {
            let name = d.spec.name.to_string();
            if let Some((_, first, _)) = out.iter().find(|(n, _, _)| *n == name) {
                self.errs.push(format!(
                    "{}: version-set `{name}` is already defined at {}",
                    d.at, first.at
                ));
                continue;
            }
            match scheme_of(&d.spec) {
                Ok(from) => out.push((name, d, from)),
                Err(e) => self
                    .errs
                    .push(format!("{}: version-set `{name}`: {e}", d.at)),
            }
        }
        out
    }

    /// An API's lifecycle, checked.
    fn lifecycle(
        &mut self,
        d: &Declared,
        l: &LifecycleSpec,
        of_api: &BTreeMap<usize, (usize, Version)>,
    ) -> Option<Lifecycle> {
        let name = self.apis[d.api].name.clone();
        let at = format!("{}: api `{name}`: lifecycle", d.at);
        let mut ok = true;
        let mut when = |key: &str, v: &Option<toml::value::Datetime>, errs: &mut Vec<String>| {
            v.as_ref().and_then(|t| {
                let s = unix_secs(t);
                if s.is_none() {
                    errs.push(format!(
                        "{at}: {key} `{t}` must be a full date-time with offset after 1970, e.g. 2027-01-01T00:00:00Z"
                    ));
                    ok = false;
                }
                s
            })
        };
        let deprecated_at = when("deprecated-at", &l.deprecated_at, &mut self.errs);
        let sunset = when("sunset", &l.sunset, &mut self.errs);
        if l.state == LifecycleState::Deprecated && l.deprecated_at.is_none() {
            self.errs.push(format!(
                "{at}: a deprecated API needs `deprecated-at` (the date its calls' `Deprecation` header gives), e.g. deprecated-at = 2026-06-01T00:00:00Z"
            ));
            ok = false;
        }
        if let (Some(d), Some(s)) = (deprecated_at, sunset) {
            if s < d {
                self.errs
                    .push(format!("{at}: sunset is before deprecated-at"));
                ok = false;
            }
        }
        let mut successor = None;
        if let Some(s) = &l.successor {
            let own = of_api.get(&d.api);
            let theirs = self
                .apis
                .iter()
                .position(|a| &*a.name == s.as_str())
                .map(|i| (i, of_api.get(&i)));
            match (own, theirs) {
                (None, _) => {
                    self.errs.push(format!(
                        "{at}: successor `{s}` needs this API to be a version of a version-set"
                    ));
                    ok = false;
                }
                (Some(_), None) => {
                    self.errs
                        .push(format!("{at}: successor `{s}` is not an API"));
                    ok = false;
                }
                (Some((set, _)), Some((i, their))) => match their {
                    Some((their_set, v)) if their_set == set && i != d.api => {
                        successor = Some((i, v.clone()));
                    }
                    _ if i == d.api => {
                        self.errs
                            .push(format!("{at}: successor `{s}` is the API itself"));
                        ok = false;
                    }
                    _ => {
                        self.errs.push(format!(
                            "{at}: successor `{s}` is not a version of the same version-set"
                        ));
                        ok = false;
                    }
                },
            }
        }
        if let Some((i, _)) = &successor {
            let retired = self.declared_state(*i) == Some(LifecycleState::Retired);
            if retired {
                self.errs.push(format!(
                    "{at}: successor `{}` is retired: name a version that serves",
                    self.apis[*i].name
                ));
                ok = false;
            }
        }
        ok.then(|| Lifecycle {
            state: l.state,
            deprecated_at,
            sunset,
            successor: successor.map(|(i, v)| Successor {
                api: self.apis[i].name.clone(),
                version: v.as_str().into(),
            }),
        })
    }

    /// The lifecycle state API `api` declared.
    fn declared_state(&self, api: usize) -> Option<LifecycleState> {
        self.apis[api].spec.lifecycle.as_ref().map(|l| l.state)
    }

    /// Put the routes of versions under their version: a path version's
    /// under its segment (and, for the set's default, also as written);
    /// a header or query version's as written, for that version only.
    fn version_routes(
        &mut self,
        of_api: &BTreeMap<usize, (usize, Version)>,
        infos: &mut [VersionSetInfo],
    ) {
        let mut routes = Vec::with_capacity(self.routes.len());
        for r in std::mem::take(&mut self.routes) {
            let Some((set, v)) = of_api.get(&r.api) else {
                routes.push(r);
                continue;
            };
            let info = &mut infos[*set];
            let version: Arc<str> = v.as_str().into();
            let tag = |strip| {
                Some(RouteVersion {
                    set: *set,
                    version: version.clone(),
                    strip,
                })
            };
            if info.from == VersionFrom::Path {
                info.shapes.push(r.path.clone());
                if info.default.as_deref() == Some(v.as_str()) {
                    routes.push(Route {
                        version: tag(false),
                        ..r.clone()
                    });
                }
                routes.push(Route {
                    path: r.path.under(v.as_str()),
                    version: tag(true),
                    ..r
                });
            } else {
                routes.push(Route {
                    version: tag(false),
                    ..r
                });
            }
        }
        for (order, r) in routes.iter_mut().enumerate() {
            r.order = order;
        }
        self.routes = routes;
    }

    /// Refuse two routes of different owners (an unversioned API, or a
    /// version set) that answer the same calls: the same path shape, hosts
    /// and methods that overlap, at least one of them versioned. And an
    /// unversioned route under a path version's segment.
    fn ambiguous_routes(&mut self, infos: &[VersionSetInfo]) {
        let mut by_shape: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in self.routes.iter().enumerate() {
            by_shape.entry(r.path.shape()).or_default().push(i);
        }
        let owner = |r: &Route| r.version.as_ref().map(|v| v.set);
        let mut seen = std::collections::BTreeSet::new();
        let mut errs = Vec::new();
        let mut shapes: Vec<_> = by_shape.into_iter().collect();
        shapes.sort();
        for (shape, list) in shapes {
            for (n, &a) in list.iter().enumerate() {
                for &b in &list[n + 1..] {
                    let (ra, rb) = (&self.routes[a], &self.routes[b]);
                    if owner(ra) == owner(rb) || (ra.version.is_none() && rb.version.is_none()) {
                        continue;
                    }
                    if !overlap(ra, rb) || !seen.insert((ra.api, rb.api, shape.clone())) {
                        continue;
                    }
                    errs.push(format!(
                        "{}: api `{}`{}: route `{}` answers the same calls as api `{}`{} route `{}`: give one of them another path, host or method",
                        self.api_at(ra.api),
                        self.apis[ra.api].name,
                        describe(ra, infos),
                        shape,
                        self.apis[rb.api].name,
                        describe(rb, infos),
                        shape,
                    ));
                }
            }
        }
        for r in self.routes.iter().filter(|r| r.version.is_none()) {
            let Some(first) = r.path.first_literal() else {
                continue;
            };
            for s in infos.iter().filter(|s| s.from == VersionFrom::Path) {
                if s.versions.iter().any(|v| &**v == first) {
                    errs.push(format!(
                        "{}: api `{}`: route `{}` starts with `/{first}`, a version of version-set `{}`: its calls would be read as that version's; give the route another path",
                        self.api_at(r.api),
                        self.apis[r.api].name,
                        r.path.shape(),
                        s.name
                    ));
                }
            }
        }
        self.errs.extend(errs);
    }

    /// Where built API `api` is declared.
    fn api_at(&self, api: usize) -> String {
        self.api_names
            .get(&*self.apis[api].name)
            .cloned()
            .unwrap_or_default()
    }
}

/// Where a set's calls name their version; an error for a key that does
/// not go with the scheme or a name that cannot be one.
fn scheme_of(s: &VersionSetSpec) -> Result<VersionFrom, String> {
    match (s.scheme, &s.header, &s.query) {
        (VersionScheme::Header, h, None) => {
            let h = h
                .as_deref()
                .unwrap_or(DEFAULT_VERSION_KEY)
                .to_ascii_lowercase();
            http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("header `{h}` is not a header name"))?;
            if matches!(
                h.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                return Err(format!("header `{h}` cannot name a version"));
            }
            Ok(VersionFrom::Header(h))
        }
        (VersionScheme::Query, None, q) => {
            let q = q.as_deref().unwrap_or(DEFAULT_VERSION_KEY);
            if q.is_empty()
                || q.len() > 64
                || !q
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
            {
                return Err(format!(
                    "query `{q}` must be 1 to 64 characters of letters, digits, `-`, `_`, `.` or `~`"
                ));
            }
            Ok(VersionFrom::Query(q.to_string()))
        }
        (VersionScheme::Path, None, None) => Ok(VersionFrom::Path),
        (scheme, h, _) => Err(format!(
            "`{}` does not go with scheme = \"{}\"",
            if h.is_some() { "header" } else { "query" },
            scheme.as_str()
        )),
    }
}

/// Whether two routes of the same shape can answer the same call: hosts
/// and methods overlap (none given means any).
fn overlap(a: &Route, b: &Route) -> bool {
    let hosts = a.hosts.is_empty()
        || b.hosts.is_empty()
        || a.hosts
            .iter()
            .any(|x| b.hosts.iter().any(|y| format!("{x:?}") == format!("{y:?}")));
    let methods = a.methods.is_empty()
        || b.methods.is_empty()
        || a.methods.iter().any(|m| b.methods.contains(m));
    hosts && methods
}

/// ` (version `v1` of version-set `pets`)`, or nothing for an unversioned route.
fn describe(r: &Route, infos: &[VersionSetInfo]) -> String {
    match &r.version {
        Some(v) => format!(
            " (version `{}` of version-set `{}`)",
            v.version, infos[v.set].name
        ),
        None => String::new(),
    }
}

/// `defined: a, b` or `none is defined`.
fn defined<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none is defined".into()
    } else {
        format!("defined: {}", names.join(", "))
    }
}
