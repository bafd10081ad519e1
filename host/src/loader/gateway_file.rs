//! The first level: the gateway file on its own — read it, then check what
//! the types cannot (listener addresses, the admin API's exposure, limits
//! in range, the outbound CA file).

use super::{ConfigErrors, Inputs, MAX_STEP_TIMEOUT};
use crate::manifest::{self, resolve, GatewayFile, Limits, SCHEMA};
use crate::policy::engine::MAX_STEP_MEMORY;
use crate::policy::guard::{check_log_limits, LogLimits};
use crate::policy::reuse::check_reuse_limits;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

/// Read and check the gateway file on its own.
pub fn read_gateway_file(path: &Path) -> Result<GatewayFile, ConfigErrors> {
    read_gateway_file_recording(path, &mut Inputs::default())
}

/// [`read_gateway_file`], recording what it read in `inputs`.
pub fn read_gateway_file_recording(
    path: &Path,
    inputs: &mut Inputs,
) -> Result<GatewayFile, ConfigErrors> {
    let read = manifest::read_toml::<GatewayFile>(path);
    match &read {
        Ok((_, text)) => inputs.record_text(path, text),
        Err(_) => inputs.record_unread(path),
    }
    let (gw, _) = read?;
    let errs = check(path, &gw);
    if errs.is_empty() {
        Ok(gw)
    } else {
        Err(ConfigErrors(errs))
    }
}

/// Everything wrong with the gateway file `path` that parsing let through,
/// each error after the file's name.
fn check(path: &Path, gw: &GatewayFile) -> Vec<String> {
    let mut errs = Vec::new();
    if gw.schema != SCHEMA {
        errs.push(format!(
            "schema {} is not supported (this build reads schema {SCHEMA})",
            gw.schema
        ));
    }
    check_listeners(gw, &mut errs);
    check_admin(gw, &mut errs);
    check_portal(gw, &mut errs);
    check_step_limits(&gw.limits, &mut errs);
    check_connection_limits(&gw.limits, &mut errs);
    check_plugin_limits(&gw.limits, &mut errs);
    if let Some(e) = crate::observe::metrics::check_spec(&gw.metrics) {
        errs.push(e);
    }
    check_otel(gw, &mut errs);
    check_analytics(gw, &mut errs);
    if let Some(oauth) = &gw.oauth {
        errs.extend(oauth.problems());
    }
    if let Some(cluster) = &gw.cluster {
        errs.extend(cluster.problems());
    }
    if let Some(ca) = &gw.outbound.ca_file {
        let base = path.parent().unwrap_or(Path::new("."));
        let mut roots = rustls::RootCertStore::empty();
        if let Err(e) = crate::net::tls_client::ca_roots(&resolve(base, ca), &mut roots) {
            errs.push(format!("outbound.ca-file: {e}"));
        }
    }
    errs.into_iter()
        .map(|e| format!("{}: {e}", path.display()))
        .collect()
}

/// `[otel]`: an `http://` endpoint, a ratio in 0..=1, valid header
/// fields, bounded timeouts and queues (see
/// [`crate::observe::trace::OtelSpec::problems`]).
fn check_otel(gw: &GatewayFile, errs: &mut Vec<String>) {
    if let Some(otel) = &gw.otel {
        errs.extend(otel.problems());
    }
}

/// At least one listener; distinct names; each address IP:port.
fn check_listeners(gw: &GatewayFile, errs: &mut Vec<String>) {
    if gw.listeners.is_empty() {
        errs.push("at least one [[listener]] is required".into());
    }
    let mut names = HashSet::new();
    for l in &gw.listeners {
        if !names.insert(l.name.as_str()) {
            errs.push(format!("listener name `{}` is used twice", l.name));
        }
        if l.address.parse::<SocketAddr>().is_err() {
            errs.push(format!(
                "listener `{}`: address `{}` is not IP:port (e.g. 127.0.0.1:8080)",
                l.name, l.address
            ));
        }
    }
}

/// The admin API: IP:port, TLS unless on loopback, a sane body limit.
fn check_admin(gw: &GatewayFile, errs: &mut Vec<String>) {
    let Some(admin) = &gw.admin else { return };
    match admin.address.parse::<SocketAddr>() {
        Err(_) => errs.push(format!(
            "admin.address `{}` is not IP:port (e.g. 127.0.0.1:8001)",
            admin.address
        )),
        Ok(a) if !a.ip().is_loopback() && admin.tls.is_none() => errs.push(format!(
            "admin.address `{}` is not a loopback address: the admin API carries bearer tokens, so it needs `tls` there (or use 127.0.0.1)",
            admin.address
        )),
        Ok(_) => {}
    }
    if !(1024..=(64 << 20)).contains(&admin.max_body.0) {
        errs.push(format!(
            "admin.max-body = {} bytes must be between 1KiB and 64MiB",
            admin.max_body.0
        ));
    }
}

