//! A gateway as a process of its own (the real `tollgate` binary), in its
//! own folder with its own data directory, public port and admin port:
//! killed and restarted by the tests (a cluster's nodes, a data node that
//! starts while Redis is gone). Stopped by its process id when dropped.

use crate::admin::AdminClient;
use crate::{free_port, gateway_command, plugin_cache, plugin_dir, ChildGuard};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One gateway process.
pub struct GatewayProcess {
    pub port: u16,
    pub admin_port: u16,
    dir: tempfile::TempDir,
    child: Option<ChildGuard>,
}

impl GatewayProcess {
    /// A gateway serving `manifest` (its `api.toml`), its admin API (with
    /// public metrics) on a port of its own, and `extra` appended to its
    /// gateway file (a `[cluster]` section ...). Returns once both
    /// listeners answer.
    pub async fn start(manifest: &str, extra: &str) -> GatewayProcess {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin_port) = (free_port(), free_port());
        std::fs::write(dir.path().join("api.toml"), manifest).unwrap();
        let gw = format!(
            r#"schema = 1
data-dir = "data"
policies = ["api.toml"]

[[listener]]
name = "public"
address = "127.0.0.1:{port}"

[plugins]
dirs = [{plugins:?}]
cache-dir = {cache:?}

[reload]
watch = false

[admin]
address = "127.0.0.1:{admin_port}"

[metrics]
public = true

{extra}
"#,
            plugins = plugin_dir().display().to_string(),
            cache = plugin_cache().display().to_string(),
        );
        std::fs::write(dir.path().join("tollgate.toml"), gw).unwrap();
        let mut p = GatewayProcess {
            port,
            admin_port,
            dir,
            child: None,
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        let started = Instant::now();
        let log = std::fs::File::create(self.dir.path().join("stderr.log")).unwrap();
        let child = gateway_command(&self.dir.path().join("tollgate.toml"))
            .stderr(log)
            .spawn()
            .expect("starting tollgate");
        self.child = Some(ChildGuard(child));
        let c = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().0.try_wait() {
                panic!("the gateway exited at start ({status}):\n{}", self.log());
            }
            let admin = c
                .get(self.admin_url("/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if admin && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                eprintln!("a gateway process started in {:?}", started.elapsed());
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the gateway did not come up:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL it.
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Kill it (if it runs) and start it again on its folder and data
    /// directory, on fresh ports (the old ones may be taken meanwhile).
    pub async fn restart(&mut self) {
        self.child = None;
        let config = self.dir.path().join("tollgate.toml");
        let (port, admin_port) = (free_port(), free_port());
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace(&format!(":{}\"", self.port), &format!(":{port}\""))
            .replace(
                &format!(":{}\"", self.admin_port),
                &format!(":{admin_port}\""),
            );
        std::fs::write(&config, text).unwrap();
        (self.port, self.admin_port) = (port, admin_port);
        self.spawn().await;
    }

    /// [`restart`](Self::restart) with an empty data directory: whatever
    /// it counts after this is not in its own store.
    pub async fn restart_fresh(&mut self) {
        self.child = None;
        let _ = std::fs::remove_dir_all(self.path().join("data"));
        self.restart().await;
    }

    /// Its folder (the gateway file, `api.toml`, `data/`, `stderr.log`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:PORT{path}` on its public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The same on its admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Its admin API with this bearer token.
    pub fn admin(&self, token: &str) -> AdminClient {
        AdminClient::new(self.admin_url(""), token.to_string())
    }

    /// What it wrote to standard error.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.0.id())
    }

    /// A scrape of its metrics (public on the admin listener).
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}
