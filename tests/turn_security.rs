//! Security defaults from DESIGN.md, checked with an independent client (requests built with
//! the webrtc-rs `stun` crate): the peer filter in every address encoding, BBB-format REST
//! credentials, malformed input, and the size of unauthenticated answers.
//!
//! Relay port ranges used here: k = 12..=19 and 30..=32, 36.

mod common;

use common::stun_client::*;
use common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;
use stun::attributes::*;
use stun::message::*;

fn creds(secret: &str) -> (String, String) {
    let username = format!("{}:security-test", unix_now() + 3600);
    let password = rest_password(secret, &username);
    (username, password)
}

fn client(server: SocketAddr, secret: &str) -> TurnClient {
    let (u, p) = creds(secret);
    TurnClient::new(Transport::udp(server), &u, &p)
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().expect("ipv6 literal"))
}

/// Every IPv6 encoding of an IPv4 address that a filter must see through.
fn v6_encodings(ip: Ipv4Addr) -> Vec<(String, IpAddr)> {
    let o = ip.octets();
    let hi = u16::from_be_bytes([o[0], o[1]]);
    let lo = u16::from_be_bytes([o[2], o[3]]);
    vec![
        (format!("::ffff:{ip}"), IpAddr::V6(ip.to_ipv6_mapped())),
        (
            format!("::{ip}"),
            IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo)),
        ),
        (
            format!("2002:{hi:x}:{lo:x}::"),
            IpAddr::V6(Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 0)),
        ),
        (
            format!("64:ff9b::{ip}"),
            IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo)),
        ),
    ]
}

fn forbidden_v4() -> Vec<IpAddr> {
    vec![
        v4(0, 0, 0, 0),
        v4(127, 0, 0, 1),
        v4(10, 1, 2, 3),
        v4(172, 16, 0, 1),
        v4(192, 168, 1, 1),
        v4(100, 64, 0, 1),
        v4(192, 0, 0, 1),
        v4(198, 18, 0, 1),
        v4(169, 254, 169, 254),
        v4(224, 0, 0, 1),
        v4(240, 0, 0, 1),
        v4(255, 255, 255, 255),
    ]
}

fn forbidden_v6() -> Vec<(String, IpAddr)> {
    let mut list: Vec<(String, IpAddr)> = ["::", "::1", "fe80::1", "fc00::1", "fec0::1", "ff02::1"]
        .iter()
        .map(|s| (s.to_string(), v6(s)))
        .collect();
    for ip in [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(10, 0, 0, 1),
    ] {
        list.extend(v6_encodings(ip));
    }
    list
}

/// One CreatePermission per peer; returns (peer, outcome) rows.
fn permission_matrix(
    c: &mut TurnClient,
    peers: &[(String, IpAddr)],
) -> Vec<(String, Result<(), u16>)> {
    peers
        .iter()
        .map(|(name, ip)| {
            let r = c.create_permission(SocketAddr::new(*ip, 9));
            (name.clone(), r)
        })
        .collect()
}

fn start_bare(k: u16, extra_ips: Vec<IpAddr>, allow_loopback: bool) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = ServerSpec::new(bare_conf(dir.path(), ""), k);
    spec.extra_ips = extra_ips;
    spec.allow_loopback = allow_loopback;
    (Server::start(&spec), dir)
}

/// Checks each row; against coturn, prints the rows where coturn lets a peer through instead
/// of failing (coturn has no built-in private-range filter; that is why plenary exists).
fn check_refused(rows: &[(String, Result<(), u16>)], allowed_codes: &[u16], what: &str) {
    let mut bad = Vec::new();
    for (name, r) in rows {
        let ok = matches!(r, Err(code) if allowed_codes.contains(code));
        if !ok {
            bad.push(format!("{name}: {r:?}"));
        }
    }
    if bad.is_empty() {
        return;
    }
    match server_kind() {
        ServerKind::Plenary => panic!(
            "{what}: these peers were not refused with {allowed_codes:?}:\n  {}",
            bad.join("\n  ")
        ),
        ServerKind::Coturn => note_difference(&format!(
            "{what}: coturn does not refuse (expected for coturn):\n  {}",
            bad.join("\n  ")
        )),
    }
}

