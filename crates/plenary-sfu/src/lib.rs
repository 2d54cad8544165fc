//! `plenary sfu`, first slice: WHIP publish / WHEP play over HTTP, one shared UDP port for
//! all peers, one str0m `Rtc` per session (ICE-lite, RTP mode), RTP forwarded from a room's
//! publisher to its viewers by media kind.
//!
//! Threads: HTTP runs on the caller's tokio runtime; all media runs on one dedicated OS
//! thread that owns every `Rtc`, so no locks sit on the packet path. HTTP talks to the media
//! thread over a channel.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use hyper::StatusCode;
use str0m::change::SdpOffer;
use str0m::Candidate;
use tokio::sync::{oneshot, watch};

mod http;
mod media;

use http::handle;
use media::MediaLoop;

/// Largest SDP offer we accept; real offers are a few KiB.
const MAX_SDP: usize = 64 * 1024;
/// Longest the media loop sleeps, so commands and shutdown are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(5);
/// A session that has not finished ICE+DTLS by then is dropped (abandoned offers).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// WHIP/WHEP HTTP listener.
    pub http: SocketAddr,
    /// The one UDP socket shared by every peer.
    pub media: SocketAddr,
    /// Advertised instead of the media socket's IP (the port stays the same), for NAT.
    pub public_ip: Option<IpAddr>,
}

/// A started SFU. Dropping it stops the media thread; `shutdown` also waits for it.
pub struct RunningSfu {
    http_addr: SocketAddr,
    media_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    http_stop: watch::Sender<bool>,
    http_task: Option<tokio::task::JoinHandle<()>>,
    media_thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningSfu {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Stops accepting HTTP, ends the media loop and waits for both.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.http_stop.send(true);
        if let Some(t) = self.http_task.take() {
            let _ = t.await;
        }
        if let Some(t) = self.media_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for RunningSfu {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.http_stop.send(true);
    }
}

/// Binds both sockets, starts the media thread and the HTTP accept loop.
pub async fn serve(config: SfuConfig) -> anyhow::Result<RunningSfu> {
    let listener = tokio::net::TcpListener::bind(config.http).await?;
    let http_addr = listener.local_addr()?;
    let sock = UdpSocket::bind(config.media)?;
    let media_addr = sock.local_addr()?;
    let advertised = match config.public_ip {
        Some(ip) => SocketAddr::new(ip, media_addr.port()),
        None => media_addr,
    };
    // Fail early rather than on the first offer.
    Candidate::host(advertised, "udp")
        .map_err(|e| anyhow::anyhow!("media address {advertised} not usable: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>();
    let media_thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("plenary-sfu-media".into())
            .spawn(move || MediaLoop::new(sock, advertised, cmd_rx).run(&stop))?
    };
    let (http_stop, mut stop_rx) = watch::channel(false);
    let http_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop_rx.changed() => return,
                acc = listener.accept() => {
                    let Ok((tcp, _)) = acc else { continue };
                    let cmds = cmd_tx.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(req, cmds.clone()));
                        let io = hyper_util::rt::TokioIo::new(tcp);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    });
                }
            }
        }
    });
    tracing::info!(%http_addr, %media_addr, %advertised, "sfu started");
    Ok(RunningSfu {
        http_addr,
        media_addr,
        stop,
        http_stop,
        http_task: Some(http_task),
        media_thread: Some(media_thread),
    })
}

/// What the HTTP side asks of the media thread.
pub(crate) enum Cmd {
    Join {
        room: String,
        publisher: bool,
        offer: SdpOffer,
        reply: oneshot::Sender<Result<(u64, String), (StatusCode, String)>>,
    },
    Leave {
        id: u64,
        reply: oneshot::Sender<bool>,
    },
}
