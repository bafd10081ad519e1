//! The phases in process, over real parts: a generation built by the
//! loader from a manifest on disk, a real policy runtime, and a real
//! upstream on loopback.

use super::normalise::{effective_authority, request_target_len};
use super::*;

fn parts(version: http::Version, target: &str, hosts: &[&str]) -> http::request::Parts {
    let mut b = Request::builder().version(version).uri(target);
    for h in hosts {
        b = b.header(header::HOST, *h);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn the_effective_authority_is_one_value() {
    use http::Version as V;
    let ok = |v, t, h: &[&str]| effective_authority(&parts(v, t, h)).unwrap();
    let refused = |v, t, h: &[&str]| {
        matches!(
            effective_authority(&parts(v, t, h)),
            Err(GatewayError::BadRequest(_))
        )
    };
    assert_eq!(ok(V::HTTP_11, "/x", &["a.example:8080"]), "a.example:8080");
    // Absolute form and HTTP/2 `:authority` win over Host.
    assert_eq!(
        ok(V::HTTP_11, "http://b.example/x", &["a.example"]),
        "b.example"
    );
    assert_eq!(
        ok(V::HTTP_2, "http://b.example/x", &["a.example"]),
        "b.example"
    );
    assert_eq!(ok(V::HTTP_2, "http://b.example/x", &[]), "b.example");
    assert_eq!(ok(V::HTTP_2, "/x", &["a.example"]), "a.example");
    assert_eq!(ok(V::HTTP_10, "/x", &[]), "");
    assert_eq!(ok(V::HTTP_11, "/x", &[""]), "");
    assert_eq!(ok(V::HTTP_11, "/x", &["[::1]:80"]), "[::1]:80");
    assert!(refused(V::HTTP_11, "/x", &[]));
    assert!(refused(V::HTTP_11, "http://b.example/x", &[]));
    assert!(refused(V::HTTP_11, "/x", &["a", "a"]));
    assert!(refused(V::HTTP_10, "/x", &["a", "b"]));
    assert!(refused(V::HTTP_2, "/x", &["a", "b"]));
    assert!(refused(V::HTTP_11, "/x", &["a b"]));
    assert!(refused(V::HTTP_11, "/x", &["u@a.example"]));
    assert!(refused(V::HTTP_11, "http://u@b.example/x", &["b.example"]));
}

#[test]
fn the_request_target_length_is_what_the_client_sent() {
    use http::Version as V;
    let len = |v, t| request_target_len(&parts(v, t, &[]));
    assert_eq!(len(V::HTTP_11, "/abc?q=1"), 8);
    assert_eq!(len(V::HTTP_11, "http://b.example/abc"), 20);
    assert_eq!(len(V::HTTP_2, "http://b.example/abc"), 4);
}
