//! Attribute type numbers and typed value decoders. Decoders take the raw value from
//! [`super::Attr`] and validate its length; they never panic.

use super::TransactionId;
use std::net::SocketAddr;

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

/// Decodes an XOR-*-ADDRESS value.
pub fn xor_address(value: &[u8], txid: &TransactionId) -> Result<SocketAddr, AttrError> {
    let _ = (value, txid);
    todo!()
}

/// Decodes a 4-byte big-endian value (LIFETIME etc).
pub fn u32_value(value: &[u8]) -> Result<u32, AttrError> {
    let _ = value;
    todo!()
}

/// CHANNEL-NUMBER: the number (first 2 bytes); RFFU bytes ignored. Range is not checked
/// here (the server answers 400 for numbers outside 0x4000..=0x4FFF).
pub fn channel_number(value: &[u8]) -> Result<u16, AttrError> {
    let _ = value;
    todo!()
}

/// REQUESTED-TRANSPORT: the protocol number (first byte).
pub fn requested_transport(value: &[u8]) -> Result<u8, AttrError> {
    let _ = value;
    todo!()
}

/// REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY: the family byte (0x01 or 0x02).
pub fn address_family(value: &[u8]) -> Result<u8, AttrError> {
    let _ = value;
    todo!()
}

/// ERROR-CODE: (code, reason).
pub fn error_code(value: &[u8]) -> Result<(u16, &str), AttrError> {
    let _ = value;
    todo!()
}

/// USERNAME / REALM / NONCE / SOFTWARE: UTF-8 text (length limits per RFC 8489: USERNAME
/// < 513 bytes, REALM and NONCE < 763 bytes).
pub fn text(value: &[u8]) -> Result<&str, AttrError> {
    let _ = value;
    todo!()
}
