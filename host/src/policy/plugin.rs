//! A loaded plugin ([`Plugin`]): the compiled component, linked against the
//! host's imports, with its `policy` exports found and type-checked once at
//! load ([`Exports`]), so each request's instance calls them unchecked.

use super::bindings::{v01, v02};
use super::output::Bounded;
use super::{CallContext, CallRep, ResponseDecision, ResponseHead, StepState, WitConfigError};
use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::{
    Component, ComponentExportIndex, Func, InstancePre, Linker, Resource, TypedFunc,
};

/// A loaded plugin: compiled, linked, ready to instantiate.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    /// SHA-256 of the component, hex.
    pub hash: String,
    /// The grants its imports need (`counters`, `http`, ...).
    pub needs: Vec<&'static str>,
    pub(super) pre: InstancePre<StepState>,
    pub(super) exports: Exports,
    /// The component's bytes, for configured snapshots.
    pub(super) wasm: Arc<[u8]>,
}

impl Plugin {
    /// The `tollgate:policy` version the plugin was built against
    /// (`0.1.0` or `0.2.0`).
    pub fn abi(&self) -> &'static str {
        self.exports.version.as_str()
    }
}

/// The `tollgate:policy` versions this host serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The request head and context copied into every call; no request-phase
    /// response headers; `wants-response` the only phase switch.
    V01,
    /// The call as a resource the step queries; request-phase response
    /// headers; `phases`.
    V02,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V01 => "0.1.0",
            Version::V02 => "0.2.0",
        }
    }

    fn iface(self) -> &'static str {
        match self {
            Version::V01 => POLICY_IFACE_01,
            Version::V02 => POLICY_IFACE,
        }
    }
}

/// Where a plugin's `policy` functions are, found once at load.
#[derive(Clone, Copy)]
pub(super) struct Exports {
    pub(super) version: Version,
    pub(super) configure: ComponentExportIndex,
    pub(super) on_request: ComponentExportIndex,
    pub(super) on_response: ComponentExportIndex,
}

/// The policy interface of the newest version this host serves.
pub(super) const POLICY_IFACE: &str = "tollgate:policy/policy@0.2.0";
/// The policy interface of 0.1.0, still served.
pub(super) const POLICY_IFACE_01: &str = "tollgate:policy/policy@0.1.0";

type Check = fn(
    &wasmtime::component::types::ComponentFunc,
    &wasmtime::component::__internal::InstanceType<'_>,
) -> wasmtime::Result<()>;

