//! The shared control plane's side in Redis (docs/cluster.md, "The control
//! plane"): the control node's change log — a stream of numbered entries,
//! each one registry batch — a snapshot of the whole registry for nodes
//! that join late or fell behind the log's retention, and the list of
//! nodes, each with its last heartbeat.
//!
//! Keys: `PREFIX:{registry}:log` (stream; entry `SEQ-1`),
//! `PREFIX:{registry}:snapshot` (8 bytes of sequence, then the payload) and
//! `PREFIX:nodes` (hash: node name → its JSON). What an entry's payload
//! means is the registry's business (`control::replica`).

use super::{Cluster, Conn, Failure};
use std::sync::Arc;
use std::time::Duration;

/// Entries the log keeps at least (Redis trims it approximately beyond
/// that); a node further behind loads the snapshot.
pub const LOG_KEEP: usize = 100_000;

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub payload: Vec<u8>,
}

impl Cluster {
    fn log_key(&self) -> String {
        format!("{}:{{registry}}:log", self.spec.key_prefix)
    }

    fn snapshot_key(&self) -> String {
        format!("{}:{{registry}}:snapshot", self.spec.key_prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.spec.key_prefix)
    }

    /// Append entry `seq`: `Ok(false)` when the log already has it or a
    /// later one (appending is idempotent, so a publisher that restarts may
    /// send an entry again).
    pub async fn log_append(&self, seq: u64, payload: &[u8]) -> Result<bool, Failure> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.log_key())
            .arg("MAXLEN")
            .arg("~")
            .arg(LOG_KEEP)
            .arg(format!("{seq}-1"))
            .arg("p")
            .arg(payload);
        match self
            .run("log_append", |c| c.query::<redis::Value>(cmd))
            .await
        {
            Ok(_) => Ok(true),
            Err(Failure::Error(e)) if e.contains("equal or smaller") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The sequence of the log's last entry (0 when the log is empty).
    pub async fn log_last(&self) -> Result<u64, Failure> {
        self.log_end("XREVRANGE", "+", "-").await
    }

    /// The sequence of the log's first entry (0 when the log is empty).
    pub async fn log_first(&self) -> Result<u64, Failure> {
        self.log_end("XRANGE", "-", "+").await
    }

    async fn log_end(&self, verb: &str, from: &str, to: &str) -> Result<u64, Failure> {
        let mut cmd = redis::cmd(verb);
        cmd.arg(self.log_key())
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(1);
        let reply: redis::streams::StreamRangeReply =
            self.run("log_read", |c| c.query(cmd)).await?;
        Ok(reply.ids.first().map_or(0, |e| seq_of(&e.id)))
    }

    /// Record this node's heartbeat (`json`) under `node`.
    pub async fn heartbeat(&self, node: &str, json: &str) -> Result<(), Failure> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.nodes_key()).arg(node).arg(json);
        let _: i64 = self.run("heartbeat", |c| c.query(cmd)).await?;
        Ok(())
    }

    /// Every node's last heartbeat, by name.
    pub async fn nodes(&self) -> Result<Vec<(String, String)>, Failure> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.nodes_key());
        let mut v: Vec<(String, String)> = self.run("nodes", |c| c.query(cmd)).await?;
        v.sort();
        Ok(v)
    }

    /// A connection of its own, for calls that wait or carry much (a
    /// blocking read of the log, a snapshot).
    pub fn dedicated(self: &Arc<Self>) -> Dedicated {
        Dedicated {
            cluster: self.clone(),
            conn: None,
        }
    }
}

/// A connection to Redis that only its owner uses: a blocking read does not
/// hold up the data path's calls. Reconnects on the next call after a
/// failure.
pub struct Dedicated {
    cluster: Arc<Cluster>,
    conn: Option<Conn>,
}

