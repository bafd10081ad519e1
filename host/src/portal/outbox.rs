//! The portal's outgoing mail. The file outbox (`[portal] outbox`) writes
//! each message as one `.eml` file (RFC 5322, UTF-8 text), atomically: a
//! temporary file, synced, then renamed into place — a reader (the demo's
//! operator, the tests) never sees half a message. SMTP is not built in:
//! a mail relay that picks up the folder can send them on.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A folder of `.eml` files.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// The outbox in `dir`, created if missing.
    pub fn open(dir: &Path) -> anyhow::Result<Outbox> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("portal outbox {}: {e}", dir.display()))?;
        Ok(Outbox {
            dir: dir.to_path_buf(),
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
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }
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
    }
}
