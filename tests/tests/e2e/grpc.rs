//! gRPC APIs through the gateway: a real gRPC server (tonic's server
//! machinery over hyper, h2c) and a real gRPC client (tonic's channel,
//! h2c to the gateway), with messages derived by prost and the service
//! written out (no code generation). Unary, server-streaming,
//! client-streaming and bidirectional calls through key-auth and
//! rate-limit; the gateway's refusals as gRPC statuses; trailers intact;
//! `grpc-timeout` enforced by the gateway.

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::TestGateway;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

const KEY: &str = "grpc-key-5d7e02b1";

#[derive(Clone, PartialEq, prost::Message)]
struct Note {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    n: u32,
}

fn note(text: &str, n: u32) -> Note {
    Note {
        text: text.to_string(),
        n,
    }
}

type Notes = Pin<Box<dyn Stream<Item = Result<Note, Status>> + Send>>;

/// The service `echo.Echo`: `Say` (unary: "you said X"; `fail` is
/// `INVALID_ARGUMENT`; `sleep` waits `n` ms), `Count` (server streaming:
/// `n` notes, then `FAILED_PRECONDITION` when the text is `then-fail`),
/// `Sum` (client streaming: the sum of the `n`s) and `Chat` (bidirectional:
/// each note back, upper-cased).
async fn dispatch(req: http::Request<hyper::body::Incoming>) -> http::Response<tonic::body::Body> {
    let codec = || ProstCodec::<Note, Note>::default();
    let mut grpc = tonic::server::Grpc::new(codec());
    match req.uri().path() {
        "/echo.Echo/Say" => {
            let svc = tower::service_fn(|r: Request<Note>| async move {
                let deadline = r
                    .metadata()
                    .get("grpc-timeout")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string();
                let n = r.into_inner();
                match n.text.as_str() {
                    "fail" => Err(Status::invalid_argument("no such thing")),
                    "sleep" => {
                        tokio::time::sleep(Duration::from_millis(u64::from(n.n))).await;
                        Ok(Response::new(note(&format!("slept {deadline}"), n.n)))
                    }
                    t => Ok(Response::new(note(&format!("you said {t}"), n.n))),
                }
            });
            grpc.unary(svc, req).await
        }
        "/echo.Echo/Count" => {
            let svc = tower::service_fn(|r: Request<Note>| async move {
                let n = r.into_inner();
                let fail = n.text == "then-fail";
                let items = (0..n.n).map(|i| Ok(note("count", i)));
                let tail = fail.then(|| Err(Status::failed_precondition("ran out")));
                let s: Notes = Box::pin(futures_util::stream::iter(items.chain(tail)).then(
                    |item| async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        item
                    },
                ));
                Ok::<_, Status>(Response::new(s))
            });
            grpc.server_streaming(svc, req).await
        }
        "/echo.Echo/Sum" => {
            let svc = tower::service_fn(|r: Request<Streaming<Note>>| async move {
                let mut s = r.into_inner();
                let (mut sum, mut count) = (0, 0);
                while let Some(n) = s.message().await? {
                    sum += n.n;
                    count += 1;
                }
                Ok::<_, Status>(Response::new(note(&format!("{count} notes"), sum)))
            });
            grpc.client_streaming(svc, req).await
        }
        "/echo.Echo/Chat" => {
            let svc = tower::service_fn(|r: Request<Streaming<Note>>| async move {
                let s = r.into_inner();
                let out: Notes = Box::pin(s.map(|n| n.map(|n| note(&n.text.to_uppercase(), n.n))));
                Ok::<_, Status>(Response::new(out))
            });
            grpc.streaming(svc, req).await
        }
        _ => Status::unimplemented("no such method").into_http(),
    }
}

/// The gRPC server on a loopback port (h2c).
async fn grpc_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_grpc(stream));
        }
    });
    format!("http://{addr}")
}

/// [`dispatch`] over one connection (plain or TLS), HTTP/2 only.
async fn serve_grpc<IO>(io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(|req| async move {
        Ok::<_, std::convert::Infallible>(dispatch(req).await)
    });
    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .http2_only()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await;
}

