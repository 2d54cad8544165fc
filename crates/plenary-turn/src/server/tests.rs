//! Drives the core directly: no sockets, no sleeps, time passed in.

use super::*;
use crate::config::{PeerRules, TurnConfig};
use crate::stun::integrity::{long_term_key, rest_password};
use crate::stun::{attr, method, Class, Message, MessageWriter};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "Zm9vYmFyLXRlc3Qtc2VjcmV0LW9ubHk=";
const REALM: &str = "bbb.example.coop";
const START_UNIX: u64 = 1_800_000_000;

#[derive(Default)]
struct FakeRelays {
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

struct Harness {
    server: Server,
    relays: FakeRelays,
    start: Instant,
    now: Instant,
    shared: Arc<Shared>,
}

fn udp(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: client.parse().unwrap(),
        server: "203.0.113.1:3478".parse().unwrap(),
    }
}

fn harness_with(config: TurnConfig) -> Harness {
    let own = vec![
        "203.0.113.1".parse().unwrap(),
        "203.0.113.10".parse().unwrap(),
    ];
    let shared = Shared::new(ServerSettings::from_config(&config, own), [42; 32]);
    let start = Instant::now();
    Harness {
        server: Server::new(shared.clone(), start, START_UNIX),
        relays: FakeRelays::default(),
        start,
        now: start,
        shared,
    }
}

fn config() -> TurnConfig {
    let mut config = TurnConfig {
        realm: REALM.into(),
        ..TurnConfig::default()
    };
    config.auth.secrets = vec![SECRET.into()];
    config
}

fn harness() -> Harness {
    harness_with(config())
}

/// A request as a client would build it.
struct Req {
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
struct Resp {
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

enum Got {
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

#[test]
fn binding_answers_with_the_mapped_address() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let r = h.reply(from, &Req::new(method::BINDING));
    assert_eq!(r.class(), Class::Success);
    assert_eq!(r.addr(attr::XOR_MAPPED_ADDRESS), Some(from.client));
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn unauthenticated_allocate_gets_401_with_no_state_and_no_amplification() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let mut req = Req::new(method::ALLOCATE).udp_transport();
    req.fingerprint = false;
    let r = h.reply(from, &req);
    assert_eq!(r.code(), Some(401));
    assert_eq!(r.text(attr::REALM).as_deref(), Some(REALM));
    assert!(r.text(attr::NONCE).is_some());
    assert!(r.msg().get(attr::SOFTWARE).is_none());
    assert!(r.msg().get(attr::MESSAGE_INTEGRITY).is_none());
    // Header + ERROR-CODE + REALM + NONCE is all the RFC requires; nothing more.
    let required = 20 + 8 + 4 + REALM.len().next_multiple_of(4) + 4 + 24;
    assert_eq!(r.bytes.len(), required);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.shared.total_allocations(), 0);
}

#[test]
fn rest_credentials_allocate_and_reply_with_integrity() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let nonce = h.nonce(from);
    let (user, pass) = h.rest_user("alice", 60);
    let req = Req::new(method::ALLOCATE)
        .udp_transport()
        .creds(&user, &pass, &nonce);
    let r = h.reply(from, &req);
    assert_eq!(r.class(), Class::Success);
    let key = long_term_key(&user, REALM, &pass);
    assert_eq!(
        r.msg().check_integrity(&key),
        crate::stun::IntegrityCheck::Valid
    );
    assert_eq!(
        r.addr(attr::XOR_RELAYED_ADDRESS),
        Some("203.0.113.10:50001".parse().unwrap())
    );
    assert_eq!(r.addr(attr::XOR_MAPPED_ADDRESS), Some(from.client));
    assert_eq!(r.lifetime(), Some(600));
    assert!(r.msg().has_fingerprint());
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.shared.total_allocations(), 1);
}

#[test]
fn bare_expiry_username_and_rotated_secrets_work() {
    let mut config = config();
    config.auth.secrets = vec!["old-secret".into(), SECRET.into()];
    let mut h = harness_with(config);
    let from = udp("198.51.100.7:40000");
    let nonce = h.nonce(from);
    let user = format!("{}", START_UNIX + 100);
    let pass = rest_password(SECRET.as_bytes(), &user);
    let r = h.reply(
        from,
        &Req::new(method::ALLOCATE)
            .udp_transport()
            .creds(&user, &pass, &nonce),
    );
    assert_eq!(r.class(), Class::Success);
}

