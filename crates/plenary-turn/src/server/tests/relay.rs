//! Permissions, channels and the data paths both ways.

use super::*;

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
