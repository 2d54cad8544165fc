//! Allocate, Refresh, dual-stack, EVEN-PORT/RESERVATION-TOKEN, expiry and drain.

use super::*;

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
    let relay = h.relays.open[0];
    h.advance(Duration::from_secs(599));
    assert_eq!(h.server.allocation_count(), 1);
    assert!(h.relays.closed.is_empty());
    h.advance(Duration::from_secs(2));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.relays.closed, vec![relay]);
    assert!(h.relays.open.is_empty());
    assert_eq!(h.shared.total_allocations(), 0);
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
