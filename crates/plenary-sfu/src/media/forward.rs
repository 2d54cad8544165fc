//! The per-packet path: publisher RTP → every slot its track feeds, rewritten per slot.

use std::sync::atomic::Ordering;
use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, VideoOrientation};

use super::egress::Media;
use super::fast::Route;
use super::model::{Layer, Packet};
use super::peer::Peer;
use super::MediaLoop;
use crate::core::codec::{self, Codec};
use crate::core::layers::RateMeter;
use crate::core::switcher::{Incoming, Verdict};

impl MediaLoop {
    pub(super) fn forward(
        &mut self,
        peer: u64,
        mid: Mid,
        rid: Option<Rid>,
        p: RtpPacket,
        now: Instant,
    ) {
        let Some(&track_id) = self.track_by_mid.get(&(peer, mid)) else {
            self.stats.dropped_unrouted += 1;
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let Some(layer) = track.layer_of(rid) else {
            self.stats.dropped_unrouted += 1;
            return;
        };
        if track.codec == Codec::Other {
            track.codec = self
                .peers
                .get(&peer)
                .and_then(|pp| codec_of(pp, p.header.payload_type))
                .unwrap_or(Codec::Other);
        }
        if track.pipe_to != 0 {
            let (to, codec) = (track.pipe_to, track.codec);
            self.pipe_packet(to, track_id, layer, codec, &p);
        }
        self.forward_track(track_id, layer, Packet::from(&p), now);
    }

    /// Fans one packet of a track (local, or piped from another worker) out to its slots.
    pub(super) fn forward_track(&mut self, track_id: u64, layer: usize, p: Packet, now: Instant) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        if layer >= track.layers.len() {
            return;
        }
        let ssrc = p.ssrc;
        let new_layer = track.layers[layer].is_none();
        let l = track.layers[layer].get_or_insert_with(|| Layer {
            ssrc,
            meter: RateMeter::default(),
            last_bps: 0,
            measured: false,
        });
        l.ssrc = ssrc;
        l.meter.add(now, p.payload.len());
        // Known before the policy pass below: a silent microphone with levels must not be
        // taken for an unranked one and get an audio slot for a pass.
        if track.kind == MediaKind::Audio && p.audio_level.is_some() {
            track.has_levels = true;
        }
        if new_layer {
            // Bind the slots waiting for this layer before its first packet goes by (rare).
            self.policy(now);
            self.next_policy = now + super::POLICY_INTERVAL;
        }
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let (kind, codec, owner) = (track.kind, track.codec, track.owner);
        let Some(room_name) = self.participants.get(&owner).map(|o| &o.room) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        if kind == MediaKind::Audio {
            if let Some(level) = p.audio_level {
                let level = level.unsigned_abs().min(127);
                room.speaker.on_level(now, owner, level, p.voice_activity);
            }
        }
        let Some(feeds) = room.feeds.get(&track_id) else {
            return;
        };
        let mut fan = std::mem::take(&mut self.fan);
        fan.clear();
        fan.extend_from_slice(feeds);
        let mut evs = std::mem::take(&mut self.sub_events);
        let incoming = Incoming {
            source: ssrc,
            seq: p.seq,
            ts: p.ts,
            keyframe_start: kind == MediaKind::Video && codec::is_keyframe_start(codec, &p.payload),
            marker: p.marker,
        };
        if incoming.keyframe_start {
            // The keyframe a held-back request wanted is here; don't ask again.
            if let Some(lim) = self
                .tracks
                .get_mut(&track_id)
                .map(|t| &mut t.keyframes[layer])
            {
                lim.keyframe_seen();
            }
        }
        let mut ext = ExtensionValues::default();
        if kind == MediaKind::Audio {
            ext.audio_level = p.audio_level;
            ext.voice_activity = p.voice_activity;
        } else {
            ext.video_orientation = p.video_orientation.map(VideoOrientation::from);
        }
        let start_bps = self
            .config
            .bandwidth_estimation
            .then_some(self.config.initial_estimate_kbps * 1000);
        let audio_level = p
            .audio_level
            .map(|l| (l.unsigned_abs().min(127), p.voice_activity.unwrap_or(false)));
        for r in &fan {
            let Some(sub) = self.peers.get_mut(&r.peer) else {
                continue;
            };
            if !sub.connected {
                continue;
            }
            let Some((mid, pt_map)) = sub.slots.get(r.slot).map(|s| (s.mid, s.pt_map)) else {
                continue;
            };
            // The outgoing PT and stream come first: an m-line whose offer is not answered
            // yet has neither, and its switcher must not take (and lose) this packet, or the
            // subscriber's stream would start after the keyframe it joined on.
            let in_pt = p.pt;
            let out_pt = match pt_map {
                Some((a, b)) if a == in_pt => b,
                _ => {
                    // First packet on this slot (or after a renegotiation reset the cache):
                    // check the m-line is negotiated and has a stream, once, not per packet.
                    if sub.rtc.media(mid).is_none()
                        || sub.rtc.direct_api().stream_tx_by_mid(mid, None).is_none()
                    {
                        continue;
                    }
                    let Some(b) = subscriber_pt(sub, mid, codec, in_pt) else {
                        self.stats.dropped_no_codec += 1;
                        continue;
                    };
                    let rtx_pt = super::fast::rtx_pt_of(sub, b);
                    if let Some(slot) = sub.slots.get_mut(r.slot) {
                        slot.pt_map = Some((in_pt, b));
                        slot.rtx_pt = rtx_pt;
                    }
                    b
                }
            };
            // Nothing may go through str0m on a fast-path subscriber's streams; until its
            // address is known the packet is skipped before the switcher sees it.
            let was_fast = sub.fast.is_some();
            let route = super::fast::route(sub, start_bps, now);
            match route {
                Route::Wait => continue,
                Route::Fast(_) if !was_fast => {
                    self.shared.fast_subscribers.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            let Some(slot) = sub.slots.get_mut(r.slot) else {
                continue;
            };
            let Verdict::Forward { seq, ts, .. } = slot.switcher.on_packet(now, &incoming) else {
                continue;
            };
            if let Route::Fast(dest) = route {
                let rtx_pt = slot.rtx_pt.map(|p| *p);
                let Some(stream) = super::fast::stream_of(sub, r.slot, out_pt) else {
                    continue;
                };
                let Some(eg) = sub.fast.as_mut() else {
                    continue;
                };
                if self.batch.is_full() {
                    super::fast::flush(&mut self.batch, &self.sock, &mut self.stats);
                }
                let Some(buf) = self.batch.next_buf() else {
                    continue;
                };
                let m = Media {
                    stream,
                    pt: *out_pt,
                    rtx_pt,
                    seq: seq as u16,
                    ts,
                    marker: p.marker,
                    payload: &p.payload,
                    audio_level: if kind == MediaKind::Audio {
                        audio_level
                    } else {
                        None
                    },
                    video_orientation: p.video_orientation,
                };
                match eg.forward(buf, &m, now) {
                    Ok(Some(n)) => {
                        self.batch.commit(n, Some(dest));
                    }
                    Ok(None) if !eg.listed => {
                        // Queued by the pacer: the worker sends it from `fast_paced`.
                        eg.listed = true;
                        self.paced.push(r.peer);
                    }
                    Ok(None) => {}
                    Err(_) => self.stats.egress_errors += 1,
                }
                self.stats.forwarded_packets += 1;
                self.stats.forwarded_bytes += p.payload.len() as u64;
                continue;
            }
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                continue;
            };
            // The payload is an Arc shared by every subscriber: no copy per subscriber.
            tx.write_rtp(
                RtpWrite::new(out_pt, SeqNo::from(seq), ts, p.received, p.payload.clone())
                    .marker(p.marker)
                    .ext_vals(ext.clone())
                    .nackable(kind == MediaKind::Video),
            );
            self.stats.forwarded_packets += 1;
            self.stats.forwarded_bytes += p.payload.len() as u64;
            // Send what the write queued. Input-driven events were drained before any write,
            // so only transmits (and at most an estimate) come out here.
            sub.drain(&self.sock, &mut evs, now);
            for ev in evs.drain(..) {
                if let super::peer::PeerEvent::Estimate(bps) = ev {
                    sub.estimate_bps = Some(bps);
                }
            }
        }
        // The fast path's packets wait for the end of the worker pass (see `run`), unless
        // per-fan-out sends were asked for.
        if !self.send_per_pass {
            self.flush_egress();
        }
        self.fan = fan;
        self.sub_events = evs;
    }

    /// A subscriber asked for a keyframe on one of its m-lines: ask the publisher (limited).
    pub(super) fn keyframe_for_slot(&mut self, peer: u64, mid: Mid, now: Instant) {
        let Some(slot) = self.peers.get_mut(&peer).and_then(|p| p.slot_by_mid(mid)) else {
            return;
        };
        let (Some(track), Some(layer)) = (slot.feed, slot.layer) else {
            return;
        };
        self.request_keyframe(track, layer as usize, now);
    }

    pub(super) fn request_keyframe(&mut self, track: u64, layer: usize, now: Instant) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if t.kind != MediaKind::Video || layer >= 3 {
            return;
        }
        if t.keyframes[layer].allow(now) {
            self.send_pli(track, layer);
        }
    }

