//! TLS peers for the tests: a certificate authority made at run time, the
//! certificates it signs, and servers behind rustls (a recording upstream,
//! or any hyper service) that note what each handshake carried.

use crate::Recorded;
use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// A certificate authority that exists only for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, signed by a [`TestCa`].
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Issued {
    /// Write `<stem>.pem` and `<stem>.key` into `dir`; their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Write the CA certificate to `dir/<name>`; its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, self.pem()).unwrap();
        p
    }

    fn issue(&self, names: &[&str], cn: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A server certificate for these DNS names or IP addresses.
    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, names[0], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with this common name.
    pub fn client(&self, cn: &str) -> Issued {
        self.issue(&[cn], cn, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// How a [`TlsServer`] serves.
pub struct TlsOptions<'a> {
    /// ALPN protocols offered, in preference order (empty: no ALPN).
    pub alpn: Vec<&'static str>,
    /// Speak HTTP/2 only (else HTTP/1.1 or HTTP/2, by ALPN).
    pub http2_only: bool,
    /// Require a client certificate signed by this CA.
    pub client_ca: Option<&'a TestCa>,
}

impl Default for TlsOptions<'_> {
    fn default() -> Self {
        TlsOptions {
            alpn: vec!["h2", "http/1.1"],
            http2_only: false,
            client_ca: None,
        }
    }
}

/// What one completed TLS handshake carried.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub sni: Option<String>,
    pub alpn: Option<String>,
    /// Whether the client presented a certificate.
    pub client_cert: bool,
}

/// A TLS server on loopback.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// Every completed handshake.
    pub handshakes: Arc<Mutex<Vec<Handshake>>>,
    /// Every handshake that failed, with rustls's reason.
    pub failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A TLS acceptor presenting `cert`, offering `alpn` (no client
/// certificates): for tests that serve something else than
/// [`TlsServer::start`]'s HTTP answers over TLS (a WebSocket or gRPC
/// upstream).
pub fn acceptor(cert: &Issued, alpn: &[&str]) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], cert.key())
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TLS server on a loopback port for any protocol: each connection is
/// accepted with `acceptor`, its ALPN protocol noted (`""` when none was
/// agreed), and the stream handed to `serve`. Returns the port, the
/// protocols in order, and the accept task (abort it to stop).
pub async fn serve_tls<F, Fut>(
    acceptor: tokio_rustls::TlsAcceptor,
    serve: F,
) -> (u16, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let alpn: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = alpn.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen, serve) = (acceptor.clone(), seen.clone(), serve.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let proto = stream.get_ref().1.alpn_protocol().unwrap_or_default();
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(proto).into_owned());
                serve(stream).await;
            });
        }
    });
    (port, alpn, task)
}

impl TlsServer {
    /// Serve `service` (a clone per connection) with `cert` over TLS.
    pub async fn start<S, F>(cert: &Issued, opts: TlsOptions<'_>, service: S) -> TlsServer
    where
        S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
    {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match opts.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.cert.der().clone()).unwrap();
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(v)
            }
        };
        let mut config = builder
            .with_single_cert(vec![cert.der.clone()], cert.key())
            .unwrap();
        config.alpn_protocols = opts.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes: Arc<Mutex<Vec<Handshake>>> = Arc::default();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let (hs, fs) = (handshakes.clone(), failures.clone());
        let http2_only = opts.http2_only;
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, hs, fs, service) =
                    (acceptor.clone(), hs.clone(), fs.clone(), service.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            fs.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    let conn = tls.get_ref().1;
                    hs.lock().unwrap().push(Handshake {
                        sni: conn.server_name().map(str::to_string),
                        alpn: conn
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                        client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                    });
                    let io = TokioIo::new(tls);
                    let svc = service_fn(service);
                    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if http2_only {
                        b = b.http2_only();
                    }
                    let _ = b.serve_connection(io, svc).await;
                });
            }
        });
        TlsServer {
            addr,
            handshakes,
            failures,
            task,
        }
    }

    /// The recording upstream of [`crate::Upstream`] over TLS; `seen` gets
    /// each request, `versions` its HTTP version.
    pub async fn recording(cert: &Issued, opts: TlsOptions<'_>) -> (TlsServer, Recorder) {
        let rec = Recorder::default();
        let r = rec.clone();
        let server = TlsServer::start(cert, opts, move |req: Request<Incoming>| {
            let r = r.clone();
            async move {
                r.versions.lock().unwrap().push(req.version());
                crate::answer(req, r.seen.clone()).await
            }
        })
        .await;
        (server, rec)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a recording [`TlsServer`] received.
#[derive(Clone, Default)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    pub versions: Arc<Mutex<Vec<Version>>>,
}

impl Recorder {
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    pub fn versions(&self) -> Vec<Version> {
        self.versions.lock().unwrap().clone()
    }
}