#[test]
fn bad_credentials_are_refused() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let nonce = h.nonce(from);
    let (user, _) = h.rest_user("alice", 60);
    let wrong_secret = rest_password(b"not-the-secret", &user);
    let (expired_user, expired_pass) = {
        let name = format!("{}:alice", START_UNIX - 1);
        let pass = rest_password(SECRET.as_bytes(), &name);
        (name, pass)
    };
    for (u, p) in [
        (user.as_str(), wrong_secret.as_str()),
        (expired_user.as_str(), expired_pass.as_str()),
        ("garbage", "garbage"),
        ("", ""),
    ] {
        let r = h.reply(
            from,
            &Req::new(method::ALLOCATE)
                .udp_transport()
                .creds(u, p, &nonce),
        );
        assert_eq!(r.code(), Some(401), "user {u:?}");
    }
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn forged_and_expired_nonces_get_438() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let (user, pass) = h.rest_user("alice", 7200);
    let r = h.reply(
        from,
        &Req::new(method::ALLOCATE).udp_transport().creds(
            &user,
            &pass,
            b"0123456789abcdef01234567",
        ),
    );
    assert_eq!(r.code(), Some(438));
    let nonce = r.text(attr::NONCE).unwrap().into_bytes();
    h.advance(Duration::from_secs(601));
    let r = h.reply(
        from,
        &Req::new(method::ALLOCATE)
            .udp_transport()
            .creds(&user, &pass, &nonce),
    );
    assert_eq!(r.code(), Some(438), "nonce expired");
    // A nonce is bound to the client address it was given to.
    let other = udp("198.51.100.8:40000");
    let fresh = h.nonce(from);
    let r = h.reply(
        other,
        &Req::new(method::ALLOCATE)
            .udp_transport()
            .creds(&user, &pass, &fresh),
    );
    assert_eq!(r.code(), Some(438));
}

#[test]
fn allocate_retransmission_and_mismatch() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let nonce = h.nonce(from);
    let (user, pass) = h.rest_user("alice", 60);
    let req = Req::new(method::ALLOCATE)
        .udp_transport()
        .creds(&user, &pass, &nonce);
    let first = h.reply(from, &req);
    let again = h.reply(from, &req);
    assert_eq!(again.class(), Class::Success);
    assert_eq!(
        first.addr(attr::XOR_RELAYED_ADDRESS),
        again.addr(attr::XOR_RELAYED_ADDRESS)
    );
    let other = Req::new(method::ALLOCATE)
        .udp_transport()
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &other).code(), Some(437));
    assert_eq!(h.relays.open.len(), 1);
}

#[test]
fn allocate_checks_transport_and_family() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let nonce = h.nonce(from);
    let (user, pass) = h.rest_user("alice", 60);
    let tcp = Req::new(method::ALLOCATE)
        .attr(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_TCP, 0, 0, 0])
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &tcp).code(), Some(442));
    let missing = Req::new(method::ALLOCATE).creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &missing).code(), Some(400));
    let v6 = Req::new(method::ALLOCATE)
        .udp_transport()
        .attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        )
        .creds(&user, &pass, &nonce);
    assert_eq!(
        h.reply(from, &v6).code(),
        Some(440),
        "no IPv6 relay configured"
    );
    let bogus = Req::new(method::ALLOCATE)
        .udp_transport()
        .attr(attr::REQUESTED_ADDRESS_FAMILY, &[0x07, 0, 0, 0])
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &bogus).code(), Some(440));
    let unknown = Req::new(method::ALLOCATE)
        .udp_transport()
        .attr(0x0031, &[1, 2, 3, 4])
        .creds(&user, &pass, &nonce);
    let r = h.reply(from, &unknown);
    assert_eq!(r.code(), Some(420));
    assert!(r.msg().get(attr::UNKNOWN_ATTRIBUTES).is_some());
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn dual_allocation_reports_both_or_an_address_error() {
    let mut h = harness();
    h.relays.v6 = true;
    let from = udp("198.51.100.7:40000");
    let nonce = h.nonce(from);
    let (user, pass) = h.rest_user("alice", 60);
    let req = Req::new(method::ALLOCATE)
        .udp_transport()
        .attr(
            attr::ADDITIONAL_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        )
        .creds(&user, &pass, &nonce);
    let r = h.reply(from, &req);
    assert_eq!(r.class(), Class::Success);
    let relayed: Vec<_> = r
        .msg()
        .attrs()
        .filter(|a| a.typ == attr::XOR_RELAYED_ADDRESS)
        .map(|a| attr::xor_address(a.value, &r.msg().transaction_id()).unwrap())
        .collect();
    assert_eq!(relayed.len(), 2);
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());

    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let nonce = h.nonce(from);
    let req = Req::new(method::ALLOCATE)
        .udp_transport()
        .attr(
            attr::ADDITIONAL_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        )
        .creds(&user, &pass, &nonce);
    let r = h.reply(from, &req);
    assert_eq!(r.class(), Class::Success);
    let err = r
        .msg()
        .get(attr::ADDRESS_ERROR_CODE)
        .expect("ADDRESS-ERROR-CODE");
    assert_eq!(err.value[..4], [attr::FAMILY_IPV6, 0, 4, 40]);
}

