//! Recording an API's calls for `tollgate policy replay`: the trace line
//! format ([`TraceLine`], one JSON object per line), the redaction of
//! credentials ([`Redaction`]) and the per-API [`Recorder`] with the one
//! writer thread per trace file behind it.
//!
//! Recording is opt-in per API (`[api.record]` in a manifest). The data
//! plane builds a [`TraceLine`] for a recorded call and hands it to
//! [`Recorder::submit`], which never blocks: the line goes through a
//! bounded channel to the file's writer thread, and a full channel drops
//! it (counted, with a warning). The writer redacts, serialises and appends;
//! once the file would grow past `max-bytes` it stops (one warning) and
//! drops what follows. Every API naming one file shares its writer, across
//! reloads too: a new generation finds the writer of the one before.

use crate::domain::time::Ts;
use crate::manifest::{resolve, RecordSpec};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// What a redacted header or query value reads as.
pub const REDACTED: &str = "[redacted]";
/// A redacted query value, percent-encoded (it decodes to [`REDACTED`]).
pub const REDACTED_QUERY: &str = "%5Bredacted%5D";
/// Headers always redacted, in requests and responses.
pub const ALWAYS_REDACTED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "apikey",
];
/// Query parameters always redacted.
pub const ALWAYS_REDACTED_QUERY: &[&str] = &["api_key", "apikey", "access_token"];
/// Largest `max-body`: a recorded request body is read up to it.
pub const MAX_RECORD_BODY: u64 = 16 << 20;
/// Lines waiting for a writer before new ones are dropped.
const QUEUE: usize = 1024;

/// One recorded call, as a line of a trace file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceLine {
    /// When the call arrived, RFC 3339 in UTC.
    pub time: String,
    pub api: String,
    pub route: String,
    pub request_id: String,
    /// The client's address as the gateway saw it.
    pub client: String,
    /// The route template's captures, in order.
    #[serde(default)]
    pub captures: Vec<(String, String)>,
    pub request: TraceRequest,
    /// The consumer the chain resolved for the call, if any.
    #[serde(default)]
    pub consumer: Option<TraceConsumer>,
    pub response: TraceResponse,
}

/// The request as the first step of the chain saw it (normalised path,
/// `Host` set, hop-by-hop fields removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    #[serde(default)]
    pub query: Option<String>,
    /// Name (lower case) and value pairs, in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub body: TraceBody,
}

/// The response as the client got it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub body: TraceBody,
}

