//! One large room across several workers (mediasoup's pipe between routers).
//!
//! Once a room holds `spill-at` members on its home worker, the router sends further joins to
//! other workers as well, and every worker the room spans holds a replica: its own peers,
//! plus the participants and tracks of the other workers as remote entries (no peer). Each
//! worker pipes the packets of its local tracks to every other worker of the room, once per
//! worker, not per subscriber: the payload is an `Arc`, so a piped packet costs a channel slot
//! and a wake-up. From there each worker fans out to its own subscribers with the same slot,
//! layer and speaker logic as for local tracks. Keyframe requests and dynacast demand travel
//! back to the track's worker.

use std::time::Instant;

use str0m::media::{MediaKind, Mid, Rid};

use super::model::{Packet, Participant, Track};
use super::MediaLoop;
use crate::core::codec::Codec;
use crate::signal::{ServerMsg, TrackSource};
use crate::workers::worker_of;

/// A cascade link's inbox, as the workers see it: bounded, never waited on.
pub(crate) type LinkTx = tokio::sync::mpsc::Sender<PipeMsg>;

/// Where a piped message goes: another worker of this node, or a cascade link (a pseudo
/// worker from `LINK_BASE` up) that carries it to another node.
pub(super) enum PipeTarget<'a> {
    Worker(crate::workers::WorkerTx<'a>),
    Link(&'a LinkTx),
}

impl PipeTarget<'_> {
    /// False when the message was dropped (a stalled link, a stopped worker).
    pub(super) fn send(&self, msg: PipeMsg) -> bool {
        match self {
            PipeTarget::Worker(tx) => tx.send(crate::Cmd::Pipe(msg)).is_ok(),
            PipeTarget::Link(tx) => tx.try_send(msg).is_ok(),
        }
    }
}

/// What the workers of one room tell each other.
#[derive(Clone)]
pub(crate) enum PipeMsg {
    /// From the cascade: link `slot` (pseudo worker `LINK_BASE + slot`) is up, or gone.
    Link {
        slot: usize,
        tx: Option<LinkTx>,
    },
    /// From a cascade link: what a layer of a remote track carries, for layer choice while
    /// nobody here watches it (dynacast keeps it off the link).
    LayerInfo {
        track: u64,
        layer: usize,
        ssrc: u32,
        bps: u64,
    },
    /// From the router: the workers `room` spans now (bit per worker; 0 = not this one).
    Span {
        room: String,
        workers: u64,
    },
    ParticipantUp {
        room: String,
        id: u64,
        name: String,
        visible: bool,
    },
    TrackUp(TrackUp),
    ParticipantDown {
        id: u64,
    },
    Media {
        track: u64,
        layer: usize,
        codec: Codec,
        packet: Packet,
    },
    /// Everything `from` holds of `room` has been sent.
    Synced {
        room: String,
        from: usize,
    },
    /// A subscriber elsewhere needs a keyframe of this layer.
    Keyframe {
        track: u64,
        layer: usize,
    },
    /// Layers of `track` wanted by subscribers on worker `from` (bit per layer).
    Demand {
        track: u64,
        from: usize,
        layers: u8,
    },
}

#[derive(Clone)]
pub(crate) struct TrackUp {
    pub room: String,
    pub id: u64,
    pub owner: u64,
    pub mid: Mid,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub codec: Codec,
    pub rids: Vec<Rid>,
}

/// Longest a join waits for the room's sync from other workers.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Demand key standing for all subscribers of another worker.
pub(super) fn remote_key(worker: usize) -> u64 {
    u64::MAX - worker as u64
}