#[test]
fn refresh_clamps_and_zero_deletes() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let (user, pass, nonce, _) = h.allocate(from);
    let refresh = |secs: u32| {
        Req::new(method::REFRESH)
            .attr(attr::LIFETIME, &secs.to_be_bytes())
            .creds(&user, &pass, &nonce)
    };
    assert_eq!(h.reply(from, &refresh(7200)).lifetime(), Some(3600));
    assert_eq!(h.reply(from, &refresh(30)).lifetime(), Some(600));
    let r = h.reply(from, &refresh(0));
    assert_eq!(r.lifetime(), Some(0));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.relays.closed.len(), 1);
    assert_eq!(h.shared.total_allocations(), 0);
    assert_eq!(h.reply(from, &refresh(600)).code(), Some(437));
}

#[test]
fn a_different_user_cannot_touch_an_allocation() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let (_, _, nonce, _) = h.allocate(from);
    let (mallory, pass) = h.rest_user("mallory", 60);
    let r = h.reply(
        from,
        &Req::new(method::REFRESH).creds(&mallory, &pass, &nonce),
    );
    assert_eq!(r.code(), Some(441));
}

#[test]
fn permissions_gate_relaying_both_ways_and_expire() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let (user, pass, nonce, _) = h.allocate(from);
    let relay = h.relays.open[0];
    let send = Req {
        class: Class::Indication,
        ..Req::new(method::SEND)
            .peer("192.0.2.200:9000")
            .attr(attr::DATA, b"hello")
    };
    assert!(
        matches!(h.send(from, &send.build()), Got::Nothing),
        "no permission yet"
    );
    assert!(h.peer_packet(relay, "192.0.2.200:9000", b"x").is_none());

    // 192.0.2.0/24 is documentation space: refused by the built-in list.
    let perm = Req::new(method::CREATE_PERMISSION)
        .peer("192.0.2.200:9000")
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &perm).code(), Some(403));

    let perm = Req::new(method::CREATE_PERMISSION)
        .peer("8.8.8.8:9000")
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &perm).class(), Class::Success);
    let send = Req {
        class: Class::Indication,
        ..Req::new(method::SEND)
            .peer("8.8.8.8:1234")
            .attr(attr::DATA, b"hello")
    };
    match h.send(from, &send.build()) {
        Got::ToPeer(r, peer, payload) => {
            assert_eq!(r, relay);
            assert_eq!(peer, "8.8.8.8:1234".parse().unwrap());
            assert_eq!(payload, b"hello");
        }
        _ => panic!("Send indication not relayed"),
    }
    // Peer → client without a channel: a Data indication naming the peer.
    let framed = h.peer_packet(relay, "8.8.8.8:1234", b"world!").unwrap();
    let msg = Message::parse(&framed).unwrap();
    assert_eq!(
        (msg.class(), msg.method()),
        (Class::Indication, method::DATA)
    );
    assert_eq!(
        attr::xor_address(
            msg.get(attr::XOR_PEER_ADDRESS).unwrap().value,
            &msg.transaction_id()
        ),
        Ok("8.8.8.8:1234".parse().unwrap())
    );
    assert_eq!(msg.get(attr::DATA).unwrap().value, b"world!");
    assert!(msg.has_fingerprint());

    h.advance(Duration::from_secs(301));
    assert!(
        matches!(h.send(from, &send.build()), Got::Nothing),
        "permission expired"
    );
    assert!(h.peer_packet(relay, "8.8.8.8:1234", b"x").is_none());
}

