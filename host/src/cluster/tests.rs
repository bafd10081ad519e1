//! The link to Redis against a real `redis-server`: the quota scripts, the
//! cache, garbage in Redis, a slow Redis, a dead one and one that comes
//! back. (The rate scripts are compared with the in-memory algorithms in
//! `policy::host::counters`'s tests.)

use super::testing::{connected, spec_for, TestRedis};
use super::*;
use std::time::{Duration, Instant};

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_count_refuse_and_refund_in_redis() {
    let r = TestRedis::start();
    let c = connected(&r.spec("")).await;
    // Periods around now (a period's key expires a day after its end).
    let t = unix_ms() / 1000 * 1000;
    let (p1, p2) = ((t, t + 1000), (t + 1000, t + 2000));
    for n in 1..=3 {
        assert_eq!(
            c.quota_check("api\0k", 3, p1.0, p1.1, 1).await,
            Ok((true, n))
        );
    }
    // Full: refused, nothing added.
    assert_eq!(
        c.quota_check("api\0k", 3, p1.0, p1.1, 1).await,
        Ok((false, 3))
    );
    assert_eq!(
        c.quota_check("api\0k", 3, p1.0, p1.1, 1).await,
        Ok((false, 3))
    );
    // A cost that does not fit is refused whole.
    assert_eq!(c.quota_refund("api\0k", p1.0, 2).await, Ok(1));
    assert_eq!(
        c.quota_check("api\0k", 3, p1.0, p1.1, 3).await,
        Ok((false, 1))
    );
    assert_eq!(
        c.quota_check("api\0k", 3, p1.0, p1.1, 2).await,
        Ok((true, 3))
    );
    // Refunds never go below zero, and a period not counted stays so.
    assert_eq!(c.quota_refund("api\0k", p1.0, 10).await, Ok(0));
    assert_eq!(c.quota_refund("api\0k", p2.0, 1).await, Ok(0));
    assert_eq!(
        r.cmd(&["EXISTS", &c.key("api\0k", &format!("q:{}", p2.0))]),
        ":0\r\n"
    );
    // Another period and another key start afresh.
    assert_eq!(
        c.quota_check("api\0k", 3, p2.0, p2.1, 1).await,
        Ok((true, 1))
    );
    assert_eq!(
        c.quota_check("api\0j", 3, p1.0, p1.1, 1).await,
        Ok((true, 1))
    );
    // The key has a hash tag, and expires a day after its period's end.
    let key = c.key("api\0k", &format!("q:{}", p2.0));
    assert_eq!(key, format!("tollgate:{{api%00k}}:q:{}", p2.0));
    let at: u64 = r.cmd(&["PEXPIRETIME", &key])[1..].trim().parse().unwrap();
    assert_eq!(at, p2.1 + 86_400_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_redis_is_refused_not_passed_and_does_not_open_the_breaker() {
    let r = TestRedis::start();
    let c = connected(&r.spec("breaker-failures = 1")).await;
    r.cmd(&["SET", &c.key("a\0g", "q:0"), "lots"]);
    for _ in 0..3 {
        let e = c.quota_check("a\0g", 10, 0, 1000, 1).await.unwrap_err();
        assert!(
            matches!(&e, Failure::Error(m) if m.contains("not a number")),
            "{e:?}"
        );
        assert!(c.quota_refund("a\0g", 0, 1).await.is_err());
    }
    // A limit's key holding another type: an error too.
    r.cmd(&["SET", &c.key("a\0w", "sw"), "x"]);
    assert!(c
        .rate_check("a\0w", RateAlgorithm::SlidingWindow, 5, 1000, 1, None)
        .await
        .is_err());
    // A cache value another program wrote: a miss.
    r.cmd(&["SET", &c.cache_key("a\0c"), "not an entry"]);
    assert_eq!(c.cache_get("a\0c").await, Ok(None));
    // Redis answered all along: the breaker (1 failure) stayed closed.
    assert!(!c.breaker.is_open());
    let t = unix_ms();
    assert_eq!(
        c.quota_check("a\0ok", 1, t, t + 1000, 1).await,
        Ok((true, 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_entries_with_redis_ttl_and_a_size_cap() {
    let r = TestRedis::start();
    let c = connected(&r.spec("max-cache-entry = \"1KiB\"")).await;
    let e = CacheEntry {
        status: 203,
        headers: vec![
            ("content-type".into(), b"text/plain".to_vec()),
            ("x-b".into(), vec![0, 255]),
        ],
        body: b"hello".to_vec(),
    };
    assert_eq!(c.cache_put("a\0k", &e, 60_000).await, Ok(true));
    let (got, left) = c.cache_get("a\0k").await.unwrap().unwrap();
    assert_eq!(got, e);
    assert!((59_000..=60_000).contains(&left), "{left}");
    // Redis's TTL: gone after it.
    assert_eq!(c.cache_put("a\0short", &e, 30).await, Ok(true));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(c.cache_get("a\0short").await, Ok(None));
    // Above the cap: not kept.
    let big = CacheEntry {
        body: vec![b'x'; 2048],
        ..e.clone()
    };
    assert_eq!(c.cache_put("a\0big", &big, 60_000).await, Ok(false));
    assert_eq!(c.cache_get("a\0big").await, Ok(None));
    c.cache_delete("a\0k").await.unwrap();
    assert_eq!(c.cache_get("a\0k").await, Ok(None));
}

#[test]
fn entries_decode_only_what_was_encoded() {
    let e = CacheEntry {
        status: 200,
        headers: vec![("a".into(), b"1".to_vec())],
        body: b"body".to_vec(),
    };
    let bytes = encode_entry(&e);
    assert_eq!(decode_entry(&bytes), Some(e));
    for cut in 0..bytes.len() - 4 {
        assert_eq!(decode_entry(&bytes[..cut]), None, "cut at {cut}");
    }
    let mut bad = bytes.clone();
    bad[0] = 9;
    assert_eq!(decode_entry(&bad), None);
    assert_eq!(decode_entry(&[1, 0, 200, 255, 255, 255, 255]), None);
}

/// Redis stops answering (DEBUG SLEEP blocks it): each call gives up at
/// the command timeout, and once the breaker opens no call waits at all;
/// after the cool-down one probe finds Redis back and closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_costs_at_most_the_timeout_then_nothing() {
    let r = TestRedis::start();
    let spec =
        r.spec("command-timeout = \"50ms\"\nbreaker-failures = 3\nbreaker-cool-down = \"300ms\"");
    let c = connected(&spec).await;
    let check = || c.rate_check("a\0s", RateAlgorithm::TokenBucket, 100, 1000, 1, None);
    assert!(check().await.unwrap().allowed);
    let port = r.port;
    let sleeper = std::thread::spawn(move || {
        let _ = std::net::TcpStream::connect(("127.0.0.1", port)).map(|mut s| {
            use std::io::{Read, Write};
            s.write_all(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$3\r\n1.0\r\n")
                .unwrap();
            let mut b = [0u8; 16];
            let _ = s.read(&mut b);
        });
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..3 {
        let t = Instant::now();
        assert_eq!(check().await, Err(Failure::Timeout), "call {i}");
        let took = t.elapsed();
        assert!(took < Duration::from_millis(250), "call {i} took {took:?}");
    }
    // Open: refused without calling.
    for _ in 0..100 {
        let t = Instant::now();
        assert_eq!(check().await, Err(Failure::BreakerOpen));
        assert!(t.elapsed() < Duration::from_millis(5));
    }
    sleeper.join().unwrap();
    // Redis is back (the sleep is over); after the cool-down the probe
    // closes the breaker.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match check().await {
            Ok(d) => {
                assert!(d.allowed);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "still {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!c.breaker.is_open());
}

/// A node whose Redis is down starts anyway: its calls fail at once, and
/// it connects when Redis comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_then_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Cluster::start(&spec_for(port, "connect-timeout = \"200ms\"")).unwrap();
    for _ in 0..20 {
        let t = Instant::now();
        let e = c.quota_check("a\0d", 5, 0, 1000, 1).await.unwrap_err();
        assert!(
            matches!(e, Failure::NotConnected | Failure::BreakerOpen),
            "{e:?}"
        );
        assert!(t.elapsed() < Duration::from_millis(50));
    }
    let r = TestRedis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(v) = c.quota_check("a\0d", 5, 0, 1000, 1).await {
            assert!(v.0);
            break;
        }
        assert!(Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(r);
}

#[test]
fn a_missing_password_variable_is_an_error_at_start() {
    let spec = spec_for(
        1,
        "username = \"tg\"\npassword-env = \"TOLLGATE_TEST_NO_SUCH_VARIABLE\"",
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(async { Cluster::start(&spec).err().unwrap().to_string() });
    assert!(
        e.contains("TOLLGATE_TEST_NO_SUCH_VARIABLE is not set"),
        "{e}"
    );
}

/// An ACL user and its password from the environment: a wrong password is
/// never connected; the right one counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password_from_the_environment() {
    let r = TestRedis::start();
    assert_eq!(
        r.cmd(&["ACL", "SETUSER", "tg", "on", ">s3cret-pw", "~*", "+@all"]),
        "+OK\r\n"
    );
    r.cmd(&["ACL", "SETUSER", "default", "off"]);
    // Names only this test uses.
    std::env::set_var("TOLLGATE_TEST_REDIS_PW_OK", "s3cret-pw");
    std::env::set_var("TOLLGATE_TEST_REDIS_PW_BAD", "wrong");
    let good =
        connected(&r.spec("username = \"tg\"\npassword-env = \"TOLLGATE_TEST_REDIS_PW_OK\"")).await;
    let t = unix_ms();
    assert_eq!(
        good.quota_check("a\0acl", 2, t, t + 1000, 1).await,
        Ok((true, 1))
    );
    let bad =
        Cluster::start(&r.spec("username = \"tg\"\npassword-env = \"TOLLGATE_TEST_REDIS_PW_BAD\""))
            .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!bad.connected());
    assert!(bad.quota_check("a\0acl", 2, 0, 1000, 1).await.is_err());
}

/// A "Redis" that answers garbage, or accepts and never answers: every
/// call fails, none waits past the command timeout, nothing passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_garbage_or_nothing_costs_a_bounded_wait() {
    for garbage in [true, false] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                if garbage {
                    use std::io::Write;
                    let _ = s.write_all(b"%%garbage\r\n\x00\xff*-1\r\n:abc\r\n");
                }
                held.push(s);
            }
        });
        let c = Cluster::start(&spec_for(
            port,
            "connect-timeout = \"200ms\"\ncommand-timeout = \"50ms\"\nbreaker-failures = 2",
        ))
        .unwrap();
        for i in 0..10 {
            let t = Instant::now();
            let r = c
                .rate_check("a\0x", RateAlgorithm::SlidingWindow, 5, 1000, 1, None)
                .await;
            assert!(r.is_err(), "garbage={garbage} call {i}: {r:?}");
            let took = t.elapsed();
            assert!(
                took < Duration::from_millis(150),
                "garbage={garbage} call {i} took {took:?}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

/// `rediss://` through rustls: a Redis serving TLS with a private CA is
/// reached with `ca-file`, and refused (never connected) without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test redis CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(p("ca.pem"), ca.pem()).unwrap();
    std::fs::write(p("cert.pem"), cert.pem()).unwrap();
    std::fs::write(p("key.pem"), key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &p("cert.pem"),
            "--tls-key-file",
            &p("key.pem"),
        ])
        .args([
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .args(["--save", "", "--appendonly", "no", "--dir", &p("")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("url = \"rediss://127.0.0.1:{port}\"\nconnect-timeout = \"500ms\"");
    let spec: ClusterSpec = toml::from_str(&format!("{url}\nca-file = {:?}", p("ca.pem"))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let good = Cluster::start(&spec).unwrap();
    let t = unix_ms();
    loop {
        if let Ok(v) = good.quota_check("a\0tls", 3, t, t + 60_000, 1).await {
            assert_eq!(v, (true, 1));
            break;
        }
        assert!(Instant::now() < deadline, "no TLS connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The system's roots do not know this CA.
    let spec: ClusterSpec = toml::from_str(&url).unwrap();
    let untrusting = Cluster::start(&spec).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!untrusting.connected());
    assert!(untrusting
        .quota_check("a\0tls", 3, t, t + 60_000, 1)
        .await
        .is_err());
    let _ = child.kill();
    let _ = child.wait();
}
