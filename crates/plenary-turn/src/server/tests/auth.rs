//! Binding, authentication, nonces, rate limits and malformed input.

use super::*;

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
