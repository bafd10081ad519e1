use super::report::{Defaults, Filter, Sort};
use super::*;
use std::collections::BTreeMap;

/// 2027-01-01T00:00:00Z.
const T0: u64 = 1_798_761_600_000;
const MIN: u64 = 60_000;
const HOUR: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;

fn call(
    at_ms: u64,
    api: &'static str,
    consumer: Option<&str>,
    status: u16,
    total_us: u64,
) -> CallRecord {
    CallRecord {
        at_ms,
        api,
        route: "r",
        method: http::Method::GET,
        status,
        scheme: "http",
        consumer: consumer.map(str::to_string),
        app: consumer.map(|c| format!("{c}-app")),
        plan: Some("gold".into()),
        product: None,
        key_id: consumer.map(|c| format!("{c}-1")),
        client: std::net::IpAddr::from([127, 0, 0, 1]),
        bytes_in: 10,
        bytes_out: 100,
        total_us,
        upstream_us: (status != 401).then_some(total_us / 2),
        cache: None,
        answered_by: (status == 401).then(|| Arc::from("auth")),
        aborted: false,
        cells: None,
        listener: None,
    }
}

fn writer(dir: &std::path::Path, spec: AnalyticsSpec) -> Writer {
    let store = Store::open(dir).unwrap();
    Writer::new(store, spec, Arc::default())
}

fn params(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn query(q: &str, now: u64) -> Result<Query, BadParam> {
    Query::parse(&params(q), &Defaults::default(), &Retention::default(), now)
}

fn report(w: &Writer, q: &str, now: u64) -> Report {
    report::run(&w.store, &query(q, now).unwrap()).unwrap()
}

#[test]
fn aggregates_per_minute_and_dimension_with_exact_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), AnalyticsSpec::default());
    // alice: 100 calls at 1..=100 ms; bob: 3 refusals; one 5xx anonymous.
    for i in 1..=100u64 {
        w.add(Rec::of(
            &call(T0 + i, "pets", Some("alice"), 200, i * 1000),
            true,
        ));
    }
    for _ in 0..3 {
        w.add(Rec::of(&call(T0 + 5, "pets", Some("bob"), 401, 300), true));
    }
    w.add(Rec::of(
        &call(T0 + 2 * MIN, "orders", None, 502, 5000),
        true,
    ));
    // Same minute and dimensions: one pending entry each.
    assert_eq!(w.pending.len(), 3);
    w.flush(T0 + 3 * MIN).unwrap();
    assert!(w.pending.is_empty());
    let r = report(
        &w,
        &format!("from={T0}&to={}&by=consumer", T0 + 5 * MIN),
        T0 + 5 * MIN,
    );
    assert_eq!(r.totals.agg.calls, 104);
    assert_eq!(r.totals.agg.errors_4xx, 3);
    assert_eq!(r.totals.agg.errors_5xx, 1);
    assert_eq!(r.totals.agg.bytes_out, 10_400);
    let alice = r.rows.iter().find(|r| r.group == ["alice"]).unwrap();
    assert_eq!(alice.agg.calls, 100);
    let l = alice.latency().unwrap();
    // Exact within one histogram bucket (< 1%).
    for (got, want) in [
        (l.p50, 50_000),
        (l.p95, 95_000),
        (l.p99, 99_000),
        (l.max, 100_000),
    ] {
        assert!(got >= want && got <= want + want / 100, "{got} vs {want}");
    }
    let u = alice.upstream().unwrap();
    assert!(u.p50 >= 25_000 && u.p50 <= 25_250, "{u:?}");
    let bob = r.rows.iter().find(|r| r.group == ["bob"]).unwrap();
    assert_eq!(bob.agg.answered_by.get("auth"), Some(&3));
    assert!(bob.upstream().is_none());
    // The anonymous call groups under "".
    assert!(r.rows.iter().any(|r| r.group == [""] && r.agg.calls == 1));
    // Rows by calls, most first.
    assert_eq!(r.rows[0].group, ["alice"]);
    // A second flush adds to what the store holds (read, merge, write).
    w.add(Rec::of(
        &call(T0 + 7, "pets", Some("alice"), 200, 1000),
        true,
    ));
    w.flush(T0 + 3 * MIN).unwrap();
    let r = report(
        &w,
        &format!("from={T0}&to={}&consumer=alice", T0 + MIN),
        T0 + MIN,
    );
    assert_eq!(r.totals.agg.calls, 101);
    // Filters: status class, exact status, method (any case).
    let to = T0 + 5 * MIN;
    assert_eq!(
        report(&w, &format!("from={T0}&to={to}&status=4xx"), to)
            .totals
            .agg
            .calls,
        3
    );
    assert_eq!(
        report(&w, &format!("from={T0}&to={to}&status=502"), to)
            .totals
            .agg
            .calls,
        1
    );
    assert_eq!(
        report(&w, &format!("from={T0}&to={to}&method=get"), to)
            .totals
            .agg
            .calls,
        105
    );
    assert_eq!(
        report(&w, &format!("from={T0}&to={to}&consumer="), to)
            .totals
            .agg
            .calls,
        1
    );
}

