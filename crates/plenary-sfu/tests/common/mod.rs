//! Synthetic room-API clients for the SFU integration tests.
//!
//! A [`Client`] is what a browser would be: a WebSocket task (tokio-tungstenite) that logs every
//! server message and answers the server's `offer`s, plus str0m peers in RTP mode, each on its
//! own OS thread with its own loopback UDP socket ([`MediaPeer`]). A publishing peer sends
//! synthetic VP8 (RFC 7741 descriptor, keyframes on PLI) and Opus-sized audio with the RFC 6464
//! level extension; every peer records what it receives, tagged by who sent it and which layer.

#![allow(dead_code)]

pub mod lossy_udp;
pub mod redis;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use plenary_sfu::{serve, RunningSfu, SfuConfig};
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, VideoOrientation};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio_tungstenite::tungstenite::Message;

/// Video frame rate of the synthetic encoder.
pub const FPS: u64 = 30;
/// Largest RTP payload the synthetic encoder writes.
const MAX_PAYLOAD: usize = 1000;
/// Audio packet interval (Opus 20 ms frames) and payload size.
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const AUDIO_PAYLOAD: usize = 80;
/// RFC 6464 levels the synthetic microphone reports.
pub const TALKING: i8 = -20;
pub const SILENT: i8 = -127;
/// Where the synthetic payloads carry their markers (after the 4-byte VP8 descriptor and the
/// first VP8 payload-header byte).
const VIDEO_TAG_AT: usize = 5;
const VIDEO_LAYER_AT: usize = 6;
const VIDEO_KEY_AT: usize = 7;
const AUDIO_TAG_AT: usize = 1;
/// No client thread outlives this, whatever a failing test does (the cascade's Redis outage
/// test runs its media for over 60 s).
const PEER_LIFETIME: Duration = Duration::from_secs(120);

/// Starts an SFU on ephemeral loopback ports; `f` adjusts the config.
pub async fn start_sfu(f: impl FnOnce(&mut SfuConfig)) -> RunningSfu {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut cfg = SfuConfig {
        http: any,
        media: any,
        ..SfuConfig::default()
    };
    f(&mut cfg);
    serve(cfg).await.expect("sfu starts")
}

/// Polls `f` every 20 ms until it holds or `limit` passes; returns the last answer.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Media: what a peer sends and what it received.

/// One simulcast layer (or the only encoding) of the synthetic camera.
#[derive(Debug, Clone, Copy)]
pub struct LayerPlan {
    pub rid: Option<&'static str>,
    pub bps: u64,
}

/// What a publishing peer sends. `tag` marks every payload so receivers can tell publishers
/// apart; the layer index is marked too.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub tag: u8,
    pub audio: bool,
    /// Empty: no video. One layer without rid: plain video. Several with rids: simulcast.
    pub video: Vec<LayerPlan>,
}

impl PublishPlan {
    /// Microphone plus a single-layer camera at `bps`.
    pub fn av(tag: u8, bps: u64) -> PublishPlan {
        PublishPlan {
            tag,
            audio: true,
            video: vec![LayerPlan { rid: None, bps }],
        }
    }

