//! The portal's outgoing mail. The outbox (`[portal] outbox`) writes each
//! message as one `.eml` file (RFC 5322, UTF-8 text), atomically: a
//! temporary file, synced, then renamed into place — a reader (the demo's
//! operator, the tests, the relay) never sees half a message.
//!
//! With `[portal] smtp` a [`Relay`] sends the folder on: each message is
//! deleted only once the SMTP server accepted it, so a message written is
//! never lost to a server that is down, slow or restarting (it is retried
//! with a backoff, and on the next start); a message the server refuses
//! for good (5xx) moves to `failed/` beside a `.why` file.

use crate::manifest::{SmtpSpec, SmtpTls};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A folder of `.eml` files.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    /// Wakes the relay when a message is written.
    written: Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// The outbox in `dir`, created if missing.
    pub fn open(dir: &Path) -> anyhow::Result<Outbox> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("portal outbox {}: {e}", dir.display()))?;
        Ok(Outbox {
            dir: dir.to_path_buf(),
            written: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Write one message; its path. `to` and `subject` must not hold line
    /// breaks (the registry's emails cannot).
    pub fn send(
        &self,
        from: &str,
        to: &str,
        subject: &str,
        body: &str,
    ) -> std::io::Result<PathBuf> {
        let bad = |s: &str| s.contains(['\r', '\n']);
        if bad(from) || bad(to) || bad(subject) {
            return Err(std::io::Error::other("a header holds a line break"));
        }
        let id = crate::control::admin::registry::new_token();
        let now = crate::domain::time::Ts::now();
        let date = jiff::Timestamp::from_millisecond(now.0 as i64)
            .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string())
            .unwrap_or_default();
        let text = format!(
            "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}@tollgate.portal>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
            body.replace("\r\n", "\n").replace('\n', "\r\n")
        );
        let name = format!("{}-{}", now.0, &id[..12]);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(format!("{name}.eml"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir);
        self.written.notify_one();
        Ok(path)
    }

    /// The messages waiting, oldest first (names start with the time).
    fn waiting(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The envelope of a message the outbox wrote: the addresses of its
/// `From` and `To` headers (one line each: the outbox refuses line breaks).
fn envelope(text: &str) -> Option<lettre::address::Envelope> {
    let head = text.split("\r\n\r\n").next()?;
    let field = |name: &str| {
        head.split("\r\n")
            .find_map(|l| l.strip_prefix(name))
            .and_then(crate::manifest::mail_address)
            .and_then(|a| a.parse::<lettre::Address>().ok())
    };
    lettre::address::Envelope::new(Some(field("From: ")?), vec![field("To: ")?]).ok()
}

/// Sends the outbox to an SMTP server, oldest message first.
pub struct Relay {
    outbox: Outbox,
    smtp: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    server: String,
}

/// The first wait after a failed delivery; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the folder is looked at without a new message (mail written
/// by an earlier run, or put there by hand).
const SCAN: Duration = Duration::from_secs(30);

impl Relay {
    /// The relay of `outbox` to the server of `spec`; `base` resolves `ca`.
    /// The password is read from its environment variable now.
    pub fn new(outbox: Outbox, spec: &SmtpSpec, base: &Path) -> anyhow::Result<Relay> {
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        let tls = || -> anyhow::Result<TlsParameters> {
            let mut b = TlsParameters::builder(spec.host.trim_matches(['[', ']']).to_string());
            if let Some(ca) = &spec.ca {
                let path = crate::loader::resolve(base, ca);
                let pem = std::fs::read(&path)
                    .map_err(|e| anyhow::anyhow!("portal.smtp.ca {}: {e}", path.display()))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "portal.smtp.ca {}: not PEM certificates: {e}",
                        path.display()
                    )
                })?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls()
                .map_err(|e| anyhow::anyhow!("portal.smtp: TLS set-up: {e}"))
        };
        let (tls, port) = match spec.tls {
            SmtpTls::Starttls => (Tls::Required(tls()?), 587),
            SmtpTls::Tls => (Tls::Wrapper(tls()?), 465),
            SmtpTls::None => (Tls::None, 25),
        };
        let port = spec.port.unwrap_or(port);
        let mut b = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(
            spec.host.trim_matches(['[', ']']),
        )
        .port(port)
        .tls(tls)
        .timeout(Some(spec.timeout.0));
        if let (Some(user), Some(var)) = (&spec.username, &spec.password_env) {
            let password = std::env::var(var).map_err(|_| {
                anyhow::anyhow!(
                    "portal.smtp.password-env: the environment variable {var} is not set"
                )
            })?;
            b = b.credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password,
            ));
        }
        Ok(Relay {
            outbox,
            smtp: b.build(),
            server: format!("{}:{port}", spec.host),
        })
    }

    /// Deliver until the process ends: every waiting message, then wait for
    /// a new one (or [`SCAN`]); after a failure wait a backoff first.
    pub async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let wait = match self.deliver_waiting().await {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    SCAN
                }
                Err(()) => {
                    let w = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    w
                }
            };
            let _ = tokio::time::timeout(wait, self.outbox.written.notified()).await;
        }
    }

    /// Send every waiting message; `Err` at the first that could not be
    /// sent for now (the rest wait behind it).
    async fn deliver_waiting(&self) -> Result<(), ()> {
        use lettre::AsyncTransport as _;
        for path in self.outbox.waiting() {
            let Ok(bytes) = std::fs::read(&path) else {
                continue; // gone meanwhile
            };
            let text = String::from_utf8_lossy(&bytes);
            let Some(env) = envelope(&text) else {
                self.set_aside(&path, "no From or To address the relay can send to");
                continue;
            };
            match self.smtp.send_raw(&env, &bytes).await {
                Ok(_) => {
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(
                            "portal mail: sent {} but could not remove it: {e}",
                            path.display()
                        );
                    }
                    sync_dir(&self.outbox.dir);
                    tracing::info!("portal mail: {} sent to {}", file_name(&path), self.server);
                }
                Err(e) if e.is_permanent() => {
                    self.set_aside(&path, &format!("{} refused it: {e}", self.server));
                }
                Err(e) => {
                    tracing::warn!(
                        "portal mail: {} not sent to {} (retried): {e}",
                        file_name(&path),
                        self.server
                    );
                    return Err(());
                }
            }
        }
        Ok(())
    }

    /// Move a message the server will never take to `failed/`, with why.
    fn set_aside(&self, path: &Path, why: &str) {
        tracing::error!("portal mail: {}: {why}; moved to failed/", file_name(path));
        let failed = self.outbox.dir.join("failed");
        let moved = std::fs::create_dir_all(&failed).and_then(|()| {
            let to = failed.join(path.file_name().unwrap_or_default());
            std::fs::write(to.with_extension("why"), format!("{why}\n"))?;
            std::fs::rename(path, &to)
        });
        if let Err(e) = moved {
            tracing::error!(
                "portal mail: could not move {} to failed/: {e}",
                path.display()
            );
        }
        sync_dir(&self.outbox.dir);
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_message_and_no_header_injection() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("out")).unwrap();
        let p = o
            .send(
                "portal@x",
                "a@b.io",
                "Reset",
                "line 1\nhttp://x/reset?token=t",
            )
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("To: a@b.io\r\n") && text.contains("line 1\r\nhttp://x/"));
        assert!(o
            .send("portal@x", "a@b.io\r\nBcc: e@v.il", "s", "b")
            .is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].ends_with(".eml"));
        assert_eq!(o.waiting(), vec![p.clone()]);
        let env = envelope(&text).expect("an envelope");
        assert_eq!(
            env.from().map(|a| a.to_string()).as_deref(),
            Some("portal@x")
        );
        assert_eq!(env.to()[0].to_string(), "a@b.io");
    }

    #[test]
    fn envelopes_need_both_addresses() {
        assert!(envelope("From: P <p@x.io>\r\nTo: a@b.io\r\n\r\nhi").is_some());
        assert!(envelope("From: P <p@x.io>\r\n\r\nTo: a@b.io").is_none());
        assert!(envelope("To: a@b.io\r\n\r\n").is_none());
        assert!(envelope("From: nobody\r\nTo: a@b.io\r\n\r\n").is_none());
        assert!(envelope("").is_none());
    }
}
