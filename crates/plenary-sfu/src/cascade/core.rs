//! One cascade link's translation between this node's workers and the other node, with no
//! sockets and no clock of its own: the driver feeds it and carries out what it returns.
//!
//! - Ids: the other node's ids become local ids `remote << 8 | pseudo`, where `pseudo` is the
//!   link's pseudo worker (`LINK_BASE + slot`). So `worker_of` sends a remote track's keyframe
//!   requests and demand to the link, as it sends a piped track's to its worker.
//! - A mirror of the other node's side of each room, replayed to every local worker that
//!   enters the room after it arrived.
//! - Dynacast across the link: video crosses only in layers the far side demands; audio always
//!   crosses (every node ranks speakers from the same levels). Layers kept off the link are
//!   described once a second (`LayerInfo`), so the far side can still choose them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plenary_cascade::wire::{ControlMsg, Kind, MediaPacket, MAX_NACK_SEQS};
use rustc_hash::FxHashMap;
use str0m::media::{MediaKind, Mid, Rid};

use crate::core::codec::Codec;
use crate::media::model::Packet;
use crate::media::{PipeMsg, TrackUp};
use crate::signal::TrackSource;
use crate::workers::{worker_of, LINK_BASE, WORKER_BITS};

use super::repair::{holes, RepairStats, SentRing};

/// How often layers kept off the link are described to the far side.
pub(crate) const LAYER_INFO_INTERVAL: Duration = Duration::from_secs(1);

/// What the driver does on the core's behalf.
pub(crate) enum Action {
    Control(ControlMsg),
    /// An RTP packet of one of our tracks for the far side (encoded by the driver).
    Media {
        track: u64,
        layer: u8,
        packet: Packet,
    },
    /// To the local workers in the mask.
    Workers(u64, PipeMsg),
}

#[derive(Default)]
struct RoomMirror {
    /// The far side's participants: (their id, name, visible).
    participants: Vec<(u64, String, bool)>,
    /// The far side's tracks, as announced (their ids).
    tracks: Vec<ControlMsg>,
    /// The far side has sent all it holds of the room.
    synced: bool,
    /// Local workers that synced the room to this link.
    workers: u64,
}

struct RemoteTrack {
    room: String,
    codec: Codec,
    /// Video layers are repaired on the link; audio is not (Opus conceals a lost frame).
    video: bool,
    /// Last extended sequence number per layer (the link carries 16 bits).
    seq: [Option<u64>; 3],
}

/// Per layer of one of our tracks: what went by since the last description.
#[derive(Clone, Copy, Default)]
struct LayerSeen {
    ssrc: u32,
    bytes: u64,
}

pub(crate) struct LinkCore {
    pseudo: usize,
    rooms: HashMap<String, RoomMirror>,
    remote_tracks: FxHashMap<u64, RemoteTrack>,
    /// Our workers' demand for the far side's tracks, per (local track id, worker).
    local_demand: FxHashMap<(u64, usize), u8>,
    /// Last demand told to the far side, per local id of its track.
    demand_sent: FxHashMap<u64, u8>,
    /// The far side's demand for our tracks.
    remote_demand: FxHashMap<u64, u8>,
    /// Our tracks as announced (to re-announce when their codec becomes known).
    announced: FxHashMap<u64, ControlMsg>,
    seen: FxHashMap<(u64, u8), LayerSeen>,
    last_info: Option<Instant>,
    /// Video packets of our tracks sent on the link, per (track, layer), for repair.
    sent: FxHashMap<(u64, u8), SentRing>,
    /// Datagrams for tracks the far side never announced.
    pub unknown_flows: u64,
    pub repair: RepairStats,
}

impl LinkCore {
    pub(crate) fn new(slot: usize) -> Self {
        Self {
            pseudo: LINK_BASE + slot,
            rooms: HashMap::new(),
            remote_tracks: FxHashMap::default(),
            local_demand: FxHashMap::default(),
            demand_sent: FxHashMap::default(),
            remote_demand: FxHashMap::default(),
            announced: FxHashMap::default(),
            seen: FxHashMap::default(),
            last_info: None,
            sent: FxHashMap::default(),
            unknown_flows: 0,
            repair: RepairStats::default(),
        }
    }