    /// A camera in simulcast layers `(rid, bps)`, lowest first, and no microphone.
    pub fn simulcast(tag: u8, layers: &[(&'static str, u64)]) -> PublishPlan {
        PublishPlan {
            tag,
            audio: false,
            video: layers
                .iter()
                .map(|&(rid, bps)| LayerPlan {
                    rid: Some(rid),
                    bps,
                })
                .collect(),
        }
    }

    pub fn audio_only(tag: u8) -> PublishPlan {
        PublishPlan {
            tag,
            audio: true,
            video: Vec::new(),
        }
    }
}

/// One RTP packet as the receiving str0m `Rtc` handed it out.
#[derive(Debug, Clone)]
pub struct Rec {
    pub mid: String,
    pub kind: MediaKind,
    /// Extended sequence number (str0m's `SeqNo`).
    pub seq: u64,
    pub ts: u32,
    /// Publisher tag and layer from the synthetic payload (audio: layer 0).
    pub tag: u8,
    pub layer: u8,
    /// First packet of a keyframe (S bit, PID 0, P bit 0).
    pub key: bool,
    pub level: Option<i8>,
    /// Video orientation: publishers here say "90 degrees" on each frame's last packet.
    pub rotation: Option<VideoOrientation>,
    pub at: Instant,
    /// RTP payload bytes.
    pub bytes: usize,
}

/// Drops chosen first transmissions of one m-line's RTP at the UDP layer, before str0m sees
/// (and decrypts) them: the `positions`-th packets (0-based) of its main SSRC.
#[derive(Debug, Clone, Default)]
pub struct DropPlan {
    pub mid: String,
    pub positions: Vec<usize>,
    seen: usize,
    /// 16-bit sequence numbers of the datagrams dropped.
    pub dropped: Vec<u16>,
}

impl DropPlan {
    pub fn new(mid: &str, positions: &[usize]) -> DropPlan {
        DropPlan {
            mid: mid.to_owned(),
            positions: positions.to_vec(),
            ..DropPlan::default()
        }
    }
}

/// State shared between a peer thread and the test.
#[derive(Default)]
pub struct PeerShared {
    pub connected: AtomicBool,
    pub dead: AtomicBool,
    pub stop: AtomicBool,
    /// Publisher: media flows only while set.
    pub sending: AtomicBool,
    /// Publisher: audio packets carry `TALKING` rather than `SILENT`.
    pub talking: AtomicBool,
    pub received: Mutex<Vec<Rec>>,
    /// Publisher: keyframe requests (PLI/FIR) per layer index.
    pub keyframe_requests: [AtomicU64; 3],
    /// Publisher: keyframes sent per layer index.
    pub keyframes_sent: [AtomicU64; 3],
    /// Publisher: layers not sent (per layer index), as a browser's encoder does with a
    /// simulcast encoding set inactive; a resumed layer starts with a keyframe.
    pub layer_paused: [AtomicBool; 3],
    /// Receiver: NACKs this peer sent (from str0m ingress stats, summed over streams).
    pub nacks: Mutex<HashMap<String, u64>>,
    pub drop: Mutex<Option<DropPlan>>,
}

impl PeerShared {
    pub fn records(&self) -> Vec<Rec> {
        self.received.lock().unwrap().clone()
    }

    pub fn records_on(&self, mid: &str) -> Vec<Rec> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.mid == mid)
            .cloned()
            .collect()
    }

    pub fn count_on(&self, mid: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.mid == mid)
            .count()
    }

    pub fn keyframe_requests(&self, layer: usize) -> u64 {
        self.keyframe_requests[layer].load(Ordering::SeqCst)
    }

    pub fn nacks_sent(&self) -> u64 {
        self.nacks.lock().unwrap().values().sum()
    }
}

enum PeerCmd {
    /// Accept a server offer; reply with the answer SDP.
    AcceptOffer(String, tokio::sync::oneshot::Sender<Result<String, String>>),
}

/// A str0m `Rtc` on its own thread and UDP socket.
pub struct MediaPeer {
    pub shared: Arc<PeerShared>,
    cmds: mpsc::Sender<PeerCmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MediaPeer {
    /// Asks the thread to end and waits for it.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MediaPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client `Rtc` (VP8 + Opus only, RTP mode) with a host candidate on a fresh loopback socket.
fn new_rtc(stats: bool) -> (Rtc, UdpSocket) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("client udp socket");
    let local = sock.local_addr().unwrap();
    let mut cfg = RtcConfig::new()
        .clear_codecs()
        .enable_vp8(true)
        .enable_opus(true, false)
        .set_rtp_mode(true);
    if stats {
        cfg = cfg.set_stats_interval(Some(Duration::from_millis(250)));
    }
    let mut rtc = cfg.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    (rtc, sock)
}

fn spawn_peer(
    rtc: Rtc,
    sock: UdpSocket,
    sender: Option<SenderState>,
    shared: Arc<PeerShared>,
) -> MediaPeer {
    let (tx, rx) = mpsc::channel();
    let sh = shared.clone();
    let thread = std::thread::Builder::new()
        .name("test-peer".into())
        .spawn(move || peer_loop(rtc, sock, sender, sh, rx))
        .unwrap();
    MediaPeer {
        shared,
        cmds: tx,
        thread: Some(thread),
    }
}

fn vp8_payload(tag: u8, layer: u8, picture_id: u16, start: bool, key: bool, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(12)];
    // RFC 7741: X=1, S as given, PID=0; I=1 (picture ID present, 15-bit form).
    p[0] = 0x80 | if start { 0x10 } else { 0 };
    p[1] = 0x80;
    p[2] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
    p[3] = picture_id as u8;
    // VP8 payload header (RFC 6386 9.1): P bit (bit 0) 0 = key frame, 1 = inter frame.
    p[4] = if key { 0x10 } else { 0x11 };
    p[VIDEO_TAG_AT] = tag;
    p[VIDEO_LAYER_AT] = layer;
    p[VIDEO_KEY_AT] = u8::from(key);
    for (i, b) in p.iter_mut().enumerate().skip(8) {
        *b = i as u8;
    }
    p
}

fn is_vp8_key_start(p: &[u8]) -> bool {
    p.len() > 4 && p[0] & 0x10 != 0 && p[0] & 0x07 == 0 && p[4] & 0x01 == 0
}

