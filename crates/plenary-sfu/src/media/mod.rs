//! The media worker: one UDP socket, every str0m `Rtc`, the rooms and the forwarding.
//!
//! Split by job: `control` (commands from HTTP and WebSockets), `forward` (per packet),
//! `policy` (the periodic pass: speakers, last-N, layers, dynacast), `stats` (metrics).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use str0m::net::{Protocol, Receive};
use str0m::Input;

use crate::{Cmd, SfuConfig, Shared, CONNECT_TIMEOUT, MAX_WAIT};

mod control;
pub(crate) mod egress;
mod fast;
mod forward;
pub(crate) mod io;
mod listing;
pub(crate) mod model;
mod peer;
mod people;
mod pipe;
mod policy;
mod room_api;
mod slot;
mod stats;

pub(crate) use model::EVENT_QUEUE;
use model::{Participant, Room, Track};
use peer::{Peer, PeerEvent};
pub(crate) use pipe::{LinkTx, PipeMsg, TrackUp};
use stats::Stats;

/// Debug logs about bad input, at most 10 a second per kind, so that a flood of one kind
/// cannot hide the other's cause.
static LOG_LIMIT: plenary_ops::ratelimit::LogLimiter<2> =
    plenary_ops::ratelimit::LogLimiter::new(10);
/// Log kinds: datagrams on the media port, and room API messages the worker refuses.
const LOG_DATAGRAM: usize = 0;
const LOG_ROOM_API: usize = 1;

/// How often speakers, last-N, layers and dynacast are re-decided.
const POLICY_INTERVAL: Duration = Duration::from_millis(200);

pub(crate) struct MediaLoop {
    worker: usize,
    /// The shared socket, for sending to peers without a connected socket yet.
    sock: UdpSocket,
    /// Receiving side; taken out while the loop runs so reads can call back into `self`.
    io: Option<io::Io>,
    /// Peers seen at a new address: connect a socket to it after the read pass.
    to_connect: Vec<(u64, SocketAddr)>,
    /// Connected sockets of removed peers, to deregister after the read pass.
    to_disconnect: Vec<mio::Token>,
    /// Joins waiting for a room's sync from other workers (see `pipe`).
    parked: Vec<Cmd>,
    parked_since: Option<Instant>,
    /// Where peers send to; used as the `Receive` destination so it matches our candidate.
    advertised: SocketAddr,
    cmds: mpsc::Receiver<Cmd>,
    /// Cascade links, by slot (pseudo worker `LINK_BASE + slot`).
    links: Vec<Option<pipe::LinkTx>>,
    config: SfuConfig,
    /// The config's egress path after the `PLENARY_SFU_EGRESS` override.
    egress_path: crate::EgressPath,
    /// Fast egress path: forwarded RTP, RTX and sender reports. Forwarded RTP is flushed
    /// once per worker pass, grouped by subscriber (GSO runs), or per fan-out.
    batch: plenary_srtp::batch::SendBatch,
    /// Flush forwarded RTP once per pass (default) rather than at the end of each fan-out.
    send_per_pass: bool,
    /// Fast-path subscribers with paced video waiting.
    paced: Vec<u64>,
    shared: std::sync::Arc<Shared>,
    peers: FxHashMap<u64, Peer>,
    participants: FxHashMap<u64, Participant>,
    tracks: FxHashMap<u64, Track>,
    rooms: HashMap<String, Room>,
    /// (publishing peer, mid) → track.
    track_by_mid: HashMap<(u64, str0m::media::Mid), u64>,
    by_addr: FxHashMap<SocketAddr, u64>,
    next_id: u64,
    next_policy: Instant,
    /// Earliest time a room's joins and leaves are due to its members.
    people_due: Option<Instant>,
    stats: Stats,
    // Reused so the steady state does not allocate.
    events: Vec<PeerEvent>,
    sub_events: Vec<PeerEvent>,
    fan: Vec<model::SlotRef>,
    due: Vec<u64>,
    dead: Vec<u64>,
}

impl MediaLoop {
    pub(crate) fn new(
        worker: usize,
        sock: UdpSocket,
        local: SocketAddr,
        advertised: SocketAddr,
        cmds: mpsc::Receiver<Cmd>,
        config: SfuConfig,
        shared: std::sync::Arc<Shared>,
    ) -> std::io::Result<Self> {
        let send = sock.try_clone()?;
        let io = io::Io::new(sock, local)?;
        shared.router.set_waker(worker, io.waker()?);
        let send_per_pass = fast::send_per_pass();
        Ok(Self {
            worker,
            sock: send,
            io: Some(io),
            to_connect: Vec::new(),
            to_disconnect: Vec::new(),
            parked: Vec::new(),
            parked_since: None,
            advertised,
            cmds,
            links: vec![None; crate::workers::MAX_LINKS],
            egress_path: config.egress_path.with_env_override(),
            batch: fast::new_batch(send_per_pass),
            send_per_pass,
            paced: Vec::new(),
            config,
            shared,
            peers: FxHashMap::default(),
            participants: FxHashMap::default(),
            tracks: FxHashMap::default(),
            rooms: HashMap::new(),
            track_by_mid: HashMap::new(),
            by_addr: FxHashMap::default(),
            next_id: 1,
            next_policy: Instant::now(),
            people_due: None,
            stats: Stats::default(),
            events: Vec::with_capacity(64),
            sub_events: Vec::with_capacity(16),
            fan: Vec::with_capacity(512),
            due: Vec::with_capacity(512),
            dead: Vec::with_capacity(16),
        })
    }

