//! Host services through real plugins: grants enforced at load, kv durable
//! across restarts and namespaced per plugin, counters exact under races,
//! and the compiled-plugin runner.

use tollgate_tests::runner::PolicyRunner;
use tollgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_imports_are_refused_at_load() {
    let err = match PolicyRunner::new("fixture-kv", "{}", &["kv"]) {
        Ok(_) => panic!("a plugin importing counters loaded without the grant"),
        Err(e) => e,
    };
    assert_eq!(
        err,
        "plugin `fixture-kv` uses counters, which this step was not granted: add them to the step's `grants`"
    );
    assert!(PolicyRunner::new("fixture-kv", "{}", &["kv", "counters"]).is_ok());
    // A grant that does not exist is refused too.
    let err = PolicyRunner::new("fixture-kv", "{}", &["kv", "root"])
        .err()
        .unwrap();
    assert_contains(&err, "unknown grant `root`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_runs_the_compiled_plugin() {
    let p = PolicyRunner::new(
        "transform",
        r#"{"request":{"headers":{"set":{"x-a":"1"}}}}"#,
        &[],
    )
    .unwrap();
    match p
        .on_request(&PolicyRunner::request("GET", "/x", &[]))
        .await
        .unwrap()
    {
        tollgate::policy::RequestDecision::Continue(e) => assert_eq!(e.headers.len(), 1),
        other => panic!("{other:?}"),
    }
    let err = PolicyRunner::new("transform", r#"{"request":{"nope":1}}"#, &[])
        .err()
        .unwrap();
    assert_contains(&err, "nope");
}

fn kv_manifest(up: &str) -> String {
    simple_manifest(
        up,
        "[[api.chain]]\nplugin = \"fixture-kv\"\ngrants = [\"kv\", \"counters\"]\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_counts_and_counters_limit() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&kv_manifest(&up.url())).await;
    let c = client();
    for i in 1..=3u64 {
        let r = c
            .get(gw.url("/"))
            .header("x-user", "bob")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(up.last().header("x-kv-hits"), Some(i.to_string().as_str()));
        assert_eq!(
            up.last().header("x-limit-remaining"),
            Some((3 - i).to_string().as_str())
        );
    }
    let r = c
        .get(gw.url("/"))
        .header("x-user", "bob")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Another user has its own budget.
    let r = c
        .get(gw.url("/"))
        .header("x-user", "eve")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exact_under_concurrency() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&kv_manifest(&up.url())).await;
    let c = client();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, u) = (c.clone(), gw.url("/"));
            tokio::spawn(async move {
                c.get(u)
                    .header("x-user", "racer")
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
}
