//! The registry as a [`ConsumerSource`]: keys issued through the admin API,
//! the callers their subscriptions (and open products) admit, the plans'
//! limits as policies see them, and consumers' groups. The composition root (`app`) injects it into the policy
//! services; the loader asks it after each generation's manifests.

use super::model::Plan;
use super::registry::Registry;
use crate::domain::consumer::{ConsumerInfo, ConsumerSource, PlanLimits, Quota, RateLimit};
use crate::domain::time::Ts;

impl ConsumerSource for Registry {
    fn lookup_key(&self, api: &str, key: &str, now: Ts) -> Option<ConsumerInfo> {
        Registry::lookup_key(self, api, key, now)
    }

    fn lookup_consumer(&self, api: &str, id: &str) -> Option<ConsumerInfo> {
        self.lookup_principal(api, id)
    }

    fn plan_limits(&self, id: &str) -> Option<PlanLimits> {
        self.plan(id).map(plan_limits)
    }

    fn open_access(&self, api: &str) -> Option<ConsumerInfo> {
        Registry::open_access(self, api)
    }

    fn groups(&self, consumer: &str) -> Vec<String> {
        self.consumer_groups(consumer)
    }
}

/// What a plan allows, without its admin-only fields.
fn plan_limits(p: Plan) -> PlanLimits {
    PlanLimits {
        plan: p.id,
        product: p.product,
        rate_limits: p
            .rate_limits
            .iter()
            .map(|l| RateLimit {
                requests: l.requests,
                window_ms: l.per.window_ms(),
            })
            .collect(),
        quota: p.quota.map(|q| Quota {
            calls: q.calls,
            period: q.period,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{
        AppCreate, Approval, ConsumerCreate, KeyCreate, Per, PlanCreate, ProductCreate,
        Quota as AdminQuota, RateLimit as AdminRateLimit, SubscriptionCreate,
    };
    use super::*;
    use crate::domain::consumer::Sources;
    use crate::domain::time::Period;
    use crate::policy::host::consumers::{key_digest_hex, Directory};
    use std::sync::Arc;

    /// A registry with product `shop` (API `pets`), plan `gold` (5/s and
    /// 100/min, 1000 calls a month), consumer `alice` with app `shop-app`
    /// subscribed to it, and one key for the app. Returns the key's secret.
    fn registry() -> (tempfile::TempDir, Registry, String) {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::new(crate::store::Store::open(dir.path()).unwrap());
        let apis = |a: &str| a == "pets";
        let product = ProductCreate {
            id: "shop".into(),
            name: None,
            description: String::new(),
            apis: vec!["pets".into()],
            published: true,
            access: Default::default(),
            visible_to: vec!["developers".into()],
        };
        r.create_product("t", product, &apis).unwrap();
        let plan = PlanCreate {
            id: "gold".into(),
            product: "shop".into(),
            name: None,
            description: String::new(),
            rate_limits: vec![
                AdminRateLimit {
                    requests: 5,
                    per: Per::Second,
                },
                AdminRateLimit {
                    requests: 100,
                    per: Per::Minute,
                },
            ],
            quota: Some(AdminQuota {
                calls: 1000,
                period: Period::Month,
            }),
            approval: Approval::SelfService,
            max_keys_per_app: 2,
            scopes: vec![],
        };
        r.create_plan("t", plan).unwrap();
        let consumer = ConsumerCreate {
            id: "alice".into(),
            name: None,
            email: None,
        };
        r.create_consumer("t", consumer).unwrap();
        let app = AppCreate {
            id: "shop-app".into(),
            consumer: "alice".into(),
            name: None,
            description: String::new(),
        };
        r.create_app("t", app).unwrap();
        let sub = SubscriptionCreate {
            app: "shop-app".into(),
            plan: "gold".into(),
        };
        r.create_subscription("t", sub).unwrap();
        let key = KeyCreate {
            app: "shop-app".into(),
            plan: "gold".into(),
            name: String::new(),
            expires_at: None,
        };
        let (_, secret) = r.create_key("t", key).unwrap();
        (dir, r, secret)
    }

    #[test]
    fn the_registry_answers_as_a_consumer_source() {
        let (_dir, r, secret) = registry();
        let source: &dyn ConsumerSource = &r;
        let who = source.lookup_key("pets", &secret, Ts::now()).unwrap();
        assert_eq!(
            (who.id.as_str(), who.app.as_deref(), who.plan.as_deref()),
            ("alice", Some("shop-app"), Some("gold"))
        );
        assert!(source.lookup_key("orders", &secret, Ts::now()).is_none());
        assert!(source.lookup_key("pets", "not-a-key", Ts::now()).is_none());
        // By app id and by consumer id (a JWT's subject, say).
        assert_eq!(
            source.lookup_consumer("pets", "shop-app").unwrap().id,
            "alice"
        );
        assert_eq!(
            source
                .lookup_consumer("pets", "alice")
                .unwrap()
                .app
                .as_deref(),
            Some("shop-app")
        );
        assert!(source.lookup_consumer("pets", "bob").is_none());
    }

    #[test]
    fn plan_limits_carry_every_rate_limit_and_the_quota() {
        let (_dir, r, _) = registry();
        let limits = ConsumerSource::plan_limits(&r, "gold").unwrap();
        assert_eq!(
            limits,
            PlanLimits {
                plan: "gold".into(),
                product: "shop".into(),
                rate_limits: vec![
                    RateLimit {
                        requests: 5,
                        window_ms: 1_000
                    },
                    RateLimit {
                        requests: 100,
                        window_ms: 60_000
                    },
                ],
                quota: Some(Quota {
                    calls: 1000,
                    period: Period::Month
                }),
            }
        );
        assert!(ConsumerSource::plan_limits(&r, "silver").is_none());
        assert!(ConsumerSource::plan_limits(&r, "").is_none());
    }

    #[test]
    fn behind_a_generations_manifests_the_registry_answers_what_they_do_not_know() {
        let (_dir, r, secret) = registry();
        // The manifests declare their own `alice` (another plan) and a key.
        let mut manifests = Directory::default();
        let alice = manifests
            .add_consumer(
                ConsumerInfo {
                    id: "alice".into(),
                    app: None,
                    key_id: None,
                    plan: Some("manifest-plan".into()),
                    product: None,
                },
                vec![],
            )
            .unwrap();
        manifests
            .add_key(alice, "k1", &key_digest_hex("manifest-key"), None)
            .unwrap();
        let sources = Sources(vec![Arc::new(manifests), Arc::new(r)]);
        let now = Ts::now();
        // The manifests answer first, for keys and for ids ...
        let by_key = sources.lookup_key("pets", "manifest-key", now).unwrap();
        assert_eq!(by_key.key_id.as_deref(), Some("k1"));
        let by_id = sources.lookup_consumer("pets", "alice").unwrap();
        assert_eq!(by_id.plan.as_deref(), Some("manifest-plan"));
        // ... and the registry what they do not know: its keys, its apps and
        // its plans (the manifests hold none).
        let issued = sources.lookup_key("pets", &secret, now).unwrap();
        assert_eq!(issued.plan.as_deref(), Some("gold"));
        assert_eq!(
            sources.lookup_consumer("pets", "shop-app").unwrap().id,
            "alice"
        );
        assert_eq!(sources.plan_limits("gold").unwrap().product, "shop");
        assert!(sources.lookup_key("pets", "neither", now).is_none());
    }
}
