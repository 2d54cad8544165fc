//! `plenary sfu`: WHIP publish, WHEP programme feed and a WebSocket room API over HTTP; one
//! shared UDP port for every peer, one str0m `Rtc` per peer connection (ICE-lite, RTP mode).
//!
//! Threads: HTTP and WebSockets run on the caller's tokio runtime; media runs on a dedicated OS
//! thread that owns every `Rtc`, so no lock sits on the packet path. HTTP talks to the media
//! thread over a channel. Forwarding decisions live in the sans-IO `core`.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use str0m::change::SdpOffer;
use str0m::Candidate;
use tokio::sync::{oneshot, watch};

mod admission;
mod assets;
mod cascade;
pub mod config;
pub mod core;
pub mod dtls_trace;
mod egress;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod media;
mod metrics_desc;
pub mod signal;
pub mod token;
mod workers;

pub use cascade::{CascadeConfig, LinkStats};
pub use egress::EgressConfig;
use media::MediaLoop;
pub use metrics_desc::describe_metrics;

// The unit tests of the egress fast path count its allocations (armed per thread, so the
// other tests in this binary are not counted).
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: plenary_testalloc::Counting = plenary_testalloc::Counting;

/// Largest SDP offer we accept; real offers are a few KiB.
const MAX_SDP: usize = 64 * 1024;
/// Longest the media loop sleeps, so commands and shutdown are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(5);
/// A session that has not finished ICE+DTLS by then is dropped (abandoned offers).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// WHIP/WHEP/room-API HTTP listener.
    pub http: SocketAddr,
    /// The one UDP socket shared by every peer.
    pub media: SocketAddr,
    /// Advertised instead of the media socket's IP (the port stays the same), for NAT.
    pub public_ip: Option<IpAddr>,
    /// CPUs the media workers are pinned to, worker i to `pin_cpus[i % len]`
    /// (`sched_setaffinity`); `None` leaves them to the kernel.
    pub pin_cpus: Option<Vec<usize>>,
    /// Media worker threads; 0 = one per CPU in `pin_cpus`, else one per available CPU.
    pub workers: usize,
    /// When set, WHIP/WHEP and the room API need a room token signed with one of these.
    pub room_token_secrets: Vec<String>,
    /// ICE servers offered to clients in `Link` headers (WHIP/WHEP) and `joined` (room API).
    pub ice_servers: Option<IceServers>,
    /// Audio m-lines each room participant and WHEP viewer gets for the loudest speakers.
    pub audio_slots: usize,
    /// Most camera videos forwarded to one subscriber at a time (the speaker is always in).
    pub last_n: usize,
    /// Peer connections the server holds at most; further offers get 503.
    pub max_peers: usize,
    /// TWCC/REMB bandwidth estimation (and the pacer) on subscriber connections; the
    /// simulcast layer choice uses it. Off: every subscriber gets the lowest layer it allows.
    pub bandwidth_estimation: bool,
    /// Where each subscriber's estimate starts, kbit/s. Video is paced at a multiple of the
    /// estimate (2.5x on the fast path, 1.1x in str0m), so a start below what a subscriber
    /// receives queues its video until the estimate grows.
    pub initial_estimate_kbps: u64,
    /// How forwarded RTP leaves: the fast path (own headers, SRTP, RTX, sender reports and
    /// estimate; `sendmmsg`; the default), or through str0m (`write_rtp`, its pacer and SRTP).
    /// `PLENARY_SFU_EGRESS=fast|str0m` in the environment overrides it at start.
    pub egress_path: EgressPath,
    /// Members a room holds on one worker before joins also go to other workers, with its
    /// tracks piped between them (0: a room stays on one worker).
    pub room_spill: usize,
    /// Cascading with other nodes; `None`: a single node.
    pub cascade: Option<CascadeConfig>,
    /// Bearer token for the admin endpoints (`GET /rooms`); `None` turns them off (403).
    pub admin_token: Option<String>,
    /// Egresses started over HTTP (`POST /rooms/{room}/egress`), as child processes.
    pub egress: EgressConfig,
}

