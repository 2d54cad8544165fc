//! Relay port allocation, shared by all workers. The mutex is taken on allocation open
//! and close only, never per packet.

use super::sockets::bind_relay;
use crate::server::{Family, OpenError};
use rand::Rng;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Random probes before falling back to a scan (cheap while the range is sparse).
const RANDOM_PROBES: u32 = 8;
/// Binds to try before giving up when ports turn out to be taken by other processes.
const BIND_ATTEMPTS: u32 = 16;

/// Which ports of `[min, max]` are in use, per relay IP.
#[derive(Debug)]
pub(crate) struct PortPool {
    min: u16,
    /// Number of ports in the range (0 when the range is empty).
    size: u32,
    used: Mutex<HashMap<IpAddr, Bitmap>>,
}

#[derive(Debug)]
struct Bitmap {
    words: Vec<u64>,
    count: u32,
}

impl Bitmap {
    fn new(size: u32) -> Self {
        Bitmap {
            words: vec![0; (size as usize).div_ceil(64)],
            count: 0,
        }
    }
    fn get(&self, i: u32) -> bool {
        self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: u32, v: bool) {
        let w = &mut self.words[(i / 64) as usize];
        let bit = 1u64 << (i % 64);
        if v && *w & bit == 0 {
            *w |= bit;
            self.count += 1;
        } else if !v && *w & bit != 0 {
            *w &= !bit;
            self.count -= 1;
        }
    }
}

impl PortPool {
    /// Port 0 is never handed out (binding it would mean "any port").
    pub(crate) fn new(min: u16, max: u16) -> Self {
        let min = min.max(1);
        let size = if max >= min {
            u32::from(max - min) + 1
        } else {
            0
        };
        PortPool {
            min,
            size,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Marks a random free port of `ip` as used and returns it; `None` when all are used.
    /// `even`: only even port numbers (EVEN-PORT, RFC 8656 §7.2).
    pub(crate) fn reserve(&self, ip: IpAddr, even: bool, rng: &mut impl Rng) -> Option<u16> {
        if self.size == 0 {
            return None;
        }
        let mut map = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let bits = map.entry(ip).or_insert_with(|| Bitmap::new(self.size));
        if bits.count >= self.size {
            return None;
        }
        let fits = |i: u32| !even || (u32::from(self.min) + i).is_multiple_of(2);
        let mut pick = None;
        for _ in 0..RANDOM_PROBES {
            let i = rng.gen_range(0..self.size);
            if fits(i) && !bits.get(i) {
                pick = Some(i);
                break;
            }
        }
        if pick.is_none() {
            let start = rng.gen_range(0..self.size);
            pick = (0..self.size)
                .map(|k| (start + k) % self.size)
                .find(|&i| fits(i) && !bits.get(i));
        }
        let i = pick?;
        bits.set(i, true);
        // i < size ≤ 65535 - min + 1, so this fits in u16.
        Some(self.min + i as u16)
    }

    /// Marks `port` of `ip` used if it is in range and free (a RESERVATION-TOKEN hold).
    pub(crate) fn hold(&self, ip: IpAddr, port: u16) -> bool {
        let Some(i) = port
            .checked_sub(self.min)
            .map(u32::from)
            .filter(|&i| i < self.size)
        else {
            return false;
        };
        let mut map = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let bits = map.entry(ip).or_insert_with(|| Bitmap::new(self.size));
        if bits.get(i) {
            return false;
        }
        bits.set(i, true);
        true
    }

    pub(crate) fn release(&self, ip: IpAddr, port: u16) {
        let Some(i) = port
            .checked_sub(self.min)
            .map(u32::from)
            .filter(|&i| i < self.size)
        else {
            return;
        };
        let mut map = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bits) = map.get_mut(&ip) {
            bits.set(i, false);
        }
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self, ip: IpAddr) -> u32 {
        let map = self.used.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip).map_or(0, |b| b.count)
    }
}

/// Relay addresses by family plus the port pool: what every worker's `RelayPorts` shares.
#[derive(Debug)]
pub(crate) struct RelayAllocator {
    pool: PortPool,
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    /// Round-robin over several relay IPs of one family.
    next: AtomicUsize,
}

/// A reserved port, returned to the pool when dropped (so a relay socket frees its port
/// exactly when the socket itself goes away).
#[derive(Debug)]
pub(crate) struct PortLease {
    alloc: Arc<RelayAllocator>,
    ip: IpAddr,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.alloc.pool.release(self.ip, self.port);
    }
}