    /// Sends a PLI for one publisher layer now (the limiter has already agreed).
    pub(super) fn send_pli(&mut self, track: u64, layer: usize) {
        let owner = crate::workers::worker_of(track);
        if owner != self.worker {
            // A piped track: its own worker asks the publisher (and limits again).
            if let Some(tx) = self.pipe_target(owner) {
                tx.send(super::PipeMsg::Keyframe { track, layer });
            }
            return;
        }
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        let Some(ssrc) = t.layers.get(layer).and_then(|l| l.as_ref()).map(|l| l.ssrc) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&t.peer) else {
            return;
        };
        if let Some(rx) = p.rtc.direct_api().stream_rx(&ssrc.into()) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.stats.keyframe_requests += 1;
        }
        let mut evs = std::mem::take(&mut self.sub_events);
        p.drain(&self.sock, &mut evs, Instant::now());
        evs.clear();
        self.sub_events = evs;
    }
}

/// Our codec name for a publisher PT.
fn codec_of(p: &Peer, pt: Pt) -> Option<Codec> {
    let params = p.rtc.codec_config().find(|c| c.pt() == pt)?;
    Some(Codec::from_name(&params.spec().codec.to_string()))
}

/// The subscriber's PT for the same codec on this m-line.
fn subscriber_pt(sub: &Peer, mid: Mid, codec: Codec, in_pt: Pt) -> Option<Pt> {
    let pts = sub.rtc.media(mid)?.remote_pts();
    if codec == Codec::Other {
        return pts
            .contains(&in_pt)
            .then_some(in_pt)
            .or_else(|| pts.first().copied());
    }
    sub.rtc
        .codec_config()
        .params()
        .iter()
        .find(|c| pts.contains(&c.pt()) && Codec::from_name(&c.spec().codec.to_string()) == codec)
        .map(|c| c.pt())
}