#[test]
fn peer_filter_matrix_ipv4_allocation() {
    let (server, _dir) = start_bare(12, vec![], false);
    let mut c = client(server.addr(), BARE_SECRET);
    let relayed = c.allocate(None).expect("allocate");
    assert!(
        relayed.is_ipv4(),
        "relayed address {relayed} should be IPv4"
    );

    let v4_rows = permission_matrix(
        &mut c,
        &forbidden_v4()
            .into_iter()
            .map(|ip| (ip.to_string(), ip))
            .collect::<Vec<_>>(),
    );
    check_refused(&v4_rows, &[403], "IPv4 peers on an IPv4 allocation");
    // An IPv6 peer on an IPv4 allocation is refused either way; 443 is the family mismatch.
    let v6_rows = permission_matrix(&mut c, &forbidden_v6());
    for (name, r) in &v6_rows {
        assert!(
            matches!(r, Err(403) | Err(443)),
            "IPv6 peer {name} on an IPv4 allocation: {r:?} (want 403 or 443)"
        );
    }
    // A public address is fine (CreatePermission only: nothing is ever sent to it).
    assert_eq!(
        c.create_permission(SocketAddr::new(v4(8, 8, 8, 8), 53)),
        Ok(()),
        "public peer 8.8.8.8 refused"
    );
    // The one peer the server is allowed to reach still works after the refusals.
    assert!(c.refresh(600).is_ok(), "allocation broken after refusals");
}

#[test]
fn peer_filter_matrix_ipv6_allocation() {
    let (server, _dir) = start_bare(13, vec![IpAddr::V6(Ipv6Addr::LOCALHOST)], false);
    let (u, p) = creds(BARE_SECRET);
    let mut c = TurnClient::new(Transport::udp(server.addr_v6()), &u, &p);
    let relayed = c.allocate(Some(FAMILY_V6)).expect("IPv6 allocate on ::1");
    assert!(
        relayed.is_ipv6(),
        "relayed address {relayed} should be IPv6"
    );

    let rows = permission_matrix(&mut c, &forbidden_v6());
    check_refused(&rows, &[403], "IPv6 peers on an IPv6 allocation");
    for ip in forbidden_v4() {
        let r = c.create_permission(SocketAddr::new(ip, 9));
        assert!(
            matches!(r, Err(403) | Err(443)),
            "IPv4 peer {ip} on an IPv6 allocation: {r:?} (want 403 or 443)"
        );
    }
    assert_eq!(
        c.create_permission(SocketAddr::new(v6("2001:4860:4860::8888"), 53)),
        Ok(()),
        "public IPv6 peer refused"
    );
}

fn start_bare_with(k: u16, allow_loopback: bool, allowed: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = ServerSpec::new(bare_conf(dir.path(), ""), k);
    spec.allow_loopback = allow_loopback;
    spec.allowed_peer_ips = allowed.iter().map(|s| s.to_string()).collect();
    (Server::start(&spec), dir)
}

#[test]
fn own_address_refused_even_with_loopback_allowed() {
    // Loopback opened for 127.0.0.0/8, yet the server's own listening and relay address
    // (127.0.0.1) stays closed: it is not named by allowed-peer-ip.
    let (server, _dir) = start_bare_with(14, true, &["127.0.0.2"]);
    let mut c = client(server.addr(), BARE_SECRET);
    c.allocate(None).expect("allocate");
    assert_eq!(
        c.create_permission(SocketAddr::new(v4(127, 0, 0, 2), 9)),
        Ok(()),
        "127.0.0.2 is allowed and loopback is open"
    );
    let own = c.create_permission(server.addr());
    let own_relay = c.create_permission(SocketAddr::new(v4(127, 0, 0, 1), server.relay_range.0));
    let own_mapped = c.create_permission(SocketAddr::new(
        IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        server.port,
    ));
    match server_kind() {
        ServerKind::Plenary => {
            assert_eq!(own, Err(403), "server's own listening address allowed");
            assert_eq!(own_relay, Err(403), "server's own relay address allowed");
            assert!(
                matches!(own_mapped, Err(403) | Err(443)),
                "own address as ::ffff:127.0.0.1: {own_mapped:?}"
            );
        }
        ServerKind::Coturn => note_difference(&format!(
            "coturn with --allow-loopback-peers lets 127.0.0.1 (its own address) through: {own:?} {own_relay:?}"
        )),
    }
}

