//! TLS for listeners: rustls with the ring provider, ALPN `h2` and `http/1.1`.

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

/// Build an acceptor from PEM files, with errors that name the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    let certs: Vec<_> = {
        let data = std::fs::read(cert)
            .with_context(|| format!("TLS certificate {}: cannot read", cert.display()))?;
        rustls_pemfile::certs(&mut data.as_slice())
            .collect::<Result<_, _>>()
            .with_context(|| format!("TLS certificate {}: not valid PEM", cert.display()))?
    };
    if certs.is_empty() {
        anyhow::bail!(
            "TLS certificate {}: no CERTIFICATE block found",
            cert.display()
        );
    }
    let key_der = {
        let data = std::fs::read(key)
            .with_context(|| format!("TLS key {}: cannot read", key.display()))?;
        rustls_pemfile::private_key(&mut data.as_slice())
            .with_context(|| format!("TLS key {}: not valid PEM", key.display()))?
            .with_context(|| format!("TLS key {}: no PRIVATE KEY block found", key.display()))?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "TLS key {} does not match certificate {}",
                key.display(),
                cert.display()
            )
        })?;
    // The server's cipher suite order, not the client's: the provider's
    // list is strongest first (AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305
    // for TLS 1.3; ECDHE with the same order for TLS 1.2).
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
