use super::size::parse_size;
use super::*;
use tollgate_policy_sdk::{header_str, parse_config, CallContext, Header, RequestHead, Response};

fn policy(json: &str) -> RequestSizeLimit {
    parse_config::<RequestSizeLimit>(json).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn error(json: &str) -> (Option<String>, String) {
    match parse_config::<RequestSizeLimit>(json) {
        Ok(p) => panic!("{json} was accepted: {p:?}"),
        Err(e) => (e.field, e.message),
    }
}

fn head(content_lengths: &[&[u8]]) -> RequestHead {
    RequestHead {
        method: "POST".into(),
        path: "/upload".into(),
        headers: content_lengths
            .iter()
            .map(|v| Header::new("content-length", *v))
            .collect(),
        ..RequestHead::default()
    }
}

fn decide(p: &mut RequestSizeLimit, req: &RequestHead, body: Option<&[u8]>) -> Option<Response> {
    match p.on_request(&Call::native(&CallContext::default(), req), body) {
        RequestDecision::Continue(edits) => {
            assert_eq!(edits, RequestEdits::default());
            None
        }
        RequestDecision::Respond(r) => Some(r),
    }
}

fn status(p: &mut RequestSizeLimit, req: &RequestHead, body: Option<&[u8]>) -> u16 {
    decide(p, req, body).map_or(200, |r| r.status)
}

fn body_text(r: &Response) -> String {
    String::from_utf8(r.body.clone()).unwrap()
}

// --- sizes -------------------------------------------------------------------

#[test]
fn sizes_in_every_unit() {
    let cases: &[(&str, u32)] = &[
        ("0", 0),
        ("100", 100),
        ("100B", 100),
        ("100 b", 100),
        ("1KB", 1_000),
        ("1kB", 1_000),
        ("1kb", 1_000),
        ("1KiB", 1_024),
        ("512KiB", 512 * 1024),
        ("512 kib", 512 * 1024),
        ("1MiB", 1 << 20),
        ("1MB", 1_000_000),
        ("1.5MiB", 3 << 19),
        ("1.5 MB", 1_500_000),
        ("0.5KiB", 512),
        ("1.000KiB", 1_024),
        ("3GiB", 3 << 30),
        ("4GB", 4_000_000_000),
        ("4294967295", u32::MAX),
        ("4294967295B", u32::MAX),
        ("0004KiB", 4096),
        ("  2KiB  ", 2048),
    ];
    for (text, bytes) in cases {
        assert_eq!(parse_size(text), Ok(*bytes), "{text:?}");
    }
}

#[test]
fn malformed_sizes_are_rejected() {
    let not_a_size = |t: &str| {
        format!("{t:?} is not a size: expected a number of bytes or a string such as \"512KiB\" or \"1MiB\"")
    };
    for text in [
        "", " ", "MiB", "-1", "-1KiB", "+1KiB", ".5KiB", "5.KiB", "1..5KiB", "1.5.5KiB", "1_000",
        "0x10", "１KiB", "\t1KiB", "1,000", "1e3", "1 2", "1KiB;", "1 Ki B", "1KiB\n",
    ] {
        assert_eq!(parse_size(text), Err(not_a_size(text)), "{text:?}");
    }
    let unknown = |u: &str, t: &str| {
        format!(
            "unknown unit {u:?} in {t:?}: expected B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024)"
        )
    };
    assert_eq!(parse_size("1TiB"), Err(unknown("TiB", "1TiB")));
    assert_eq!(parse_size("1 M"), Err(unknown("M", "1 M")));
    assert_eq!(
        parse_size("1 kibibyte"),
        Err(unknown("kibibyte", "1 kibibyte"))
    );
    assert_eq!(
        parse_size("1.0001KiB"),
        Err("\"1.0001KiB\" is not a whole number of bytes".into())
    );
    assert_eq!(
        parse_size("1.5"),
        Err("\"1.5\" is not a whole number of bytes".into())
    );
    assert_eq!(
        parse_size("1.0000000001GiB"),
        Err("\"1.0000000001GiB\" is not a whole number of bytes".into())
    );
    let too_large =
        |t: &str| format!("{t:?} is more than the largest limit, 4294967295 bytes (4 GiB - 1)");
    for text in [
        "4294967296",
        "4GiB",
        "5GB",
        "99999999999999999999GiB",
        "999999999999999999999999999999999999999999",
    ] {
        assert_eq!(parse_size(text), Err(too_large(text)), "{text:?}");
    }
}

// --- configuration -----------------------------------------------------------

#[test]
fn config_accepts_integers_and_strings() {
    assert_eq!(policy(r#"{"max-bytes":1024}"#).max_bytes(), 1024);
    assert_eq!(policy(r#"{"max-bytes":"1MiB"}"#).max_bytes(), 1 << 20);
    assert_eq!(policy(r#"{"max-bytes":0}"#).max_bytes(), 0);
    assert_eq!(policy(r#"{"max-bytes":4294967295}"#).max_bytes(), u32::MAX);
}

#[test]
fn config_errors_name_the_field() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        (r#"{}"#, None, "missing field `max-bytes`"),
        (
            r#"{"max-bytes":-1}"#,
            Some("max-bytes"),
            "-1 is negative: expected a number of bytes or a string such as \"512KiB\" or \"1MiB\"",
        ),
        (
            r#"{"max-bytes":1.5}"#,
            Some("max-bytes"),
            "1.5 is not a whole number of bytes: expected a number of bytes or a string such as \"512KiB\" or \"1MiB\"",
        ),
        (
            r#"{"max-bytes":4294967296}"#,
            Some("max-bytes"),
            "\"4294967296\" is more than the largest limit, 4294967295 bytes (4 GiB - 1)",
        ),
        (
            r#"{"max-bytes":"10 parsecs"}"#,
            Some("max-bytes"),
            "unknown unit \"parsecs\" in \"10 parsecs\": expected B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024)",
        ),
        (
            r#"{"max-bytes":true}"#,
            Some("max-bytes"),
            "invalid type: boolean `true`, expected a number of bytes or a string such as \"1MiB\"",
        ),
        (
            r#"{"max-bytes":[1]}"#,
            Some("max-bytes"),
            "invalid type: sequence, expected a number of bytes or a string such as \"1MiB\"",
        ),
    ];
    for (json, field, message) in cases {
        assert_eq!(
            error(json),
            (field.map(String::from), message.to_string()),
            "{json}"
        );
    }
    let (field, message) = error(r#"{"max-bytes":1,"max_bytes":2}"#);
    assert_eq!(field.as_deref(), Some("max_bytes"));
    assert!(
        message.starts_with("unknown field `max_bytes`"),
        "{message}"
    );
    let (field, _) = error(r#"{"max-bytes":1,"limit":2}"#);
    assert_eq!(field.as_deref(), Some("limit"));
}

#[test]
fn info_asks_for_the_request_body_up_to_the_limit() {
    let p = policy(r#"{"max-bytes":"512KiB"}"#);
    assert_eq!(
        p.info(),
        PolicyInfo {
            body: BodyAccess {
                request: Some(512 * 1024),
                response: None
            },
            phases: Phases::REQUEST,
        }
    );
}

#[test]
fn every_configuration_declares_only_the_request_phase() {
    for json in [
        r#"{"max-bytes":0}"#,
        r#"{"max-bytes":"1MiB"}"#,
        r#"{"max-bytes":4294967295}"#,
    ] {
        assert_eq!(policy(json).info().phases, Phases::REQUEST, "{json}");
    }
}

/// `declared_length` over the `Content-Length` values of `req`, read the way
/// the request phase reads them.
fn declared(req: &RequestHead) -> DeclaredLength {
    declared_length(&Call::native(&CallContext::default(), req).header_values("content-length"))
}

// --- Content-Length ------------------------------------------------------------

#[test]
fn content_length_over_the_limit_is_413_at_once() {
    let mut p = policy(r#"{"max-bytes":100}"#);
    // No body: the check does not need one.
    let r = decide(&mut p, &head(&[b"101"]), None).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        header_str(&r.headers, "content-type"),
        Some("application/json")
    );
    assert_eq!(
        body_text(&r),
        r#"{"error":{"code":"payload_too_large","message":"the request body is 101 bytes (Content-Length); this API accepts at most 100 bytes"}}"#
    );
    assert_eq!(status(&mut p, &head(&[b"100"]), None), 200);
    assert_eq!(status(&mut p, &head(&[b"0"]), None), 200);
    assert_eq!(status(&mut p, &head(&[b"0000000100"]), None), 200);
    assert_eq!(status(&mut p, &head(&[b"0000000101"]), None), 413);
    assert_eq!(status(&mut p, &head(&[b"18446744073709551616"]), None), 413);
    let huge = vec![b'9'; 5000];
    let r = decide(&mut p, &head(&[&huge]), None).unwrap();
    assert_eq!(r.status, 413);
    assert!(body_text(&r).contains("99999999999999999999... (5000 digits)"));
    assert!(r.body.len() < 300);
}

#[test]
fn zero_limit_allows_only_empty_bodies() {
    let mut p = policy(r#"{"max-bytes":0}"#);
    assert_eq!(status(&mut p, &head(&[b"0"]), Some(b"")), 200);
    assert_eq!(status(&mut p, &head(&[]), None), 200);
    assert_eq!(status(&mut p, &head(&[b"1"]), None), 413);
    assert_eq!(status(&mut p, &head(&[]), Some(b"x")), 413);
}

#[test]
fn repeated_identical_lengths_are_one_length() {
    let mut p = policy(r#"{"max-bytes":100}"#);
    assert_eq!(
        declared(&head(&[b"5, 5"])),
        DeclaredLength::Length("5".into())
    );
    assert_eq!(
        declared(&head(&[b"5", b"05", b" 5\t"])),
        DeclaredLength::Length("5".into())
    );
    assert_eq!(status(&mut p, &head(&[b"50,50"]), None), 200);
    assert_eq!(status(&mut p, &head(&[b"500", b"500"]), None), 413);
    assert_eq!(declared(&head(&[])), DeclaredLength::Absent);
}

#[test]
fn malformed_or_conflicting_lengths_are_400() {
    let mut p = policy(r#"{"max-bytes":100}"#);
    for values in [
        &[&b""[..]][..],
        &[b" "],
        &[b"-1"],
        &[b"+5"],
        &[b"5.0"],
        &[b"0x10"],
        &[b"1e3"],
        &[b"5 5"],
        &[b"5,"],
        &[b",5"],
        &[b"5,,5"],
        &[b"abc"],
        &[b"\xff"],
        &[b"\xd9\xa5"], // an Arabic-Indic digit five
        &[b"5", b""],
    ] {
        let r = decide(&mut p, &head(values), Some(b"hello")).unwrap();
        assert_eq!(r.status, 400, "{values:?}");
        assert!(
            body_text(&r).starts_with(
                r#"{"error":{"code":"invalid_content_length","message":"Content-Length "#
            ),
            "{}",
            body_text(&r)
        );
    }
    let r = decide(&mut p, &head(&[b"5", b"6"]), None).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        body_text(&r),
        r#"{"error":{"code":"invalid_content_length","message":"conflicting Content-Length values 5 and 6"}}"#
    );
    assert_eq!(status(&mut p, &head(&[b"5, 6"]), None), 400);
    // A conflict is 400 even when one of the values is over the limit.
    assert_eq!(status(&mut p, &head(&[b"5", b"5000"]), None), 400);
    // A long garbage value is cut in the message.
    let long = vec![b'x'; 10_000];
    let r = decide(&mut p, &head(&[&long]), None).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.len() < 200, "{}", body_text(&r));
}

// --- the body itself --------------------------------------------------------------

#[test]
fn bodies_over_the_limit_are_413_even_without_a_length() {
    // A chunked body that the gateway buffered for another step with a
    // larger limit.
    let mut p = policy(r#"{"max-bytes":10}"#);
    assert_eq!(status(&mut p, &head(&[]), Some(&[0u8; 10])), 200);
    let r = decide(&mut p, &head(&[]), Some(&[0u8; 11])).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        body_text(&r),
        r#"{"error":{"code":"payload_too_large","message":"the request body is 11 bytes; this API accepts at most 10 bytes"}}"#
    );
    assert_eq!(status(&mut p, &head(&[]), Some(&[0u8; 100_000])), 413);
    // A body longer than its (small) Content-Length: the body decides.
    assert_eq!(status(&mut p, &head(&[b"5"]), Some(&[0u8; 11])), 413);
    assert_eq!(status(&mut p, &head(&[]), None), 200);
    assert_eq!(status(&mut p, &head(&[]), Some(b"")), 200);
}
