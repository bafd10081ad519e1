//! OpenTelemetry traces (`[otel]`): spans reach a real OTLP/HTTP receiver
//! with the incoming trace id and the right parents, the upstream gets the
//! upstream span's `traceparent`, and a dead or silent collector costs the
//! requests nothing.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_tests::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// A test OTLP/HTTP receiver on loopback: decodes each
/// `ExportTraceServiceRequest` (protobuf) and keeps its spans and the
/// resources' `service.name`.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let services: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s2, v2) = (spans.clone(), services.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (spans, services) = (s2.clone(), v2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| export(req, spans.clone(), services.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            spans,
            services,
            task,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn export(
    req: Request<Incoming>,
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let ok = req.uri().path() == "/v1/traces"
        && req.headers().get("content-type").map(|v| v.as_bytes())
            == Some(b"application/x-protobuf".as_slice())
        && req.headers().get("x-test-token").map(|v| v.as_bytes()) == Some(b"t0k".as_slice());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut resp = Response::new(Full::new(Bytes::new()));
    match ExportTraceServiceRequest::decode(body) {
        Ok(export) if ok => {
            for rs in export.resource_spans {
                for kv in rs.resource.iter().flat_map(|r| &r.attributes) {
                    if kv.key == "service.name" {
                        services.lock().unwrap().push(string_of(kv.value.as_ref()));
                    }
                }
                for ss in rs.scope_spans {
                    spans.lock().unwrap().extend(ss.spans);
                }
            }
            resp.headers_mut()
                .insert("content-type", "application/x-protobuf".parse().unwrap());
        }
        _ => *resp.status_mut() = http::StatusCode::BAD_REQUEST,
    }
    Ok(resp)
}

