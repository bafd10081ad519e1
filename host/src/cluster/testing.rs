//! A real `redis-server` for the host's unit tests: a free loopback port,
//! its own temporary directory, killed by its process id when dropped.

use super::{Cluster, ClusterSpec};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct TestRedis {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestRedis {
    pub fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        Self::start_on(port)
    }

    pub fn start_on(port: u16) -> TestRedis {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // DEBUG SLEEP stands for a Redis that stops answering.
            .args(["--enable-debug-command", "local"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (apt-get install redis-server)");
        let r = TestRedis {
            port,
            _dir: dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !r.cmd(&["PING"]).starts_with("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// One command in RESP; the raw reply ("" when it cannot connect).
    pub fn cmd(&self, args: &[&str]) -> String {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(out.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// A spec for this server with `extra` TOML lines.
    pub fn spec(&self, extra: &str) -> ClusterSpec {
        spec_for(self.port, extra)
    }
}

/// `[cluster]` for a server on `port`, with `extra` TOML lines.
pub fn spec_for(port: u16, extra: &str) -> ClusterSpec {
    toml::from_str(&format!("url = \"redis://127.0.0.1:{port}\"\n{extra}")).unwrap()
}

/// A started link, once connected (at most 10 s).
pub async fn connected(spec: &ClusterSpec) -> Arc<Cluster> {
    let c = Cluster::start(spec).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.connected() {
        assert!(Instant::now() < deadline, "no connection to redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