    /// The local id of one of the far side's ids.
    pub(crate) fn local_id(&self, remote: u64) -> u64 {
        local_id(remote, self.pseudo)
    }

    /// The far side's id of one of its entries here, if `local` is one.
    fn remote_id(&self, local: u64) -> Option<u64> {
        (worker_of(local) == self.pseudo).then_some(local >> WORKER_BITS)
    }

    fn ours(id: u64) -> bool {
        worker_of(id) < LINK_BASE
    }

    /// Rooms whose mirror holds something (to tear down when the link goes).
    pub(crate) fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    /// The far side stopped carrying `room`.
    pub(crate) fn forget_room(&mut self, room: &str) {
        if let Some(m) = self.rooms.remove(room) {
            for t in m.tracks {
                if let ControlMsg::TrackUp { id, .. } = t {
                    self.remote_tracks.remove(&id);
                }
            }
        }
    }

    /// A message a local worker piped to this link.
    pub(crate) fn on_worker_msg(&mut self, msg: PipeMsg, out: &mut Vec<Action>) {
        match msg {
            PipeMsg::ParticipantUp {
                room,
                id,
                name,
                visible,
            } if Self::ours(id) => out.push(Action::Control(ControlMsg::ParticipantUp {
                room,
                id,
                name,
                visible,
            })),
            PipeMsg::TrackUp(t) if Self::ours(t.id) => {
                let msg = track_up_msg(&t);
                self.announced.insert(t.id, msg.clone());
                out.push(Action::Control(msg));
            }
            PipeMsg::ParticipantDown { id } if Self::ours(id) => {
                out.push(Action::Control(ControlMsg::ParticipantDown { id }));
            }
            PipeMsg::Synced { room, from } => {
                let pseudo = self.pseudo;
                let mirror = self.rooms.entry(room.clone()).or_default();
                mirror.workers |= 1 << from;
                let to = 1u64 << from;
                for (id, name, visible) in mirror.participants.clone() {
                    out.push(Action::Workers(
                        to,
                        PipeMsg::ParticipantUp {
                            room: room.clone(),
                            id: local_id(id, pseudo),
                            name,
                            visible,
                        },
                    ));
                }
                let tracks = mirror.tracks.clone();
                let synced = mirror.synced;
                for t in &tracks {
                    if let Some(up) = self.track_up_local(t) {
                        out.push(Action::Workers(to, PipeMsg::TrackUp(up)));
                    }
                }
                if synced {
                    out.push(Action::Workers(
                        to,
                        PipeMsg::Synced {
                            room: room.clone(),
                            from: self.pseudo,
                        },
                    ));
                }
                out.push(Action::Control(ControlMsg::Synced { room }));
            }
            PipeMsg::Media {
                track,
                layer,
                codec,
                packet,
            } if Self::ours(track) => self.media_out(track, layer, codec, packet, out),
            PipeMsg::Keyframe { track, layer } => {
                if let Some(remote) = self.remote_id(track) {
                    out.push(Action::Control(ControlMsg::Keyframe {
                        track: remote,
                        layer: layer as u8,
                    }));
                }
            }
            PipeMsg::Demand {
                track,
                from,
                layers,
            } => {
                let Some(remote) = self.remote_id(track) else {
                    return;
                };
                if layers == 0 {
                    self.local_demand.remove(&(track, from));
                } else {
                    self.local_demand.insert((track, from), layers);
                }
                let merged = self
                    .local_demand
                    .iter()
                    .filter(|((t, _), _)| *t == track)
                    .fold(0u8, |m, (_, l)| m | l);
                if self.demand_sent.get(&track).copied().unwrap_or(0) != merged {
                    self.demand_sent.insert(track, merged);
                    out.push(Action::Control(ControlMsg::Demand {
                        track: remote,
                        layers: merged,
                    }));
                }
            }
            _ => {}
        }
    }

