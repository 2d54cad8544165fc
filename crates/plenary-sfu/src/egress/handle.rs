//! The HTTP side's handle on the egress supervisor thread, and what it answers: the
//! listing's view of an egress, why a start was refused, how a stop ended.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use hyper::StatusCode;
use serde::Serialize;
use tokio::sync::oneshot;

use super::life::{Exit, State};
use super::plan::Plan;
use super::supervisor::Supervisor;
use super::{EgressConfig, RUNNING_GAUGE};

/// One egress as `GET /rooms/{room}/egress` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EgressView {
    pub id: u64,
    pub room: String,
    /// Receivers without their stream key, `hls:NAME`, `file:NAME.mp4`.
    pub outputs: Vec<String>,
    /// The running child's process id.
    pub pid: Option<u32>,
    pub state: State,
    /// Unix seconds when it was created.
    pub started: u64,
    /// Children started after the first (after crashes).
    pub restarts: u32,
    /// How the last child ended: `{"code": N}` or `{"signal": N}`.
    pub exit: Option<Exit>,
    /// The child's latest line of output (a status line, or why it failed).
    pub last_line: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("{0} egresses are running, the most this node allows ([egress] max-running); stop one first")]
    Full(usize),
    #[error("{0}")]
    Clash(String),
    #[error("record \"{0}\" already exists in the egress directory; choose another name")]
    Exists(String),
    #[error("{0} \"{1}\" leads out of the egress directory (a symbolic link)")]
    Escapes(&'static str, String),
    #[error("cannot start the egress: {0}")]
    Spawn(String),
    #[error("the sfu is shutting down")]
    ShuttingDown,
}

impl StartError {
    pub fn status(&self) -> StatusCode {
        match self {
            StartError::Full(_) | StartError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            StartError::Clash(_) | StartError::Exists(_) => StatusCode::CONFLICT,
            StartError::Escapes(..) => StatusCode::BAD_REQUEST,
            StartError::Spawn(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What a stop request came to.
pub(crate) enum StopOutcome {
    Unknown,
    /// The egress has ended (now or before).
    Done(EgressView),
    /// Still writing its trailers when the wait ran out.
    Pending,
}

pub(super) type StartReply = oneshot::Sender<Result<EgressView, StartError>>;

pub(super) enum Msg {
    Start {
        room: String,
        plan: Plan,
        reply: StartReply,
    },
    List {
        room: String,
        reply: oneshot::Sender<Vec<EgressView>>,
    },
    /// Answered with `None` for an unknown id, else once the egress has ended.
    Stop {
        room: String,
        id: u64,
        reply: oneshot::Sender<Option<EgressView>>,
    },
    /// Drain: stop every egress, keep taking list requests.
    StopAll,
    /// Stop every egress, then end the thread; `done` is told once all are reaped.
    Shutdown { done: Option<oneshot::Sender<()>> },
}

/// The HTTP side's handle on the supervisor thread.
pub(crate) struct Egresses {
    tx: mpsc::Sender<Msg>,
    config: EgressConfig,
}

impl Egresses {
    /// Prepares `[egress] dir` and starts the supervisor thread. `http` is this SFU's bound
    /// HTTP address: children pull the room's WHEP feed from it.
    pub fn start(
        config: &EgressConfig,
        http: SocketAddr,
        secrets: &[String],
    ) -> anyhow::Result<Egresses> {
        let dir = match &config.dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("[egress] dir {}: cannot create it", d.display()))?;
                Some(
                    d.canonicalize().with_context(|| {
                        format!("[egress] dir {}: cannot resolve it", d.display())
                    })?,
                )
            }
            None => None,
        };
        if let Some(b) = &config.binary {
            anyhow::ensure!(
                b.is_file(),
                "[egress] binary {} is not a file; give the plenary executable's path",
                b.display()
            );
        }
        // A wildcard listener is reached over loopback of its family.
        let ip = match http.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        // Created with the first egress. Per user in the temp directory, which others share.
        let log_dir = match &dir {
            Some(d) => d.join(".logs"),
            // SAFETY: getuid(2) cannot fail and touches no memory.
            None => std::env::temp_dir()
                .join(format!("plenary-sfu-egress-{}", unsafe { libc::getuid() })),
        };
        let supervisor = Supervisor::new(
            config.clone(),
            dir,
            log_dir,
            format!("http://{}", SocketAddr::new(ip, http.port())),
            secrets.first().cloned(),
        );
        // Shown as 0 before the first egress rather than missing.
        metrics::gauge!(RUNNING_GAUGE).set(0.0);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("plenary-sfu-egress".into())
            .spawn(move || supervisor.run(rx))
            .context("cannot start the egress supervisor thread")?;
        Ok(Egresses {
            tx,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &EgressConfig {
        &self.config
    }

    pub async fn launch(&self, room: &str, plan: Plan) -> Result<EgressView, StartError> {
        let (reply, rx) = oneshot::channel();
        let msg = Msg::Start {
            room: room.to_owned(),
            plan,
            reply,
        };
        if self.tx.send(msg).is_err() {
            return Err(StartError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(StartError::ShuttingDown))
    }

    /// The room's egresses, running and recently ended; `None` once shut down.
    pub async fn list(&self, room: &str) -> Option<Vec<EgressView>> {
        let (reply, rx) = oneshot::channel();
        let room = room.to_owned();
        self.tx.send(Msg::List { room, reply }).ok()?;
        rx.await.ok()
    }

    /// Stops egress `id` of `room` and waits (at most `wait`) until its child has gone.
    pub async fn stop(&self, room: &str, id: u64, wait: Duration) -> StopOutcome {
        let (reply, rx) = oneshot::channel();
        let room = room.to_owned();
        if self.tx.send(Msg::Stop { room, id, reply }).is_err() {
            return StopOutcome::Unknown;
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Some(view))) => StopOutcome::Done(view),
            Ok(Ok(None)) | Ok(Err(_)) => StopOutcome::Unknown,
            Err(_) => StopOutcome::Pending,
        }
    }

    /// The drain: every egress is stopped (its WHEP session ends with it).
    pub fn stop_all(&self) {
        let _ = self.tx.send(Msg::StopAll);
    }

    /// Stops every egress and waits (at most `limit`) until all children are reaped.
    pub async fn shutdown(&self, limit: Duration) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown { done: Some(done) }).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }

    /// As `shutdown`, without waiting (Drop).
    pub fn shutdown_now(&self) {
        let _ = self.tx.send(Msg::Shutdown { done: None });
    }
}
