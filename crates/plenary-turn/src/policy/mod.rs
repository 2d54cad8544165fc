//! Which peer addresses a relay may send to (DESIGN.md "Security defaults").
//!
//! Every IPv6 address that embeds an IPv4 address (mapped, compatible, 6to4, NAT64, ...) is
//! judged by the IPv4 address it carries as well as by its own IPv6 form, so a forbidden
//! IPv4 range cannot be reached through another spelling (CVE-2020-26262 and kin).
//!
//! Precedence, in order:
//! 1. `0.0.0.0/8` and `::` (in any spelling) are refused, always.
//! 2. Loopback is refused unless `allow_loopback` is set. With it, loopback goes through the
//!    rules below without the built-in loopback entry, as coturn's `allow-loopback-peers`
//!    opens loopback by itself; a `denied` range and the own-address rule still apply.
//! 3. For each form of the address (the IPv6 form, and the embedded IPv4 if any), an
//!    `allowed` range wins; else a `denied` range refuses; else the built-in list refuses;
//!    else the server's own addresses are refused. Every form must pass.

mod builtin;
mod embed;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive address range of one family (coturn syntax `A`, `A-B`, or CIDR `A/N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

impl IpRange {
    /// The range holding exactly `ip`.
    pub fn single(ip: IpAddr) -> Self {
        IpRange { start: ip, end: ip }
    }

    /// False for an address of the other family: families never alias here (embedded
    /// IPv4 is handled by [`PeerPolicy`], not by ranges).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.start, self.end, ip) {
            (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(a)) => s <= a && a <= e,
            (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(a)) => s <= a && a <= e,
            _ => false,
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    // Bracketed IPv6 is how addresses appear next to ports; accept it here too.
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

impl std::str::FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let bad = || format!("`{text}` is not an IP address, a range `A-B` or a CIDR block `A/N`");
        if text.is_empty() {
            return Err("empty address range".into());
        }
        if let Some((addr, len)) = text.split_once('/') {
            let addr = parse_ip(addr).ok_or_else(bad)?;
            let len: u8 = len.trim().parse().map_err(|_| bad())?;
            return cidr(addr, len).ok_or_else(|| {
                format!("`{text}`: prefix length {len} is too long for this address family")
            });
        }
        if let Some((a, b)) = text.split_once('-') {
            let start = parse_ip(a).ok_or_else(bad)?;
            let end = parse_ip(b).ok_or_else(bad)?;
            if start.is_ipv4() != end.is_ipv4() {
                return Err(format!(
                    "`{text}`: both ends must be of the same address family"
                ));
            }
            if start > end {
                return Err(format!("`{text}`: the range starts after it ends"));
            }
            return Ok(IpRange { start, end });
        }
        parse_ip(text).map(IpRange::single).ok_or_else(bad)
    }
}

/// Host bits are ignored (`10.1.2.3/8` is `10.0.0.0/8`), as most tools do.
fn cidr(addr: IpAddr, len: u8) -> Option<IpRange> {
    match addr {
        IpAddr::V4(a) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let start = u32::from(a) & mask;
            Some(IpRange {
                start: Ipv4Addr::from(start).into(),
                end: Ipv4Addr::from(start | !mask).into(),
            })
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let start = u128::from(a) & mask;
            Some(IpRange {
                start: Ipv6Addr::from(start).into(),
                end: Ipv6Addr::from(start | !mask).into(),
            })
        }
        _ => None,
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

impl DenyReason {
    /// Stable lowercase name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Unspecified => "unspecified",
            DenyReason::Loopback => "loopback",
            DenyReason::Private => "private",
            DenyReason::LinkLocal => "link_local",
            DenyReason::Multicast => "multicast",
            DenyReason::Reserved => "reserved",
            DenyReason::ServerOwn => "server_own",
            DenyReason::DeniedByConfig => "denied_by_config",
        }
    }
}

/// Ranges split by family as plain integers, so a lookup is a scan over `Copy` pairs.
#[derive(Clone, Debug, Default)]
struct Ranges {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Ranges {
    fn compile(ranges: &[IpRange]) -> Self {
        let mut out = Ranges::default();
        for r in ranges {
            match (r.start, r.end) {
                (IpAddr::V4(s), IpAddr::V4(e)) => out.v4.push((s.into(), e.into())),
                (IpAddr::V6(s), IpAddr::V6(e)) => {
                    let (s, e) = (u128::from(s), u128::from(e));
                    out.v6.push((s, e));
                    // `::ffff:a.b.c.d` written in the config means the IPv4 host too, so
                    // a rule cannot be sidestepped by the other spelling.
                    if let (Some(s4), Some(e4)) = (embed::mapped_v4(s), embed::mapped_v4(e)) {
                        out.v4.push((s4, e4));
                    }
                }
                // A mixed-family range cannot be built by `FromStr`; ignore a hand-made one.
                _ => {}
            }
        }
        out
    }

    fn has_v4(&self, a: u32) -> bool {
        self.v4.iter().any(|&(s, e)| s <= a && a <= e)
    }

    fn has_v6(&self, a: u128) -> bool {
        self.v6.iter().any(|&(s, e)| s <= a && a <= e)
    }
}

/// Compiled peer filter. Cheap to query (no allocation); built once at start.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    allowed: Ranges,
    denied: Ranges,
    allow_loopback: bool,
    own_v4: Vec<u32>,
    own_v6: Vec<u128>,
}

impl PeerPolicy {
    /// `own` are the server's listening and relay addresses (never relayed to, unless
    /// allowed explicitly).
    pub fn new(rules: crate::config::PeerRules, own: Vec<IpAddr>) -> Self {
        let mut own_v4 = Vec::new();
        let mut own_v6 = Vec::new();
        for ip in own {
            match ip {
                IpAddr::V4(a) => own_v4.push(u32::from(a)),
                IpAddr::V6(a) => {
                    let x = u128::from(a);
                    own_v6.push(x);
                    if let Some(v4) = embed::embedded_v4(x) {
                        own_v4.push(v4);
                    }
                }
            }
        }
        PeerPolicy {
            allowed: Ranges::compile(&rules.allowed),
            denied: Ranges::compile(&rules.denied),
            allow_loopback: rules.allow_loopback,
            own_v4,
            own_v6,
        }
    }

    pub fn check(&self, peer: IpAddr) -> Verdict {
        let (v6, v4) = match peer {
            IpAddr::V4(a) => (None, Some(u32::from(a))),
            IpAddr::V6(a) => {
                let x = u128::from(a);
                (Some(x), embed::embedded_v4(x))
            }
        };
        if v6 == Some(0) || v4.is_some_and(|a| a >> 24 == 0) {
            return Verdict::Denied(DenyReason::Unspecified);
        }
        let loopback = v6 == Some(1) || v4.is_some_and(|a| a >> 24 == 127);
        if loopback && !self.allow_loopback {
            return Verdict::Denied(DenyReason::Loopback);
        }
        // Past this point loopback is allowed by the flag: its built-in entry no longer counts.
        let builtin = |reason: Option<DenyReason>| {
            reason.filter(|r| !(loopback && *r == DenyReason::Loopback))
        };
        // The embedded IPv4 first: its reason is the more telling one in logs.
        if let Some(a) = v4 {
            if let Some(reason) = self.judge_v4(a, builtin(builtin::v4(a))) {
                return Verdict::Denied(reason);
            }
        }
        if let Some(x) = v6 {
            if let Some(reason) = self.judge_v6(x, builtin(builtin::v6(x))) {
                return Verdict::Denied(reason);
            }
        }
        Verdict::Allowed
    }

    /// `builtin`: the built-in list's verdict on `a`, if it still applies.
    fn judge_v4(&self, a: u32, builtin: Option<DenyReason>) -> Option<DenyReason> {
        if self.allowed.has_v4(a) {
            return None;
        }
        if self.denied.has_v4(a) {
            return Some(DenyReason::DeniedByConfig);
        }
        if builtin.is_some() {
            return builtin;
        }
        self.own_v4.contains(&a).then_some(DenyReason::ServerOwn)
    }

    fn judge_v6(&self, x: u128, builtin: Option<DenyReason>) -> Option<DenyReason> {
        if self.allowed.has_v6(x) {
            return None;
        }
        if self.denied.has_v6(x) {
            return Some(DenyReason::DeniedByConfig);
        }
        if builtin.is_some() {
            return builtin;
        }
        self.own_v6.contains(&x).then_some(DenyReason::ServerOwn)
    }
}
