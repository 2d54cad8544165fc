//! Commands from HTTP and WebSockets: sessions and participants come and go here. What a
//! joined participant asks for afterwards is in `room_api`.

use std::time::Instant;

use hyper::StatusCode;
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind, Mid, Rids};
use str0m::{Candidate, Rtc, RtcConfig};

use super::model::{order_rids, participant_name, Participant, Room, Track};
use super::peer::{Peer, PeerKind};
use super::slot::{Slot, SlotRole};
use super::MediaLoop;
use crate::signal::{ParticipantInfo, ServerMsg, TrackSource};

/// str0m's sender-report interval on fast-path subscribers: never within a process's life
/// (str0m's clock starts an hour before its first use; the fast path sends the reports).
const NO_STR0M_REPORTS: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);
use crate::{Cmd, RoomCmd};

type HttpErr = (StatusCode, String);

impl MediaLoop {
    pub(super) fn command(&mut self, cmd: Cmd) {
        let room = match &cmd {
            Cmd::Whip { room, .. } | Cmd::Whep { room, .. } => Some(room.clone()),
            Cmd::Room(RoomCmd::Join { room, .. }) => Some(room.clone()),
            _ => None,
        };
        let cmd = match room {
            Some(room) => match self.park_join(&room, cmd) {
                Some(cmd) => cmd,
                None => return,
            },
            None => cmd,
        };
        match cmd {
            Cmd::Whip {
                room,
                offer,
                opts,
                admission,
                reply,
            } => {
                let r = self.http_session(room.clone(), offer, PeerKind::Whip, opts, admission);
                if r.is_err() {
                    self.shared.router.left(&room, self.worker);
                }
                let _ = reply.send(r);
            }
            Cmd::Whep {
                room,
                offer,
                opts,
                admission,
                reply,
            } => {
                let r = self.http_session(room.clone(), offer, PeerKind::Whep, opts, admission);
                if r.is_err() {
                    self.shared.router.left(&room, self.worker);
                }
                let _ = reply.send(r);
            }
            Cmd::Handoff { src, data } => self.datagram(src, &data),
            Cmd::Pipe(msg) => self.pipe(msg),
            Cmd::Rehome { room, url } => {
                self.tell_room(&room, &ServerMsg::Redirect { url });
                self.end_http_sessions(&room);
            }
            Cmd::RoomNodes { room, nodes } => self.tell_room(&room, &ServerMsg::Nodes { nodes }),
            Cmd::Leave { id, reply } => {
                let known = self
                    .participants
                    .get(&id)
                    .is_some_and(|p| p.events.is_none());
                if known {
                    self.remove_participant(id);
                }
                let _ = reply.send(known);
            }
            Cmd::Room(RoomCmd::Join {
                room,
                name,
                events,
                admission,
                reply,
            }) => {
                let r = self.room_join(room.clone(), name, events, admission);
                if r.is_err() {
                    self.shared.router.left(&room, self.worker);
                }
                let _ = reply.send(r);
            }
            Cmd::Room(RoomCmd::Msg { participant, msg }) => self.room_msg(participant, msg),
            Cmd::Room(RoomCmd::Leave { participant }) => self.remove_participant(participant),
            Cmd::Rooms { reply } => {
                let _ = reply.send(self.room_views());
            }
        }
    }