    fn media_out(
        &mut self,
        track: u64,
        layer: usize,
        codec: Codec,
        packet: Packet,
        out: &mut Vec<Action>,
    ) {
        let Some(ControlMsg::TrackUp {
            kind,
            codec: announced,
            ..
        }) = self.announced.get_mut(&track)
        else {
            return;
        };
        let kind = *kind;
        if codec != Codec::Other && codec_from_wire(announced) != codec {
            // The codec became known after the track was announced: the far side needs it
            // to pick its subscribers' payload types.
            *announced = codec_to_wire(codec).to_owned();
            if let Some(msg) = self.announced.get(&track).cloned() {
                out.push(Action::Control(msg));
            }
        }
        let layer = layer.min(2) as u8;
        if kind == Kind::Video {
            let seen = self.seen.entry((track, layer)).or_default();
            seen.ssrc = packet.ssrc;
            seen.bytes += packet.payload.len() as u64;
            let wanted = self.remote_demand.get(&track).copied().unwrap_or(0);
            if wanted & (1 << layer) == 0 {
                return;
            }
            self.sent
                .entry((track, layer))
                .or_insert_with(SentRing::new)
                .keep(&packet);
        }
        out.push(Action::Media {
            track,
            layer,
            packet,
        });
    }

    /// Once a second: describe our video layers, so the far side can choose those it does
    /// not receive yet.
    pub(crate) fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let elapsed = match self.last_info {
            Some(t) if now.duration_since(t) < LAYER_INFO_INTERVAL => return,
            Some(t) => now.duration_since(t),
            None => LAYER_INFO_INTERVAL,
        };
        self.last_info = Some(now);
        let secs = elapsed.as_secs_f64().max(0.001);
        for (&(track, layer), seen) in &mut self.seen {
            if seen.bytes == 0 {
                continue;
            }
            out.push(Action::Control(ControlMsg::LayerInfo {
                track,
                layer,
                ssrc: seen.ssrc,
                bps: (seen.bytes as f64 * 8.0 / secs) as u64,
            }));
            seen.bytes = 0;
        }
        let announced = &self.announced;
        self.seen.retain(|(t, _), _| announced.contains_key(t));
        self.sent.retain(|(t, _), _| announced.contains_key(t));
    }

    /// A control message from the far side (not `Hello`, `Room`, `RoomGone`: the driver's).
    pub(crate) fn on_control(&mut self, msg: ControlMsg, out: &mut Vec<Action>) {
        match msg {
            ControlMsg::ParticipantUp {
                room,
                id,
                name,
                visible,
            } => {
                let mirror = self.rooms.entry(room.clone()).or_default();
                if !mirror.participants.iter().any(|p| p.0 == id) {
                    mirror.participants.push((id, name.clone(), visible));
                }
                let to = mirror.workers;
                out.push(Action::Workers(
                    to,
                    PipeMsg::ParticipantUp {
                        room,
                        id: self.local_id(id),
                        name,
                        visible,
                    },
                ));
            }
            ControlMsg::TrackUp {
                ref room,
                id,
                ref codec,
                kind,
                ..
            } => {
                let codec = codec_from_wire(codec);
                let room = room.clone();
                let mirror = self.rooms.entry(room.clone()).or_default();
                match mirror
                    .tracks
                    .iter_mut()
                    .find(|t| matches!(t, ControlMsg::TrackUp { id: other, .. } if *other == id))
                {
                    Some(known) => *known = msg.clone(),
                    None => mirror.tracks.push(msg.clone()),
                }
                let to = mirror.workers;
                // A re-announcement only updates the codec, which media carries along.
                let known = self.remote_tracks.contains_key(&id);
                self.remote_tracks
                    .entry(id)
                    .or_insert(RemoteTrack {
                        room,
                        codec,
                        video: kind == Kind::Video,
                        seq: [None; 3],
                    })
                    .codec = codec;
                if !known {
                    if let Some(up) = self.track_up_local(&msg) {
                        out.push(Action::Workers(to, PipeMsg::TrackUp(up)));
                    }
                }
            }
            ControlMsg::ParticipantDown { id } => {
                let local = self.local_id(id);
                for mirror in self.rooms.values_mut() {
                    let before = mirror.participants.len();
                    mirror.participants.retain(|p| p.0 != id);
                    if mirror.participants.len() == before {
                        continue;
                    }
                    let mut gone = Vec::new();
                    mirror.tracks.retain(|t| match t {
                        ControlMsg::TrackUp {
                            owner, id: track, ..
                        } if *owner == id => {
                            gone.push(*track);
                            false
                        }
                        _ => true,
                    });
                    for t in gone {
                        self.remote_tracks.remove(&t);
                    }
                    out.push(Action::Workers(
                        mirror.workers,
                        PipeMsg::ParticipantDown { id: local },
                    ));
                }
            }
            ControlMsg::Synced { room } => {
                let mirror = self.rooms.entry(room.clone()).or_default();
                mirror.synced = true;
                let to = mirror.workers;
                out.push(Action::Workers(
                    to,
                    PipeMsg::Synced {
                        room,
                        from: self.pseudo,
                    },
                ));
            }
            ControlMsg::Keyframe { track, layer } if Self::ours(track) => {
                out.push(Action::Workers(
                    1 << worker_of(track),
                    PipeMsg::Keyframe {
                        track,
                        layer: layer as usize,
                    },
                ))
            }
            ControlMsg::Demand { track, layers } if Self::ours(track) => {
                self.remote_demand.insert(track, layers);
                out.push(Action::Workers(
                    1 << worker_of(track),
                    PipeMsg::Demand {
                        track,
                        from: self.pseudo,
                        layers,
                    },
                ));
            }
            ControlMsg::Nack { track, layer, seqs } if Self::ours(track) => {
                let Some(ring) = self.sent.get(&(track, layer.min(2))) else {
                    self.repair.missed += seqs.len() as u64;
                    return;
                };
                for seq in seqs.into_iter().take(MAX_NACK_SEQS) {
                    match ring.find(seq) {
                        Some(p) => {
                            self.repair.resent += 1;
                            out.push(Action::Media {
                                track,
                                layer: layer.min(2),
                                packet: p.clone(),
                            });
                        }
                        None => self.repair.missed += 1,
                    }
                }
            }
            ControlMsg::LayerInfo {
                track,
                layer,
                ssrc,
                bps,
            } => {
                let Some(t) = self.remote_tracks.get(&track) else {
                    return;
                };
                let to = self.rooms.get(&t.room).map_or(0, |m| m.workers);
                out.push(Action::Workers(
                    to,
                    PipeMsg::LayerInfo {
                        track: self.local_id(track),
                        layer: usize::from(layer.min(2)),
                        ssrc,
                        bps,
                    },
                ));
            }
            _ => {}
        }
    }

    /// A media datagram from the far side: the workers of its room and the packet for them.
    /// A hole in a video layer's sequence numbers asks the far side for the missing packets.
    pub(crate) fn on_datagram(
        &mut self,
        p: &MediaPacket<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<(u64, PipeMsg)> {
        let pseudo = self.pseudo;
        let Some(t) = self.remote_tracks.get_mut(&p.track) else {
            self.unknown_flows += 1;
            return None;
        };
        let layer = usize::from(p.layer.min(2));
        let prev = t.seq[layer];
        let seq = unwrap_seq(&mut t.seq[layer], p.seq);
        if let Some(seqs) = prev.filter(|_| t.video).and_then(|prev| holes(prev, seq)) {
            self.repair.nacked += seqs.len() as u64;
            out.push(Action::Control(ControlMsg::Nack {
                track: p.track,
                layer: layer as u8,
                seqs,
            }));
        }
        let to = self.rooms.get(&t.room).map_or(0, |m| m.workers);
        let packet = Packet {
            ssrc: p.ssrc,
            pt: p.pt.into(),
            seq,
            ts: p.ts,
            marker: p.marker,
            payload: Arc::from(p.payload),
            received: now,
            audio_level: p.audio_level,
            voice_activity: p.voice_activity,
            video_orientation: p.video_orientation,
        };
        Some((
            to,
            PipeMsg::Media {
                track: local_id(p.track, pseudo),
                layer,
                codec: t.codec,
                packet,
            },
        ))
    }

    /// A local worker left the room (its span no longer holds it): stop replaying to it.
    pub(crate) fn worker_left(&mut self, room: &str, worker_mask: u64) {
        if let Some(m) = self.rooms.get_mut(room) {
            m.workers &= worker_mask;
        }
    }

    fn track_up_local(&self, msg: &ControlMsg) -> Option<TrackUp> {
        let ControlMsg::TrackUp {
            room,
            id,
            owner,
            mid,
            kind,
            source,
            codec,
            rids,
        } = msg
        else {
            return None;
        };
        Some(TrackUp {
            room: room.clone(),
            id: self.local_id(*id),
            owner: self.local_id(*owner),
            mid: Mid::from(mid.as_str()),
            kind: match kind {
                Kind::Audio => MediaKind::Audio,
                Kind::Video => MediaKind::Video,
            },
            source: match source.as_str() {
                "screen" => TrackSource::Screen,
                "microphone" => TrackSource::Microphone,
                _ => TrackSource::Camera,
            },
            codec: codec_from_wire(codec),
            rids: rids.iter().map(|r| Rid::from(r.as_str())).collect(),
        })
    }
}

