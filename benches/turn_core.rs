//! The TURN core's per-packet paths, in process (no sockets): ChannelData and Send
//! indications client→peer, peer→client framing, Binding, and an authenticated request,
//! with 10,000 allocations in the table so lookups are measured at size.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use plenary_turn::config::TurnConfig;
use plenary_turn::server::{
    ClientAction, Family, FiveTuple, OpenError, OpenedRelay, PeerAction, PortChoice, RelayHandle,
    RelayPorts, Server, ServerSettings, Shared, Transport, PEER_HEADROOM, PEER_TAILROOM,
    SCRATCH_LEN,
};
use plenary_turn::stun::integrity::{long_term_key, rest_password};
use plenary_turn::stun::{attr, method, Class, Message, MessageWriter};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

const ALLOCATIONS: u32 = 10_000;
const SECRET: &str = "bench-secret";
const REALM: &str = "bench";

struct Ports(u32);

impl RelayPorts for Ports {
    fn open(&mut self, _: Family, _: PortChoice) -> Result<OpenedRelay, OpenError> {
        self.0 += 1;
        let port = 10_000 + (self.0 % 50_000) as u16;
        Ok(OpenedRelay {
            handle: RelayHandle(self.0),
            local: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), port),
        })
    }
    fn hold(&mut self, _: SocketAddr) -> bool {
        true
    }
    fn unhold(&mut self, _: SocketAddr) {}
    fn close(&mut self, _: RelayHandle) {}
}

fn client(i: u32) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(198, 51, (i >> 8) as u8, i as u8)),
            40_000,
        ),
        server: "203.0.113.1:3478".parse().unwrap(),
    }
}

fn peer() -> SocketAddr {
    "8.8.8.8:5000".parse().unwrap()
}

struct Creds {
    user: String,
    key: [u8; 16],
    nonce: Vec<u8>,
}

fn request(
    m: u16,
    class: Class,
    txid: u32,
    creds: Option<&Creds>,
    build: impl FnOnce(&mut MessageWriter),
) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&txid.to_be_bytes());
    let mut w = MessageWriter::new(&mut buf, m, class, &id).unwrap();
    build(&mut w);
    if let Some(c) = creds {
        w.attr(attr::USERNAME, c.user.as_bytes()).unwrap();
        w.attr(attr::REALM, REALM.as_bytes()).unwrap();
        w.attr(attr::NONCE, &c.nonce).unwrap();
        w.message_integrity(&c.key).unwrap();
    }
    w.fingerprint().unwrap();
    let len = w.finish();
    buf.truncate(len);
    buf
}

fn reply(
    server: &mut Server,
    ports: &mut Ports,
    now: Instant,
    from: FiveTuple,
    req: &[u8],
) -> Vec<u8> {
    let mut scratch = [0u8; SCRATCH_LEN];
    match server.handle_client(now, from, req, &mut scratch, ports) {
        ClientAction::Reply(r) => r.to_vec(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// A server with `ALLOCATIONS` allocations, each with a channel 0x4000 to `peer()`.
fn populated() -> (Server, Ports, Instant, Creds) {
    let mut config = TurnConfig {
        realm: REALM.into(),
        ..TurnConfig::default()
    };
    config.auth.secrets = vec![SECRET.into()];
    // 10k challenges at one instant would trip the 401 rate limit.
    config.limits.unauthorized_per_sec = 0;
    let shared = Shared::new(ServerSettings::from_config(&config, Vec::new()), [9; 32]);
    let now = Instant::now();
    let start_unix = 1_800_000_000;
    let mut server = Server::new(shared, now, start_unix);
    let mut ports = Ports(0);
    let user = format!("{}:bench", start_unix + 86_400);
    let key = long_term_key(&user, REALM, &rest_password(SECRET.as_bytes(), &user));
    let mut creds = Creds {
        user,
        key,
        nonce: Vec::new(),
    };
    let transport = |w: &mut MessageWriter| {
        w.attr(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0])
            .unwrap()
    };
    for i in 0..ALLOCATIONS {
        let from = client(i);
        // Nonces are bound to the client IP: fetch one per client.
        let challenge = reply(
            &mut server,
            &mut ports,
            now,
            from,
            &request(method::ALLOCATE, Class::Request, i, None, transport),
        );
        let msg = Message::parse(&challenge).unwrap();
        creds.nonce = msg.get(attr::NONCE).unwrap().value.to_vec();
        let ok = reply(
            &mut server,
            &mut ports,
            now,
            from,
            &request(method::ALLOCATE, Class::Request, i, Some(&creds), transport),
        );
        assert_eq!(Message::parse(&ok).unwrap().class(), Class::Success);
        let bind = request(method::CHANNEL_BIND, Class::Request, i, Some(&creds), |w| {
            w.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]).unwrap();
            w.xor_address(attr::XOR_PEER_ADDRESS, peer()).unwrap();
        });
        let ok = reply(&mut server, &mut ports, now, from, &bind);
        assert_eq!(Message::parse(&ok).unwrap().class(), Class::Success);
    }
    assert_eq!(server.allocation_count(), ALLOCATIONS as usize);
    (server, ports, now, creds)
}

