//! `tollgate policy replay`: run two versions of a policy over recorded
//! traffic (trace files written by `[api.record]`, see [`crate::record`])
//! and report every call on which they decide differently, before the new
//! one is deployed.
//!
//! Both versions are loaded in one [`Runtime`], each as a step of its own
//! with the same step name, grants and limits, but its own namespace in the
//! host services (counters, cache and kv are keyed by the step's API and
//! the plugin's name): each starts from empty, in-memory state, and a rate
//! limit counts the same calls for both. For every recorded call, each
//! version gets a fresh instance: `on-request` with the recorded request
//! (and the consumer the gateway resolved for it in the call's context),
//! then, when it continued and has a response phase, `on-response` with the
//! recorded response. What each decided is compared: the decision
//! (continue or respond), the answer's status, headers and body, the edits
//! to the request (headers, path, query, body, consumer) and to the
//! response. A call on which either version fails (a trap, a deadline, the
//! memory cap, an invalid result) is reported as differing, with both
//! sides, even when both fail.
//!
//! The clock: with `--clock recorded` (the default), the wall clock the
//! policies and the host services see is fixed at each call's recorded
//! time (the whole process's clock: replay runs alone); with `--clock
//! real` it runs on, so a time-dependent policy may differ between the
//! two runs of one call.
//!
//! A trace line that is not valid (not JSON, a field missing, a bad body)
//! or longer than 64 MiB is reported with its file and line number and
//! skipped; a file with lines but none readable is an error.

use crate::domain::time::Ts;
use crate::manifest::{toml_to_json, Dur};
use crate::policy::host::{Capability, Grants, ServiceSettings, Services};
use crate::policy::{
    CallContext, Consumer, EngineLimits, Header, HeaderOp, RequestDecision, RequestHead,
    RequestScope, Response, ResponseDecision, ResponseHead, Runtime, Step,
};
use crate::record::TraceLine;
use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest trace line read; a longer one is skipped.
pub const MAX_LINE: usize = 64 << 20;
/// Exit status of a usage error (bad arguments, unreadable files, a file
/// that is not a policy component).
pub const USAGE_ERROR: u8 = 2;

/// `tollgate policy replay`: run a new version of a policy and the version
/// it replaces over recorded calls and report where they differ.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The new version: a policy component (`.wasm`).
    #[arg(long, value_name = "NEW.wasm")]
    pub policy: PathBuf,
    /// The version it replaces: a policy component (`.wasm`).
    #[arg(long, value_name = "OLD.wasm")]
    pub against: PathBuf,
    /// The step's `config`, a TOML or JSON file (`.json`), for both
    /// versions; default `{}`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The old version's `config`, when it differs from `--config`.
    #[arg(long, value_name = "FILE")]
    pub against_config: Option<PathBuf>,
    /// A grant of the step, as in a manifest's `grants` (`counters`,
    /// `kv:max-keys=100`, `http:idp.example.com`); repeat for more.
    #[arg(long = "grants", visible_alias = "grant", value_name = "GRANT")]
    pub grants: Vec<String>,
    /// Running-time deadline of one phase.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_dur)]
    pub timeout: std::time::Duration,
    /// `recorded`: the policies' wall clock is each call's recorded time;
    /// `real`: the machine's clock.
    #[arg(long, value_enum, default_value_t = Clock::Recorded)]
    pub clock: Clock,
    /// `text` or `json`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Differing calls shown in full (all are counted).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_diffs: usize,
    /// Trace files (one JSON object per line, as `[api.record]` writes).
    #[arg(required = true, value_name = "TRACES")]
    pub traces: Vec<PathBuf>,
}

fn parse_dur(s: &str) -> Result<std::time::Duration, String> {
    Dur::try_from(s).map(|d| d.0)
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Recorded,
    Real,
}

/// How a replay ended, when it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No call differed.
    Same,
    /// At least one call differed.
    Differ,
}

impl Outcome {
    /// 0 when the versions agreed on every call, 1 when any differed.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Same => 0,
            Outcome::Differ => 1,
        }
    }
}

