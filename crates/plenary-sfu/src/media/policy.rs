//! The periodic pass: active speaker, audio slots, last-N, programme feed, simulcast layers
//! and dynacast. Runs every `POLICY_INTERVAL` and after control changes, never per packet.

use std::time::Instant;

use str0m::media::MediaKind;

use super::control::slot_key;
use rustc_hash::FxHashMap;

use super::model::{participant_name, track_name, Participant, SlotRef, Track};
use super::slot::SlotRole;
use super::MediaLoop;
use crate::core::alloc::{allocate, VideoSlot};
use crate::core::demand::{wanted_mask, LayerChange};
use crate::core::layers::LayerConfig;
use crate::core::speaker::last_n;
use crate::signal::{ServerMsg, TrackSource};

/// Budget for one forwarded Opus stream in the BWE target.
const AUDIO_BPS: u64 = 64_000;

impl MediaLoop {
    pub(super) fn policy(&mut self, now: Instant) {
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            self.room_policy(&name, now);
        }
        self.deferred_keyframes(now);
    }

    /// Keyframe requests the limiter held back are sent once their interval has passed.
    fn deferred_keyframes(&mut self, now: Instant) {
        let mut due: Vec<(u64, usize)> = Vec::new();
        for (id, t) in self.tracks.iter_mut() {
            for (l, lim) in t.keyframes.iter_mut().enumerate() {
                if lim.due(now) {
                    due.push((*id, l));
                }
            }
        }
        for (t, l) in due {
            self.send_pli(t, l);
        }
    }

    fn room_policy(&mut self, name: &str, now: Instant) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        // 1. Active speaker.
        if let Some(change) = room.speaker.tick(now) {
            room.active = change;
            let msg = ServerMsg::ActiveSpeaker {
                participant: change.map(participant_name),
            };
            for p in &room.participants {
                if let Some(pp) = self.participants.get(p) {
                    pp.send(msg.clone());
                }
            }
        }
        // 2. Audio slots: keep who is still loud where they are, fill freed slots.
        let mut loud = Vec::new();
        room.speaker
            .loudest(now, room.audio_assign.len(), &mut loud);
        // Microphones without RFC 6464 levels cannot be ranked: heard whenever a slot is free.
        let unranked = room
            .tracks
            .iter()
            .filter_map(|t| self.tracks.get(t))
            .filter(|t| t.kind == MediaKind::Audio && !t.has_levels && t.layers[0].is_some())
            .map(|t| t.owner);
        let candidates: Vec<u64> = loud.iter().copied().chain(unranked).collect();
        for a in room.audio_assign.iter_mut() {
            if a.is_some_and(|p| !candidates.contains(&p)) {
                *a = None;
            }
        }
        for p in candidates {
            if room.audio_assign.contains(&Some(p)) {
                continue;
            }
            if let Some(free) = room.audio_assign.iter_mut().find(|a| a.is_none()) {
                *free = Some(p);
            }
        }
        // 3. Last-N ranking and the programme order (speaker first).
        let mut ranking = Vec::new();
        room.speaker.ranking(&mut ranking);
        let cameras: Vec<u64> = room
            .tracks
            .iter()
            .filter_map(|t| self.tracks.get(t))
            .filter(|t| t.kind == MediaKind::Video && t.source == TrackSource::Camera)
            .map(|t| t.owner)
            .collect();
        // The active speaker, then presenters (whoever shares a screen): never cut by last-N.
        let mut keep: Vec<u64> = room.active.into_iter().collect();
        keep.extend(
            room.tracks
                .iter()
                .filter_map(|t| self.tracks.get(t))
                .filter(|t| t.kind == MediaKind::Video && t.source == TrackSource::Screen)
                .map(|t| t.owner),
        );
        let mut forwarded = Vec::new();
        last_n(
            &ranking,
            &cameras,
            self.config.last_n,
            &keep,
            &mut forwarded,
        );
        room.forwarded = forwarded;
        let mut programme = Vec::new();
        last_n(&ranking, &cameras, usize::MAX, &keep, &mut programme);

        // 4. Re-bind every subscriber slot of the room and choose its layer.
        let subscribers: Vec<u64> = room
            .participants
            .iter()
            .filter_map(|p| self.participants.get(p)?.subscribe)
            .collect();
        let mut changes: Vec<LayerChange> = std::mem::take(&mut room.dirty_layers);
        for peer_id in subscribers {
            self.bind_slots(name, peer_id, &programme, now, &mut changes);
        }
        // 5. Dynacast: tell publishers which layers someone watches.
        let mut touched: Vec<u64> = changes.iter().map(|c| c.track).collect();
        touched.sort_unstable();
        touched.dedup();
        for t in touched {
            // Dynacast is about video: a publisher cannot pause a microphone's layers.
            let Some(track) = self.tracks.get(&t).filter(|t| t.kind == MediaKind::Video) else {
                continue;
            };
            let Some(room) = self.rooms.get(name) else {
                return;
            };
            let wanted = room.demand.wanted_layers(t);
            let owner_worker = crate::workers::worker_of(t);
            if owner_worker != self.worker {
                // A piped track: its worker merges our demand with its own and tells the
                // publisher.
                let mask = (0..3).filter(|l| wanted[*l]).fold(0u8, |m, l| m | 1 << l);
                if let Some(tx) = self.pipe_target(owner_worker) {
                    tx.send(super::PipeMsg::Demand {
                        track: t,
                        from: self.worker,
                        layers: mask,
                    });
                }
                continue;
            }
            let layers: Vec<u8> = (0..3u8).filter(|l| wanted[*l as usize]).collect();
            tracing::debug!(track = t, ?layers, "layers_wanted");
            if let Some(owner) = self.participants.get(&track.owner) {
                owner.send(ServerMsg::LayersWanted {
                    track: track_name(t),
                    layers,
                });
            }
        }
    }

    /// Decides what feeds each slot of one subscriber and at which layer.
    fn bind_slots(
        &mut self,
        room_name: &str,
        peer_id: u64,
        programme: &[u64],
        now: Instant,
        changes: &mut Vec<LayerChange>,
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let me = peer.participant;
        // A viewer with a screen m-line gets the screen there and cameras in the programme.
        let cameras_only = peer.opts.screen_slot;
        // Who this subscriber hears in its loudest-audio m-lines: the room's heard talkers
        // but itself. Decided per subscriber because it may have fewer m-lines than the room
        // has slots (WHEP offers one): a talker keeps the m-line it is heard on, freed m-lines
        // take the talkers not heard yet.
        let heard: Vec<u64> = room
            .audio_assign
            .iter()
            .flatten()
            .copied()
            .filter(|p| *p != me)
            .collect();
        let mut audio_for: Vec<Option<u64>> = peer
            .slots
            .iter()
            .map(|s| match s.role {
                SlotRole::Loudest(_) => s
                    .feed
                    .and_then(|t| self.tracks.get(&t))
                    .map(|t| t.owner)
                    .filter(|p| heard.contains(p)),
                _ => None,
            })
            .collect();
        let unheard: Vec<u64> = heard
            .iter()
            .copied()
            .filter(|p| !audio_for.contains(&Some(*p)))
            .collect();
        let mut unheard = unheard.into_iter();
        for (i, s) in peer.slots.iter().enumerate() {
            if matches!(s.role, SlotRole::Loudest(_)) && audio_for[i].is_none() {
                audio_for[i] = unheard.next();
            }
        }
        let mut keyframes: Vec<(u64, usize)> = Vec::new();
        let mut events: Vec<ServerMsg> = Vec::new();
        for (i, slot) in peer.slots.iter_mut().enumerate() {
            // Which track should feed this slot now?
            let want: Option<u64> = match slot.role {
                SlotRole::Idle => None,
                SlotRole::Track(t) => Some(t),
                SlotRole::Loudest(_) => audio_for[i]
                    .and_then(|p| tracks_of(&self.participants, &self.tracks, p, MediaKind::Audio)),
                SlotRole::Speaker(k) => programme
                    .iter()
                    .filter(|p| **p != me)
                    .filter_map(|p| {
                        let t = tracks_of(&self.participants, &self.tracks, *p, MediaKind::Video)?;
                        let screen = self.tracks.get(&t)?.source == TrackSource::Screen;
                        (!(cameras_only && screen)).then_some(t)
                    })
                    .nth(k)
                    .or_else(|| {
                        (k == 0)
                            .then(|| any_video(&self.tracks, &room.tracks, cameras_only))
                            .flatten()
                    }),
                SlotRole::Screen => latest_screen(&self.tracks, &room.tracks),
            };
            // Last-N applies to camera tracks bound by subscription.
            if let SlotRole::Track(t) = slot.role {
                let owner = self.tracks.get(&t).map(|t| (t.owner, t.source, t.kind));
                if let Some((owner, TrackSource::Camera, MediaKind::Video)) = owner {
                    let paused = !room.forwarded.contains(&owner);
                    if paused != slot.paused {
                        slot.paused = paused;
                        let track = track_name(t);
                        events.push(if paused {
                            ServerMsg::Paused { track }
                        } else {
                            ServerMsg::Resumed { track }
                        });
                    }
                }
            }
            let want = if slot.paused { None } else { want };
            let r = SlotRef {
                peer: peer_id,
                slot: i,
            };
            if slot.feed != want {
                if let Some(old) = slot.feed {
                    room.unfeed(old, r);
                }
                if let Some(new) = want {
                    room.feed(new, r);
                }
                slot.feed = want;
                slot.pt_map = None;
                if let SlotRole::Loudest(_) = slot.role {
                    let who = want.and_then(|t| self.tracks.get(&t)).map(|t| t.owner);
                    events.push(ServerMsg::AudioSlot {
                        mid: slot.mid.to_string(),
                        participant: who.map(participant_name),
                    });
                }
            }
        }
        // Split the estimate across the video slots: fixed streams first, upgrades by
        // priority (programme, then simulcast subscriptions), instead of equal shares.
        let mut audio_bps: u64 = 0;
        let mut rates: Vec<[Option<u64>; 3]> = vec![[None; 3]; peer.slots.len()];
        let mut video_at: Vec<usize> = Vec::new();
        let mut video: Vec<VideoSlot> = Vec::new();
        for (i, slot) in peer.slots.iter().enumerate() {
            let Some(track) = slot.feed.and_then(|t| self.tracks.get_mut(&t)) else {
                continue;
            };
            if track.kind != MediaKind::Video {
                audio_bps += AUDIO_BPS;
                continue;
            }
            rates[i] = track.layer_bps(now);
            let priority = match slot.role {
                SlotRole::Speaker(_) => 0,
                _ if rates[i].iter().flatten().count() > 1 => 1,
                _ => 2,
            };
            video_at.push(i);
            video.push(VideoSlot {
                rates: rates[i],
                max_layer: slot.max_layer,
                current: slot.selector.current(),
                priority,
            });
        }
        let alloc = allocate(
            peer.estimate_bps,
            audio_bps,
            &video,
            &LayerConfig::default(),
        );
        let mut budget: Vec<Option<u64>> = vec![None; peer.slots.len()];
        for (i, b) in video_at.iter().zip(&alloc.budgets) {
            budget[*i] = *b;
        }
        for (i, slot) in peer.slots.iter_mut().enumerate() {
            let want = slot.feed;
            // Layer choice and the source the switcher should move to.
            let Some(track) = want.and_then(|t| self.tracks.get_mut(&t)) else {
                slot.switcher.request(None);
                slot.layer = None;
                set_demand(room, slot, slot_key(peer_id, i), None, changes);
                continue;
            };
            let layer = if track.kind == MediaKind::Video {
                slot.selector
                    .choose(now, budget[i], slot.max_layer, &rates[i])
            } else {
                track.layers[0].as_ref().map(|_| 0)
            };
            let ssrc = layer
                .and_then(|l| track.layers[l as usize].as_ref())
                .map(|l| l.ssrc);
            slot.switcher.request(ssrc);
            if layer != slot.layer {
                if slot.layer.is_some() {
                    self.stats.layer_switches += 1;
                }
                tracing::debug!(
                    peer = peer_id,
                    track = want.unwrap_or(0),
                    from = ?slot.layer,
                    to = ?layer,
                    budget = ?budget[i],
                    estimate = ?peer.estimate_bps,
                    rates = ?rates[i],
                    "layer_switch"
                );
                slot.layer = layer;
            }
            // Dynacast must not pause a layer before anyone could choose it (see `wanted_mask`).
            let measured =
                std::array::from_fn(|l| track.layers[l].as_ref().is_some_and(|l| l.measured));
            let mask = wanted_mask(layer, slot.max_layer, track.rids.len(), measured);
            let wanted = want.map(|t| (t, mask)).filter(|(_, m)| *m != 0);
            set_demand(room, slot, slot_key(peer_id, i), wanted, changes);
            if let (Some(pending), Some(l)) = (slot.switcher.pending(), layer) {
                if Some(pending) == ssrc && track.kind == MediaKind::Video {
                    keyframes.push((want.unwrap_or(0), l as usize));
                }
            }
        }
        // Tell BWE what we would like to send so it probes up to it; without this the
        // estimate stays at its start and the pacer holds video back. Only one upgrade step
        // beyond what is chosen: probing toward unreachable layers pads the link.
        let desired = alloc.desired_bps;
        let last = peer.desired_bps;
        if desired > 0 && (desired > last + last / 8 || desired + desired / 8 < last) {
            peer.desired_bps = desired;
            peer.rtc.bwe().set_bitrate(
                str0m::bwe::Bitrate::bps(0),
                str0m::bwe::Bitrate::bps(desired),
            );
        }
        if let Some(p) = self.participants.get(&me) {
            for e in events {
                p.send(e);
            }
        }
        for (t, l) in keyframes {
            self.request_keyframe(t, l, now);
        }
    }
}