#[test]
fn rollups_give_the_same_figures_at_every_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), AnalyticsSpec::default());
    // Calls over three days, one every 7 minutes.
    let mut n = 0;
    let mut t = T0;
    while t < T0 + 3 * DAY_MS {
        w.add(Rec::of(
            &call(t, "pets", Some("alice"), 200, 1000 + n),
            true,
        ));
        n += 1;
        t += 7 * MIN;
    }
    // "Now" while every minute bucket is still kept (two days).
    let now = T0 + 2 * DAY_MS - HOUR;
    w.flush(now).unwrap();
    let end = T0 + 3 * DAY_MS;
    let minutes = report(&w, &format!("from={T0}&to={end}&interval=minute"), now);
    let hours = report(&w, &format!("from={T0}&to={end}&interval=hour"), now);
    let days = report(&w, &format!("from={T0}&to={end}&interval=day"), now);
    assert_eq!(minutes.rows.len(), 3 * 24 * 60);
    assert_eq!(hours.rows.len(), 3 * 24);
    assert_eq!(days.rows.len(), 3);
    for r in [&minutes, &hours, &days] {
        assert_eq!(r.totals.agg.calls, n);
        assert_eq!(r.rows.iter().map(|r| r.agg.calls).sum::<u64>(), n);
        assert_eq!(r.totals.latency(), minutes.totals.latency());
    }
    // A range with ragged ends reads days, hours and minutes: the same
    // calls as the minute buckets alone.
    let (from, to) = (T0 + 13 * MIN + HOUR, T0 + 2 * DAY_MS + 5 * HOUR + 9 * MIN);
    let q = query(&format!("from={from}&to={to}"), now).unwrap();
    let parts = q.parts();
    assert!(parts.iter().any(|p| p.0 == Res::Day), "{parts:?}");
    assert!(parts.iter().any(|p| p.0 == Res::Hour), "{parts:?}");
    assert!(parts.iter().any(|p| p.0 == Res::Minute), "{parts:?}");
    let mixed = report::run(&w.store, &q).unwrap();
    let fine = report(&w, &format!("from={from}&to={to}&interval=minute"), now);
    assert_eq!(mixed.totals.agg.calls, fine.totals.agg.calls);
    assert_eq!(mixed.totals.latency(), fine.totals.latency());
    let expected = (0..n)
        .filter(|i| (from..to).contains(&(T0 + i * 7 * MIN)))
        .count();
    assert_eq!(mixed.totals.agg.calls, expected as u64);
}

