//! The sans-IO TURN server core. It takes `(now, 5-tuple, bytes)` and returns what to
//! send; it opens no sockets and reads no clock. Relay sockets are opened through the
//! [`RelayPorts`] the driver passes in, so tests can use a fake.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

/// Bytes the driver must leave free before a peer datagram's payload, so the core can
/// prepend a ChannelData header or a Data indication header in place.
pub const PEER_HEADROOM: usize = 48;
/// Bytes the driver must leave free after a peer datagram's payload (padding + FINGERPRINT).
pub const PEER_TAILROOM: usize = 12;
/// A scratch buffer of this size always holds any response the core writes.
pub const SCRATCH_LEN: usize = 1500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// Identifies a client's transport association (RFC 8656 "5-tuple"). For TCP/TLS each
/// connection has a distinct remote address, so this also names the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Names a relay socket owned by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayHandle(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// No free port in the relay range (→ 508).
    #[error("relay port range exhausted")]
    Exhausted,
    /// No relay address of this family is configured (→ 440).
    #[error("address family not supported")]
    FamilyUnsupported,
}

/// Opened relay socket, as reported by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenedRelay {
    pub handle: RelayHandle,
    /// Local address of the relay socket.
    pub local: SocketAddr,
}

/// Which port a relay socket gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortChoice {
    Any,
    /// An even port (EVEN-PORT).
    Even,
    /// The port kept by an earlier [`RelayPorts::hold`] (RESERVATION-TOKEN).
    Held(SocketAddr),
}

/// How the core gets relay sockets: implemented by the driver (real UDP sockets) and by
/// tests (fakes).
pub trait RelayPorts {
    fn open(&mut self, family: Family, port: PortChoice) -> Result<OpenedRelay, OpenError>;
    /// Keeps `addr` (a relay address) unused so a later `open(.., Held(addr))` gets it.
    fn hold(&mut self, addr: SocketAddr) -> bool;
    /// Gives up a hold that was never opened.
    fn unhold(&mut self, addr: SocketAddr);
    fn close(&mut self, handle: RelayHandle);
}

/// What to do with a datagram from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAction<'a> {
    /// Nothing to send: absorbed, or dropped (and counted in [`Stats`]).
    None,
    /// Send this back to the client on the transport it came in on.
    Reply(&'a [u8]),
    /// Send `payload` from relay socket `relay` to `peer`.
    ToPeer {
        relay: RelayHandle,
        peer: SocketAddr,
        payload: &'a [u8],
        /// DONT-FRAGMENT was requested.
        dont_fragment: bool,
    },
}

/// What to do with a datagram a relay socket received from a peer.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerAction<'a> {
    None,
    /// Send `data` to the client over `to`.
    ToClient {
        to: FiveTuple,
        data: &'a [u8],
    },
}

/// Counters kept by one core (one per worker; the driver exports them). Plain integers:
/// no atomics on the hot path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocations_created: u64,
    pub allocations_deleted: u64,
    pub allocations_refused_quota: u64,
    pub allocations_refused_ports: u64,
    pub unauthorized: u64,
    pub unauthorized_dropped_rate: u64,
    pub stale_nonce: u64,
    pub bad_request: u64,
    pub unknown_attribute: u64,
    pub malformed_dropped: u64,
    pub peer_denied: u64,
    pub peer_no_permission_dropped: u64,
    pub bandwidth_dropped: u64,
    pub binding_requests: u64,
    /// Client → peer (relayed out).
    pub sent_packets: u64,
    pub sent_bytes: u64,
    /// Peer → client.
    pub received_packets: u64,
    pub received_bytes: u64,
}

mod allocation;
mod auth;
mod core;
mod indication;
mod reply;
mod requests;
mod shared;
#[cfg(test)]
mod tests;

pub use self::core::Server;
pub use self::shared::{ServerSettings, Shared};
