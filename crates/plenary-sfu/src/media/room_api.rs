//! The room API's messages from a joined participant: publish, subscribe, set_layer,
//! answer, and the renegotiation of its subscribe connection.

use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::Direction;

use super::control::slot_key;
use super::model::{kind_name, parse_id, track_name, SlotRef};
use super::peer::{Peer, PeerKind};
use super::slot::{Slot, SlotRole};
use super::MediaLoop;
use crate::http::sdp_error;
use crate::signal::{ClientMsg, ServerMsg, SlotInfo};

/// m-lines on one subscribe connection; unsubscribed ones stay (str0m does not remove them).
const MAX_SLOTS: usize = 128;

impl MediaLoop {
    pub(super) fn send_offer(&self, participant: u64, peer: u64, offer: SdpOffer) {
        let (Some(p), Some(pe)) = (self.participants.get(&participant), self.peers.get(&peer))
        else {
            return;
        };
        let slots = pe
            .slots
            .iter()
            .map(|s| SlotInfo {
                mid: s.mid.to_string(),
                kind: kind_name(s.kind).into(),
                track: match s.role {
                    SlotRole::Track(t) => Some(track_name(t)),
                    _ => None,
                },
            })
            .collect();
        p.send(ServerMsg::Offer {
            sdp: offer.to_sdp_string(),
            slots,
        });
    }

    pub(super) fn error_to(&self, participant: u64, message: String) {
        plenary_ops::limited_debug!(
            super::LOG_LIMIT,
            super::LOG_ROOM_API,
            "sfu: room API error to participant {participant}: {message}"
        );
        if let Some(p) = self.participants.get(&participant) {
            p.send(ServerMsg::Error { message });
        }
    }

    pub(super) fn room_msg(&mut self, id: u64, msg: ClientMsg) {
        if !self.participants.contains_key(&id) {
            return;
        }
        match msg {
            ClientMsg::Join { .. } => self.error_to(id, "already joined".into()),
            ClientMsg::Leave => self.remove_participant(id),
            ClientMsg::Publish { sdp, tracks } => self.room_publish(id, &sdp, tracks),
            ClientMsg::Answer { sdp } => self.room_answer(id, &sdp),
            ClientMsg::Subscribe { tracks } => {
                let wanted: Vec<(u64, u8)> = tracks
                    .iter()
                    .filter_map(|t| Some((parse_id(&t.track, 't')?, t.max_layer.unwrap_or(2))))
                    .collect();
                if wanted.len() != tracks.len() {
                    self.error_to(id, "subscribe: unknown track id".into());
                }
                self.room_subscribe(id, &wanted);
            }
            ClientMsg::Unsubscribe { tracks } => {
                for t in tracks.iter().filter_map(|t| parse_id(t, 't')) {
                    self.set_slot_role_for_track(id, t, None);
                }
            }
            ClientMsg::SetLayer { track, max_layer } => {
                let Some(t) = parse_id(&track, 't') else {
                    return self.error_to(id, "set_layer: unknown track id".into());
                };
                self.set_slot_role_for_track(id, t, Some(max_layer.min(2)));
            }
        }
    }

