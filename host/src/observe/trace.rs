//! OpenTelemetry traces (`[otel]`): one server span per call, a child span
//! per policy step phase and one for the upstream call, exported to an
//! OTLP/HTTP (protobuf) collector.
//!
//! The pipeline asks the [`Tracer`] for a [`CallSpan`] when a call is
//! routed and holds it in its context; the span ends when the context is
//! dropped (the response handed to hyper). Without `[otel]` there is no
//! `Tracer` and the pipeline's only cost is an `Option` check.
//!
//! W3C trace context: the incoming `traceparent` and `tracestate` are read
//! by [`parse_traceparent`] and [`parse_tracestate`], strictly (a malformed,
//! oversized or all-zero value is ignored and the call starts a new trace);
//! the upstream span's context is sent upstream ([`ChildSpan::inject`]).
//!
//! Sampling is parent-based: a call with a valid incoming `traceparent`
//! follows its sampled flag; a new trace is sampled with `sample-ratio`.
//!
//! Export: the SDK's batch span processor, on its own thread, with a
//! bounded queue (`queue-size`): ending a span is a `try_send`, and a full
//! queue drops the span. The exporter sends with reqwest's blocking client
//! on that thread, within `timeout`, so a dead or slow collector delays
//! only the export thread, never a request, and needs no tokio runtime (the
//! gateway's workers are several single-threaded runtimes).
//!
//! Why the OpenTelemetry API directly rather than `tracing-opentelemetry`:
//! the spans here are few and explicit (call, step phase, upstream), they
//! cross `.await`s in a context the pipeline already carries, and their
//! parent is an incoming `traceparent`; a `tracing` layer would add a
//! subscriber hook to every `tracing` event in the process (the gateway
//! logs through `tracing`) and instrumented futures on the hot path even
//! with traces off.

use crate::domain::units::Dur;
use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The largest `traceparent` read; longer values (a future version's
/// extra fields, or garbage) are ignored.
pub const MAX_TRACEPARENT: usize = 256;
/// The largest `tracestate` kept (W3C: at least 512 must be propagated);
/// a longer one is dropped whole.
pub const MAX_TRACESTATE: usize = 512;
/// At most 32 list members in a `tracestate` (W3C).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// `[otel]` in the gateway file: OpenTelemetry traces, off without it.
///
/// ```toml
/// [otel]
/// endpoint = "http://127.0.0.1:4318/v1/traces"  # OTLP/HTTP protobuf
/// service-name = "tollgate"
/// sample-ratio = 0.1          # of new traces; an incoming sampled traceparent is honoured
/// timeout = "5s"              # one export request
/// queue-size = 2048           # spans waiting for export; more are dropped
/// batch-size = 512            # spans per export request
/// interval = "5s"             # longest wait before a batch is sent
/// [otel.headers]
/// authorization = "Bearer ..."
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OtelSpec {
    /// The collector's OTLP/HTTP traces URL, `http://` (the full path,
    /// usually ending in `/v1/traces`).
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// `service.name` of the spans' resource.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces recorded, 0 to 1. A call with a valid
    /// `traceparent` follows its sampled flag instead.
    #[serde(default = "default_ratio")]
    pub sample_ratio: f64,
    /// Extra fields on every export request (e.g. `authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The bound on one export request (retries included).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Ended spans waiting for export; when full, new spans are dropped.
    #[serde(default = "default_queue")]
    pub queue_size: usize,
    /// Spans per export request (at most `queue-size`).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// The longest a span waits before its batch is sent.
    #[serde(default = "default_interval")]
    pub interval: Dur,
}

fn default_endpoint() -> String {
    "http://127.0.0.1:4318/v1/traces".into()
}
fn default_service_name() -> String {
    "tollgate".into()
}
fn default_ratio() -> f64 {
    1.0
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_queue() -> usize {
    2048
}
fn default_batch() -> usize {
    512
}
fn default_interval() -> Dur {
    Dur(Duration::from_secs(5))
}

impl OtelSpec {
    /// What is wrong with the spec that parsing let through, each as
    /// `otel.FIELD ...`.
    pub fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        match self.endpoint.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => {}
            Ok(u) if u.scheme_str() == Some("https") => errs.push(format!(
                "otel.endpoint `{}`: https is not supported by this build's exporter; use http:// to a local collector (or sidecar) that forwards over TLS",
                self.endpoint
            )),
            _ => errs.push(format!(
                "otel.endpoint `{}` is not an http:// URL (e.g. http://127.0.0.1:4318/v1/traces)",
                self.endpoint
            )),
        }
        if self.service_name.trim().is_empty() {
            errs.push("otel.service-name must not be empty".into());
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            errs.push(format!(
                "otel.sample-ratio = {} must be between 0 and 1",
                self.sample_ratio
            ));
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || HeaderValue::from_str(value).is_err()
            {
                errs.push(format!(
                    "otel.headers: `{name}` is not a valid header field (name or value)"
                ));
            }
        }
        let ms = |d: Dur| d.0.as_millis();
        if !(1..=60_000).contains(&ms(self.timeout)) {
            errs.push(format!(
                "otel.timeout = {:?} must be between 1ms and 60s",
                self.timeout.0
            ));
        }
        if !(1..=3_600_000).contains(&ms(self.interval)) {
            errs.push(format!(
                "otel.interval = {:?} must be between 1ms and 1h",
                self.interval.0
            ));
        }
        if !(1..=1_000_000).contains(&self.queue_size) {
            errs.push(format!(
                "otel.queue-size = {} must be between 1 and 1000000",
                self.queue_size
            ));
        }
        if self.batch_size == 0 || self.batch_size > self.queue_size {
            errs.push(format!(
                "otel.batch-size = {} must be between 1 and queue-size ({})",
                self.batch_size, self.queue_size
            ));
        }
        errs
    }
}