impl Exports {
    /// Find the `policy` functions of `component` (of whichever version it
    /// exports) and type-check each against the signature this host calls
    /// it with, once per component.
    ///
    /// This check is what makes [`typed`] sound. It is needed: the
    /// generated `instantiate` of a `*Pre` only looks up the interface's
    /// export indices and checks no types, so a plugin built from a drifted
    /// WIT with the same version string (a field removed from
    /// `call-context`) used to load and then panic inside the host on
    /// every request.
    pub(super) fn find(
        engine: &wasmtime::Engine,
        linker: &Linker<StepState>,
        component: &Component,
    ) -> Result<Exports> {
        use wasmtime::component::types::ComponentItem;
        // With the linker's resources substituted: 0.2.0's `call` is a
        // host resource, known only once linked.
        let ty = linker
            .substituted_component_type(component)
            .map_err(anyhow::Error::from)?;
        let (version, iface) = match (
            ty.get_export(engine, POLICY_IFACE).map(|e| e.ty),
            ty.get_export(engine, POLICY_IFACE_01).map(|e| e.ty),
        ) {
            (Some(ComponentItem::ComponentInstance(i)), _) => (Version::V02, i),
            (None, Some(ComponentItem::ComponentInstance(i))) => (Version::V01, i),
            (Some(_), _) => anyhow::bail!("it exports `{POLICY_IFACE}`, but not as an interface"),
            (None, Some(_)) => {
                anyhow::bail!("it exports `{POLICY_IFACE_01}`, but not as an interface")
            }
            (None, None) => anyhow::bail!(
                "it does not export `{POLICY_IFACE}` (nor `{POLICY_IFACE_01}`): it is not a Tollgate policy"
            ),
        };
        let name = version.iface();
        let cx = ty.instance_type();
        let checks: [(&str, Check); 3] = match version {
            Version::V01 => [
                ("configure", |f, cx| {
                    f.typecheck::<ConfigureSig<'_>, ConfigureRet01>(cx)
                }),
                ("on-request", |f, cx| {
                    f.typecheck::<OnRequestSig01<'_>, OnRequestRet01>(cx)
                }),
                ("on-response", |f, cx| {
                    f.typecheck::<OnResponseSig01<'_>, OnResponseRet>(cx)
                }),
            ],
            Version::V02 => [
                ("configure", |f, cx| {
                    f.typecheck::<ConfigureSig<'_>, ConfigureRet>(cx)
                }),
                ("on-request", |f, cx| {
                    f.typecheck::<OnRequestSig<'_>, OnRequestRet>(cx)
                }),
                ("on-response", |f, cx| {
                    f.typecheck::<OnResponseSig<'_>, OnResponseRet>(cx)
                }),
            ],
        };
        let drifted = || {
            format!(
                "it was built against a different `{name}` than this host (the same version, other types): rebuild it with this gateway's WIT or SDK"
            )
        };
        for (fname, check) in checks {
            match iface.get_export(engine, fname).map(|e| e.ty) {
                Some(ComponentItem::ComponentFunc(f)) => check(&f, &cx)
                    .map_err(anyhow::Error::from)
                    .with_context(|| {
                        format!("`{fname}` does not have the signature this host calls")
                    })
                    .with_context(drifted)?,
                Some(_) => {
                    Err(anyhow::anyhow!("`{fname}` is not a function")).with_context(drifted)?
                }
                None => Err(anyhow::anyhow!("`{name}` has no function `{fname}`"))
                    .with_context(drifted)?,
            }
        }
        let index = component
            .get_export_index(None, name)
            .context("the policy interface's export index")?;
        let f = |fname| {
            component
                .get_export_index(Some(&index), fname)
                .with_context(|| format!("the export index of `{fname}`"))
        };
        Ok(Exports {
            version,
            configure: f("configure")?,
            on_request: f("on-request")?,
            on_response: f("on-response")?,
        })
    }
}

pub(super) type ConfigureSig<'a> = (&'a str,);
pub(super) type ConfigureRet = (Result<super::PolicyInfo, WitConfigError>,);
pub(super) type ConfigureRet01 =
    (Result<v01::tollgate::policy::types::PolicyInfo, WitConfigError>,);
/// The call is a borrowed handle; its data is in the store meanwhile.
pub(super) type OnRequestSig<'a> = (Resource<CallRep>, Option<&'a [u8]>);
/// The decisions come [`Bounded`]: their header lists are checked in the
/// guest's memory before they are lifted (same ABI as the bare types).
pub(super) type OnRequestRet = (Bounded<super::RequestDecision>,);
pub(super) type OnResponseSig<'a> = (Resource<CallRep>, Option<&'a [u8]>);
pub(super) type OnResponseRet = (Bounded<ResponseDecision>,);

pub(super) type OnRequestSig01<'a> = (&'a CallContext, &'a super::RequestHead, Option<&'a [u8]>);
pub(super) type OnRequestRet01 = (Bounded<v01::tollgate::policy::types::RequestDecision>,);
pub(super) type OnResponseSig01<'a> = (
    &'a CallContext,
    &'a super::RequestHead,
    &'a ResponseHead,
    Option<&'a [u8]>,
);

/// The signatures above are the generated bindings' own (`Bounded` aside):
/// this does not compile if the WIT and they ever differ.
#[allow(dead_code)]
fn signatures_match(
    g1: &v01::exports::tollgate::policy::policy::Guest,
    g2: &v02::exports::tollgate::policy0_2_0::policy::Guest,
) {
    use v01::tollgate::policy::types as t01;
    let _: TypedFunc<ConfigureSig<'_>, ConfigureRet01> = g1.func_configure();
    let _: TypedFunc<OnRequestSig01<'_>, (t01::RequestDecision,)> = g1.func_on_request();
    let _: TypedFunc<OnResponseSig01<'_>, (ResponseDecision,)> = g1.func_on_response();
    let _: TypedFunc<ConfigureSig<'_>, ConfigureRet> = g2.func_configure();
    let _: TypedFunc<OnRequestSig<'_>, (super::RequestDecision,)> = g2.func_on_request();
    let _: TypedFunc<OnResponseSig<'_>, (ResponseDecision,)> = g2.func_on_response();
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