struct LayerState {
    rid: Option<Rid>,
    bps: u64,
    seq: u64,
    picture_id: u16,
    key_pending: bool,
}

/// The synthetic encoder of a publishing peer.
struct SenderState {
    tag: u8,
    video: Option<(Mid, Pt)>,
    audio: Option<(Mid, Pt)>,
    layers: Vec<LayerState>,
    frame: u64,
    next_frame: Option<Instant>,
    audio_seq: u64,
    next_audio: Option<Instant>,
}

impl SenderState {
    fn new(rtc: &Rtc, plan: &PublishPlan, amid: Option<Mid>, vmid: Option<Mid>) -> SenderState {
        let pt = |mid: Mid, codec: Codec| {
            let pts = rtc.media(mid).expect("media").remote_pts().to_vec();
            rtc.codec_config()
                .params()
                .iter()
                .find(|c| c.spec().codec == codec && pts.contains(&c.pt()))
                .map(|c| c.pt())
                .unwrap_or_else(|| panic!("{codec:?} negotiated on {mid}"))
        };
        let tag = u64::from(plan.tag);
        SenderState {
            tag: plan.tag,
            video: vmid.map(|m| (m, pt(m, Codec::Vp8))),
            audio: amid.map(|m| (m, pt(m, Codec::Opus))),
            layers: plan
                .video
                .iter()
                .enumerate()
                .map(|(i, l)| LayerState {
                    rid: l.rid.map(Rid::from),
                    bps: l.bps,
                    seq: 1000 + 7000 * i as u64 + 97 * tag,
                    picture_id: 100 * i as u16,
                    key_pending: true,
                })
                .collect(),
            frame: 0,
            next_frame: None,
            audio_seq: 500 + 31 * tag,
            next_audio: None,
        }
    }