/// What a replay found.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// Calls replayed.
    pub calls: u64,
    /// Calls on which the versions differ.
    pub differ: u64,
    /// Trace lines that could not be read.
    pub skipped: u64,
    /// The first `--max-diffs` differing calls.
    pub differences: Vec<CallDiff>,
    /// The first `--max-diffs` unreadable lines.
    pub skipped_lines: Vec<Skipped>,
}

impl Report {
    pub fn outcome(&self) -> Outcome {
        if self.differ > 0 {
            Outcome::Differ
        } else {
            Outcome::Same
        }
    }
}

/// One call on which the versions differ.
#[derive(Debug, Clone, Serialize)]
pub struct CallDiff {
    pub file: String,
    pub line: u64,
    pub method: String,
    pub path: String,
    pub differences: Vec<Difference>,
}

/// One thing the versions did differently on a call.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Difference {
    pub what: String,
    pub old: String,
    pub new: String,
}

/// A trace line that was skipped.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub file: String,
    pub line: u64,
    pub error: String,
}

/// The command: replay, print the report on standard output, and the exit
/// status (0 same, 1 differ, 2 usage error, printed on standard error).
pub fn main(args: Args) -> std::process::ExitCode {
    match run(&args) {
        Ok(outcome) => std::process::ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(USAGE_ERROR)
        }
    }
}

/// Replay and print the report on standard output.
pub fn run(args: &Args) -> anyhow::Result<Outcome> {
    let report = replay(args)?;
    let mut out = std::io::stdout().lock();
    print(&report, args.format, &mut out)?;
    Ok(report.outcome())
}

/// Write `report` as text or JSON.
pub fn print(report: &Report, format: Format, out: &mut dyn Write) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)
        }
        Format::Text => {
            for s in &report.skipped_lines {
                writeln!(out, "{}:{}: skipped: {}", s.file, s.line, s.error)?;
            }
            for d in &report.differences {
                writeln!(out, "{}:{}: {} {}", d.file, d.line, d.method, d.path)?;
                for x in &d.differences {
                    writeln!(out, "  {}: old {}, new {}", x.what, x.old, x.new)?;
                }
            }
            let shown = report.differences.len() as u64;
            if shown < report.differ {
                writeln!(
                    out,
                    "({} more differing calls not shown: --max-diffs)",
                    report.differ - shown
                )?;
            }
            write!(out, "{} calls, {} differ", report.calls, report.differ)?;
            if report.skipped > 0 {
                write!(out, ", {} lines skipped", report.skipped)?;
            }
            writeln!(out)
        }
    }
}

/// The two versions, ready to run.
struct Versions {
    runtime: Runtime,
    old: Step,
    new: Step,
    _dir: tempfile::TempDir,
}