/// TURN servers handed to clients, with TURN REST credentials from `plenary turn`'s secret.
#[derive(Debug, Clone)]
pub struct IceServers {
    /// `turn:host:port?transport=udp` style URLs (and `stun:` ones, offered without credentials).
    pub urls: Vec<String>,
    pub secret: String,
    /// Credential lifetime.
    pub ttl: Duration,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            media: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_ip: None,
            pin_cpus: None,
            workers: 0,
            room_token_secrets: Vec::new(),
            ice_servers: None,
            audio_slots: 3,
            last_n: 9,
            max_peers: 4096,
            bandwidth_estimation: true,
            initial_estimate_kbps: 3000,
            egress_path: EgressPath::Fast,
            room_spill: 150,
            cascade: None,
            admin_token: None,
            egress: EgressConfig::default(),
        }
    }
}

/// How the SFU sends forwarded RTP to subscribers (`[media] egress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EgressPath {
    /// str0m's `write_rtp` and `poll_output` per packet.
    Str0m,
    /// Plenary's own egress: SRTP with the keys captured from str0m's DTLS, batched sends
    /// (the default; docs/decisions/0006-sfu-fast-egress.md says why).
    #[default]
    Fast,
}

impl EgressPath {
    /// `"str0m"` or `"fast"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "str0m" => Some(Self::Str0m),
            "fast" => Some(Self::Fast),
            _ => None,
        }
    }

    /// The config value, overridden by `PLENARY_SFU_EGRESS` when that is set and valid.
    pub fn with_env_override(self) -> Self {
        std::env::var("PLENARY_SFU_EGRESS")
            .ok()
            .and_then(|v| Self::parse(v.trim()))
            .unwrap_or(self)
    }
}

/// A started SFU. Dropping it stops the media thread; `shutdown` also waits for it.
pub struct RunningSfu {
    http_addr: SocketAddr,
    media_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    http_stop: watch::Sender<bool>,
    http_task: Option<tokio::task::JoinHandle<()>>,
    media_threads: Vec<std::thread::JoinHandle<()>>,
}

/// State both the HTTP side and the media thread read.
pub(crate) struct Shared {
    draining: AtomicBool,
    /// Peer connections held per worker, as of each worker's last policy pass.
    peers: Vec<AtomicUsize>,
    pub(crate) config: SfuConfig,
    pub(crate) router: workers::Router,
    /// Datagrams one worker passed to another (pre-connection ICE only, normally).
    pub(crate) handoffs: std::sync::atomic::AtomicU64,
    /// Subscribers that went onto the fast egress path, and RTX packets it sent.
    pub(crate) fast_subscribers: std::sync::atomic::AtomicU64,
    pub(crate) fast_rtx: std::sync::atomic::AtomicU64,
    /// Peer address → owning worker, for datagrams (DTLS right after ICE) that reach another
    /// worker before the owner's connected socket exists. Read only on that unknown-source
    /// path, written when a worker learns or forgets an address.
    pub(crate) claims: std::sync::Mutex<std::collections::HashMap<SocketAddr, usize>>,
    pub(crate) cascade: Option<Arc<cascade::Cascade>>,
    /// The `plenary egress` children started over HTTP.
    pub(crate) egress: egress::Egresses,
    /// Sessions still connecting, per source address (capped).
    pub(crate) admissions: Arc<admission::Admissions>,
}

