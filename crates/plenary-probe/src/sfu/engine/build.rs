//! Making peers, on the signalling side: bind a socket, build an `Rtc` with only VP8 and
//! Opus (what the synthetic media is), add the m-lines a participant needs and run the SDP
//! exchange. The finished peer is handed to a driver, which alone touches it afterwards.

use super::clock::Clock;
use super::peer::{Peer, Sender, Source};
use crate::sfu::media::opus::{AudioSpec, Role};
use crate::sfu::media::video::VideoSpec;
use crate::sfu::recv::track::TrackKind;
use plenary_srtp::KeySlot;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Instant;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::{Candidate, Rtc, RtcConfig};

/// Receive buffer of each client socket: a keyframe burst of a 1.5 Mbit/s layer plus the
/// rest of a second's media must fit while the driver serves other peers.
const RCVBUF: usize = 1 << 20;

#[derive(Clone, Debug)]
pub enum SendPlan {
    Audio {
        spec: AudioSpec,
        role: Role,
    },
    /// One m-line; several layers make it simulcast (rid, spec), low to high.
    Video {
        layers: Vec<(Option<String>, VideoSpec)>,
    },
}

/// The m-lines of one peer connection the client offers.
#[derive(Clone, Debug)]
pub struct PeerPlan {
    pub participant: u32,
    pub label: String,
    pub send: Vec<SendPlan>,
    /// recvonly m-lines to offer (WHEP), by kind.
    pub recv: Vec<TrackKind>,
}

#[derive(Clone, Copy, Debug)]
pub struct BuildCtx {
    pub clock: Clock,
    pub bind_ip: IpAddr,
    /// Received SRTP goes through the probe's own fast path once connected (issue 12);
    /// false keeps str0m's receive path (`--str0m-receive`).
    pub fast_receive: bool,
}

/// A peer whose offer is out, waiting for the answer.
pub struct Offered {
    rtc: Rtc,
    keys: KeySlot,
    fast_receive: bool,
    socket: UdpSocket,
    pending: SdpPendingOffer,
    senders: Vec<Sender>,
    expect: Vec<(Mid, TrackKind, bool)>,
    participant: u32,
    label: String,
    joined_us: u64,
    pub offer: String,
}

fn bind(ip: IpAddr) -> std::io::Result<UdpSocket> {
    let domain = if ip.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(RCVBUF);
    let _ = s.set_send_buffer_size(RCVBUF);
    s.bind(&SocketAddr::new(ip, 0).into())?;
    Ok(s.into())
}

