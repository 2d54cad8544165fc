//! How many sessions one source address may have still connecting. A WHIP/WHEP POST or a
//! room API join costs the server a peer connection (about 40 KiB) held until it connects
//! or `CONNECT_TIMEOUT` passes, before anyone has proved they can do ICE. Without a cap one
//! unauthenticated address could hold thousands. Connected sessions do not count, so a
//! whole building behind one NAT can still join; only the ones in flight do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Sessions one address may have connecting at once. Joins take about a second to
/// connect, so this is far above what an assembly behind one NAT needs at 20 joins a second.
pub(crate) const MAX_CONNECTING_PER_SOURCE: u32 = 256;

#[derive(Debug)]
pub(crate) struct Admissions {
    connecting: Mutex<HashMap<IpAddr, u32>>,
    max_per_source: u32,
}

/// One connecting session's place in its source's count, given back on drop (when the
/// peer connects, or when it is removed without connecting).
#[derive(Debug)]
pub(crate) struct Admission {
    table: Arc<Admissions>,
    ip: IpAddr,
}

impl Admissions {
    pub(crate) fn new(max_per_source: u32) -> Arc<Self> {
        Arc::new(Self {
            connecting: Mutex::new(HashMap::new()),
            max_per_source,
        })
    }

    /// A place for one more connecting session from `ip`, or None at the cap.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admission> {
        let mut m = self.connecting.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max_per_source {
            return None;
        }
        *n += 1;
        Some(Admission {
            table: self.clone(),
            ip,
        })
    }

    /// Sessions from `ip` connecting now.
    #[cfg(test)]
    fn connecting(&self, ip: IpAddr) -> u32 {
        let m = self.connecting.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut m = self
            .table
            .connecting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // No entry kept for a source with nothing in flight.
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_capped_while_its_sessions_connect_and_freed_as_they_do() {
        let t = Admissions::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut held: Vec<Admission> = (0..3).map(|_| t.admit(a).expect("under the cap")).collect();
        assert!(t.admit(a).is_none(), "a fourth from the same source");
        let other = t.admit(b).expect("another source has its own count");
        held.pop();
        assert_eq!(t.connecting(a), 2);
        held.push(t.admit(a).expect("a place freed by a connected session"));
        drop(held);
        drop(other);
        assert_eq!((t.connecting(a), t.connecting(b)), (0, 0));
        assert!(
            t.connecting.lock().unwrap().is_empty(),
            "entries left behind"
        );
    }
}