    fn keyframe_request(&mut self, rid: Option<Rid>, sh: &PeerShared) {
        let i = match rid {
            None => Some(0),
            Some(r) => self.layers.iter().position(|l| l.rid == Some(r)),
        };
        if let Some(l) = i.and_then(|i| self.layers.get_mut(i).map(|l| (i, l))) {
            l.1.key_pending = true;
            sh.keyframe_requests[l.0].fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Writes whatever is due; returns whether it wrote and the next time something is due.
    fn tick(&mut self, rtc: &mut Rtc, now: Instant, sh: &PeerShared) -> (bool, Instant) {
        let frame_interval = Duration::from_micros(1_000_000 / FPS);
        let mut next = now + Duration::from_millis(50);
        let mut wrote = false;
        if let Some((vmid, vpt)) = self.video {
            let due = *self.next_frame.get_or_insert(now);
            if now >= due {
                let ts = (self.frame * (90_000 / FPS)) as u32;
                for (i, l) in self.layers.iter_mut().enumerate() {
                    if sh.layer_paused[i].load(Ordering::Relaxed) {
                        l.key_pending = true;
                        continue;
                    }
                    let bytes = (l.bps / 8 / FPS) as usize;
                    let packets = bytes.div_ceil(MAX_PAYLOAD).max(1);
                    let key = std::mem::take(&mut l.key_pending);
                    if key {
                        sh.keyframes_sent[i].fetch_add(1, Ordering::SeqCst);
                    }
                    l.picture_id = (l.picture_id + 1) & 0x7fff;
                    let mut api = rtc.direct_api();
                    let Some(tx) = api.stream_tx_by_mid(vmid, l.rid) else {
                        continue;
                    };
                    for k in 0..packets {
                        let len = if k + 1 == packets {
                            bytes - MAX_PAYLOAD * (packets - 1)
                        } else {
                            MAX_PAYLOAD
                        };
                        let payload =
                            vp8_payload(self.tag, i as u8, l.picture_id, k == 0, key, len);
                        l.seq += 1;
                        let last = k + 1 == packets;
                        let ext = ExtensionValues {
                            video_orientation: last.then_some(VideoOrientation::Deg90),
                            ..ExtensionValues::default()
                        };
                        tx.write_rtp(
                            RtpWrite::new(vpt, l.seq.into(), ts, now, Arc::<[u8]>::from(payload))
                                .marker(last)
                                .ext_vals(ext)
                                .nackable(true),
                        );
                    }
                }
                self.frame += 1;
                wrote = true;
                // Keep the cadence; after a stall, do not burst to catch up.
                self.next_frame = Some((due + frame_interval).max(now));
            }
            next = next.min(self.next_frame.unwrap_or(next));
        }
        if let Some((amid, apt)) = self.audio {
            let due = *self.next_audio.get_or_insert(now);
            if now >= due {
                self.audio_seq += 1;
                let mut payload = vec![0x55u8; AUDIO_PAYLOAD];
                payload[0] = 0xfc;
                payload[AUDIO_TAG_AT] = self.tag;
                let ext = ExtensionValues {
                    audio_level: Some(if sh.talking.load(Ordering::Relaxed) {
                        TALKING
                    } else {
                        SILENT
                    }),
                    voice_activity: Some(sh.talking.load(Ordering::Relaxed)),
                    ..ExtensionValues::default()
                };
                let mut api = rtc.direct_api();
                if let Some(tx) = api.stream_tx_by_mid(amid, None) {
                    tx.write_rtp(
                        RtpWrite::new(
                            apt,
                            self.audio_seq.into(),
                            (self.audio_seq * 960) as u32,
                            now,
                            Arc::<[u8]>::from(payload),
                        )
                        .ext_vals(ext),
                    );
                }
                self.next_audio = Some((due + AUDIO_INTERVAL).max(now));
                wrote = true;
            }
            next = next.min(self.next_audio.unwrap_or(next));
        }
        (wrote, next)
    }
}

/// RTP (not RTCP, STUN or DTLS) datagram: (ssrc, 16-bit seq).
fn rtp_ids(d: &[u8]) -> Option<(u32, u16)> {
    if d.len() < 12 || d[0] >> 6 != 2 || (64..=95).contains(&(d[1] & 0x7f)) {
        return None;
    }
    let seq = u16::from_be_bytes([d[2], d[3]]);
    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    Some((ssrc, seq))
}

fn peer_loop(
    mut rtc: Rtc,
    sock: UdpSocket,
    mut sender: Option<SenderState>,
    sh: Arc<PeerShared>,
    cmds: mpsc::Receiver<PeerCmd>,
) {
    let local = sock.local_addr().unwrap();
    let deadline = Instant::now() + PEER_LIFETIME;
    let mut buf = vec![0u8; 2048];
    // Main SSRC of each receiving m-line, learnt from the packets str0m hands out.
    let mut main_ssrc: HashMap<u32, String> = HashMap::new();
    while Instant::now() < deadline && !sh.stop.load(Ordering::Relaxed) {
        while let Ok(cmd) = cmds.try_recv() {
            match cmd {
                PeerCmd::AcceptOffer(sdp, reply) => {
                    let r = SdpOffer::from_sdp_string(&sdp)
                        .map_err(|e| e.to_string())
                        .and_then(|o| rtc.sdp_api().accept_offer(o).map_err(|e| e.to_string()))
                        .map(|a| a.to_sdp_string());
                    let _ = reply.send(r);
                }
            }
        }
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => sh.connected.store(true, Ordering::SeqCst),
                    Event::KeyframeRequest(r) => {
                        if let Some(s) = sender.as_mut() {
                            s.keyframe_request(r.rid, &sh);
                        }
                    }
                    Event::RtpPacket(p) => {
                        let Some((mid, kind)) = rtc
                            .direct_api()
                            .stream_rx(&p.header.ssrc)
                            .map(|s| s.mid())
                            .and_then(|m| Some((m, rtc.media(m)?.kind())))
                        else {
                            continue;
                        };
                        main_ssrc.insert(*p.header.ssrc, mid.to_string());
                        let pl = &p.payload;
                        let (tag, layer, key) = match kind {
                            MediaKind::Video => (
                                pl.get(VIDEO_TAG_AT).copied().unwrap_or(0),
                                pl.get(VIDEO_LAYER_AT).copied().unwrap_or(0),
                                is_vp8_key_start(pl),
                            ),
                            MediaKind::Audio => {
                                (pl.get(AUDIO_TAG_AT).copied().unwrap_or(0), 0, false)
                            }
                        };
                        sh.received.lock().unwrap().push(Rec {
                            mid: mid.to_string(),
                            kind,
                            seq: *p.seq_no,
                            ts: p.header.timestamp,
                            tag,
                            layer,
                            key,
                            level: p.header.ext_vals.audio_level,
                            rotation: p.header.ext_vals.video_orientation,
                            at: Instant::now(),
                            bytes: p.payload.len(),
                        });
                    }
                    Event::MediaIngressStats(s) => {
                        let key = format!("{}/{:?}", s.mid, s.rid);
                        sh.nacks.lock().unwrap().insert(key, s.nacks);
                    }
                    _ => {}
                },
                Err(_) => {
                    sh.dead.store(true, Ordering::SeqCst);
                    return;
                }
            }
        };
        if !rtc.is_alive() {
            sh.dead.store(true, Ordering::SeqCst);
            return;
        }
        let now = Instant::now();
        if now >= timeout {
            // Timers (NACK, RTCP, TWCC feedback) must run even while datagrams keep coming.
            let _ = rtc.handle_input(Input::Timeout(now));
            continue;
        }
        let mut wake = timeout.min(now + Duration::from_millis(10));
        if let Some(s) = sender.as_mut() {
            if sh.connected.load(Ordering::Relaxed) && sh.sending.load(Ordering::Relaxed) {
                let (wrote, next) = s.tick(&mut rtc, now, &sh);
                if wrote {
                    // Flush what was written (and see events) before sleeping.
                    continue;
                }
                wake = wake.min(next);
            }
        }
        let wait = wake
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(200));
        sock.set_read_timeout(Some(wait)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                let data = &buf[..n];
                if let Some((ssrc, seq)) = rtp_ids(data) {
                    let mut plan = sh.drop.lock().unwrap();
                    if let Some(plan) = plan.as_mut() {
                        if main_ssrc.get(&ssrc) == Some(&plan.mid) {
                            let pos = plan.seen;
                            plan.seen += 1;
                            if plan.positions.contains(&pos) {
                                plan.dropped.push(seq);
                                continue;
                            }
                        }
                    }
                }
                if let Ok(r) = Receive::new(Protocol::Udp, src, local, data) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                }
            }
            Err(_) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Room API client.