/// The fast path reads in ticks, so it takes each datagram's arrival from the kernel; and
/// it takes GSO runs whole where the kernel allows (`super::gro_wanted`).
fn stamp_arrivals(socket: &UdpSocket, fast_receive: bool) {
    #[cfg(target_os = "linux")]
    if fast_receive {
        if let Err(e) = plenary_srtp::recv_batch::enable_timestamps(socket) {
            tracing::warn!("SO_TIMESTAMPNS refused ({e}): arrival times are read times");
        }
        // Refused (before Linux 5.0), runs arrive split, one message per datagram: the
        // reads work either way.
        if super::gro_wanted() {
            if let Err(e) = plenary_srtp::recv_batch::enable_gro(socket) {
                tracing::debug!("UDP_GRO refused ({e}): GSO runs arrive split");
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, fast_receive);
}

/// An `Rtc` whose SRTP keys are captured (plenary-srtp's wrapped DTLS provider) for the
/// receive fast path; with `--str0m-receive` they are simply never used.
fn new_rtc(socket: &UdpSocket) -> Result<(Rtc, KeySlot), String> {
    let config = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_rtp_mode(true);
    let (mut rtc, keys) =
        plenary_srtp::build_rtc(config, Instant::now()).map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let c = Candidate::host(local, "udp").map_err(|e| format!("candidate {local}: {e}"))?;
    rtc.add_local_candidate(c);
    Ok((rtc, keys))
}

/// Binds a socket and builds the offer for `plan`.
pub fn offer(ctx: &BuildCtx, plan: &PeerPlan) -> Result<Offered, String> {
    let joined_us = ctx.clock.now_us();
    let socket = bind(ctx.bind_ip).map_err(|e| format!("bind {}: {e}", ctx.bind_ip))?;
    stamp_arrivals(&socket, ctx.fast_receive);
    let (mut rtc, keys) = new_rtc(&socket)?;
    let mut api = rtc.sdp_api();
    let mut senders = Vec::new();
    let mut expect = Vec::new();
    for s in &plan.send {
        match s {
            SendPlan::Audio { spec, role } => {
                let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                senders.push(Sender::new(
                    mid,
                    None,
                    Source::Audio {
                        spec: spec.clone(),
                        role: *role,
                    },
                ));
            }
            SendPlan::Video { layers } => {
                let simulcast = (layers.len() > 1).then(|| {
                    let mut sim = Simulcast::new();
                    for (rid, _) in layers {
                        sim.add_send_layer(SimulcastLayer::new(rid.as_deref().unwrap_or("f")));
                    }
                    sim
                });
                let mid =
                    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
                for (rid, spec) in layers {
                    let rid = if layers.len() > 1 {
                        rid.as_deref().map(Rid::from)
                    } else {
                        None
                    };
                    senders.push(Sender::new(mid, rid, Source::Video(spec.clone())));
                }
            }
        }
    }
    for kind in &plan.recv {
        let mk = match kind {
            TrackKind::Audio => MediaKind::Audio,
            TrackKind::Video => MediaKind::Video,
        };
        let mid = api.add_media(mk, Direction::RecvOnly, None, None, None);
        expect.push((mid, *kind, true));
    }
    let (offer, pending) = api.apply().ok_or("nothing to offer")?;
    Ok(Offered {
        offer: offer.to_sdp_string(),
        rtc,
        keys,
        fast_receive: ctx.fast_receive,
        socket,
        pending,
        senders,
        expect,
        participant: plan.participant,
        label: plan.label.clone(),
        joined_us,
    })
}

impl Offered {
    pub fn joined_us(&self) -> u64 {
        self.joined_us
    }

    /// Applies the server's answer; the peer is ready for a driver.
    pub fn accept(
        mut self,
        answer: &str,
        id: u64,
        on_connected: tokio::sync::oneshot::Sender<u64>,
    ) -> Result<Peer, String> {
        let answer = SdpAnswer::from_sdp_string(answer)
            .map_err(|e| format!("answer does not parse: {e}"))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .map_err(|e| format!("answer rejected: {e}"))?;
        Peer::new(
            id,
            self.participant,
            self.label,
            (self.rtc, self.keys, self.fast_receive),
            self.socket,
            self.senders,
            self.expect,
            self.joined_us,
            Some(on_connected),
        )
        .map_err(|e| e.to_string())
    }
}

/// The server offers (Janus subscriber, room API subscribe connection): answer with a
/// receive-only peer. `expect` says which m-lines must carry media (default: all offered).
pub fn answer(
    ctx: &BuildCtx,
    participant: u32,
    label: String,
    offer: &str,
    expect: Option<Vec<(Mid, TrackKind, bool)>>,
    id: u64,
    on_connected: tokio::sync::oneshot::Sender<u64>,
) -> Result<(Peer, String), String> {
    let joined_us = ctx.clock.now_us();
    let socket = bind(ctx.bind_ip).map_err(|e| format!("bind {}: {e}", ctx.bind_ip))?;
    stamp_arrivals(&socket, ctx.fast_receive);
    let (mut rtc, keys) = new_rtc(&socket)?;
    let expect = expect.unwrap_or_else(|| offered_tracks(offer));
    let offer = take_dtls_client_role(offer);
    let sdp =
        SdpOffer::from_sdp_string(&offer).map_err(|e| format!("offer does not parse: {e}"))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(sdp)
        .map_err(|e| format!("offer rejected: {e}"))?;
    let peer = Peer::new(
        id,
        participant,
        label,
        (rtc, keys, ctx.fast_receive),
        socket,
        vec![],
        expect,
        joined_us,
        Some(on_connected),
    )
    .map_err(|e| e.to_string())?;
    Ok((peer, answer.to_sdp_string()))
}

/// Browsers answer a server's `a=setup:actpass` with `active`: they are the DTLS client. str0m
/// would answer `passive`, which makes the server the DTLS client, a path browsers never
/// take. Reading the offer as `passive` makes str0m answer `active`, as Chromium does; the
/// server only looks at the answer.
fn take_dtls_client_role(offer: &str) -> String {
    offer.replace("a=setup:actpass", "a=setup:passive")
}

/// A new offer on an existing peer (the room API's subscribe connection).
pub fn renegotiate(
    peer: &mut Peer,
    offer: &str,
    mut expect: Vec<(Mid, TrackKind, bool)>,
) -> Result<String, String> {
    if expect.is_empty() {
        expect = offered_tracks(offer);
    }
    let sdp = SdpOffer::from_sdp_string(offer).map_err(|e| format!("offer does not parse: {e}"))?;
    let answer = peer
        .rtc
        .sdp_api()
        .accept_offer(sdp)
        .map_err(|e| format!("offer rejected: {e}"))?;
    for e in expect {
        match peer.expect.iter_mut().find(|x| x.0 == e.0) {
            Some(x) => *x = e,
            None => peer.expect.push(e),
        }
    }
    peer.apply_expect();
    peer.after_renegotiation();
    Ok(answer.to_sdp_string())
}

/// The audio and video m-lines an offer sends to us: (mid, kind, must flow).
pub fn offered_tracks(sdp: &str) -> Vec<(Mid, TrackKind, bool)> {
    let mut out = Vec::new();
    let mut cur: Option<(TrackKind, Option<String>, bool)> = None;
    let mut flush = |cur: &mut Option<(TrackKind, Option<String>, bool)>| {
        if let Some((kind, Some(mid), sends)) = cur.take() {
            if sends {
                out.push((Mid::from(mid.as_str()), kind, true));
            }
        }
    };
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            flush(&mut cur);
            let kind = if m.starts_with("audio") {
                Some(TrackKind::Audio)
            } else if m.starts_with("video") {
                Some(TrackKind::Video)
            } else {
                None
            };
            // A port of 0 is a rejected or stopped m-line.
            let live = m.split_ascii_whitespace().nth(1) != Some("0");
            cur = kind.filter(|_| live).map(|k| (k, None, true));
        } else if let Some((_, mid, sends)) = cur.as_mut() {
            if let Some(v) = line.strip_prefix("a=mid:") {
                *mid = Some(v.to_string());
            } else if line == "a=recvonly" || line == "a=inactive" {
                *sends = false;
            }
        }
    }
    flush(&mut cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_the_dtls_client_like_a_browser() {
        let offer =
            "v=0\r\na=setup:actpass\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:actpass\r\n";
        let o = take_dtls_client_role(offer);
        assert_eq!(o.matches("a=setup:passive").count(), 2);
        assert!(!o.contains("actpass"));
    }

    #[test]
    fn finds_the_tracks_an_offer_sends() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a0\r\na=sendonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v1\r\na=sendrecv\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:v2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v3\r\na=recvonly\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:d\r\n";
        let got: Vec<(String, TrackKind)> = offered_tracks(sdp)
            .into_iter()
            .map(|(m, k, _)| (m.to_string(), k))
            .collect();
        assert_eq!(
            got,
            [
                ("a0".to_string(), TrackKind::Audio),
                ("v1".to_string(), TrackKind::Video)
            ]
        );
    }

    #[test]
    fn offers_simulcast_and_recvonly_lines() {
        let ctx = BuildCtx {
            clock: Clock::new(),
            bind_ip: "127.0.0.1".parse().unwrap(),
            fast_receive: true,
        };
        let spec = |layer| VideoSpec {
            kind: crate::sfu::media::stamp::Kind::Camera,
            layer,
            width: 320,
            height: 180,
            fps: 30.0,
            kbps: 150.0,
            keyframe_interval_s: 10.0,
            keyframe_factor: 6.0,
            max_payload: 1150,
            min_keyframe_gap_ms: 200,
        };
        let plan = PeerPlan {
            participant: 1,
            label: "p1".into(),
            send: vec![SendPlan::Video {
                layers: vec![
                    (Some("q".into()), spec(0)),
                    (Some("h".into()), spec(1)),
                    (Some("f".into()), spec(2)),
                ],
            }],
            recv: vec![TrackKind::Audio],
        };
        let o = offer(&ctx, &plan).unwrap();
        assert!(o.offer.contains("a=simulcast:send q;h;f"), "{}", o.offer);
        assert!(o.offer.contains("a=rid:q send"));
        assert!(o.offer.contains("VP8") && o.offer.contains("opus"));
        assert!(!o.offer.contains("H264"));
        assert!(o.offer.contains("a=recvonly"));
        assert!(o.offer.contains("typ host"));
        assert_eq!(o.senders.len(), 3);
    }
}