/// The link datagram that carries one of our packets (the payload is borrowed, not copied).
pub(crate) fn wire_packet(track: u64, layer: u8, packet: &Packet) -> MediaPacket<'_> {
    MediaPacket {
        track,
        layer,
        ssrc: packet.ssrc,
        pt: *packet.pt,
        seq: packet.seq as u16,
        ts: packet.ts,
        marker: packet.marker,
        audio_level: packet.audio_level,
        voice_activity: packet.voice_activity,
        video_orientation: packet.video_orientation,
        payload: &packet.payload,
    }
}

fn local_id(remote: u64, pseudo: usize) -> u64 {
    (remote << WORKER_BITS) | pseudo as u64
}

fn track_up_msg(t: &TrackUp) -> ControlMsg {
    ControlMsg::TrackUp {
        room: t.room.clone(),
        id: t.id,
        owner: t.owner,
        mid: t.mid.to_string(),
        kind: match t.kind {
            MediaKind::Audio => Kind::Audio,
            MediaKind::Video => Kind::Video,
        },
        source: match t.source {
            TrackSource::Microphone => "microphone",
            TrackSource::Camera => "camera",
            TrackSource::Screen => "screen",
        }
        .to_owned(),
        codec: codec_to_wire(t.codec).to_owned(),
        rids: t.rids.iter().map(|r| r.to_string()).collect(),
    }
}

fn codec_to_wire(c: Codec) -> &'static str {
    match c {
        Codec::Vp8 => "vp8",
        Codec::H264 => "h264",
        Codec::Opus => "opus",
        Codec::Other => "other",
    }
}

fn codec_from_wire(s: &str) -> Codec {
    Codec::from_name(s)
}

/// Extends a 16-bit sequence number next to the last one seen (RFC 3550 A.1's idea).
fn unwrap_seq(last: &mut Option<u64>, seq: u16) -> u64 {
    let ext = match *last {
        // Start one cycle up, so a packet slightly older than the first does not underflow.
        None => (1 << 16) | u64::from(seq),
        Some(prev) => {
            let delta = seq.wrapping_sub(prev as u16) as i16;
            prev.wrapping_add_signed(i64::from(delta))
        }
    };
    if last.is_none_or(|prev| ext > prev) {
        *last = Some(ext);
    }
    ext
}

#[cfg(test)]
mod tests;