/// The gateway's tracer: the SDK's provider (batch processor, exporter)
/// and the tracer the pipeline's spans come from.
pub struct Tracer {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// How long shutting down may wait for the last export.
    timeout: Duration,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").finish_non_exhaustive()
    }
}

impl Tracer {
    /// Build the exporter and start the batch processor's thread.
    pub fn start(spec: &OtelSpec) -> anyhow::Result<Tracer> {
        let headers = spec
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(spec.endpoint.clone())
            .with_timeout(spec.timeout.0)
            .with_headers(headers)
            .build()
            .map_err(|e| anyhow::anyhow!("[otel]: building the OTLP exporter: {e}"))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(spec.queue_size)
            .with_max_export_batch_size(spec.batch_size.min(spec.queue_size))
            .with_scheduled_delay(spec.interval.0)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(spec.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(spec.service_name.clone())
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("tollgate");
        Ok(Tracer {
            provider,
            tracer,
            timeout: spec.timeout.0,
        })
    }

    /// The server span of a routed call, child of the incoming
    /// `traceparent` when it is valid (with its `tracestate`), else the
    /// root of a new trace. `name` is e.g. `GET /pets/{id}`.
    pub fn call(&self, incoming: &HeaderMap, name: String, attrs: Vec<KeyValue>) -> CallSpan {
        let parent = match incoming_parent(incoming) {
            Some(sc) => Context::new().with_remote_span_context(sc),
            None => Context::new(),
        };
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        CallSpan {
            tracer: self.tracer.clone(),
            cx: parent.with_span(span),
        }
    }
}

impl Drop for Tracer {
    /// Export what is queued, waiting at most one export's timeout (and
    /// at most 5 s).
    fn drop(&mut self) {
        let wait = self.timeout.min(Duration::from_secs(5));
        let _ = self.provider.shutdown_with_timeout(wait);
    }
}

/// One call's server span; it ends when dropped.
pub struct CallSpan {
    tracer: SdkTracer,
    /// Holds the server span: the parent of the call's child spans.
    cx: Context,
}

impl CallSpan {
    /// Add an attribute to the server span.
    pub fn set(&self, kv: KeyValue) {
        self.cx.span().set_attribute(kv);
    }

    /// The status the client gets (a 5xx marks the span as an error).
    pub fn status(&self, status: u16) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(""));
        }
    }

    /// A child span of the call (a step phase, the upstream call).
    pub fn child(&self, name: String, kind: SpanKind, attrs: Vec<KeyValue>) -> ChildSpan {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &self.cx);
        ChildSpan { span }
    }

    /// The span of one step's `phase` (`request` or `response`).
    pub fn step(&self, step: &str, phase: &'static str) -> ChildSpan {
        self.child(
            format!("step {step} {phase}"),
            SpanKind::Internal,
            vec![
                KeyValue::new("tollgate.step", step.to_string()),
                KeyValue::new("tollgate.phase", phase),
            ],
        )
    }

    /// The trace id, as hex (logs, tests).
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }
}

/// A child span; it ends when [`ChildSpan::end`] is called or when dropped.
pub struct ChildSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl ChildSpan {
    pub fn set(&mut self, kv: KeyValue) {
        self.span.set_attribute(kv);
    }

