//! One allocation: its relay sockets, permissions, channels and bandwidth budget.
//!
//! Permissions and channels are short vectors scanned linearly: a client holds a handful,
//! which beats hashing on the per-packet path. Their number is capped so a client cannot
//! grow server memory without bound.

use super::{Family, FiveTuple, RelayHandle};
use crate::stun::TransactionId;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Permissions one allocation may hold (RFC 8656 sets no limit; we must).
pub(crate) const MAX_PERMISSIONS: usize = 64;
/// Channels one allocation may hold.
pub(crate) const MAX_CHANNELS: usize = 64;
/// A channel number or peer stays reserved this long after the binding expires
/// (RFC 8656 §12: no rebinding to another peer for 5 minutes).
pub(crate) const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug)]
pub(crate) struct Relay {
    pub handle: RelayHandle,
    pub local: SocketAddr,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
}

/// A byte budget refilled continuously at `rate` bytes/s, holding at most one second.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ByteBucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

impl ByteBucket {
    pub fn new(rate: u64, now: Instant) -> Self {
        ByteBucket {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes `bytes` if the budget allows. A rate of 0 means unlimited.
    pub fn take(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        let refill = (elapsed.as_micros() as u64).saturating_mul(self.rate) / 1_000_000;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(self.rate);
            self.last = now;
        }
        let bytes = bytes as u64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub(crate) struct Allocation {
    pub five_tuple: FiveTuple,
    /// Index 0: IPv4 relay, 1: IPv6 relay (RFC 8656 dual allocations).
    pub relays: [Option<Relay>; 2],
    pub expires: Instant,
    pub username: String,
    pub quota_user: String,
    pub key: [u8; 16],
    /// Transaction of the Allocate that created it, to answer retransmissions.
    pub allocate_txid: TransactionId,
    /// The client used FINGERPRINT, so our indications to it carry one too.
    pub fingerprint: bool,
    pub permissions: Vec<Permission>,
    pub channels: Vec<Channel>,
    pub to_peer_budget: ByteBucket,
    pub to_client_budget: ByteBucket,
}

pub(crate) fn family_of(addr: &SocketAddr) -> Family {
    if addr.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

pub(crate) fn family_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Allocation {
    pub fn relay_for(&self, family: Family) -> Option<Relay> {
        self.relays[family_index(family)]
    }

    pub fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|p| p.ip == ip && p.expires > now)
    }

    /// Installs or refreshes a permission; `false` when the cap is reached.
    pub fn permit(&mut self, ip: IpAddr, until: Instant) -> bool {
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = until;
            return true;
        }
        if self.permissions.len() >= MAX_PERMISSIONS {
            return false;
        }
        self.permissions.push(Permission { ip, expires: until });
        true
    }

    pub fn peer_of_channel(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
            .map(|c| c.peer)
    }

    pub fn channel_of_peer(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number)
    }

    /// Binds or refreshes `number` ↔ `peer`. Fails when either side is (or recently was)
    /// bound to something else, or the cap is reached.
    pub fn bind_channel(
        &mut self,
        number: u16,
        peer: SocketAddr,
        until: Instant,
        now: Instant,
    ) -> Result<(), ChannelBindError> {
        let reserved = |c: &Channel| c.expires + CHANNEL_COOLDOWN > now;
        if let Some(c) = self.channels.iter_mut().find(|c| c.number == number) {
            if c.peer == peer {
                c.expires = until;
                return Ok(());
            }
            if reserved(c) {
                return Err(ChannelBindError::Conflict);
            }
        }
        if self
            .channels
            .iter()
            .any(|c| c.peer == peer && c.number != number && reserved(c))
        {
            return Err(ChannelBindError::Conflict);
        }
        self.channels
            .retain(|c| c.number != number && c.peer != peer && reserved(c));
        if self.channels.len() >= MAX_CHANNELS {
            return Err(ChannelBindError::Full);
        }
        self.channels.push(Channel {
            number,
            peer,
            expires: until,
        });
        Ok(())
    }

    /// Drops expired permissions and channels past their cooldown.
    pub fn sweep(&mut self, now: Instant) {
        self.permissions.retain(|p| p.expires > now);
        self.channels.retain(|c| c.expires + CHANNEL_COOLDOWN > now);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChannelBindError {
    Conflict,
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Transport;

    fn alloc(now: Instant) -> Allocation {
        let addr: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        Allocation {
            five_tuple: FiveTuple {
                transport: Transport::Udp,
                client: addr,
                server: addr,
            },
            relays: [None, None],
            expires: now,
            username: String::new(),
            quota_user: String::new(),
            key: [0; 16],
            allocate_txid: [0; 12],
            fingerprint: false,
            permissions: Vec::new(),
            channels: Vec::new(),
            to_peer_budget: ByteBucket::new(0, now),
            to_client_budget: ByteBucket::new(0, now),
        }
    }

    #[test]
    fn channel_rebinding_rules() {
        let now = Instant::now();
        let mut a = alloc(now);
        let p1: SocketAddr = "198.51.100.1:1000".parse().unwrap();
        let p2: SocketAddr = "198.51.100.2:1000".parse().unwrap();
        let later = now + Duration::from_secs(600);
        assert_eq!(a.bind_channel(0x4000, p1, later, now), Ok(()));
        assert_eq!(a.bind_channel(0x4000, p1, later, now), Ok(()), "refresh");
        assert_eq!(
            a.bind_channel(0x4000, p2, later, now),
            Err(ChannelBindError::Conflict)
        );
        assert_eq!(
            a.bind_channel(0x4001, p1, later, now),
            Err(ChannelBindError::Conflict)
        );
        // Expired but cooling down: still reserved.
        let after_expiry = later + Duration::from_secs(10);
        assert_eq!(a.peer_of_channel(0x4000, after_expiry), None);
        assert_eq!(
            a.bind_channel(
                0x4000,
                p2,
                after_expiry + Duration::from_secs(600),
                after_expiry
            ),
            Err(ChannelBindError::Conflict)
        );
        // After the cooldown the number is free again.
        let free = later + CHANNEL_COOLDOWN + Duration::from_secs(1);
        assert_eq!(
            a.bind_channel(0x4000, p2, free + Duration::from_secs(600), free),
            Ok(())
        );
        assert_eq!(a.peer_of_channel(0x4000, free), Some(p2));
    }

    #[test]
    fn permission_cap_holds() {
        let now = Instant::now();
        let mut a = alloc(now);
        let until = now + Duration::from_secs(300);
        for i in 0..MAX_PERMISSIONS {
            let ip = IpAddr::from([198, 51, 100, i as u8]);
            assert!(a.permit(ip, until));
        }
        assert!(!a.permit(IpAddr::from([203, 0, 113, 1]), until));
        assert!(a.permit(IpAddr::from([198, 51, 100, 0]), until), "refresh");
    }

    #[test]
    fn bucket_limits_and_refills() {
        let now = Instant::now();
        let mut b = ByteBucket::new(1000, now);
        assert!(b.take(1000, now));
        assert!(!b.take(1, now));
        assert!(b.take(500, now + Duration::from_millis(500)));
        assert!(!b.take(100, now + Duration::from_millis(500)));
        let mut unlimited = ByteBucket::new(0, now);
        assert!(unlimited.take(usize::MAX, now));
    }
}
