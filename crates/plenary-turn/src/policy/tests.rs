use super::*;
use crate::config::PeerRules;
use DenyReason::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn range(s: &str) -> IpRange {
    s.parse().unwrap()
}

fn policy(allowed: &[&str], denied: &[&str], allow_loopback: bool) -> PeerPolicy {
    let rules = PeerRules {
        allowed: allowed.iter().map(|s| range(s)).collect(),
        denied: denied.iter().map(|s| range(s)).collect(),
        allow_loopback,
    };
    PeerPolicy::new(rules, Vec::new())
}

fn empty() -> PeerPolicy {
    policy(&[], &[], false)
}

/// Every IPv6 spelling of an IPv4 address that the policy must see through.
fn encodings(v4: Ipv4Addr) -> Vec<(&'static str, IpAddr)> {
    let a = u128::from(u32::from(v4));
    let mut out = vec![
        ("mapped", Ipv6Addr::from(0xffff_u128 << 32 | a)),
        ("translated", Ipv6Addr::from(0xffff_0000_u128 << 32 | a)),
        ("6to4", Ipv6Addr::from(0x2002_u128 << 112 | a << 80 | 1)),
        ("nat64", Ipv6Addr::from(0x0064_ff9b_u128 << 96 | a)),
        (
            "nat64-local",
            Ipv6Addr::from(0x0064_ff9b_0001_u128 << 80 | a),
        ),
        (
            "teredo",
            Ipv6Addr::from(0x2001_0000_u128 << 96 | u128::from(!u32::from(v4))),
        ),
    ];
    // `::` and `::1` are not IPv4-compatible spellings of 0.0.0.0 / 0.0.0.1.
    if u32::from(v4) > 1 {
        out.push(("compatible", Ipv6Addr::from(a)));
    }
    out.into_iter().map(|(n, a)| (n, IpAddr::V6(a))).collect()
}

/// First and last address of every built-in IPv4 range, and its reason.
const V4_DENIED: &[(&str, DenyReason)] = &[
    ("0.0.0.0", Unspecified),
    ("0.0.0.1", Unspecified),
    ("0.255.255.255", Unspecified),
    ("10.0.0.0", Private),
    ("10.255.255.255", Private),
    ("100.64.0.0", Private),
    ("100.127.255.255", Private),
    ("127.0.0.1", Loopback),
    ("127.0.0.0", Loopback),
    ("127.255.255.255", Loopback),
    ("169.254.0.0", LinkLocal),
    ("169.254.169.254", LinkLocal),
    ("169.254.255.255", LinkLocal),
    ("172.16.0.0", Private),
    ("172.31.255.255", Private),
    ("192.0.0.0", Reserved),
    ("192.0.0.255", Reserved),
    ("192.0.2.0", Reserved),
    ("192.0.2.255", Reserved),
    ("192.88.99.1", Reserved),
    ("192.168.0.0", Private),
    ("192.168.255.255", Private),
    ("198.18.0.0", Reserved),
    ("198.19.255.255", Reserved),
    ("198.51.100.7", Reserved),
    ("203.0.113.0", Reserved),
    ("203.0.113.255", Reserved),
    ("224.0.0.0", Multicast),
    ("224.0.0.251", Multicast),
    ("239.255.255.255", Multicast),
    ("240.0.0.0", Reserved),
    ("255.255.255.254", Reserved),
    ("255.255.255.255", Reserved),
];

/// Public neighbours of the ranges above: the edges must be exact.
const V4_PUBLIC: &[&str] = &[
    "1.1.1.1",
    "8.8.8.8",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.0",
    "192.0.3.0",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "203.0.112.255",
    "223.255.255.255",
];

const V6_DENIED: &[(&str, DenyReason)] = &[
    ("::", Unspecified),
    ("::1", Loopback),
    ("fe80::", LinkLocal),
    ("fe80::1", LinkLocal),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LinkLocal),
    ("fc00::", Private),
    ("fd12:3456::1", Private),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Private),
    ("fec0::1", Private),
    ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Private),
    ("ff00::", Multicast),
    ("ff02::1", Multicast),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Multicast),
    ("2001:db8::1", Reserved),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Reserved),
    ("100::", Reserved),
    ("100::ffff:ffff:ffff:ffff", Reserved),
    ("2001:2::1", Reserved),
    ("3fff::1", Reserved),
    ("3fff:fff::1", Reserved),
    // Teredo whose client address is public is still refused: it tunnels to any IPv4.
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", Reserved),
];