fn relay_paths(c: &mut Criterion) {
    let (mut server, mut ports, now, creds) = populated();
    let mut group = c.benchmark_group("turn_core_10k_allocations");
    group.throughput(Throughput::Elements(1));
    let mut scratch = [0u8; SCRATCH_LEN];

    let mut channel_data = vec![0x40, 0x00, 0, 160];
    channel_data.extend_from_slice(&[0xab; 160]);
    let mut i = 0u32;
    group.bench_function("channel_data_client_to_peer", |b| {
        b.iter(|| {
            i = (i + 7919) % ALLOCATIONS;
            let action = server.handle_client(
                now,
                client(i),
                black_box(&channel_data),
                &mut scratch,
                &mut ports,
            );
            assert!(matches!(action, ClientAction::ToPeer { .. }));
        })
    });

    let send = request(method::SEND, Class::Indication, 1, None, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer()).unwrap();
        w.attr(attr::DATA, &[0xab; 160]).unwrap();
    });
    group.bench_function("send_indication_client_to_peer", |b| {
        b.iter(|| {
            i = (i + 7919) % ALLOCATIONS;
            let action =
                server.handle_client(now, client(i), black_box(&send), &mut scratch, &mut ports);
            assert!(matches!(action, ClientAction::ToPeer { .. }));
        })
    });

    let mut buf = vec![0u8; PEER_HEADROOM + 160 + PEER_TAILROOM];
    group.bench_function("peer_to_client_channel_data", |b| {
        b.iter(|| {
            i = (i + 7919) % ALLOCATIONS;
            // Relay handles were handed out as 1..=ALLOCATIONS.
            let range = PEER_HEADROOM..PEER_HEADROOM + 160;
            let action = server.handle_peer(now, RelayHandle(i + 1), peer(), &mut buf, range);
            assert!(matches!(action, PeerAction::ToClient { .. }));
        })
    });

    let other_port: SocketAddr = "8.8.8.8:6000".parse().unwrap();
    group.bench_function("peer_to_client_data_indication", |b| {
        b.iter(|| {
            i = (i + 7919) % ALLOCATIONS;
            let range = PEER_HEADROOM..PEER_HEADROOM + 160;
            let action = server.handle_peer(now, RelayHandle(i + 1), other_port, &mut buf, range);
            assert!(matches!(action, PeerAction::ToClient { .. }));
        })
    });

    let binding = request(method::BINDING, Class::Request, 3, None, |_| {});
    group.bench_function("binding_request", |b| {
        b.iter(|| {
            let action = server.handle_client(
                now,
                client(1),
                black_box(&binding),
                &mut scratch,
                &mut ports,
            );
            assert!(matches!(action, ClientAction::Reply(_)));
        })
    });

    // An authenticated Refresh: nonce check, integrity check, signed reply.
    let from = client(5);
    let challenge = {
        let req = request(method::REFRESH, Class::Request, 5, None, |_| {});
        reply(&mut server, &mut ports, now, from, &req)
    };
    let nonce = Message::parse(&challenge)
        .unwrap()
        .get(attr::NONCE)
        .unwrap()
        .value
        .to_vec();
    let creds = Creds { nonce, ..creds };
    let refresh = request(method::REFRESH, Class::Request, 6, Some(&creds), |w| {
        w.u32(attr::LIFETIME, 600).unwrap();
    });
    group.bench_function("authenticated_refresh", |b| {
        b.iter(|| {
            let action =
                server.handle_client(now, from, black_box(&refresh), &mut scratch, &mut ports);
            assert!(matches!(action, ClientAction::Reply(_)));
        })
    });
    group.finish();

    c.bench_function("populate_10k_allocations", |b| {
        b.iter_batched(|| (), |_| populated(), BatchSize::PerIteration)
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = relay_paths
}
criterion_main!(benches);
