//! Which peer addresses a relay may send to (DESIGN.md "Security defaults").
//!
//! Every IPv6 address that embeds an IPv4 address (mapped, compatible, 6to4, NAT64) is
//! judged by the IPv4 address it carries, so a forbidden IPv4 range cannot be reached
//! through another spelling.

use std::net::IpAddr;

/// An inclusive address range of one family (coturn syntax `A`, `A-B`, or CIDR `A/N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let _ = ip;
        todo!()
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let _ = s;
        todo!()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused, with the rule that refused it (for debug logs and metrics labels).
    Denied(DenyReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    Multicast,
    Reserved,
    ServerOwn,
    DeniedByConfig,
}

/// Compiled peer filter. Cheap to query (no allocation); built once at start.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    rules: crate::config::PeerRules,
    own: Vec<IpAddr>,
}

impl PeerPolicy {
    /// `own` are the server's listening and relay addresses (never relayed to, unless
    /// allowed explicitly).
    pub fn new(rules: crate::config::PeerRules, own: Vec<IpAddr>) -> Self {
        PeerPolicy { rules, own }
    }
    pub fn check(&self, peer: IpAddr) -> Verdict {
        let _ = (peer, &self.rules, &self.own);
        todo!()
    }
}