impl Shared {
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RunningSfu {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Peer connections held now (updated every 200 ms).
    pub fn peers(&self) -> usize {
        self.shared
            .peers
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum()
    }

    /// Datagrams handed from the worker whose socket got them to the worker owning the peer.
    pub fn handoffs(&self) -> u64 {
        self.shared.handoffs.load(Ordering::Relaxed)
    }

    /// Subscribers whose forwarded RTP took the fast egress path (since start).
    pub fn fast_egress_subscribers(&self) -> u64 {
        self.shared.fast_subscribers.load(Ordering::Relaxed)
    }

    /// RTX packets the fast egress path sent in answer to NACKs (since start).
    pub fn fast_egress_rtx(&self) -> u64 {
        self.shared.fast_rtx.load(Ordering::Relaxed)
    }

    /// Media worker threads running.
    pub fn workers(&self) -> usize {
        self.shared.router.workers()
    }

    /// Refuses new sessions (503) and waits until every peer has left or `timeout` passed.
    /// Returns the number of peers still connected.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.shared.draining.store(true, Ordering::SeqCst);
        // An egress is a WHEP peer of this node: it must go for the drain to end.
        self.shared.egress.stop_all();
        if let Some(c) = &self.shared.cascade {
            // Room participants are sent to another node of their room before this one goes.
            c.drain(&self.shared).await;
        }
        let deadline = Instant::now() + timeout;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let left = self.peers();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
        }
    }

    /// The address this node's cascade links listen on (None on a single node).
    pub fn cascade_addr(&self) -> Option<SocketAddr> {
        self.shared.cascade.as_ref().map(|c| c.link_addr())
    }

    /// Cascade links, one entry per open link. Empty on a single node.
    pub fn cascade_stats(&self) -> Vec<LinkStats> {
        self.shared
            .cascade
            .as_ref()
            .map(|c| c.stats())
            .unwrap_or_default()
    }

    /// Stops accepting HTTP, ends the media loop and waits for both.
    pub async fn shutdown(mut self) {
        // Egresses first, while their WHEP feed still runs (they finish their files).
        self.shared.egress.shutdown(Duration::from_secs(30)).await;
        if let Some(c) = &self.shared.cascade {
            c.stop().await;
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.http_stop.send(true);
        if let Some(t) = self.http_task.take() {
            let _ = t.await;
        }
        let threads = std::mem::take(&mut self.media_threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for RunningSfu {
    fn drop(&mut self) {
        self.shared.egress.shutdown_now();
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.http_stop.send(true);
    }
}

fn pin_current_thread(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it for ids < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus.iter().filter(|c| **c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(?cpus, "could not pin the media thread");
        }
    }
}

/// One SO_REUSEPORT UDP socket on the media address (every worker has one).
fn media_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    let _ = s.set_recv_buffer_size(media::io::SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(media::io::SOCKET_BUFFER);
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn worker_count(config: &SfuConfig) -> usize {
    let n = match (config.workers, &config.pin_cpus) {
        (0, Some(cpus)) if !cpus.is_empty() => cpus.len(),
        (0, _) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        (n, _) => n,
    };
    n.clamp(1, workers::MAX_WORKERS)
}

/// Binds the sockets, starts the media workers and the HTTP accept loop.
pub async fn serve(config: SfuConfig) -> anyhow::Result<RunningSfu> {
    let listener = http::bind_listener(config.http)
        .map_err(|e| anyhow::anyhow!("http listener {}: {e}", config.http))?;
    let http_addr = listener.local_addr()?;
    let first = media_socket(config.media)
        .map_err(|e| anyhow::anyhow!("media socket {}: {e}", config.media))?;
    let media_addr = first.local_addr()?;
    let advertised = match config.public_ip {
        Some(ip) => SocketAddr::new(ip, media_addr.port()),
        None => media_addr,
    };
    // Fail early rather than on the first offer.
    Candidate::host(advertised, "udp")
        .map_err(|e| anyhow::anyhow!("media address {advertised} not usable: {e}"))?;

    let mut n = worker_count(&config);
    let cascade = match &config.cascade {
        Some(c) => {
            // Span bits from LINK_BASE up are links to other nodes.
            n = n.min(workers::LINK_BASE);
            Some(Arc::new(cascade::Cascade::new(c.clone(), http_addr).await?))
        }
        None => None,
    };
    let mut sockets = vec![first];
    for _ in 1..n {
        sockets.push(
            media_socket(media_addr)
                .map_err(|e| anyhow::anyhow!("media socket {media_addr}: {e}"))?,
        );
    }
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel::<Cmd>()).unzip();
    let stop = Arc::new(AtomicBool::new(false));
    let egress = egress::Egresses::start(&config.egress, http_addr, &config.room_token_secrets)?;
    let shared = Arc::new(Shared {
        draining: AtomicBool::new(false),
        peers: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        config: config.clone(),
        router: workers::Router::new(senders, config.room_spill),
        handoffs: std::sync::atomic::AtomicU64::new(0),
        fast_subscribers: std::sync::atomic::AtomicU64::new(0),
        fast_rtx: std::sync::atomic::AtomicU64::new(0),
        claims: std::sync::Mutex::new(std::collections::HashMap::new()),
        cascade,
        egress,
        admissions: admission::Admissions::new(admission::MAX_CONNECTING_PER_SOURCE),
    });
    if let Some(c) = &shared.cascade {
        c.start(&shared).await;
        tracing::info!(node = c.node(), links = %c.link_addr(), "cascade on");
    }
    let mut media_threads = Vec::with_capacity(n);
    for (w, (sock, rx)) in sockets.into_iter().zip(receivers).enumerate() {
        let stop = stop.clone();
        let shared = shared.clone();
        let pin = config.pin_cpus.clone();
        let config = config.clone();
        media_threads.push(
            std::thread::Builder::new()
                .name(format!("plenary-sfu-media-{w}"))
                .spawn(move || {
                    if let Some(cpus) = pin.filter(|c| !c.is_empty()) {
                        pin_current_thread(&[cpus[w % cpus.len()]]);
                    }
                    match MediaLoop::new(w, sock, media_addr, advertised, rx, config, shared) {
                        Ok(l) => l.run(&stop),
                        Err(e) => tracing::error!(worker = w, "media worker cannot start: {e}"),
                    }
                })?,
        );
    }
    let (http_stop, stop_rx) = watch::channel(false);
    let http_task = tokio::spawn(http::accept_loop(listener, shared.clone(), stop_rx));
    tracing::info!(%http_addr, %media_addr, %advertised, workers = n, "sfu started");
    Ok(RunningSfu {
        http_addr,
        media_addr,
        stop,
        shared,
        http_stop,
        http_task: Some(http_task),
        media_threads,
    })
}

/// What a WHIP/WHEP URL's query asks for beyond a plain session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SessionOpts {
    /// WHIP `?source=screen`: the publisher's video is a screen share (OBS sending slides).
    pub screen_source: bool,
    /// WHEP `?screen=1`: the offer's second video m-line carries the room's screen share, and
    /// the programme m-lines carry cameras only (a broadcast lays them out side by side).
    pub screen_slot: bool,
}

impl SessionOpts {
    /// Reads `source=screen` and `screen=1|true` from a query string; other keys are ignored.
    pub(crate) fn from_query(query: Option<&str>) -> Self {
        let mut o = Self::default();
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("source", "screen")) => o.screen_source = true,
                Some(("screen", "1" | "true")) => o.screen_slot = true,
                _ => {}
            }
        }
        o
    }
}

