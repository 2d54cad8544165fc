//! The media thread: one UDP socket, every str0m `Rtc`, and the forwarding.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use str0m::change::SdpOffer;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::*;

struct Session {
    room: String,
    publisher: bool,
    rtc: Rtc,
    audio: Option<Mid>,
    video: Option<Mid>,
    next_timeout: Instant,
    created: Instant,
    connected: bool,
}

#[derive(Default)]
struct Room {
    publisher: Option<u64>,
    viewers: Vec<u64>,
}

/// What a drain saw that the loop must act on outside the session.
#[derive(Default)]
struct Notes {
    /// Viewer just connected or asked for a keyframe: PLI to the room's publisher.
    want_keyframe: bool,
    dead: bool,
}

pub(crate) struct MediaLoop {
    sock: UdpSocket,
    /// Where peers send to; used as the `Receive` destination so it matches our candidate.
    advertised: SocketAddr,
    cmds: mpsc::Receiver<Cmd>,
    sessions: HashMap<u64, Session>,
    rooms: HashMap<String, Room>,
    by_addr: HashMap<SocketAddr, u64>,
    next_id: u64,
    // Reused per datagram so the steady state does not allocate.
    media: Vec<(MediaKind, RtpPacket)>,
    scratch: Vec<u64>,
}

/// Sends what the `Rtc` wants sent, and collects a publisher's RTP into `media`.
fn drain(
    s: &mut Session,
    sock: &UdpSocket,
    mut media: Option<&mut Vec<(MediaKind, RtpPacket)>>,
) -> Notes {
    let mut notes = Notes::default();
    loop {
        match s.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                s.next_timeout = t;
                break;
            }
            Ok(Output::Transmit(t)) => {
                let _ = sock.send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(e)) => match e {
                Event::MediaAdded(m) => match m.kind {
                    MediaKind::Audio if s.audio.is_none() => s.audio = Some(m.mid),
                    MediaKind::Video if s.video.is_none() => s.video = Some(m.mid),
                    _ => {}
                },
                Event::Connected => {
                    s.connected = true;
                    notes.want_keyframe |= !s.publisher;
                }
                Event::KeyframeRequest(_) => notes.want_keyframe |= !s.publisher,
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    notes.dead = true;
                }
                Event::RtpPacket(p) => {
                    if let Some(out) = media.as_deref_mut() {
                        let mid = s
                            .rtc
                            .direct_api()
                            .stream_rx(&p.header.ssrc)
                            .map(|r| r.mid());
                        let kind = if mid.is_some() && mid == s.audio {
                            MediaKind::Audio
                        } else if mid.is_some() && mid == s.video {
                            MediaKind::Video
                        } else {
                            continue;
                        };
                        out.push((kind, p));
                    }
                }
                _ => {}
            },
            Err(e) => {
                tracing::debug!("sfu: poll_output: {e}");
                notes.dead = true;
                break;
            }
        }
    }
    notes.dead |= !s.rtc.is_alive();
    notes
}

impl MediaLoop {
    pub(crate) fn new(sock: UdpSocket, advertised: SocketAddr, cmds: mpsc::Receiver<Cmd>) -> Self {
        Self {
            sock,
            advertised,
            cmds,
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            by_addr: HashMap::new(),
            next_id: 1,
            media: Vec::with_capacity(64),
            scratch: Vec::with_capacity(64),
        }
    }

    pub(crate) fn run(mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            while let Ok(cmd) = self.cmds.try_recv() {
                self.command(cmd);
            }
            self.timers();
            let now = Instant::now();
            let next = self.sessions.values().map(|s| s.next_timeout).min();
            let wait = next
                .map_or(MAX_WAIT, |t| t.saturating_duration_since(now))
                .clamp(Duration::from_micros(200), MAX_WAIT);
            let _ = self.sock.set_read_timeout(Some(wait));
            // Drain what is queued before looking at timers/commands again, but bounded.
            // After the first datagram, go non-blocking: two syscalls per batch, not per packet.
            let mut batch = false;
            for _ in 0..256 {
                let Ok((n, src)) = self.sock.recv_from(&mut buf) else {
                    break;
                };
                self.datagram(src, &buf[..n]);
                if !batch {
                    batch = true;
                    let _ = self.sock.set_nonblocking(true);
                }
            }
            if batch {
                let _ = self.sock.set_nonblocking(false);
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join {
                room,
                publisher,
                offer,
                reply,
            } => {
                let _ = reply.send(self.join(room, publisher, offer));
            }
            Cmd::Leave { id, reply } => {
                let _ = reply.send(self.leave(id));
            }
        }
    }