/// Loopback needs allow-loopback-peers, which opens it by itself as in coturn (issue 15: an
/// operator's coturn habit); allowed-peer-ip alone does not.
#[test]
fn loopback_needs_allow_loopback_peers_which_alone_opens_it() {
    let peer = SocketAddr::new(v4(127, 0, 0, 2), 9);
    let cases: [(bool, &[&str], bool); 3] = [
        (true, &[], true),
        (false, &["127.0.0.2"], false),
        (true, &["127.0.0.2"], true),
    ];
    for (i, (allow_loopback, allowed, want_ok)) in cases.into_iter().enumerate() {
        let (server, _dir) = start_bare_with(30 + i as u16, allow_loopback, allowed);
        let mut c = client(server.addr(), BARE_SECRET);
        c.allocate(None).expect("allocate");
        let got = c.create_permission(peer);
        let want = if want_ok { Ok(()) } else { Err(403) };
        let what = format!(
            "127.0.0.2 with allow-loopback-peers={allow_loopback}, allowed-peer-ip={allowed:?}: got {got:?}, want {want:?}"
        );
        match server_kind() {
            ServerKind::Plenary => assert_eq!(got, want, "{what}"),
            ServerKind::Coturn if got != want => note_difference(&what),
            ServerKind::Coturn => {}
        }
    }
}

#[test]
fn forbidden_peer_gets_no_data_and_no_channel() {
    // Loopback without --allow-loopback-peers: an echo socket on 127.0.0.2 must see nothing.
    let (server, _dir) = start_bare(15, vec![], false);
    let echo = UdpSocket::bind("127.0.0.2:0").expect("bind echo");
    echo.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let echo_addr = echo.local_addr().expect("addr");
    let mut c = client(server.addr(), BARE_SECRET);
    c.allocate(None).expect("allocate");
    assert_eq!(c.create_permission(echo_addr), Err(403));
    assert_eq!(c.channel_bind(0x4000, echo_addr), Err(403));
    for _ in 0..5 {
        c.send_indication(echo_addr, b"must not arrive");
    }
    let mut buf = [0u8; 256];
    let got = echo.recv_from(&mut buf);
    assert!(
        got.is_err(),
        "a forbidden peer received relayed data: {got:?}"
    );
}

// ---- (b) BBB-format credentials on the installer's config ----

fn install_server(k: u16) -> (Server, String) {
    let conf = fixture(INSTALL_FIXTURE);
    let secret = conf_value(&conf, "static-auth-secret");
    let spec = ServerSpec::new(conf, k);
    (Server::start(&spec), secret)
}

fn allocate_with(server: &Server, username: &str, password: &str) -> Result<SocketAddr, u16> {
    let mut c = TurnClient::new(Transport::udp(server.addr()), username, password);
    c.allocate(None)
}

#[test]
fn rest_credentials_bbb_format() {
    let (server, secret) = install_server(16);
    let now = unix_now();

    let with_user = format!("{}:bbb-user-42", now + 600);
    assert!(
        allocate_with(&server, &with_user, &rest_password(&secret, &with_user)).is_ok(),
        "expiry:user credential refused"
    );
    let bare = format!("{}", now + 600);
    assert!(
        allocate_with(&server, &bare, &rest_password(&secret, &bare)).is_ok(),
        "bare expiry credential refused"
    );
    // The pair `plenary cred` prints is accepted as is.
    if server.kind == ServerKind::Plenary {
        let (u, p) = plenary_cred(&secret, Some("cred-user"), 600);
        assert!(
            allocate_with(&server, &u, &p).is_ok(),
            "plenary cred pair refused"
        );
    }

    let wrong = format!("{}:bbb-user", now + 600);
    assert_eq!(
        allocate_with(&server, &wrong, &rest_password("some-other-secret", &wrong)),
        Err(401),
        "wrong secret accepted"
    );
    let expired = format!("{}:bbb-user", now - 120);
    assert_eq!(
        allocate_with(&server, &expired, &rest_password(&secret, &expired)),
        Err(401),
        "expired credential accepted"
    );
    for garbage in [
        "not-a-timestamp",
        "abc:def",
        ":",
        "99999999999999999999999:x",
        "-5:x",
    ] {
        assert_eq!(
            allocate_with(&server, garbage, &rest_password(&secret, garbage)),
            Err(401),
            "garbage username {garbage:?} accepted"
        );
    }
}