impl MediaLoop {
    pub(super) fn pipe(&mut self, msg: PipeMsg) {
        let now = Instant::now();
        match msg {
            PipeMsg::Link { slot, tx } => {
                if slot < self.links.len() {
                    self.links[slot] = tx;
                }
            }
            PipeMsg::LayerInfo {
                track,
                layer,
                ssrc,
                bps,
            } => self.remote_layer_info(track, layer, ssrc, bps),
            PipeMsg::Span { room, workers } => self.span(&room, workers),
            PipeMsg::ParticipantUp {
                room,
                id,
                name,
                visible,
            } => self.remote_participant(room, id, name, visible),
            PipeMsg::TrackUp(t) => self.remote_track(t),
            PipeMsg::ParticipantDown { id } => {
                if worker_of(id) != self.worker {
                    self.remove_participant(id);
                }
            }
            PipeMsg::Media {
                track,
                layer,
                codec,
                packet,
            } => {
                let Some(t) = self.tracks.get_mut(&track) else {
                    return;
                };
                if t.codec == Codec::Other {
                    t.codec = codec;
                }
                self.forward_track(track, layer, packet, now);
            }
            PipeMsg::Synced { room, from } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.awaiting &= !(1 << from);
                }
                self.replay_parked();
            }
            PipeMsg::Keyframe { track, layer } => self.request_keyframe(track, layer, now),
            PipeMsg::Demand {
                track,
                from,
                layers,
            } => {
                let Some(room) = self.room_of_track(track) else {
                    return;
                };
                let Some(room) = self.rooms.get_mut(&room) else {
                    return;
                };
                room.demand
                    .set_layers(remote_key(from), track, layers, &mut room.dirty_layers);
            }
        }
    }

    /// A worker of this node, or a cascade link.
    pub(super) fn pipe_target(&self, w: usize) -> Option<PipeTarget<'_>> {
        if w >= crate::workers::LINK_BASE {
            let tx = self.links.get(w - crate::workers::LINK_BASE)?.as_ref()?;
            return Some(PipeTarget::Link(tx));
        }
        self.shared.router.worker(w).map(PipeTarget::Worker)
    }

    fn remote_layer_info(&mut self, track: u64, layer: usize, ssrc: u32, bps: u64) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let Some(slot) = t.layers.get_mut(layer) else {
            return;
        };
        let new = slot.is_none();
        let l = slot.get_or_insert_with(|| super::model::Layer {
            ssrc,
            meter: crate::core::layers::RateMeter::default(),
            last_bps: bps,
            measured: false,
        });
        l.ssrc = ssrc;
        l.last_bps = bps;
        // The origin node measured it.
        l.measured |= bps > 0;
        // A layer now choosable binds waiting slots at once; a new rate waits for the pass.
        if new {
            self.next_policy = Instant::now();
        }
    }

    fn room_of_track(&self, track: u64) -> Option<String> {
        let owner = self.tracks.get(&track)?.owner;
        Some(self.participants.get(&owner)?.room.clone())
    }

    /// The router changed the set of workers `room` spans.
    fn span(&mut self, room: &str, workers: u64) {
        let mine = 1u64 << self.worker;
        if workers & mine == 0 {
            // No member here any more: drop the replica (it goes with its last entry).
            let remote: Vec<u64> = self
                .rooms
                .get(room)
                .map(|r| r.participants.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|p| worker_of(*p) != self.worker)
                .collect();
            for id in remote {
                self.remove_participant(id);
            }
            return;
        }
        let others = workers & !mine;
        let me = self.worker;
        let r = self.room_mut(room);
        let (added, removed) = (others & !r.others, r.others & !others);
        // Only a worker new to the room waits for the others' syncs: the router told it
        // first, so every sync reaches it after this. Workers already in the room learn of
        // the newcomer's (still empty) side as it comes.
        let new_here = r.others == 0 && !r.participants.iter().any(|p| worker_of(*p) == me);
        if new_here {
            r.awaiting = others;
        }
        r.awaiting &= others;
        r.others = others;
        for w in bits(removed) {
            let tracks = r.tracks.clone();
            for t in tracks {
                r.demand
                    .set_layers(remote_key(w), t, 0, &mut r.dirty_layers);
            }
        }
        let gone: Vec<u64> = r
            .participants
            .iter()
            .copied()
            .filter(|p| removed & (1 << worker_of(*p)) != 0)
            .collect();
        let local: Vec<u64> = self.rooms.get(room).map_or_else(Vec::new, |r| {
            r.tracks
                .iter()
                .copied()
                .filter(|t| worker_of(*t) == me)
                .collect()
        });
        for t in local {
            if let Some(track) = self.tracks.get_mut(&t) {
                track.pipe_to = others;
            }
        }
        for id in gone {
            self.remove_participant(id);
        }
        for w in bits(added) {
            self.sync_to(room, w);
        }
        self.replay_parked();
        self.next_policy = Instant::now();
    }

    /// Joins into a room still waiting for another worker's sync are held until it arrives.
    pub(super) fn park_join(&mut self, room: &str, cmd: crate::Cmd) -> Option<crate::Cmd> {
        if self.rooms.get(room).is_some_and(|r| r.awaiting != 0) {
            self.parked_since.get_or_insert_with(Instant::now);
            self.parked.push(cmd);
            return None;
        }
        Some(cmd)
    }

    /// A sync that never came (its worker stopped) must not hold joins for ever.
    pub(super) fn unpark_stuck(&mut self, now: Instant) {
        let Some(since) = self.parked_since else {
            return;
        };
        if now.duration_since(since) < SYNC_TIMEOUT {
            return;
        }
        tracing::warn!("sfu: a room's sync from another worker did not come; joining without");
        for r in self.rooms.values_mut() {
            r.awaiting = 0;
        }
        self.replay_parked();
    }

    fn replay_parked(&mut self) {
        self.parked_since = None;
        for cmd in std::mem::take(&mut self.parked) {
            self.command(cmd);
        }
    }

    /// Tells a worker new to the room about everyone and everything published here, then
    /// that this is all (it holds joins until every worker has said so).
    fn sync_to(&self, room: &str, w: usize) {
        let Some(tx) = self.pipe_target(w) else {
            return;
        };
        let local: Vec<u64> = self.rooms.get(room).map_or_else(Vec::new, |r| {
            r.participants
                .iter()
                .copied()
                .filter(|p| worker_of(*p) == self.worker)
                .collect()
        });
        for id in local {
            if let Some(msg) = self.participant_up(id) {
                tx.send(msg);
            }
            let tracks = self.participants.get(&id).map(|p| p.tracks.as_slice());
            for &t in tracks.unwrap_or_default() {
                if let Some(msg) = self.track_up(t) {
                    tx.send(msg);
                }
            }
        }
        tx.send(PipeMsg::Synced {
            room: room.to_owned(),
            from: self.worker,
        });
    }

    fn participant_up(&self, id: u64) -> Option<PipeMsg> {
        let p = self.participants.get(&id)?;
        Some(PipeMsg::ParticipantUp {
            room: p.room.clone(),
            id,
            name: p.name.clone(),
            visible: p.visible,
        })
    }

    fn track_up(&self, id: u64) -> Option<PipeMsg> {
        let t = self.tracks.get(&id)?;
        Some(PipeMsg::TrackUp(TrackUp {
            room: self.participants.get(&t.owner)?.room.clone(),
            id,
            owner: t.owner,
            mid: t.mid,
            kind: t.kind,
            source: t.source,
            codec: t.codec,
            rids: t.rids.clone(),
        }))
    }

    /// Sends a message to every other worker `room` spans.
    pub(super) fn pipe_room(&self, room: &str, msg: impl Fn() -> Option<PipeMsg>) {
        let Some(others) = self.rooms.get(room).map(|r| r.others) else {
            return;
        };
        for w in bits(others) {
            if let (Some(tx), Some(m)) = (self.pipe_target(w), msg()) {
                tx.send(m);
            }
        }
    }

    pub(super) fn pipe_participant_up(&self, id: u64) {
        if let Some(room) = self.participants.get(&id).map(|p| p.room.clone()) {
            self.pipe_room(&room, || self.participant_up(id));
        }
    }

    pub(super) fn pipe_track_up(&self, id: u64) {
        if let Some(room) = self.room_of_track(id) {
            self.pipe_room(&room, || self.track_up(id));
        }
    }

    /// A local track's packet goes to every other worker of its room, once each.
    pub(super) fn pipe_packet(
        &mut self,
        others: u64,
        track: u64,
        layer: usize,
        codec: Codec,
        p: &str0m::rtp::RtpPacket,
    ) {
        self.stats.piped_packets += u64::from(others.count_ones());
        for w in bits(others) {
            if let Some(tx) = self.pipe_target(w) {
                if !tx.send(PipeMsg::Media {
                    track,
                    layer,
                    codec,
                    packet: Packet::from(p),
                }) {
                    self.stats.dropped_pipe += 1;
                }
            }
        }
    }

    fn remote_participant(&mut self, room: String, id: u64, name: String, visible: bool) {
        if self.participants.contains_key(&id) {
            return;
        }
        self.participants.insert(
            id,
            Participant {
                name,
                room: room.clone(),
                events: None,
                visible,
                publish: None,
                subscribe: None,
                tracks: Vec::new(),
                declared: Vec::new(),
            },
        );
        self.room_mut(&room).participants.push(id);
        if visible {
            self.person_joined(id);
        }
    }

    fn remote_track(&mut self, t: TrackUp) {
        if self.tracks.contains_key(&t.id) || !self.participants.contains_key(&t.owner) {
            return;
        }
        // No local peer publishes it: `peer` 0 is never a peer id.
        let mut track = Track::new(t.owner, 0, t.mid, t.kind, t.source);
        track.rids = t.rids;
        track.codec = t.codec;
        let info = track.info(t.id);
        self.tracks.insert(t.id, track);
        if let Some(p) = self.participants.get_mut(&t.owner) {
            p.tracks.push(t.id);
        }
        self.room_mut(&t.room).tracks.push(t.id);
        self.announce(t.owner, |pid, _| ServerMsg::TrackPublished {
            participant: pid,
            track: info.clone(),
        });
        self.next_policy = Instant::now();
    }
}

/// Indices of the set bits.
fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |w| mask & (1 << w) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_lists_workers_in_order() {
        assert_eq!(bits(0b1010_0001).collect::<Vec<_>>(), vec![0, 5, 7]);
        assert_eq!(bits(0).count(), 0);
        assert_eq!(bits(1 << 63).collect::<Vec<_>>(), vec![63]);
    }

    #[test]
    fn remote_demand_keys_do_not_collide_with_slot_keys() {
        // Slot keys are (peer id << 8) | slot, with peer ids far below 2^55.
        let slot = super::super::control::slot_key(1 << 40, 255);
        assert!(remote_key(63) > slot);
        assert_ne!(remote_key(0), remote_key(1));
    }
}
