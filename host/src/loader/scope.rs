//! Scopes: chains at four levels, composed into what each route serves.
//!
//! | scope | written as | runs |
//! |---|---|---|
//! | gateway | `[[chain]]` in one manifest | on every API, around its chain |
//! | product | `[[product]]` with `[[product.chain]]` | for callers subscribed through the product, right after the step that identified them |
//! | API | `[[api.chain]]` | on every route of the API |
//! | route | `[[api.route.chain]]` | on that route, around the API's chain |
//!
//! An inner chain says where the enclosing one runs with a `base` step
//! (`{ base = true }`, as Azure API Management's `<base/>`); without one the
//! enclosing chain runs first. The gateway's and the products' chains are
//! read from every manifest before any API is built; each API then builds
//! its own copy of their steps (a step's counters, cache and consumer
//! lookups belong to the API it serves), once for all its routes.

use super::manifests::{ChainAt, Source};
use super::step::Owner;
use super::Build;
use crate::manifest::{ApiSpec, PolicyManifest, StepSpec};
use crate::policy::Step;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// A chain declared outside any API: the gateway's or a product's.
#[derive(Debug)]
pub(super) struct OuterChain {
    pub file: PathBuf,
    pub text: Arc<str>,
    pub place: ChainAt,
    pub steps: Vec<Spanned<StepSpec>>,
}

/// The chains declared outside the APIs, gathered from every manifest.
#[derive(Debug, Default)]
pub(super) struct Scopes {
    pub gateway: Option<OuterChain>,
    /// By product id.
    pub products: BTreeMap<String, OuterChain>,
}

/// The chains declared outside the APIs as their files say them, and
/// where: what the admin API reads and rewrites.
#[derive(Debug, Clone, Default)]
pub struct OuterChains {
    /// The gateway's chain and the manifest that declares it.
    pub gateway: Option<(PathBuf, Vec<StepSpec>)>,
    /// Each product's chain and its manifest, by product id.
    pub products: BTreeMap<String, (PathBuf, Vec<StepSpec>)>,
}

impl Scopes {
    /// What the admin API shows of them.
    pub(super) fn outer(&self) -> OuterChains {
        let specs = |c: &OuterChain| {
            let steps = c.steps.iter().map(|s| s.get_ref().clone()).collect();
            (c.file.clone(), steps)
        };
        OuterChains {
            gateway: self.gateway.as_ref().map(specs),
            products: self
                .products
                .iter()
                .map(|(id, c)| (id.clone(), specs(c)))
                .collect(),
        }
    }
}

/// Which scope a step of an API comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Gateway,
    Product(String),
    Api,
    /// The route's name.
    Route(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Gateway => f.write_str("gateway"),
            Scope::Product(p) => write!(f, "product `{p}`"),
            Scope::Api => f.write_str("api"),
            Scope::Route(r) => write!(f, "route `{r}`"),
        }
    }
}

/// What an API serves: its steps (every step of its scopes, each once,
/// in [`crate::loader::Api::steps`]) arranged into chains.
#[derive(Debug, Clone, Default)]
pub struct Chains {
    /// The effective chains, as indexes of steps: `[0]` is the API's chain
    /// with the gateway's where its `base` says; then one for each route
    /// with steps of its own ([`crate::route::Route::chain`] names which).
    pub chains: Vec<Vec<usize>>,
    /// The steps of each product's chain, by product id.
    pub products: BTreeMap<String, Vec<usize>>,
    /// The scope of each step.
    pub scopes: Vec<Scope>,
}

impl Chains {
    /// The chains of an API whose steps are `n` steps of its own chain, in
    /// order (what a test or a tool builds without scopes).
    pub fn plain(n: usize) -> Chains {
        Chains {
            chains: vec![(0..n).collect()],
            products: BTreeMap::new(),
            scopes: vec![Scope::Api; n],
        }
    }

    /// The steps a caller of `product` runs once identified.
    pub fn of_product(&self, product: &str) -> Option<&[usize]> {
        self.products.get(product).map(Vec::as_slice)
    }
}

