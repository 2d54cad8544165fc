//! Drives the core directly: no sockets, no sleeps, time passed in.

use super::*;
use crate::config::{PeerRules, TurnConfig};
use crate::stun::integrity::{long_term_key, rest_password};
use crate::stun::{attr, method, Class, Message, MessageWriter};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub(super) const SECRET: &str = "Zm9vYmFyLXRlc3Qtc2VjcmV0LW9ubHk=";
pub(super) const REALM: &str = "bbb.example.coop";
pub(super) const START_UNIX: u64 = 1_800_000_000;

#[derive(Default)]
pub(super) struct FakeRelays {
    next: u32,
    open: Vec<RelayHandle>,
    closed: Vec<RelayHandle>,
    exhausted: bool,
    v6: bool,
    held: Vec<SocketAddr>,
}

impl RelayPorts for FakeRelays {
    fn hold(&mut self, addr: SocketAddr) -> bool {
        !self.held.contains(&addr) && {
            self.held.push(addr);
            true
        }
    }
    fn unhold(&mut self, addr: SocketAddr) {
        self.held.retain(|a| *a != addr);
    }
    fn open(&mut self, family: Family, port: PortChoice) -> Result<OpenedRelay, OpenError> {
        if let PortChoice::Held(addr) = port {
            assert!(self.held.contains(&addr), "open of a port never held");
            self.unhold(addr);
            self.next += 1;
            let handle = RelayHandle(self.next);
            self.open.push(handle);
            return Ok(OpenedRelay {
                handle,
                local: addr,
            });
        }
        let even_port = port == PortChoice::Even;
        if self.exhausted {
            return Err(OpenError::Exhausted);
        }
        let ip: IpAddr = match family {
            Family::V4 => "203.0.113.10".parse().unwrap(),
            Family::V6 if self.v6 => "2001:db8::10".parse().unwrap(),
            Family::V6 => return Err(OpenError::FamilyUnsupported),
        };
        self.next += 1;
        let port = 50000 + self.next as u16;
        let port = if even_port { port & !1 } else { port };
        let handle = RelayHandle(self.next);
        self.open.push(handle);
        Ok(OpenedRelay {
            handle,
            local: SocketAddr::new(ip, port),
        })
    }
    fn close(&mut self, handle: RelayHandle) {
        self.open.retain(|h| *h != handle);
        self.closed.push(handle);
    }
}

pub(super) struct Harness {
    server: Server,
    relays: FakeRelays,
    now: Instant,
    shared: Arc<Shared>,
}

pub(super) fn udp(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: client.parse().unwrap(),
        server: "203.0.113.1:3478".parse().unwrap(),
    }
}

pub(super) fn harness_with(config: TurnConfig) -> Harness {
    let own = vec![
        "203.0.113.1".parse().unwrap(),
        "203.0.113.10".parse().unwrap(),
    ];
    let shared = Shared::new(ServerSettings::from_config(&config, own), [42; 32]);
    let start = Instant::now();
    Harness {
        server: Server::new(shared.clone(), start, START_UNIX),
        relays: FakeRelays::default(),
        now: start,
        shared,
    }
}

pub(super) fn config() -> TurnConfig {
    let mut config = TurnConfig {
        realm: REALM.into(),
        ..TurnConfig::default()
    };
    config.auth.secrets = vec![SECRET.into()];
    config
}

pub(super) fn harness() -> Harness {
    harness_with(config())
}

/// A request as a client would build it.
pub(super) struct Req {
    method: u16,
    class: Class,
    txid: [u8; 12],
    attrs: Vec<(u16, Vec<u8>)>,
    peers: Vec<SocketAddr>,
    auth: Option<(String, String, Vec<u8>)>,
    key: Option<[u8; 16]>,
    fingerprint: bool,
}