const V6_PUBLIC: &[&str] = &[
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "2a00:1450:4001::1",
    "100:0:0:1::",
    "2001:db7:ffff::1",
    "2001:db9::1",
    "2002:808:808::1",
    "64:ff9b::808:808",
    "64:ff9b:1::808:808",
    "::ffff:8.8.8.8",
    "::8.8.8.8",
    "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "4000::1",
];

#[test]
fn every_builtin_v4_range_is_denied_in_every_encoding() {
    let p = empty();
    for &(addr, reason) in V4_DENIED {
        let v4: Ipv4Addr = addr.parse().unwrap();
        assert_eq!(p.check(v4.into()), Verdict::Denied(reason), "{addr}");
        for (name, v6) in encodings(v4) {
            assert_eq!(
                p.check(v6),
                Verdict::Denied(reason),
                "{addr} as {name} {v6}"
            );
        }
    }
}

#[test]
fn public_v4_is_allowed_in_every_encoding_except_teredo() {
    let p = empty();
    for &addr in V4_PUBLIC {
        let v4: Ipv4Addr = addr.parse().unwrap();
        assert_eq!(p.check(v4.into()), Verdict::Allowed, "{addr}");
        for (name, v6) in encodings(v4) {
            let want = if name == "teredo" {
                Verdict::Denied(Reserved)
            } else {
                Verdict::Allowed
            };
            assert_eq!(p.check(v6), want, "{addr} as {name} {v6}");
        }
    }
}

#[test]
fn builtin_v6_ranges_are_denied() {
    let p = empty();
    for &(addr, reason) in V6_DENIED {
        assert_eq!(p.check(ip(addr)), Verdict::Denied(reason), "{addr}");
    }
}

#[test]
fn public_v6_is_allowed_by_default() {
    let p = empty();
    for &addr in V6_PUBLIC {
        assert_eq!(p.check(ip(addr)), Verdict::Allowed, "{addr}");
    }
}

