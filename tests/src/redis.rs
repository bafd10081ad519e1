//! Real `redis-server` processes for the cluster-mode tests: each on a free
//! loopback port with its own temporary directory, stopped by its process
//! id when dropped (SIGKILL: nothing of a test outlives it). A three-master
//! Redis Cluster is made with `redis-cli --cluster create`; a master with a
//! replica watched by a Sentinel, with `redis-server --sentinel`.

use crate::{free_port, ChildGuard};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a server keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk.
    None,
    /// AOF, fsynced before each write is acknowledged (`appendfsync always`).
    AofAlways,
    /// A Redis Cluster node (no persistence).
    ClusterNode,
}

/// One `redis-server`.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    persistence: Persistence,
    /// A replica of the server on this port.
    replica_of: Option<u16>,
    child: Option<ChildGuard>,
}

impl RedisServer {
    /// A server without persistence in a fresh directory.
    pub fn start() -> RedisServer {
        Self::start_with(Persistence::None)
    }

    /// A server in a fresh directory.
    pub fn start_with(persistence: Persistence) -> RedisServer {
        Self::start_as(persistence, None)
    }

    /// A replica of the server on `master`, in a fresh directory.
    pub fn start_replica(persistence: Persistence, master: u16) -> RedisServer {
        Self::start_as(persistence, Some(master))
    }

    fn start_as(persistence: Persistence, replica_of: Option<u16>) -> RedisServer {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = RedisServer {
            port: free_port(),
            dir,
            _tmp: Some(tmp),
            persistence,
            replica_of,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .args(["--logfile", "redis.log"]);
        match self.persistence {
            Persistence::None => {
                cmd.args(["--appendonly", "no"]);
            }
            Persistence::AofAlways => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
            }
            Persistence::ClusterNode => {
                cmd.args(["--appendonly", "no", "--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", "nodes.conf"])
                    .args(["--cluster-node-timeout", "2000"]);
            }
        }
        if let Some(master) = self.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (apt-get install redis-server)");
        self.child = Some(ChildGuard(child));
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if command(self.port, &["PING"]).is_ok_and(|r| r.starts_with("+PONG")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not come up:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its directory (the AOF and the log are there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// SIGKILL it (no chance to flush anything) and wait for it to go.
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Start it again on the same port and directory (after [`kill`]).
    ///
    /// [`kill`]: RedisServer::kill
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.spawn();
    }

    /// Send one command, the answer in RESP as text.
    pub fn cmd(&self, args: &[&str]) -> String {
        command(self.port, args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}

/// One command in RESP over a fresh connection; the raw reply.
pub fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(out.as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A Redis Cluster of three masters (no replicas), made by the test.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<_> = (0..3)
            .map(|_| RedisServer::start_with(Persistence::ClusterNode))
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create (apt-get install redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            while !n.cmd(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster is not ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// The seed URLs, one per master.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }
}

/// The master's name the Sentinel of [`RedisSentinel`] watches.
pub const SENTINEL_MASTER: &str = "tollgate";

/// A master (AOF, `appendfsync always`), one replica of it and one Sentinel
/// watching them (quorum 1, the master down after 500 ms without an
/// answer): killing the master promotes the replica within a few seconds.
pub struct RedisSentinel {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel_port: u16,
    dir: tempfile::TempDir,
    _sentinel: ChildGuard,
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let master = RedisServer::start_with(Persistence::AofAlways);
        let replica = RedisServer::start_replica(Persistence::AofAlways, master.port);
        let dir = tempfile::tempdir().unwrap();
        let sentinel_port = free_port();
        // The Sentinel rewrites its file as it learns: it must be its own.
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 logfile sentinel.log\n\
                 sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 500\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 5000\n\
                 sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                dir = dir.path().display(),
                master = master.port,
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server --sentinel");
        let s = RedisSentinel {
            master,
            replica,
            sentinel_port,
            dir,
            _sentinel: ChildGuard(child),
        };
        // Up, in step with the master, and knowing its replica.
        let deadline = Instant::now() + Duration::from_secs(30);
        let replica = format!("{}", s.replica.port);
        loop {
            let synced = s
                .master
                .cmd(&["INFO", "replication"])
                .contains("connected_slaves:1");
            let known = command(sentinel_port, &["SENTINEL", "REPLICAS", SENTINEL_MASTER])
                .is_ok_and(|r| r.contains(&replica));
            if synced && known {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinel set did not come up:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:PORT` of the Sentinel.
    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The port the Sentinel names as the master now.
    pub fn master_port(&self) -> Option<u16> {
        let r = command(
            self.sentinel_port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
        )
        .ok()?;
        r.lines()
            .filter(|l| !l.starts_with(['*', '$']))
            .nth(1)?
            .trim()
            .parse()
            .ok()
    }

    /// Wait until the replica has every write the master has taken.
    pub fn wait_replicated(&self) {
        let offset = |s: &RedisServer, field: &str| -> Option<u64> {
            s.cmd(&["INFO", "replication"])
                .lines()
                .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = offset(&self.master, "master_repl_offset:");
            let r = offset(&self.replica, "slave_repl_offset:");
            if m.is_some() && m == r {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica is behind: {m:?} {r:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The Sentinel's log, then the servers'.
    pub fn log(&self) -> String {
        format!(
            "sentinel:\n{}\nmaster:\n{}\nreplica:\n{}",
            std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default(),
            self.master.log(),
            self.replica.log()
        )
    }
}
