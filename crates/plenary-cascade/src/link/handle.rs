//! A live link: the handle the SFU holds, and the three tasks behind it (control reader,
//! control writer, stats monitor).

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{ConnectionError, RecvStream, SendDatagramError, SendStream, VarInt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::handshake::{Ready, READ_CHUNK};
use super::{Link, LinkError, LogKind, CLOSE_NORMAL, CLOSE_PROTOCOL, CLOSE_STALLED};
use crate::metrics::{self as m, LinkMetrics};
use crate::wire::{self, ControlDecoder, ControlMsg, WireError, MAX_CONTROL_FRAME};

/// Control messages queued each way. Control is low-rate; a full queue means a stuck peer.
pub const CONTROL_QUEUE: usize = 4096;
/// Media scratch: datagrams are carved out of blocks this big, so sending does not allocate
/// per packet.
const SCRATCH_BLOCK: usize = 64 * 1024;
const STATS_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// State shared by the handles and the link's tasks. The tasks do not hold the control
/// sender, so the writer sees the queue close when every handle is gone.
struct State {
    conn: quinn::Connection,
    peer: String,
    /// First reason given for closing from this side.
    reason: OnceLock<String>,
    metrics: LinkMetrics,
}

impl State {
    fn close(&self, code: u32, reason: &str) {
        let _ = self.reason.set(reason.to_owned());
        self.conn.close(VarInt::from_u32(code), reason.as_bytes());
    }

    fn reason(&self, e: &ConnectionError) -> String {
        if let Some(r) = self.reason.get() {
            return r.clone();
        }
        match e {
            ConnectionError::ApplicationClosed(c) => {
                format!("closed by peer: {}", String::from_utf8_lossy(&c.reason))
            }
            ConnectionError::TimedOut => {
                format!("peer silent for {:?} (idle timeout)", super::IDLE_TIMEOUT)
            }
            other => other.to_string(),
        }
    }
}

#[derive(Clone)]
pub struct LinkHandle {
    state: Arc<State>,
    control: mpsc::Sender<Vec<u8>>,
}

/// Wraps an authenticated connection into a `Link` and starts its tasks.
pub(super) fn start(conn: quinn::Connection, ready: Ready) -> Link {
    let Ready {
        peer,
        send,
        recv,
        decoder,
    } = ready;
    let state = Arc::new(State {
        conn,
        metrics: LinkMetrics::new(&peer),
        peer: peer.clone(),
        reason: OnceLock::new(),
    });
    let (out_tx, out_rx) = mpsc::channel(CONTROL_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(CONTROL_QUEUE);
    m::links().increment(1);
    info!(peer = %peer, addr = %state.conn.remote_address(), "cascade: link up");
    tokio::spawn(write_control(state.clone(), send, out_rx));
    tokio::spawn(read_control(state.clone(), recv, decoder, in_tx));
    tokio::spawn(monitor(state.clone()));
    Link {
        peer,
        handle: LinkHandle {
            state,
            control: out_tx,
        },
        control: in_rx,
    }
}

impl LinkHandle {
    pub fn peer(&self) -> &str {
        &self.state.peer
    }

    /// Encodes and sends one datagram; never blocks. Returns false (and counts it) when the
    /// packet is dropped: send buffer full, larger than the path allows, or link closed.
    pub fn send_media(&self, p: &wire::MediaPacket<'_>) -> bool {
        let conn = &self.state.conn;
        let mx = &self.state.metrics;
        let len = wire::datagram_len(p);
        if conn.max_datagram_size().is_none_or(|max| len > max) {
            mx.dropped_large.increment(1);
            return false;
        }
        // Drop the new packet rather than let quinn silently drop older queued ones.
        if conn.datagram_send_buffer_space() < len {
            mx.dropped_full.increment(1);
            return false;
        }
        let datagram = SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.capacity() < len {
                s.reserve(SCRATCH_BLOCK.max(len));
            }
            wire::write_datagram(p, &mut *s);
            s.split().freeze()
        });
        match conn.send_datagram(datagram) {
            Ok(()) => {
                mx.tx_bytes.increment(len as u64);
                true
            }
            Err(SendDatagramError::ConnectionLost(_)) => {
                mx.dropped_closed.increment(1);
                false
            }
            Err(_) => {
                mx.dropped_large.increment(1);
                false
            }
        }
    }

    /// Queues a control message. False if the link is closed, the message is over the frame
    /// limit, or the queue is full; a full queue means the peer stopped reading, so the link
    /// is closed.
    pub fn send_control(&self, msg: ControlMsg) -> bool {
        if self.is_closed() {
            return false;
        }
        let mut frame = Vec::new();
        wire::encode_control(&msg, &mut frame);
        if frame.len() > 4 + MAX_CONTROL_FRAME {
            warn!(peer = %self.state.peer, bytes = frame.len(), "cascade: control message over the frame limit; not sent");
            return false;
        }
        match self.control.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(peer = %self.state.peer, "cascade: control queue to {} full ({CONTROL_QUEUE} messages); closing the stalled link", self.state.peer);
                self.state.metrics.stalls.increment(1);
                self.state.close(CLOSE_STALLED, "control queue stalled");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Next media datagram (raw; decode with `wire::decode_datagram`). Err once closed.
    pub async fn recv_datagram(&self) -> Result<Bytes, LinkError> {
        match self.state.conn.read_datagram().await {
            Ok(d) => {
                self.state.metrics.rx_bytes.increment(d.len() as u64);
                Ok(d)
            }
            Err(e) => Err(LinkError::Closed(self.state.reason(&e))),
        }
    }

    pub fn rtt(&self) -> Duration {
        self.state.conn.rtt()
    }

    pub fn close(&self, reason: &str) {
        self.state.close(CLOSE_NORMAL, reason);
    }

    /// Resolves when the link is closed, from either side or by the idle timeout.
    pub async fn closed(&self) -> String {
        let e = self.state.conn.closed().await;
        self.state.reason(&e)
    }

    pub fn is_closed(&self) -> bool {
        self.state.conn.close_reason().is_some()
    }

    /// Largest media datagram the path takes now (None: the peer disabled datagrams).
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.state.conn.max_datagram_size()
    }

    pub fn remote_address(&self) -> std::net::SocketAddr {
        self.state.conn.remote_address()
    }
}