/// Replay every trace file; an error is a usage error (nothing compared).
pub fn replay(args: &Args) -> anyhow::Result<Report> {
    let v = load(args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut report = Report::default();
    let result = (|| {
        for file in &args.traces {
            replay_file(&v, &rt, args, file, &mut report)?;
        }
        anyhow::Ok(())
    })();
    if args.clock == Clock::Recorded {
        crate::policy::host::clock::fix_now_ms(0);
    }
    result?;
    if report.calls == 0 && report.skipped > 0 {
        bail!(
            "no call in the traces could be read ({} lines skipped, the first: {}:{}: {})",
            report.skipped,
            report.skipped_lines[0].file,
            report.skipped_lines[0].line,
            report.skipped_lines[0].error
        );
    }
    Ok(report)
}

/// Load both components in one runtime, each configured as a step.
fn load(args: &Args) -> anyhow::Result<Versions> {
    let new_config = read_config(args.config.as_deref())?;
    let old_config = match &args.against_config {
        Some(p) => read_config(Some(p))?,
        None => new_config.clone(),
    };
    let mut grants = Grants::default();
    for g in &args.grants {
        grants
            .list
            .push(Capability::parse(g).map_err(|e| anyhow!("--grants {g}: {e}"))?);
    }
    let dir = tempfile::tempdir().context("creating a temporary folder for the store")?;
    let store = crate::store::Store::open(dir.path())
        .map_err(|e| anyhow!("opening a temporary store: {e}"))?;
    let services = Services::new(ServiceSettings {
        store: Some(store),
        cache_bytes: 16 << 20,
        sink_path: Some(dir.path().join("sink.log")),
        outbound_ca: None,
    })?;
    let runtime = Runtime::new(EngineLimits { max_instances: 16 }, None, Arc::new(services))?;
    let step = |role: &str, path: &Path, config: String| -> anyhow::Result<Step> {
        let plugin = runtime.load_plugin(role, path)?;
        runtime
            .configure_step(
                &format!("replay-{role}"),
                "replay",
                plugin,
                config,
                args.timeout,
                16 << 20,
                false,
                grants.clone(),
            )
            .map_err(|e| anyhow!("{} ({role} version): {e}", path.display()))
    };
    let old = step("old", &args.against, old_config)?;
    let new = step("new", &args.policy, new_config)?;
    Ok(Versions {
        runtime,
        old,
        new,
        _dir: dir,
    })
}

/// A step configuration file as the JSON `configure` takes: `.json` is
/// JSON, anything else TOML (the table a manifest's `[api.chain.config]`
/// holds); none is `{}`.
fn read_config(path: Option<&Path>) -> anyhow::Result<String> {
    let Some(path) = path else {
        return Ok("{}".into());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        return Ok(v.to_string());
    }
    let t: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    Ok(toml_to_json(&toml::Value::Table(t)).to_string())
}

/// Replay the calls of one file.
fn replay_file(
    v: &Versions,
    rt: &tokio::runtime::Runtime,
    args: &Args,
    path: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = std::io::BufReader::new(f);
    let name = path.display().to_string();
    let mut number = 0u64;
    while let Some(read) = next_line(&mut r, MAX_LINE).with_context(|| format!("reading {name}"))? {
        number += 1;
        let line = match read {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(bytes) => parse_line(&bytes),
            Err(len) => Err(format!("line of {len} bytes, longer than 64 MiB")),
        };
        let (line, req_body, resp_body) = match line {
            Ok(l) => l,
            Err(error) => {
                report.skipped += 1;
                if report.skipped_lines.len() < args.max_diffs.max(1) {
                    report.skipped_lines.push(Skipped {
                        file: name.clone(),
                        line: number,
                        error,
                    });
                }
                continue;
            }
        };
        if args.clock == Clock::Recorded {
            if let Some(t) = Ts::parse(&line.time) {
                crate::policy::host::clock::fix_now_ms(t.0.max(1));
            }
        }
        let call = Call {
            line: &line,
            req_body: req_body.as_deref(),
            resp_body: resp_body.as_deref(),
        };
        let old = rt.block_on(observe(&v.runtime, &v.old, &call));
        let new = rt.block_on(observe(&v.runtime, &v.new, &call));
        report.calls += 1;
        let differences = compare(&old, &new);
        if differences.is_empty() {
            continue;
        }
        report.differ += 1;
        if report.differences.len() < args.max_diffs {
            let mut path = line.request.path.clone();
            if let Some(q) = &line.request.query {
                path.push('?');
                path.push_str(q);
            }
            report.differences.push(CallDiff {
                file: name.clone(),
                line: number,
                method: line.request.method.clone(),
                path: bounded(&path, 200),
                differences,
            });
        }
    }
    Ok(())
}

/// A line and its decoded bodies.
type Parsed = (TraceLine, Option<Vec<u8>>, Option<Vec<u8>>);

fn parse_line(bytes: &[u8]) -> Result<Parsed, String> {
    let line: TraceLine =
        serde_json::from_slice(bytes).map_err(|e| format!("not a trace line: {e}"))?;
    let req = line
        .request
        .body
        .bytes()
        .map_err(|e| format!("request {e}"))?;
    let resp = line
        .response
        .body
        .bytes()
        .map_err(|e| format!("response {e}"))?;
    Ok((line, req, resp))
}

/// The next line (without its newline), or `Err(length)` for one longer
/// than `max` (read past and dropped); `None` at the end.
fn next_line(r: &mut impl BufRead, max: usize) -> std::io::Result<Option<Result<Vec<u8>, u64>>> {
    let mut buf = Vec::new();
    let n = std::io::Read::take(&mut *r, max as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Some(Ok(buf)));
    }
    if buf.len() <= max {
        return Ok(Some(Ok(buf)));
    }
    let mut len = buf.len() as u64;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        if let Some(i) = chunk.iter().position(|b| *b == b'\n') {
            len += i as u64;
            r.consume(i + 1);
            break;
        }
        let l = chunk.len();
        len += l as u64;
        r.consume(l);
    }
    Ok(Some(Err(len)))
}

