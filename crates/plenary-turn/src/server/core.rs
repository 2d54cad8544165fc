//! [`Server`]: one worker's allocation table plus the request handlers.

use super::*;
use crate::config::TurnConfig;
use std::sync::Arc;

/// State shared by all workers: read-only settings plus atomic quota counters (touched on
/// allocate/delete only, never per packet).
#[derive(Debug)]
pub struct Shared {
    _private: (),
}

/// Settings derived from [`TurnConfig`] once at start.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    _private: (),
}

impl ServerSettings {
    /// `own_addrs`: listening and relay addresses (never relayed to).
    pub fn from_config(config: &TurnConfig, own_addrs: Vec<IpAddr>) -> Self {
        let _ = (config, own_addrs);
        todo!()
    }
}

impl Shared {
    /// `nonce_key`: random bytes from the driver (the core reads no randomness).
    pub fn new(settings: ServerSettings, nonce_key: [u8; 32]) -> Arc<Self> {
        let _ = (settings, nonce_key);
        todo!()
    }
    /// Stop granting new allocations (graceful drain); existing ones keep working.
    pub fn begin_drain(&self) {
        todo!()
    }
    /// Allocations alive across all workers.
    pub fn total_allocations(&self) -> u64 {
        todo!()
    }
}

/// One worker's TURN core.
pub struct Server {
    _shared: Arc<Shared>,
}

impl Server {
    /// `start`/`start_unix`: a monotonic instant and the Unix time (seconds) at that
    /// instant, so REST credential expiry can be checked without reading a clock.
    pub fn new(shared: Arc<Shared>, start: Instant, start_unix: u64) -> Self {
        let _ = (start, start_unix);
        Server { _shared: shared }
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
        let _ = (now, from, data, scratch, relays);
        todo!()
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
        let _ = (now, relay, peer, buf, payload);
        todo!()
    }

    /// A stream transport closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn client_closed(&mut self, from: FiveTuple, relays: &mut dyn RelayPorts) {
        let _ = (from, relays);
        todo!()
    }

    /// Expires allocations, permissions and channels due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, relays: &mut dyn RelayPorts) {
        let _ = (now, relays);
        todo!()
    }

    /// When `handle_timeout` next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    pub fn allocation_count(&self) -> usize {
        todo!()
    }

    pub fn stats(&self) -> &Stats {
        todo!()
    }
}
