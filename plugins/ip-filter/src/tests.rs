use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use tollgate_policy_sdk::{header_str, parse_config, CallContext, Phases, RequestHead, Response};

fn policy(json: &str) -> IpFilter {
    parse_config::<IpFilter>(json).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn error(json: &str) -> (Option<String>, String) {
    match parse_config::<IpFilter>(json) {
        Ok(p) => panic!("{json} was accepted: {p:?}"),
        Err(e) => (e.field, e.message),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn decide(p: &mut IpFilter, client_addr: &str) -> Option<Response> {
    let ctx = CallContext {
        client_addr: client_addr.into(),
        ..CallContext::default()
    };
    match p.on_request(&Call::native(&ctx, &RequestHead::default()), None) {
        RequestDecision::Continue(edits) => {
            assert_eq!(edits, RequestEdits::default());
            None
        }
        RequestDecision::Respond(r) => Some(r),
    }
}

fn allowed(p: &mut IpFilter, client_addr: &str) -> bool {
    decide(p, client_addr).is_none()
}

// --- CIDR parsing ------------------------------------------------------------

#[test]
fn parses_blocks_and_plain_addresses() {
    assert_eq!(
        cidr("10.0.0.0/8"),
        Cidr::V4 {
            net: 0x0a00_0000,
            prefix: 8
        }
    );
    assert_eq!(
        cidr("192.0.2.7"),
        Cidr::V4 {
            net: u32::from(Ipv4Addr::new(192, 0, 2, 7)),
            prefix: 32
        }
    );
    assert_eq!(cidr("0.0.0.0/0"), Cidr::V4 { net: 0, prefix: 0 });
    assert_eq!(cidr("::/0"), Cidr::V6 { net: 0, prefix: 0 });
    assert_eq!(
        cidr("::1"),
        Cidr::V6 {
            net: 1,
            prefix: 128
        }
    );
    assert_eq!(
        cidr("::1/128"),
        Cidr::V6 {
            net: 1,
            prefix: 128
        }
    );
    assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
    assert_eq!(cidr("2001:DB8::/32").to_string(), "2001:db8::/32");
    assert_eq!(cidr("255.255.255.255/32").to_string(), "255.255.255.255/32");
    assert_eq!(
        cidr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128").to_string(),
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"
    );
    assert_eq!(cidr("128.0.0.0/1").to_string(), "128.0.0.0/1");
    assert_eq!(cidr("8000::/1").to_string(), "8000::/1");
}

#[test]
fn ipv4_mapped_rules_become_ipv4_rules() {
    assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
    assert_eq!(cidr("::ffff:1.2.3.4"), cidr("1.2.3.4/32"));
    assert_eq!(cidr("::ffff:0:0/96"), cidr("0.0.0.0/0"));
    // Shorter prefixes are IPv6 rules; so is IPv4-compatible `::a.b.c.d`.
    assert!(matches!(cidr("::/64"), Cidr::V6 { prefix: 64, .. }));
    assert!(!cidr("::/64").contains(ip("::ffff:1.2.3.4")));
    assert!(matches!(cidr("::1.2.3.4"), Cidr::V6 { .. }));
}

#[test]
fn rejects_malformed_blocks_with_a_clear_message() {
    let cases: &[(&str, &str)] = &[
        ("", "an empty string is not an address or CIDR block"),
        (
            " 10.0.0.0/8",
            "\" 10.0.0.0/8\" has spaces around it; write the address or block alone",
        ),
        (
            "10.0.0.0/8 ",
            "\"10.0.0.0/8 \" has spaces around it; write the address or block alone",
        ),
        ("10.0.0.0/", "\"10.0.0.0/\" has an invalid prefix length \"\": expected 0 to 32"),
        ("/8", "\"\" is not an IPv4 or IPv6 address"),
        ("10.0.0.0/33", "\"10.0.0.0/33\" has an invalid prefix length \"33\": expected 0 to 32"),
        ("::/129", "\"::/129\" has an invalid prefix length \"129\": expected 0 to 128"),
        ("10.0.0.0/-1", "\"10.0.0.0/-1\" has an invalid prefix length \"-1\": expected 0 to 32"),
        ("10.0.0.0/+8", "\"10.0.0.0/+8\" has an invalid prefix length \"+8\": expected 0 to 32"),
        ("10.0.0.0/08", "\"10.0.0.0/08\" has an invalid prefix length \"08\": expected 0 to 32"),
        ("10.0.0.0/8/8", "\"10.0.0.0/8/8\" has an invalid prefix length \"8/8\": expected 0 to 32"),
        ("10.0.0.0/1000", "\"10.0.0.0/1000\" has an invalid prefix length \"1000\": expected 0 to 32"),
        ("::/99999999999999999999", "\"::/99999999999999999999\" has an invalid prefix length \"99999999999999999999\": expected 0 to 128"),
        ("10.0.0.0/ 8", "\"10.0.0.0/ 8\" has an invalid prefix length \" 8\": expected 0 to 32"),
        ("10.0.0/8", "\"10.0.0\" is not an IPv4 or IPv6 address"),
        ("10.0.0.0.0/8", "\"10.0.0.0.0\" is not an IPv4 or IPv6 address"),
        ("256.0.0.0/8", "\"256.0.0.0\" is not an IPv4 or IPv6 address"),
        ("010.0.0.0/8", "\"010.0.0.0\" is not an IPv4 or IPv6 address"),
        ("0x0a.0.0.0/8", "\"0x0a.0.0.0\" is not an IPv4 or IPv6 address"),
        ("10/8", "\"10\" is not an IPv4 or IPv6 address"),
        ("localhost", "\"localhost\" is not an IPv4 or IPv6 address"),
        ("*", "\"*\" is not an IPv4 or IPv6 address"),
        ("1.2.3.4:80", "\"1.2.3.4:80\" is not an IPv4 or IPv6 address"),
        ("[::1]/128", "\"[::1]\" is not an IPv4 or IPv6 address (write IPv6 without brackets, e.g. 2001:db8::/32)"),
        ("fe80::1%eth0/64", "\"fe80::1%eth0\" is not an IPv4 or IPv6 address (zone ids such as %eth0 are not supported)"),
        ("2001:db8:::/32", "\"2001:db8:::\" is not an IPv4 or IPv6 address"),
        ("1:2:3:4:5:6:7:8:9/128", "\"1:2:3:4:5:6:7:8:9\" is not an IPv4 or IPv6 address"),
        ("10.0.0.0\u{0}/8", "\"10.0.0.0\\0\" is not an IPv4 or IPv6 address"),
        ("１０.0.0.0/8", "\"１０.0.0.0\" is not an IPv4 or IPv6 address"),
    ];
    for (text, message) in cases {
        assert_eq!(Cidr::parse(text), Err(message.to_string()), "{text:?}");
    }
}

#[test]
fn rejects_host_bits_and_names_the_block() {
    assert_eq!(
        Cidr::parse("10.1.2.3/8").unwrap_err(),
        "\"10.1.2.3/8\" has host bits set: the block is 10.0.0.0/8"
    );
    assert_eq!(
        Cidr::parse("127.0.0.1/0").unwrap_err(),
        "\"127.0.0.1/0\" has host bits set: the block is 0.0.0.0/0"
    );
    assert_eq!(
        Cidr::parse("2001:db8::1/32").unwrap_err(),
        "\"2001:db8::1/32\" has host bits set: the block is 2001:db8::/32"
    );
    assert_eq!(
        Cidr::parse("::1/0").unwrap_err(),
        "\"::1/0\" has host bits set: the block is ::/0"
    );
    assert_eq!(
        Cidr::parse("::ffff:10.1.0.0/104").unwrap_err(),
        "\"::ffff:10.1.0.0/104\" has host bits set: the block is ::ffff:10.0.0.0/104"
    );
}

#[test]
fn containment_at_the_edges() {
    let all4 = cidr("0.0.0.0/0");
    assert!(all4.contains(ip("0.0.0.0")));
    assert!(all4.contains(ip("255.255.255.255")));
    assert!(!all4.contains(ip("::")), "v4 rules never match v6 clients");
    assert!(!all4.contains(ip("::1")));

    let all6 = cidr("::/0");
    assert!(all6.contains(ip("::")));
    assert!(all6.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    assert!(
        !all6.contains(ip("1.2.3.4")),
        "v6 rules never match v4 clients"
    );
    assert!(
        !all6.contains(ip("::ffff:1.2.3.4")),
        "mapped clients are v4 clients"
    );

    let one = cidr("192.0.2.7/32");
    assert!(one.contains(ip("192.0.2.7")));
    assert!(!one.contains(ip("192.0.2.6")));
    assert!(!one.contains(ip("192.0.2.8")));
    assert!(one.contains(ip("::ffff:192.0.2.7")));

    let net = cidr("10.0.0.0/8");
    assert!(net.contains(ip("10.0.0.0")));
    assert!(net.contains(ip("10.255.255.255")));
    assert!(!net.contains(ip("9.255.255.255")));
    assert!(!net.contains(ip("11.0.0.0")));
    assert!(net.contains(ip("::ffff:10.1.2.3")));
    assert!(!net.contains(ip("::ffff:11.1.2.3")));
    // `::1` is not `0.0.0.1` and `::a01:203` (IPv4-compatible) is not 10.1.2.3.
    assert!(!cidr("0.0.0.0/8").contains(ip("::1")));
    assert!(!net.contains(ip("::10.1.2.3")));

    let half = cidr("128.0.0.0/1");
    assert!(half.contains(ip("128.0.0.0")));
    assert!(!half.contains(ip("127.255.255.255")));

    let doc = cidr("2001:db8::/32");
    assert!(doc.contains(ip("2001:db8::")));
    assert!(doc.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
    assert!(!doc.contains(ip("2001:db9::")));
    assert!(!doc.contains(ip("2001:db7:ffff::")));

    let lo6 = cidr("::1/128");
    assert!(lo6.contains(ip("::1")));
    assert!(!lo6.contains(ip("::2")));
    assert!(!lo6.contains(ip("127.0.0.1")));

    let mapped = cidr("::ffff:127.0.0.0/104");
    assert!(mapped.contains(ip("127.0.0.1")));
    assert!(mapped.contains(ip("::ffff:127.9.9.9")));
}

#[test]
fn every_prefix_length_splits_where_it_should() {
    for prefix in 0..=32u8 {
        let c = cidr(&format!("0.0.0.0/{prefix}"));
        let last_inside = u32::MAX.checked_shr(prefix.into()).unwrap_or(0);
        assert!(
            c.contains(IpAddr::V4(Ipv4Addr::from(last_inside))),
            "/{prefix}"
        );
        if prefix > 0 {
            assert!(
                !c.contains(IpAddr::V4(Ipv4Addr::from(last_inside.wrapping_add(1)))),
                "/{prefix}"
            );
        }
    }
    for prefix in 0..=128u8 {
        let c = cidr(&format!("::/{prefix}"));
        let last_inside = u128::MAX.checked_shr(prefix.into()).unwrap_or(0);
        let inside = IpAddr::V6(Ipv6Addr::from(last_inside));
        // The mapped range is matched as v4, so skip addresses in it.
        if Ipv6Addr::from(last_inside).to_ipv4_mapped().is_none() {
            assert!(c.contains(inside), "/{prefix}");
        }
        if prefix > 0 {
            let outside = Ipv6Addr::from(last_inside.wrapping_add(1));
            assert!(!c.contains(IpAddr::V6(outside)), "/{prefix}");
        }
    }
}

#[test]
fn client_addresses() {
    assert_eq!(cidr::client_ip("1.2.3.4:5678"), Some(ip("1.2.3.4")));
    assert_eq!(cidr::client_ip("[::1]:5678"), Some(ip("::1")));
    assert_eq!(
        cidr::client_ip("[::ffff:1.2.3.4]:80"),
        Some(ip("::ffff:1.2.3.4"))
    );
    assert_eq!(cidr::client_ip("[fe80::1%2]:80"), Some(ip("fe80::1")));
    assert_eq!(cidr::client_ip("1.2.3.4"), Some(ip("1.2.3.4")));
    assert_eq!(cidr::client_ip("::1"), Some(ip("::1")));
    assert_eq!(cidr::client_ip("[::1]"), Some(ip("::1")));
    for bad in [
        "",
        "nope",
        "1.2.3.4:",
        "1.2.3.4:99999",
        "[::1",
        "::1]:80",
        "1.2.3:80",
    ] {
        assert_eq!(cidr::client_ip(bad), None, "{bad:?}");
    }
}

// --- configuration -----------------------------------------------------------

#[test]
fn config_errors_name_the_entry() {
    assert_eq!(
        error(r#"{"allow":["10.0.0.0/8","10.0.0.1/8"]}"#),
        (
            Some("allow.1".into()),
            "\"10.0.0.1/8\" has host bits set: the block is 10.0.0.0/8".into()
        )
    );
    assert_eq!(
        error(r#"{"deny":["::1/129"]}"#),
        (
            Some("deny.0".into()),
            "\"::1/129\" has an invalid prefix length \"129\": expected 0 to 128".into()
        )
    );
    assert_eq!(
        error(r#"{"deny":["10.0.0.0/8", 7]}"#),
        (
            Some("deny.1".into()),
            "invalid type: integer `7`, expected a string".into()
        )
    );
    assert_eq!(
        error(r#"{"allow":"10.0.0.0/8"}"#),
        (
            Some("allow".into()),
            "invalid type: string \"10.0.0.0/8\", expected a sequence".into()
        )
    );
    assert_eq!(
        error(r#"{"allow":["10.0.0.0/8"],"status":200}"#),
        (
            Some("status".into()),
            "200 is not an error status: expected 400 to 599".into()
        )
    );
    assert_eq!(
        error(r#"{"allow":["10.0.0.0/8"],"status":70000}"#)
            .0
            .as_deref(),
        Some("status")
    );
    assert_eq!(
        error(r#"{"allow":[],"deny":[]}"#),
        (
            None,
            "give `allow`, `deny` or both: with neither, the filter would let every address through"
                .into()
        )
    );
    assert_eq!(error(r#"{}"#).0, None);
    let (field, message) = error(r#"{"allow":["10.0.0.0/8"],"trust-forwarded":true}"#);
    assert_eq!(field.as_deref(), Some("trust-forwarded"));
    assert!(
        message.starts_with("unknown field `trust-forwarded`"),
        "{message}"
    );
}

#[test]
fn info_declares_no_body_and_no_response_phase() {
    let p = policy(r#"{"deny":["10.0.0.0/8"]}"#);
    assert_eq!(p.info().body, Default::default());
    assert_eq!(p.info().phases, Phases::REQUEST);
    assert_eq!(p.info(), PolicyInfo::request_only());
}

#[test]
fn every_configuration_declares_only_the_request_phase() {
    for json in [
        r#"{"deny":["10.0.0.0/8"]}"#,
        r#"{"allow":["10.0.0.0/8"]}"#,
        r#"{"allow":["10.0.0.0/8"],"deny":["10.66.0.0/16"],"status":404}"#,
    ] {
        assert_eq!(policy(json).info(), PolicyInfo::request_only(), "{json}");
    }
}

// --- decisions ---------------------------------------------------------------

#[test]
fn deny_wins_over_allow() {
    let mut p = policy(r#"{"allow":["10.0.0.0/8"],"deny":["10.66.0.0/16"]}"#);
    assert!(allowed(&mut p, "10.1.2.3:1000"));
    assert!(!allowed(&mut p, "10.66.1.1:1000"));
    assert!(!allowed(&mut p, "11.0.0.1:1000"), "not in allow");
    assert!(!allowed(&mut p, "[::1]:1000"), "v6 not in a v4 allow list");
    assert!(allowed(&mut p, "[::ffff:10.1.2.3]:1000"));
    assert!(!allowed(&mut p, "[::ffff:10.66.0.1]:1000"));

    let mut p = policy(r#"{"allow":["127.0.0.1"],"deny":["127.0.0.0/8"]}"#);
    assert!(!allowed(&mut p, "127.0.0.1:5"));
}

#[test]
fn deny_only_lets_the_rest_through() {
    let mut p = policy(r#"{"deny":["127.0.0.0/8","::1"]}"#);
    assert!(!allowed(&mut p, "127.0.0.1:5"));
    assert!(!allowed(&mut p, "127.255.255.254:5"));
    assert!(!allowed(&mut p, "[::1]:5"));
    assert!(!allowed(&mut p, "[::ffff:127.0.0.1]:5"), "mapped loopback");
    assert!(allowed(&mut p, "128.0.0.1:5"));
    assert!(allowed(&mut p, "[::2]:5"));
}

#[test]
fn refusal_is_a_json_error_with_the_configured_status() {
    let mut p = policy(r#"{"allow":["10.0.0.0/8"]}"#);
    let r = decide(&mut p, "192.0.2.1:1").unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        header_str(&r.headers, "content-type"),
        Some("application/json")
    );
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"error":{"code":"ip_not_allowed","message":"calls from this address are not allowed"}}"#
    );
    let mut p = policy(r#"{"allow":["10.0.0.0/8"],"status":404}"#);
    assert_eq!(decide(&mut p, "192.0.2.1:1").unwrap().status, 404);
}

#[test]
fn forwarded_headers_are_never_trusted() {
    let mut p = policy(r#"{"allow":["10.0.0.0/8"]}"#);
    let req = RequestHead {
        headers: vec![
            tollgate_policy_sdk::Header::new("x-forwarded-for", "10.0.0.1"),
            tollgate_policy_sdk::Header::new("x-real-ip", "10.0.0.1"),
            tollgate_policy_sdk::Header::new("forwarded", "for=10.0.0.1"),
        ],
        ..RequestHead::default()
    };
    let ctx = CallContext {
        client_addr: "203.0.113.9:4000".into(),
        ..CallContext::default()
    };
    assert!(matches!(
        p.on_request(&Call::native(&ctx, &req), None),
        RequestDecision::Respond(r) if r.status == 403
    ));
}

#[test]
fn unreadable_client_addresses_are_refused() {
    let mut p = policy(r#"{"deny":["192.0.2.0/24"]}"#);
    for addr in ["", "garbage", "10.0.0.1, 10.0.0.2", "unix:/tmp/sock"] {
        assert!(!allowed(&mut p, addr), "{addr:?}");
    }
}

#[test]
fn huge_lists() {
    // 65,536 /32 entries in 10.0.0.0/16, a few hundred v6 blocks.
    let mut allow: Vec<String> = (0..65_536u32)
        .map(|i| Ipv4Addr::from(0x0a00_0000 | i).to_string())
        .collect();
    allow.extend((0..512u32).map(|i| format!("2001:db8:{i:x}::/48")));
    let json = serde_json::json!({ "allow": allow, "deny": ["10.0.255.255"] }).to_string();
    let started = std::time::Instant::now();
    let mut p = policy(&json);
    assert!(allowed(&mut p, "10.0.0.0:1"));
    assert!(allowed(&mut p, "10.0.255.254:1"));
    assert!(!allowed(&mut p, "10.0.255.255:1"), "denied");
    assert!(!allowed(&mut p, "10.1.0.0:1"), "just outside");
    assert!(allowed(&mut p, "[2001:db8:1ff::1]:1"));
    assert!(!allowed(&mut p, "[2001:db8:200::1]:1"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // One bad entry deep in a long list is still found and named.
    let mut deny: Vec<String> = (0..10_000u32)
        .map(|i| format!("{}/32", Ipv4Addr::from(i << 8)))
        .collect();
    deny[9_999] = "10.0.0.1/24".into();
    let json = serde_json::json!({ "deny": deny }).to_string();
    assert_eq!(
        error(&json),
        (
            Some("deny.9999".into()),
            "\"10.0.0.1/24\" has host bits set: the block is 10.0.0.0/24".into()
        )
    );
}