#[test]
fn channels_relay_with_channel_data_framing() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let (user, pass, nonce, _) = h.allocate(from);
    let relay = h.relays.open[0];
    let bind = |ch: u16, peer: &str| {
        Req::new(method::CHANNEL_BIND)
            .attr(attr::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0])
            .peer(peer)
            .creds(&user, &pass, &nonce)
    };
    assert_eq!(
        h.reply(from, &bind(0x3fff, "8.8.8.8:5000")).code(),
        Some(400)
    );
    assert_eq!(
        h.reply(from, &bind(0x8000, "8.8.8.8:5000")).code(),
        Some(400)
    );
    assert_eq!(
        h.reply(from, &bind(0x4001, "10.0.0.1:5000")).code(),
        Some(403)
    );
    assert_eq!(
        h.reply(from, &bind(0x4001, "8.8.8.8:5000")).class(),
        Class::Success
    );
    assert_eq!(
        h.reply(from, &bind(0x4001, "8.8.4.4:5000")).code(),
        Some(400)
    );

    let mut cd = vec![0x40, 0x01, 0, 3];
    cd.extend_from_slice(b"abc\0");
    match h.send(from, &cd) {
        Got::ToPeer(_, peer, payload) => {
            assert_eq!(peer, "8.8.8.8:5000".parse().unwrap());
            assert_eq!(payload, b"abc");
        }
        _ => panic!("ChannelData not relayed"),
    }
    let unbound = [0x40, 0x02, 0, 1, 7, 0, 0, 0];
    assert!(matches!(h.send(from, &unbound), Got::Nothing));

    let framed = h.peer_packet(relay, "8.8.8.8:5000", b"xyz").unwrap();
    assert_eq!(framed, [0x40, 0x01, 0, 3, b'x', b'y', b'z']);
    // Another port of the same IP has a permission but no channel: Data indication.
    let framed = h.peer_packet(relay, "8.8.8.8:5001", b"xyz").unwrap();
    assert_eq!(Message::parse(&framed).unwrap().method(), method::DATA);

    // Channel expiry (600 s) outlives the permission (300 s): refresh the permission.
    for _ in 0..2 {
        h.advance(Duration::from_secs(290));
        let perm = Req::new(method::CREATE_PERMISSION)
            .peer("8.8.8.8:5000")
            .creds(&user, &pass, &nonce);
        // Nonce lifetime is 600 s: fetch a fresh one via a 438.
        let r = h.reply(from, &perm);
        if r.code() == Some(438) {
            let fresh = r.text(attr::NONCE).unwrap().into_bytes();
            let perm = Req::new(method::CREATE_PERMISSION)
                .peer("8.8.8.8:5000")
                .creds(&user, &pass, &fresh);
            assert_eq!(h.reply(from, &perm).class(), Class::Success);
        } else {
            assert_eq!(r.class(), Class::Success);
        }
    }
    h.advance(Duration::from_secs(30));
    assert!(
        matches!(h.send(from, &cd), Got::Nothing),
        "channel expired after 600 s"
    );
}

#[test]
fn channel_data_over_tcp_is_padded() {
    let mut h = harness();
    let from = FiveTuple {
        transport: Transport::Tcp,
        ..udp("198.51.100.7:40000")
    };
    let (user, pass, nonce, _) = h.allocate(from);
    let relay = h.relays.open[0];
    let bind = Req::new(method::CHANNEL_BIND)
        .attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
        .peer("8.8.8.8:5000")
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &bind).class(), Class::Success);
    let framed = h.peer_packet(relay, "8.8.8.8:5000", b"xyz").unwrap();
    assert_eq!(framed, [0x40, 0x00, 0, 3, b'x', b'y', b'z', 0]);
    h.server.client_closed(from, &mut h.relays);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.relays.closed, vec![relay]);
}

