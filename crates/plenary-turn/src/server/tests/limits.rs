//! Quotas, port exhaustion and the bandwidth cap.

use super::*;

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