    /// End with an outcome (`tollgate.outcome`): `continue`, `respond`
    /// (with the status it answered), `trap`, `deadline`, `error` (with
    /// what went wrong as the span's error status).
    pub fn end(mut self, outcome: &'static str, status: Option<u16>, error: Option<String>) {
        self.span
            .set_attribute(KeyValue::new("tollgate.outcome", outcome));
        if let Some(s) = status {
            self.span
                .set_attribute(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if let Some(e) = error {
            self.span.set_status(Status::error(e));
        }
        self.span.end();
    }

    /// Set `traceparent` (and `tracestate`, when not empty) to this span's
    /// context, replacing what the client sent.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let sc = self.span.span_context();
        headers.remove("tracestate");
        if !sc.is_valid() {
            headers.remove("traceparent");
            return;
        }
        let tp = format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8() & 1
        );
        if let Ok(v) = HeaderValue::from_str(&tp) {
            headers.insert("traceparent", v);
        }
        let ts = sc.trace_state().header();
        if !ts.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&ts) {
                headers.insert("tracestate", v);
            }
        }
    }
}

/// The remote parent the request names: its one valid `traceparent`, with
/// its `tracestate` when that is valid too.
fn incoming_parent(headers: &HeaderMap) -> Option<SpanContext> {
    let mut tps = headers.get_all("traceparent").iter();
    let tp = tps.next()?;
    if tps.next().is_some() {
        // Several `traceparent` fields: W3C says invalid.
        return None;
    }
    let (trace_id, span_id, flags) = parse_traceparent(tp.as_bytes())?;
    let state = parse_tracestate(headers.get_all("tracestate").iter().map(|v| v.as_bytes()));
    Some(SpanContext::new(trace_id, span_id, flags, true, state))
}

/// A W3C `traceparent`: `VERSION-TRACEID-PARENTID-FLAGS`, lower-case hex.
/// `None` for anything malformed: a wrong length, version `ff`, upper-case
/// or non-hex digits, an all-zero id, a value over [`MAX_TRACEPARENT`].
/// A version above `00` is read as `00` (its extra fields ignored), as the
/// specification asks.
pub fn parse_traceparent(v: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    const LEN: usize = 55;
    if v.len() < LEN || v.len() > MAX_TRACEPARENT {
        return None;
    }
    let hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    if !(hex(version) && hex(trace) && hex(parent) && hex(flags)) || version == b"ff" {
        return None;
    }
    // Version 00 is exactly 55 characters; a later one may add fields after
    // a dash.
    if version == b"00" && v.len() != LEN || v.len() > LEN && v[LEN] != b'-' {
        return None;
    }
    fn text(s: &[u8]) -> Option<&str> {
        std::str::from_utf8(s).ok()
    }
    let trace_id = TraceId::from_hex(text(trace)?).ok()?;
    let span_id = SpanId::from_hex(text(parent)?).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(text(flags)?, 16).ok()?;
    Some((trace_id, span_id, TraceFlags::new(flags & 1)))
}