#[test]
fn quotas_and_port_exhaustion() {
    let mut config = config();
    config.limits.user_quota = 1;
    config.limits.total_quota = 2;
    let mut h = harness_with(config);
    h.allocate(udp("198.51.100.7:40000"));
    let from = udp("198.51.100.7:40001");
    let nonce = h.nonce(from);
    let (user, pass) = h.rest_user("alice", 60);
    let again = Req::new(method::ALLOCATE)
        .udp_transport()
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &again).code(), Some(486), "user quota");
    let (bob, bob_pass) = h.rest_user("bob", 60);
    let bob_req = Req::new(method::ALLOCATE)
        .udp_transport()
        .creds(&bob, &bob_pass, &nonce);
    assert_eq!(h.reply(from, &bob_req).class(), Class::Success);
    let from3 = udp("198.51.100.7:40002");
    let nonce3 = h.nonce(from3);
    let (carol, carol_pass) = h.rest_user("carol", 60);
    let carol_req = Req::new(method::ALLOCATE)
        .udp_transport()
        .creds(&carol, &carol_pass, &nonce3);
    assert_eq!(h.reply(from3, &carol_req).code(), Some(486), "total quota");

    let mut h = harness();
    h.relays.exhausted = true;
    let from = udp("198.51.100.7:40000");
    let nonce = h.nonce(from);
    let req = Req::new(method::ALLOCATE)
        .udp_transport()
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &req).code(), Some(508));
    assert_eq!(h.shared.total_allocations(), 0, "quota returned");
}

#[test]
fn draining_refuses_new_allocations_only() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let (user, pass, nonce, _) = h.allocate(from);
    h.shared.begin_drain();
    let other = udp("198.51.100.7:40001");
    let req = Req::new(method::ALLOCATE)
        .udp_transport()
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(other, &req).code(), Some(508));
    let refresh = Req::new(method::REFRESH).creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &refresh).class(), Class::Success);
}

#[test]
fn allocations_expire_and_release_their_relay() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    h.allocate(from);
    h.advance(Duration::from_secs(599));
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.relays.closed.len(), 1);
    assert_eq!(h.shared.total_allocations(), 0);
    assert!(h.start < h.now);
}

#[test]
fn malformed_input_is_counted_and_binding_still_works() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    let valid = Req::new(method::BINDING).build();
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 100],
        vec![0; 19],
        vec![0x40, 0x00, 0xff, 0xff],
    ];
    for cut in 0..valid.len() {
        garbage.push(valid[..cut].to_vec());
    }
    let mut bad_cookie = valid.clone();
    bad_cookie[5] ^= 1;
    garbage.push(bad_cookie);
    let mut x: u32 = 0x1234_5678;
    for len in 0..200usize {
        let mut g = vec![0u8; len];
        for b in g.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        garbage.push(g);
    }
    for g in &garbage {
        let _ = h.send(from, g);
    }
    assert!(h.server.stats().malformed_dropped >= 20);
    assert_eq!(
        h.reply(from, &Req::new(method::BINDING)).class(),
        Class::Success
    );
}

#[test]
fn unknown_methods_get_400_and_responses_are_ignored() {
    let mut h = harness();
    let from = udp("198.51.100.7:40000");
    assert_eq!(h.reply(from, &Req::new(0x0ff)).code(), Some(400));
    let response = Req {
        class: Class::Success,
        ..Req::new(method::BINDING)
    };
    assert!(matches!(h.send(from, &response.build()), Got::Nothing));
}

#[test]
fn unauthorized_replies_are_rate_limited() {
    let mut config = config();
    config.limits.unauthorized_per_sec = 3;
    let mut h = harness_with(config);
    let req = Req::new(method::ALLOCATE).udp_transport().build();
    let mut answered = 0;
    for port in 0..10u16 {
        let from = udp(&format!("198.51.100.7:{}", 40000 + port));
        if let Got::Reply(_) = h.send(from, &req) {
            answered += 1;
        }
    }
    assert_eq!(answered, 3);
    assert_eq!(h.server.stats().unauthorized_dropped_rate, 7);
    h.advance(Duration::from_secs(1));
    assert!(matches!(h.send(udp("198.51.100.7:1"), &req), Got::Reply(_)));
}

