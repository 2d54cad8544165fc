//! The cascade's control plane in Redis (or Valkey): which nodes are alive, which nodes hold a
//! room, which node owns a track, and each node's load.
//!
//! Keys (`{p}` is the prefix, `plenary` by default):
//!
//! | key | type | holds | lifetime |
//! | --- | --- | --- | --- |
//! | `{p}:nodes` | set | names of every node that has beaten and not been removed | members removed by `remove_node` / sweeps |
//! | `{p}:node:{name}` | string | JSON [`NodeInfo`] (load, addresses, draining) | `PX` heartbeat TTL (3 s); its absence means dead |
//! | `{p}:node:{name}:rooms` | set | rooms the node joined or holds tracks in, so removal needs no `SCAN` | deleted with the node |
//! | `{p}:room:{room}:nodes` | set | names of the nodes holding the room | members removed on leave / node removal |
//! | `{p}:room:{room}:tracks` | hash | track id → owner node name | fields removed on clear / leave / node removal |
//!
//! A node whose `{p}:node:{name}` key has expired is dead. Any live node removes a dead node's
//! entries (sweeps, and reads that meet it), in Lua so the check and the removal are one step.
//! If every node dies, the entries stay until the next node starts and sweeps.
//!
//! Every call is bounded by a short timeout (500 ms by default) and reports
//! [`DirectoryError::Unreachable`] instead of waiting: losing Redis must never hold up media.
//! The [`ConnectionManager`] reconnects by itself once Redis is back.

mod presence;
mod scripts;
mod url;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult};

pub use presence::{spawn_presence, Presence};
use scripts::SCRIPTS;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "plenary";
/// Default bound on one directory call.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(500);
/// Default heartbeat period of [`spawn_presence`].
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default heartbeat TTL: a node missing for this long is dead.
pub const DEFAULT_HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// Gauge: 1 while the presence task reaches the directory, else 0.
pub const DIRECTORY_UP: &str = "plenary_cascade_directory_up";

/// Longest node or room name; names are also limited to `A-Z a-z 0-9 - _ .` so that no name
/// can forge another's key (a node named `x:rooms` would).
pub const MAX_NAME_LEN: usize = 64;
/// Longest track id.
pub const MAX_TRACK_LEN: usize = 256;

/// What a node publishes about itself with each heartbeat.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// Base URL clients use, e.g. `http://127.0.0.1:8280`.
    pub http: String,
    /// QUIC cascade link address.
    pub cascade: SocketAddr,
    /// Participants now.
    #[serde(default)]
    pub load: u32,
    /// 0 = no limit.
    #[serde(default)]
    pub max_load: u32,
    #[serde(default)]
    pub draining: bool,
}

impl NodeInfo {
    /// Whether the node takes new participants: not draining and under its limit.
    pub fn has_capacity(&self) -> bool {
        !self.draining && (self.max_load == 0 || self.load < self.max_load)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory unreachable at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("bad directory URL {0}: expected redis://HOST:PORT[/DB]")]
    BadUrl(String),
    #[error("bad {what} {name:?}: expected {rule}")]
    BadName {
        what: &'static str,
        name: String,
        rule: &'static str,
    },
    #[error("node {0} has no live heartbeat in the directory; it must beat before joining rooms")]
    NotRegistered(String),
    #[error("directory at {url} refused a command: {cause}")]
    Command { url: String, cause: String },
}

impl DirectoryError {
    /// True when Redis could not be reached or did not answer in time.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DirectoryError::Unreachable { .. })
    }
}

