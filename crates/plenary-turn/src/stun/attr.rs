//! Attribute type numbers and typed value decoders. Decoders take the raw value from
//! [`super::Attr`] and validate its length; they never panic.

use super::{TransactionId, MAGIC_COOKIE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const USERHASH: u16 = 0x001E;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
pub const CONNECTION_ID: u16 = 0x002A;
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
pub const ICMP: u16 = 0x8004;
pub const SOFTWARE: u16 = 0x8022;
pub const ALTERNATE_SERVER: u16 = 0x8023;
pub const FINGERPRINT: u16 = 0x8028;

/// Address family codes used in address attributes and REQUESTED-ADDRESS-FAMILY.
pub const FAMILY_IPV4: u8 = 0x01;
pub const FAMILY_IPV6: u8 = 0x02;

/// IANA protocol number for UDP in REQUESTED-TRANSPORT.
pub const TRANSPORT_UDP: u8 = 17;
pub const TRANSPORT_TCP: u8 = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    #[error("attribute value has the wrong length")]
    BadLength,
    #[error("unknown address family")]
    BadFamily,
    #[error("value out of range")]
    OutOfRange,
    #[error("not valid UTF-8")]
    NotUtf8,
}

/// USERNAME must be shorter than this many bytes (RFC 8489 §14.3).
pub const MAX_USERNAME_LEN: usize = 513;
/// REALM, NONCE, SOFTWARE and the ERROR-CODE reason must be shorter than this many bytes
/// (RFC 8489 §14.8-14.10, §14.14: fewer than 128 characters, of up to 6 bytes each).
pub const MAX_TEXT_LEN: usize = 763;

/// The 16 bytes an IPv6 XOR address is masked with: the cookie, then the transaction id.
fn ipv6_mask(txid: &TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(txid);
    mask
}

/// Port and address bytes of an XOR-*-ADDRESS value for `addr`: 8 bytes for IPv4, 20 for
/// IPv6. IPv4-mapped IPv6 addresses (what a dual-stack socket reports for an IPv4 client)
/// are written as the IPv4 address they are, since that is the family the client used.
/// Returns the buffer and how many bytes of it are used.
pub fn encode_xor_address(addr: SocketAddr, txid: &TransactionId) -> ([u8; 20], usize) {
    let mut out = [0u8; 20];
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            let x = u32::from(ip) ^ MAGIC_COOKIE;
            out[4..8].copy_from_slice(&x.to_be_bytes());
            (out, 8)
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            let mask = ipv6_mask(txid);
            for ((o, a), m) in out[4..].iter_mut().zip(ip.octets()).zip(mask) {
                *o = a ^ m;
            }
            (out, 20)
        }
    }
}

/// Decodes an XOR-*-ADDRESS value.
pub fn xor_address(value: &[u8], txid: &TransactionId) -> Result<SocketAddr, AttrError> {
    let (&[_, family, p0, p1], rest) =
        value.split_first_chunk::<4>().ok_or(AttrError::BadLength)?;
    let port = u16::from_be_bytes([p0, p1]) ^ (MAGIC_COOKIE >> 16) as u16;
    match family {
        FAMILY_IPV4 => {
            let raw: [u8; 4] = rest.try_into().map_err(|_| AttrError::BadLength)?;
            let ip = Ipv4Addr::from(u32::from_be_bytes(raw) ^ MAGIC_COOKIE);
            Ok(SocketAddr::new(ip.into(), port))
        }
        FAMILY_IPV6 => {
            let mut raw: [u8; 16] = rest.try_into().map_err(|_| AttrError::BadLength)?;
            for (r, m) in raw.iter_mut().zip(ipv6_mask(txid)) {
                *r ^= m;
            }
            Ok(SocketAddr::new(Ipv6Addr::from(raw).into(), port))
        }
        _ => Err(AttrError::BadFamily),
    }
}

/// Decodes a 4-byte big-endian value (LIFETIME etc).
pub fn u32_value(value: &[u8]) -> Result<u32, AttrError> {
    let raw: [u8; 4] = value.try_into().map_err(|_| AttrError::BadLength)?;
    Ok(u32::from_be_bytes(raw))
}

