//! The WHEP side: one str0m peer in frame mode (str0m depacketizes and reorders), offering
//! `audio_slots` audio m-lines and two video m-lines (one without the screen share), all
//! receive-only. The SFU binds the first video m-line to the programme (the active
//! speaker's camera), the second, with `screen=1` in the URL, to the room's current screen
//! share (no RTP while nobody shares), and each audio m-line to one of the loudest voices.
//! Frames go to the mixer through a bounded channel.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use url::Url;

use crate::whep::{self, WhepError};

/// Video codecs the mixer can decode; others are not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
}

impl VideoCodec {
    fn of(codec: Codec) -> Option<VideoCodec> {
        match codec {
            Codec::Vp8 => Some(VideoCodec::Vp8),
            Codec::Vp9 => Some(VideoCodec::Vp9),
            Codec::H264 => Some(VideoCodec::H264),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "vp8",
            VideoCodec::Vp9 => "vp9",
            VideoCodec::H264 => "h264",
        }
    }
}

/// Which video m-line a frame came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoRole {
    /// The programme: the active speaker's camera.
    Speaker,
    /// The room's current screen share.
    Screen,
}

impl VideoRole {
    pub const ALL: [VideoRole; 2] = [VideoRole::Speaker, VideoRole::Screen];

    pub fn index(self) -> usize {
        match self {
            VideoRole::Speaker => 0,
            VideoRole::Screen => 1,
        }
    }
}

/// Set by the mixer when a video decoder needs a fresh keyframe, per `VideoRole::index`.
pub type KeyframeWants = Arc<[AtomicBool; 2]>;

/// One depacketized frame from the SFU.
#[derive(Debug)]
pub enum Frame {
    Video {
        role: VideoRole,
        codec: VideoCodec,
        keyframe: bool,
        media_us: u64,
        /// When the frame was sent, on the clock of the SFU's sender reports (µs since the
        /// Unix epoch); None until the first report.
        sender_us: Option<u64>,
        data: Arc<[u8]>,
    },
    Audio {
        slot: usize,
        media_us: u64,
        sender_us: Option<u64>,
        data: Arc<[u8]>,
    },
}

#[derive(Debug)]
pub enum SourceEvent {
    /// A session is being set up with this endpoint (shown with a URL token masked).
    Pulling {
        node: String,
    },
    /// The endpoint (after redirects) answered; it listed this many other nodes.
    Answered {
        node: String,
        alternates: usize,
    },
    Connected,
    Frame(Frame),
    /// The session ended; the supervisor pulls the source again after `retry_in`.
    Lost {
        reason: LossReason,
        detail: String,
        retry_in: Duration,
    },
}

/// Why a session ended (the label of `plenary_egress_source_repulls_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The WHEP POST failed: unreachable, an error status, a malformed answer.
    Http,
    /// No ICE/DTLS connection within `CONNECT_TIMEOUT`.
    Connect,
    /// str0m reported ICE disconnected.
    Ice,
    /// The SFU closed the session (DTLS close_notify: a draining node ends its WHEP
    /// sessions so that their clients post again).
    Closed,
    /// Nothing at all (RTP, RTCP, STUN answers) from the node for `SILENCE_LIMIT`.
    Silence,
    /// The answer did not fit the offer, a socket or str0m error.
    Webrtc,
}

impl LossReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::Http => "http",
            LossReason::Connect => "connect",
            LossReason::Ice => "ice",
            LossReason::Closed => "closed",
            LossReason::Silence => "silence",
            LossReason::Webrtc => "webrtc",
        }
    }
}

/// Why one session ended.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Whep(#[from] WhepError),
    #[error("{detail}")]
    Media { reason: LossReason, detail: String },
}

impl SourceError {
    fn media(reason: LossReason, detail: impl Into<String>) -> SourceError {
        SourceError::Media {
            reason,
            detail: detail.into(),
        }
    }

    fn webrtc(detail: impl Into<String>) -> SourceError {
        SourceError::media(LossReason::Webrtc, detail)
    }

    pub fn reason(&self) -> LossReason {
        match self {
            SourceError::Whep(_) => LossReason::Http,
            SourceError::Media { reason, .. } => *reason,
        }
    }
}

/// What one session needs; shared with the supervisor.
pub struct SourceSpec {
    /// `--from`, with `screen=1` added (`whep::with_screen`).
    pub url: Url,
    pub token: Option<String>,
    pub audio_slots: usize,
    /// Offer the second video m-line, for the screen share.
    pub screen: bool,
    pub want_keyframe: KeyframeWants,
}

