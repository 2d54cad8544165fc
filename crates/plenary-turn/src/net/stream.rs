//! TCP and TLS client connections inside a worker: TLS/plain detection, STUN/ChannelData
//! framing, a bounded outgoing queue, idle timeouts.

use super::task::Supervisor;
use super::tls::is_tls_client_hello;
use super::worker::WorkerRef;
use super::{LogKind, NET_LOG};
use crate::server::{FiveTuple, Transport};
use crate::stun::{frame_kind, stream_frame_len, FrameKind, HEADER_LEN};
use plenary_ops::limited_debug;
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_rustls::TlsAcceptor;

/// The largest frame `stream_frame_len` can announce (STUN header + 16-bit length).
pub(crate) const MAX_FRAME: usize = HEADER_LEN + 0xffff;
const INITIAL_READ_BUF: usize = 4096;
/// Bytes waiting to be written to one connection. Beyond this, frames for it are dropped:
/// a slow reader costs only itself.
pub(crate) const OUT_QUEUE_BYTES: usize = 256 * 1024;

pub(crate) struct StreamSettings {
    /// `None`: plain TCP only, whatever the first byte.
    pub tls: Option<TlsAcceptor>,
    /// Longest silence (no complete frame) before the client has authenticated.
    pub idle_unauthenticated: Duration,
    /// Longest silence once it has: an allocation is refreshed within its lifetime, so
    /// this is the maximum lifetime plus slack.
    pub idle_authenticated: Duration,
    pub handshake_timeout: Duration,
}

/// One slot of the process-wide connection limit, given back on drop.
pub(crate) struct ConnSlot(pub(crate) Arc<AtomicUsize>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection accepted by the control thread, on its way to a worker.
pub(crate) struct Incoming {
    pub stream: std::net::TcpStream,
    pub slot: ConnSlot,
}

/// The outgoing side of a connection, shared by its writer task and whoever sends to it.
#[derive(Default)]
pub(crate) struct ConnOut {
    pending: RefCell<Vec<u8>>,
    notify: Notify,
    authenticated: Cell<bool>,
}

impl ConnOut {
    /// Queues a whole frame, or drops it (returning false) if the queue is full.
    pub(crate) fn push(&self, frame: &[u8]) -> bool {
        let mut p = self.pending.borrow_mut();
        if p.len() + frame.len() > OUT_QUEUE_BYTES {
            return false;
        }
        p.extend_from_slice(frame);
        self.notify.notify_one();
        true
    }

    pub(crate) fn mark_authenticated(&self) {
        self.authenticated.set(true);
    }
}

#[derive(Debug)]
pub(crate) enum Close {
    Eof,
    Idle,
    /// A TLS handshake that did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// Neither STUN nor ChannelData: the stream cannot be resynchronised.
    Framing,
    Io(io::Error),
}

/// A per-connection read buffer that yields whole frames. Starts small, grows to the frame
/// being assembled (never beyond [`MAX_FRAME`]), shrinks back when drained.
pub(crate) struct FrameBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A client's first frame is always STUN (ChannelData needs an allocation first), so
    /// anything else at the start is not TURN, e.g. an HTTP request, whose ASCII would
    /// otherwise read as ChannelData and wait for the idle timeout.
    first_frame: bool,
}

impl Default for FrameBuf {
    fn default() -> Self {
        FrameBuf {
            buf: vec![0; INITIAL_READ_BUF],
            start: 0,
            end: 0,
            first_frame: true,
        }
    }
}

impl FrameBuf {
    /// Where the next read goes. Makes room for the whole frame being assembled.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > INITIAL_READ_BUF {
                self.buf.truncate(INITIAL_READ_BUF);
                self.buf.shrink_to_fit();
            }
        }
        let need = stream_frame_len(&self.buf[self.start..self.end])
            .unwrap_or(4)
            .min(MAX_FRAME);
        if self.start + need > self.buf.len() || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if need > self.buf.len() {
                self.buf.resize(need, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, `Err` if the stream
    /// holds something that is not a TURN frame.
    pub(crate) fn next_frame(&mut self) -> Result<Option<&[u8]>, ()> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 4 {
            return Ok(None);
        }
        if self.first_frame && frame_kind(avail[0]) != FrameKind::Stun {
            return Err(());
        }
        let len = stream_frame_len(avail).ok_or(())?;
        if len > MAX_FRAME {
            return Err(());
        }
        if avail.len() < len {
            return Ok(None);
        }
        let s = self.start;
        self.start += len;
        self.first_frame = false;
        Ok(Some(&self.buf[s..s + len]))
    }
}

/// Reads frames from `r` and hands each to `on_frame` until the stream ends, breaks, or
/// stays silent (no complete frame) for `idle()`.
pub(crate) async fn read_frames<R: AsyncRead + Unpin>(
    mut r: R,
    idle: impl Fn() -> Duration,
    mut on_frame: impl FnMut(Instant, &[u8]),
) -> Close {
    let mut fb = FrameBuf::default();
    let mut last_frame = tokio::time::Instant::now();
    loop {
        let deadline = last_frame + idle();
        let spare = fb.spare();
        if spare.is_empty() {
            return Close::Framing;
        }
        let n = match tokio::time::timeout_at(deadline, r.read(spare)).await {
            Err(_) => return Close::Idle,
            Ok(Ok(0)) => return Close::Eof,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Close::Io(e),
        };
        fb.filled(n);
        let now = Instant::now();
        loop {
            match fb.next_frame() {
                Ok(Some(frame)) => {
                    last_frame = tokio::time::Instant::now();
                    on_frame(now, frame);
                }
                Ok(None) => break,
                Err(()) => return Close::Framing,
            }
        }
    }
}