/// A room participant: WebSocket + subscribe peer (+ publish peer once it publishes).
pub struct Client {
    pub id: String,
    log: Arc<Mutex<Vec<Value>>>,
    out: tokio::sync::mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
    pub sub: MediaPeer,
    pub publ: Option<MediaPeer>,
    /// Mids of the publish connection: (audio, video).
    pub pub_mids: (Option<String>, Option<String>),
}

/// Why a WebSocket could not be opened.
#[derive(Debug)]
pub enum WsRefused {
    Http(u16),
    Other(String),
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens the room WebSocket (`query` without the `?`, e.g. `token=...`).
pub async fn ws_connect(
    http: SocketAddr,
    room: &str,
    query: Option<&str>,
) -> Result<Ws, WsRefused> {
    let url = match query {
        Some(q) => format!("ws://{http}/rooms/{room}?{q}"),
        None => format!("ws://{http}/rooms/{room}"),
    };
    let tcp = tokio::net::TcpStream::connect(http)
        .await
        .map_err(|e| WsRefused::Other(e.to_string()))?;
    match tokio_tungstenite::client_async(url, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            Err(WsRefused::Http(r.status().as_u16()))
        }
        Err(e) => Err(WsRefused::Other(e.to_string())),
    }
}

impl Client {
    /// Connects, joins and starts answering the server's offers.
    pub async fn join(http: SocketAddr, room: &str, name: &str) -> Client {
        let ws = ws_connect(http, room, None).await.expect("websocket opens");
        Client::join_on(ws, name).await
    }

    pub async fn join_on(ws: Ws, name: &str) -> Client {
        Client::join_on_after(ws, name, None).await
    }

    /// Sends `join` without waiting for `joined` (the server may answer `error` or
    /// `redirect` instead); `wait_joined` tells.
    pub async fn join_raw(http: SocketAddr, room: &str, name: &str) -> Client {
        let ws = ws_connect(http, room, None).await.expect("websocket opens");
        let c = Client::open(ws);
        c.send(json!({"type": "join", "name": name}));
        c
    }