/// Datagrams str0m refuses are counted; their log lines are rate-limited.
static BAD_PACKETS: plenary_ops::ratelimit::LogLimiter<1> =
    plenary_ops::ratelimit::LogLimiter::new(1);

/// No connection after this long: give up on this session and pull again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Nothing at all from the SFU for this long: the node is gone (killed, or it ended our
/// session while draining); pull again rather than wait for ICE to say so. In an empty room
/// only STUN answers come, one per `CONSENT_EVERY`: three of them missed.
const SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// How often str0m checks the selected candidate pair once connected (its default, 3 s,
/// would leave a live node silent for 3 s in an empty room).
const CONSENT_EVERY: Duration = Duration::from_secs(1);
/// Keyframe requests while none arrives (after a join or a decoder complaint).
const KEYFRAME_RETRY: Duration = Duration::from_millis(1000);

/// Runs one WHEP session with the endpoint `url` until it is lost or `stop` is set;
/// `answered` sees the WHEP answer. Returns Ok on `stop`.
pub fn run_session(
    spec: &SourceSpec,
    url: &Url,
    tx: &SyncSender<SourceEvent>,
    stop: &AtomicBool,
    answered: &mut dyn FnMut(&whep::Session),
) -> Result<(), SourceError> {
    let sock = bind_towards(url)?;
    let local = sock
        .local_addr()
        .map_err(|e| SourceError::webrtc(format!("udp socket: {e}")))?;
    let mut config = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_vp9(true)
        .enable_h264(true);
    config.set_max_stun_rto(CONSENT_EVERY);
    let mut rtc = config.build(Instant::now());
    let cand = Candidate::host(local, "udp")
        .map_err(|e| SourceError::webrtc(format!("candidate {local}: {e}")))?;
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    let audio: Vec<Mid> = (0..spec.audio_slots)
        .map(|_| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
        .collect();
    // In SDP order: the programme first, then the screen share.
    let mut video = vec![api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None)];
    if spec.screen {
        video.push(api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None));
    }
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| SourceError::webrtc("str0m made no offer"))?;
    let session = whep::post_offer(url, spec.token.as_deref(), &offer.to_sdp_string())?;
    answered(&session);
    let result = (|| {
        let answer = SdpAnswer::from_sdp_string(&session.answer)
            .map_err(|e| SourceError::webrtc(format!("WHEP answer does not parse: {e}")))?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| SourceError::webrtc(format!("WHEP answer refused: {e}")))?;
        let mids = Mids { audio, video };
        drive(&mut rtc, &sock, local, &mids, spec, tx, stop)
    })();
    whep::delete(&session.resource, spec.token.as_deref());
    result
}

/// A UDP socket on the local address that routes to the WHEP host (loopback for a local
/// SFU): that address is the one host candidate offered.
fn bind_towards(url: &Url) -> Result<UdpSocket, SourceError> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let unreachable = |reason: String| WhepError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let remote: SocketAddr = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| unreachable(format!("{host} has no address")))?;
    let any: SocketAddr = if remote.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|e| SourceError::webrtc(format!("{e}")))?;
    // connect() on UDP sends nothing: it only asks the kernel for the route's source address.
    let probe = UdpSocket::bind(any).map_err(|e| SourceError::webrtc(format!("udp: {e}")))?;
    probe
        .connect(remote)
        .map_err(|e| unreachable(format!("no route: {e}")))?;
    let ip = probe
        .local_addr()
        .map_err(|e| SourceError::webrtc(format!("udp: {e}")))?
        .ip();
    UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| SourceError::webrtc(format!("udp: {e}")))
}

/// The m-lines of one session.
struct Mids {
    audio: Vec<Mid>,
    /// Indexed by `VideoRole::index`; the screen's only when it is asked for.
    video: Vec<Mid>,
}