/// Moves one slot's dynacast demand to `wanted` (track, layer mask), releasing the track it
/// counted for before when that changed.
fn set_demand(
    room: &mut super::model::Room,
    slot: &mut super::slot::Slot,
    key: u64,
    wanted: Option<(u64, u8)>,
    changes: &mut Vec<LayerChange>,
) {
    if slot.demand == wanted {
        return;
    }
    if let Some((old, _)) = slot.demand {
        if wanted.map(|w| w.0) != Some(old) {
            room.demand.set_layers(key, old, 0, changes);
        }
    }
    if let Some((track, mask)) = wanted {
        room.demand.set_layers(key, track, mask, changes);
    }
    slot.demand = wanted;
}

/// A participant's first track of a kind (camera before screen for video).
fn tracks_of(
    participants: &FxHashMap<u64, Participant>,
    tracks: &FxHashMap<u64, Track>,
    participant: u64,
    kind: MediaKind,
) -> Option<u64> {
    let p = participants.get(&participant)?;
    let mut best = None;
    for t in &p.tracks {
        let Some(tr) = tracks.get(t) else { continue };
        if tr.kind != kind {
            continue;
        }
        if tr.source != TrackSource::Screen {
            return Some(*t);
        }
        best.get_or_insert(*t);
    }
    best
}

fn any_video(
    tracks: &FxHashMap<u64, Track>,
    room_tracks: &[u64],
    cameras_only: bool,
) -> Option<u64> {
    room_tracks.iter().copied().find(|t| {
        tracks.get(t).is_some_and(|t| {
            t.kind == MediaKind::Video && !(cameras_only && t.source == TrackSource::Screen)
        })
    })
}

/// The most recently published screen share of a room.
fn latest_screen(tracks: &FxHashMap<u64, Track>, room_tracks: &[u64]) -> Option<u64> {
    room_tracks.iter().rev().copied().find(|t| {
        tracks
            .get(t)
            .is_some_and(|t| t.kind == MediaKind::Video && t.source == TrackSource::Screen)
    })
}