    /// Ids carry the worker in their low byte (see `workers`).
    fn new_id(&mut self) -> u64 {
        let id = (self.next_id << crate::workers::WORKER_BITS) | self.worker as u64;
        self.next_id += 1;
        id
    }

    pub(crate) fn run(mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 2048];
        let Some(mut io) = self.io.take() else { return };
        while !stop.load(Ordering::Relaxed) {
            self.shared.router.draining(self.worker);
            while let Ok(cmd) = self.cmds.try_recv() {
                self.command(cmd);
            }
            // Hand-offs may have taught us new addresses: connect before waiting.
            self.connect_pending(&mut io);
            let now = Instant::now();
            self.timers(now);
            self.fast_reports(now);
            self.fast_paced(now);
            self.flush_people(now);
            if now >= self.next_policy {
                self.policy(now);
                let me = self.worker;
                let local_tracks = self
                    .tracks
                    .keys()
                    .filter(|t| crate::workers::worker_of(**t) == me)
                    .count();
                self.stats.publish(me, self.peers.len(), local_tracks);
                self.unpark_stuck(now);
                if let Some(n) = self.shared.peers.get(self.worker) {
                    n.store(self.peers.len(), Ordering::Relaxed);
                }
                self.next_policy = now + POLICY_INTERVAL;
            }
            let next = self
                .peers
                .values()
                .map(|s| s.next_timeout)
                .min()
                .unwrap_or(self.next_policy)
                .min(self.next_policy)
                .min(self.people_due.unwrap_or(self.next_policy));
            // Paced video waiting: come back within a millisecond.
            let next = if self.paced.is_empty() {
                next
            } else {
                next.min(now + Duration::from_millis(1))
            };
            let wait = next
                .saturating_duration_since(now)
                .clamp(Duration::from_micros(200), MAX_WAIT);
            let ready = io.wait(wait);
            for &token in &ready {
                io.read(token, &mut buf, |_, src, data| self.datagram(src, data));
            }
            // The pass's forwarded RTP: one sendmmsg, each subscriber's packets a GSO run.
            self.flush_egress();
            io.give_back(ready);
            self.stats.strays += io.take_strays();
            self.connect_pending(&mut io);
            for token in self.to_disconnect.drain(..) {
                io.disconnect(token);
            }
        }
        // Tell the remaining clients, so they need not wait for ICE timeouts.
        let ids: Vec<u64> = self.participants.keys().copied().collect();
        for id in ids {
            self.remove_participant(id);
        }
    }

    /// Opens the connected sockets for addresses learned since the last call.
    fn connect_pending(&mut self, io: &mut io::Io) {
        for (peer, remote) in self.to_connect.drain(..) {
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            if p.conn.is_some() {
                continue;
            }
            match io.connect(peer, remote) {
                Ok(c) => p.conn = Some(c),
                Err(e) => tracing::debug!(peer, %remote, "no connected socket: {e}"),
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        let mut dead = std::mem::take(&mut self.dead);
        dead.clear();
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        due.extend(
            self.peers
                .iter()
                .filter(|(_, p)| {
                    p.next_timeout <= now
                        || (!p.connected && now.duration_since(p.created) > CONNECT_TIMEOUT)
                })
                .map(|(id, _)| *id),
        );
        for &id in &due {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            if !p.connected && now.duration_since(p.created) > CONNECT_TIMEOUT {
                tracing::info!(
                    peer = id,
                    participant = p.participant,
                    kind = ?p.kind,
                    ice = ?p.ice,
                    address_seen = p.conn.is_some(),
                    dtls_tx = p.dtls_tx,
                    dtls_rx = p.dtls_rx,
                    send_errors = p.send_errors,
                    "peer did not connect within {CONNECT_TIMEOUT:?}; dropping its participant"
                );
                dead.push(id);
                continue;
            }
            let _ = p.rtc.handle_input(Input::Timeout(now));
            self.after_input(id, now, &mut dead);
        }
        self.due = due;
        for id in &dead {
            self.peer_died(*id);
        }
        self.dead = dead;
    }

    fn datagram(&mut self, src: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        let Ok(recv) = Receive::new(Protocol::Udp, src, self.advertised, data) else {
            self.stats.dropped_malformed += 1;
            plenary_ops::limited_debug!(
                LOG_LIMIT,
                LOG_DATAGRAM,
                "sfu: {} bytes from {src} are not STUN, DTLS, RTP or RTCP",
                data.len()
            );
            return;
        };
        let input = Input::Receive(now, recv);
        // Known source first; otherwise ask each Rtc (STUN ufrag) and remember the answer.
        let id = match self.by_addr.get(&src) {
            Some(&id) => id,
            None => {
                let Some(id) = self
                    .peers
                    .iter()
                    .find(|(_, s)| s.rtc.accepts(&input))
                    .map(|(id, _)| *id)
                else {
                    self.not_mine(src, data);
                    return;
                };
                self.by_addr.insert(src, id);
                self.claims().insert(src, self.worker);
                self.to_connect.push((id, src));
                id
            }
        };
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let fast_rtcp = p.fast.is_some() && plenary_srtp::rtp::is_rtcp(data);
        if fast_rtcp {
            // A copy: str0m still gets the original, for PLI/FIR.
            self.fast_rtcp(id, data, now);
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let handshaking = !p.connected && crate::dtls_trace::is_dtls(data);
        if handshaking {
            p.dtls_rx += 1;
            tracing::debug!(target: "plenary_sfu::dtls", peer = id, %src,
                rx = %crate::dtls_trace::DtlsRecords(data));
        }
        if let Err(e) = p.rtc.handle_input(input) {
            if handshaking {
                tracing::debug!(target: "plenary_sfu::dtls", peer = id, "refused: {e}");
            }
            self.stats.dropped_malformed += 1;
            plenary_ops::limited_debug!(
                LOG_LIMIT,
                LOG_DATAGRAM,
                "sfu: input from {src} refused: {e}"
            );
            return;
        }
        let mut dead = std::mem::take(&mut self.dead);
        dead.clear();
        self.after_input(id, now, &mut dead);
        if fast_rtcp {
            self.fast_after_rtcp(id, now);
        }
        for id in &dead {
            self.peer_died(*id);
        }
        self.dead = dead;
    }

    /// Drains a peer after input and acts on what it reported.
    fn after_input(&mut self, id: u64, now: Instant, dead: &mut Vec<u64>) {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let alive = match self.peers.get_mut(&id) {
            Some(p) => p.drain(&self.sock, &mut events, now),
            None => true,
        };
        for ev in events.drain(..) {
            match ev {
                PeerEvent::Rtp(mid, rid, pkt) => self.forward(id, mid, rid, pkt, now),
                PeerEvent::Connected => self.connected(id),
                PeerEvent::MediaAdded(mid, kind) => self.media_added(id, mid, kind),
                PeerEvent::KeyframeRequest(mid) => self.keyframe_for_slot(id, mid, now),
                PeerEvent::EgressStats(mid, nacks, plis) => {
                    if let Some(slot) = self.peers.get_mut(&id).and_then(|p| p.slot_by_mid(mid)) {
                        self.stats.nacks_received += nacks.saturating_sub(slot.nacks_seen);
                        self.stats.plis_received += plis.saturating_sub(slot.plis_seen);
                        slot.nacks_seen = nacks;
                        slot.plis_seen = plis;
                    }
                }
                PeerEvent::Estimate(bps) => {
                    metrics::histogram!("plenary_sfu_subscriber_estimate_bps").record(bps as f64);
                    // A fast-path subscriber's estimate is its own (`fast_after_rtcp`).
                    if let Some(p) = self.peers.get_mut(&id).filter(|p| p.fast.is_none()) {
                        p.estimate_bps = Some(bps);
                    }
                }
            }
        }
        self.events = events;
        if !alive {
            dead.push(id);
        }
    }

    pub(super) fn claims(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<SocketAddr, usize>> {
        self.shared.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A datagram from an unknown address: another worker's peer (hand it over), or noise.
    fn not_mine(&mut self, src: SocketAddr, data: &[u8]) {
        let owner = io::stun_owner(data).or_else(|| self.claims().get(&src).copied());
        match owner {
            Some(w) if w != self.worker => {
                if let Some(tx) = self.shared.router.worker(w) {
                    // Rare: only until the peer's connected socket exists.
                    self.shared.handoffs.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(Cmd::Handoff {
                        src,
                        data: data.to_vec(),
                    });
                    return;
                }
                self.stats.dropped_unknown += 1;
            }
            _ => {
                self.stats.dropped_unknown += 1;
                plenary_ops::limited_debug!(
                    LOG_LIMIT,
                    LOG_DATAGRAM,
                    "sfu: {} bytes from {src}, which is no peer's address and no ICE check for one",
                    data.len()
                );
            }
        }
    }

    fn peer_died(&mut self, id: u64) {
        let Some(p) = self.peers.get(&id) else { return };
        let participant = p.participant;
        // A dead media connection ends the whole participant: the client must rejoin.
        self.remove_participant(participant);
    }
}
