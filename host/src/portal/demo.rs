//! `tollgate portal demo-seed`: what the README demo's portal shows — a
//! published product over the demo API with a self-service and a moderated
//! plan, and an active consumer account to sign in with. Offline (the
//! gateway stopped), idempotent: what exists is left as it is.

use crate::control::admin::model::{
    AccountState, Approval, Per, PlanCreate, ProductCreate, RateLimit,
};
use crate::control::admin::registry::{hash_password, SignUp};
use std::path::Path;

/// The demo consumer's sign-in.
pub const DEMO_EMAIL: &str = "demo@example.com";
pub const DEMO_PASSWORD: &str = "demo-portal-password";

/// Seed the store of the (stopped) gateway of `config`.
pub fn seed(config: &Path) -> anyhow::Result<()> {
    let r = crate::control::admin::open_offline(config, "portal demo-seed")?;
    let e = |e: crate::control::admin::AdminError| anyhow::anyhow!("{e}");
    let actor = "demo-seed";
    if r.get_resource::<crate::control::admin::model::Product>("product", "product", "pet-store")
        .is_err()
    {
        r.create_product(
            actor,
            ProductCreate {
                id: "pet-store".into(),
                name: Some("Pet store".into()),
                description: "Look up pets by id; an echo route for trying things out; orders with an OAuth token.".into(),
                apis: vec!["pets".into(), "orders".into()],
                published: true,
                access: Default::default(),
                // Visitors see it too, before they sign up.
                visible_to: vec!["developers".into(), "guests".into()],
            },
            &|_: &str| true,
        )
        .map_err(e)?;
        for (id, name, requests, approval) in [
            ("starter", "Starter", 5, Approval::SelfService),
            ("partner", "Partner", 50, Approval::Moderated),
        ] {
            r.create_plan(
                actor,
                PlanCreate {
                    id: id.into(),
                    product: "pet-store".into(),
                    name: Some(name.into()),
                    description: String::new(),
                    rate_limits: vec![RateLimit {
                        requests,
                        per: Per::Second,
                    }],
                    quota: None,
                    approval,
                    max_keys_per_app: 2,
                    // The demo's `orders` API asks OAuth tokens for it.
                    scopes: vec!["orders:read".into()],
                },
            )
            .map_err(e)?;
        }
    }
    if r.account_by_email(DEMO_EMAIL).map_err(e)?.is_none() {
        r.sign_up(
            actor,
            SignUp {
                email: DEMO_EMAIL.into(),
                name: "Demo Developer".into(),
                password_hash: hash_password(DEMO_PASSWORD).map_err(e)?,
                state: AccountState::Active,
            },
        )
        .map_err(e)?;
    }
    Ok(())
}
