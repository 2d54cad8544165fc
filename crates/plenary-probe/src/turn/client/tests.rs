//! The client driven with canned server answers: no sockets, no sleeps.

use super::*;

const PEER: &str = "127.0.0.1:40000";
const RELAYED: &str = "127.0.0.1:50001";
const REALM: &str = "probe";
const NONCE: &str = "nonce-1";

fn cfg(channel: Option<u16>, reliable: bool) -> ClientConfig {
    ClientConfig {
        credentials: Some(Credentials {
            username: "1700000000:probe0".into(),
            password: "pw".into(),
        }),
        realm: None,
        peer: PEER.parse().unwrap(),
        channel,
        reliable,
        timeout: Duration::from_secs(5),
        seed: 42,
    }
}

fn key() -> [u8; 16] {
    long_term_key("1700000000:probe0", REALM, "pw")
}

/// What the client sent, decoded: (method, txid, owned bytes).
fn sent(c: &mut TurnClient) -> (u16, TransactionId, Vec<u8>) {
    let bytes = c.poll_transmit().expect("a request to send").to_vec();
    let m = Message::parse(&bytes).expect("valid STUN");
    assert_eq!(m.class(), Class::Request);
    assert!(m.has_fingerprint());
    (m.method(), m.transaction_id(), bytes)
}

/// A response from the "server" to a request with `txid`.
fn respond(
    method: u16,
    class: Class,
    txid: &TransactionId,
    fill: impl FnOnce(&mut MessageWriter<'_>),
    key: Option<&[u8]>,
) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let mut w = MessageWriter::new(&mut buf, method, class, txid).unwrap();
    fill(&mut w);
    if let Some(k) = key {
        w.message_integrity(k).unwrap();
    }
    w.fingerprint().unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

fn unauthorized(method: u16, txid: &TransactionId, nonce: &str) -> Vec<u8> {
    respond(
        method,
        Class::Error,
        txid,
        |w| {
            w.error_code(401, "Unauthorized").unwrap();
            w.attr(attr::REALM, REALM.as_bytes()).unwrap();
            w.attr(attr::NONCE, nonce.as_bytes()).unwrap();
        },
        None,
    )
}

fn allocate_ok(txid: &TransactionId, lifetime: u32) -> Vec<u8> {
    respond(
        method::ALLOCATE,
        Class::Success,
        txid,
        |w| {
            w.xor_address(attr::XOR_RELAYED_ADDRESS, RELAYED.parse().unwrap())
                .unwrap();
            w.xor_address(attr::XOR_MAPPED_ADDRESS, "127.0.0.1:41000".parse().unwrap())
                .unwrap();
            w.u32(attr::LIFETIME, lifetime).unwrap();
        },
        Some(&key()),
    )
}

fn ok(method: u16, txid: &TransactionId) -> Vec<u8> {
    respond(method, Class::Success, txid, |_| {}, Some(&key()))
}

fn error(method: u16, txid: &TransactionId, code: u16) -> Vec<u8> {
    respond(
        method,
        Class::Error,
        txid,
        |w| w.error_code(code, "").unwrap(),
        Some(&key()),
    )
}

/// Runs the client to Ready; returns it and the time it got there.
fn ready(channel: Option<u16>) -> (TurnClient, Instant) {
    let t0 = Instant::now();
    let mut c = TurnClient::new(cfg(channel, false), t0);
    let (m, txid, bytes) = sent(&mut c);
    assert_eq!(m, method::ALLOCATE);
    let req = Message::parse(&bytes).unwrap();
    assert!(req.get(attr::REQUESTED_TRANSPORT).is_some());
    assert!(!req.has_integrity(), "first Allocate is unauthenticated");
    assert_eq!(
        c.handle_input(t0, &unauthorized(m, &txid, NONCE)),
        Input::Control
    );

    let (m, txid, bytes) = sent(&mut c);
    assert_eq!(m, method::ALLOCATE);
    let req = Message::parse(&bytes).unwrap();
    assert_eq!(req.get_text(attr::USERNAME), Ok(Some("1700000000:probe0")));
    assert_eq!(req.get_text(attr::REALM), Ok(Some(REALM)));
    assert_eq!(req.get_text(attr::NONCE), Ok(Some(NONCE)));
    assert_eq!(req.check_integrity(&key()), IntegrityCheck::Valid);
    c.handle_input(t0, &allocate_ok(&txid, 600));
    assert_eq!(
        c.poll_event(),
        Some(Event::Allocated {
            relayed: RELAYED.parse().unwrap(),
            mapped: Some("127.0.0.1:41000".parse().unwrap()),
            lifetime: 600
        })
    );
    assert_eq!(c.phase(), Phase::Permitting);

    let (m, txid, bytes) = sent(&mut c);
    let req = Message::parse(&bytes).unwrap();
    assert_eq!(
        req.get_xor_address(attr::XOR_PEER_ADDRESS),
        Ok(Some(PEER.parse().unwrap()))
    );
    assert_eq!(req.check_integrity(&key()), IntegrityCheck::Valid);
    match channel {
        Some(ch) => {
            assert_eq!(m, method::CHANNEL_BIND);
            let value = req.get(attr::CHANNEL_NUMBER).unwrap().value;
            assert_eq!(attr::channel_number(value), Ok(ch));
        }
        None => assert_eq!(m, method::CREATE_PERMISSION),
    }
    c.handle_input(t0, &ok(m, &txid));
    assert_eq!(c.poll_event(), Some(Event::Ready));
    assert_eq!(c.phase(), Phase::Ready);
    assert!(c.poll_transmit().is_none());
    (c, t0)
}

#[test]
fn authenticates_allocates_and_binds_a_channel() {
    let (mut c, t0) = ready(Some(0x4000));
    // ChannelData on our channel is data; on another channel it is ignored.
    let mut frame = vec![0x40, 0x00, 0x00, 0x03, b'a', b'b', b'c', 0];
    assert_eq!(c.handle_input(t0, &frame), Input::Data(b"abc"));
    frame[1] = 0x01;
    assert_eq!(c.handle_input(t0, &frame), Input::Ignored);
    assert_eq!(c.handle_input(t0, &[]), Input::Ignored);
    assert_eq!(c.handle_input(t0, &[0xff, 1, 2, 3]), Input::Ignored);
}

#[test]
fn permission_only_mode_takes_data_indications() {
    let (mut c, t0) = ready(None);
    let ind = respond(
        method::DATA,
        Class::Indication,
        &[9; 12],
        |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, PEER.parse().unwrap())
                .unwrap();
            w.attr(attr::DATA, b"hello").unwrap();
        },
        None,
    );
    assert_eq!(c.handle_input(t0, &ind), Input::Data(b"hello"));
}