/// A W3C `tracestate` from its fields (joined with `,`); empty when it is
/// malformed, longer than [`MAX_TRACESTATE`] or has more than 32 members.
pub fn parse_tracestate<'a>(fields: impl Iterator<Item = &'a [u8]>) -> TraceState {
    let mut joined = String::new();
    for f in fields {
        let Ok(s) = std::str::from_utf8(f) else {
            return TraceState::default();
        };
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(s);
        if joined.len() > MAX_TRACESTATE {
            return TraceState::default();
        }
    }
    let members = joined.split(',').filter(|m| !m.trim().is_empty()).count();
    if members > MAX_TRACESTATE_MEMBERS {
        return TraceState::default();
    }
    // OpenTelemetry's parser rejects lists with empty members; W3C allows
    // them (and optional white space), so drop those first.
    let cleaned: Vec<&str> = joined
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    cleaned.join(",").parse().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(s: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
        parse_traceparent(s.as_bytes())
    }

    #[test]
    fn a_valid_traceparent_is_read() {
        let (t, s, f) = parse(GOOD).unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
        assert!(f.is_sampled());
        let (_, _, f) = parse(&GOOD.replace("-01", "-00")).unwrap();
        assert!(!f.is_sampled());
        // Unknown flags are dropped, the sampled bit kept.
        let (_, _, f) = parse(&GOOD.replace("-01", "-ff")).unwrap();
        assert_eq!(f.to_u8(), 1);
    }

    #[test]
    fn a_later_version_is_read_as_00() {
        assert!(parse(&GOOD.replacen("00", "01", 1)).is_some());
        let longer = format!("{}-what-comes-next", GOOD.replacen("00", "cc", 1));
        assert!(parse(&longer).is_some());
        // ... but its extra fields must follow a dash.
        let glued = format!("{}x", GOOD.replacen("00", "cc", 1));
        assert!(parse(&glued).is_none());
    }

    #[test]
    fn hostile_traceparents_are_ignored() {
        let cases = [
            String::new(),
            "00".into(),
            // Version ff is forbidden; 00 has exactly 55 characters.
            GOOD.replacen("00", "ff", 1),
            format!("{GOOD}-extra"),
            format!("{GOOD}0"),
            GOOD[..54].to_string(),
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".into(),
            // Bad hex: upper case, non-hex, signs, white space.
            GOOD.to_uppercase(),
            GOOD.replace("4bf9", "4bg9"),
            GOOD.replace("4bf9", "+bf9"),
            GOOD.replace("00f0", " 0f0"),
            GOOD.replace("-01", "-0x"),
            // Wrong separators.
            GOOD.replace('-', "_"),
            GOOD.replacen("-", "", 1) + "0",
            // Oversized: a later version with a huge tail.
            format!("cc{}-{}", &GOOD[2..], "a".repeat(10_000)),
            // Not UTF-8 where the ids are.
            "00-4bf92f3577b34da6a3ce929d0e0e47\u{e9}-00f067aa0ba902b7-01".into(),
        ];
        for c in &cases {
            assert!(parse(c).is_none(), "accepted {c:?}");
        }
        assert!(parse_traceparent(&[0xff; 55]).is_none());
    }

    #[test]
    fn several_traceparents_are_ignored() {
        let mut h = HeaderMap::new();
        h.append("traceparent", HeaderValue::from_static(GOOD));
        assert!(incoming_parent(&h).is_some());
        h.append("traceparent", HeaderValue::from_static(GOOD));
        assert!(incoming_parent(&h).is_none());
    }

    #[test]
    fn tracestate_is_kept_when_valid_and_small() {
        let one = |s: &'static str| parse_tracestate(std::iter::once(s.as_bytes()));
        assert_eq!(
            one("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7").header(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        assert_eq!(
            parse_tracestate(["a=1".as_bytes(), b" b=2 ,".as_slice()].into_iter()).header(),
            "a=1,b=2"
        );
        assert_eq!(one("no equals sign").header(), "");
        assert_eq!(one("UPPER=1").header(), "");
        let huge = format!("a={}", "x".repeat(MAX_TRACESTATE));
        assert_eq!(
            parse_tracestate(std::iter::once(huge.as_bytes())).header(),
            ""
        );
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let many = many.join(",");
        assert_eq!(
            parse_tracestate(std::iter::once(many.as_bytes())).header(),
            ""
        );
        assert_eq!(
            parse_tracestate([b"a=1".as_slice(), &[0xff]].into_iter()).header(),
            ""
        );
    }

    fn spec(toml_text: &str) -> OtelSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn the_spec_has_defaults_and_refuses_nonsense() {
        let s = spec("");
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert_eq!(s.service_name, "tollgate");
        assert_eq!(s.sample_ratio, 1.0);
        assert!(toml::from_str::<OtelSpec>("endpint = 'x'").is_err());
        let bad = spec(
            r#"
            endpoint = "ftp://x"
            service-name = " "
            sample-ratio = 1.5
            timeout = "0s"
            interval = "2h"
            queue-size = 0
            batch-size = 10
            headers = { "bad name" = "v" }
            "#,
        );
        let errs = bad.problems().join("\n");
        for f in [
            "otel.endpoint",
            "otel.service-name",
            "otel.sample-ratio",
            "otel.timeout",
            "otel.interval",
            "otel.queue-size",
            "otel.batch-size",
            "otel.headers",
        ] {
            assert!(errs.contains(f), "{f} not in {errs}");
        }
        assert!(spec("endpoint = 'https://c:4318/v1/traces'").problems()[0].contains("https"));
        assert!(spec("sample-ratio = nan").problems()[0].contains("sample-ratio"));
    }

    #[test]
    fn child_spans_share_the_incoming_trace_and_inject_their_own_context() {
        let tracer = Tracer::start(&spec("endpoint = 'http://127.0.0.1:9/v1/traces'")).unwrap();
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(GOOD));
        h.insert(
            "tracestate",
            HeaderValue::from_static("rojo=00f067aa0ba902b7"),
        );
        let call = tracer.call(&h, "GET /x".into(), vec![]);
        assert_eq!(call.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let up = call.child("upstream".into(), SpanKind::Client, vec![]);
        let mut out = HeaderMap::new();
        out.insert("traceparent", HeaderValue::from_static("junk"));
        up.inject(&mut out);
        let tp = out["traceparent"].to_str().unwrap();
        let (t, s, f) = parse(tp).unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s, up.span.span_context().span_id());
        assert!(f.is_sampled());
        assert_eq!(out["tracestate"], "rojo=00f067aa0ba902b7");
        // A malformed traceparent starts a new trace.
        h.insert("traceparent", HeaderValue::from_static("00-zz"));
        let call = tracer.call(&h, "GET /x".into(), vec![]);
        assert_ne!(call.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