/// A handle on the directory; cheap to clone, all clones share one connection.
#[derive(Clone)]
pub struct Directory {
    con: ConnectionManager,
    prefix: Arc<str>,
    url: Arc<str>,
    op_timeout: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Directory {
    /// Parses `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]` (other schemes give
    /// [`DirectoryError::BadUrl`]) and connects. Fails with `Unreachable` within about a
    /// second when Redis does not answer; afterwards the connection reconnects by itself.
    pub async fn connect(url: &str, prefix: &str) -> Result<Directory, DirectoryError> {
        let parsed = url::parse(url)?;
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX
        } else {
            prefix
        };
        if prefix.len() > MAX_NAME_LEN
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(DirectoryError::BadName {
                what: "key prefix",
                name: prefix.to_string(),
                rule: "1 to 64 characters of A-Z a-z 0-9 - _ . :",
            });
        }
        let op_timeout = DEFAULT_OP_TIMEOUT;
        let unreachable = |cause: String| DirectoryError::Unreachable {
            url: parsed.shown.clone(),
            cause,
        };
        let client =
            redis::Client::open(parsed.info.clone()).map_err(|e| unreachable(e.to_string()))?;
        // One attempt per reconnect: each later call that finds the connection down starts a
        // fresh attempt, so the first call after Redis returns (or the one after) succeeds,
        // instead of waiting out an exponential backoff.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(op_timeout)
            .set_response_timeout(op_timeout);
        let con = tokio::time::timeout(
            2 * op_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| {
            unreachable(format!(
                "no answer within {} ms",
                2 * op_timeout.as_millis()
            ))
        })?
        .map_err(|e| unreachable(e.to_string()))?;
        Ok(Directory {
            con,
            prefix: prefix.into(),
            url: parsed.shown.into(),
            op_timeout,
        })
    }

    /// Changes the bound on each call (default 500 ms).
    pub fn with_op_timeout(mut self, timeout: Duration) -> Directory {
        self.op_timeout = timeout;
        self
    }

    /// The URL, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// SET `{p}:node:{name}` to the JSON of `me` with a `ttl` expiry, and adds the name to
    /// `{p}:nodes`.
    pub async fn heartbeat(&self, me: &NodeInfo, ttl: Duration) -> Result<(), DirectoryError> {
        self.register(me, ttl).await.map(|_| ())
    }

    /// Like [`heartbeat`](Self::heartbeat); true when the directory did not know the node
    /// (first beat, Redis restarted empty, or peers removed it after missed beats), in which
    /// case its rooms and tracks are gone and must be announced again.
    pub async fn register(&self, me: &NodeInfo, ttl: Duration) -> Result<bool, DirectoryError> {
        check_name("node name", &me.name)?;
        let json = serde_json::to_string(me).expect("NodeInfo serializes");
        let ttl_ms = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.node_key(&me.name))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SADD")
            .arg(self.key("nodes"))
            .arg(&me.name);
        let mut con = self.con.clone();
        let (added,): (i64,) = self.run(pipe.query_async(&mut con)).await?;
        Ok(added == 1)
    }

    /// Live nodes (whose heartbeat key still exists). Dead ones met on the way are removed.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, DirectoryError> {
        let mut inv = SCRIPTS.nodes.prepare_invoke();
        inv.arg(&*self.prefix);
        let mut con = self.con.clone();
        let json: Vec<String> = self.run(inv.invoke_async(&mut con)).await?;
        Ok(decode(json))
    }

    /// Adds `me` to the room and returns the live nodes holding it, `me` included. Fails with
    /// [`DirectoryError::NotRegistered`] when `me` has no live heartbeat.
    pub async fn join_room(&self, room: &str, me: &str) -> Result<Vec<NodeInfo>, DirectoryError> {
        check_name("room name", room)?;
        check_name("node name", me)?;
        let mut inv = SCRIPTS.join.prepare_invoke();
        inv.arg(&*self.prefix).arg(room).arg(me);
        let mut con = self.con.clone();
        let json: Option<Vec<String>> = self.run(inv.invoke_async(&mut con)).await?;
        match json {
            Some(json) => Ok(decode(json)),
            None => Err(DirectoryError::NotRegistered(me.to_string())),
        }
    }

    /// The live nodes holding the room.
    pub async fn room_nodes(&self, room: &str) -> Result<Vec<NodeInfo>, DirectoryError> {
        check_name("room name", room)?;
        let mut inv = SCRIPTS.room.prepare_invoke();
        inv.arg(&*self.prefix).arg(room);
        let mut con = self.con.clone();
        let json: Vec<String> = self.run(inv.invoke_async(&mut con)).await?;
        Ok(decode(json))
    }

    /// Removes `me` from the room, and the room's tracks that `me` owns.
    pub async fn leave_room(&self, room: &str, me: &str) -> Result<(), DirectoryError> {
        check_name("room name", room)?;
        check_name("node name", me)?;
        let mut inv = SCRIPTS.leave.prepare_invoke();
        inv.arg(&*self.prefix).arg(room).arg(me);
        let mut con = self.con.clone();
        self.run(inv.invoke_async::<i64>(&mut con))
            .await
            .map(|_| ())
    }

    /// Records `owner` as the node owning `track` in `room`.
    pub async fn set_track(
        &self,
        room: &str,
        track: &str,
        owner: &str,
    ) -> Result<(), DirectoryError> {
        check_name("room name", room)?;
        check_name("node name", owner)?;
        check_track(track)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(self.room_key(room, "tracks"))
            .arg(track)
            .arg(owner)
            .ignore()
            // So that removing the owner finds this room's tracks.
            .cmd("SADD")
            .arg(format!("{}:rooms", self.node_key(owner)))
            .arg(room)
            .ignore();
        let mut con = self.con.clone();
        self.run(pipe.query_async::<()>(&mut con)).await
    }

    pub async fn clear_track(&self, room: &str, track: &str) -> Result<(), DirectoryError> {
        check_name("room name", room)?;
        check_track(track)?;
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(self.room_key(room, "tracks")).arg(track);
        let mut con = self.con.clone();
        self.run(cmd.query_async::<i64>(&mut con)).await.map(|_| ())
    }

    /// The node owning `track` in `room`, if that node is alive.
    pub async fn track_owner(
        &self,
        room: &str,
        track: &str,
    ) -> Result<Option<String>, DirectoryError> {
        check_name("room name", room)?;
        check_track(track)?;
        let mut inv = SCRIPTS.owner.prepare_invoke();
        inv.arg(&*self.prefix).arg(room).arg(track);
        let mut con = self.con.clone();
        self.run(inv.invoke_async(&mut con)).await
    }

    /// Removes everything of a node at once: its heartbeat, its rooms set, its name from
    /// every room and from `{p}:nodes`, and its tracks.
    pub async fn remove_node(&self, name: &str) -> Result<(), DirectoryError> {
        check_name("node name", name)?;
        let mut inv = SCRIPTS.remove.prepare_invoke();
        inv.arg(&*self.prefix).arg(name);
        let mut con = self.con.clone();
        self.run(inv.invoke_async::<i64>(&mut con))
            .await
            .map(|_| ())
    }

    /// Removes every node of `{p}:nodes` whose heartbeat expired; returns their names. The
    /// check and removal of each node are atomic, so concurrent sweeps remove each once.
    pub async fn sweep_dead(&self) -> Result<Vec<String>, DirectoryError> {
        let mut inv = SCRIPTS.sweep.prepare_invoke();
        inv.arg(&*self.prefix);
        let mut con = self.con.clone();
        self.run(inv.invoke_async(&mut con)).await
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn node_key(&self, name: &str) -> String {
        format!("{}:node:{name}", self.prefix)
    }

    fn room_key(&self, room: &str, what: &str) -> String {
        format!("{}:room:{room}:{what}", self.prefix)
    }

    /// Bounds a command by the call timeout and sorts its error.
    async fn run<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> Result<T, DirectoryError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(e)),
            Err(_) => Err(DirectoryError::Unreachable {
                url: self.url.to_string(),
                cause: format!("no answer within {} ms", self.op_timeout.as_millis()),
            }),
        }
    }

    fn classify(&self, e: RedisError) -> DirectoryError {
        let url = self.url.to_string();
        let cause = e.to_string();
        let down = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                ErrorKind::BusyLoadingError | ErrorKind::TryAgain | ErrorKind::MasterDown
            );
        if down {
            DirectoryError::Unreachable { url, cause }
        } else {
            DirectoryError::Command { url, cause }
        }
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), DirectoryError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DirectoryError::BadName {
            what,
            name: name.to_string(),
            rule: "1 to 64 characters of A-Z a-z 0-9 - _ .",
        })
    }
}

fn check_track(track: &str) -> Result<(), DirectoryError> {
    if track.is_empty() || track.len() > MAX_TRACK_LEN {
        return Err(DirectoryError::BadName {
            what: "track id",
            name: track.to_string(),
            rule: "1 to 256 bytes",
        });
    }
    Ok(())
}

/// Entries that do not parse (a node running another version, say) are skipped, not fatal:
/// one odd node must not hide all the others.
fn decode(json: Vec<String>) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = json
        .iter()
        .filter_map(|j| match serde_json::from_str(j) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, entry = %j, "directory: skipping a node entry that does not parse");
                None
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}