    fn room_publish(&mut self, id: u64, sdp: &str, tracks: Vec<crate::signal::PublishTrack>) {
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(o) => o,
            Err(e) => {
                return self.error_to(
                    id,
                    format!("publish: unparsable SDP offer: {}", sdp_error(&e)),
                )
            }
        };
        if let Some(p) = self.participants.get_mut(&id) {
            for t in &tracks {
                if let Some(src) = t.source {
                    p.declared.retain(|(m, _)| *m != t.mid);
                    p.declared.push((t.mid.clone(), src));
                }
            }
        }
        let existing = self.participants.get(&id).and_then(|p| p.publish);
        let peer_id = match existing {
            Some(pid) => pid,
            None => {
                if let Err((_, m)) = self.admit() {
                    return self.error_to(id, m);
                }
                let rtc = match self.new_rtc(false) {
                    Ok((r, _)) => r,
                    Err((_, m)) => return self.error_to(id, m),
                };
                let pid = self.new_id();
                self.peers
                    .insert(pid, Peer::new(id, PeerKind::Publish, rtc, Instant::now()));
                if let Some(p) = self.participants.get_mut(&id) {
                    p.publish = Some(pid);
                }
                pid
            }
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        match peer.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => {
                if let Some(p) = self.participants.get(&id) {
                    p.send(ServerMsg::PublishAnswer {
                        sdp: answer.to_sdp_string(),
                    });
                }
                self.drain_peer(peer_id);
            }
            Err(e) => self.error_to(id, format!("publish: offer not acceptable: {e}")),
        }
    }

    fn room_answer(&mut self, id: u64, sdp: &str) {
        let Some(peer_id) = self.participants.get(&id).and_then(|p| p.subscribe) else {
            return;
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                return self.error_to(id, format!("answer: unparsable SDP: {}", sdp_error(&e)))
            }
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Some(pending) = peer.pending_offer.take() else {
            return self.error_to(id, "answer: no offer is outstanding".into());
        };
        if let Err(e) = peer.rtc.sdp_api().accept_answer(pending, answer) {
            return self.error_to(id, format!("answer not acceptable: {e}"));
        }
        // Slots may have been re-fed (e.g. audio) before the answer; recompute their PTs.
        for s in peer.slots.iter_mut() {
            s.pt_map = None;
        }
        let again = std::mem::take(&mut peer.renegotiate);
        self.drain_peer(peer_id);
        // New m-lines can carry media now: bind them and ask for their keyframes at once.
        self.next_policy = Instant::now();
        if again {
            self.renegotiate(id);
        }
    }

    /// Adds video/audio m-lines for tracks the participant is not yet receiving.
    fn room_subscribe(&mut self, id: u64, wanted: &[(u64, u8)]) {
        let Some(peer_id) = self.participants.get(&id).and_then(|p| p.subscribe) else {
            return;
        };
        let room_name = match self.participants.get(&id) {
            Some(p) => p.room.clone(),
            None => return,
        };
        let mut added = false;
        for &(track, max_layer) in wanted {
            let Some(t) = self.tracks.get(&track) else {
                self.error_to(id, format!("subscribe: no track {}", track_name(track)));
                continue;
            };
            let same_room = self
                .participants
                .get(&t.owner)
                .is_some_and(|o| o.room == room_name);
            if !same_room || t.owner == id {
                self.error_to(
                    id,
                    format!("subscribe: track {} is not in reach", track_name(track)),
                );
                continue;
            }
            let kind = t.kind;
            let Some(peer) = self.peers.get_mut(&peer_id) else {
                return;
            };
            let role = SlotRole::Track(track);
            if peer.slots.iter().any(|s| s.role == role) || peer.queued.iter().any(|q| q.1 == role)
            {
                continue;
            }
            if peer.slots.len() + peer.queued.len() >= MAX_SLOTS {
                self.error_to(
                    id,
                    format!("subscribe: at most {MAX_SLOTS} m-lines per connection"),
                );
                break;
            }
            peer.queued.push((kind, role, max_layer));
            added = true;
        }
        if added {
            self.renegotiate(id);
        }
        self.next_policy = Instant::now();
    }

    /// Re-offers the subscribe connection (new m-lines, or new slot bindings).
    pub(super) fn renegotiate(&mut self, id: u64) {
        let Some(peer_id) = self.participants.get(&id).and_then(|p| p.subscribe) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if peer.pending_offer.is_some() {
            peer.renegotiate = true;
            return;
        }
        let Peer {
            rtc, slots, queued, ..
        } = peer;
        let mut api = rtc.sdp_api();
        for (kind, role, max_layer) in queued.drain(..) {
            let mid = api.add_media(kind, Direction::SendOnly, None, None, None);
            slots.push(Slot::new(mid, kind, role, max_layer));
        }
        if let Some((offer, pending)) = api.apply() {
            peer.pending_offer = Some(pending);
            self.send_offer(id, peer_id, offer);
        }
    }

    /// Unsubscribe (`max_layer` None) or change the wanted layer of a track's slot.
    fn set_slot_role_for_track(&mut self, id: u64, track: u64, max_layer: Option<u8>) {
        let Some(peer_id) = self.participants.get(&id).and_then(|p| p.subscribe) else {
            return;
        };
        let Some(room_name) = self.participants.get(&id).map(|p| p.room.clone()) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if let Some(q) = peer
            .queued
            .iter_mut()
            .find(|q| q.1 == SlotRole::Track(track))
        {
            match max_layer {
                Some(l) => q.2 = l,
                None => peer.queued.retain(|q| q.1 != SlotRole::Track(track)),
            }
            return;
        }
        let Some(i) = peer
            .slots
            .iter()
            .position(|s| s.role == SlotRole::Track(track))
        else {
            return;
        };
        match max_layer {
            Some(l) => peer.slots[i].max_layer = l,
            None => {
                let slot = &mut peer.slots[i];
                slot.role = SlotRole::Idle;
                slot.switcher.request(None);
                let feed = slot.feed.take();
                slot.layer = None;
                if let (Some(t), Some(room)) = (feed, self.rooms.get_mut(&room_name)) {
                    room.unfeed(
                        t,
                        SlotRef {
                            peer: peer_id,
                            slot: i,
                        },
                    );
                    room.demand
                        .set(slot_key(peer_id, i), t, None, &mut room.dirty_layers);
                    slot.demand = None;
                }
            }
        }
        self.next_policy = Instant::now();
    }
}
