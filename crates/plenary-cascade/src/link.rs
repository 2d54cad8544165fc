//! quinn driver: one QUIC connection per pair of nodes.
//!
//! Media rides in datagrams (`wire::encode_datagram`), control in one bidirectional stream
//! opened by the connector. Before anything else on that stream both sides prove they hold
//! the cluster secret (`auth`), then send `Hello`. Only then does a `Link` exist.

mod handle;
mod handshake;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::VarInt;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn};

use crate::wire::ControlMsg;
use handshake::HandshakeError;

pub use handle::LinkHandle;
pub use tls::{IDLE_TIMEOUT, KEEP_ALIVE};

/// ALPN of the link; a node speaking another version fails the TLS handshake.
pub const ALPN: &[u8] = b"plenary-cascade/1";
/// TLS server name the connector asks for (certificates are not checked against it).
pub const SERVER_NAME: &str = "plenary-cascade";

/// Application close codes, visible to the peer and in packet captures.
pub const CLOSE_NORMAL: u32 = 0;
/// The peer's tag did not verify: it does not hold our cluster secret.
pub const CLOSE_WRONG_SECRET: u32 = 0x5EC;
/// The connector sent no tag within `AUTH_TIMEOUT`.
pub const CLOSE_AUTH_TIMEOUT: u32 = 0x5ED;
/// A malformed handshake or an oversized control frame.
pub const CLOSE_PROTOCOL: u32 = 0x5EE;
/// The peer stopped draining control messages.
pub const CLOSE_STALLED: u32 = 0x5EF;
/// The endpoint shut down.
pub const CLOSE_SHUTDOWN: u32 = 0x5F0;

/// An accepted connection must authenticate within this, so half-open links can't pile up.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole `connect`: QUIC handshake, tags, hellos.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Kernel UDP buffer asked for on the link socket, each way.
const SOCKET_BUFFER: usize = 4 << 20;
/// Incoming connections still authenticating; more are refused at once.
const MAX_PENDING_ACCEPTS: usize = 256;
/// Authenticated links waiting for the owner to take them from the receiver.
const ACCEPTED_QUEUE: usize = 64;

pub struct LinkConfig {
    /// This node's name, sent in `Hello`.
    pub node: String,
    pub listen: SocketAddr,
    pub secret: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("refused: wrong cluster secret")]
    Refused,
    #[error("timed out after {0:?} setting up the link")]
    Timeout(Duration),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("link closed: {0}")]
    Closed(String),
}

/// An authenticated link to another node.
pub struct Link {
    /// The other node's name, from its `Hello`.
    pub peer: String,
    pub handle: LinkHandle,
    /// Control messages from the peer; ends when the link closes.
    pub control: mpsc::Receiver<ControlMsg>,
}

/// The local QUIC endpoint: accepts links from other nodes and connects to them.
/// Clones share it; dropping the last clone closes every link made through it.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    ep: quinn::Endpoint,
    node: Arc<str>,
    secret: Arc<[u8]>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ep
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"endpoint dropped");
    }
}

impl Endpoint {
    /// Binds the UDP socket; incoming links that pass authentication arrive on the receiver.
    /// Must be called inside a tokio runtime.
    pub fn bind(cfg: LinkConfig) -> anyhow::Result<(Endpoint, mpsc::Receiver<Link>)> {
        anyhow::ensure!(
            !cfg.secret.is_empty(),
            "cascade: the cluster secret is empty"
        );
        let socket = udp_socket(cfg.listen)
            .map_err(|e| anyhow::anyhow!("cascade: cannot listen on {}: {e}", cfg.listen))?;
        let mut ep = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(tls::server_config()?),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        ep.set_default_client_config(tls::client_config()?);
        let node: Arc<str> = cfg.node.into();
        let secret: Arc<[u8]> = cfg.secret.into();
        let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(accept_loop(ep.clone(), node.clone(), secret.clone(), tx));
        let inner = Arc::new(Inner { ep, node, secret });
        Ok((Endpoint { inner }, rx))
    }