impl super::Generation {
    /// The chain each route of each API runs, one line per route in the
    /// order the manifests declare them (what `tollgate check` prints):
    /// the steps in order, each with its scope when not the API's and its
    /// condition, then what the callers of each product run once
    /// identified.
    pub fn effective_chains(&self) -> Vec<String> {
        let mut routes: Vec<&crate::route::Route> = self.router.routes().iter().collect();
        routes.sort_by_key(|r| (r.api, r.order));
        let mut out = Vec::new();
        for r in routes {
            let Some(api) = self.apis.get(r.api) else {
                continue;
            };
            let chain = api
                .chains
                .chains
                .get(r.chain)
                .map_or(&[][..], Vec::as_slice);
            let mut line = format!(
                "api `{}`, route `{}`: {}",
                api.name,
                r.name,
                describe(api, chain)
            );
            for (product, steps) in &api.chains.products {
                line.push_str(&format!(
                    "; once the caller is identified, for product `{product}`: {}",
                    describe(api, steps)
                ));
            }
            out.push(line);
        }
        out
    }
}

/// Steps of `api` by index, as `tollgate check` prints a chain.
fn describe(api: &super::Api, chain: &[usize]) -> String {
    if chain.is_empty() {
        return "no step".into();
    }
    chain
        .iter()
        .map(|&i| {
            let step = &api.steps[i];
            let mut s = step.name.to_string();
            match api.chains.scopes.get(i) {
                Some(Scope::Api) | Some(Scope::Product(_)) | None => {}
                Some(scope) => s.push_str(&format!(" [{scope}]")),
            }
            if let Some(w) = &step.when {
                s.push_str(&format!(" (when {})", w.source()));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// A chain as written: steps, and where the enclosing chain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Base,
    Step(usize),
}

/// The chain `inner` makes of the enclosing chain `outer`: `inner`'s
/// steps, with `outer`'s where its `base` entry is, or before them all.
pub(crate) fn compose(outer: &[usize], inner: &[Entry]) -> Vec<usize> {
    let mut out = Vec::with_capacity(outer.len() + inner.len());
    if !inner.contains(&Entry::Base) {
        out.extend_from_slice(outer);
    }
    for e in inner {
        match e {
            Entry::Base => out.extend_from_slice(outer),
            Entry::Step(i) => out.push(*i),
        }
    }
    out
}

/// The steps of an API as they are built, with each name's scope (a name
/// may be used once in an API, whatever the scope: metrics and logs name
/// a step by its API and its name).
#[derive(Default)]
pub(super) struct Arena {
    pub steps: Vec<Step>,
    pub scopes: Vec<Scope>,
    names: BTreeMap<String, String>,
    pub ok: bool,
}

impl Arena {
    fn new() -> Arena {
        Arena {
            ok: true,
            ..Arena::default()
        }
    }
}

/// What [`Build::scoped`] returns: the API's steps, its chains, and for
/// each of its `[[api.route]]`s the index of its chain.
pub(super) struct Scoped {
    pub steps: Vec<Step>,
    pub chains: Chains,
    pub route_chains: Vec<usize>,
}

impl Build<'_> {
    /// Gather the gateway's chain and the products' chains of one
    /// manifest; a second gateway chain or a product's second chain is an
    /// error naming the first.
    pub(super) fn outer_chains(&mut self, file: &Path, text: &Arc<str>, m: &PolicyManifest) {
        let src = Source::new(file, text);
        if !m.chain.is_empty() {
            let at = src.at(m.chain[0].span().start);
            match &self.scopes.gateway {
                Some(first) => self.errs.push(format!(
                    "{at}: the gateway chain is already declared in {}: declare it in one manifest",
                    first.file.display()
                )),
                None => {
                    self.scopes.gateway = Some(OuterChain {
                        file: file.to_path_buf(),
                        text: text.clone(),
                        place: ChainAt::Gateway,
                        steps: m.chain.clone(),
                    })
                }
            }
        }
        for (i, p) in m.products.iter().enumerate() {
            let at = src.at(p.span().start);
            let id = p.get_ref().id.to_string();
            if let Some(first) = self.scopes.products.get(&id) {
                self.errs.push(format!(
                    "{at}: product `{id}` has a chain already, in {}: declare it once",
                    first.file.display()
                ));
                continue;
            }
            self.scopes.products.insert(
                id,
                OuterChain {
                    file: file.to_path_buf(),
                    text: text.clone(),
                    place: ChainAt::Product(i),
                    steps: p.get_ref().chain.clone(),
                },
            );
        }
    }

    /// Every step of API `api` (or of its `revision`) in every scope, and
    /// its chains; `None` after an error (reported).
    pub(super) fn scoped(
        &mut self,
        src: &Source,
        (index_in_file, revision): (usize, Option<usize>),
        api: &ApiSpec,
    ) -> Option<Scoped> {
        let scopes = std::mem::take(&mut self.scopes);
        let mut arena = Arena::new();
        let gateway = match &scopes.gateway {
            Some(g) => {
                let gsrc = Source::new(&g.file, &g.text);
                let entries =
                    self.entries(&gsrc, Owner::Gateway, g.place, api, &g.steps, &mut arena);
                compose(&[], &entries)
            }
            None => Vec::new(),
        };
        let place = ChainAt::Api(index_in_file, revision);
        let own = self.entries(src, Owner::Api, place, api, &api.chain, &mut arena);
        let mut chains = vec![compose(&gateway, &own)];
        let mut route_chains = Vec::new();
        for (r, route) in api.routes.iter().enumerate() {
            let spec = route.get_ref();
            if spec.chain.is_empty() {
                route_chains.push(0);
                continue;
            }
            let name = route_label(spec);
            let place = ChainAt::Route(index_in_file, revision, r);
            let owner = Owner::Route(&name);
            let entries = self.entries(src, owner, place, api, &spec.chain, &mut arena);
            route_chains.push(chains.len());
            chains.push(compose(&chains[0], &entries));
        }
        let mut products = BTreeMap::new();
        for (id, p) in &scopes.products {
            let psrc = Source::new(&p.file, &p.text);
            let owner = Owner::Product(id);
            let entries = self.entries(&psrc, owner, p.place, api, &p.steps, &mut arena);
            products.insert(id.clone(), compose(&[], &entries));
        }
        self.scopes = scopes;
        arena.ok.then(|| Scoped {
            chains: Chains {
                chains,
                products,
                scopes: arena.scopes,
            },
            steps: arena.steps,
            route_chains,
        })
    }

    /// The entries of one chain as written, its steps built into `arena`.
    fn entries(
        &mut self,
        src: &Source,
        owner: Owner,
        place: ChainAt,
        api: &ApiSpec,
        steps: &[Spanned<StepSpec>],
        arena: &mut Arena,
    ) -> Vec<Entry> {
        let mut out = Vec::with_capacity(steps.len());
        let mut base_at: Option<usize> = None;
        for (index, s) in steps.iter().enumerate() {
            let site = super::step::StepSite::new(src, owner, api, place, index, s);
            let spec = s.get_ref();
            if spec.base {
                if let Err(e) = check_base(owner, spec, base_at) {
                    self.errs.push(format!(
                        "{}: {}: {e}",
                        src.at(s.span().start),
                        owner.describe(api.name.as_str())
                    ));
                    arena.ok = false;
                    continue;
                }
                base_at = Some(index);
                out.push(Entry::Base);
                continue;
            }
            if let Some(first) = arena.names.get(&site.name) {
                let also = if *first == owner.to_string() {
                    String::new()
                } else {
                    format!(" (by {first} and {owner} of api `{}`)", api.name)
                };
                self.errs.push(format!(
                    "{}: {}: step name `{}` is used twice{also}; give each step a distinct `name`",
                    src.at(s.span().start),
                    owner.describe(api.name.as_str()),
                    site.name,
                ));
                arena.ok = false;
                continue;
            }
            arena.names.insert(site.name.clone(), owner.to_string());
            match self.step(&site, spec) {
                Some(step) => {
                    out.push(Entry::Step(arena.steps.len()));
                    arena.steps.push(step);
                    arena.scopes.push(owner.scope());
                }
                None => arena.ok = false,
            }
        }
        out
    }
}

/// What is wrong with a `base` step, if anything: it stands alone, once,
/// in a chain that has an enclosing one.
fn check_base(owner: Owner, spec: &StepSpec, earlier: Option<usize>) -> Result<(), String> {
    match owner {
        Owner::Gateway => {
            return Err("the gateway chain encloses every other: it has no `base` step".into())
        }
        Owner::Product(_) => {
            return Err(
                "a product's chain runs right after the step that identified the caller: it has no `base` step"
                    .into(),
            )
        }
        Owner::Api | Owner::Route(_) => {}
    }
    if let Some(i) = earlier {
        return Err(format!(
            "a second `base` step (the first is step {}): the enclosing chain runs once",
            i + 1
        ));
    }
    let alone = StepSpec {
        base: true,
        ..StepSpec::default()
    };
    if *spec != alone {
        return Err(
            "a `base` step marks where the enclosing chain runs: give it no other key".into(),
        );
    }
    Ok(())
}

/// A route's name as the router names it: its `name`, else its path, else
/// its prefix as `PREFIX/**`.
pub fn route_label(r: &crate::manifest::RouteSpec) -> String {
    match (&r.name, &r.path, &r.prefix) {
        (Some(n), _, _) => n.to_string(),
        (None, Some(p), _) => p.clone(),
        (None, None, Some(p)) => format!("{}/**", p.trim_end_matches('/')),
        (None, None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Entry::{Base, Step as S};

    #[test]
    fn without_base_the_enclosing_chain_runs_first() {
        assert_eq!(compose(&[0, 1], &[S(2), S(3)]), vec![0, 1, 2, 3]);
        assert_eq!(compose(&[], &[S(2)]), vec![2]);
        assert_eq!(compose(&[0], &[]), vec![0]);
    }

    #[test]
    fn base_places_the_enclosing_chain() {
        assert_eq!(compose(&[0, 1], &[S(2), Base, S(3)]), vec![2, 0, 1, 3]);
        assert_eq!(compose(&[0, 1], &[S(2), S(3), Base]), vec![2, 3, 0, 1]);
        assert_eq!(compose(&[0, 1], &[Base, S(2)]), vec![0, 1, 2]);
        assert_eq!(compose(&[], &[S(2), Base]), vec![2]);
    }

    #[test]
    fn three_levels_compose_from_the_outside_in() {
        // gateway [0, 1]; api [2, base, 3]; route [base, 4] and [5, base].
        let api = compose(&[0, 1], &[S(2), Base, S(3)]);
        assert_eq!(compose(&api, &[Base, S(4)]), vec![2, 0, 1, 3, 4]);
        assert_eq!(compose(&api, &[S(5), Base]), vec![5, 2, 0, 1, 3]);
        assert_eq!(compose(&api, &[S(4)]), vec![2, 0, 1, 3, 4]);
    }

    #[test]
    fn a_base_step_stands_alone_once_and_only_inside_another_scope() {
        let base = StepSpec {
            base: true,
            ..StepSpec::default()
        };
        assert!(check_base(Owner::Api, &base, None).is_ok());
        assert!(check_base(Owner::Route("r"), &base, None).is_ok());
        let e = check_base(Owner::Api, &base, Some(0)).unwrap_err();
        assert!(e.contains("second `base`"), "{e}");
        assert!(check_base(Owner::Gateway, &base, None)
            .unwrap_err()
            .contains("encloses every other"));
        assert!(check_base(Owner::Product("gold"), &base, None)
            .unwrap_err()
            .contains("identified the caller"));
        let with_plugin = StepSpec {
            plugin: "cors".into(),
            ..base.clone()
        };
        assert!(check_base(Owner::Api, &with_plugin, None)
            .unwrap_err()
            .contains("no other key"));
        let with_when = StepSpec {
            when: Some("true".into()),
            ..base
        };
        assert!(check_base(Owner::Api, &with_when, None).is_err());
    }
}