/// The API `echo` for the service's methods (prefix `/echo.Echo/`), its
/// upstream spoken to over h2c, behind key-auth and `steps`.
fn manifest(upstream: &str, steps: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "echo"
upstream = {{ targets = ["{upstream}"], protocol = "h2c", response-timeout = "5s" }}

[[api.route]]
prefix = "/echo.Echo/"
methods = ["POST"]

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]

{steps}

[[consumer]]
id = "eve"
keys = [{{ id = "k-eve", sha256 = "{digest}" }}]
"#,
        digest = key_digest_hex(KEY),
    )
}

/// A gRPC client to the gateway (h2c).
async fn client(gw: &TestGateway) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(gw.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

fn keyed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-api-key", KEY.parse().unwrap());
    r
}

fn path(method: &str) -> PathAndQuery {
    PathAndQuery::try_from(format!("/echo.Echo/{method}")).unwrap()
}

async fn say(
    c: &mut tonic::client::Grpc<tonic::transport::Channel>,
    r: Request<Note>,
) -> Result<Note, Status> {
    c.ready().await.unwrap();
    c.unary(r, path("Say"), ProstCodec::<Note, Note>::default())
        .await
        .map(Response::into_inner)
}

/// All four kinds of calls pass through key-auth, streamed both ways; the
/// upstream's statuses (in trailers, after messages too) arrive intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_pass_with_their_trailers() {
    let up = grpc_upstream().await;
    let gw = TestGateway::start(&manifest(&up, "")).await;
    let mut c = client(&gw).await;
    let codec = || ProstCodec::<Note, Note>::default();

    assert_eq!(
        say(&mut c, keyed(note("hi", 7))).await.unwrap(),
        note("you said hi", 7)
    );
    // An error the upstream answers: its code and message as sent.
    let e = say(&mut c, keyed(note("fail", 0))).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "no such thing")
    );

    // Server streaming: every note, then the status in trailers.
    c.ready().await.unwrap();
    let mut s = c
        .server_streaming(keyed(note("", 5)), path("Count"), codec())
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(n) = s.message().await.unwrap() {
        got.push(n.n);
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);
    // ... and a status after messages (real trailers, not trailers-only).
    c.ready().await.unwrap();
    let mut s = c
        .server_streaming(keyed(note("then-fail", 2)), path("Count"), codec())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.message().await.unwrap().unwrap().n, 0);
    assert_eq!(s.message().await.unwrap().unwrap().n, 1);
    let e = s.message().await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "ran out")
    );

    // Client streaming.
    c.ready().await.unwrap();
    let notes = futures_util::stream::iter((1..=10).map(|i| note("x", i)));
    let sum = c
        .client_streaming(keyed(notes), path("Sum"), codec())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sum, note("10 notes", 55));

    // Bidirectional, interleaved: each answer arrives before the next note
    // is sent (nothing waits for the end of the request stream).
    let (tx, rx) = tokio::sync::mpsc::channel::<Note>(4);
    let outbound = tokio_stream_from(rx);
    c.ready().await.unwrap();
    let mut answers = c
        .streaming(keyed(outbound), path("Chat"), codec())
        .await
        .unwrap()
        .into_inner();
    for (i, word) in ["one", "two", "three"].into_iter().enumerate() {
        tx.send(note(word, i as u32)).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .expect("the answer before the request stream ends")
            .unwrap()
            .unwrap();
        assert_eq!(back, note(&word.to_uppercase(), i as u32));
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
}