/// One recorded call to replay.
struct Call<'a> {
    line: &'a TraceLine,
    req_body: Option<&'a [u8]>,
    resp_body: Option<&'a [u8]>,
}

/// What one version did with a call.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    request: Phase,
    /// `None` when the response phase did not run (no such phase, or the
    /// request phase answered or failed).
    response: Option<Phase>,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// The plugin has no such phase.
    Absent,
    Continue(Edits),
    Respond(Answer),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Edits {
    headers: Vec<String>,
    response_headers: Vec<String>,
    path: Option<String>,
    query: Option<String>,
    status: Option<u16>,
    body: Option<Vec<u8>>,
    consumer: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    headers: Vec<String>,
    body: Vec<u8>,
}

impl Answer {
    fn from(r: Response) -> Answer {
        Answer {
            status: r.status,
            headers: r
                .headers
                .iter()
                .map(|h| format!("{}: {}", h.name, String::from_utf8_lossy(&h.value)))
                .collect(),
            body: r.body,
        }
    }
}

fn ops(ops: &[HeaderOp]) -> Vec<String> {
    ops.iter()
        .map(|op| match op {
            HeaderOp::Set(h) => format!("set {}: {}", h.name, String::from_utf8_lossy(&h.value)),
            HeaderOp::Append(h) => {
                format!("append {}: {}", h.name, String::from_utf8_lossy(&h.value))
            }
            HeaderOp::Remove(n) => format!("remove {n}"),
        })
        .collect()
}

fn headers(pairs: &[(String, String)]) -> Vec<Header> {
    pairs
        .iter()
        .map(|(n, v)| Header {
            name: n.clone(),
            value: v.as_bytes().to_vec(),
        })
        .collect()
}

