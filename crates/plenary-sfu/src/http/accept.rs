//! Accepting and serving HTTP connections, with the limits that keep clients from holding
//! the listener: a deadline on every request head (slowloris, half-open connections), a cap
//! on open connections, a backoff when accept fails (out of file descriptors), and a watch
//! for stalls of the whole process. Every connection closed for one of these is counted and
//! logged with a rate limit; so are the 4xx answers (malformed SDP, bad requests).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use plenary_ops::limited_debug;
use plenary_ops::ratelimit::LogLimiter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{handle, Resp};
use crate::Shared;

/// Longest a client may take to send a request head (the first byte, then every header).
/// Browsers send it in one packet; a slowloris trickling bytes, or a half-open connection
/// that sends nothing, is closed after it. Also bounds an idle keep-alive connection.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Open HTTP connections (WebSockets included) at most; further ones are closed at once, so
/// file descriptors stay for the media sockets.
pub(crate) const MAX_CONNECTIONS: usize = 16 * 1024;
/// Pause after a failed accept (typically EMFILE), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// A 4xx reason logged is cut to this many characters.
const MAX_REASON_CHARS: usize = 160;

pub(crate) const CONNECTIONS_GAUGE: &str = "plenary_sfu_http_connections";
pub(crate) const DROPPED_COUNTER: &str = "plenary_sfu_http_connections_dropped_total";
pub(crate) const ACCEPT_ERRORS_COUNTER: &str = "plenary_sfu_http_accept_errors_total";
pub(crate) const CLIENT_ERRORS_COUNTER: &str = "plenary_sfu_http_client_errors_total";
pub(crate) const STALLS_COUNTER: &str = "plenary_sfu_stalls_total";

/// Debug lines about client behaviour, at most 10 a second per kind.
static DEBUG_LOG: LogLimiter<2> = LogLimiter::new(10);
/// Warnings an operator must see (out of descriptors, at the cap): one a second
/// per kind.
static WARN_LOG: LogLimiter<2> = LogLimiter::new(1);

#[derive(Clone, Copy)]
enum DebugKind {
    Dropped,
    ClientError,
}

#[derive(Clone, Copy)]
enum WarnKind {
    Accept,
    Limit,
}

macro_rules! limited_warn {
    ($kind:expr, $($arg:tt)+) => {
        if let Some(suppressed) = WARN_LOG.allow($kind as usize) {
            tracing::warn!(suppressed, $($arg)+);
        }
    };
}

/// Connections the kernel queues for the accept loop. Tokio's default (128) overflows in a
/// burst of joins or a connection flood, and then the kernel drops SYNs, which costs a
/// client a one-second retransmit.
const LISTEN_BACKLOG: i32 = 1024;

/// The HTTP listener (SO_REUSEADDR, so a restart does not wait for TIME_WAIT).
pub(crate) fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(sock.into())
}

/// Accepts connections until `stop` changes, serving each on its own task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut stall_stop = stop.clone();
    tokio::spawn(plenary_ops::stall::watch_stalls(
        STALLS_COUNTER,
        async move {
            let _ = stall_stop.changed().await;
        },
    ));
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            acc = listener.accept() => acc,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                metrics::counter!(ACCEPT_ERRORS_COUNTER).increment(1);
                limited_warn!(
                    WarnKind::Accept,
                    error = %e,
                    "http accept failed (out of file descriptors? raise LimitNOFILE); retrying in {} ms",
                    ACCEPT_BACKOFF.as_millis()
                );
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = ConnSlot::take(&open);
        if slot.held > MAX_CONNECTIONS {
            metrics::counter!(DROPPED_COUNTER, "reason" => "limit").increment(1);
            let peer = tcp.peer_addr().ok();
            limited_warn!(
                WarnKind::Limit,
                ?peer,
                "http connection closed: {MAX_CONNECTIONS} connections are open already"
            );
            continue;
        }
        tokio::spawn(serve(tcp, slot, shared.clone()));
    }
}

async fn serve(tcp: TcpStream, slot: ConnSlot, shared: Arc<Shared>) {
    let peer = tcp.peer_addr().ok();
    let io = TokioIo::new(Counted { tcp, _slot: slot });
    let remote = RemoteIp(peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.ip()));
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(remote);
        respond(req, shared.clone())
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let Err(e) = builder.serve_connection(io, svc).with_upgrades().await else {
        return;
    };
    let (reason, why) = if e.is_timeout() {
        (
            "header_timeout",
            "no complete request head within the header read timeout (slowloris or half-open)",
        )
    } else if e.is_parse() || e.is_parse_too_large() {
        ("malformed", "not a valid HTTP/1.1 request")
    } else if e.is_incomplete_message() {
        ("incomplete", "the client closed it mid-request")
    } else {
        // Resets and the like: the client went away, nothing to count.
        return;
    };
    metrics::counter!(DROPPED_COUNTER, "reason" => reason).increment(1);
    limited_debug!(
        DEBUG_LOG,
        DebugKind::Dropped,
        ?peer,
        reason,
        "http connection closed: {why}"
    );
}

/// The client's address, put in every request's extensions (sessions are capped per source).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RemoteIp(pub std::net::IpAddr);

/// Answers one request; a 4xx answer is counted by status and its reason logged.
async fn respond(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = handle(req, shared).await?;
    if !resp.status().is_client_error() {
        return Ok(resp);
    }
    Ok(note_client_error(&method, &path, resp).await)
}

async fn note_client_error(method: &Method, path: &str, resp: Resp) -> Resp {
    let status = resp.status();
    metrics::counter!(CLIENT_ERRORS_COUNTER, "status" => status.as_str().to_owned()).increment(1);
    let (parts, body) = resp.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    limited_debug!(
        DEBUG_LOG,
        DebugKind::ClientError,
        status = status.as_u16(),
        %method,
        path = %truncate(path),
        "http client error: {}",
        truncate(String::from_utf8_lossy(&body).trim())
    );
    Response::from_parts(parts, Full::new(body))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(MAX_REASON_CHARS) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// One open connection in the count and the gauge, given back on drop.
struct ConnSlot {
    open: Arc<AtomicUsize>,
    /// Connections open when this one was taken, itself included.
    held: usize,
}

impl ConnSlot {
    fn take(open: &Arc<AtomicUsize>) -> ConnSlot {
        let held = open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(CONNECTIONS_GAUGE).increment(1.0);
        ConnSlot {
            open: open.clone(),
            held,
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(CONNECTIONS_GAUGE).decrement(1.0);
    }
}

/// The TCP stream with its slot: an upgraded WebSocket keeps the slot until it closes.
struct Counted {
    tcp: TcpStream,
    _slot: ConnSlot,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
