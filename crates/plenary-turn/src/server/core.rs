//! [`Server`]: one worker's allocation table, the data paths, and timers.
//! Request handlers live in `requests.rs`.

use super::allocation::{family_of, Allocation};
use super::indication::frame_for_client;
use super::shared::Shared;
use super::*;
use crate::stun::{channel_data, frame_kind, FrameKind, Message};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;

/// What a handler decided, before it is turned into a borrowed [`ClientAction`].
pub(super) enum Outcome {
    Nothing,
    /// A reply of this many bytes was written to the scratch buffer.
    Reply(usize),
    ToPeer {
        relay: RelayHandle,
        peer: SocketAddr,
        payload: Range<usize>,
        dont_fragment: bool,
    },
}

/// The peer a client packet names: an address (Send indication) or a channel.
pub(super) enum PeerRef {
    Addr(SocketAddr),
    Channel(u16),
}

/// One worker's TURN core.
pub struct Server {
    pub(super) shared: Arc<Shared>,
    start: Instant,
    start_unix: u64,
    slots: Vec<Option<Allocation>>,
    free_slots: Vec<u32>,
    pub(super) by_tuple: FxHashMap<FiveTuple, u32>,
    by_relay: FxHashMap<RelayHandle, u32>,
    next_sweep: Instant,
    unauth_window: Instant,
    unauth_in_window: u32,
    txid_state: u64,
    pub(super) stats: Stats,
}