/// Run `step` over the call on a fresh instance.
async fn observe(runtime: &Runtime, step: &Step, call: &Call<'_>) -> Observed {
    let line = call.line;
    let scope = RequestScope {
        request_id: line.request_id.clone(),
        ..RequestScope::default()
    };
    let mut ctx = CallContext {
        request_id: line.request_id.clone(),
        client_addr: line.client.clone(),
        api: line.api.clone(),
        route: line.route.clone(),
        captures: line.captures.clone(),
        consumer: line.consumer.as_ref().map(|c| Consumer {
            id: c.id.clone(),
            app: c.app.clone(),
            key_id: c.key_id.clone(),
            plan: c.plan.clone(),
            product: c.product.clone(),
        }),
        step: step.name.to_string(),
    };
    let r = &line.request;
    let mut head = RequestHead {
        method: r.method.clone(),
        scheme: r.scheme.clone(),
        authority: r.authority.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        headers: headers(&r.headers),
    };
    let failed = |e: &dyn std::fmt::Display| Observed {
        request: Phase::Failed(e.to_string()),
        response: None,
    };
    let mut inst = match runtime.instantiate(step, &scope).await {
        Ok(i) => i,
        Err(e) => return failed(&e),
    };
    let request = if step.has_request() {
        let body = step.info.body.request.map(|_| call.req_body.unwrap_or(&[]));
        match inst.on_request(step, &mut ctx, &mut head, body).await {
            Err(e) => return failed(&e),
            Ok(RequestDecision::Respond(resp)) => {
                return Observed {
                    request: Phase::Respond(Answer::from(resp)),
                    response: None,
                }
            }
            Ok(RequestDecision::Continue(edits)) => {
                let seen = Edits {
                    headers: ops(&edits.headers),
                    response_headers: ops(&edits.response_headers),
                    path: edits.path.clone(),
                    query: edits.query.clone(),
                    status: None,
                    body: edits.body.clone(),
                    consumer: edits.consumer.as_ref().map(|c| format!("{c:?}")),
                };
                // The response phase sees the request as this step left it.
                if let Err(e) =
                    crate::policy::apply_header_ops(&step.name, &mut head.headers, edits.headers)
                {
                    return failed(&e);
                }
                if let Some(p) = edits.path {
                    head.path = p;
                }
                if let Some(q) = edits.query {
                    head.query = Some(q).filter(|q| !q.is_empty());
                }
                if let Some(c) = edits.consumer {
                    ctx.consumer = Some(c);
                }
                Phase::Continue(seen)
            }
        }
    } else {
        Phase::Absent
    };
    if !step.has_response() {
        return Observed {
            request,
            response: Some(Phase::Absent),
        };
    }
    let mut resp = ResponseHead {
        status: line.response.status,
        headers: headers(&line.response.headers),
    };
    let body = step
        .info
        .body
        .response
        .map(|_| call.resp_body.unwrap_or(&[]));
    let response = match inst
        .on_response(step, &mut ctx, &mut head, &mut resp, body)
        .await
    {
        Err(e) => Phase::Failed(e.to_string()),
        Ok(ResponseDecision::Respond(r)) => Phase::Respond(Answer::from(r)),
        Ok(ResponseDecision::Continue(edits)) => Phase::Continue(Edits {
            headers: ops(&edits.headers),
            status: edits.status,
            body: edits.body,
            ..Edits::default()
        }),
    };
    Observed {
        request,
        response: Some(response),
    }
}

/// What differs between the old version's and the new one's observations.
fn compare(old: &Observed, new: &Observed) -> Vec<Difference> {
    let mut out = Vec::new();
    phase("request", &old.request, &new.request, &mut out);
    match (&old.response, &new.response) {
        (Some(o), Some(n)) => phase("response", o, n, &mut out),
        (None, None) => {}
        // The request phases differ already (one answered or failed).
        _ if !out.is_empty() => {}
        (o, n) => out.push(Difference {
            what: "response phase".into(),
            old: if o.is_some() { "ran" } else { "did not run" }.into(),
            new: if n.is_some() { "ran" } else { "did not run" }.into(),
        }),
    }
    out
}

fn phase(name: &str, old: &Phase, new: &Phase, out: &mut Vec<Difference>) {
    let mut diff = |what: String, o: String, n: String| {
        if o != n {
            out.push(Difference {
                what,
                old: o,
                new: n,
            })
        }
    };
    match (old, new) {
        (Phase::Absent, Phase::Absent) => {}
        (Phase::Failed(_), _) | (_, Phase::Failed(_)) => out.push(Difference {
            what: format!("{name} phase failed"),
            old: describe(old),
            new: describe(new),
        }),
        (Phase::Respond(o), Phase::Respond(n)) => {
            diff(
                format!("{name} phase answer status"),
                o.status.to_string(),
                n.status.to_string(),
            );
            diff(
                format!("{name} phase answer headers"),
                list(&o.headers),
                list(&n.headers),
            );
            diff(
                format!("{name} phase answer body"),
                body(&o.body),
                body(&n.body),
            );
            if o.body != n.body && body(&o.body) == body(&n.body) {
                diff(
                    format!("{name} phase answer body"),
                    format!("{} bytes", o.body.len()),
                    format!("{} bytes (different content)", n.body.len()),
                );
            }
        }
        (Phase::Continue(o), Phase::Continue(n)) => {
            let opt = |v: &Option<String>| v.as_deref().map_or("unchanged".into(), quoted);
            diff(
                format!("{name} header edits"),
                list(&o.headers),
                list(&n.headers),
            );
            diff(
                "response header edits (request phase)".into(),
                list(&o.response_headers),
                list(&n.response_headers),
            );
            diff("path".into(), opt(&o.path), opt(&n.path));
            diff("query".into(), opt(&o.query), opt(&n.query));
            diff(
                "status".into(),
                o.status.map_or("unchanged".into(), |s| s.to_string()),
                n.status.map_or("unchanged".into(), |s| s.to_string()),
            );
            let b = |v: &Option<Vec<u8>>| v.as_deref().map_or("unchanged".into(), body);
            diff(format!("{name} body"), b(&o.body), b(&n.body));
            if o.body != n.body && b(&o.body) == b(&n.body) {
                diff(
                    format!("{name} body"),
                    "one content".into(),
                    "another (same length and preview)".into(),
                );
            }
            diff(
                "consumer".into(),
                o.consumer.clone().unwrap_or_else(|| "unchanged".into()),
                n.consumer.clone().unwrap_or_else(|| "unchanged".into()),
            );
        }
        _ => out.push(Difference {
            what: format!("{name} decision"),
            old: describe(old),
            new: describe(new),
        }),
    }
}

