//! One synthetic peer connection: a str0m `Rtc` in RTP mode, its UDP socket, the synthetic
//! sources it publishes and the receivers that measure what it gets. The driver feeds it
//! datagrams and time; the peer answers with datagrams to send and its next deadline.
//! Once connected, received SRTP takes the fast path (`peer_fast.rs`, `sfu::fastrx`)
//! unless `--str0m-receive` keeps it on str0m.

#[path = "peer_fast.rs"]
mod fast;

use super::clock::Clock;
use crate::sfu::fastrx::{FastCounters, FastRx};
use crate::sfu::media::opus::{AudioGen, AudioSpec, Role};
use crate::sfu::media::video::{VideoGen, VideoSpec};
use crate::sfu::media::OutPacket;
use crate::sfu::recv::track::{RxPacket, TrackKind, TrackRx, TrackWindow};
use plenary_sfu::dtls_trace::{is_dtls, DtlsRecords};
use plenary_srtp::KeySlot;
use std::net::SocketAddr;
use std::time::Instant;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

/// How often a peer's receivers look for frames given up on, µs.
const FRAME_POLL_US: u64 = 50_000;
/// Media starts this long after ICE+DTLS connect, so the server has set up forwarding.
const MEDIA_DELAY_US: u64 = 100_000;

/// What a sending m-line carries.
#[derive(Clone, Debug)]
pub enum Source {
    Audio { spec: AudioSpec, role: Role },
    Video(VideoSpec),
}

pub struct Sender {
    pub mid: Mid,
    pub rid: Option<Rid>,
    pub source: Source,
    pt: Option<Pt>,
    gen: Option<Gen>,
}

enum Gen {
    Audio(AudioGen),
    Video(VideoGen),
}

impl Gen {
    fn due_us(&self) -> u64 {
        match self {
            Gen::Audio(g) => g.due_us(),
            Gen::Video(g) => g.due_us(),
        }
    }
}

impl Sender {
    pub fn new(mid: Mid, rid: Option<Rid>, source: Source) -> Sender {
        Sender {
            mid,
            rid,
            source,
            pt: None,
            gen: None,
        }
    }
}

pub struct Receiver {
    pub mid: Mid,
    pub rx: TrackRx,
    /// Media must arrive on it (a WHEP or subscribed track); an audio slot nobody speaks in
    /// may stay silent.
    pub must_flow: bool,
    /// Paused at some point of the current step window (last-N).
    pub paused_in_step: bool,
}

/// Counters the driver sums per second.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub send_drops: u64,
    pub send_errors: u64,
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    pub keyframe_requests_in: u64,
    pub keyframes_out: u64,
    pub rtc_errors: u64,
    /// The receive fast path's own counts (zero with `--str0m-receive`).
    pub fast: FastCounters,
}

pub struct Peer {
    pub id: u64,
    pub participant: u32,
    pub label: String,
    pub rtc: Rtc,
    pub socket: mio::net::UdpSocket,
    pub local: SocketAddr,
    pub inode: u64,
    pub senders: Vec<Sender>,
    pub receivers: Vec<Receiver>,
    /// Expected receive m-lines (mid, kind, must flow), created at connect.
    pub expect: Vec<(Mid, TrackKind, bool)>,
    pub joined_us: u64,
    pub connected_us: Option<u64>,
    pub on_connected: Option<tokio::sync::oneshot::Sender<u64>>,
    pub counters: PeerCounters,
    pub dead: bool,
    next_frame_poll_us: u64,
    scratch: Vec<OutPacket>,
    /// SRTP keys captured from this peer's DTLS, for the fast path.
    keys: KeySlot,
    /// Take the fast path once connected (false: `--str0m-receive`).
    fast_wanted: bool,
    fast: Option<Box<FastRx>>,
    /// Where str0m sends (the selected ICE pair): the fast path takes SRTP only from there.
    remote: Option<SocketAddr>,
    /// str0m's next deadline, µs, and whether it was touched since its last drain: on the
    /// fast path str0m is only woken when it asked to be or has something to send.
    rtc_next_us: u64,
    rtc_dirty: bool,
    /// Earliest time routes may be looked up again for an unknown SSRC, µs.
    next_learn_us: u64,
    feedback_buf: Vec<u8>,
    rtcp_copy: Vec<u8>,
}

/// What servicing a peer asks of the driver.
pub struct Serviced {
    pub next_us: u64,
    /// Lateness of each media packet batch sent, µs.
    pub lags: Vec<u64>,
}