/// The portal: IP:port, TLS unless on loopback or behind an https
/// `public-url`, an http(s) `public-url`, limits in range.
fn check_portal(gw: &GatewayFile, errs: &mut Vec<String>) {
    let Some(p) = &gw.portal else { return };
    let https_url = p
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    match p.address.parse::<SocketAddr>() {
        Err(_) => errs.push(format!(
            "portal.address `{}` is not IP:port (e.g. 127.0.0.1:8002)",
            p.address
        )),
        Ok(a) if !a.ip().is_loopback() && p.tls.is_none() && !https_url => errs.push(format!(
            "portal.address `{}` is not a loopback address: the portal carries passwords and session cookies, so it needs `tls` there (or an https `public-url` when a TLS proxy is in front, or 127.0.0.1)",
            p.address
        )),
        Ok(_) => {}
    }
    if let Some(u) = &p.public_url {
        let ok = (u.starts_with("http://") || u.starts_with("https://"))
            && u.split_once("://")
                .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
            && !u.contains(['?', '#', ' ', '"', '<', '>'])
            && u.len() <= 200;
        if !ok {
            errs.push(format!(
                "portal.public-url `{u}` is not an http:// or https:// URL without query or fragment (e.g. https://developer.example.com)"
            ));
        }
    }
    let secs = |d: &manifest::Dur| d.0.as_secs();
    if !(300..=30 * 86_400).contains(&secs(&p.session_lifetime)) {
        errs.push("portal.session-lifetime must be between 5m and 720h (30 days)".into());
    }
    if !(60..=86_400).contains(&secs(&p.reset_lifetime)) {
        errs.push("portal.reset-lifetime must be between 1m and 24h".into());
    }
    if !(1024..=(1 << 20)).contains(&p.max_body.0) {
        errs.push(format!(
            "portal.max-body = {} bytes must be between 1KiB and 1MiB",
            p.max_body.0
        ));
    }
    let l = &p.lockout;
    if !(1..=100).contains(&l.failures) {
        errs.push("portal.lockout.failures must be between 1 and 100".into());
    }
    if !(1..=10_000).contains(&l.client_failures) {
        errs.push("portal.lockout.client-failures must be between 1 and 10000".into());
    }
    for (name, d) in [("window", &l.window), ("duration", &l.duration)] {
        if !(1..=86_400).contains(&secs(d)) {
            errs.push(format!("portal.lockout.{name} must be between 1s and 24h"));
        }
    }
    if let Some(m) = &p.smtp {
        check_smtp(m, p.outbox.is_some(), errs);
    }
}

/// The defaults of every step: memory and deadlines.
fn check_step_limits(l: &Limits, errs: &mut Vec<String>) {
    let mem = l.step_memory.0;
    if !((1 << 20)..=MAX_STEP_MEMORY).contains(&mem) {
        errs.push(format!(
            "limits.step-memory = {mem} bytes must be between 1MiB and {}MiB",
            MAX_STEP_MEMORY >> 20
        ));
    }
    let t = l.step_timeout.0;
    if t.is_zero() || t > MAX_STEP_TIMEOUT {
        errs.push(format!(
            "limits.step-timeout = {t:?} must be between 1ms and 30s"
        ));
    }
    if let Err((_, e)) = check_reuse_limits(l.step_max_uses, l.step_idle.0) {
        errs.push(format!("limits.step-{e}"));
    }
    if let Some(w) = l.step_wall_timeout.map(|d| d.0) {
        if w.is_zero() || w > crate::policy::deadline::MAX_WALL_TIMEOUT {
            errs.push(format!(
                "limits.step-wall-timeout = {w:?} must be between 1ms and 300s"
            ));
        } else if w < t {
            errs.push(format!(
                "limits.step-wall-timeout = {w:?} must be at least limits.step-timeout = {t:?}"
            ));
        }
    }
    let wall = l
        .step_wall_timeout
        .map_or(crate::policy::deadline::default_wall_timeout(t), |d| d.0);
    let gate = super::step::gate_limits(l, None, wall);
    if let Err(e) = crate::policy::gate::check_gate_limits(&gate) {
        errs.push(format!("limits.step-{e}"));
    }
}