/// A phase's result in a few words.
fn describe(p: &Phase) -> String {
    match p {
        Phase::Absent => "no such phase".into(),
        Phase::Continue(_) => "continue".into(),
        Phase::Respond(a) => format!("respond {}", a.status),
        Phase::Failed(e) => format!("failed: {}", bounded(e, 300)),
    }
}

fn list(items: &[String]) -> String {
    bounded(&format!("[{}]", items.join("; ")), 300)
}

fn quoted(s: &str) -> String {
    bounded(&format!("{s:?}"), 200)
}

/// A body in a few words: its text (the start of it) or its length.
fn body(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(t) if t.chars().count() <= 120 => format!("{t:?}"),
        Ok(t) => {
            let start: String = t.chars().take(120).collect();
            format!("{start:?}... ({} bytes)", b.len())
        }
        Err(_) => format!("{} bytes (binary)", b.len()),
    }
}

/// `s`, cut to `max` characters.
fn bounded(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push_str("...");
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_skipped_with_their_length() {
        let text = b"short\n0123456789abcdef\nlast\r\nend";
        let mut r = std::io::BufReader::with_capacity(4, &text[..]);
        let mut got = Vec::new();
        while let Some(l) = next_line(&mut r, 8).unwrap() {
            got.push(l.map(|b| String::from_utf8(b).unwrap()));
        }
        assert_eq!(
            got,
            vec![
                Ok("short".to_string()),
                Err(16),
                Ok("last".to_string()),
                Ok("end".to_string())
            ]
        );
    }

    #[test]
    fn differences_name_what_differs() {
        let cont = |h: &[&str]| {
            Phase::Continue(Edits {
                headers: h.iter().map(|s| s.to_string()).collect(),
                ..Edits::default()
            })
        };
        let same = Observed {
            request: cont(&["set x-a: 1"]),
            response: Some(Phase::Absent),
        };
        assert!(compare(&same, &same.clone()).is_empty());
        let other = Observed {
            request: cont(&["set x-a: 2"]),
            response: Some(Phase::Absent),
        };
        assert_eq!(
            compare(&same, &other),
            vec![Difference {
                what: "request header edits".into(),
                old: "[set x-a: 1]".into(),
                new: "[set x-a: 2]".into()
            }]
        );
        let answered = Observed {
            request: Phase::Respond(Answer {
                status: 403,
                headers: vec![],
                body: b"no".to_vec(),
            }),
            response: None,
        };
        let d = compare(&same, &answered);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].what, "request decision");
        assert_eq!(d[0].old, "continue");
        assert_eq!(d[0].new, "respond 403");
        // A failure is a difference even on both sides.
        let failed = Observed {
            request: Phase::Failed("trap".into()),
            response: None,
        };
        assert_eq!(compare(&failed, &failed.clone()).len(), 1);
    }
}