/// A receiver as a stream of notes.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Note>,
) -> impl Stream<Item = Note> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The gateway's own answers are gRPC statuses: no key `UNAUTHENTICATED`,
/// over the rate limit `RESOURCE_EXHAUSTED`, an upstream that is down
/// `UNAVAILABLE`, an unknown method path `UNIMPLEMENTED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refusals_are_grpc_statuses() {
    let up = grpc_upstream().await;
    let limit = r#"[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = { limits = [{ per = "minute", requests = 2, by = "consumer" }] }"#;
    let gw = TestGateway::start(&manifest(&up, limit)).await;
    let mut c = client(&gw).await;
    let e = say(&mut c, Request::new(note("hi", 1))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(!e.message().is_empty(), "{e:?}");
    for _ in 0..2 {
        say(&mut c, keyed(note("hi", 1))).await.unwrap();
    }
    let e = say(&mut c, keyed(note("hi", 1))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("too many requests"), "{e:?}");
    assert!(e.metadata().get("retry-after").is_some(), "{e:?}");
    // No route for another service.
    c.ready().await.unwrap();
    let e = c
        .unary(
            keyed(note("", 0)),
            PathAndQuery::from_static("/other.Service/Call"),
            ProstCodec::<Note, Note>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");

    // An upstream that is not there.
    let port = tollgate_tests::free_port();
    let gw = TestGateway::start(&manifest(&format!("http://127.0.0.1:{port}"), "")).await;
    let mut c = client(&gw).await;
    let e = say(&mut c, keyed(note("hi", 1))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

/// `grpc-timeout` bounds the wait for the upstream: a call that would take
/// 3 s with a 300 ms deadline is answered `DEADLINE_EXCEEDED` by the
/// gateway at about 300 ms (a raw HTTP/2 client, which enforces no
/// deadline itself), and the upstream gets what is left of a deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_is_enforced_by_the_gateway() {
    use http_body_util::BodyExt;
    let up = grpc_upstream().await;
    let gw = TestGateway::start(&manifest(&up, "")).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let call = |timeout: &'static str, ms: u32| {
        let msg = prost::Message::encode_to_vec(&note("sleep", ms));
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(&msg);
        http::Request::post(gw.url("/echo.Echo/Say"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", timeout)
            .header("x-api-key", KEY)
            .body(http_body_util::Full::new(bytes::Bytes::from(framed)))
            .unwrap()
    };
    let started = Instant::now();
    let resp = h2.request(call("300m", 3000)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "4", "{:?}", resp.headers());
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    // Within the deadline the answer arrives, with its trailers.
    let resp = h2.request(call("5S", 10)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    let body = collected.to_bytes();
    let reply: Note = prost::Message::decode(&body[5..]).unwrap();
    // The upstream's deadline is what was left of the client's 5 s.
    let left: u64 = reply
        .text
        .strip_prefix("slept ")
        .and_then(|t| t.strip_suffix('m'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{reply:?}"));
    assert!((4000..5000).contains(&left), "{reply:?}");
    // A deadline that is not one is not passed on as one.
    let resp = h2.request(call("soon", 10)).await.unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    let body = collected.to_bytes();
    let reply: Note = prost::Message::decode(&body[5..]).unwrap();
    assert_eq!(reply.text, "slept none");
}

/// The demo upstream (`tollgate demo-upstream`, used by the demo and the
/// benchmark) answers any gRPC call with its own messages, through the
/// gateway over h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_upstream_echoes_grpc_calls() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(tollgate::demo::serve(
        "127.0.0.1:0".parse().unwrap(),
        move |a| {
            let _ = tx.send(a);
        },
    ));
    let up = format!("http://{}", rx.await.unwrap());
    let gw = TestGateway::start(&manifest(&up, "")).await;
    let mut c = client(&gw).await;
    assert_eq!(
        say(&mut c, keyed(note("echo me", 42))).await.unwrap(),
        note("echo me", 42)
    );
}

/// gRPC to an `https://` upstream: HTTP/2 by ALPN with no setting, the
/// certificate verified against the test CA, calls and trailers as over
/// h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_upstreams_is_h2_by_alpn() {
    use tollgate_tests::tls_upstream::{acceptor, serve_tls, TestCa};
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("tollgate test CA");
    let ca_file = ca.write(certs.path(), "ca.pem");
    let tls = acceptor(&ca.server(&["grpc.test"]), &["h2", "http/1.1"]);
    let (port, alpn, task) = serve_tls(tls, serve_grpc).await;
    let m = manifest(&format!("https://127.0.0.1:{port}"), "").replace(
        ", protocol = \"h2c\",",
        &format!(
            ", ca-file = {:?}, tls-server-name = \"grpc.test\",",
            ca_file.display().to_string()
        ),
    );
    let gw = TestGateway::start(&m).await;
    let mut c = client(&gw).await;
    assert_eq!(
        say(&mut c, keyed(note("tls", 3))).await.unwrap(),
        note("you said tls", 3)
    );
    let e = say(&mut c, keyed(note("fail", 0))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(alpn.lock().unwrap().first().map(String::as_str), Some("h2"));
    task.abort();
}