impl Req {
    fn new(method: u16) -> Self {
        static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Req {
            method,
            class: Class::Request,
            txid: [n; 12],
            attrs: Vec::new(),
            peers: Vec::new(),
            auth: None,
            key: None,
            fingerprint: true,
        }
    }
    fn attr(mut self, typ: u16, value: &[u8]) -> Self {
        self.attrs.push((typ, value.to_vec()));
        self
    }
    fn udp_transport(self) -> Self {
        self.attr(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0])
    }
    fn peer(mut self, peer: &str) -> Self {
        self.peers.push(peer.parse().unwrap());
        self
    }
    fn creds(mut self, username: &str, password: &str, nonce: &[u8]) -> Self {
        self.key = Some(long_term_key(username, REALM, password));
        self.auth = Some((username.into(), REALM.into(), nonce.to_vec()));
        self
    }
    fn build(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 1500];
        let mut w = MessageWriter::new(&mut buf, self.method, self.class, &self.txid).unwrap();
        for (typ, value) in &self.attrs {
            w.attr(*typ, value).unwrap();
        }
        for peer in &self.peers {
            w.xor_address(attr::XOR_PEER_ADDRESS, *peer).unwrap();
        }
        if let Some((user, realm, nonce)) = &self.auth {
            w.attr(attr::USERNAME, user.as_bytes()).unwrap();
            w.attr(attr::REALM, realm.as_bytes()).unwrap();
            w.attr(attr::NONCE, nonce).unwrap();
        }
        if let Some(key) = &self.key {
            w.message_integrity(key).unwrap();
        }
        if self.fingerprint {
            w.fingerprint().unwrap();
        }
        let len = w.finish();
        buf.truncate(len);
        buf
    }
}

/// A decoded reply, owned so the harness can be reused.
#[derive(Debug)]
pub(super) struct Resp {
    bytes: Vec<u8>,
}

impl Resp {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("server replies parse")
    }
    fn class(&self) -> Class {
        self.msg().class()
    }
    fn code(&self) -> Option<u16> {
        let msg = self.msg();
        let a = msg.get(attr::ERROR_CODE)?;
        Some(attr::error_code(a.value).unwrap().0)
    }
    fn text(&self, typ: u16) -> Option<String> {
        let msg = self.msg();
        let a = msg.get(typ)?;
        Some(attr::text(a.value).unwrap().to_owned())
    }
    fn addr(&self, typ: u16) -> Option<SocketAddr> {
        let msg = self.msg();
        let a = msg.get(typ)?;
        Some(attr::xor_address(a.value, &msg.transaction_id()).unwrap())
    }
    fn lifetime(&self) -> Option<u32> {
        let msg = self.msg();
        Some(attr::u32_value(msg.get(attr::LIFETIME)?.value).unwrap())
    }
}

pub(super) enum Got {
    Nothing,
    Reply(Resp),
    ToPeer(RelayHandle, SocketAddr, Vec<u8>),
}

impl Harness {
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.server.handle_timeout(self.now, &mut self.relays);
    }
    fn send(&mut self, from: FiveTuple, bytes: &[u8]) -> Got {
        let mut scratch = [0u8; SCRATCH_LEN];
        match self
            .server
            .handle_client(self.now, from, bytes, &mut scratch, &mut self.relays)
        {
            ClientAction::None => Got::Nothing,
            ClientAction::Reply(r) => Got::Reply(Resp { bytes: r.to_vec() }),
            ClientAction::ToPeer {
                relay,
                peer,
                payload,
                ..
            } => Got::ToPeer(relay, peer, payload.to_vec()),
        }
    }
    fn reply(&mut self, from: FiveTuple, req: &Req) -> Resp {
        match self.send(from, &req.build()) {
            Got::Reply(r) => r,
            _ => panic!("expected a reply"),
        }
    }
    /// The nonce a 401 hands out.
    fn nonce(&mut self, from: FiveTuple) -> Vec<u8> {
        let r = self.reply(from, &Req::new(method::ALLOCATE).udp_transport());
        assert_eq!(r.code(), Some(401));
        r.text(attr::NONCE).unwrap().into_bytes()
    }
    fn rest_user(&self, user: &str, valid_for: u64) -> (String, String) {
        let name = format!("{}:{user}", START_UNIX + valid_for);
        let password = rest_password(SECRET.as_bytes(), &name);
        (name, password)
    }
    /// Allocates for `from` and returns (username, password, nonce, relayed address).
    fn allocate(&mut self, from: FiveTuple) -> (String, String, Vec<u8>, SocketAddr) {
        let nonce = self.nonce(from);
        let (user, pass) = self.rest_user("alice", 3600);
        let r = self.reply(
            from,
            &Req::new(method::ALLOCATE)
                .udp_transport()
                .creds(&user, &pass, &nonce),
        );
        assert_eq!(r.class(), Class::Success, "{:?}", r.code());
        let relayed = r.addr(attr::XOR_RELAYED_ADDRESS).unwrap();
        (user, pass, nonce, relayed)
    }
    fn peer_packet(&mut self, relay: RelayHandle, peer: &str, payload: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
        let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
        match self
            .server
            .handle_peer(self.now, relay, peer.parse().unwrap(), &mut buf, range)
        {
            PeerAction::None => None,
            PeerAction::ToClient { data, .. } => Some(data.to_vec()),
        }
    }
}

mod allocate;
mod auth;
mod limits;
mod relay;