#[test]
fn udp_requests_are_retransmitted_then_time_out() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(cfg(Some(0x4000), false), t0);
    let first = c.poll_transmit().unwrap().to_vec();
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(500)));
    c.handle_timeout(t0 + Duration::from_millis(499));
    assert!(c.poll_transmit().is_none());
    c.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(c.poll_transmit().unwrap(), &first[..], "same transaction");
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(1500)));
    let mut polls = 0;
    while let Some(t) = c.poll_timeout() {
        c.handle_timeout(t);
        polls += 1;
        assert!(polls < 20, "bounded");
    }
    assert_eq!(polls, 3, "retransmits at 1.5 s and 3.5 s, gives up at 5 s");
    assert_eq!(
        c.poll_event(),
        Some(Event::Failed(Failure::Timeout(Op::Allocate)))
    );
    assert_eq!(c.phase(), Phase::Failed);
}

#[test]
fn ipv6_peers_ask_for_an_ipv6_relay() {
    let t0 = Instant::now();
    let mut v6 = cfg(None, false);
    v6.peer = "[::1]:40000".parse().unwrap();
    let mut c = TurnClient::new(v6, t0);
    let (_, _, bytes) = sent(&mut c);
    let family = Message::parse(&bytes)
        .unwrap()
        .get(attr::REQUESTED_ADDRESS_FAMILY);
    assert_eq!(
        family.map(|a| a.value),
        Some(&[attr::FAMILY_IPV6, 0, 0, 0][..])
    );
    let mut c = TurnClient::new(cfg(None, false), t0);
    let (_, _, bytes) = sent(&mut c);
    assert!(Message::parse(&bytes)
        .unwrap()
        .get(attr::REQUESTED_ADDRESS_FAMILY)
        .is_none());
}

#[test]
fn reliable_transports_only_wait() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(cfg(None, true), t0);
    c.poll_transmit().unwrap();
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert!(c.poll_transmit().is_none());
    assert_eq!(
        c.poll_event(),
        Some(Event::Failed(Failure::Timeout(Op::Allocate)))
    );
}

#[test]
fn stale_nonce_is_retried_with_the_new_one() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(cfg(None, false), t0);
    let (m, txid, _) = sent(&mut c);
    c.handle_input(t0, &unauthorized(m, &txid, NONCE));
    let (_, txid, _) = sent(&mut c);
    let stale = respond(
        m,
        Class::Error,
        &txid,
        |w| {
            w.error_code(438, "Stale Nonce").unwrap();
            w.attr(attr::REALM, REALM.as_bytes()).unwrap();
            w.attr(attr::NONCE, b"nonce-2").unwrap();
        },
        None,
    );
    c.handle_input(t0, &stale);
    let (_, _, bytes) = sent(&mut c);
    let req = Message::parse(&bytes).unwrap();
    assert_eq!(req.get_text(attr::NONCE), Ok(Some("nonce-2")));
    assert_eq!(c.poll_event(), None);
}