type JoinReply = oneshot::Sender<Result<(u64, String), (StatusCode, String)>>;

/// What the HTTP side asks of the media thread.
pub(crate) enum Cmd {
    Whip {
        room: String,
        offer: SdpOffer,
        opts: SessionOpts,
        admission: admission::Admission,
        reply: JoinReply,
    },
    Whep {
        room: String,
        offer: SdpOffer,
        opts: SessionOpts,
        admission: admission::Admission,
        reply: JoinReply,
    },
    /// WHIP/WHEP `DELETE`: the resource id is the participant id.
    Leave {
        id: u64,
        reply: oneshot::Sender<bool>,
    },
    Room(RoomCmd),
    /// A datagram for one of this worker's peers that reached another worker's socket
    /// (before the peer's connected socket exists).
    Handoff {
        src: SocketAddr,
        data: Vec<u8>,
    },
    /// Between the workers a large room spans: membership, tracks, media, keyframe requests.
    Pipe(media::PipeMsg),
    /// Cascade drain: every room API participant of `room` here is told to rejoin at `url`.
    Rehome {
        room: String,
        url: String,
    },
    /// Cascade: the room's nodes changed; its room API participants here are told.
    RoomNodes {
        room: String,
        nodes: Vec<String>,
    },
    /// Admin listing (`GET /rooms`): the worker's own participants, by room.
    Rooms {
        reply: oneshot::Sender<http::rooms::WorkerRooms>,
    },
}

pub(crate) enum RoomCmd {
    Join {
        room: String,
        name: String,
        events: tokio::sync::mpsc::Sender<signal::ServerMsg>,
        /// Held by the participant's subscribe connection until it connects.
        admission: admission::Admission,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Msg {
        participant: u64,
        msg: signal::ClientMsg,
    },
    Leave {
        participant: u64,
    },
}