    /// Cascade: tells every local room API participant of `room` (drain, node changes).
    fn tell_room(&self, room: &str, msg: &ServerMsg) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for id in &r.participants {
            if crate::workers::worker_of(*id) != self.worker {
                continue;
            }
            if let Some(p) = self.participants.get(id) {
                p.send(msg.clone());
            }
        }
    }

    /// Drain: WHIP/WHEP clients have no signalling channel, so their sessions end here; they
    /// post again, and this draining node sends them on with a 307.
    fn end_http_sessions(&mut self, room: &str) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let ended: Vec<u64> = r
            .participants
            .iter()
            .copied()
            .filter(|id| crate::workers::worker_of(*id) == self.worker)
            .filter(|id| {
                self.participants
                    .get(id)
                    .is_some_and(|p| p.events.is_none())
            })
            .collect();
        for id in ended {
            tracing::info!(id, room, "drain: WHIP/WHEP session ended for re-homing");
            // RTCP BYE and DTLS close_notify tell the client at once, not after ICE times out.
            let peers = self.participants.get(&id).map(|p| [p.publish, p.subscribe]);
            for peer in peers.into_iter().flatten().flatten() {
                let closed = self.peers.get_mut(&peer).map(|p| p.rtc.close());
                if let Some(Err(e)) = closed {
                    tracing::debug!(peer, "drain: close: {e}");
                }
                self.drain_peer(peer);
            }
            self.remove_participant(id);
        }
    }

    pub(super) fn admit(&self) -> Result<(), HttpErr> {
        if self.shared.draining() {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "sfu is draining; try another node".into(),
            ));
        }
        if self.peers.len() >= self.config.max_peers {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "sfu is full (max-peers)".into(),
            ));
        }
        Ok(())
    }

    /// A new `Rtc`, and for a subscriber on the fast egress path, the slot its SRTP keys
    /// arrive in at `Event::Connected`.
    pub(super) fn new_rtc(
        &self,
        subscriber: bool,
    ) -> Result<(Rtc, Option<plenary_srtp::KeySlot>), HttpErr> {
        let fast = subscriber && self.egress_path == crate::EgressPath::Fast;
        let mut cfg = RtcConfig::new().set_ice_lite(true).set_rtp_mode(true);
        if fast {
            // The fast path sends the sender reports and runs the estimate; str0m's
            // estimator would probe with padding on our SSRCs, and its SRs would carry no
            // packets and RTP time 0. Its stats (NACK and PLI counts) stay.
            cfg = cfg
                .set_rtcp_report_interval_audio(NO_STR0M_REPORTS)
                .set_rtcp_report_interval_video(NO_STR0M_REPORTS)
                .set_stats_interval(Some(std::time::Duration::from_secs(1)));
        } else if subscriber && self.config.bandwidth_estimation {
            cfg = cfg
                .enable_bwe(Some(str0m::bwe::Bitrate::kbps(
                    self.config.initial_estimate_kbps,
                )))
                .set_stats_interval(Some(std::time::Duration::from_secs(1)));
        }
        // The ufrag names this worker, so checks reaching another worker's socket find us.
        let mut creds = str0m::IceCreds::new();
        creds.ufrag = format!(
            "{}{}",
            crate::workers::ufrag_prefix(self.worker),
            creds.ufrag
        );
        let cfg = cfg.set_local_ice_credentials(creds);
        let (mut rtc, keys) = if fast {
            let (rtc, keys) = plenary_srtp::build_rtc(cfg, Instant::now()).map_err(|e| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("srtp key capture: {e}"),
                )
            })?;
            (rtc, Some(keys))
        } else {
            (cfg.build(Instant::now()), None)
        };
        let cand = Candidate::host(self.advertised, "udp")
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("candidate: {e}")))?;
        rtc.add_local_candidate(cand);
        Ok((rtc, keys))
    }

    pub(super) fn room_mut(&mut self, room: &str) -> &mut Room {
        let slots = self.config.audio_slots;
        self.rooms
            .entry(room.to_owned())
            .or_insert_with(|| Room::new(slots))
    }

    /// WHIP or WHEP: one participant with one connection; its id is the resource id.
    fn http_session(
        &mut self,
        room: String,
        offer: SdpOffer,
        kind: PeerKind,
        opts: crate::SessionOpts,
        admission: crate::admission::Admission,
    ) -> Result<(u64, String), HttpErr> {
        self.admit()?;
        let (mut rtc, keys) = self.new_rtc(kind == PeerKind::Whep)?;
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("offer not acceptable: {e}"),
            )
        })?;
        let id = self.new_id();
        let peer_id = self.new_id();
        let publishes = kind == PeerKind::Whip;
        self.participants.insert(
            id,
            Participant {
                name: if publishes { "whip" } else { "whep" }.into(),
                room: room.clone(),
                events: None,
                visible: publishes,
                publish: publishes.then_some(peer_id),
                subscribe: (!publishes).then_some(peer_id),
                tracks: Vec::new(),
                declared: Vec::new(),
            },
        );
        self.room_mut(&room).participants.push(id);
        self.pipe_participant_up(id);
        if publishes {
            self.person_joined(id);
        }
        let mut peer = Peer::new(id, kind, rtc, Instant::now());
        peer.opts = opts;
        peer.admission = Some(admission);
        peer.keys = keys;
        self.peers.insert(peer_id, peer);
        self.drain_peer(peer_id);
        tracing::info!(id, %room, ?kind, ?opts, "session joined");
        Ok((id, answer.to_sdp_string()))
    }

    /// Sends to every other visible room member with events, after the room's pending joins
    /// and leaves (so nobody hears of a track before its owner).
    pub(super) fn announce(&mut self, from: u64, msg: impl Fn(String, String) -> ServerMsg) {
        self.flush_people_of(from);
        let Some(p) = self.participants.get(&from) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let m = msg(participant_name(from), p.name.clone());
        for other in &room.participants {
            if *other != from {
                if let Some(o) = self.participants.get(other) {
                    o.send(m.clone());
                }
            }
        }
    }

    pub(super) fn drain_peer(&mut self, peer: u64) {
        let mut dead = std::mem::take(&mut self.dead);
        dead.clear();
        self.after_input(peer, Instant::now(), &mut dead);
        for id in &dead {
            self.peer_died(*id);
        }
        self.dead = dead;
    }

    fn room_join(
        &mut self,
        room: String,
        name: String,
        events: super::model::EventTx,
        admission: crate::admission::Admission,
    ) -> Result<u64, String> {
        self.admit().map_err(|(_, m)| m)?;
        let id = self.new_id();
        let name: String = name.chars().take(64).collect();
        let others: Vec<ParticipantInfo> = self
            .rooms
            .get(&room)
            .map(|r| {
                r.participants
                    .iter()
                    .filter_map(|p| Some((*p, self.participants.get(p)?)))
                    .filter(|(_, p)| p.visible)
                    .map(|(pid, p)| ParticipantInfo {
                        id: participant_name(pid),
                        name: p.name.clone(),
                        tracks: p
                            .tracks
                            .iter()
                            .filter_map(|t| Some(self.tracks.get(t)?.info(*t)))
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let ice_servers = self
            .config
            .ice_servers
            .as_ref()
            .map(|c| crate::token::ice_servers(c, crate::unix_now()))
            .unwrap_or_default();
        let _ = events.try_send(ServerMsg::Joined {
            participant: participant_name(id),
            participants: others,
            audio_slots: self.config.audio_slots,
            ice_servers,
            nodes: self
                .shared
                .cascade
                .as_ref()
                .map(|c| c.room_urls(&room))
                .unwrap_or_default(),
        });
        self.participants.insert(
            id,
            Participant {
                name,
                room: room.clone(),
                events: Some(events),
                visible: true,
                publish: None,
                subscribe: None,
                tracks: Vec::new(),
                declared: Vec::new(),
            },
        );
        self.room_mut(&room).participants.push(id);
        self.pipe_participant_up(id);
        self.person_joined(id);
        // The subscribe connection starts with the audio slots, offered by us.
        let (rtc, keys) = self.new_rtc(true).map_err(|(_, m)| m)?;
        let peer_id = self.new_id();
        let mut peer = Peer::new(id, PeerKind::Subscribe, rtc, Instant::now());
        peer.keys = keys;
        peer.admission = Some(admission);
        self.peers.insert(peer_id, peer);
        if let Some(p) = self.participants.get_mut(&id) {
            p.subscribe = Some(peer_id);
        }
        let slots = self.config.audio_slots;
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            let mut api = peer.rtc.sdp_api();
            let mids: Vec<Mid> = (0..slots)
                .map(|_| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None))
                .collect();
            for (k, mid) in mids.iter().enumerate() {
                peer.slots
                    .push(Slot::new(*mid, MediaKind::Audio, SlotRole::Loudest(k), 0));
            }
            if let Some((offer, pending)) = api.apply() {
                peer.pending_offer = Some(pending);
                self.send_offer(id, peer_id, offer);
            }
        }
        tracing::info!(id, %room, "room participant joined");
        Ok(id)
    }

    pub(super) fn connected(&mut self, peer: u64) {
        // A new subscriber needs keyframes for everything it is about to receive.
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let wants: Vec<(u64, u8)> = p
            .slots
            .iter()
            .filter_map(|s| Some((s.feed?, s.layer?)))
            .collect();
        let now = Instant::now();
        for (t, l) in wants {
            self.request_keyframe(t, l as usize, now);
        }
        self.next_policy = now;
    }

    pub(super) fn media_added(&mut self, peer_id: u64, mid: Mid, kind: MediaKind) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let owner = peer.participant;
        let opts = peer.opts;
        if peer.kind.publishes() {
            if self.track_by_mid.contains_key(&(peer_id, mid)) {
                return;
            }
            let rids = match peer.rtc.media(mid).map(|m| m.rids_rx()) {
                Some(Rids::Specific(r)) => order_rids(r.clone()),
                _ => Vec::new(),
            };
            let declared = self.participants.get(&owner).and_then(|p| {
                p.declared
                    .iter()
                    .find(|(m, _)| *m == mid.to_string())
                    .map(|(_, s)| *s)
            });
            let source = declared.unwrap_or(match kind {
                MediaKind::Audio => TrackSource::Microphone,
                MediaKind::Video if opts.screen_source => TrackSource::Screen,
                MediaKind::Video => TrackSource::Camera,
            });
            let id = self.new_id();
            let mut t = Track::new(owner, peer_id, mid, kind, source);
            t.rids = rids;
            t.pipe_to = self
                .participants
                .get(&owner)
                .and_then(|p| self.rooms.get(&p.room))
                .map_or(0, |r| r.others);
            let info = t.info(id);
            self.tracks.insert(id, t);
            self.track_by_mid.insert((peer_id, mid), id);
            if let Some(p) = self.participants.get_mut(&owner) {
                p.tracks.push(id);
                let room = p.room.clone();
                self.room_mut(&room).tracks.push(id);
                self.shared.router.notify(crate::workers::RoomEvent::Track {
                    room,
                    track: crate::media::model::track_name(id),
                    up: true,
                });
            }
            self.pipe_track_up(id);
            self.announce(owner, |pid, _| ServerMsg::TrackPublished {
                participant: pid,
                track: info.clone(),
            });
            // The publisher learns its own track ids too (for `layers_wanted`).
            if let Some(p) = self.participants.get(&owner) {
                p.send(ServerMsg::TrackPublished {
                    participant: participant_name(owner),
                    track: info,
                });
            }
            tracing::debug!(track = id, %mid, ?kind, "track published");
        } else if peer.kind == PeerKind::Whep {
            let rank = peer.slots.iter().filter(|s| s.kind == kind).count();
            let role = match kind {
                MediaKind::Audio => SlotRole::Loudest(rank),
                // With a screen slot, the second video m-line is the screen.
                MediaKind::Video if opts.screen_slot && rank == 1 => SlotRole::Screen,
                MediaKind::Video if opts.screen_slot && rank > 1 => SlotRole::Speaker(rank - 1),
                MediaKind::Video => SlotRole::Speaker(rank),
            };
            peer.slots.push(Slot::new(mid, kind, role, 2));
        }
        self.next_policy = Instant::now();
    }

    /// Removes a participant, its connections, tracks and slots, and tells the room.
    pub(super) fn remove_participant(&mut self, id: u64) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        // A remote participant's own worker tells the others; only local ones are ours to tell.
        let local = crate::workers::worker_of(id) == self.worker;
        if local {
            self.pipe_room(&p.room.clone(), || {
                Some(super::PipeMsg::ParticipantDown { id })
            });
        }
        if p.visible {
            self.person_left(id);
        }
        let Some(p) = self.participants.remove(&id) else {
            return;
        };
        let room_name = p.room.clone();
        for t in &p.tracks {
            if local {
                self.shared.router.notify(crate::workers::RoomEvent::Track {
                    room: room_name.clone(),
                    track: crate::media::model::track_name(*t),
                    up: false,
                });
            }
            if let Some(track) = self.tracks.remove(t) {
                self.track_by_mid.remove(&(track.peer, track.mid));
                let info = track.info(*t);
                if let Some(room) = self.rooms.get(&room_name) {
                    for other in &room.participants {
                        if let Some(o) = self.participants.get(other) {
                            o.send(ServerMsg::TrackUnpublished {
                                participant: participant_name(id),
                                track: info.clone(),
                            });
                        }
                    }
                }
            }
        }
        if local {
            self.shared.router.left(&room_name, self.worker);
        }
        for peer_id in [p.publish, p.subscribe].into_iter().flatten() {
            if let Some(peer) = self.peers.get(&peer_id).filter(|pe| !pe.connected) {
                let address_seen = self.by_addr.values().any(|v| *v == peer_id);
                // Where it stopped: ICE had found the client's address, or DTLS had begun.
                let stage = if address_seen || peer.dtls_rx > 0 {
                    "dtls"
                } else {
                    "ice"
                };
                metrics::counter!("plenary_sfu_peers_not_connected_total", "stage" => stage)
                    .increment(1);
                tracing::info!(
                    peer = peer_id,
                    participant = id,
                    kind = ?peer.kind,
                    ice = ?peer.ice,
                    address_seen,
                    offer_pending = peer.pending_offer.is_some(),
                    dtls_tx = peer.dtls_tx,
                    dtls_rx = peer.dtls_rx,
                    send_errors = peer.send_errors,
                    age_ms = peer.created.elapsed().as_millis() as u64,
                    "peer leaves without having connected"
                );
            }
            if let Some(mut peer) = self.peers.remove(&peer_id) {
                peer.rtc.disconnect();
                if let Some(c) = peer.conn.take() {
                    self.to_disconnect.push(c.token);
                }
            }
            let shared = self.shared.clone();
            let mut claims = shared.claims.lock().unwrap_or_else(|e| e.into_inner());
            self.by_addr.retain(|addr, v| {
                let keep = *v != peer_id;
                if !keep {
                    claims.remove(addr);
                }
                keep
            });
            drop(claims);
        }
        let mut empty = false;
        if let Some(room) = self.rooms.get_mut(&room_name) {
            room.participants.retain(|x| *x != id);
            room.tracks.retain(|t| !p.tracks.contains(t));
            room.speaker.remove(id);
            for t in &p.tracks {
                room.feeds.remove(t);
                room.demand.remove_track(*t);
            }
            for peer_id in [p.publish, p.subscribe].into_iter().flatten() {
                for v in room.feeds.values_mut() {
                    v.retain(|r| r.peer != peer_id);
                }
                for i in 0..256 {
                    room.demand
                        .remove_subscriber(slot_key(peer_id, i), &mut room.dirty_layers);
                }
            }
            for a in room.audio_assign.iter_mut() {
                if *a == Some(id) {
                    *a = None;
                }
            }
            empty = room.participants.is_empty();
        }
        // Slots elsewhere that were fed by the removed tracks.
        for peer in self.peers.values_mut() {
            for s in peer.slots.iter_mut() {
                if s.feed.is_some_and(|f| p.tracks.contains(&f)) {
                    s.feed = None;
                    s.layer = None;
                    s.switcher.request(None);
                }
            }
        }
        if empty {
            self.rooms.remove(&room_name);
        }
        self.next_policy = Instant::now();
        tracing::info!(id, room = %room_name, "participant left");
    }
}

/// Demand key of one subscriber slot.
pub(super) fn slot_key(peer: u64, slot: usize) -> u64 {
    (peer << 8) | (slot as u64 & 0xff)
}