#[test]
fn missing_integrity_gets_401_with_realm_and_nonce() {
    let (server, _secret) = install_server(17);
    let realm = conf_value(&fixture(INSTALL_FIXTURE), "realm");
    let mut t = Transport::udp(server.addr());

    // First contact: no credentials at all.
    let req = request(
        METHOD_ALLOCATE,
        vec![Box::new(RawAttr(
            ATTR_REQUESTED_TRANSPORT,
            vec![UDP, 0, 0, 0],
        ))],
    );
    let resp = t.transact(&req, Duration::from_secs(5)).expect("answer");
    assert_eq!(error_code(&resp), Some(401));
    assert_eq!(
        text_attr(&resp, ATTR_REALM).as_deref(),
        Some(realm.as_str())
    );
    let nonce = resp.get(ATTR_NONCE).expect("NONCE in 401");
    assert!(!nonce.is_empty());

    // USERNAME, REALM and NONCE but no MESSAGE-INTEGRITY.
    let username = format!("{}:bbb-user", unix_now() + 600);
    let req = request(
        METHOD_ALLOCATE,
        vec![
            Box::new(RawAttr(ATTR_REQUESTED_TRANSPORT, vec![UDP, 0, 0, 0])),
            Box::new(RawAttr(ATTR_USERNAME, username.into_bytes())),
            Box::new(RawAttr(ATTR_REALM, realm.clone().into_bytes())),
            Box::new(RawAttr(ATTR_NONCE, nonce)),
        ],
    );
    let resp = t.transact(&req, Duration::from_secs(5)).expect("answer");
    assert_eq!(
        error_code(&resp),
        Some(401),
        "no MESSAGE-INTEGRITY must be 401"
    );
    assert!(resp.contains(ATTR_REALM), "401 without REALM");
    assert!(resp.contains(ATTR_NONCE), "401 without NONCE");
    assert!(!resp.contains(ATTR_MESSAGE_INTEGRITY));
}

// ---- (c) malformed input ----

fn valid_binding() -> Vec<u8> {
    request(METHOD_BINDING, vec![]).raw
}