/// Drains the outgoing control queue onto the stream, batching what is already queued.
async fn write_control(
    state: Arc<State>,
    mut send: SendStream,
    mut queue: mpsc::Receiver<Vec<u8>>,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            frame = queue.recv() => match frame {
                Some(f) => batch.extend_from_slice(&f),
                None => {
                    state.close(CLOSE_NORMAL, "every handle of the link was dropped");
                    return;
                }
            },
            _ = state.conn.closed() => return,
        }
        while batch.len() < READ_CHUNK {
            match queue.try_recv() {
                Ok(f) => batch.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if let Err(e) = send.write_all(&batch).await {
            debug!(peer = %state.peer, "cascade: control write failed: {e}");
            return;
        }
        state.metrics.tx_bytes.increment(batch.len() as u64);
        batch.clear();
    }
}

/// Decodes the peer's control frames into the link's receiver.
async fn read_control(
    state: Arc<State>,
    mut recv: RecvStream,
    mut decoder: ControlDecoder,
    out: mpsc::Sender<ControlMsg>,
) {
    loop {
        while let Some(frame) = decoder.next() {
            match frame {
                Ok(ControlMsg::Hello { .. }) => {
                    m::bad_frame("unexpected");
                    debug!(peer = %state.peer, "cascade: second Hello ignored");
                }
                Ok(msg) => {
                    tokio::select! {
                        // Receiver dropped: the owner does not want control; keep draining.
                        _ = out.send(msg) => {}
                        _ = state.conn.closed() => return,
                    }
                }
                Err(WireError::FrameTooLarge(n)) => {
                    m::bad_frame("too_large");
                    warn!(peer = %state.peer, "cascade: link to {}: control frame of {n} bytes over the limit; closing", state.peer);
                    state.close(CLOSE_PROTOCOL, "control frame over the limit");
                    return;
                }
                Err(e) => {
                    m::bad_frame("bad_json");
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        bad_frame_debug(&state.peer, &e);
                    }
                }
            }
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                state.metrics.rx_bytes.increment(chunk.bytes.len() as u64);
                decoder.push(&chunk.bytes);
            }
            Ok(None) => {
                state.close(CLOSE_PROTOCOL, "peer ended the control stream");
                return;
            }
            Err(e) => {
                debug!(peer = %state.peer, "cascade: control read ended: {e}");
                return;
            }
        }
    }
}

/// Rate-limited: a peer sending garbage must not flood the log.
fn bad_frame_debug(peer: &str, e: &WireError) {
    if let Some(suppressed) = super::LOG_LIMIT.allow(LogKind::BadFrame as usize) {
        debug!(peer, suppressed, "cascade: bad control frame: {e}");
    }
}

/// Publishes RTT and loss once a second; logs and uncounts the link when it closes.
async fn monitor(state: Arc<State>) {
    let mut tick = tokio::time::interval(STATS_EVERY);
    let mut lost_seen = 0;
    let reason = loop {
        tokio::select! {
            _ = tick.tick() => {
                state.metrics.rtt.set(state.conn.rtt().as_secs_f64());
                let lost = state.conn.stats().path.lost_packets;
                state.metrics.lost.increment(lost.saturating_sub(lost_seen));
                lost_seen = lost;
            }
            e = state.conn.closed() => break state.reason(&e),
        }
    };
    m::links().decrement(1);
    info!(peer = %state.peer, "cascade: link to {} closed: {reason}", state.peer);
}