/// The value of a 4-byte attribute whose meaning is in its leading bytes.
fn four_bytes(value: &[u8]) -> Result<[u8; 4], AttrError> {
    value.try_into().map_err(|_| AttrError::BadLength)
}

/// CHANNEL-NUMBER: the number (first 2 bytes); RFFU bytes ignored. Range is not checked
/// here (the server answers 400 for numbers outside 0x4000..=0x7FFF).
pub fn channel_number(value: &[u8]) -> Result<u16, AttrError> {
    let [hi, lo, _, _] = four_bytes(value)?;
    Ok(u16::from_be_bytes([hi, lo]))
}

/// REQUESTED-TRANSPORT: the protocol number (first byte).
pub fn requested_transport(value: &[u8]) -> Result<u8, AttrError> {
    let [protocol, _, _, _] = four_bytes(value)?;
    Ok(protocol)
}

/// REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY: the family byte (0x01 or 0x02).
pub fn address_family(value: &[u8]) -> Result<u8, AttrError> {
    match four_bytes(value)? {
        [family @ (FAMILY_IPV4 | FAMILY_IPV6), _, _, _] => Ok(family),
        _ => Err(AttrError::BadFamily),
    }
}

/// ERROR-CODE: (code, reason).
pub fn error_code(value: &[u8]) -> Result<(u16, &str), AttrError> {
    let (&[_, _, class, number], reason) =
        value.split_first_chunk::<4>().ok_or(AttrError::BadLength)?;
    let class = class & 0x07;
    // Only 3xx..6xx are defined; a number of 100 or more is not a valid encoding.
    if !(3..=6).contains(&class) || number >= 100 {
        return Err(AttrError::OutOfRange);
    }
    Ok((u16::from(class) * 100 + u16::from(number), text(reason)?))
}

/// USERNAME / REALM / NONCE / SOFTWARE: UTF-8 text (length limits per RFC 8489: USERNAME
/// < 513 bytes, REALM and NONCE < 763 bytes). This applies the larger limit, which fits
/// every text attribute; use [`username`] for USERNAME.
pub fn text(value: &[u8]) -> Result<&str, AttrError> {
    text_limited(value, MAX_TEXT_LEN)
}

/// USERNAME: UTF-8 text shorter than 513 bytes.
pub fn username(value: &[u8]) -> Result<&str, AttrError> {
    text_limited(value, MAX_USERNAME_LEN)
}

/// The right text decoder for attribute `typ` (the USERNAME limit for USERNAME).
pub fn text_for(typ: u16, value: &[u8]) -> Result<&str, AttrError> {
    match typ {
        USERNAME => username(value),
        _ => text(value),
    }
}

