//! A loaded plugin ([`Plugin`]): the compiled component, linked against the
//! host's imports, with its `policy` exports found and type-checked once at
//! load ([`Exports`]), so each request's instance calls them unchecked.

use super::bindings::exports::tollgate::policy::policy::Guest as PolicyExports;
use super::bindings::PolicyHostPre;
use super::output::Bounded;
use super::{
    CallContext, PolicyInfo, RequestDecision, RequestHead, ResponseDecision, ResponseHead,
    StepState, WitConfigError,
};
use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::{Component, ComponentExportIndex, Func, TypedFunc};

/// A loaded plugin: compiled, linked, ready to instantiate.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    /// SHA-256 of the component, hex.
    pub hash: String,
    /// The grants its imports need (`counters`, `http`, ...).
    pub needs: Vec<&'static str>,
    pub(super) pre: PolicyHostPre<StepState>,
    pub(super) exports: Exports,
    /// The component's bytes, for configured snapshots.
    pub(super) wasm: Arc<[u8]>,
}

/// Where a plugin's `policy` functions are, found once at load.
#[derive(Clone, Copy)]
pub(super) struct Exports {
    pub(super) configure: ComponentExportIndex,
    pub(super) on_request: ComponentExportIndex,
    pub(super) on_response: ComponentExportIndex,
}

/// The policy interface this host serves.
pub(super) const POLICY_IFACE: &str = "tollgate:policy/policy@0.1.0";

impl Exports {
    /// Find the `policy` functions of `component` and type-check each
    /// against the signature this host calls it with, once per component.
    ///
    /// This check is what makes [`typed`] sound. It is needed: the
    /// generated `PolicyHostPre::new` only looks up the interface's export
    /// indices and checks no types, so a plugin built from a drifted WIT
    /// with the same version string (a field removed from `call-context`)
    /// used to load and then panic inside the host on every request.
    pub(super) fn find(engine: &wasmtime::Engine, component: &Component) -> Result<Exports> {
        use wasmtime::component::types::{ComponentFunc, ComponentItem};
        let ty = component.component_type();
        let iface = match ty.get_export(engine, POLICY_IFACE).map(|e| e.ty) {
            Some(ComponentItem::ComponentInstance(i)) => i,
            Some(_) => anyhow::bail!("it exports `{POLICY_IFACE}`, but not as an interface"),
            None => anyhow::bail!("it does not export `{POLICY_IFACE}`"),
        };
        let cx = ty.instance_type();
        type Check = fn(
            &ComponentFunc,
            &wasmtime::component::__internal::InstanceType<'_>,
        ) -> wasmtime::Result<()>;
        let checks: [(&str, Check); 3] = [
            ("configure", |f, cx| {
                f.typecheck::<ConfigureSig<'_>, ConfigureRet>(cx)
            }),
            ("on-request", |f, cx| {
                f.typecheck::<OnRequestSig<'_>, OnRequestRet>(cx)
            }),
            ("on-response", |f, cx| {
                f.typecheck::<OnResponseSig<'_>, OnResponseRet>(cx)
            }),
        ];
        let drifted = || {
            format!(
                "it was built against a different `{POLICY_IFACE}` than this host (the same version, other types): rebuild it with this gateway's WIT or SDK"
            )
        };
        for (name, check) in checks {
            match iface.get_export(engine, name).map(|e| e.ty) {
                Some(ComponentItem::ComponentFunc(f)) => check(&f, &cx)
                    .map_err(anyhow::Error::from)
                    .with_context(|| {
                        format!("`{name}` does not have the signature this host calls")
                    })
                    .with_context(drifted)?,
                Some(_) => {
                    Err(anyhow::anyhow!("`{name}` is not a function")).with_context(drifted)?
                }
                None => Err(anyhow::anyhow!("`{POLICY_IFACE}` has no function `{name}`"))
                    .with_context(drifted)?,
            }
        }
        let index = component
            .get_export_index(None, POLICY_IFACE)
            .context("the policy interface's export index")?;
        let f = |name| {
            component
                .get_export_index(Some(&index), name)
                .with_context(|| format!("the export index of `{name}`"))
        };
        Ok(Exports {
            configure: f("configure")?,
            on_request: f("on-request")?,
            on_response: f("on-response")?,
        })
    }
}

pub(super) type ConfigureSig<'a> = (&'a str,);
pub(super) type ConfigureRet = (Result<PolicyInfo, WitConfigError>,);
pub(super) type OnRequestSig<'a> = (&'a CallContext, &'a RequestHead, Option<&'a [u8]>);
/// The decisions come [`Bounded`]: their header lists are checked in the
/// guest's memory before they are lifted (same ABI as the bare types).
pub(super) type OnRequestRet = (Bounded<RequestDecision>,);
pub(super) type OnResponseSig<'a> = (
    &'a CallContext,
    &'a RequestHead,
    &'a ResponseHead,
    Option<&'a [u8]>,
);
pub(super) type OnResponseRet = (Bounded<ResponseDecision>,);

/// The signatures above are the generated bindings' own (`Bounded` aside):
/// this does not compile if the WIT and they ever differ.
#[allow(dead_code)]
fn signatures_match(g: &PolicyExports) {
    let _: TypedFunc<ConfigureSig<'_>, ConfigureRet> = g.func_configure();
    let _: TypedFunc<OnRequestSig<'_>, (RequestDecision,)> = g.func_on_request();
    let _: TypedFunc<OnResponseSig<'_>, (ResponseDecision,)> = g.func_on_response();
}

/// A typed handle to an export without checking its type again.
///
/// wasmtime's generated `instantiate` looks up and type-checks every
/// export of every new instance (~8% of a step's instantiation here);
/// every instance here comes from a component whose exports
/// [`Exports::find`] type-checked once at load.
pub(super) fn typed<P, R>(func: Func) -> TypedFunc<P, R>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    // SAFETY: `func` is an export of an instance of a component whose
    // `policy` functions `Exports::find` type-checked at load against these
    // signatures (wasmtime's own check, the one `Func::typed` does per
    // instance), and `signatures_match` proves they are the generated
    // bindings' own. Every `Exports` comes from `Exports::find`.
    #[allow(unsafe_code)]
    unsafe {
        TypedFunc::new_unchecked(func)
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("hash", &self.hash)
            .finish()
    }
}
