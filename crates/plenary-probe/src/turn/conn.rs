//! One client transport to the TURN server (a connected UDP socket, a TCP stream, or TLS
//! over TCP), shared by the pacer (data, never waits) and the allocation's reader task
//! (control, may wait).
//!
//! Data sends are non-blocking and all-or-nothing: on a stream a frame is either queued
//! whole or dropped (and counted), so framing survives a full socket buffer and a slow
//! connection costs only its own flow. TLS uses rustls directly (not an async wrapper) for
//! the same reason: the pacer needs a `try_send`, which an async stream cannot give.

use super::args::Transport;
use plenary_turn::stun::stream_frame_len;
use rustls::pki_types::ServerName;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::{TcpStream, UdpSocket};

/// Room for the largest frame (ChannelData of 65535 bytes) plus what one read returns.
const STREAM_BUF: usize = 160 * 1024;
const READ_CHUNK: usize = 16 * 1024;

pub enum Conn {
    Udp(UdpSocket),
    /// Boxed: a rustls connection is large, and most runs are UDP.
    Stream(Box<StreamConn>),
}

pub struct StreamConn {
    tcp: TcpStream,
    /// Plain TCP: bytes of a frame the socket took only in part. TLS: unused (rustls
    /// buffers its own records).
    pending: Mutex<Vec<u8>>,
    tls: Option<Mutex<rustls::ClientConnection>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    /// Socket buffer full: the frame was not sent at all (a load-side limit).
    Full,
    /// The socket failed (e.g. ICMP unreachable, connection reset): a server-side loss.
    Failed,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these buffers in a state worse than a lost frame.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `io::Write` over a non-blocking socket, for rustls's `write_tls`.
struct TryWrite<'a>(&'a TcpStream);
impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes out what rustls has buffered until the socket would block. Returns whether
/// everything went out.
fn flush_tls(tcp: &TcpStream, tls: &mut rustls::ClientConnection) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(&mut TryWrite(tcp)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes `pending` out until the socket would block; returns whether it emptied.
fn flush_plain(tcp: &TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
    while !pending.is_empty() {
        match tcp.try_write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl StreamConn {
    /// Queues `frame` whole if nothing is waiting, and writes what the socket takes.
    /// `force` queues even behind waiting bytes (control messages must not be lost).
    fn queue(&self, frame: &[u8], force: bool) -> io::Result<SendOutcome> {
        if let Some(tls) = &self.tls {
            let mut tls = lock(tls);
            if !flush_tls(&self.tcp, &mut tls)? && !force {
                return Ok(SendOutcome::Full);
            }
            tls.writer().write_all(frame)?;
            flush_tls(&self.tcp, &mut tls)?;
            return Ok(SendOutcome::Sent);
        }
        let mut pending = lock(&self.pending);
        if !flush_plain(&self.tcp, &mut pending)? {
            if force {
                pending.extend_from_slice(frame);
                return Ok(SendOutcome::Sent);
            }
            return Ok(SendOutcome::Full);
        }
        match self.tcp.try_write(frame) {
            Ok(n) => pending.extend_from_slice(&frame[n..]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !force {
                    return Ok(SendOutcome::Full);
                }
                pending.extend_from_slice(frame);
            }
            Err(e) => return Err(e),
        }
        Ok(SendOutcome::Sent)
    }

    /// Whether bytes are still waiting for the socket; flushes what it can.
    fn flush(&self) -> io::Result<bool> {
        match &self.tls {
            Some(tls) => flush_tls(&self.tcp, &mut lock(tls)),
            None => flush_plain(&self.tcp, &mut lock(&self.pending)),
        }
    }
}

impl Conn {
    /// Connects to `server`. `tls` is the config and name for `Transport::Tls`.
    pub async fn connect(
        transport: Transport,
        server: SocketAddr,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    ) -> io::Result<(Arc<Conn>, FrameReader)> {
        let conn = match transport {
            Transport::Udp => {
                let local: SocketAddr = if server.is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let sock = UdpSocket::bind(local).await?;
                sock.connect(server).await?;
                Conn::Udp(sock)
            }
            Transport::Tcp | Transport::Tls => {
                let tcp = TcpStream::connect(server).await?;
                tcp.set_nodelay(true)?;
                let (tcp, tls) = match (transport, tls) {
                    (Transport::Tls, Some((config, name))) => {
                        let connector = tokio_rustls::TlsConnector::from(config);
                        let stream = connector.connect(name, tcp).await?;
                        let (tcp, conn) = stream.into_inner();
                        (tcp, Some(Mutex::new(conn)))
                    }
                    (Transport::Tls, None) => {
                        return Err(io::Error::other("TLS transport without a TLS config"))
                    }
                    _ => (tcp, None),
                };
                Conn::Stream(Box::new(StreamConn {
                    tcp,
                    pending: Mutex::new(Vec::with_capacity(4096)),
                    tls,
                }))
            }
        };
        let conn = Arc::new(conn);
        let reader = FrameReader {
            conn: conn.clone(),
            buf: vec![
                0;
                if matches!(*conn, Conn::Udp(_)) {
                    65_536
                } else {
                    STREAM_BUF
                }
            ],
            start: 0,
            end: 0,
        };
        Ok((conn, reader))
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Conn::Stream(_))
    }

    /// Data path: never waits.
    pub fn try_send(&self, frame: &[u8]) -> SendOutcome {
        let sent = match self {
            Conn::Udp(sock) => sock.try_send(frame).map(|_| SendOutcome::Sent),
            Conn::Stream(s) => s.queue(frame, false),
        };
        match sent {
            Ok(outcome) => outcome,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => SendOutcome::Full,
            Err(_) => SendOutcome::Failed,
        }
    }

    /// Control path: queues the frame and waits until the socket took all of it.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        match self {
            Conn::Udp(sock) => sock.send(frame).await.map(drop),
            Conn::Stream(s) => {
                s.queue(frame, true)?;
                // Bounded by the caller's timeout; each pass waits for the socket.
                while !s.flush()? {
                    s.tcp.writable().await?;
                }
                Ok(())
            }
        }
    }
}