#[test]
fn bandwidth_cap_drops_excess() {
    let mut config = config();
    config.limits.max_bps = 1000;
    let mut h = harness_with(config);
    let from = udp("198.51.100.7:40000");
    let (user, pass, nonce, _) = h.allocate(from);
    let perm = Req::new(method::CREATE_PERMISSION)
        .peer("8.8.8.8:1")
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(from, &perm).class(), Class::Success);
    let send = Req {
        class: Class::Indication,
        ..Req::new(method::SEND)
            .peer("8.8.8.8:1")
            .attr(attr::DATA, &[0u8; 400])
    }
    .build();
    let relayed = (0..5)
        .filter(|_| matches!(h.send(from, &send), Got::ToPeer(..)))
        .count();
    assert_eq!(relayed, 2);
    assert_eq!(h.server.stats().bandwidth_dropped, 3);
}

#[test]
fn peer_policy_follows_bbb_deny_all_allow_self() {
    let mut config = config();
    config.peers = PeerRules {
        allowed: vec!["127.0.0.1".parse().unwrap()],
        denied: vec![
            "0.0.0.0-255.255.255.255".parse().unwrap(),
            "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse()
                .unwrap(),
        ],
        allow_loopback: true,
    };
    let mut h = harness_with(config);
    let from = udp("198.51.100.7:40000");
    let (user, pass, nonce, _) = h.allocate(from);
    for (peer, code) in [
        ("127.0.0.1:5000", None),
        ("8.8.8.8:5000", Some(403)),
        ("127.0.0.2:1", Some(403)),
    ] {
        let perm = Req::new(method::CREATE_PERMISSION)
            .peer(peer)
            .creds(&user, &pass, &nonce);
        assert_eq!(h.reply(from, &perm).code(), code, "{peer}");
    }
    let v6 = Req::new(method::CREATE_PERMISSION)
        .peer("[::1]:5000")
        .creds(&user, &pass, &nonce);
    assert_eq!(
        h.reply(from, &v6).code(),
        Some(443),
        "IPv6 peer on an IPv4 allocation"
    );
}

#[test]
fn even_port_with_reservation_serves_rtp_rtcp_pairs() {
    let mut h = harness();
    let rtp = udp("198.51.100.7:40000");
    let nonce = h.nonce(rtp);
    let (user, pass) = h.rest_user("alice", 60);
    // What turnutils_uclient sends: EVEN-PORT with the R bit, then the token.
    let even = Req::new(method::ALLOCATE)
        .udp_transport()
        .attr(attr::EVEN_PORT, &[0x80])
        .creds(&user, &pass, &nonce);
    let r = h.reply(rtp, &even);
    assert_eq!(r.class(), Class::Success, "{:?}", r.code());
    let rtp_port = r.addr(attr::XOR_RELAYED_ADDRESS).unwrap().port();
    assert_eq!(rtp_port % 2, 0);
    let token = r
        .msg()
        .get(attr::RESERVATION_TOKEN)
        .expect("token")
        .value
        .to_vec();
    assert_eq!(token.len(), 8);
    assert_eq!(h.relays.held.len(), 1);

    let rtcp = udp("198.51.100.7:40001");
    let with_even = Req::new(method::ALLOCATE)
        .udp_transport()
        .attr(attr::RESERVATION_TOKEN, &token)
        .attr(attr::EVEN_PORT, &[0])
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(rtcp, &with_even).code(), Some(400));
    let redeem = Req::new(method::ALLOCATE)
        .udp_transport()
        .attr(attr::RESERVATION_TOKEN, &token)
        .creds(&user, &pass, &nonce);
    let r = h.reply(rtcp, &redeem);
    assert_eq!(r.class(), Class::Success);
    assert_eq!(
        r.addr(attr::XOR_RELAYED_ADDRESS).unwrap().port(),
        rtp_port + 1
    );
    assert!(h.relays.held.is_empty());

    // A token works once.
    let again = udp("198.51.100.7:40002");
    let redeem = Req::new(method::ALLOCATE)
        .udp_transport()
        .attr(attr::RESERVATION_TOKEN, &token)
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(again, &redeem).code(), Some(508));

    // An unredeemed hold is given up after 30 s.
    let other = udp("198.51.100.7:40003");
    let even = Req::new(method::ALLOCATE)
        .udp_transport()
        .attr(attr::EVEN_PORT, &[0x80])
        .creds(&user, &pass, &nonce);
    assert_eq!(h.reply(other, &even).class(), Class::Success);
    assert_eq!(h.relays.held.len(), 1);
    h.advance(Duration::from_secs(31));
    assert!(h.relays.held.is_empty());
}
