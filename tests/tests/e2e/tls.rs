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

/// The cipher suite a rustls client offering `suites` in that order (its
/// preference) gets from the gateway.
async fn negotiated(
    gw: &TestGateway,
    ca_pem: &str,
    suites: Vec<rustls::SupportedCipherSuite>,
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::CipherSuite {
    use rustls::crypto::ring as provider;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        ..provider::default_provider()
    };
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        connector.connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    tls.get_ref().1.negotiated_cipher_suite().unwrap().suite()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_chooses_the_cipher_suite() {
    use rustls::crypto::ring::cipher_suite as cs;
    let up = Upstream::start().await;
    let (cert, key, _) = cert();
    let gw = TestGateway::builder(&simple_manifest(&up.url(), ""))
        .tls(cert.clone(), key)
        .start()
        .await;
    // Clients that prefer ChaCha20 (then AES-128, then AES-256) get the
    // server's first choice that they offer: AES-256-GCM.
    let tls13 = negotiated(
        &gw,
        &cert,
        vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
        ],
        &rustls::version::TLS13,
    )
    .await;
    assert_eq!(tls13, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    let tls12 = negotiated(
        &gw,
        &cert,
        vec![
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ],
        &rustls::version::TLS12,
    )
    .await;
    assert_eq!(
        tls12,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    );
    // A client that offers only a suite lower in the server's list still
    // gets it.
    let only = negotiated(
        &gw,
        &cert,
        vec![cs::TLS13_CHACHA20_POLY1305_SHA256],
        &rustls::version::TLS13,
    )
    .await;
    assert_eq!(only, rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
}