/// Reads whole frames: one datagram on UDP, one STUN message or ChannelData (with its
/// padding) on a stream. Cancel-safe: the only await is socket readiness.
pub struct FrameReader {
    conn: Arc<Conn>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    /// Waits for the next frame; returns its range for [`FrameReader::frame`].
    pub async fn next(&mut self) -> io::Result<Range<usize>> {
        let conn = self.conn.clone();
        match &*conn {
            Conn::Udp(sock) => {
                let n = sock.recv(&mut self.buf).await?;
                Ok(0..n)
            }
            Conn::Stream(s) => loop {
                if let Some(range) = self.take_frame()? {
                    return Ok(range);
                }
                self.compact();
                if self.drain_tls(s)? {
                    continue;
                }
                s.tcp.readable().await?;
                self.read_stream(s)?;
            },
        }
    }

    pub fn frame(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    fn take_frame(&mut self) -> io::Result<Option<Range<usize>>> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 4 {
            return Ok(None);
        }
        let Some(len) = stream_frame_len(avail) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "server sent bytes that are neither STUN nor ChannelData",
            ));
        };
        if avail.len() < len {
            return Ok(None);
        }
        let range = self.start..self.start + len;
        self.start += len;
        Ok(Some(range))
    }

    /// Moves an incomplete frame to the front when the tail has too little room.
    fn compact(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.buf.len() - self.end < READ_CHUNK {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
    }

    /// Moves decrypted bytes rustls still holds into the frame buffer; returns whether
    /// there were any (then no socket read is needed to make progress).
    fn drain_tls(&mut self, s: &StreamConn) -> io::Result<bool> {
        match &s.tls {
            Some(tls) => self.drain_plaintext(&mut lock(tls)),
            None => Ok(false),
        }
    }

    fn drain_plaintext(&mut self, tls: &mut rustls::ClientConnection) -> io::Result<bool> {
        let before = self.end;
        while self.end < self.buf.len() {
            match tls.reader().read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(self.end > before)
    }

    /// One non-blocking read (WouldBlock is not an error: readiness can be spurious).
    fn read_stream(&mut self, s: &StreamConn) -> io::Result<()> {
        let Some(tls) = &s.tls else {
            return match s.tcp.try_read(&mut self.buf[self.end..]) {
                Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.end += n;
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            };
        };
        let mut raw = [0u8; READ_CHUNK];
        let n = match s.tcp.try_read(&mut raw) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut tls = lock(tls);
        let mut input = &raw[..n];
        while !input.is_empty() {
            tls.read_tls(&mut input)?;
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.drain_plaintext(&mut tls)?;
            if self.end == self.buf.len() && !input.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame too large",
                ));
            }
        }
        // Key updates and alerts the handshake layer wants to answer.
        flush_tls(&s.tcp, &mut tls)?;
        Ok(())
    }
}