/// BBB's installer: deny everything, allow the BBB host itself on loopback.
fn bbb(allow_loopback: bool) -> PeerPolicy {
    policy(
        &["127.0.0.1"],
        &[
            "0.0.0.0-255.255.255.255",
            "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ],
        allow_loopback,
    )
}

#[test]
fn bbb_pattern_with_allow_loopback() {
    let p = bbb(true);
    assert_eq!(p.check(ip("127.0.0.1")), Verdict::Allowed);
    assert_eq!(p.check(ip("127.0.0.2")), Verdict::Denied(DeniedByConfig));
    assert_eq!(p.check(ip("8.8.8.8")), Verdict::Denied(DeniedByConfig));
    assert_eq!(p.check(ip("10.0.0.1")), Verdict::Denied(DeniedByConfig));
    assert_eq!(p.check(ip("2001:4860::1")), Verdict::Denied(DeniedByConfig));
    assert_eq!(p.check(ip("::1")), Verdict::Denied(DeniedByConfig));
    // The IPv6 spelling of the allowed host is still in the denied IPv6 range.
    assert_eq!(
        p.check(ip("::ffff:127.0.0.1")),
        Verdict::Denied(DeniedByConfig)
    );
    assert_eq!(p.check(ip("0.0.0.0")), Verdict::Denied(Unspecified));
}

#[test]
fn bbb_pattern_without_allow_loopback() {
    let p = bbb(false);
    assert_eq!(p.check(ip("127.0.0.1")), Verdict::Denied(Loopback));
    assert_eq!(p.check(ip("::ffff:127.0.0.1")), Verdict::Denied(Loopback));
    assert_eq!(p.check(ip("::1")), Verdict::Denied(Loopback));
    assert_eq!(p.check(ip("8.8.8.8")), Verdict::Denied(DeniedByConfig));
}

#[test]
fn the_loopback_flag_alone_opens_loopback_as_in_coturn() {
    // The flag alone lifts the built-in loopback entry (coturn's allow-loopback-peers), and
    // that entry only: denied ranges and the server's own addresses still refuse.
    let p = policy(&[], &[], true);
    assert_eq!(p.check(ip("127.0.0.1")), Verdict::Allowed);
    assert_eq!(p.check(ip("127.9.9.9")), Verdict::Allowed);
    assert_eq!(p.check(ip("::1")), Verdict::Allowed);
    assert_eq!(p.check(ip("::ffff:127.0.0.1")), Verdict::Allowed);
    assert_eq!(p.check(ip("10.0.0.1")), Verdict::Denied(Private));
    assert_eq!(p.check(ip("169.254.169.254")), Verdict::Denied(LinkLocal));
    assert_eq!(p.check(ip("0.0.0.0")), Verdict::Denied(Unspecified));
    let p = policy(&[], &["127.0.0.2"], true);
    assert_eq!(p.check(ip("127.0.0.2")), Verdict::Denied(DeniedByConfig));
    assert_eq!(p.check(ip("127.0.0.3")), Verdict::Allowed);
    let own = PeerPolicy::new(
        PeerRules {
            allow_loopback: true,
            ..PeerRules::default()
        },
        vec![ip("127.0.0.1"), ip("::1")],
    );
    assert_eq!(own.check(ip("127.0.0.1")), Verdict::Denied(ServerOwn));
    assert_eq!(
        own.check(ip("::ffff:127.0.0.1")),
        Verdict::Denied(ServerOwn)
    );
    assert_eq!(own.check(ip("::1")), Verdict::Denied(ServerOwn));
    assert_eq!(own.check(ip("127.0.0.2")), Verdict::Allowed);
}

#[test]
fn loopback_needs_the_flag_even_when_allowed() {
    // An allowed range alone: the flag is missing.
    let p = policy(&["127.0.0.0/8", "::1"], &[], false);
    assert_eq!(p.check(ip("127.0.0.1")), Verdict::Denied(Loopback));
    assert_eq!(p.check(ip("::1")), Verdict::Denied(Loopback));
    // Both.
    let p = policy(&["127.0.0.0/8", "::1"], &[], true);
    assert_eq!(p.check(ip("127.0.0.1")), Verdict::Allowed);
    assert_eq!(p.check(ip("127.3.2.1")), Verdict::Allowed);
    assert_eq!(p.check(ip("::1")), Verdict::Allowed);
    assert_eq!(p.check(ip("::ffff:127.0.0.1")), Verdict::Allowed);
    assert_eq!(p.check(ip("2002:7f00:1::")), Verdict::Allowed);
}

#[test]
fn unspecified_cannot_be_allowed() {
    let p = policy(&["0.0.0.0-255.255.255.255", "::/0"], &[], true);
    for addr in [
        "0.0.0.0",
        "0.1.2.3",
        "::",
        "::ffff:0.0.0.0",
        "::0.0.0.2",
        "2002::1",
    ] {
        assert_eq!(p.check(ip(addr)), Verdict::Denied(Unspecified), "{addr}");
    }
    assert_eq!(p.check(ip("10.0.0.1")), Verdict::Allowed);
}

#[test]
fn allowed_private_range_wins_over_builtin() {
    let p = policy(&["10.0.0.0/8", "fd00::/8"], &[], false);
    assert_eq!(p.check(ip("10.1.2.3")), Verdict::Allowed);
    assert_eq!(p.check(ip("::ffff:10.1.2.3")), Verdict::Allowed);
    assert_eq!(p.check(ip("64:ff9b::a01:203")), Verdict::Allowed);
    assert_eq!(p.check(ip("fd00::1")), Verdict::Allowed);
    assert_eq!(p.check(ip("192.168.1.1")), Verdict::Denied(Private));
    assert_eq!(p.check(ip("fc00::1")), Verdict::Denied(Private));
}

#[test]
fn allowed_wins_over_denied() {
    let p = policy(&["8.8.8.8"], &["8.8.8.0/24"], false);
    assert_eq!(p.check(ip("8.8.8.8")), Verdict::Allowed);
    assert_eq!(p.check(ip("8.8.8.9")), Verdict::Denied(DeniedByConfig));
    assert_eq!(
        p.check(ip("::ffff:8.8.8.9")),
        Verdict::Denied(DeniedByConfig)
    );
    assert_eq!(
        p.check(ip("2002:808:809::")),
        Verdict::Denied(DeniedByConfig)
    );
    assert_eq!(p.check(ip("8.8.4.4")), Verdict::Allowed);
}

#[test]
fn embedded_v4_must_pass_even_if_the_v6_form_is_allowed() {
    let p = policy(&["::/0"], &[], false);
    assert_eq!(p.check(ip("::ffff:10.0.0.1")), Verdict::Denied(Private));
    assert_eq!(p.check(ip("2002:a00:1::")), Verdict::Denied(Private));
    assert_eq!(
        p.check(ip("64:ff9b::169.254.169.254")),
        Verdict::Denied(LinkLocal)
    );
    assert_eq!(p.check(ip("fe80::1")), Verdict::Allowed);
    // Teredo allowed explicitly: the tunnelled client address is still judged.
    let p = policy(&["2001::/32"], &[], false);
    let teredo = |v4: u32| IpAddr::V6(Ipv6Addr::from(0x2001_0000_u128 << 96 | u128::from(!v4)));
    assert_eq!(p.check(teredo(0x0808_0808)), Verdict::Allowed);
    assert_eq!(p.check(teredo(0x0a00_0001)), Verdict::Denied(Private));
}

#[test]
fn mapped_config_rules_apply_to_plain_v4() {
    let p = policy(&[], &["::ffff:8.8.8.8"], false);
    assert_eq!(p.check(ip("8.8.8.8")), Verdict::Denied(DeniedByConfig));
    let p = policy(&["::ffff:10.0.0.5"], &[], false);
    assert_eq!(p.check(ip("10.0.0.5")), Verdict::Allowed);
    assert_eq!(p.check(ip("10.0.0.6")), Verdict::Denied(Private));
}

#[test]
fn server_own_addresses_are_denied_unless_allowed() {
    let own = vec![
        ip("203.0.114.5"),
        ip("2001:4860::5"),
        ip("::ffff:198.51.99.1"),
    ];
    let p = PeerPolicy::new(PeerRules::default(), own.clone());
    assert_eq!(p.check(ip("203.0.114.5")), Verdict::Denied(ServerOwn));
    assert_eq!(
        p.check(ip("::ffff:203.0.114.5")),
        Verdict::Denied(ServerOwn)
    );
    assert_eq!(p.check(ip("2002:cb00:7205::")), Verdict::Denied(ServerOwn));
    assert_eq!(p.check(ip("2001:4860::5")), Verdict::Denied(ServerOwn));
    assert_eq!(p.check(ip("198.51.99.1")), Verdict::Denied(ServerOwn));
    assert_eq!(p.check(ip("203.0.114.6")), Verdict::Allowed);
    let rules = PeerRules {
        allowed: vec![range("203.0.114.5"), range("2001:4860::5")],
        ..PeerRules::default()
    };
    let p = PeerPolicy::new(rules, own);
    assert_eq!(p.check(ip("203.0.114.5")), Verdict::Allowed);
    assert_eq!(p.check(ip("2001:4860::5")), Verdict::Allowed);
}

#[test]
fn ip_range_syntax() {
    let r = range("1.2.3.4");
    assert_eq!((r.start, r.end), (ip("1.2.3.4"), ip("1.2.3.4")));
    let r = range(" 1.2.3.4 - 1.2.3.10 ");
    assert_eq!((r.start, r.end), (ip("1.2.3.4"), ip("1.2.3.10")));
    let r = range("10.1.2.3/8");
    assert_eq!((r.start, r.end), (ip("10.0.0.0"), ip("10.255.255.255")));
    let r = range("0.0.0.0/0");
    assert_eq!((r.start, r.end), (ip("0.0.0.0"), ip("255.255.255.255")));
    let r = range("192.0.2.7/32");
    assert_eq!((r.start, r.end), (ip("192.0.2.7"), ip("192.0.2.7")));
    let r = range("fe80::/10");
    assert_eq!(r.end, ip("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    let r = range("::/0");
    assert_eq!(r.end, ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    let r = range("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    assert_eq!((r.start, r.end), (ip("::"), range("::/0").end));
    assert_eq!(range("[::1]"), IpRange::single(ip("::1")));
    for bad in [
        "",
        "foo",
        "1.2.3",
        "1.2.3.4-",
        "-1.2.3.4",
        "1.2.3.10-1.2.3.4",
        "1.2.3.4-::1",
        "1.2.3.4/33",
        "::/129",
        "1.2.3.4/x",
        "1.2.3.4/-1",
    ] {
        assert!(bad.parse::<IpRange>().is_err(), "{bad:?} should not parse");
    }
}

#[test]
fn ip_range_contains_one_family_only() {
    let r = range("10.0.0.0/8");
    assert!(r.contains(ip("10.0.0.0")));
    assert!(r.contains(ip("10.255.255.255")));
    assert!(!r.contains(ip("11.0.0.0")));
    assert!(!r.contains(ip("::ffff:10.0.0.1")));
    let r = range("::/0");
    assert!(r.contains(ip("::ffff:10.0.0.1")));
    assert!(!r.contains(ip("10.0.0.1")));
}

#[test]
fn ip_range_display_round_trips() {
    for s in ["1.2.3.4", "1.2.3.4-1.2.3.10", "::-::ffff", "fe80::1"] {
        assert_eq!(range(s).to_string(), s);
        assert_eq!(range(&range(s).to_string()), range(s));
    }
}
