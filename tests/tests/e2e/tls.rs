//! TLS (rustls, ALPN) and HTTP/2 through the gateway.

use tollgate_tests::*;

fn cert() -> (String, String, reqwest::Certificate) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let key_pem = ck.key_pair.serialize_pem();
    let ca = reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    (cert_pem, key_pem, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_h2_and_http1() {
    let up = Upstream::start().await;
    let (cert, key, ca) = cert();
    let chain = "[[api.chain]]\nplugin = \"fixture-tag\"\nconfig = { name = \"t\" }\n";
    let gw = TestGateway::builder(&simple_manifest(&up.url(), chain))
        .tls(cert, key)
        .start()
        .await;
    let url = format!("https://localhost:{}/secure", gw.addr.port());

    // ALPN picks h2.
    let h2 = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();
    let r = h2.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
    assert_eq!(up.last().header("x-chain"), Some("t"));

    // HTTP/1.1 over TLS too.
    let h1 = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_h2_prior_knowledge() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&simple_manifest(&up.url(), "")).await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c.get(gw.url("/h2c?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(up.last().path_and_query, "/h2c?x=1");
}