    /// The client's WebSocket task and subscribe peer, before anything is sent.
    fn open(ws: Ws) -> Client {
        let (rtc, sock) = new_rtc(true);
        let sub = spawn_peer(rtc, sock, None, Arc::new(PeerShared::default()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (out, out_rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(ws_task(ws, out_rx, log.clone(), sub.cmds.clone()));
        Client {
            id: String::new(),
            log,
            out,
            task,
            sub,
            publ: None,
            pub_mids: (None, None),
        }
    }

    /// Whether `joined` arrives within `limit` (sets the id when it does).
    pub async fn wait_joined(&mut self, limit: Duration) -> bool {
        let Some(joined) = self.wait_from(0, limit, |v| v["type"] == "joined").await else {
            return false;
        };
        self.id = joined["participant"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        true
    }

    /// Joins on `ws`, first sending `before` (raw text) if given.
    pub async fn join_on_after(ws: Ws, name: &str, before: Option<&str>) -> Client {
        let mut c = Client::open(ws);
        if let Some(text) = before {
            c.send_raw(text);
        }
        c.send(json!({"type": "join", "name": name}));
        let joined = c
            .wait("joined", Duration::from_secs(5), |v| v["type"] == "joined")
            .await;
        c.id = joined["participant"]
            .as_str()
            .expect("participant id")
            .to_owned();
        c
    }

    /// Sends a message (a JSON value) on the WebSocket.
    pub fn send(&self, v: Value) {
        let _ = self.out.send(v.to_string());
    }

    /// Sends raw text on the WebSocket.
    pub fn send_raw(&self, s: &str) {
        let _ = self.out.send(s.to_owned());
    }

    pub fn log(&self) -> Vec<Value> {
        self.log.lock().unwrap().clone()
    }

    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Messages of a type, in arrival order.
    pub fn of_type(&self, t: &str) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["type"] == t)
            .cloned()
            .collect()
    }

    /// First message (from index `from` on) that satisfies `pred`, or `None` by `limit`.
    pub async fn wait_from(
        &self,
        from: usize,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let until = Instant::now() + limit;
        loop {
            if let Some(v) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .skip(from)
                .find(|v| pred(v))
                .cloned()
            {
                return Some(v);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like [`Client::wait_from`] over the whole log; panics with the log on timeout.
    pub async fn wait(&self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        match self.wait_from(0, limit, pred).await {
            Some(v) => v,
            None => panic!(
                "{}: no {what} within {limit:?}; got {:#?}",
                self.id,
                self.log()
                    .iter()
                    .map(|v| {
                        let mut v = v.clone();
                        if v.get("sdp").is_some() {
                            v["sdp"] = json!("…");
                        }
                        v
                    })
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Publishes `plan` on a new publish connection and starts its media thread (media flows
    /// once connected and `sending` is set; it is set here).
    pub async fn publish(&mut self, plan: PublishPlan) {
        self.publish_paused(plan, &[]).await;
    }

    /// As [`Client::publish`], with the video layers at `paused` (indices) not sent from the
    /// start, as if their encoders had not started yet.
    pub async fn publish_paused(&mut self, plan: PublishPlan, paused: &[usize]) {
        let (mut rtc, sock) = new_rtc(false);
        let mut api = rtc.sdp_api();
        let amid = plan
            .audio
            .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let vmid = (!plan.video.is_empty()).then(|| {
            let simulcast = plan
                .video
                .iter()
                .any(|l| l.rid.is_some())
                .then(|| Simulcast {
                    send: plan
                        .video
                        .iter()
                        .map(|l| SimulcastLayer::new(l.rid.expect("every layer has a rid")))
                        .collect(),
                    recv: Vec::new(),
                });
            api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast)
        });
        let (offer, pending) = api.apply().expect("publish offer");
        let mut tracks = Vec::new();
        if let Some(m) = amid {
            tracks.push(json!({"mid": m.to_string(), "kind": "audio", "source": "microphone"}));
        }
        if let Some(m) = vmid {
            tracks.push(json!({"mid": m.to_string(), "kind": "video", "source": "camera"}));
        }
        let mark = self.log_len();
        self.send(json!({"type": "publish", "sdp": offer.to_sdp_string(), "tracks": tracks}));
        let answer = self
            .wait_from(mark, Duration::from_secs(5), |v| {
                v["type"] == "publish_answer" || v["type"] == "error"
            })
            .await
            .expect("publish answered");
        assert_eq!(answer["type"], "publish_answer", "{answer}");
        let answer = SdpAnswer::from_sdp_string(answer["sdp"].as_str().unwrap()).unwrap();
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("publish answer accepted");
        let sender = SenderState::new(&rtc, &plan, amid, vmid);
        let shared = Arc::new(PeerShared::default());
        for &l in paused {
            shared.layer_paused[l].store(true, Ordering::SeqCst);
        }
        shared.sending.store(true, Ordering::SeqCst);
        self.publ = Some(spawn_peer(rtc, sock, Some(sender), shared));
        self.pub_mids = (amid.map(|m| m.to_string()), vmid.map(|m| m.to_string()));
    }

    pub fn publisher(&self) -> &PeerShared {
        &self.publ.as_ref().expect("published").shared
    }

    pub fn set_talking(&self, on: bool) {
        self.publisher().talking.store(on, Ordering::SeqCst);
    }

    /// The track id of `participant`'s `kind` track, from `joined` or `track_published`.
    pub fn track_of(&self, participant: &str, kind: &str) -> Option<String> {
        let log = self.log.lock().unwrap();
        for v in log.iter() {
            if v["type"] == "track_published"
                && v["participant"] == participant
                && v["track"]["kind"] == kind
            {
                return v["track"]["id"].as_str().map(str::to_owned);
            }
            if v["type"] == "joined" {
                for p in v["participants"].as_array().into_iter().flatten() {
                    if p["id"] != participant {
                        continue;
                    }
                    for t in p["tracks"].as_array().into_iter().flatten() {
                        if t["kind"] == kind {
                            return t["id"].as_str().map(str::to_owned);
                        }
                    }
                }
            }
        }
        None
    }

    pub async fn wait_track(&self, participant: &str, kind: &str) -> String {
        let ok = eventually(Duration::from_secs(5), || {
            self.track_of(participant, kind).is_some()
        })
        .await;
        assert!(
            ok,
            "{}: no {kind} track of {participant}: {:?}",
            self.id,
            self.log()
        );
        self.track_of(participant, kind).unwrap()
    }

    /// The subscribe-connection mid that carries `track`, from the latest `offer`.
    pub fn slot_mid(&self, track: &str) -> Option<String> {
        let offers = self.of_type("offer");
        let last = offers.last()?;
        last["slots"]
            .as_array()?
            .iter()
            .find(|s| s["track"] == track)
            .and_then(|s| s["mid"].as_str())
            .map(str::to_owned)
    }

    /// Subscribes to `track` and waits for the renegotiated offer that carries it.
    pub async fn subscribe(&self, track: &str, max_layer: Option<u8>) -> String {
        let mut t = json!({"track": track});
        if let Some(l) = max_layer {
            t["max_layer"] = json!(l);
        }
        self.send(json!({"type": "subscribe", "tracks": [t]}));
        let ok = eventually(Duration::from_secs(5), || self.slot_mid(track).is_some()).await;
        assert!(ok, "{}: no slot for {track}", self.id);
        self.slot_mid(track).unwrap()
    }

    /// Audio slot mids offered on the subscribe connection.
    pub fn audio_slot_mids(&self) -> Vec<String> {
        self.of_type("offer")
            .last()
            .and_then(|o| o["slots"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|s| s["kind"] == "audio" && s.get("track").is_none())
            .filter_map(|s| s["mid"].as_str().map(str::to_owned))
            .collect()
    }

    /// Both connections (the publish one if any) are up.
    pub async fn wait_connected(&self) {
        let ok = eventually(Duration::from_secs(10), || {
            self.sub.shared.connected.load(Ordering::SeqCst)
                && self
                    .publ
                    .as_ref()
                    .is_none_or(|p| p.shared.connected.load(Ordering::SeqCst))
        })
        .await;
        assert!(ok, "{}: media connections did not come up", self.id);
    }

    /// Whether the WebSocket is still open.
    pub fn ws_open(&self) -> bool {
        !self.task.is_finished()
    }

    pub async fn leave(mut self) {
        self.send(json!({"type": "leave"}));
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
        if let Some(p) = self.publ.as_mut() {
            p.stop();
        }
        self.sub.stop();
    }
}

async fn ws_task(
    mut ws: Ws,
    mut out: tokio::sync::mpsc::UnboundedReceiver<String>,
    log: Arc<Mutex<Vec<Value>>>,
    sub: mpsc::Sender<PeerCmd>,
) {
    loop {
        tokio::select! {
            m = out.recv() => {
                let Some(text) = m else { break };
                let leave = text.contains("\"leave\"");
                if ws.send(Message::text(text)).await.is_err() {
                    break;
                }
                if leave {
                    // The server ends the session; keep reading until it closes.
                    continue;
                }
            }
            m = ws.next() => {
                let Some(Ok(m)) = m else { break };
                let Message::Text(t) = m else {
                    if matches!(m, Message::Close(_)) { break }
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    log.lock().unwrap().push(json!({"type": "_unparsable", "text": t.as_str()}));
                    continue;
                };
                if v["type"] == "offer" {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let sdp = v["sdp"].as_str().unwrap_or_default().to_owned();
                    if sub.send(PeerCmd::AcceptOffer(sdp, tx)).is_ok() {
                        match rx.await {
                            Ok(Ok(answer)) => {
                                let msg = json!({"type": "answer", "sdp": answer}).to_string();
                                if ws.send(Message::text(msg)).await.is_err() {
                                    break;
                                }
                            }
                            Ok(Err(e)) => log.lock().unwrap().push(json!({"type": "_offer_refused", "error": e})),
                            Err(_) => {}
                        }
                    }
                }
                let mut log = log.lock().unwrap();
                log.extend(per_participant(&v));
                log.push(v);
            }
        }
    }
    log.lock().unwrap().push(json!({"type": "_closed"}));
}

/// A `participants` delta as one `participant_joined` / `participant_left` line per participant, so tests can wait
/// for one person (the wire message is logged too).
fn per_participant(v: &Value) -> Vec<Value> {
    if v["type"] != "participants" {
        return Vec::new();
    }
    let joined =
        v["joined"].as_array().into_iter().flatten().map(
            |p| json!({"type": "participant_joined", "participant": p["id"], "name": p["name"]}),
        );
    let left = v["left"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|id| json!({"type": "participant_left", "participant": id}));
    joined.chain(left).collect()
}

// ---------------------------------------------------------------------------------------------
// WHEP viewer.

/// Posts an SDP offer; returns (status, body).
pub fn http_post_sdp(addr: SocketAddr, path: &str, sdp: &str) -> (u16, String) {
    let (status, _, body) = http_post_sdp_head(addr, path, sdp);
    (status, body)
}

/// Posts an SDP offer; returns (status, response head, body).
pub fn http_post_sdp_head(addr: SocketAddr, path: &str, sdp: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_owned(), body.to_owned())
}

/// A WHEP viewer (recvonly audio + video); returns the peer and its (audio, video) mids.
pub fn whep_viewer(http: SocketAddr, room: &str) -> (MediaPeer, String, String) {
    let (mut rtc, sock) = new_rtc(true);
    let mut api = rtc.sdp_api();
    let amid = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let vmid = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().expect("whep offer");
    let (status, body) = http_post_sdp(http, &format!("/whep/{room}"), &offer.to_sdp_string());
    assert_eq!(status, 201, "WHEP POST: {body}");
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&body).unwrap())
        .unwrap();
    let peer = spawn_peer(rtc, sock, None, Arc::new(PeerShared::default()));
    (peer, amid.to_string(), vmid.to_string())
}

/// A WHEP viewer at `path` (query allowed) with one audio and `videos` video m-lines; returns
/// the peer, the audio mid, the video mids in SDP order and the answer's response head.
pub fn whep_viewer_at(
    http: SocketAddr,
    path: &str,
    videos: usize,
) -> (MediaPeer, String, Vec<String>, String) {
    let (mut rtc, sock) = new_rtc(true);
    let mut api = rtc.sdp_api();
    let amid = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let vmids: Vec<String> = (0..videos)
        .map(|_| {
            api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None)
                .to_string()
        })
        .collect();
    let (offer, pending) = api.apply().expect("whep offer");
    let (status, head, body) = http_post_sdp_head(http, path, &offer.to_sdp_string());
    assert_eq!(status, 201, "WHEP POST {path}: {head}\n{body}");
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&body).unwrap())
        .unwrap();
    let peer = spawn_peer(rtc, sock, None, Arc::new(PeerShared::default()));
    (peer, amid.to_string(), vmids, head)
}

/// A WHIP publisher at `path` (query allowed) sending `plan` (single-layer video) once
/// connected; returns the peer and its resource Location.
pub fn whip_publisher(http: SocketAddr, path: &str, plan: PublishPlan) -> (MediaPeer, String) {
    let (mut rtc, sock) = new_rtc(false);
    let mut api = rtc.sdp_api();
    let amid = plan
        .audio
        .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
    let vmid = (!plan.video.is_empty())
        .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
    let (offer, pending) = api.apply().expect("whip offer");
    let (status, head, body) = http_post_sdp_head(http, path, &offer.to_sdp_string());
    assert_eq!(status, 201, "WHIP POST {path}: {head}\n{body}");
    let location = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .expect("Location");
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&body).unwrap())
        .unwrap();
    let sender = SenderState::new(&rtc, &plan, amid, vmid);
    let shared = Arc::new(PeerShared::default());
    shared.sending.store(true, Ordering::SeqCst);
    (spawn_peer(rtc, sock, Some(sender), shared), location)
}

/// Sends a bodiless request; returns the status.
pub fn http_status(addr: SocketAddr, method: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

// ---------------------------------------------------------------------------------------------
// Analysis of received streams.

/// Missing sequence numbers in `recs` (between the lowest and highest received).
pub fn missing_seqs(recs: &[Rec]) -> Vec<u64> {
    let seqs: HashSet<u64> = recs.iter().map(|r| r.seq).collect();
    let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
        return Vec::new();
    };
    (*lo..=*hi).filter(|s| !seqs.contains(s)).collect()
}

/// Records sorted by sequence number, duplicates (retransmissions) removed.
pub fn by_seq(recs: &[Rec]) -> Vec<Rec> {
    let mut v = recs.to_vec();
    v.sort_by_key(|r| r.seq);
    v.dedup_by_key(|r| r.seq);
    v
}

/// Pairs of consecutive (in seq order) packets whose timestamp goes backwards.
pub fn ts_regressions(recs: &[Rec]) -> Vec<(u64, u32, u32)> {
    by_seq(recs)
        .windows(2)
        .filter(|w| (w[1].ts.wrapping_sub(w[0].ts) as i32) < 0)
        .map(|w| (w[1].seq, w[0].ts, w[1].ts))
        .collect()
}

/// Runs of the same `key(rec)` in seq order: (key, first seq, last seq, count, first is key).
pub fn runs<K: PartialEq + Copy>(
    recs: &[Rec],
    key: impl Fn(&Rec) -> K,
) -> Vec<(K, u64, u64, usize, bool)> {
    let mut out: Vec<(K, u64, u64, usize, bool)> = Vec::new();
    for r in by_seq(recs) {
        let k = key(&r);
        match out.last_mut() {
            Some(last) if last.0 == k => {
                last.2 = r.seq;
                last.3 += 1;
            }
            _ => out.push((k, r.seq, r.seq, 1, r.key)),
        }
    }
    out
}