fn string_of(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| string_of(kv.value.as_ref()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A chain of one step with both phases (`fixture-tag`), to `up`.
fn manifest(up: &str) -> String {
    simple_manifest(
        up,
        "[[api.chain]]\nname = \"tag-a\"\nplugin = \"fixture-tag\"\nconfig = { name = \"a\" }\n",
    )
}

fn otel(endpoint: &str, extra: &str) -> String {
    format!(
        "[otel]\nendpoint = \"{endpoint}\"\nservice-name = \"gw-under-test\"\ninterval = \"50ms\"\n{extra}\n[otel.headers]\nx-test-token = \"t0k\"\n"
    )
}

/// The spans of trace `trace` once the server span and its children
/// (two step phases, the upstream call) have all arrived.
async fn spans_of(rx: &Receiver, trace: &str) -> Vec<Span> {
    let arrived = eventually(Duration::from_secs(20), || async {
        rx.spans()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .count()
            >= 4
    })
    .await;
    let spans: Vec<Span> = rx
        .spans()
        .into_iter()
        .filter(|s| hex(&s.trace_id) == trace)
        .collect();
    assert!(arrived, "spans of {trace} did not all arrive: {spans:#?}");
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_the_incoming_traceparent_and_go_upstream() {
    let up = Upstream::start().await;
    let rx = Receiver::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .gateway_toml(&otel(&format!("http://{}/v1/traces", rx.addr), ""))
        .start()
        .await;
    let r = client()
        .get(gw.url("/pets/7"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .header("tracestate", "congo=t61rcWkgMzE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();

    let spans = spans_of(&rx, TRACE).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a server span");
    assert_eq!(hex(&server.parent_span_id), PARENT);
    assert_eq!(server.name, "GET /**");
    assert_eq!(attr(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(server, "url.path").as_deref(), Some("/pets/7"));
    assert_eq!(attr(server, "http.route").as_deref(), Some("/**"));
    assert_eq!(attr(server, "tollgate.api").as_deref(), Some("test"));
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(server, "tollgate.request_id"), Some(request_id));
    assert_eq!(server.trace_state, "congo=t61rcWkgMzE");

    // Every other span is a child of the server span.
    for s in spans.iter().filter(|s| s.span_id != server.span_id) {
        assert_eq!(
            s.parent_span_id, server.span_id,
            "{} is not a child",
            s.name
        );
    }
    for phase in ["request", "response"] {
        let step = spans
            .iter()
            .find(|s| s.name == format!("step tag-a {phase}"))
            .unwrap_or_else(|| panic!("no span for the {phase} phase: {spans:#?}"));
        assert_eq!(attr(step, "tollgate.outcome").as_deref(), Some("continue"));
        assert_eq!(attr(step, "tollgate.phase").as_deref(), Some(phase));
    }
    let upstream = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("an upstream span");
    assert_eq!(
        attr(upstream, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(upstream, "server.port"),
        Some(up.addr.port().to_string())
    );

    // The upstream got the upstream span's context, with the tracestate.
    let seen = up.last();
    assert_eq!(
        seen.header_all("traceparent"),
        vec![format!("00-{TRACE}-{}-01", hex(&upstream.span_id))]
    );
    assert_eq!(seen.header("tracestate"), Some("congo=t61rcWkgMzE"));
    assert!(rx
        .services
        .lock()
        .unwrap()
        .iter()
        .all(|s| s == "gw-under-test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_starts_a_new_trace() {
    let up = Upstream::start().await;
    let rx = Receiver::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .gateway_toml(&otel(&format!("http://{}/v1/traces", rx.addr), ""))
        .start()
        .await;
    // Upper-case hex: invalid, and its tracestate goes with it.
    let bad = format!("00-{}-{PARENT}-01", TRACE.to_uppercase());
    let r = client()
        .get(gw.url("/x"))
        .header("traceparent", &bad)
        .header("tracestate", "congo=t61rcWkgMzE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = up.last();
    let tp = sent.header("traceparent").expect("a traceparent upstream");
    assert_ne!(tp, bad);
    assert!(sent.header("tracestate").is_none());
    let trace = tp.split('-').nth(1).unwrap().to_string();
    assert_ne!(trace, TRACE);
    let spans = spans_of(&rx, &trace).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert!(server.parent_span_id.is_empty(), "a root span");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_otel_the_traceparent_passes_through_untouched() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&manifest(&up.url())).await;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let r = client()
        .get(gw.url("/x"))
        .header("traceparent", &tp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header_all("traceparent"), vec![tp.as_str()]);
}

/// Send `n` requests, 16 at a time; every one must succeed.
async fn all_succeed(gw: &TestGateway, n: usize) {
    let c = client();
    for chunk in 0..n / 16 {
        let calls = (0..16).map(|i| {
            let c = c.clone();
            let url = gw.url(&format!("/c/{chunk}/{i}"));
            async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
        });
        for r in futures_util::future::join_all(calls).await {
            assert_eq!(r.expect("the request failed"), 200);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_requests_nothing() {
    let up = Upstream::start().await;
    // Nothing listens on this port.
    let closed = free_port();
    let small = "timeout = \"200ms\"\nqueue-size = 16\nbatch-size = 8\n";
    let gw = TestGateway::builder(&manifest(&up.url()))
        .gateway_toml(&otel(
            &format!("http://127.0.0.1:{closed}/v1/traces"),
            small,
        ))
        .start()
        .await;
    all_succeed(&gw, 320).await;
    assert_eq!(up.requests().len(), 320);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_requests_nothing() {
    let up = Upstream::start().await;
    // Accepts connections, reads nothing, answers nothing.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let small = "timeout = \"1s\"\nqueue-size = 16\nbatch-size = 8\n";
    let gw = TestGateway::builder(&manifest(&up.url()))
        .gateway_toml(&otel(&format!("http://{addr}/v1/traces"), small))
        .start()
        .await;
    all_succeed(&gw, 320).await;
    assert_eq!(up.requests().len(), 320);
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_answers_and_the_consumer_are_on_the_spans() {
    let up = Upstream::start().await;
    let rx = Receiver::start().await;
    let chain = "[[api.chain]]\nplugin = \"fixture-auth\"\nconfig = { header = \"x-user\" }\n";
    let gw = TestGateway::builder(&simple_manifest(&up.url(), chain))
        .gateway_toml(&otel(&format!("http://{}/v1/traces", rx.addr), ""))
        .start()
        .await;
    let c = client();
    let refused = "0af7651916cd43dd8448eb211c80319c";
    let r = c
        .get(gw.url("/x"))
        .header("traceparent", format!("00-{refused}-{PARENT}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(gw.url("/x"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .header("x-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Refused: the server span and the step's request phase, which
    // answered; no upstream call.
    let answered = eventually(Duration::from_secs(20), || async {
        rx.spans()
            .iter()
            .filter(|s| hex(&s.trace_id) == refused)
            .count()
            >= 2
    })
    .await;
    assert!(answered, "{:#?}", rx.spans());
    let spans: Vec<Span> = rx
        .spans()
        .into_iter()
        .filter(|s| hex(&s.trace_id) == refused)
        .collect();
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("401")
    );
    assert_eq!(attr(server, "tollgate.consumer"), None);
    let step = spans
        .iter()
        .find(|s| s.name == "step fixture-auth request")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(step.parent_span_id, server.span_id);
    assert_eq!(attr(step, "tollgate.outcome").as_deref(), Some("respond"));
    assert_eq!(
        attr(step, "http.response.status_code").as_deref(),
        Some("401")
    );
    assert!(spans.iter().all(|s| s.kind != SpanKind::Client as i32));

    // Let through: the consumer the step named is on the server span.
    let eventually_server = eventually(Duration::from_secs(20), || async {
        rx.spans()
            .iter()
            .any(|s| hex(&s.trace_id) == TRACE && s.kind == SpanKind::Server as i32)
    })
    .await;
    assert!(eventually_server);
    let spans = rx.spans();
    let server = spans
        .iter()
        .find(|s| hex(&s.trace_id) == TRACE && s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(attr(server, "tollgate.consumer").as_deref(), Some("alice"));
}
