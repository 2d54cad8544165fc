//! The whole sans-IO server: a sequence of client datagrams, peer datagrams and clock
//! steps, split out of the fuzz input. Nothing may panic, and the allocation count must
//! match what the fake relay table holds open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plenary_turn::config::TurnConfig;
use plenary_turn::server::{
    Family, FiveTuple, OpenError, OpenedRelay, PortChoice, RelayHandle, RelayPorts, Server,
    ServerSettings, Shared, Transport, PEER_HEADROOM, PEER_TAILROOM, SCRATCH_LEN,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Relays {
    next: u32,
    open: Vec<RelayHandle>,
    held: Vec<SocketAddr>,
}

impl RelayPorts for Relays {
    fn open(&mut self, family: Family, port: PortChoice) -> Result<OpenedRelay, OpenError> {
        if self.open.len() >= 64 {
            return Err(OpenError::Exhausted);
        }
        self.next += 1;
        let local = match (port, family) {
            (PortChoice::Held(addr), _) => {
                self.held.retain(|a| *a != addr);
                addr
            }
            (_, Family::V4) => SocketAddr::from(([203, 0, 113, 1], 40000 + (self.next % 1000) as u16 * 2)),
            (_, Family::V6) => return Err(OpenError::FamilyUnsupported),
        };
        let handle = RelayHandle(self.next);
        self.open.push(handle);
        Ok(OpenedRelay { handle, local })
    }
    fn hold(&mut self, addr: SocketAddr) -> bool {
        self.held.push(addr);
        true
    }
    fn unhold(&mut self, addr: SocketAddr) {
        self.held.retain(|a| *a != addr);
    }
    fn close(&mut self, handle: RelayHandle) {
        self.open.retain(|h| *h != handle);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut config = TurnConfig::default();
    // No auth, so random requests reach the allocation logic.
    config.auth.no_auth = true;
    let shared = Shared::new(ServerSettings::from_config(&config, Vec::new()), [1; 32]);
    let start = Instant::now();
    let mut now = start;
    let mut server = Server::new(shared.clone(), start, 1_800_000_000);
    let mut relays = Relays::default();
    let mut scratch = [0u8; SCRATCH_LEN];
    // Records: [kind, client, len_hi, len_lo, payload...].
    let mut rest = data;
    while rest.len() >= 4 {
        let (kind, who) = (rest[0], rest[1]);
        let len = (usize::from(rest[2]) << 8 | usize::from(rest[3])).min(rest.len() - 4);
        let payload = &rest[4..4 + len];
        rest = &rest[4 + len..];
        let from = FiveTuple {
            transport: if who & 0x80 == 0 { Transport::Udp } else { Transport::Tcp },
            client: SocketAddr::from(([198, 51, 100, who & 3], 5000)),
            server: SocketAddr::from(([203, 0, 113, 1], 3478)),
        };
        match kind % 4 {
            0 | 1 => {
                let _ = server.handle_client(now, from, payload, &mut scratch, &mut relays);
            }
            2 => {
                let Some(&relay) = relays.open.get(usize::from(who) % relays.open.len().max(1)) else {
                    continue;
                };
                let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
                buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
                let peer = SocketAddr::from(([8, 8, 8, who], 5000));
                let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
                let _ = server.handle_peer(now, relay, peer, &mut buf, range);
            }
            _ => {
                now += Duration::from_secs(u64::from(who));
                server.handle_timeout(now, &mut relays);
            }
        }
        assert!(relays.open.len() >= server.allocation_count());
        assert_eq!(shared.total_allocations(), server.allocation_count() as u64);
    }
});