#[test]
fn retention_sweeps_old_buckets_per_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let spec = AnalyticsSpec {
        retention: Retention {
            minute: Age(Duration::from_secs(3600)),
            hour: Age(Duration::from_secs(86_400)),
            day: Age(Duration::from_secs(3 * 86_400)),
        },
        ..AnalyticsSpec::default()
    };
    let mut w = writer(dir.path(), spec.clone());
    w.add(Rec::of(&call(T0, "pets", None, 200, 10), true));
    w.flush(T0).unwrap();
    let count = |w: &Writer, res: Res| {
        let mut n = 0;
        w.store
            .range_each(
                TREE,
                &agg::key_prefix(res, 0),
                &agg::key_prefix(res, u64::MAX),
                |_, _| {
                    n += 1;
                    true
                },
            )
            .unwrap();
        n
    };
    assert_eq!(Res::ALL.map(|r| count(&w, r)), [1, 1, 1]);
    // Two hours on: the minute bucket goes.
    w.sweep(T0 + 2 * HOUR).unwrap();
    assert_eq!(Res::ALL.map(|r| count(&w, r)), [0, 1, 1]);
    // Two days on: the hour bucket goes; the day bucket stays.
    w.sweep(T0 + 2 * DAY_MS).unwrap();
    assert_eq!(Res::ALL.map(|r| count(&w, r)), [0, 0, 1]);
    w.sweep(T0 + 5 * DAY_MS).unwrap();
    assert_eq!(Res::ALL.map(|r| count(&w, r)), [0, 0, 0]);
    // A report over old times reads coarser buckets (the range is widened).
    let q = Query::parse(
        &params(&format!(
            "from={}&to={}",
            T0 + 17 * MIN,
            T0 + HOUR + 3 * MIN
        )),
        &Defaults::default(),
        &spec.retention,
        T0 + 2 * DAY_MS,
    )
    .unwrap();
    assert_eq!((q.from_ms, q.to_ms), (T0, T0 + DAY_MS));
}

#[test]
fn a_full_queue_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let spec = AnalyticsSpec {
        queue: 16,
        ..AnalyticsSpec::default()
    };
    // No writer thread: nothing drains the queue.
    let (tx, _rx) = sync_channel(spec.queue);
    let a = Analytics {
        tx: Some(tx),
        counters: Arc::default(),
        store,
        spec,
        thread: Mutex::new(None),
    };
    for i in 0..100 {
        a.record(&call(T0 + i, "pets", None, 200, 10));
    }
    assert_eq!((a.records(), a.dropped()), (16, 84));
}

#[test]
fn the_writer_thread_flushes_on_request_and_at_drop() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let spec = AnalyticsSpec {
        flush_interval: Dur(Duration::from_secs(300)),
        ..AnalyticsSpec::default()
    };
    let now = crate::domain::time::Ts::now().0;
    let a = Analytics::start(store.clone(), &spec).unwrap();
    for i in 0..10 {
        a.record(&call(now - i, "pets", Some("c"), 200, 10));
    }
    assert!(a.flush(Duration::from_secs(10)));
    let q = a.query(&params("from=-1h"), &Defaults::default()).unwrap();
    assert_eq!(a.report(&q).unwrap().totals.agg.calls, 10);
    a.record(&call(now, "pets", Some("c"), 200, 10));
    drop(a);
    let q = Query::parse(
        &params("from=-1h"),
        &Defaults::default(),
        &spec.retention,
        now + 1,
    )
    .unwrap();
    assert_eq!(report::run(&store, &q).unwrap().totals.agg.calls, 11);
}