fn text_limited(value: &[u8], limit: usize) -> Result<&str, AttrError> {
    if value.len() >= limit {
        return Err(AttrError::OutOfRange);
    }
    std::str::from_utf8(value).map_err(|_| AttrError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::super::test_vectors::{hex, XorShift, TXID};
    use super::*;

    #[test]
    fn rfc5769_xor_addresses_decode_and_encode() {
        let v4 = hex("00 01 a1 47 e1 12 a6 43");
        let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        assert_eq!(xor_address(&v4, &TXID), Ok(addr));
        let (enc, n) = encode_xor_address(addr, &TXID);
        assert_eq!(&enc[..n], &v4[..]);

        let v6 = hex("00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9");
        let addr: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        assert_eq!(xor_address(&v6, &TXID), Ok(addr));
        let (enc, n) = encode_xor_address(addr, &TXID);
        assert_eq!(&enc[..n], &v6[..]);
    }

    #[test]
    fn xor_address_round_trips() {
        let mut rng = XorShift(42);
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "203.0.113.45:51234",
            "[::]:1",
            "[2001:db8::1]:443",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut txid = [0u8; 12];
            txid.iter_mut().for_each(|b| *b = rng.next() as u8);
            let (enc, n) = encode_xor_address(addr, &txid);
            assert_eq!(xor_address(&enc[..n], &txid), Ok(addr), "{a}");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_written_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:3478".parse().unwrap();
        let (enc, n) = encode_xor_address(mapped, &TXID);
        assert_eq!(n, 8);
        assert_eq!(
            xor_address(&enc[..n], &TXID),
            Ok("192.0.2.7:3478".parse().unwrap())
        );
    }

    #[test]
    fn xor_address_checks_length_and_family() {
        assert_eq!(xor_address(&[], &TXID), Err(AttrError::BadLength));
        assert_eq!(xor_address(&[0, 1, 0], &TXID), Err(AttrError::BadLength));
        assert_eq!(xor_address(&[0, 1, 0, 0], &TXID), Err(AttrError::BadLength));
        assert_eq!(xor_address(&[0; 8], &TXID), Err(AttrError::BadFamily));
        assert_eq!(
            xor_address(&[0, 3, 0, 0, 0, 0, 0, 0], &TXID),
            Err(AttrError::BadFamily)
        );
        let mut v4_too_long = [0u8; 20];
        v4_too_long[1] = FAMILY_IPV4;
        assert_eq!(xor_address(&v4_too_long, &TXID), Err(AttrError::BadLength));
        let mut v6_too_short = [0u8; 8];
        v6_too_short[1] = FAMILY_IPV6;
        assert_eq!(xor_address(&v6_too_short, &TXID), Err(AttrError::BadLength));
    }

    #[test]
    fn fixed_size_values() {
        assert_eq!(u32_value(&[0, 0, 0x02, 0x58]), Ok(600));
        assert_eq!(u32_value(&[0, 0, 2]), Err(AttrError::BadLength));
        assert_eq!(u32_value(&[0; 5]), Err(AttrError::BadLength));
        assert_eq!(channel_number(&[0x40, 0x01, 0xff, 0xff]), Ok(0x4001));
        assert_eq!(channel_number(&[0x40, 0x01]), Err(AttrError::BadLength));
        assert_eq!(requested_transport(&[17, 0, 0, 0]), Ok(TRANSPORT_UDP));
        assert_eq!(requested_transport(&[17]), Err(AttrError::BadLength));
        assert_eq!(address_family(&[2, 0, 0, 0]), Ok(FAMILY_IPV6));
        assert_eq!(address_family(&[1, 0, 0, 0]), Ok(FAMILY_IPV4));
        assert_eq!(address_family(&[3, 0, 0, 0]), Err(AttrError::BadFamily));
        assert_eq!(address_family(&[1, 0]), Err(AttrError::BadLength));
    }

    #[test]
    fn error_code_values() {
        assert_eq!(
            error_code(b"\0\0\x04\x26Stale Nonce"),
            Ok((438, "Stale Nonce"))
        );
        assert_eq!(error_code(&[0, 0, 5, 8]), Ok((508, "")));
        // The 21 reserved bits are ignored.
        assert_eq!(error_code(&[0xff, 0xff, 0xfc, 1]), Ok((401, "")));
        assert_eq!(error_code(&[0, 0, 2, 0]), Err(AttrError::OutOfRange));
        assert_eq!(error_code(&[0, 0, 7, 0]), Err(AttrError::OutOfRange));
        assert_eq!(error_code(&[0, 0, 4, 100]), Err(AttrError::OutOfRange));
        assert_eq!(error_code(&[0, 0, 4]), Err(AttrError::BadLength));
        assert_eq!(error_code(&[0, 0, 4, 0, 0xff]), Err(AttrError::NotUtf8));
    }

    #[test]
    fn text_limits() {
        assert_eq!(text(b"example.org"), Ok("example.org"));
        assert_eq!(text(&[0xc3, 0x28]), Err(AttrError::NotUtf8));
        assert!(text(&[b'a'; MAX_TEXT_LEN - 1]).is_ok());
        assert_eq!(text(&[b'a'; MAX_TEXT_LEN]), Err(AttrError::OutOfRange));
        assert!(username(&[b'a'; MAX_USERNAME_LEN - 1]).is_ok());
        assert_eq!(
            username(&[b'a'; MAX_USERNAME_LEN]),
            Err(AttrError::OutOfRange)
        );
        assert_eq!(text_for(USERNAME, &[b'a'; 600]), Err(AttrError::OutOfRange));
        assert!(text_for(NONCE, &[b'a'; 600]).is_ok());
    }
}