fn drive(
    rtc: &mut Rtc,
    sock: &UdpSocket,
    local: SocketAddr,
    mids: &Mids,
    spec: &SourceSpec,
    tx: &SyncSender<SourceEvent>,
    stop: &AtomicBool,
) -> Result<(), SourceError> {
    let started = Instant::now();
    let mut connected = false;
    let mut last_keyframe_request = [None::<Instant>; 2];
    // The programme asks for a keyframe from the start; the screen only when the mixer
    // waits for one (its m-line carries nothing while nobody shares).
    let mut have_keyframe = [false, true];
    let mut buf = vec![0u8; 2048];
    let mut last_rx = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(ev)) => match ev {
                    Event::Connected => {
                        connected = true;
                        send(tx, SourceEvent::Connected);
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return Err(SourceError::media(LossReason::Ice, "ICE disconnected"));
                    }
                    Event::Closed => {
                        return Err(SourceError::media(
                            LossReason::Closed,
                            "the SFU closed the session",
                        ));
                    }
                    Event::MediaData(d) => {
                        let media_us = d.time.as_micros();
                        let sender_us = sender_time_us(&d);
                        if let Some(i) = mids.video.iter().position(|m| *m == d.mid) {
                            let role = VideoRole::ALL[i];
                            let Some(codec) = VideoCodec::of(d.params.spec().codec) else {
                                metrics::counter!("plenary_egress_source_dropped_total", "reason" => "codec").increment(1);
                                continue;
                            };
                            let keyframe = d.is_keyframe();
                            have_keyframe[i] |= keyframe;
                            if keyframe {
                                spec.want_keyframe[i].store(false, Ordering::Relaxed);
                            }
                            let kind = match role {
                                VideoRole::Speaker => "video",
                                VideoRole::Screen => "screen",
                            };
                            metrics::counter!("plenary_egress_source_frames_total", "kind" => kind)
                                .increment(1);
                            send(
                                tx,
                                SourceEvent::Frame(Frame::Video {
                                    role,
                                    codec,
                                    keyframe,
                                    media_us,
                                    sender_us,
                                    data: d.data,
                                }),
                            );
                        } else if let Some(slot) = mids.audio.iter().position(|m| *m == d.mid) {
                            metrics::counter!("plenary_egress_source_frames_total", "kind" => "audio").increment(1);
                            send(
                                tx,
                                SourceEvent::Frame(Frame::Audio {
                                    slot,
                                    media_us,
                                    sender_us,
                                    data: d.data,
                                }),
                            );
                        }
                    }
                    _ => {}
                },
                Err(e) => return Err(SourceError::webrtc(format!("webrtc: {e}"))),
            }
        };
        let now = Instant::now();
        if !connected && now.duration_since(started) > CONNECT_TIMEOUT {
            return Err(SourceError::media(
                LossReason::Connect,
                format!("no ICE/DTLS connection within {CONNECT_TIMEOUT:?}"),
            ));
        }
        if connected && now.duration_since(last_rx) > SILENCE_LIMIT {
            return Err(SourceError::media(
                LossReason::Silence,
                format!("nothing received from the SFU for {SILENCE_LIMIT:?}"),
            ));
        }
        if connected {
            let mut asked = false;
            for (i, mid) in mids.video.iter().enumerate() {
                let wants = !have_keyframe[i] || spec.want_keyframe[i].load(Ordering::Relaxed);
                let due = last_keyframe_request[i].is_none_or(|t| now - t > KEYFRAME_RETRY);
                if wants && due {
                    if let Some(mut w) = rtc.writer(*mid) {
                        let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
                    }
                    last_keyframe_request[i] = Some(now);
                    asked = true;
                }
            }
            if asked {
                continue; // flush the PLIs
            }
        }
        let wait = timeout
            .saturating_duration_since(now)
            .clamp(Duration::from_micros(100), Duration::from_millis(50));
        let _ = sock.set_read_timeout(Some(wait));
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                last_rx = Instant::now();
                let taken = Receive::new(Protocol::Udp, src, local, &buf[..n])
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        rtc.handle_input(Input::Receive(Instant::now(), r))
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = taken {
                    metrics::counter!("plenary_egress_source_dropped_total", "reason" => "bad_packet")
                        .increment(1);
                    if let Some(suppressed) = BAD_PACKETS.allow(0) {
                        tracing::debug!(%src, error = %e, suppressed, "datagram refused");
                    }
                }
            }
            Err(_) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
    Ok(())
}

/// The frame's time on the sender's wallclock, from the last RTCP sender report of its
/// stream (RTP time and NTP time of one instant).
fn sender_time_us(d: &str0m::media::MediaData) -> Option<u64> {
    let sr = d.last_sender_info?;
    let rate = d.time.frequency();
    let ticks = (d.time.numer() as u32).wrapping_sub(sr.rtp_time.rebase(rate).numer() as u32);
    // Signed: a frame may be older than the report.
    let delta_us = i64::from(ticks as i32) * 1_000_000 / i64::from(rate.get());
    let ntp_us = sr
        .ntp_time
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_micros() as i64;
    u64::try_from(ntp_us + delta_us).ok()
}

/// Never blocks the network loop: a mixer that falls behind loses frames, counted.
fn send(tx: &SyncSender<SourceEvent>, ev: SourceEvent) {
    match tx.try_send(ev) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            metrics::counter!("plenary_egress_source_dropped_total", "reason" => "mixer_behind")
                .increment(1);
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}