    fn join(
        &mut self,
        room: String,
        publisher: bool,
        offer: SdpOffer,
    ) -> Result<(u64, String), (StatusCode, String)> {
        let r = self.rooms.entry(room.clone()).or_default();
        if publisher && r.publisher.is_some() {
            return Err((StatusCode::CONFLICT, "room already has a publisher".into()));
        }
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .build(Instant::now());
        let cand = Candidate::host(self.advertised, "udp")
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("candidate: {e}")))?;
        rtc.add_local_candidate(cand);
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("offer not acceptable: {e}"),
            )
        })?;
        let id = self.next_id;
        self.next_id += 1;
        let mut s = Session {
            room,
            publisher,
            rtc,
            audio: None,
            video: None,
            next_timeout: Instant::now(),
            created: Instant::now(),
            connected: false,
        };
        drain(&mut s, &self.sock, None);
        let r = self.rooms.entry(s.room.clone()).or_default();
        if publisher {
            r.publisher = Some(id);
        } else {
            r.viewers.push(id);
        }
        tracing::info!(id, room = %s.room, publisher, "session joined");
        self.sessions.insert(id, s);
        Ok((id, answer.to_sdp_string()))
    }

    fn leave(&mut self, id: u64) -> bool {
        let Some(mut s) = self.sessions.remove(&id) else {
            return false;
        };
        s.rtc.disconnect();
        self.by_addr.retain(|_, v| *v != id);
        if let Some(r) = self.rooms.get_mut(&s.room) {
            if r.publisher == Some(id) {
                r.publisher = None;
            }
            r.viewers.retain(|v| *v != id);
            if r.publisher.is_none() && r.viewers.is_empty() {
                self.rooms.remove(&s.room);
            }
        }
        tracing::info!(id, room = %s.room, "session left");
        true
    }

    fn timers(&mut self) {
        let now = Instant::now();
        self.scratch.clear();
        let mut kf_rooms: Vec<String> = Vec::new(); // rare: only on connect/PLI
        for (id, s) in self.sessions.iter_mut() {
            if !s.connected && now.duration_since(s.created) > CONNECT_TIMEOUT {
                self.scratch.push(*id);
                continue;
            }
            if s.next_timeout > now {
                continue;
            }
            let _ = s.rtc.handle_input(Input::Timeout(now));
            let n = drain(s, &self.sock, None);
            if n.dead {
                self.scratch.push(*id);
            } else if n.want_keyframe {
                kf_rooms.push(s.room.clone());
            }
        }
        let dead = std::mem::take(&mut self.scratch);
        for id in &dead {
            self.leave(*id);
        }
        self.scratch = dead;
        for room in kf_rooms {
            self.request_keyframe(&room);
        }
    }

    fn request_keyframe(&mut self, room: &str) {
        let Some(pid) = self.rooms.get(room).and_then(|r| r.publisher) else {
            return;
        };
        let Some(p) = self.sessions.get_mut(&pid) else {
            return;
        };
        let Some(mid) = p.video else { return };
        if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
        drain(p, &self.sock, None);
    }

    fn datagram(&mut self, src: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        let Ok(recv) = Receive::new(Protocol::Udp, src, self.advertised, data) else {
            return;
        };
        let input = Input::Receive(now, recv);
        // Known source first; otherwise ask each Rtc (STUN ufrag) and remember the answer.
        let id = match self.by_addr.get(&src) {
            Some(&id) => id,
            None => {
                let Some(id) = self
                    .sessions
                    .iter()
                    .find(|(_, s)| s.rtc.accepts(&input))
                    .map(|(id, _)| *id)
                else {
                    return;
                };
                self.by_addr.insert(src, id);
                id
            }
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.rtc.handle_input(input).is_err() {
            return;
        }
        self.media.clear();
        let out = if s.publisher {
            Some(&mut self.media)
        } else {
            None
        };
        let notes = drain(s, &self.sock, out);
        let publisher = s.publisher;
        if notes.dead {
            self.leave(id);
            return;
        }
        if !publisher {
            if notes.want_keyframe {
                let room = s.room.clone(); // rare: connect/PLI only
                self.request_keyframe(&room);
            }
            return;
        }
        if !self.media.is_empty() {
            self.forward(id);
        }
    }

    /// Writes every collected publisher packet to each connected viewer of its room.
    fn forward(&mut self, publisher: u64) {
        let Some(room) = self.sessions.get(&publisher).map(|s| &s.room) else {
            return;
        };
        self.scratch.clear();
        if let Some(r) = self.rooms.get(room) {
            self.scratch.extend_from_slice(&r.viewers);
        }
        for vid in &self.scratch {
            let Some(v) = self.sessions.get_mut(vid) else {
                continue;
            };
            if !v.connected {
                continue;
            }
            for (kind, p) in &self.media {
                let mid = match kind {
                    MediaKind::Audio => v.audio,
                    MediaKind::Video => v.video,
                };
                let Some(mid) = mid else { continue };
                let Some(pt) = viewer_pt(&v.rtc, mid, p.header.payload_type) else {
                    continue;
                };
                let mut api = v.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                    continue;
                };
                // Payload is an Arc: shared by all viewers, no copy.
                tx.write_rtp(
                    RtpWrite::new(
                        pt,
                        p.seq_no,
                        p.header.timestamp,
                        p.timestamp,
                        p.payload.clone(),
                    )
                    .marker(p.header.marker)
                    .nackable(*kind == MediaKind::Video),
                );
            }
            drain(v, &self.sock, None);
        }
    }
}

/// The publisher's PT if the viewer negotiated it, else the viewer's first PT for that mid.
/// Assumes both sides use the same codec per kind (see README: no codec matching yet).
fn viewer_pt(rtc: &Rtc, mid: Mid, pt: Pt) -> Option<Pt> {
    let pts = rtc.media(mid)?.remote_pts();
    if pts.contains(&pt) {
        Some(pt)
    } else {
        pts.first().copied()
    }
}
