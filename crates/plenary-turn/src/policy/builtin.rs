//! Ranges no relay should reach unless the operator names them in `allowed-peer-ip`.
//!
//! Beyond DESIGN.md's list, the documentation, benchmarking and discard ranges are refused
//! too: nothing legitimate lives there, and a relay sending to them only helps probing.

use super::DenyReason::{self, *};

/// `(network, prefix length, reason)`.
const V4: &[(u32, u8, DenyReason)] = &[
    (0x0000_0000, 8, Unspecified), // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8, Private),     // 10.0.0.0/8
    (0x6440_0000, 10, Private),    // 100.64.0.0/10 shared (CGNAT)
    (0x7f00_0000, 8, Loopback),    // 127.0.0.0/8
    (0xa9fe_0000, 16, LinkLocal),  // 169.254.0.0/16, incl. cloud metadata
    (0xac10_0000, 12, Private),    // 172.16.0.0/12
    (0xc000_0000, 24, Reserved),   // 192.0.0.0/24 IETF protocol assignments
    (0xc000_0200, 24, Reserved),   // 192.0.2.0/24 TEST-NET-1
    (0xc058_6300, 24, Reserved),   // 192.88.99.0/24 6to4 relay anycast (deprecated)
    (0xc0a8_0000, 16, Private),    // 192.168.0.0/16
    (0xc612_0000, 15, Reserved),   // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24, Reserved),   // 198.51.100.0/24 TEST-NET-2
    (0xcb00_7100, 24, Reserved),   // 203.0.113.0/24 TEST-NET-3
    (0xe000_0000, 4, Multicast),   // 224.0.0.0/4
    (0xf000_0000, 4, Reserved),    // 240.0.0.0/4, incl. 255.255.255.255
];

const V6: &[(u128, u8, DenyReason)] = &[
    (0, 128, Unspecified),                       // ::
    (1, 128, Loopback),                          // ::1
    (0x0100_u128 << 112, 64, Reserved),          // 100::/64 discard
    (0x2001_0000_u128 << 96, 32, Reserved),      // 2001::/32 Teredo
    (0x2001_0002_0000_u128 << 80, 48, Reserved), // 2001:2::/48 benchmarking
    (0x2001_0db8_u128 << 96, 32, Reserved),      // 2001:db8::/32 documentation
    (0x3fff_u128 << 112, 20, Reserved),          // 3fff::/20 documentation
    (0xfc00_u128 << 112, 7, Private),            // fc00::/7 unique local
    (0xfe80_u128 << 112, 10, LinkLocal),         // fe80::/10
    (0xfec0_u128 << 112, 10, Private),           // fec0::/10 site-local
    (0xff00_u128 << 112, 8, Multicast),          // ff00::/8
];

pub(super) fn v4(a: u32) -> Option<DenyReason> {
    V4.iter()
        .find(|&&(net, len, _)| a & mask32(len) == net)
        .map(|&(_, _, reason)| reason)
}

pub(super) fn v6(x: u128) -> Option<DenyReason> {
    V6.iter()
        .find(|&&(net, len, _)| x & mask128(len) == net)
        .map(|&(_, _, reason)| reason)
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}