/// How many times thread `tid` of this process has gone to sleep.
#[cfg(target_os = "linux")]
fn sleeps(tid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn an_idle_writer_sleeps_until_a_record_comes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let spec = AnalyticsSpec {
        flush_interval: Dur(Duration::from_secs(300)),
        ..AnalyticsSpec::default()
    };
    let a = Analytics::start(store, &spec).unwrap();
    let started = std::time::Instant::now();
    let tid = loop {
        match a.counters.writer_tid.load(Ordering::Relaxed) {
            0 => assert!(started.elapsed() < Duration::from_secs(10)),
            t => break t,
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Past the quiet second, a polling writer would wake every 10 ms.
    std::thread::sleep(QUIET + Duration::from_millis(300));
    let before = sleeps(tid);
    std::thread::sleep(Duration::from_millis(600));
    let woke = sleeps(tid) - before;
    assert!(woke <= 3, "an idle writer woke {woke} times in 600 ms");
    // A record still arrives (it wakes the writer), and is flushed.
    let now = crate::domain::time::Ts::now().0;
    a.record(&call(now, "pets", Some("c"), 200, 10));
    assert!(a.flush(Duration::from_secs(10)));
    let q = a.query(&params("from=-1h"), &Defaults::default()).unwrap();
    assert_eq!(a.report(&q).unwrap().totals.agg.calls, 1);
}

#[test]
fn too_many_series_fold_into_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(
        dir.path(),
        AnalyticsSpec {
            max_series: 100,
            ..AnalyticsSpec::default()
        },
    );
    for i in 0..150 {
        w.add(Rec::of(
            &call(T0, "pets", Some(&format!("c{i}")), 200, 10),
            true,
        ));
    }
    assert_eq!(w.pending.len(), 101);
    w.flush(T0).unwrap();
    let r = report(
        &w,
        &format!("from={T0}&to={}&by=consumer&limit=1", T0 + MIN),
        T0 + MIN,
    );
    assert_eq!(r.rows[0].group, ["(other)"]);
    assert_eq!(r.rows[0].agg.calls, 50);
    assert_eq!(r.truncated, 100);
}

#[test]
fn consumers_off_keeps_no_consumer() {
    let c = call(T0, "pets", Some("alice"), 200, 10);
    let r = Rec::of(&c, false);
    assert_eq!(r.dims.consumer, None);
    assert_eq!(r.dims.key_id, None);
    assert_eq!(r.dims.plan.as_deref(), Some("gold"));
}

#[test]
fn stored_values_round_trip_and_refuse_garbage() {
    let mut a = Agg::default();
    for i in 0..1000 {
        a.add(&Sample {
            status: if i % 10 == 0 { 503 } else { 200 },
            total_us: i * 37,
            upstream_us: Some(i),
            answered_by: (i % 100 == 0).then(|| Arc::from("limit")),
            ..Sample::default()
        });
    }
    let b = Agg::decode(&a.encode()).unwrap();
    assert_eq!((b.calls, b.errors_5xx), (1000, 100));
    assert_eq!(b.answered_by.get("limit"), Some(&10));
    assert_eq!(b.total, a.total);
    assert_eq!(b.upstream, a.upstream);
    assert!(Agg::decode(&[]).is_err());
    assert!(Agg::decode(&[1, 0xff]).is_err());
    assert!(Agg::decode(&a.encode()[..20]).is_err());
    let dims = Dims {
        api: "a,b".into(),
        status: 404,
        consumer: "ü".into(),
        ..Dims::default()
    };
    let k = agg::key(Res::Hour, T0, &dims);
    assert_eq!(agg::parse_key(&k), Some((Res::Hour, T0, dims)));
    assert_eq!(agg::parse_key(&k[..k.len() - 1]), None);
    assert_eq!(agg::parse_key(b"x"), None);
}

#[test]
fn hostile_query_parameters_are_refused_naming_the_field() {
    let now = T0;
    for (q, field) in [
        ("from=yesterday", "from"),
        ("from=99999999999999999999", "from"),
        ("from=-5y", "from"),
        ("from=-9999999d", "from"),
        ("from=--1h", "from"),
        ("to=2027-13-01T00:00:00Z", "to"),
        ("to=2027-01-01", "to"),
        ("from=now", "from"),
        ("from=-1h&to=-2h", "from"),
        ("from=0", "from"),
        ("by=api,route,status,consumer", "by"),
        ("by=%00", "by"),
        ("by=time", "by"),
        ("interval=week", "interval"),
        ("interval=minute&from=-30d", "interval"),
        ("status=4x", "status"),
        ("status=600", "status"),
        ("status=099", "status"),
        ("sort=random", "sort"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=-1", "limit"),
        ("limit=1e3", "limit"),
    ] {
        let e = query(q, now).unwrap_err();
        assert_eq!(e.field, field, "{q}: {e:?}");
        // Rules between parameters are 422s, the rest 400s.
        let between = [
            "from=now",
            "from=-1h&to=-2h",
            "from=0",
            "interval=minute&from=-30d",
        ];
        assert_eq!(e.unprocessable, between.contains(&q), "{q}");
    }
    // A dimension named twice counts once.
    assert_eq!(query("by=api,api", now).unwrap().by, [Dim::Api]);
    let long = format!("consumer={}", "x".repeat(2000));
    assert_eq!(query(&long, now).unwrap_err().field, "consumer");
    // And what is accepted.
    let q = query("from=2026-12-31T23:00:00%2B00:00&to=now", now);
    assert!(q.is_err(), "the admin API decodes %2B, not the parser");
    let q = query(
        "from=2026-12-31T23:00:00+01:00&to=now&by=api,status&status=5xx",
        now,
    )
    .unwrap();
    assert_eq!(q.from_ms, T0 - 2 * HOUR);
    assert_eq!(q.by, [Dim::Api, Dim::Status]);
    assert_eq!(q.filters, [(Dim::Status, Filter::Class(5))]);
    let q = query("from=-90m&sort=p99&limit=5", now).unwrap();
    assert_eq!((q.from_ms, q.sort, q.limit), (now - 90 * MIN, Sort::P99, 5));
    // Unaligned times widen to whole minutes.
    let q = query(&format!("from={}&to={}", T0 - 59_999, T0 - 1), now).unwrap();
    assert_eq!((q.from_ms, q.to_ms), (T0 - MIN, T0));
}

#[test]
fn csv_quotes_what_needs_quoting() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), AnalyticsSpec::default());
    w.add(Rec::of(&call(T0, "a,\"b\"", None, 200, 10), true));
    w.add(Rec::of(&call(T0, "=cmd()", None, 200, 10), true));
    w.flush(T0).unwrap();
    let r = report(
        &w,
        &format!("from={T0}&to={}&by=api&sort=name", T0 + MIN),
        T0 + MIN,
    );
    let csv = r.to_csv();
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert!(lines[0].starts_with("api,calls,errors,"), "{csv}");
    assert!(lines[1].starts_with("\"'=cmd()\",1,0,"), "{csv}");
    assert!(lines[2].starts_with("\"a,\"\"b\"\"\",1,0,"), "{csv}");
    let j = r.to_json();
    assert_eq!(j["rows"][1]["api"], "a,\"b\"");
    assert_eq!(j["totals"]["calls"], 2);
    assert_eq!(j["from"], "2027-01-01T00:00:00Z");
}