impl Dedicated {
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: redis::Cmd,
        within: Duration,
    ) -> Result<T, Failure> {
        let c = &self.cluster;
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => match tokio::time::timeout(c.spec.connect_timeout.0, c.connect()).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(Failure::Error(e.to_string())),
                Err(_) => return Err(Failure::Timeout),
            },
        };
        match tokio::time::timeout(within, conn.clone().query(cmd)).await {
            Ok(Ok(v)) => {
                self.conn = Some(conn);
                Ok(v)
            }
            Ok(Err(e)) => {
                if super::is_answer(&e) {
                    self.conn = Some(conn);
                }
                Err(Failure::Error(e.to_string()))
            }
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// The log's entries after `seq`, at most `count`, waiting up to
    /// `block` for one to arrive.
    pub async fn read_after(
        &mut self,
        seq: u64,
        block: Duration,
        count: usize,
    ) -> Result<Vec<LogEntry>, Failure> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.cluster.log_key())
            .arg(format!("{seq}-1"));
        let within = block + self.cluster.timeout + Duration::from_secs(1);
        let reply: Option<redis::streams::StreamReadReply> = self.query(cmd, within).await?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for id in key.ids {
                let payload = match id.map.get("p") {
                    Some(redis::Value::BulkString(b)) => b.clone(),
                    _ => {
                        return Err(Failure::Error(format!(
                            "log entry {} has no payload",
                            id.id
                        )))
                    }
                };
                out.push(LogEntry {
                    seq: seq_of(&id.id),
                    payload,
                });
            }
        }
        Ok(out)
    }

    /// Replace the snapshot with the registry as of `seq`.
    pub async fn snapshot_put(&mut self, seq: u64, payload: &[u8]) -> Result<(), Failure> {
        let mut value = seq.to_be_bytes().to_vec();
        value.extend_from_slice(payload);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.cluster.snapshot_key()).arg(value);
        let _: () = self.query(cmd, Duration::from_secs(30)).await?;
        Ok(())
    }

    /// The snapshot's sequence (0: none), without its payload.
    pub async fn snapshot_seq(&mut self) -> Result<u64, Failure> {
        let mut cmd = redis::cmd("GETRANGE");
        cmd.arg(self.cluster.snapshot_key()).arg(0).arg(7);
        let b: Vec<u8> = self.query(cmd, Duration::from_secs(5)).await?;
        Ok(b.try_into().map_or(0, u64::from_be_bytes))
    }

    /// The snapshot: its sequence and payload.
    pub async fn snapshot(&mut self) -> Result<Option<(u64, Vec<u8>)>, Failure> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.cluster.snapshot_key());
        let v: Option<Vec<u8>> = self.query(cmd, Duration::from_secs(30)).await?;
        Ok(v.filter(|v| v.len() >= 8).map(|mut v| {
            let payload = v.split_off(8);
            (u64::from_be_bytes(v.try_into().unwrap_or([0; 8])), payload)
        }))
    }
}

/// The sequence of a log entry's id (`SEQ-1`); 0 for any other id.
fn seq_of(id: &str) -> u64 {
    id.split_once('-')
        .and_then(|(s, _)| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_their_sequence() {
        assert_eq!(seq_of("42-1"), 42);
        assert_eq!(seq_of("1733400000000-0"), 1_733_400_000_000);
        assert_eq!(seq_of("garbage"), 0);
        assert_eq!(seq_of("-1"), 0);
    }

    #[tokio::test]
    async fn the_log_appends_once_reads_in_order_and_snapshots_round_trip() {
        let redis = super::super::testing::TestRedis::start();
        let c = super::super::testing::connected(&redis.spec("")).await;
        assert_eq!(c.log_last().await.unwrap(), 0);
        assert!(c.log_append(1, b"one").await.unwrap());
        assert!(c.log_append(2, b"two").await.unwrap());
        // Again, or an older one: not added.
        assert!(!c.log_append(2, b"two").await.unwrap());
        assert!(!c.log_append(1, b"one").await.unwrap());
        assert_eq!(
            (c.log_first().await.unwrap(), c.log_last().await.unwrap()),
            (1, 2)
        );
        let mut d = c.dedicated();
        let got = d
            .read_after(0, Duration::from_millis(10), 10)
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                LogEntry {
                    seq: 1,
                    payload: b"one".to_vec()
                },
                LogEntry {
                    seq: 2,
                    payload: b"two".to_vec()
                }
            ]
        );
        // Nothing after 2: the read waits its block, then returns none.
        let t = std::time::Instant::now();
        assert!(d
            .read_after(2, Duration::from_millis(200), 10)
            .await
            .unwrap()
            .is_empty());
        assert!(t.elapsed() >= Duration::from_millis(150));
        // A blocked read returns as soon as an entry is appended.
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            let mut d = c2.dedicated();
            d.read_after(2, Duration::from_secs(5), 10).await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = std::time::Instant::now();
        c.log_append(3, b"three").await.unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got[0].seq, 3);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(d.snapshot_seq().await.unwrap(), 0);
        assert_eq!(d.snapshot().await.unwrap(), None);
        d.snapshot_put(3, b"state").await.unwrap();
        assert_eq!(d.snapshot_seq().await.unwrap(), 3);
        assert_eq!(d.snapshot().await.unwrap(), Some((3, b"state".to_vec())));
        c.heartbeat("b", "{}").await.unwrap();
        c.heartbeat("a", "{\"x\":1}").await.unwrap();
        assert_eq!(
            c.nodes().await.unwrap(),
            vec![("a".into(), "{\"x\":1}".into()), ("b".into(), "{}".into())]
        );
        // A stranger's entry without a payload is an error, not a panic.
        redis.cmd(&["XADD", "tollgate:{registry}:log", "9-1", "q", "x"]);
        assert!(d
            .read_after(3, Duration::from_millis(10), 10)
            .await
            .is_err());
    }
}
