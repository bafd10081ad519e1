//! Raw HTTP/1 on loopback, for hostile-client tests: a client that writes
//! exactly the bytes it is given, a strict recording upstream that logs every
//! byte it receives and every request it could parse as a whole, and small
//! HTTP/2 frame builders.
//!
//! The upstream is deliberately strict (RFC 9112 framing, no leniency): if
//! the gateway ever forwards something ambiguous, the upstream records it as
//! malformed instead of guessing, and the test sees it.

use crate::TestGateway;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One HTTP/1 message (request or response) parsed from raw bytes.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// The first line: `GET /a HTTP/1.1` or `HTTP/1.1 200 OK`.
    pub start: String,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    /// A request's target (`/a?b`).
    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }
    /// A response's status code (0 if unparseable).
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Parse one message from the front of `buf` with strict framing.
/// `Ok(None)`: incomplete, read more. `Err`: malformed.
/// `request` selects the framing rules (a response without length is
/// read to EOF by the caller, see [`read_until_close`]).
pub fn parse_message(buf: &[u8], request: bool) -> Result<Option<(Message, usize)>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("").to_string();
    let mut msg = Message {
        start,
        ..Default::default()
    };
    for line in lines {
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| format!("header line without colon: {line:?}"))?;
        if n.is_empty() || !n.bytes().all(is_tchar) {
            return Err(format!("invalid header name {n:?}"));
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("invalid header value {v:?}"));
        }
        msg.headers
            .push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut at = end + 4;
    let status = if request { 0 } else { msg.status() };
    let te: Vec<&str> = msg
        .headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v.as_str())
        .collect();
    let cl: Vec<&str> = msg
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    if !request && (status < 200 || status == 204 || status == 304) {
        return Ok(Some((msg, at)));
    }
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err("both content-length and transfer-encoding".into());
        }
        if te.len() != 1 || !te[0].eq_ignore_ascii_case("chunked") {
            return Err(format!("transfer-encoding {te:?} is not exactly `chunked`"));
        }
        // Chunked, strictly: hex size, CRLF, data, CRLF; trailers allowed.
        let mut body = Vec::new();
        loop {
            let Some(le) = find(&buf[at..], b"\r\n") else {
                return Ok(None);
            };
            let line = std::str::from_utf8(&buf[at..at + le])
                .map_err(|_| "chunk size line is not UTF-8".to_string())?;
            let size_text = line.split(';').next().unwrap_or("");
            if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("bad chunk size {line:?}"));
            }
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("chunk size overflow {line:?}"))?;
            at += le + 2;
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let Some(le) = find(&buf[at..], b"\r\n") else {
                        return Ok(None);
                    };
                    at += le + 2;
                    if le == 0 {
                        msg.body = body;
                        return Ok(Some((msg, at)));
                    }
                }
            }
            if buf.len() < at + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&buf[at..at + size]);
            if &buf[at + size..at + size + 2] != b"\r\n" {
                return Err("chunk data not followed by CRLF".into());
            }
            at += size + 2;
        }
    }
    let len = match cl.as_slice() {
        [] if request => 0,
        [] => return Err("response without length (read to close instead)".into()),
        [one] => {
            if one.is_empty() || !one.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("bad content-length {one:?}"));
            }
            one.parse::<usize>()
                .map_err(|_| format!("content-length overflow {one:?}"))?
        }
        _ => return Err(format!("several content-length fields {cl:?}")),
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    msg.body = buf[at..at + len].to_vec();
    at += len;
    Ok(Some((msg, at)))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Client

/// What a raw exchange got back.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Every complete response, in order.
    pub responses: Vec<Message>,
    /// The server closed the connection (EOF or reset) within the wait.
    pub closed: bool,
    /// Bytes after the last complete response.
    pub rest: Vec<u8>,
}

impl Exchange {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status()).collect()
    }
}

/// Connect, write `bytes`, then read responses until the server closes the
/// connection or `wait` passes. Returns what came back.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Exchange {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    // The server may answer and close before it has read everything.
    let _ = s.write_all(bytes).await;
    read_until_close(&mut s, wait).await
}

/// Read responses from `s` until EOF, a reset, or `wait`.
pub async fn read_until_close(s: &mut TcpStream, wait: Duration) -> Exchange {
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    let mut closed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let mut ex = Exchange {
        closed,
        ..Default::default()
    };
    let mut at = 0;
    while at < buf.len() {
        match parse_message(&buf[at..], false) {
            Ok(Some((m, used))) => {
                ex.responses.push(m);
                at += used;
            }
            _ => break,
        }
    }
    ex.rest = buf[at..].to_vec();
    ex
}

