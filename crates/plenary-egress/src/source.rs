//! The WHEP side: one str0m peer in frame mode (str0m depacketizes and reorders), offering
//! `audio_slots` audio m-lines and one video m-line, all receive-only. The SFU binds the
//! video m-line to the programme (the active speaker's camera) and each audio m-line to one
//! of the loudest voices. Frames go to the mixer through a bounded channel.

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

/// One depacketized frame from the SFU.
#[derive(Debug)]
pub enum Frame {
    Video {
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
    Connected,
    Frame(Frame),
    /// The session ended; the supervisor pulls the source again after a delay.
    Lost(String),
}

/// Why one session ended.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Whep(#[from] WhepError),
    #[error("{0}")]
    Media(String),
}

/// What one session needs; shared with the supervisor.
pub struct SourceSpec {
    pub url: Url,
    pub token: Option<String>,
    pub audio_slots: usize,
    /// Set by the mixer when a decoder needs a fresh keyframe.
    pub want_keyframe: Arc<AtomicBool>,
}

/// Datagrams str0m refuses are counted; their log lines are rate-limited.
static BAD_PACKETS: plenary_ops::ratelimit::LogLimiter<1> =
    plenary_ops::ratelimit::LogLimiter::new(1);

/// No connection after this long: give up on this session and pull again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Nothing at all from the SFU for this long (it answers ICE keepalives every few seconds
/// even in an empty room): the node is gone; pull again rather than wait for ICE to say so,
/// which takes over 20 s.
const SILENCE_LIMIT: Duration = Duration::from_secs(8);
/// Keyframe requests while none arrives (after a join or a decoder complaint).
const KEYFRAME_RETRY: Duration = Duration::from_millis(1000);

/// Runs one WHEP session until it is lost or `stop` is set. Returns Ok on `stop`.
pub fn run_session(
    spec: &SourceSpec,
    tx: &SyncSender<SourceEvent>,
    stop: &AtomicBool,
) -> Result<(), SourceError> {
    let sock = bind_towards(&spec.url)?;
    let local = sock
        .local_addr()
        .map_err(|e| SourceError::Media(format!("udp socket: {e}")))?;
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_vp9(true)
        .enable_h264(true)
        .build(Instant::now());
    let cand = Candidate::host(local, "udp")
        .map_err(|e| SourceError::Media(format!("candidate {local}: {e}")))?;
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    let audio: Vec<Mid> = (0..spec.audio_slots)
        .map(|_| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
        .collect();
    let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| SourceError::Media("str0m made no offer".into()))?;
    let session = whep::post_offer(&spec.url, spec.token.as_deref(), &offer.to_sdp_string())?;
    let result = (|| {
        let answer = SdpAnswer::from_sdp_string(&session.answer)
            .map_err(|e| SourceError::Media(format!("WHEP answer does not parse: {e}")))?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| SourceError::Media(format!("WHEP answer refused: {e}")))?;
        drive(&mut rtc, &sock, local, &audio, video, spec, tx, stop)
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
    .map_err(|e| SourceError::Media(format!("{e}")))?;
    // connect() on UDP sends nothing: it only asks the kernel for the route's source address.
    let probe = UdpSocket::bind(any).map_err(|e| SourceError::Media(format!("udp: {e}")))?;
    probe
        .connect(remote)
        .map_err(|e| unreachable(format!("no route: {e}")))?;
    let ip = probe
        .local_addr()
        .map_err(|e| SourceError::Media(format!("udp: {e}")))?
        .ip();
    UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| SourceError::Media(format!("udp: {e}")))
}

#[allow(clippy::too_many_arguments)]
fn drive(
    rtc: &mut Rtc,
    sock: &UdpSocket,
    local: SocketAddr,
    audio: &[Mid],
    video: Mid,
    spec: &SourceSpec,
    tx: &SyncSender<SourceEvent>,
    stop: &AtomicBool,
) -> Result<(), SourceError> {
    let started = Instant::now();
    let mut connected = false;
    let mut last_keyframe_request: Option<Instant> = None;
    let mut have_keyframe = false;
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
                        return Err(SourceError::Media("ICE disconnected".into()));
                    }
                    Event::MediaData(d) => {
                        let media_us = d.time.as_micros();
                        let sender_us = sender_time_us(&d);
                        if d.mid == video {
                            let Some(codec) = VideoCodec::of(d.params.spec().codec) else {
                                metrics::counter!("plenary_egress_source_dropped_total", "reason" => "codec").increment(1);
                                continue;
                            };
                            let keyframe = d.is_keyframe();
                            have_keyframe |= keyframe;
                            if keyframe {
                                spec.want_keyframe.store(false, Ordering::Relaxed);
                            }
                            metrics::counter!("plenary_egress_source_frames_total", "kind" => "video").increment(1);
                            send(
                                tx,
                                SourceEvent::Frame(Frame::Video {
                                    codec,
                                    keyframe,
                                    media_us,
                                    sender_us,
                                    data: d.data,
                                }),
                            );
                        } else if let Some(slot) = audio.iter().position(|m| *m == d.mid) {
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
                Err(e) => return Err(SourceError::Media(format!("webrtc: {e}"))),
            }
        };
        let now = Instant::now();
        if !connected && now.duration_since(started) > CONNECT_TIMEOUT {
            return Err(SourceError::Media(format!(
                "no ICE/DTLS connection within {CONNECT_TIMEOUT:?}"
            )));
        }
        if connected && now.duration_since(last_rx) > SILENCE_LIMIT {
            return Err(SourceError::Media(format!(
                "nothing received from the SFU for {SILENCE_LIMIT:?}"
            )));
        }
        let wants = !have_keyframe || spec.want_keyframe.load(Ordering::Relaxed);
        if connected && wants && last_keyframe_request.is_none_or(|t| now - t > KEYFRAME_RETRY) {
            if let Some(mut w) = rtc.writer(video) {
                let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
            }
            last_keyframe_request = Some(now);
            continue; // flush the PLI
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