/// A body: its text (UTF-8) or its bytes in base64, when it was at most
/// `max-body`; else only its length, with `truncated`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceBody {
    /// Length in bytes, when known.
    #[serde(default)]
    pub len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// The body is not in the line: longer than `max-body`, or not read.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// The body broke off before its end (the client or upstream went
    /// away): what is here is a prefix.
    #[serde(default, skip_serializing_if = "is_false")]
    pub incomplete: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TraceBody {
    /// `bytes`, whole, as text when it is UTF-8.
    pub fn whole(bytes: &[u8]) -> TraceBody {
        let (text, base64) = match std::str::from_utf8(bytes) {
            Ok(t) => (Some(t.to_string()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
        TraceBody {
            len: Some(bytes.len() as u64),
            text,
            base64,
            ..TraceBody::default()
        }
    }

    /// A body not recorded, of length `len` when known.
    pub fn truncated(len: Option<u64>) -> TraceBody {
        TraceBody {
            len,
            truncated: true,
            ..TraceBody::default()
        }
    }

    /// The recorded bytes (`None` when the body is not in the line).
    pub fn bytes(&self) -> Result<Option<Vec<u8>>, String> {
        match (&self.text, &self.base64) {
            (Some(t), None) => Ok(Some(t.as_bytes().to_vec())),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(Some)
                .map_err(|e| format!("body: invalid base64: {e}")),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err("body: both `text` and `base64`".into()),
        }
    }
}

/// Who the chain resolved the caller to (never a secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConsumer {
    pub id: String,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub product: Option<String>,
}

/// Which header and query values a recorder replaces with [`REDACTED`].
#[derive(Debug, Clone, PartialEq)]
pub struct Redaction {
    /// Lower-case header names.
    headers: Vec<String>,
    /// Query parameter names (exact, as written).
    query: Vec<String>,
}

impl Redaction {
    /// The default lists plus `headers` and `query`.
    pub fn new<'a>(
        headers: impl IntoIterator<Item = &'a str>,
        query: impl IntoIterator<Item = &'a str>,
    ) -> Redaction {
        let mut h: Vec<String> = ALWAYS_REDACTED_HEADERS
            .iter()
            .copied()
            .chain(headers)
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        h.sort();
        h.dedup();
        let mut q: Vec<String> = ALWAYS_REDACTED_QUERY
            .iter()
            .copied()
            .chain(query)
            .map(|n| n.trim().to_string())
            .collect();
        q.sort();
        q.dedup();
        Redaction {
            headers: h,
            query: q,
        }
    }

    /// Replace the value of every listed header (the header stays).
    pub fn headers(&self, headers: &mut [(String, String)]) {
        for (name, value) in headers {
            if self.headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                *value = REDACTED.to_string();
            }
        }
    }

    /// The query with the value of every listed parameter replaced (the
    /// parameter stays, its value reads `%5Bredacted%5D`).
    pub fn query(&self, query: &str) -> String {
        query
            .split('&')
            .map(|pair| {
                let name = pair.split('=').next().unwrap_or("");
                let decoded = percent_decode(name);
                if self.query.contains(&decoded) {
                    format!("{name}={REDACTED_QUERY}")
                } else {
                    pair.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Redact a whole line: request and response headers, the query.
    pub fn line(&self, line: &mut TraceLine) {
        self.headers(&mut line.request.headers);
        self.headers(&mut line.response.headers);
        if let Some(q) = &line.request.query {
            line.request.query = Some(self.query(q));
        }
    }
}

/// `%XX` escapes and `+` decoded (lossy), for comparing parameter names.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An API's recording: its settings, and the writer of its file.
#[derive(Debug)]
pub struct Recorder {
    api: Arc<str>,
    /// The trace file, resolved.
    pub file: PathBuf,
    max_body: usize,
    sample: f64,
    redaction: Arc<Redaction>,
    writer: Arc<Writer>,
}

impl Recorder {
    /// The recorder of API `api` from its `[api.record]` in the manifest in
    /// `folder`; `headers` and `query` are further credential names to
    /// redact (those the API's `key-auth` steps read). The file is opened
    /// at the first recorded call, not here (`tollgate check` writes
    /// nothing), but its folder must exist.
    pub fn new<'a>(
        api: &str,
        spec: &'a RecordSpec,
        folder: &Path,
        headers: impl IntoIterator<Item = &'a str>,
        query: impl IntoIterator<Item = &'a str>,
    ) -> Result<Recorder, String> {
        if !(0.0..=1.0).contains(&spec.sample) {
            return Err(format!(
                "sample = {} must be between 0.0 and 1.0",
                spec.sample
            ));
        }
        if spec.max_body.0 > MAX_RECORD_BODY {
            return Err(format!(
                "max-body = {} bytes is more than 16MiB",
                spec.max_body.0
            ));
        }
        if spec.max_bytes.0 < 1024 {
            return Err(format!(
                "max-bytes = {} bytes must be at least 1KiB",
                spec.max_bytes.0
            ));
        }
        let file = resolve(folder, &spec.file);
        let file = std::path::absolute(&file).unwrap_or(file);
        if file.file_name().is_none() {
            return Err(format!("file `{}` names no file", spec.file.display()));
        }
        match file.parent() {
            Some(dir) if dir.is_dir() => {}
            Some(dir) => {
                return Err(format!(
                    "file `{}`: folder {} does not exist",
                    spec.file.display(),
                    dir.display()
                ))
            }
            None => return Err(format!("file `{}` names no file", spec.file.display())),
        }
        let mut h: Vec<&str> = headers.into_iter().collect();
        h.extend(spec.redact_headers.iter().map(String::as_str));
        let mut q: Vec<&str> = query.into_iter().collect();
        q.extend(spec.redact_query.iter().map(String::as_str));
        let redaction = Redaction::new(h, q);
        Ok(Recorder {
            api: api.into(),
            writer: writer_for(&file, spec.max_bytes.0),
            file,
            max_body: spec.max_body.0 as usize,
            sample: spec.sample,
            redaction: Arc::new(redaction),
        })
    }

    /// Longest body recorded (and, for a request, read to record it).
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// The API recorded.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// Whether the call with this (random, hexadecimal) request id is in
    /// the sample.
    pub fn sampled(&self, request_id: &str) -> bool {
        if self.sample >= 1.0 {
            return true;
        }
        let Some(n) = request_id
            .get(..8)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
        else {
            return self.sample > 0.0;
        };
        (n as f64) < self.sample * 4_294_967_296.0
    }

    /// Queue `line` for the file; never blocks: a full queue drops it.
    pub fn submit(&self, line: TraceLine) {
        self.writer.send(Msg {
            line: Box::new(line),
            redaction: self.redaction.clone(),
        });
    }

    /// The time now, as a line's `time`.
    pub fn now() -> String {
        Ts::now().rfc3339()
    }
}

/// A line on its way to the writer, with how to redact it.
struct Msg {
    line: Box<TraceLine>,
    redaction: Arc<Redaction>,
}

impl Msg {
    /// The line as written: redacted, serialised, with its newline.
    fn render(self) -> Vec<u8> {
        let mut line = *self.line;
        self.redaction.line(&mut line);
        render(&line)
    }
}

/// `line` as the file holds it: one JSON object and a newline.
pub fn render(line: &TraceLine) -> Vec<u8> {
    let mut out = serde_json::to_vec(line).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The one writer of a trace file: a thread started at the first line.
#[derive(Debug)]
struct Writer {
    shared: Arc<Shared>,
    tx: OnceLock<SyncSender<Msg>>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    /// The file's bound (the last load naming the file sets it).
    max_bytes: AtomicU64,
    /// Lines dropped because the queue was full.
    dropped: AtomicU64,
    /// Lines queued so far, and lines the writer is done with (written,
    /// or skipped past `max-bytes`) and flushed: [`flush_all`] waits for
    /// the second to reach the first.
    queued: AtomicU64,
    done: AtomicU64,
}

impl Writer {
    fn send(&self, msg: Msg) {
        let tx = self.tx.get_or_init(|| spawn(self.shared.clone()));
        match tx.try_send(msg) {
            Ok(()) => {
                self.shared.queued.fetch_add(1, Ordering::Release);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                crate::observe::metrics::global().dropped("record", 1);
                if n.is_power_of_two() {
                    tracing::warn!(
                        file = %self.shared.path.display(),
                        dropped = n,
                        "record: the trace writer is behind; {n} lines dropped so far"
                    );
                }
            }
        }
    }
}

/// The writers alive, by file: a load finds the writer of a file the
/// generation before it records to.
static WRITERS: Mutex<Vec<(PathBuf, Weak<Writer>)>> = Mutex::new(Vec::new());

fn writer_for(path: &Path, max_bytes: u64) -> Arc<Writer> {
    let mut all = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(_, w)| w.strong_count() > 0);
    if let Some(w) = all
        .iter()
        .filter(|(p, _)| p == path)
        .find_map(|(_, w)| w.upgrade())
    {
        w.shared.max_bytes.store(max_bytes, Ordering::Relaxed);
        return w;
    }
    let w = Arc::new(Writer {
        shared: Arc::new(Shared {
            path: path.to_path_buf(),
            max_bytes: AtomicU64::new(max_bytes),
            dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }),
        tx: OnceLock::new(),
    });
    all.push((path.to_path_buf(), Arc::downgrade(&w)));
    w
}

/// Wait until every line queued so far is in its trace file (at shutdown),
/// at most `limit`; whether they all are.
pub fn flush_all(limit: std::time::Duration) -> bool {
    let shared: Vec<Arc<Shared>> = {
        let all = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .filter_map(|(_, w)| w.upgrade())
            .filter(|w| w.tx.get().is_some())
            .map(|w| w.shared.clone())
            .collect()
    };
    let until = std::time::Instant::now() + limit;
    shared.iter().all(|s| {
        let queued = s.queued.load(Ordering::Acquire);
        while s.done.load(Ordering::Acquire) < queued {
            if std::time::Instant::now() >= until {
                tracing::warn!(file = %s.path.display(), "record: lines still queued at shutdown are lost");
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    })
}

/// Start the writer thread of `shared.path`; it ends when the last
/// recorder of the file is gone, after writing what waits.
fn spawn(shared: Arc<Shared>) -> SyncSender<Msg> {
    let (tx, rx) = sync_channel(QUEUE);
    let name = "tollgate-record".to_string();
    if let Err(e) = std::thread::Builder::new()
        .name(name)
        .spawn(move || write_lines(&shared, rx))
    {
        tracing::warn!("record: cannot start the trace writer: {e}; nothing is recorded");
    }
    tx
}

/// The writer thread: append each line while the file stays within
/// `max-bytes`, flushing whenever the queue is empty.
fn write_lines(shared: &Shared, rx: Receiver<Msg>) {
    let path = &shared.path;
    let mut out = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => Some(BufWriter::new(f)),
        Err(e) => {
            tracing::warn!(file = %path.display(), "record: cannot open the trace file: {e}; nothing is recorded");
            None
        }
    };
    let mut size = out
        .as_ref()
        .and_then(|f| f.get_ref().metadata().ok())
        .map_or(0, |m| m.len());
    // The bound recording stopped at (it resumes when a reload changes it).
    let mut stopped_at: Option<u64> = None;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(msg) = next.take() {
            handled += 1;
            if let Some(f) = out.as_mut() {
                let max = shared.max_bytes.load(Ordering::Relaxed);
                if stopped_at != Some(max) {
                    let bytes = msg.render();
                    if size + bytes.len() as u64 > max {
                        stopped_at = Some(max);
                        tracing::warn!(
                            file = %path.display(),
                            max_bytes = max,
                            "record: the trace file reached max-bytes; recording stopped"
                        );
                    } else if let Err(e) = f.write_all(&bytes) {
                        tracing::warn!(file = %path.display(), "record: writing the trace file: {e}; recording stopped");
                        out = None;
                    } else {
                        size += bytes.len() as u64;
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Some(f) = out.as_mut() {
            if let Err(e) = f.flush() {
                tracing::warn!(file = %path.display(), "record: writing the trace file: {e}; recording stopped");
                out = None;
            }
        }
        shared.done.fetch_add(handled, Ordering::Release);
    }
    if let Some(f) = out.as_mut() {
        let _ = f.flush();
    }
}

/// The names of the header and query parameter a `key-auth` step with
/// this configuration reads its key from (`header`, default `x-api-key`,
/// and `query`).
pub fn key_auth_names(config: Option<&toml::Table>) -> (String, Option<String>) {
    let get = |k: &str| {
        config
            .and_then(|c| c.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    (
        get("header").unwrap_or_else(|| "x-api-key".to_string()),
        get("query"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> TraceLine {
        TraceLine {
            time: "2026-12-04T22:30:09.123Z".into(),
            api: "pets".into(),
            route: "/pets/{id}".into(),
            request_id: "0123abcd".into(),
            client: "127.0.0.1:4000".into(),
            captures: vec![("id".into(), "7".into())],
            request: TraceRequest {
                method: "POST".into(),
                scheme: "http".into(),
                authority: "api.example.com".into(),
                path: "/pets/7".into(),
                query: Some("a=1&api_key=s3cret&token=t&b=%20".into()),
                headers: vec![
                    ("authorization".into(), "Bearer abc".into()),
                    ("x-api-key".into(), "k".into()),
                    ("x-tenant-key".into(), "tk".into()),
                    ("accept".into(), "*/*".into()),
                ],
                body: TraceBody::whole(b"{\"name\":\"rex\"}"),
            },
            consumer: Some(TraceConsumer {
                id: "alice".into(),
                app: Some("shop".into()),
                key_id: Some("k1".into()),
                plan: None,
                product: None,
            }),
            response: TraceResponse {
                status: 201,
                headers: vec![
                    ("Set-Cookie".into(), "sid=1".into()),
                    ("content-type".into(), "image/png".into()),
                ],
                body: TraceBody::whole(&[0x89, b'P', b'N', b'G', 0xff]),
            },
        }
    }

    #[test]
    fn credentials_are_redacted_and_stay_present() {
        let r = Redaction::new(["X-Tenant-Key"], ["token"]);
        let mut l = line();
        r.line(&mut l);
        let h = &l.request.headers;
        assert_eq!(h[0], ("authorization".into(), REDACTED.into()));
        assert_eq!(h[1], ("x-api-key".into(), REDACTED.into()));
        assert_eq!(h[2], ("x-tenant-key".into(), REDACTED.into()));
        assert_eq!(h[3], ("accept".into(), "*/*".into()));
        assert_eq!(l.response.headers[0].1, REDACTED);
        assert_eq!(l.response.headers[1].1, "image/png");
        assert_eq!(
            l.request.query.as_deref(),
            Some("a=1&api_key=%5Bredacted%5D&token=%5Bredacted%5D&b=%20")
        );
        // Without the extra names, only the defaults.
        let mut l = line();
        Redaction::new([], []).line(&mut l);
        assert_eq!(l.request.headers[2].1, "tk");
        assert_eq!(
            l.request.query.as_deref(),
            Some("a=1&api_key=%5Bredacted%5D&token=t&b=%20")
        );
        // An escaped name is still the parameter.
        assert_eq!(
            Redaction::new([], []).query("api%5Fkey=x&q"),
            "api%5Fkey=%5Bredacted%5D&q"
        );
    }

    #[test]
    fn a_line_is_one_json_object_that_reads_back() {
        let l = line();
        let bytes = render(&l);
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
        let text = std::str::from_utf8(&bytes).unwrap();
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["request"]["body"]["text"], "{\"name\":\"rex\"}");
        assert_eq!(v["request"]["body"]["len"], 14);
        assert_eq!(v["response"]["body"]["base64"], "iVBOR/8=");
        assert!(v["response"]["body"].get("truncated").is_none());
        assert_eq!(v["consumer"]["id"], "alice");
        assert_eq!(v["captures"][0][0], "id");
        let back: TraceLine = serde_json::from_str(text).unwrap();
        assert_eq!(back, l);
        assert_eq!(
            back.response.body.bytes().unwrap().unwrap(),
            vec![0x89, b'P', b'N', b'G', 0xff]
        );
        let t = TraceBody::truncated(Some(1 << 20));
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v, serde_json::json!({"len": 1048576, "truncated": true}));
        assert_eq!(t.bytes().unwrap(), None);
        // Unknown fields are refused.
        assert!(serde_json::from_str::<TraceLine>(&text.replace("\"api\"", "\"apu\"")).is_err());
    }

    #[test]
    fn sampling_follows_the_request_id() {
        let spec = |sample: f64| RecordSpec {
            file: "t.jsonl".into(),
            max_bytes: crate::manifest::Size(1 << 20),
            max_body: crate::manifest::Size(1024),
            sample,
            redact_headers: vec![],
            redact_query: vec![],
        };
        let dir = std::env::temp_dir();
        let half = Recorder::new("a", &spec(0.5), &dir, [], []).unwrap();
        assert!(half.sampled("00000000aaaa"));
        assert!(half.sampled("7fffffffaaaa"));
        assert!(!half.sampled("80000000aaaa"));
        let none = Recorder::new("a", &spec(0.0), &dir, [], []).unwrap();
        assert!(!none.sampled("00000000aaaa"));
        assert!(Recorder::new("a", &spec(1.5), &dir, [], [])
            .unwrap_err()
            .contains("between 0.0 and 1.0"));
        let mut s = spec(1.0);
        s.file = "no-such-folder-here/t.jsonl".into();
        assert!(Recorder::new("a", &s, &dir, [], [])
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn one_writer_per_file_and_max_bytes_stops_it() {
        let dir = std::env::temp_dir().join(format!("tollgate-record-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = RecordSpec {
            file: "t.jsonl".into(),
            max_bytes: crate::manifest::Size(1 << 20),
            max_body: crate::manifest::Size(1024),
            sample: 1.0,
            redact_headers: vec![],
            redact_query: vec![],
        };
        let a = Recorder::new("a", &spec, &dir, [], []).unwrap();
        let len = render(&line()).len() as u64;
        let mut small = spec.clone();
        small.max_bytes = crate::manifest::Size(len * 2 + len / 2);
        let b = Recorder::new("b", &small, &dir, [], []).unwrap();
        assert!(Arc::ptr_eq(&a.writer, &b.writer), "one writer per file");
        for _ in 0..5 {
            b.submit(line());
        }
        let path = dir.join("t.jsonl");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2 {
                assert!(text.contains(REDACTED));
                assert!(!text.contains("Bearer abc"));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "stopped at max-bytes");
        drop((a, b));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_auth_names_default_to_x_api_key() {
        assert_eq!(key_auth_names(None), ("x-api-key".into(), None));
        let t: toml::Table = toml::from_str("header = \"x-key\"\nquery = \"k\"").unwrap();
        assert_eq!(key_auth_names(Some(&t)), ("x-key".into(), Some("k".into())));
    }

    #[test]
    fn flush_all_waits_for_every_queued_line() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RecordSpec {
            file: "t.jsonl".into(),
            max_bytes: crate::manifest::Size(64 << 20),
            max_body: crate::manifest::Size(1024),
            sample: 1.0,
            redact_headers: vec![],
            redact_query: vec![],
        };
        let r = Recorder::new("a", &spec, dir.path(), [], []).unwrap();
        // Fewer than the queue holds, so none is dropped.
        for _ in 0..500 {
            r.submit(line());
        }
        assert!(flush_all(std::time::Duration::from_secs(10)));
        let text = std::fs::read_to_string(dir.path().join("t.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 500);
    }
}