/// 1000 datagrams of garbage in a dozen shapes, deterministic (seeded).
fn malformed_datagrams() -> Vec<Vec<u8>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EC0_0001);
    let mut out = Vec::with_capacity(1000);
    for i in 0..1000u32 {
        let mut b = valid_binding();
        let pkt = match i % 12 {
            0 => (0..rng.gen_range(0..1400)).map(|_| rng.gen()).collect(),
            1 => {
                let n = rng.gen_range(0..b.len());
                b.truncate(n);
                b
            }
            2 => {
                b[4] ^= 0xFF; // bad magic cookie
                b
            }
            3 => {
                b[2..4].copy_from_slice(&0x0400u16.to_be_bytes()); // length past the end
                b
            }
            4 => {
                b[3] = 3; // length not a multiple of 4
                b.extend_from_slice(&[0, 0, 0]);
                b
            }
            5 => {
                // Huge ChannelData length with a tiny body.
                let ch: u16 = rng.gen_range(0x4000..=0x7FFF);
                let mut v = ch.to_be_bytes().to_vec();
                v.extend_from_slice(&0xFFFFu16.to_be_bytes());
                v.extend_from_slice(&[1, 2, 3, 4]);
                v
            }
            6 => {
                // An attribute whose length runs past the message.
                let mut m = request(METHOD_ALLOCATE, vec![]).raw;
                m.extend_from_slice(&ATTR_USERNAME.value().to_be_bytes());
                m.extend_from_slice(&0x0FF0u16.to_be_bytes());
                m.extend_from_slice(b"abcd");
                let len = u16::try_from(m.len() - 20).expect("len");
                m[2..4].copy_from_slice(&len.to_be_bytes());
                m
            }
            7 => {
                // Allocate with a bogus MESSAGE-INTEGRITY and random USERNAME/REALM/NONCE.
                let junk = |rng: &mut rand::rngs::StdRng, n| -> Vec<u8> {
                    (0..n).map(|_| rng.gen()).collect()
                };
                let u = junk(&mut rng, 40);
                let r = junk(&mut rng, 20);
                let n = junk(&mut rng, 30);
                let mi = junk(&mut rng, 20);
                request(
                    METHOD_ALLOCATE,
                    vec![
                        Box::new(RawAttr(ATTR_REQUESTED_TRANSPORT, vec![UDP, 0, 0, 0])),
                        Box::new(RawAttr(ATTR_USERNAME, u)),
                        Box::new(RawAttr(ATTR_REALM, r)),
                        Box::new(RawAttr(ATTR_NONCE, n)),
                        Box::new(RawAttr(ATTR_MESSAGE_INTEGRITY, mi)),
                    ],
                )
                .raw
            }
            8 => {
                // Random method and class, random attributes after a valid header.
                let t: u16 = rng.gen::<u16>() & 0x3FFF;
                b[0..2].copy_from_slice(&t.to_be_bytes());
                let extra: Vec<u8> = (0..rng.gen_range(1..64) * 4).map(|_| rng.gen()).collect();
                b.extend_from_slice(&extra);
                let len = u16::try_from(b.len() - 20).expect("len");
                b[2..4].copy_from_slice(&len.to_be_bytes());
                b
            }
            9 => {
                // FINGERPRINT with a wrong value.
                let mut m = request(METHOD_BINDING, vec![]).raw;
                m.extend_from_slice(&ATTR_FINGERPRINT.value().to_be_bytes());
                m.extend_from_slice(&4u16.to_be_bytes());
                m.extend_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]);
                let len = u16::try_from(m.len() - 20).expect("len");
                m[2..4].copy_from_slice(&len.to_be_bytes());
                m
            }
            10 => {
                // XOR-PEER-ADDRESS of a bad family and short lengths inside a Send indication.
                let mut m = request(METHOD_SEND, vec![]).raw;
                m[0..2].copy_from_slice(&0x0016u16.to_be_bytes());
                m.extend_from_slice(&ATTR_XOR_PEER_ADDRESS.value().to_be_bytes());
                m.extend_from_slice(&2u16.to_be_bytes());
                m.extend_from_slice(&[0x00, 0x07, 0, 0]);
                let len = u16::try_from(m.len() - 20).expect("len");
                m[2..4].copy_from_slice(&len.to_be_bytes());
                m
            }
            _ => vec![0u8; rng.gen_range(0..4)],
        };
        out.push(pkt);
    }
    out
}