/// What bounds a client connection: none so small that nothing is served.
fn check_connection_limits(l: &Limits, errs: &mut Vec<String>) {
    for (name, zero) in [
        ("max-headers", l.max_headers == 0),
        ("max-connections", l.max_connections == 0),
        // hyper's HTTP/1 read buffer, which bounds the head, is at least
        // 8KiB: a smaller limit would not be enforced.
        ("max-header-bytes", l.max_header_bytes.0 < 8192),
        (
            "request-header-timeout",
            l.request_header_timeout.0.is_zero(),
        ),
        ("request-body-timeout", l.request_body_timeout.0.is_zero()),
        ("send-timeout", l.send_timeout.0.is_zero()),
        ("max-concurrent-streams", l.max_concurrent_streams == 0),
    ] {
        if zero {
            errs.push(format!(
                "limits.{name} is too small to serve anything (remove it for the default)"
            ));
        }
    }
    if l.max_header_bytes.0 > (16 << 20) {
        errs.push("limits.max-header-bytes must be at most 16MiB".into());
    }
    // At most hyper's own limit on a request-target (64KiB less 2 bytes,
    // beyond which it answers 414 itself).
    if !(256..=(64 << 10)).contains(&l.max_request_target.0) {
        errs.push(format!(
            "limits.max-request-target = {} bytes must be between 256 bytes and 64KiB",
            l.max_request_target.0
        ));
    }
}

/// `[analytics]`: flush interval, queue, series and retentions in range
/// (see [`crate::observe::analytics::AnalyticsSpec::check`]).
fn check_analytics(gw: &GatewayFile, errs: &mut Vec<String>) {
    if let Some(a) = &gw.analytics {
        errs.extend(a.check());
    }
}

/// The plugins' log limits and the engine's instance count.
fn check_plugin_limits(l: &Limits, errs: &mut Vec<String>) {
    let log = LogLimits {
        lines_per_sec: l.plugin_log_rate,
        line_bytes: l.plugin_log_line.0 as usize,
    };
    if let Err(e) = check_log_limits(&log) {
        errs.push(format!("limits.plugin-{e}"));
    }
    if l.max_instances == 0 || l.max_instances > 100_000 {
        errs.push("limits.max-instances must be between 1 and 100000".into());
    }
}