#[test]
fn spec_defaults_and_checks() {
    let s: AnalyticsSpec = toml::from_str("").unwrap();
    assert_eq!(s.flush_interval.0, Duration::from_secs(10));
    assert_eq!(s.retention.minute.0, Duration::from_secs(2 * 86_400));
    assert!(s.check().is_empty());
    let s: AnalyticsSpec = toml::from_str(
        "flush-interval = \"10ms\"\nqueue = 1\n[retention]\nminute = \"40d\"\nhour = \"30d\"\n",
    )
    .unwrap();
    let errs = s.check().join("\n");
    for needle in [
        "analytics.flush-interval",
        "analytics.queue",
        "minute buckets must not be kept longer",
    ] {
        assert!(errs.contains(needle), "{errs}");
    }
    let e = toml::from_str::<AnalyticsSpec>("flush = \"1s\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `flush`"), "{e}");
    let e = toml::from_str::<AnalyticsSpec>("[retention]\nday = \"1y\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("or days: `35d`"), "{e}");
    let s: AnalyticsSpec = toml::from_str("[retention]\nhour = \"72h\"").unwrap();
    assert_eq!(s.retention.hour, Age(Duration::from_secs(3 * 86_400)));
}

#[test]
fn reports_keep_memory_bounded_on_many_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), AnalyticsSpec::default());
    let n = report::MAX_P99_GROUPS + 1;
    for i in 0..n {
        let c = format!("c{i:05}");
        for _ in 0..(1 + (i == 7) as usize * 2) {
            w.add(Rec::of(
                &call(T0, "pets", Some(&c), 200, 1000 + i as u64),
                true,
            ));
        }
    }
    w.flush(T0).unwrap();
    let to = T0 + MIN;
    // Ranked by calls: the counters of every group, the figures of three.
    let r = report(&w, &format!("from={T0}&to={to}&by=consumer&limit=3"), to);
    assert_eq!(r.truncated, n - 3);
    assert_eq!(r.rows[0].group, ["c00007"]);
    assert_eq!(r.rows[0].agg.calls, 3);
    assert_eq!(r.rows[1].group, ["c00000"]);
    assert!(r.rows.iter().all(|r| r.latency().is_some()));
    assert_eq!(r.totals.agg.calls, n as u64 + 2);
    // Ranked by p99, each group needs its histogram: refused past the cap.
    let q = query(&format!("from={T0}&to={to}&by=consumer&sort=p99"), to).unwrap();
    match report::run(&w.store, &q) {
        Err(report::RunError::TooManyGroups(m)) => assert!(m.contains("rank by p99"), "{m}"),
        other => panic!("{other:?}"),
    }
    let q = query(
        &format!("from={T0}&to={to}&by=consumer&sort=p99&api=none"),
        to,
    )
    .unwrap();
    assert!(report::run(&w.store, &q).unwrap().rows.is_empty());
}