#[test]
fn malformed_burst_then_binding_still_answered() {
    let (mut server, _dir) = start_bare(18, vec![], false);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for (i, pkt) in malformed_datagrams().iter().enumerate() {
        let _ = sock.send_to(pkt, server.addr());
        if i % 100 == 99 {
            // Short pauses so the burst is not merely dropped by the socket buffer.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // The same garbage over a TCP stream, then the connection is dropped.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(server.addr()).expect("tcp connect");
        s.set_write_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        for pkt in malformed_datagrams().iter().take(200) {
            if s.write_all(pkt).is_err() {
                break; // the server may close a stream that makes no sense: fine
            }
        }
    }
    let mapped = udp_binding(server.addr(), Duration::from_secs(5));
    assert!(
        mapped.is_some(),
        "Binding unanswered after the malformed burst"
    );
    let mut t = Transport::tcp(server.addr());
    let resp = t.transact(&request(METHOD_BINDING, vec![]), Duration::from_secs(5));
    assert!(
        resp.as_ref().is_some_and(is_success),
        "Binding over TCP unanswered after the burst"
    );
    assert!(server.is_alive(), "server process died");
}

// ---- (d) amplification ----

fn attr_wire_len(m: &Message, t: AttrType) -> usize {
    match m.get(t) {
        Ok(v) => 4 + v.len().div_ceil(4) * 4,
        Err(_) => 0,
    }
}

#[test]
fn unauthenticated_401_is_not_an_amplifier() {
    let (server, _dir) = start_bare(19, vec![], false);
    let mut t = Transport::udp(server.addr());
    let requests = [
        // The smallest valid Allocate.
        request(
            METHOD_ALLOCATE,
            vec![Box::new(RawAttr(
                ATTR_REQUESTED_TRANSPORT,
                vec![UDP, 0, 0, 0],
            ))],
        ),
        // With FINGERPRINT, as browsers send it.
        request(
            METHOD_ALLOCATE,
            vec![
                Box::new(RawAttr(ATTR_REQUESTED_TRANSPORT, vec![UDP, 0, 0, 0])),
                Box::new(stun::fingerprint::FINGERPRINT),
            ],
        ),
    ];
    for req in &requests {
        let resp = t.transact(req, Duration::from_secs(5)).expect("answer");
        assert_eq!(error_code(&resp), Some(401));
        let budget = req.raw.len()
            + attr_wire_len(&resp, ATTR_REALM)
            + attr_wire_len(&resp, ATTR_NONCE)
            + attr_wire_len(&resp, ATTR_ERROR_CODE);
        let size = resp.raw.len();
        if size > budget {
            let extra: Vec<String> = resp
                .attributes
                .0
                .iter()
                .map(|a| format!("{}({})", a.typ, a.length))
                .collect();
            let msg = format!(
                "401 is {size} bytes for a {}-byte request; budget {budget}; attributes: {}",
                req.raw.len(),
                extra.join(", ")
            );
            match server_kind() {
                ServerKind::Plenary => panic!("{msg}"),
                ServerKind::Coturn => note_difference(&msg),
            }
        }
    }
}

// ---- 401 rate limit (plenary's TOML format; coturn has no such limit) ----

#[test]
fn unauthorized_replies_are_rate_limited() {
    if server_kind() == ServerKind::Coturn {
        note_difference("coturn does not rate-limit 401 responses: test not applicable");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("turn.toml");
    std::fs::write(
        &conf,
        "[listen]\nips = [\"127.0.0.1\"]\nport = 3478\n\
         [relay]\nips = [\"127.0.0.1\"]\n\
         [auth]\nrealm = \"toml.example.test\"\nsecrets = [\"toml-secret\"]\n\
         [limits]\nunauthorized_per_sec = 5\n\
         [server]\nworkers = 1\n",
    )
    .expect("write toml");
    let mut spec = ServerSpec::new(conf, 36);
    spec.toml = true;
    let server = Server::start(&spec);

    // 60 requests paced over ~120 ms (no socket-buffer loss), then count the answers.
    let count_answers = |method: Method| -> usize {
        let mut t = Transport::udp(server.addr());
        for _ in 0..60 {
            let attrs: Vec<Box<dyn Setter>> = if method == METHOD_ALLOCATE {
                vec![Box::new(RawAttr(
                    ATTR_REQUESTED_TRANSPORT,
                    vec![UDP, 0, 0, 0],
                ))]
            } else {
                vec![]
            };
            t.send_raw(&request(method, attrs).raw);
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut answers = 0;
        while t.recv_frame(Duration::from_millis(500)).is_some() {
            answers += 1;
        }
        answers
    };
    let challenged = count_answers(METHOD_ALLOCATE);
    assert!(
        (1..=10).contains(&challenged),
        "{challenged} 401s for 60 Allocates at unauthorized_per_sec = 5 (want 1..=10)"
    );
    // Binding is not an error reply: all answered, so the loss above is the limiter's.
    assert_eq!(count_answers(METHOD_BINDING), 60, "Binding answers");
}
