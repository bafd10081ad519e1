//! TLS for the gateway's own outbound connections: to `https://` upstreams
//! ([`crate::upstream`]) and for the policies' HTTP client
//! ([`crate::policy::host`]). rustls with the ring provider, as for listeners
//! ([`crate::net::tls_server`] is the server side).
//!
//! What the peer is checked against:
//! - the system's root certificates, read once per process by
//!   `rustls-native-certs` (the OS store: `/etc/ssl/certs` and the like, or
//!   the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name), so a CA the operator
//!   installs with the system's tools is trusted without a gateway setting;
//! - or the certificates of a CA file (an upstream's `ca-file` replaces the
//!   system roots; the gateway's `[outbound] ca-file` adds to them);
//! - or nothing at all with `insecure-skip-verify` (logged loudly at load).
//!
//! ALPN offers `h2` and `http/1.1`: an upstream that picks `h2` is spoken
//! to in HTTP/2, any other in HTTP/1.1.

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The connector every outbound client uses: plain TCP for `http://`, TLS
/// for `https://` (or only TLS, for an upstream whose targets are https).
pub type Connector = HttpsConnector<HttpConnector>;

/// Whom a TLS client trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The system's root certificates.
    System,
    /// Only the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// The system's roots (none found is not an error: every certificate
    /// check then fails unless the file's CA signed it) and the CA
    /// certificates in this PEM file, if any.
    SystemAnd(Option<PathBuf>),
    /// Any certificate (`insecure-skip-verify`): the handshake's signatures
    /// are still checked, the certificate chain and name are not.
    Nobody,
}

/// Everything a TLS client is configured with.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub trust: Trust,
    /// A PEM certificate chain and its private key, presented when the
    /// server asks for one (mTLS).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name to send as SNI and to check the certificate against,
    /// instead of the URL's host.
    pub server_name: Option<ServerName<'static>>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's root certificates, read on first use and kept for the life
/// of the process (a changed system store needs a restart). An error when
/// none could be read.
pub fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("reading the system's root certificates: {e}");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!("{ignored} system root certificates are not usable and were skipped");
            }
            if added == 0 {
                return Err("no system root certificates found (install the system's CA bundle, e.g. the ca-certificates package, or point SSL_CERT_FILE at one)".into());
            }
            tracing::debug!("{added} system root certificates");
            Ok(Arc::new(roots))
        })
        .clone()
}

/// The certificates in a PEM file; an error naming the file when it cannot
/// be read or holds none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE block found (expected PEM)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| format!("{}: not valid PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no PRIVATE KEY block found", path.display()))
}

/// The CA certificates of a PEM file, as trust anchors.
pub fn ca_roots(path: &Path, roots: &mut RootCertStore) -> Result<(), String> {
    for (i, cert) in read_certs(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "{}: certificate {} is not a usable CA certificate: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(())
}

/// A `tls-server-name`: a DNS name or an IP address, without port.
pub fn server_name(s: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(s.to_string())
        .map_err(|_| format!("`{s}` is not a DNS name or an IP address"))
}

/// The rustls client configuration for `tls` (ALPN is set by [`connector`]).
pub fn client_config(tls: &ClientTls) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let builder = match &tls.trust {
        Trust::Nobody => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider()))),
        trust => {
            let mut roots = RootCertStore::empty();
            if matches!(trust, Trust::System | Trust::SystemAnd(_)) {
                match (system_roots(), trust) {
                    (Ok(sys), _) => roots.extend(sys.roots.iter().cloned()),
                    (Err(e), Trust::SystemAnd(_)) => tracing::debug!("{e}"),
                    (Err(e), _) => return Err(format!("{e}; or set `ca-file`")),
                }
            }
            if let Trust::CaFile(p) | Trust::SystemAnd(Some(p)) = trust {
                ca_roots(p, &mut roots).map_err(|e| format!("`ca-file`: {e}"))?;
            }
            builder.with_root_certificates(roots)
        }
    };
    match &tls.identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = read_certs(cert).map_err(|e| format!("`client-cert`: {e}"))?;
            let key_der = read_key(key).map_err(|e| format!("`client-key`: {e}"))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "`client-key` {} does not fit `client-cert` {}: {e}",
                    key.display(),
                    cert.display()
                )
            })
        }
    }
}

/// A connector for `tls` over `http`: with `http2`, HTTP/2 when the server
/// picks `h2` by ALPN, else HTTP/1.1; without, HTTP/1.1 only (no ALPN, so
/// the server cannot pick h2: what a WebSocket handshake needs).
/// `https_only` refuses `http://` URLs.
pub fn connector(
    tls: &ClientTls,
    mut http: HttpConnector,
    https_only: bool,
    http2: bool,
) -> Result<Connector, String> {
    http.enforce_http(false);
    let b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(client_config(tls)?);
    let b = if https_only {
        b.https_only()
    } else {
        b.https_or_http()
    };
    let b = match &tls.server_name {
        Some(name) => b.with_server_name_resolver(FixedServerNameResolver::new(name.clone())),
        None => b,
    };
    let b = b.enable_http1();
    Ok(if http2 {
        b.enable_http2().wrap_connector(http)
    } else {
        b.wrap_connector(http)
    })
}

/// A connector for plain `http://` only (an upstream without TLS): no
/// certificates are read.
pub fn plain_connector(http: HttpConnector) -> Connector {
    static EMPTY: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let config = EMPTY.get_or_init(|| {
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        )
    });
    HttpsConnector::from((http, config.clone()))
}

/// The TLS failure in an error's chain, if any. `std::io::Error` hides the
/// error it wraps from `source()`, so each one is opened too.
pub fn tls_failure<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(t) = tls_failure(inner) {
                return Some(t);
            }
        }
        cur = err.source();
    }
    None
}

/// Accepts any certificate; checks the handshake's signatures (so the
/// connection is still encrypted to whoever holds the presented key).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = read_certs(&missing).unwrap_err();
        assert!(e.contains("nope.pem: cannot read"), "{e}");
        let empty = write(dir.path(), "empty.pem", "not pem at all\n");
        let e = read_certs(&empty).unwrap_err();
        assert!(e.contains("empty.pem: no CERTIFICATE block"), "{e}");
        let e = read_key(&empty).unwrap_err();
        assert!(e.contains("empty.pem: no PRIVATE KEY block"), "{e}");
        let e = client_config(&ClientTls {
            trust: Trust::CaFile(missing),
            identity: None,
            server_name: None,
        })
        .unwrap_err();
        assert!(e.contains("nope.pem: cannot read"), "{e}");
    }

    #[test]
    fn server_names() {
        assert!(server_name("api.internal").is_ok());
        assert!(server_name("10.0.0.5").is_ok());
        assert!(server_name("::1").is_ok());
        for bad in ["", "api.internal:443", "bad name", "https://x"] {
            let e = server_name(bad).unwrap_err();
            assert!(e.contains("not a DNS name or an IP address"), "{bad}: {e}");
        }
    }

    #[test]
    fn insecure_needs_no_roots() {
        assert!(client_config(&ClientTls {
            trust: Trust::Nobody,
            identity: None,
            server_name: None,
        })
        .is_ok());
    }
}