impl Peer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        participant: u32,
        label: String,
        (rtc, keys, fast_wanted): (Rtc, KeySlot, bool),
        socket: std::net::UdpSocket,
        senders: Vec<Sender>,
        expect: Vec<(Mid, TrackKind, bool)>,
        joined_us: u64,
        on_connected: Option<tokio::sync::oneshot::Sender<u64>>,
    ) -> std::io::Result<Peer> {
        let local = socket.local_addr()?;
        let inode = super::load::socket_inode(&socket).unwrap_or(0);
        socket.set_nonblocking(true)?;
        Ok(Peer {
            id,
            participant,
            label,
            rtc,
            socket: mio::net::UdpSocket::from_std(socket),
            local,
            inode,
            senders,
            receivers: Vec::new(),
            expect,
            joined_us,
            connected_us: None,
            on_connected,
            counters: PeerCounters::default(),
            dead: false,
            next_frame_poll_us: 0,
            scratch: Vec::new(),
            keys,
            fast_wanted,
            fast: None,
            remote: None,
            rtc_next_us: 0,
            rtc_dirty: true,
            next_learn_us: 0,
            feedback_buf: Vec::new(),
            rtcp_copy: Vec::new(),
        })
    }

    /// When the peer next needs a service, µs, without servicing it: the earliest of
    /// str0m's deadline (now if it was touched), due media, the frame poll and the fast
    /// path's feedback.
    pub fn wake_at_us(&self) -> u64 {
        let rtc = if self.rtc_dirty { 0 } else { self.rtc_next_us };
        let fast = self.fast.as_ref().and_then(|f| f.next_due_us());
        let media = self
            .senders
            .iter()
            .filter_map(|s| s.gen.as_ref().map(Gen::due_us))
            .min();
        [Some(rtc), fast, media, Some(self.next_frame_poll_us)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(0)
    }

    /// Whether received datagrams should be read in batches for the fast path.
    pub fn fast_receive(&self) -> bool {
        self.fast_wanted
    }

    /// One datagram from the network. SRTP from the remote goes to the fast path once it
    /// runs (decrypted in place in `data`); everything else, and all of it with
    /// `--str0m-receive`, to str0m.
    /// `now` is when it was read (str0m's input time), `arrival_us` when it arrived (the
    /// kernel's stamp on the fast path, which reads in ticks).
    pub fn on_datagram(
        &mut self,
        clock: &Clock,
        now: Instant,
        arrival_us: u64,
        src: SocketAddr,
        data: &mut [u8],
    ) {
        self.counters.rx_datagrams += 1;
        self.counters.rx_bytes += data.len() as u64;
        if self.fast.is_some() && self.remote == Some(src) {
            if fast::is_srtp(data) {
                self.on_fast_rtp(arrival_us, data);
                return;
            }
            if plenary_srtp::rtp::is_rtcp(data) {
                self.on_fast_rtcp(data);
            }
        }
        let Ok(r) = Receive::new(Protocol::Udp, src, self.local, data) else {
            return;
        };
        let handshaking = self.connected_us.is_none() && is_dtls(data);
        if handshaking {
            tracing::debug!(target: "plenary_probe::dtls", local = %self.local, %src,
                rx = %DtlsRecords(data));
        }
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
            self.counters.rtc_errors += 1;
            if handshaking {
                tracing::debug!(target: "plenary_probe::dtls", local = %self.local, "refused: {e}");
            }
        }
        self.drain(clock);
    }

    /// Time passed: timers, due media, frame timeouts. Returns the next deadline.
    pub fn service(&mut self, clock: &Clock, now: Instant) -> Serviced {
        let now_us = clock.us(now);
        // str0m's own path wakes str0m every time, as before; the fast path only when
        // str0m asked for this time or was given something to do.
        let wake_rtc = self.fast.is_none() || self.rtc_dirty || now_us >= self.rtc_next_us;
        if wake_rtc && self.rtc.handle_input(Input::Timeout(now)).is_err() {
            self.counters.rtc_errors += 1;
        }
        let mut lags = Vec::new();
        if self.connected_us.is_some() {
            self.send_media(now, now_us, &mut lags);
        }
        if now_us >= self.next_frame_poll_us {
            self.next_frame_poll_us = now_us + FRAME_POLL_US;
            for i in 0..self.receivers.len() {
                if self.receivers[i].rx.poll(now_us) {
                    self.ask_keyframe(i);
                }
            }
        }
        let fast_next = self.send_feedback(now_us);
        let rtc_next = if wake_rtc || self.rtc_dirty {
            self.drain(clock)
        } else {
            self.rtc_next_us
        };
        let media_next = self
            .senders
            .iter()
            .filter_map(|s| s.gen.as_ref().map(Gen::due_us))
            .min();
        let next_us = [
            Some(rtc_next),
            media_next,
            Some(self.next_frame_poll_us),
            fast_next,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now_us + 5_000);
        Serviced { next_us, lags }
    }

    fn send_media(&mut self, now: Instant, now_us: u64, lags: &mut Vec<u64>) {
        let mut api = self.rtc.direct_api();
        for s in &mut self.senders {
            let Some(gen) = s.gen.as_mut() else { continue };
            if gen.due_us() > now_us {
                continue;
            }
            self.scratch.clear();
            let (scheduled, kf_before) = match gen {
                Gen::Audio(g) => (g.frame(now_us, &mut self.scratch), 0),
                Gen::Video(g) => {
                    let k = g.keyframes;
                    (g.frame(now_us, &mut self.scratch), k)
                }
            };
            if let Gen::Video(g) = gen {
                self.counters.keyframes_out += g.keyframes - kf_before;
            }
            lags.push(now_us.saturating_sub(scheduled));
            let skipped = match gen {
                Gen::Audio(g) => &mut g.skipped_lags_us,
                Gen::Video(g) => &mut g.skipped_lags_us,
            };
            lags.append(skipped);
            let (Some(pt), Some(tx)) = (s.pt, api.stream_tx_by_mid(s.mid, s.rid)) else {
                continue;
            };
            self.rtc_dirty |= !self.scratch.is_empty();
            for p in self.scratch.drain(..) {
                let mut w = RtpWrite::new(pt, p.seq.into(), p.rtp_ts, now, p.payload)
                    .marker(p.marker)
                    .nackable(matches!(s.source, Source::Video(_)));
                if let Some((level, voice)) = p.audio_level {
                    w = w.ext_vals(ExtensionValues {
                        audio_level: Some(level),
                        voice_activity: Some(voice),
                        ..Default::default()
                    });
                }
                tx.write_rtp(w);
            }
        }
    }

    /// Polls the `Rtc` until it wants time to pass; returns that deadline (µs).
    fn drain(&mut self, clock: &Clock) -> u64 {
        self.rtc_dirty = false;
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_next_us = clock.us(t);
                    return self.rtc_next_us;
                }
                Ok(Output::Transmit(t)) => {
                    self.remote = Some(t.destination);
                    if self.connected_us.is_none() && is_dtls(&t.contents) {
                        tracing::debug!(target: "plenary_probe::dtls", local = %self.local,
                            dst = %t.destination, tx = %DtlsRecords(&t.contents));
                    }
                    match self.socket.send_to(&t.contents, t.destination) {
                        Ok(n) => {
                            self.counters.tx_packets += 1;
                            self.counters.tx_bytes += n as u64;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            self.counters.send_drops += 1
                        }
                        Err(_) => self.counters.send_errors += 1,
                    }
                }
                Ok(Output::Event(e)) => self.on_event(clock, e),
                Err(_) => {
                    self.counters.rtc_errors += 1;
                    self.dead = true;
                    return clock.now_us() + 1_000_000;
                }
            }
        }
    }

    fn on_event(&mut self, clock: &Clock, e: Event) {
        match e {
            Event::Connected => {
                self.on_connect(clock.now_us());
                self.start_fast();
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => self.dead = true,
            Event::KeyframeRequest(req) => {
                self.counters.keyframe_requests_in += 1;
                for s in &mut self.senders {
                    let same_rid = req.rid.is_none() || s.rid == req.rid;
                    if let (true, true, Some(Gen::Video(g))) =
                        (s.mid == req.mid, same_rid, s.gen.as_mut())
                    {
                        g.request_keyframe();
                    }
                }
            }
            Event::RtpPacket(p) => {
                let ssrc = p.header.ssrc;
                let Some(mid) = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid()) else {
                    return;
                };
                let i = match self.receivers.iter().position(|r| r.mid == mid) {
                    Some(i) => i,
                    None => {
                        let kind = match self.rtc.media(mid).map(|m| m.kind()) {
                            Some(MediaKind::Audio) => TrackKind::Audio,
                            _ => TrackKind::Video,
                        };
                        let now_us = clock.us(p.timestamp);
                        self.receivers.push(Receiver {
                            mid,
                            rx: TrackRx::new(kind, self.joined_us, now_us),
                            must_flow: false,
                            paused_in_step: false,
                        });
                        self.receivers.len() - 1
                    }
                };
                let ask = self.receivers[i].rx.on_packet(RxPacket {
                    seq: *p.seq_no,
                    rtp_ts: p.header.timestamp,
                    marker: p.header.marker,
                    payload: &p.payload,
                    arrival_us: clock.us(p.timestamp),
                });
                if ask {
                    if let Some(s) = self.rtc.direct_api().stream_rx(&ssrc) {
                        s.request_keyframe(KeyframeRequestKind::Pli);
                        self.rtc_dirty = true;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connect(&mut self, now_us: u64) {
        if self.connected_us.is_some() {
            return;
        }
        self.connected_us = Some(now_us);
        if let Some(tx) = self.on_connected.take() {
            let _ = tx.send(now_us);
        }
        self.apply_expect();
        let seed = self.id;
        let start = now_us + MEDIA_DELAY_US;
        for (k, s) in self.senders.iter_mut().enumerate() {
            let want = match s.source {
                Source::Audio { .. } => Codec::Opus,
                Source::Video(_) => Codec::Vp8,
            };
            s.pt = pick_pt(&self.rtc, s.mid, want);
            let seed = seed << 8 | k as u64;
            // Spread sources over a frame so a thousand peers do not send in lockstep.
            let offset = seed.wrapping_mul(0x9e37_79b9) % 20_000;
            s.gen = Some(match &s.source {
                Source::Audio { spec, role } => Gen::Audio(AudioGen::new(
                    spec.clone(),
                    *role,
                    self.participant,
                    seed,
                    start + offset,
                )),
                Source::Video(spec) => Gen::Video(VideoGen::new(
                    spec.clone(),
                    self.participant,
                    seed,
                    start + offset,
                )),
            });
        }
    }

    fn ask_keyframe(&mut self, i: usize) {
        let mid = self.receivers[i].mid;
        if self.fast_pli(mid) {
            return;
        }
        self.rtc_dirty = true;
        if let Some(s) = self.rtc.direct_api().stream_rx_by_mid(mid, None) {
            s.request_keyframe(KeyframeRequestKind::Pli);
        }
    }

    /// Turns a simulcast layer on or off (the server's dynacast `layers_wanted`).
    pub fn set_layer_active(&mut self, mid: Mid, layer: u8, active: bool) {
        for s in &mut self.senders {
            if let (true, Some(Gen::Video(g))) = (s.mid == mid, s.gen.as_mut()) {
                if g.spec().layer == layer {
                    g.active = active;
                }
            }
        }
    }

    /// The server paused (last-N) or resumed a received track: while paused it need not
    /// carry media, and the silence is not a freeze.
    pub fn set_paused(&mut self, mid: Mid, paused: bool) {
        if let Some(e) = self.expect.iter_mut().find(|e| e.0 == mid) {
            e.2 = !paused;
        }
        if let Some(r) = self.receivers.iter_mut().find(|r| r.mid == mid) {
            r.must_flow = !paused;
            r.paused_in_step = true;
            r.rx.paused();
        }
    }

    /// Creates receivers for expected m-lines (once connected), so a track that never gets
    /// a packet is still judged, and updates whether each must carry media.
    pub fn apply_expect(&mut self) {
        let Some(now_us) = self.connected_us else {
            return;
        };
        for (mid, kind, must) in self.expect.clone() {
            match self.receivers.iter_mut().find(|r| r.mid == mid) {
                Some(r) => r.must_flow = must,
                None => self.receivers.push(Receiver {
                    mid,
                    rx: TrackRx::new(kind, self.joined_us, now_us),
                    must_flow: must,
                    paused_in_step: false,
                }),
            }
        }
    }

    pub fn begin_step(&mut self, now_us: u64) {
        for r in &mut self.receivers {
            r.rx.begin_step(now_us);
            // Still paused from before: the window starts paused.
            r.paused_in_step = !r.must_flow && r.paused_in_step;
        }
    }

    /// Closes the step window of every receiver: (must flow, window).
    pub fn end_step(&mut self, now_us: u64) -> Vec<(bool, TrackWindow)> {
        self.receivers
            .iter_mut()
            .map(|r| {
                let mut w = r.rx.end_step(now_us);
                w.paused = r.paused_in_step;
                (r.must_flow, w)
            })
            .collect()
    }
}

/// The payload type the remote side accepted for `codec` on `mid`.
fn pick_pt(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let cfg = rtc.codec_config();
    media
        .remote_pts()
        .iter()
        .copied()
        .find(|pt| {
            cfg.find(|p| p.pt() == *pt)
                .is_some_and(|p| p.spec().codec == codec)
        })
        .or_else(|| media.remote_pts().first().copied())
}
