//! IPv6 spellings that carry an IPv4 address. A relay that sends to one of these reaches
//! (directly, or through a translator or tunnel next to it) the IPv4 host inside, so the
//! policy must judge that host too.

/// The IPv4 address an IPv6 address (as `u128`) stands for, if any.
///
/// `::` and `::1` are not IPv4-compatible addresses: they are the IPv6 unspecified and
/// loopback addresses and are judged as such.
pub(super) fn embedded_v4(x: u128) -> Option<u32> {
    let high96 = x >> 32;
    let low32 = x as u32;
    match high96 {
        // ::ffff:a.b.c.d, IPv4-mapped (RFC 4291).
        0xffff => return Some(low32),
        // ::ffff:0:a.b.c.d, IPv4-translated (RFC 2765 SIIT).
        0xffff_0000 => return Some(low32),
        // ::a.b.c.d, IPv4-compatible (deprecated, still routed by some stacks).
        0 if low32 > 1 => return Some(low32),
        // 64:ff9b::/96, the well-known NAT64 prefix (RFC 6052).
        0x0064_ff9b_0000_0000_0000_0000 => return Some(low32),
        _ => {}
    }
    // 64:ff9b:1::/48, local-use NAT64 (RFC 8215); operators put the IPv4 in the low bits.
    if x >> 80 == 0x0064_ff9b_0001 {
        return Some(low32);
    }
    // 2002:AABB:CCDD::/48, 6to4 (RFC 3056): the IPv4 follows the 16-bit prefix.
    if x >> 112 == 0x2002 {
        return Some((x >> 80) as u32);
    }
    // 2001:0::/32, Teredo (RFC 4380): the client's IPv4 is the last 32 bits, inverted.
    if x >> 96 == 0x2001_0000 {
        return Some(!low32);
    }
    None
}

/// Only the IPv4-mapped form: the one a config rule written in IPv6 also means for IPv4.
pub(super) fn mapped_v4(x: u128) -> Option<u32> {
    (x >> 32 == 0xffff).then_some(x as u32)
}