/// Read exactly one response from `s` within `wait` (keeps the connection
/// open for more).
pub async fn read_response(s: &mut TcpStream, wait: Duration) -> Option<Message> {
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    loop {
        if let Ok(Some((m, _))) = parse_message(&buf, false) {
            return Some(m);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Wait until the peer closes `s` (EOF or reset), reading and discarding
/// whatever it sends; `None` if it is still open after `wait`, else how
/// long it took.
pub async fn closed_within(s: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    let deadline = started + wait;
    let mut chunk = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

// ---------------------------------------------------------------------------
// Recording upstream

/// What a [`RawUpstream`] has received.
#[derive(Debug, Default)]
pub struct RawLog {
    /// Every byte received, per connection, in accept order.
    pub bytes: Vec<Vec<u8>>,
    /// Every request received as a whole (strictly framed), in order.
    pub requests: Vec<Message>,
    /// Framing errors: the upstream closed the connection on each.
    pub malformed: Vec<String>,
}

/// A strict HTTP/1.1 upstream on loopback that records byte-exactly.
///
/// Answers each complete request with `200` and a body `ok <target>`;
/// special targets:
/// - `/big/{n}`: `n` bytes of `x` (bytes actually written are counted in
///   [`RawUpstream::written`]);
/// - `/switch`: `101 Switching Protocols` (then only records).
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<RawLog>>,
    /// Body bytes of `/big/` responses the gateway has accepted so far.
    pub written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<RawLog>> = Arc::default();
        let written = Arc::new(AtomicU64::new(0));
        let (log2, written2) = (log.clone(), written.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let idx = {
                    let mut l = log2.lock().unwrap();
                    l.bytes.push(Vec::new());
                    l.bytes.len() - 1
                };
                conns.spawn(serve_raw(stream, idx, log2.clone(), written2.clone()));
            }
        });
        RawUpstream {
            addr,
            log,
            written,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received as a whole so far.
    pub fn requests(&self) -> Vec<Message> {
        self.log.lock().unwrap().requests.clone()
    }

    /// Targets of the requests received as a whole.
    pub fn targets(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| r.target().to_string())
            .collect()
    }

    /// All bytes received on all connections, concatenated.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.log.lock().unwrap().bytes.concat()
    }

    /// Framing errors seen.
    pub fn malformed(&self) -> Vec<String> {
        self.log.lock().unwrap().malformed.clone()
    }

    /// Assert that no byte sequence `marker` ever reached the upstream.
    #[track_caller]
    pub fn assert_never_received(&self, marker: &str) {
        let all = self.all_bytes();
        assert!(
            find(&all, marker.as_bytes()).is_none(),
            "the upstream received {marker:?}; all bytes:\n{}",
            String::from_utf8_lossy(&all)
        );
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet: every connection task
        // is aborted with it.
        self.task.abort();
    }
}