/// The portal's SMTP relay: a host, credentials only over TLS and from the
/// environment, plain SMTP only to loopback, an outbox to spool in.
fn check_smtp(m: &crate::manifest::SmtpSpec, outbox: bool, errs: &mut Vec<String>) {
    use crate::manifest::SmtpTls;
    if !outbox {
        errs.push("portal.smtp needs portal.outbox: the folder mail waits in until the SMTP server has accepted it".into());
    }
    let host_ok = !m.host.is_empty()
        && m.host.len() <= 253
        && m.host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !host_ok {
        errs.push(format!(
            "portal.smtp.host `{}` is not a host name or IP address (e.g. mail.example.com)",
            m.host
        ));
    }
    let loopback = m.host == "localhost"
        || m.host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if m.tls == SmtpTls::None && !loopback {
        errs.push(format!(
            "portal.smtp.tls = \"none\" sends reset links in clear text: only to a loopback host, not `{}` (use \"starttls\" or \"tls\")",
            m.host
        ));
    }
    if m.tls == SmtpTls::None && (m.username.is_some() || m.password_env.is_some()) {
        errs.push(
            "portal.smtp: credentials are sent only over TLS: set tls = \"starttls\" or \"tls\""
                .into(),
        );
    }
    if m.username.is_some() != m.password_env.is_some() {
        errs.push("portal.smtp: `username` and `password-env` go together".into());
    }
    if let Some(v) = &m.password_env {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            errs.push(format!(
                "portal.smtp.password-env `{v}` is not an environment variable's name"
            ));
        }
    }
    if m.port == Some(0) {
        errs.push("portal.smtp.port must be between 1 and 65535".into());
    }
    let t = m.timeout.0;
    if t < std::time::Duration::from_secs(1) || t > std::time::Duration::from_secs(300) {
        errs.push("portal.smtp.timeout must be between 1s and 5m".into());
    }
    if let Some(f) = &m.from {
        if f.contains(['\r', '\n']) || crate::manifest::mail_address(f).is_none() {
            errs.push(format!(
                "portal.smtp.from `{f}` is not a mail address (e.g. Developer portal <portal@example.com>)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_gate_limits_are_load_errors_naming_the_key() {
        let parse = |t: &str| -> Limits { toml::from_str(t).unwrap() };
        for (toml, expected) in [
            (
                "step-concurrency = 0",
                "limits.step-concurrency = 0 must be between 1 and 100000",
            ),
            (
                "step-queue-timeout = \"2h\"",
                "limits.step-queue-timeout = 7200s must be between 1ms and 1h",
            ),
            (
                "step-quarantine = { failures = 0 }",
                "limits.step-quarantine.failures = 0 must be between 1 and 100000",
            ),
            (
                "step-quarantine = { cool-down = \"2m\" }",
                "limits.step-quarantine.max-cool-down = 60s must be at least quarantine.cool-down = 120s",
            ),
        ] {
            let mut errs = Vec::new();
            check_step_limits(&parse(toml), &mut errs);
            assert_eq!(errs, vec![expected.to_string()], "{toml}");
        }
        let mut errs = Vec::new();
        check_step_limits(
            &parse("step-concurrency = 4\nstep-quarantine = { failures = 3, window = \"1m\" }"),
            &mut errs,
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("tollgate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn every_error_of_the_gateway_file_in_order_after_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"
schema = 2
[[listener]]
name = "main"
address = "localhost:8080"
[[listener]]
name = "main"
address = "127.0.0.1:8081"
[admin]
address = "0.0.0.0:8001"
max-body = "512B"
[limits]
step-memory = "512KiB"
step-timeout = "31s"
max-headers = 0
max-header-bytes = "4KiB"
max-request-target = "128B"
plugin-log-rate = 0
max-instances = 0
[outbound]
ca-file = "missing.pem"
"#,
        );
        let errs = read_gateway_file(&path).unwrap_err().0;
        let p = path.display();
        let expected = [
            "schema 2 is not supported (this build reads schema 1)".to_string(),
            "listener `main`: address `localhost:8080` is not IP:port (e.g. 127.0.0.1:8080)".into(),
            "listener name `main` is used twice".into(),
            "admin.address `0.0.0.0:8001` is not a loopback address: the admin API carries bearer tokens, so it needs `tls` there (or use 127.0.0.1)".into(),
            "admin.max-body = 512 bytes must be between 1KiB and 64MiB".into(),
            format!("limits.step-memory = 524288 bytes must be between 1MiB and {}MiB", MAX_STEP_MEMORY >> 20),
            "limits.step-timeout = 31s must be between 1ms and 30s".into(),
            "limits.max-headers is too small to serve anything (remove it for the default)".into(),
            "limits.max-header-bytes is too small to serve anything (remove it for the default)".into(),
            "limits.max-request-target = 128 bytes must be between 256 bytes and 64KiB".into(),
        ];
        for (i, e) in expected.iter().enumerate() {
            assert_eq!(errs[i], format!("{p}: {e}"), "error {i}");
        }
        let rest = &errs[expected.len()..];
        assert!(
            rest[0].starts_with(&format!("{p}: limits.plugin-log-rate = 0 ")),
            "{rest:?}"
        );
        assert_eq!(
            rest[1],
            format!("{p}: limits.max-instances must be between 1 and 100000")
        );
        assert!(
            rest[2].starts_with(&format!("{p}: outbound.ca-file: ")),
            "{rest:?}"
        );
        assert!(rest[2].contains("missing.pem"), "{rest:?}");
        assert_eq!(rest.len(), 3, "{rest:?}");
    }

    #[test]
    fn a_valid_gateway_file_is_read_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "schema = 1\n[[listener]]\nname = \"main\"\naddress = \"127.0.0.1:8080\"\n[admin]\naddress = \"127.0.0.1:8001\"\n",
        );
        let mut inputs = Inputs::default();
        let gw = read_gateway_file_recording(&path, &mut inputs).unwrap();
        assert_eq!(gw.listeners.len(), 1);
        assert!(inputs.relevant(&path));
        assert!(inputs.unchanged());
        std::fs::write(&path, "schema = 1\n").unwrap();
        assert!(!inputs.unchanged(), "the bytes the build read are recorded");
    }

    #[test]
    fn a_missing_or_broken_gateway_file_is_recorded_as_unread() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let mut inputs = Inputs::default();
        let errs = read_gateway_file_recording(&missing, &mut inputs)
            .unwrap_err()
            .0;
        assert!(
            errs[0].starts_with(&format!("{}: cannot read: ", missing.display())),
            "{errs:?}"
        );
        assert!(inputs.relevant(&missing));
        assert!(
            !inputs.unchanged(),
            "a file not read never counts as unchanged"
        );

        let path = write(dir.path(), "schema = 1\n[[listener]\n");
        let mut inputs = Inputs::default();
        let errs = read_gateway_file_recording(&path, &mut inputs)
            .unwrap_err()
            .0;
        assert!(
            errs[0].starts_with(&format!("{}: TOML parse error", path.display())),
            "{errs:?}"
        );
        assert!(!inputs.unchanged());
    }
}