impl RelayAllocator {
    pub(crate) fn new(relay_ips: &[IpAddr], min_port: u16, max_port: u16) -> Self {
        RelayAllocator {
            pool: PortPool::new(min_port, max_port),
            v4: relay_ips
                .iter()
                .filter(|ip| ip.is_ipv4())
                .copied()
                .collect(),
            v6: relay_ips
                .iter()
                .filter(|ip| ip.is_ipv6())
                .copied()
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &PortPool {
        &self.pool
    }

    fn ip_for(&self, family: Family) -> Option<IpAddr> {
        let ips = match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        };
        match ips.len() {
            0 => None,
            1 => Some(ips[0]),
            n => Some(ips[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    /// Binds a relay socket of `family` on a random free port of the range. Ports another
    /// process holds are skipped. Other bind errors are returned for logging and are
    /// reported to the core as exhaustion (508), which is what the client can act on.
    pub(crate) fn bind(
        self: &Arc<Self>,
        family: Family,
        even: bool,
        rng: &mut impl Rng,
    ) -> Result<(std::net::UdpSocket, PortLease), (OpenError, Option<io::Error>)> {
        let ip = self
            .ip_for(family)
            .ok_or((OpenError::FamilyUnsupported, None))?;
        for _ in 0..BIND_ATTEMPTS {
            let port = self
                .pool
                .reserve(ip, even, rng)
                .ok_or((OpenError::Exhausted, None))?;
            let lease = PortLease {
                alloc: self.clone(),
                ip,
                port,
            };
            match bind_relay(ip, port) {
                Ok(sock) => return Ok((sock, lease)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    // Someone else has it; the lease drop frees our mark and we try another.
                    continue;
                }
                Err(e) => return Err((OpenError::Exhausted, Some(e))),
            }
        }
        Err((OpenError::Exhausted, None))
    }

    /// Holds `addr`'s port for a later [`RelayAllocator::bind_held`]; false if it is not
    /// one of our relay addresses or the port is taken.
    pub(crate) fn hold(&self, addr: SocketAddr) -> bool {
        let ours = self.v4.contains(&addr.ip()) || self.v6.contains(&addr.ip());
        ours && self.pool.hold(addr.ip(), addr.port())
    }

    pub(crate) fn unhold(&self, addr: SocketAddr) {
        self.pool.release(addr.ip(), addr.port());
    }

    /// Binds the port a hold kept; the hold becomes the socket's lease.
    pub(crate) fn bind_held(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<(std::net::UdpSocket, PortLease), (OpenError, Option<io::Error>)> {
        let lease = PortLease {
            alloc: self.clone(),
            ip: addr.ip(),
            port: addr.port(),
        };
        match bind_relay(addr.ip(), addr.port()) {
            Ok(sock) => Ok((sock, lease)),
            Err(e) => Err((OpenError::Exhausted, Some(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn hands_out_every_port_once_then_exhausts() {
        let pool = PortPool::new(40000, 40009);
        let mut rng = rand::thread_rng();
        let mut got: Vec<u16> = (0..10)
            .filter_map(|_| pool.reserve(LO, false, &mut rng))
            .collect();
        got.sort_unstable();
        assert_eq!(got, (40000..=40009).collect::<Vec<_>>());
        assert_eq!(pool.reserve(LO, false, &mut rng), None);
        pool.release(LO, 40004);
        assert_eq!(pool.reserve(LO, false, &mut rng), Some(40004));
        assert_eq!(pool.in_use(LO), 10);
    }

    #[test]
    fn ips_are_independent_and_bad_release_is_ignored() {
        let pool = PortPool::new(50000, 50000);
        let mut rng = rand::thread_rng();
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(pool.reserve(LO, false, &mut rng), Some(50000));
        assert_eq!(pool.reserve(other, false, &mut rng), Some(50000));
        pool.release(LO, 1);
        pool.release(LO, 65535);
        assert_eq!(pool.in_use(LO), 1);
    }

    #[test]
    fn empty_or_zero_range() {
        let mut rng = rand::thread_rng();
        assert_eq!(PortPool::new(10, 5).reserve(LO, false, &mut rng), None);
        // Port 0 is never handed out.
        let pool = PortPool::new(0, 0);
        assert_eq!(pool.reserve(LO, false, &mut rng), None);
        let full = PortPool::new(0, 65535);
        for _ in 0..100 {
            assert_ne!(full.reserve(LO, false, &mut rng), Some(0));
        }
    }

    #[test]
    fn even_port_requests_get_even_ports_until_none_is_left() {
        let pool = PortPool::new(40001, 40010);
        let mut rng = rand::thread_rng();
        let mut got: Vec<u16> = (0..6)
            .filter_map(|_| pool.reserve(LO, true, &mut rng))
            .collect();
        got.sort_unstable();
        assert_eq!(got, [40002, 40004, 40006, 40008, 40010]);
        assert!(pool
            .reserve(LO, false, &mut rng)
            .is_some_and(|p| p % 2 == 1));
    }

    #[test]
    fn picks_are_spread_not_sequential() {
        let pool = PortPool::new(1024, 65535);
        let mut rng = rand::thread_rng();
        let a: Vec<u16> = (0..20)
            .filter_map(|_| pool.reserve(LO, false, &mut rng))
            .collect();
        let sequential = a.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(sequential < 5, "ports look sequential: {a:?}");
    }

    #[test]
    fn bind_skips_taken_ports_and_lease_frees_port() {
        // Find two adjacent free high ports by binding them, keep one taken.
        let taken = std::net::UdpSocket::bind((LO, 0)).expect("bind");
        let p = taken.local_addr().expect("addr").port();
        if p == u16::MAX {
            return;
        }
        let alloc = Arc::new(RelayAllocator::new(&[LO], p, p.saturating_add(1)));
        let mut rng = rand::thread_rng();
        match alloc.bind(Family::V4, false, &mut rng) {
            Ok((sock, lease)) => {
                assert_eq!(sock.local_addr().expect("addr").port(), p + 1);
                assert_eq!(alloc.pool().in_use(LO), 1);
                drop(lease);
                assert_eq!(alloc.pool().in_use(LO), 0);
            }
            // p + 1 may be in use by something else on this machine.
            Err((OpenError::Exhausted, _)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(matches!(
            alloc.bind(Family::V6, false, &mut rng),
            Err((OpenError::FamilyUnsupported, None))
        ));
    }
}