    pub fn local_addr(&self) -> SocketAddr {
        // quinn only fails this if the socket is gone; report an unspecified address then.
        self.inner
            .ep
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Connects, authenticates both ways, exchanges Hello. Err names the cause.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Link, LinkError> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let connecting = self
            .inner
            .ep
            .connect(addr, SERVER_NAME)
            .map_err(|e| LinkError::Unreachable(format!("{addr}: {e}")))?;
        let conn = match timeout_at(deadline, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(handshake::connection_error(e, addr)),
            Err(_) => return Err(LinkError::Timeout(CONNECT_TIMEOUT)),
        };
        let setup = handshake::as_connector(&conn, &self.inner.node, &self.inner.secret);
        match timeout_at(deadline, setup).await {
            Ok(Ok(ready)) => Ok(handle::start(conn, ready)),
            Ok(Err(e)) => {
                let (code, why) = e.close_code();
                conn.close(VarInt::from_u32(code), why.as_bytes());
                Err(e.into_link_error(addr))
            }
            Err(_) => {
                conn.close(VarInt::from_u32(CLOSE_AUTH_TIMEOUT), b"no tag in time");
                Err(LinkError::Timeout(CONNECT_TIMEOUT))
            }
        }
    }

    /// Closes every link and stops accepting. Peers see the close at once.
    pub fn close(&self) {
        self.inner
            .ep
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"endpoint closed");
    }
}

/// A UDP socket with kernel buffers sized for media bursts: the default (~200 KiB) drops
/// datagrams when a busy node's receive task is late by a few milliseconds.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.rmem_max / wmem_max.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

async fn accept_loop(
    ep: quinn::Endpoint,
    node: Arc<str>,
    secret: Arc<[u8]>,
    tx: mpsc::Sender<Link>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_ACCEPTS));
    while let Some(incoming) = ep.accept().await {
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            debug!(from = %incoming.remote_address(), "cascade: too many pending links; refusing");
            incoming.refuse();
            continue;
        };
        let (node, secret, tx) = (node.clone(), secret.clone(), tx.clone());
        tokio::spawn(async move {
            let link = accept_one(incoming, &node, &secret).await;
            drop(permit);
            if let Some(link) = link {
                if let Err(mpsc::error::SendError(link)) = tx.send(link).await {
                    link.handle.close("this node is not accepting links");
                }
            }
        });
    }
}

/// Runs the acceptor's side; logs and closes on failure.
async fn accept_one(incoming: quinn::Incoming, node: &str, secret: &[u8]) -> Option<Link> {
    let addr = incoming.remote_address();
    let deadline = Instant::now() + AUTH_TIMEOUT;
    let conn = match timeout_at(deadline, async { incoming.accept()?.await }).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(from = %addr, "cascade: incoming link failed its QUIC handshake: {e}");
            return None;
        }
        Err(_) => {
            debug!(from = %addr, "cascade: incoming link timed out in its QUIC handshake");
            return None;
        }
    };
    let result = match timeout_at(deadline, handshake::as_acceptor(&conn, node, secret)).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::NoTagInTime),
    };
    match result {
        Ok(ready) => Some(handle::start(conn, ready)),
        Err(e) => {
            // Count before closing, so the peer never sees the refusal ahead of the counter.
            e.log_refusal(addr);
            let (code, why) = e.close_code();
            conn.close(VarInt::from_u32(code), why.as_bytes());
            None
        }
    }
}

/// Rate limit for log lines caused by other hosts (refusals, bad frames).
pub(crate) static LOG_LIMIT: plenary_ops::ratelimit::LogLimiter<4> =
    plenary_ops::ratelimit::LogLimiter::new(5);

#[derive(Clone, Copy)]
pub(crate) enum LogKind {
    WrongSecret,
    NoTag,
    BadHandshake,
    BadFrame,
}

pub(crate) fn warn_limited(kind: LogKind, line: std::fmt::Arguments<'_>) {
    if let Some(suppressed) = LOG_LIMIT.allow(kind as usize) {
        warn!(suppressed, "{line}");
    }
}