impl Server {
    /// `start`/`start_unix`: a monotonic instant and the Unix time (seconds) at that
    /// instant, so REST credential expiry can be checked without reading a clock.
    pub fn new(shared: Arc<Shared>, start: Instant, start_unix: u64) -> Self {
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&shared.nonce_key[..8]);
        Server {
            shared,
            start,
            start_unix,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_tuple: FxHashMap::default(),
            by_relay: FxHashMap::default(),
            next_sweep: start + Duration::from_secs(1),
            unauth_window: start,
            unauth_in_window: 0,
            txid_state: u64::from_le_bytes(seed) | 1,
            stats: Stats::default(),
        }
    }

    pub(super) fn unix_now(&self, now: Instant) -> u64 {
        self.start_unix + now.saturating_duration_since(self.start).as_secs()
    }

    /// Handles one datagram (UDP) or one frame (TCP/TLS) from a client. `scratch` must be
    /// at least [`SCRATCH_LEN`] bytes; replies are written there.
    pub fn handle_client<'a>(
        &mut self,
        now: Instant,
        from: FiveTuple,
        data: &'a [u8],
        scratch: &'a mut [u8],
        relays: &mut dyn RelayPorts,
    ) -> ClientAction<'a> {
        let outcome = match data.first().map(|b| frame_kind(*b)) {
            Some(FrameKind::ChannelData) => self.client_channel_data(now, from, data),
            Some(FrameKind::Stun) => match Message::parse(data) {
                Ok(msg) => self.client_stun(now, from, &msg, scratch, relays),
                Err(_) => {
                    self.stats.malformed_dropped += 1;
                    Outcome::Nothing
                }
            },
            _ => {
                self.stats.malformed_dropped += 1;
                Outcome::Nothing
            }
        };
        match outcome {
            Outcome::Nothing => ClientAction::None,
            Outcome::Reply(len) => ClientAction::Reply(&scratch[..len]),
            Outcome::ToPeer {
                relay,
                peer,
                payload,
                dont_fragment,
            } => ClientAction::ToPeer {
                relay,
                peer,
                payload: &data[payload],
                dont_fragment,
            },
        }
    }

    fn client_channel_data(&mut self, now: Instant, from: FiveTuple, data: &[u8]) -> Outcome {
        let Some((number, payload)) = channel_data::parse(data) else {
            self.stats.malformed_dropped += 1;
            return Outcome::Nothing;
        };
        let payload = channel_data::HEADER_LEN..channel_data::HEADER_LEN + payload.len();
        self.relay_to_peer(now, from, PeerRef::Channel(number), payload, false)
    }

    /// The shared tail of Send indications and ChannelData: permission, budget, relay.
    pub(super) fn relay_to_peer(
        &mut self,
        now: Instant,
        from: FiveTuple,
        peer: PeerRef,
        payload: Range<usize>,
        dont_fragment: bool,
    ) -> Outcome {
        let Some(&slot) = self.by_tuple.get(&from) else {
            return Outcome::Nothing;
        };
        let Some(alloc) = self.slots[slot as usize].as_mut() else {
            return Outcome::Nothing;
        };
        let peer = match peer {
            PeerRef::Addr(addr) => addr,
            PeerRef::Channel(number) => match alloc.peer_of_channel(number, now) {
                Some(addr) => addr,
                None => return Outcome::Nothing,
            },
        };
        if alloc.expires <= now {
            return Outcome::Nothing;
        }
        let Some(relay) = alloc.relay_for(family_of(&peer)) else {
            return Outcome::Nothing;
        };
        if !alloc.has_permission(peer.ip(), now) {
            self.stats.peer_no_permission_dropped += 1;
            return Outcome::Nothing;
        }
        if !alloc.to_peer_budget.take(payload.len(), now) {
            self.stats.bandwidth_dropped += 1;
            return Outcome::Nothing;
        }
        self.stats.sent_packets += 1;
        self.stats.sent_bytes += payload.len() as u64;
        Outcome::ToPeer {
            relay: relay.handle,
            peer,
            payload,
            dont_fragment,
        }
    }

    /// Handles a datagram that relay socket `relay` received from `peer`. The payload is
    /// `buf[payload]`, with at least [`PEER_HEADROOM`] bytes free before it and
    /// [`PEER_TAILROOM`] after; the core frames it in place.
    pub fn handle_peer<'a>(
        &mut self,
        now: Instant,
        relay: RelayHandle,
        peer: SocketAddr,
        buf: &'a mut [u8],
        payload: Range<usize>,
    ) -> PeerAction<'a> {
        let Some(&slot) = self.by_relay.get(&relay) else {
            return PeerAction::None;
        };
        let Some(alloc) = self.slots[slot as usize].as_mut() else {
            return PeerAction::None;
        };
        if alloc.expires <= now {
            return PeerAction::None;
        }
        if !alloc.has_permission(peer.ip(), now) {
            self.stats.peer_no_permission_dropped += 1;
            return PeerAction::None;
        }
        if !alloc.to_client_budget.take(payload.len(), now) {
            self.stats.bandwidth_dropped += 1;
            return PeerAction::None;
        }
        let channel = alloc.channel_of_peer(peer, now);
        let to = alloc.five_tuple;
        let fingerprint = alloc.fingerprint;
        let payload_len = payload.len() as u64;
        self.txid_state = xorshift(self.txid_state);
        let txid_seed = self.txid_state;
        match frame_for_client(
            buf,
            payload,
            peer,
            channel,
            to.transport,
            fingerprint,
            txid_seed,
        ) {
            Some(frame) => {
                self.stats.received_packets += 1;
                self.stats.received_bytes += payload_len;
                PeerAction::ToClient {
                    to,
                    data: &buf[frame],
                }
            }
            None => {
                self.stats.malformed_dropped += 1;
                PeerAction::None
            }
        }
    }

    /// Unpredictable to clients (seeded from the nonce key), unique enough per worker.
    pub(super) fn next_token(&mut self) -> [u8; 8] {
        self.txid_state = xorshift(self.txid_state);
        self.txid_state.to_le_bytes()
    }

    pub(super) fn allocation(&self, from: &FiveTuple) -> Option<&Allocation> {
        let slot = *self.by_tuple.get(from)?;
        self.slots[slot as usize].as_ref()
    }

    pub(super) fn allocation_mut(&mut self, from: &FiveTuple) -> Option<&mut Allocation> {
        let slot = *self.by_tuple.get(from)?;
        self.slots[slot as usize].as_mut()
    }

    pub(super) fn insert(&mut self, alloc: Allocation) {
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.by_tuple.insert(alloc.five_tuple, slot);
        for relay in alloc.relays.iter().flatten() {
            self.by_relay.insert(relay.handle, slot);
        }
        self.slots[slot as usize] = Some(alloc);
        self.stats.allocations_created += 1;
    }

    pub(super) fn delete(&mut self, from: &FiveTuple, relays: &mut dyn RelayPorts) {
        let Some(slot) = self.by_tuple.remove(from) else {
            return;
        };
        let Some(alloc) = self.slots[slot as usize].take() else {
            return;
        };
        for relay in alloc.relays.iter().flatten() {
            self.by_relay.remove(&relay.handle);
            relays.close(relay.handle);
        }
        self.shared.release(&alloc.quota_user);
        self.free_slots.push(slot);
        self.stats.allocations_deleted += 1;
    }

    /// Whether one more unauthenticated error reply may be sent now (global per worker,
    /// so the limit keeps no per-source state).
    pub(super) fn unauth_reply_allowed(&mut self, now: Instant) -> bool {
        let limit = self.shared.settings.limits.unauthorized_per_sec;
        if limit == 0 {
            return true;
        }
        if now.saturating_duration_since(self.unauth_window) >= Duration::from_secs(1) {
            self.unauth_window = now;
            self.unauth_in_window = 0;
        }
        if self.unauth_in_window >= limit {
            self.stats.unauthorized_dropped_rate += 1;
            return false;
        }
        self.unauth_in_window += 1;
        true
    }

    /// A stream transport closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn client_closed(&mut self, from: FiveTuple, relays: &mut dyn RelayPorts) {
        self.delete(&from, relays);
    }

    /// Expires allocations, permissions and channels due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, relays: &mut dyn RelayPorts) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + Duration::from_secs(1);
        let mut expired = Vec::new();
        for alloc in self.slots.iter_mut().flatten() {
            if alloc.expires <= now {
                expired.push(alloc.five_tuple);
            } else {
                alloc.sweep(now);
            }
        }
        for five_tuple in expired {
            self.delete(&five_tuple, relays);
        }
        for held in self.shared.expire_tokens(now) {
            relays.unhold(held);
        }
    }

    /// When `handle_timeout` next has work to do. Always within a second, since
    /// reservation tokens shared with other workers may need expiring.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_sweep)
    }

    pub fn allocation_count(&self) -> usize {
        self.by_tuple.len()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