/// Writes queued frames until the connection fails. Two buffers swap so producers never
/// wait for the socket.
async fn write_queued<W: AsyncWrite + Unpin>(mut w: W, out: &ConnOut) -> Close {
    let mut inflight = Vec::new();
    loop {
        out.notify.notified().await;
        loop {
            {
                let mut p = out.pending.borrow_mut();
                if p.is_empty() {
                    break;
                }
                std::mem::swap(&mut *p, &mut inflight);
            }
            if let Err(e) = w.write_all(&inflight).await {
                return Close::Io(e);
            }
            inflight.clear();
        }
        if let Err(e) = w.flush().await {
            return Close::Io(e);
        }
    }
}

/// Receives connections the control thread hands to this worker.
pub(crate) async fn take_incoming(
    worker: WorkerRef,
    mut rx: mpsc::Receiver<Incoming>,
    settings: Arc<StreamSettings>,
    sup: Rc<Supervisor>,
) {
    while let Some(inc) = rx.recv().await {
        sup.spawn(serve(worker.clone(), inc, settings.clone()));
    }
}

async fn serve(worker: WorkerRef, inc: Incoming, settings: Arc<StreamSettings>) {
    let Incoming {
        stream,
        slot: _slot,
    } = inc;
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    let (Ok(client), Ok(server)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    worker.borrow_mut().io.conns_opened += 1;
    let mut first = [0u8; 1];
    let close = match tokio::time::timeout(settings.idle_unauthenticated, stream.peek(&mut first))
        .await
    {
        Err(_) => Close::Idle,
        Ok(Ok(0)) => Close::Eof,
        Ok(Err(e)) => Close::Io(e),
        Ok(Ok(_)) => match (&settings.tls, is_tls_client_hello(first[0])) {
            (Some(acceptor), true) => {
                match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => {
                        let (r, w) = tokio::io::split(tls);
                        let five = FiveTuple {
                            transport: Transport::Tls,
                            client,
                            server,
                        };
                        run(&worker, five, r, w, &settings).await
                    }
                    Ok(Err(e)) => {
                        worker.borrow_mut().io.tls_handshake_failed += 1;
                        limited_debug!(NET_LOG, LogKind::TlsHandshake, %client, error = %e, "TLS handshake failed");
                        Close::Io(e)
                    }
                    Err(_) => {
                        let mut w = worker.borrow_mut();
                        w.io.tls_handshake_failed += 1;
                        w.io.tls_handshake_timeouts += 1;
                        limited_debug!(NET_LOG, LogKind::TlsHandshake, %client,
                            timeout_s = settings.handshake_timeout.as_secs(),
                            "TLS handshake not finished in time (client vanished mid-handshake?); closed");
                        Close::HandshakeTimeout
                    }
                }
            }
            _ => {
                let (r, w) = stream.into_split();
                let five = FiveTuple {
                    transport: Transport::Tcp,
                    client,
                    server,
                };
                run(&worker, five, r, w, &settings).await
            }
        },
    };
    let mut w = worker.borrow_mut();
    w.io.conns_closed += 1;
    match close {
        Close::Idle => {
            w.io.conns_idle_closed += 1;
            limited_debug!(NET_LOG, LogKind::StreamIdle, %client,
                "connection silent too long (half-open or abandoned); closed");
        }
        Close::HandshakeTimeout => {}
        Close::Framing => {
            w.io.stream_framing_errors += 1;
            limited_debug!(NET_LOG, LogKind::StreamFraming, %client, "not a TURN stream; closed");
        }
        Close::Io(e) => {
            limited_debug!(NET_LOG, LogKind::StreamRead, %client, error = %e, "connection failed");
        }
        Close::Eof => {}
    }
}

/// Runs an established connection until it closes, then tells the core (its allocation,
/// if any, goes with it).
async fn run<R, W>(
    worker: &WorkerRef,
    five: FiveTuple,
    r: R,
    w: W,
    settings: &StreamSettings,
) -> Close
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let out = Rc::new(ConnOut::default());
    worker.borrow_mut().conns.insert(five, out.clone());
    let idle = || {
        if out.authenticated.get() {
            settings.idle_authenticated
        } else {
            settings.idle_unauthenticated
        }
    };
    let reader = read_frames(r, idle, |now, frame| {
        worker.borrow_mut().on_stream_frame(now, five, frame, &out);
    });
    let close = tokio::select! {
        c = reader => c,
        c = write_queued(w, &out) => c,
    };
    let mut guard = worker.borrow_mut();
    let w = &mut *guard;
    w.conns.remove(&five);
    w.core.client_closed(five, &mut w.relays);
    close
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