async fn serve_raw(mut s: TcpStream, idx: usize, log: Arc<Mutex<RawLog>>, written: Arc<AtomicU64>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut switched = false;
    let mut chunk = vec![0u8; 65536];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        log.lock().unwrap().bytes[idx].extend_from_slice(&chunk[..n]);
        if switched {
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match parse_message(&buf, true) {
                Ok(None) => break,
                Err(e) => {
                    log.lock().unwrap().malformed.push(e);
                    return;
                }
                Ok(Some((req, used))) => {
                    buf.drain(..used);
                    let target = req.target().to_string();
                    log.lock().unwrap().requests.push(req);
                    if target == "/switch" {
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
                            )
                            .await;
                        switched = true;
                        break;
                    }
                    if let Some(n) = target.strip_prefix("/big/") {
                        let n: u64 = n.parse().unwrap_or(0);
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
                        if s.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let block = vec![b'x'; 16384];
                        let mut left = n;
                        while left > 0 {
                            let k = left.min(block.len() as u64) as usize;
                            if s.write_all(&block[..k]).await.is_err() {
                                return;
                            }
                            written.fetch_add(k as u64, Ordering::SeqCst);
                            left -= k as u64;
                        }
                        continue;
                    }
                    let body = format!("ok {target}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A well-behaved client measuring its latency during an attack

/// A well-behaved client: one keep-alive connection, small GETs.
pub struct Probe {
    client: reqwest::Client,
    url: String,
}

impl Probe {
    /// HTTP/1.1 to `gw`'s `/probe`.
    pub fn new(gw: &TestGateway) -> Probe {
        Self::with(gw, reqwest::Client::builder())
    }

    /// HTTP/2 with prior knowledge (h2c) to `gw`'s `/probe`.
    pub fn h2c(gw: &TestGateway) -> Probe {
        Self::with(gw, reqwest::Client::builder().http2_prior_knowledge())
    }

    fn with(gw: &TestGateway, b: reqwest::ClientBuilder) -> Probe {
        Probe {
            client: b
                .timeout(Duration::from_secs(5))
                .pool_max_idle_per_host(1)
                .build()
                .unwrap(),
            url: gw.url("/probe"),
        }
    }

    /// `n` sequential calls; each must be 200. Returns the latencies.
    pub async fn run(&self, n: usize) -> Vec<Duration> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let r = self.client.get(&self.url).send().await.expect("probe call");
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
            out.push(t.elapsed());
        }
        out
    }

    /// Calls at a steady pace until `stop` turns true.
    pub async fn run_until(&self, stop: tokio::sync::watch::Receiver<bool>) -> Vec<Duration> {
        let mut out = Vec::new();
        while !*stop.borrow() {
            out.extend(self.run(1).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        out
    }
}

pub fn p99(mut v: Vec<Duration>) -> Duration {
    assert!(!v.is_empty());
    v.sort();
    v[((v.len() * 99).div_ceil(100)).saturating_sub(1)]
}

/// The bound a well-behaved client's p99 must stay under during an attack:
/// generous (the machine is shared and the build is unoptimised), but far
/// below what a blocked gateway would cost (seconds).
pub fn probe_bound(baseline: Duration) -> Duration {
    (baseline * 10).max(Duration::from_millis(300))
}

/// Run `attack` while the probe calls at a steady pace; assert the probe's
/// p99 stays within `bound(baseline)`. Returns the attack's output.
pub async fn with_probe<T, F>(gw: &TestGateway, what: &str, attack: F) -> T
where
    F: std::future::Future<Output = T>,
{
    with_probe_on(Probe::new(gw), what, attack).await
}

/// [`with_probe`] with a given probe (e.g. [`Probe::h2c`]).
pub async fn with_probe_on<T, F>(probe: Probe, what: &str, attack: F) -> T
where
    F: std::future::Future<Output = T>,
{
    probe.run(5).await; // warm up the connection and the route
    let baseline = p99(probe.run(30).await);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let during = async {
        let v = probe.run_until(rx).await;
        v
    };
    let attack = async {
        let out = attack.await;
        let _ = tx.send(true);
        out
    };
    let (latencies, out) = tokio::join!(during, attack);
    let n = latencies.len();
    let during = p99(latencies);
    eprintln!("{what}: probe p99 {baseline:?} before, {during:?} during ({n} calls)");
    assert!(
        during <= probe_bound(baseline),
        "{what}: a well-behaved client's p99 went from {baseline:?} to {during:?} (bound {:?})",
        probe_bound(baseline)
    );
    out
}

// ---------------------------------------------------------------------------
// HTTP/2 frames (for malformed and abusive streams that a client library
// would refuse to send)

pub mod h2 {
    /// The client connection preface.
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;

    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    /// One frame: 9-byte header and payload.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&len.to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// SETTINGS with the given (id, value) pairs.
    pub fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
        let mut p = Vec::new();
        for (id, v) in pairs {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        frame(SETTINGS, 0, 0, &p)
    }

    /// An HPACK block of literal fields without indexing, no Huffman.
    pub fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in fields {
            b.push(0x00);
            int7(&mut b, n.len());
            b.extend_from_slice(n.as_bytes());
            int7(&mut b, v.len());
            b.extend_from_slice(v.as_bytes());
        }
        b
    }

    fn int7(b: &mut Vec<u8>, mut n: usize) {
        if n < 127 {
            b.push(n as u8);
            return;
        }
        b.push(127);
        n -= 127;
        while n >= 128 {
            b.push((n % 128 + 128) as u8);
            n /= 128;
        }
        b.push(n as u8);
    }

    /// A GET request's header block for `authority` and `path`.
    pub fn get(authority: &str, path: &str) -> Vec<u8> {
        hpack(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", authority),
            (":path", path),
        ])
    }

    /// RST_STREAM with an error code.
    pub fn rst(stream: u32, code: u32) -> Vec<u8> {
        frame(RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    /// WINDOW_UPDATE by `inc`.
    pub fn window_update(stream: u32, inc: u32) -> Vec<u8> {
        frame(WINDOW_UPDATE, 0, stream, &inc.to_be_bytes())
    }

    /// A raw HTTP/2 client connection: the preface and SETTINGS exchange
    /// done, every frame the server sends collected by a reader task.
    pub struct H2Client {
        pub write: tokio::net::tcp::OwnedWriteHalf,
        /// Frames received so far.
        pub frames: std::sync::Arc<std::sync::Mutex<Vec<Frame>>>,
        /// Set when the server closed the connection (EOF or reset).
        pub closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
        reader: tokio::task::JoinHandle<()>,
    }

    impl H2Client {
        /// Connect with prior knowledge, sending `settings` in our SETTINGS.
        pub async fn connect(
            addr: std::net::SocketAddr,
            settings_pairs: &[(u16, u32)],
        ) -> H2Client {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (mut rd, mut write) = s.into_split();
            let mut hello = PREFACE.to_vec();
            hello.extend(settings(settings_pairs));
            write.write_all(&hello).await.unwrap();
            // Read until the server's SETTINGS, then acknowledge it.
            let mut buf = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let frames = parse_frames(&buf);
                if frames
                    .iter()
                    .any(|f| f.kind == SETTINGS && f.flags & ACK == 0)
                {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no SETTINGS from the server"
                );
                let mut chunk = [0u8; 4096];
                let n =
                    tokio::time::timeout(std::time::Duration::from_secs(5), rd.read(&mut chunk))
                        .await
                        .expect("server SETTINGS")
                        .unwrap();
                assert!(n > 0, "closed before SETTINGS");
                buf.extend_from_slice(&chunk[..n]);
            }
            write
                .write_all(&frame(SETTINGS, ACK, 0, &[]))
                .await
                .unwrap();
            let frames = std::sync::Arc::new(std::sync::Mutex::new(parse_frames(&buf)));
            let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (f2, c2) = (frames.clone(), closed.clone());
            let consumed: usize = parse_frames(&buf).iter().map(|f| 9 + f.len).sum();
            let mut pending = buf[consumed..].to_vec();
            let reader = tokio::spawn(async move {
                let mut chunk = vec![0u8; 65536];
                loop {
                    match rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => {
                            c2.store(true, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                        Ok(n) => {
                            pending.extend_from_slice(&chunk[..n]);
                            let got = parse_frames(&pending);
                            let used: usize = got.iter().map(|f| 9 + f.len).sum();
                            pending.drain(..used);
                            // DATA payloads are not kept (only `len`).
                            let mut fs = f2.lock().unwrap();
                            for mut f in got {
                                if f.kind == DATA {
                                    f.payload = Vec::new();
                                }
                                fs.push(f);
                            }
                        }
                    }
                }
            });
            H2Client {
                write,
                frames,
                closed,
                reader,
            }
        }

        /// Write bytes; false once the connection is gone.
        pub async fn send(&mut self, bytes: &[u8]) -> bool {
            use tokio::io::AsyncWriteExt;
            self.write.write_all(bytes).await.is_ok()
        }

        pub fn frames(&self) -> Vec<Frame> {
            self.frames.lock().unwrap().clone()
        }

        /// The GOAWAY error code, if the server sent one.
        pub fn goaway(&self) -> Option<u32> {
            self.frames().iter().find_map(|f| f.goaway_code())
        }

        pub fn is_closed(&self) -> bool {
            self.closed.load(std::sync::atomic::Ordering::SeqCst)
        }

        /// Wait up to `wait` for a GOAWAY or the connection's end.
        pub async fn wait_goaway_or_close(&self, wait: std::time::Duration) -> bool {
            let deadline = std::time::Instant::now() + wait;
            while std::time::Instant::now() < deadline {
                if self.goaway().is_some() || self.is_closed() {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            false
        }
    }

    impl Drop for H2Client {
        fn drop(&mut self) {
            self.reader.abort();
        }
    }

    /// A frame read back from the server.
    #[derive(Debug, Clone)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        /// The payload's length as sent.
        pub len: usize,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// GOAWAY's error code.
        pub fn goaway_code(&self) -> Option<u32> {
            (self.kind == GOAWAY && self.payload.len() >= 8)
                .then(|| u32::from_be_bytes(self.payload[4..8].try_into().unwrap()))
        }
    }

    /// Split `buf` into whole frames (a trailing partial frame is ignored).
    pub fn parse_frames(buf: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut at = 0;
        while buf.len() >= at + 9 {
            let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
            if buf.len() < at + 9 + len {
                break;
            }
            out.push(Frame {
                kind: buf[at + 3],
                flags: buf[at + 4],
                stream: u32::from_be_bytes(buf[at + 5..at + 9].try_into().unwrap()) & 0x7fff_ffff,
                len,
                payload: buf[at + 9..at + 9 + len].to_vec(),
            });
            at += 9 + len;
        }
        out
    }
}