#[test]
fn wrong_credentials_and_server_errors_fail_setup() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(cfg(None, false), t0);
    let (m, txid, _) = sent(&mut c);
    c.handle_input(t0, &unauthorized(m, &txid, NONCE));
    let (m, txid, _) = sent(&mut c);
    c.handle_input(t0, &unauthorized(m, &txid, NONCE));
    let failure = Failure::AuthRejected(Op::Allocate);
    assert_eq!(c.poll_event(), Some(Event::Failed(failure.clone())));
    assert_eq!(failure.label(), "401");

    let mut c = TurnClient::new(cfg(None, false), t0);
    let (m, txid, _) = sent(&mut c);
    c.handle_input(t0, &unauthorized(m, &txid, NONCE));
    let (m, txid, _) = sent(&mut c);
    c.handle_input(t0, &error(m, &txid, 486));
    let failure = Failure::Rejected {
        op: Op::Allocate,
        code: 486,
    };
    assert_eq!(failure.label(), "486");
    assert_eq!(c.poll_event(), Some(Event::Failed(failure)));
    assert!(c.poll_timeout().is_none());

    let mut anonymous = cfg(None, false);
    anonymous.credentials = None;
    let mut c = TurnClient::new(anonymous, t0);
    let (m, txid, _) = sent(&mut c);
    c.handle_input(t0, &unauthorized(m, &txid, NONCE));
    assert_eq!(
        c.poll_event(),
        Some(Event::Failed(Failure::NeedCredentials))
    );
}

#[test]
fn responses_with_a_bad_integrity_or_unknown_txid_are_ignored() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(cfg(None, false), t0);
    let (m, txid, _) = sent(&mut c);
    c.handle_input(t0, &unauthorized(m, &txid, NONCE));
    let (m, txid, _) = sent(&mut c);
    let forged = respond(m, Class::Success, &txid, |_| {}, Some(b"not the key"));
    assert_eq!(c.handle_input(t0, &forged), Input::Control);
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.phase(), Phase::Allocating);
    assert_eq!(
        c.handle_input(t0, &allocate_ok(&[1; 12], 600)),
        Input::Ignored
    );
    // The genuine answer still completes the transaction.
    c.handle_input(t0, &allocate_ok(&txid, 600));
    assert!(matches!(c.poll_event(), Some(Event::Allocated { .. })));
    // A success without XOR-RELAYED-ADDRESS is malformed.
    let mut c = TurnClient::new(cfg(None, true), t0);
    let (m, txid, _) = sent(&mut c);
    c.handle_input(t0, &ok(m, &txid));
    assert_eq!(
        c.poll_event(),
        Some(Event::Failed(Failure::Malformed(Op::Allocate)))
    );
}

#[test]
fn permissions_and_allocation_are_refreshed() {
    let (mut c, t0) = ready(Some(0x4001));
    // Permissions at 240 s and 480 s, each timed from the previous grant.
    for k in 1..=2 {
        let perm_at = t0 + PERMISSION_REFRESH * k;
        assert_eq!(c.poll_timeout(), Some(perm_at));
        c.handle_timeout(perm_at);
        let (m, txid, _) = sent(&mut c);
        assert_eq!(m, method::CHANNEL_BIND);
        c.handle_input(perm_at, &ok(m, &txid));
        assert_eq!(c.poll_event(), Some(Event::Refreshed(Op::ChannelBind)));
    }

    let alloc_at = t0 + alloc_refresh_delay(600);
    assert_eq!(alloc_refresh_delay(600), Duration::from_secs(540));
    assert_eq!(c.poll_timeout(), Some(alloc_at));
    c.handle_timeout(alloc_at);
    let (m, txid, bytes) = sent(&mut c);
    assert_eq!(m, method::REFRESH);
    assert_eq!(
        Message::parse(&bytes).unwrap().get_u32(attr::LIFETIME),
        Ok(Some(600))
    );
    // A failed refresh is reported and retried later, not spun on.
    c.handle_input(alloc_at, &error(m, &txid, 500));
    assert!(matches!(c.poll_event(), Some(Event::RefreshFailed(_))));
    assert_eq!(c.phase(), Phase::Ready);
    assert_eq!(c.poll_timeout(), Some(alloc_at + REFRESH_RETRY));
}

#[test]
fn close_releases_the_allocation() {
    let (mut c, t0) = ready(Some(0x4000));
    c.close(t0);
    let (m, txid, bytes) = sent(&mut c);
    assert_eq!(m, method::REFRESH);
    assert_eq!(
        Message::parse(&bytes).unwrap().get_u32(attr::LIFETIME),
        Ok(Some(0))
    );
    assert_eq!(c.phase(), Phase::Closing);
    c.handle_input(t0, &ok(m, &txid));
    assert_eq!(c.poll_event(), Some(Event::Closed));
    assert_eq!(c.phase(), Phase::Closed);

    // Closing before an allocation exists sends nothing.
    let mut c = TurnClient::new(cfg(None, false), t0);
    c.poll_transmit();
    c.close(t0);
    assert!(c.poll_transmit().is_none());
    assert_eq!(c.poll_event(), Some(Event::Closed));
}

#[test]
fn refresh_delay_is_sane_for_short_grants() {
    assert_eq!(alloc_refresh_delay(60), Duration::from_secs(30));
    assert_eq!(alloc_refresh_delay(0), Duration::from_secs(1));
    assert_eq!(alloc_refresh_delay(3600), Duration::from_secs(3540));
}
